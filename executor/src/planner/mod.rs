//! The planner: which process to run next, and what an exit means. Pure logic, no I/O.
//!
//! The executor's event loop feeds the planner events ([`Planner::launched`], [`Planner::exited`],
//! [`Planner::set_task_state`]) and asks it what to do ([`Planner::runnable`],
//! [`Planner::next_wakeup`], [`Planner::regular_state`], [`Planner::final_state`]). Time is always
//! an argument (`now`): the planner never reads a clock, so tests drive it with paused tokio time or
//! with instants they build themselves.
//!
//! # Two plans
//! Regular processes and final processes (`final: true`) form two separate plans, each with the
//! order constraints among its own processes. The task's stage picks the plan that may launch:
//! ACTIVE runs the regular plan, CLEANING runs nothing, FINALIZING runs the final plan (after the
//! regular plan ended, or after a kill). A typical loop:
//!
//! ```text
//! ACTIVE:     launch runnable(now); on each exit call exited(); sleep until next_wakeup(now) or
//!             an exit; once regular_state() is not Running (or on a kill) -> CLEANING
//! CLEANING:   terminate everything in running() (for a complete plan: the ephemerals)
//! FINALIZING: launch runnable(now) until final_state() is not Running
//! ```
//!
//! # The rules
//! Each rule lives in one function of `plan.rs`, named here.
//!
//! **Runnable** (`Plan::blocker`): a process may start when it is waiting (not running, finished,
//! failed or stopped), every predecessor has *finished*, its `min_duration` gate is open (at least
//! `min_duration` has passed since the end of its previous run, whatever that run's outcome), the
//! task's `max_concurrency` (0 = unlimited) leaves a free slot in its plan, its plan is the one
//! the task's stage runs, and that plan has not ended.
//!
//! **Exits** (`Plan::end_run`):
//! * success: a daemon waits for its gate and runs again; any other process is finished.
//! * failure (a non-zero exit, an OOM kill, or a signal the executor did not send): the process's
//!   failure count goes up. Below `max_failures` (or with `max_failures == 0`) it runs again after
//!   its gate; at the limit an ephemeral process is finished and any other one fails permanently.
//! * OOM kills count as failures (Thermos did not count them, so a process that ran out of memory
//!   was restarted forever); their reason is `oom`. Other signals the executor did not send
//!   (`SIGSEGV`, a stray `kill -9`) count as failures too, for the same reason.
//! * lost (the executor could not learn how the run ended): runs again after its gate, without
//!   counting a failure.
//! * killed by the executor (teardown, or an ephemeral stopped after the plan completed): the
//!   process is stopped and does not run again in this plan. No failure is counted.
//! * the cap: a process whose runs ended [`MAX_UNSUCCESSFUL_RUNS`] times without success (failures
//!   and lost runs alike) fails permanently with a reason saying so, even with
//!   `max_failures == 0`. That bounds lost-run loops and retry-forever processes. Successful runs
//!   are not counted, so a daemon that re-runs every `min_duration` by design is never capped.
//!
//! **Plan end** (`Plan::state`): a plan fails when the number of its permanently failed processes
//! reaches the task's `max_failures` (unless 0; the final plan has no such limit), or when it is
//! deadlocked: a non-ephemeral process can never run because a predecessor failed permanently or
//! was stopped, or because order constraints form a cycle (validation rejects cycles; the planner
//! still must not hang on one). Otherwise the plan is complete when every non-ephemeral process has
//! finished, failed permanently or been stopped; ephemeral processes still running then are to be
//! terminated, and [`Planner::running`] lists them. The task's outcome follows the regular plan:
//! Thermos's rule, which Hearth keeps, is that final processes do not change it.
//!
//! # Recovery
//! [`Planner::from_replay`] rebuilds the planner after an executor restart by applying every run of
//! a replayed checkpoint with the same rules; runs still FORKED or RUNNING are running. Wall-clock
//! stop times become `min_duration` gates relative to `now`.

mod plan;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use hearth_checkpoints::config::TaskConfig;
use hearth_checkpoints::record::{FailureCause, ProcessState, TaskState};
use hearth_checkpoints::replay::{ProcessRun, TaskReplay};
use tokio::time::Instant;

use plan::{Plan, Status};

/// Runs of one process that may end without success before it fails permanently (see the module
/// docs: the cap).
pub const MAX_UNSUCCESSFUL_RUNS: u32 = 1000;

/// The reason recorded for a run the kernel's OOM killer ended.
pub const REASON_OOM: &str = "oom";

/// The reason recorded for a run the executor killed.
pub const REASON_KILLED_BY_EXECUTOR: &str = "killed by executor";

/// How one run of a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Success,
    /// A non-zero exit code.
    Failed { return_code: i32 },
    /// Killed by the kernel's OOM killer.
    Oom,
    /// Killed by the executor (teardown, or stopping an ephemeral process).
    KilledByUs,
    /// Killed by a signal the executor did not send.
    KilledBySignal(i32),
    /// The executor could not learn how the run ended.
    Lost,
}

impl Outcome {
    /// Whether this outcome counts toward the process's `max_failures`.
    pub fn counts_as_failure(self) -> bool {
        matches!(
            self,
            Outcome::Failed { .. } | Outcome::Oom | Outcome::KilledBySignal(_)
        )
    }

    /// The process state to record for a run that ended this way.
    pub fn process_state(self) -> ProcessState {
        match self {
            Outcome::Success => ProcessState::Success,
            Outcome::Failed { .. } | Outcome::Oom | Outcome::KilledBySignal(_) => {
                ProcessState::Failed
            }
            Outcome::KilledByUs => ProcessState::Killed,
            Outcome::Lost => ProcessState::Lost,
        }
    }

    /// The reason to record for a run that ended this way, when the state alone does not say it.
    pub fn recorded_reason(self) -> Option<&'static str> {
        match self {
            Outcome::Oom => Some(REASON_OOM),
            Outcome::KilledByUs => Some(REASON_KILLED_BY_EXECUTOR),
            _ => None,
        }
    }

    /// The outcome of a replayed run, or `None` if the run has not ended. The inverse of
    /// [`Outcome::process_state`] and [`Outcome::recorded_reason`]; a KILLED run is the executor's
    /// doing unless its reason says `oom` (legacy Thermos streams record every signal as KILLED).
    pub fn from_run(run: &ProcessRun) -> Option<Outcome> {
        let oom = run.cause == Some(FailureCause::Oom);
        match run.state {
            ProcessState::Waiting | ProcessState::Forked | ProcessState::Running => None,
            ProcessState::Success => Some(Outcome::Success),
            ProcessState::Lost => Some(Outcome::Lost),
            _ if oom => Some(Outcome::Oom),
            ProcessState::Killed => Some(Outcome::KilledByUs),
            ProcessState::Failed => Some(match run.signal {
                Some(signal) => Outcome::KilledBySignal(signal),
                None => Outcome::Failed {
                    return_code: run.return_code.unwrap_or(1),
                },
            }),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("exited with code 0"),
            Outcome::Failed { return_code } => write!(f, "exited with code {return_code}"),
            Outcome::Oom => write!(f, "killed by the OOM killer ({REASON_OOM})"),
            Outcome::KilledByUs => f.write_str("killed by the executor"),
            Outcome::KilledBySignal(signal) => write!(f, "killed by signal {signal}"),
            Outcome::Lost => f.write_str("lost"),
        }
    }
}

/// What happens to a process after one of its runs ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It runs again once `after` (its `min_duration`) has passed since the exit, and the rest
    /// of the runnable rule allows it.
    Restart { after: Duration },
    /// It will not run again; its successors may start.
    Finished,
    /// It will not run again and counts toward the task's `max_failures`.
    PermanentlyFailed { reason: String },
    /// The executor killed it; it will not run again in this plan.
    Stopped,
}

/// Where a plan stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanState {
    /// Work is left: a process runs, may run, or waits for its gate or its predecessors.
    Running,
    /// Every non-ephemeral process finished (or, where the task allows, failed permanently).
    /// Processes still running (ephemerals) are to be terminated: see [`Planner::running`].
    Complete,
    /// The plan failed; `reason` is for humans.
    Failed { reason: String },
}

/// Why a process may not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// The task's stage does not run this process's plan.
    Stage(TaskState),
    /// The process's plan has ended.
    PlanEnded,
    /// The process is not waiting: `running`, `finished`, `failed` or `stopped`.
    NotWaiting(&'static str),
    /// A predecessor has not finished.
    Predecessor(String),
    /// The `min_duration` gate opens after `remaining`.
    Gate { remaining: Duration },
    /// `max_concurrency` processes of this plan are running.
    Concurrency(u32),
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::Stage(state) => write!(f, "the task is {}", state.name()),
            Blocker::PlanEnded => f.write_str("its plan has ended"),
            Blocker::NotWaiting(status) => write!(f, "it is {status}"),
            Blocker::Predecessor(name) => write!(f, "its predecessor {name:?} has not finished"),
            Blocker::Gate { remaining } => {
                write!(
                    f,
                    "its min_duration gate opens in {:.3}s",
                    remaining.as_secs_f64()
                )
            }
            Blocker::Concurrency(max) => write!(f, "max_concurrency {max} is reached"),
        }
    }
}

/// A request the planner cannot honour: the caller's view of the task disagrees with the planner's.
#[derive(Debug, thiserror::Error)]
pub enum PlannerError {
    #[error("unknown process {process:?}")]
    UnknownProcess { process: String },
    #[error("process {process:?} cannot be launched: {blocker}")]
    NotRunnable { process: String, blocker: Blocker },
    #[error("process {process:?} exited but it is {status}, not running")]
    NotRunning {
        process: String,
        status: &'static str,
    },
    #[error("checkpoint has runs of process {process:?}, which the task config does not have")]
    ReplayUnknownProcess { process: String },
}

/// Which plan a process belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Regular,
    Final,
}

/// The scheduling state of one task: its regular plan, its final plan and its stage.
#[derive(Debug, Clone)]
pub struct Planner {
    regular: Plan,
    finals: Plan,
    index: HashMap<String, (Which, usize)>,
    stage: TaskState,
    /// Permanently failed regular processes that fail the task; 0 = unlimited.
    max_failures: u32,
    /// Most processes of one plan running at once; 0 = unlimited.
    max_concurrency: u32,
}

impl Planner {
    /// A planner for a task that has not run yet, in stage ACTIVE.
    ///
    /// Order constraints are taken from the (validated) config: an edge whose ends are not both
    /// processes of the same plan cannot occur after validation and is ignored.
    pub fn new(task: &TaskConfig) -> Planner {
        let regular = Plan::new(task, false);
        let finals = Plan::new(task, true);
        let mut index = HashMap::new();
        for (which, plan) in [(Which::Final, &finals), (Which::Regular, &regular)] {
            for (i, name) in plan.names().enumerate() {
                index.insert(name.to_owned(), (which, i));
            }
        }
        Planner {
            regular,
            finals,
            index,
            stage: TaskState::Active,
            max_failures: task.max_failures,
            max_concurrency: task.max_concurrency,
        }
    }

    /// Rebuilds the planner of a task from its replayed checkpoint after an executor restart.
    ///
    /// Every ended run is applied with the same rules as [`Planner::exited`]; a run still FORKED or
    /// RUNNING makes its process running; the stage is the replay's task state. `now_wall` (seconds
    /// since the epoch) is the wall-clock time at `now`, used to turn recorded stop times into
    /// `min_duration` gates. A run without a stop time is taken to have ended at `now`, so its gate
    /// stays closed for a full `min_duration`: a restart never makes a process start early.
    pub fn from_replay(
        task: &TaskConfig,
        replay: &TaskReplay,
        now: Instant,
        now_wall: f64,
    ) -> Result<Planner, PlannerError> {
        let mut planner = Planner::new(task);
        planner.stage = replay.state();
        for (name, runs) in &replay.processes {
            let (which, i) =
                planner
                    .locate(name)
                    .map_err(|_| PlannerError::ReplayUnknownProcess {
                        process: name.clone(),
                    })?;
            let plan = planner.plan_mut(which);
            for run in runs {
                match run.state {
                    ProcessState::Waiting => {}
                    ProcessState::Forked | ProcessState::Running => plan.set_running(i),
                    _ => {
                        if let Some(outcome) = Outcome::from_run(run) {
                            let ended = ended_at(run, now, now_wall);
                            plan.end_run(i, outcome, ended);
                        }
                    }
                }
            }
        }
        Ok(planner)
    }

    /// Tells the planner the task's stage: ACTIVE runs the regular plan, FINALIZING the final
    /// plan, any other state runs nothing.
    pub fn set_task_state(&mut self, state: TaskState) {
        self.stage = state;
    }

    /// The task's stage, as last set.
    pub fn task_state(&self) -> TaskState {
        self.stage
    }

    /// The processes to launch now, in config order, at most as many as `max_concurrency` allows.
    pub fn runnable(&self, now: Instant) -> Vec<String> {
        let Some((which, plan)) = self.staged_plan() else {
            return Vec::new();
        };
        if self.plan_state(which) != PlanState::Running {
            return Vec::new();
        }
        let slots = match self.max_concurrency {
            0 => usize::MAX,
            max => usize::try_from(max)
                .unwrap_or(usize::MAX)
                .saturating_sub(plan.running_count()),
        };
        plan.ready(now)
            .take(slots)
            .map(|i| plan.name(i).to_owned())
            .collect()
    }

    /// Records that `process` was launched at `now`. It must be runnable.
    pub fn launched(&mut self, process: &str, now: Instant) -> Result<(), PlannerError> {
        let (which, i) = self.locate(process)?;
        if let Some(blocker) = self.blocker(which, i, now) {
            return Err(PlannerError::NotRunnable {
                process: process.to_owned(),
                blocker,
            });
        }
        self.plan_mut(which).set_running(i);
        Ok(())
    }

    /// Records that a run of `process` ended at `now` and says what happens to the process next.
    pub fn exited(
        &mut self,
        process: &str,
        outcome: Outcome,
        now: Instant,
    ) -> Result<Verdict, PlannerError> {
        let (which, i) = self.locate(process)?;
        let plan = self.plan_mut(which);
        match plan.status(i) {
            Status::Running => Ok(plan.end_run(i, outcome, now)),
            other => Err(PlannerError::NotRunning {
                process: process.to_owned(),
                status: other.name(),
            }),
        }
    }

    /// Where the regular plan stands; its end decides the task's outcome.
    pub fn regular_state(&self) -> PlanState {
        self.plan_state(Which::Regular)
    }

    /// Where the final plan stands. It has no failure limit: `Failed` only means it deadlocked.
    pub fn final_state(&self) -> PlanState {
        self.plan_state(Which::Final)
    }

    /// The earliest instant after `now` at which a `min_duration` gate opens and lets a process of
    /// the staged plan start, or `None` when only an exit (or a stage change) can make anything
    /// runnable. Sleeping until then, or until the next exit, never misses work.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let (which, plan) = self.staged_plan()?;
        if self.plan_state(which) != PlanState::Running || self.concurrency_full(plan) {
            return None;
        }
        plan.next_gate(now)
    }

    /// The processes running now, regular then final, in config order.
    pub fn running(&self) -> impl Iterator<Item = &str> {
        self.regular.running().chain(self.finals.running())
    }

    /// Why `process` may not start now, or `None` if it may.
    pub fn why_not_runnable(
        &self,
        process: &str,
        now: Instant,
    ) -> Result<Option<Blocker>, PlannerError> {
        let (which, i) = self.locate(process)?;
        Ok(self.blocker(which, i, now))
    }

    fn blocker(&self, which: Which, i: usize, now: Instant) -> Option<Blocker> {
        match self.staged_plan() {
            Some((staged, _)) if staged == which => {}
            _ => return Some(Blocker::Stage(self.stage)),
        }
        if self.plan_state(which) != PlanState::Running {
            return Some(Blocker::PlanEnded);
        }
        let plan = self.plan(which);
        if self.concurrency_full(plan) && plan.status(i) == &Status::Waiting {
            return Some(Blocker::Concurrency(self.max_concurrency));
        }
        plan.blocker(i, now)
    }

    fn concurrency_full(&self, plan: &Plan) -> bool {
        self.max_concurrency != 0
            && plan.running_count() >= usize::try_from(self.max_concurrency).unwrap_or(usize::MAX)
    }

    fn plan_state(&self, which: Which) -> PlanState {
        match which {
            Which::Regular => self.regular.state(self.max_failures),
            Which::Final => self.finals.state(0),
        }
    }

    fn staged_plan(&self) -> Option<(Which, &Plan)> {
        match self.stage {
            TaskState::Active => Some((Which::Regular, &self.regular)),
            TaskState::Finalizing => Some((Which::Final, &self.finals)),
            _ => None,
        }
    }

    fn locate(&self, process: &str) -> Result<(Which, usize), PlannerError> {
        self.index
            .get(process)
            .copied()
            .ok_or_else(|| PlannerError::UnknownProcess {
                process: process.to_owned(),
            })
    }

    fn plan(&self, which: Which) -> &Plan {
        match which {
            Which::Regular => &self.regular,
            Which::Final => &self.finals,
        }
    }

    fn plan_mut(&mut self, which: Which) -> &mut Plan {
        match which {
            Which::Regular => &mut self.regular,
            Which::Final => &mut self.finals,
        }
    }
}

/// The instant a replayed run ended, from its wall-clock stop time; `now` if it has none or if it
/// lies in the future (the wall clock stepped back).
fn ended_at(run: &ProcessRun, now: Instant, now_wall: f64) -> Instant {
    let ago = run
        .stop_time
        .map(|t| now_wall - t)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .unwrap_or(Duration::ZERO);
    // An instant before the monotonic clock's origin cannot be built; then the run ended so long
    // ago that any realistic gate is open, but err on the closed side rather than the open one.
    now.checked_sub(ago).unwrap_or(now)
}
