//! `hearth run`: its arguments, and how they become a run of the executor.
//!
//! The executor and its keeper stay resident for a task's whole life, one pair per task, so
//! what they map counts on every host many times over. `hearth` holds the scheduler, the agent,
//! the observer and the job client too, and start-up touches its code all over (the kernel maps
//! the pages around each fault, 64 KiB at a time): a task supervised by `hearth` itself cost
//! about 5.8 MiB of PSS against 2.9 MiB for an executable holding the executor alone. So `hearth
//! run` parses its arguments (for `--help` and errors) and then [`hand_over`]s to
//! `hearth-executor` (`src/bin/hearth-executor.rs`), built from the same sources and installed
//! beside it, which runs the task in the same process (same pid). When it is missing (`cargo
//! run` builds `hearth` alone) the task runs in `hearth` itself, as before.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::aurora_cmd;
use crate::logging::{self, LogFormat};

/// The arguments of `hearth run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The task config (Aurora job, MesosTaskInstance or Thermos task JSON, or an `.aurora`
    /// file with --job).
    pub config: PathBuf,
    /// For an `.aurora` config: the job to run, cluster/role/environment/name.
    #[arg(long)]
    pub job: Option<String>,
    /// For an `.aurora` config: bind a template variable, NAME=VALUE (repeatable).
    #[arg(long = "bind")]
    pub binds: Vec<String>,
    /// Checkpoint root [default: /var/run/hearth as root, else $XDG_RUNTIME_DIR/hearth].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Sandbox directory [default: <root>/sandboxes/<task id>].
    #[arg(long)]
    pub sandbox: Option<PathBuf>,
    /// Task id [default: <role>-<env>-<name>[-<instance>]-<launch ms>-<suffix>].
    #[arg(long)]
    pub task_id: Option<String>,
    /// A port given by the agent, NAME=PORT (repeatable); other named ports are allocated.
    #[arg(long = "port", value_parser = parse_port)]
    pub ports: Vec<(String, u16)>,
    /// The instance number bound to {{mesos.instance}}.
    #[arg(long)]
    pub instance: Option<u32>,
    /// The host name bound to {{mesos.hostname}} [default: this host's name].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Run the processes as this user (as root) [default: the job's role].
    #[arg(long, conflicts_with = "no_setuid")]
    pub user: Option<String>,
    /// Run the processes as the executor's own user.
    #[arg(long)]
    pub no_setuid: bool,
    /// Print progress as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Take over a task whose executor is still alive (it is killed first).
    #[arg(long)]
    pub force: bool,
    /// The parent cgroup the task's cgroup is created under, relative to the cgroup mount
    /// root(s) [default: `hearth`, or `<delegated>/hearth` when this runs inside a cgroup
    /// systemd delegated (cgroup v2, Delegate=yes); see ARCHITECTURE.md].
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// Do not use cgroups: process groups and a subreaper only (no limits, no OOM reasons).
    #[arg(long)]
    pub no_cgroups: bool,
    /// Report status updates (STARTING, RUNNING, FINISHED, ...) to this scheduler
    /// (`http://host:port`); undelivered ones are re-sent after a restart.
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Send `Authorization: Bearer <first line of this file>` with status reports (the
    /// agent's token, when the scheduler has agent tokens).
    #[arg(long, requires = "scheduler")]
    pub scheduler_token_file: Option<PathBuf>,
}

/// `hearth run`: replace this process with `hearth-executor` (beside this executable) given
/// this process's own arguments; when it is not there, or cannot be run, run the task here.
/// Logging is installed only when the run stays here (`hearth-executor` installs its own).
pub fn hand_over(args: RunArgs, log_format: LogFormat) -> ExitCode {
    if let Some(executor) = beside_this_executable(hearth_executor::EXECUTABLE) {
        let mut argv: Vec<OsString> = vec![hearth_executor::expect_version_arg().into()];
        argv.extend(std::env::args_os().skip(1));
        // Only returns on failure.
        let error = std::process::Command::new(&executor).args(argv).exec();
        logging::init(log_format);
        tracing::warn!(
            "cannot run {}: {error}; running the task in this process",
            executor.display()
        );
    } else {
        logging::init(log_format);
        tracing::debug!(
            "no {} beside this executable: running the task in this process",
            hearth_executor::EXECUTABLE
        );
    }
    run(args)
}

/// `name` in the directory of the running executable, when it is a file there.
pub(crate) fn beside_this_executable(name: &str) -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(name))
        .filter(|p| p.is_file())
}

/// Run the task in this process until it ends; the exit status is `hearth run`'s.
pub fn run(args: RunArgs) -> ExitCode {
    // An `.aurora` config is evaluated first; its job's JSON is what runs.
    let materialized = match materialize(&args) {
        Ok(m) => m,
        Err(message) => {
            eprintln!("hearth: {message}");
            return ExitCode::from(2);
        }
    };
    let config = materialized
        .as_ref()
        .map_or(args.config, |m| m.path.clone());
    let opts = hearth_executor::RunOptions {
        config,
        root: args.root,
        sandbox: args.sandbox,
        task_id: args.task_id,
        ports: args.ports,
        instance: args.instance,
        hostname: args.hostname,
        user: args.user,
        no_setuid: args.no_setuid,
        json: args.json,
        force: args.force,
        cgroup_parent: args.cgroup_parent,
        no_cgroups: args.no_cgroups,
        scheduler: args.scheduler,
        kill_on_start: false,
    };
    ExitCode::from(hearth_executor::run_with_token_file(
        &opts,
        args.scheduler_token_file.as_deref(),
    ))
}

/// The JSON config to run: for an `.aurora` file, its job `--job` written to a temporary file
/// (removed when the run ends); for JSON, nothing to do.
fn materialize(args: &RunArgs) -> Result<Option<aurora_cmd::Materialized>, String> {
    let config = &args.config;
    if !aurora_cmd::is_aurora_file(config) {
        if args.job.is_some() || !args.binds.is_empty() {
            return Err(format!(
                "--job and --bind apply to .aurora configs; {} is JSON",
                config.display()
            ));
        }
        return Ok(None);
    }
    let key = args.job.as_deref().ok_or_else(|| {
        let known = aurora_cmd::evaluate(config, None, &args.binds)
            .map(|jobs| {
                jobs.iter()
                    .map(|j| j.key.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        format!(
            "{}: an .aurora config needs --job cluster/role/environment/name (it defines: {known})",
            config.display()
        )
    })?;
    aurora_cmd::Materialized::new(config, key, &args.binds).map(Some)
}

/// `NAME=PORT`.
fn parse_port(s: &str) -> Result<(String, u16), String> {
    let (name, port) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PORT, got {s:?}"))?;
    if name.is_empty() {
        return Err(format!("empty port name in {s:?}"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|e| format!("port of {name:?} is not a number from 0 to 65535: {e}"))?;
    Ok((name.to_owned(), port))
}
