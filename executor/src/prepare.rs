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

use hearth_checkpoints::config::template::{self, Bindings};
use hearth_checkpoints::config::{self, TaskConfig};
use hearth_checkpoints::record::{
    Record, ReportState, RunnerHeader, StatusReport, TaskState, TaskStatus,
};
use hearth_checkpoints::replay::TaskReplay;
use hearth_checkpoints::root::{self, Root, TaskPlace};
use hearth_checkpoints::stream::{self, CheckpointWriter};
use thiserror::Error;

use crate::cgroup::{self, Limits, TaskCgroup};
use crate::keeper::socket::{self as keeper_socket, KeeperAddr, PeerError};
use crate::keeper::{self, KeeperPaths};

/// The pids limit of a task cgroup: generous, but it stops a fork bomb from taking the host.
pub const TASK_PIDS_MAX: u64 = 16_384;

/// The options of `hearth run`. Kept (without `config`, which is copied) in
/// `checkpoints/<task_id>/launch.json` so that `hearth kill` can adopt a task whose executor is gone.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunOptions {
    pub config: PathBuf,
    pub root: Option<PathBuf>,
    pub sandbox: Option<PathBuf>,
    pub task_id: Option<String>,
    pub ports: Vec<(String, u16)>,
    pub instance: Option<u32>,
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub no_setuid: bool,
    pub json: bool,
    pub force: bool,
    /// Parent cgroup name under each hierarchy (default `hearth`).
    pub cgroup_parent: Option<String>,
    /// Do not use cgroups even where they are available.
    pub no_cgroups: bool,
    /// Base URL of the scheduler to report status updates to.
    pub scheduler: Option<String>,
    /// Start tearing the task down at once (`hearth kill` adopting an orphaned task).
    #[serde(skip)]
    pub kill_on_start: bool,
}

/// Where a task's launch is recorded, for `hearth kill` to adopt it if its executor dies.
pub fn launch_files(ckpt_dir: &Path) -> (PathBuf, PathBuf) {
    (ckpt_dir.join("config.json"), ckpt_dir.join("launch.json"))
}

/// `launch.json`: the options of `hearth run`, and the scheduler token file it was given (a
/// path, never the token).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LaunchRecord {
    #[serde(flatten)]
    pub opts: RunOptions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_token_file: Option<PathBuf>,
}

/// Read a task's `launch.json`; `None` when it is missing or unreadable.
///
/// Decoded through a [`serde_json::Value`]: the record flattens [`RunOptions`], and a flattened
/// struct read straight from text loses its numbers when serde_json's `arbitrary_precision`
/// feature is on (the `.aurora` evaluator's Starlark turns it on for the whole build).
pub fn read_launch(path: &Path) -> Option<LaunchRecord> {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    serde_json::from_value(value).ok()
}

/// Why a task could not be started. `Usage` errors map to exit code 2 and leave nothing behind.
#[derive(Debug, Error)]
pub enum PrepareError {
    #[error("invalid task config {path}:\n{errors}")]
    Config { path: PathBuf, errors: String },
    /// The caller's mistake (a flag, a user that does not exist).
    #[error("{0}")]
    Usage(String),
    /// A bug in the executor, not the caller's mistake: exit code 5.
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("user {name:?}: cannot look it up")]
    UserLookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("task {task_id:?} is already run by executor pid {pid} (pass --force to take it over)")]
    Owned { task_id: String, pid: i32 },
    #[error("task {task_id:?} already ended {state}; choose another --task-id")]
    AlreadyFinished {
        task_id: String,
        state: &'static str,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint {path}")]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: stream::CheckpointError,
    },
    #[error(transparent)]
    Root(#[from] root::RootError),
    #[error("task {task_id:?}: cannot {what} its keeper ({addr})")]
    Keeper {
        task_id: String,
        what: &'static str,
        addr: KeeperAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "task {task_id:?}: its keeper's socket {addr} is already held{}",
        holder.map_or(String::new(), |(pid, uid)| format!(" by pid {pid} (uid {uid})"))
    )]
    KeeperSocketTaken {
        task_id: String,
        addr: KeeperAddr,
        /// Who answers on it, `(pid, uid)`, when anyone does.
        holder: Option<(i32, u32)>,
    },
    #[error("task {task_id:?}: {source}")]
    KeeperPeer { task_id: String, source: PeerError },
    /// A start failed after creating the task's cgroup, and removing the cgroup failed too.
    #[error(
        "{}; and its cgroup {} could not be removed: {}",
        with_causes(failure),
        cgroup.display(),
        with_causes(cleanup)
    )]
    CgroupLeft {
        failure: Box<PrepareError>,
        cgroup: PathBuf,
        cleanup: cgroup::CgroupError,
    },
    #[error("cgroup for task {task_id:?}")]
    Cgroup {
        task_id: String,
        #[source]
        source: cgroup::CgroupError,
    },
}

impl PrepareError {
    /// Whether this is the caller's mistake (exit code 2) rather than a failure to run.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            PrepareError::Config { .. }
                | PrepareError::Usage(_)
                | PrepareError::Owned { .. }
                | PrepareError::AlreadyFinished { .. }
        ) || matches!(self, PrepareError::Root(e) if e.is_usage())
            || matches!(self, PrepareError::CgroupLeft { failure, .. } if failure.is_usage())
    }

    /// The exit code of `hearth run` for this error: 2 for the caller's mistakes, 5 for an
    /// internal error, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            PrepareError::CgroupLeft { failure, .. } => failure.exit_code(),
            PrepareError::Internal(_) => 5,
            e if e.is_usage() => 2,
            _ => 1,
        }
    }
}

/// An error and its causes, `: `-separated (for an error that reports two: each with its own).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// The user the task's processes run as.
#[derive(Debug, Clone)]
pub struct TaskUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
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
    /// Held for the executor's lifetime: the task's ownership lock.
    pub _lock: File,
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
    let (writer, header, replay, recovering) = match existing {
        Some(_) => {
            let (w, replayed) = CheckpointWriter::open_append(&runner_path).map_err(|source| {
                PrepareError::Checkpoint {
                    path: runner_path.clone(),
                    source,
                }
            })?;
            let header = replayed.replay.header.clone().unwrap_or_default();
            (w, header, replayed.replay, true)
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
            let mut w = CheckpointWriter::create(&runner_path, &header).map_err(ckpt_err)?;
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
            for record in &first {
                w.append(record).map_err(ckpt_err)?;
                // Our own records in the order we write them: they always apply.
                let _ = replay.apply(record);
            }
            w.commit().map_err(ckpt_err)?;
            (w, header, replay, false)
        }
    };

    create_sandbox(&sandbox, &user)?;
    keeper::create_dirs_owned(&log_dir, user.switch.then_some((user.uid, user.gid)))
        .map_err(io_err("create log directory", &log_dir))?;

    write_task_config(&root, &task_id, &task)?;
    if !recovering {
        record_launch(opts, token_file, &ckpt_dir, &task_id)?;
    }

    let (cgroup, cgroup_warning, cgroup_created) = setup_cgroup(opts, &task_id, &task, recovering)?;

    // From here on, a failure removes the cgroup this start created — never one a recovering
    // start re-attached to, where the task's processes live.
    let keeper_stream = root.keeper_path(&task_id);
    let keeper_addr = find_or_start_keeper(&task_id, &ckpt_dir, &keeper_stream, cgroup.as_ref())
        .map_err(|failure| match cgroup.as_ref().filter(|_| cgroup_created) {
            Some(cg) => undo_cgroup(failure, cg),
            None => failure,
        })?;

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
        _lock: lock,
    })
}

/// The task's running keeper (adopted after a restart), else a new one.
fn find_or_start_keeper(
    task_id: &str,
    ckpt_dir: &Path,
    keeper_stream: &Path,
    cgroup: Option<&TaskCgroup>,
) -> Result<KeeperAddr, PrepareError> {
    let running = keeper_socket::find_running(ckpt_dir, task_id).map_err(|source| {
        PrepareError::KeeperPeer {
            task_id: task_id.to_owned(),
            source,
        }
    })?;
    if let Some(addr) = running {
        return Ok(addr);
    }
    let paths = KeeperPaths {
        task_id: task_id.to_owned(),
        stream: keeper_stream.to_path_buf(),
        log: ckpt_dir.join("keeper.log"),
        cgroup_procs: cgroup.map(|c| c.join_files()).unwrap_or_default(),
    };
    start_keeper(&paths, keeper_socket::abstract_name(ckpt_dir, task_id))
}

/// Remove the cgroup a failed start created (it holds no process: none was started). When that
/// fails too, the error says both.
fn undo_cgroup(failure: PrepareError, cgroup: &TaskCgroup) -> PrepareError {
    match cgroup.remove() {
        Ok(()) => failure,
        Err(cleanup) => PrepareError::CgroupLeft {
            failure: Box::new(failure),
            cgroup: cgroup.name().to_path_buf(),
            cleanup,
        },
    }
}

/// Bind the keeper's abstract socket `name`, then fork the keeper, which inherits it. The keeper
/// stays our child while we live; if we die first it is re-parented (to init or the nearest
/// subreaper) and outlives us, and a restarted executor reaches it through the same name.
fn start_keeper(paths: &KeeperPaths, name: Vec<u8>) -> Result<KeeperAddr, PrepareError> {
    if !crate::spawn::is_single_threaded() {
        return Err(PrepareError::Internal(
            "the keeper must be forked before any thread starts",
        ));
    }
    let task_id = || paths.task_id.clone();
    let listener = match keeper_socket::bind(&name) {
        Ok(l) => l,
        // One keeper per task: the name is held by a keeper that did not answer us (or by
        // something else entirely).
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Err(PrepareError::KeeperSocketTaken {
                task_id: task_id(),
                holder: keeper_socket::holder(&name),
                addr: KeeperAddr::Abstract(name),
            });
        }
        Err(source) => {
            return Err(PrepareError::Keeper {
                task_id: task_id(),
                what: "bind the socket of",
                addr: KeeperAddr::Abstract(name),
                source,
            });
        }
    };
    let addr = KeeperAddr::Abstract(name);
    let p = paths.clone();
    crate::spawn::fork_keeper(move || {
        keeper::rename_process(&p.task_id);
        keeper::run(&p, listener)
    })
    .map_err(|source| PrepareError::Keeper {
        task_id: task_id(),
        what: "fork",
        addr: addr.clone(),
        source,
    })?;
    Ok(addr)
}

/// The task's cgroup (or why there is none), and whether this call created it (rather than
/// re-attaching a recovering task to its own).
fn setup_cgroup(
    opts: &RunOptions,
    task_id: &str,
    task: &TaskConfig,
    recovering: bool,
) -> Result<(Option<TaskCgroup>, Option<String>, bool), PrepareError> {
    if opts.no_cgroups {
        return Ok((
            None,
            Some(
                "cgroups disabled (--no-cgroups): using process groups and a subreaper; limits \
                 are not enforced"
                    .to_owned(),
            ),
            false,
        ));
    }
    let hierarchy = match cgroup::available() {
        Ok(h) => h,
        Err(why) => {
            return Ok((
                None,
                Some(format!(
                    "cgroups unavailable ({why}); falling back to process groups and a subreaper: \
                     limits are not enforced and double-forked daemons may survive a kill"
                )),
                false,
            ));
        }
    };
    let parent = opts
        .cgroup_parent
        .clone()
        .unwrap_or_else(|| "hearth".to_owned());
    let limits = Limits {
        memory_bytes: (task.resources.ram > 0).then_some(task.resources.ram),
        cpu_cores: (task.resources.cpu > 0.0).then_some(task.resources.cpu),
        pids_max: Some(TASK_PIDS_MAX),
    };
    // A recovering task re-attaches to its cgroup. Anything else found under the task's name is
    // a leftover of an earlier run: cleared if it holds no process, refused if it does.
    let existing = if recovering {
        TaskCgroup::open_existing(&hierarchy, &parent, task_id).ok()
    } else {
        None
    };
    let created = existing.is_none();
    let cg = match existing {
        Some(cg) => Ok(cg),
        None => TaskCgroup::clear_stale(&hierarchy, &parent, task_id)
            .and_then(|()| TaskCgroup::create(&hierarchy, &parent, task_id, &limits)),
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
            let groups = nix::unistd::getgrouplist(&cname, u.gid)
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_else(|_| vec![u.gid.as_raw()]);
            let switch = u.uid != me;
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

/// Keep a copy of the config as given and the options of this launch next to the checkpoint.
fn record_launch(
    opts: &RunOptions,
    token_file: Option<&Path>,
    ckpt_dir: &Path,
    task_id: &str,
) -> Result<(), PrepareError> {
    let (config_copy, launch) = launch_files(ckpt_dir);
    let raw = std::fs::read(&opts.config).map_err(io_err("read", &opts.config))?;
    write_atomic(&config_copy, &raw).map_err(io_err("write", &config_copy))?;
    let mut o = RunOptions {
        config: config_copy.clone(),
        task_id: Some(task_id.to_owned()),
        ..Default::default()
    };
    o.root = opts.root.clone();
    o.sandbox = opts.sandbox.clone();
    o.ports = opts.ports.clone();
    o.instance = opts.instance;
    o.hostname = opts.hostname.clone();
    o.user = opts.user.clone();
    o.no_setuid = opts.no_setuid;
    o.cgroup_parent = opts.cgroup_parent.clone();
    o.no_cgroups = opts.no_cgroups;
    o.scheduler = opts.scheduler.clone();
    let record = LaunchRecord {
        opts: o,
        scheduler_token_file: token_file.map(Path::to_path_buf),
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| PrepareError::Io {
        what: "serialize",
        path: launch.clone(),
        source: io::Error::other(e),
    })?;
    write_atomic(&launch, &json).map_err(io_err("write", &launch))
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
    File::open(dir)?.sync_all()
}

/// A free TCP port, chosen by the kernel.
fn allocate_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind(("0.0.0.0", 0))?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_launch_record_keeps_the_token_file_path_and_older_records_still_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("launch.json");
        let record = LaunchRecord {
            opts: RunOptions {
                scheduler: Some("http://s:1".into()),
                ports: vec![("http".into(), 31000)],
                ..RunOptions::default()
            },
            scheduler_token_file: Some("/r/agent/token".into()),
        };
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(r#""scheduler_token_file":"/r/agent/token""#),
            "{text}"
        );
        let back = read_launch(&path).unwrap();
        assert_eq!(back.scheduler_token_file, record.scheduler_token_file);
        assert_eq!(back.opts.scheduler.as_deref(), Some("http://s:1"));
        assert_eq!(back.opts.ports, vec![("http".to_owned(), 31000)]);

        // A record written before the token existed: the options as they were, no token file.
        let old = serde_json::to_vec(&RunOptions {
            hostname: Some("h".into()),
            ..RunOptions::default()
        })
        .unwrap();
        std::fs::write(&path, old).unwrap();
        let back = read_launch(&path).unwrap();
        assert_eq!(back.scheduler_token_file, None);
        assert_eq!(back.opts.hostname.as_deref(), Some("h"));
        assert!(read_launch(&dir.path().join("missing")).is_none());
    }

    #[test]
    fn a_failed_start_whose_cgroup_cannot_be_removed_reports_both_errors() {
        let err = PrepareError::CgroupLeft {
            failure: Box::new(PrepareError::Keeper {
                task_id: "t".into(),
                what: "fork",
                addr: KeeperAddr::Abstract(b"hearth-keeper/x/t".to_vec()),
                source: io::Error::from_raw_os_error(libc::EAGAIN),
            }),
            cgroup: "hearth/t".into(),
            cleanup: cgroup::CgroupError::RemoveDir {
                path: "/sys/fs/cgroup/pids/hearth/t".into(),
                source: io::Error::from_raw_os_error(libc::EBUSY),
            },
        };
        let text = err.to_string();
        assert!(
            text.starts_with(
                "task \"t\": cannot fork its keeper (@hearth-keeper/x/t): Resource temporarily \
                 unavailable"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "; and its cgroup hearth/t could not be removed: removing cgroup directory \
                 /sys/fs/cgroup/pids/hearth/t: Device or resource busy (os error 16)"
            ),
            "{text}"
        );
        assert_eq!(err.exit_code(), 1);
    }
}
