//! Forking: the only module of Hearth allowed to use `unsafe`.
//!
//! Three entry points:
//! * [`fork_keeper`] forks the executor into the keeper while the executor is still
//!   single-threaded (before its async runtime exists), so the child may run ordinary Rust code.
//!   A fork rather than an exec: the two then share the binary's pages, its relocated data and the
//!   heap built so far copy-on-write, which keeps a task's overhead within budget.
//! * [`spawn`] forks a task process from the (single-threaded) keeper and execs it. Between `fork` and `execve` the
//!   child only makes async-signal-safe system calls on values prepared *before* the fork: no
//!   allocation, no locks, no formatting. The order is deliberate:
//!   1. join the task's cgroups by writing `0` to each pre-opened `cgroup.procs` — before anything
//!      else, so that nothing the process does can escape the cgroup (its limits, accounting and
//!      kill-all apply from its first instruction after exec);
//!   2. `setsid`, so the run and everything it forks (that does not setsid itself) form one process
//!      group the keeper can signal;
//!   3. restore the default signal mask and dispositions (the keeper blocks `SIGCHLD`, Rust ignores
//!      `SIGPIPE`; an exec'd program must not inherit either);
//!   4. stdin from `/dev/null`, stdout and stderr to the prepared log descriptors;
//!   5. `setgroups`, `setgid`, `setuid`, in that order (groups and gid need the privilege the uid
//!      change gives up); then create the log directories and files, as the task's user;
//!   6. `chdir` into the sandbox;
//!   7. mark every descriptor above 2 close-on-exec, so the process inherits nothing else;
//!   8. `execve`. On any failure the child writes a fixed message to its stderr and exits 127
//!      (exec) or 126 (setup), which the planner sees as an ordinary failed run.
//! * [`switch_credentials`] makes a `tokio::process::Command` (the shell health check, run by
//!   the executor) take the task user's supplementary groups, gid and uid between its fork and
//!   exec, which the standard library cannot do on stable Rust (it drops the groups).
#![allow(unsafe_code)]

use std::ffi::{CString, NulError};
use std::os::fd::RawFd;
use std::ptr;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("argument, environment entry or path of process {process:?} contains a NUL byte")]
    Nul {
        process: String,
        #[source]
        source: NulError,
    },
    #[error("fork failed for process {process:?}")]
    Fork {
        process: String,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the child needs, prepared (allocated) before the fork.
#[derive(Debug)]
pub struct Prepared {
    /// Kept alive for the pointers in `argv_ptrs`.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    cwd: CString,
    credentials: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    logs: ChildLogs,
}

/// Log files the child creates itself, after switching users (so it owns them), in parallel with
/// the keeper's next forks instead of on its critical path.
#[derive(Debug, Default)]
pub struct ChildLogs {
    /// Directories to create, parents first (an existing one is fine).
    dirs: Vec<CString>,
    stdout: Option<CString>,
    stderr: Option<CString>,
}

impl ChildLogs {
    pub fn new(
        process: &str,
        dirs: &[std::path::PathBuf],
        stdout: Option<&std::path::Path>,
        stderr: Option<&std::path::Path>,
    ) -> Result<ChildLogs, SpawnError> {
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &std::path::Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|source| SpawnError::Nul {
                process: process.to_owned(),
                source,
            })
        };
        Ok(ChildLogs {
            dirs: dirs.iter().map(|d| c(d)).collect::<Result<_, _>>()?,
            stdout: stdout.map(c).transpose()?,
            stderr: stderr.map(c).transpose()?,
        })
    }
}

/// Credentials to switch to in the child.
#[derive(Debug, Clone)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Descriptors the child uses; all owned by the caller, which closes them after [`spawn`].
#[derive(Debug, Clone, Copy)]
pub struct Fds<'a> {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// Open `cgroup.procs` files (write-only) of every hierarchy the task uses.
    pub cgroup_procs: &'a [RawFd],
}

impl Prepared {
    pub fn new(
        process: &str,
        argv: &[String],
        env: &[String],
        cwd: &str,
        ids: Option<Ids>,
    ) -> Result<Prepared, SpawnError> {
        let nul = |source| SpawnError::Nul {
            process: process.to_owned(),
            source,
        };
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(nul)?;
        let envp: Vec<CString> = env
            .iter()
            .map(|e| CString::new(e.as_str()))
            .collect::<Result<_, _>>()
            .map_err(nul)?;
        let cwd = CString::new(cwd).map_err(nul)?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(ptr::null());
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
        envp_ptrs.push(ptr::null());
        Ok(Prepared {
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            cwd,
            credentials: ids.map(|i| (i.uid, i.gid, i.groups)),
            logs: ChildLogs::default(),
        })
    }

    /// Have the child create and open these log files itself.
    pub fn with_logs(mut self, logs: ChildLogs) -> Prepared {
        self.logs = logs;
        self
    }
}

const MSG_CGROUP: &[u8] = b"hearth: could not join the task cgroup before exec\n";
const MSG_SETUP: &[u8] =
    b"hearth: could not set up the process (setsid, dup2, credentials or chdir)\n";
const MSG_EXEC: &[u8] = b"hearth: execve failed\n";
const MSG_LOGS: &[u8] = b"hearth: could not create the process's log directory or files\n";

/// Fork and exec a task process. Returns the child's pid. Must be called from a single-threaded
/// process (the keeper).
pub fn spawn(process: &str, p: &Prepared, fds: Fds<'_>) -> Result<i32, SpawnError> {
    // SAFETY: the keeper is single-threaded, so no other thread can hold a lock the child would
    // need; and the child below only makes async-signal-safe calls on memory prepared before the
    // fork (`p` and `fds`), then execs or `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SpawnError::Fork {
            process: process.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    if pid == 0 {
        // SAFETY: we are the freshly forked child; see `child_exec`'s contract.
        unsafe { child_exec(p, fds) }
    }
    Ok(pid)
}

/// Write a static message to `fd`, ignoring errors (there is nobody to report them to).
///
/// # Safety
/// Async-signal-safe: a single `write` of static bytes.
unsafe fn say(fd: RawFd, msg: &[u8]) {
    // SAFETY: `msg` is a valid slice for its length, and `write` is async-signal-safe.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
    }
}

/// The child's side of [`spawn`]: set up and exec, or exit.
///
/// # Safety
/// Only call in the child of a fork from a single-threaded process, with `p` and `fds` prepared
/// before the fork. Uses async-signal-safe system calls only and never returns.
unsafe fn child_exec(p: &Prepared, fds: Fds<'_>) -> ! {
    // SAFETY: for the whole body, every call is an async-signal-safe system call whose pointer
    // arguments point into `p` or to stack values that outlive the call.
    unsafe {
        // 1. Join the cgroups first: nothing may run outside them.
        for &fd in fds.cgroup_procs {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                say(fds.stderr, MSG_CGROUP);
                libc::_exit(126);
            }
        }
        // 2. A process group (and session) of its own.
        if libc::setsid() < 0 {
            say(fds.stderr, MSG_SETUP);
            libc::_exit(126);
        }
        // 3. Default signal mask and dispositions.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        for sig in 1..32 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        // 4. Standard streams.
        if libc::dup2(fds.stdin, 0) < 0
            || libc::dup2(fds.stdout, 1) < 0
            || libc::dup2(fds.stderr, 2) < 0
        {
            say(fds.stderr, MSG_SETUP);
            libc::_exit(126);
        }
        // 5. Credentials: groups and gid while we still may, then the uid.
        if let Some((uid, gid, groups)) = &p.credentials
            && (libc::setgroups(groups.len(), groups.as_ptr()) < 0
                || libc::setgid(*gid) < 0
                || libc::setuid(*uid) < 0)
        {
            say(2, MSG_SETUP);
            libc::_exit(126);
        }
        // 5b. Log files, created as the task's user.
        for dir in &p.logs.dirs {
            if libc::mkdir(dir.as_ptr(), 0o750) < 0 && *libc::__errno_location() != libc::EEXIST {
                say(2, MSG_LOGS);
                libc::_exit(126);
            }
        }
        for (path, target) in [(&p.logs.stdout, 1), (&p.logs.stderr, 2)] {
            if let Some(path) = path {
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
                let fd = libc::open(path.as_ptr(), flags, 0o640 as libc::c_uint);
                if fd < 0 || libc::dup2(fd, target) < 0 {
                    say(2, MSG_LOGS);
                    libc::_exit(126);
                }
                libc::close(fd);
            }
        }
        // 6. The sandbox.
        if libc::chdir(p.cwd.as_ptr()) < 0 {
            say(2, MSG_SETUP);
            libc::_exit(126);
        }
        // 7. Inherit nothing but 0-2. CLOSE_RANGE_CLOEXEC (4) keeps the call cheap and safe.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32);
        // 8. Exec.
        libc::execve(p.argv_ptrs[0], p.argv_ptrs.as_ptr(), p.envp_ptrs.as_ptr());
        say(2, MSG_EXEC);
        libc::_exit(127)
    }
}

/// Run `cmd` as `uid`/`gid` with exactly the supplementary `groups`: `setgroups`, `setgid`,
/// `setuid`, in that order, in the child before exec. (`Command::uid` and `gid` would drop the
/// supplementary groups when the caller is root, and the standard library's `groups` is not
/// stable.) Do not also call `uid`/`gid` on `cmd`.
pub fn switch_credentials(cmd: &mut tokio::process::Command, uid: u32, gid: u32, groups: Vec<u32>) {
    // SAFETY: the closure runs in the child between fork and exec. It makes only three raw
    // system calls (async-signal-safe: no allocation, no locks, no libc thread bookkeeping) on
    // `groups`, which was allocated before the fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            let ok = libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == 0
                && libc::syscall(libc::SYS_setgid, libc::c_long::from(gid)) == 0
                && libc::syscall(libc::SYS_setuid, libc::c_long::from(uid)) == 0;
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Fork the calling process. In the child, run `child` and exit with the code it returns; in the
/// parent, return the child's pid.
///
/// Call only while the process is single-threaded (before an async runtime is built): the child
/// then runs ordinary Rust code safely, since no lock can be held by a thread that does not exist
/// in the child.
pub fn fork_keeper(child: impl FnOnce() -> i32) -> std::io::Result<i32> {
    // SAFETY: the caller guarantees the process is single-threaded, so the child inherits a
    // consistent heap and no held locks.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        let code = child();
        // SAFETY: leaving the child without running the parent's destructors or atexit handlers,
        // which belong to the parent's resources.
        unsafe { libc::_exit(code) }
    }
    Ok(pid)
}

/// Whether this process has exactly one thread (read from `/proc/self/status`).
#[allow(clippy::disallowed_methods)] // procfs, asked by prepare before the runtime starts
pub fn is_single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim() == "1"))
        })
        .unwrap_or(false)
}
