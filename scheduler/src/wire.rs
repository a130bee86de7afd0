//! The scheduler's HTTP JSON API: the typed requests and responses of every endpoint except the
//! executors' status reports (those are in [`crate::api`]).
//!
//! Three kinds of client talk to the scheduler:
//! * **people and tools** (`hearth job|host|scheduler ...`): jobs, tasks, hosts, backups, audit;
//!   HTTP Basic auth when the scheduler runs with `--security-ini`;
//! * **agents** (`hearth agent`, one per host): one endpoint, [`AGENT_SYNC_PATH`], long-polled;
//!   `Authorization: Bearer <agent token>` when the scheduler has agent tokens;
//! * **executors** (`hearth run --scheduler`): [`crate::api::STATUS_PATH`], with the agent's token.
//!
//! # Endpoints
//!
//! | method and path | request | response | permission |
//! |---|---|---|---|
//! | `GET /health` | | `OK` (text) | open |
//! | `GET /leaderhealth` | | `OK` (text; 503 when not leading) | open |
//! | `GET /metrics` | | Prometheus text | open |
//! | `GET /openapi.json` | | the OpenAPI document of this table | open |
//! | `POST /api/v1/jobs` | [`CreateJobRequest`] | [`JobSummary`] (201) | `createJob:<role>:<env>:<name>` |
//! | `GET /api/v1/jobs[?role=R]` | | `Vec<`[`JobSummary`]`>` | read |
//! | `GET /api/v1/jobs/{cluster}/{role}/{env}/{name}` | | [`JobDetail`] | read |
//! | `GET /api/v1/jobs/{cluster}/{role}/{env}/{name}/tasks` | | `Vec<`[`TaskStatus`]`>` | read |
//! | `POST /api/v1/jobs/{cluster}/{role}/{env}/{name}/kill` | [`InstancesRequest`] | [`ChangeResponse`] | `killTasks:...` |
//! | `POST /api/v1/jobs/{cluster}/{role}/{env}/{name}/restart` | [`InstancesRequest`] | [`ChangeResponse`] | `restartShards:...` |
//! | `GET /api/v1/hosts` | | `Vec<`[`HostStatus`]`>` | read |
//! | `POST /api/v1/hosts/{host}/drain` | | [`HostStatus`] | `thrift.AuroraAdmin:drainHosts` |
//! | `POST /api/v1/hosts/{host}/activate` | | [`HostStatus`] | `thrift.AuroraAdmin:endMaintenance` |
//! | `POST /api/v1/backups` | | [`BackupInfo`] | `thrift.AuroraAdmin:performBackup` |
//! | `GET /api/v1/backups` | | `Vec<`[`BackupInfo`]`>` | `thrift.AuroraAdmin:listBackups` |
//! | `GET /api/v1/reconcile` | | [`ReconcileStatus`] | read |
//! | `POST /api/v1/reconcile` | [`ReconcileRequest`] | [`ReconcileStatus`] | `thrift.AuroraAdmin:triggerExplicitTaskReconciliation` |
//! | `GET /api/v1/audit[?limit=N]` | | `Vec<`[`AuditEntry`]`>` | read |
//! | `POST /api/v1/agents/sync` | [`AgentSync`] | [`AgentOrders`] | agent token |
//! | `POST /api/v1/status` | [`crate::api::StatusUpdate`] | [`crate::api::StatusAck`] | agent token |
//! | `POST /api/v1/status/condition` | [`crate::api::ExecutorCondition`] | `204` | agent token |
//!
//! Reads are open unless the scheduler runs with `--auth-reads`. Errors are [`ApiError`] bodies:
//! 400 bad request (a field and the reason), 401 (with `WWW-Authenticate: Basic realm="hearth"`),
//! 403 (naming the missing permission), 404 (unknown job, host or backup), 409 (the job exists),
//! 503 (storage failed; nothing was acknowledged).
//!
//! Times are milliseconds since the Unix epoch (`*_ms`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api::ScheduleStatus;

/// Path of the agents' long-poll endpoint.
pub const AGENT_SYNC_PATH: &str = "/api/v1/agents/sync";

/// The default scheduler URL of clients (`HEARTH_SCHEDULER` overrides it).
pub const DEFAULT_SCHEDULER_URL: &str = "http://127.0.0.1:8081";

/// A job's key: `cluster/role/environment/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobKey {
    pub cluster: String,
    pub role: String,
    pub environment: String,
    pub name: String,
}

/// Why a job key is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobKeyError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for JobKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job key {:?}: {}", self.key, self.reason)
    }
}

impl std::error::Error for JobKeyError {}

/// Aurora's rule for environments: `prod`, `devel`, `test` or `staging<N>`.
pub fn is_valid_environment(env: &str) -> bool {
    matches!(env, "prod" | "devel" | "test")
        || env
            .strip_prefix("staging")
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
}

/// Aurora's rule for cluster, role and job names: `[A-Za-z0-9_.-]+`, at most 255 bytes, not
/// starting with a dot.
pub fn is_valid_key_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 255
        && !part.starts_with('.')
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl JobKey {
    pub fn new(
        cluster: &str,
        role: &str,
        environment: &str,
        name: &str,
    ) -> Result<JobKey, JobKeyError> {
        let key = JobKey {
            cluster: cluster.to_owned(),
            role: role.to_owned(),
            environment: environment.to_owned(),
            name: name.to_owned(),
        };
        let err = |reason: String| JobKeyError {
            key: key.to_string(),
            reason,
        };
        for (what, part) in [("cluster", cluster), ("role", role), ("name", name)] {
            if !is_valid_key_part(part) {
                return Err(err(format!(
                    "{what} {part:?} must be letters, digits, '_', '-' or '.' (not first), 1 to 255 of them"
                )));
            }
        }
        if !is_valid_environment(environment) {
            return Err(err(format!(
                "environment {environment:?} must be prod, devel, test or staging<N>"
            )));
        }
        Ok(key)
    }

    /// The path under `/api/v1/jobs/` that names this job.
    pub fn path(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.cluster, self.role, self.environment, self.name
        )
    }
}

impl fmt::Display for JobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.cluster, self.role, self.environment, self.name
        )
    }
}

impl FromStr for JobKey {
    type Err = JobKeyError;
    fn from_str(s: &str) -> Result<JobKey, JobKeyError> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [c, r, e, n] => JobKey::new(c, r, e, n),
            _ => Err(JobKeyError {
                key: s.to_owned(),
                reason: "must be cluster/role/environment/name".to_owned(),
            }),
        }
    }
}

impl TryFrom<String> for JobKey {
    type Error = JobKeyError;
    fn try_from(s: String) -> Result<JobKey, JobKeyError> {
        s.parse()
    }
}

impl From<JobKey> for String {
    fn from(k: JobKey) -> String {
        k.to_string()
    }
}

/// In the OpenAPI document a job key is its `cluster/role/environment/name` string.
#[cfg(feature = "server")]
impl utoipa::PartialSchema for JobKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("cluster/role/environment/name"))
            .examples(["west/www-data/prod/hello"])
            .into()
    }
}

#[cfg(feature = "server")]
impl utoipa::ToSchema for JobKey {}

/// Every error body.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable code: `bad_request`, `unauthenticated`, `forbidden`, `not_found`, `conflict`,
    /// `storage`, `internal`.
    pub error: String,
    /// What went wrong and what to do, for people (names the job key, the field, the permission).
    pub message: String,
}

/// `POST /api/v1/jobs`: create a job from an Aurora job JSON.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateJobRequest {
    /// The key the client asked for; must equal the config's cluster/role/environment/name.
    pub key: JobKey,
    /// The Aurora job JSON (what `hearth run` takes), with the job-level fields the scheduler
    /// reads: `instances` (default 1), `service`, `max_task_failures`, `production`, `tier`,
    /// `priority`, `constraints` (a map attribute → `value[,value]` | `!value` | `limit:N`).
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub config: serde_json::Value,
}

/// Aurora's tiers.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Not preemptible (`production = True` maps here).
    Preferred,
    /// The default.
    Preemptible,
    Revocable,
}

/// A job in lists.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub key: JobKey,
    pub instances: u32,
    pub service: bool,
    pub tier: Tier,
    pub priority: i32,
    /// Active tasks by state name (`RUNNING`: 3, `PENDING`: 1).
    pub task_counts: BTreeMap<String, u32>,
    pub created_ms: i64,
}

/// `GET` of one job: its summary and the config it runs.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    pub max_task_failures: i32,
    /// Job-level constraints as given.
    pub constraints: BTreeMap<String, String>,
    /// The Aurora job JSON the job was created with.
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub config: serde_json::Value,
}

/// One event in a task's history.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub timestamp_ms: i64,
    pub state: ScheduleStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A task as `job status` shows it.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub job: JobKey,
    pub instance: u32,
    pub task_id: String,
    pub state: ScheduleStatus,
    /// The host the task is (or was) on.
    pub agent: Option<String>,
    /// Why it is in this state: the last event's message, or why a PENDING task cannot be
    /// placed (`Insufficient resources: ram`, `Constraint not satisfied: rack`).
    pub reason: Option<String>,
    /// When a THROTTLED task becomes PENDING.
    pub throttled_until: Option<i64>,
    /// The task this one replaced.
    pub ancestor_id: Option<String>,
    /// Failures of this instance counted so far.
    pub failure_count: u32,
    /// Ports given to the task, by name.
    pub ports: BTreeMap<String, u16>,
    pub events: Vec<TaskEvent>,
    /// What the task's executor reports is wrong right now (checkpoint writes failing, since
    /// when), if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_condition: Option<String>,
}

/// Instances a kill or restart applies to; `None` (or absent) means every instance.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstancesRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<u32>>,
}

/// What a change did.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeResponse {
    pub job: JobKey,
    /// The tasks the change touched (killed, restarted).
    pub tasks: Vec<String>,
    pub message: String,
}

/// A host's maintenance mode (Aurora's `MaintenanceMode`).
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HostMode {
    None,
    Scheduled,
    Draining,
    Drained,
}

/// CPU cores, bytes of RAM and of disk.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceVec {
    pub cpu: f64,
    pub ram: u64,
    pub disk: u64,
}

/// An inclusive range of TCP ports.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// A host as `host status` shows it.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    pub mode: HostMode,
    /// Whether the agent synced within the agent timeout.
    pub alive: bool,
    pub last_seen_ms: Option<i64>,
    pub attributes: BTreeMap<String, String>,
    pub resources: ResourceVec,
    /// What active tasks on it hold.
    pub used: ResourceVec,
    pub ports: Option<PortRange>,
    /// Active tasks on it.
    pub tasks: u32,
}

/// One backup file.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// File name inside the backup directory (what `hearth scheduler restore` takes).
    pub name: String,
    pub created_ms: i64,
    pub bytes: u64,
}

/// Whether kills of tasks the scheduler does not know are held (after a restore).
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileStatus {
    pub hold: bool,
    /// Tasks agents report that the scheduler does not know, kept alive while `hold`.
    pub held: Vec<HeldTask>,
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTask {
    pub task_id: String,
    pub agent: String,
}

/// `POST /api/v1/reconcile`: `confirm: true` ends the hold; the held tasks are then killed.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileRequest {
    pub confirm: bool,
}

/// One change, who made it and when.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub timestamp_ms: i64,
    /// The authenticated user (`anonymous` without security, `agent:<host>` for agents).
    pub user: String,
    /// `createJob`, `killTasks`, `restartShards`, `drainHosts`, ...
    pub action: String,
    /// The job key, host or backup the change concerns.
    pub target: String,
    pub details: String,
}

/// An agent's request: who it is, what it has, and how long it will wait for orders.
///
/// Contract:
/// * The agent syncs in a loop. The scheduler answers as soon as it has orders the agent has not
///   acknowledged, or after `wait_ms` (at most 30 s) with none; each sync is the agent's
///   heartbeat, and an agent silent for longer than the agent timeout is lost (its tasks LOST).
/// * `tasks` is every task the agent has whose executor is running or whose end the agent has
///   not yet seen reported (its root's active tasks). The scheduler reconciles: a reported task
///   it considers dead or does not know is ordered killed (unless a restore hold is on); a task
///   it assigned to this agent with `epoch <= acked_epoch` that the agent does not report is LOST.
/// * `acked_epoch` is the highest [`AgentOrders::epoch`] whose orders the agent has carried out
///   (launched or killed). Launches are idempotent by task id.
/// * Epochs only grow, across scheduler restarts too (they are at least the scheduler's clock
///   in milliseconds). An `acked_epoch` above any epoch the scheduler has issued (the agent
///   acknowledged orders of a scheduler since restored from an older backup) counts as 0: the
///   scheduler sends its outstanding orders again and marks nothing LOST for that sync.
/// * Orders are repeated until acknowledged; a kill the agent acknowledged is sent again with a
///   backoff (15 s doubling to 5 min) while the task has not ended.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSync {
    /// The host name (`--name`, default the host's name).
    pub host: String,
    /// Distinguishes one run of the agent from the next (a restart re-registers).
    pub agent_id: String,
    pub resources: ResourceVec,
    pub ports: PortRange,
    pub attributes: BTreeMap<String, String>,
    pub tasks: Vec<AgentTask>,
    pub acked_epoch: u64,
    /// How long the scheduler may hold the request when it has no orders.
    pub wait_ms: u64,
}

/// A task an agent has.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentTask {
    pub task_id: String,
    /// Whether its executor (`hearth run`) is alive.
    pub running: bool,
    /// The terminal status its checkpoint records, once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal: Option<ScheduleStatus>,
}

/// The scheduler's answer to a sync.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentOrders {
    /// The scheduler's order counter when this answer was made; the agent acknowledges it in its
    /// next sync once it has carried the orders out.
    pub epoch: u64,
    /// Tasks to run; the agent starts those it does not have.
    pub launch: Vec<Assignment>,
    /// Tasks to kill (`hearth kill`); the agent kills those it has.
    pub kill: Vec<String>,
    /// The agent timeout: the agent should sync well within it.
    pub agent_timeout_ms: u64,
}

/// One task to launch on an agent.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub task_id: String,
    pub job: JobKey,
    pub instance: u32,
    /// The Aurora job JSON to hand to `hearth run`.
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub config: serde_json::Value,
    /// Ports from the agent's range, by the names the task uses (`--port NAME=PORT`).
    pub ports: BTreeMap<String, u16>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn job_key_parses_and_prints_aurora_keys() {
        let k: JobKey = "west/www-data/prod/hello".parse().unwrap();
        assert_eq!(k.role, "www-data");
        assert_eq!(k.to_string(), "west/www-data/prod/hello");
        assert!("west/www-data/staging12/hello".parse::<JobKey>().is_ok());
    }

    #[test]
    fn job_key_refuses_bad_parts_naming_them() {
        let e = "west/www/production/hello".parse::<JobKey>().unwrap_err();
        assert!(e.to_string().contains("environment"), "{e}");
        let e = "west/www/prod".parse::<JobKey>().unwrap_err();
        assert!(
            e.to_string().contains("cluster/role/environment/name"),
            "{e}"
        );
        let e = "west/w w/prod/x".parse::<JobKey>().unwrap_err();
        assert!(e.to_string().contains("role"), "{e}");
    }

    #[test]
    fn job_key_round_trips_as_a_json_string() {
        let k: JobKey = "c/r/devel/n".parse().unwrap();
        let v = serde_json::to_value(&k).unwrap();
        assert_eq!(v, serde_json::json!("c/r/devel/n"));
        assert!(serde_json::from_value::<JobKey>(serde_json::json!("c/r/x/n")).is_err());
    }
}
