//! The agent's decisions, kept pure: which task to start (`hearth run`), recover, kill, report
//! and forget, from what the agent was told (assignments, kill orders) and what it observes (the
//! task's checkpoint and lock on disk, its own child processes). No I/O and no clock: the time
//! and every observation are passed in, so the rules are unit-tested step by step.
//!
//! # Rules
//!
//! A task's disk state ([`Disk`]) is probed in this order: is the executor's lock held
//! ([`Disk::Live`]); else does a checkpoint stream exist ([`Disk::Absent`] if not); else is it
//! terminal ([`Disk::Ended`]) or not ([`Disk::Orphaned`]: its executor died). Lock first: an
//! executor writes the terminal state before it lets the lock go, so "no lock, not terminal"
//! means the executor is gone.
//!
//! | disk | the agent |
//! |---|---|
//! | `Live` | reports it running; kills it if ordered |
//! | `Orphaned` | runs `hearth run --task-id` again (recovery), or `hearth kill` (which adopts it) if ordered; after [`Policy::max_starts`] failed starts, gives up: reports it LOST and runs `hearth kill` once |
//! | `Absent` | launches it; a kill order before it started ends it (reported KILLED); gives up (reports FAILED) after [`Policy::max_starts`] failed starts |
//! | `Ended` | reports its terminal status; runs `hearth run` again while the executor left status updates unacknowledged (it delivers them and exits); forgets it once a sync carrying the end was answered and every update was acknowledged |
//!
//! While a `hearth run` or `hearth kill` the agent started for the task is alive, the agent starts
//! nothing else for it and reports it running. Starts and kills that do not take are retried with
//! a backoff ([`Policy`]).
//!
//! Tasks active in the root that the agent has no record of (*strays*) are reported while active
//! (so the scheduler can order them killed) and killed on order, never started or recovered.

use std::collections::BTreeMap;
use std::time::Duration;

use hearth_scheduler::api::ScheduleStatus;
use hearth_scheduler::wire::{AgentTask, Assignment};
use tokio::time::Instant;

/// What the disk says about a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disk {
    /// No checkpoint stream: `hearth run` has not prepared the task (yet, or ever).
    Absent,
    /// An executor holds the task's lock.
    Live,
    /// The stream is not terminal and no executor holds the lock: the executor died.
    Orphaned,
    /// The stream records a terminal state. `pending`: it holds status updates the scheduler has
    /// not acknowledged.
    Ended {
        status: ScheduleStatus,
        pending: bool,
    },
}

/// Which of the agent's own child processes for a task are alive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Children {
    /// A `hearth run` the agent started.
    pub run: bool,
    /// A `hearth kill` the agent started.
    pub kill: bool,
}

/// Everything observed about one task at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    pub disk: Disk,
    pub children: Children,
}

/// Why the agent starts `hearth run` for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunReason {
    /// The first start of an assignment (or a retry of one that never prepared).
    Launch,
    /// Its executor died: the new one adopts the live processes.
    Recover,
    /// It ended but its executor left status updates the scheduler has not acknowledged.
    Deliver,
}

/// What the imperative shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start `hearth run` for the task (its assignment is in the book).
    Run {
        assignment: Box<Assignment>,
        why: RunReason,
    },
    /// Start `hearth kill <task_id>`.
    Kill { task_id: String },
    /// Remove the agent's record of the task (its checkpoint and sandbox stay).
    Forget { task_id: String },
}

/// A capped doubling delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delays {
    pub initial: Duration,
    pub max: Duration,
}

impl Delays {
    /// The wait after the `n`th attempt (1 = the first).
    pub fn after(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Retry rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Between starts of a task that did not take (the first start is immediate).
    pub start_retry: Delays,
    /// Starts in a row that leave the task neither live nor ended before the agent gives up.
    pub max_starts: u32,
    /// Between `hearth kill`s of a task that did not end.
    pub kill_retry: Delays,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            start_retry: Delays {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
            max_starts: 5,
            kill_retry: Delays {
                initial: Duration::from_secs(5),
                max: Duration::from_secs(60),
            },
        }
    }
}

/// What the agent remembers of one task between steps.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// `None` for a stray: active in the root, but the agent has no record of it.
    assignment: Option<Assignment>,
    kill_ordered: bool,
    /// `hearth run`s started since the task was last seen live.
    starts: u32,
    start_not_before: Option<Instant>,
    kills: u32,
    kill_not_before: Option<Instant>,
    /// The end the agent decided itself (the task never started, or cannot be recovered).
    given_up: Option<ScheduleStatus>,
    /// A sync that carried the task's terminal status was answered.
    end_delivered: bool,
}

impl Entry {
    fn new(assignment: Option<Assignment>) -> Entry {
        Entry {
            assignment,
            kill_ordered: false,
            starts: 0,
            start_not_before: None,
            kills: 0,
            kill_not_before: None,
            given_up: None,
            end_delivered: false,
        }
    }
}

fn due(not_before: Option<Instant>, now: Instant) -> bool {
    not_before.is_none_or(|t| now >= t)
}

/// The agent's tasks and the rules above.
#[derive(Debug, Clone, Default)]
pub struct Book {
    entries: BTreeMap<String, Entry>,
    policy: Policy,
}

impl Book {
    pub fn new(policy: Policy) -> Book {
        Book {
            entries: BTreeMap::new(),
            policy,
        }
    }

    /// Take an assignment (from the scheduler, or from the agent's records after a restart).
    /// Idempotent by task id; a stray of that id becomes the agent's own. Returns whether the
    /// task was new to the book.
    pub fn adopt(&mut self, assignment: Assignment) -> bool {
        match self.entries.get_mut(&assignment.task_id) {
            Some(e) => {
                if e.assignment.is_none() {
                    e.assignment = Some(assignment);
                }
                false
            }
            None => {
                self.entries
                    .insert(assignment.task_id.clone(), Entry::new(Some(assignment)));
                true
            }
        }
    }

    /// Note a task active in the root. Returns whether it was unknown (a stray).
    pub fn discover(&mut self, task_id: &str) -> bool {
        if self.entries.contains_key(task_id) {
            return false;
        }
        self.entries.insert(task_id.to_owned(), Entry::new(None));
        true
    }

    /// The scheduler ordered the task killed: it is never started again, and is killed at the
    /// next step. Returns whether the book knows the task.
    pub fn order_kill(&mut self, task_id: &str) -> bool {
        match self.entries.get_mut(task_id) {
            Some(e) => {
                if !e.kill_ordered {
                    e.kill_ordered = true;
                    e.kill_not_before = None;
                }
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, task_id: &str) -> bool {
        self.entries.contains_key(task_id)
    }

    /// Whether the task is the agent's own (not a stray).
    pub fn is_assigned(&self, task_id: &str) -> bool {
        self.entries
            .get(task_id)
            .is_some_and(|e| e.assignment.is_some())
    }

    pub fn task_ids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decide what to do for every task, given what `observe` says of it now.
    pub fn step(&mut self, now: Instant, observe: impl Fn(&str) -> Observation) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut gone = Vec::new();
        let policy = self.policy;
        for (task_id, e) in &mut self.entries {
            let obs = observe(task_id);
            let busy = obs.children.run || obs.children.kill;
            let kill = |e: &mut Entry, actions: &mut Vec<Action>| {
                if !obs.children.kill && due(e.kill_not_before, now) {
                    e.kills = e.kills.saturating_add(1);
                    e.kill_not_before = Some(now + policy.kill_retry.after(e.kills));
                    actions.push(Action::Kill {
                        task_id: task_id.clone(),
                    });
                }
            };
            let Some(assignment) = e.assignment.clone() else {
                // A stray: killed on order, dropped once it is no longer active.
                match obs.disk {
                    Disk::Live | Disk::Orphaned if e.kill_ordered => kill(e, &mut actions),
                    Disk::Live | Disk::Orphaned => {}
                    Disk::Absent | Disk::Ended { .. } => gone.push(task_id.clone()),
                }
                continue;
            };
            let start = |e: &mut Entry, why: RunReason, actions: &mut Vec<Action>| {
                if due(e.start_not_before, now) {
                    e.starts = e.starts.saturating_add(1);
                    e.start_not_before = Some(now + policy.start_retry.after(e.starts));
                    actions.push(Action::Run {
                        assignment: Box::new(assignment.clone()),
                        why,
                    });
                }
            };
            match obs.disk {
                Disk::Live => {
                    e.starts = 0;
                    e.start_not_before = None;
                    e.given_up = None;
                    if e.kill_ordered {
                        kill(e, &mut actions);
                    }
                }
                Disk::Ended { .. } | Disk::Orphaned | Disk::Absent if busy => {}
                Disk::Ended { pending: true, .. } => start(e, RunReason::Deliver, &mut actions),
                Disk::Ended { .. } => {
                    if e.end_delivered {
                        gone.push(task_id.clone());
                        actions.push(Action::Forget {
                            task_id: task_id.clone(),
                        });
                    }
                }
                Disk::Orphaned | Disk::Absent if e.given_up.is_some() => {
                    if e.end_delivered {
                        gone.push(task_id.clone());
                        actions.push(Action::Forget {
                            task_id: task_id.clone(),
                        });
                    }
                }
                Disk::Orphaned if e.kill_ordered => kill(e, &mut actions),
                Disk::Absent if e.kill_ordered => {
                    // Ordered killed before it ever started: nothing runs, nothing will.
                    e.given_up = Some(ScheduleStatus::Killed);
                }
                Disk::Absent if e.starts >= policy.max_starts => {
                    e.given_up = Some(ScheduleStatus::Failed);
                }
                Disk::Orphaned if e.starts >= policy.max_starts => {
                    // Its processes may live on under their keeper: tear them down (`hearth
                    // kill` adopts the task) so that no stale copy runs once it is replaced.
                    e.given_up = Some(ScheduleStatus::Lost);
                    kill(e, &mut actions);
                }
                Disk::Orphaned => start(e, RunReason::Recover, &mut actions),
                Disk::Absent => start(e, RunReason::Launch, &mut actions),
            }
        }
        for task_id in gone {
            self.entries.remove(&task_id);
        }
        actions
    }

    /// The `tasks` of the next sync, given what `observe` says now.
    pub fn report(&self, observe: impl Fn(&str) -> Observation) -> Vec<AgentTask> {
        let mut tasks = Vec::with_capacity(self.entries.len());
        for (task_id, e) in &self.entries {
            let obs = observe(task_id);
            let busy = obs.children.run || obs.children.kill;
            let (running, terminal) = match (obs.disk, e.assignment.is_some()) {
                (Disk::Live, _) => (true, None),
                (Disk::Ended { status, .. }, true) => (false, Some(status)),
                (Disk::Orphaned | Disk::Absent, true) if busy => (true, None),
                (Disk::Orphaned | Disk::Absent, true) => (false, e.given_up),
                (Disk::Orphaned, false) => (false, None),
                (Disk::Absent | Disk::Ended { .. }, false) => continue,
            };
            tasks.push(AgentTask {
                task_id: task_id.clone(),
                running,
                terminal,
            });
        }
        tasks
    }

    /// A sync carrying `sent` was answered: the ends it carried have reached the scheduler.
    pub fn delivered(&mut self, sent: &[AgentTask]) {
        for t in sent.iter().filter(|t| t.terminal.is_some()) {
            if let Some(e) = self.entries.get_mut(&t.task_id) {
                e.end_delivered = true;
            }
        }
    }

    /// The earliest time a waiting start or kill becomes due, if any is waiting.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .flat_map(|e| [e.start_not_before, e.kill_not_before])
            .flatten()
            .filter(|&t| t > now)
            .min()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn assignment(id: &str) -> Assignment {
        Assignment {
            task_id: id.to_owned(),
            job: "c/root/test/j".parse().unwrap(),
            instance: 0,
            config: serde_json::json!({}),
            ports: BTreeMap::new(),
        }
    }

    fn obs(disk: Disk) -> Observation {
        Observation {
            disk,
            children: Children::default(),
        }
    }

    fn running_child(disk: Disk) -> Observation {
        Observation {
            disk,
            children: Children {
                run: true,
                kill: false,
            },
        }
    }

    fn killing(disk: Disk) -> Observation {
        Observation {
            disk,
            children: Children {
                run: false,
                kill: true,
            },
        }
    }

    fn ended(status: ScheduleStatus, pending: bool) -> Disk {
        Disk::Ended { status, pending }
    }

    fn runs(actions: &[Action]) -> Vec<(String, RunReason)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Run { assignment, why } => Some((assignment.task_id.clone(), *why)),
                _ => None,
            })
            .collect()
    }

    fn one_task(book: &Book, o: Observation) -> AgentTask {
        let r = book.report(|_| o);
        assert_eq!(r.len(), 1, "{r:?}");
        r.into_iter().next().unwrap()
    }

    #[test]
    fn a_new_assignment_is_launched_once_and_reported_running_while_it_starts() {
        let now = Instant::now();
        let mut book = Book::default();
        assert!(book.adopt(assignment("t1")));
        assert!(!book.adopt(assignment("t1")), "idempotent by task id");
        let a = book.step(now, |_| obs(Disk::Absent));
        assert_eq!(runs(&a), vec![("t1".to_owned(), RunReason::Launch)]);
        // The child is starting: nothing more, and it counts as running.
        assert!(book.step(now, |_| running_child(Disk::Absent)).is_empty());
        let t = one_task(&book, running_child(Disk::Absent));
        assert!(t.running && t.terminal.is_none());
        assert!(book.step(now, |_| running_child(Disk::Live)).is_empty());
        assert!(one_task(&book, obs(Disk::Live)).running);
    }

    #[test]
    fn a_live_task_is_left_alone_and_reported_running() {
        let now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        for _ in 0..3 {
            assert!(book.step(now, |_| obs(Disk::Live)).is_empty());
        }
        let t = one_task(&book, obs(Disk::Live));
        assert_eq!(
            t,
            AgentTask {
                task_id: "t1".into(),
                running: true,
                terminal: None
            }
        );
    }

    #[test]
    fn a_task_whose_executor_died_is_recovered_at_once() {
        let now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        book.step(now, |_| obs(Disk::Live));
        let a = book.step(now, |_| obs(Disk::Orphaned));
        assert_eq!(runs(&a), vec![("t1".to_owned(), RunReason::Recover)]);
        // Reported not running (no executor), not ended.
        let t = one_task(&book, obs(Disk::Orphaned));
        assert!(!t.running && t.terminal.is_none());
    }

    #[test]
    fn failed_starts_back_off_then_the_agent_gives_up() {
        let policy = Policy::default();
        let mut now = Instant::now();
        let mut book = Book::new(policy);
        book.adopt(assignment("t1"));
        let mut starts = 0;
        for _ in 0..200 {
            let a = book.step(now, |_| obs(Disk::Absent));
            starts += runs(&a).len();
            now += Duration::from_millis(500);
        }
        assert_eq!(starts, policy.max_starts as usize);
        let t = one_task(&book, obs(Disk::Absent));
        assert_eq!(t.terminal, Some(ScheduleStatus::Failed));
        assert!(!t.running);
    }

    #[test]
    fn starts_are_spaced_by_the_doubling_delay() {
        let policy = Policy::default();
        let t0 = Instant::now();
        let mut book = Book::new(policy);
        book.adopt(assignment("t1"));
        assert_eq!(runs(&book.step(t0, |_| obs(Disk::Orphaned))).len(), 1);
        let almost = t0 + Duration::from_millis(999);
        assert!(book.step(almost, |_| obs(Disk::Orphaned)).is_empty());
        assert_eq!(book.next_due(almost), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(runs(&book.step(t1, |_| obs(Disk::Orphaned))).len(), 1);
        assert!(
            book.step(t1 + Duration::from_millis(1999), |_| obs(Disk::Orphaned))
                .is_empty()
        );
        assert_eq!(
            runs(&book.step(t1 + Duration::from_secs(2), |_| obs(Disk::Orphaned))).len(),
            1
        );
    }

    #[test]
    fn an_unrecoverable_task_is_reported_lost() {
        let mut now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        for _ in 0..200 {
            book.step(now, |_| obs(Disk::Orphaned));
            now += Duration::from_secs(1);
        }
        assert_eq!(
            one_task(&book, obs(Disk::Orphaned)).terminal,
            Some(ScheduleStatus::Lost)
        );
    }

    #[test]
    fn giving_up_on_an_orphan_kills_it_once_and_forgets_it_once_delivered() {
        let policy = Policy::default();
        let mut now = Instant::now();
        let mut book = Book::new(policy);
        book.adopt(assignment("t1"));
        let mut all = Vec::new();
        for _ in 0..200 {
            all.extend(book.step(now, |_| obs(Disk::Orphaned)));
            now += Duration::from_secs(1);
        }
        let kills = all
            .iter()
            .filter(|a| matches!(a, Action::Kill { .. }))
            .count();
        assert_eq!(kills, 1, "{all:?}");
        assert_eq!(runs(&all).len(), policy.max_starts as usize);
        book.delivered(&book.report(|_| obs(Disk::Orphaned)));
        assert!(matches!(
            book.step(now, |_| obs(Disk::Orphaned)).as_slice(),
            [Action::Forget { .. }]
        ));
    }

    #[test]
    fn seeing_the_task_live_resets_the_start_count() {
        let mut now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        for round in 0..20 {
            // Dies, is recovered, is live again: never given up on.
            let a = book.step(now, |_| obs(Disk::Orphaned));
            assert_eq!(runs(&a).len(), 1, "round {round}");
            book.step(now, |_| obs(Disk::Live));
            now += Duration::from_millis(10);
        }
        assert!(one_task(&book, obs(Disk::Orphaned)).terminal.is_none());
    }

    #[test]
    fn an_ended_task_is_reported_with_its_status_then_forgotten_once_delivered() {
        let now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        let done = obs(ended(ScheduleStatus::Finished, false));
        assert!(book.step(now, |_| done).is_empty(), "kept until delivered");
        let sent = book.report(|_| done);
        assert_eq!(
            sent,
            vec![AgentTask {
                task_id: "t1".into(),
                running: false,
                terminal: Some(ScheduleStatus::Finished)
            }]
        );
        book.delivered(&sent);
        assert_eq!(
            book.step(now, |_| done),
            vec![Action::Forget {
                task_id: "t1".into()
            }]
        );
        assert!(book.is_empty());
        assert!(book.report(|_| done).is_empty());
    }

    #[test]
    fn an_end_with_unacknowledged_updates_is_delivered_by_hearth_run_and_kept_meanwhile() {
        let now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        let pending = obs(ended(ScheduleStatus::Failed, true));
        let a = book.step(now, |_| pending);
        assert_eq!(runs(&a), vec![("t1".to_owned(), RunReason::Deliver)]);
        book.delivered(&book.report(|_| pending));
        // Still pending: not forgotten, and retried after the delay only.
        assert!(book.step(now, |_| pending).is_empty());
        let later = now + Duration::from_secs(1);
        assert_eq!(runs(&book.step(later, |_| pending)).len(), 1);
        // Acknowledged at last: forgotten.
        let acked = obs(ended(ScheduleStatus::Failed, false));
        assert!(matches!(
            book.step(later, |_| acked).as_slice(),
            [Action::Forget { .. }]
        ));
    }

    #[test]
    fn an_end_is_not_forgotten_while_a_child_of_the_agent_still_runs_for_it() {
        let now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        let done = ended(ScheduleStatus::Killed, false);
        book.delivered(&book.report(|_| obs(done)));
        assert!(book.step(now, |_| killing(done)).is_empty());
        assert_eq!(book.len(), 1);
        assert!(matches!(
            book.step(now, |_| obs(done)).as_slice(),
            [Action::Forget { .. }]
        ));
    }

    #[test]
    fn a_kill_order_kills_a_live_task_once_while_hearth_kill_runs() {
        let now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        assert!(book.order_kill("t1"));
        assert_eq!(
            book.step(now, |_| obs(Disk::Live)),
            vec![Action::Kill {
                task_id: "t1".into()
            }]
        );
        assert!(book.order_kill("t1"), "a repeated order is the same order");
        assert!(book.step(now, |_| killing(Disk::Live)).is_empty());
        // `hearth kill` gave up without ending it: killed again after the delay.
        assert!(book.step(now, |_| obs(Disk::Live)).is_empty());
        let later = now + Policy::default().kill_retry.initial;
        assert_eq!(book.step(later, |_| obs(Disk::Live)).len(), 1);
    }

    #[test]
    fn a_killed_task_whose_executor_died_is_killed_not_recovered() {
        let now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        book.order_kill("t1");
        assert_eq!(
            book.step(now, |_| obs(Disk::Orphaned)),
            vec![Action::Kill {
                task_id: "t1".into()
            }]
        );
    }

    #[test]
    fn a_kill_before_the_task_started_waits_for_the_start_or_ends_it() {
        let now = Instant::now();
        let mut book = Book::default();
        book.adopt(assignment("t1"));
        book.step(now, |_| obs(Disk::Absent));
        book.order_kill("t1");
        // `hearth run` is still preparing: wait for the executor to exist, then kill it.
        assert!(book.step(now, |_| running_child(Disk::Absent)).is_empty());
        assert!(matches!(
            book.step(now, |_| running_child(Disk::Live)).as_slice(),
            [Action::Kill { .. }]
        ));

        let mut book = Book::default();
        book.adopt(assignment("t2"));
        book.order_kill("t2");
        assert!(
            book.step(now, |_| obs(Disk::Absent)).is_empty(),
            "never started"
        );
        let t = one_task(&book, obs(Disk::Absent));
        assert_eq!(t.terminal, Some(ScheduleStatus::Killed));
        book.delivered(&[t]);
        assert!(matches!(
            book.step(now, |_| obs(Disk::Absent)).as_slice(),
            [Action::Forget { .. }]
        ));
    }

    #[test]
    fn strays_are_reported_while_active_killed_on_order_and_never_started() {
        let now = Instant::now();
        let mut book = Book::default();
        assert!(book.discover("s1"));
        assert!(!book.discover("s1"));
        assert!(!book.is_assigned("s1"));
        assert!(
            book.step(now, |_| obs(Disk::Orphaned)).is_empty(),
            "no recovery"
        );
        let t = one_task(&book, obs(Disk::Orphaned));
        assert!(!t.running && t.terminal.is_none());
        assert!(one_task(&book, obs(Disk::Live)).running);
        book.order_kill("s1");
        assert!(matches!(
            book.step(now, |_| obs(Disk::Live)).as_slice(),
            [Action::Kill { .. }]
        ));
        // Once ended it is dropped without a report or a Forget (it has no record).
        let done = obs(ended(ScheduleStatus::Killed, false));
        assert!(book.report(|_| done).is_empty());
        assert!(book.step(now, |_| done).is_empty());
        assert!(book.is_empty());
    }

    #[test]
    fn a_stray_that_the_scheduler_assigns_becomes_the_agents_own() {
        let now = Instant::now();
        let mut book = Book::default();
        book.discover("t1");
        assert!(!book.adopt(assignment("t1")));
        assert!(book.is_assigned("t1"));
        assert_eq!(
            runs(&book.step(now, |_| obs(Disk::Orphaned))),
            vec![("t1".to_owned(), RunReason::Recover)]
        );
    }

    #[test]
    fn unknown_kill_orders_are_refused() {
        let mut book = Book::default();
        assert!(!book.order_kill("nobody"));
        assert!(book.is_empty());
    }

    #[test]
    fn delays_double_and_are_capped() {
        let d = Delays {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let got: Vec<u128> = (1..=6).map(|n| d.after(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(d.after(500), Duration::from_secs(1));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet;

        const TASKS: [&str; 2] = ["mine", "stray"];

        #[derive(Debug, Clone)]
        enum Event {
            /// One step: what each task looks like, after `advance_ms`.
            Step {
                obs: [Observation; 2],
                advance_ms: u64,
            },
            OrderKill(usize),
            /// A sync carrying the current report was answered.
            Delivered,
        }

        fn disk() -> impl Strategy<Value = Disk> {
            let status = prop::sample::select(vec![
                ScheduleStatus::Finished,
                ScheduleStatus::Failed,
                ScheduleStatus::Killed,
                ScheduleStatus::Lost,
            ]);
            prop_oneof![
                Just(Disk::Absent),
                Just(Disk::Live),
                Just(Disk::Orphaned),
                (status, any::<bool>())
                    .prop_map(|(status, pending)| Disk::Ended { status, pending }),
            ]
        }

        fn observation() -> impl Strategy<Value = Observation> {
            (disk(), any::<bool>(), any::<bool>()).prop_map(|(disk, run, kill)| Observation {
                disk,
                children: Children { run, kill },
            })
        }

        fn event() -> impl Strategy<Value = Event> {
            prop_oneof![
                6 => (observation(), observation(), 0u64..3_000)
                    .prop_map(|(a, b, advance_ms)| Event::Step { obs: [a, b], advance_ms }),
                1 => (0usize..2).prop_map(Event::OrderKill),
                2 => Just(Event::Delivered),
            ]
        }

        proptest! {
            /// Whatever the disk and the children say, in any order: nothing is started or
            /// killed while a child of the agent runs for the task, a task ordered killed is
            /// never launched or recovered again, a stray is never started, starts without
            /// seeing the task live are bounded, a task is forgotten only once its end was
            /// delivered, and live and ended tasks are reported as they are.
            #[test]
            fn the_book_keeps_its_rules_under_any_observations(
                events in prop::collection::vec(event(), 1..80)
            ) {
                let policy = Policy::default();
                let mut book = Book::new(policy);
                book.adopt(assignment("mine"));
                book.discover("stray");
                let mut now = Instant::now();
                let mut killed: BTreeSet<usize> = BTreeSet::new();
                let mut delivered_end: BTreeSet<String> = BTreeSet::new();
                let mut gone: BTreeSet<String> = BTreeSet::new();
                let mut starts_since_live = 0u32;
                let mut last = [obs(Disk::Absent), obs(Disk::Absent)];
                for ev in events {
                    match ev {
                        Event::OrderKill(i) => {
                            if book.order_kill(TASKS[i]) {
                                killed.insert(i);
                            }
                        }
                        Event::Delivered => {
                            let sent = book.report(|id| last[usize::from(id == "stray")]);
                            for t in &sent {
                                if t.terminal.is_some() {
                                    delivered_end.insert(t.task_id.clone());
                                }
                            }
                            book.delivered(&sent);
                        }
                        Event::Step { obs: o, advance_ms } => {
                            now += Duration::from_millis(advance_ms);
                            last = o;
                            let at = |id: &str| o[usize::from(id == "stray")];
                            if o[0].disk == Disk::Live && book.contains("mine") {
                                starts_since_live = 0;
                            }
                            let actions = book.step(now, at);
                            for a in &actions {
                                match a {
                                    Action::Run { assignment, why } => {
                                        let id = assignment.task_id.as_str();
                                        prop_assert_eq!(id, "mine", "a stray is never started");
                                        let ob = at(id);
                                        prop_assert!(!ob.children.run && !ob.children.kill);
                                        prop_assert!(ob.disk != Disk::Live);
                                        if *why != RunReason::Deliver {
                                            // Delivering an ended task's updates starts nothing
                                            // of the task; launching or recovering it would.
                                            prop_assert!(!killed.contains(&0), "started after a kill order");
                                            starts_since_live += 1;
                                            prop_assert!(starts_since_live <= policy.max_starts);
                                        }
                                    }
                                    Action::Kill { task_id } => {
                                        let ob = at(task_id);
                                        prop_assert!(!ob.children.kill, "one hearth kill at a time");
                                        let killable = matches!(ob.disk, Disk::Live | Disk::Orphaned);
                                        prop_assert!(killable, "killed while {:?}", ob.disk);
                                    }
                                    Action::Forget { task_id } => {
                                        prop_assert_eq!(task_id.as_str(), "mine");
                                        prop_assert!(delivered_end.contains(task_id));
                                        let ob = at(task_id);
                                        prop_assert!(!ob.children.run && !ob.children.kill);
                                        let forgettable = !matches!(
                                            ob.disk,
                                            Disk::Live | Disk::Ended { pending: true, .. }
                                        );
                                        prop_assert!(forgettable, "forgotten while {:?}", ob.disk);
                                        gone.insert(task_id.clone());
                                    }
                                }
                            }
                            for t in book.report(at) {
                                prop_assert!(!gone.contains(&t.task_id), "reported after forgotten");
                                let ob = at(&t.task_id);
                                match ob.disk {
                                    Disk::Live => prop_assert!(t.running && t.terminal.is_none()),
                                    Disk::Ended { status, .. } => {
                                        prop_assert_eq!(&t.task_id, "mine", "ended strays are not reported");
                                        prop_assert_eq!(t.terminal, Some(status));
                                        prop_assert!(!t.running);
                                    }
                                    Disk::Absent | Disk::Orphaned => {}
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
