//! The observer's errors: [`ObserverError`] for starting and serving, [`ApiError`] for one
//! request. An `ApiError` becomes a response with a status that says whose fault it is (4xx for
//! anything a request names that does not exist or is refused) and a short message; the details
//! of an internal failure are logged, not shown.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::chunk::BadChunkParam;
use crate::safepath::PathError;

/// Why the observer could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    /// `--root` was not given.
    #[error("no checkpoint root given")]
    NoRoots,
    /// A root cannot be examined.
    #[error("cannot read checkpoint root {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A root is not a directory.
    #[error("checkpoint root {path} is not a directory")]
    RootNotDir { path: PathBuf },
    /// The tokio runtime could not be built.
    #[error("cannot start the async runtime")]
    Runtime {
        #[source]
        source: io::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The server failed while serving.
    #[error("serving on {addr} failed")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The background thread could not be started.
    #[error("cannot start the background thread")]
    Thread {
        #[source]
        source: io::Error,
    },
}

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no task {task_id:?}")]
    UnknownTask { task_id: String },
    #[error("no tasks {task_ids:?}")]
    UnknownTasks { task_ids: Vec<String> },
    #[error("task {task_id:?} has no process {process:?}")]
    UnknownProcess { task_id: String, process: String },
    #[error("process {process:?} of task {task_id:?} has no run {run}")]
    UnknownRun {
        task_id: String,
        process: String,
        run: String,
    },
    #[error("no page at {path:?}")]
    NoRoute { path: String },
    #[error("unknown log type {log_type:?} (stdout or stderr)")]
    UnknownLogType { log_type: String },
    #[error("bad {field}: {value:?}")]
    BadParam { field: &'static str, value: String },
    #[error("bad chunk request")]
    Chunk(#[from] BadChunkParam),
    #[error("task {task_id:?} has no sandbox on this host")]
    NoSandbox { task_id: String },
    #[error("task {task_id:?} has no log directory on this host")]
    NoLogs { task_id: String },
    #[error("task {task_id:?}")]
    Path {
        task_id: String,
        #[source]
        source: PathError,
    },
    #[error("cannot {op} in task {task_id:?}")]
    Io {
        op: &'static str,
        task_id: String,
        #[source]
        source: io::Error,
    },
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownTask { .. }
            | ApiError::NoRoute { .. }
            | ApiError::UnknownTasks { .. }
            | ApiError::UnknownProcess { .. }
            | ApiError::UnknownRun { .. }
            | ApiError::UnknownLogType { .. }
            | ApiError::NoSandbox { .. }
            | ApiError::NoLogs { .. } => StatusCode::NOT_FOUND,
            ApiError::BadParam { .. } | ApiError::Chunk(_) => StatusCode::BAD_REQUEST,
            ApiError::Path { source, .. } => match source {
                PathError::Refused { .. } => StatusCode::FORBIDDEN,
                PathError::NotFound { .. } => StatusCode::NOT_FOUND,
                PathError::Base { .. } => StatusCode::NOT_FOUND,
                PathError::Io { source, .. } => io_status(source),
            },
            ApiError::Io { source, .. } => io_status(source),
        }
    }

    /// The message shown to the client: the error and its causes, except for internal
    /// failures, whose causes are logged instead.
    pub fn public_message(&self) -> String {
        if self.status().is_server_error() {
            tracing::error!(error = %chain(self), "request failed");
            return self.to_string();
        }
        chain(self)
    }
}

fn io_status(e: &io::Error) -> StatusCode {
    match e.kind() {
        io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub use hearth_checkpoints::error_chain as chain;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({ "error": self.public_message(), "status": status.as_u16() });
        (status, Json(body)).into_response()
    }
}
