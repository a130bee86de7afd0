//! Fixtures for the observer's tests: Hearth roots written with the real checkpoint writer,
//! sandboxes with logs and files, and a helper that sends one request to the router.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hearth_checkpoints::record::{
    ProcessState, ProcessStatus, Record, RunnerHeader, TaskState, TaskStatus,
};
use hearth_checkpoints::root::{Root, TaskPlace};
use hearth_checkpoints::stream::CheckpointWriter;
use hearth_observer::{Observer, Settings};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type Error = Box<dyn std::error::Error>;

/// Settings for tests: no watcher, no real cgroups (a missing tree), long intervals.
pub fn test_settings(scratch: &Path) -> Settings {
    Settings {
        rescan_interval: Duration::from_secs(3600),
        sample_interval: Duration::from_secs(3600),
        disk_interval: Duration::from_secs(3600),
        disk_walks_per_tick: 100,
        probe: hearth_observer::usage::Probe {
            cgroup_root: scratch.join("no-cgroups"),
            proc_root: PathBuf::from("/proc"),
        },
        watch: false,
    }
}

/// One run of a process to write: its end state and return code (None: still running).
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub end: Option<(ProcessState, i32)>,
    pub stdout: String,
}

/// A task to write into a root.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub id: String,
    pub active: bool,
    pub launch_ms: i64,
    pub processes: Vec<(String, Vec<RunSpec>)>,
    pub ports: BTreeMap<String, i64>,
}

impl TaskSpec {
    pub fn simple(id: &str, active: bool, launch_ms: i64) -> Self {
        let end = if active {
            None
        } else {
            Some((ProcessState::Success, 0))
        };
        TaskSpec {
            id: id.to_owned(),
            active,
            launch_ms,
            processes: vec![(
                "hello".to_owned(),
                vec![RunSpec {
                    end,
                    stdout: format!("hello from {id}\n"),
                }],
            )],
            ports: BTreeMap::new(),
        }
    }
}

/// A Hearth root under a temp dir, with the sandboxes of its tasks under `<dir>/sandboxes`.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: Root,
}

impl Fixture {
    pub fn new() -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let root = Root::new(dir.path().join("root"));
        std::fs::create_dir_all(root.tasks_active_dir())?;
        std::fs::create_dir_all(root.tasks_finished_dir())?;
        std::fs::create_dir_all(root.checkpoints_dir())?;
        Ok(Fixture { dir, root })
    }

    pub fn sandbox(&self, id: &str) -> PathBuf {
        self.dir.path().join("sandboxes").join(id)
    }

    pub fn observer(&self) -> Result<Arc<Observer>, Error> {
        Ok(Observer::open(
            &[self.root.path().to_owned()],
            test_settings(self.dir.path()),
        )?)
    }

    /// Write a task: config, runner stream, sandbox and logs. Returns the open writer so a
    /// test can append more records.
    pub fn write_task(&self, spec: &TaskSpec) -> Result<CheckpointWriter, Error> {
        let sandbox = self.sandbox(&spec.id);
        let logs = sandbox.join(".logs");
        std::fs::create_dir_all(&logs)?;
        let place = if spec.active {
            TaskPlace::Active
        } else {
            TaskPlace::Finished
        };
        let names: Vec<&str> = spec.processes.iter().map(|p| p.0.as_str()).collect();
        let config = serde_json::json!({
            "name": format!("{}-name", spec.id),
            "processes": names.iter().map(|n| serde_json::json!({"name": n, "cmdline": "true"})).collect::<Vec<_>>(),
            "resources": {"cpu": 0.5, "ram": 67108864u64, "disk": 134217728u64, "gpu": 0},
        });
        std::fs::write(
            self.root.task_config_path(&spec.id, place),
            serde_json::to_vec(&config)?,
        )?;
        std::fs::create_dir_all(self.root.checkpoint_dir(&spec.id))?;
        let header = RunnerHeader {
            task_id: spec.id.clone(),
            launch_time_ms: spec.launch_ms,
            sandbox: Some(sandbox.display().to_string()),
            hostname: Some("localhost".into()),
            user: Some("www-data".into()),
            ports: spec.ports.clone(),
            log_dir: Some(logs.display().to_string()),
            uid: Some(33),
            format_version: Some(1),
        };
        let mut w = CheckpointWriter::create(&self.root.runner_path(&spec.id), &header)?;
        w.append(&Record::Task(TaskStatus {
            state: TaskState::Active,
            timestamp_ms: spec.launch_ms,
            runner_pid: Some(1),
            runner_uid: Some(0),
            reason: None,
            outcome: None,
            cause: None,
        }))?;
        let t0 = spec.launch_ms as f64 / 1000.0;
        for (name, runs) in &spec.processes {
            let mut seq = 0;
            for (i, run) in runs.iter().enumerate() {
                let dir = logs.join(name).join(i.to_string());
                std::fs::create_dir_all(&dir)?;
                std::fs::write(dir.join("stdout"), &run.stdout)?;
                std::fs::write(dir.join("stderr"), "")?;
                let start = t0 + i as f64 * 10.0;
                let mut rec = |state, f: &dyn Fn(&mut ProcessStatus)| -> Result<(), Error> {
                    let mut p = ProcessStatus {
                        seq,
                        process: name.clone(),
                        state: Some(state),
                        ..ProcessStatus::default()
                    };
                    f(&mut p);
                    seq += 1;
                    w.append(&Record::Process(p))?;
                    Ok(())
                };
                rec(ProcessState::Waiting, &|_| {})?;
                rec(ProcessState::Forked, &|p| p.fork_time = Some(start))?;
                rec(ProcessState::Running, &|p| {
                    p.pid = Some(4_000_000 + i as i32);
                    p.start_time = Some(start);
                })?;
                if let Some((state, rc)) = run.end {
                    rec(state, &|p| {
                        p.return_code = Some(rc);
                        p.stop_time = Some(start + 5.0);
                        if state == ProcessState::Killed {
                            p.signal = Some(9);
                            p.reason = Some("killed by executor".into());
                        }
                    })?;
                }
            }
        }
        if !spec.active {
            w.append(&Record::Task(TaskStatus {
                state: TaskState::Success,
                timestamp_ms: spec.launch_ms + 60_000,
                runner_pid: Some(1),
                runner_uid: Some(0),
                reason: None,
                outcome: None,
                cause: None,
            }))?;
        }
        w.commit()?;
        Ok(w)
    }
}

/// Send a GET to the router; returns status, content type and body.
pub async fn get(app: &axum::Router, uri: &str) -> Result<(StatusCode, String, String), Error> {
    let req = Request::builder().uri(uri).body(Body::empty())?;
    let resp = app.clone().oneshot(req).await?;
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, ctype, String::from_utf8_lossy(&bytes).into_owned()))
}

/// GET and parse JSON.
pub async fn get_json(
    app: &axum::Router,
    uri: &str,
) -> Result<(StatusCode, serde_json::Value), Error> {
    let (status, _, body) = get(app, uri).await?;
    let v = serde_json::from_str(&body).map_err(|e| format!("{uri}: {e}: {body}"))?;
    Ok((status, v))
}

/// The shared Thermos root, or None (with a printed reason) when it is missing and not required.
pub fn shared_thermos_root() -> Result<Option<PathBuf>, Error> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/thermos/root");
    if root.join("checkpoints").is_dir() {
        return Ok(Some(root));
    }
    if std::env::var_os("HEARTH_REQUIRE_SHARED").is_some_and(|v| v == "1") {
        return Err(format!(
            "HEARTH_REQUIRE_SHARED=1 but the shared Thermos data is missing at {}",
            root.display()
        )
        .into());
    }
    eprintln!(
        "skipping: shared Thermos data not found at {} (set HEARTH_REQUIRE_SHARED=1 to fail instead)",
        root.display()
    );
    Ok(None)
}
