//! End-to-end tests of status reports: `hearth run --scheduler` against the real receiver of
//! `hearth_scheduler::receiver`, run in this test's own tokio runtime, stopped and started again
//! on the same port while the executor keeps (or loses) updates to deliver.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Env, TestResult, report_states, show, wait_output, wait_until};
use hearth_checkpoints::record::TaskState;
use hearth_checkpoints::replay::TaskReplay;
use hearth_scheduler::api::{ScheduleStatus, StatusUpdate};
use hearth_scheduler::receiver::{StatusStore, serve};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(30);

/// How long the receiver stays down once the executor has an update to deliver.
const OUTAGE: Duration = Duration::from_millis(500);

/// A receiver serving `store` on one loopback port until stopped.
struct Receiver {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<std::io::Result<()>>,
}

/// A loopback listener on `port` (0: any free one) that may reuse a port just closed.
fn listener(rt: &Runtime, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let _guard = rt.enter();
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(64)
}

impl Receiver {
    fn start(rt: &Runtime, listener: tokio::net::TcpListener, store: Arc<StatusStore>) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = rt.spawn(serve(listener, store, async {
            let _ = stopped.await;
        }));
        Receiver { stop, handle }
    }

    /// Stop serving and wait (bounded) until the port is closed.
    fn stop(self, rt: &Runtime) {
        let _ = self.stop.send(());
        let handle = self.handle;
        let joined = rt.block_on(async { tokio::time::timeout(LIMIT, handle).await });
        assert!(
            matches!(joined, Ok(Ok(Ok(())))),
            "the receiver did not stop cleanly: {joined:?}"
        );
    }
}

/// `(state, seq)` of the applied updates.
fn applied(store: &StatusStore, task_id: &str) -> Vec<(ScheduleStatus, u64)> {
    store
        .applied(task_id)
        .iter()
        .map(|u: &StatusUpdate| (u.state, u.seq))
        .collect()
}

/// `(state, seq)` of the updates written to the checkpoint, in order.
fn report_seqs(r: &TaskReplay) -> Vec<(&str, i64)> {
    r.reports.iter().map(|u| (u.state.name(), u.seq)).collect()
}

/// A task that runs until killed and has no health check (RUNNING at once). It touches
/// `started` once it runs: a kill sent before that may race the process's start (see the
/// ignored test in tests/health.rs), which is not what these tests are about.
fn sleeper(env: &Env, name: &str) -> std::path::PathBuf {
    env.task(
        name,
        json!([{"name": "sleep", "cmdline": "touch started; exec sleep 600"}]),
        json!({}),
    )
}

fn wait_started(env: &Env, name: &str) {
    let marker = env.sandbox(name).join("started");
    wait_until("the process to start", LIMIT, || marker.exists()).unwrap();
}

#[test]

fn status_updates_arrive_once_in_order_across_a_scheduler_outage() -> TestResult {
    let env = Env::new();
    let rt = Runtime::new()?;
    let store = StatusStore::new();
    let first = listener(&rt, 0)?;
    let port = first.local_addr()?.port();
    let receiver = Receiver::start(&rt, first, store.clone());
    let url = format!("http://127.0.0.1:{port}");
    let cfg = sleeper(&env, "outage");
    let exec = env.spawn(&cfg, "outage", &["--scheduler", &url]);

    // Written first, numbered 1, 2: only then are they sent.
    let r = env.wait_replay("outage", "RUNNING in the checkpoint", LIMIT, |r| {
        report_states(r).iter().any(|s| s == "RUNNING")
    });
    assert_eq!(report_seqs(&r), [("STARTING", 1), ("RUNNING", 2)]);
    wait_until("STARTING and RUNNING to arrive", LIMIT, || {
        store.applied("outage").len() >= 2
    })
    .unwrap();
    receiver.stop(&rt);
    wait_started(&env, "outage");

    let kill = env.kill("outage");
    assert!(kill.status.success(), "{}", show(&kill));
    let r = env.wait_replay(
        "outage",
        "the KILLED update in the checkpoint",
        LIMIT,
        |r| report_states(r).iter().any(|s| s == "KILLED"),
    );
    assert!(
        r.reports_acked < 3,
        "KILLED was acknowledged with no receiver"
    );
    let received = store.received();
    // The outage: the port stays closed for a while after KILLED was written (the executor
    // retries with a backoff meanwhile).
    std::thread::sleep(OUTAGE);
    let receiver = Receiver::start(&rt, listener(&rt, port).unwrap(), store.clone());

    let out = wait_output(exec, LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(
        applied(&store, "outage"),
        [
            (ScheduleStatus::Starting, 1),
            (ScheduleStatus::Running, 2),
            (ScheduleStatus::Killed, 3),
        ]
    );
    assert!(store.received() > received, "nothing was re-sent");
    let r = env.replay("outage");
    assert_eq!(r.state(), TaskState::Killed);
    assert_eq!(r.reports_acked, 3, "the executor recorded every ack");
    receiver.stop(&rt);
    Ok(())
}

#[test]

fn status_updates_arrive_once_in_order_also_across_an_executor_kill_9_and_restart() -> TestResult {
    let env = Env::new();
    let rt = Runtime::new()?;
    let store = StatusStore::new();
    // Reserve a port, then leave it closed: the scheduler is down from the start.
    let port = listener(&rt, 0)?.local_addr()?.port();
    let url = format!("http://127.0.0.1:{port}");
    let cfg = sleeper(&env, "crash");
    let args = ["--scheduler", url.as_str()];

    let mut exec = env.spawn(&cfg, "crash", &args);
    let r = env.wait_replay("crash", "RUNNING in the checkpoint", LIMIT, |r| {
        report_states(r).iter().any(|s| s == "RUNNING")
    });
    assert_eq!(report_seqs(&r), [("STARTING", 1), ("RUNNING", 2)]);
    assert_eq!(r.reports_acked, 0);
    exec.kill().unwrap();
    exec.wait().unwrap();

    let receiver = Receiver::start(&rt, listener(&rt, port)?, store.clone());
    let exec = env.spawn(&cfg, "crash", &args);
    wait_until("the unacknowledged updates to be re-sent", LIMIT, || {
        store.applied("crash").len() >= 2
    })
    .unwrap();
    wait_started(&env, "crash");
    let kill = env.kill("crash");
    assert!(kill.status.success(), "{}", show(&kill));
    let out = wait_output(exec, LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));

    // The restarted executor re-sends STARTING and RUNNING with their numbers and reports no
    // second RUNNING: RUNNING is once per task.
    assert_eq!(
        applied(&store, "crash"),
        [
            (ScheduleStatus::Starting, 1),
            (ScheduleStatus::Running, 2),
            (ScheduleStatus::Killed, 3),
        ]
    );
    let r = env.replay("crash");
    assert_eq!(r.state(), TaskState::Killed);
    assert_eq!(
        report_seqs(&r),
        [("STARTING", 1), ("RUNNING", 2), ("KILLED", 3)]
    );
    assert_eq!(r.reports_acked, 3);
    receiver.stop(&rt);
    Ok(())
}
