//! The records of a checkpoint stream.
//!
//! A record is one `RunnerCkpt` union member. The shapes are Apache Thermos's (`RunnerHeader`,
//! `ProcessStatus`, `TaskStatus`) with the same Thrift field ids, extended with fields of our own
//! at ids Thermos never used, plus two Hearth-only members (snooze and teardown events). Because the
//! payload is a superset of Thermos's, one decoder reads both Hearth and legacy Thermos streams; only
//! the framing differs (see `FORMAT.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the Hearth checkpoint format this code writes.
pub const FORMAT_VERSION: u32 = 1;

/// State of one run of a process. Numeric values are Thermos's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessState {
    Waiting = 0,
    Forked = 1,
    Running = 2,
    Success = 3,
    Killed = 4,
    Failed = 5,
    Lost = 6,
}

impl ProcessState {
    /// All states, indexed by their numeric value.
    pub const ALL: [ProcessState; 7] = [
        ProcessState::Waiting,
        ProcessState::Forked,
        ProcessState::Running,
        ProcessState::Success,
        ProcessState::Killed,
        ProcessState::Failed,
        ProcessState::Lost,
    ];

    /// The state for a Thrift enum value, if it is one.
    pub fn from_i32(v: i32) -> Option<Self> {
        usize::try_from(v)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// Thermos's name for the state (`WAITING`, `SUCCESS`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ProcessState::Waiting => "WAITING",
            ProcessState::Forked => "FORKED",
            ProcessState::Running => "RUNNING",
            ProcessState::Success => "SUCCESS",
            ProcessState::Killed => "KILLED",
            ProcessState::Failed => "FAILED",
            ProcessState::Lost => "LOST",
        }
    }

    /// Whether a run in this state has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ProcessState::Success
                | ProcessState::Killed
                | ProcessState::Failed
                | ProcessState::Lost
        )
    }
}

/// State of a task. Numeric values are Thermos's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    Active = 0,
    Success = 1,
    Failed = 2,
    Killed = 3,
    Lost = 4,
    Cleaning = 5,
    Finalizing = 6,
}

impl TaskState {
    /// All states, indexed by their numeric value.
    pub const ALL: [TaskState; 7] = [
        TaskState::Active,
        TaskState::Success,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
        TaskState::Cleaning,
        TaskState::Finalizing,
    ];

    /// The state for a Thrift enum value, if it is one.
    pub fn from_i32(v: i32) -> Option<Self> {
        usize::try_from(v)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
    }

    /// Thermos's name for the state (`ACTIVE`, `SUCCESS`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Active => "ACTIVE",
            TaskState::Success => "SUCCESS",
            TaskState::Failed => "FAILED",
            TaskState::Killed => "KILLED",
            TaskState::Lost => "LOST",
            TaskState::Cleaning => "CLEANING",
            TaskState::Finalizing => "FINALIZING",
        }
    }

    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failed | TaskState::Killed | TaskState::Lost
        )
    }
}

/// `RunnerHeader`: who ran the task, where, with which ports. Written once, first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunnerHeader {
    /// Thrift 1.
    pub task_id: String,
    /// Thrift 2.
    pub launch_time_ms: i64,
    /// Thrift 3.
    pub sandbox: Option<String>,
    /// Thrift 4.
    pub hostname: Option<String>,
    /// Thrift 5.
    pub user: Option<String>,
    /// Thrift 6.
    pub ports: BTreeMap<String, i64>,
    /// Thrift 7.
    pub log_dir: Option<String>,
    /// Thrift 8.
    pub uid: Option<i32>,
    /// Thrift 100 (Hearth): the format version the writer used.
    pub format_version: Option<i32>,
}

/// `ProcessStatus`: one transition of one run of one process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Thrift 1: increases by one per record of this process, across all its runs.
    pub seq: i64,
    /// Thrift 3.
    pub process: String,
    /// Thrift 5 (required; a record without it is invalid).
    pub state: Option<ProcessState>,
    /// Thrift 10: Thermos's coordinator pid; Hearth writes the keeper's pid.
    pub coordinator_pid: Option<i32>,
    /// Thrift 11: seconds since the epoch.
    pub fork_time: Option<f64>,
    /// Thrift 6: seconds since the epoch.
    pub start_time: Option<f64>,
    /// Thrift 7.
    pub pid: Option<i32>,
    /// Thrift 8: seconds since the epoch.
    pub stop_time: Option<f64>,
    /// Thrift 9: exit code; for a run killed by a signal, Hearth writes `128 + signal` here and
    /// the signal in `signal`.
    pub return_code: Option<i32>,
    /// Thrift 100 (Hearth): why the run ended or was recorded (`oom`, `killed by executor`, ...).
    pub reason: Option<String>,
    /// Thrift 101 (Hearth): the signal that ended the run.
    pub signal: Option<i32>,
    /// Thrift 102 (Hearth): the run number this record belongs to (the keeper's stream carries it;
    /// the runner stream derives it from `WAITING` records).
    pub run: Option<i32>,
    /// Thrift 103 (Hearth): start time of `pid` in clock ticks since boot (`/proc/<pid>/stat`
    /// field 22), so a restarted executor can tell the process from a recycled pid.
    pub pid_start_ticks: Option<i64>,
}

/// `TaskStatus`: one transition of the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Thrift 1 (required).
    pub state: TaskState,
    /// Thrift 2.
    pub timestamp_ms: i64,
    /// Thrift 3.
    pub runner_pid: Option<i32>,
    /// Thrift 4.
    pub runner_uid: Option<i32>,
    /// Thrift 100 (Hearth): human-readable reason (`Failed health check! ...`).
    pub reason: Option<String>,
    /// Thrift 101 (Hearth): on `CLEANING` and `FINALIZING`, the terminal state the task was
    /// decided to end in, so that an executor restarted during teardown finishes it the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TaskState>,
}

/// Hearth-only (`RunnerCkpt` field 100): a health-check snooze started or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnoozeEvent {
    /// Thrift 1: true when the snooze starts, false when it ends.
    pub active: bool,
    /// Thrift 2.
    pub timestamp_ms: i64,
    /// Thrift 3: when the snooze ends by itself, if the file said so.
    pub expires_ms: Option<i64>,
    /// Thrift 4: free text (`file created`, `expired`, `file removed`, `malformed file: ...`).
    pub detail: Option<String>,
}

/// Hearth-only (`RunnerCkpt` field 101): one step of the teardown escalation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeardownStep {
    /// Thrift 1: `quitquitquit`, `abortabortabort`, `sigterm`, `sigkill`, `finalize`, `done`.
    pub step: String,
    /// Thrift 2.
    pub timestamp_ms: i64,
    /// Thrift 3: what happened (`connection refused`, `all processes exited`, ...).
    pub detail: Option<String>,
}

/// Hearth-only (`RunnerCkpt` field 102): a task status update for the scheduler, persisted
/// before it is sent so that a restarted executor re-sends what was not acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Thrift 1: 1, 2, 3, ... per task, without gaps.
    pub seq: i64,
    /// Thrift 2: Aurora's state name (`STARTING`, `RUNNING`, `FINISHED`, `FAILED`, `KILLED`,
    /// `LOST`).
    pub state: String,
    /// Thrift 3.
    pub reason: Option<String>,
    /// Thrift 4.
    pub timestamp_ms: i64,
}

/// Hearth-only (`RunnerCkpt` field 103): the scheduler acknowledged (or refused for good) every
/// status update up to and including `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusAck {
    /// Thrift 1.
    pub seq: i64,
    /// Thrift 2: set when the scheduler refused the update (it is not re-sent).
    pub detail: Option<String>,
}

/// One record of a checkpoint stream: a `RunnerCkpt` union member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// `RunnerCkpt` field 1.
    Header(RunnerHeader),
    /// `RunnerCkpt` field 2.
    Process(ProcessStatus),
    /// `RunnerCkpt` field 3.
    Task(TaskStatus),
    /// `RunnerCkpt` field 100 (Hearth).
    Snooze(SnoozeEvent),
    /// `RunnerCkpt` field 101 (Hearth).
    Teardown(TeardownStep),
    /// `RunnerCkpt` field 102 (Hearth).
    Status(StatusReport),
    /// `RunnerCkpt` field 103 (Hearth).
    StatusAck(StatusAck),
}
