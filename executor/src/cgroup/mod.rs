//! The task's cgroup, on cgroup v1, v2, systemd's hybrid layout, or not at all.
//!
//! Every task gets one cgroup, `<parent>/<task_id>` (the executor uses the parent `hearth`), in
//! every hierarchy it uses. Every process of the task joins it **before exec**: the spawner writes
//! `0` to each file of [`TaskCgroup::join_files`] through descriptors opened before the fork. The
//! cgroup then gives us limits (memory, CPU quota, pids), accounting (CPU time, memory, OOM kills)
//! and whole-tree control: double-forked daemons cannot escape a kill.
//!
//! # Hierarchies
//!
//! [`detect`] reads the mount table (`/proc/self/mountinfo`, or any text for tests):
//!
//! * **v1** — controllers at their own mounts: `memory` (`memory.limit_in_bytes`,
//!   `memory.oom_control`, usage), `cpu` (`cpu.cfs_period_us`/`cpu.cfs_quota_us`), `cpuacct`
//!   (`cpuacct.usage`), `pids` (`pids.max`), `freezer` (`freezer.state`, to kill every member
//!   without racing forks). `cpu` and `cpuacct` may be one co-mounted directory; it is used once.
//! * **hybrid** — v1 plus a controller-less cgroup2 mount (usually `/sys/fs/cgroup/unified`). The
//!   task also gets a directory there and processes join it too: its `cgroup.kill` kills the whole
//!   tree in one write, and `cgroup.events` says `populated 0` when the task is empty.
//! * **v2** — one tree. Creating a task cgroup first enables the controllers it needs (`memory`,
//!   `cpu`, `pids`) in `cgroup.subtree_control` of every ancestor from the mount root down to the
//!   parent, then writes `memory.max`, `cpu.max`, `pids.max`; it reads `memory.events`, `cpu.stat`,
//!   `memory.current`, `memory.peak`, kills with `cgroup.kill` (or freezes with `cgroup.freeze` on
//!   kernels before 5.14) and watches `cgroup.events`.
//! * **none** — [`available`] says why, and the executor falls back to process groups.
//!
//! Every limit is read back after it is written. The kernel rounds memory limits down to a page,
//! which we accept; anything else that does not read back as written fails creation with
//! [`CgroupError::LimitNotApplied`] naming the file: a silently ignored limit is a bug.
//!
//! # Decision: our own small backend, not `cgroups-rs`
//!
//! `cgroups-rs` was the first candidate (and works on this v1 host for limits, joining, OOM and
//! freezer kills). We chose plain reads and writes of control files instead, in about the same
//! number of lines that adapting the crate would have needed, because:
//!
//! * constructors here take the hierarchy (mount roots) as a value, so unit tests run against a
//!   fake tree in a temporary directory, for v1, hybrid and v2, including v2 fixtures mirroring a
//!   real v2 tree that this v1 machine cannot provide; `cgroups-rs` finds its mounts itself;
//! * `cgroups-rs` does not use the hybrid `unified` mount, which gives us `cgroup.kill` (a whole
//!   tree killed in under a millisecond) and `cgroup.events` on v1 hosts;
//! * its `apply()` can ignore a failed limit write; we must read every limit back anyway, and on v2
//!   we must read OOM kills from `memory.events` and CPU from `cpu.stat` ourselves;
//! * the control-file surface we need is small (about twenty files) and stable kernel ABI.
//!
//! What we give up: systemd-managed cgroups (we write the trees directly, as runc's "cgroupfs"
//! driver does) and controllers we do not use (cpuset, blkio/io, devices, hugetlb).
//!
//! # Caveats
//!
//! * All calls are blocking file I/O (a few small reads or writes); [`TaskCgroup::remove`] and
//!   [`TaskCgroup::kill_all`] poll with a short backoff for a bounded time. Call them from
//!   `tokio::task::spawn_blocking` in async code.
//! * The memory limit bounds RAM only; swap is not limited (the hosts we target run without swap).
//! * The parent directory (`hearth`) is created on demand and never removed: other tasks share it.
//! * A task's processes could create sub-cgroups of their own only if we delegated the directory;
//!   we do not, so the task cgroup has no children and `remove` does not look for any.

mod error;
mod files;
mod hierarchy;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub use error::CgroupError;
pub use hierarchy::{Hierarchy, V1Mounts, available, check_usable, detect, detect_host};

/// CFS period we use for CPU quotas, in microseconds (the kernel's default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota the kernel accepts, in microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;
/// The largest page size on the architectures we run on: memory limits read back rounded down to
/// a page, so a read-back value at most this much below the request counts as taken.
const MAX_PAGE_BYTES: u64 = 64 * 1024;
/// v1 reports "no memory limit" as a huge number (`PAGE_COUNTER_MAX` pages); anything this big
/// means unlimited.
const V1_MEMORY_UNLIMITED: u64 = 1 << 62;
/// How long [`TaskCgroup::remove`] waits for the cgroup to empty and the kernel to release it.
pub const DEFAULT_REMOVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`TaskCgroup::kill_all`] waits for a freeze to complete before killing anyway.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest pause between two polls of a control file.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(25);

/// Resource limits of one task. `None` leaves the resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory limit in bytes (RAM; the kernel rounds it down to a page).
    pub memory_bytes: Option<u64>,
    /// CPU quota in cores (0.5 = half of one CPU per period), enforced by the CFS quota.
    pub cpu_cores: Option<f64>,
    /// Maximum number of processes and threads.
    pub pids_max: Option<u64>,
}

impl Limits {
    fn validate(&self) -> Result<(), CgroupError> {
        if self.memory_bytes == Some(0) {
            return Err(CgroupError::InvalidLimit {
                field: "memory_bytes",
                value: "0".to_owned(),
                reason: "must be positive",
            });
        }
        if let Some(cores) = self.cpu_cores
            && !(cores.is_finite() && cores > 0.0)
        {
            return Err(CgroupError::InvalidLimit {
                field: "cpu_cores",
                value: cores.to_string(),
                reason: "must be a positive number",
            });
        }
        if self.pids_max == Some(0) {
            return Err(CgroupError::InvalidLimit {
                field: "pids_max",
                value: "0".to_owned(),
                reason: "must be positive",
            });
        }
        Ok(())
    }

    /// The CFS quota for `cores`, in microseconds per [`CPU_PERIOD_US`].
    fn cpu_quota_us(cores: f64) -> u64 {
        // `as` saturates for huge values; the minimum keeps tiny quotas acceptable to the kernel.
        ((cores * CPU_PERIOD_US as f64).round() as u64).max(CPU_MIN_QUOTA_US)
    }
}

/// Accounting of one task cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU time used by every process that ever ran in the cgroup, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory currently charged to the cgroup (page cache included), in bytes.
    pub memory_bytes: u64,
    /// Peak of `memory_bytes` (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`); `None` on v2
    /// kernels older than 5.19, which do not track it.
    pub memory_max_bytes: Option<u64>,
}

/// Where the task's directories are, per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        pids: Option<PathBuf>,
        freezer: Option<PathBuf>,
        unified: Option<PathBuf>,
    },
    V2 {
        root: PathBuf,
        dir: PathBuf,
    },
}

/// One task's cgroup: `<parent>/<task_id>` in every hierarchy the host uses.
///
/// Dropping it does nothing: the cgroup outlives the executor on purpose (a restarted executor
/// re-attaches with [`TaskCgroup::open_existing`]); call [`TaskCgroup::remove`] when the task ends.
#[derive(Debug, Clone)]
pub struct TaskCgroup {
    name: PathBuf,
    layout: Layout,
}

impl TaskCgroup {
    /// Creates the task's cgroup in every hierarchy and applies `limits`, reading each back.
    ///
    /// Fails with [`CgroupError::AlreadyExists`] when the directory is there already (a previous
    /// run of the task, or a live executor), and removes whatever it created when a later step
    /// fails.
    pub fn create(
        h: &Hierarchy,
        parent: &str,
        task_id: &str,
        limits: &Limits,
    ) -> Result<Self, CgroupError> {
        limits.validate()?;
        let cg = Self::locate(h, parent, task_id)?;
        cg.check_controllers(limits)?;
        let mut created = Vec::new();
        let result = cg
            .make_dirs(limits, &mut created)
            .and_then(|()| cg.apply(limits));
        match result {
            Ok(()) => Ok(cg),
            Err(cause) => {
                for dir in created.iter().rev() {
                    if let Err(source) = fs::remove_dir(dir) {
                        return Err(CgroupError::CleanupFailed {
                            path: cg.name.clone(),
                            cause: Box::new(cause),
                            cleanup: Box::new(CgroupError::RemoveDir {
                                path: dir.clone(),
                                source,
                            }),
                        });
                    }
                }
                Err(cause)
            }
        }
    }

    /// Removes what an earlier run with the same task id left behind — all or some of the task's
    /// directories, holding no process — so that [`TaskCgroup::create`] can start afresh. Refuses
    /// with [`CgroupError::AlreadyExists`] when a leftover directory still holds processes.
    pub fn clear_stale(h: &Hierarchy, parent: &str, task_id: &str) -> Result<(), CgroupError> {
        let cg = Self::locate(h, parent, task_id)?;
        let existing: Vec<PathBuf> = cg.dirs().into_iter().filter(|d| d.is_dir()).collect();
        if existing.is_empty() {
            return Ok(());
        }
        if !pids_in(&existing)?.is_empty() {
            return Err(CgroupError::AlreadyExists {
                path: cg.name.clone(),
            });
        }
        cg.remove_within(Duration::from_secs(1))
    }

    /// Re-attaches to a task cgroup created earlier (by this executor before a restart). Every
    /// directory must exist; nothing is written.
    pub fn open_existing(h: &Hierarchy, parent: &str, task_id: &str) -> Result<Self, CgroupError> {
        let cg = Self::locate(h, parent, task_id)?;
        for dir in cg.dirs() {
            if !dir.is_dir() {
                return Err(CgroupError::NotFound { path: dir });
            }
        }
        Ok(cg)
    }

    fn locate(h: &Hierarchy, parent: &str, task_id: &str) -> Result<Self, CgroupError> {
        let name = relative_name(parent, task_id)?;
        let layout = match h {
            Hierarchy::V1 { mounts, unified } => {
                let at = |root: &Option<PathBuf>| root.as_ref().map(|r| r.join(&name));
                Layout::V1 {
                    memory: at(&mounts.memory),
                    cpu: at(&mounts.cpu),
                    cpuacct: at(&mounts.cpuacct),
                    pids: at(&mounts.pids),
                    freezer: at(&mounts.freezer),
                    unified: at(unified),
                }
            }
            Hierarchy::V2 { root } => Layout::V2 {
                root: root.clone(),
                dir: root.join(&name),
            },
            Hierarchy::None => {
                return Err(CgroupError::NoHierarchy {
                    path: PathBuf::from("/proc/self/mountinfo"),
                });
            }
        };
        let cg = Self { name, layout };
        if cg.dirs().is_empty() {
            return Err(CgroupError::NoHierarchy {
                path: PathBuf::from("/proc/self/mountinfo"),
            });
        }
        Ok(cg)
    }

    /// The cgroup's name below each mount root (`hearth/<task_id>`).
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Every directory of this cgroup, one per hierarchy (a co-mounted `cpu,cpuacct` once).
    pub fn dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
                freezer,
                unified,
            } => {
                let mut dirs: Vec<PathBuf> = Vec::new();
                for d in [memory, cpu, cpuacct, pids, freezer, unified]
                    .into_iter()
                    .flatten()
                {
                    if !dirs.contains(d) {
                        dirs.push(d.clone());
                    }
                }
                dirs
            }
            Layout::V2 { dir, .. } => vec![dir.clone()],
        }
    }

    /// Every `cgroup.procs` a new process must write `0` into, after fork and before exec, to
    /// join the task (open them before forking: the child must not allocate).
    pub fn join_files(&self) -> Vec<PathBuf> {
        self.dirs().iter().map(|d| files::procs_file(d)).collect()
    }

    /// The directory used for reporting errors that concern the cgroup as a whole.
    fn main_dir(&self) -> PathBuf {
        self.dirs()
            .into_iter()
            .next()
            .unwrap_or_else(|| self.name.clone())
    }

    /// The directory holding `cgroup.events` and `cgroup.kill`: the v2 dir, or the hybrid one.
    fn v2_dir(&self) -> Option<&Path> {
        match &self.layout {
            Layout::V1 { unified, .. } => unified.as_deref(),
            Layout::V2 { dir, .. } => Some(dir),
        }
    }

    fn check_controllers(&self, limits: &Limits) -> Result<(), CgroupError> {
        let Layout::V1 {
            memory, cpu, pids, ..
        } = &self.layout
        else {
            return Ok(()); // v2 controllers are checked against cgroup.controllers when enabled.
        };
        let needed = [
            ("memory", limits.memory_bytes.is_some(), memory),
            ("cpu", limits.cpu_cores.is_some(), cpu),
            ("pids", limits.pids_max.is_some(), pids),
        ];
        for (controller, wanted, dir) in needed {
            if wanted && dir.is_none() {
                return Err(CgroupError::MissingController {
                    path: self.name.clone(),
                    controller,
                });
            }
        }
        Ok(())
    }

    fn make_dirs(&self, limits: &Limits, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        if let Layout::V2 { root, dir } = &self.layout {
            let parent = dir.parent().unwrap_or(root);
            fs::create_dir_all(parent).map_err(|source| CgroupError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
            enable_v2_controllers(root, parent, limits)?;
        }
        for dir in self.dirs() {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent).map_err(|source| CgroupError::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            match fs::create_dir(&dir) {
                Ok(()) => created.push(dir),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(CgroupError::AlreadyExists { path: dir });
                }
                Err(source) => return Err(CgroupError::CreateDir { path: dir, source }),
            }
        }
        Ok(())
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        match &self.layout {
            Layout::V1 {
                memory, cpu, pids, ..
            } => {
                if let (Some(bytes), Some(dir)) = (limits.memory_bytes, memory) {
                    let path = dir.join("memory.limit_in_bytes");
                    files::write(&path, &bytes.to_string())?;
                    verify_memory(&path, bytes)?;
                }
                if let (Some(cores), Some(dir)) = (limits.cpu_cores, cpu) {
                    let period = CPU_PERIOD_US.to_string();
                    let quota = Limits::cpu_quota_us(cores).to_string();
                    let period_file = dir.join("cpu.cfs_period_us");
                    let quota_file = dir.join("cpu.cfs_quota_us");
                    files::write(&period_file, &period)?;
                    files::write(&quota_file, &quota)?;
                    verify_exact(&period_file, &period)?;
                    verify_exact(&quota_file, &quota)?;
                }
                if let (Some(max), Some(dir)) = (limits.pids_max, pids) {
                    let path = dir.join("pids.max");
                    files::write(&path, &max.to_string())?;
                    verify_exact(&path, &max.to_string())?;
                }
            }
            Layout::V2 { dir, .. } => {
                if let Some(bytes) = limits.memory_bytes {
                    let path = dir.join("memory.max");
                    files::write(&path, &bytes.to_string())?;
                    verify_memory(&path, bytes)?;
                }
                if let Some(cores) = limits.cpu_cores {
                    let path = dir.join("cpu.max");
                    let value = format!("{} {CPU_PERIOD_US}", Limits::cpu_quota_us(cores));
                    files::write(&path, &value)?;
                    verify_exact(&path, &value)?;
                }
                if let Some(max) = limits.pids_max {
                    let path = dir.join("pids.max");
                    files::write(&path, &max.to_string())?;
                    verify_exact(&path, &max.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// The limits currently in force, read from the kernel (after a restart, this is how the
    /// executor learns them). A limit file that does not exist means no limit.
    pub fn read_limits(&self) -> Result<Limits, CgroupError> {
        let mut limits = Limits::default();
        match &self.layout {
            Layout::V1 {
                memory, cpu, pids, ..
            } => {
                if let Some(dir) = memory {
                    let path = dir.join("memory.limit_in_bytes");
                    if let Some(text) = files::read_opt(&path)? {
                        let bytes = files::parse_u64(&path, &text, "memory limit")?;
                        limits.memory_bytes = (bytes < V1_MEMORY_UNLIMITED).then_some(bytes);
                    }
                }
                if let Some(dir) = cpu {
                    let quota_file = dir.join("cpu.cfs_quota_us");
                    if let Some(text) = files::read_opt(&quota_file)? {
                        let quota = text.trim();
                        if quota != "-1" {
                            let quota = files::parse_u64(&quota_file, quota, "cfs quota")?;
                            let period =
                                files::read_u64(&dir.join("cpu.cfs_period_us"), "cfs period")?;
                            if period > 0 {
                                limits.cpu_cores = Some(quota as f64 / period as f64);
                            }
                        }
                    }
                }
                if let Some(dir) = pids {
                    let path = dir.join("pids.max");
                    if let Some(text) = files::read_opt(&path)? {
                        limits.pids_max = files::parse_max(&path, &text, "pids limit")?;
                    }
                }
            }
            Layout::V2 { dir, .. } => {
                let path = dir.join("memory.max");
                if let Some(text) = files::read_opt(&path)? {
                    limits.memory_bytes = files::parse_max(&path, &text, "memory limit")?;
                }
                let path = dir.join("cpu.max");
                if let Some(text) = files::read_opt(&path)? {
                    limits.cpu_cores = files::parse_cpu_max(&path, &text)?;
                }
                let path = dir.join("pids.max");
                if let Some(text) = files::read_opt(&path)? {
                    limits.pids_max = files::parse_max(&path, &text, "pids limit")?;
                }
            }
        }
        Ok(limits)
    }

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
    fn remove_with(
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

/// `parent/task_id` after checking both are plain relative names (no `..`, no absolute paths):
/// they end up joined to mount roots.
fn relative_name(parent: &str, task_id: &str) -> Result<PathBuf, CgroupError> {
    let invalid = |name: &str, reason| CgroupError::InvalidName {
        path: PathBuf::from(name),
        reason,
    };
    let plain = |name: &str| {
        !name.is_empty()
            && !name.contains('\0')
            && Path::new(name)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            && !name
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
    };
    if !plain(parent) {
        return Err(invalid(
            parent,
            "the parent must be a relative path of plain names",
        ));
    }
    if !plain(task_id) || task_id.contains('/') {
        return Err(invalid(task_id, "the task id must be one plain name"));
    }
    Ok(Path::new(parent).join(task_id))
}

/// Enables the controllers `limits` need, and memory always (OOM kills and usage are read from
/// it), in `cgroup.subtree_control` of every directory from `root` down to `parent`, so
/// `parent`'s children get them. Already enabled controllers are not written again.
fn enable_v2_controllers(root: &Path, parent: &Path, limits: &Limits) -> Result<(), CgroupError> {
    let available_file = root.join("cgroup.controllers");
    let available_text = files::read(&available_file)?;
    let available: BTreeSet<&str> = available_text.split_whitespace().collect();
    let mut wanted = Vec::new();
    let needs = [
        ("memory", limits.memory_bytes.is_some()),
        ("cpu", limits.cpu_cores.is_some()),
        ("pids", limits.pids_max.is_some()),
    ];
    for (controller, required) in needs {
        // Memory always: OOM kills and usage are read from it. The others only for a limit: the
        // cpu controller, for one, cannot be enabled while real-time processes sit in cgroups.
        if !(required || controller == "memory") {
            continue;
        }
        if available.contains(controller) {
            wanted.push(controller);
        } else {
            return Err(CgroupError::MissingController {
                path: available_file,
                controller,
            });
        }
    }
    let Ok(below_root) = parent.strip_prefix(root) else {
        return Err(CgroupError::InvalidName {
            path: parent.to_path_buf(),
            reason: "the parent is not below the cgroup2 mount",
        });
    };
    let mut level = root.to_path_buf();
    let mut levels = vec![level.clone()];
    for part in below_root.components() {
        level.push(part);
        levels.push(level.clone());
    }
    for dir in levels {
        let path = dir.join("cgroup.subtree_control");
        let enabled = |text: &str| -> BTreeSet<String> {
            // The kernel lists names bare; a `+` prefix only appears in fixtures that record writes.
            text.split_whitespace()
                .map(|c| c.trim_start_matches('+').to_owned())
                .collect()
        };
        let before = enabled(&files::read_opt(&path)?.unwrap_or_default());
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|c| !before.contains(*c))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let request = missing
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        files::write(&path, &request)?;
        let read = files::read(&path)?;
        let after = enabled(&read);
        if let Some(controller) = missing.into_iter().find(|c| !after.contains(*c)) {
            return Err(CgroupError::ControllerNotEnabled {
                path,
                controller,
                read: read.trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// The members of the given cgroup directories, sorted, without duplicates.
fn pids_in(dirs: &[PathBuf]) -> Result<Vec<i32>, CgroupError> {
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

fn verify_exact(path: &Path, wrote: &str) -> Result<(), CgroupError> {
    let read = files::read(path)?;
    if read.trim() == wrote {
        Ok(())
    } else {
        Err(CgroupError::LimitNotApplied {
            path: path.to_path_buf(),
            wrote: wrote.to_owned(),
            read: read.trim().to_owned(),
        })
    }
}

/// A memory limit is taken when it reads back as written, rounded down to a page at most.
fn verify_memory(path: &Path, bytes: u64) -> Result<(), CgroupError> {
    let read = files::read(path)?;
    let taken = read
        .trim()
        .parse::<u64>()
        .is_ok_and(|got| got <= bytes && bytes - got < MAX_PAGE_BYTES);
    if taken {
        Ok(())
    } else {
        Err(CgroupError::LimitNotApplied {
            path: path.to_path_buf(),
            wrote: bytes.to_string(),
            read: read.trim().to_owned(),
        })
    }
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

#[cfg(test)]
mod tests;
