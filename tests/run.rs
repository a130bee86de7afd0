//! End-to-end tests of `hearth run`: real processes, real cgroups (as root), one test per planner
//! rule, and the scenarios the executor must get right.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Env, TestResult, alive, have_cgroups, runs, show, states, wait_until};
use hearth_checkpoints::record::{ProcessState as P, TaskState};
use serde_json::json;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn runs_ordered_processes_one_after_another() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "ordered",
        json!([
            {"name": "c", "cmdline": "echo c >> order"},
            {"name": "a", "cmdline": "echo a >> order"},
            {"name": "b", "cmdline": "echo b >> order"},
        ]),
        json!({"constraints": [{"order": ["a", "b", "c"]}]}),
    );
    let out = env.run(&cfg, "ordered", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(read(&env.sandbox("ordered").join("order")), "a\nb\nc\n");
    let r = env.replay("ordered");
    assert_eq!(r.state(), TaskState::Success);
    for p in ["a", "b", "c"] {
        assert_eq!(states(&r, p), vec![P::Success], "{p}");
    }
    let stop_a = runs(&r, "a")[0].stop_time.unwrap();
    let start_b = runs(&r, "b")[0].start_time.unwrap();
    assert!(start_b >= stop_a, "b started before a ended");
    Ok(())
}

#[test]
fn retries_a_failing_process_until_it_succeeds_within_max_failures() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "retry",
        json!([{"name": "flaky", "max_failures": 3, "min_duration": 0,
                "cmdline": "n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $n -ge 2 ] || exit 7"}]),
        json!({}),
    );
    let out = env.run(&cfg, "retry", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = env.replay("retry");
    assert_eq!(states(&r, "flaky"), vec![P::Failed, P::Failed, P::Success]);
    assert_eq!(runs(&r, "flaky")[0].return_code, Some(7));
    Ok(())
}

#[test]
fn fails_the_task_when_a_process_exhausts_max_failures() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "exhaust",
        json!([{"name": "bad", "max_failures": 2, "min_duration": 0, "cmdline": "exit 3"}]),
        json!({}),
    );
    let out = env.run(&cfg, "exhaust", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = env.replay("exhaust");
    assert_eq!(r.state(), TaskState::Failed);
    assert_eq!(states(&r, "bad"), vec![P::Failed, P::Failed]);
    assert!(runs(&r, "bad").iter().all(|run| run.return_code == Some(3)));
    Ok(())
}

#[test]
fn retries_forever_when_max_failures_is_zero() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "forever",
        json!([{"name": "p", "max_failures": 0, "min_duration": 0,
                "cmdline": "n=$(cat count 2>/dev/null || echo 0); echo $((n+1)) > count; [ $n -ge 5 ]"}]),
        json!({}),
    );
    let out = env.run(&cfg, "forever", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = env.replay("forever");
    let s = states(&r, "p");
    assert_eq!(s.len(), 6);
    assert_eq!(s[5], P::Success);
    assert!(s[..5].iter().all(|s| *s == P::Failed));
    Ok(())
}

#[test]
fn reruns_a_daemon_after_each_success_until_killed() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "daemon",
        json!([{"name": "d", "daemon": true, "min_duration": 0, "cmdline": "echo run >> runs"}]),
        // A run whose shell is still starting may swallow SIGTERM; keep the fallback short.
        json!({"finalization_wait": 3}),
    );
    let child = env.spawn(&cfg, "daemon", &[]);
    let runs_file = env.sandbox("daemon").join("runs");
    wait_until("three daemon runs", Duration::from_secs(30), || {
        read(&runs_file).lines().count() >= 3
    })
    .unwrap();
    let k = env.kill("daemon");
    assert!(k.status.success(), "{}", show(&k));
    let out = common::wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let r = env.replay("daemon");
    assert_eq!(r.state(), TaskState::Killed);
    let s = states(&r, "d");
    assert!(s.iter().filter(|s| **s == P::Success).count() >= 3, "{s:?}");
    Ok(())
}

#[test]
fn min_duration_spaces_out_successive_runs() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "gate",
        json!([{"name": "p", "max_failures": 2, "min_duration": 1, "cmdline": "exit 1"}]),
        json!({}),
    );
    let out = env.run(&cfg, "gate", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = env.replay("gate");
    let rs = runs(&r, "p");
    assert_eq!(rs.len(), 2);
    let gap = rs[1].fork_time.unwrap() - rs[0].stop_time.unwrap();
    assert!(
        gap >= 0.99,
        "second run began {gap:.3}s after the first ended"
    );
    Ok(())
}

#[test]
fn ephemeral_daemon_is_stopped_and_final_process_runs_after_main() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "eph",
        json!([
            {"name": "main", "cmdline": "sleep 0.3; echo done > main_done"},
            {"name": "sidecar", "ephemeral": true, "daemon": true, "cmdline": "exec sleep 1000"},
            {"name": "cleanup", "final": true, "cmdline": "test -f main_done && touch final_ran"},
        ]),
        json!({"finalization_wait": 10}),
    );
    let out = env.run(&cfg, "eph", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = env.replay("eph");
    assert_eq!(r.state(), TaskState::Success);
    assert!(
        env.sandbox("eph").join("final_ran").exists(),
        "the final process did not run after main"
    );
    assert_eq!(states(&r, "main"), vec![P::Success]);
    assert_eq!(states(&r, "cleanup"), vec![P::Success]);
    let side = runs(&r, "sidecar");
    assert_eq!(side.last().unwrap().state, P::Killed);
    assert!(!alive(side.last().unwrap().pid.unwrap()));
    Ok(())
}

#[test]
fn max_concurrency_keeps_runs_from_overlapping() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "conc",
        json!([
            {"name": "a", "cmdline": "sleep 0.2"},
            {"name": "b", "cmdline": "sleep 0.2"},
            {"name": "c", "cmdline": "sleep 0.2"},
        ]),
        json!({"max_concurrency": 1}),
    );
    let out = env.run(&cfg, "conc", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r = env.replay("conc");
    let mut spans: Vec<(f64, f64)> = ["a", "b", "c"]
        .iter()
        .map(|p| {
            (
                runs(&r, p)[0].fork_time.unwrap(),
                runs(&r, p)[0].stop_time.unwrap(),
            )
        })
        .collect();
    spans.sort_by(|x, y| x.0.total_cmp(&y.0));
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "runs overlap: {spans:?}");
    }
    Ok(())
}

#[test]
fn task_max_failures_decides_how_many_failed_processes_fail_the_task() -> TestResult {
    let env = Env::new();
    let procs = json!([
        {"name": "bad1", "cmdline": "exit 1"},
        {"name": "bad2", "cmdline": "exit 1"},
        {"name": "good", "cmdline": "true"},
    ]);
    let strict = env.task("strict", procs.clone(), json!({"max_failures": 2}));
    let out = env.run(&strict, "strict", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let lenient = env.task("lenient", procs, json!({"max_failures": 3}));
    let out = env.run(&lenient, "lenient", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    Ok(())
}

#[test]
fn a_plan_that_can_never_finish_fails_the_task() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "deadlock",
        json!([
            {"name": "first", "cmdline": "exit 1"},
            {"name": "second", "cmdline": "touch second_ran"},
        ]),
        json!({"constraints": [{"order": ["first", "second"]}], "max_failures": 0}),
    );
    let out = env.run(&cfg, "deadlock", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = env.replay("deadlock");
    assert_eq!(r.state(), TaskState::Failed);
    assert!(!env.sandbox("deadlock").join("second_ran").exists());
    let reason = r
        .statuses
        .last()
        .unwrap()
        .reason
        .clone()
        .unwrap_or_default();
    assert!(reason.contains("second"), "reason: {reason}");
    Ok(())
}

#[test]
fn final_processes_run_in_their_own_order_after_the_regular_plan() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "finals",
        json!([
            {"name": "f2", "final": true, "cmdline": "echo f2 >> order"},
            {"name": "f1", "final": true, "cmdline": "echo f1 >> order"},
            {"name": "main", "cmdline": "echo main >> order"},
        ]),
        json!({"constraints": [{"order": ["f1", "f2"]}]}),
    );
    let out = env.run(&cfg, "finals", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(read(&env.sandbox("finals").join("order")), "main\nf1\nf2\n");
    Ok(())
}

#[test]
fn thermos_profile_written_by_one_process_is_sourced_by_the_next() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "profile",
        json!([
            {"name": "writer", "cmdline": "echo 'export GREETING=hello-from-profile' > .thermos_profile"},
            {"name": "reader", "cmdline": "echo \"$GREETING\" > greeting"},
        ]),
        json!({"constraints": [{"order": ["writer", "reader"]}]}),
    );
    let out = env.run(&cfg, "profile", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        read(&env.sandbox("profile").join("greeting")),
        "hello-from-profile\n"
    );
    Ok(())
}

#[test]
fn bound_ports_reach_the_command_line() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "ports",
        json!([{"name": "p", "cmdline": "echo {{thermos.ports[http]}} {{thermos.ports[admin]}} {{thermos.task_id}} > ports"}]),
        json!({}),
    );
    let out = env.run(&cfg, "ports", &["--port", "http=12345"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let line = read(&env.sandbox("ports").join("ports"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[0], "12345");
    let admin: u16 = words[1].parse()?;
    assert!(admin > 0);
    assert_eq!(words[2], "ports");
    let header = env.replay("ports").header.unwrap();
    assert_eq!(header.ports.get("http"), Some(&12345));
    assert_eq!(header.ports.get("admin"), Some(&i64::from(admin)));
    Ok(())
}

#[test]
fn logs_land_in_the_sandbox_per_process_and_run() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "logs",
        json!([{"name": "talk", "max_failures": 2, "min_duration": 0,
                "cmdline": "echo out-$HEARTH_RUN; echo err-$HEARTH_RUN >&2; [ -f again ] || { touch again; exit 1; }"}]),
        json!({}),
    );
    let out = env.run(&cfg, "logs", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let logs = env.sandbox("logs").join(".logs/talk");
    assert_eq!(read(&logs.join("0/stdout")), "out-0\n");
    assert_eq!(read(&logs.join("0/stderr")), "err-0\n");
    assert_eq!(read(&logs.join("1/stdout")), "out-1\n");
    Ok(())
}

#[test]
fn rotated_logs_keep_the_newest_bytes_within_the_bound() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "rotate",
        json!([{"name": "noisy",
                "logger": {"mode": "rotate", "rotate": {"log_size": 1000, "backups": 2}},
                "cmdline": "for i in $(seq 1 500); do printf 'line-%04d\\n' $i; done"}]),
        json!({}),
    );
    let out = env.run(&cfg, "rotate", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let dir = env.sandbox("rotate").join(".logs/noisy/0");
    let current = read(&dir.join("stdout"));
    assert!(
        current.ends_with("line-0500\n"),
        "newest bytes lost: {current:?}"
    );
    for f in ["stdout", "stdout.1", "stdout.2"] {
        let len = std::fs::metadata(dir.join(f))?.len();
        assert!(len <= 1000, "{f} is {len} bytes");
    }
    assert!(!dir.join("stdout.3").exists());
    Ok(())
}

#[test]
fn processes_inherit_only_the_standard_descriptors() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "fds",
        json!([{"name": "p", "cmdline": "ls /proc/$$/fd > fds; true"}]),
        json!({}),
    );
    let out = env.run(&cfg, "fds", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let fds: Vec<String> = read(&env.sandbox("fds").join("fds"))
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        fds,
        vec!["0", "1", "2"],
        "the shell saw descriptors {fds:?}"
    );
    Ok(())
}

#[test]
fn processes_run_as_the_task_user_in_a_sandbox_it_owns() -> TestResult {
    if !common::have_root("processes_run_as_the_task_user_in_a_sandbox_it_owns") {
        return Ok(());
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    // The task user must be able to reach its sandbox under the test's directory.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let cfg = env.task(
        "asuser",
        json!([{"name": "who", "cmdline": "echo \"$(id -u) $(id -g) $(id -G)\" > ids; echo hi"}]),
        json!({}),
    );
    // The executor itself holds a supplementary group (4242) the task user must not inherit.
    let out = std::process::Command::new("setpriv")
        .args([
            "--groups",
            "4242",
            "--",
            env!("CARGO_BIN_EXE_hearth"),
            "run",
        ])
        .arg(&cfg)
        .arg("--root")
        .arg(env.root())
        .args(["--task-id", "asuser", "--user", "nobody"])
        .stdin(std::process::Stdio::null())
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let user = nix::unistd::User::from_name("nobody")?.ok_or("this host has no user nobody")?;
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let mut want_groups: Vec<u32> = nix::unistd::getgrouplist(c"nobody", user.gid)?
        .into_iter()
        .map(|g| g.as_raw())
        .chain([gid])
        .collect();
    want_groups.sort_unstable();
    want_groups.dedup();

    let sandbox = env.sandbox("asuser");
    let ids = read(&sandbox.join("ids"));
    let fields: Vec<u32> = ids
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    assert_eq!(
        fields.get(..2),
        Some(&[uid, gid][..]),
        "uid and gid: {ids:?}"
    );
    let mut groups = fields[2..].to_vec();
    groups.sort_unstable();
    groups.dedup();
    // Exactly the user's groups: none of the executor's (0, 4242) is left behind.
    assert_eq!(groups, want_groups, "groups: {ids:?}");

    let meta = std::fs::metadata(&sandbox)?;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (uid, gid, 0o700),
        "the sandbox's owner and mode"
    );
    let log = sandbox.join(".logs").join("who").join("0").join("stdout");
    assert_eq!(read(&log), "hi\n");
    assert_eq!(std::fs::metadata(&log)?.uid(), uid, "the log's owner");
    Ok(())
}

#[test]
fn an_invalid_config_exits_2_and_creates_nothing() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "bad",
        json!([{"name": "a/b", "cmdline": "true"}]),
        json!({}),
    );
    let out = env.run(&cfg, "bad", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("processes[0].name"),
        "{}",
        show(&out)
    );
    assert!(!env.root().exists(), "something was created under the root");
    Ok(())
}

#[test]
fn a_second_executor_refuses_a_task_that_is_already_owned() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "owned",
        json!([{"name": "p", "cmdline": "exec sleep 1000"}]),
        // A shell that gets SIGTERM while still starting may swallow it; keep the fallback short.
        json!({"finalization_wait": 3}),
    );
    let first = env.spawn(&cfg, "owned", &[]);
    wait_until("the process to run", Duration::from_secs(20), || {
        env.root().join("checkpoints/owned/runner").exists()
            && states(&env.replay("owned"), "p").contains(&P::Running)
    })
    .unwrap();
    let second = env.run(&cfg, "owned", &[]);
    assert_eq!(second.status.code(), Some(2), "{}", show(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already run by executor pid"),
        "{}",
        show(&second)
    );
    let k = env.kill("owned");
    assert!(k.status.success(), "{}", show(&k));
    let out = common::wait_output(first, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(states(&env.replay("owned"), "p"), vec![P::Killed]);
    Ok(())
}

#[test]
fn kill_stops_a_double_forked_daemon_and_empties_the_cgroup() -> TestResult {
    if !have_cgroups("kill_stops_a_double_forked_daemon_and_empties_the_cgroup") {
        return Ok(());
    }
    let env = Env::new();
    let cfg = env.task(
        "dfork",
        json!([{"name": "launcher",
                "cmdline": "(setsid bash -c 'trap \"rm -f marker; exit 0\" TERM; echo $$ > daemon.pid; touch marker; while true; do sleep 0.05; done' &); exec sleep 1000"}]),
        json!({"finalization_wait": 10}),
    );
    let child = env.spawn(&cfg, "dfork", &[]);
    let sandbox = env.sandbox("dfork");
    wait_until("the daemon's marker", Duration::from_secs(20), || {
        sandbox.join("marker").exists()
            && read(&sandbox.join("daemon.pid"))
                .trim()
                .parse::<i32>()
                .is_ok()
    })
    .unwrap();
    let daemon: i32 = read(&sandbox.join("daemon.pid")).trim().parse().unwrap();
    assert!(alive(daemon));
    let k = env.kill("dfork");
    assert!(k.status.success(), "{}", show(&k));
    let out = common::wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        !sandbox.join("marker").exists(),
        "the daemon did not get SIGTERM"
    );
    wait_until("the daemon to be gone", Duration::from_secs(5), || {
        !alive(daemon)
    })
    .unwrap();
    // v1 controllers and the hybrid tree each have a mount under /sys/fs/cgroup; pure v2 is the
    // mount itself (""). The parent `hearth` is kept, so it shows where the task's cgroup was.
    let mut parents = 0;
    for c in ["memory", "pids", "freezer", "cpu", "unified", ""] {
        let parent = Path::new("/sys/fs/cgroup").join(c).join("hearth");
        parents += usize::from(parent.is_dir());
        let dir = parent.join("dfork");
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    assert!(parents > 0, "no hearth cgroup under /sys/fs/cgroup");
    Ok(())
}

#[test]
fn a_process_over_its_memory_limit_is_recorded_as_oom() -> TestResult {
    if !have_cgroups("a_process_over_its_memory_limit_is_recorded_as_oom") {
        return Ok(());
    }
    let env = Env::new();
    let cfg = env.task(
        "oom",
        json!([{"name": "hog", "cmdline": "x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo ${#x}"}]),
        json!({"resources": {"cpu": 1.0, "ram": 64 * 1024 * 1024, "disk": 1 << 30}}),
    );
    let out = env.run(&cfg, "oom", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = env.replay("oom");
    let run = &runs(&r, "hog")[0];
    assert_eq!(run.state, P::Failed);
    assert_eq!(run.reason.as_deref(), Some("oom"), "{run:?}");
    Ok(())
}

#[test]
fn a_task_runs_in_its_cgroup_under_the_configured_limits() -> TestResult {
    if !have_cgroups("a_task_runs_in_its_cgroup_under_the_configured_limits") {
        return Ok(());
    }
    let env = Env::new();
    let ram: u64 = 96 << 20;
    let cfg = env.task(
        "limits",
        json!([{"name": "server", "cmdline": "touch ready; exec sleep 1000"}]),
        json!({"resources": {"cpu": 0.5, "ram": ram, "disk": 1 << 30}, "finalization_wait": 5}),
    );
    let child = env.spawn(&cfg, "limits", &[]);
    wait_until("the process to start", Duration::from_secs(20), || {
        env.sandbox("limits").join("ready").exists()
    })
    .unwrap();
    let pid = runs(&env.replay("limits"), "server")[0].pid.unwrap();
    // `<id>:<controllers>:<path>` per hierarchy; v2 (pure, or the hybrid tree) is `0::<path>`.
    let membership = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let path_in = |controller: &str| {
        membership.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, names, path) = (f.next()?, f.next()?, f.next()?);
            names
                .split(',')
                .any(|n| n == controller)
                .then(|| path.trim_start_matches('/').to_owned())
        })
    };
    let control = |dir: &Path, file: &str| read(&dir.join(file)).trim().to_owned();
    let cg = Path::new("/sys/fs/cgroup");
    if cg.join("cgroup.controllers").exists() {
        let path = path_in("").unwrap();
        assert_eq!(path, "hearth/limits", "{membership}");
        let dir = cg.join(&path);
        assert_eq!(control(&dir, "memory.max"), ram.to_string());
        assert_eq!(control(&dir, "cpu.max"), "50000 100000");
        assert_eq!(control(&dir, "pids.max"), "16384");
    } else {
        let memory = cg.join("memory").join(path_in("memory").unwrap());
        let cpu = cg.join("cpu").join(path_in("cpu").unwrap());
        let pids = cg.join("pids").join(path_in("pids").unwrap());
        assert!(memory.ends_with("hearth/limits"), "{membership}");
        assert_eq!(control(&memory, "memory.limit_in_bytes"), ram.to_string());
        assert_eq!(control(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(control(&cpu, "cpu.cfs_period_us"), "100000");
        assert_eq!(control(&pids, "pids.max"), "16384");
    }
    let k = env.kill("limits");
    assert!(k.status.success(), "{}", show(&k));
    let out = common::wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    Ok(())
}

#[test]
fn without_cgroups_kill_still_reaches_a_double_forked_daemon() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "nocg",
        json!([{"name": "launcher",
                "cmdline": "(setsid bash -c 'trap \"rm -f marker; exit 0\" TERM; echo $$ > daemon.pid; touch marker; while true; do sleep 0.05; done' &); exec sleep 1000"}]),
        json!({"finalization_wait": 10}),
    );
    let child = env.spawn(&cfg, "nocg", &["--no-cgroups"]);
    let sandbox = env.sandbox("nocg");
    wait_until("the daemon's marker", Duration::from_secs(20), || {
        sandbox.join("marker").exists()
            && read(&sandbox.join("daemon.pid"))
                .trim()
                .parse::<i32>()
                .is_ok()
    })
    .unwrap();
    let daemon: i32 = read(&sandbox.join("daemon.pid")).trim().parse().unwrap();
    let k = env.kill("nocg");
    assert!(k.status.success(), "{}", show(&k));
    let out = common::wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--no-cgroups"),
        "no warning about running without cgroups: {}",
        show(&out)
    );
    assert!(
        !sandbox.join("marker").exists(),
        "the daemon did not get SIGTERM"
    );
    wait_until("the daemon to be gone", Duration::from_secs(5), || {
        !alive(daemon)
    })
    .unwrap();
    Ok(())
}

#[test]
fn logger_destination_both_writes_the_log_and_the_console() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "both",
        json!([
            {"name": "both", "logger": {"destination": "both"},
             "cmdline": "echo to-both; echo err-both >&2"},
            {"name": "console", "logger": {"destination": "console"},
             "cmdline": "echo to-console-only"},
        ]),
        json!({}),
    );
    let out = env.run(&cfg, "both", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("to-both"), "{}", show(&out));
    assert!(stderr.contains("err-both"), "{}", show(&out));
    assert!(stdout.contains("to-console-only"), "{}", show(&out));
    let logs = env.sandbox("both").join(".logs");
    assert_eq!(read(&logs.join("both/0/stdout")), "to-both\n");
    assert_eq!(read(&logs.join("both/0/stderr")), "err-both\n");
    assert!(!logs.join("console/0/stdout").exists());
    Ok(())
}

/// The scheduler's side for a test: a status receiver on loopback (it also keeps condition
/// reports), served by its own runtime until that is dropped; and its URL.
fn status_receiver() -> Result<
    (
        tokio::runtime::Runtime,
        std::sync::Arc<hearth_scheduler::receiver::StatusStore>,
        String,
    ),
    Box<dyn std::error::Error>,
> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let store = hearth_scheduler::receiver::StatusStore::new();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let scheduler = format!("http://{}", listener.local_addr()?);
    rt.spawn(hearth_scheduler::receiver::serve(
        listener,
        store.clone(),
        std::future::pending(),
    ));
    Ok((rt, store, scheduler))
}

/// Run a command that must succeed (mount, mkfs, ...), naming it when it does not.
fn must(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{program} {args:?}: {}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("{program} {args:?}: {e}"),
    }
}

/// A test mount, lazily unmounted when the test ends, however it ends.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Start `hearth run` for a task whose checkpoint root is a test file system: the sandbox
/// beside the root (on another file system), no cgroups, status reports to `scheduler`; stdout
/// dropped, stderr to the file whose path is returned.
fn run_reporting(
    env: &Env,
    cfg: &Path,
    id: &str,
    scheduler: &str,
) -> Result<(std::process::Child, std::path::PathBuf), Box<dyn std::error::Error>> {
    let sandbox = env.root().with_file_name("sandbox");
    let stderr_path = env.root().with_file_name("executor.stderr");
    let exec = env
        .run_cmd(
            cfg,
            id,
            &[
                "--sandbox",
                sandbox.to_str().ok_or("sandbox path")?,
                "--no-cgroups",
                "--scheduler",
                scheduler,
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()?;
    Ok((exec, stderr_path))
}

/// `hearth kill` the task, wait for its executor to end with exit 3 (killed), and return the
/// replay of its stream, which must end cleanly with the task KILLED.
fn kill_to_a_clean_stream(
    env: &Env,
    id: &str,
    exec: &mut std::process::Child,
    stderr: &dyn Fn() -> String,
) -> Result<hearth_checkpoints::replay::TaskReplay, Box<dyn std::error::Error>> {
    let k = env.kill(id);
    assert!(k.status.success(), "{}", show(&k));
    let mut status = None;
    wait_until("the executor to end", Duration::from_secs(30), || {
        status = exec.try_wait().ok().flatten();
        status.is_some()
    })
    .unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{}", stderr());
    let replayed = hearth_checkpoints::stream::replay_path(
        &env.root().join("checkpoints").join(id).join("runner"),
    )?;
    assert_eq!(
        replayed.end,
        hearth_checkpoints::stream::StreamEnd::Clean,
        "{}",
        stderr()
    );
    assert_eq!(replayed.replay.state(), TaskState::Killed);
    Ok(replayed.replay)
}

/// Regression (the same for a read-only remount): the checkpoint root is an ext4 file system
/// mounted `errors=remount-ro`; mid-task the kernel is told of a file-system error
/// (`/sys/fs/ext4/<dev>/trigger_fs_error`) and remounts it read-only, as it does on a real I/O
/// error. Every checkpoint write then fails with EROFS. The executor does not exit; the scheduler
/// hears of it; once the file system is checked and mounted again the executor reopens its stream
/// there and the task carries on to a clean, complete stream. The file system has no journal:
/// e2fsck clears an aborted journal without replaying it, which would drop metadata (a stream's
/// length) that an fsync had already made durable, a loss of the test's making.
#[test]
fn read_only_remount_regression_the_executor_waits_until_the_disk_is_writable_again() -> TestResult
{
    if !common::have_root("read_only_remount_regression") {
        return Ok(());
    }
    let env = Env::new();
    let root = env.root();
    std::fs::create_dir_all(&root)?;
    let image = env.root().with_file_name("ckpt.ext4");
    let (root_s, image_s) = (root.to_str().unwrap(), image.to_str().unwrap());
    must("truncate", &["-s", "64M", image_s]);
    must("mkfs.ext4", &["-q", "-F", "-O", "^has_journal", image_s]);
    must("mount", &["-o", "loop,errors=remount-ro", image_s, root_s]);
    let _unmount = Unmount(root.clone());
    let device = std::process::Command::new("findmnt")
        .args(["-n", "-o", "SOURCE", root_s])
        .output()?;
    let device = String::from_utf8_lossy(&device.stdout).trim().to_owned();
    let sysfs = Path::new("/sys/fs/ext4")
        .join(Path::new(&device).file_name().ok_or("no loop device")?)
        .join("trigger_fs_error");
    assert!(sysfs.exists(), "{} is missing", sysfs.display());

    let (rt, store, scheduler) = status_receiver()?;
    // The churn fails over and over (each run a few records) until told to settle.
    let settle = env.root().with_file_name("settle");
    let cfg = env.task(
        "ro",
        json!([
            {"name": "steady", "cmdline": "exec sleep 1000"},
            {"name": "churn", "max_failures": 0, "min_duration": 0,
             "cmdline": format!(
                 "[ -e {s} ] && {{ echo $HEARTH_RUN > {s}.run; exec sleep 1000; }}; exit 1",
                 s = settle.display()
             )},
        ]),
        json!({"finalization_wait": 5}),
    );
    let id = "ro";
    let (mut exec, stderr_path) = run_reporting(&env, &cfg, id, &scheduler)?;
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    wait_until("a few runs of the churn", Duration::from_secs(60), || {
        env.try_replay(id)
            .is_some_and(|r| runs(&r, "churn").len() >= 5)
    })
    .unwrap();
    let before = env.try_replay(id).map_or(0, |r| runs(&r, "churn").len());
    std::fs::write(&sysfs, "hearth test: read-only remount\n")?;
    // Stalled: the churn's latest run is FORKED or RUNNING in the stream, yet its process is
    // not alive — it exited and the exit cannot be written (by the keeper, its parent, which
    // records exits first, or by the executor), or its start waits for its record.
    wait_until(
        "an exit to be held for want of a writable disk",
        Duration::from_secs(60),
        || {
            env.try_replay(id).is_some_and(|r| {
                runs(&r, "churn").last().is_some_and(|x| {
                    matches!(x.state, P::Forked | P::Running)
                        && x.pid.is_none_or(|pid| !common::alive(pid))
                })
            })
        },
    )
    .unwrap();
    // The executor says so when it is the one that met it: on stderr and to the scheduler.
    if stderr().contains("checkpoint write failed") {
        wait_until(
            "the scheduler to hear of the failing writes",
            Duration::from_secs(30),
            || {
                store.conditions(id).last().is_some_and(|c| {
                    c.condition.as_deref().is_some_and(|m| {
                        m.contains("Read-only file system") || m.contains("Input/output error")
                    })
                })
            },
        )
        .unwrap();
    }
    assert!(
        exec.try_wait()?.is_none(),
        "the executor exited: {}",
        stderr()
    );
    // Back to writable: check the file system and mount it again where it was. (A copy: the
    // detached mount still holds the image's loop device, and `mount -o loop` would reuse that
    // device and with it the read-only file system.)
    must("umount", &["-l", root_s]);
    let copy = image.with_extension("fixed.ext4");
    let copy_s = copy.to_str().unwrap();
    must("cp", &["--sparse=always", image_s, copy_s]);
    let fsck = std::process::Command::new("e2fsck")
        .args(["-f", "-y", copy_s])
        .output()?;
    assert!(
        fsck.status.code().is_some_and(|c| c <= 1),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    must("mount", &["-o", "loop,errors=remount-ro", copy_s, root_s]);
    wait_until(
        "the churn to carry on where it stopped",
        Duration::from_secs(60),
        || {
            env.try_replay(id)
                .is_some_and(|r| runs(&r, "churn").len() > before + 5)
        },
    )
    .unwrap_or_else(|e| {
        let replay = env.try_replay(id).map(|r| {
            runs(&r, "churn")
                .iter()
                .map(|x| (x.run, x.state))
                .collect::<Vec<_>>()
        });
        let inspect = common::hearth()
            .args(["inspect", "--root"])
            .arg(env.root())
            .arg(id)
            .output()
            .map(|o| show(&o))
            .unwrap_or_default();
        panic!(
            "{e}: the churn's runs {replay:?}; the executor's stderr:\n{}\n`hearth inspect`: \
             {inspect}",
            stderr()
        )
    });
    std::fs::write(&settle, "")?;
    let stamp = settle.with_extension("run");
    wait_until("the churn to settle", Duration::from_secs(60), || {
        let settled: Option<u32> = std::fs::read_to_string(&stamp)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        settled.is_some_and(|n| {
            env.try_replay(id).is_some_and(|r| {
                runs(&r, "churn")
                    .last()
                    .is_some_and(|x| x.run == n && x.state == P::Running)
            })
        })
    })
    .unwrap();
    wait_until(
        "the scheduler to hear the condition ended",
        Duration::from_secs(30),
        || {
            store
                .conditions(id)
                .last()
                .is_some_and(|c| c.condition.is_none())
        },
    )
    .unwrap();
    assert!(
        exec.try_wait()?.is_none(),
        "the executor exited: {}",
        stderr()
    );
    let r = kill_to_a_clean_stream(&env, id, &mut exec, &stderr)?;
    let churn = runs(&r, "churn");
    // Every run is there, numbered without a gap; none is LOST: all failed but the last, which
    // the kill ended.
    let last = churn.len() - 1;
    assert!(churn.iter().enumerate().all(|(i, x)| x.run as usize == i));
    assert!(
        churn[..last].iter().all(|x| x.state == P::Failed),
        "{:?}",
        churn.iter().map(|x| x.state).collect::<Vec<_>>()
    );
    assert_eq!(churn[last].state, P::Killed);
    assert_eq!(states(&r, "steady"), [P::Killed]);
    drop(rt);
    Ok(())
}

/// Regression (a full disk ended supervision): with the checkpoint root on a tiny tmpfs, a task
/// that keeps restarting a process fills it. The executor used to exit 4 with `checkpoint write
/// failed: … No space left on device`, leaving a torn tail and the task's other processes
/// unsupervised. Now it goes on supervising, holds what needs a record, retries, and once the
/// file system is enlarged the task carries on and the stream is complete and valid.
#[test]
fn full_disk_regression_the_executor_waits_out_a_full_checkpoint_disk() -> TestResult {
    if !common::have_root("full_disk_regression") {
        return Ok(());
    }
    let env = Env::new();
    let root = env.root();
    std::fs::create_dir_all(&root)?;
    let root_s = root.to_str().unwrap();
    must("mount", &["-t", "tmpfs", "-o", "size=64k", "tmpfs", root_s]);
    let _unmount = Unmount(root.clone());
    let cfg = env.task(
        "fill",
        json!([
            {"name": "steady", "cmdline": "exec sleep 1000"},
            {"name": "churn", "max_failures": 0, "min_duration": 0,
             "cmdline": "[ $HEARTH_RUN -ge 300 ] && exec sleep 1000; exit 1"},
        ]),
        json!({"finalization_wait": 5}),
    );
    let id = "fill";
    let (rt, store, scheduler) = status_receiver()?;
    let (mut exec, stderr_path) = run_reporting(&env, &cfg, id, &scheduler)?;
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let condition = || {
        let out = common::hearth()
            .args(["inspect", id, "--json", "--root"])
            .arg(&root)
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(v["condition"].clone())
    };
    wait_until(
        "the checkpoint disk to fill",
        Duration::from_secs(60),
        || stderr().contains("checkpoint write failed"),
    )
    .unwrap();
    // The condition is shown where operators look: `hearth inspect` (from the condition file
    // beside the stream) and the scheduler.
    wait_until(
        "hearth inspect to show the failing writes",
        Duration::from_secs(30),
        || {
            condition().is_some_and(|c| {
                c["kind"] == "checkpoint_writes_failing"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("No space left on device"))
            })
        },
    )
    .unwrap();
    let text = common::hearth()
        .args(["inspect", id, "--root"])
        .arg(&root)
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("WARNING: checkpoint writes failing since ")),
        "{text}"
    );
    wait_until(
        "the scheduler to hear of the failing writes",
        Duration::from_secs(30),
        || {
            store.conditions(id).last().is_some_and(|c| {
                c.condition
                    .as_deref()
                    .is_some_and(|m| m.starts_with("checkpoint writes failing: "))
            })
        },
    )
    .unwrap();
    // Supervision goes on: the executor waits, it does not exit.
    assert!(
        exec.try_wait()?.is_none(),
        "the executor exited: {}",
        stderr()
    );
    must("mount", &["-o", "remount,size=16m", root_s]);
    wait_until("the churn to settle", Duration::from_secs(60), || {
        env.try_replay(id).is_some_and(|r| {
            runs(&r, "churn")
                .last()
                .is_some_and(|x| x.run == 300 && x.state == P::Running)
        })
    })
    .unwrap();
    assert!(
        exec.try_wait()?.is_none(),
        "the executor exited: {}",
        stderr()
    );
    wait_until("the condition to clear", Duration::from_secs(30), || {
        condition().is_some_and(|c| c.is_null())
            && store
                .conditions(id)
                .last()
                .is_some_and(|c| c.condition.is_none())
    })
    .unwrap();
    let r = kill_to_a_clean_stream(&env, id, &mut exec, &stderr)?;
    let churn = runs(&r, "churn");
    assert_eq!(churn.len(), 301);
    assert!(churn[..300].iter().all(|x| x.state == P::Failed));
    assert_eq!(churn[300].state, P::Killed);
    assert_eq!(states(&r, "steady"), [P::Killed]);
    drop(rt);
    Ok(())
}
