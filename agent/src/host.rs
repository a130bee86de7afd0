//! The agent's one seam to the operating system ([`Host`]): probing tasks on disk, its own
//! records, and starting `hearth run` / `hearth kill` as detached children. [`RealHost`] does it
//! for real; unit tests of [`crate::agent::Agent`] use a fake.
//!
//! # The agent's files
//!
//! ```text
//! <root>/agent/tasks/<task_id>.json    the assignment (written before the launch; the record a
//!                                      restarted agent re-adopts the task from)
//! <root>/agent/configs/<task_id>.json  the job JSON handed to `hearth run`
//! <root>/agent/logs/<task_id>.log      stdout and stderr of every `hearth run`/`kill` of the task
//! <root>/agent/token                   the agent token for the executors' reports (mode 0600)
//! ```
//!
//! # Children
//!
//! Each child is started with `posix_spawn` and `POSIX_SPAWN_SETSID`: it leads its own session
//! and process group, so no signal meant for the agent (its group, its terminal) reaches it and it
//! outlives the agent. Its stdin is `/dev/null` and its stdout and stderr append to the task's log
//! file — never a pipe, which would break (SIGPIPE) when the agent dies. Signals the agent's
//! runtime ignores or handles are reset to their defaults in the child, and its mask is emptied.
//! The agent waits for each child through a pidfd (no thread per child) and reaps it; the exit is
//! sent to the agent's loop as a [`ChildExit`].

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hearth_checkpoints::root::{self, Root};
use hearth_checkpoints::stream;
use hearth_executor::prepare::{lock_is_held, write_atomic};
use hearth_executor::report::{TOKEN_FILE_ENV, terminal_status};
use hearth_scheduler::wire::Assignment;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::AgentError;
use crate::book::{Children, Disk, RunReason};

/// What the agent needs from the machine.
pub trait Host {
    /// The task's disk state (see [`Disk`]; lock first, then stream).
    fn probe(&self, task_id: &str) -> Disk;
    /// Which of the agent's children for the task are alive.
    fn children(&self, task_id: &str) -> Children;
    /// The task ids in the root's `tasks/active`.
    fn active_tasks(&self) -> Vec<String>;
    /// The assignments recorded by this or an earlier agent.
    fn records(&self) -> Vec<Assignment>;
    /// Record an assignment (durably, before it is launched).
    fn persist(&mut self, assignment: &Assignment) -> Result<(), AgentError>;
    /// Remove the record of a task (its checkpoint, sandbox and log stay).
    fn forget(&mut self, task_id: &str);
    /// Start `hearth run` for the task.
    fn start_run(&mut self, assignment: &Assignment, why: RunReason) -> Result<(), AgentError>;
    /// Start `hearth kill` for the task.
    fn start_kill(&mut self, task_id: &str) -> Result<(), AgentError>;
}

/// Which command a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    Run,
    Kill,
}

/// A child of the agent has ended (and is reaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildExit {
    pub pid: i32,
    pub task_id: String,
    pub kind: ChildKind,
    /// Its exit code, or `None` when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// The paths of the agent's own files under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentDir {
    dir: PathBuf,
}

impl AgentDir {
    pub fn new(root: &Path) -> AgentDir {
        AgentDir {
            dir: root.join("agent"),
        }
    }
    pub fn tasks(&self) -> PathBuf {
        self.dir.join("tasks")
    }
    pub fn record(&self, task_id: &str) -> PathBuf {
        self.tasks().join(format!("{task_id}.json"))
    }
    pub fn config(&self, task_id: &str) -> PathBuf {
        self.dir.join("configs").join(format!("{task_id}.json"))
    }
    pub fn log(&self, task_id: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{task_id}.log"))
    }
    pub fn token(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// Create the directories (mode 0700: configs and logs may hold secrets of the jobs).
    pub fn create(&self) -> Result<(), AgentError> {
        for d in [
            self.dir.clone(),
            self.tasks(),
            self.dir.join("configs"),
            self.dir.join("logs"),
        ] {
            std::fs::create_dir_all(&d).map_err(io_err("create", &d))?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err("chmod", &d))?;
        }
        Ok(())
    }

    /// Write the token the executors read (mode 0600), or remove a stale one.
    pub fn write_token(&self, token: Option<&str>) -> Result<Option<PathBuf>, AgentError> {
        let path = self.token();
        match token {
            Some(t) => {
                // Created 0600 before the token is written into it.
                let tmp = self.dir.join(".token.tmp");
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io_err("create", &tmp))?;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err("chmod", &tmp))?;
                writeln!(f, "{t}")
                    .and_then(|()| f.sync_all())
                    .map_err(io_err("write", &tmp))?;
                std::fs::rename(&tmp, &path).map_err(io_err("rename into", &path))?;
                Ok(Some(path))
            }
            None => {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove", &path)(e)),
                }
                Ok(None)
            }
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AgentError + 'a {
    move |source| AgentError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Read the task's disk state: lock, then stream.
pub fn probe_task(root: &Root, task_id: &str) -> Disk {
    if lock_is_held(&root.checkpoint_dir(task_id).join("executor.lock")) {
        return Disk::Live;
    }
    let runner = root.runner_path(task_id);
    if !runner.exists() {
        return Disk::Absent;
    }
    match stream::replay_path(&runner) {
        Ok(r) => match terminal_status(r.replay.state()) {
            Some((status, _)) => Disk::Ended {
                status,
                pending: r
                    .replay
                    .reports
                    .last()
                    .is_some_and(|last| last.seq > r.replay.reports_acked),
            },
            None => Disk::Orphaned,
        },
        // Unreadable: a new executor will say why (in the log) and the agent gives up on it
        // after its retries.
        Err(_) => Disk::Orphaned,
    }
}

/// What [`RealHost`] starts its children with.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub root: PathBuf,
    pub dir: AgentDir,
    pub hearth_bin: PathBuf,
    pub scheduler: String,
    pub hostname: String,
    pub extra_run_args: Vec<String>,
    /// Set as [`TOKEN_FILE_ENV`] in every child's environment.
    pub token_file: Option<PathBuf>,
}

impl Launcher {
    /// The arguments of `hearth run` for an assignment (after the program name).
    pub fn run_args(&self, a: &Assignment) -> Vec<String> {
        let mut args = vec![
            "run".to_owned(),
            path_arg(&self.dir.config(&a.task_id)),
            "--root".to_owned(),
            path_arg(&self.root),
            "--task-id".to_owned(),
            a.task_id.clone(),
            "--instance".to_owned(),
            a.instance.to_string(),
            "--hostname".to_owned(),
            self.hostname.clone(),
        ];
        for (name, port) in &a.ports {
            args.push("--port".to_owned());
            args.push(format!("{name}={port}"));
        }
        args.push("--scheduler".to_owned());
        args.push(self.scheduler.clone());
        args.extend(self.extra_run_args.iter().cloned());
        args
    }

    /// The program and arguments that do `hearth ARGS`: a `hearth run` goes straight to
    /// `hearth-executor` when it is installed beside `hearth` (what `hearth run` would hand over
    /// to, with one exec and one argument parse fewer per task start); the rest is `hearth`.
    pub fn program(&self, args: &[String]) -> (PathBuf, Vec<String>) {
        let executor = self.hearth_bin.with_file_name(hearth_executor::EXECUTABLE);
        if args.first().is_some_and(|a| a == "run") && executor.is_file() {
            let mut full = vec![hearth_executor::expect_version_arg()];
            full.extend_from_slice(args);
            return (executor, full);
        }
        (self.hearth_bin.clone(), args.to_vec())
    }

    /// The arguments of `hearth kill` for a task.
    pub fn kill_args(&self, task_id: &str) -> Vec<String> {
        vec![
            "kill".to_owned(),
            task_id.to_owned(),
            "--root".to_owned(),
            path_arg(&self.root),
        ]
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The real machine.
#[derive(Debug)]
pub struct RealHost {
    root: Root,
    launcher: Launcher,
    /// The agent's live children: pid → (task, kind).
    children: HashMap<i32, (String, ChildKind)>,
    exits: mpsc::UnboundedSender<ChildExit>,
}

impl RealHost {
    /// `exits` receives every child's end. Must be called inside a tokio runtime.
    pub fn new(launcher: Launcher, exits: mpsc::UnboundedSender<ChildExit>) -> RealHost {
        RealHost {
            root: Root::new(launcher.root.clone()),
            launcher,
            children: HashMap::new(),
            exits,
        }
    }

    /// A child's end arrived: it is no longer alive.
    pub fn reaped(&mut self, pid: i32) {
        self.children.remove(&pid);
    }

    fn spawn(&mut self, task_id: &str, kind: ChildKind, args: &[String]) -> Result<(), AgentError> {
        let log_path = self.launcher.dir.log(task_id);
        let spawn_err = |source: io::Error| AgentError::Spawn {
            task_id: task_id.to_owned(),
            command: args.first().cloned().unwrap_or_default(),
            source,
        };
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        let (program, args) = self.launcher.program(args);
        let _ = writeln!(
            log,
            "hearth agent: {} (at {} ms since the epoch)",
            shell_words(&program, &args),
            hearth_executor::prepare::now_ms()
        );
        let pid = spawn_detached(&program, &args, &log, self.launcher.token_file.as_deref())
            .map_err(spawn_err)?;
        self.children.insert(pid, (task_id.to_owned(), kind));
        let exit = ChildExit {
            pid,
            task_id: task_id.to_owned(),
            kind,
            code: None,
            signal: None,
        };
        watch_child(exit, self.exits.clone());
        Ok(())
    }
}

impl Host for RealHost {
    fn probe(&self, task_id: &str) -> Disk {
        probe_task(&self.root, task_id)
    }

    fn children(&self, task_id: &str) -> Children {
        let mut c = Children::default();
        for (t, kind) in self.children.values() {
            if t == task_id {
                match kind {
                    ChildKind::Run => c.run = true,
                    ChildKind::Kill => c.kill = true,
                }
            }
        }
        c
    }

    fn active_tasks(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.root.tasks_active_dir()) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.') && root::validate_task_id(n).is_ok())
            // Copied to `finished` before it leaves `active`: such a task has ended.
            .filter(|n| {
                !self
                    .root
                    .task_config_path(n, root::TaskPlace::Finished)
                    .exists()
            })
            .collect()
    }

    fn records(&self) -> Vec<Assignment> {
        let dir = self.launcher.dir.tasks();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension() != Some(OsStr::new("json"))
                || e.file_name().as_bytes().starts_with(b".")
            {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Assignment>(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(a) if root::validate_task_id(&a.task_id).is_ok() => out.push(a),
                Ok(a) => tracing::warn!(path = %path.display(), task_id = %a.task_id,
                    "skipping an agent record with an invalid task id"),
                Err(why) => tracing::warn!(path = %path.display(), %why,
                    "skipping an unreadable agent record"),
            }
        }
        out
    }

    fn persist(&mut self, a: &Assignment) -> Result<(), AgentError> {
        root::validate_task_id(&a.task_id).map_err(|source| AgentError::Assignment {
            task_id: a.task_id.clone(),
            reason: source.to_string(),
        })?;
        let config = self.launcher.dir.config(&a.task_id);
        let bytes = to_json(&a.config, &config)?;
        write_atomic(&config, &bytes).map_err(io_err("write", &config))?;
        let record = self.launcher.dir.record(&a.task_id);
        let bytes = to_json(a, &record)?;
        write_atomic(&record, &bytes).map_err(io_err("write", &record))
    }

    fn forget(&mut self, task_id: &str) {
        for path in [
            self.launcher.dir.record(task_id),
            self.launcher.dir.config(task_id),
        ] {
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an agent record");
            }
        }
    }

    fn start_run(&mut self, a: &Assignment, why: RunReason) -> Result<(), AgentError> {
        // A config lost with its directory is written again from the record.
        let config = self.launcher.dir.config(&a.task_id);
        if !config.exists() {
            self.persist(a)?;
        }
        tracing::info!(task_id = %a.task_id, ?why, "starting hearth run");
        let args = self.launcher.run_args(a);
        self.spawn(&a.task_id, ChildKind::Run, &args)
    }

    fn start_kill(&mut self, task_id: &str) -> Result<(), AgentError> {
        tracing::info!(%task_id, "starting hearth kill");
        let args = self.launcher.kill_args(task_id);
        self.spawn(task_id, ChildKind::Kill, &args)
    }
}

fn to_json<T: serde::Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, AgentError> {
    serde_json::to_vec_pretty(value).map_err(|e| AgentError::Io {
        what: "encode",
        path: path.to_path_buf(),
        source: io::Error::other(e),
    })
}

/// A command line for the log (arguments with spaces quoted).
fn shell_words(bin: &Path, args: &[String]) -> String {
    std::iter::once(bin.display().to_string())
        .chain(args.iter().map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Signals reset to their default action in a child (the Rust runtime ignores SIGPIPE; tokio
/// may have handlers for the others, which `exec` resets anyway, but not ignored ones).
const DEFAULT_SIGNALS: [Signal; 10] = [
    Signal::SIGPIPE,
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGCHLD,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGXFSZ,
];

/// Start `bin args...` in a new session, stdin from `/dev/null`, stdout and stderr appended to
/// `log`, with the agent's environment (plus [`TOKEN_FILE_ENV`] when `token_file` is given).
/// Returns the child's pid.
pub fn spawn_detached(
    bin: &Path,
    args: &[String],
    log: &File,
    token_file: Option<&Path>,
) -> io::Result<i32> {
    let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "an argument holds a NUL byte");
    let program = CString::new(bin.as_os_str().as_bytes()).map_err(nul)?;
    let mut argv = vec![program.clone()];
    for a in args {
        argv.push(CString::new(a.as_bytes()).map_err(nul)?);
    }
    let mut envp = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k == TOKEN_FILE_ENV {
            continue;
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        if let Ok(c) = CString::new(kv) {
            envp.push(c);
        }
    }
    if let Some(f) = token_file {
        let mut kv = format!("{TOKEN_FILE_ENV}=").into_bytes();
        kv.extend_from_slice(f.as_os_str().as_bytes());
        envp.push(CString::new(kv).map_err(nul)?);
    }
    let devnull = File::open("/dev/null")?;
    let mut actions = PosixSpawnFileActions::init()?;
    actions.add_dup2(devnull.as_raw_fd(), 0)?;
    actions.add_dup2(log.as_raw_fd(), 1)?;
    actions.add_dup2(log.as_raw_fd(), 2)?;
    let mut attr = PosixSpawnAttr::init()?;
    let setsid = PosixSpawnFlags::from_bits_retain(libc::c_int::from(libc::POSIX_SPAWN_SETSID));
    attr.set_flags(
        setsid | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    attr.set_sigmask(&SigSet::empty())?;
    let mut defaults = SigSet::empty();
    for s in DEFAULT_SIGNALS {
        defaults.add(s);
    }
    attr.set_sigdefault(&defaults)?;
    let pid = posix_spawn(program.as_c_str(), &actions, &attr, &argv, &envp)?;
    Ok(pid.as_raw())
}

/// Wait for the child `exit.pid` in a tokio task (through a pidfd), reap it, and send its end.
fn watch_child(mut exit: ChildExit, tx: mpsc::UnboundedSender<ChildExit>) {
    tokio::spawn(async move {
        let status = wait_child(exit.pid).await;
        match status {
            Ok((code, signal)) => {
                exit.code = code;
                exit.signal = signal;
            }
            Err(e) => {
                tracing::warn!(pid = exit.pid, task_id = %exit.task_id, error = %e,
                    "cannot wait for a child of the agent; counting it as ended");
            }
        }
        let _ = tx.send(exit);
    });
}

async fn wait_child(pid: i32) -> io::Result<(Option<i32>, Option<i32>)> {
    let raw = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    let fd: OwnedFd = match rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        // A kernel without pidfds (before 5.3): one blocking thread waits for this child.
        Err(rustix::io::Errno::NOSYS) => {
            return tokio::task::spawn_blocking(move || wait_blocking(pid))
                .await
                .map_err(io::Error::other)?;
        }
        Err(e) => return Err(e.into()),
    };
    // `with_interest` is deprecated because a caller *could* hand it an object whose raw fd
    // changes or closes while registered. An `OwnedFd` owned by the `AsyncFd` cannot: the fd stays
    // open and the same until the `AsyncFd` drops it. The sound replacement is `unsafe`, which
    // this crate must not use.
    #[allow(deprecated)]
    let fd = AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)?;
    loop {
        let mut ready = fd.readable().await?;
        match rustix::process::waitid(
            rustix::process::WaitId::PidFd(fd.get_ref().as_fd()),
            rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOHANG,
        ) {
            Ok(Some(status)) => return Ok((status.exit_status(), status.terminating_signal())),
            Ok(None) => ready.clear_ready(),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn wait_blocking(pid: i32) -> io::Result<(Option<i32>, Option<i32>)> {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok((Some(code), None)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok((None, Some(sig as i32))),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn launcher(root: &Path) -> Launcher {
        Launcher {
            root: root.to_path_buf(),
            dir: AgentDir::new(root),
            hearth_bin: PathBuf::from("/usr/bin/hearth"),
            scheduler: "http://10.0.0.1:8081".into(),
            hostname: "host-a".into(),
            extra_run_args: vec!["--no-setuid".into()],
            token_file: None,
        }
    }

    #[test]
    fn hearth_run_gets_the_assignment_as_the_team_contract_says() {
        let l = launcher(Path::new("/r"));
        let a = Assignment {
            task_id: "root-test-j-0-1-abcd".into(),
            job: "c/root/test/j".parse().unwrap(),
            instance: 3,
            config: serde_json::json!({}),
            ports: BTreeMap::from([("health".to_owned(), 31001), ("http".to_owned(), 31000)]),
        };
        assert_eq!(
            l.run_args(&a).join(" "),
            "run /r/agent/configs/root-test-j-0-1-abcd.json --root /r --task-id \
             root-test-j-0-1-abcd --instance 3 --hostname host-a --port health=31001 \
             --port http=31000 --scheduler http://10.0.0.1:8081 --no-setuid"
        );
        assert_eq!(l.kill_args("t").join(" "), "kill t --root /r");
    }

    #[test]
    fn a_task_starts_as_hearth_executor_when_it_is_installed_beside_hearth() {
        let tmp = tempfile::tempdir().unwrap();
        let mut l = launcher(Path::new("/r"));
        l.hearth_bin = tmp.path().join("hearth");
        let run = vec!["run".to_owned(), "c.json".to_owned()];
        let kill = l.kill_args("t");
        // Not installed: everything is `hearth`.
        assert_eq!(l.program(&run), (l.hearth_bin.clone(), run.clone()));
        std::fs::write(tmp.path().join("hearth-executor"), "").unwrap();
        let (program, args) = l.program(&run);
        assert_eq!(program, tmp.path().join("hearth-executor"));
        assert_eq!(
            args,
            [
                &format!("--expect-version={}", env!("CARGO_PKG_VERSION")),
                "run",
                "c.json"
            ]
        );
        assert_eq!(l.program(&kill), (l.hearth_bin.clone(), kill.clone()));
    }

    #[test]
    fn the_token_file_is_private_and_removed_when_no_token_is_given() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AgentDir::new(tmp.path());
        dir.create().unwrap();
        let path = dir.write_token(Some("s3cret")).unwrap().unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            hearth_executor::report::read_token_file(&path).unwrap(),
            "s3cret"
        );
        assert_eq!(dir.write_token(None).unwrap(), None);
        assert!(!path.exists());
        assert_eq!(dir.write_token(None).unwrap(), None, "idempotent");
    }

    #[test]
    fn a_task_without_a_stream_is_absent() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::new(tmp.path());
        assert_eq!(probe_task(&root, "nothing-here"), Disk::Absent);
        // A checkpoint directory with only the lock file (the executor died right after
        // taking it) is still absent: nothing was prepared.
        std::fs::create_dir_all(root.checkpoint_dir("t")).unwrap();
        std::fs::write(root.checkpoint_dir("t").join("executor.lock"), "1\n").unwrap();
        assert_eq!(probe_task(&root, "t"), Disk::Absent);
    }

    #[test]
    fn blocking_wait_reaps_and_reports_the_exit() {
        let tmp = tempfile::tempdir().unwrap();
        let log = File::create(tmp.path().join("log")).unwrap();
        let args = vec!["-c".to_owned(), "exit 3".to_owned()];
        let pid = spawn_detached(Path::new("/bin/sh"), &args, &log, None).unwrap();
        assert_eq!(wait_blocking(pid).unwrap(), (Some(3), None));
        let args = vec!["-c".to_owned(), "kill -9 $$".to_owned()];
        let pid = spawn_detached(Path::new("/bin/sh"), &args, &log, None).unwrap();
        assert_eq!(wait_blocking(pid).unwrap(), (None, Some(9)));
    }

    #[test]
    fn assignments_are_recorded_re_read_and_forgotten_keeping_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let l = launcher(tmp.path());
        l.dir.create().unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut host = RealHost::new(l.clone(), tx);
        let a = Assignment {
            task_id: "root-test-j-0-1-abcd".into(),
            job: "c/root/test/j".parse().unwrap(),
            instance: 1,
            config: serde_json::json!({"task": {"name": "j"}}),
            ports: BTreeMap::from([("http".to_owned(), 31000)]),
        };
        host.persist(&a).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(l.dir.config(&a.task_id)).unwrap()).unwrap();
        assert_eq!(config, a.config, "hearth run gets the job JSON as assigned");
        std::fs::write(l.dir.tasks().join("junk.json"), "{").unwrap();
        std::fs::write(l.dir.log(&a.task_id), "log").unwrap();
        assert_eq!(
            host.records(),
            vec![a.clone()],
            "unreadable records are skipped"
        );
        host.forget(&a.task_id);
        assert!(host.records().is_empty());
        assert!(!l.dir.config(&a.task_id).exists());
        assert!(l.dir.log(&a.task_id).exists(), "the log stays");
        let bad = Assignment {
            task_id: "../escape".into(),
            ..a
        };
        assert!(matches!(
            host.persist(&bad),
            Err(AgentError::Assignment { .. })
        ));
    }

    #[test]
    fn active_tasks_are_those_listed_active_and_not_finished() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::new(tmp.path());
        for (id, place) in [
            ("a", root::TaskPlace::Active),
            ("b", root::TaskPlace::Active),
            ("b", root::TaskPlace::Finished),
            ("c", root::TaskPlace::Finished),
        ] {
            let p = root.task_config_path(id, place);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "{}").unwrap();
        }
        std::fs::write(root.tasks_active_dir().join(".a.tmp"), "").unwrap();
        let (tx, _rx) = mpsc::unbounded_channel();
        let host = RealHost::new(launcher(tmp.path()), tx);
        assert_eq!(host.active_tasks(), vec!["a".to_owned()]);
    }

    #[test]
    fn a_held_lock_means_live() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Root::new(tmp.path());
        std::fs::create_dir_all(root.checkpoint_dir("t")).unwrap();
        let lock = File::create(root.checkpoint_dir("t").join("executor.lock")).unwrap();
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        assert_eq!(probe_task(&root, "t"), Disk::Live);
        drop(lock);
        assert_eq!(probe_task(&root, "t"), Disk::Absent);
    }

    #[tokio::test]
    async fn a_detached_child_leads_its_own_session_logs_to_the_file_and_is_reaped() {
        let tmp = tempfile::tempdir().unwrap();
        let log_path = tmp.path().join("x.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let token = tmp.path().join("tok");
        let args: Vec<String> = vec![
            "-c".into(),
            format!(
                "echo sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$ tok=${TOKEN_FILE_ENV}; echo err >&2; exit 7"
            ),
        ];
        let pid = spawn_detached(Path::new("/bin/sh"), &args, &log, Some(&token)).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        watch_child(
            ChildExit {
                pid,
                task_id: "t".into(),
                kind: ChildKind::Run,
                code: None,
                signal: None,
            },
            tx,
        );
        let exit = tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit.code, Some(7));
        let text = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            text.contains(&format!("sid={pid} pid={pid}")),
            "the child leads its session: {text}"
        );
        assert!(text.contains(&format!("tok={}", token.display())), "{text}");
        assert!(text.contains("err"), "stderr goes to the log too: {text}");
        // Reaped: no zombie is left behind.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                !stat.contains(") Z ")
            }
        );
    }
}
