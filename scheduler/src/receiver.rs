//! A minimal status-receiving server (feature `receiver`): the scheduler side of
//! [`crate::api`], with applied updates kept in memory.
//!
//! Endpoints:
//! * `POST /api/v1/status` ([`STATUS_PATH`]): body a [`StatusUpdate`]; answers as the contract in
//!   [`crate::api`] says (`200` + [`StatusAck`], or `409` + [`StatusConflict`]); `400` for a body
//!   that is not a status update.
//! * `POST /api/v1/status/condition` ([`CONDITION_PATH`]): body an [`ExecutorCondition`], kept
//!   in arrival order ([`StatusStore::conditions`]); `204`.
//! * `GET /health`: `ok`.
//!
//! The [`StatusStore`] outlives any one server, so a test can stop the server, start another on
//! the same port with the same store, and check that every update was applied once, in order.
//! [`StatusStore::lose_next_acks`] makes the server apply updates but answer `503`, as if the
//! acknowledgement had been lost on the way back.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::api::{
    Admission, CONDITION_PATH, ExecutorCondition, STATUS_PATH, StatusAck, StatusConflict,
    StatusUpdate, admit,
};

/// Updates applied so far, per task, in the order they were applied.
#[derive(Debug, Default)]
pub struct StatusStore {
    inner: Mutex<StoreInner>,
}

#[derive(Debug, Default)]
struct StoreInner {
    applied: BTreeMap<String, Vec<StatusUpdate>>,
    /// Every request received (applied, duplicate or refused), in arrival order.
    received: u64,
    conditions: BTreeMap<String, Vec<ExecutorCondition>>,
    lose_acks: u64,
}

impl StatusStore {
    pub fn new() -> Arc<StatusStore> {
        Arc::new(StatusStore::default())
    }

    fn lock(&self) -> MutexGuard<'_, StoreInner> {
        // The data stays consistent under a panic elsewhere (each change is one push).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The updates applied for `task_id`, in order.
    pub fn applied(&self, task_id: &str) -> Vec<StatusUpdate> {
        self.lock()
            .applied
            .get(task_id)
            .cloned()
            .unwrap_or_default()
    }

    /// The condition reports received for `task_id`, in arrival order.
    pub fn conditions(&self, task_id: &str) -> Vec<ExecutorCondition> {
        self.lock()
            .conditions
            .get(task_id)
            .cloned()
            .unwrap_or_default()
    }

    /// How many update requests arrived (including resends and refusals).
    pub fn received(&self) -> u64 {
        self.lock().received
    }

    /// Apply the next `n` updates but answer `503` instead of acknowledging them.
    pub fn lose_next_acks(&self, n: u64) {
        self.lock().lose_acks = n;
    }

    /// Apply `update` under the contract of [`crate::api`]; returns the answer to send.
    pub fn offer(&self, update: StatusUpdate) -> Offered {
        let mut inner = self.lock();
        inner.received += 1;
        let log = inner.applied.entry(update.task_id.clone()).or_default();
        let last = log.last().map(|u| u.seq);
        match admit(last, update.seq) {
            Admission::Apply => {
                let ack = StatusAck {
                    task_id: update.task_id.clone(),
                    seq: update.seq,
                    duplicate: false,
                };
                log.push(update);
                if inner.lose_acks > 0 {
                    inner.lose_acks -= 1;
                    Offered::AckLost
                } else {
                    Offered::Ack(ack)
                }
            }
            Admission::Duplicate => Offered::Ack(StatusAck {
                task_id: update.task_id,
                seq: update.seq,
                duplicate: true,
            }),
            Admission::Gap { expected_seq } => Offered::Conflict(StatusConflict {
                task_id: update.task_id,
                expected_seq,
            }),
        }
    }
}

/// The answer to one offered update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    Ack(StatusAck),
    Conflict(StatusConflict),
    /// Applied, but the acknowledgement is withheld (see [`StatusStore::lose_next_acks`]).
    AckLost,
}

impl IntoResponse for Offered {
    fn into_response(self) -> Response {
        match self {
            Offered::Ack(ack) => (StatusCode::OK, Json(ack)).into_response(),
            Offered::Conflict(c) => (StatusCode::CONFLICT, Json(c)).into_response(),
            Offered::AckLost => (StatusCode::SERVICE_UNAVAILABLE, "ack lost").into_response(),
        }
    }
}

/// The router; handlers are testable without a socket.
pub fn app(store: Arc<StatusStore>) -> Router {
    Router::new()
        .route(STATUS_PATH, post(receive))
        .route(CONDITION_PATH, post(receive_condition))
        .route("/health", get(|| async { "ok" }))
        .with_state(store)
}

async fn receive(
    State(store): State<Arc<StatusStore>>,
    body: Result<Json<StatusUpdate>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(update)) => store.offer(update).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    }
}

async fn receive_condition(
    State(store): State<Arc<StatusStore>>,
    body: Result<Json<ExecutorCondition>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(c)) => {
            store
                .lock()
                .conditions
                .entry(c.task_id.clone())
                .or_default()
                .push(c);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    }
}

/// Serve [`app`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    store: Arc<StatusStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(store))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::ScheduleStatus;

    fn update(seq: u64) -> StatusUpdate {
        StatusUpdate {
            task_id: "t".into(),
            seq,
            state: ScheduleStatus::Running,
            reason: None,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn store_applies_each_seq_once_in_order() {
        let store = StatusStore::new();
        assert!(matches!(store.offer(update(1)), Offered::Ack(a) if !a.duplicate));
        assert!(matches!(store.offer(update(1)), Offered::Ack(a) if a.duplicate));
        assert!(matches!(store.offer(update(3)), Offered::Conflict(c) if c.expected_seq == 2));
        assert!(matches!(store.offer(update(2)), Offered::Ack(a) if !a.duplicate));
        let seqs: Vec<u64> = store.applied("t").iter().map(|u| u.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(store.received(), 4);
    }

    #[test]
    fn lost_ack_still_applies_and_resend_is_a_duplicate() {
        let store = StatusStore::new();
        store.lose_next_acks(1);
        assert_eq!(store.offer(update(1)), Offered::AckLost);
        assert!(matches!(store.offer(update(1)), Offered::Ack(a) if a.duplicate));
        assert_eq!(store.applied("t").len(), 1);
    }
}
