//! The long-running parts the CLI starts: the scheduler (`hearth_scheduler::serve`), the agent
//! (`hearth_agent::run`), and the offline scheduler tools. Each runs on a multi-threaded tokio
//! runtime until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::agent_cmd::AgentArgs;
use crate::sched_cmd::ServeArgs;

pub fn serve_scheduler(
    _args: &ServeArgs,
    _bind: SocketAddr,
    _data: PathBuf,
    _agent_tokens: Vec<String>,
) -> anyhow::Result<()> {
    bail!("this build has no scheduler server yet")
}

pub fn restore(_backup: &Path, _data: &Path) -> anyhow::Result<()> {
    bail!("this build has no scheduler server yet")
}

pub fn hash_password(_password: &str) -> anyhow::Result<String> {
    bail!("this build has no scheduler server yet")
}

pub fn run_agent(_args: &AgentArgs) -> anyhow::Result<()> {
    bail!("this build has no agent yet")
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
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

/// Logs to stderr; `RUST_LOG` picks the level (default `info`).
#[allow(dead_code)] // used once the server crates are wired
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
