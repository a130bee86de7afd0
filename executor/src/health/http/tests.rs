//! The keep-alive probe and its parser against real TCP servers on the loopback that write
//! canned bytes, and the head parser alone on tables of heads.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use tokio::sync::{Notify, mpsc};

use super::*;

/// What a canned server does on one connection, in order.
#[derive(Debug, Clone)]
enum Step {
    /// Read one request (up to its blank line).
    Read,
    /// Write these bytes.
    Send(Vec<u8>),
    /// Keep the connection open, answering nothing, until the server is dropped.
    Hold,
    /// Wait until the test says go.
    Wait(Arc<Notify>),
}

fn send(bytes: &[u8]) -> Step {
    Step::Send(bytes.to_vec())
}

/// What a canned server saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Accepted(usize),
    /// Connection `n` got a request, whole.
    Request(usize, String),
    /// Connection `n` had bytes written.
    Sent(usize),
    /// Connection `n` was closed by the server (its steps were done).
    Closed(usize),
}

/// A server that accepts one connection per script, in order, and plays it; a connection whose
/// script ends (without `Hold`) is closed.
struct Canned {
    port: u16,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Canned {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Canned {
    async fn start(scripts: Vec<Vec<Step>>) -> Canned {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, seen) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            'conns: for (n, script) in scripts.into_iter().enumerate() {
                let (mut stream, _) = listener.accept().await.unwrap();
                let _ = tx.send(Seen::Accepted(n));
                for step in script {
                    match step {
                        Step::Read => {
                            let mut request = Vec::new();
                            while !request.ends_with(b"\r\n\r\n") {
                                let mut byte = [0u8; 1];
                                if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                                    break;
                                }
                                request.push(byte[0]);
                            }
                            let text = String::from_utf8_lossy(&request).into_owned();
                            let _ = tx.send(Seen::Request(n, text));
                        }
                        Step::Send(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            let _ = tx.send(Seen::Sent(n));
                        }
                        Step::Wait(go) => go.notified().await,
                        Step::Hold => {
                            held.push(stream);
                            continue 'conns;
                        }
                    }
                }
                drop(stream);
                let _ = tx.send(Seen::Closed(n));
            }
            std::future::pending::<()>().await;
        });
        Canned { port, seen, task }
    }

    /// Everything seen so far.
    fn log(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(s) = self.seen.try_recv() {
            out.push(s);
        }
        out
    }

    /// Wait until the server has seen `what`.
    async fn wait_for(&mut self, what: Seen) {
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(s) = self.seen.recv().await {
                if s == what {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "the server never saw {what:?}");
    }

    fn probe(&self) -> HttpProbe {
        HttpProbe::new(self.port, "/health").unwrap()
    }
}

fn accepts(log: &[Seen]) -> usize {
    log.iter()
        .filter(|s| matches!(s, Seen::Accepted(_)))
        .count()
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const LONG: Duration = Duration::from_secs(10);

fn response(status: u16, body: &[u8], truncated: bool) -> BoundedResponse {
    BoundedResponse {
        status,
        body: body.to_vec(),
        truncated,
    }
}

#[tokio::test]
async fn content_length_response_is_read_and_its_connection_reused() {
    let mut server = Canned::start(vec![vec![
        Step::Read,
        send(OK),
        Step::Read,
        send(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"),
        Step::Hold,
    ]])
    .await;
    let mut probe = server.probe();
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    assert_eq!(
        probe.get(LONG).await.unwrap(),
        &response(503, b"busy", false)
    );
    let log: Vec<Seen> = server
        .log()
        .into_iter()
        .filter(|s| !matches!(s, Seen::Sent(_)))
        .collect();
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: hearth-health-checker\r\n\r\n",
        server.port
    );
    assert_eq!(
        log,
        [
            Seen::Accepted(0),
            Seen::Request(0, request.clone()),
            Seen::Request(0, request)
        ]
    );
}

#[tokio::test]
async fn chunked_body_is_decoded_with_extensions_and_trailers() {
    let mut server = Canned::start(vec![vec![
        Step::Read,
        send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        send(b"2;note=split\r\nO"),
        send(b"K\r\n1\r\n\n\r\n"),
        send(b"0\r\nX-Checked: yes\r\n\r\n"),
        Step::Read,
        send(OK),
        Step::Hold,
    ]])
    .await;
    let mut probe = server.probe();
    assert_eq!(
        probe.get(LONG).await.unwrap(),
        &response(200, b"OK\n", false)
    );
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    assert_eq!(accepts(&server.log()), 1, "a chunked response keeps it");
}

#[tokio::test]
async fn close_delimited_body_runs_to_the_end_and_the_next_check_reconnects() {
    let mut server = Canned::start(vec![
        vec![
            Step::Read,
            send(b"HTTP/1.1 200 OK\r\n\r\nall of "),
            send(b"it"),
        ],
        vec![Step::Read, send(OK), Step::Hold],
    ])
    .await;
    let mut probe = server.probe();
    assert_eq!(
        probe.get(LONG).await.unwrap(),
        &response(200, b"all of it", false)
    );
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    assert_eq!(accepts(&server.log()), 2);
}

#[tokio::test]
async fn connection_close_and_http_1_0_are_not_reused() {
    let mut server = Canned::start(vec![
        vec![
            Step::Read,
            send(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
            Step::Hold,
        ],
        vec![
            Step::Read,
            send(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Step::Hold,
        ],
        vec![Step::Read, send(OK), Step::Hold],
    ])
    .await;
    let mut probe = server.probe();
    for _ in 0..3 {
        assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    }
    assert_eq!(accepts(&server.log()), 3);
}

#[tokio::test]
async fn body_longer_than_the_limit_is_truncated_and_its_connection_dropped() {
    let big = vec![b'x'; MAX_BODY_BYTES + 1];
    let length = [
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes(),
        big.clone(),
    ]
    .concat();
    let chunked = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        format!("{:x}\r\n", MAX_BODY_BYTES).into_bytes(),
        big[..MAX_BODY_BYTES].to_vec(),
        b"\r\n1\r\nx\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    let until_close = [b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), big.clone()].concat();
    let mut server = Canned::start(vec![
        vec![Step::Read, Step::Send(length), Step::Hold],
        vec![Step::Read, Step::Send(chunked), Step::Hold],
        vec![Step::Read, Step::Send(until_close), Step::Hold],
        vec![Step::Read, send(OK), Step::Hold],
    ])
    .await;
    let mut probe = server.probe();
    for framing in ["content-length", "chunked", "until close"] {
        let got = probe.get(LONG).await.unwrap();
        assert!(got.truncated, "{framing}");
        assert_eq!(got.body, big[..MAX_BODY_BYTES], "{framing}");
    }
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    assert_eq!(
        accepts(&server.log()),
        4,
        "each truncated body dropped its connection"
    );
}

#[tokio::test]
async fn body_of_exactly_the_limit_is_whole() {
    let body = vec![b'y'; MAX_BODY_BYTES];
    let chunked = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        format!("{:x}\r\n", MAX_BODY_BYTES - 1).into_bytes(),
        body[1..].to_vec(),
        b"\r\n1\r\ny\r\n0\r\n\r\n".to_vec(),
    ]
    .concat();
    let mut server = Canned::start(vec![vec![
        Step::Read,
        Step::Send(chunked),
        Step::Read,
        send(OK),
        Step::Hold,
    ]])
    .await;
    let mut probe = server.probe();
    let got = probe.get(LONG).await.unwrap();
    assert!(!got.truncated);
    assert_eq!(got.body, body);
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    assert_eq!(accepts(&server.log()), 1);
}

#[tokio::test]
async fn oversized_head_fails_the_check_with_its_limit() {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    while head.len() <= MAX_HEAD_BYTES {
        head.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let server = Canned::start(vec![vec![Step::Read, Step::Send(head), Step::Hold]]).await;
    let mut probe = server.probe();
    assert_eq!(
        probe.get(LONG).await.unwrap_err(),
        "response head larger than 16384 bytes"
    );
}

#[tokio::test]
async fn garbage_status_line_fails_at_once_naming_it() {
    // The server keeps the connection open: only reading the first bytes can tell.
    let server = Canned::start(vec![vec![
        Step::Read,
        send(b"SSH-2.0-OpenSSH_9.6"),
        Step::Hold,
    ]])
    .await;
    let mut probe = server.probe();
    assert_eq!(
        probe.get(LONG).await.unwrap_err(),
        "malformed response: bad status line \"SSH-2.0-OpenSSH_9.6\""
    );
}

#[tokio::test]
async fn malformed_heads_and_bodies_fail_saying_what_was_wrong() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"HTTP/1.1 20 OK\r\n\r\n",
            "malformed response: bad status line \"HTTP/1.1 20 OK\"",
        ),
        (
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            "malformed response: header line without a colon: \"no colon here\"",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            "malformed response: conflicting Content-Length headers",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "malformed response: bad Content-Length \"-1\"",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "malformed response: bad chunk size line \"zz\"",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nok\r\n0\r\n\r\n",
            "malformed response: chunk data longer than its size",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok",
            "connection closed before the end of the body",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-",
            "connection closed in the middle of the response head",
        ),
    ];
    let scripts = cases
        .iter()
        .map(|(bytes, _)| vec![Step::Read, send(bytes)])
        .collect();
    let server = Canned::start(scripts).await;
    let mut probe = server.probe();
    for (bytes, reason) in cases {
        let got = probe.get(LONG).await;
        assert_eq!(
            got.unwrap_err(),
            *reason,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[tokio::test]
async fn interim_responses_are_skipped_and_204_has_no_body() {
    let server = Canned::start(vec![vec![
        Step::Read,
        send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"),
        Step::Read,
        send(OK),
        Step::Hold,
    ]])
    .await;
    let mut probe = server.probe();
    assert_eq!(probe.get(LONG).await.unwrap(), &response(204, b"", false));
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
}

#[tokio::test]
async fn kept_connection_closed_by_the_server_between_checks_is_replaced() {
    let mut server = Canned::start(vec![
        vec![Step::Read, send(OK)],
        vec![Step::Read, send(OK), Step::Hold],
    ])
    .await;
    let mut probe = server.probe();
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    server.wait_for(Seen::Closed(0)).await;
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    // Seen since the close: the second connection.
    let log = server.log();
    assert_eq!(accepts(&log), 1, "{log:?}");
}

#[tokio::test]
async fn connection_with_unasked_bytes_is_not_reused() {
    const TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n";
    let go = Arc::new(Notify::new());
    let mut server = Canned::start(vec![
        // Right behind the response.
        vec![Step::Read, Step::Send([OK, TIMEOUT].concat()), Step::Hold],
        // While the connection is idle.
        vec![
            Step::Read,
            send(OK),
            Step::Wait(go.clone()),
            send(TIMEOUT),
            Step::Hold,
        ],
        vec![Step::Read, send(OK), Step::Hold],
    ])
    .await;
    let mut probe = server.probe();
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    server.wait_for(Seen::Sent(1)).await;
    go.notify_one();
    server.wait_for(Seen::Sent(1)).await;
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    server.wait_for(Seen::Accepted(2)).await;
}

#[tokio::test]
async fn kept_connection_closed_as_the_request_goes_out_is_retried_once() {
    // The first connection takes the second request and closes without a word.
    let mut server = Canned::start(vec![
        vec![Step::Read, send(OK), Step::Read],
        vec![Step::Read, send(OK), Step::Hold],
    ])
    .await;
    let mut probe = server.probe();
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    assert_eq!(probe.get(LONG).await.unwrap(), &response(200, b"ok", false));
    let log = server.log();
    let requests = log
        .iter()
        .filter(|s| matches!(s, Seen::Request(..)))
        .count();
    assert_eq!((accepts(&log), requests), (2, 3), "{log:?}");
}

#[tokio::test]
async fn fresh_connection_closed_before_any_response_fails_without_retry() {
    let server = Canned::start(vec![vec![Step::Read], vec![Step::Hold]]).await;
    let mut probe = server.probe();
    assert_eq!(
        probe.get(LONG).await.unwrap_err(),
        "connection closed before the response"
    );
}

#[tokio::test]
async fn server_that_accepts_and_never_answers_times_out() {
    let mut server = Canned::start(vec![vec![Step::Read, Step::Hold]]).await;
    let mut probe = server.probe();
    let timeout = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let reason = probe.get(timeout).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(reason, "timed out after 0.2s");
    assert!(took >= timeout, "{took:?}");
    assert!(
        took < Duration::from_secs(5),
        "timeout not honoured: {took:?}"
    );
    server
        .wait_for(Seen::Request(
            0,
            format!(
                "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
                 User-Agent: hearth-health-checker\r\n\r\n",
                server.port
            ),
        ))
        .await;
}

#[tokio::test]
async fn refused_connection_is_named_in_the_reason() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut checker = HttpChecker::new(port, "/health", "ok", 0, LONG).unwrap();
    let reason = checker.check().await.unwrap_err();
    assert!(
        reason.starts_with(&format!(
            "Failed to signal http://127.0.0.1:{port}/health: connecting: Connection refused"
        )),
        "{reason}"
    );
}

#[tokio::test]
async fn lifecycle_post_reads_the_status_of_the_head() {
    let mut server = Canned::start(vec![vec![
        Step::Read,
        send(b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\nnot all of it"),
        Step::Hold,
    ]])
    .await;
    let out = post_lifecycle(server.port, "/quitquitquit", LONG).await;
    assert_eq!(out, PostOutcome::Connected { status: Some(202) });
    server
        .wait_for(Seen::Request(
            0,
            format!(
                "POST /quitquitquit HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUser-Agent: hearth-lifecycle\
                 \r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                server.port
            ),
        ))
        .await;
}

#[test]
fn endpoints_must_be_plain_request_paths() {
    assert_eq!(
        HttpProbe::new(80, "/health?deep=1&x=%20").unwrap().url(),
        "http://127.0.0.1:80/health?deep=1&x=%20"
    );
    let fragment = HttpProbe::new(80, "/health#top").unwrap();
    assert_eq!(fragment.url(), "http://127.0.0.1:80/health");
    assert!(fragment.request.starts_with(b"GET /health HTTP/1.1\r\n"));
    for bad in ["health", "", "/he alth", "/health\r\nX: y", "/héalth"] {
        assert!(
            matches!(
                HttpProbe::new(80, bad),
                Err(crate::health::HealthError::Endpoint { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn head_framing_follows_rfc_9112() {
    let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap();
    let cases: &[(&str, u16, Framing, bool)] = &[
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
            200,
            Framing::Length(7),
            true,
        ),
        (
            "HTTP/1.1 200\r\ncontent-length:7\r\n\r\n",
            200,
            Framing::Length(7),
            true,
        ),
        ("HTTP/1.1 200 OK\n\n", 200, Framing::UntilClose, false),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            200,
            Framing::Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            200,
            Framing::UntilClose,
            false,
        ),
        // Both: Transfer-Encoding wins, and the connection is not kept.
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            200,
            Framing::Chunked,
            false,
        ),
        (
            "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
            204,
            Framing::Empty,
            true,
        ),
        (
            "HTTP/1.1 304 Not Modified\r\n\r\n",
            304,
            Framing::Empty,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n",
            200,
            Framing::Length(0),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            200,
            Framing::Length(0),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            200,
            Framing::Length(0),
            true,
        ),
    ];
    for &(text, status, framing, keep_alive) in cases {
        assert_eq!(
            head(text),
            Head {
                status,
                framing,
                keep_alive,
                len: text.len()
            },
            "{text:?}"
        );
    }
    // Incomplete heads wait for more; a folded header line is refused.
    assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Len").unwrap(), None);
    assert_eq!(parse_head(b"HTT").unwrap(), None);
    assert!(
        parse_head(b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n\r\n")
            .unwrap_err()
            .starts_with("folded header line")
    );
    assert!(
        parse_head(b"HTTP/1.1 200 OK\r\nX A: b\r\n\r\n")
            .unwrap_err()
            .starts_with("bad header name")
    );
}

#[test]
fn token_table_holds_exactly_the_rfc_9110_tchars() {
    for b in 0..=255u8 {
        let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        assert_eq!(is_token_byte(b), tchar, "{b:#04x}");
    }
}
