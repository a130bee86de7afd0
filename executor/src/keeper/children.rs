//! The keeper's children: starting them in batches (prepare, fork back to back, record), their
//! log rotators, and reaping them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use hearth_checkpoints::record::{ProcessState, ProcessStatus, Record};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::process::{now_secs, pid_start_ticks};
use super::protocol::{Child, Exit, ExitStatus, LogTarget, Reply, SpawnSpec};
use super::rotate::Rotator;
use super::{Keeper, Running};
use crate::spawn::{self, ChildLogs, Fds, Ids, Prepared};

impl Keeper {
    /// Start a batch of processes in three passes: prepare everything (argument vectors, log
    /// directories and files), fork them all back to back, then record them. Forking in a tight
    /// loop lets the keeper finish the batch before the new shells compete with it for the CPU.
    ///
    /// The fork pass writes as little of the keeper's memory as it can: after each fork every
    /// page the keeper writes is copied first (copy-on-write, shared with a child that has not
    /// exec'd yet), so it only stores a pid and a time per child into a vector allocated
    /// beforehand, and everything else — moving specs, closing the children's descriptors,
    /// freeing what was prepared — waits until the last fork.
    pub(super) fn spawn_batch(&mut self, specs: Vec<SpawnSpec>) -> Vec<Reply> {
        let mut ready = Vec::with_capacity(specs.len());
        let mut replies: Vec<Option<Reply>> = Vec::with_capacity(specs.len());
        for spec in specs {
            match self.prepare_spawn(&spec) {
                Ok(Prep::Running(child)) => replies.push(Some(Reply::Spawned(child))),
                Ok(Prep::Ready(p)) => {
                    replies.push(None);
                    ready.push((replies.len() - 1, spec, p));
                }
                Err(error) => replies.push(Some(Reply::SpawnFailed {
                    process: spec.process,
                    run: spec.run,
                    error,
                })),
            }
        }
        let procs: Vec<RawFd> = self.cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
        let stdin = self.dev_null.as_raw_fd();
        let mut pids = Vec::with_capacity(ready.len());
        for (_, spec, p) in &ready {
            let fds = Fds {
                stdin,
                stdout: p.stdout.raw(),
                stderr: p.stderr.raw(),
                cgroup_procs: &procs,
            };
            let fork_time = now_secs();
            pids.push((fork_time, spawn::spawn(&spec.process, &p.exec, fds)));
        }
        for ((slot, spec, p), (fork_time, pid)) in ready.into_iter().zip(pids) {
            // The keeper's copies of the child's descriptors close here.
            let ReadySpawn { rotators, .. } = *p;
            replies[slot] = Some(match pid {
                Ok(pid) => self.record_spawn(&spec, pid, fork_time, rotators),
                Err(e) => Reply::SpawnFailed {
                    process: spec.process,
                    run: spec.run,
                    error: e.to_string(),
                },
            });
        }
        replies.into_iter().flatten().collect()
    }

    /// Everything a spawn needs before its fork, or the child already running for it.
    fn prepare_spawn(&mut self, spec: &SpawnSpec) -> Result<Prep, String> {
        if self.shutting_down {
            return Err("the keeper is shutting down".into());
        }
        if let Some(r) = self
            .children
            .values()
            .find(|r| r.child.process == spec.process && r.child.run == spec.run)
        {
            // Idempotent: a restarted executor may resend a spawn it never saw answered.
            return Ok(Prep::Running(r.child.clone()));
        }
        let ids = spec.credentials.as_ref().map(|c| Ids {
            uid: c.uid,
            gid: c.gid,
            groups: c.groups.clone(),
        });
        let owner = spec.credentials.as_ref().map(|c| (c.uid, c.gid));
        let (stdout, rot_out) = self.open_target(&spec.stdout, 1, owner)?;
        let (stderr, rot_err) = self.open_target(&spec.stderr, 2, owner)?;
        // Plain log files are created by the child itself (see `spawn::ChildLogs`).
        let file = |t: &LogTarget| match t {
            LogTarget::File { path } => Some(PathBuf::from(path)),
            _ => None,
        };
        let (out_path, err_path) = (file(&spec.stdout), file(&spec.stderr));
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in [&out_path, &err_path].into_iter().flatten() {
            for d in missing_dirs(p) {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        let logs = ChildLogs::new(
            &spec.process,
            &dirs,
            out_path.as_deref(),
            err_path.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let exec = Prepared::new(&spec.process, &spec.argv, &spec.env, &spec.cwd, ids)
            .map_err(|e| e.to_string())?
            .with_logs(logs);
        Ok(Prep::Ready(Box::new(ReadySpawn {
            exec,
            stdout,
            stderr,
            rotators: [rot_out, rot_err].into_iter().flatten().collect(),
        })))
    }

    /// Record a forked child (written out at the end of the burst, durable at the next exit
    /// commit) and start supervising it.
    fn record_spawn(
        &mut self,
        spec: &SpawnSpec,
        pid: i32,
        fork_time: f64,
        rotators: Vec<Rotator>,
    ) -> Reply {
        let child = Child {
            process: spec.process.clone(),
            run: spec.run,
            pid,
            start_ticks: pid_start_ticks(pid),
            fork_time,
        };
        let appended = self.writer.append(&Record::Process(ProcessStatus {
            process: child.process.clone(),
            state: Some(ProcessState::Running),
            coordinator_pid: Some(std::process::id() as i32),
            fork_time: Some(fork_time),
            start_time: Some(fork_time),
            pid: Some(pid),
            run: Some(child.run as i32),
            pid_start_ticks: child.start_ticks,
            ..ProcessStatus::default()
        }));
        self.children.insert(
            pid,
            Running {
                child: child.clone(),
                rotators,
            },
        );
        match appended {
            Ok(()) => Reply::Spawned(child),
            // The child runs and is supervised; only its start could not be written down.
            Err(e) => Reply::SpawnFailed {
                process: spec.process.clone(),
                run: spec.run,
                error: format!("started as pid {pid}, but its record failed: {e}"),
            },
        }
    }

    /// Open the descriptor a child writes one stream to.
    fn open_target(
        &self,
        target: &LogTarget,
        inherit: RawFd,
        owner: Option<(u32, u32)>,
    ) -> Result<(TargetFd, Option<Rotator>), String> {
        match target {
            LogTarget::Inherit => Ok((TargetFd::Borrowed(self.console(inherit).as_raw_fd()), None)),
            LogTarget::Discard => Ok((TargetFd::Borrowed(self.dev_null.as_raw_fd()), None)),
            // The child opens it; until then its setup errors go to the keeper's own log.
            LogTarget::File { .. } => Ok((TargetFd::Borrowed(2), None)),
            LogTarget::Rotate {
                path,
                max_bytes,
                backups,
                console,
            } => {
                let console = console.then(|| self.console(inherit));
                let (rot, write_end) =
                    Rotator::new(Path::new(path), *max_bytes, *backups, owner, console)
                        .map_err(|e| format!("{path}: {e}"))?;
                Ok((TargetFd::Owned(write_end), Some(rot)))
            }
        }
    }

    /// The console descriptor for stream 1 or 2: the terminal (or pipe) the executor was started
    /// with — not the keeper's own log, which its stderr was redirected to.
    fn console(&self, stream: RawFd) -> std::os::fd::BorrowedFd<'_> {
        match stream {
            2 => self.console_err.as_fd(),
            _ => self.console_out.as_fd(),
        }
    }

    pub(super) fn pump_rotator(&mut self, fd: RawFd) {
        let found = self
            .children
            .values_mut()
            .flat_map(|r| r.rotators.iter_mut())
            .chain(self.orphan_rotators.iter_mut())
            .find(|r| r.fd() == fd);
        if let Some(r) = found {
            r.pump();
        }
        self.orphan_rotators.retain(|r| !r.is_closed());
    }

    pub(super) fn drain_orphan_rotators(&mut self) {
        for r in &mut self.orphan_rotators {
            r.pump();
        }
        self.orphan_rotators.clear();
    }

    /// Reap every exited child; write their exits with one fsync; then tell the executor.
    pub(super) fn reap(&mut self) -> io::Result<()> {
        while let Ok(Some(_)) = self.signals.read_signal() {}
        let mut exits = Vec::new();
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            // Orphans re-parented to us (double-forked daemons) are reaped and forgotten.
            let Some(mut running) = self.children.remove(&pid.as_raw()) else {
                continue;
            };
            for mut r in running.rotators.drain(..) {
                r.pump();
                if !r.is_closed() {
                    self.orphan_rotators.push(r);
                }
            }
            let exit = Exit {
                child: running.child,
                status,
                stop_time: now_secs(),
            };
            let (state, return_code, signal) = match status {
                ExitStatus::Code(0) => (ProcessState::Success, 0, None),
                ExitStatus::Code(c) => (ProcessState::Failed, c, None),
                ExitStatus::Signal(s) => (ProcessState::Killed, 128 + s, Some(s)),
            };
            self.writer
                .append(&Record::Process(ProcessStatus {
                    process: exit.child.process.clone(),
                    state: Some(state),
                    pid: Some(pid.as_raw()),
                    stop_time: Some(exit.stop_time),
                    return_code: Some(return_code),
                    signal,
                    run: Some(exit.child.run as i32),
                    ..ProcessStatus::default()
                }))
                .map_err(io::Error::other)?;
            exits.push(exit);
        }
        self.held.extend(exits);
        self.flush_held();
        Ok(())
    }
}

/// A spawn ready to fork.
struct ReadySpawn {
    exec: Prepared,
    stdout: TargetFd,
    stderr: TargetFd,
    rotators: Vec<Rotator>,
}

enum Prep {
    Ready(Box<ReadySpawn>),
    Running(Child),
}

/// A descriptor for the child's stdout/stderr: ours to close, or borrowed.
enum TargetFd {
    Owned(OwnedFd),
    Borrowed(RawFd),
}

impl TargetFd {
    fn raw(&self) -> RawFd {
        match self {
            TargetFd::Owned(f) => f.as_raw_fd(),
            TargetFd::Borrowed(fd) => *fd,
        }
    }
}

/// The directories above `file` that do not exist yet, outermost first.
fn missing_dirs(file: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    missing.reverse();
    missing
}
