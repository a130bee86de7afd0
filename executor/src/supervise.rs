//! The executor's event loop: drive the planner, talk to the keeper, write the checkpoint, tear
//! the task down.
//!
//! One loop, one phase variable. Each turn: launch what the planner allows, commit every record
//! of the turn with one fsync (group commit), and only then send spawn requests, acknowledge exits
//! to the keeper and print progress — a transition is never acted on or reported before it is
//! durable. (A turn that only launches is written out without the fsync: see
//! [`Supervisor::flush`].) Then wait for the next keeper message, planner wake-up, phase deadline
//! or signal.
//!
//! Phases follow Thermos: ACTIVE (the regular plan) → CLEANING (SIGTERM to what is left, up to
//! `finalization_wait`) → FINALIZING (SIGKILL the rest, run final processes within what is left of
//! the budget) → SUCCESS | FAILED | KILLED.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use hearth_checkpoints::config::{LogDestination, LogMode};
use hearth_checkpoints::record::{
    ProcessState, ProcessStatus, Record, SnoozeEvent, StatusAck, StatusReport, TaskState,
    TaskStatus, TeardownStep,
};
use hearth_checkpoints::replay::TaskReplay;
use hearth_checkpoints::root::TaskPlace;
use hearth_checkpoints::stream::CheckpointWriter;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::health::{FAILED_HEALTH_CHECK, HealthEvent, HealthMonitor};
use crate::keeper::now_secs;
use crate::keeper::protocol::{
    Child, Credentials, Exit, ExitStatus, LogTarget, Reply, Request, SpawnSpec,
};
use crate::planner::{Outcome, PlanState, Planner, Verdict};
use crate::prepare::{Prepared, now_ms, write_atomic};
use crate::report::{HEALTHY_REASON, ReportEvent, Reporter, terminal_status};
use hearth_scheduler::api::{ScheduleStatus, StatusUpdate};

/// How the task ended, and the process exit code `hearth run` returns for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub state: TaskState,
    pub reason: String,
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
    #[error("cannot reach the keeper at {path}")]
    Keeper {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the keeper closed its connection unexpectedly")]
    KeeperGone,
    #[error("checkpoint write failed")]
    Checkpoint(#[from] hearth_checkpoints::stream::CheckpointError),
    #[error("cannot rebuild the plan from the checkpoint")]
    Plan(#[from] crate::planner::PlannerError),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Active,
    /// Stopping the regular processes, one escalation stage at a time; `until` ends the stage's
    /// wait (the stage ends sooner if nothing is left).
    Cleaning {
        stage: Stage,
        until: Instant,
    },
    Finalizing {
        deadline: Instant,
    },
}

/// The teardown escalation (DESIGN 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `POST graceful_shutdown_endpoint` sent (or about to be); waiting.
    Quit,
    /// `POST shutdown_endpoint` sent (or about to be); waiting.
    Abort,
    /// SIGTERM sent; waiting up to `finalization_wait`.
    Term,
    /// SIGKILL sent; waiting for the exits.
    Killed,
}

/// A lifecycle request the loop must send before going on.
#[derive(Debug, Clone)]
struct LifecyclePost {
    stage: Stage,
    port: u16,
    endpoint: String,
    wait: Duration,
}

/// How long a lifecycle POST may take to answer (the wait after it is separate).
const LIFECYCLE_POST_TIMEOUT: Duration = Duration::from_secs(2);

/// The executor's view of one process's current run.
#[derive(Debug, Clone)]
struct Proc {
    run: u32,
    seq: i64,
    state: ProcessState,
    pid: Option<i32>,
    /// Start time of `pid` in clock ticks since boot, to tell it from a recycled pid.
    start_ticks: Option<i64>,
    /// When this executor saw the run start (not known for runs adopted after a restart).
    started_at: Option<Instant>,
    is_final: bool,
}

/// Progress lines for people (or JSON lines for machines).
#[derive(Debug, Serialize)]
struct Event<'a> {
    time_ms: i64,
    /// `process` (a run's transition), `task` (the task's), or `status` (an update for the
    /// scheduler: STARTING, RUNNING, FINISHED, ...).
    event: &'static str,
    task_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<u32>,
    state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

struct Supervisor {
    p: Prepared,
    json: bool,
    planner: Planner,
    procs: BTreeMap<String, Proc>,
    phase: Phase,
    /// The task's outcome, decided when CLEANING starts.
    ending: Option<Ending>,
    kill_requested: Option<String>,
    /// Runs the executor itself signalled: their signal deaths are KILLED, not failures.
    signalled: BTreeSet<(String, u32)>,
    keeper_tx: OwnedWriteHalf,
    keeper_pid: Option<i32>,
    /// Requests and acknowledgements to send once the turn's records are durable.
    outbox: Vec<Request>,
    /// Lines to print once the turn's records are durable.
    lines: Vec<String>,
    oom_kills_seen: u64,
    /// Re-check an apparently empty task for stray processes at this time.
    stray_check: Option<Instant>,
    /// A teardown asked for by the health monitor or the disk monitor.
    teardown_requested: Option<Ending>,
    /// A lifecycle POST to send before the next wait.
    pending_post: Option<LifecyclePost>,
    /// End of the `finalization_wait` budget, once SIGTERM was sent.
    budget_end: Option<Instant>,
    health: Option<HealthMonitor>,
    health_rx: Option<mpsc::Receiver<HealthEvent>>,
    /// Whether health checking was started (or found unnecessary).
    health_started: bool,
    disk: Option<crate::disk::DiskMonitor>,
    disk_rx: Option<mpsc::Receiver<crate::disk::DiskEvent>>,
    /// Delivers status updates to the scheduler (`--scheduler`).
    reporter: Option<Reporter>,
    report_rx: Option<mpsc::UnboundedReceiver<ReportEvent>>,
    /// Seq of the last status update written.
    report_seq: i64,
    /// Highest seq the scheduler acknowledged.
    report_acked: i64,
    /// Status updates written this turn, handed to the reporter once durable.
    reports_out: Vec<StatusReport>,
    /// The planner allowed more launches than one turn takes.
    more_to_launch: bool,
    /// Young runs to SIGTERM once more, at this time (see [`Supervisor::signal_runs`]).
    term_again: Option<(Instant, Vec<(String, u32)>)>,
    /// Whether RUNNING was reported (by this executor or an earlier one of the task).
    reported_running: bool,
}

/// Supervise a prepared task until it ends. Runs inside a tokio runtime.
pub async fn supervise(
    mut p: Prepared,
    json: bool,
    scheduler: Option<&str>,
    token: Option<&str>,
    kill_on_start: bool,
) -> Result<Ending, SuperviseError> {
    let stream = connect_keeper(&p.keeper_socket).await?;
    let (rx, tx) = stream.into_split();
    let (events_tx, mut events) = mpsc::unbounded_channel::<Reply>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(reply) = serde_json::from_str::<Reply>(&line)
                && events_tx.send(reply).is_err()
            {
                break;
            }
        }
    });

    // The replay lives on in the supervisor's own state; `p` keeps none.
    let replay = std::mem::take(&mut p.replay);
    let now = Instant::now();
    let planner = if p.recovering {
        Planner::from_replay(&p.task, &replay, now, now_secs())?
    } else {
        Planner::new(&p.task)
    };
    let mut s = Supervisor {
        json,
        planner,
        procs: BTreeMap::new(),
        phase: Phase::Active,
        ending: None,
        kill_requested: None,
        signalled: BTreeSet::new(),
        keeper_tx: tx,
        keeper_pid: None,
        outbox: Vec::new(),
        lines: Vec::new(),
        oom_kills_seen: 0,
        stray_check: None,
        teardown_requested: None,
        pending_post: None,
        budget_end: None,
        health: None,
        health_rx: None,
        health_started: false,
        disk: None,
        disk_rx: None,
        reporter: None,
        report_rx: None,
        report_seq: replay.reports.last().map_or(0, |r| r.seq),
        report_acked: replay.reports_acked,
        reports_out: Vec::new(),
        term_again: None,
        more_to_launch: false,
        reported_running: replay.reports.iter().any(|r| r.state == "RUNNING"),
        p,
    };
    if let Some(url) = scheduler {
        match Reporter::start_with_token(url, token, crate::report::Backoff::default()) {
            Ok((reporter, rx)) => {
                s.reporter = Some(reporter);
                s.report_rx = Some(rx);
            }
            Err(e) => eprintln!("hearth: warning: status reports disabled: {e}"),
        }
    }
    // Updates written before (by this task's earlier executors, or in preparation) and never
    // acknowledged go out first, in order.
    s.reports_out = replay
        .reports
        .iter()
        .filter(|r| r.seq > s.report_acked)
        .cloned()
        .collect();
    if let Some(w) = &s.p.cgroup_warning {
        eprintln!("hearth: warning: {w}");
    }
    s.oom_kills_seen =
        s.p.cgroup
            .as_ref()
            .and_then(|c| c.oom_kills().ok())
            .unwrap_or(0);
    s.load_procs(&replay);
    s.restore_phase(&replay);

    s.event(
        None,
        None,
        if s.p.recovering {
            "RECOVERED"
        } else {
            "STARTED"
        },
        None,
        None,
        None,
        None,
    );

    // Reconcile with the keeper: who is alive, which exits we have not recorded.
    s.send_now(&[Request::Hello]).await?;
    loop {
        match events.recv().await {
            Some(Reply::State {
                keeper_pid,
                children,
                exits,
            }) => {
                s.keeper_pid = Some(keeper_pid);
                s.reconcile(children, exits);
                break;
            }
            Some(_) => continue,
            None => return Err(SuperviseError::KeeperGone),
        }
    }

    if kill_on_start {
        s.request_kill("hearth kill adopted the task after its executor was gone");
    }
    let mut sigterm = signal(SignalKind::terminate()).map_err(SuperviseError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(SuperviseError::Signals)?;

    loop {
        s.step();
        if let Some(post) = s.pending_post.take() {
            s.flush().await?;
            s.send_post(post).await;
            s.step();
        }
        s.flush().await?;
        if !s.health_started && s.phase == Phase::Active {
            s.start_health();
            s.flush().await?;
        }
        if let Some(ending) = s.finished() {
            s.finish(&ending).await?;
            return Ok(ending);
        }
        let wake = s.next_wakeup();
        tokio::select! {
            ev = events.recv() => {
                match ev {
                    Some(r) => s.on_reply(r),
                    None => return Err(SuperviseError::KeeperGone),
                }
                // Drain whatever else is already here, so one fsync covers the burst.
                while let Ok(r) = events.try_recv() {
                    s.on_reply(r);
                }
            }
            Some(ev) = recv_health(&mut s.health_rx) => s.on_health(ev),
            Some(ev) = recv_opt(&mut s.disk_rx) => {
                if s.phase == Phase::Active && s.teardown_requested.is_none() {
                    s.teardown_requested = Some(Ending { state: TaskState::Failed, reason: ev.reason() });
                }
            }
            Some(ev) = recv_unbounded(&mut s.report_rx) => s.on_report(ev),
            _ = sleep_until(wake) => {}
            _ = sigterm.recv() => s.request_kill("the executor received SIGTERM"),
            _ = sigint.recv() => s.request_kill("the executor received SIGINT"),
        }
    }
}

/// Deliver the status updates a finished task's checkpoint holds without an acknowledgement
/// (its executor died before the scheduler heard them), record the acknowledgements, and return
/// the task's exit code.
pub async fn deliver_leftovers(opts: &crate::RunOptions, token: Option<&str>, task_id: &str) -> u8 {
    let Some(url) = opts.scheduler.as_deref() else {
        return 2;
    };
    let root = match hearth_checkpoints::root::Root::given_or_default(opts.root.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hearth: {}", crate::error_chain(&e));
            return 1;
        }
    };
    let lock_path = root.checkpoint_dir(task_id).join("executor.lock");
    if crate::prepare::lock_is_held(&lock_path) {
        eprintln!("hearth: another executor of {task_id:?} is still delivering its updates");
        return 1;
    }
    let path = root.runner_path(task_id);
    let (mut writer, replayed) = match CheckpointWriter::open_append(&path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("hearth: {}", crate::error_chain(&e));
            return 1;
        }
    };
    let state = replayed.replay.state();
    let code = Ending {
        state,
        reason: String::new(),
    }
    .exit_code();
    let acked = replayed.replay.reports_acked;
    let pending: Vec<StatusReport> = replayed
        .replay
        .reports
        .iter()
        .filter(|r| r.seq > acked)
        .cloned()
        .collect();
    let Some(last) = pending.last().map(|r| r.seq) else {
        return code;
    };
    let (reporter, mut events) =
        match Reporter::start_with_token(url, token, crate::report::Backoff::default()) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("hearth: {e}");
                return 1;
            }
        };
    for r in pending {
        if let Some(state) = schedule_status(&r.state) {
            let _ = reporter.send(StatusUpdate {
                task_id: task_id.to_owned(),
                seq: u64::try_from(r.seq).unwrap_or(0),
                state,
                reason: r.reason,
                timestamp_ms: r.timestamp_ms,
            });
        }
    }
    let deadline = Instant::now() + REPORT_DRAIN;
    let mut done = acked;
    while done < last {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let (seq, detail) = match ev {
            Some(ReportEvent::Acknowledged { seq, .. }) => (seq, None),
            Some(ReportEvent::Rejected {
                seq,
                status,
                detail,
            }) => (
                seq,
                Some(format!("refused by the scheduler ({status}): {detail}")),
            ),
            None => {
                eprintln!("hearth: the scheduler did not acknowledge every pending update");
                return 1;
            }
        };
        done = done.max(i64::try_from(seq).unwrap_or(i64::MAX));
        let ack = Record::StatusAck(StatusAck { seq: done, detail });
        if writer.append(&ack).and_then(|()| writer.commit()).is_err() {
            eprintln!(
                "hearth: cannot record the acknowledgement in {}",
                path.display()
            );
            return 1;
        }
    }
    code
}

/// The next message of an optional channel, or never.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_unbounded<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The next health event, or never when there is no monitor.
async fn recv_health(rx: &mut Option<mpsc::Receiver<HealthEvent>>) -> Option<HealthEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
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
    if let Some(state) = last.and_then(|s| s.outcome) {
        return Ending { state, reason };
    }
    let state = if reason.starts_with("killed") {
        TaskState::Killed
    } else if reason.is_empty() || reason == SUCCESS_REASON {
        TaskState::Success
    } else {
        TaskState::Failed
    };
    Ending { state, reason }
}

/// Connect to the keeper, waiting (bounded) for a freshly forked one to bind its socket.
async fn connect_keeper(path: &std::path::Path) -> Result<UnixStream, SuperviseError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut backoff = Duration::from_millis(1);
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(SuperviseError::Keeper {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(50));
            }
        }
    }
}

impl Supervisor {
    fn writer(&mut self) -> &mut CheckpointWriter {
        &mut self.p.writer
    }

    fn append(&mut self, rec: Record) {
        if let Err(e) = self.writer().append(&rec) {
            // Encoding a record we built ourselves cannot fail short of a bug; say so loudly.
            eprintln!("hearth: cannot encode checkpoint record {rec:?}: {e}");
        }
    }

    /// Build the per-process view from the replay (empty for a fresh task) and give every
    /// process without a run its first WAITING record.
    fn load_procs(&mut self, replay: &TaskReplay) {
        let finals: BTreeSet<String> = self
            .p
            .task
            .processes
            .iter()
            .filter(|p| p.is_final)
            .map(|p| p.name.clone())
            .collect();
        let names: Vec<String> = self
            .p
            .task
            .processes
            .iter()
            .map(|p| p.name.clone())
            .collect();
        for name in names {
            let is_final = finals.contains(&name);
            match replay.processes.get(&name).and_then(|runs| runs.last()) {
                Some(last) => {
                    self.procs.insert(
                        name,
                        Proc {
                            run: last.run,
                            seq: last.seq,
                            state: last.state,
                            pid: last.pid,
                            start_ticks: last.pid_start_ticks,
                            started_at: None,
                            is_final,
                        },
                    );
                }
                None => {
                    self.procs.insert(
                        name.clone(),
                        Proc {
                            run: 0,
                            seq: -1,
                            state: ProcessState::Waiting,
                            pid: None,
                            start_ticks: None,
                            started_at: None,
                            is_final,
                        },
                    );
                    self.record(&name, ProcessState::Waiting, ProcessStatus::default());
                }
            }
        }
    }

    /// A recovered task continues in the phase its last task status says.
    fn restore_phase(&mut self, replay: &TaskReplay) {
        let wait = self.p.task.finalization_wait;
        let now = Instant::now();
        // The budget restarts from a recovery: an executor that was down cannot have spent it.
        match replay.state() {
            TaskState::Cleaning => {
                // Resume at SIGTERM: it is safe to repeat, and the lifecycle POSTs had their turn.
                self.ending = Some(ending_from_replay(replay));
                self.enter_term();
                self.budget_end = Some(now + wait);
            }
            TaskState::Finalizing => {
                self.phase = Phase::Finalizing {
                    deadline: now + wait,
                };
                self.ending = Some(ending_from_replay(replay));
            }
            _ => {}
        }
    }

    /// Write one process record: bump the seq, fill in process and state.
    fn record(&mut self, name: &str, state: ProcessState, mut rec: ProcessStatus) {
        let Some(p) = self.procs.get_mut(name) else {
            return;
        };
        if state == ProcessState::Waiting && p.seq >= 0 {
            p.run += 1;
        }
        p.seq += 1;
        p.state = state;
        if rec.pid.is_some() {
            p.pid = rec.pid;
        }
        rec.seq = p.seq;
        rec.process = name.to_owned();
        rec.state = Some(state);
        self.append(Record::Process(rec));
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
        }));
    }

    fn record_step(&mut self, step: &str, detail: Option<String>) {
        self.append(Record::Teardown(TeardownStep {
            step: step.to_owned(),
            timestamp_ms: now_ms(),
            detail,
        }));
    }

    /// After a restart: merge what the keeper knows into the checkpoint.
    fn reconcile(&mut self, children: Vec<Child>, exits: Vec<Exit>) {
        let alive: BTreeMap<(String, u32), Child> = children
            .into_iter()
            .map(|c| ((c.process.clone(), c.run), c))
            .collect();
        for exit in exits {
            let key = (exit.child.process.clone(), exit.child.run);
            let cur = self.procs.get(&key.0).map(|p| (p.run, p.state));
            if cur.is_some_and(|(run, state)| run == key.1 && !state.is_terminal()) {
                self.on_exit(exit);
            } else {
                // Already recorded before the crash; the ack was lost.
                self.outbox.push(Request::Ack {
                    process: key.0,
                    run: key.1,
                });
            }
        }
        // Exits an earlier keeper wrote to its stream (it may be gone since).
        let recorded = self.keeper_stream_exits();
        let names: Vec<String> = self.procs.keys().cloned().collect();
        for name in names {
            let Some(p) = self.procs.get(&name).cloned() else {
                continue;
            };
            if !p.state.is_terminal()
                && !alive.contains_key(&(name.clone(), p.run))
                && let Some(exit) = recorded.get(&(name.clone(), p.run))
            {
                self.on_exit(exit.clone());
                continue;
            }
            match (p.state, alive.get(&(name.clone(), p.run))) {
                (ProcessState::Forked, Some(c)) => self.on_spawned(c.clone()),
                (ProcessState::Forked | ProcessState::Running, None) => {
                    // The spawn never happened, or the keeper that ran it is gone: the exit
                    // status is unknowable. Thermos's LOST: re-run without counting a failure —
                    // after making sure the old run is really gone, so two never run at once.
                    if let (Some(pid), Some(ticks)) = (p.pid, p.start_ticks)
                        && crate::keeper::pid_start_ticks(pid) == Some(ticks)
                    {
                        let victim = nix::unistd::Pid::from_raw(pid);
                        let _ = nix::sys::signal::killpg(victim, nix::sys::signal::SIGKILL);
                        let _ = nix::sys::signal::kill(victim, nix::sys::signal::SIGKILL);
                    }
                    self.record(
                        &name,
                        ProcessState::Lost,
                        ProcessStatus {
                            stop_time: Some(now_secs()),
                            reason: Some("lost: no keeper knows this run".into()),
                            ..ProcessStatus::default()
                        },
                    );
                    self.event(
                        Some(&name),
                        Some(p.run),
                        "LOST",
                        None,
                        None,
                        None,
                        Some("no keeper knows this run"),
                    );
                    self.exited(&name, Outcome::Lost);
                }
                _ => {}
            }
        }
    }

    /// Start health checking once the processes are launched; without a health check the task is
    /// RUNNING at once.
    fn start_health(&mut self) {
        self.health_started = true;
        if self.p.task.resources.disk > 0 {
            let (monitor, rx) =
                crate::disk::start(self.p.sandbox.clone(), self.p.task.resources.disk);
            self.disk = Some(monitor);
            self.disk_rx = Some(rx);
        }
        let Some(cfg) = self.p.task.job.health_check.clone() else {
            self.report_running(NO_HEALTH_CHECK);
            return;
        };
        let port = self
            .p
            .header
            .ports
            .get("health")
            .and_then(|p| u16::try_from(*p).ok());
        let env = self.environment("health-check", 0);
        let creds = self
            .p
            .user
            .switch
            .then(|| (self.p.user.uid, self.p.user.gid, self.p.user.groups.clone()));
        match HealthMonitor::start(&cfg, port, self.p.sandbox.clone(), env, creds) {
            Ok((monitor, rx)) => {
                self.health = Some(monitor);
                self.health_rx = Some(rx);
            }
            Err(e) => {
                self.teardown_requested = Some(Ending {
                    state: TaskState::Failed,
                    reason: format!("{FAILED_HEALTH_CHECK} cannot start checking: {e}"),
                });
            }
        }
    }

    fn on_health(&mut self, ev: HealthEvent) {
        match ev {
            HealthEvent::Healthy => self.report_running(HEALTHY_REASON),
            HealthEvent::Unhealthy { reason } => {
                if self.phase == Phase::Active && self.teardown_requested.is_none() {
                    self.teardown_requested = Some(Ending {
                        state: TaskState::Failed,
                        reason,
                    });
                }
            }
            HealthEvent::SnoozeStarted { expires_ms, detail } => {
                self.append(Record::Snooze(SnoozeEvent {
                    active: true,
                    timestamp_ms: now_ms(),
                    expires_ms,
                    detail: Some(detail.clone()),
                }));
                self.event(None, None, "SNOOZED", None, None, None, Some(&detail));
            }
            HealthEvent::SnoozeEnded { detail } => {
                self.append(Record::Snooze(SnoozeEvent {
                    active: false,
                    timestamp_ms: now_ms(),
                    expires_ms: None,
                    detail: Some(detail.clone()),
                }));
                self.event(None, None, "SNOOZE_ENDED", None, None, None, Some(&detail));
            }
        }
    }

    /// A task status for the agent (STARTING, RUNNING, ...): written to the checkpoint, then —
    /// once durable — printed and handed to the scheduler reporter.
    fn status(&mut self, state: &str, reason: &str) {
        self.report_seq += 1;
        let report = StatusReport {
            seq: self.report_seq,
            state: state.to_owned(),
            reason: Some(reason.to_owned()),
            timestamp_ms: now_ms(),
        };
        self.append(Record::Status(report.clone()));
        self.reports_out.push(report);
        let line = self.render(&Event {
            time_ms: now_ms(),
            event: "status",
            task_id: &self.p.task_id,
            process: None,
            run: None,
            state,
            pid: None,
            return_code: None,
            signal: None,
            reason: Some(reason),
        });
        self.lines.push(line);
    }

    /// RUNNING is reported once per task, even across executor restarts.
    fn report_running(&mut self, reason: &str) {
        if !self.reported_running {
            self.reported_running = true;
            self.status("RUNNING", reason);
        }
    }

    fn on_report(&mut self, ev: ReportEvent) {
        let (seq, detail) = match ev {
            ReportEvent::Acknowledged { seq, .. } => (seq, None),
            ReportEvent::Rejected {
                seq,
                status,
                detail,
            } => (
                seq,
                Some(format!("refused by the scheduler ({status}): {detail}")),
            ),
        };
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        if seq > self.report_acked {
            self.report_acked = seq;
            self.append(Record::StatusAck(StatusAck { seq, detail }));
        }
    }

    /// Hand the turn's (durable) status updates to the reporter.
    fn send_reports(&mut self) {
        let out = std::mem::take(&mut self.reports_out);
        let Some(reporter) = &self.reporter else {
            return;
        };
        for r in out {
            let Some(state) = schedule_status(&r.state) else {
                continue;
            };
            let update = StatusUpdate {
                task_id: self.p.task_id.clone(),
                seq: u64::try_from(r.seq).unwrap_or(0),
                state,
                reason: r.reason,
                timestamp_ms: r.timestamp_ms,
            };
            let _ = reporter.send(update);
        }
    }

    /// The exits recorded in the keeper's stream, by process and run.
    fn keeper_stream_exits(&self) -> BTreeMap<(String, u32), Exit> {
        let mut out = BTreeMap::new();
        let Ok(bytes) = std::fs::read(&self.p.keeper_stream) else {
            return out;
        };
        let (_, records, _) = hearth_checkpoints::stream::read_records(&bytes);
        for (_, record) in records {
            let Record::Process(r) = record else { continue };
            let (Some(state), Some(run), Some(pid)) = (r.state, r.run, r.pid) else {
                continue;
            };
            let Ok(run) = u32::try_from(run) else {
                continue;
            };
            if !state.is_terminal() {
                continue;
            }
            let status = match (r.signal, r.return_code) {
                (Some(sig), _) => ExitStatus::Signal(sig),
                (None, Some(code)) => ExitStatus::Code(code),
                (None, None) => continue,
            };
            out.insert(
                (r.process.clone(), run),
                Exit {
                    child: Child {
                        process: r.process,
                        run,
                        pid,
                        start_ticks: r.pid_start_ticks,
                        fork_time: r.fork_time.unwrap_or_default(),
                    },
                    status,
                    stop_time: r.stop_time.unwrap_or_else(now_secs),
                },
            );
        }
        out
    }

    fn request_kill(&mut self, why: &str) {
        if self.kill_requested.is_none() {
            self.kill_requested = Some(why.to_owned());
        }
    }

    /// Decide and do this turn's work (without waiting), moving through as many phases as
    /// apply right now.
    fn step(&mut self) {
        loop {
            let before = self.phase;
            self.step_once();
            if self.phase == before {
                return;
            }
        }
    }

    fn step_once(&mut self) {
        let now = Instant::now();
        match self.phase {
            Phase::Active => {
                if let Some(why) = self.kill_requested.clone() {
                    self.begin_cleaning(
                        Ending {
                            state: TaskState::Killed,
                            reason: format!("killed: {why}"),
                        },
                        true,
                    );
                    return;
                }
                if let Some(ending) = self.teardown_requested.take() {
                    self.begin_cleaning(ending, true);
                    return;
                }
                match self.planner.regular_state() {
                    PlanState::Running => self.launch_runnable(now),
                    PlanState::Complete => self.begin_cleaning(
                        Ending {
                            state: TaskState::Success,
                            reason: SUCCESS_REASON.to_owned(),
                        },
                        false,
                    ),
                    PlanState::Failed { reason } => self.begin_cleaning(
                        Ending {
                            state: TaskState::Failed,
                            reason,
                        },
                        false,
                    ),
                }
            }
            Phase::Cleaning { stage, until } => {
                if stage == Stage::Term
                    && let Some((at, _)) = &self.term_again
                    && now >= *at
                    && let Some((_, runs)) = self.term_again.take()
                {
                    for (name, run) in runs {
                        let live = self.procs.get(&name).is_some_and(|p| {
                            p.run == run
                                && matches!(p.state, ProcessState::Forked | ProcessState::Running)
                        });
                        if live {
                            self.outbox.push(Request::Signal {
                                process: name,
                                run,
                                signal: libc::SIGTERM,
                            });
                        }
                    }
                }
                if self.regular_running() == 0 && self.cgroup_empty() {
                    if stage != Stage::Killed || self.running_count() == 0 {
                        self.begin_finalizing();
                    }
                } else if now >= until && self.pending_post.is_none() {
                    match stage {
                        Stage::Quit => match self.lifecycle_post(Stage::Abort) {
                            Some(post) => {
                                self.pending_post = Some(post);
                                self.phase = Phase::Cleaning {
                                    stage: Stage::Abort,
                                    until: far_future(),
                                };
                            }
                            None => self.enter_term(),
                        },
                        Stage::Abort => self.enter_term(),
                        Stage::Term => {
                            self.kill_hard("finalization_wait expired while cleaning");
                            self.phase = Phase::Cleaning {
                                stage: Stage::Killed,
                                until: far_future(),
                            };
                        }
                        Stage::Killed => {}
                    }
                }
            }
            Phase::Finalizing { deadline } => {
                if now >= deadline {
                    if self.running_count() > 0 {
                        self.kill_hard("finalization_wait expired while finalizing");
                    }
                } else if self.kill_requested.is_none() {
                    self.launch_runnable(now);
                }
            }
        }
    }

    /// The task's ending once everything has stopped, if it has.
    fn finished(&mut self) -> Option<Ending> {
        let Phase::Finalizing { deadline } = self.phase else {
            return None;
        };
        if self.running_count() > 0 {
            return None;
        }
        let finals_done = !matches!(self.planner.final_state(), PlanState::Running);
        if !finals_done && Instant::now() < deadline && self.kill_requested.is_none() {
            return None;
        }
        if !self.cgroup_empty() {
            return None;
        }
        let mut ending = self.ending.clone().unwrap_or(Ending {
            state: TaskState::Failed,
            reason: "internal error: no outcome".into(),
        });
        if ending.state == TaskState::Success
            && let PlanState::Failed { reason } = self.planner.final_state()
        {
            ending = Ending {
                state: TaskState::Failed,
                reason,
            };
        }
        Some(ending)
    }

    /// Start tearing the regular processes down. `graceful`: a kill, an unhealthy task or a disk
    /// overrun, where the lifecycle endpoints are asked first; a plan that ended on its own goes
    /// straight to SIGTERM for whatever is left (ephemeral processes).
    fn begin_cleaning(&mut self, ending: Ending, graceful: bool) {
        if let Some(h) = self.health.take() {
            h.stop();
        }
        self.health_rx = None;
        if let Some(d) = self.disk.take() {
            d.stop();
        }
        self.disk_rx = None;
        self.record_task(TaskState::Cleaning, Some(&ending));
        self.planner.set_task_state(TaskState::Cleaning);
        self.event(
            None,
            None,
            "CLEANING",
            None,
            None,
            None,
            Some(&ending.reason.clone()),
        );
        self.ending = Some(ending);
        let something_left = self.regular_running() > 0 || !self.cgroup_empty();
        if graceful
            && something_left
            && let Some(post) = self.lifecycle_post(Stage::Quit)
        {
            self.pending_post = Some(post);
            self.phase = Phase::Cleaning {
                stage: Stage::Quit,
                until: far_future(),
            };
            return;
        }
        self.enter_term();
    }

    /// The lifecycle POST of `stage`, when the task has a lifecycle config and its port.
    fn lifecycle_post(&self, stage: Stage) -> Option<LifecyclePost> {
        let lc = self.p.task.job.lifecycle.as_ref()?;
        let port = self
            .p
            .header
            .ports
            .get(&lc.port)
            .and_then(|p| u16::try_from(*p).ok())?;
        let (endpoint, wait) = match stage {
            Stage::Quit => (&lc.graceful_shutdown_endpoint, lc.graceful_shutdown_wait),
            Stage::Abort => (&lc.shutdown_endpoint, lc.shutdown_wait),
            _ => return None,
        };
        Some(LifecyclePost {
            stage,
            port,
            endpoint: endpoint.clone(),
            wait,
        })
    }

    /// Send a lifecycle POST and record it; its wait is skipped when it could not connect.
    async fn send_post(&mut self, post: LifecyclePost) {
        let outcome =
            crate::health::post_lifecycle(post.port, &post.endpoint, LIFECYCLE_POST_TIMEOUT).await;
        let step = post.endpoint.trim_start_matches('/').to_owned();
        let connected = outcome.connected();
        self.record_step(&step, Some(format!("{outcome:?}")));
        self.event(
            None,
            None,
            "TEARDOWN",
            None,
            None,
            None,
            Some(&format!("POST {} -> {outcome:?}", post.endpoint)),
        );
        let until = if connected {
            Instant::now() + post.wait
        } else {
            Instant::now()
        };
        if let Phase::Cleaning { stage, .. } = self.phase
            && stage == post.stage
        {
            self.phase = Phase::Cleaning { stage, until };
        }
    }

    /// SIGTERM every regular process (the whole cgroup) and wait up to `finalization_wait`.
    fn enter_term(&mut self) {
        let end = Instant::now() + self.p.task.finalization_wait;
        self.budget_end = Some(end);
        self.phase = Phase::Cleaning {
            stage: Stage::Term,
            until: end,
        };
        if self.regular_running() > 0 || !self.cgroup_empty() {
            self.record_step("sigterm", None);
            self.signal_runs(libc::SIGTERM, false);
        }
    }

    fn begin_finalizing(&mut self) {
        let deadline = self
            .budget_end
            .unwrap_or_else(|| Instant::now() + self.p.task.finalization_wait);
        let ending = self.ending.clone();
        self.record_task(TaskState::Finalizing, ending.as_ref());
        self.planner.set_task_state(TaskState::Finalizing);
        self.term_again = None;
        self.event(None, None, "FINALIZING", None, None, None, None);
        self.phase = Phase::Finalizing { deadline };
    }

    /// SIGKILL every process of the task (the whole cgroup, and each run's process group).
    fn kill_hard(&mut self, why: &str) {
        self.record_step("sigkill", Some(why.to_owned()));
        self.signal_runs(libc::SIGKILL, true);
    }

    /// Signal every process of the task once: the whole cgroup (or, without one, everything the
    /// keeper is the parent of), plus, through the keeper, runs whose spawn may not have happened
    /// yet. Marks the runs as signalled by us. SIGKILL kills the cgroup as a whole.
    fn signal_runs(&mut self, sig: i32, include_finals: bool) {
        let running: Vec<(String, u32, ProcessState, Option<Instant>)> = self
            .procs
            .iter()
            .filter(|(_, p)| include_finals || !p.is_final)
            .filter(|(_, p)| matches!(p.state, ProcessState::Forked | ProcessState::Running))
            .map(|(n, p)| (n.clone(), p.run, p.state, p.started_at))
            .collect();
        let now = Instant::now();
        let mut young = Vec::new();
        for (name, run, state, started_at) in running {
            self.signalled.insert((name.clone(), run));
            // A run not yet spawned, or spawned moments ago, may not be in the cgroup yet (it
            // joins just before exec), and its shell may still be starting (bash can swallow a
            // SIGTERM then): signal its process group directly too, and once more shortly.
            let is_young = state == ProcessState::Forked
                || started_at.is_some_and(|t| now.duration_since(t) < YOUNG_RUN);
            if is_young {
                self.outbox.push(Request::Signal {
                    process: name.clone(),
                    run,
                    signal: sig,
                });
                young.push((name, run));
            }
        }
        if sig == libc::SIGTERM && !young.is_empty() {
            self.term_again = Some((now + TERM_AGAIN_AFTER, young));
        }
        match &self.p.cgroup {
            Some(cg) if sig == libc::SIGKILL => {
                let _ = cg.kill_all();
            }
            Some(cg) => {
                if let Ok(signal) = nix::sys::signal::Signal::try_from(sig) {
                    let _ = cg.signal_all(signal);
                }
            }
            None => self.outbox.push(Request::SignalAll { signal: sig }),
        }
    }

    fn running_count(&self) -> usize {
        self.procs
            .values()
            .filter(|p| matches!(p.state, ProcessState::Forked | ProcessState::Running))
            .count()
    }

    fn regular_running(&self) -> usize {
        self.procs
            .values()
            .filter(|p| {
                !p.is_final && matches!(p.state, ProcessState::Forked | ProcessState::Running)
            })
            .count()
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
                    .filter(|p| matches!(p.state, ProcessState::Forked | ProcessState::Running))
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
        let phase = match self.phase {
            Phase::Active => None,
            Phase::Cleaning { stage, until } => (stage != Stage::Killed).then_some(until),
            Phase::Finalizing { deadline } => Some(deadline),
        };
        [
            self.planner.next_wakeup(Instant::now()),
            phase,
            self.stray_check,
            self.more_to_launch.then(Instant::now),
            self.term_again
                .as_ref()
                .filter(|_| {
                    matches!(
                        self.phase,
                        Phase::Cleaning {
                            stage: Stage::Term,
                            ..
                        }
                    )
                })
                .map(|(t, _)| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Launch what the planner allows, at most [`LAUNCH_BATCH`] per turn: a turn's spawn requests
    /// are held in memory until its records are durable, and a bounded batch keeps that peak (and
    /// so the executor's resident heap) small. The next turn follows at once.
    fn launch_runnable(&mut self, now: Instant) {
        let runnable = self.planner.runnable(now);
        self.more_to_launch = runnable.len() > LAUNCH_BATCH;
        for name in runnable.into_iter().take(LAUNCH_BATCH) {
            self.launch(&name);
        }
    }

    /// Record FORKED and ask the keeper to start the process.
    fn launch(&mut self, name: &str) {
        let Some(proc_) = self.procs.get(name).cloned() else {
            return;
        };
        match proc_.state {
            ProcessState::Waiting => {}
            // A crash between a run's end and its successor's WAITING record: start the run now.
            s if s.is_terminal() => {
                self.record(name, ProcessState::Waiting, ProcessStatus::default());
            }
            _ => return,
        }
        let Some(run) = self.procs.get(name).map(|p| p.run) else {
            return;
        };
        let Some(cfg) = self
            .p
            .task
            .processes
            .iter()
            .find(|p| p.name == name)
            .cloned()
        else {
            return;
        };
        self.record(
            name,
            ProcessState::Forked,
            ProcessStatus {
                fork_time: Some(now_secs()),
                coordinator_pid: self.keeper_pid,
                ..ProcessStatus::default()
            },
        );
        if let Err(e) = self.planner.launched(name, Instant::now()) {
            eprintln!("hearth: internal planner error: {e}");
        }
        let sandbox = self.p.sandbox.clone();
        let log_dir = sandbox.join(".logs").join(name).join(run.to_string());
        let target = |stream: &str| -> LogTarget {
            let path = log_dir.join(stream).display().to_string();
            match (cfg.logger.destination, cfg.logger.mode) {
                (LogDestination::None, _) => LogTarget::Discard,
                (LogDestination::Console, _) => LogTarget::Inherit,
                (LogDestination::File, LogMode::Standard) => LogTarget::File { path },
                (destination, mode) => LogTarget::Rotate {
                    path,
                    max_bytes: if mode == LogMode::Rotate {
                        cfg.logger.log_size
                    } else {
                        u64::MAX
                    },
                    backups: if mode == LogMode::Rotate {
                        cfg.logger.backups
                    } else {
                        0
                    },
                    console: destination == LogDestination::Both,
                },
            }
        };
        let spec = SpawnSpec {
            process: name.to_owned(),
            run,
            argv: vec!["/bin/bash".into(), "-c".into(), cfg.cmdline.clone()],
            env: self.environment(name, run),
            cwd: sandbox.display().to_string(),
            credentials: self.p.user.switch.then(|| Credentials {
                uid: self.p.user.uid,
                gid: self.p.user.gid,
                groups: self.p.user.groups.clone(),
            }),
            stdout: target("stdout"),
            stderr: target("stderr"),
        };
        self.outbox.push(Request::Spawn(spec));
    }

    /// The environment of every process (DESIGN 4).
    fn environment(&self, name: &str, run: u32) -> Vec<String> {
        let sandbox = self.p.sandbox.display().to_string();
        let path = std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let mut env = vec![
            format!("HOME={sandbox}"),
            format!("USER={}", self.p.user.name),
            format!("LOGNAME={}", self.p.user.name),
            format!("PATH={path}"),
            format!("HEARTH_TASK_ID={}", self.p.task_id),
            format!("HEARTH_PROCESS={name}"),
            format!("HEARTH_RUN={run}"),
            format!("HEARTH_SANDBOX={sandbox}"),
        ];
        for (k, v) in &self.p.header.ports {
            env.push(format!(
                "HEARTH_PORT_{}={v}",
                k.to_ascii_uppercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ));
        }
        let profile = self.p.sandbox.join(".thermos_profile");
        if profile.exists() {
            env.push(format!("BASH_ENV={}", profile.display()));
        }
        env
    }

    fn on_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Spawned(child) => self.on_spawned(child),
            Reply::SpawnFailed {
                process,
                run,
                error,
            } => {
                let cur = self.procs.get(&process).map(|p| p.run);
                if cur == Some(run) {
                    self.record(
                        &process,
                        ProcessState::Failed,
                        ProcessStatus {
                            stop_time: Some(now_secs()),
                            return_code: Some(127),
                            reason: Some(format!("could not start: {error}")),
                            ..ProcessStatus::default()
                        },
                    );
                    self.event(
                        Some(&process),
                        Some(run),
                        "FAILED",
                        None,
                        Some(127),
                        None,
                        Some(&error),
                    );
                    self.exited(&process, Outcome::Failed { return_code: 127 });
                }
            }
            Reply::Exited(exit) => self.on_exit(exit),
            Reply::State { .. }
            | Reply::Signalled { .. }
            | Reply::SignalledAll { .. }
            | Reply::Done
            | Reply::Bye => {}
            Reply::Error { error } => eprintln!("hearth: the keeper refused a request: {error}"),
        }
    }

    fn on_spawned(&mut self, child: Child) {
        let Some(p) = self.procs.get(&child.process) else {
            return;
        };
        if p.run != child.run || p.state != ProcessState::Forked {
            return;
        }
        if let Some(p) = self.procs.get_mut(&child.process) {
            p.start_ticks = child.start_ticks;
            p.started_at = Some(Instant::now());
        }
        self.record(
            &child.process,
            ProcessState::Running,
            ProcessStatus {
                pid: Some(child.pid),
                start_time: Some(child.fork_time),
                pid_start_ticks: child.start_ticks,
                coordinator_pid: self.keeper_pid,
                ..ProcessStatus::default()
            },
        );
        self.event(
            Some(&child.process),
            Some(child.run),
            "RUNNING",
            Some(child.pid),
            None,
            None,
            None,
        );
    }

    fn on_exit(&mut self, exit: Exit) {
        let name = exit.child.process.clone();
        let run = exit.child.run;
        self.outbox.push(Request::Ack {
            process: name.clone(),
            run,
        });
        let Some(p) = self.procs.get(&name).cloned() else {
            return;
        };
        if p.run != run || p.state.is_terminal() {
            return;
        }
        if p.state == ProcessState::Forked {
            // The exit overtook the spawn reply (or a crash lost it): record RUNNING first.
            self.on_spawned(exit.child.clone());
        }
        let we_signalled = self.signalled.remove(&(name.clone(), run));
        let (outcome, rc, sig) = match exit.status {
            ExitStatus::Code(0) => (Outcome::Success, 0, None),
            ExitStatus::Code(c) => (Outcome::Failed { return_code: c }, c, None),
            ExitStatus::Signal(s) if s == libc::SIGKILL && self.new_oom_kill() => {
                (Outcome::Oom, 128 + s, Some(s))
            }
            ExitStatus::Signal(s) if we_signalled => (Outcome::KilledByUs, 128 + s, Some(s)),
            ExitStatus::Signal(s) => (Outcome::KilledBySignal(s), 128 + s, Some(s)),
        };
        let state = outcome.process_state();
        let reason = match outcome {
            Outcome::KilledBySignal(s) => Some(format!("killed by {}", signal_name(s))),
            Outcome::KilledByUs => {
                sig.map(|s| format!("killed by the executor ({})", signal_name(s)))
            }
            o => o.recorded_reason().map(str::to_owned),
        };
        self.record(
            &name,
            state,
            ProcessStatus {
                pid: Some(exit.child.pid),
                stop_time: Some(exit.stop_time),
                return_code: Some(rc),
                signal: sig,
                reason: reason.clone(),
                ..ProcessStatus::default()
            },
        );
        self.event(
            Some(&name),
            Some(run),
            state.name(),
            Some(exit.child.pid),
            Some(rc),
            sig,
            reason.as_deref(),
        );
        self.exited(&name, outcome);
    }

    /// Tell the planner a run ended, and write the next WAITING run if it will run again.
    fn exited(&mut self, name: &str, outcome: Outcome) {
        match self.planner.exited(name, outcome, Instant::now()) {
            Ok(verdict) => self.after_verdict(name, verdict),
            Err(e) => eprintln!("hearth: internal planner error: {e}"),
        }
    }

    /// Whether the cgroup counted a new OOM kill since we last looked.
    fn new_oom_kill(&mut self) -> bool {
        let Some(n) = self.p.cgroup.as_ref().and_then(|c| c.oom_kills().ok()) else {
            return false;
        };
        let new = n > self.oom_kills_seen;
        self.oom_kills_seen = n;
        new
    }

    fn after_verdict(&mut self, name: &str, verdict: Verdict) {
        let restartable = match self.phase {
            Phase::Active => true,
            Phase::Finalizing { .. } => self.procs.get(name).is_some_and(|p| p.is_final),
            Phase::Cleaning { .. } => false,
        };
        match verdict {
            Verdict::Restart { after } if restartable => {
                self.record(name, ProcessState::Waiting, ProcessStatus::default());
                let run = self.procs.get(name).map(|p| p.run);
                let why = if after.is_zero() {
                    "restarting".to_owned()
                } else {
                    format!("restarting in {:.1}s", after.as_secs_f64())
                };
                self.event(Some(name), run, "WAITING", None, None, None, Some(&why));
            }
            Verdict::PermanentlyFailed { reason } => {
                let run = self.procs.get(name).map(|p| p.run);
                self.event(Some(name), run, "GAVE_UP", None, None, None, Some(&reason));
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        process: Option<&str>,
        run: Option<u32>,
        state: &str,
        pid: Option<i32>,
        return_code: Option<i32>,
        signal: Option<i32>,
        reason: Option<&str>,
    ) {
        let kind = if process.is_some() { "process" } else { "task" };
        let line = self.render(&Event {
            time_ms: now_ms(),
            event: kind,
            task_id: &self.p.task_id,
            process,
            run,
            state,
            pid,
            return_code,
            signal,
            reason,
        });
        self.lines.push(line);
    }

    /// Render a progress line (JSON or human); lines are printed once the turn is durable.
    fn render(&self, ev: &Event<'_>) -> String {
        if self.json {
            serde_json::to_string(ev).unwrap_or_default()
        } else {
            human_line(ev)
        }
    }

    /// Make the turn durable, then act on it: send requests, print lines.
    ///
    /// A turn whose only effects are spawn requests — nothing printed, reported, acknowledged or
    /// signalled — is written out without an fsync. Its records (FORKED ones, or bookkeeping
    /// such as a snooze event or the scheduler's acknowledgement) then outlive this executor,
    /// which is what recovery needs; only a machine crash loses them, and that ends the task's
    /// processes too (a spawn request is idempotent; an update whose acknowledgement was lost is
    /// re-sent and applied once, by its sequence number). Every other turn is committed with one
    /// fsync first.
    async fn flush(&mut self) -> Result<(), SuperviseError> {
        let only_spawns = self.lines.is_empty()
            && self.reports_out.is_empty()
            && self.outbox.iter().all(|r| matches!(r, Request::Spawn(_)));
        if only_spawns {
            self.p.writer.write_out()?;
        } else {
            self.p.writer.commit()?;
        }
        self.send_reports();
        let outbox = std::mem::take(&mut self.outbox);
        self.send_now(&outbox).await?;
        for line in self.lines.drain(..) {
            println!("{line}");
        }
        Ok(())
    }

    /// Before exiting, give the scheduler a bounded time to acknowledge every update; what stays
    /// unacknowledged is in the checkpoint for a later executor.
    async fn deliver_reports(&mut self) -> Result<(), SuperviseError> {
        if self.reporter.is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + REPORT_DRAIN;
        while self.report_acked < self.report_seq {
            let ev = tokio::select! {
                ev = recv_unbounded(&mut self.report_rx) => ev,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(ev) = ev else {
                eprintln!(
                    "hearth: warning: the scheduler did not acknowledge status updates {}..{}; \
                     they stay in the checkpoint",
                    self.report_acked + 1,
                    self.report_seq
                );
                break;
            };
            self.on_report(ev);
            self.p.writer.commit()?;
        }
        Ok(())
    }

    async fn send_now(&mut self, requests: &[Request]) -> Result<(), SuperviseError> {
        if requests.is_empty() {
            return Ok(());
        }
        // In bounded chunks: a launch burst is never serialized whole.
        let mut buf = Vec::with_capacity(SEND_CHUNK + 1024);
        for (i, r) in requests.iter().enumerate() {
            if serde_json::to_writer(&mut buf, r).is_ok() {
                buf.push(b'\n');
            }
            if buf.len() >= SEND_CHUNK || i + 1 == requests.len() {
                self.keeper_tx
                    .write_all(&buf)
                    .await
                    .map_err(|_| SuperviseError::KeeperGone)?;
                buf.clear();
            }
        }
        Ok(())
    }

    /// Record the terminal state, clean up, and let the keeper go.
    async fn finish(&mut self, ending: &Ending) -> Result<(), SuperviseError> {
        self.record_task(ending.state, Some(ending));
        self.event(
            None,
            None,
            ending.state.name(),
            None,
            None,
            None,
            Some(&ending.reason.clone()),
        );
        if let Some((status, text)) = terminal_status(ending.state) {
            // Health and disk failures keep their own words (Thermos's); others get Aurora's.
            let reason = if ending.reason.starts_with(FAILED_HEALTH_CHECK)
                || ending.reason.starts_with("Disk limit exceeded")
            {
                ending.reason.clone()
            } else {
                text.to_owned()
            };
            self.status(status.name(), &reason);
        }
        self.p.writer.commit()?;
        self.send_reports();
        self.deliver_reports().await?;
        if let Some(cg) = &self.p.cgroup
            && let Err(e) = cg.remove()
        {
            eprintln!("hearth: warning: could not remove the task cgroup: {e}");
        }
        let active = self
            .p
            .root
            .task_config_path(&self.p.task_id, TaskPlace::Active);
        let finished = self
            .p
            .root
            .task_config_path(&self.p.task_id, TaskPlace::Finished);
        if let Ok(bytes) = std::fs::read(&active)
            && write_atomic(&finished, &bytes).is_ok()
        {
            let _ = std::fs::remove_file(&active);
        }
        self.send_now(&[Request::Shutdown]).await?;
        for line in self.lines.drain(..) {
            println!("{line}");
        }
        Ok(())
    }
}

const SUCCESS_REASON: &str = "all processes finished";

/// Most processes launched in one turn of the event loop.
const LAUNCH_BATCH: usize = 32;

/// Requests to the keeper are written in pieces of about this size.
const SEND_CHUNK: usize = 16 * 1024;

/// A run younger than this when SIGTERM is sent is also signalled directly, and again after
/// [`TERM_AGAIN_AFTER`].
const YOUNG_RUN: Duration = Duration::from_secs(1);
const TERM_AGAIN_AFTER: Duration = Duration::from_millis(250);

/// How long a finished executor waits for the scheduler to acknowledge its last updates.
const REPORT_DRAIN: Duration = Duration::from_secs(30);

/// The scheduler's status for an Aurora state name written in a `StatusReport`.
fn schedule_status(name: &str) -> Option<ScheduleStatus> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// Thermos's words for a task without a health check.
const NO_HEALTH_CHECK: &str = crate::report::NO_HEALTH_CHECK_REASON;

fn human_line(ev: &Event<'_>) -> String {
    let secs = ev.time_ms.div_euclid(1000);
    let ms = ev.time_ms.rem_euclid(1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let mut line = format!("{h:02}:{m:02}:{s:02}.{ms:03} ");
    match (ev.process, ev.run) {
        (Some(p), Some(r)) => line.push_str(&format!("{p}[{r}] {}", ev.state)),
        (Some(p), None) => line.push_str(&format!("{p} {}", ev.state)),
        _ if ev.event == "status" => {
            line.push_str(&format!("task {} status {}", ev.task_id, ev.state))
        }
        _ => line.push_str(&format!("task {} {}", ev.task_id, ev.state)),
    }
    if let Some(pid) = ev.pid {
        line.push_str(&format!(" pid={pid}"));
    }
    if let Some(sig) = ev.signal {
        line.push_str(&format!(" signal={}", signal_name(sig)));
    } else if let Some(rc) = ev.return_code {
        line.push_str(&format!(" rc={rc}"));
    }
    if let Some(r) = ev.reason {
        line.push_str(&format!(" ({r})"));
    }
    line
}

/// `SIGTERM` for 15, etc.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
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
                reason: "killed-looking reason".into()
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
