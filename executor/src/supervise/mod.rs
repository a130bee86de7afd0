//! The executor's event loop — the imperative shell: drive the planner, talk to the keeper, write
//! the checkpoint, and dispatch to the parts that decide.
//!
//! One loop, one phase. Each turn: launch what the planner allows, commit every record of the
//! turn with one fsync (group commit), and only then send spawn requests, acknowledge exits to the
//! keeper and print progress — a transition is never acted on or reported before it is durable.
//! (A turn that only launches is written out without the fsync: see [`Supervisor::flush`].) Then
//! wait for the next keeper message, planner wake-up, phase deadline, check result or signal.
//!
//! Phases follow Thermos: ACTIVE (the regular plan) → CLEANING (the escalation of DESIGN 6) →
//! FINALIZING (final processes within what is left of the budget) → SUCCESS | FAILED | KILLED.
//!
//! Where things live:
//! * [`teardown`]: the escalation state machine (CLEANING's stages, FINALIZING's deadline) and the
//!   seams it acts through (keeper link, cgroup, lifecycle poster);
//! * [`reconcile`]: what a restarted executor decides from the keeper's answer;
//! * [`reports`]: status updates for the scheduler, their acknowledgements, leftovers;
//! * [`progress`]: the lines printed on stdout;
//! * [`link`]: the keeper connection; [`launch`]: spawn requests and the environment;
//! * `runs`: launches, spawn replies and exits, reconciliation carried out; `checks`: health and
//!   disk monitors; `storage`: group commit, and supervising on while the disk fails.

mod checks;
pub mod launch;
pub mod link;
pub mod progress;
pub mod reconcile;
pub mod reports;
mod runs;
mod storage;
pub mod teardown;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hearth_checkpoints::record::{
    FailureCause, Record, ReportState, TaskState, TaskStatus, TeardownStep,
};
use hearth_checkpoints::replay::TaskReplay;
use hearth_checkpoints::root::TaskPlace;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::keeper::now_secs;
use crate::keeper::protocol::Request;
use crate::planner::{PlanState, Planner};
use crate::prepare::{Prepared, now_ms, write_atomic};
use crate::report::terminal_status;

pub use progress::signal_name;
pub use reports::deliver_leftovers;

use checks::{CheckEvent, Checks};
use link::Link;
use progress::Progress;
use reconcile::KeeperState;
use reports::Reports;
use runs::Proc;
use storage::Stall;
use teardown::{
    Acts, Finalizing, Left, Lifecycle, LifecyclePoster, Next, RunKey, StepTaken, Teardown,
};

/// Borrow what teardown acts on — the outbox (keeper link), the cgroup, the signalled runs, the
/// steps taken — beside `self.phase`, and run `$body` with it as `$acts`.
macro_rules! with_acts {
    ($s:ident, $runs:expr, |$acts:ident| $body:expr) => {{
        let mut acts_ = Acts {
            keeper: &mut $s.outbox,
            cgroup: $s.p.cgroup.as_ref(),
            runs: $runs,
            signalled: &mut $s.signalled,
            steps: &mut $s.steps,
        };
        let $acts = &mut acts_;
        $body
    }};
}

/// How the task ended, and the process exit code `hearth run` returns for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub state: TaskState,
    /// The human text (Thermos's and Aurora's wordings).
    pub reason: String,
    /// Why, typed, when it is a health-check failure or a disk overrun.
    pub cause: Option<FailureCause>,
}

impl Ending {
    /// 0 SUCCESS, 1 FAILED, 3 KILLED, 4 LOST.
    pub fn exit_code(&self) -> u8 {
        match self.state {
            TaskState::Success => 0,
            TaskState::Killed => 3,
            TaskState::Lost => 4,
            _ => 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot reach the keeper at {addr}")]
    Keeper {
        addr: crate::keeper::socket::KeeperAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the keeper closed its connection unexpectedly{fate}")]
    KeeperGone {
        /// What became of the keeper, when it can be told (`; it was killed by SIGKILL`), or "".
        fate: String,
    },
    #[error(transparent)]
    KeeperPeer(#[from] crate::keeper::socket::PeerError),
    #[error("checkpoint write failed")]
    Checkpoint(#[from] hearth_checkpoints::stream::CheckpointError),
    #[error("cannot rebuild the plan from the checkpoint")]
    Plan(#[from] crate::planner::PlannerError),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("keeper protocol: {0}")]
    Protocol(#[from] crate::keeper::protocol::ProtocolError),
}

/// The task's phase, with what only that phase has.
#[derive(Debug)]
enum Phase {
    Active,
    /// Stopping the regular processes; `ending` is the outcome decided when CLEANING began.
    Cleaning {
        ending: Ending,
        teardown: Teardown,
    },
    Finalizing {
        ending: Ending,
        fin: Finalizing,
    },
}

struct Supervisor {
    p: Prepared,
    planner: Planner,
    procs: BTreeMap<String, Proc>,
    phase: Phase,
    /// Why a kill was asked for (`hearth kill`, a signal); it wins over any other ending.
    kill_requested: Option<String>,
    /// A teardown asked for by the health monitor or the disk monitor.
    teardown_requested: Option<Ending>,
    /// Runs the executor itself signalled: their signal deaths are KILLED, not failures.
    signalled: BTreeSet<RunKey>,
    link: Link,
    keeper_pid: Option<i32>,
    /// Requests and acknowledgements to send once the turn's records are durable.
    outbox: Vec<Request>,
    /// Lines to print once the turn's records are durable.
    progress: Progress,
    /// Teardown steps taken this turn, to record.
    steps: Vec<StepTaken>,
    oom_kills_seen: u64,
    /// Re-check an apparently empty task for stray processes at this time.
    stray_check: Option<Instant>,
    checks: Checks,
    reports: Reports,
    /// The planner allowed more launches than one turn takes.
    more_to_launch: bool,
    /// The checkpoint cannot be written (a full disk, a read-only remount): what is held.
    stall: Option<Stall>,
}

const SUCCESS_REASON: &str = "all processes finished";

/// Most processes launched in one turn of the event loop.
const LAUNCH_BATCH: usize = 32;

/// Thermos's words for a task without a health check.
const NO_HEALTH_CHECK: &str = crate::report::NO_HEALTH_CHECK_REASON;

/// Supervise a prepared task until it ends. Runs inside a tokio runtime.
pub async fn supervise(
    mut p: Prepared,
    json: bool,
    scheduler: Option<&str>,
    token: Option<&str>,
    kill_on_start: bool,
) -> Result<Ending, SuperviseError> {
    let link = Link::connect(&p.keeper_addr).await?;
    // The replay lives on in the supervisor's own state; `p` keeps none.
    let replay = std::mem::take(&mut p.replay);
    let now = Instant::now();
    let planner = if p.recovering {
        Planner::from_replay(&p.task, &replay, now, now_secs())?
    } else {
        Planner::new(&p.task)
    };
    let reports = Reports::new(&p.task_id, &replay, scheduler, token);
    let mut s = Supervisor {
        planner,
        procs: BTreeMap::new(),
        phase: Phase::Active,
        kill_requested: None,
        teardown_requested: None,
        signalled: BTreeSet::new(),
        link,
        keeper_pid: None,
        outbox: Vec::new(),
        progress: Progress::new(&p.task_id, json),
        steps: Vec::new(),
        oom_kills_seen: 0,
        stray_check: None,
        checks: Checks::NotStarted,
        reports,
        more_to_launch: false,
        stall: None,
        p,
    };
    if let Some(w) = &s.p.cgroup_warning {
        tracing::warn!("{w}");
    }
    s.oom_kills_seen =
        s.p.cgroup
            .as_ref()
            .and_then(|c| c.oom_kills().ok())
            .unwrap_or(0);
    s.load_procs(&replay);
    s.restore_phase(&replay);
    let started = if s.p.recovering {
        "RECOVERED"
    } else {
        "STARTED"
    };
    s.progress.task(started, None);

    // Reconcile with the keeper: who is alive, which exits we have not recorded.
    let hello = s.link.hello().await?;
    tracing::debug!(
        keeper_pid = hello.keeper_pid,
        protocol = hello.version,
        children = hello.children.len(),
        exits = hello.exits.len(),
        "the keeper answered"
    );
    s.keeper_pid = Some(hello.keeper_pid);
    let recorded = if s.p.recovering || !hello.children.is_empty() || !hello.exits.is_empty() {
        let stream = s.p.keeper_stream.clone();
        tokio::task::spawn_blocking(move || runs::keeper_stream_exits(&stream))
            .await
            .unwrap_or_default()
    } else {
        // A new task whose keeper holds nothing: its stream has no exit to read, and the blocking
        // thread that would find that out would be started on the launch path.
        Default::default()
    };
    s.reconcile(
        KeeperState {
            keeper_pid: hello.keeper_pid,
            children: hello.children,
            exits: hello.exits,
        },
        recorded,
    );

    if kill_on_start {
        s.request_kill("hearth kill adopted the task after its executor was gone");
    }
    let mut sigterm = signal(SignalKind::terminate()).map_err(SuperviseError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(SuperviseError::Signals)?;
    let poster = teardown::HttpPoster;

    loop {
        s.step();
        if matches!(s.checks, Checks::NotStarted) && matches!(s.phase, Phase::Active) {
            // In the first turn, so that its status update shares the turn's fsync.
            s.start_checks();
        }
        if let Some(post) = s.pending_post() {
            s.flush().await?;
            let outcome = poster
                .post(post.port, &post.endpoint, teardown::LIFECYCLE_POST_TIMEOUT)
                .await;
            s.on_post(&outcome, &post.endpoint);
            s.step();
        }
        s.flush().await?;
        if s.stall.is_none()
            && let Some(ending) = s.finished()
        {
            s.finish(&ending).await?;
            return Ok(ending);
        }
        let wake = s.next_wakeup();
        tokio::select! {
            ev = s.link.recv() => {
                match ev {
                    Some(r) => s.on_reply(r),
                    None => {
                        return Err(SuperviseError::KeeperGone {
                            fate: link::keeper_fate(s.keeper_pid).await,
                        });
                    }
                }
                // Drain whatever else is already here, so one fsync covers the burst.
                while let Some(r) = s.link.try_recv() {
                    s.on_reply(r);
                }
            }
            ev = s.checks.next() => match ev {
                CheckEvent::Health(ev) => s.on_health(ev),
                CheckEvent::Disk(ev) => s.request_teardown(Ending {
                    state: TaskState::Failed,
                    reason: ev.reason(),
                    cause: Some(FailureCause::DiskLimit),
                }),
            },
            Some(ev) = s.reports.recv() => {
                if let Some(ack) = s.reports.on_event(ev) {
                    s.append(Record::StatusAck(ack));
                }
            }
            _ = sleep_until(wake) => {}
            _ = sigterm.recv() => s.request_kill("the executor received SIGTERM"),
            _ = sigint.recv() => s.request_kill("the executor received SIGINT"),
        }
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The outcome of a task found in CLEANING or FINALIZING by a restarted executor.
fn ending_from_replay(replay: &TaskReplay) -> Ending {
    // The outcome was decided when CLEANING began and is recorded with it (and with
    // FINALIZING). Streams written before that field existed carry it only in the reason.
    let last = replay.statuses.last();
    let reason = last.and_then(|s| s.reason.clone()).unwrap_or_default();
    let cause = last.and_then(TaskStatus::failure_cause);
    if let Some(state) = last.and_then(|s| s.outcome) {
        return Ending {
            state,
            reason,
            cause,
        };
    }
    let state = if reason.starts_with("killed") {
        TaskState::Killed
    } else if reason.is_empty() || reason == SUCCESS_REASON {
        TaskState::Success
    } else {
        TaskState::Failed
    };
    Ending {
        state,
        reason,
        cause,
    }
}

impl Supervisor {
    fn append(&mut self, rec: Record) {
        if let Err(e) = self.p.writer.append(&rec) {
            // Encoding a record we built ourselves cannot fail short of a bug; say so loudly.
            tracing::error!("cannot encode checkpoint record {rec:?}: {e}");
        }
    }

    /// A recovered task continues in the phase its last task status says. The budget restarts
    /// from a recovery: an executor that was down cannot have spent it.
    fn restore_phase(&mut self, replay: &TaskReplay) {
        let wait = self.p.task.finalization_wait;
        let now = Instant::now();
        match replay.state() {
            TaskState::Cleaning => {
                let ending = ending_from_replay(replay);
                let left = self.left();
                let runs = self.run_views();
                let teardown =
                    with_acts!(self, &runs, |acts| Teardown::resume(wait, left, now, acts));
                self.phase = Phase::Cleaning { ending, teardown };
                self.record_steps();
            }
            TaskState::Finalizing => {
                self.phase = Phase::Finalizing {
                    ending: ending_from_replay(replay),
                    fin: Finalizing::new(now + wait),
                };
            }
            _ => {}
        }
    }

    /// Write one task record. `ending` gives its reason and, while tearing down (CLEANING,
    /// FINALIZING), the outcome the task will end in.
    fn record_task(&mut self, state: TaskState, ending: Option<&Ending>) {
        let tearing_down = matches!(state, TaskState::Cleaning | TaskState::Finalizing);
        self.append(Record::Task(TaskStatus {
            state,
            timestamp_ms: now_ms(),
            runner_pid: Some(std::process::id() as i32),
            runner_uid: Some(nix::unistd::getuid().as_raw() as i32),
            reason: ending.map(|e| e.reason.clone()),
            outcome: ending.filter(|_| tearing_down).map(|e| e.state),
            cause: ending.and_then(|e| e.cause),
        }));
    }

    /// Record the teardown steps taken this turn.
    fn record_steps(&mut self) {
        for StepTaken { step, detail } in std::mem::take(&mut self.steps) {
            tracing::debug!(
                step = step.name(),
                detail = detail.as_deref(),
                "teardown step"
            );
            self.append(Record::Teardown(TeardownStep {
                step,
                timestamp_ms: now_ms(),
                detail,
            }));
        }
    }

    /// A task status for the agent (STARTING, RUNNING, ...): written to the checkpoint, then —
    /// once durable — printed and handed to the scheduler reporter.
    fn status(&mut self, state: ReportState, reason: &str) {
        self.progress.status(state.name(), reason);
        let report = self.reports.next(state, reason);
        self.append(Record::Status(report));
    }

    /// RUNNING is reported once per task, even across executor restarts.
    fn report_running(&mut self, reason: &str) {
        if self.reports.take_running() {
            self.status(ReportState::Running, reason);
        }
    }

    fn request_kill(&mut self, why: &str) {
        if self.kill_requested.is_none() {
            tracing::debug!(why, "kill requested");
            self.kill_requested = Some(why.to_owned());
        }
    }

    /// A small tag of the phase and stage, to tell whether a step moved.
    fn phase_tag(&self) -> (u8, Option<std::mem::Discriminant<teardown::Stage>>) {
        match &self.phase {
            Phase::Active => (0, None),
            Phase::Cleaning { teardown, .. } => (1, Some(std::mem::discriminant(teardown.stage()))),
            Phase::Finalizing { .. } => (2, None),
        }
    }

    /// Decide and do this turn's work (without waiting), moving through as many phases and
    /// stages as apply right now.
    fn step(&mut self) {
        loop {
            let before = self.phase_tag();
            self.step_once();
            if self.phase_tag() == before {
                return;
            }
        }
    }

    fn step_once(&mut self) {
        let now = Instant::now();
        match &self.phase {
            Phase::Active => {
                if let Some(why) = self.kill_requested.clone() {
                    let ending = Ending {
                        state: TaskState::Killed,
                        reason: format!("killed: {why}"),
                        cause: None,
                    };
                    return self.begin_cleaning(ending, true);
                }
                if let Some(ending) = self.teardown_requested.take() {
                    return self.begin_cleaning(ending, true);
                }
                match self.planner.regular_state() {
                    PlanState::Running => self.launch_runnable(now),
                    PlanState::Complete => self.begin_cleaning(
                        Ending {
                            state: TaskState::Success,
                            reason: SUCCESS_REASON.to_owned(),
                            cause: None,
                        },
                        false,
                    ),
                    PlanState::Failed { reason } => self.begin_cleaning(
                        Ending {
                            state: TaskState::Failed,
                            reason,
                            cause: None,
                        },
                        false,
                    ),
                }
            }
            Phase::Cleaning { .. } => {
                let left = self.left();
                let runs = self.run_views();
                let next = with_acts!(self, &runs, |acts| match &mut self.phase {
                    Phase::Cleaning { teardown, .. } => teardown.poll(left, now, acts),
                    _ => Next::Cleaning,
                });
                self.record_steps();
                if let Next::Finalize { deadline } = next {
                    self.begin_finalizing(deadline);
                }
            }
            Phase::Finalizing { .. } => {
                let running = self.running_count();
                let runs = self.run_views();
                let may_launch = with_acts!(self, &runs, |acts| match &mut self.phase {
                    Phase::Finalizing { fin, .. } => fin.poll(running, now, acts),
                    _ => false,
                });
                self.record_steps();
                if may_launch && self.kill_requested.is_none() {
                    self.launch_runnable(now);
                }
            }
        }
    }

    /// The task's ending once everything has stopped, if it has.
    fn finished(&mut self) -> Option<Ending> {
        let Phase::Finalizing { ending, fin } = &self.phase else {
            return None;
        };
        let (ending, expired) = (ending.clone(), fin.expired(Instant::now()));
        if self.running_count() > 0 {
            return None;
        }
        let finals_done = !matches!(self.planner.final_state(), PlanState::Running);
        if !finals_done && !expired && self.kill_requested.is_none() {
            return None;
        }
        if !self.cgroup_empty() {
            return None;
        }
        if ending.state == TaskState::Success
            && let PlanState::Failed { reason } = self.planner.final_state()
        {
            return Some(Ending {
                state: TaskState::Failed,
                reason,
                cause: None,
            });
        }
        Some(ending)
    }

    /// Start tearing the regular processes down (see [`Teardown::begin`]).
    fn begin_cleaning(&mut self, ending: Ending, graceful: bool) {
        tracing::debug!(outcome = ?ending.state, reason = %ending.reason, graceful, "cleaning");
        self.checks.stop();
        self.record_task(TaskState::Cleaning, Some(&ending));
        self.planner.set_task_state(TaskState::Cleaning);
        self.progress.task("CLEANING", Some(&ending.reason));
        let lifecycle = self.lifecycle();
        let wait = self.p.task.finalization_wait;
        let left = self.left();
        let runs = self.run_views();
        let now = Instant::now();
        let teardown = with_acts!(self, &runs, |acts| Teardown::begin(
            graceful, lifecycle, wait, left, now, acts
        ));
        self.phase = Phase::Cleaning { ending, teardown };
        self.record_steps();
    }

    /// The task's lifecycle endpoints, when it has a lifecycle config and its port.
    fn lifecycle(&self) -> Option<Lifecycle> {
        let config = self.p.task.job.lifecycle.clone()?;
        let port = self
            .p
            .header
            .ports
            .get(&config.port)
            .and_then(|p| u16::try_from(*p).ok())?;
        Some(Lifecycle { port, config })
    }

    fn pending_post(&self) -> Option<teardown::LifecyclePost> {
        match &self.phase {
            Phase::Cleaning { teardown, .. } => teardown.pending_post().cloned(),
            _ => None,
        }
    }

    /// A lifecycle POST was answered (or not).
    fn on_post(&mut self, outcome: &crate::health::PostOutcome, endpoint: &str) {
        let runs = self.run_views();
        let now = Instant::now();
        with_acts!(
            self,
            &runs,
            |acts| if let Phase::Cleaning { teardown, .. } = &mut self.phase {
                teardown.on_post(outcome, now, acts);
            }
        );
        self.record_steps();
        let what = format!("POST {endpoint} -> {outcome:?}");
        self.progress.task("TEARDOWN", Some(&what));
    }

    fn begin_finalizing(&mut self, deadline: Instant) {
        let ending = match std::mem::replace(&mut self.phase, Phase::Active) {
            Phase::Cleaning { ending, .. } | Phase::Finalizing { ending, .. } => ending,
            Phase::Active => Ending {
                state: TaskState::Failed,
                reason: "internal error: no outcome".into(),
                cause: None,
            },
        };
        tracing::debug!("finalizing");
        self.record_task(TaskState::Finalizing, Some(&ending));
        self.planner.set_task_state(TaskState::Finalizing);
        self.progress.task("FINALIZING", None);
        self.phase = Phase::Finalizing {
            ending,
            fin: Finalizing::new(deadline),
        };
    }

    /// What is left of the task. The cgroup is read only when no regular run is live: until then
    /// its answer cannot change a decision, and reading every hierarchy's member list on each
    /// turn of a teardown took CPU from the processes being stopped.
    fn left(&mut self) -> Left {
        let regular = self.regular_running();
        let cgroup_empty = if regular == 0 {
            self.cgroup_empty()
        } else {
            self.stray_check = None;
            false
        };
        Left {
            regular,
            all: self.running_count(),
            cgroup_empty,
        }
    }

    /// Whether the cgroup holds no process we do not already track as running.
    fn cgroup_empty(&mut self) -> bool {
        let Some(cg) = &self.p.cgroup else {
            return true;
        };
        let empty = match cg.pids() {
            Ok(pids) => {
                let tracked: BTreeSet<i32> = self
                    .procs
                    .values()
                    .filter(|p| p.is_live())
                    .filter_map(|p| p.pid)
                    .collect();
                pids.iter().all(|pid| tracked.contains(pid))
            }
            Err(_) => true,
        };
        self.stray_check = if empty {
            None
        } else {
            Some(Instant::now() + Duration::from_millis(20))
        };
        empty
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let phase = match &self.phase {
            Phase::Active => None,
            Phase::Cleaning { teardown, .. } => teardown.next_wakeup(),
            Phase::Finalizing { fin, .. } => fin.next_wakeup(),
        };
        [
            self.planner.next_wakeup(Instant::now()),
            phase,
            self.stray_check,
            self.more_to_launch.then(Instant::now),
            self.stall.map(|st| st.retry_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Record the terminal state, clean up, and let the keeper go.
    async fn finish(&mut self, ending: &Ending) -> Result<(), SuperviseError> {
        tracing::debug!(state = ?ending.state, reason = %ending.reason, "task ended");
        self.record_task(ending.state, Some(ending));
        self.progress
            .task(ending.state.name(), Some(&ending.reason));
        if let Some((status, text)) = terminal_status(ending.state) {
            // Health and disk failures keep their own words (Thermos's); others get Aurora's.
            let reason = match ending.cause {
                Some(FailureCause::HealthCheck | FailureCause::DiskLimit) => ending.reason.clone(),
                Some(FailureCause::Oom) | None => text.to_owned(),
            };
            self.status(reports::report_state(status), &reason);
        }
        self.commit_until_written().await;
        self.reports.send_out();
        self.reports.drain(&mut self.p.writer).await?;
        if let Some(cg) = self.p.cgroup.clone() {
            // Removal waits (bounded) for the kernel to let the cgroup go: off the runtime.
            let removed = tokio::task::spawn_blocking(move || cg.remove()).await;
            if let Ok(Err(e)) = removed {
                tracing::warn!("could not remove the task cgroup: {e}");
            }
        }
        let active = self
            .p
            .root
            .task_config_path(&self.p.task_id, TaskPlace::Active);
        let finished = self
            .p
            .root
            .task_config_path(&self.p.task_id, TaskPlace::Finished);
        let _ = tokio::task::spawn_blocking(move || move_config(&active, &finished)).await;
        self.link.send(&[Request::Shutdown]).await?;
        self.progress.print();
        Ok(())
    }
}

/// Move the task's config from the active to the finished place, leaving it where it is if the
/// copy fails. Blocking: the supervisor runs it on tokio's blocking pool.
#[allow(clippy::disallowed_methods)] // called through spawn_blocking only
fn move_config(active: &std::path::Path, finished: &std::path::Path) {
    if let Ok(bytes) = std::fs::read(active)
        && write_atomic(finished, &bytes).is_ok()
    {
        let _ = std::fs::remove_file(active);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay_ending_in(status: TaskStatus) -> TaskReplay {
        TaskReplay {
            statuses: vec![status],
            ..TaskReplay::default()
        }
    }

    fn teardown(reason: &str, outcome: Option<TaskState>) -> TaskStatus {
        TaskStatus {
            state: TaskState::Cleaning,
            timestamp_ms: 1,
            runner_pid: None,
            runner_uid: None,
            reason: Some(reason.to_owned()),
            outcome,
            cause: None,
        }
    }

    #[test]
    fn a_recorded_outcome_wins_over_the_reason_text() {
        // A reason that the text rule would read as KILLED, recorded as FAILED.
        let r = replay_ending_in(teardown("killed-looking reason", Some(TaskState::Failed)));
        assert_eq!(
            ending_from_replay(&r),
            Ending {
                state: TaskState::Failed,
                reason: "killed-looking reason".into(),
                cause: None,
            }
        );
    }

    #[test]
    fn streams_without_the_outcome_fall_back_to_the_reason_text() {
        let cases = [
            ("killed by hearth kill", TaskState::Killed),
            (SUCCESS_REASON, TaskState::Success),
            ("", TaskState::Success),
            ("Failed health check! timeout", TaskState::Failed),
        ];
        for (reason, state) in cases {
            let r = replay_ending_in(teardown(reason, None));
            assert_eq!(ending_from_replay(&r).state, state, "reason {reason:?}");
        }
    }
}
