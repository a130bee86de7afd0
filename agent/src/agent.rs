//! The agent: [`Agent`] joins the pure [`Book`] to a [`Host`] (observe, decide, act), and
//! [`run`] is the loop around it — sync with the scheduler, carry orders out, react to children
//! ending, retry with backoff.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hearth_scheduler::wire::{AgentOrders, AgentSync, AgentTask};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::book::{Action, Book, Observation, Policy};
use crate::host::{AgentDir, ChildExit, ChildKind, Host, Launcher, RealHost};
use crate::sync::{SyncClient, SyncError};
use crate::{AgentConfig, AgentError};

/// How long the scheduler may hold a sync before the agent knows its agent timeout.
pub const FIRST_WAIT: Duration = Duration::from_secs(20);
/// The longest long poll the contract allows.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// How much longer than the long poll the agent waits for an answer.
pub const ANSWER_GRACE: Duration = Duration::from_secs(10);
/// Sync retries after an error: 100 ms doubling up to this.
pub const MAX_SYNC_BACKOFF: Duration = Duration::from_secs(5);
/// How often tasks are probed for changes no child exit announces (an adopted executor's end).
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The pure book and the host it acts on.
#[derive(Debug)]
pub struct Agent<H: Host> {
    book: Book,
    host: H,
    acked_epoch: u64,
}

fn observe<H: Host>(host: &H, task_id: &str) -> Observation {
    Observation {
        disk: host.probe(task_id),
        children: host.children(task_id),
    }
}

impl<H: Host> Agent<H> {
    /// An agent that re-adopts every task its records name.
    pub fn new(host: H, policy: Policy) -> Agent<H> {
        let mut book = Book::new(policy);
        for a in host.records() {
            tracing::info!(task_id = %a.task_id, "re-adopting a task from the agent's records");
            book.adopt(a);
        }
        Agent {
            book,
            host,
            acked_epoch: 0,
        }
    }

    pub fn host(&self) -> &H {
        &self.host
    }

    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    pub fn book(&self) -> &Book {
        &self.book
    }

    /// The highest epoch whose orders were carried out.
    pub fn acked_epoch(&self) -> u64 {
        self.acked_epoch
    }

    /// Note strays, decide, act.
    pub fn step(&mut self, now: Instant) {
        for task_id in self.host.active_tasks() {
            if self.book.discover(&task_id) {
                tracing::debug!(%task_id, "an active task the agent has no record of; reporting it");
            }
        }
        let host = &self.host;
        let actions = self.book.step(now, |id| observe(host, id));
        for action in actions {
            self.act(action);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Run { assignment, why } => {
                if let Err(e) = self.host.start_run(&assignment, why) {
                    tracing::error!(task_id = %assignment.task_id, error = %error_chain(&e),
                        "cannot start hearth run; retrying later");
                }
            }
            Action::Kill { task_id } => {
                if let Err(e) = self.host.start_kill(&task_id) {
                    tracing::error!(%task_id, error = %error_chain(&e),
                        "cannot start hearth kill; retrying later");
                }
            }
            Action::Forget { task_id } => {
                tracing::info!(%task_id, "the scheduler has the task's end; forgetting it");
                self.host.forget(&task_id);
            }
        }
    }

    /// Carry out the scheduler's orders: record and launch new assignments, kill on order.
    pub fn apply_orders(&mut self, orders: &AgentOrders, now: Instant) {
        for task_id in self.host.active_tasks() {
            self.book.discover(&task_id);
        }
        for a in &orders.launch {
            if self.book.is_assigned(&a.task_id) {
                continue;
            }
            match self.host.persist(a) {
                Ok(()) => {
                    tracing::info!(task_id = %a.task_id, job = %a.job, instance = a.instance,
                        "assigned");
                    self.book.adopt(a.clone());
                }
                Err(e) => tracing::error!(task_id = %a.task_id, error = %error_chain(&e),
                    "cannot record the assignment; not launching it"),
            }
        }
        for task_id in &orders.kill {
            if !self.book.order_kill(task_id) {
                // Not the agent's and not active in its root: nothing of it runs here.
                tracing::debug!(%task_id, "kill order for a task this agent does not have");
            }
        }
        self.step(now);
        self.acked_epoch = self.acked_epoch.max(orders.epoch);
    }

    /// The tasks to report now.
    pub fn report(&self) -> Vec<AgentTask> {
        let host = &self.host;
        self.book.report(|id| observe(host, id))
    }

    /// A sync carrying `sent` was answered.
    pub fn delivered(&mut self, sent: &[AgentTask]) {
        self.book.delivered(sent);
    }

    /// When a waiting retry becomes due.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.book.next_due(now)
    }
}

/// `hearth agent`: sync with the scheduler until `shutdown` completes. Tasks keep running when
/// the agent stops or dies; the next agent on the same root re-adopts them.
///
/// Errors only when it cannot start (a bad scheduler URL or token, an unwritable root); once
/// running, scheduler errors are retried for ever.
pub async fn run(cfg: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let client = SyncClient::new(&cfg.scheduler, cfg.token.as_deref())?;
    let dir = AgentDir::new(&cfg.root);
    dir.create()?;
    let token_file = dir.write_token(cfg.token.as_deref())?;
    let (exits_tx, mut exits) = mpsc::unbounded_channel::<ChildExit>();
    let launcher = Launcher {
        root: cfg.root.clone(),
        dir,
        hearth_bin: cfg.hearth_bin.clone(),
        scheduler: cfg.scheduler.clone(),
        hostname: cfg.name.clone(),
        extra_run_args: cfg.extra_run_args.clone(),
        token_file,
    };
    let mut agent = Agent::new(RealHost::new(launcher, exits_tx), Policy::default());
    let agent_id = fresh_agent_id();
    tracing::info!(host = %cfg.name, %agent_id, scheduler = %cfg.scheduler,
        tasks = agent.book().len(), "agent starting");

    type Answer = (Vec<AgentTask>, Result<AgentOrders, SyncError>);
    let mut inflight: Option<Pin<Box<dyn Future<Output = Answer> + Send>>> = None;
    // What the sync in flight reports: when the tasks change (one ends, one appears), that
    // long poll is dropped and a new sync tells the scheduler at once. Orders it would have
    // carried are sent again, since they are not acknowledged.
    let mut inflight_tasks: Vec<AgentTask> = Vec::new();
    let mut retry_at: Option<Instant> = None;
    let mut failures = 0u32;
    let mut wait = FIRST_WAIT;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    agent.step(Instant::now());
    loop {
        let now = Instant::now();
        if inflight.is_none() && retry_at.is_none_or(|t| now >= t) {
            retry_at = None;
            let tasks = agent.report();
            inflight_tasks.clone_from(&tasks);
            let req = AgentSync {
                host: cfg.name.clone(),
                agent_id: agent_id.clone(),
                resources: cfg.resources,
                ports: cfg.ports,
                attributes: cfg.attributes.clone(),
                tasks: tasks.clone(),
                acked_epoch: agent.acked_epoch(),
                wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            };
            let client = client.clone();
            let timeout = wait + ANSWER_GRACE;
            inflight = Some(Box::pin(async move {
                let answer = client.sync(&req, timeout).await;
                (tasks, answer)
            }));
        }
        let due = agent.next_due(now);
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("agent stopping; its tasks keep running");
                return Ok(());
            }
            Some(exit) = exits.recv() => {
                agent.host_mut().reaped(exit.pid);
                log_exit(&exit);
                agent.step(Instant::now());
                resync_if_changed(&agent, &mut inflight, &inflight_tasks);
            }
            _ = tick.tick() => {
                agent.step(Instant::now());
                resync_if_changed(&agent, &mut inflight, &inflight_tasks);
            }
            () = sleep_until_some(due) => {
                agent.step(Instant::now());
                resync_if_changed(&agent, &mut inflight, &inflight_tasks);
            }
            () = sleep_until_some(retry_at), if inflight.is_none() => {}
            (sent, answer) = poll_some(&mut inflight) => {
                inflight = None;
                match answer {
                    Ok(orders) => {
                        if failures > 0 {
                            tracing::info!("the scheduler is reachable again");
                        }
                        failures = 0;
                        agent.delivered(&sent);
                        wait = Duration::from_millis(orders.agent_timeout_ms / 3)
                            .clamp(Duration::from_millis(100), MAX_WAIT);
                        agent.apply_orders(&orders, Instant::now());
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let delay = sync_backoff(failures);
                        // The first failure, then about once a minute.
                        if failures == 1 || failures.is_multiple_of(12) {
                            tracing::warn!(error = %e, retry_in = ?delay, "sync with the scheduler failed; tasks keep running");
                        } else {
                            tracing::debug!(error = %e, failures, "sync failed again");
                        }
                        retry_at = Some(Instant::now() + delay);
                    }
                }
            }
        }
    }
}

/// Drop the long poll in flight when the tasks it reports are no longer what the agent has.
fn resync_if_changed<H: Host, T>(
    agent: &Agent<H>,
    inflight: &mut Option<Pin<Box<dyn Future<Output = T> + Send>>>,
    sent: &[AgentTask],
) {
    if inflight.is_some() && agent.report() != sent {
        tracing::debug!("tasks changed; syncing again at once");
        *inflight = None;
    }
}

/// 100 ms after the first failure, doubling, at most [`MAX_SYNC_BACKOFF`].
pub fn sync_backoff(failures: u32) -> Duration {
    crate::book::Delays {
        initial: Duration::from_millis(100),
        max: MAX_SYNC_BACKOFF,
    }
    .after(failures)
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn poll_some<T>(f: &mut Option<Pin<Box<dyn Future<Output = T> + Send>>>) -> T {
    match f.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn log_exit(exit: &ChildExit) {
    let what = match exit.kind {
        ChildKind::Run => "hearth run",
        ChildKind::Kill => "hearth kill",
    };
    match (exit.code, exit.signal) {
        (Some(code), _) => {
            tracing::info!(task_id = %exit.task_id, pid = exit.pid, code, "{what} exited")
        }
        (None, Some(signal)) => {
            tracing::warn!(task_id = %exit.task_id, pid = exit.pid, signal, "{what} was killed by a signal")
        }
        (None, None) => tracing::info!(task_id = %exit.task_id, pid = exit.pid, "{what} ended"),
    }
}

/// A new id per agent run: the time and random bits.
pub fn fresh_agent_id() -> String {
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !random {
        let mix = u64::from(std::process::id()) ^ (hearth_executor::prepare::now_ms() as u64);
        bytes = mix.to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", hearth_executor::prepare::now_ms())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    hearth_checkpoints::error_chain(e)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    use hearth_scheduler::api::ScheduleStatus;
    use hearth_scheduler::wire::Assignment;

    use crate::book::{Children, Disk, RunReason};

    /// A machine in memory: tasks' disk states, the agent's records and children, and a log of
    /// what the agent started.
    #[derive(Debug, Default)]
    struct FakeHost {
        disk: BTreeMap<String, Disk>,
        records: BTreeMap<String, Assignment>,
        runs: BTreeSet<String>,
        kills: BTreeSet<String>,
        started: Vec<String>,
        fail_persist: bool,
    }

    impl Host for FakeHost {
        fn probe(&self, task_id: &str) -> Disk {
            self.disk.get(task_id).copied().unwrap_or(Disk::Absent)
        }
        fn children(&self, task_id: &str) -> Children {
            Children {
                run: self.runs.contains(task_id),
                kill: self.kills.contains(task_id),
            }
        }
        fn active_tasks(&self) -> Vec<String> {
            self.disk
                .iter()
                .filter(|(_, d)| matches!(d, Disk::Live | Disk::Orphaned))
                .map(|(t, _)| t.clone())
                .collect()
        }
        fn records(&self) -> Vec<Assignment> {
            self.records.values().cloned().collect()
        }
        fn persist(&mut self, a: &Assignment) -> Result<(), AgentError> {
            if self.fail_persist {
                return Err(AgentError::Token);
            }
            self.records.insert(a.task_id.clone(), a.clone());
            Ok(())
        }
        fn forget(&mut self, task_id: &str) {
            self.records.remove(task_id);
        }
        fn start_run(&mut self, a: &Assignment, why: RunReason) -> Result<(), AgentError> {
            self.runs.insert(a.task_id.clone());
            self.started.push(format!("run {} {why:?}", a.task_id));
            Ok(())
        }
        fn start_kill(&mut self, task_id: &str) -> Result<(), AgentError> {
            self.kills.insert(task_id.to_owned());
            self.started.push(format!("kill {task_id}"));
            Ok(())
        }
    }

    fn assignment(id: &str) -> Assignment {
        Assignment {
            task_id: id.to_owned(),
            job: "c/root/test/j".parse().unwrap(),
            instance: 0,
            config: serde_json::json!({"task": {}}),
            ports: BTreeMap::new(),
        }
    }

    fn orders(epoch: u64, launch: &[&str], kill: &[&str]) -> AgentOrders {
        AgentOrders {
            epoch,
            launch: launch.iter().map(|t| assignment(t)).collect(),
            kill: kill.iter().map(|t| (*t).to_owned()).collect(),
            agent_timeout_ms: 60_000,
        }
    }

    #[test]
    fn orders_are_recorded_then_launched_and_acknowledged() {
        let now = Instant::now();
        let mut agent = Agent::new(FakeHost::default(), Policy::default());
        agent.apply_orders(&orders(3, &["t1", "t2"], &[]), now);
        assert_eq!(agent.acked_epoch(), 3);
        assert!(agent.host().records.contains_key("t1"));
        assert_eq!(agent.host().started, vec!["run t1 Launch", "run t2 Launch"]);
        // The same orders again (a resend): nothing new starts.
        agent.apply_orders(&orders(3, &["t1", "t2"], &[]), now);
        assert_eq!(agent.host().started.len(), 2);
        let report = agent.report();
        assert!(report.iter().all(|t| t.running && t.terminal.is_none()));
        assert_eq!(report.len(), 2);
    }

    #[test]
    fn an_assignment_that_cannot_be_recorded_is_not_launched() {
        let now = Instant::now();
        let host = FakeHost {
            fail_persist: true,
            ..FakeHost::default()
        };
        let mut agent = Agent::new(host, Policy::default());
        agent.apply_orders(&orders(1, &["t1"], &[]), now);
        assert!(agent.host().started.is_empty());
        assert!(agent.report().is_empty());
    }

    #[test]
    fn a_restarted_agent_re_adopts_running_tasks_without_starting_them_again() {
        let now = Instant::now();
        let mut host = FakeHost::default();
        for t in ["live", "dead", "done"] {
            host.records.insert(t.into(), assignment(t));
        }
        host.disk.insert("live".into(), Disk::Live);
        host.disk.insert("dead".into(), Disk::Orphaned);
        host.disk.insert(
            "done".into(),
            Disk::Ended {
                status: ScheduleStatus::Finished,
                pending: false,
            },
        );
        let mut agent = Agent::new(host, Policy::default());
        agent.step(now);
        // Only the task whose executor died is started (recovered).
        assert_eq!(agent.host().started, vec!["run dead Recover"]);
        let report: BTreeMap<String, (bool, Option<ScheduleStatus>)> = agent
            .report()
            .into_iter()
            .map(|t| (t.task_id, (t.running, t.terminal)))
            .collect();
        assert_eq!(report["live"], (true, None));
        assert_eq!(report["dead"], (true, None), "its recovery is under way");
        assert_eq!(report["done"], (false, Some(ScheduleStatus::Finished)));
        // Once the scheduler has the end, the record goes.
        let sent = agent.report();
        agent.delivered(&sent);
        agent.step(now);
        assert!(!agent.host().records.contains_key("done"));
        assert!(agent.host().records.contains_key("live"));
    }

    #[test]
    fn kill_orders_reach_assigned_tasks_and_strays_and_ignore_unknown_ones() {
        let now = Instant::now();
        let mut host = FakeHost::default();
        host.records.insert("mine".into(), assignment("mine"));
        host.disk.insert("mine".into(), Disk::Live);
        host.disk.insert("stray".into(), Disk::Live);
        let mut agent = Agent::new(host, Policy::default());
        agent.step(now);
        let reported: Vec<String> = agent.report().into_iter().map(|t| t.task_id).collect();
        assert_eq!(reported, vec!["mine", "stray"], "strays are reported");
        agent.apply_orders(&orders(7, &[], &["mine", "stray", "nobody"]), now);
        assert_eq!(agent.host().started, vec!["kill mine", "kill stray"]);
        assert_eq!(agent.acked_epoch(), 7);
        // While `hearth kill` runs, a resent order starts nothing more.
        agent.apply_orders(&orders(8, &[], &["mine", "stray"]), now);
        assert_eq!(agent.host().started.len(), 2);
    }

    #[test]
    fn sync_backoff_starts_at_100ms_and_stays_within_a_few_seconds() {
        assert_eq!(sync_backoff(1), Duration::from_millis(100));
        assert_eq!(sync_backoff(2), Duration::from_millis(200));
        assert_eq!(sync_backoff(10), MAX_SYNC_BACKOFF);
    }

    #[test]
    fn agent_ids_differ_between_runs() {
        assert_ne!(fresh_agent_id(), fresh_agent_id());
    }
}
