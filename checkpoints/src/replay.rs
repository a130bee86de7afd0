//! Replay: fold a stream of records into the state of a task.
//!
//! The rules are Apache Thermos's (its runner's checkpoint dispatcher), written out here:
//!
//! * Header: at most one, anywhere in the stream (Thermos's `hello_world` writes a task status
//!   before it).
//! * Task status: appended; the task's state is the last one, or ACTIVE when there is none. Task
//!   transitions are not checked (Thermos does not check them either).
//! * Process status: `WAITING` starts a new run, allowed when the process has no run yet or its
//!   last run ended. Then `WAITING -> FORKED -> RUNNING -> SUCCESS | FAILED`, and
//!   `FORKED | RUNNING -> KILLED | LOST`. A record for a run that ended is invalid (unless it is
//!   the next `WAITING`). `seq` increases by exactly one per record of a process, across all its
//!   runs; the first record of a process may start at any `seq`. Fields required with a state:
//!   `RUNNING` needs `pid`; `SUCCESS`, `FAILED` and `KILLED` need `return_code`. When a Hearth
//!   record carries its run number (field 102), it must be the run the record applies to.
//!   Every field a record carries is copied onto the run, so a FAILED run keeps its
//!   `return_code` and `stop_time`.
//! * Snooze events and teardown steps are appended to their lists.
//!
//! A record breaking a rule leaves the state untouched and yields a [`ReplayError`]; the stream
//! reader reports it with the record's index and byte offset and stops there.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{
    FailureCause, ProcessState, ProcessStatus, Record, RunnerHeader, SnoozeEvent, StatusReport,
    TaskState, TaskStatus, TeardownStep,
};

/// One run of one process, as replayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessRun {
    pub run: u32,
    pub state: ProcessState,
    /// `seq` of the last record applied to this run.
    pub seq: i64,
    pub pid: Option<i32>,
    pub coordinator_pid: Option<i32>,
    pub fork_time: Option<f64>,
    pub start_time: Option<f64>,
    pub stop_time: Option<f64>,
    pub return_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub pid_start_ticks: Option<i64>,
    /// The typed failure cause (see [`ProcessStatus::failure_cause`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
}

/// The replayed state of one task.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskReplay {
    pub header: Option<RunnerHeader>,
    /// Every task status, in order.
    pub statuses: Vec<TaskStatus>,
    /// Every run of every process, keyed by process name, runs in order.
    pub processes: BTreeMap<String, Vec<ProcessRun>>,
    pub snoozes: Vec<SnoozeEvent>,
    pub teardown: Vec<TeardownStep>,
    /// Status updates for the scheduler, in order.
    pub reports: Vec<StatusReport>,
    /// Every update up to this seq was acknowledged (or refused for good); 0 when none was.
    pub reports_acked: i64,
    /// Fields skipped inside known records (ids this build does not know), over the stream.
    pub unknown_fields: u64,
    /// Records skipped because their union member is one this build does not know.
    pub unknown_records: u64,
}

impl TaskReplay {
    /// The task's current state: the last task status, or ACTIVE if there is none.
    pub fn state(&self) -> TaskState {
        self.statuses.last().map_or(TaskState::Active, |s| s.state)
    }
}

/// A record that breaks the transition rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// A second runner header.
    #[error("second runner header (task {task_id:?}); the stream already has one")]
    SecondHeader { task_id: String },
    /// A process record without its state.
    #[error("process {process:?} seq {seq}: record has no state")]
    NoState { process: String, seq: i64 },
    /// `seq` is not the previous one plus one.
    #[error("process {process:?}: seq {seq} follows seq {previous} (expected {})", previous + 1)]
    Seq {
        process: String,
        seq: i64,
        previous: i64,
    },
    /// A state that cannot follow the run's current state.
    #[error("process {process:?} run {run}: {} cannot follow {}", to.name(), from.name())]
    Transition {
        process: String,
        run: u32,
        from: ProcessState,
        to: ProcessState,
    },
    /// A non-WAITING record for a process that has no run.
    #[error("process {process:?}: {} before any WAITING record", state.name())]
    NoRun {
        process: String,
        state: ProcessState,
    },
    /// A field the transition requires is absent.
    #[error("process {process:?} run {run}: {} record lacks {field}", state.name())]
    MissingField {
        process: String,
        run: u32,
        state: ProcessState,
        field: &'static str,
    },
    /// The record's run number (Hearth field 102) is not the run it applies to.
    #[error("process {process:?}: record names run {named}, but it applies to run {actual}")]
    WrongRun {
        process: String,
        named: i32,
        actual: u32,
    },
}

impl TaskReplay {
    /// Apply one record. On error the state is unchanged.
    pub fn apply(&mut self, record: &Record) -> Result<(), ReplayError> {
        match record {
            Record::Header(h) => {
                if self.header.is_some() {
                    return Err(ReplayError::SecondHeader {
                        task_id: h.task_id.clone(),
                    });
                }
                self.header = Some(h.clone());
            }
            Record::Task(t) => self.statuses.push(t.clone()),
            Record::Snooze(s) => self.snoozes.push(s.clone()),
            Record::Teardown(t) => self.teardown.push(t.clone()),
            Record::Status(s) => self.reports.push(s.clone()),
            Record::StatusAck(a) => self.reports_acked = self.reports_acked.max(a.seq),
            Record::Process(p) => self.apply_process(p)?,
        }
        Ok(())
    }

    fn apply_process(&mut self, p: &ProcessStatus) -> Result<(), ReplayError> {
        use ProcessState as S;
        let Some(to) = p.state else {
            return Err(ReplayError::NoState {
                process: p.process.clone(),
                seq: p.seq,
            });
        };
        // Look up without allocating the key: most records are for a known process.
        let runs = match self.processes.get_mut(p.process.as_str()) {
            Some(runs) => runs,
            None if to == S::Waiting => {
                // Check the one rule a first WAITING can break before creating the process.
                if let Some(named) = p.run.filter(|&r| r != 0) {
                    return Err(ReplayError::WrongRun {
                        process: p.process.clone(),
                        named,
                        actual: 0,
                    });
                }
                self.processes.entry(p.process.clone()).or_default()
            }
            None => {
                return Err(ReplayError::NoRun {
                    process: p.process.clone(),
                    state: to,
                });
            }
        };
        if let Some(last) = runs.last()
            && Some(p.seq) != last.seq.checked_add(1)
        {
            return Err(ReplayError::Seq {
                process: p.process.clone(),
                seq: p.seq,
                previous: last.seq,
            });
        }
        let transition = |run: &ProcessRun| ReplayError::Transition {
            process: p.process.clone(),
            run: run.run,
            from: run.state,
            to,
        };
        // The run this record applies to, and whether the record starts it.
        let (run_no, starts) = match (runs.last(), to) {
            (None, _) => (0, true),
            (Some(last), S::Waiting) if last.state.is_terminal() => (last.run + 1, true),
            (Some(last), _) => {
                let allowed = match to {
                    S::Waiting => false,
                    S::Forked => last.state == S::Waiting,
                    S::Running => last.state == S::Forked,
                    S::Success | S::Failed => last.state == S::Running,
                    S::Killed | S::Lost => matches!(last.state, S::Forked | S::Running),
                };
                if !allowed {
                    return Err(transition(last));
                }
                (last.run, false)
            }
        };
        if let Some(named) = p.run
            && u32::try_from(named).ok() != Some(run_no)
        {
            return Err(ReplayError::WrongRun {
                process: p.process.clone(),
                named,
                actual: run_no,
            });
        }
        let needs = |field: &'static str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(ReplayError::MissingField {
                    process: p.process.clone(),
                    run: run_no,
                    state: to,
                    field,
                })
            }
        };
        match to {
            S::Running => needs("pid", p.pid.is_some())?,
            S::Success | S::Failed | S::Killed => needs("return_code", p.return_code.is_some())?,
            _ => {}
        }
        if starts {
            runs.push(ProcessRun {
                run: run_no,
                state: to,
                seq: p.seq,
                pid: None,
                coordinator_pid: None,
                fork_time: None,
                start_time: None,
                stop_time: None,
                return_code: None,
                signal: None,
                reason: None,
                pid_start_ticks: None,
                cause: None,
            });
        }
        let Some(run) = runs.last_mut() else {
            return Ok(());
        };
        run.state = to;
        run.seq = p.seq;
        copy(&mut run.pid, p.pid);
        copy(&mut run.coordinator_pid, p.coordinator_pid);
        copy(&mut run.fork_time, p.fork_time);
        copy(&mut run.start_time, p.start_time);
        copy(&mut run.stop_time, p.stop_time);
        copy(&mut run.return_code, p.return_code);
        copy(&mut run.signal, p.signal);
        copy(&mut run.pid_start_ticks, p.pid_start_ticks);
        if p.reason.is_some() {
            run.reason.clone_from(&p.reason);
        }
        copy(&mut run.cause, p.failure_cause());
        Ok(())
    }
}

fn copy<T: Copy>(dst: &mut Option<T>, src: Option<T>) {
    if src.is_some() {
        *dst = src;
    }
}
