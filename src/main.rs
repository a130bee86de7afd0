//! `hearth`: the one command-line entry point. It parses arguments and dispatches to the crates;
//! the work itself lives in `checkpoints`, `executor`, `observer`, `scheduler` and `agent`.
//!
//! The executor-side commands (`run`, `kill`, `tail`, ...) are here; the scheduler, agent and
//! client commands live in their own modules: [`sched_cmd`], [`agent_cmd`], [`job`], [`host`],
//! [`dev`], over the scheduler's HTTP client [`client`].

mod agent_cmd;
mod args;
mod client;
mod dev;
mod host;
mod job;
mod job_view;
mod output;
mod sched_cmd;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hearth::{aurora_cmd, logging, run_cmd};
use hearth_checkpoints::root::{self, Root, RootError};
use hearth_checkpoints::{error_chain, inspect};
use regex::Regex;

#[derive(Debug, Parser)]
#[command(
    name = "hearth",
    version,
    about = "Run tasks in sandboxes, keep a durable record, inspect it."
)]
struct Cli {
    /// How diagnostics on stderr are written (the filter is `HEARTH_LOG`, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a task config (Aurora job, MesosTaskInstance or Thermos task JSON) and print it
    /// normalized, or every problem with its field path (exit 2). An `.aurora` file: every job
    /// it defines (or the one --job names) is evaluated and checked, one line each.
    Validate {
        /// Path to the config file.
        config: PathBuf,
        /// Print the normalized task as JSON (for an `.aurora` file: one result per job).
        #[arg(long)]
        json: bool,
        /// For an `.aurora` file: check only this job, cluster/role/environment/name.
        #[arg(long)]
        job: Option<String>,
        /// For an `.aurora` file: bind a template variable, NAME=VALUE (repeatable).
        #[arg(long = "bind")]
        binds: Vec<String>,
    },
    /// Run a task in the foreground until it ends: sandbox, cgroup, processes, checkpoint.
    ///
    /// Prints one line per process start, exit and restart, and the final state (--json: the same
    /// as JSON lines). Running it again with the same --task-id and --root after the executor
    /// died adopts the live processes and finishes the task.
    ///
    /// Exit status: 0 SUCCESS, 1 FAILED, 2 invalid config or usage (nothing is created),
    /// 3 KILLED, 4 LOST (the executor could not go on).
    #[command(verbatim_doc_comment)]
    Run(run_cmd::RunArgs),
    /// Tear a running task down and wait until it has ended; prints its final state.
    ///
    /// The task's executor escalates: POST /quitquitquit and /abortabortabort when the task has
    /// a lifecycle config and a health port, then SIGTERM to every process, SIGKILL after the
    /// task's finalization_wait, then the final processes.
    ///
    /// Exit status: 0 when the task ended (or had already ended), 1 when it could not be killed.
    #[command(verbatim_doc_comment)]
    Kill {
        /// The task to tear down (its id under --root)
        task_id: String,
        /// Checkpoint root [default: /var/run/hearth as root, else $XDG_RUNTIME_DIR/hearth].
        #[arg(long)]
        root: Option<PathBuf>,
        /// How long to wait for the task to end, in seconds.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
    /// Print the end of a process's current log; with -f, follow it (across restarts) until the
    /// task ends.
    Tail {
        /// The task whose log to print (its id under --root)
        task_id: String,
        /// The process [default: the task's only process].
        process: Option<String>,
        /// Checkpoint root [default: /var/run/hearth as root, else $XDG_RUNTIME_DIR/hearth].
        #[arg(long)]
        root: Option<PathBuf>,
        /// Show stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Keep printing what is appended.
        #[arg(short, long)]
        follow: bool,
        /// Lines of the existing log to print first.
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
    },
    /// Pause a task's health checks (they count as successes) until cleared or, with --for, for
    /// a while; --clear resumes them. Every start and end is recorded in the checkpoint.
    Snooze {
        /// The task whose health checks to pause or resume (its id under --root)
        task_id: String,
        /// Checkpoint root [default: /var/run/hearth as root, else $XDG_RUNTIME_DIR/hearth].
        #[arg(long)]
        root: Option<PathBuf>,
        /// How long, e.g. 90s, 30m, 2h, 1h30m (counted from now).
        #[arg(long = "for", conflicts_with = "clear")]
        duration: Option<String>,
        /// End the snooze now.
        #[arg(long)]
        clear: bool,
    },
    /// Serve the read-only web UI and JSON API over one or more checkpoint roots (Hearth or
    /// Thermos): tasks, processes, runs, logs, sandbox browsing, /metrics.
    Observe {
        /// A checkpoint root to serve (repeatable) [default: the default root].
        #[arg(long = "root")]
        roots: Vec<PathBuf>,
        /// Address to listen on (loopback by default).
        #[arg(long, default_value_t = hearth_observer::DEFAULT_BIND)]
        bind: std::net::SocketAddr,
    },
    /// Replay one task's checkpoint stream (Hearth or legacy Thermos) and print its header,
    /// status history and every run of every process.
    ///
    /// TARGET is a task id in the checkpoint root. Without --root, a TARGET that exists on disk
    /// is read directly: a stream file, or a task's checkpoint directory (which holds `runner`).
    ///
    /// Exit status: 0 when the stream ends cleanly or with a torn tail (what a crash leaves; the
    /// records before it are shown and the tail is reported); 1 when the stream is corrupt or holds
    /// an invalid record (the records before it are still shown), or the task or file cannot be
    /// read; 2 on a usage error such as an invalid task id.
    #[command(verbatim_doc_comment)]
    Inspect {
        /// Task id, or (without --root) a checkpoint file or directory.
        target: String,
        /// Checkpoint root [default: /var/run/hearth as root, else $XDG_RUNTIME_DIR/hearth].
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print the replayed task as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tasks of a checkpoint root with their state and each process's latest state.
    ///
    /// Exit status: 0 when every listed task was read (torn tails included); 1 when the root or
    /// some task could not be read, or a stream is corrupt (the others are still listed);
    /// 2 on a usage error such as an invalid REGEX.
    #[command(verbatim_doc_comment)]
    Status {
        /// Only tasks whose id matches this regular expression (anywhere in the id).
        #[arg(value_parser = parse_regex)]
        regex: Option<Regex>,
        /// Checkpoint root [default: /var/run/hearth as root, else $XDG_RUNTIME_DIR/hearth].
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print the tasks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the scheduler (`--bind ADDR --data DIR`), or manage it: backups, restore, reconcile,
    /// password hashes.
    #[command(verbatim_doc_comment)]
    Scheduler(sched_cmd::SchedulerArgs),
    /// Run a host's agent: it registers with the scheduler and runs the tasks it is given.
    Agent(agent_cmd::AgentArgs),
    /// Create, watch, kill, restart, list and compare jobs on the scheduler.
    Job {
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// Drain, activate and list the agents' hosts.
    Host {
        #[command(subcommand)]
        command: host::HostCommand,
    },
    /// A scheduler, a local agent and the observer in one command, to try the whole system.
    Dev(dev::DevArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `hearth run` hands over to `hearth-executor`, which installs its own logging; this process
    // installs it only if it keeps the run.
    if !matches!(cli.command, Command::Run(_)) {
        logging::init(cli.log_format);
    }
    match cli.command {
        Command::Validate {
            config,
            json,
            job,
            binds,
        } => {
            if aurora_cmd::is_aurora_file(&config) {
                aurora_cmd::validate(&config, job.as_deref(), &binds, json)
            } else if job.is_some() || !binds.is_empty() {
                eprintln!(
                    "hearth: --job and --bind apply to .aurora configs; {} is JSON",
                    config.display()
                );
                ExitCode::from(2)
            } else {
                validate(&config, json)
            }
        }
        Command::Run(args) => run_cmd::hand_over(args, cli.log_format),
        Command::Snooze {
            task_id,
            root,
            duration,
            clear,
        } => snooze(&task_id, root.as_deref(), duration.as_deref(), clear),
        Command::Observe { roots, bind } => observe(roots, bind),
        Command::Kill {
            task_id,
            root,
            wait,
        } => kill(&task_id, root.as_deref(), wait),
        Command::Tail {
            task_id,
            process,
            root,
            stderr,
            follow,
            lines,
        } => {
            let opts = hearth_executor::control::TailOptions {
                process,
                stderr,
                follow,
                lines,
            };
            tail(&task_id, root.as_deref(), &opts)
        }
        Command::Inspect { target, root, json } => inspect(&target, root.as_deref(), json),
        Command::Status { regex, root, json } => status(regex.as_ref(), root.as_deref(), json),
        Command::Scheduler(args) => sched_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Job { command } => job::run(command),
        Command::Host { command } => host::run(command),
        Command::Dev(args) => dev::run(args),
    }
}

fn validate(path: &std::path::Path, json: bool) -> ExitCode {
    match hearth_checkpoints::config::load(path) {
        Ok(task) => {
            if json {
                match serde_json::to_string_pretty(&task) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("hearth: cannot render {}: {e}", path.display());
                        return ExitCode::from(1);
                    }
                }
            } else {
                println!("{}: ok", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("hearth: {}: invalid task config:\n{errors}", path.display());
            ExitCode::from(2)
        }
    }
}

/// Run a command of `hearth_executor::control` against a root, printing what it returns.
fn control<T>(
    root: Option<&std::path::Path>,
    f: impl FnOnce(&Root) -> Result<T, hearth_executor::control::ControlError>,
    show: impl FnOnce(T),
) -> ExitCode {
    let root = match Root::given_or_default(root) {
        Ok(r) => r,
        Err(e) => return root_error(&e),
    };
    match f(&root) {
        Ok(v) => {
            show(v);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hearth: {}", error_chain(&e));
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

fn kill(task_id: &str, root: Option<&std::path::Path>, wait: u64) -> ExitCode {
    let wait = std::time::Duration::from_secs(wait);
    control(
        root,
        |r| hearth_executor::control::kill(r, task_id, wait),
        |state| println!("task {task_id} {}", state.name()),
    )
}

fn snooze(
    task_id: &str,
    root: Option<&std::path::Path>,
    duration: Option<&str>,
    clear: bool,
) -> ExitCode {
    control(
        root,
        |r| hearth_executor::control::snooze(r, task_id, duration, clear),
        |what| println!("{what}"),
    )
}

fn tail(
    task_id: &str,
    root: Option<&std::path::Path>,
    opts: &hearth_executor::control::TailOptions,
) -> ExitCode {
    control(
        root,
        |r| hearth_executor::control::tail(r, task_id, opts, &mut std::io::stdout().lock()),
        |()| {},
    )
}

fn observe(mut roots: Vec<PathBuf>, bind: std::net::SocketAddr) -> ExitCode {
    if roots.is_empty() {
        match root::default_root() {
            Ok(r) => roots.push(r),
            Err(e) => return root_error(&e),
        }
    }
    match hearth_observer::observe(hearth_observer::ObserveOptions { roots, bind }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

fn parse_regex(s: &str) -> Result<Regex, String> {
    Regex::new(s).map_err(|e| format!("invalid regular expression {s:?}: {e}"))
}

fn inspect(target: &str, root: Option<&std::path::Path>, json: bool) -> ExitCode {
    let task = match root::load_target(target, root) {
        Ok(task) => task,
        Err(e) => return root_error(&e),
    };
    if json {
        print_json(&inspect::to_json(&task));
    } else {
        print!("{}", inspect::render_text(&task));
    }
    if task.stream_damaged() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn status(regex: Option<&Regex>, root: Option<&std::path::Path>, json: bool) -> ExitCode {
    let loaded = match Root::given_or_default(root).and_then(|r| r.load_tasks(regex)) {
        Ok(loaded) => loaded,
        Err(e) => return root_error(&e),
    };
    if json {
        print_json(&inspect::status_json(&loaded.tasks));
    } else {
        print!("{}", inspect::render_status_text(&loaded.tasks));
    }
    for e in &loaded.errors {
        eprintln!("hearth: {}", error_chain(e));
    }
    if loaded.all_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        // A Value always serializes; report rather than panic all the same.
        Err(e) => eprintln!("hearth: cannot render JSON: {e}"),
    }
}

fn root_error(e: &RootError) -> ExitCode {
    eprintln!("hearth: {}", error_chain(e));
    ExitCode::from(if e.is_usage() { 2 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
