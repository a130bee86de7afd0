//! Helpers shared by the integration tests of the workspace's crates (a dev-dependency only).
//!
//! Tests of real processes wait for a condition with a deadline, never for a fixed time:
//! [`wait_until`] on a plain test thread, [`wait_until_async`] inside a tokio runtime (where a
//! blocking sleep would stall the very tasks being waited for). Both poll with a short backoff
//! (1 ms, doubling up to 50 ms), so a condition that holds soon is seen soon.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

const FIRST_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// A wait that ran out of time; its message names what was awaited and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    pub what: String,
    pub limit: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.limit, self.what
        )
    }
}

impl Error for TimedOut {}

/// What a condition returns: a `bool`, or `Result<bool, Box<dyn Error>>` (the tests' own error
/// type) when checking it can fail. An error ends the wait at once and is returned as is.
pub trait Check {
    /// The wait's error: [`TimedOut`] for a plain `bool`, else the condition's own error type.
    type Error: From<TimedOut>;
    fn check(self) -> Result<bool, Self::Error>;
}

impl Check for bool {
    type Error = TimedOut;
    fn check(self) -> Result<bool, TimedOut> {
        Ok(self)
    }
}

impl Check for Result<bool, Box<dyn Error>> {
    type Error = Box<dyn Error>;
    fn check(self) -> Self {
        self
    }
}

fn timed_out(what: &str, limit: Duration) -> TimedOut {
    TimedOut {
        what: what.to_owned(),
        limit,
    }
}

/// Poll `cond` on this thread until it holds; fail once `limit` has passed since the start.
pub fn wait_until<C: Check>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> C,
) -> Result<(), C::Error> {
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    while !cond().check()? {
        if Instant::now() >= deadline {
            return Err(timed_out(what, limit).into());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(MAX_PAUSE);
    }
    Ok(())
}

/// [`wait_until`] for a condition checked inside a tokio runtime: it pauses with
/// `tokio::time::sleep`, so the runtime's other tasks run meanwhile.
pub async fn wait_until_async<C, F, Fut>(
    what: &str,
    limit: Duration,
    mut cond: F,
) -> Result<(), C::Error>
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let deadline = Instant::now() + limit;
    let mut pause = FIRST_PAUSE;
    while !cond().await.check()? {
        if Instant::now() >= deadline {
            return Err(timed_out(what, limit).into());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut calls = 0;
        let done = wait_until("the third call", Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        });
        assert_eq!(done, Ok(()));
        assert_eq!(calls, 3);
    }

    #[test]
    fn a_timeout_names_what_was_awaited_and_for_how_long() {
        let err = wait_until("never", Duration::from_millis(20), || false);
        let Err(err) = err else {
            panic!("a false condition did not time out")
        };
        assert_eq!(err.to_string(), "timed out after 20ms waiting for never");
    }

    #[test]
    fn a_failing_check_ends_the_wait_with_its_error() {
        let mut calls = 0;
        let r = wait_until("a check that fails", Duration::from_secs(5), || {
            calls += 1;
            Err("no such cgroup".into())
        });
        let Err(err) = r else {
            panic!("a failing check did not end the wait")
        };
        assert_eq!(err.to_string(), "no such cgroup");
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn the_async_wait_lets_the_runtime_run_what_it_awaits() {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(());
        });
        let r = wait_until_async("the spawned task", Duration::from_secs(5), || {
            std::future::ready(rx.try_recv().is_ok())
        })
        .await;
        assert_eq!(r, Ok(()));
    }
}
