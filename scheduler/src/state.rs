//! The scheduler's in-memory model and every change to it, with the time passed in.
//!
//! [`State`] holds jobs, tasks and hosts. Each operation (create a job, kill, an agent's sync,
//! a status report, the passing of time) changes the model through the pure
//! [`crate::lifecycle`] and [`crate::placement`] functions and marks what it changed in
//! [`Dirty`]; the core actor ([`crate::core`]) then commits those changes in one transaction
//! and only afterwards answers the callers and wakes the agents whose orders changed. Nothing
//! here does I/O, so the whole model is tested (and property-tested) without a database.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use tokio::sync::watch;

use crate::api::{
    Admission, ExecutorCondition, ScheduleStatus, StatusAck, StatusConflict, StatusUpdate, admit,
};
use crate::lifecycle::{self, Effect, IllegalTransition, JobPolicy, LifecycleConfig, Timer};
use crate::model::{Host, Job, JobSpec, KillOrder, Task, parse_job};
use crate::placement;
use crate::wire::{
    AgentOrders, AgentSync, Assignment, ChangeResponse, HeldTask, HostMode, HostStatus, JobDetail,
    JobKey, JobSummary, ReconcileStatus, ResourceVec, TaskEvent, TaskStatus,
};

/// An error answer of an operation: an HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl OpError {
    pub fn bad_request(message: impl Into<String>) -> OpError {
        OpError {
            status: 400,
            code: "bad_request",
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> OpError {
        OpError {
            status: 404,
            code: "not_found",
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> OpError {
        OpError {
            status: 409,
            code: "conflict",
            message: message.into(),
        }
    }
}

/// One audit record to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub timestamp_ms: i64,
    pub user: String,
    pub action: String,
    pub target: String,
    pub details: String,
}

/// What changed since the last commit.
#[derive(Debug, Default)]
pub struct Dirty {
    pub tasks: HashSet<String>,
    pub deleted_tasks: HashSet<String>,
    pub jobs: HashSet<JobKey>,
    pub deleted_jobs: HashSet<JobKey>,
    pub configs: Vec<(i64, JobKey, Arc<serde_json::Value>)>,
    pub hosts: HashSet<String>,
    pub meta: bool,
    pub audit: Vec<AuditRecord>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
            && self.deleted_tasks.is_empty()
            && self.jobs.is_empty()
            && self.deleted_jobs.is_empty()
            && self.configs.is_empty()
            && self.hosts.is_empty()
            && !self.meta
            && self.audit.is_empty()
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Transitions taken, by target state.
    pub transitions: BTreeMap<&'static str, u64>,
    pub placements: u64,
    pub placement_failures: u64,
    pub illegal_transitions: u64,
}

/// The answer to a status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusReply {
    Ack(StatusAck),
    Conflict(StatusConflict),
}

/// The answer to an agent's sync: orders now, or a channel that changes when there are some.
#[derive(Debug)]
pub enum SyncReply {
    Orders(AgentOrders),
    Wait(watch::Receiver<u64>),
}

/// Tasks kept per job after they end (at least [`PRUNE_MIN_AGE_MS`]).
pub const PRUNE_KEEP: usize = 100;
/// How long an ended task is kept at least.
pub const PRUNE_MIN_AGE_MS: i64 = 3_600_000;

/// Persistent scheduler-wide values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    pub epoch: u64,
    pub hold: bool,
    pub next_config_id: i64,
}

/// The model.
#[derive(Debug)]
pub struct State {
    pub cfg: LifecycleConfig,
    pub agent_timeout_ms: i64,
    /// The cluster this scheduler serves (jobs of other clusters are refused), when set.
    pub cluster: Option<String>,
    pub jobs: BTreeMap<JobKey, Job>,
    pub tasks: HashMap<String, Task>,
    pub hosts: BTreeMap<String, Host>,
    /// The order counter: every order to an agent gets a new epoch.
    pub epoch: u64,
    /// Kills of tasks agents report and the scheduler does not know are held (after a restore).
    pub hold: bool,
    /// Unknown tasks seen while held: task -> host.
    pub held: BTreeMap<String, String>,
    /// Kills of tasks agents have that the scheduler does not want, per host.
    pub strays: HashMap<String, BTreeMap<String, KillOrder>>,
    pending: BTreeSet<String>,
    /// A task became PENDING since the last placement pass.
    new_pending: bool,
    /// The earliest retry time of the pending tasks left unplaced by the last pass.
    next_retry_ms: i64,
    timed: BTreeSet<String>,
    next_config_id: i64,
    id_state: u64,
    pub dirty: Dirty,
    /// Hosts whose orders changed since the last commit.
    pub woken: BTreeSet<String>,
    watches: HashMap<String, watch::Sender<u64>>,
    pub stats: Stats,
    /// A host appeared, came back or was activated: pending tasks are tried again at once
    /// instead of waiting out their backoff.
    capacity_changed: bool,
}

fn policy(spec: &JobSpec) -> JobPolicy {
    JobPolicy {
        service: spec.service,
        max_task_failures: spec.max_task_failures,
    }
}

impl State {
    pub fn new(cfg: LifecycleConfig, agent_timeout_ms: i64, cluster: Option<String>) -> State {
        State {
            cfg,
            agent_timeout_ms,
            cluster,
            jobs: BTreeMap::new(),
            tasks: HashMap::new(),
            hosts: BTreeMap::new(),
            epoch: 0,
            hold: false,
            held: BTreeMap::new(),
            strays: HashMap::new(),
            pending: BTreeSet::new(),
            new_pending: false,
            next_retry_ms: i64::MAX,
            timed: BTreeSet::new(),
            next_config_id: 1,
            id_state: RandomState::new().hash_one(0x6865_6172_7468u64) | 1,
            dirty: Dirty::default(),
            woken: BTreeSet::new(),
            watches: HashMap::new(),
            stats: Stats::default(),
            capacity_changed: false,
        }
    }

    // ---- loading -------------------------------------------------------------------------

    pub fn meta(&self) -> Meta {
        Meta {
            epoch: self.epoch,
            hold: self.hold,
            next_config_id: self.next_config_id,
        }
    }

    /// Rebuild the model from what storage holds; `now` starts every host's timeout afresh.
    pub fn load(
        &mut self,
        meta: Meta,
        configs: Vec<(i64, JobKey, serde_json::Value)>,
        jobs: Vec<(JobSpec, i64, i64)>,
        tasks: Vec<Task>,
        hosts: Vec<Host>,
        now: i64,
    ) {
        self.load_base(meta, configs, jobs, hosts, now);
        self.tasks.reserve(tasks.len());
        let mut ended = Vec::new();
        for t in tasks {
            self.load_task(t, now, &mut ended);
        }
        self.load_done(ended);
    }

    /// Loading, first step: everything but the tasks.
    pub fn load_base(
        &mut self,
        meta: Meta,
        configs: Vec<(i64, JobKey, serde_json::Value)>,
        jobs: Vec<(JobSpec, i64, i64)>,
        hosts: Vec<Host>,
        now: i64,
    ) {
        self.epoch = meta.epoch;
        self.hold = meta.hold;
        self.next_config_id = meta.next_config_id.max(1);
        let configs: HashMap<i64, Arc<serde_json::Value>> = configs
            .into_iter()
            .map(|(id, _, v)| (id, Arc::new(v)))
            .collect();
        for (spec, config_id, created_ms) in jobs {
            let config = configs
                .get(&config_id)
                .cloned()
                .unwrap_or_else(|| Arc::new(serde_json::Value::Null));
            self.jobs.insert(
                spec.key.clone(),
                Job {
                    key: Arc::new(spec.key.clone()),
                    spec: Arc::new(spec),
                    config_id,
                    config,
                    created_ms,
                    active: BTreeMap::new(),
                    terminal: Vec::new(),
                },
            );
        }
        for mut h in hosts {
            // A restarted scheduler gives every host a full agent timeout to sync.
            h.last_seen_ms = now;
            h.alive = true;
            self.hosts.insert(h.name.clone(), h);
        }
    }

    /// Loading, second step: one task (`ended` collects the ended ones for [`State::load_done`]).
    pub fn load_task(
        &mut self,
        mut t: Task,
        now: i64,
        ended: &mut Vec<(i64, String, Arc<JobKey>)>,
    ) {
        let id = t.id.clone();
        if let Some(job) = self.jobs.get_mut(t.job.as_ref()) {
            if t.is_active() {
                job.active.insert(t.instance, id.clone());
                if let Some(h) = t.host.as_ref().and_then(|h| self.hosts.get_mut(h)) {
                    h.attach(&t, &job.spec.resources);
                }
            } else {
                ended.push((t.last_event_ms(), id.clone(), t.job.clone()));
            }
        }
        // Kills not confirmed before the restart are sent again at once.
        if matches!(
            t.state,
            ScheduleStatus::Killing
                | ScheduleStatus::Restarting
                | ScheduleStatus::Draining
                | ScheduleStatus::Preempting
        ) {
            t.kill = Some(KillOrder {
                next_ms: now,
                backoff_ms: 0,
                epoch: 0,
            });
        }
        let indexed = t.state == ScheduleStatus::Pending
            || t.state == ScheduleStatus::Throttled
            || lifecycle::is_transient(t.state)
            || t.kill.is_some();
        self.tasks.insert(id.clone(), t);
        if indexed {
            self.reindex(&id);
        }
    }

    /// Loading, last step: the ended tasks in the order they ended.
    pub fn load_done(&mut self, mut ended: Vec<(i64, String, Arc<JobKey>)>) {
        ended.sort();
        for (_, id, job) in ended {
            if let Some(j) = self.jobs.get_mut(job.as_ref()) {
                j.terminal.push(id);
            }
        }
        self.dirty = Dirty::default();
    }

    // ---- helpers ---------------------------------------------------------------------------

    fn bump_epoch(&mut self, now: i64) -> u64 {
        self.epoch = (self.epoch + 1).max(now.max(0) as u64);
        self.dirty.meta = true;
        self.epoch
    }

    fn wake(&mut self, host: &str) {
        self.woken.insert(host.to_owned());
    }

    /// Tell the waiting long-polls of the woken hosts (after the commit).
    pub fn notify_woken(&mut self) {
        for h in std::mem::take(&mut self.woken) {
            if let Some(tx) = self.watches.get(&h) {
                tx.send_modify(|v| *v += 1);
            }
        }
    }

    /// Keep the placement and timer indexes in step with the task's state.
    fn reindex(&mut self, id: &str) {
        let Some(t) = self.tasks.get(id) else {
            self.pending.remove(id);
            self.timed.remove(id);
            return;
        };
        if t.state == ScheduleStatus::Pending {
            if self.pending.insert(id.to_owned()) {
                self.new_pending = true;
            }
        } else {
            self.pending.remove(id);
        }
        if t.state == ScheduleStatus::Throttled
            || lifecycle::is_transient(t.state)
            || t.kill.is_some()
        {
            self.timed.insert(id.to_owned());
        } else {
            self.timed.remove(id);
        }
    }

    fn new_task_id(&mut self, key: &JobKey, instance: u32, now: i64) -> String {
        let mut base = format!("{}-{}-{}", key.role, key.environment, key.name);
        base.truncate(200);
        loop {
            // xorshift64: cheap, and ids only need to be unique (checked below).
            let mut x = self.id_state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.id_state = x;
            let id = format!("{base}-{instance}-{now}-{:04x}", x & 0xffff);
            if !self.tasks.contains_key(&id) {
                return id;
            }
        }
    }

    /// Record a change made outside the model (a backup) in the audit trail.
    pub fn record_audit(
        &mut self,
        now: i64,
        user: &str,
        action: &str,
        target: &str,
        details: String,
    ) {
        self.audit(now, user, action, target, details);
    }

    fn audit(&mut self, now: i64, user: &str, action: &str, target: &str, details: String) {
        self.dirty.audit.push(AuditRecord {
            timestamp_ms: now,
            user: user.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            details,
        });
    }

    /// Create a task of `key`'s `instance` in PENDING (or THROTTLED until `throttle_until`).
    fn spawn_task(
        &mut self,
        key: &JobKey,
        instance: u32,
        ancestor: Option<&Task>,
        throttle_until: Option<i64>,
        flap_streak: u32,
        now: i64,
    ) -> Option<String> {
        let (config_id, shared_key) = self.jobs.get(key).map(|j| (j.config_id, j.key.clone()))?;
        let id = self.new_task_id(key, instance, now);
        let state = lifecycle::new_task_state(throttle_until, now);
        let message = match (ancestor, state) {
            (Some(a), ScheduleStatus::Throttled) => Some(format!(
                "Rescheduled, penalized for {} ms for flapping (replaces {})",
                throttle_until.unwrap_or(now) - now,
                a.id
            )),
            (Some(a), _) => Some(format!("Rescheduled (replaces {})", a.id)),
            (None, _) => Some("Created".to_owned()),
        };
        let task = Task {
            id: id.clone(),
            job: shared_key,
            config_id,
            instance,
            state,
            host: None,
            ports: Default::default(),
            ancestor: ancestor.map(|a| a.id.clone()),
            failure_count: ancestor.map_or(0, |a| a.failure_count),
            flap_streak,
            throttled_until: (state == ScheduleStatus::Throttled)
                .then_some(throttle_until)
                .flatten(),
            events: vec![TaskEvent {
                timestamp_ms: now,
                state,
                message,
            }],
            last_seq: None,
            assigned_epoch: 0,
            pending_reason: None,
            placement_retry: None,
            condition: None,
            kill: None,
        };
        self.tasks.insert(id.clone(), task);
        if let Some(job) = self.jobs.get_mut(key) {
            job.active.insert(instance, id.clone());
        }
        self.dirty.tasks.insert(id.clone());
        *self.stats.transitions.entry(state.name()).or_default() += 1;
        self.reindex(&id);
        Some(id)
    }

    fn send_kill(&mut self, id: &str, now: i64) {
        let epoch = self.bump_epoch(now);
        let cfg = self.cfg;
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        lifecycle::kill_sent(t, now, epoch, &cfg);
        if let Some(h) = t.host.clone() {
            self.wake(&h);
        }
        self.reindex(id);
    }

    fn remove_task(&mut self, id: &str) {
        if let Some(t) = self.tasks.remove(id) {
            if let Some(job) = self.jobs.get_mut(t.job.as_ref()) {
                if job.active.get(&t.instance) == Some(&t.id) {
                    job.active.remove(&t.instance);
                }
                job.terminal.retain(|x| x != id);
                if let Some(h) = t.host.as_ref().and_then(|h| self.hosts.get_mut(h)) {
                    h.detach(&t, &job.spec.resources);
                }
            }
            self.dirty.tasks.remove(id);
            self.dirty.deleted_tasks.insert(id.to_owned());
        }
        self.reindex(id);
    }

    /// Move task `id` to `to` and carry out the side effects.
    pub fn transition(
        &mut self,
        id: &str,
        to: ScheduleStatus,
        message: Option<String>,
        now: i64,
    ) -> Result<(), IllegalTransition> {
        let Some(task) = self.tasks.get_mut(id) else {
            return Ok(());
        };
        let Some(job) = self.jobs.get(task.job.as_ref()) else {
            return Ok(());
        };
        let spec = job.spec.clone();
        let result = lifecycle::transition(task, to, message, now, policy(&spec), &self.cfg);
        let effects = match result {
            Ok(e) => e,
            Err(e) => {
                self.stats.illegal_transitions += 1;
                return Err(e);
            }
        };
        if effects.is_empty() {
            return Ok(());
        }
        if effects.contains(&Effect::Save) {
            *self.stats.transitions.entry(to.name()).or_default() += 1;
        }
        let ended = to.is_terminal() && effects.contains(&Effect::Save);
        if ended {
            let snapshot = task.clone();
            if let Some(h) = snapshot.host.as_ref().and_then(|h| self.hosts.get_mut(h)) {
                h.detach(&snapshot, &spec.resources);
            }
            if let Some(job) = self.jobs.get_mut(snapshot.job.as_ref()) {
                if job.active.get(&snapshot.instance) == Some(&snapshot.id) {
                    job.active.remove(&snapshot.instance);
                }
                job.terminal.push(snapshot.id.clone());
            }
            if let Some(h) = &snapshot.host {
                self.check_drained(h);
            }
        }
        for effect in effects {
            match effect {
                Effect::Save => {
                    self.dirty.tasks.insert(id.to_owned());
                }
                Effect::Kill => self.send_kill(id, now),
                Effect::Delete => self.remove_task(id),
                Effect::Reschedule {
                    throttle_until,
                    flap_streak,
                    ..
                } => {
                    let Some(ended) = self.tasks.get(id).cloned() else {
                        continue;
                    };
                    let wanted = self.jobs.get(ended.job.as_ref()).is_some_and(|j| {
                        ended.instance < j.spec.instances && !j.active.contains_key(&ended.instance)
                    });
                    if wanted {
                        self.spawn_task(
                            ended.job.as_ref(),
                            ended.instance,
                            Some(&ended),
                            throttle_until,
                            flap_streak,
                            now,
                        );
                    }
                }
            }
        }
        self.reindex(id);
        Ok(())
    }

    // ---- jobs --------------------------------------------------------------------------------

    /// `POST /api/v1/jobs`.
    pub fn create_job(
        &mut self,
        key: JobKey,
        config: serde_json::Value,
        user: &str,
        now: i64,
    ) -> Result<JobSummary, OpError> {
        if let Some(c) = &self.cluster
            && &key.cluster != c
        {
            return Err(OpError::bad_request(format!(
                "job {key}: this scheduler serves cluster {c:?}, not {:?}; use {c}/{}/{}/{}",
                key.cluster, key.role, key.environment, key.name
            )));
        }
        let spec = parse_job(&key, &config).map_err(|e| OpError::bad_request(e.to_string()))?;
        if let Some(job) = self.jobs.get(&key)
            && !job.active.is_empty()
        {
            return Err(OpError::conflict(format!(
                "job {key} exists with {} active task(s); kill it first (hearth job kill {key}) \
                 or pick another name",
                job.active.len()
            )));
        }
        let config_id = self.next_config_id;
        self.next_config_id += 1;
        self.dirty.meta = true;
        let config = Arc::new(config);
        self.dirty
            .configs
            .push((config_id, key.clone(), config.clone()));
        let terminal = self
            .jobs
            .remove(&key)
            .map(|j| j.terminal)
            .unwrap_or_default();
        let instances = spec.instances;
        self.jobs.insert(
            key.clone(),
            Job {
                key: Arc::new(key.clone()),
                spec: Arc::new(spec),
                config_id,
                config,
                created_ms: now,
                active: BTreeMap::new(),
                terminal,
            },
        );
        self.dirty.jobs.insert(key.clone());
        for i in 0..instances {
            self.spawn_task(&key, i, None, None, 0, now);
        }
        self.audit(
            now,
            user,
            "createJob",
            &key.to_string(),
            format!("{instances} instance(s), config {config_id}"),
        );
        self.job_summary(&key)
            .ok_or_else(|| OpError::not_found(format!("job {key} vanished")))
    }

    fn job_or_404(&self, key: &JobKey) -> Result<&Job, OpError> {
        self.jobs.get(key).ok_or_else(|| {
            OpError::not_found(format!(
                "job {key} not found; hearth job list shows the jobs there are"
            ))
        })
    }

    fn select(&self, key: &JobKey, instances: Option<&[u32]>) -> Result<Vec<String>, OpError> {
        let job = self.job_or_404(key)?;
        Ok(match instances {
            None => job.active.values().cloned().collect(),
            Some(list) => {
                let missing: Vec<String> = list
                    .iter()
                    .filter(|i| !job.active.contains_key(i))
                    .map(|i| i.to_string())
                    .collect();
                if !missing.is_empty() {
                    return Err(OpError::bad_request(format!(
                        "job {key}: instance(s) {} have no active task; hearth job status {key} \
                         shows the active ones",
                        missing.join(",")
                    )));
                }
                list.iter()
                    .filter_map(|i| job.active.get(i).cloned())
                    .collect()
            }
        })
    }

    /// `POST .../kill`: every selected active task to KILLING (a task that never ran is deleted).
    pub fn kill_job(
        &mut self,
        key: &JobKey,
        instances: Option<&[u32]>,
        user: &str,
        now: i64,
    ) -> Result<ChangeResponse, OpError> {
        let ids = self.select(key, instances)?;
        for id in &ids {
            if let Err(e) = self.transition(
                id,
                ScheduleStatus::Killing,
                Some(format!("Killed by {user}")),
                now,
            ) {
                tracing::debug!("kill: {e}");
            }
        }
        self.audit(
            now,
            user,
            "killTasks",
            &key.to_string(),
            instances_text(instances),
        );
        Ok(ChangeResponse {
            job: key.clone(),
            message: format!("{} task(s) of {key} are being killed", ids.len()),
            tasks: ids,
        })
    }

    /// `POST .../restart`: every selected live task to RESTARTING (killed, then replaced).
    pub fn restart_job(
        &mut self,
        key: &JobKey,
        instances: Option<&[u32]>,
        user: &str,
        now: i64,
    ) -> Result<ChangeResponse, OpError> {
        let ids = self.select(key, instances)?;
        let mut touched = Vec::new();
        for id in ids {
            let live = self
                .tasks
                .get(&id)
                .is_some_and(|t| lifecycle::is_live(t.state));
            if live
                && self
                    .transition(
                        &id,
                        ScheduleStatus::Restarting,
                        Some(format!("Restarted by {user}")),
                        now,
                    )
                    .is_ok()
            {
                touched.push(id);
            }
        }
        self.audit(
            now,
            user,
            "restartShards",
            &key.to_string(),
            instances_text(instances),
        );
        Ok(ChangeResponse {
            job: key.clone(),
            message: format!("{} task(s) of {key} are restarting", touched.len()),
            tasks: touched,
        })
    }

    // ---- hosts -------------------------------------------------------------------------------

    /// `POST /api/v1/hosts/{host}/drain`: move its tasks off (DRAINING) and place nothing there.
    pub fn drain_host(&mut self, host: &str, user: &str, now: i64) -> HostStatus {
        let h = self
            .hosts
            .entry(host.to_owned())
            .or_insert_with(|| Host::new(host));
        h.mode = HostMode::Draining;
        let ids: Vec<String> = h.tasks.iter().cloned().collect();
        self.dirty.hosts.insert(host.to_owned());
        for id in ids {
            let live = self
                .tasks
                .get(&id)
                .is_some_and(|t| lifecycle::is_live(t.state));
            if live {
                let _ = self.transition(
                    &id,
                    ScheduleStatus::Draining,
                    Some(format!("Host {host} is being drained")),
                    now,
                );
            }
        }
        self.check_drained(host);
        self.audit(now, user, "drainHosts", host, String::new());
        self.host_status(host, now).unwrap_or_else(|| {
            // The host was just inserted, so this is not reached; answer something sane anyway.
            empty_host_status(host)
        })
    }

    /// `POST /api/v1/hosts/{host}/activate`: back in service.
    pub fn activate_host(
        &mut self,
        host: &str,
        user: &str,
        now: i64,
    ) -> Result<HostStatus, OpError> {
        let Some(h) = self.hosts.get_mut(host) else {
            return Err(OpError::not_found(format!(
                "host {host} not known; hearth host status lists the hosts"
            )));
        };
        h.mode = HostMode::None;
        self.capacity_changed = true;
        self.dirty.hosts.insert(host.to_owned());
        self.audit(now, user, "endMaintenance", host, String::new());
        Ok(self
            .host_status(host, now)
            .unwrap_or_else(|| empty_host_status(host)))
    }

    fn check_drained(&mut self, host: &str) {
        if let Some(h) = self.hosts.get_mut(host)
            && h.mode == HostMode::Draining
            && h.tasks.is_empty()
        {
            h.mode = HostMode::Drained;
            self.dirty.hosts.insert(host.to_owned());
        }
    }

    // ---- agents ----------------------------------------------------------------------------

    /// An agent's sync: heartbeat, registration, reconciliation, orders.
    pub fn agent_sync(&mut self, sync: &AgentSync, now: i64) -> SyncReply {
        let name = sync.host.clone();
        let acked = self.acked_here(sync.acked_epoch);
        let h = self
            .hosts
            .entry(name.clone())
            .or_insert_with(|| Host::new(&name));
        let came_up = !h.alive;
        if h.agent_id != sync.agent_id
            || h.resources != sync.resources
            || h.ports != sync.ports
            || h.attributes != sync.attributes
        {
            self.capacity_changed = true;
            h.agent_id = sync.agent_id.clone();
            h.resources = sync.resources;
            h.ports = sync.ports;
            h.attributes = sync.attributes.clone();
            self.dirty.hosts.insert(name.clone());
            let details = format!(
                "agent {}: cpu {}, ram {} B, disk {} B, ports {}-{}, attributes {:?}",
                sync.agent_id,
                sync.resources.cpu,
                sync.resources.ram,
                sync.resources.disk,
                sync.ports.first,
                sync.ports.last,
                sync.attributes
            );
            self.dirty.audit.push(AuditRecord {
                timestamp_ms: now,
                user: format!("agent:{name}"),
                action: "registerAgent".to_owned(),
                target: name.clone(),
                details,
            });
        }
        h.last_seen_ms = now;
        h.alive = true;
        if came_up {
            self.capacity_changed = true;
        }

        let reported: HashMap<&str, &crate::wire::AgentTask> =
            sync.tasks.iter().map(|t| (t.task_id.as_str(), t)).collect();
        // Tasks the agent has: known and wanted, known and dead, or unknown.
        let mut unwanted: Vec<(String, bool)> = Vec::new();
        let mut ended: Vec<(String, ScheduleStatus)> = Vec::new();
        for t in &sync.tasks {
            let alive_there = t.running || t.terminal.is_none();
            match self.tasks.get(&t.task_id) {
                Some(k) if k.is_active() && k.host.as_deref() == Some(name.as_str()) => {
                    if let (false, Some(s)) = (t.running, t.terminal) {
                        ended.push((t.task_id.clone(), s));
                    }
                }
                Some(_) => {
                    if alive_there {
                        unwanted.push((t.task_id.clone(), true));
                    }
                }
                None => {
                    if alive_there {
                        unwanted.push((t.task_id.clone(), false));
                    }
                }
            }
        }
        for (id, s) in ended {
            let msg = Some(format!("Ended on agent {name} (reported by the agent)"));
            if let Err(e) = self.transition(&id, s, msg, now) {
                tracing::warn!("agent {name}: {e}");
            }
        }
        // Assigned here, acknowledged by the agent, yet not reported: lost.
        let missing: Vec<String> = self
            .hosts
            .get(&name)
            .map(|h| {
                h.tasks
                    .iter()
                    .filter(|id| !reported.contains_key(id.as_str()))
                    .filter(|id| {
                        self.tasks
                            .get(*id)
                            .is_some_and(|t| t.is_active() && t.assigned_epoch <= acked)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for id in missing {
            let msg = Some(format!("Task lost: agent {name} does not have it"));
            if let Err(e) = self.transition(&id, ScheduleStatus::Lost, msg, now) {
                tracing::warn!("agent {name}: {e}");
            }
        }
        // Strays: kill them (with backoff), or hold them after a restore.
        self.held
            .retain(|id, h| *h != name || reported.contains_key(id.as_str()));
        let mut strays = self.strays.remove(&name).unwrap_or_default();
        strays.retain(|id, _| reported.contains_key(id.as_str()));
        for (id, known) in unwanted {
            if !known && self.hold {
                self.held.insert(id, name.clone());
                continue;
            }
            let due = strays.get(&id).is_none_or(|k| k.next_ms <= now);
            if due {
                let epoch = self.bump_epoch(now);
                let backoff = lifecycle::next_backoff(
                    strays.get(&id).map_or(0, |k| k.backoff_ms),
                    self.cfg.kill_retry_initial_ms,
                    self.cfg.kill_retry_max_ms,
                );
                strays.insert(
                    id,
                    KillOrder {
                        next_ms: now + backoff,
                        backoff_ms: backoff,
                        epoch,
                    },
                );
            }
        }
        if !strays.is_empty() {
            self.strays.insert(name.clone(), strays);
        }
        self.check_drained(&name);
        let orders = self.orders(&name, acked);
        if orders.launch.is_empty() && orders.kill.is_empty() {
            let tx = self
                .watches
                .entry(name)
                .or_insert_with(|| watch::channel(0).0);
            SyncReply::Wait(tx.subscribe())
        } else {
            SyncReply::Orders(orders)
        }
    }

    /// The acknowledged epoch as this scheduler can trust it. An epoch above any this scheduler
    /// issued comes from another life of it (before a restore from an older backup): it says
    /// nothing about this life's orders, so it counts as none acknowledged, and the counter
    /// jumps past it so that new orders are newer.
    fn acked_here(&mut self, acked: u64) -> u64 {
        if acked > self.epoch {
            self.epoch = acked;
            self.dirty.meta = true;
            0
        } else {
            acked
        }
    }

    /// The orders for `host` the agent has not acknowledged (`epoch > acked`); also a heartbeat.
    pub fn agent_poll(&mut self, host: &str, acked: u64, now: i64) -> AgentOrders {
        let acked = self.acked_here(acked);
        if let Some(h) = self.hosts.get_mut(host) {
            h.last_seen_ms = now;
            h.alive = true;
        }
        self.orders(host, acked)
    }

    fn orders(&self, host: &str, acked: u64) -> AgentOrders {
        let mut launch = Vec::new();
        let mut kill = Vec::new();
        if let Some(h) = self.hosts.get(host) {
            for id in &h.tasks {
                let Some(t) = self.tasks.get(id) else {
                    continue;
                };
                if t.state == ScheduleStatus::Assigned && t.assigned_epoch > acked {
                    let config = self
                        .jobs
                        .get(t.job.as_ref())
                        .map(|j| (*j.config).clone())
                        .unwrap_or_default();
                    launch.push(Assignment {
                        task_id: t.id.clone(),
                        job: (*t.job).clone(),
                        instance: t.instance,
                        config,
                        ports: t.ports.to_map(),
                    });
                }
                if let Some(k) = t.kill
                    && k.epoch > acked
                {
                    kill.push(t.id.clone());
                }
            }
        }
        if let Some(s) = self.strays.get(host) {
            kill.extend(
                s.iter()
                    .filter(|(_, k)| k.epoch > acked)
                    .map(|(id, _)| id.clone()),
            );
        }
        AgentOrders {
            epoch: self.epoch,
            launch,
            kill,
            agent_timeout_ms: self.agent_timeout_ms.max(0) as u64,
        }
    }

    // ---- status reports --------------------------------------------------------------------

    /// `POST /api/v1/status` under the exactly-once contract of [`crate::api`].
    pub fn status_update(&mut self, u: &StatusUpdate, now: i64) -> StatusReply {
        let ack = |duplicate| {
            StatusReply::Ack(StatusAck {
                task_id: u.task_id.clone(),
                seq: u.seq,
                duplicate,
            })
        };
        let Some(t) = self.tasks.get_mut(&u.task_id) else {
            // Unknown (never ours, or pruned): acknowledged; the agent's sync reports it as a
            // stray, which gets it killed (or held after a restore).
            return ack(false);
        };
        match admit(t.last_seq, u.seq) {
            Admission::Duplicate => return ack(true),
            Admission::Gap { expected_seq } => {
                return StatusReply::Conflict(StatusConflict {
                    task_id: u.task_id.clone(),
                    expected_seq,
                });
            }
            Admission::Apply => {}
        }
        t.last_seq = Some(u.seq);
        self.dirty.tasks.insert(u.task_id.clone());
        let state = t.state;
        let host = t.host.clone();
        if state.is_terminal() {
            // Dead to the scheduler but still reporting: make sure it is killed.
            if !u.state.is_terminal()
                && let Some(h) = host
            {
                let epoch = self.bump_epoch(now);
                self.strays.entry(h.clone()).or_default().insert(
                    u.task_id.clone(),
                    KillOrder {
                        next_ms: now + self.cfg.kill_retry_initial_ms,
                        backoff_ms: self.cfg.kill_retry_initial_ms,
                        epoch,
                    },
                );
                self.wake(&h);
            }
            return ack(false);
        }
        if u.state == ScheduleStatus::Killing {
            // The executor says it is stopping: the scheduler's own KILLING is a decision, not
            // a report, so this changes nothing (its end decides what follows).
            return ack(false);
        }
        let message = u.reason.clone();
        match self.transition(&u.task_id, u.state, message, now) {
            Ok(()) => {}
            Err(e) => {
                tracing::warn!("status report refused: {e}");
                // Running although a kill is wanted: send the kill again.
                let wants_kill = self.tasks.get(&u.task_id).is_some_and(|t| t.kill.is_some());
                if wants_kill && !u.state.is_terminal() {
                    self.send_kill(&u.task_id, now);
                }
            }
        }
        ack(false)
    }

    // ---- reconcile hold --------------------------------------------------------------------

    pub fn reconcile_status(&self) -> ReconcileStatus {
        ReconcileStatus {
            hold: self.hold,
            held: self
                .held
                .iter()
                .map(|(t, h)| HeldTask {
                    task_id: t.clone(),
                    agent: h.clone(),
                })
                .collect(),
        }
    }

    /// Start holding kills of unknown tasks (after a restore).
    pub fn set_hold(&mut self) {
        self.hold = true;
        self.dirty.meta = true;
    }

    /// `POST /api/v1/reconcile {"confirm": true}`: end the hold; the held tasks are killed.
    pub fn reconcile_confirm(&mut self, user: &str, now: i64) -> ReconcileStatus {
        let was = self.hold;
        self.hold = false;
        self.dirty.meta = true;
        let held = std::mem::take(&mut self.held);
        let n = held.len();
        for (task, host) in held {
            let epoch = self.bump_epoch(now);
            self.strays.entry(host.clone()).or_default().insert(
                task,
                KillOrder {
                    next_ms: now + self.cfg.kill_retry_initial_ms,
                    backoff_ms: self.cfg.kill_retry_initial_ms,
                    epoch,
                },
            );
            self.wake(&host);
        }
        self.audit(
            now,
            user,
            "triggerExplicitTaskReconciliation",
            "reconcile",
            format!("hold was {was}; {n} held task(s) ordered killed"),
        );
        self.reconcile_status()
    }

    // ---- time --------------------------------------------------------------------------------

    /// Everything time does at `now`: agents timing out, throttles ending, transient states
    /// timing out, kills resent, pending tasks placed, ended tasks pruned.
    pub fn tick(&mut self, now: i64) {
        let timeout = self.agent_timeout_ms;
        let lost_hosts: Vec<String> = self
            .hosts
            .values()
            .filter(|h| h.alive && now - h.last_seen_ms > timeout)
            .map(|h| h.name.clone())
            .collect();
        for name in lost_hosts {
            tracing::warn!("agent {name} silent for more than {timeout} ms: its tasks are LOST");
            let ids: Vec<String> = match self.hosts.get_mut(&name) {
                Some(h) => {
                    h.alive = false;
                    h.tasks.iter().cloned().collect()
                }
                None => Vec::new(),
            };
            for id in ids {
                let msg = Some(format!(
                    "Agent {name} lost: no sync for more than {} s",
                    timeout / 1000
                ));
                if let Err(e) = self.transition(&id, ScheduleStatus::Lost, msg, now) {
                    tracing::warn!("{e}");
                }
            }
            self.check_drained(&name);
        }
        let timed: Vec<String> = self.timed.iter().cloned().collect();
        for id in timed {
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            match lifecycle::due_timer(t, now, &self.cfg) {
                None => {}
                Some(Timer::Unthrottle) => {
                    let _ = self.transition(&id, ScheduleStatus::Pending, None, now);
                }
                Some(Timer::TimedOut) => {
                    let msg = Some(lifecycle::TIMED_OUT.to_owned());
                    if let Err(e) = self.transition(&id, ScheduleStatus::Lost, msg, now) {
                        tracing::warn!("{e}");
                    }
                }
                Some(Timer::ResendKill) => self.send_kill(&id, now),
            }
        }
        self.place_pending(now);
        self.prune(now);
    }

    /// Place every PENDING task whose retry time has come.
    pub fn place_pending(&mut self, now: i64) {
        if self.pending.is_empty() {
            self.capacity_changed = false;
            return;
        }
        // Nothing new, nothing due: no pass (keeps batches cheap with many unplaceable tasks).
        if !self.new_pending && !self.capacity_changed && now < self.next_retry_ms {
            return;
        }
        self.new_pending = false;
        self.next_retry_ms = i64::MAX;
        let ids: Vec<String> = self.pending.iter().cloned().collect();
        let retry_all = std::mem::take(&mut self.capacity_changed);
        // Within one pass, a job whose task did not fit makes its other tasks wait too.
        let mut failed: HashMap<JobKey, String> = HashMap::new();
        let cfg = self.cfg;
        for id in ids {
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            if !retry_all
                && let Some((at, _)) = t.placement_retry
                && at > now
            {
                self.next_retry_ms = self.next_retry_ms.min(at);
                continue;
            }
            let key = (*t.job).clone();
            let Some(spec) = self.jobs.get(&key).map(|j| j.spec.clone()) else {
                continue;
            };
            let result = match failed.get(&key) {
                Some(reason) => Err(reason.clone()),
                None => placement::place(&spec, self.hosts.values()),
            };
            match result {
                Err(reason) => {
                    self.stats.placement_failures += 1;
                    failed.insert(key, reason.clone());
                    if let Some(t) = self.tasks.get_mut(&id) {
                        lifecycle::placement_failed(t, reason, now, &cfg);
                        if let Some((at, _)) = t.placement_retry {
                            self.next_retry_ms = self.next_retry_ms.min(at);
                        }
                    }
                }
                Ok(p) => {
                    let epoch = self.bump_epoch(now);
                    let Some(t) = self.tasks.get_mut(&id) else {
                        continue;
                    };
                    t.host = Some(p.host.clone());
                    t.ports = p.ports.into();
                    t.assigned_epoch = epoch;
                    let msg = Some(format!("Assigned to {}", p.host));
                    if self
                        .transition(&id, ScheduleStatus::Assigned, msg, now)
                        .is_ok()
                        && let Some(t) = self.tasks.get(&id)
                        && let Some(h) = self.hosts.get_mut(&p.host)
                    {
                        h.attach(t, &spec.resources);
                        self.stats.placements += 1;
                        self.wake(&p.host);
                    }
                }
            }
        }
    }

    /// Forget ended tasks beyond the newest [`PRUNE_KEEP`] of each job that ended more than
    /// [`PRUNE_MIN_AGE_MS`] ago; forget jobs with no task left.
    pub fn prune(&mut self, now: i64) {
        let mut drop_tasks = Vec::new();
        let mut drop_jobs = Vec::new();
        for (key, job) in &mut self.jobs {
            if job.terminal.len() > PRUNE_KEEP {
                let excess = job.terminal.len() - PRUNE_KEEP;
                let mut n = 0;
                while n < excess {
                    let old = self
                        .tasks
                        .get(&job.terminal[n])
                        .is_none_or(|t| now - t.last_event_ms() >= PRUNE_MIN_AGE_MS);
                    if !old {
                        break;
                    }
                    n += 1;
                }
                drop_tasks.extend(job.terminal.drain(..n));
            }
            if job.active.is_empty()
                && job.terminal.is_empty()
                && now - job.created_ms >= PRUNE_MIN_AGE_MS
            {
                drop_jobs.push(key.clone());
            }
        }
        for id in drop_tasks {
            self.tasks.remove(&id);
            self.dirty.tasks.remove(&id);
            self.dirty.deleted_tasks.insert(id.clone());
            self.reindex(&id);
        }
        for key in drop_jobs {
            self.jobs.remove(&key);
            self.dirty.jobs.remove(&key);
            self.dirty.deleted_jobs.insert(key);
        }
    }

    // ---- reads -------------------------------------------------------------------------------

    pub fn task_status(&self, t: &Task) -> TaskStatus {
        let reason = match (&t.pending_reason, t.state) {
            (Some(r), ScheduleStatus::Pending) => Some(r.clone()),
            _ => t.last_message().map(str::to_owned),
        };
        TaskStatus {
            job: (*t.job).clone(),
            instance: t.instance,
            task_id: t.id.clone(),
            state: t.state,
            agent: t.host.clone(),
            reason,
            throttled_until: t.throttled_until,
            ancestor_id: t.ancestor.clone(),
            failure_count: t.failure_count,
            ports: t.ports.to_map(),
            events: t.events.clone(),
            executor_condition: t
                .condition
                .as_ref()
                .filter(|_| !t.state.is_terminal())
                .and_then(|c| c.condition.clone()),
        }
    }

    /// An executor's condition report: kept on the task (in memory) until it is cleared or the
    /// task ends. Unknown tasks are ignored.
    pub fn executor_condition(&mut self, c: ExecutorCondition) {
        if let Some(t) = self.tasks.get_mut(&c.task_id) {
            if c.condition.is_some() && !t.state.is_terminal() {
                tracing::warn!(task_id = %c.task_id, condition = c.condition.as_deref().unwrap_or(""),
                    "executor reports a condition");
                t.condition = Some(c);
            } else {
                t.condition = None;
            }
        }
    }

    pub fn job_summary(&self, key: &JobKey) -> Option<JobSummary> {
        let job = self.jobs.get(key)?;
        let mut task_counts = BTreeMap::new();
        for id in job.active.values() {
            if let Some(t) = self.tasks.get(id) {
                *task_counts.entry(t.state.name().to_owned()).or_insert(0) += 1;
            }
        }
        Some(JobSummary {
            key: key.clone(),
            instances: job.spec.instances,
            service: job.spec.service,
            tier: job.spec.tier,
            priority: job.spec.priority,
            task_counts,
            created_ms: job.created_ms,
        })
    }

    pub fn list_jobs(&self, role: Option<&str>) -> Vec<JobSummary> {
        self.jobs
            .keys()
            .filter(|k| role.is_none_or(|r| k.role == r))
            .filter_map(|k| self.job_summary(k))
            .collect()
    }

    pub fn job_detail(&self, key: &JobKey) -> Result<JobDetail, OpError> {
        let job = self.job_or_404(key)?;
        let summary = self
            .job_summary(key)
            .ok_or_else(|| OpError::not_found(format!("job {key} not found")))?;
        Ok(JobDetail {
            summary,
            max_task_failures: job.spec.max_task_failures,
            constraints: job.spec.constraints.clone(),
            config: (*job.config).clone(),
        })
    }

    /// Active tasks by instance, then the ended ones, newest first.
    pub fn job_tasks(&self, key: &JobKey) -> Result<Vec<TaskStatus>, OpError> {
        let job = self.job_or_404(key)?;
        let mut out: Vec<TaskStatus> = job
            .active
            .values()
            .filter_map(|id| self.tasks.get(id))
            .map(|t| self.task_status(t))
            .collect();
        out.extend(
            job.terminal
                .iter()
                .rev()
                .filter_map(|id| self.tasks.get(id))
                .map(|t| self.task_status(t)),
        );
        Ok(out)
    }

    pub fn host_status(&self, host: &str, now: i64) -> Option<HostStatus> {
        let h = self.hosts.get(host)?;
        Some(HostStatus {
            host: h.name.clone(),
            mode: h.mode,
            alive: h.alive && now - h.last_seen_ms <= self.agent_timeout_ms,
            last_seen_ms: (h.last_seen_ms > 0).then_some(h.last_seen_ms),
            attributes: h.attributes.clone(),
            resources: h.resources,
            used: h.used,
            ports: (h.ports.first > 0).then_some(h.ports),
            tasks: h.tasks.len() as u32,
        })
    }

    pub fn list_hosts(&self, now: i64) -> Vec<HostStatus> {
        self.hosts
            .keys()
            .filter_map(|h| self.host_status(h, now))
            .collect()
    }

    /// Agent syncs held waiting for orders (all hosts, or one).
    pub fn long_polls(&self, host: Option<&str>) -> usize {
        match host {
            Some(h) => self.watches.get(h).map_or(0, |tx| tx.receiver_count()),
            None => self.watches.values().map(|tx| tx.receiver_count()).sum(),
        }
    }

    /// Active tasks by state, for `/metrics`.
    pub fn task_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        for s in lifecycle::ALL_STATES {
            out.insert(s.name(), 0);
        }
        for t in self.tasks.values() {
            *out.entry(t.state.name()).or_insert(0) += 1;
        }
        out
    }

    /// Check the model's invariants (tests and debug builds): one active task per instance,
    /// the indexes agree with the tasks.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut per_instance: HashMap<(&JobKey, u32), u32> = HashMap::new();
        for t in self.tasks.values() {
            if t.is_active() {
                *per_instance
                    .entry((t.job.as_ref(), t.instance))
                    .or_default() += 1;
                let job = self
                    .jobs
                    .get(t.job.as_ref())
                    .ok_or_else(|| format!("task {} of unknown job {}", t.id, t.job))?;
                if job.active.get(&t.instance) != Some(&t.id) {
                    return Err(format!("task {} not the active one of its instance", t.id));
                }
                if let Some(h) = &t.host
                    && !self.hosts.get(h).is_some_and(|h| h.tasks.contains(&t.id))
                {
                    return Err(format!("task {} not counted on host {h}", t.id));
                }
            }
        }
        if let Some(((k, i), n)) = per_instance.iter().find(|(_, n)| **n > 1) {
            return Err(format!("{n} active tasks for {k} instance {i}"));
        }
        // Hosts count exactly their active tasks, and what those hold.
        for h in self.hosts.values() {
            let mut ram = 0u64;
            let mut ports = 0usize;
            for id in &h.tasks {
                let t = self
                    .tasks
                    .get(id)
                    .ok_or_else(|| format!("host {} counts unknown task {id}", h.name))?;
                if !t.is_active() || t.host.as_deref() != Some(h.name.as_str()) {
                    return Err(format!(
                        "host {} counts task {id} ({})",
                        h.name,
                        t.state.name()
                    ));
                }
                ram += self
                    .jobs
                    .get(t.job.as_ref())
                    .map_or(0, |j| j.spec.resources.ram);
                ports += t.ports.0.len();
            }
            if ram != h.used.ram || ports != h.ports_used.len() {
                return Err(format!(
                    "host {}: used ram {} / ports {} but its tasks hold {ram} / {ports}",
                    h.name,
                    h.used.ram,
                    h.ports_used.len()
                ));
            }
        }
        Ok(())
    }
}

fn instances_text(instances: Option<&[u32]>) -> String {
    match instances {
        None => "all instances".to_owned(),
        Some(l) => format!(
            "instances {}",
            l.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        ),
    }
}

fn empty_host_status(host: &str) -> HostStatus {
    HostStatus {
        host: host.to_owned(),
        mode: HostMode::None,
        alive: false,
        last_seen_ms: None,
        attributes: BTreeMap::new(),
        resources: ResourceVec::default(),
        used: ResourceVec::default(),
        ports: None,
        tasks: 0,
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
