//! The core actor: the one writer.
//!
//! One thread owns the [`State`] and the [`Storage`]. Callers send it operations (closures over
//! the state, with the time passed in). The thread takes every operation queued, applies them
//! all, places the pending tasks, commits every change in **one** transaction (group commit),
//! and only then answers the callers and wakes the agents whose orders changed — so nobody
//! ever observes a change that is not durable. If a commit fails the thread stops: the
//! callers get no answer (HTTP 503), the server shuts down, and a restart recovers exactly what
//! was acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

use crate::state::State;
use crate::storage::{Storage, StorageError, commit_state};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

type Deliver = Box<dyn FnOnce() + Send>;
type Op = Box<dyn FnOnce(&mut State, i64) -> Deliver + Send>;

/// The core stopped (its storage failed, or the server is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the scheduler core has stopped (storage failure or shutdown); nothing was acknowledged")]
pub struct CoreGone;

/// Why the core thread stopped.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A commit failed: nothing of its batch was acknowledged.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An operation panicked (a bug): the model may be inconsistent, so the core stops before
    /// committing anything of that batch.
    #[error("an operation of the scheduler core panicked: {0}")]
    Panicked(String),
    #[error("cannot start the core thread: {0}")]
    Spawn(String),
}

/// Upper bounds (seconds) of the commit latency histogram.
pub const COMMIT_BUCKETS: [f64; 10] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0];

/// Figures the core publishes for `/metrics`.
#[derive(Debug, Default)]
pub struct CoreStats {
    pub commits: AtomicU64,
    pub ops: AtomicU64,
    pub failed: AtomicBool,
    /// Signalled once when the core stops on a failed commit.
    pub stopped: tokio::sync::Notify,
    /// Commit latency: count per bucket of [`COMMIT_BUCKETS`] (+Inf last), and the sum in µs.
    pub latency: Mutex<([u64; 11], u64)>,
}

impl CoreStats {
    fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut l = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        let i = COMMIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        l.0[i] += 1;
        l.1 += d.as_micros() as u64;
    }
}

/// A handle to send operations to the core.
#[derive(Debug, Clone)]
pub struct CoreHandle {
    tx: mpsc::UnboundedSender<Op>,
    pub stats: Arc<CoreStats>,
}

impl CoreHandle {
    /// Run `f` on the state inside the next batch; its result arrives once the batch is durable.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State, i64) -> R + Send + 'static,
    ) -> Result<R, CoreGone> {
        self.send(f)?.await.map_err(|_| CoreGone)
    }

    /// Like [`CoreHandle::call`], from a thread that is not in the runtime (benchmarks).
    pub fn call_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State, i64) -> R + Send + 'static,
    ) -> Result<R, CoreGone> {
        self.send(f)?.blocking_recv().map_err(|_| CoreGone)
    }

    /// Queue `f` and return a receiver for its result without waiting (pipelined callers).
    pub fn send<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State, i64) -> R + Send + 'static,
    ) -> Result<oneshot::Receiver<R>, CoreGone> {
        let (tx, rx) = oneshot::channel();
        let op: Op = Box::new(move |s, now| {
            let r = f(s, now);
            Box::new(move || {
                let _ = tx.send(r);
            })
        });
        self.tx.send(op).map_err(|_| CoreGone)?;
        Ok(rx)
    }
}

/// Most operations applied in one batch.
pub const MAX_BATCH: usize = 4096;

/// Start the core thread over `state` (already loaded) and `storage`. The thread ends when every
/// handle is dropped (`Ok`) or a commit fails (`Err`).
pub fn spawn(
    mut storage: Box<dyn Storage>,
    mut state: State,
    clock: fn() -> i64,
) -> (CoreHandle, JoinHandle<Result<(), CoreError>>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Op>();
    let stats = Arc::new(CoreStats::default());
    let st = stats.clone();
    let thread = std::thread::Builder::new()
        .name("hearth-sched-core".into())
        .spawn(move || {
            let mut delivers: Vec<Deliver> = Vec::with_capacity(MAX_BATCH);
            loop {
                let Some(first) = rx.blocking_recv() else {
                    return Ok(());
                };
                let now = clock();
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    delivers.push(first(&mut state, now));
                    while delivers.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(op) => delivers.push(op(&mut state, now)),
                            Err(_) => break,
                        }
                    }
                    state.place_pending(now);
                }));
                if let Err(panic) = applied {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    st.failed.store(true, Ordering::SeqCst);
                    st.stopped.notify_one();
                    tracing::error!("an operation panicked, the scheduler stops: {what}");
                    return Err(CoreError::Panicked(what));
                }
                match commit_state(storage.as_mut(), &mut state) {
                    Ok(d) => {
                        if d > Duration::ZERO {
                            st.commits.fetch_add(1, Ordering::Relaxed);
                            st.record(d);
                        }
                    }
                    Err(e) => {
                        st.failed.store(true, Ordering::SeqCst);
                        st.stopped.notify_one();
                        tracing::error!("commit failed, the scheduler stops: {e}");
                        // Nobody is answered: their changes are not durable.
                        delivers.clear();
                        return Err(CoreError::Storage(e));
                    }
                }
                st.ops.fetch_add(delivers.len() as u64, Ordering::Relaxed);
                for d in delivers.drain(..) {
                    d();
                }
                state.notify_woken();
            }
        });
    let thread = match thread {
        Ok(t) => t,
        // Spawning a thread fails only when the system is out of resources.
        Err(e) => {
            let reason = e.to_string();
            std::thread::spawn(move || Err(CoreError::Spawn(reason)))
        }
    };
    (CoreHandle { tx, stats }, thread)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::lifecycle::LifecycleConfig;
    use crate::storage::{Batch, Snapshot};

    /// A storage whose commits fail after `ok` successes.
    struct Failing {
        ok: u32,
        committed: Arc<Mutex<u32>>,
    }

    impl Storage for Failing {
        fn load_base(&mut self) -> Result<Snapshot, StorageError> {
            Ok(Snapshot::default())
        }
        fn count_tasks(&mut self) -> Result<usize, StorageError> {
            Ok(0)
        }
        fn load_tasks(
            &mut self,
            _: &mut dyn FnMut(crate::model::Task),
        ) -> Result<(), StorageError> {
            Ok(())
        }
        fn commit(&mut self, _: &Batch<'_>) -> Result<(), StorageError> {
            if self.ok == 0 {
                return Err(StorageError::Corrupt {
                    path: "x".into(),
                    what: "disk",
                    key: String::new(),
                    reason: "full".into(),
                });
            }
            self.ok -= 1;
            *self.committed.lock().unwrap() += 1;
            Ok(())
        }
    }

    fn config() -> serde_json::Value {
        serde_json::json!({"task": {"name": "t", "processes": [{"name": "p", "cmdline": "x"}]}})
    }

    #[tokio::test]
    async fn a_failed_commit_answers_nobody_and_stops_the_core() {
        let committed = Arc::new(Mutex::new(0));
        let storage = Failing {
            ok: 1,
            committed: committed.clone(),
        };
        let state = State::new(LifecycleConfig::default(), 60_000, None);
        let (core, thread) = spawn(Box::new(storage), state, now_ms);
        let r = core
            .call(|s, now| s.create_job("c/r/prod/a".parse().unwrap(), config(), "u", now))
            .await
            .unwrap();
        assert!(r.is_ok());
        let r = core
            .call(|s, now| s.create_job("c/r/prod/b".parse().unwrap(), config(), "u", now))
            .await;
        assert_eq!(r.unwrap_err(), CoreGone);
        assert!(core.stats.failed.load(Ordering::SeqCst));
        assert!(matches!(thread.join().unwrap(), Err(CoreError::Storage(_))));
        assert_eq!(*committed.lock().unwrap(), 1);
        // Reads after the failure get no answer either.
        assert!(core.call(|s, _| s.jobs.len()).await.is_err());
    }

    #[tokio::test]
    async fn a_panicking_operation_stops_the_core_without_committing() {
        let committed = Arc::new(Mutex::new(0));
        let storage = Failing {
            ok: 10,
            committed: committed.clone(),
        };
        let state = State::new(LifecycleConfig::default(), 60_000, None);
        let (core, thread) = spawn(Box::new(storage), state, now_ms);
        let r: Result<(), CoreGone> = core
            .call(|s, now| {
                s.create_job("c/r/prod/a".parse().unwrap(), config(), "u", now)
                    .unwrap();
                panic!("a bug");
            })
            .await;
        assert_eq!(r, Err(CoreGone));
        assert!(matches!(thread.join().unwrap(), Err(CoreError::Panicked(m)) if m == "a bug"));
        assert_eq!(*committed.lock().unwrap(), 0);
    }
}
