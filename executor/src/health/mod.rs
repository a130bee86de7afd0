//! Health checks (DESIGN section 5) and the HTTP lifecycle endpoints used by teardown
//! (section 6).
//!
//! * [`algorithm`]: the pure decision rules (grace attempts, successes to RUNNING, failure
//!   limit, deadline), unit-tested on tables of outcomes.
//! * [`http`]: the keep-alive HTTP checker and [`post_lifecycle`](http::post_lifecycle).
//! * [`shell`]: the `bash -c` checker, killed with its process group at the timeout.
//! * [`snooze`]: the `.healthchecksnooze` file and its expiry.
//! * [`HealthMonitor`]: one tokio task that runs checks every `interval`, applies the snooze and
//!   the algorithm, and reports [`HealthEvent`]s on a channel.
//!
//! The monitor runs the first check right away (grace is counted in attempts, as Aurora does),
//! then one check per `interval`, measured from the end of the previous check, so checks never
//! overlap. Between checks it sleeps on a timer — waking early only when an active snooze
//! expires, to report its end on time. All timing goes through `tokio::time`.
//!
//! A check is meant to cost little: the checker is owned by the monitor's task and called in
//! place (no task, no boxed future per check), the snooze file is one `fstatat` (read only when
//! it changed), and an HTTP check is one write and one read on a kept connection. The monitor
//! keeps two timers: the sleep to the next check, and that check's deadline (its start plus the
//! timeout). The deadline is set when the sleep begins, not when the check starts: a timer
//! registered while no earlier one is pending (as right after the sleep ended) makes tokio
//! wake its driver at once, one more turn of the runtime per check. A healthy check thus wakes
//! the task twice: at the sleep's end and when the response arrives.
//!
//! Events, in the order they happen:
//! * `SnoozeStarted` / `SnoozeEnded`: every snooze transition (the executor records a
//!   checkpoint `SnoozeEvent` for each). The snooze file is looked at before every check.
//! * `Healthy`: once, when the task reaches RUNNING.
//! * `Unhealthy`: once, with the full reason `Failed health check! <reason>`; the monitor
//!   then stops.

use std::future::Future;
use std::path::PathBuf;
use std::pin::{Pin, pin};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_checkpoints::config::{HealthCheckConfig, HealthChecker};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

pub mod algorithm;
pub mod http;
pub mod shell;
pub mod snooze;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests write snooze files directly
mod tests;

pub use algorithm::{CheckOutcome, HealthAlgorithm, Verdict};
pub use http::{BoundedResponse, HttpChecker, HttpProbe, PostOutcome, post_lifecycle};
pub use shell::ShellChecker;
pub use snooze::{SNOOZE_FILE, SnoozeWatch};

/// A check that starts this much later than planned has its deadline moved (tokio's timer
/// counts in milliseconds anyway).
const LATE: Duration = Duration::from_millis(1);

/// Prefix of the reason of a task failed by its health check (Aurora's wording).
pub const FAILED_HEALTH_CHECK: &str = "Failed health check!";

/// What the health monitor tells the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// The task reached RUNNING (`min_consecutive_successes` successes in a row).
    Healthy,
    /// The task is unhealthy; `reason` is the full text (`Failed health check! ...`).
    Unhealthy { reason: String },
    /// Checks are snoozed from now; `expires_ms` (ms since the epoch) when the file said so.
    SnoozeStarted {
        expires_ms: Option<i64>,
        detail: String,
    },
    /// The snooze ended (`file removed` or `expired`).
    SnoozeEnded { detail: String },
}

#[derive(Debug, Error)]
pub enum HealthError {
    /// An HTTP checker needs the task's `health` port.
    #[error("the http health check needs a health port, and the task has none")]
    NoHealthPort,
    #[error("health-check endpoint {endpoint:?} cannot be requested: {problem}")]
    Endpoint {
        endpoint: String,
        problem: &'static str,
    },
}

/// Something that can be checked: `Ok(())` healthy, `Err(reason)` unhealthy. Implemented by the
/// real checkers; tests use fakes. The monitor owns its probe and runs one check at a time;
/// `deadline` is the timer of the check's timeout (see [`Schedule`]), by which the check fails.
pub trait Probe: Send + 'static {
    fn check(
        &mut self,
        deadline: Pin<&mut Sleep>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

impl Probe for HttpChecker {
    fn check(
        &mut self,
        deadline: Pin<&mut Sleep>,
    ) -> impl Future<Output = Result<(), String>> + Send {
        self.check_until(deadline)
    }
}

impl Probe for ShellChecker {
    fn check(
        &mut self,
        deadline: Pin<&mut Sleep>,
    ) -> impl Future<Output = Result<(), String>> + Send {
        self.check_until(deadline)
    }
}

/// Timing of the monitor loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// From the end of a check to the start of the next.
    pub interval: Duration,
    /// From the start of a check to its deadline.
    pub timeout: Duration,
}

/// Runs the health checks of one task in its own tokio task. Dropping it (or [`stop`]) stops
/// the checks, killing a shell check in flight.
///
/// [`stop`]: HealthMonitor::stop
#[derive(Debug)]
pub struct HealthMonitor {
    handle: JoinHandle<()>,
}

/// Wall-clock now, ms since the epoch (snooze expiries are wall-clock times).
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl HealthMonitor {
    /// Start checking as `cfg` says. `port` is the task's `health` port (needed by the HTTP
    /// checker), `env` the task's environment (`NAME=value`), `creds` the role user's
    /// `(uid, gid, groups)` when the executor switches users. Must be called inside a tokio
    /// runtime.
    pub fn start(
        cfg: &HealthCheckConfig,
        port: Option<u16>,
        sandbox: PathBuf,
        env: Vec<String>,
        creds: Option<(u32, u32, Vec<u32>)>,
    ) -> Result<(HealthMonitor, mpsc::Receiver<HealthEvent>), HealthError> {
        let algorithm = HealthAlgorithm::from_config(cfg);
        let schedule = Schedule {
            interval: cfg.interval,
            timeout: cfg.timeout,
        };
        let snooze = SnoozeWatch::new(&sandbox);
        Ok(match &cfg.checker {
            HealthChecker::Http {
                endpoint,
                expected_response,
                expected_response_code,
            } => {
                let port = port.ok_or(HealthError::NoHealthPort)?;
                let probe = HttpChecker::new(
                    port,
                    endpoint,
                    expected_response,
                    *expected_response_code,
                    cfg.timeout,
                )?;
                Self::start_with(probe, algorithm, schedule, snooze)
            }
            HealthChecker::Shell { shell_command } => {
                let probe = ShellChecker::new(shell_command, sandbox, &env, creds, cfg.timeout);
                Self::start_with(probe, algorithm, schedule, snooze)
            }
        })
    }

    /// Start with any probe (the seam tests use).
    pub fn start_with<P: Probe>(
        probe: P,
        algorithm: HealthAlgorithm,
        schedule: Schedule,
        snooze: SnoozeWatch,
    ) -> (HealthMonitor, mpsc::Receiver<HealthEvent>) {
        let (tx, rx) = mpsc::channel(16);
        let handle = tokio::spawn(run(probe, algorithm, schedule, snooze, tx));
        (HealthMonitor { handle }, rx)
    }

    /// Stop checking (idempotent). A check in flight is abandoned; a shell check's process
    /// group is killed.
    pub fn stop(&self) {
        self.handle.abort();
    }

    /// Whether the monitor's task has ended (stopped, or after reporting `Unhealthy`).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

impl Drop for HealthMonitor {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Look at the snooze file: a stat in place, and, only when the file changed, a small read on
/// tokio's blocking pool (not on the executor's one runtime thread). `None` when the runtime is
/// shutting down.
async fn poll_snooze(snooze: &mut SnoozeWatch) -> Option<Option<HealthEvent>> {
    let now = wall_ms();
    let read = match snooze.look(now) {
        Ok(event) => return Some(event),
        Err(read) => read,
    };
    match tokio::task::spawn_blocking(move || read.read()).await {
        Ok(found) => Some(snooze.apply(found, now)),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

async fn run<P: Probe>(
    mut probe: P,
    mut algorithm: HealthAlgorithm,
    schedule: Schedule,
    mut snooze: SnoozeWatch,
    tx: mpsc::Sender<HealthEvent>,
) {
    // The deadline of the check to come: see the module's documentation for why it is set
    // before the wait for that check, and not when it starts.
    let mut deadline = pin!(tokio::time::sleep(schedule.timeout));
    // The sleep between checks, one timer reset each time.
    let mut pause = pin!(tokio::time::sleep_until(Instant::now()));
    loop {
        let Some(event) = poll_snooze(&mut snooze).await else {
            return;
        };
        if let Some(event) = event
            && tx.send(event).await.is_err()
        {
            return;
        }
        let outcome = if snooze.is_active() {
            CheckOutcome::Snoozed
        } else {
            // A check that starts late (a busy runtime) still gets all of its timeout.
            let full = Instant::now() + schedule.timeout;
            if full > deadline.deadline() + LATE {
                deadline.as_mut().reset(full);
            }
            match probe.check(deadline.as_mut()).await {
                Ok(()) => CheckOutcome::Healthy,
                Err(reason) => {
                    tracing::warn!(%reason, "health check failed");
                    CheckOutcome::Unhealthy(reason)
                }
            }
        };
        match algorithm.record(outcome) {
            Verdict::BecameRunning => {
                if tx.send(HealthEvent::Healthy).await.is_err() {
                    return;
                }
            }
            Verdict::Unhealthy(reason) => {
                let reason = format!("{FAILED_HEALTH_CHECK} {reason}");
                let _ = tx.send(HealthEvent::Unhealthy { reason }).await;
                return;
            }
            Verdict::Starting | Verdict::Running => {}
        }
        // Wait for the next check; wake early only to report a snooze expiring.
        let next = Instant::now() + schedule.interval;
        // Replaced, not reset: a pending timer moved later stays in tokio's wheel at its old
        // place, and the driver would wake there for nothing.
        deadline.set(tokio::time::sleep_until(next + schedule.timeout));
        while let Some(expires) = snooze.expires_ms() {
            let wait_ms = u64::try_from(expires.saturating_sub(wall_ms())).unwrap_or(0);
            let wake = Instant::now() + Duration::from_millis(wait_ms);
            if wake >= next {
                break;
            }
            sleep_registering(pause.as_mut(), wake, deadline.as_mut()).await;
            let Some(event) = poll_snooze(&mut snooze).await else {
                return;
            };
            if let Some(event) = event
                && tx.send(event).await.is_err()
            {
                return;
            }
            if snooze.expires_ms() == Some(expires) {
                // Wall clock behind the timer (or paused time): do not spin; wait for `next`.
                break;
            }
        }
        sleep_registering(pause.as_mut(), next, deadline.as_mut()).await;
    }
}

/// Sleep on `pause` until `until`, registering `deadline` (a later timer) with tokio's timer on
/// the way.
async fn sleep_registering(
    mut pause: Pin<&mut Sleep>,
    until: Instant,
    mut deadline: Pin<&mut Sleep>,
) {
    pause.as_mut().reset(until);
    std::future::poll_fn(|cx| {
        // Polled only to register it: whether it has passed is the check's business.
        let _ = deadline.as_mut().poll(cx);
        pause.as_mut().poll(cx)
    })
    .await;
}
