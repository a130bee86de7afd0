//! Membership, signals, whole-tree kills, accounting and removal of a task's cgroup.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{
    CgroupError, CgroupStats, DEFAULT_REMOVE_TIMEOUT, FREEZE_TIMEOUT, Layout, MAX_POLL_PAUSE,
    TaskCgroup, files,
};

impl TaskCgroup {
    /// Every process in the cgroup, in any of its hierarchies, sorted and without duplicates.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        pids_in(&self.dirs())
    }

    /// Whether no process is left: v2 and hybrid read `populated` from `cgroup.events`; plain v1
    /// lists the members.
    pub fn is_empty(&self) -> Result<bool, CgroupError> {
        match self.v2_dir() {
            Some(dir) => {
                let path = dir.join("cgroup.events");
                let text = files::read(&path)?;
                Ok(files::keyed_u64(&path, &text, "populated")? == 0)
            }
            None => Ok(self.pids()?.is_empty()),
        }
    }

    /// Sends `signal` to every process in the cgroup; returns how many were signalled (processes
    /// that exited meanwhile are not counted). Processes forked while this runs may be missed: use
    /// it for polite requests (SIGTERM), and [`TaskCgroup::kill_all`] to end everything.
    pub fn signal_all(&self, signal: Signal) -> Result<usize, CgroupError> {
        signal_pids(&self.main_dir(), &self.pids()?, signal)
    }

    /// Kills every process in the cgroup, including ones forking while we kill. v2 and hybrid
    /// write `1` to `cgroup.kill`; otherwise the cgroup is frozen, every member gets SIGKILL,
    /// and it is thawed (so the kills are delivered). Returns once the kill is sent; use
    /// [`TaskCgroup::is_empty`] or [`TaskCgroup::remove`] to wait for the members to be gone.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let Some(dir) = self.v2_dir() {
            let kill_file = dir.join("cgroup.kill");
            if kill_file.exists() {
                return files::write(&kill_file, "1");
            }
        }
        match &self.layout {
            Layout::V2 { dir, .. } => {
                let events = dir.join("cgroup.events");
                self.freeze_kill_thaw(&dir.join("cgroup.freeze"), "1", "0", || {
                    let text = files::read(&events)?;
                    Ok(files::keyed_u64(&events, &text, "frozen")? == 1)
                })
            }
            Layout::V1 {
                freezer: Some(dir), ..
            } => {
                let state = dir.join("freezer.state");
                self.freeze_kill_thaw(&state, "FROZEN", "THAWED", || {
                    Ok(files::read(&state)?.trim() == "FROZEN")
                })
            }
            // No freezer and no cgroup2 tree: sweep until no member is left to signal or a few
            // rounds have passed. A process forking faster than we sweep could survive.
            Layout::V1 { freezer: None, .. } => {
                for _ in 0..8 {
                    if self.signal_all(Signal::SIGKILL)? == 0 {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    fn freeze_kill_thaw(
        &self,
        state_file: &Path,
        frozen: &str,
        thawed: &str,
        is_frozen: impl FnMut() -> Result<bool, CgroupError>,
    ) -> Result<(), CgroupError> {
        files::write(state_file, frozen)?;
        let killed = poll_until(FREEZE_TIMEOUT, is_frozen).and_then(|done| {
            if !done {
                tracing::warn!(
                    path = %state_file.display(),
                    "cgroup did not finish freezing in {FREEZE_TIMEOUT:?}; killing anyway"
                );
            }
            self.signal_all(Signal::SIGKILL)
        });
        // Thaw even when killing failed: frozen processes never die, and would block removal.
        let thaw = files::write(state_file, thawed);
        killed.and(thaw)
    }

    /// How many processes of the task the kernel's OOM killer has killed so far (v1
    /// `memory.oom_control`, v2 `memory.events`, key `oom_kill`).
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let path = match &self.layout {
            Layout::V1 {
                memory: Some(dir), ..
            } => dir.join("memory.oom_control"),
            Layout::V1 { memory: None, .. } => {
                return Err(CgroupError::MissingController {
                    path: self.name.clone(),
                    controller: "memory",
                });
            }
            Layout::V2 { dir, .. } => dir.join("memory.events"),
        };
        let text = files::read(&path)?;
        files::keyed_u64(&path, &text, "oom_kill")
    }

    /// CPU and memory accounting.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        match &self.layout {
            Layout::V1 {
                memory, cpuacct, ..
            } => {
                let missing = |controller| CgroupError::MissingController {
                    path: self.name.clone(),
                    controller,
                };
                let cpuacct = cpuacct.as_ref().ok_or_else(|| missing("cpuacct"))?;
                let memory = memory.as_ref().ok_or_else(|| missing("memory"))?;
                Ok(CgroupStats {
                    cpu_usage_ns: files::read_u64(&cpuacct.join("cpuacct.usage"), "cpu usage")?,
                    memory_bytes: files::read_u64(
                        &memory.join("memory.usage_in_bytes"),
                        "memory usage",
                    )?,
                    memory_max_bytes: Some(files::read_u64(
                        &memory.join("memory.max_usage_in_bytes"),
                        "peak memory usage",
                    )?),
                })
            }
            Layout::V2 { dir, .. } => {
                let cpu_stat = dir.join("cpu.stat");
                let text = files::read(&cpu_stat)?;
                let usage_usec = files::keyed_u64(&cpu_stat, &text, "usage_usec")?;
                let peak = dir.join("memory.peak");
                let memory_max_bytes = match files::read_opt(&peak)? {
                    Some(text) => Some(files::parse_u64(&peak, &text, "peak memory usage")?),
                    None => None,
                };
                Ok(CgroupStats {
                    cpu_usage_ns: usage_usec.saturating_mul(1_000),
                    memory_bytes: files::read_u64(&dir.join("memory.current"), "memory usage")?,
                    memory_max_bytes,
                })
            }
        }
    }

    /// Removes the cgroup from every hierarchy: waits (up to [`DEFAULT_REMOVE_TIMEOUT`]) for it to
    /// be empty, then removes each directory, retrying while the kernel still reports it busy.
    /// Directories already gone count as removed, so this can be called again after a failure.
    /// It does not kill anything: call [`TaskCgroup::kill_all`] first.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.remove_within(DEFAULT_REMOVE_TIMEOUT)
    }

    /// [`TaskCgroup::remove`] with a chosen bound on the wait.
    pub fn remove_within(&self, timeout: Duration) -> Result<(), CgroupError> {
        self.remove_with(timeout, |dir| fs::remove_dir(dir))
    }

    /// The removal sequence over a given `rmdir`, so tests can stand in for the kernel (on a
    /// cgroup filesystem, `rmdir` takes the control files with the directory).
    pub(super) fn remove_with(
        &self,
        timeout: Duration,
        mut rmdir: impl FnMut(&Path) -> io::Result<()>,
    ) -> Result<(), CgroupError> {
        let start = Instant::now();
        let existing =
            || -> Vec<PathBuf> { self.dirs().into_iter().filter(|d| d.is_dir()).collect() };
        let mut last_pids = Vec::new();
        let empty = poll_until(timeout, || {
            last_pids = pids_in(&existing())?;
            Ok(last_pids.is_empty())
        })?;
        if !empty {
            return Err(CgroupError::NotEmpty {
                path: self.main_dir(),
                pids: last_pids,
                waited: start.elapsed(),
            });
        }
        for dir in existing() {
            let mut failure = None;
            let remaining = timeout
                .saturating_sub(start.elapsed())
                .max(MAX_POLL_PAUSE * 4);
            let removed = poll_until(remaining, || match rmdir(&dir) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
                Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => {
                    failure = Some(e);
                    Ok(false)
                }
                Err(source) => Err(CgroupError::RemoveDir {
                    path: dir.clone(),
                    source,
                }),
            })?;
            if !removed {
                return Err(CgroupError::RemoveDir {
                    path: dir,
                    source: failure.unwrap_or_else(|| io::Error::from(io::ErrorKind::ResourceBusy)),
                });
            }
        }
        Ok(())
    }
}

/// The members of the given cgroup directories, sorted, without duplicates.
pub(super) fn pids_in(dirs: &[PathBuf]) -> Result<Vec<i32>, CgroupError> {
    let mut all = BTreeSet::new();
    for dir in dirs {
        let path = files::procs_file(dir);
        let text = files::read(&path)?;
        all.extend(files::parse_procs(&path, &text)?);
    }
    Ok(all.into_iter().collect())
}

fn signal_pids(dir: &Path, pids: &[i32], signal: Signal) -> Result<usize, CgroupError> {
    let mut sent = 0;
    for &pid in pids {
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) => sent += 1,
            Err(Errno::ESRCH) => {}
            Err(source) => {
                return Err(CgroupError::Signal {
                    path: dir.to_path_buf(),
                    pid,
                    signal,
                    source,
                });
            }
        }
    }
    Ok(sent)
}

/// Calls `done` until it says yes or `timeout` passes, pausing 1 ms, 2 ms, ... up to 25 ms between
/// calls. Returns whether `done` said yes.
fn poll_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if done()? {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        // Blocking on purpose: cgroup polling runs in the keeper, in `prepare` before the
        // runtime starts, or on tokio's blocking pool (see `supervise::teardown`).
        #[allow(clippy::disallowed_methods)]
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_POLL_PAUSE);
    }
}
