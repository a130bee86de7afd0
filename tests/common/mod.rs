//! Shared helpers for the end-to-end tests: a temporary root, the real `hearth` binary, task files,
//! checkpoint replays, and condition waits with deadlines (never fixed sleeps).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Poll a condition with a deadline (shared with the other crates' tests).
pub use hearth_testkit::wait_until;

use hearth_checkpoints::record::ProcessState;
use hearth_checkpoints::replay::{ProcessRun, TaskReplay};
use hearth_checkpoints::stream::replay_path;
use serde_json::Value;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The `hearth` binary under test.
pub fn hearth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
}

/// Whether tests that need real cgroups must run (CI sets `HEARTH_REQUIRE_CGROUPS=1`), or may skip.
pub fn cgroups_required() -> bool {
    std::env::var("HEARTH_REQUIRE_CGROUPS").is_ok_and(|v| v == "1")
}

/// True when this host gives us cgroups (root, v1 or v2); otherwise prints why the calling test
/// skips, or panics when cgroups are required.
pub fn have_cgroups(test: &str) -> bool {
    let root = nix::unistd::getuid().is_root();
    let v1 = Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if root && (v1 || v2) {
        return true;
    }
    assert!(
        !cgroups_required(),
        "{test}: HEARTH_REQUIRE_CGROUPS=1 but this host has no usable cgroups (root={root})"
    );
    eprintln!("{test}: skipped: needs root and cgroups");
    false
}

/// True when running as root (switching users needs it); otherwise prints why the calling test
/// skips, or panics when the root-only tests are required (`HEARTH_REQUIRE_CGROUPS=1`).
pub fn have_root(test: &str) -> bool {
    if nix::unistd::getuid().is_root() {
        return true;
    }
    assert!(
        !cgroups_required(),
        "{test}: HEARTH_REQUIRE_CGROUPS=1 but this test needs root"
    );
    eprintln!("{test}: skipped: needs root");
    false
}

/// A scratch checkpoint root and directory for one test.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("hearth-e2e-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn sandbox(&self, task_id: &str) -> PathBuf {
        self.root().join("sandboxes").join(task_id)
    }

    /// Write a bare Thermos task with these processes (and extra task-level keys).
    pub fn task(&self, name: &str, processes: Value, extra: Value) -> PathBuf {
        let mut task = serde_json::json!({ "name": name, "processes": processes });
        if let (Some(t), Some(e)) = (task.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                t.insert(k.clone(), v.clone());
            }
        }
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&task).unwrap()).unwrap();
        path
    }

    /// `hearth run CONFIG --root ROOT --task-id ID ARGS...`
    pub fn run_cmd(&self, config: &Path, task_id: &str, args: &[&str]) -> Command {
        let mut c = hearth();
        c.arg("run")
            .arg(config)
            .arg("--root")
            .arg(self.root())
            .arg("--task-id")
            .arg(task_id)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Run a task to completion (bounded by `limit`).
    pub fn run(&self, config: &Path, task_id: &str, args: &[&str]) -> Output {
        let child = self
            .run_cmd(config, task_id, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_output(child, Duration::from_secs(120))
    }

    /// Start a task in the background.
    pub fn spawn(&self, config: &Path, task_id: &str, args: &[&str]) -> Child {
        self.run_cmd(config, task_id, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub fn replay(&self, task_id: &str) -> TaskReplay {
        replay_path(&self.root().join("checkpoints").join(task_id).join("runner"))
            .unwrap()
            .replay
    }

    pub fn kill(&self, task_id: &str) -> Output {
        hearth()
            .arg("kill")
            .arg(task_id)
            .arg("--root")
            .arg(self.root())
            .output()
            .unwrap()
    }
}

impl Drop for Env {
    /// Whatever a test leaves running — its executors, keepers and task processes — is killed, and
    /// its task cgroups removed, so a failed test cannot disturb the next one.
    fn drop(&mut self) {
        let root = self.root();
        let needle = root.to_string_lossy().into_owned();
        let mut task_ids = Vec::new();
        if let Ok(dir) = std::fs::read_dir(root.join("checkpoints")) {
            task_ids.extend(
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        // Executors and keepers name the root on their command line.
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                // Keepers rename themselves; they are known by the files they hold open.
                let holds_root = || {
                    std::fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                        fds.flatten().any(|fd| {
                            std::fs::read_link(fd.path())
                                .is_ok_and(|t| t.to_string_lossy().contains(&needle))
                        })
                    })
                };
                if String::from_utf8_lossy(&cmdline).contains(&needle) || holds_root() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::SIGKILL,
                    );
                }
            }
        }
        // Task processes: everything left in the tasks' cgroups.
        for id in task_ids {
            // v1 controllers and the hybrid tree, then pure v2 (the mount itself).
            for c in ["pids", "memory", "cpu", "cpuacct", "freezer", "unified", ""] {
                let dir = Path::new("/sys/fs/cgroup").join(c).join("hearth").join(&id);
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// Wait for a child with a deadline; kill it if it overruns and fail the test.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "hearth did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn runs<'a>(replay: &'a TaskReplay, process: &str) -> &'a [ProcessRun] {
    replay
        .processes
        .get(process)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn states(replay: &TaskReplay, process: &str) -> Vec<ProcessState> {
    runs(replay, process).iter().map(|r| r.state).collect()
}

pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

// ---- Health checks, teardown and status reports (tests/health.rs, tests/report.rs) ----

/// The `hearth-test-server` binary (a tiny HTTP server with a per-line event log).
pub fn test_server() -> &'static str {
    env!("CARGO_BIN_EXE_hearth-test-server")
}

/// The cmdline of a process that runs `hearth-test-server` on the task's `health` port, logging
/// to `log`, with extra server arguments.
pub fn server_cmdline(log: &Path, args: &str) -> String {
    format!(
        "exec {} --port {{{{thermos.ports[health]}}}} --log {} {args}",
        test_server(),
        log.display()
    )
}

impl Env {
    /// Write an Aurora job: `{"task": {"name", "processes", ...task_extra}, "role": "root",
    /// "environment": "test", "name": name, ...job_extra}` (job_extra holds e.g.
    /// `health_check_config` and `lifecycle`).
    pub fn job(
        &self,
        name: &str,
        processes: Value,
        task_extra: Value,
        job_extra: Value,
    ) -> PathBuf {
        let mut task = serde_json::json!({ "name": name, "processes": processes });
        let mut job = serde_json::json!({ "role": "root", "environment": "test", "name": name });
        if let (Some(t), Some(e)) = (task.as_object_mut(), task_extra.as_object()) {
            for (k, v) in e {
                t.insert(k.clone(), v.clone());
            }
        }
        if let Some(j) = job.as_object_mut() {
            j.insert("task".into(), task);
            if let Some(e) = job_extra.as_object() {
                for (k, v) in e {
                    j.insert(k.clone(), v.clone());
                }
            }
        }
        let path = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&job).unwrap()).unwrap();
        path
    }

    /// A path for a test server's log, outside the checkpoint root.
    pub fn server_log(&self, name: &str) -> ServerLog {
        ServerLog {
            path: self.dir.path().join(format!("{name}.server.log")),
        }
    }

    /// `hearth snooze ID --root ROOT ARGS...`
    pub fn snooze(&self, task_id: &str, args: &[&str]) -> Output {
        hearth()
            .arg("snooze")
            .arg(task_id)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .unwrap()
    }

    /// The replay, or `None` while the checkpoint does not exist (or cannot be read yet).
    pub fn try_replay(&self, task_id: &str) -> Option<TaskReplay> {
        replay_path(&self.root().join("checkpoints").join(task_id).join("runner"))
            .ok()
            .map(|r| r.replay)
    }

    /// Wait until the task's replay satisfies `cond`; returns that replay.
    pub fn wait_replay(
        &self,
        task_id: &str,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&TaskReplay) -> bool,
    ) -> TaskReplay {
        let mut found = None;
        wait_until(what, limit, || {
            found = self.try_replay(task_id).filter(|r| cond(r));
            found.is_some()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        found.unwrap()
    }
}

/// The states of the status updates written for the scheduler, in seq order.
pub fn report_states(replay: &TaskReplay) -> Vec<String> {
    replay
        .reports
        .iter()
        .map(|r| r.state.name().to_owned())
        .collect()
}

/// The timestamp of the first task status in `state`.
pub fn task_status_ms(replay: &TaskReplay, state: hearth_checkpoints::record::TaskState) -> i64 {
    replay
        .statuses
        .iter()
        .find(|s| s.state == state)
        .map(|s| s.timestamp_ms)
        .unwrap_or_else(|| panic!("no {state:?} task status in {:?}", replay.statuses))
}

/// The event log of one `hearth-test-server`: lines `<ms> <event>`, `<ms>` on the server's
/// monotonic clock since it started.
pub struct ServerLog {
    pub path: PathBuf,
}

impl ServerLog {
    /// Every `(ms, event)` logged so far (an unfinished last line is left out).
    pub fn events(&self) -> Vec<(u64, String)> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .filter_map(|l| {
                let (ms, event) = l.trim_end().split_once(' ')?;
                Some((ms.parse().ok()?, event.to_owned()))
            })
            .collect()
    }

    /// How many times `event` (e.g. `request GET /health`) was logged.
    pub fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|(_, e)| e == event).count()
    }

    /// When `event` was first logged.
    pub fn first(&self, event: &str) -> Option<u64> {
        self.events()
            .into_iter()
            .find(|(_, e)| e == event)
            .map(|(ms, _)| ms)
    }

    /// Every event in order, one per line (for assertion messages).
    pub fn dump(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }
}

/// A `hearth-test-server` started by the test itself, outside any task, already listening
/// when the executor starts (hand its port to `hearth run --port health=PORT`). Killed on drop.
pub struct OutsideServer {
    pub child: Child,
    pub port: u16,
    pub log: ServerLog,
}

impl OutsideServer {
    /// Start it on a free port with extra arguments; returns once it listens.
    pub fn start(log: ServerLog, args: &[&str]) -> OutsideServer {
        let child = Command::new(test_server())
            .args(["--port", "0", "--log"])
            .arg(&log.path)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut port = None;
        wait_until("the test server to listen", Duration::from_secs(10), || {
            port = log
                .events()
                .into_iter()
                .find_map(|(_, e)| e.strip_prefix("listening 127.0.0.1:")?.parse().ok());
            port.is_some()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        OutsideServer {
            child,
            port: port.unwrap(),
            log,
        }
    }

    /// `health=PORT`, for `hearth run --port`.
    pub fn port_arg(&self) -> String {
        format!("health={}", self.port)
    }
}

impl Drop for OutsideServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
