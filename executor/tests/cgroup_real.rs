//! Task cgroups against the real kernel: limits, membership before exec, double-forked daemons,
//! SIGTERM and kill-all, OOM kills, accounting and removal.
//!
//! These need root and a cgroup hierarchy. Without them a test prints why and passes, unless
//! `HEARTH_REQUIRE_CGROUPS=1` is set (CI sets it), in which case it fails. With
//! `HEARTH_REQUIRE_CGROUP_V2=1` (CI's cgroup v2 guest, `.ci/vm`) every test also fails unless the
//! host's hierarchy is pure v2. Each test makes its own cgroup `hearth-test/<test>-<pid>` and
//! removes it, even when it fails.

// A test thread, not the executor's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

use hearth_testkit::wait_until;
use std::error::Error;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hearth_executor::cgroup::{self, Hierarchy, Limits, TaskCgroup};
use nix::sys::signal::Signal;

type TestResult = Result<(), Box<dyn Error>>;

const PARENT: &str = "hearth-test";
const DEADLINE: Duration = Duration::from_secs(10);

/// The host's hierarchy, `None` to skip (with the reason printed), or an error when cgroups (or
/// cgroup v2) are required and missing.
fn host(test: &str) -> Result<Option<Hierarchy>, Box<dyn Error>> {
    match cgroup::available() {
        Ok(h)
            if std::env::var("HEARTH_REQUIRE_CGROUP_V2").as_deref() == Ok("1")
                && !matches!(h, Hierarchy::V2 { .. }) =>
        {
            Err(format!("HEARTH_REQUIRE_CGROUP_V2=1 but the host's hierarchy is {h:?}").into())
        }
        Ok(h) => Ok(Some(h)),
        Err(e) if std::env::var("HEARTH_REQUIRE_CGROUPS").as_deref() == Ok("1") => {
            Err(format!("HEARTH_REQUIRE_CGROUPS=1 but cgroups are not usable: {e}").into())
        }
        Err(e) => {
            eprintln!("skipping {test}: cgroups are not usable here: {e}");
            Ok(None)
        }
    }
}

/// A task cgroup that is killed and removed when the test ends, however it ends.
struct Scoped(TaskCgroup);

impl Scoped {
    fn create(h: &Hierarchy, test: &str, limits: &Limits) -> Result<Self, Box<dyn Error>> {
        let task_id = format!("{test}-{}", std::process::id());
        Ok(Self(TaskCgroup::create(h, PARENT, &task_id, limits)?))
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        let _ = self.0.kill_all();
        if let Err(e) = self.0.remove() {
            eprintln!(
                "could not remove test cgroup {}: {e}",
                self.0.name().display()
            );
        }
    }
}

/// Starts `bash -c script` inside `cg`: the child writes `0` to every join file after fork and
/// before exec, through descriptors opened here.
#[allow(unsafe_code)]
fn spawn_in(cg: &TaskCgroup, script: &str) -> Result<Child, Box<dyn Error>> {
    let fds = cg
        .join_files()
        .iter()
        .map(|p| OpenOptions::new().write(true).open(p).map(OwnedFd::from))
        .collect::<io::Result<Vec<OwnedFd>>>()?;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let mut cmd = Command::new("/bin/bash");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: between fork and exec the closure only calls write(2), which is async-signal-safe,
    // on descriptors opened before the fork (close-on-exec, so they do not leak into the task),
    // and it neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &raw {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(fds);
    Ok(child)
}

fn pid_of(child: &Child) -> Result<i32, Box<dyn Error>> {
    Ok(i32::try_from(child.id())?)
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn limits_are_applied_and_read_back_from_the_kernel() -> TestResult {
    let Some(h) = host("limits_are_applied_and_read_back_from_the_kernel")? else {
        return Ok(());
    };
    // Not a multiple of the page size: the kernel rounds it down, and that must be accepted.
    let limits = Limits {
        memory_bytes: Some((64 << 20) + 12_345),
        cpu_cores: Some(0.5),
        pids_max: Some(64),
        swap_bytes: 0,
        memory_high_bytes: None,
    };
    let cg = Scoped::create(&h, "limits", &limits)?;
    let read = cg.0.read_limits()?;
    let memory = read
        .memory_bytes
        .ok_or("memory limit reads back as unlimited")?;
    assert!(
        (64 << 20..=(64 << 20) + 12_345).contains(&memory),
        "memory limit {memory}"
    );
    assert_eq!(read.cpu_cores, Some(0.5));
    assert_eq!(read.pids_max, Some(64));

    let reopened =
        TaskCgroup::open_existing(&h, PARENT, &format!("limits-{}", std::process::id()))?;
    assert_eq!(reopened.read_limits()?, read);
    Ok(())
}

#[test]
fn a_swap_allowance_and_a_soft_memory_limit_are_in_force_on_v2_and_refused_on_v1() -> TestResult {
    let test = "a_swap_allowance_and_a_soft_memory_limit_are_in_force_on_v2_and_refused_on_v1";
    let Some(h) = host(test)? else {
        return Ok(());
    };
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        swap_bytes: 16 << 20,
        memory_high_bytes: Some(48 << 20),
        ..Limits::default()
    };
    if !matches!(h, Hierarchy::V2 { .. }) {
        let err = Scoped::create(&h, "soft", &limits)
            .err()
            .ok_or("v1 took memory.high")?;
        assert!(err.to_string().contains("memory_high_bytes"), "{err}");
        return Ok(());
    }
    let cg = Scoped::create(&h, "soft", &limits)?;
    let [dir] =
        cg.0.dirs()
            .try_into()
            .map_err(|d| format!("v2 dirs {d:?}"))?;
    assert_eq!(control(&dir, "memory.high")?, (48u64 << 20).to_string());
    assert_eq!(control(&dir, "memory.max")?, (64u64 << 20).to_string());
    let read = cg.0.read_limits()?;
    assert_eq!(read.memory_high_bytes, Some(48 << 20));
    if dir.join("memory.swap.max").exists() {
        assert_eq!(control(&dir, "memory.swap.max")?, (16u64 << 20).to_string());
        assert_eq!(read.swap_bytes, 16 << 20);
    }
    Ok(())
}

#[test]
fn spawned_process_is_a_member_of_every_hierarchy_before_exec() -> TestResult {
    let Some(h) = host("spawned_process_is_a_member_of_every_hierarchy_before_exec")? else {
        return Ok(());
    };
    let cg = Scoped::create(&h, "member", &Limits::default())?;
    let mut child = spawn_in(&cg.0, "exec sleep 30")?;
    let pid = pid_of(&child)?;
    // `spawn` returns once exec has succeeded, so membership must already be visible.
    for file in cg.0.join_files() {
        let members = fs::read_to_string(&file)?;
        assert!(
            members.lines().any(|l| l.trim() == pid.to_string()),
            "pid {pid} missing from {}: {members:?}",
            file.display()
        );
    }
    assert_eq!(cg.0.pids()?, vec![pid]);
    assert!(!cg.0.is_empty()?);
    cg.0.kill_all()?;
    child.wait()?;
    Ok(())
}

#[test]
fn double_forked_daemon_is_still_tracked_after_its_parent_exits() -> TestResult {
    let Some(h) = host("double_forked_daemon_is_still_tracked_after_its_parent_exits")? else {
        return Ok(());
    };
    let cg = Scoped::create(&h, "daemon", &Limits::default())?;
    let mut child = spawn_in(&cg.0, "sleep 30 & disown; exit 0")?;
    let bash = pid_of(&child)?;
    assert!(child.wait()?.success());
    let pids = cg.0.pids()?;
    assert!(
        !pids.contains(&bash),
        "the exited parent is still listed: {pids:?}"
    );
    // The orphan may not have reached exec yet when its parent exits; it is a member either way.
    assert_eq!(pids.len(), 1, "the orphan is not tracked: {pids:?}");
    wait_until("the tracked orphan is sleep", DEADLINE, || {
        Ok(cg.0.pids()?.iter().any(|&p| comm(p) == "sleep"))
    })?;
    assert!(!cg.0.is_empty()?);
    cg.0.kill_all()?;
    wait_until("the orphan is killed", DEADLINE, || Ok(cg.0.is_empty()?))?;
    Ok(())
}

#[test]
fn signal_all_sigterm_empties_the_cgroup() -> TestResult {
    let Some(h) = host("signal_all_sigterm_empties_the_cgroup")? else {
        return Ok(());
    };
    let cg = Scoped::create(&h, "sigterm", &Limits::default())?;
    let mut direct = spawn_in(&cg.0, "sleep 30 & sleep 30 & wait")?;
    let mut orphaning = spawn_in(&cg.0, "sleep 30 & disown; exit 0")?;
    orphaning.wait()?;
    wait_until(
        "both sleeps under the first bash have started",
        DEADLINE,
        || Ok(cg.0.pids()?.len() >= 4),
    )?;
    let members = cg.0.pids()?.len();
    let signalled = cg.0.signal_all(Signal::SIGTERM)?;
    assert_eq!(signalled, members);
    let status = direct.wait()?;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    wait_until("every member has exited", DEADLINE, || {
        Ok(cg.0.is_empty()?)
    })?;
    assert_eq!(cg.0.pids()?, Vec::<i32>::new());
    Ok(())
}

#[test]
fn kill_all_ends_members_that_ignore_sigterm() -> TestResult {
    let Some(h) = host("kill_all_ends_members_that_ignore_sigterm")? else {
        return Ok(());
    };
    let cg = Scoped::create(&h, "killall", &Limits::default())?;
    // An ignored signal stays ignored across fork and exec: all three ignore SIGTERM.
    let mut child = spawn_in(&cg.0, "trap '' TERM; sleep 30 & sleep 30 & wait")?;
    wait_until("the sleeps have started", DEADLINE, || {
        Ok(cg.0.pids()?.len() == 3)
    })?;
    assert_eq!(cg.0.signal_all(Signal::SIGTERM)?, 3);
    let survivors = cg.0.pids()?;
    assert!(child.try_wait()?.is_none(), "bash did not ignore SIGTERM");
    cg.0.kill_all()?;
    let status = child.wait()?;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    wait_until("every member is killed", DEADLINE, || {
        Ok(cg.0.is_empty()?)
    })?;
    assert_eq!(survivors.len(), 3, "members after SIGTERM: {survivors:?}");
    Ok(())
}

/// The text of `dir/file`, trimmed.
fn control(dir: &Path, file: &str) -> Result<String, Box<dyn Error>> {
    let path = dir.join(file);
    Ok(fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .trim()
        .to_owned())
}

/// The value of `key` in a flat-keyed control file (`cgroup.events`, `memory.events`, `cpu.stat`).
fn keyed(dir: &Path, file: &str, key: &str) -> Result<u64, Box<dyn Error>> {
    let text = control(dir, file)?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .ok_or_else(|| format!("no {key} in {file}: {text:?}"))?;
    Ok(value.trim().parse()?)
}

#[test]
fn kill_all_ends_every_member_through_the_hosts_kill_mechanism() -> TestResult {
    let test = "kill_all_ends_every_member_through_the_hosts_kill_mechanism";
    let Some(h) = host(test)? else {
        return Ok(());
    };
    let script = "for i in 1 2 3 4; do sleep 30 & done; wait";
    match h {
        // The same host seen without its cgroup2 tree, so kill_all must freeze, kill and thaw.
        Hierarchy::V1 { mounts, .. } => {
            let v1_only = Hierarchy::V1 {
                mounts: mounts.clone(),
                unified: None,
            };
            let cg = Scoped::create(&v1_only, "freezer", &Limits::default())?;
            let mut child = spawn_in(&cg.0, script)?;
            wait_until("the sleeps have started", DEADLINE, || {
                Ok(cg.0.pids()?.len() >= 5)
            })?;
            cg.0.kill_all()?;
            assert_eq!(child.wait()?.signal(), Some(libc::SIGKILL));
            wait_until("every member is killed", DEADLINE, || {
                Ok(cg.0.is_empty()?)
            })?;
            let freezer = mounts.freezer.ok_or("no freezer")?;
            let state = freezer.join(cg.0.name());
            assert_eq!(control(&state, "freezer.state")?, "THAWED");
        }
        // v2 kills the whole tree with one write to cgroup.kill (kernel 5.14 and later), and
        // cgroup.events reports the tree unpopulated and never frozen.
        Hierarchy::V2 { .. } => {
            let cg = Scoped::create(&h, "cgkill", &Limits::default())?;
            let [dir] =
                cg.0.dirs()
                    .try_into()
                    .map_err(|d| format!("v2 dirs {d:?}"))?;
            assert!(
                dir.join("cgroup.kill").exists(),
                "no cgroup.kill in {dir:?}"
            );
            let mut child = spawn_in(&cg.0, script)?;
            wait_until("the sleeps have started", DEADLINE, || {
                Ok(cg.0.pids()?.len() >= 5)
            })?;
            assert_eq!(keyed(&dir, "cgroup.events", "populated")?, 1);
            cg.0.kill_all()?;
            assert_eq!(child.wait()?.signal(), Some(libc::SIGKILL));
            wait_until("cgroup.events says populated 0", DEADLINE, || {
                Ok(keyed(&dir, "cgroup.events", "populated")? == 0)
            })?;
            assert_eq!(keyed(&dir, "cgroup.events", "frozen")?, 0);
            assert_eq!(control(&dir, "cgroup.procs")?, "");
        }
        Hierarchy::None => return Err("available() returned Hierarchy::None".into()),
    }
    Ok(())
}

#[test]
fn the_kernels_own_control_files_hold_the_limits_and_counters() -> TestResult {
    let Some(h) = host("the_kernels_own_control_files_hold_the_limits_and_counters")? else {
        return Ok(());
    };
    let limits = Limits {
        memory_bytes: Some(48 << 20),
        cpu_cores: Some(0.25),
        pids_max: Some(32),
        swap_bytes: 0,
        memory_high_bytes: None,
    };
    let cg = Scoped::create(&h, "files", &limits)?;
    let mut child = spawn_in(&cg.0, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")?;
    assert!(child.wait()?.success());
    match &h {
        Hierarchy::V1 { mounts, .. } => {
            let dir = |c: &Option<std::path::PathBuf>| -> Result<_, Box<dyn Error>> {
                Ok(c.as_ref()
                    .ok_or("controller not mounted")?
                    .join(cg.0.name()))
            };
            let memory = dir(&mounts.memory)?;
            let cpu = dir(&mounts.cpu)?;
            assert_eq!(
                control(&memory, "memory.limit_in_bytes")?,
                (48u64 << 20).to_string()
            );
            assert_eq!(control(&cpu, "cpu.cfs_quota_us")?, "25000");
            assert_eq!(control(&cpu, "cpu.cfs_period_us")?, "100000");
            assert_eq!(control(&dir(&mounts.pids)?, "pids.max")?, "32");
            assert_eq!(keyed(&memory, "memory.oom_control", "oom_kill")?, 0);
            assert!(control(&dir(&mounts.cpuacct)?, "cpuacct.usage")?.parse::<u64>()? > 0);
        }
        Hierarchy::V2 { root } => {
            let [dir] =
                cg.0.dirs()
                    .try_into()
                    .map_err(|d| format!("v2 dirs {d:?}"))?;
            assert_eq!(control(&dir, "memory.max")?, (48u64 << 20).to_string());
            if dir.join("memory.swap.max").exists() {
                assert_eq!(control(&dir, "memory.swap.max")?, "0");
            }
            assert_eq!(control(&dir, "cpu.max")?, "25000 100000");
            assert_eq!(control(&dir, "pids.max")?, "32");
            assert_eq!(keyed(&dir, "memory.events", "oom_kill")?, 0);
            assert!(keyed(&dir, "cpu.stat", "usage_usec")? > 0);
            // Every ancestor from the mount root down hands the three controllers on.
            let mut ancestor = dir.parent().ok_or("no parent")?.to_path_buf();
            loop {
                let enabled = control(&ancestor, "cgroup.subtree_control")?;
                for c in ["memory", "cpu", "pids"] {
                    assert!(
                        enabled.split_whitespace().any(|e| e == c),
                        "{c} not enabled in {}/cgroup.subtree_control: {enabled:?}",
                        ancestor.display()
                    );
                }
                if ancestor == *root {
                    break;
                }
                ancestor = ancestor
                    .parent()
                    .ok_or("walked above the root")?
                    .to_path_buf();
            }
        }
        Hierarchy::None => return Err("available() returned Hierarchy::None".into()),
    }
    Ok(())
}

#[test]
fn memory_hog_is_oom_killed_and_counted() -> TestResult {
    let Some(h) = host("memory_hog_is_oom_killed_and_counted")? else {
        return Ok(());
    };
    let limits = Limits {
        memory_bytes: Some(32 << 20),
        ..Limits::default()
    };
    let cg = Scoped::create(&h, "oom", &limits)?;
    assert_eq!(cg.0.oom_kills()?, 0);
    // /dev/zero has no newline, so `tail` keeps all 256 MiB it reads as its "last line".
    let mut child = spawn_in(
        &cg.0,
        "exec 2>/dev/null; head -c 256M /dev/zero | tail -n 1 > /dev/null",
    )?;
    let status = child.wait()?;
    // `tail` is the biggest member and the one killed; bash reports that as 128 + SIGKILL.
    let killed =
        status.code() == Some(128 + libc::SIGKILL) || status.signal() == Some(libc::SIGKILL);
    assert!(killed, "the hog was not killed: {status}");
    wait_until("the OOM kill is counted", DEADLINE, || {
        Ok(cg.0.oom_kills()? >= 1)
    })?;
    Ok(())
}

#[test]
fn stats_account_cpu_time_and_peak_memory() -> TestResult {
    let Some(h) = host("stats_account_cpu_time_and_peak_memory")? else {
        return Ok(());
    };
    let cg = Scoped::create(&h, "stats", &Limits::default())?;
    let before = cg.0.stats()?;
    let script =
        "x=$(head -c 4M /dev/zero | tr '\\0' a); i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done";
    let mut child = spawn_in(&cg.0, script)?;
    assert!(child.wait()?.success());
    let after = cg.0.stats()?;
    assert!(
        after.cpu_usage_ns > before.cpu_usage_ns,
        "{before:?} -> {after:?}"
    );
    if let Some(peak) = after.memory_max_bytes {
        assert!(
            peak >= 4 << 20,
            "peak memory {peak} below the 4 MiB the task held"
        );
    }
    Ok(())
}

#[test]
fn remove_deletes_the_directory_in_every_hierarchy() -> TestResult {
    let Some(h) = host("remove_deletes_the_directory_in_every_hierarchy")? else {
        return Ok(());
    };
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        cpu_cores: Some(1.0),
        pids_max: Some(16),
        swap_bytes: 0,
        memory_high_bytes: None,
    };
    let cg = Scoped::create(&h, "remove", &limits)?;
    let mut child = spawn_in(&cg.0, "sleep 30 & disown; exec sleep 30")?;
    cg.0.kill_all()?;
    child.wait()?;
    cg.0.remove()?;
    for dir in cg.0.dirs() {
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }
    Ok(())
}

#[test]
fn open_existing_reattaches_to_a_live_task() -> TestResult {
    let Some(h) = host("open_existing_reattaches_to_a_live_task")? else {
        return Ok(());
    };
    let cg = Scoped::create(&h, "reattach", &Limits::default())?;
    let mut child = spawn_in(&cg.0, "exec sleep 30")?;
    let task_id = format!("reattach-{}", std::process::id());
    let again = TaskCgroup::open_existing(&h, PARENT, &task_id)?;
    assert_eq!(again.pids()?, vec![pid_of(&child)?]);
    again.kill_all()?;
    assert_eq!(child.wait()?.signal(), Some(libc::SIGKILL));
    wait_until(
        "the re-attached handle sees the task empty",
        DEADLINE,
        || Ok(again.is_empty()?),
    )?;
    Ok(())
}

#[test]
fn creating_a_task_cgroup_twice_is_refused() -> TestResult {
    let Some(h) = host("creating_a_task_cgroup_twice_is_refused")? else {
        return Ok(());
    };
    let _cg = Scoped::create(&h, "twice", &Limits::default())?;
    let task_id = format!("twice-{}", std::process::id());
    let err = TaskCgroup::create(&h, PARENT, &task_id, &Limits::default())
        .err()
        .ok_or("the second create succeeded")?;
    assert!(
        matches!(err, cgroup::CgroupError::AlreadyExists { .. }),
        "{err}"
    );
    Ok(())
}
