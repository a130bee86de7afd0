//! Shared helpers for the end-to-end tests: a temporary root, the real `hearth` binary, task files,
//! checkpoint replays, and condition waits with deadlines (never fixed sleeps).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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
                if String::from_utf8_lossy(&cmdline).contains(&needle) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::SIGKILL,
                    );
                }
            }
        }
        // Task processes: everything left in the tasks' cgroups.
        for id in task_ids {
            for c in ["pids", "memory", "cpu", "cpuacct", "freezer", "unified"] {
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

/// Poll `cond` with a short backoff until it holds; panic naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
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
