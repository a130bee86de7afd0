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
    /// Thrift 104 (Hearth): why the run failed, typed, when it is a cause tools act on (`reason`
    /// keeps the human text). See [`ProcessStatus::failure_cause`] for streams without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
}

impl ProcessStatus {
    /// The typed cause: field 104, or — in streams written before it existed — read from
    /// `reason` (`oom`).
    pub fn failure_cause(&self) -> Option<FailureCause> {
        self.cause
            .or_else(|| FailureCause::of_run_reason(self.reason.as_deref()?))
    }
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
    /// Thrift 102 (Hearth): why the task fails, typed, when it is a cause tools act on (health
    /// check, disk limit); `reason` keeps the human text. See [`TaskStatus::failure_cause`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FailureCause>,
}

impl TaskStatus {
    /// The typed cause: field 102, or — in streams written before it existed — read from
    /// `reason` (`Failed health check! …`, `Disk limit exceeded. …`).
    pub fn failure_cause(&self) -> Option<FailureCause> {
        self.cause
            .or_else(|| FailureCause::of_task_reason(self.reason.as_deref()?))
    }
}

/// Why a run or a task failed, when it is one of the causes the executor and tools decide on.
/// Numeric values are the Thrift encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCause {
    /// The kernel's OOM killer ended the run (reason `oom`).
    Oom = 1,
    /// The sandbox outgrew `resources.disk` (`Disk limit exceeded. Reserved X bytes vs used Y
    /// bytes.`).
    DiskLimit = 2,
    /// The health check failed (`Failed health check! …`).
    HealthCheck = 3,
}

impl FailureCause {
    pub fn from_i32(v: i32) -> Option<Self> {
        match v {
            1 => Some(FailureCause::Oom),
            2 => Some(FailureCause::DiskLimit),
            3 => Some(FailureCause::HealthCheck),
            _ => None,
        }
    }

    /// The legacy rule for a run's reason text.
    pub fn of_run_reason(reason: &str) -> Option<Self> {
        (reason == "oom").then_some(FailureCause::Oom)
    }

    /// The legacy rule for a task's reason text (Aurora's wordings).
    pub fn of_task_reason(reason: &str) -> Option<Self> {
        if reason.starts_with("Failed health check!") {
            Some(FailureCause::HealthCheck)
        } else if reason.starts_with("Disk limit exceeded") {
            Some(FailureCause::DiskLimit)
        } else {
            None
        }
    }
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
    /// Thrift 1 (the name: `quitquitquit`, `sigterm`, …) and Thrift 4 (the kind, i32; absent in
    /// streams written before it existed, when the name decides: see [`StepKind::from_wire`]).
    pub step: StepKind,
    /// Thrift 2.
    pub timestamp_ms: i64,
    /// Thrift 3: what happened (`connection refused`, `all processes exited`, ...).
    pub detail: Option<String>,
}

/// A teardown step. On the wire: its name (Thrift 1) and its kind's code (Thrift 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// A lifecycle POST; the name is the endpoint without its leading `/` (`quitquitquit`).
    Post { endpoint: String },
    /// SIGTERM to the task (`sigterm`).
    Sigterm,
    /// SIGKILL to the task (`sigkill`).
    Sigkill,
    /// FINALIZING began (`finalize`).
    Finalize,
    /// Teardown ended (`done`).
    Done,
}

impl StepKind {
    /// The name written in Thrift 1.
    pub fn name(&self) -> &str {
        match self {
            StepKind::Post { endpoint } => endpoint.trim_start_matches('/'),
            StepKind::Sigterm => "sigterm",
            StepKind::Sigkill => "sigkill",
            StepKind::Finalize => "finalize",
            StepKind::Done => "done",
        }
    }

    /// The code written in Thrift 4.
    pub fn code(&self) -> i32 {
        match self {
            StepKind::Post { .. } => 1,
            StepKind::Sigterm => 2,
            StepKind::Sigkill => 3,
            StepKind::Finalize => 4,
            StepKind::Done => 5,
        }
    }

    /// The kind of a step read from the wire. With a code (Thrift 4), the code decides (`None`
    /// for an unknown one); without (streams written before it existed) the name does: the five
    /// fixed names, and any other name is a lifecycle POST to that endpoint.
    pub fn from_wire(name: &str, code: Option<i32>) -> Option<StepKind> {
        let post = || StepKind::Post {
            endpoint: name.to_owned(),
        };
        Some(match code {
            Some(1) => post(),
            Some(2) => StepKind::Sigterm,
            Some(3) => StepKind::Sigkill,
            Some(4) => StepKind::Finalize,
            Some(5) => StepKind::Done,
            Some(_) => return None,
            None => match name {
                "sigterm" => StepKind::Sigterm,
                "sigkill" => StepKind::Sigkill,
                "finalize" => StepKind::Finalize,
                "done" => StepKind::Done,
                _ => post(),
            },
        })
    }
}

/// A task state as reported to the scheduler: Aurora's `ScheduleStatus` names, the ones an
/// executor reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum ReportState {
    Starting,
    Running,
    Finished,
    Failed,
    Killed,
    Lost,
    /// A name this build does not know (written by a newer one): kept as read, never re-sent.
    Unknown(String),
}

impl ReportState {
    /// Aurora's name (`RUNNING`, …), as written in Thrift 2.
    pub fn name(&self) -> &str {
        match self {
            ReportState::Starting => "STARTING",
            ReportState::Running => "RUNNING",
            ReportState::Finished => "FINISHED",
            ReportState::Failed => "FAILED",
            ReportState::Killed => "KILLED",
            ReportState::Lost => "LOST",
            ReportState::Unknown(name) => name,
        }
    }

    pub fn from_name(name: &str) -> ReportState {
        match name {
            "STARTING" => ReportState::Starting,
            "RUNNING" => ReportState::Running,
            "FINISHED" => ReportState::Finished,
            "FAILED" => ReportState::Failed,
            "KILLED" => ReportState::Killed,
            "LOST" => ReportState::Lost,
            other => ReportState::Unknown(other.to_owned()),
        }
    }
}

impl From<ReportState> for String {
    fn from(s: ReportState) -> String {
        s.name().to_owned()
    }
}

impl From<String> for ReportState {
    fn from(s: String) -> ReportState {
        ReportState::from_name(&s)
    }
}

/// Hearth-only (`RunnerCkpt` field 102): a task status update for the scheduler, persisted
/// before it is sent so that a restarted executor re-sends what was not acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Thrift 1: 1, 2, 3, ... per task, without gaps.
    pub seq: i64,
    /// Thrift 2: Aurora's state name (`STARTING`, `RUNNING`, `FINISHED`, `FAILED`, `KILLED`,
    /// `LOST`).
    pub state: ReportState,
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
