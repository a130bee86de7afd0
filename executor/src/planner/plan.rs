//! One plan (the regular or the final one): its processes, their states, and the rules that move
//! them. The module docs of [`super`] state each rule; each is implemented by one function here.

use std::time::Duration;

use hearth_checkpoints::config::{ProcessConfig, TaskConfig};
use tokio::time::Instant;

use super::{Blocker, MAX_UNSUCCESSFUL_RUNS, Outcome, PlanState, Verdict};

/// Where one process stands in its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Status {
    /// Not running; may run once the runnable rule allows it.
    Waiting,
    Running,
    /// Will not run again; its successors may start.
    Finished,
    /// Will not run again; `reason` says why, for humans.
    Failed {
        reason: String,
    },
    /// Killed by the executor; will not run again in this plan.
    Stopped,
}

impl Status {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Running => "running",
            Status::Finished => "finished",
            Status::Failed { .. } => "failed",
            Status::Stopped => "stopped",
        }
    }

    /// Whether the process will never run again in this plan.
    fn has_ended(&self) -> bool {
        matches!(
            self,
            Status::Finished | Status::Failed { .. } | Status::Stopped
        )
    }
}

#[derive(Debug, Clone)]
struct Proc {
    name: String,
    daemon: bool,
    ephemeral: bool,
    max_failures: u32,
    min_duration: Duration,
    /// Indices (in this plan) of the processes that must finish before this one may start.
    predecessors: Vec<usize>,
    status: Status,
    /// Runs that counted as failures.
    failures: u32,
    /// Runs that ended any way but success or a kill by the executor (failures and lost runs).
    unsuccessful_runs: u32,
    /// When the previous run ended; `None` before the first run.
    last_end: Option<Instant>,
}

impl Proc {
    fn new(config: &ProcessConfig) -> Proc {
        Proc {
            name: config.name.clone(),
            daemon: config.daemon,
            ephemeral: config.ephemeral,
            max_failures: config.max_failures,
            min_duration: config.min_duration,
            predecessors: Vec::new(),
            status: Status::Waiting,
            failures: 0,
            unsuccessful_runs: 0,
            last_end: None,
        }
    }

    /// How long until the `min_duration` gate opens; zero when it is open.
    fn gate_remaining(&self, now: Instant) -> Duration {
        self.last_end.map_or(Duration::ZERO, |end| {
            self.min_duration
                .saturating_sub(now.saturating_duration_since(end))
        })
    }
}

#[derive(Debug, Clone)]
pub(super) struct Plan {
    procs: Vec<Proc>,
}

impl Plan {
    /// The plan of the task's final processes (`finals`) or of its regular ones, in config order,
    /// with the order constraints among them.
    pub(super) fn new(task: &TaskConfig, finals: bool) -> Plan {
        let mut procs: Vec<Proc> = task
            .processes
            .iter()
            .filter(|p| p.is_final == finals)
            .map(Proc::new)
            .collect();
        let position = |name: &str| procs.iter().position(|p| p.name == name);
        let mut edges = Vec::new();
        for order in &task.constraints {
            for pair in order.windows(2) {
                if let [before, after] = pair
                    && let (Some(b), Some(a)) = (position(before), position(after))
                {
                    edges.push((b, a));
                }
            }
        }
        for (before, after) in edges {
            if let Some(p) = procs.get_mut(after)
                && !p.predecessors.contains(&before)
            {
                p.predecessors.push(before);
            }
        }
        Plan { procs }
    }

    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.procs.iter().map(|p| p.name.as_str())
    }

    pub(super) fn name(&self, i: usize) -> &str {
        self.procs.get(i).map_or("", |p| p.name.as_str())
    }

    pub(super) fn status(&self, i: usize) -> &Status {
        self.procs.get(i).map_or(&Status::Stopped, |p| &p.status)
    }

    pub(super) fn running(&self) -> impl Iterator<Item = &str> {
        self.procs
            .iter()
            .filter(|p| p.status == Status::Running)
            .map(|p| p.name.as_str())
    }

    pub(super) fn running_count(&self) -> usize {
        self.running().count()
    }

    pub(super) fn set_running(&mut self, i: usize) {
        if let Some(p) = self.procs.get_mut(i) {
            p.status = Status::Running;
        }
    }

    /// **The runnable rule** (the part about the process itself; the planner adds the stage, the
    /// plan's end and `max_concurrency`): waiting, every predecessor finished, gate open.
    pub(super) fn blocker(&self, i: usize, now: Instant) -> Option<Blocker> {
        let p = self.procs.get(i)?;
        if p.status != Status::Waiting {
            return Some(Blocker::NotWaiting(p.status.name()));
        }
        if let Some(pred) = self.unfinished_predecessor(p) {
            return Some(Blocker::Predecessor(pred.name.clone()));
        }
        let remaining = p.gate_remaining(now);
        if !remaining.is_zero() {
            return Some(Blocker::Gate { remaining });
        }
        None
    }

    fn unfinished_predecessor(&self, p: &Proc) -> Option<&Proc> {
        p.predecessors
            .iter()
            .filter_map(|&j| self.procs.get(j))
            .find(|pred| pred.status != Status::Finished)
    }

    /// Indices of the processes the runnable rule allows now, in config order.
    pub(super) fn ready(&self, now: Instant) -> impl Iterator<Item = usize> {
        (0..self.procs.len()).filter(move |&i| self.blocker(i, now).is_none())
    }

    /// The earliest instant after `now` at which a process blocked only by its gate may start.
    pub(super) fn next_gate(&self, now: Instant) -> Option<Instant> {
        self.procs
            .iter()
            .filter(|p| p.status == Status::Waiting && self.unfinished_predecessor(p).is_none())
            .filter_map(|p| {
                let remaining = p.gate_remaining(now);
                // Past the representable range the gate never opens: nothing to wake up for.
                (!remaining.is_zero())
                    .then(|| now.checked_add(remaining))
                    .flatten()
            })
            .min()
    }

    /// **The exit rule**: what a run's outcome does to its process.
    pub(super) fn end_run(&mut self, i: usize, outcome: Outcome, now: Instant) -> Verdict {
        let Some(p) = self.procs.get_mut(i) else {
            return Verdict::Stopped;
        };
        p.last_end = Some(now);
        let restart = Verdict::Restart {
            after: p.min_duration,
        };
        let (status, verdict) = match outcome {
            Outcome::KilledByUs => (Status::Stopped, Verdict::Stopped),
            Outcome::Success if p.daemon => (Status::Waiting, restart),
            Outcome::Success => (Status::Finished, Verdict::Finished),
            Outcome::Failed { .. } | Outcome::Oom | Outcome::KilledBySignal(_) | Outcome::Lost => {
                p.unsuccessful_runs = p.unsuccessful_runs.saturating_add(1);
                if outcome.counts_as_failure() {
                    p.failures = p.failures.saturating_add(1);
                }
                let failure_limit = outcome.counts_as_failure()
                    && p.max_failures != 0
                    && p.failures >= p.max_failures;
                if failure_limit && p.ephemeral {
                    (Status::Finished, Verdict::Finished)
                } else if failure_limit {
                    let reason = format!(
                        "process '{}' failed {} times (max_failures {}); last run {outcome}",
                        p.name, p.failures, p.max_failures
                    );
                    failed(reason)
                } else if p.unsuccessful_runs >= MAX_UNSUCCESSFUL_RUNS {
                    let reason = format!(
                        "process '{}' ended {} runs without success, the most any process may; \
                         last run {outcome}",
                        p.name, p.unsuccessful_runs
                    );
                    failed(reason)
                } else {
                    (Status::Waiting, restart)
                }
            }
        };
        p.status = status;
        verdict
    }

    /// **The plan-end rule**: failed (too many permanent failures, or deadlocked), complete
    /// (every non-ephemeral process ended), or still running. `max_failures` 0 = unlimited.
    pub(super) fn state(&self, max_failures: u32) -> PlanState {
        let failed: Vec<&str> = self
            .procs
            .iter()
            .filter_map(|p| match &p.status {
                Status::Failed { reason } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        if max_failures != 0 && failed.len() >= usize::try_from(max_failures).unwrap_or(usize::MAX)
        {
            return PlanState::Failed {
                reason: format!(
                    "{} process(es) failed permanently, reaching the task's max_failures {}: {}",
                    failed.len(),
                    max_failures,
                    failed.join("; ")
                ),
            };
        }
        let can_finish = self.can_finish();
        let stuck = self.procs.iter().enumerate().find(|&(i, p)| {
            !p.ephemeral && !p.status.has_ended() && !can_finish.get(i).copied().unwrap_or(false)
        });
        if let Some((i, _)) = stuck {
            return PlanState::Failed {
                reason: format!("plan deadlocked: {}", self.deadlock_cause(i, &can_finish)),
            };
        }
        if self
            .procs
            .iter()
            .all(|p| p.ephemeral || p.status.has_ended())
        {
            PlanState::Complete
        } else {
            PlanState::Running
        }
    }

    /// For each process, whether it has finished or still can: it runs, or it waits and all its
    /// predecessors can finish. A fixpoint, so cycles come out as "cannot".
    fn can_finish(&self) -> Vec<bool> {
        let mut ok: Vec<bool> = self
            .procs
            .iter()
            .map(|p| matches!(p.status, Status::Finished | Status::Running))
            .collect();
        let mut changed = true;
        while changed {
            changed = false;
            for (i, p) in self.procs.iter().enumerate() {
                let preds_ok = p
                    .predecessors
                    .iter()
                    .all(|&j| ok.get(j).copied().unwrap_or(false));
                if p.status == Status::Waiting && preds_ok && !ok.get(i).copied().unwrap_or(true) {
                    if let Some(slot) = ok.get_mut(i) {
                        *slot = true;
                    }
                    changed = true;
                }
            }
        }
        ok
    }

    /// Why process `i` can never run: walk back through predecessors that cannot finish to the
    /// one that failed or was stopped, or to a cycle.
    fn deadlock_cause(&self, i: usize, can_finish: &[bool]) -> String {
        let stuck = self.name(i);
        let mut seen = vec![i];
        let mut current = i;
        loop {
            let blocking = self.procs.get(current).and_then(|p| {
                p.predecessors
                    .iter()
                    .copied()
                    .find(|&j| !can_finish.get(j).copied().unwrap_or(false))
            });
            let Some(j) = blocking else {
                return format!("process '{stuck}' can never run");
            };
            let name = self.name(j);
            match self.status(j) {
                Status::Failed { .. } => {
                    return format!(
                        "process '{stuck}' can never run because '{name}' failed permanently"
                    );
                }
                Status::Stopped => {
                    return format!("process '{stuck}' can never run because '{name}' was stopped");
                }
                _ if seen.contains(&j) => {
                    return format!(
                        "process '{stuck}' can never run: order constraints form a cycle \
                         through '{name}'"
                    );
                }
                _ => {
                    seen.push(j);
                    current = j;
                }
            }
        }
    }
}

fn failed(reason: String) -> (Status, Verdict) {
    (
        Status::Failed {
            reason: reason.clone(),
        },
        Verdict::PermanentlyFailed { reason },
    )
}
