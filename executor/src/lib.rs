//! The Hearth executor: runs one task.
//!
//! * [`planner`]: pure scheduling logic (ordering, retries, daemons, ephemerals, finals).
//! * [`cgroup`]: the task's cgroup on v1, v2 or hybrid hosts, or none.

pub mod cgroup;
pub mod control;
pub mod disk;
pub mod health;
pub mod keeper;
pub mod planner;
pub mod prepare;
pub mod report;
pub mod spawn;
pub mod supervise;

pub use prepare::RunOptions;

/// `hearth run`: prepare the task, then supervise it until it ends. Returns the exit code:
/// 0 SUCCESS, 1 FAILED, 2 invalid config or usage (nothing created), 3 KILLED, 4 LOST (the
/// executor could not go on supervising).
pub fn run(opts: &RunOptions) -> u8 {
    let prepared = prepare::prepare(opts);
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
            return runtime.block_on(supervise::deliver_leftovers(opts, &task_id));
        }
        Err(e) => {
            eprintln!("hearth: {}", error_chain(&e));
            return if e.is_usage() { 2 } else { 1 };
        }
    };
    match runtime.block_on(supervise::supervise(
        prepared,
        opts.json,
        opts.scheduler.as_deref(),
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
