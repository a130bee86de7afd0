//! Replay: fold a stream of records into the state of a task.
//!
//! OWNER NOTE (to be replaced by real docs): transitions follow Thermos's rules; an invalid
//! transition is an error naming the record (its index and byte offset).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::record::{ProcessState, Record, RunnerHeader, SnoozeEvent, TaskState, TaskStatus, TeardownStep};

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
}

impl TaskReplay {
    /// The task's current state: the last task status, or ACTIVE if there is none.
    pub fn state(&self) -> TaskState {
        self.statuses.last().map_or(TaskState::Active, |s| s.state)
    }
}

/// A record that breaks the transition rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ReplayError {
    pub detail: String,
}

impl TaskReplay {
    /// Apply one record (in progress).
    pub fn apply(&mut self, record: &Record) -> Result<(), ReplayError> {
        let _ = record;
        Ok(())
    }
}
