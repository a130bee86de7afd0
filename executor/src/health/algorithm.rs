//! The decision rules of health checking, without I/O or time: feed check outcomes, read
//! verdicts.
//!
//! The rules are Apache Aurora's (its executor's threaded health checker), restated:
//!
//! * `forgiving = ceil(initial_interval / interval)`: a failure among the first `forgiving`
//!   attempts is forgiven (it resets the success streak but counts nothing against the task).
//! * The task is RUNNING after `min_consecutive_successes` successes in a row.
//! * It is unhealthy when its failures in a row (not forgiven) exceed `max_consecutive_failures`.
//! * Before RUNNING it must get there within `forgiving + max_consecutive_failures +
//!   min_consecutive_successes` attempts ("max attempts"). Two consequences: a failure that
//!   leaves fewer attempts than the successes still needed fails the task at once (fail fast,
//!   applied while more than one attempt remains), and once the attempts are used up without
//!   reaching RUNNING the task is unhealthy with `Not enough successful health checks in time.`
//!
//! Where we differ, deliberately:
//! * Aurora noticed the exhausted attempts only at the start of the *next* check, one interval
//!   later; we report it right after the attempt that exhausts them. The same checks are run and
//!   the same verdict reached, only sooner.
//! * A snoozed check (the operator's `.healthchecksnooze`) counts as a success for the failure
//!   streak (it resets it) and never makes the task unhealthy, as in Aurora. Aurora still counted
//!   it as an attempt, so a task snoozed while starting failed with "Not enough successful health
//!   checks in time." as soon as it could — even while snoozed. Here a snoozed check is not an
//!   attempt. As in Aurora it does not prove health either: it restarts the success streak, so a
//!   snoozed task becomes RUNNING only on real successes.
//! * Unhealthy is final: once reached, every later outcome returns the same verdict.

use std::time::Duration;

/// The outcome of one scheduled check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    Healthy,
    /// The check failed, with why.
    Unhealthy(String),
    /// Snoozed: the check was not run.
    Snoozed,
}

/// What the task's health is after an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not RUNNING yet, not unhealthy either.
    Starting,
    /// This outcome made the task RUNNING.
    BecameRunning,
    /// RUNNING (since an earlier outcome).
    Running,
    /// Unhealthy, with the reason of the check that decided it (without the `Failed health
    /// check!` prefix).
    Unhealthy(String),
}

/// Reason when the attempts run out before the task proved healthy (Aurora's wording).
pub const NOT_ENOUGH_SUCCESSES: &str = "Not enough successful health checks in time.";

/// The health-check state machine (see the module doc).
#[derive(Debug, Clone)]
pub struct HealthAlgorithm {
    forgiving_attempts: u32,
    max_attempts_to_running: u32,
    max_consecutive_failures: u32,
    min_consecutive_successes: u32,
    attempts: u32,
    consecutive_failures: u32,
    consecutive_successes: u32,
    running: bool,
    unhealthy: Option<String>,
}

/// `ceil(a / b)` for durations, in whole attempts; 0 when `b` is zero.
fn ceil_div(a: Duration, b: Duration) -> u32 {
    let (a, b) = (a.as_nanos(), b.as_nanos());
    if b == 0 {
        return 0;
    }
    u32::try_from(a.div_ceil(b)).unwrap_or(u32::MAX)
}

impl HealthAlgorithm {
    pub fn new(
        initial_interval: Duration,
        interval: Duration,
        max_consecutive_failures: u32,
        min_consecutive_successes: u32,
    ) -> Self {
        let forgiving_attempts = ceil_div(initial_interval, interval);
        HealthAlgorithm {
            forgiving_attempts,
            max_attempts_to_running: forgiving_attempts
                .saturating_add(max_consecutive_failures)
                .saturating_add(min_consecutive_successes),
            max_consecutive_failures,
            min_consecutive_successes,
            attempts: 0,
            consecutive_failures: 0,
            consecutive_successes: 0,
            running: false,
            unhealthy: None,
        }
    }

    /// From a task's health-check config.
    pub fn from_config(cfg: &hearth_checkpoints::config::HealthCheckConfig) -> Self {
        Self::new(
            cfg.initial_interval,
            cfg.interval,
            cfg.max_consecutive_failures,
            cfg.min_consecutive_successes,
        )
    }

    /// Attempts whose failures are forgiven.
    pub fn forgiving_attempts(&self) -> u32 {
        self.forgiving_attempts
    }

    /// Attempts allowed to reach RUNNING.
    pub fn max_attempts_to_running(&self) -> u32 {
        self.max_attempts_to_running
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// Apply one outcome.
    pub fn record(&mut self, outcome: CheckOutcome) -> Verdict {
        if let Some(reason) = &self.unhealthy {
            return Verdict::Unhealthy(reason.clone());
        }
        let was_running = self.running;
        match outcome {
            CheckOutcome::Snoozed => {
                self.consecutive_failures = 0;
                self.consecutive_successes = 0;
            }
            CheckOutcome::Healthy => {
                self.count_attempt();
                self.consecutive_failures = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                if self.consecutive_successes >= self.min_consecutive_successes {
                    self.running = true;
                }
            }
            CheckOutcome::Unhealthy(reason) => {
                self.count_attempt();
                self.consecutive_successes = 0;
                if self.attempts > self.forgiving_attempts {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                    if self.should_fail_fast()
                        || self.consecutive_failures > self.max_consecutive_failures
                    {
                        return self.fail(reason);
                    }
                }
            }
        }
        if !self.running && self.attempts > self.max_attempts_to_running {
            return self.fail(NOT_ENOUGH_SUCCESSES.to_owned());
        }
        match (was_running, self.running) {
            (false, true) => Verdict::BecameRunning,
            (_, true) => Verdict::Running,
            _ => Verdict::Starting,
        }
    }

    fn count_attempt(&mut self) {
        // Past the limit the count no longer matters; stop one above it, as Aurora does.
        if self.attempts <= self.max_attempts_to_running {
            self.attempts += 1;
        }
    }

    /// Before RUNNING: more than one attempt left, but fewer than the successes still needed.
    fn should_fail_fast(&self) -> bool {
        if self.running {
            return false;
        }
        let remaining = self.max_attempts_to_running.saturating_sub(self.attempts);
        let needed = self
            .min_consecutive_successes
            .saturating_sub(self.consecutive_successes);
        remaining > 1 && needed > remaining
    }

    fn fail(&mut self, reason: String) -> Verdict {
        self.unhealthy = Some(reason.clone());
        Verdict::Unhealthy(reason)
    }
}
