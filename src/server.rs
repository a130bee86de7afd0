//! The long-running parts the CLI starts: the scheduler (`hearth_scheduler::serve`), the agent
//! (`hearth_agent::run`), and the offline scheduler tools. Each runs on a multi-threaded tokio
//! runtime until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::agent_cmd::AgentArgs;
use crate::output::UsageError;
use crate::sched_cmd::{ServeArgs, read_tokens};

/// `hearth scheduler --bind ADDR --data DIR ...`: serve until SIGINT or SIGTERM.
pub fn serve_scheduler(
    args: &ServeArgs,
    bind: SocketAddr,
    data: PathBuf,
    agent_tokens: Vec<String>,
) -> anyhow::Result<()> {
    let mut cfg = hearth_scheduler::SchedulerConfig::new(bind, data);
    cfg.backup_dir.clone_from(&args.backup_dir);
    cfg.security_ini.clone_from(&args.security_ini);
    cfg.auth_reads = args.auth_reads;
    cfg.allow_plaintext_passwords = args.allow_plaintext_passwords;
    cfg.agent_tokens = agent_tokens;
    cfg.cluster.clone_from(&args.cluster);
    cfg.agent_timeout = args.agent_timeout;
    cfg.transient_timeout = args.transient_timeout;
    cfg.flapping_threshold = args.flapping_threshold;
    cfg.initial_flapping_delay = args.initial_flapping_delay;
    cfg.max_flapping_delay = args.max_flapping_delay;
    cfg.kill_retry_initial = args.kill_retry_initial;
    cfg.kill_retry_max = args.kill_retry_max;
    cfg.backup_interval = args.backup_interval;
    cfg.backups_kept = args.backups_kept;
    cfg.placement_retry_initial = args.placement_retry_initial;
    cfg.placement_retry_max = args.placement_retry_max;
    // The server logs "scheduler listening on http://ADDR" once it has bound the address.
    runtime()?
        .block_on(hearth_scheduler::serve(cfg, shutdown_signal()))
        .map_err(|e| anyhow::anyhow!("{}", chain(&e)))
}

/// `hearth scheduler restore BACKUP --data DIR` (offline).
pub fn restore(backup: &Path, data: &Path) -> anyhow::Result<()> {
    hearth_scheduler::restore(backup, data).map_err(|e| anyhow::anyhow!("{}", chain(&e)))
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    hearth_scheduler::hash_password(password)
        .map_err(|e| anyhow::anyhow!("hashing the password: {}", chain(&e)))
}

/// `hearth agent ...`: run until SIGINT or SIGTERM (the tasks keep running).
pub fn run_agent(args: &AgentArgs) -> anyhow::Result<()> {
    let usage = |e: hearth_agent::AgentError| UsageError(chain(&e));
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
    // Before any executor starts (and before the runtime's threads): they inherit our cgroup.
    hearth_agent::settle_task_cgroups(&cfg.extra_run_args);
    let name = cfg.name.clone();
    runtime()
        .context("starting the agent's runtime")?
        .block_on(hearth_agent::run(cfg, shutdown_signal()))
        .map_err(|e| anyhow::anyhow!("agent {name}: {}", chain(&e)))
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

/// An error and its causes, `: `-separated, leaving out a cause whose text the message before
/// it already ends with (errors that print their source themselves).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on x: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let e = Outer(std::io::Error::other("address in use"));
        assert_eq!(chain(&e), "cannot listen on x: address in use");
    }
}
