//! HTTP health checks and the HTTP lifecycle (teardown) endpoints.
//!
//! [`HttpProbe`] is one pooled HTTP/1.1 client: a health checker keeps one keep-alive connection
//! to the task and reuses it check after check (no process, no new connection per check while
//! the task keeps it open). Every check is bounded in time (`timeout_secs` covers connecting,
//! sending, waiting for the head and reading the body — a server that accepts and never answers
//! fails the check at the timeout, and its connection is dropped) and in memory (at most
//! [`MAX_BODY_BYTES`] of the body are read).
//!
//! [`post_lifecycle`] posts to `/quitquitquit` or `/abortabortabort` on a fresh connection and
//! says whether it could connect at all (DESIGN section 6: a wait is skipped when its POST could
//! not connect).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// Bytes of a response body read at most.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(120);

/// The characters of a body quoted in a failure reason.
const QUOTED_CHARS: usize = 32;

/// A pooled HTTP client for health checks. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for HttpProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpProbe {
    /// A client with its own pool. Must be called within a tokio runtime's context when used.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(4)
            .pool_timer(TokioTimer::new())
            .build(connector);
        HttpProbe { client }
    }

    /// `GET` `uri` within `timeout`; returns the status and at most [`MAX_BODY_BYTES`] of the
    /// body, and whether the body was longer.
    pub async fn get(&self, uri: Uri, timeout: Duration) -> Result<BoundedResponse, String> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(hyper::header::USER_AGENT, "hearth-health-checker")
            .body(Empty::new())
            .map_err(|e| format!("invalid request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| describe(&e))?;
            read_bounded(response).await
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {}", secs(timeout))),
        }
    }
}

/// A response with a bounded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// True when the body had more than [`MAX_BODY_BYTES`] (the rest was not read).
    pub truncated: bool,
}

async fn read_bounded(response: Response<Incoming>) -> Result<BoundedResponse, String> {
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut buf = Vec::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body: {}", describe(&e)))?;
        if let Ok(data) = frame.into_data() {
            let room = MAX_BODY_BYTES - buf.len();
            if data.len() > room {
                buf.extend_from_slice(&data[..room]);
                // Dropping the body here closes the connection instead of draining it.
                truncated = true;
                break;
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(BoundedResponse {
        status,
        body: buf,
        truncated,
    })
}

/// An error and its causes on one line, innermost last (`client error (Connect): connection
/// refused`), for failure reasons.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// One HTTP health check: `GET http://127.0.0.1:<port><endpoint>`.
#[derive(Debug, Clone)]
pub struct HttpChecker {
    probe: HttpProbe,
    uri: Uri,
    expected_response: String,
    expected_response_code: u16,
    timeout: Duration,
}

impl HttpChecker {
    pub fn new(
        probe: HttpProbe,
        port: u16,
        endpoint: &str,
        expected_response: &str,
        expected_response_code: u16,
        timeout: Duration,
    ) -> Result<Self, super::HealthError> {
        let text = format!("http://127.0.0.1:{port}{endpoint}");
        let uri = text
            .parse::<Uri>()
            .map_err(|source| super::HealthError::Endpoint {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        Ok(HttpChecker {
            probe,
            uri,
            expected_response: expected_response.trim().to_lowercase(),
            expected_response_code,
            timeout,
        })
    }

    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Run the check: `Ok(())` when healthy, else the reason.
    pub async fn check(&self) -> Result<(), String> {
        let response = self
            .probe
            .get(self.uri.clone(), self.timeout)
            .await
            .map_err(|e| format!("Failed to signal {}: {e}", self.uri))?;
        judge(
            &response,
            &self.expected_response,
            self.expected_response_code,
        )
    }
}

/// Aurora's rule: the body (trimmed, lower-cased) must equal `expected` when it is non-empty,
/// and the status must equal `expected_code` when it is non-zero. `expected` is already
/// lower-cased.
pub fn judge(response: &BoundedResponse, expected: &str, expected_code: u16) -> Result<(), String> {
    if !expected.is_empty() {
        let got = String::from_utf8_lossy(&response.body)
            .trim()
            .to_lowercase();
        if response.truncated || got != expected {
            let mut shown: String = got.chars().take(QUOTED_CHARS).collect();
            if response.truncated || got.chars().count() > QUOTED_CHARS {
                shown.push_str("...");
            }
            return Err(format!(
                "Response differs from expected response (expected {expected:?}, got {shown:?})"
            ));
        }
    }
    if expected_code != 0 && response.status != expected_code {
        return Err(format!(
            "Response code differs from expected response (expected {expected_code}, got {})",
            response.status
        ));
    }
    Ok(())
}

/// Outcome of a lifecycle POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// The connection was made; `status` is the response's, or `None` when none came in time.
    Connected { status: Option<u16> },
    /// No connection (refused, unreachable, or not within the timeout): why.
    Refused { detail: String },
}

impl PostOutcome {
    pub fn connected(&self) -> bool {
        matches!(self, PostOutcome::Connected { .. })
    }
}

/// `POST http://127.0.0.1:<port><endpoint>` with an empty body, on a fresh connection, within
/// `timeout` overall.
pub async fn post_lifecycle(port: u16, endpoint: &str, timeout: Duration) -> PostOutcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let stream =
        match tokio::time::timeout_at(deadline, TcpStream::connect(("127.0.0.1", port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return PostOutcome::Refused {
                    detail: e.to_string(),
                };
            }
            Err(_) => {
                return PostOutcome::Refused {
                    detail: format!("connect timed out after {}", secs(timeout)),
                };
            }
        };
    let _ = stream.set_nodelay(true);
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        let _driver = AbortOnDrop(tokio::spawn(conn).abort_handle());
        let request = Request::builder()
            .method(Method::POST)
            .uri(endpoint)
            .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
            .header(hyper::header::USER_AGENT, "hearth-lifecycle")
            .body(Empty::<Bytes>::new())
            .ok()?;
        sender
            .send_request(request)
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    let status = tokio::time::timeout_at(deadline, exchange)
        .await
        .ok()
        .flatten();
    PostOutcome::Connected { status }
}

/// Aborts a spawned task when dropped (also when a timeout drops the future holding it).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
