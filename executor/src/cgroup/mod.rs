//! The task's cgroup, on cgroup v1, v2, systemd's hybrid layout, or not at all.
//!
//! Every task gets one cgroup, `<parent>/<task_id>`, in every hierarchy it uses. The parent is
//! `hearth` below the mount root, or `<delegated>/hearth` inside a cgroup systemd delegated to us:
//! [`delegation`] decides, and says why. Every process of the task joins it **before exec**: the spawner writes
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
//!   `cpu`, `pids`, and `io` where it is available) in `cgroup.subtree_control` of every ancestor
//!   from the placement's top (the mount root, or the delegated cgroup: nothing above it is
//!   written) down to the parent, then writes `memory.max`, `cpu.max`, `pids.max`; it reads `memory.events`, `cpu.stat`,
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
//!   real v2 tree (CI's host is v1; `.ci/v2-tests` runs the real-kernel tests,
//!   `executor/tests/cgroup_real.rs`, in a pure-v2 guest kernel too); `cgroups-rs` finds its
//!   mounts itself;
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
//! * On v2 a memory limit turns swap off (`memory.swap.max` = 0) unless [`Limits::swap_bytes`]
//!   allows some; v1 does not limit swap. [`Limits::memory_high_bytes`] (v2 `memory.high`) has no
//!   v1 equivalent and is refused there.
//! * The parent directory (`hearth`) is created on demand and never removed: other tasks share it.
//!   So is a delegated cgroup's `supervisor` leaf (see [`delegation`]).
//! * A task's processes could create sub-cgroups of their own only if we delegated the directory;
//!   we do not, so the task cgroup has no children and `remove` does not look for any.

mod control;
pub mod delegation;
mod error;
mod files;
mod hierarchy;
mod limits;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use control::pids_in;
pub use delegation::Placement;
pub use error::CgroupError;
pub use hierarchy::{
    Hierarchy, V1Mounts, available, check_usable, check_usable_at, detect, detect_host,
};

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
    /// Swap the task may use on top of `memory_bytes`, in bytes (v2 `memory.swap.max`); 0 = no
    /// swap. Only with a memory limit. v1 does not limit swap: there this changes nothing.
    pub swap_bytes: u64,
    /// A soft memory limit in bytes, at most `memory_bytes` (v2 `memory.high`: above it the
    /// kernel throttles and reclaims, it does not kill). v2 only: refused on v1.
    pub memory_high_bytes: Option<u64>,
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
        Self::create_in(h, &Placement::at_root(parent), task_id, limits)
    }

    /// [`TaskCgroup::create`] under `placement`: on v2, `cgroup.subtree_control` is written only
    /// from `placement.top` down (the delegated cgroup, or the mount root), never above it.
    pub fn create_in(
        h: &Hierarchy,
        placement: &Placement,
        task_id: &str,
        limits: &Limits,
    ) -> Result<Self, CgroupError> {
        limits.validate()?;
        let cg = Self::locate(h, &placement.parent, task_id)?;
        cg.check_controllers(limits)?;
        let mut created = Vec::new();
        let result = cg
            .make_dirs(&placement.top, limits, &mut created)
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

    fn make_dirs(
        &self,
        top: &str,
        limits: &Limits,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        if let Layout::V2 { root, dir } = &self.layout {
            let parent = dir.parent().unwrap_or(root);
            let top = root.join(top);
            if !parent.starts_with(&top) || !top.is_dir() {
                return Err(CgroupError::InvalidName {
                    path: parent.to_path_buf(),
                    reason: "the parent is not below the cgroup Hearth may write to",
                });
            }
            fs::create_dir_all(parent).map_err(|source| CgroupError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
            enable_v2_controllers(&top, parent, limits)?;
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

/// Enables the controllers `limits` need, memory always (OOM kills and usage are read from it) and
/// io where `top` has it (the observer reads `io.stat`), in `cgroup.subtree_control` of every
/// directory from `top` (the mount root, or the delegated cgroup) down to `parent`, so `parent`'s
/// children get them. Already enabled controllers are not written again; nothing above `top` is.
fn enable_v2_controllers(top: &Path, parent: &Path, limits: &Limits) -> Result<(), CgroupError> {
    let root = top;
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
    if available.contains("io") {
        wanted.push("io");
    }
    let Ok(below_root) = parent.strip_prefix(root) else {
        return Err(CgroupError::InvalidName {
            path: parent.to_path_buf(),
            reason: "the parent is not below the cgroup Hearth may write to",
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

#[cfg(test)]
mod tests;
