//! The status-report API between an executor and the scheduler.
//!
//! One endpoint, [`STATUS_PATH`]: the executor `POST`s one [`StatusUpdate`] (JSON) per request.
//!
//! Delivery contract (the executor side is `hearth_executor::report::Reporter`):
//! * The executor numbers the updates of a task `1, 2, 3, ...` ([`StatusUpdate::seq`]), persists
//!   each one before sending it, and sends them one at a time, in order, retrying until the
//!   scheduler acknowledges. After a restart it resends every update it has no acknowledgement
//!   for, with the same numbers.
//! * The scheduler applies an update only when its `seq` is exactly one more than the last seq
//!   it applied for that task (the first expected is 1). It answers:
//!   - `200` with a [`StatusAck`] (`duplicate: false`) when it applied the update;
//!   - `200` with a [`StatusAck`] (`duplicate: true`) when it had already applied that seq — a
//!     resend after a lost acknowledgement. Nothing is applied twice;
//!   - `409` with a [`StatusConflict`] naming the seq it expects when the update would skip one.
//!     Nothing is applied out of order.
//!
//! Together: every update is applied exactly once, in order, however often it is sent.

use serde::{Deserialize, Serialize};

/// Path of the status-update endpoint, relative to the scheduler's base URL.
pub const STATUS_PATH: &str = "/api/v1/status";

/// The first sequence number of a task's updates.
pub const FIRST_SEQ: u64 = 1;

/// Aurora's task states (`ScheduleStatus`), by their Aurora names.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScheduleStatus {
    Pending,
    Assigned,
    Starting,
    Running,
    Finished,
    Failed,
    Killing,
    Killed,
    Lost,
    Restarting,
    Throttled,
    Draining,
    Preempting,
}

impl ScheduleStatus {
    /// Aurora's name (`RUNNING`, `FINISHED`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ScheduleStatus::Pending => "PENDING",
            ScheduleStatus::Assigned => "ASSIGNED",
            ScheduleStatus::Starting => "STARTING",
            ScheduleStatus::Running => "RUNNING",
            ScheduleStatus::Finished => "FINISHED",
            ScheduleStatus::Failed => "FAILED",
            ScheduleStatus::Killing => "KILLING",
            ScheduleStatus::Killed => "KILLED",
            ScheduleStatus::Lost => "LOST",
            ScheduleStatus::Restarting => "RESTARTING",
            ScheduleStatus::Throttled => "THROTTLED",
            ScheduleStatus::Draining => "DRAINING",
            ScheduleStatus::Preempting => "PREEMPTING",
        }
    }

    /// Whether the task has ended in this state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ScheduleStatus::Finished
                | ScheduleStatus::Failed
                | ScheduleStatus::Killed
                | ScheduleStatus::Lost
        )
    }
}

/// One status update of one task, as the executor sends it.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The task id the executor runs.
    pub task_id: String,
    /// Position of this update among the task's updates, from [`FIRST_SEQ`], without gaps.
    pub seq: u64,
    pub state: ScheduleStatus,
    /// Human-readable reason (`Task finished.`, `Failed health check! ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the executor observed the transition, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Path of the executors' condition endpoint, relative to the scheduler's base URL.
pub const CONDITION_PATH: &str = "/api/v1/status/condition";

/// What an executor says is wrong with its task right now, outside the sequence of status
/// updates: news that cannot wait for a durable record — today, that its checkpoint writes fail
/// (a full or read-only disk), so no further update can be written until they succeed. The
/// executor `POST`s one when the condition begins, again while it holds, and one with
/// `condition: None` when it ends. The scheduler keeps the latest per task, in memory, and shows
/// it with the task (`hearth job status`). Answered `204`, also for a task it does not know.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorCondition {
    pub task_id: String,
    /// What is wrong, for people (`checkpoint writes failing: No space left on device`); `None`
    /// when all is well again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// When the condition began, milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
}

/// The scheduler's answer to an update it applied now or had applied before.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAck {
    pub task_id: String,
    pub seq: u64,
    /// True when the update had already been applied (a resend).
    pub duplicate: bool,
}

/// The scheduler's answer (`409`) to an update that would skip one.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusConflict {
    pub task_id: String,
    /// The seq the scheduler will accept next for this task.
    pub expected_seq: u64,
}

/// What a receiver does with an update, given the last seq it applied for the task (`None` when
/// it has applied none). Shared by every receiver so that they all keep the contract above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Apply it: it is the next one.
    Apply,
    /// Already applied: acknowledge again, apply nothing.
    Duplicate,
    /// It would skip updates: refuse, naming the expected seq.
    Gap { expected_seq: u64 },
}

/// Decide what to do with update `seq` when `last_applied` is the last seq applied.
pub fn admit(last_applied: Option<u64>, seq: u64) -> Admission {
    let expected = last_applied.map_or(FIRST_SEQ, |s| s.saturating_add(1));
    if seq == expected {
        Admission::Apply
    } else if seq < expected {
        Admission::Duplicate
    } else {
        Admission::Gap {
            expected_seq: expected,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn update_serializes_with_aurora_state_names() {
        let u = StatusUpdate {
            task_id: "t-1".into(),
            seq: 3,
            state: ScheduleStatus::Running,
            reason: Some("Task is healthy.".into()),
            timestamp_ms: 1_700_000_000_000,
        };
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(v["state"], "RUNNING");
        assert_eq!(v["seq"], 3);
        let back: StatusUpdate = serde_json::from_value(v).unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn missing_reason_is_accepted_and_omitted() {
        let text = r#"{"task_id":"t","seq":1,"state":"STARTING","timestamp_ms":5}"#;
        let u: StatusUpdate = serde_json::from_str(text).unwrap();
        assert_eq!(u.reason, None);
        assert!(!serde_json::to_string(&u).unwrap().contains("reason"));
    }

    #[test]
    fn every_state_name_round_trips_through_json() {
        use ScheduleStatus::*;
        for s in [
            Pending, Assigned, Starting, Running, Finished, Failed, Killing, Killed, Lost,
            Restarting, Throttled, Draining, Preempting,
        ] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            assert_eq!(serde_json::from_str::<ScheduleStatus>(&json).unwrap(), s);
        }
    }

    #[test]
    fn admission_applies_next_acks_old_and_refuses_gaps() {
        assert_eq!(admit(None, 1), Admission::Apply);
        assert_eq!(admit(None, 2), Admission::Gap { expected_seq: 1 });
        assert_eq!(admit(Some(4), 5), Admission::Apply);
        assert_eq!(admit(Some(4), 4), Admission::Duplicate);
        assert_eq!(admit(Some(4), 1), Admission::Duplicate);
        assert_eq!(admit(Some(4), 7), Admission::Gap { expected_seq: 5 });
    }
}
