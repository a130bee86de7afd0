//! Status reports to the scheduler (`--scheduler URL`).
//!
//! The executor reports STARTING, then RUNNING (with [`HEALTHY_REASON`] once the health check
//! passes, or [`NO_HEALTH_CHECK_REASON`] when there is none), then one terminal state with
//! Aurora's reason texts ([`terminal_status`]; a health-check failure carries `Failed health
//! check! ...`, a disk overrun `Disk limit exceeded. ...`).
//!
//! [`Reporter`] delivers them under the contract of [`hearth_scheduler::api`]:
//! * the caller numbers the updates `1, 2, 3, ...`, **persists each one in its checkpoint
//!   first**, then hands it to [`Reporter::send`];
//! * the reporter `POST`s them one at a time, in order; the next one goes only after the
//!   scheduler acknowledged the previous one (`200`, applied now or earlier);
//! * a failed attempt (no connection, a timeout, `5xx`, `409` gap, anything but `200`/`4xx`) is
//!   retried after a capped exponential backoff (100 ms, doubling, at most 10 s by default);
//! * every acknowledgement is reported as [`ReportEvent::Acknowledged`] so the caller can record
//!   it; after a restart the caller re-sends every update it holds no acknowledgement for, with
//!   the same seq. The scheduler applies a seq once, so a resend is harmless;
//! * a `4xx` other than `401`, `403`, `408`, `409` and `429` means the scheduler will never take
//!   that update (it is malformed for it): reported as [`ReportEvent::Rejected`] and skipped, so
//!   one bad update cannot block the ones after it. `401`/`403` are retried: they concern the
//!   token, not the update;
//! * with a token ([`Reporter::start_with_token`], from `hearth run --scheduler-token-file F` or
//!   [`TOKEN_FILE_ENV`]), every request carries `Authorization: Bearer <token>`; the header value
//!   is marked sensitive and the token is never logged.
//!
//! All waiting goes through `tokio::time` (backoff tests run on paused time).

use std::collections::VecDeque;
use std::time::Duration;

use hearth_checkpoints::record::TaskState;
use hearth_scheduler::api::{
    CONDITION_PATH, ExecutorCondition, STATUS_PATH, ScheduleStatus, StatusUpdate,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// RUNNING reason when the task has no health check (Aurora's wording).
pub const NO_HEALTH_CHECK_REASON: &str = "No health-check defined, task is assumed healthy.";
/// RUNNING reason once the health check passed (Aurora's wording).
pub const HEALTHY_REASON: &str = "Task is healthy.";

/// The environment variable naming the token file when `--scheduler-token-file` is not given
/// (the agent sets it for the `hearth run` and `hearth kill` it starts).
pub const TOKEN_FILE_ENV: &str = "HEARTH_SCHEDULER_TOKEN_FILE";

/// The bearer token in `path`: its content without surrounding white space. An empty file, or
/// one that is not valid as an HTTP header value, is an error naming the file (never the token).
#[allow(clippy::disallowed_methods)] // read once, before the runtime starts
pub fn read_token_file(path: &std::path::Path) -> Result<String, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::TokenFile {
        path: path.to_owned(),
        problem: "cannot be read".to_owned(),
        source: Some(source),
    })?;
    let token = text.trim();
    let problem = if token.is_empty() {
        Some("is empty")
    } else if HeaderValue::from_str(&format!("Bearer {token}")).is_err()
        || token.contains(char::is_whitespace)
    {
        Some("holds characters a token cannot have (one line of printable ASCII expected)")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ReportError::TokenFile {
            path: path.to_owned(),
            problem: problem.to_owned(),
            source: None,
        }),
        None => Ok(token.to_owned()),
    }
}

/// The scheduler status and Aurora's reason text for a terminal task state; `None` for a state
/// that is not terminal.
pub fn terminal_status(state: TaskState) -> Option<(ScheduleStatus, &'static str)> {
    Some(match state {
        TaskState::Success => (ScheduleStatus::Finished, "Task finished."),
        TaskState::Failed => (ScheduleStatus::Failed, "Task failed."),
        TaskState::Killed => (ScheduleStatus::Killed, "Task killed."),
        TaskState::Lost => (ScheduleStatus::Lost, "Task lost."),
        TaskState::Active | TaskState::Cleaning | TaskState::Finalizing => return None,
    })
}

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("scheduler URL {url:?} is not a valid URL")]
    Url {
        url: String,
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    #[error("scheduler URL {url:?} must be http://host[:port][/prefix]")]
    Scheme { url: String },
    #[error("scheduler token file {path}: {problem}")]
    TokenFile {
        path: std::path::PathBuf,
        problem: String,
        #[source]
        source: Option<std::io::Error>,
    },
    /// The token cannot be sent in a header (the error never shows it).
    #[error("the scheduler token holds characters an HTTP header cannot carry")]
    BadToken,
    /// The reporter's task has ended (stopped).
    #[error("the status reporter has stopped; update seq {seq} was not queued")]
    Stopped { seq: u64 },
}

/// Retry timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failed attempt.
    pub initial: Duration,
    /// The wait doubles per failed attempt up to this.
    pub max: Duration,
    /// One attempt (connect, send, answer) is abandoned after this.
    pub attempt_timeout: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failed attempts (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What happened to an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportEvent {
    /// The scheduler has applied update `seq` (now, or before: `duplicate`).
    Acknowledged { seq: u64, duplicate: bool },
    /// The scheduler refused update `seq` for good (`status`, with its answer); skipped.
    Rejected {
        seq: u64,
        status: u16,
        detail: String,
    },
}

/// Sends status updates to the scheduler in a tokio task. Dropping it (or
/// [`stop`](Self::stop)) abandons the updates not yet acknowledged — they stay in the caller's
/// checkpoint for the next start.
#[derive(Debug)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<StatusUpdate>,
    handle: JoinHandle<()>,
    condition: watch::Sender<Option<ExecutorCondition>>,
    condition_handle: JoinHandle<()>,
}

/// Parse `http://host[:port][/prefix]` into the status endpoint's URI.
pub fn status_uri(scheduler: &str) -> Result<Uri, ReportError> {
    let base = scheduler.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(ReportError::Scheme {
            url: scheduler.to_owned(),
        });
    }
    let uri: Uri = format!("{base}{STATUS_PATH}")
        .parse()
        .map_err(|source| ReportError::Url {
            url: scheduler.to_owned(),
            source,
        })?;
    if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
        return Err(ReportError::Scheme {
            url: scheduler.to_owned(),
        });
    }
    Ok(uri)
}

impl Reporter {
    /// Start a reporter for the scheduler at `scheduler` (`http://host:port`). Must be called
    /// inside a tokio runtime.
    pub fn start(
        scheduler: &str,
        backoff: Backoff,
    ) -> Result<(Reporter, mpsc::UnboundedReceiver<ReportEvent>), ReportError> {
        Reporter::start_with_token(scheduler, None, backoff)
    }

    /// [`start`](Self::start), sending `Authorization: Bearer <token>` with every update when a
    /// token is given.
    pub fn start_with_token(
        scheduler: &str,
        token: Option<&str>,
        backoff: Backoff,
    ) -> Result<(Reporter, mpsc::UnboundedReceiver<ReportEvent>), ReportError> {
        let uri = status_uri(scheduler)?;
        let condition_uri = condition_uri(&uri)?;
        let auth = token.map(bearer).transpose()?;
        let (tx, queue) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (condition, changes) = watch::channel(None);
        let condition_handle = tokio::spawn(deliver_conditions(
            condition_uri,
            auth.clone(),
            backoff,
            changes,
        ));
        let handle = tokio::spawn(deliver(uri, auth, backoff, queue, events_tx));
        let reporter = Reporter {
            tx,
            handle,
            condition,
            condition_handle,
        };
        Ok((reporter, events))
    }

    /// Report task `task_id`'s live condition (`Some(text)`: what is wrong, since `since_ms`; `None`:
    /// all is well again), outside the sequence of updates and without a record. The latest
    /// value wins, and setting the same value again sends nothing; see
    /// [`hearth_scheduler::api::ExecutorCondition`].
    pub fn set_condition(&self, task_id: &str, condition: Option<(String, i64)>) {
        let (text, since_ms) = condition.unzip();
        let next = ExecutorCondition {
            task_id: task_id.to_owned(),
            condition: text,
            since_ms,
        };
        // Only a change is news (a repeat of the same text is the delivery loop's business).
        self.condition.send_if_modified(|current| {
            if current.as_ref() == Some(&next) {
                return false;
            }
            *current = Some(next);
            true
        });
    }

    /// Queue `update` (already persisted by the caller) behind the ones not yet acknowledged.
    pub fn send(&self, update: StatusUpdate) -> Result<(), ReportError> {
        let seq = update.seq;
        self.tx
            .send(update)
            .map_err(|_| ReportError::Stopped { seq })
    }

    pub fn stop(&self) {
        self.handle.abort();
        self.condition_handle.abort();
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The condition endpoint beside the status endpoint `status`.
fn condition_uri(status: &Uri) -> Result<Uri, ReportError> {
    let text = status.to_string();
    let base = text.strip_suffix(STATUS_PATH).unwrap_or(&text);
    format!("{base}{CONDITION_PATH}")
        .parse()
        .map_err(|source| ReportError::Url {
            url: text.clone(),
            source,
        })
}

/// The answer to one attempt.
enum Attempt {
    Acked { duplicate: bool },
    Rejected { status: u16, detail: String },
    Retry { why: String },
}

/// The `Authorization` value for `token`, marked sensitive (never printed by `Debug`).
pub fn bearer(token: &str) -> Result<HeaderValue, ReportError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ReportError::BadToken)?;
    value.set_sensitive(true);
    Ok(value)
}

fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// While a condition holds it is sent again this often, so that a scheduler restarted meanwhile
/// (it keeps conditions in memory only) learns it again.
pub const CONDITION_REPEAT: Duration = Duration::from_secs(60);

/// Deliver the task's live condition (see [`Reporter::set_condition`]): each change is `POST`ed
/// until the scheduler takes it or it changes again; a condition that holds is repeated every
/// [`CONDITION_REPEAT`]; a clear is sent only after a condition was.
async fn deliver_conditions(
    uri: Uri,
    auth: Option<HeaderValue>,
    backoff: Backoff,
    mut changes: watch::Receiver<Option<ExecutorCondition>>,
) {
    let client = http_client();
    let mut told = false;
    loop {
        let current = changes.borrow_and_update().clone();
        if let Some(body) = current.filter(|c| c.condition.is_some() || told) {
            let mut failures = 0u32;
            loop {
                match attempt(&client, &uri, auth.as_ref(), &body, backoff.attempt_timeout).await {
                    Attempt::Acked { .. } => break,
                    Attempt::Rejected { status, detail } => {
                        tracing::warn!(status, %detail, "the scheduler refused a condition report");
                        break;
                    }
                    Attempt::Retry { why } => {
                        failures = failures.saturating_add(1);
                        tracing::debug!(%why, "condition report not delivered; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(backoff.delay(failures)) => {}
                            changed = changes.changed() => {
                                if changed.is_err() {
                                    return;
                                }
                                break;
                            }
                        }
                    }
                }
            }
            told = body.condition.is_some();
        }
        if changes.has_changed().unwrap_or(false) {
            continue;
        }
        if told {
            tokio::select! {
                () = tokio::time::sleep(CONDITION_REPEAT) => {}
                changed = changes.changed() => if changed.is_err() { return; },
            }
        } else if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn deliver(
    uri: Uri,
    auth: Option<HeaderValue>,
    backoff: Backoff,
    mut queue: mpsc::UnboundedReceiver<StatusUpdate>,
    events: mpsc::UnboundedSender<ReportEvent>,
) {
    let client = http_client();
    let mut pending: VecDeque<StatusUpdate> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match queue.recv().await {
                Some(u) => pending.push_back(u),
                None => return,
            }
        }
        while let Ok(u) = queue.try_recv() {
            pending.push_back(u);
        }
        let Some(update) = pending.front() else {
            continue;
        };
        let mut failures = 0u32;
        let event = loop {
            match attempt(
                &client,
                &uri,
                auth.as_ref(),
                update,
                backoff.attempt_timeout,
            )
            .await
            {
                Attempt::Acked { duplicate } => {
                    break ReportEvent::Acknowledged {
                        seq: update.seq,
                        duplicate,
                    };
                }
                Attempt::Rejected { status, detail } => {
                    tracing::error!(seq = update.seq, status, %detail,
                        "the scheduler refused a status update; skipping it");
                    break ReportEvent::Rejected {
                        seq: update.seq,
                        status,
                        detail,
                    };
                }
                Attempt::Retry { why } => {
                    failures = failures.saturating_add(1);
                    let wait = backoff.delay(failures);
                    tracing::warn!(seq = update.seq, %why, ?wait, "status update not delivered; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        pending.pop_front();
        if events.send(event).is_err() {
            // Nobody listens for acknowledgements any more; keep delivering anyway.
            tracing::debug!("status report events receiver dropped");
        }
    }
}

async fn attempt(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: &Uri,
    auth: Option<&HeaderValue>,
    update: &impl serde::Serialize,
    timeout: Duration,
) -> Attempt {
    let body = match serde_json::to_vec(update) {
        Ok(b) => b,
        Err(e) => {
            return Attempt::Rejected {
                status: 0,
                detail: format!("cannot encode the update: {e}"),
            };
        }
    };
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        builder = builder.header(hyper::header::AUTHORIZATION, auth.clone());
    }
    let request = match builder.body(Full::new(Bytes::from(body))) {
        Ok(r) => r,
        Err(e) => {
            return Attempt::Rejected {
                status: 0,
                detail: format!("cannot build the request: {e}"),
            };
        }
    };
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e}: {}", root_cause(&e)))?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("reading the answer: {e}"))?;
        Ok::<_, String>((status, body))
    };
    let (status, body) = match tokio::time::timeout(timeout, exchange).await {
        Err(_) => {
            return Attempt::Retry {
                why: format!("no answer within {timeout:?}"),
            };
        }
        Ok(Err(why)) => return Attempt::Retry { why },
        Ok(Ok(r)) => r,
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    match status {
        200..=299 => {
            let duplicate = serde_json::from_slice::<hearth_scheduler::api::StatusAck>(&body)
                .map(|a| a.duplicate)
                .unwrap_or(false);
            Attempt::Acked { duplicate }
        }
        // 401/403: the token is missing, wrong or not (yet) known to the scheduler — a problem of
        // the sender, not of the update, which a corrected token file or scheduler fixes.
        401 | 403 | 408 | 409 | 429 => Attempt::Retry {
            why: format!("{status}: {text}"),
        },
        400..=499 => Attempt::Rejected {
            status,
            detail: text,
        },
        _ => Attempt::Retry {
            why: format!("{status}: {text}"),
        },
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_initial_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(1),
        };
        let delays: Vec<u64> = (1..=7).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(b.delay(200), Duration::from_secs(2), "no overflow");
    }

    #[test]
    fn terminal_states_carry_aurora_reasons() {
        assert_eq!(
            terminal_status(TaskState::Success),
            Some((ScheduleStatus::Finished, "Task finished."))
        );
        assert_eq!(
            terminal_status(TaskState::Failed),
            Some((ScheduleStatus::Failed, "Task failed."))
        );
        assert_eq!(
            terminal_status(TaskState::Killed),
            Some((ScheduleStatus::Killed, "Task killed."))
        );
        assert_eq!(
            terminal_status(TaskState::Lost),
            Some((ScheduleStatus::Lost, "Task lost."))
        );
        assert_eq!(terminal_status(TaskState::Active), None);
    }

    #[test]
    fn scheduler_url_becomes_the_status_endpoint() {
        assert_eq!(
            status_uri("http://127.0.0.1:8081/").unwrap().to_string(),
            "http://127.0.0.1:8081/api/v1/status"
        );
        assert_eq!(
            status_uri("http://sched:80/prefix").unwrap().to_string(),
            "http://sched:80/prefix/api/v1/status"
        );
        assert!(matches!(
            status_uri("https://x"),
            Err(ReportError::Scheme { .. })
        ));
        assert!(status_uri("http://").is_err());
    }

    #[test]
    fn token_files_are_trimmed_and_bad_ones_refused_without_showing_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret-token\n").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "s3cret-token");
        for bad in ["", " \n", "two words", "ctl\u{7}char"] {
            std::fs::write(&path, bad).unwrap();
            let e = read_token_file(&path).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            if !bad.trim().is_empty() {
                assert!(!e.contains(bad.trim()), "the token is not shown: {e}");
            }
        }
        let missing = dir.path().join("missing");
        assert!(matches!(
            read_token_file(&missing),
            Err(ReportError::TokenFile {
                source: Some(_),
                ..
            })
        ));
        let v = bearer("abc").unwrap();
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("abc"), "Debug hides it");
    }

    /// One HTTP/1.1 request from `stream`: its head (lower-cased header names) and body.
    async fn read_request(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < end + 4 + len {
                    let n = stream.read(&mut chunk).await.unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                return (head, buf[end + 4..end + 4 + len].to_vec());
            }
        }
    }

    /// Every attempt carries the bearer token; a 401 (the scheduler does not know the token yet)
    /// is retried, not taken as a refusal of the update.
    #[tokio::test]
    async fn reports_carry_the_bearer_token_and_a_401_is_retried() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            for answer in [401u16, 200] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (head, body) = read_request(&mut stream).await;
                heads.push(head);
                let (status, body) = if answer == 200 {
                    let u: StatusUpdate = serde_json::from_slice(&body).unwrap();
                    let ack = format!(
                        r#"{{"task_id":"{}","seq":{},"duplicate":false}}"#,
                        u.task_id, u.seq
                    );
                    ("200 OK", ack)
                } else {
                    ("401 Unauthorized", "unknown token".to_owned())
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(reply.as_bytes()).await.unwrap();
                stream.shutdown().await.ok();
            }
            heads
        });
        let backoff = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            attempt_timeout: Duration::from_secs(5),
        };
        let (reporter, mut events) =
            Reporter::start_with_token(&format!("http://127.0.0.1:{port}"), Some("tok-1"), backoff)
                .unwrap();
        reporter
            .send(StatusUpdate {
                task_id: "t".into(),
                seq: 1,
                state: ScheduleStatus::Starting,
                reason: None,
                timestamp_ms: 0,
            })
            .unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .unwrap();
        assert_eq!(
            ev,
            Some(ReportEvent::Acknowledged {
                seq: 1,
                duplicate: false
            })
        );
        let heads = server.await.unwrap();
        assert_eq!(heads.len(), 2);
        for h in heads {
            assert!(h.contains("\r\nauthorization: bearer tok-1"), "{h}");
        }
    }

    /// Against a port nobody listens on, the reporter keeps retrying (with the capped backoff).
    #[tokio::test(start_paused = true)]
    async fn reporter_keeps_retrying_while_the_scheduler_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            attempt_timeout: Duration::from_secs(1),
        };
        let (reporter, _events) =
            Reporter::start(&format!("http://127.0.0.1:{port}"), backoff).unwrap();
        let start = tokio::time::Instant::now();
        reporter
            .send(StatusUpdate {
                task_id: "t".into(),
                seq: 1,
                state: ScheduleStatus::Starting,
                reason: None,
                timestamp_ms: 0,
            })
            .unwrap();
        // Failures at ~0, 1, 3, 7, 11 s (waits 1, 2, 4, 4): after 12 s it is still retrying.
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(!reporter.handle.is_finished());
        assert!(start.elapsed() >= Duration::from_secs(12));
    }
}
