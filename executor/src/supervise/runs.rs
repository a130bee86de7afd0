//! The executor's view of each process's runs: launching them, the keeper's replies (spawned,
//! failed to spawn, exited), what an exit means for the plan, and the reconciliation decisions
//! of a restarted executor carried out.

use std::collections::BTreeMap;

use hearth_checkpoints::record::{FailureCause, ProcessState, ProcessStatus, Record};
use hearth_checkpoints::replay::TaskReplay;
use tokio::time::Instant;

use super::launch;
use super::progress::{RunDetail, signal_name};
use super::reconcile::{self, Decision, KeeperState, RecordedRun};
use super::teardown::{RunKey, RunView};
use super::{LAUNCH_BATCH, Phase, Supervisor};
use crate::keeper::now_secs;
use crate::keeper::protocol::{Child, Exit, ExitStatus, Reply, Request};
use crate::planner::{Outcome, Verdict};

/// The executor's view of one process's current run.
#[derive(Debug, Clone)]
pub(super) struct Proc {
    pub(super) run: u32,
    pub(super) seq: i64,
    pub(super) state: ProcessState,
    pub(super) pid: Option<i32>,
    /// Start time of `pid` in clock ticks since boot, to tell it from a recycled pid.
    pub(super) start_ticks: Option<i64>,
    /// When this executor saw the run start (not known for runs adopted after a restart).
    pub(super) started_at: Option<Instant>,
    /// The keeper the run was handed to.
    pub(super) keeper_pid: Option<i32>,
    pub(super) is_final: bool,
}

impl Proc {
    pub(super) fn is_live(&self) -> bool {
        matches!(self.state, ProcessState::Forked | ProcessState::Running)
    }
}

impl Supervisor {
    /// Build the per-process view from the replay (empty for a fresh task) and give every
    /// process without a run its first WAITING record.
    pub(super) fn load_procs(&mut self, replay: &TaskReplay) {
        let procs: Vec<(String, bool)> = self
            .p
            .task
            .processes
            .iter()
            .map(|p| (p.name.clone(), p.is_final))
            .collect();
        for (name, is_final) in procs {
            match replay.processes.get(&name).and_then(|runs| runs.last()) {
                Some(last) => {
                    let proc_ = Proc {
                        run: last.run,
                        seq: last.seq,
                        state: last.state,
                        pid: last.pid,
                        start_ticks: last.pid_start_ticks,
                        started_at: None,
                        keeper_pid: last.coordinator_pid,
                        is_final,
                    };
                    self.procs.insert(name, proc_);
                }
                None => {
                    let proc_ = Proc {
                        run: 0,
                        seq: -1,
                        state: ProcessState::Waiting,
                        pid: None,
                        start_ticks: None,
                        started_at: None,
                        keeper_pid: None,
                        is_final,
                    };
                    self.procs.insert(name.clone(), proc_);
                    self.record(&name, ProcessState::Waiting, ProcessStatus::default());
                }
            }
        }
    }

    /// Write one process record: bump the seq, fill in process and state.
    pub(super) fn record(&mut self, name: &str, state: ProcessState, mut rec: ProcessStatus) {
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

    /// After a restart: merge what the keeper knows into the checkpoint. `recorded` is what
    /// [`keeper_stream_exits`] read from the keeper's stream.
    pub(super) fn reconcile(&mut self, keeper: KeeperState, recorded: BTreeMap<RunKey, Exit>) {
        let runs: Vec<RecordedRun> = self
            .procs
            .iter()
            .map(|(name, p)| RecordedRun {
                process: name.clone(),
                run: p.run,
                state: p.state,
                pid: p.pid,
                start_ticks: p.start_ticks,
                keeper_pid: p.keeper_pid,
            })
            .collect();
        let decisions = reconcile::reconcile(&runs, keeper, &recorded, |pid, ticks| {
            crate::keeper::pid_start_ticks(pid) == Some(ticks)
        });
        for d in decisions {
            tracing::debug!(decision = ?d, "reconciling with the keeper");
            match d {
                Decision::Ack((process, run)) => self.outbox.push(Request::Ack { process, run }),
                Decision::Exited(exit) => self.on_exit(exit),
                Decision::Running(child) => self.on_spawned(child),
                Decision::Respawn((name, run)) => {
                    // The keeper never received this run's spawn request: send it now.
                    if let Some(spec) = launch::spawn_spec(&self.p, &name, run) {
                        self.outbox.push(Request::Spawn(spec));
                    }
                }
                Decision::Lost { key, kill } => self.lost(key, kill),
            }
        }
    }

    /// The exit status of this run is unknowable: Thermos's LOST, re-run without counting a
    /// failure — after making sure the old run is really gone, so two never run at once.
    pub(super) fn lost(&mut self, (name, run): RunKey, kill: Option<i32>) {
        if let Some(pid) = kill {
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
        let detail = RunDetail {
            reason: Some("no keeper knows this run"),
            ..RunDetail::default()
        };
        self.progress.run(&name, Some(run), "LOST", detail);
        self.exited(&name, Outcome::Lost);
    }

    pub(super) fn run_views(&self) -> Vec<RunView> {
        self.procs
            .iter()
            .filter(|(_, p)| p.is_live())
            .map(|(name, p)| RunView {
                process: name.clone(),
                run: p.run,
                state: p.state,
                started_at: p.started_at,
                is_final: p.is_final,
            })
            .collect()
    }

    pub(super) fn running_count(&self) -> usize {
        self.procs.values().filter(|p| p.is_live()).count()
    }

    pub(super) fn regular_running(&self) -> usize {
        self.procs
            .values()
            .filter(|p| !p.is_final && p.is_live())
            .count()
    }

    /// Launch what the planner allows, at most [`LAUNCH_BATCH`] per turn: a turn's spawn requests
    /// are held in memory until its records are durable, and a bounded batch keeps that peak (and
    /// so the executor's resident heap) small. The next turn follows at once.
    pub(super) fn launch_runnable(&mut self, now: Instant) {
        let runnable = self.planner.runnable(now);
        self.more_to_launch = runnable.len() > LAUNCH_BATCH;
        for name in runnable.into_iter().take(LAUNCH_BATCH) {
            self.launch(&name);
        }
    }

    /// Record FORKED and ask the keeper to start the process.
    pub(super) fn launch(&mut self, name: &str) {
        let Some(state) = self.procs.get(name).map(|p| p.state) else {
            return;
        };
        match state {
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
        let Some(spec) = launch::spawn_spec(&self.p, name, run) else {
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
        if let Some(p) = self.procs.get_mut(name) {
            p.keeper_pid = self.keeper_pid;
        }
        if let Err(e) = self.planner.launched(name, Instant::now()) {
            tracing::error!("internal planner error: {e}");
        }
        tracing::debug!(process = name, run, "launching");
        self.outbox.push(Request::Spawn(spec));
    }

    pub(super) fn on_reply(&mut self, reply: Reply) {
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
                    let detail = RunDetail {
                        return_code: Some(127),
                        reason: Some(&error),
                        ..RunDetail::default()
                    };
                    self.progress.run(&process, Some(run), "FAILED", detail);
                    self.exited(&process, Outcome::Failed { return_code: 127 });
                }
            }
            Reply::Exited(exit) => self.on_exit(exit),
            Reply::State { .. }
            | Reply::Signalled { .. }
            | Reply::SignalledAll { .. }
            | Reply::Done
            | Reply::Bye => {}
            Reply::Error { error } => {
                tracing::error!("the keeper refused a request: {error}");
            }
        }
    }

    pub(super) fn on_spawned(&mut self, child: Child) {
        let Some(p) = self.procs.get_mut(&child.process) else {
            return;
        };
        if p.run != child.run || p.state != ProcessState::Forked {
            return;
        }
        p.start_ticks = child.start_ticks;
        p.started_at = Some(Instant::now());
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
        let detail = RunDetail {
            pid: Some(child.pid),
            ..RunDetail::default()
        };
        self.progress
            .run(&child.process, Some(child.run), "RUNNING", detail);
    }

    pub(super) fn on_exit(&mut self, exit: Exit) {
        let name = exit.child.process.clone();
        let run = exit.child.run;
        self.outbox.push(Request::Ack {
            process: name.clone(),
            run,
        });
        let Some(p) = self.procs.get(&name) else {
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
                cause: (outcome == Outcome::Oom).then_some(FailureCause::Oom),
                ..ProcessStatus::default()
            },
        );
        let detail = RunDetail {
            pid: Some(exit.child.pid),
            return_code: Some(rc),
            signal: sig,
            reason: reason.as_deref(),
        };
        self.progress.run(&name, Some(run), state.name(), detail);
        self.exited(&name, outcome);
    }

    /// Tell the planner a run ended, and write the next WAITING run if it will run again.
    pub(super) fn exited(&mut self, name: &str, outcome: Outcome) {
        match self.planner.exited(name, outcome, Instant::now()) {
            Ok(verdict) => self.after_verdict(name, verdict),
            Err(e) => tracing::error!("internal planner error: {e}"),
        }
    }

    /// Whether the cgroup counted a new OOM kill since we last looked.
    pub(super) fn new_oom_kill(&mut self) -> bool {
        let Some(n) = self.p.cgroup.as_ref().and_then(|c| c.oom_kills().ok()) else {
            return false;
        };
        let new = n > self.oom_kills_seen;
        self.oom_kills_seen = n;
        new
    }

    pub(super) fn after_verdict(&mut self, name: &str, verdict: Verdict) {
        let restartable = match self.phase {
            Phase::Active => true,
            Phase::Finalizing { .. } => self.procs.get(name).is_some_and(|p| p.is_final),
            Phase::Cleaning { .. } => false,
        };
        let run = self.procs.get(name).map(|p| p.run);
        match verdict {
            Verdict::Restart { after } if restartable => {
                self.record(name, ProcessState::Waiting, ProcessStatus::default());
                let run = self.procs.get(name).map(|p| p.run);
                let why = if after.is_zero() {
                    "restarting".to_owned()
                } else {
                    format!("restarting in {:.1}s", after.as_secs_f64())
                };
                let detail = RunDetail {
                    reason: Some(&why),
                    ..RunDetail::default()
                };
                self.progress.run(name, run, "WAITING", detail);
            }
            Verdict::PermanentlyFailed { reason } => {
                let detail = RunDetail {
                    reason: Some(&reason),
                    ..RunDetail::default()
                };
                self.progress.run(name, run, "GAVE_UP", detail);
            }
            _ => {}
        }
    }
}

/// The exits recorded in the keeper's stream at `path`, by process and run. Blocking.
#[allow(clippy::disallowed_methods)] // called through spawn_blocking only
pub(super) fn keeper_stream_exits(path: &std::path::Path) -> BTreeMap<RunKey, Exit> {
    let mut out = BTreeMap::new();
    let Ok(bytes) = std::fs::read(path) else {
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
