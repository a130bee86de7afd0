//! cgroup v2 delegation, end to end, on the real kernel: Hearth started inside a cgroup that is
//! delegated to it (what systemd's `Delegate=yes` makes) keeps every cgroup it creates and every
//! control file it writes inside that cgroup.
//!
//! Each test plays systemd's part itself: it makes `/sys/fs/cgroup/deleg-test-<pid>-<name>`,
//! enables the controllers in the root's `cgroup.subtree_control` (as systemd does for a
//! delegated unit), marks the cgroup `trusted.delegate=1` (as systemd 251 and later do), and
//! starts `hearth` in it through a shell that writes its own pid into the cgroup's
//! `cgroup.procs` before it execs.
//!
//! They need root and a pure cgroup v2 host (CI's `.ci/v2-tests` guest, where they run on their
//! own, before anything else, so that the top level of the tree can be compared before and
//! after). Elsewhere they print why and pass, unless `HEARTH_REQUIRE_CGROUP_V2=1` is set.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Env, TestResult, alive, runs, show, wait_until};
use hearth_checkpoints::record::{ProcessState, TaskState};
use serde_json::json;

const CGROUP: &str = "/sys/fs/cgroup";

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// True on a pure v2 host as root; otherwise prints why the test skips, or fails when
/// `HEARTH_REQUIRE_CGROUP_V2=1`.
fn pure_v2_as_root(test: &str) -> bool {
    let root = nix::unistd::getuid().is_root();
    let v2 = Path::new(CGROUP).join("cgroup.controllers").exists()
        && !Path::new(CGROUP).join("memory").exists();
    if root && v2 {
        return true;
    }
    assert!(
        std::env::var("HEARTH_REQUIRE_CGROUP_V2").as_deref() != Ok("1"),
        "{test}: HEARTH_REQUIRE_CGROUP_V2=1 but this is not a pure cgroup v2 host as root \
         (root={root}, v2={v2})"
    );
    eprintln!("{test}: skipped: needs root on a pure cgroup v2 host");
    false
}

/// The names of the top-level cgroups, but for the ones these tests make.
fn top_level() -> BTreeSet<String> {
    std::fs::read_dir(CGROUP)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("deleg-test-"))
        .collect()
}

/// The controllers a `cgroup.subtree_control` lists.
fn enabled(dir: &Path) -> BTreeSet<String> {
    read(dir.join("cgroup.subtree_control"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// This process's v2 cgroup, `/...`, from `/proc/<pid>/cgroup`.
fn cgroup_of(pid: i32) -> String {
    read(format!("/proc/{pid}/cgroup"))
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .unwrap_or_default()
}

/// A delegated cgroup made for one test, as systemd would make it for a `Delegate=yes` unit.
/// Dropping it kills whatever is left inside and removes it with everything below it.
struct Delegated {
    name: String,
    dir: PathBuf,
}

impl Delegated {
    fn new(test: &str) -> Delegated {
        let root = Path::new(CGROUP);
        // What systemd enables along the path to a delegated unit.
        let available = read(root.join("cgroup.controllers"));
        for c in ["memory", "cpu", "pids", "io"] {
            if available.split_whitespace().any(|a| a == c) {
                std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}")).unwrap();
            }
        }
        let name = format!("deleg-test-{}-{test}", std::process::id());
        let dir = root.join(&name);
        std::fs::create_dir(&dir).unwrap();
        rustix::fs::setxattr(
            &dir,
            "trusted.delegate",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        Delegated { name, dir }
    }

    /// `hearth ARGS...` started inside the delegated cgroup: the shell moves itself in, then
    /// becomes `hearth` (same pid). Its stderr goes to `log` (a file: a pipe would stay open in
    /// the task's processes after the executor is killed).
    fn spawn(&self, log: &Path, args: &[&str]) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
            .arg("sh")
            .arg(&self.dir)
            .arg(env!("CARGO_BIN_EXE_hearth"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        let events = self.dir.join("cgroup.events");
        let _ = wait_until(
            "the delegated cgroup to empty",
            Duration::from_secs(10),
            || !read(&events).contains("populated 1"),
        );
        remove_tree(&self.dir);
    }
}

/// Removes a cgroup and every cgroup below it, deepest first.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn kill9(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The task's process and the shell's `exec` done: the pid the checkpoint names is `sleep`.
fn wait_running(env: &Env, task_id: &str) -> i32 {
    wait_until("the process to run", Duration::from_secs(60), || {
        env.root()
            .join(format!("checkpoints/{task_id}/runner"))
            .exists()
            && runs(&env.replay(task_id), "server")
                .last()
                .is_some_and(|r| r.state == ProcessState::Running)
    })
    .unwrap();
    let pid = runs(&env.replay(task_id), "server")[0].pid.unwrap();
    wait_until("the shell to exec sleep", Duration::from_secs(10), || {
        read(format!("/proc/{pid}/comm")).trim() == "sleep"
    })
    .unwrap();
    pid
}

#[test]
fn a_task_started_in_a_delegated_cgroup_stays_inside_it_and_is_recovered_there() -> TestResult {
    let test = "a_task_started_in_a_delegated_cgroup_stays_inside_it_and_is_recovered_there";
    if !pure_v2_as_root(test) {
        return Ok(());
    }
    let env = Env::new();
    let deleg = Delegated::new("run");
    let root = Path::new(CGROUP);
    let root_control = read(root.join("cgroup.subtree_control"));
    let tops = top_level();

    let ram: u64 = 96 << 20;
    let cfg = env.task(
        "deleg",
        json!([{"name": "server", "cmdline": "exec sleep 1000"}]),
        json!({"resources": {"cpu": 0.5, "ram": ram, "disk": 1 << 30}, "finalization_wait": 5}),
    );
    let root_dir = env.root();
    let run_args = [
        "run",
        cfg.to_str().unwrap(),
        "--root",
        root_dir.to_str().unwrap(),
        "--task-id",
        "deleg",
    ];
    let first_log = env.dir.path().join("first.log");
    let exec = deleg.spawn(&first_log, &run_args);
    let exec_pid = exec.id() as i32;
    let pid = wait_running(&env, "deleg");

    // The task runs in <delegated>/hearth/<task id>, under its limits.
    let d = &deleg.dir;
    let task_dir = d.join("hearth/deleg");
    assert_eq!(cgroup_of(pid), format!("/{}/hearth/deleg", deleg.name));
    assert_eq!(read(task_dir.join("memory.max")).trim(), ram.to_string());
    assert_eq!(read(task_dir.join("cpu.max")).trim(), "50000 100000");
    assert_eq!(read(task_dir.join("pids.max")).trim(), "16384");
    // The executor moved itself into the leaf; the delegated cgroup holds no process and hands
    // the controllers down to the task cgroups.
    assert_eq!(cgroup_of(exec_pid), format!("/{}/supervisor", deleg.name));
    assert_eq!(read(d.join("cgroup.procs")), "");
    for dir in [d.clone(), d.join("hearth")] {
        let on = enabled(&dir);
        for c in ["memory", "cpu", "pids"] {
            assert!(
                on.contains(c),
                "{c} not enabled in {}: {on:?}",
                dir.display()
            );
        }
    }
    // Nothing outside it was created or written.
    assert_eq!(read(root.join("cgroup.subtree_control")), root_control);
    assert_eq!(top_level(), tops, "top-level cgroups changed");
    assert!(!root.join("hearth/deleg").exists());

    // kill -9 of the executor; a new one started outside the delegated cgroup (here: the root
    // cgroup) re-attaches to the task where it is, by the launch record.
    kill9(exec);
    let said = read(&first_log);
    let parent = format!("task cgroups go under {}/hearth", d.display());
    assert!(
        said.contains(&parent) && said.contains("delegated (trusted.delegate)"),
        "the executor did not say where task cgroups go and why:\n{said}"
    );
    let log = env.dir.path().join("restarted.log");
    let again = env
        .run_cmd(&cfg, "deleg", &[])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    wait_until(
        "the restarted executor to choose the parent",
        Duration::from_secs(60),
        || read(&log).contains("launch record"),
    )
    .unwrap();
    kill9(again);
    let said = read(&log);
    assert!(
        said.contains(&parent),
        "the restarted executor did not use the recorded parent:\n{said}"
    );
    assert!(alive(pid), "recovery lost the task's process");
    assert_eq!(cgroup_of(pid), format!("/{}/hearth/deleg", deleg.name));

    // `hearth kill`, run from the root cgroup, adopts the orphaned task and tears it down.
    let k = env.kill("deleg");
    assert!(k.status.success(), "{}", show(&k));
    assert!(
        String::from_utf8_lossy(&k.stdout).contains("KILLED"),
        "{}",
        show(&k)
    );
    assert!(
        String::from_utf8_lossy(&k.stderr).contains(&parent),
        "{}",
        show(&k)
    );
    assert!(!alive(pid), "the adopted process is still running");
    assert_eq!(env.replay("deleg").state(), TaskState::Killed);
    assert!(!task_dir.exists(), "the task's cgroup was not removed");

    // Still nothing outside.
    assert_eq!(read(root.join("cgroup.subtree_control")), root_control);
    assert_eq!(top_level(), tops, "top-level cgroups changed");
    Ok(())
}

#[test]
fn an_agent_started_in_a_delegated_cgroup_moves_into_its_leaf_before_any_task() -> TestResult {
    let test = "an_agent_started_in_a_delegated_cgroup_moves_into_its_leaf_before_any_task";
    if !pure_v2_as_root(test) {
        return Ok(());
    }
    let env = Env::new();
    let deleg = Delegated::new("agent");
    let root_dir = env.root();
    // No scheduler listens there: the agent only has to start.
    let log = env.dir.path().join("agent.log");
    let agent = deleg.spawn(
        &log,
        &[
            "agent",
            "--scheduler",
            "http://127.0.0.1:9",
            "--root",
            root_dir.to_str().unwrap(),
        ],
    );
    let pid = agent.id() as i32;
    let leaf = format!("/{}/supervisor", deleg.name);
    wait_until(
        "the agent to enter the leaf",
        Duration::from_secs(60),
        || cgroup_of(pid) == leaf,
    )
    .unwrap();
    assert_eq!(read(deleg.dir.join("cgroup.procs")), "");
    kill9(agent);
    let said = read(&log);
    assert!(
        said.contains(&format!(
            "task cgroups go under {}/hearth",
            deleg.dir.display()
        )),
        "{said}"
    );
    Ok(())
}
