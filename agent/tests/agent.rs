//! End-to-end tests of the agent: [`hearth_agent::run`] in this process against a small fake
//! scheduler (axum, in-process, speaking the `wire.rs` agent contract and the status API), with
//! real `hearth run` / `hearth kill` children of the real `hearth` binary.
//!
//! The binary is the workspace's debug build, `<workspace>/target/debug/hearth` (or `$HEARTH_BIN`);
//! the first test builds it with `cargo build -p hearth --bin hearth` when `cargo` runs the tests,
//! so `cargo test -p hearth-agent` needs nothing else. Tasks run as the test's own user
//! (`--no-setuid`) without cgroups (`--no-cgroups`); every wait has a deadline.
#![allow(clippy::unwrap_used)]

use hearth_testkit::wait_until;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hearth_agent::AgentConfig;
use hearth_scheduler::api::{ScheduleStatus, StatusAck, StatusUpdate};
use hearth_scheduler::wire::{AgentOrders, AgentSync, AgentTask, Assignment};
use serde_json::json;
use tokio::sync::{Notify, oneshot};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const LIMIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "agent-token-0123456789";

/// The `hearth` binary, built once per test run.
fn hearth_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HEARTH_BIN") {
            return PathBuf::from(p);
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "hearth", "--bin", "hearth"])
            .current_dir(&workspace)
            .status()
            .expect("run cargo build -p hearth");
        assert!(status.success(), "cargo build -p hearth failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace.join("target"), PathBuf::from);
        let bin = target.join("debug").join("hearth");
        assert!(bin.exists(), "no hearth binary at {}", bin.display());
        bin
    })
    .clone()
}

/// What the fake scheduler has seen and will say.
#[derive(Debug, Default)]
struct Fake {
    epoch: u64,
    /// Orders by the epoch that issued them; sent while the agent has not acknowledged them.
    launch: Vec<(u64, Assignment)>,
    kill: Vec<(u64, String)>,
    syncs: Vec<AgentSync>,
    /// Status updates that carried the right token.
    statuses: Vec<StatusUpdate>,
    /// Requests refused for a missing or wrong token.
    refused: u32,
    /// Answer status updates with 503 (the scheduler is failing).
    status_down: bool,
    /// Answer syncs with 503, counting them.
    sync_down: bool,
    failed_syncs: u32,
}

#[derive(Clone)]
struct Scheduler {
    state: Arc<Mutex<Fake>>,
    changed: Arc<Notify>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"))
}

async fn sync(
    State(s): State<Scheduler>,
    headers: HeaderMap,
    Json(req): Json<AgentSync>,
) -> Response {
    if !authorized(&headers) {
        s.state.lock().unwrap().refused += 1;
        return (StatusCode::UNAUTHORIZED, "agent token required").into_response();
    }
    {
        let mut st = s.state.lock().unwrap();
        if st.sync_down {
            st.failed_syncs += 1;
            return (StatusCode::SERVICE_UNAVAILABLE, "storage failed").into_response();
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(req.wait_ms.min(500));
    let acked = req.acked_epoch;
    s.state.lock().unwrap().syncs.push(req);
    loop {
        let notified = s.changed.notified();
        {
            let st = s.state.lock().unwrap();
            if st.epoch > acked || tokio::time::Instant::now() >= deadline {
                let orders = AgentOrders {
                    epoch: st.epoch,
                    launch: st
                        .launch
                        .iter()
                        .filter(|(e, _)| *e > acked)
                        .map(|(_, a)| a.clone())
                        .collect(),
                    kill: st
                        .kill
                        .iter()
                        .filter(|(e, _)| *e > acked)
                        .map(|(_, t)| t.clone())
                        .collect(),
                    agent_timeout_ms: 3_000,
                };
                return Json(orders).into_response();
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn status(
    State(s): State<Scheduler>,
    headers: HeaderMap,
    Json(u): Json<StatusUpdate>,
) -> Response {
    let mut st = s.state.lock().unwrap();
    if !authorized(&headers) {
        st.refused += 1;
        return (StatusCode::UNAUTHORIZED, "agent token required").into_response();
    }
    if st.status_down {
        return (StatusCode::SERVICE_UNAVAILABLE, "storage failed").into_response();
    }
    let duplicate = st
        .statuses
        .iter()
        .any(|x| x.task_id == u.task_id && x.seq == u.seq);
    let ack = StatusAck {
        task_id: u.task_id.clone(),
        seq: u.seq,
        duplicate,
    };
    if !duplicate {
        st.statuses.push(u);
    }
    Json(ack).into_response()
}

impl Scheduler {
    fn launch(&self, a: Assignment) {
        let mut st = self.state.lock().unwrap();
        st.epoch += 1;
        let e = st.epoch;
        st.launch.push((e, a));
        drop(st);
        self.changed.notify_waiters();
    }

    fn kill(&self, task_id: &str) {
        let mut st = self.state.lock().unwrap();
        st.epoch += 1;
        let e = st.epoch;
        st.kill.push((e, task_id.to_owned()));
        drop(st);
        self.changed.notify_waiters();
    }

    /// The task as the last sync reported it (`None`: not reported).
    fn reported(&self, task_id: &str) -> Option<AgentTask> {
        let st = self.state.lock().unwrap();
        st.syncs
            .last()?
            .tasks
            .iter()
            .find(|t| t.task_id == task_id)
            .cloned()
    }

    fn last_sync(&self) -> Option<AgentSync> {
        self.state.lock().unwrap().syncs.last().cloned()
    }

    fn states(&self, task_id: &str) -> Vec<ScheduleStatus> {
        let st = self.state.lock().unwrap();
        st.statuses
            .iter()
            .filter(|u| u.task_id == task_id)
            .map(|u| u.state)
            .collect()
    }
}

/// A test's world: a runtime, the fake scheduler on a loopback port, and a scratch root.
struct World {
    rt: tokio::runtime::Runtime,
    sched: Scheduler,
    url: String,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sched = Scheduler {
            state: Arc::new(Mutex::new(Fake::default())),
            changed: Arc::new(Notify::new()),
        };
        let app = Router::new()
            .route("/api/v1/agents/sync", post(sync))
            .route("/api/v1/status", post(status))
            .with_state(sched.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
                [127, 0, 0, 1],
                0,
            ))))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(async move { axum::serve(listener, app).await });
        World {
            rt,
            sched,
            url,
            dir: tempfile::Builder::new()
                .prefix("hearth-agent-")
                .tempdir()
                .unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn config(&self) -> AgentConfig {
        agent_config(&self.url, &self.root())
    }

    /// Start an agent in a process of its own (this test binary running [`agent_process`]).
    fn spawn_agent_process(&self) -> AgentProcess {
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "agent_process", "--nocapture"])
            .env("HEARTH_AGENT_TEST_URL", &self.url)
            .env("HEARTH_AGENT_TEST_ROOT", self.root())
            .env("HEARTH_BIN", hearth_bin())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        AgentProcess(child)
    }

    /// Start an agent; dropping (or stopping) the handle ends it without touching its tasks.
    fn start_agent(&self) -> AgentHandle {
        let (stop, stopped) = oneshot::channel::<()>();
        let join = self.rt.spawn(hearth_agent::run(self.config(), async move {
            let _ = stopped.await;
        }));
        AgentHandle {
            stop: Some(stop),
            join: Some(join),
        }
    }

    fn sandbox(&self, task_id: &str) -> PathBuf {
        self.root().join("sandboxes").join(task_id)
    }

    fn stop_agent(&self, mut agent: AgentHandle) {
        if let Some(s) = agent.stop.take() {
            let _ = s.send(());
        }
        if let Some(j) = agent.join.take() {
            let r = self
                .rt
                .block_on(async { tokio::time::timeout(LIMIT, j).await });
            assert!(
                matches!(r, Ok(Ok(Ok(())))),
                "the agent did not stop cleanly: {r:?}"
            );
        }
    }
}

fn agent_config(url: &str, root: &Path) -> AgentConfig {
    let mut cfg = AgentConfig::new(url, root);
    cfg.name = "host-a".into();
    cfg.token = Some(TOKEN.into());
    cfg.hearth_bin = hearth_bin();
    cfg.extra_run_args = vec!["--no-setuid".into(), "--no-cgroups".into()];
    cfg.attributes.insert("rack".into(), "r1".into());
    cfg
}

/// An agent process, SIGKILLed and reaped when dropped (also when a test fails).
struct AgentProcess(std::process::Child);

impl AgentProcess {
    fn kill_9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct AgentHandle {
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<Result<(), hearth_agent::AgentError>>>,
}

/// An assignment of a task that waits for a `stop` file in its sandbox (at most a few minutes,
/// so that a failed test leaves nothing running for long), after writing its pid.
fn waiter(task_id: &str) -> Assignment {
    Assignment {
        task_id: task_id.to_owned(),
        job: "c/root/test/waiter".parse().unwrap(),
        instance: 0,
        config: json!({
            "cluster": "c", "role": "root", "environment": "test", "name": "waiter",
            "task": {
                "name": "waiter",
                "processes": [{
                    "name": "wait",
                    "cmdline": "echo port={{thermos.ports[http]}} > port; echo $$ > pid.tmp && mv pid.tmp pid; i=0; while [ ! -e stop ]; do i=$((i+1)); [ $i -gt 3000 ] && exit 1; sleep 0.05; done"
                }],
                "resources": {"cpu": 0.1, "ram": 16777216, "disk": 16777216},
                "finalization_wait": 5
            }
        }),
        ports: BTreeMap::from([("http".to_owned(), 31234)]),
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    // A zombie (ended, not yet reaped by whoever is its parent) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

fn executor_pid(root: &Path, task_id: &str) -> Option<i32> {
    read_pid(&root.join("checkpoints").join(task_id).join("executor.lock"))
}

#[test]
fn an_assigned_task_runs_reports_with_the_token_and_is_forgotten_once_its_end_is_known()
-> TestResult {
    let w = World::new();
    let agent = w.start_agent();
    let id = "root-test-waiter-0-1700000000000-a001";
    wait_until("the first sync", LIMIT, || w.sched.last_sync().is_some())?;
    let first = w.sched.last_sync().unwrap();
    assert_eq!(first.host, "host-a");
    assert_eq!(first.attributes.get("rack").map(String::as_str), Some("r1"));
    assert_eq!((first.ports.first, first.ports.last), (31000, 32000));
    assert!(first.resources.cpu >= 1.0 && first.resources.ram > 0 && first.resources.disk > 0);

    w.sched.launch(waiter(id));
    wait_until("the task reported running", LIMIT, || {
        w.sched.reported(id).is_some_and(|t| t.running)
    })?;
    wait_until(
        "the executor's RUNNING report, with the token",
        LIMIT,
        || w.sched.states(id).contains(&ScheduleStatus::Running),
    )?;
    wait_until("the acknowledged epoch", LIMIT, || {
        w.sched.last_sync().is_some_and(|s| s.acked_epoch >= 1)
    })?;
    let sandbox = w.sandbox(id);
    wait_until("the task's pid file", LIMIT, || {
        sandbox.join("pid").exists()
    })?;
    assert_eq!(
        std::fs::read_to_string(sandbox.join("port"))?.trim(),
        "port=31234",
        "the assigned port reached the task"
    );
    let record = w.root().join("agent/tasks").join(format!("{id}.json"));
    assert!(record.exists());

    std::fs::write(sandbox.join("stop"), "")?;
    wait_until("FINISHED from the executor", LIMIT, || {
        w.sched.states(id).contains(&ScheduleStatus::Finished)
    })?;
    // The agent reports the end, then forgets the task once a sync carried it.
    wait_until("the record to go", LIMIT, || !record.exists())?;
    wait_until("the task to leave the reports", LIMIT, || {
        w.sched.reported(id).is_none()
    })?;
    assert!(sandbox.exists(), "the sandbox stays");
    let log = std::fs::read_to_string(w.root().join("agent/logs").join(format!("{id}.log")))?;
    assert!(log.contains("--task-id") && log.contains(id), "{log}");
    assert!(
        !log.contains(TOKEN),
        "the token is never written to the log"
    );
    assert_eq!(w.sched.state.lock().unwrap().refused, 0);
    w.stop_agent(agent);
    Ok(())
}

#[test]
fn a_kill_order_ends_the_task_and_its_end_is_reported_killed() -> TestResult {
    let w = World::new();
    let agent = w.start_agent();
    let id = "root-test-waiter-0-1700000000000-b002";
    w.sched.launch(waiter(id));
    let pid_file = w.sandbox(id).join("pid");
    wait_until("the task's process", LIMIT, || {
        read_pid(&pid_file).is_some()
    })?;
    let pid = read_pid(&pid_file).unwrap();
    w.sched.kill(id);
    wait_until("KILLED from the executor", LIMIT, || {
        w.sched.states(id).contains(&ScheduleStatus::Killed)
    })?;
    wait_until("the task's process to end", LIMIT, || !alive(pid))?;
    wait_until(
        "the end to be reported and the task forgotten",
        LIMIT,
        || {
            !w.root()
                .join("agent/tasks")
                .join(format!("{id}.json"))
                .exists()
        },
    )?;
    w.stop_agent(agent);
    Ok(())
}

#[test]
fn a_restarted_agent_re_adopts_its_task_and_recovers_an_executor_that_died_meanwhile() -> TestResult
{
    let w = World::new();
    let id = "root-test-waiter-0-1700000000000-c003";
    let first = w.start_agent();
    w.sched.launch(waiter(id));
    let pid_file = w.sandbox(id).join("pid");
    wait_until("the task's process", LIMIT, || {
        read_pid(&pid_file).is_some()
    })?;
    let task_pid = read_pid(&pid_file).unwrap();
    let first_id = w.sched.last_sync().unwrap().agent_id;

    // The agent goes away; its task keeps running. Then the executor dies too.
    w.stop_agent(first);
    let exec = executor_pid(&w.root(), id).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(exec),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_until("the executor to die", LIMIT, || !alive(exec))?;
    assert!(
        alive(task_pid),
        "the task outlives its agent and its executor"
    );

    // A new agent on the same root: a new agent id, the task reported and recovered.
    let second = w.start_agent();
    wait_until("a sync from the new agent", LIMIT, || {
        w.sched.last_sync().is_some_and(|s| s.agent_id != first_id)
    })?;
    wait_until("a new executor for the task", LIMIT, || {
        executor_pid(&w.root(), id).is_some_and(|p| p != exec && alive(p))
    })?;
    wait_until("the task reported running by the new agent", LIMIT, || {
        w.sched.last_sync().is_some_and(|s| {
            s.agent_id != first_id && s.tasks.iter().any(|t| t.task_id == id && t.running)
        })
    })?;
    assert_eq!(
        read_pid(&pid_file),
        Some(task_pid),
        "the process was adopted, not restarted"
    );
    assert!(alive(task_pid));

    std::fs::write(w.sandbox(id).join("stop"), "")?;
    wait_until("FINISHED", LIMIT, || {
        w.sched.states(id).contains(&ScheduleStatus::Finished)
    })?;
    wait_until("the task forgotten", LIMIT, || {
        w.sched.reported(id).is_none()
    })?;
    assert_eq!(
        w.sched.state.lock().unwrap().refused,
        0,
        "the recovered executor reports with the token too"
    );
    w.stop_agent(second);
    Ok(())
}

#[test]
fn an_agent_with_a_wrong_token_keeps_retrying_and_starts_nothing() -> TestResult {
    let w = World::new();
    let mut cfg = w.config();
    cfg.token = Some("wrong".into());
    let (stop, stopped) = oneshot::channel::<()>();
    let join = w.rt.spawn(hearth_agent::run(cfg, async move {
        let _ = stopped.await;
    }));
    wait_until("three refused syncs (backing off)", LIMIT, || {
        w.sched.state.lock().unwrap().refused >= 3
    })?;
    assert!(w.sched.last_sync().is_none());
    let _ = stop.send(());
    let r =
        w.rt.block_on(async { tokio::time::timeout(LIMIT, join).await });
    assert!(matches!(r, Ok(Ok(Ok(())))), "{r:?}");
    Ok(())
}

/// Not a test: the agent process of
/// [`an_agent_killed_with_sigkill_leaves_its_tasks_running_and_its_successor_re_adopts_them`],
/// which starts this binary with `--ignored --exact agent_process`.
#[test]
#[ignore = "the agent process of the kill -9 test, started by it"]
fn agent_process() {
    let url = std::env::var("HEARTH_AGENT_TEST_URL").expect("HEARTH_AGENT_TEST_URL");
    let root = std::env::var_os("HEARTH_AGENT_TEST_ROOT").expect("HEARTH_AGENT_TEST_ROOT");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(hearth_agent::run(
        agent_config(&url, Path::new(&root)),
        std::future::pending::<()>(),
    ))
    .unwrap();
}

#[test]
fn an_agent_killed_with_sigkill_leaves_its_tasks_running_and_its_successor_re_adopts_them()
-> TestResult {
    let w = World::new();
    let id = "root-test-waiter-0-1700000000000-d004";
    let first = w.spawn_agent_process();
    w.sched.launch(waiter(id));
    let pid_file = w.sandbox(id).join("pid");
    wait_until("the task's process", LIMIT, || {
        read_pid(&pid_file).is_some()
    })?;
    wait_until("the task reported running", LIMIT, || {
        w.sched.reported(id).is_some_and(|t| t.running)
    })?;
    let task_pid = read_pid(&pid_file).unwrap();
    let exec = executor_pid(&w.root(), id).unwrap();
    let first_id = w.sched.last_sync().unwrap().agent_id;

    first.kill_9();
    assert!(alive(exec), "the executor outlives the agent");
    assert!(alive(task_pid), "the task outlives the agent");

    let second = w.spawn_agent_process();
    wait_until("the new agent reporting the task running", LIMIT, || {
        w.sched.last_sync().is_some_and(|s| {
            s.agent_id != first_id && s.tasks.iter().any(|t| t.task_id == id && t.running)
        })
    })?;
    assert_eq!(
        executor_pid(&w.root(), id),
        Some(exec),
        "a live executor is adopted, not replaced"
    );
    assert_eq!(read_pid(&pid_file), Some(task_pid));

    std::fs::write(w.sandbox(id).join("stop"), "")?;
    wait_until("FINISHED", LIMIT, || {
        w.sched.states(id).contains(&ScheduleStatus::Finished)
    })?;
    wait_until("the task forgotten by the new agent", LIMIT, || {
        !w.root()
            .join("agent/tasks")
            .join(format!("{id}.json"))
            .exists()
    })?;
    second.kill_9();
    Ok(())
}

#[test]
fn an_end_whose_report_was_lost_with_its_executor_is_delivered_by_the_agent() -> TestResult {
    let w = World::new();
    w.sched.state.lock().unwrap().status_down = true;
    let agent = w.start_agent();
    let id = "root-test-waiter-0-1700000000000-e005";
    w.sched.launch(waiter(id));
    let pid_file = w.sandbox(id).join("pid");
    wait_until("the task's process", LIMIT, || {
        read_pid(&pid_file).is_some()
    })?;
    let exec = executor_pid(&w.root(), id).unwrap();
    std::fs::write(w.sandbox(id).join("stop"), "")?;
    let runner = w.root().join("checkpoints").join(id).join("runner");
    wait_until("the end in the checkpoint", LIMIT, || {
        hearth_checkpoints::stream::replay_path(&runner)
            .is_ok_and(|r| r.replay.state().is_terminal())
    })?;
    // The executor dies while it waits for the scheduler to take its updates.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(exec),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    wait_until("the agent to report the end", LIMIT, || {
        w.sched
            .reported(id)
            .is_some_and(|t| t.terminal == Some(ScheduleStatus::Finished) && !t.running)
    })?;
    let log = w.root().join("agent/logs").join(format!("{id}.log"));
    wait_until("a second hearth run, to deliver the updates", LIMIT, || {
        std::fs::read_to_string(&log).is_ok_and(|l| {
            l.lines()
                .filter(|l| l.starts_with("hearth agent: ") && l.contains(" run "))
                .count()
                >= 2
        })
    })?;
    assert!(
        w.root()
            .join("agent/tasks")
            .join(format!("{id}.json"))
            .exists(),
        "kept while its updates are not acknowledged"
    );
    w.sched.state.lock().unwrap().status_down = false;
    wait_until("every update applied once, in order", LIMIT, || {
        w.sched.states(id)
            == vec![
                ScheduleStatus::Starting,
                ScheduleStatus::Running,
                ScheduleStatus::Finished,
            ]
    })?;
    wait_until("the task forgotten", LIMIT, || {
        !w.root()
            .join("agent/tasks")
            .join(format!("{id}.json"))
            .exists()
    })?;
    w.stop_agent(agent);
    Ok(())
}

#[test]
fn a_stray_in_the_root_is_reported_and_killed_on_order() -> TestResult {
    let w = World::new();
    let agent = w.start_agent();
    let id = "root-test-waiter-0-1700000000000-f006";
    // Started by hand in the agent's root: not the agent's, so a stray.
    let config = w.dir.path().join("stray.json");
    std::fs::write(&config, serde_json::to_vec(&waiter(id).config)?)?;
    let mut by_hand = std::process::Command::new(hearth_bin())
        .arg("run")
        .arg(&config)
        .arg("--root")
        .arg(w.root())
        .args(["--task-id", id, "--no-setuid", "--no-cgroups"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    wait_until("the stray reported running", LIMIT, || {
        w.sched.reported(id).is_some_and(|t| t.running)
    })?;
    assert!(
        !w.root()
            .join("agent/tasks")
            .join(format!("{id}.json"))
            .exists(),
        "the agent does not take it as its own"
    );
    w.sched.kill(id);
    let status = by_hand.wait()?;
    assert_eq!(
        status.code(),
        Some(3),
        "hearth run exits 3 when its task is killed"
    );
    wait_until("the stray to leave the reports", LIMIT, || {
        w.sched.reported(id).is_none()
    })?;
    w.stop_agent(agent);
    Ok(())
}

#[test]
fn tasks_keep_running_while_the_scheduler_fails_and_syncs_resume_after() -> TestResult {
    let w = World::new();
    let agent = w.start_agent();
    let id = "root-test-waiter-0-1700000000000-a007";
    w.sched.launch(waiter(id));
    let pid_file = w.sandbox(id).join("pid");
    wait_until("the task's process", LIMIT, || {
        read_pid(&pid_file).is_some()
    })?;
    let task_pid = read_pid(&pid_file).unwrap();
    w.sched.state.lock().unwrap().sync_down = true;
    let failing_since = w.sched.state.lock().unwrap().failed_syncs;
    wait_until("several failed syncs", LIMIT, || {
        w.sched.state.lock().unwrap().failed_syncs >= failing_since + 4
    })?;
    assert!(alive(task_pid), "the task keeps running");
    let syncs = w.sched.state.lock().unwrap().syncs.len();
    w.sched.state.lock().unwrap().sync_down = false;
    wait_until("syncs again, reporting the task running", LIMIT, || {
        let st = w.sched.state.lock().unwrap();
        st.syncs.len() > syncs
            && st
                .syncs
                .last()
                .is_some_and(|s| s.tasks.iter().any(|t| t.task_id == id && t.running))
    })?;
    std::fs::write(w.sandbox(id).join("stop"), "")?;
    wait_until("the task forgotten", LIMIT, || {
        !w.root()
            .join("agent/tasks")
            .join(format!("{id}.json"))
            .exists()
    })?;
    w.stop_agent(agent);
    Ok(())
}
