//! Hearth's agent (`hearth agent`): one per host. It syncs with the scheduler in a long-poll loop
//! (`POST /api/v1/agents/sync`, the contract of [`hearth_scheduler::wire::AgentSync`]), runs one
//! `hearth run` per assigned task as a detached child, kills on order (`hearth kill`), and after
//! its own restart re-adopts its tasks from its root and reports them, so the scheduler can
//! reconcile.
//!
//! * [`config`]: [`AgentConfig`], `--resources` / `--ports` parsing, the host's resources.
//! * [`book`]: the decisions — launch, recover, kill, report, forget — pure, with the time and
//!   every observation passed in.
//! * [`host`]: the OS seam ([`host::Host`]): probing tasks on disk (lock, checkpoint), the agent's
//!   own records under `<root>/agent/`, starting children in their own sessions, reaping them.
//! * [`sync`]: the HTTP client of the sync endpoint.
//! * [`agent`]: the book joined to a host, and [`run`], the loop.
//!
//! The token (`--token-file`) goes to the scheduler as `Authorization: Bearer` on each sync and to
//! the executors through `<root>/agent/token` (mode 0600), whose path every child gets in
//! [`hearth_executor::report::TOKEN_FILE_ENV`]; it is never logged.

pub mod agent;
pub mod book;
pub mod config;
pub mod host;
pub mod sync;

use std::path::PathBuf;

pub use agent::run;
pub use config::{
    AgentConfig, DEFAULT_PORTS, host_resources, host_resources_at, parse_port_range,
    parse_resources, parse_resources_at, run_cgroup_parent, settle_task_cgroups,
};

/// Read the agent token from `--token-file`: the file's content without surrounding white
/// space; an empty or unreadable file, or one holding more than one printable word, is an error
/// naming the file (never the token).
pub fn read_token_file(path: &std::path::Path) -> Result<String, AgentError> {
    hearth_executor::report::read_token_file(path).map_err(|e| AgentError::TokenFile {
        path: path.to_path_buf(),
        reason: match &e {
            hearth_executor::report::ReportError::TokenFile {
                problem, source, ..
            } => match source {
                Some(io) => format!("{problem}: {io}"),
                None => problem.clone(),
            },
            other => other.to_string(),
        },
    })
}

/// Why the agent cannot start or act. Messages name the value and what to do; none holds the
/// token.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("--resources {spec:?}: {item:?}: {reason}")]
    Resources {
        spec: String,
        item: String,
        reason: String,
    },
    #[error("--ports {spec:?}: {reason}")]
    Ports { spec: String, reason: String },
    #[error("scheduler URL {url:?} {reason}")]
    SchedulerUrl { url: String, reason: String },
    #[error(
        "the agent token holds characters an HTTP header cannot carry; use one line of printable ASCII"
    )]
    Token,
    #[error("--token-file {path}: {reason}")]
    TokenFile { path: PathBuf, reason: String },
    #[error("assignment of task {task_id:?} refused: {reason}")]
    Assignment { task_id: String, reason: String },
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start hearth {command} for task {task_id:?}")]
    Spawn {
        task_id: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
}
