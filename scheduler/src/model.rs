//! The scheduler's model: jobs (validated from the Aurora job JSON), tasks and hosts.
//!
//! A job's config is parsed in two phases like every config in Hearth: the task part by
//! `hearth_checkpoints::config::parse` (the same code `hearth run` uses), the job-level fields
//! (`instances`, `service`, `max_task_failures`, `production`, `tier`, `priority`,
//! `constraints`) here, every problem reported at once with its field path.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::{ExecutorCondition, ScheduleStatus};
use crate::wire::{HostMode, JobKey, PortRange, ResourceVec, TaskEvent, Tier};

/// A job config that cannot be accepted: every problem, each `field: what`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job {key}: {}", problems.join("; "))]
pub struct JobConfigError {
    pub key: String,
    pub problems: Vec<String>,
}

/// One job-level constraint on a host attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Constraint {
    /// The attribute must be one of `values` (or none of them when `negated`).
    Value { negated: bool, values: Vec<String> },
    /// At most `n` tasks of the job per value of the attribute.
    Limit(u32),
}

impl Constraint {
    /// Parse Aurora's constraint text: `value[,value]`, `!value[,value]` or `limit:N`.
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let text = text.trim();
        if let Some(n) = text.strip_prefix("limit:") {
            return match n.trim().parse::<u32>() {
                Ok(n) if n > 0 => Ok(Constraint::Limit(n)),
                _ => Err(format!(
                    "{text:?}: limit must be a whole number of tasks, at least 1 (limit:1)"
                )),
            };
        }
        let (negated, rest) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let values: Vec<String> = rest
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Err(format!(
                "{text:?}: give a value, a list a,b, a negation !a or limit:N"
            ));
        }
        Ok(Constraint::Value { negated, values })
    }
}

/// The attribute name Aurora treats specially: hosts carrying it accept only matching jobs.
pub const DEDICATED: &str = "dedicated";
/// The attribute every host has implicitly: its name.
pub const HOST_ATTRIBUTE: &str = "host";

/// A validated job: the job-level fields and what placement needs from the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub key: JobKey,
    pub instances: u32,
    pub service: bool,
    pub max_task_failures: i32,
    pub production: bool,
    pub tier: Tier,
    pub priority: i32,
    /// As given (attribute -> constraint text).
    pub constraints: BTreeMap<String, String>,
    /// What one task asks of a host.
    pub resources: ResourceVec,
    /// Port names each task needs from the host's range.
    pub port_names: Vec<String>,
}

impl JobSpec {
    /// Parsed constraints (validated at create, so parsing cannot fail here).
    pub fn parsed_constraints(&self) -> Vec<(String, Constraint)> {
        self.constraints
            .iter()
            .filter_map(|(k, v)| Constraint::parse(v).ok().map(|c| (k.clone(), c)))
            .collect()
    }
}

/// Most instances one job may have.
pub const MAX_INSTANCES: u32 = 100_000;

/// Validate an Aurora job JSON for `key`: the task part with the executor's own parser, the
/// job-level fields here. Every problem is reported at once.
pub fn parse_job(key: &JobKey, config: &serde_json::Value) -> Result<JobSpec, JobConfigError> {
    let mut problems = Vec::new();
    let Some(obj) = config.as_object() else {
        return Err(JobConfigError {
            key: key.to_string(),
            problems: vec!["config: must be a JSON object (the Aurora job JSON)".to_owned()],
        });
    };
    if !obj.contains_key("task") {
        problems.push("task: missing; the config must be an Aurora job JSON with a task".into());
    }
    for (field, want) in [
        ("cluster", &key.cluster),
        ("role", &key.role),
        ("environment", &key.environment),
        ("name", &key.name),
    ] {
        match obj.get(field) {
            None => {}
            Some(serde_json::Value::String(s)) if s == want => {}
            Some(other) => problems.push(format!(
                "{field}: the config says {other} but the job key says {want:?}; make them agree"
            )),
        }
    }
    let mut task = None;
    match hearth_checkpoints::config::parse(&config.to_string()) {
        Ok(t) => task = Some(t),
        Err(errs) => problems.extend(errs.problems().iter().map(|p| p.to_string())),
    }
    let instances = match obj.get("instances") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=u64::from(MAX_INSTANCES)).contains(&n) => n as u32,
            _ => {
                problems.push(format!(
                    "instances: {v} must be a whole number from 1 to {MAX_INSTANCES}"
                ));
                1
            }
        },
    };
    let flag = |problems: &mut Vec<String>, field: &str, default: bool| match obj.get(field) {
        None | Some(serde_json::Value::Null) => default,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(v) => {
            problems.push(format!("{field}: {v} must be true or false"));
            default
        }
    };
    let service = flag(&mut problems, "service", false);
    let production = flag(&mut problems, "production", false);
    let int = |problems: &mut Vec<String>, field: &str, default: i32, min: i64| match obj.get(field)
    {
        None | Some(serde_json::Value::Null) => default,
        Some(v) => match v.as_i64() {
            Some(n) if n >= min && n <= i64::from(i32::MAX) => n as i32,
            _ => {
                problems.push(format!("{field}: {v} must be a whole number >= {min}"));
                default
            }
        },
    };
    let max_task_failures = int(&mut problems, "max_task_failures", 1, -1);
    let priority = int(&mut problems, "priority", 0, 0);
    let tier = match obj.get("tier") {
        None | Some(serde_json::Value::Null) => {
            if production {
                Tier::Preferred
            } else {
                Tier::Preemptible
            }
        }
        Some(serde_json::Value::String(s)) => match s.as_str() {
            "preferred" => Tier::Preferred,
            "preemptible" => Tier::Preemptible,
            "revocable" => Tier::Revocable,
            other => {
                problems.push(format!(
                    "tier: {other:?} must be preferred, preemptible or revocable"
                ));
                Tier::Preemptible
            }
        },
        Some(v) => {
            problems.push(format!("tier: {v} must be a string"));
            Tier::Preemptible
        }
    };
    let mut constraints = BTreeMap::new();
    match obj.get("constraints") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (attr, v) in map {
                let Some(text) = v.as_str() else {
                    problems.push(format!(
                        "constraints.{attr}: {v} must be a string (value, a,b, !a or limit:N)"
                    ));
                    continue;
                };
                match Constraint::parse(text) {
                    Err(e) => problems.push(format!("constraints.{attr}: {e}")),
                    Ok(Constraint::Value { negated, values }) if attr == DEDICATED => {
                        if negated || values.len() != 1 {
                            problems.push(format!(
                                "constraints.dedicated: {text:?} must be one value ROLE/NAME or */NAME"
                            ));
                        } else {
                            let role = values[0].split('/').next().unwrap_or_default();
                            if role != "*" && role != key.role {
                                problems.push(format!(
                                    "constraints.dedicated: {text:?} is dedicated to role {role:?}, \
                                     not to this job's role {:?}; use {}/... or */...",
                                    key.role, key.role
                                ));
                            }
                        }
                        constraints.insert(attr.clone(), text.to_owned());
                    }
                    Ok(Constraint::Limit(_)) if attr == DEDICATED => problems.push(
                        "constraints.dedicated: must be ROLE/NAME or */NAME, not a limit".into(),
                    ),
                    Ok(_) => {
                        constraints.insert(attr.clone(), text.to_owned());
                    }
                }
            }
        }
        Some(v) => problems.push(format!(
            "constraints: {v} must be an object (attribute: constraint)"
        )),
    }
    if !problems.is_empty() {
        return Err(JobConfigError {
            key: key.to_string(),
            problems,
        });
    }
    let (resources, port_names) = match &task {
        Some(t) => (
            ResourceVec {
                cpu: t.resources.cpu,
                ram: t.resources.ram,
                disk: t.resources.disk,
            },
            hearth_checkpoints::config::template::required_ports(t)
                .into_iter()
                .collect(),
        ),
        None => (ResourceVec::default(), Vec::new()),
    };
    Ok(JobSpec {
        key: key.clone(),
        instances,
        service,
        max_task_failures,
        production,
        tier,
        priority,
        constraints,
        resources,
        port_names,
    })
}

/// A job in the scheduler.
#[derive(Debug, Clone)]
pub struct Job {
    /// The key, shared by the job's tasks.
    pub key: Arc<JobKey>,
    pub spec: Arc<JobSpec>,
    /// The stored config this job's new tasks run.
    pub config_id: i64,
    pub config: Arc<serde_json::Value>,
    pub created_ms: i64,
    /// Instance -> its one active task.
    pub active: BTreeMap<u32, String>,
    /// Ended tasks, oldest first (for pruning and `job status`).
    pub terminal: Vec<String>,
}

/// One task: an attempt to run one instance of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: String,
    /// Shared with the job and its other tasks.
    pub job: Arc<JobKey>,
    pub config_id: i64,
    pub instance: u32,
    pub state: ScheduleStatus,
    pub host: Option<String>,
    pub ports: PortMap,
    pub ancestor: Option<String>,
    /// Failures of this instance counted so far (inherited from the ancestor).
    pub failure_count: u32,
    /// Consecutive flapping ancestors (decides the throttle delay).
    pub flap_streak: u32,
    pub throttled_until: Option<i64>,
    pub events: Vec<TaskEvent>,
    /// The last status-report seq applied for this task.
    pub last_seq: Option<u64>,
    /// The order epoch at which the task was assigned to its host.
    pub assigned_epoch: u64,
    // Not stored: rebuilt after a restart.
    /// Why a PENDING task is not placed yet.
    pub pending_reason: Option<String>,
    /// When to try placing it again, and the current backoff.
    pub placement_retry: Option<(i64, i64)>,
    /// A kill that the agent has not confirmed yet: (next send time, backoff, order epoch).
    pub kill: Option<KillOrder>,
    /// What the task's executor says is wrong right now (checkpoint writes failing), and since
    /// when: live news, not history, so not stored; the executor sends it again while it holds.
    pub condition: Option<ExecutorCondition>,
}

/// A task's ports by name: a short list (a map node per task would cost ten times the memory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMap(pub Vec<(String, u16)>);

impl PortMap {
    pub fn values(&self) -> impl Iterator<Item = &u16> {
        self.0.iter().map(|(_, p)| p)
    }

    pub fn get(&self, name: &str) -> Option<&u16> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_map(&self) -> BTreeMap<String, u16> {
        self.0.iter().cloned().collect()
    }
}

impl From<BTreeMap<String, u16>> for PortMap {
    fn from(m: BTreeMap<String, u16>) -> PortMap {
        let mut v: Vec<(String, u16)> = m.into_iter().collect();
        v.shrink_to_fit();
        PortMap(v)
    }
}

/// A kill order being (re)sent to an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillOrder {
    /// When to send it again.
    pub next_ms: i64,
    /// The next wait.
    pub backoff_ms: i64,
    /// The order epoch of the last send.
    pub epoch: u64,
}

impl Task {
    /// The time of the last event.
    pub fn last_event_ms(&self) -> i64 {
        self.events.last().map_or(0, |e| e.timestamp_ms)
    }

    /// The message of the last event.
    pub fn last_message(&self) -> Option<&str> {
        self.events.last().and_then(|e| e.message.as_deref())
    }

    /// Whether the task is in one of the states Aurora calls active (not terminal).
    pub fn is_active(&self) -> bool {
        !self.state.is_terminal()
    }
}

/// A host with an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub agent_id: String,
    pub mode: HostMode,
    pub attributes: BTreeMap<String, String>,
    pub resources: ResourceVec,
    pub ports: PortRange,
    /// Last sync (not stored; a restarted scheduler gives every host a fresh timeout).
    pub last_seen_ms: i64,
    pub alive: bool,
    // Derived from the tasks.
    /// Active tasks placed here.
    pub tasks: BTreeSet<String>,
    pub used: ResourceVec,
    pub ports_used: HashSet<u16>,
    /// Active tasks here per job.
    pub job_counts: HashMap<Arc<JobKey>, u32>,
}

impl Host {
    pub fn new(name: &str) -> Host {
        Host {
            name: name.to_owned(),
            agent_id: String::new(),
            mode: HostMode::None,
            attributes: BTreeMap::new(),
            resources: ResourceVec::default(),
            ports: PortRange { first: 0, last: 0 },
            last_seen_ms: 0,
            alive: false,
            tasks: BTreeSet::new(),
            used: ResourceVec::default(),
            ports_used: HashSet::new(),
            job_counts: HashMap::new(),
        }
    }

    /// The value of `attr` on this host (`host` is the host's name unless given).
    pub fn attribute(&self, attr: &str) -> Option<&str> {
        match self.attributes.get(attr) {
            Some(v) => Some(v.as_str()),
            None if attr == HOST_ATTRIBUTE => Some(self.name.as_str()),
            None => None,
        }
    }

    /// Count `task` as placed here.
    pub fn attach(&mut self, task: &Task, need: &ResourceVec) {
        if self.tasks.insert(task.id.clone()) {
            self.used.cpu += need.cpu;
            self.used.ram = self.used.ram.saturating_add(need.ram);
            self.used.disk = self.used.disk.saturating_add(need.disk);
            self.ports_used.extend(task.ports.values().copied());
            match self.job_counts.get_mut(&task.job) {
                Some(n) => *n += 1,
                None => {
                    self.job_counts.insert(task.job.clone(), 1);
                }
            }
        }
    }

    /// Stop counting `task` here.
    pub fn detach(&mut self, task: &Task, need: &ResourceVec) {
        if self.tasks.remove(&task.id) {
            self.used.cpu = (self.used.cpu - need.cpu).max(0.0);
            if self.tasks.is_empty() {
                self.used.cpu = 0.0;
            }
            self.used.ram = self.used.ram.saturating_sub(need.ram);
            self.used.disk = self.used.disk.saturating_sub(need.disk);
            for p in task.ports.values() {
                self.ports_used.remove(p);
            }
            if let Some(n) = self.job_counts.get_mut(&task.job) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.job_counts.remove(&task.job);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> JobKey {
        "west/www-data/prod/hello".parse().unwrap()
    }

    fn config() -> serde_json::Value {
        json!({
            "cluster": "west", "role": "www-data", "environment": "prod", "name": "hello",
            "instances": 3, "service": true,
            "constraints": {"rack": "limit:1", "zone": "!z1,z2"},
            "task": {
                "name": "hello",
                "processes": [{"name": "web", "cmdline": "serve {{thermos.ports[http]}}"}],
                "resources": {"cpu": 0.5, "ram": 1048576, "disk": 2097152}
            }
        })
    }

    #[test]
    fn job_level_fields_and_task_needs_are_read() {
        let spec = parse_job(&key(), &config()).unwrap();
        assert_eq!(spec.instances, 3);
        assert!(spec.service);
        assert_eq!(spec.max_task_failures, 1);
        assert_eq!(spec.tier, Tier::Preemptible);
        assert_eq!(spec.resources.ram, 1048576);
        assert_eq!(spec.port_names, vec!["http".to_owned()]);
        let cons = spec.parsed_constraints();
        assert!(cons.contains(&("rack".into(), Constraint::Limit(1))));
        assert!(cons.contains(&(
            "zone".into(),
            Constraint::Value {
                negated: true,
                values: vec!["z1".into(), "z2".into()]
            }
        )));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut c = config();
        c["instances"] = json!(0);
        c["tier"] = json!("gold");
        c["role"] = json!("other");
        c["constraints"] = json!({"rack": "limit:x", "dedicated": "ops/db"});
        let e = parse_job(&key(), &c).unwrap_err();
        let text = e.to_string();
        for want in [
            "instances",
            "tier",
            "role:",
            "constraints.rack",
            "constraints.dedicated",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        assert!(text.contains("west/www-data/prod/hello"), "{text}");
    }

    #[test]
    fn dedicated_accepts_own_role_and_wildcard() {
        let mut c = config();
        c["constraints"] = json!({"dedicated": "www-data/hello"});
        assert!(parse_job(&key(), &c).is_ok());
        c["constraints"] = json!({"dedicated": "*/hello"});
        assert!(parse_job(&key(), &c).is_ok());
    }

    #[test]
    fn production_means_preferred_tier() {
        let mut c = config();
        c["production"] = json!(true);
        assert_eq!(parse_job(&key(), &c).unwrap().tier, Tier::Preferred);
    }

    #[test]
    fn invalid_task_part_is_reported_by_the_executor_parser() {
        let mut c = config();
        c["task"]["processes"] = json!([{"name": "a/b", "cmdline": "x"}]);
        let e = parse_job(&key(), &c).unwrap_err();
        assert!(e.to_string().contains("task.processes[0].name"), "{e}");
    }
}
