//! The Hearth executor: runs one task.
//!
//! * [`planner`]: pure scheduling logic (ordering, retries, daemons, ephemerals, finals).
//! * [`cgroup`]: the task's cgroup on v1, v2 or hybrid hosts, or none.

// Cgroup files are read and written with blocking calls; the supervisor reaches them through
// spawn_blocking only.
#[allow(clippy::disallowed_methods)]
pub mod cgroup;
// `hearth kill`, `snooze` and `tail`: plain command-line code, no runtime.
#[allow(clippy::disallowed_methods)]
pub mod control;
pub mod disk;
pub mod failpoint;
pub mod health;
// The keeper is its own single-threaded process, without a runtime.
#[allow(clippy::disallowed_methods)]
pub mod keeper;
pub mod planner;
// Runs before the runtime starts (its `write_atomic` later through spawn_blocking only).
#[allow(clippy::disallowed_methods)]
pub mod prepare;
pub mod report;
pub mod spawn;
pub mod supervise;

pub use prepare::RunOptions;

/// The executable that runs tasks, installed beside `hearth` (`src/bin/hearth-executor.rs` of
/// the `hearth` package): `hearth run` hands over to it, and the agent starts it directly.
pub const EXECUTABLE: &str = "hearth-executor";

/// This build's version. `hearth-executor` runs only for a caller of the same build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The argument a caller puts before `run` when it starts [`EXECUTABLE`]:
/// `--expect-version=VERSION`, its own version, which `hearth-executor` checks against its own.
pub fn expect_version_arg() -> String {
    format!("--expect-version={VERSION}")
}

/// `hearth run`: prepare the task, then supervise it until it ends. Returns the exit code:
/// 0 SUCCESS, 1 FAILED (or could not be started), 2 invalid config or usage (nothing created),
/// 3 KILLED, 4 LOST (the executor could not go on supervising), 5 internal error (a bug).
///
/// Status reports carry the token of the file [`report::TOKEN_FILE_ENV`] names, if it is set
/// (see [`run_with_token_file`]).
pub fn run(opts: &RunOptions) -> u8 {
    run_with_token_file(opts, None)
}

/// [`run`] with `hearth run --scheduler-token-file F`: status reports to `--scheduler` carry
/// `Authorization: Bearer <token>`, the token being the content of `token_file`, or else of the
/// file [`report::TOKEN_FILE_ENV`] names (how the agent hands it over). It is read once, before
/// anything is created: an unreadable or empty file exits 2. The file's path (never the token)
/// is kept in the task's launch record so that `hearth kill`, adopting the task, reports with it
/// too.
pub fn run_with_token_file(opts: &RunOptions, token_file: Option<&std::path::Path>) -> u8 {
    let token_file = token_file
        .map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os(report::TOKEN_FILE_ENV).map(std::path::PathBuf::from));
    let token_file = token_file.as_deref();
    let token = match token_file.map(report::read_token_file).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hearth: {}", error_chain(&e));
            return 2;
        }
    };
    let prepared = prepare::prepare_with_token_file(opts, token_file);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hearth: cannot start the runtime: {e}");
            return 4;
        }
    };
    let prepared = match prepared {
        Ok(p) => p,
        Err(prepare::PrepareError::AlreadyFinished { task_id, state })
            if opts.scheduler.is_some() =>
        {
            // A finished task whose executor died before the scheduler heard the end: deliver
            // what is pending, and answer with the task's own exit code.
            eprintln!(
                "hearth: task {task_id:?} already ended {state}; delivering pending status updates"
            );
            return runtime.block_on(supervise::deliver_leftovers(
                opts,
                token.as_deref(),
                &task_id,
            ));
        }
        Err(e) => {
            eprintln!("hearth: {}", error_chain(&e));
            return e.exit_code();
        }
    };
    match runtime.block_on(supervise::supervise(
        prepared,
        opts.json,
        opts.scheduler.as_deref(),
        token.as_deref(),
        opts.kill_on_start,
    )) {
        Ok(ending) => ending.exit_code(),
        Err(e) => {
            eprintln!("hearth: {}", error_chain(&e));
            4
        }
    }
}

pub use hearth_checkpoints::error_chain;
