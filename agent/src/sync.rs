//! The agent's one HTTP exchange: `POST` [`AGENT_SYNC_PATH`] with an [`AgentSync`], answered
//! (possibly after a long poll) with [`AgentOrders`].

use std::time::Duration;

use hearth_scheduler::wire::{AGENT_SYNC_PATH, AgentOrders, AgentSync};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::AgentError;

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer read (orders carry task configs).
const MAX_ANSWER: usize = 64 << 20;

/// Why one sync failed. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot reach the scheduler: {0}")]
    Unreachable(String),
    #[error("no answer from the scheduler within {0:?}")]
    Timeout(Duration),
    #[error(
        "the scheduler refused the agent ({status}): {body}; check the agent token (--token-file) \
         against the scheduler's --agent-token-file"
    )]
    Refused { status: u16, body: String },
    #[error("the scheduler answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the scheduler's answer is not an AgentOrders: {0}")]
    Decode(String),
}

/// A pooled HTTP client for the sync endpoint of one scheduler.
#[derive(Debug, Clone)]
pub struct SyncClient {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    auth: Option<HeaderValue>,
}

/// `http://host[:port][/prefix]` → the sync endpoint's URI.
pub fn sync_uri(scheduler: &str) -> Result<Uri, AgentError> {
    let bad = |reason: &str| AgentError::SchedulerUrl {
        url: scheduler.to_owned(),
        reason: reason.to_owned(),
    };
    let base = scheduler.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(bad("must start with http://"));
    }
    let uri: Uri = format!("{base}{AGENT_SYNC_PATH}")
        .parse()
        .map_err(|_| bad("is not a valid URL"))?;
    if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
        return Err(bad("must be http://host[:port][/prefix]"));
    }
    Ok(uri)
}

impl SyncClient {
    pub fn new(scheduler: &str, token: Option<&str>) -> Result<SyncClient, AgentError> {
        let uri = sync_uri(scheduler)?;
        let auth = match token {
            Some(t) => Some(hearth_executor::report::bearer(t).map_err(|_| AgentError::Token)?),
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // A cut link must not hold a new attempt for the whole long-poll timeout.
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(SyncClient { client, uri, auth })
    }

    /// One sync, abandoned after `timeout`.
    pub async fn sync(&self, req: &AgentSync, timeout: Duration) -> Result<AgentOrders, SyncError> {
        let body = serde_json::to_vec(req).map_err(|e| SyncError::Decode(e.to_string()))?;
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.auth {
            builder = builder.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SyncError::Unreachable(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| SyncError::Unreachable(root_cause(&e)))?;
            let status = response.status().as_u16();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| SyncError::Unreachable(format!("reading the answer: {e}")))?;
            Ok::<_, SyncError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| SyncError::Timeout(timeout))??;
        match status {
            200..=299 => {
                serde_json::from_slice(&body).map_err(|e| SyncError::Decode(e.to_string()))
            }
            401 | 403 => Err(SyncError::Refused {
                status,
                body: shorten(&body),
            }),
            _ => Err(SyncError::Status {
                status,
                body: shorten(&body),
            }),
        }
    }
}

/// The start of an error body, for a log line.
fn shorten(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    let mut text = e.to_string();
    while let Some(next) = cur.source() {
        cur = next;
    }
    if !std::ptr::addr_eq(cur, e) {
        text = format!("{text}: {cur}");
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_url_becomes_the_sync_endpoint() {
        assert_eq!(
            sync_uri("http://127.0.0.1:8081/").unwrap().to_string(),
            "http://127.0.0.1:8081/api/v1/agents/sync"
        );
        assert_eq!(
            sync_uri("http://s:80/p").unwrap().to_string(),
            "http://s:80/p/api/v1/agents/sync"
        );
        for bad in ["https://s", "s:80", "http://", "http://s/?x=1"] {
            assert!(
                matches!(sync_uri(bad), Err(AgentError::SchedulerUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn long_error_bodies_are_shortened() {
        let long = "x".repeat(1000);
        assert_eq!(shorten(long.as_bytes()).len(), 303);
        assert_eq!(shorten(b" short \n"), "short");
    }
}
