//! Everything `hearth run` does before the first process starts, synchronously and before any
//! thread exists: validate, choose ids, bind ports and templates, take the task's lock, create the
//! sandbox, the cgroup and the checkpoint stream, and fork the keeper.
//!
//! Nothing is created until the config has been validated and bound: a bad config leaves no
//! sandbox, cgroup or checkpoint behind. A start that fails after creating the task's cgroup
//! (finding or starting the keeper) removes that cgroup again, and says so when it cannot; a
//! recovering start never removes the cgroup it re-attached to.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hearth_checkpoints::condition::{ConditionFile, condition_path};
use hearth_checkpoints::config::template::{self, Bindings};
use hearth_checkpoints::config::{self, TaskConfig};
use hearth_checkpoints::record::{
    Record, ReportState, RunnerHeader, StatusReport, TaskState, TaskStatus,
};
use hearth_checkpoints::replay::TaskReplay;
use hearth_checkpoints::root::{self, Root, TaskPlace};
use hearth_checkpoints::stream::{self, CheckpointWriter};

use crate::cgroup::{self, CgroupError, Hierarchy, Limits, Placement, TaskCgroup, delegation};
use crate::keeper::{self, socket::KeeperAddr};

mod error;
mod keeper_start;
mod launch;

pub use self::error::PrepareError;
use self::keeper_start::{find_or_start_keeper, undo_cgroup};
use self::launch::record_launch;
pub use self::launch::{LaunchRecord, RunOptions, launch_files, read_launch};

/// The pids limit of a task cgroup: generous, but it stops a fork bomb from taking the host.
pub const TASK_PIDS_MAX: u64 = 16_384;

/// The user the task's processes run as.
#[derive(Debug, Clone)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, listed only when `switch` is set (empty otherwise).
    pub groups: Vec<u32>,
    /// Whether the keeper must switch to this user before exec.
    pub switch: bool,
}

/// A task ready to be supervised.
#[derive(Debug)]
pub struct Prepared {
    pub task_id: String,
    pub root: Root,
    pub task: TaskConfig,
    pub header: RunnerHeader,
    pub sandbox: PathBuf,
    pub user: TaskUser,
    pub writer: CheckpointWriter,
    /// The task's state so far: replayed from the stream when this run recovers a task an earlier
    /// executor started, else what preparation just wrote (header, ACTIVE, STARTING).
    pub replay: TaskReplay,
    /// Whether this run recovers a task an earlier executor started.
    pub recovering: bool,
    pub cgroup: Option<TaskCgroup>,
    /// Printed once: why there is no cgroup.
    pub cgroup_warning: Option<String>,
    /// Where the task's keeper listens: its abstract name, or the socket file of a keeper an
    /// earlier build started.
    pub keeper_addr: KeeperAddr,
    pub keeper_stream: PathBuf,
    /// The task's live-condition file (`None` if it could not be created: then a failing disk
    /// is reported on stderr and to the scheduler only).
    pub condition: Option<ConditionFile>,
    /// Held for the executor's lifetime: the task's ownership lock.
    pub lock: File,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PrepareError + 'a {
    move |source| PrepareError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    (keeper::now_secs() * 1000.0) as i64
}

/// Do everything up to and including forking the keeper. Must be called while the process is
/// single-threaded.
pub fn prepare(opts: &RunOptions) -> Result<Prepared, PrepareError> {
    prepare_with_token_file(opts, None)
}

/// [`prepare`], recording `token_file` (`--scheduler-token-file`) in the launch record.
pub fn prepare_with_token_file(
    opts: &RunOptions,
    token_file: Option<&Path>,
) -> Result<Prepared, PrepareError> {
    let task = config::load(&opts.config).map_err(|e| PrepareError::Config {
        path: opts.config.clone(),
        errors: e.to_string(),
    })?;
    let root = Root::given_or_default(opts.root.as_deref())?;
    for (name, _) in &opts.ports {
        if name.is_empty() {
            return Err(PrepareError::Usage("--port: empty port name".into()));
        }
    }

    // An existing, unfinished stream for this task id means recovery.
    let existing = match &opts.task_id {
        Some(id) => {
            root::validate_task_id(id)?;
            let path = root.runner_path(id);
            if path.exists() {
                let r = stream::replay_path(&path).map_err(|source| PrepareError::Checkpoint {
                    path: path.clone(),
                    source,
                })?;
                if r.replay.state().is_terminal() {
                    return Err(PrepareError::AlreadyFinished {
                        task_id: id.clone(),
                        state: r.replay.state().name(),
                    });
                }
                Some(r)
            } else {
                None
            }
        }
        None => None,
    };

    let launch_ms = now_ms();
    let task_id = match &opts.task_id {
        Some(id) => id.clone(),
        None => generate_task_id(&task, launch_ms),
    };
    root::validate_task_id(&task_id)?;
    let user = resolve_user(opts, &task)?;
    let hostname = match &opts.hostname {
        Some(h) => h.clone(),
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into()),
    };

    // Ports: the recovered header's, else --port, else allocated now.
    let mut ports: BTreeMap<String, u16> = opts.ports.iter().cloned().collect();
    if let Some(r) = &existing
        && let Some(h) = &r.replay.header
    {
        for (k, v) in &h.ports {
            if let Ok(p) = u16::try_from(*v) {
                ports.insert(k.clone(), p);
            }
        }
    }
    for name in template::required_ports(&task) {
        if let std::collections::btree_map::Entry::Vacant(slot) = ports.entry(name) {
            let port = allocate_port().map_err(|source| PrepareError::Io {
                what: "allocate a port for",
                path: slot.key().into(),
                source,
            })?;
            slot.insert(port);
        }
    }
    let bindings = Bindings {
        task_id: task_id.clone(),
        user: user.name.clone(),
        instance: opts.instance.or(task.job.instance),
        hostname: hostname.clone(),
        ports: ports.clone(),
    };
    let task = template::bind(&task, &bindings).map_err(|e| PrepareError::Config {
        path: opts.config.clone(),
        errors: e.to_string(),
    })?;

    // From here on, things are created.
    let ckpt_dir = root.checkpoint_dir(&task_id);
    std::fs::create_dir_all(&ckpt_dir).map_err(io_err("create", &ckpt_dir))?;
    let lock = take_lock(&ckpt_dir.join("executor.lock"), &task_id, opts.force)?;
    // Created now, at full size, while there is room: it is what reports a full disk later.
    let condition = ConditionFile::create(&ckpt_dir)
        .map_err(|e| {
            tracing::warn!(
                "cannot create {}: {e}; a failing checkpoint disk will be reported on stderr and \
                 to the scheduler only",
                condition_path(&ckpt_dir).display()
            );
        })
        .ok();

    let sandbox = match (&existing, &opts.sandbox) {
        (Some(r), _)
            if r.replay
                .header
                .as_ref()
                .and_then(|h| h.sandbox.as_ref())
                .is_some() =>
        {
            PathBuf::from(
                r.replay
                    .header
                    .as_ref()
                    .and_then(|h| h.sandbox.clone())
                    .unwrap_or_default(),
            )
        }
        (_, Some(s)) => s.clone(),
        _ => root.path().join("sandboxes").join(&task_id),
    };
    let log_dir = sandbox.join(".logs");
    let runner_path = root.runner_path(&task_id);
    // Where the task's cgroup goes: a fresh start records it in its launch file, a recovering one
    // reads it from there.
    let recovering = existing.is_some();
    let plan = plan_cgroup(opts, &ckpt_dir, &task_id, recovering)?;
    let (writer, header, replay) = match existing {
        Some(_) => {
            let (w, replayed) = CheckpointWriter::open_append(&runner_path).map_err(|source| {
                PrepareError::Checkpoint {
                    path: runner_path.clone(),
                    source,
                }
            })?;
            let header = replayed.replay.header.clone().unwrap_or_default();
            (w, header, replayed.replay)
        }
        None => {
            let header = RunnerHeader {
                task_id: task_id.clone(),
                launch_time_ms: launch_ms,
                sandbox: Some(sandbox.display().to_string()),
                hostname: Some(hostname),
                user: Some(user.name.clone()),
                ports: ports
                    .iter()
                    .map(|(k, v)| (k.clone(), i64::from(*v)))
                    .collect(),
                log_dir: Some(log_dir.display().to_string()),
                uid: i32::try_from(user.uid).ok(),
                format_version: Some(hearth_checkpoints::record::FORMAT_VERSION as i32),
            };
            let ckpt_err = |source| PrepareError::Checkpoint {
                path: runner_path.clone(),
                source,
            };
            // The launch files first, without fsyncing their directory: the stream's creation
            // fsyncs it, so whenever the stream is found after a crash, so are they.
            let placement = match &plan {
                CgroupPlan::Use { placement, .. } => Some(placement),
                CgroupPlan::Without(_) => None,
            };
            record_launch(opts, token_file, placement, &ckpt_dir, &task_id)?;
            let mut replay = TaskReplay {
                header: Some(header.clone()),
                ..TaskReplay::default()
            };
            let first = [
                Record::Task(TaskStatus {
                    state: TaskState::Active,
                    timestamp_ms: launch_ms,
                    runner_pid: Some(std::process::id() as i32),
                    runner_uid: Some(nix::unistd::getuid().as_raw() as i32),
                    reason: None,
                    outcome: None,
                    cause: None,
                }),
                // Thermos's first status, written before the sandbox exists.
                Record::Status(StatusReport {
                    seq: 1,
                    state: ReportState::Starting,
                    reason: Some("Initializing sandbox.".to_owned()),
                    timestamp_ms: launch_ms,
                }),
            ];
            let w =
                CheckpointWriter::create_with(&runner_path, &header, &first).map_err(ckpt_err)?;
            for record in &first {
                // Our own records in the order we write them: they always apply.
                let _ = replay.apply(record);
            }
            (w, header, replay)
        }
    };

    create_sandbox(&sandbox, &user)?;
    keeper::create_dirs_owned(&log_dir, user.switch.then_some((user.uid, user.gid)))
        .map_err(io_err("create log directory", &log_dir))?;

    let (cgroup, cgroup_warning, cgroup_created) = setup_cgroup(plan, &task_id, &task, recovering)?;

    // From here on, a failure removes the cgroup this start created — never one a recovering
    // start re-attached to, where the task's processes live.
    let undo = |failure| match cgroup.as_ref().filter(|_| cgroup_created) {
        Some(cg) => undo_cgroup(failure, cg),
        None => failure,
    };
    let keeper_stream = root.keeper_path(&task_id);
    let keeper_addr =
        find_or_start_keeper(&task_id, &ckpt_dir, &keeper_stream, cgroup.as_ref()).map_err(undo)?;
    // Written while the new keeper starts, not before it (its two fsyncs then overlap the
    // keeper's start-up). Should it fail, the keeper, which has no child and no client, exits
    // on its own after `keeper::IDLE_EXIT`.
    write_task_config(&root, &task_id, &task).map_err(undo)?;

    Ok(Prepared {
        task_id,
        root,
        task,
        header,
        sandbox,
        user,
        writer,
        replay,
        recovering,
        cgroup,
        cgroup_warning,
        keeper_addr,
        keeper_stream,
        condition,
        lock,
    })
}

/// Where the task's cgroup goes, or why it has none.
enum CgroupPlan {
    Use {
        hierarchy: Hierarchy,
        placement: Placement,
    },
    Without(String),
}

/// Picks the hierarchy and the placement of the task's cgroup. A recovering task uses the
/// placement its launch recorded (wherever this executor runs, the cgroup is where it was
/// created); otherwise [`delegation::settle_host`] chooses, and moves this process into the
/// delegated cgroup's leaf when that applies.
fn plan_cgroup(
    opts: &RunOptions,
    ckpt_dir: &Path,
    task_id: &str,
    recovering: bool,
) -> Result<CgroupPlan, PrepareError> {
    if opts.no_cgroups {
        return Ok(CgroupPlan::Without(
            "cgroups disabled (--no-cgroups): using process groups and a subreaper; limits are \
             not enforced"
                .to_owned(),
        ));
    }
    let unavailable = |why: &CgroupError| {
        CgroupPlan::Without(format!(
            "cgroups unavailable ({why}); falling back to process groups and a subreaper: limits \
             are not enforced and double-forked daemons may survive a kill"
        ))
    };
    let hierarchy = match cgroup::detect_host() {
        Ok(h) => h,
        Err(why) => return Ok(unavailable(&why)),
    };
    let recorded = if recovering {
        read_launch(&launch_files(ckpt_dir).1).and_then(|r| r.cgroup)
    } else {
        None
    };
    let placement = match recorded {
        Some(placement) => {
            if let Err(why) = cgroup::check_usable_at(&hierarchy, &placement.top) {
                return Ok(unavailable(&why));
            }
            delegation::log_choice(&hierarchy, &placement, &delegation::Reason::Recorded);
            placement
        }
        None => match delegation::settle_host(&hierarchy, opts.cgroup_parent.as_deref()) {
            Ok(choice) => choice.placement,
            Err(why @ (CgroupError::NotUsable { .. } | CgroupError::NoHierarchy { .. })) => {
                return Ok(unavailable(&why));
            }
            Err(source) => {
                return Err(PrepareError::Cgroup {
                    task_id: task_id.to_owned(),
                    source,
                });
            }
        },
    };
    Ok(CgroupPlan::Use {
        hierarchy,
        placement,
    })
}

/// The task's cgroup (or why there is none), and whether this call created it (rather than
/// re-attaching a recovering task to its own).
fn setup_cgroup(
    plan: CgroupPlan,
    task_id: &str,
    task: &TaskConfig,
    recovering: bool,
) -> Result<(Option<TaskCgroup>, Option<String>, bool), PrepareError> {
    let (hierarchy, placement) = match plan {
        CgroupPlan::Use {
            hierarchy,
            placement,
        } => (hierarchy, placement),
        CgroupPlan::Without(warning) => return Ok((None, Some(warning), false)),
    };
    let parent = &placement.parent;
    let limits = Limits {
        memory_bytes: (task.resources.ram > 0).then_some(task.resources.ram),
        cpu_cores: (task.resources.cpu > 0.0).then_some(task.resources.cpu),
        pids_max: Some(TASK_PIDS_MAX),
        swap_bytes: task.resources.swap,
        memory_high_bytes: (task.resources.ram_high > 0).then_some(task.resources.ram_high),
    };
    // A recovering task re-attaches to its cgroup. Anything else found under the task's name is
    // a leftover of an earlier run: cleared if it holds no process, refused if it does.
    let existing = if recovering {
        TaskCgroup::open_existing(&hierarchy, parent, task_id).ok()
    } else {
        None
    };
    let created = existing.is_none();
    let cg = match existing {
        Some(cg) => Ok(cg),
        None => TaskCgroup::clear_stale(&hierarchy, parent, task_id)
            .and_then(|()| TaskCgroup::create_in(&hierarchy, &placement, task_id, &limits)),
    }
    .map_err(|source| PrepareError::Cgroup {
        task_id: task_id.to_owned(),
        source,
    })?;
    Ok((Some(cg), None, created))
}

/// Take the task's ownership lock (`flock`, released by the kernel when the executor dies), and
/// write our pid into it.
fn take_lock(path: &Path, task_id: &str, force: bool) -> Result<File, PrepareError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("open", path))?;
    let try_lock = |f: &File| {
        rustix::fs::flock(f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
    };
    if !try_lock(&file) {
        let pid = lock_holder(path).unwrap_or(0);
        if !force {
            return Err(PrepareError::Owned {
                task_id: task_id.to_owned(),
                pid,
            });
        }
        if pid > 0 {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            PrepareError::Io {
                what: "lock",
                path: path.to_path_buf(),
                source: e.into(),
            }
        })?;
    }
    file.set_len(0).map_err(io_err("truncate", path))?;
    writeln!(file, "{}", std::process::id()).map_err(io_err("write", path))?;
    Ok(file)
}

/// Keep holding the task's lock when the file system under the checkpoint directory was replaced
/// (a read-only file system checked and mounted again while the executor ran): `lock` is the
/// file this executor locked; if `path` now names another file, lock that one too and hold it
/// instead. Without this, `hearth kill` and a second `hearth run` would find the new lock file
/// free and take over a task whose executor still runs. Returns whether the lock moved.
pub fn keep_lock(lock: &mut File, path: &Path, task_id: &str) -> Result<bool, PrepareError> {
    use std::os::unix::fs::MetadataExt;
    let held = lock.metadata().map_err(io_err("stat", path))?;
    let here = std::fs::metadata(path).map_err(io_err("stat", path))?;
    if (held.dev(), held.ino()) == (here.dev(), here.ino()) {
        return Ok(false);
    }
    *lock = take_lock(path, task_id, false)?;
    Ok(true)
}

/// The pid written in a task's lock file.
pub fn lock_holder(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether some executor holds the lock at `path` now.
pub fn lock_is_held(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared).is_err()
}

fn generate_task_id(task: &TaskConfig, launch_ms: i64) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &task.job.role {
        parts.push(r.clone());
    }
    if let Some(e) = &task.job.environment {
        parts.push(e.clone());
    }
    parts.push(task.job.name.clone().unwrap_or_else(|| task.name.clone()));
    if let Some(i) = task.job.instance {
        parts.push(i.to_string());
    }
    let name: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{name}-{launch_ms}-{:04x}", std::process::id() & 0xffff)
}

fn resolve_user(opts: &RunOptions, task: &TaskConfig) -> Result<TaskUser, PrepareError> {
    let me = nix::unistd::getuid();
    let as_root = me.is_root();
    let wanted = if opts.no_setuid || !as_root {
        None
    } else {
        opts.user.clone().or_else(|| task.job.role.clone())
    };
    if !as_root && opts.user.is_some() && !opts.no_setuid {
        return Err(PrepareError::Usage(
            "--user: switching users needs root (or pass --no-setuid)".into(),
        ));
    }
    match wanted {
        Some(name) => {
            let u = nix::unistd::User::from_name(&name)
                .map_err(|source| PrepareError::UserLookup {
                    name: name.clone(),
                    source,
                })?
                .ok_or_else(|| {
                    PrepareError::Usage(format!(
                        "user {name:?} does not exist on this host (the task's role); pass \
                         --user USER or --no-setuid"
                    ))
                })?;
            let cname = std::ffi::CString::new(name.clone())
                .map_err(|_| PrepareError::Usage(format!("user {name:?}: contains a NUL byte")))?;
            let switch = u.uid != me;
            // Only a switch uses the groups. Listing them asks every group database of the host
            // (glibc loads each of its NSS modules to do so), which is start-up time for nothing
            // when the task runs as the executor's own user.
            let groups = if switch {
                nix::unistd::getgrouplist(&cname, u.gid)
                    .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                    .unwrap_or_else(|_| vec![u.gid.as_raw()])
            } else {
                Vec::new()
            };
            Ok(TaskUser {
                name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
                groups,
                switch,
            })
        }
        None => {
            let u = nix::unistd::User::from_uid(me).ok().flatten();
            Ok(TaskUser {
                name: u
                    .as_ref()
                    .map_or_else(|| me.to_string(), |u| u.name.clone()),
                uid: me.as_raw(),
                gid: nix::unistd::getgid().as_raw(),
                groups: Vec::new(),
                switch: false,
            })
        }
    }
}

fn create_sandbox(sandbox: &Path, user: &TaskUser) -> Result<(), PrepareError> {
    std::fs::create_dir_all(sandbox).map_err(io_err("create sandbox", sandbox))?;
    std::fs::set_permissions(sandbox, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("chmod sandbox", sandbox))?;
    if user.switch {
        std::os::unix::fs::chown(sandbox, Some(user.uid), Some(user.gid))
            .map_err(io_err("chown sandbox", sandbox))?;
    }
    Ok(())
}

/// Write the bound task config to `tasks/active/<task_id>` atomically.
fn write_task_config(root: &Root, task_id: &str, task: &TaskConfig) -> Result<(), PrepareError> {
    let path = root.task_config_path(task_id, TaskPlace::Active);
    let json = serde_json::to_vec_pretty(task).map_err(|e| PrepareError::Io {
        what: "serialize the task config for",
        path: path.clone(),
        source: io::Error::other(e),
    })?;
    write_atomic(&path, &json).map_err(io_err("write", &path))
}

/// Write a file atomically: temp file, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = replace_file(path, bytes)?;
    File::open(dir)?.sync_all()
}

/// Write a file atomically (temp file, fsync, rename) without fsyncing its directory, for a
/// caller that fsyncs the directory itself after creating the rest of its files; returns the
/// directory.
pub fn replace_file<'p>(path: &'p Path, bytes: &[u8]) -> io::Result<&'p Path> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(dir)
}

/// A free TCP port, chosen by the kernel.
fn allocate_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind(("0.0.0.0", 0))?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn locked_elsewhere(path: &Path) -> bool {
        let other = File::open(path).unwrap();
        rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
    }

    #[test]
    fn the_lock_is_kept_when_its_file_is_replaced_and_left_alone_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("executor.lock");
        let mut lock = take_lock(&path, "t", false).unwrap();
        assert!(
            !keep_lock(&mut lock, &path, "t").unwrap(),
            "same file: nothing to do"
        );
        assert!(locked_elsewhere(&path));
        // The path now names another file (as after the file system was mounted afresh).
        let fresh = dir.path().join("fresh");
        std::fs::write(&fresh, "").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        assert!(!locked_elsewhere(&path), "the new file is not locked yet");
        assert!(keep_lock(&mut lock, &path, "t").unwrap());
        assert!(locked_elsewhere(&path), "the new file is locked by us now");
        assert_eq!(lock_holder(&path), Some(std::process::id() as i32));
    }
}
