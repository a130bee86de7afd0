//! The keeper's socket is an abstract Unix socket named after the task's checkpoint directory:
//! a task runs, and its executor recovers, with the checkpoint root on a file system that cannot
//! hold socket files; and a process of another user cannot talk to a keeper.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Env, TestResult, cgroups_required, runs, show, wait_output, wait_until};
use hearth_checkpoints::record::{ProcessState, TaskState};
use serde_json::json;

/// A test root on exFAT, unmounted (and its loop device detached) when the test ends.
///
/// The report was of a guest's 9p shared folder, which refuses socket files. FAT is the file
/// system at hand that refuses them too, but the kernel these tests run on has no vfat driver
/// (and loads no modules); exFAT through FUSE does the same (`mkfs.exfat` from Debian's
/// `exfatprogs`, `mount.exfat-fuse` from `exfat-fuse`, over a loop device: it wants a block
/// device): `bind` of a socket there fails (EIO). The checkpoint and sandbox files of the tests'
/// tasks use no character FAT forbids in names.
struct ExfatRoot {
    env: Option<Env>,
    loopdev: String,
}

impl ExfatRoot {
    /// Mount a fresh exFAT file system at the root of a new [`Env`]; `None` (the test skips) when
    /// this host cannot, unless `HEARTH_REQUIRE_CGROUPS=1`, which makes that a failure.
    fn mount(test: &str) -> Option<ExfatRoot> {
        if !common::have_root(test) {
            return None;
        }
        let env = Env::new();
        let image = env.dir.path().join("exfat.img");
        let root = env.root();
        let run = |cmd: &mut Command| -> Result<String, String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
            } else {
                Err(format!("{cmd:?}: {}", show(&out)))
            }
        };
        let attempt = || -> Result<String, String> {
            std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
            std::fs::File::create(&image)
                .and_then(|f| f.set_len(64 << 20))
                .map_err(|e| e.to_string())?;
            run(Command::new("mkfs.exfat").arg(&image))?;
            let loopdev = run(Command::new("losetup").args(["-f", "--show"]).arg(&image))?;
            if let Err(e) = run(Command::new("mount.exfat-fuse").arg(&loopdev).arg(&root)) {
                let _ = Command::new("losetup").arg("-d").arg(&loopdev).status();
                return Err(e);
            }
            Ok(loopdev)
        };
        match attempt() {
            Ok(loopdev) => Some(ExfatRoot {
                env: Some(env),
                loopdev,
            }),
            Err(why) => {
                assert!(
                    !cgroups_required(),
                    "{test}: HEARTH_REQUIRE_CGROUPS=1 but an exFAT root cannot be mounted \
                     (needs exfatprogs, exfat-fuse, loop devices and /dev/fuse): {why}"
                );
                eprintln!("{test}: skipped: cannot mount an exFAT root: {why}");
                None
            }
        }
    }

    fn env(&self) -> &Env {
        self.env.as_ref().unwrap()
    }
}

impl Drop for ExfatRoot {
    fn drop(&mut self) {
        let Some(env) = self.env.take() else {
            return;
        };
        let (dir, root) = (env.dir.path().to_path_buf(), env.root());
        // Kills the test's executors, keepers and tasks (and the FUSE daemon: its command line
        // names the root too).
        drop(env);
        let _ = Command::new("umount").arg("-l").arg(&root).status();
        let _ = Command::new("losetup")
            .arg("-d")
            .arg(&self.loopdev)
            .status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A process that runs until the file `go` exists.
fn waits_for(go: &Path) -> serde_json::Value {
    json!([{
        "name": "p",
        "cmdline": format!("while [ ! -e {} ]; do sleep 0.05; done; echo finished", go.display()),
    }])
}

#[test]
fn a_task_runs_and_is_recovered_with_its_checkpoint_root_on_a_file_system_without_sockets()
-> TestResult {
    const TEST: &str = "keeper_socket::exfat";
    let Some(fs) = ExfatRoot::mount(TEST) else {
        return Ok(());
    };
    let env = fs.env();
    // The file system refuses socket files, as the shared folder of the report did (a build
    // whose keeper socket is a file fails here with "bind the keeper socket ...: Input/output
    // error").
    let probe = env.root().join("probe");
    std::fs::create_dir_all(&probe)?;
    assert!(
        UnixListener::bind(probe.join("probe.sock")).is_err(),
        "the exFAT root took a socket file: this test would prove nothing"
    );

    let go = env.dir.path().join("go");
    let cfg = env.task("exfat", waits_for(&go), json!({}));
    let mut exec = env.spawn(&cfg, "exfat", &[]);
    wait_until("p to run", Duration::from_secs(20), || {
        env.root().join("checkpoints/exfat/runner").exists()
            && runs(&env.replay("exfat"), "p")
                .last()
                .is_some_and(|r| r.state == ProcessState::Running)
    })
    .unwrap();
    let first = runs(&env.replay("exfat"), "p")[0].clone();

    // The executor dies mid-task; the same command adopts the keeper, which still runs p.
    exec.kill().unwrap();
    exec.wait().unwrap();
    assert!(
        common::alive(first.pid.unwrap()),
        "p died with its executor"
    );
    let exec = env.spawn(&cfg, "exfat", &[]);
    std::fs::write(&go, b"").unwrap();
    let out = wait_output(exec, Duration::from_secs(60));
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("RECOVERED"),
        "{}",
        show(&out)
    );

    let r = env.replay("exfat");
    assert_eq!(r.state(), TaskState::Success);
    // One run, the one the first executor started, supervised throughout by the same keeper:
    // not lost and started again.
    let p = runs(&r, "p");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].state, ProcessState::Success);
    assert_eq!(
        (p[0].pid, p[0].coordinator_pid),
        (first.pid, first.coordinator_pid)
    );
    // Nothing tried to put a socket file in the checkpoint directory.
    assert!(!env.root().join("checkpoints/exfat/keeper.sock").exists());
    Ok(())
}

/// A process of another user connects to a task's keeper: the keeper says no, logs it, and goes
/// on serving its executor.
#[test]
#[allow(unsafe_code)]
fn a_keeper_refuses_a_connection_from_another_user() -> TestResult {
    const TEST: &str = "keeper_socket::other_user";
    if !common::have_root(TEST) {
        return Ok(());
    }
    let env = Env::new();
    let go = env.dir.path().join("go");
    let cfg = env.task("stranger", waits_for(&go), json!({}));
    let exec = env.spawn(&cfg, "stranger", &["--no-cgroups"]);
    let ckpt = env.root().join("checkpoints/stranger");
    wait_until("p to run", Duration::from_secs(20), || {
        ckpt.join("runner").exists()
            && runs(&env.replay("stranger"), "p")
                .last()
                .is_some_and(|r| r.state == ProcessState::Running)
    })
    .unwrap();

    let name = hearth_executor::keeper::socket::abstract_name(&ckpt, "stranger");
    let addr = nix::sys::socket::UnixAddr::new_abstract(&name).unwrap();
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let fd = sock.as_raw_fd();
    // The connection's credentials are the connecting process's: a child that became uid 65534
    // connects the socket, which this process then reads.
    // SAFETY: between fork and _exit the child makes only raw system calls (setuid, connect,
    // _exit) on values prepared before the fork: no allocation, no locks.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: see above.
        unsafe {
            if libc::syscall(libc::SYS_setuid, 65534) != 0 {
                libc::_exit(2);
            }
            use nix::sys::socket::SockaddrLike;
            if libc::connect(fd, addr.as_ptr().cast(), addr.len()) != 0 {
                libc::_exit(3);
            }
            libc::_exit(0);
        }
    }
    assert!(child > 0, "fork: {}", std::io::Error::last_os_error());
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None).unwrap();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(child), 0),
        "the uid-65534 child could not connect (2: setuid, 3: connect)"
    );
    let mut stream = std::os::unix::net::UnixStream::from(sock);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(
        answer.starts_with(r#"{"op":"error","#) && answer.contains("refused"),
        "{answer}"
    );
    assert!(answer.contains("(uid 65534)"), "{answer}");
    let log = std::fs::read_to_string(ckpt.join("keeper.log")).unwrap();
    assert!(
        log.contains(&format!(
            "refused a connection from pid {child} (uid 65534)"
        )),
        "{log}"
    );

    // The executor's own connection was not displaced: the task ends as usual.
    std::fs::write(&go, b"").unwrap();
    let out = wait_output(exec, Duration::from_secs(60));
    assert!(out.status.success(), "{}", show(&out));
    let r = env.replay("stranger");
    assert_eq!(r.state(), TaskState::Success);
    assert_eq!(runs(&r, "p").len(), 1);
    Ok(())
}

/// The task's cgroup directories that exist, in every hierarchy (v1 controllers, the hybrid
/// `unified` mount, or a pure v2 tree), under the default parent `hearth`.
fn task_cgroup_dirs(task_id: &str) -> Vec<std::path::PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let mut candidates = vec![base.join("hearth").join(task_id)];
    if let Ok(dir) = std::fs::read_dir(base) {
        candidates.extend(dir.flatten().map(|e| e.path().join("hearth").join(task_id)));
    }
    candidates.into_iter().filter(|d| d.is_dir()).collect()
}

/// Bind the keeper name of `task_id` in `env` without listening on it: nothing answers there,
/// and binding it again fails, as when another process holds it.
fn squat(env: &Env, task_id: &str) -> std::os::fd::OwnedFd {
    let ckpt = env.root().join("checkpoints").join(task_id);
    std::fs::create_dir_all(&ckpt).unwrap();
    let name = hearth_executor::keeper::socket::abstract_name(&ckpt, task_id);
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    nix::sys::socket::bind(
        sock.as_raw_fd(),
        &nix::sys::socket::UnixAddr::new_abstract(&name).unwrap(),
    )
    .unwrap();
    sock
}

#[test]
fn a_start_that_fails_after_creating_the_cgroup_removes_it() -> TestResult {
    const TEST: &str = "keeper_socket::failed_start_cgroup";
    if !common::have_cgroups(TEST) {
        return Ok(());
    }
    let env = Env::new();
    let cfg = env.task(
        "taken",
        json!([{"name": "p", "cmdline": "true"}]),
        json!({}),
    );
    // The keeper cannot bind its name: the start fails after the cgroup was made.
    let _held = squat(&env, "taken");
    let out = env.run(&cfg, "taken", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is already held"),
        "{}",
        show(&out)
    );
    assert_eq!(task_cgroup_dirs("taken"), Vec::<std::path::PathBuf>::new());
    Ok(())
}

#[test]
fn a_recovering_start_that_fails_leaves_the_cgroup_its_processes_live_in() -> TestResult {
    const TEST: &str = "keeper_socket::failed_recovery_cgroup";
    if !common::have_cgroups(TEST) {
        return Ok(());
    }
    let env = Env::new();
    let cfg = env.task(
        "held",
        json!([{"name": "p", "cmdline": "exec sleep 1000"}]),
        json!({}),
    );
    let mut exec = env.spawn(&cfg, "held", &[]);
    wait_until("p to run", Duration::from_secs(20), || {
        env.root().join("checkpoints/held/runner").exists()
            && runs(&env.replay("held"), "p")
                .last()
                .is_some_and(|r| r.state == ProcessState::Running)
    })
    .unwrap();
    let run = runs(&env.replay("held"), "p")[0].clone();
    let (pid, keeper) = (run.pid.unwrap(), run.coordinator_pid.unwrap());
    // Until it execs, the forked child still holds the keeper's listening socket.
    wait_until("p's shell to exec sleep", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    })
    .unwrap();
    exec.kill().unwrap();
    exec.wait().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::SIGKILL,
    )?;
    wait_until("the keeper to die", Duration::from_secs(5), || {
        !common::alive(keeper)
    })
    .unwrap();
    let cgroups = task_cgroup_dirs("held");
    assert!(!cgroups.is_empty(), "the task has no cgroup to keep");

    let held = squat(&env, "held");
    let out = env.run(&cfg, "held", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is already held"),
        "{}",
        show(&out)
    );
    assert_eq!(task_cgroup_dirs("held"), cgroups);
    assert!(common::alive(pid), "the task's process died");

    // Once the name is free, the task is adopted and torn down as usual.
    drop(held);
    let k = env.kill("held");
    assert!(k.status.success(), "{}", show(&k));
    assert!(!common::alive(pid));
    Ok(())
}
