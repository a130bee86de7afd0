//! The Hearth observer: a read-only web UI and JSON API over checkpoint roots (Hearth's and
//! legacy Apache Thermos's) and the sandboxes of their tasks.
//!
//! # Endpoints
//!
//! Pages (HTML, usable without JavaScript; URLs are Thermos's):
//!
//! | path | what |
//! |---|---|
//! | `/`, `/main`, `/main/{type}[/{offset}[/{num}]]` | task list; `type` is `active`, `finished` or `all` |
//! | `/task/{id}` | header, statuses, ports, resources, processes with their latest run |
//! | `/rawtask/{id}` | the replayed checkpoint as JSON, in a page |
//! | `/process/{id}/{process}` | every run of a process |
//! | `/logs/{id}/{process}/{run}/{stdout\|stderr}` | live log viewer (`?end=` pages backwards) |
//! | `/file/{id}/{path}` | file viewer, same as the log viewer |
//! | `/browse/{id}[/{path}]` | sandbox browser, `ls -l`-like |
//! | `/download/{id}/{path}` | a sandbox file as an attachment |
//!
//! JSON and text:
//!
//! | path | what |
//! |---|---|
//! | `/j/task_ids[/{type}[/{offset}[/{num}]]]` | `{task_ids, type, offset, num, task_count}` |
//! | `/j/task/{id}`, `/j/task?task_id=a,b` | `{id: task}`; the task in `hearth inspect --json`'s shape plus name, resources and usage |
//! | `/j/process/{id}/{process}[/{run}]` | one run (latest by default; negative runs count from the end) |
//! | `/logdata/{id}/{process}/{run}/{type}?offset=&length=` | a chunk of a log (see [`chunk`]) |
//! | `/filedata/{id}/{path}?offset=&length=` | a chunk of a sandbox file |
//! | `/metrics` | Prometheus text: per task and per process state, restarts, exit code, CPU, memory, disk |
//! | `/health` | `ok` |
//!
//! Unknown tasks, processes, runs and files are 404 (JSON errors under `/j`, `/logdata` and
//! `/filedata`); paths that try to leave the sandbox are 403 (see [`safepath`]).
//!
//! # Pieces
//!
//! * [`store`]: every task of every root, replayed incrementally ([`tail`]), with usage
//!   ([`usage`]) and the ordered lists the pages read.
//! * [`watch`]: the background thread (inotify, rescans, sampling).
//! * [`api`] and [`pages`]: the handlers; [`app`] puts them in a router, which runs each of
//!   them on tokio's blocking pool (they read files with blocking calls).

pub mod api;
pub mod chunk;
pub mod error;
// The modules below read files with blocking calls. They run only off the runtime: in the
// handlers (on the blocking pool, see `off_runtime`), on the watcher's thread, or before the
// runtime starts (`Observer::open`).
#[allow(clippy::disallowed_methods)]
pub mod pages;
#[allow(clippy::disallowed_methods)]
pub mod safepath;
#[allow(clippy::disallowed_methods)]
pub mod store;
#[allow(clippy::disallowed_methods)]
pub mod tail;
#[allow(clippy::disallowed_methods)]
pub mod usage;
pub mod watch;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub use crate::api::AppState;
pub use crate::error::{ApiError, ObserverError};
pub use crate::store::{Observer, Settings};

/// The observer's default address: loopback only.
pub const DEFAULT_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 1338);

/// What `hearth observe` was asked for.
#[derive(Debug, Clone)]
pub struct ObserveOptions {
    /// Checkpoint roots (`--root`, repeatable). A task id in several roots is shown from the
    /// first.
    pub roots: Vec<PathBuf>,
    /// Address to listen on (`--bind`, default [`DEFAULT_BIND`]).
    pub bind: SocketAddr,
}

/// The router over an observer. Tests call it without a socket (`tower::ServiceExt::oneshot`).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::index))
        .route("/main", get(pages::main_bare))
        .route("/main/{type}", get(pages::main_with))
        .route("/main/{type}/{offset}", get(pages::main_with))
        .route("/main/{type}/{offset}/{num}", get(pages::main_with))
        .route("/task/{task_id}", get(pages::task_page))
        .route("/rawtask/{task_id}", get(pages::rawtask))
        .route("/process/{task_id}/{process}", get(pages::process_page))
        .route(
            "/logs/{task_id}/{process}/{run}/{log_type}",
            get(pages::logs_page),
        )
        .route("/file/{task_id}/{*path}", get(pages::file_page))
        .route("/browse/{task_id}", get(pages::browse_root))
        .route("/browse/{task_id}/", get(pages::browse_root))
        .route("/browse/{task_id}/{*path}", get(pages::browse))
        .route("/download/{task_id}/{*path}", get(pages::download))
        .route("/j/task_ids", get(api::task_ids_bare))
        .route("/j/task_ids/{type}", get(api::task_ids))
        .route("/j/task_ids/{type}/{offset}", get(api::task_ids))
        .route("/j/task_ids/{type}/{offset}/{num}", get(api::task_ids))
        .route("/j/task", get(api::task_many))
        .route("/j/task/{task_id}", get(api::task_one))
        .route("/j/process/{task_id}/{process}", get(api::process))
        .route("/j/process/{task_id}/{process}/{run}", get(api::process))
        .route(
            "/logdata/{task_id}/{process}/{run}/{log_type}",
            get(api::logdata),
        )
        .route("/filedata/{task_id}/{*path}", get(api::filedata))
        .route("/metrics", get(api::metrics))
        .route("/health", get(api::health))
        .fallback(fallback)
        .layer(axum::middleware::from_fn(off_runtime))
        .layer(axum::middleware::from_fn(guard_path))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}

/// Log every request at debug, and every server error (5xx) at error, with its method, path,
/// status and duration.
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    let micros = start.elapsed().as_micros();
    if status.is_server_error() {
        tracing::error!(%method, path, status = status.as_u16(), micros, "request failed");
    } else {
        tracing::debug!(%method, path, status = status.as_u16(), micros, "request");
    }
    response
}

/// Run the request's handler on tokio's blocking pool, off the runtime's threads. Every handler
/// does blocking file-system work: the store re-reads a task's checkpoint tail before serving it,
/// and logs, sandbox files and directories are read with `std::fs`. On the runtime's two threads,
/// one slow disk (or a huge directory) would stall every other connection.
async fn off_runtime(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let runtime = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || runtime.block_on(next.run(req))).await {
        Ok(response) => response,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Refuse, before routing, a URL path that does not percent-decode to UTF-8 or that holds a NUL
/// byte: no handler ever sees such a path, and the client gets a 403 rather than a parse error.
async fn guard_path(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let raw = req.uri().path();
    let decoded = percent_decode(raw);
    let bad = match std::str::from_utf8(&decoded) {
        Ok(s) => s.contains('\0').then_some("contains a NUL byte"),
        Err(_) => Some("is not UTF-8 once decoded"),
    };
    if let Some(reason) = bad {
        let err = ApiError::Path {
            task_id: String::new(),
            source: safepath::PathError::Refused {
                path: raw.to_owned(),
                reason,
            },
        };
        return err_response(raw, err);
    }
    next.run(req).await
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|&h| (h as char).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn err_response(path: &str, err: ApiError) -> Response {
    if path.starts_with("/j/") || path.starts_with("/logdata/") || path.starts_with("/filedata/") {
        err.into_response()
    } else {
        pages::PageError(err).into_response()
    }
}

async fn fallback(uri: Uri) -> Response {
    let err = ApiError::NoRoute {
        path: uri.path().to_owned(),
    };
    err_response(uri.path(), err)
}

/// Serve until SIGINT or SIGTERM. Builds its own tokio runtime.
pub fn observe(opts: ObserveOptions) -> Result<(), ObserverError> {
    let obs = Observer::open(&opts.roots, Settings::default())?;
    let _background = watch::spawn(obs.clone())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("observer")
        .build()
        .map_err(|source| ObserverError::Runtime { source })?;
    rt.block_on(serve(obs, opts.bind))
}

/// Bind `addr` and serve `obs` until SIGINT or SIGTERM.
pub async fn serve(obs: Arc<Observer>, addr: SocketAddr) -> Result<(), ObserverError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ObserverError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %local, "observer listening");
    axum::serve(listener, app(obs))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|source| ObserverError::Serve { addr, source })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn handlers_run_off_the_runtime_thread() {
        let here = format!("{:?}", std::thread::current().id());
        let router: Router = Router::new()
            .route(
                "/",
                get(|| async { format!("{:?}", std::thread::current().id()) }),
            )
            .layer(axum::middleware::from_fn(off_runtime));
        let req = axum::http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let there = String::from_utf8(body.to_vec()).unwrap();
        assert!(there.starts_with("ThreadId("), "{there}");
        assert_ne!(there, here, "the handler ran on the runtime's thread");
    }
}
