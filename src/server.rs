//! The long-running parts the CLI starts: the scheduler (`hearth_scheduler::serve`), the agent
//! (`hearth_agent::run`), and the offline scheduler tools. Each runs on a multi-threaded tokio
//! runtime until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use hearth_checkpoints::error_chain;

use crate::agent_cmd::AgentArgs;
use crate::output::UsageError;
use crate::sched_cmd::{ServeArgs, read_tokens};

/// `hearth scheduler --bind ADDR --data DIR ...`: serve until SIGINT or SIGTERM.
pub fn serve_scheduler(
    _args: &ServeArgs,
    _bind: SocketAddr,
    _data: PathBuf,
    _agent_tokens: Vec<String>,
) -> anyhow::Result<()> {
    anyhow::bail!("this build has no scheduler server yet")
}

pub fn restore(_backup: &Path, _data: &Path) -> anyhow::Result<()> {
    anyhow::bail!("this build has no scheduler server yet")
}

pub fn hash_password(_password: &str) -> anyhow::Result<String> {
    anyhow::bail!("this build has no scheduler server yet")
}

/// `hearth agent ...`: run until SIGINT or SIGTERM (the tasks keep running).
pub fn run_agent(args: &AgentArgs) -> anyhow::Result<()> {
    let usage = |e: hearth_agent::AgentError| UsageError(error_chain(&e));
    let mut cfg = hearth_agent::AgentConfig::new(args.scheduler.clone(), args.root.clone());
    if let Some(name) = &args.name {
        cfg.name.clone_from(name);
    }
    cfg.attributes = args.attributes.iter().cloned().collect();
    if let Some(r) = &args.resources {
        cfg.resources = hearth_agent::parse_resources_at(r, &args.root).map_err(usage)?;
    }
    cfg.ports = hearth_agent::parse_port_range(&args.ports).map_err(usage)?;
    if let Some(path) = &args.token_file {
        let token = read_tokens(path)?.into_iter().next();
        cfg.token = token;
    }
    cfg.extra_run_args.clone_from(&args.run_args);
    init_tracing();
    let name = cfg.name.clone();
    runtime()
        .context("starting the agent's runtime")?
        .block_on(hearth_agent::run(cfg, shutdown_signal()))
        .map_err(|e| anyhow::anyhow!("agent {name}: {}", error_chain(&e)))
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
