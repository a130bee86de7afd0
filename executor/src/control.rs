//! Commands that act on a running task from outside: `hearth kill` and `hearth tail`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_checkpoints::record::{ProcessState, TaskState};
use hearth_checkpoints::replay::TaskReplay;
use hearth_checkpoints::root::{self, Root};
use hearth_checkpoints::stream;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use thiserror::Error;

use crate::prepare::{lock_holder, lock_is_held};

#[derive(Debug, Error)]
pub enum ControlError {
    #[error(transparent)]
    Root(#[from] root::RootError),
    #[error("no task {task_id:?} under {root}")]
    NoTask { task_id: String, root: PathBuf },
    #[error(
        "no executor is running task {task_id:?} and it could not be adopted (no launch record); \
         start it again with the same `hearth run ... --task-id {task_id}`, then kill it"
    )]
    NoExecutor { task_id: String },
    #[error("cannot signal executor pid {pid} of task {task_id:?}")]
    Signal {
        task_id: String,
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("task {task_id:?} did not end within {waited:?}")]
    Timeout { task_id: String, waited: Duration },
    #[error("task {task_id:?} has no process {process:?} (it has: {known})")]
    NoProcess {
        task_id: String,
        process: String,
        known: String,
    },
    #[error("task {task_id:?} has several processes; name one: {known}")]
    WhichProcess { task_id: String, known: String },
    #[error("process {process:?} of task {task_id:?} has not started yet")]
    NotStarted { task_id: String, process: String },
    #[error("task {task_id:?} has no sandbox in its checkpoint header")]
    NoSandbox { task_id: String },
    #[error("--for: {value:?} is not a duration (use e.g. 90s, 30m, 2h, 1h30m)")]
    BadDuration { value: String },
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
}

impl ControlError {
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ControlError::NoProcess { .. }
                | ControlError::WhichProcess { .. }
                | ControlError::BadDuration { .. }
        ) || matches!(self, ControlError::Root(e) if e.is_usage())
    }
}

fn replay_of(root: &Root, task_id: &str) -> Result<TaskReplay, ControlError> {
    let path = root.runner_path(task_id);
    if !path.exists() {
        return Err(ControlError::NoTask {
            task_id: task_id.to_owned(),
            root: root.path().to_path_buf(),
        });
    }
    stream::replay_path(&path)
        .map(|r| r.replay)
        .map_err(|source| ControlError::Checkpoint { path, source })
}

/// `hearth kill`: ask the task's executor to tear the task down (SIGTERM to the executor starts
/// the escalation), and wait until the checkpoint says the task ended. Returns its final state.
pub fn kill(root: &Root, task_id: &str, wait: Duration) -> Result<TaskState, ControlError> {
    root::validate_task_id(task_id)?;
    let replay = replay_of(root, task_id)?;
    if replay.state().is_terminal() {
        return Ok(replay.state());
    }
    let lock = root.checkpoint_dir(task_id).join("executor.lock");
    if !lock_is_held(&lock) {
        return adopt_and_kill(root, task_id);
    }
    let pid = lock_holder(&lock).unwrap_or(0);
    if pid <= 0 {
        return Err(ControlError::NoExecutor {
            task_id: task_id.to_owned(),
        });
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).map_err(
        |source| ControlError::Signal {
            task_id: task_id.to_owned(),
            pid,
            source,
        },
    )?;
    wait_for_end(root, task_id, wait)
}

/// The task's executor is gone: become its executor, adopting the live processes through the
/// keeper (or recording them LOST), and tear it down at once. Needs the launch record
/// `hearth run` leaves next to the checkpoint.
fn adopt_and_kill(root: &Root, task_id: &str) -> Result<TaskState, ControlError> {
    let (config, launch) = crate::prepare::launch_files(&root.checkpoint_dir(task_id));
    let Some(record) = crate::prepare::read_launch(&launch).filter(|_| config.exists()) else {
        return Err(ControlError::NoExecutor {
            task_id: task_id.to_owned(),
        });
    };
    let mut opts = record.opts;
    opts.config = config;
    opts.task_id = Some(task_id.to_owned());
    opts.root = Some(root.path().to_path_buf());
    opts.kill_on_start = true;
    opts.json = false;
    opts.force = false;
    eprintln!("hearth: no executor is running task {task_id:?}; adopting it to kill it");
    // The token file the task was launched with (else the one the environment names).
    crate::run_with_token_file(&opts, record.scheduler_token_file.as_deref());
    let state = replay_of(root, task_id)?.state();
    if state.is_terminal() {
        Ok(state)
    } else {
        Err(ControlError::NoExecutor {
            task_id: task_id.to_owned(),
        })
    }
}

/// Wait (bounded) until the task's checkpoint reaches a terminal state, waking on every change of
/// its checkpoint directory.
pub fn wait_for_end(root: &Root, task_id: &str, wait: Duration) -> Result<TaskState, ControlError> {
    let dir = root.checkpoint_dir(task_id);
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| ControlError::Io {
        what: "watch",
        path: dir.clone(),
        source: e.into(),
    })?;
    inotify
        .add_watch(
            &dir,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CLOSE_WRITE,
        )
        .map_err(|e| ControlError::Io {
            what: "watch",
            path: dir.clone(),
            source: e.into(),
        })?;
    let deadline = Instant::now() + wait;
    loop {
        let state = replay_of(root, task_id)?.state();
        if state.is_terminal() {
            return Ok(state);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ControlError::Timeout {
                task_id: task_id.to_owned(),
                waited: wait,
            });
        }
        // Wake on a change, or at least every second (the executor may die without writing).
        wait_readable(&inotify, left.min(Duration::from_secs(1)));
        let _ = inotify.read_events();
    }
}

fn wait_readable(inotify: &Inotify, timeout: Duration) {
    use std::os::fd::AsFd;
    let mut fds = [nix::poll::PollFd::new(
        inotify.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
}

/// Options of `hearth tail`.
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub process: Option<String>,
    pub stderr: bool,
    pub follow: bool,
    /// Lines of the existing log to print first.
    pub lines: usize,
}

/// `hearth tail`: print the end of a process's current log and, with `follow`, keep printing
/// what is appended — switching to the next run's log when the process restarts — until the task
/// ends.
pub fn tail(
    root: &Root,
    task_id: &str,
    opts: &TailOptions,
    out: &mut dyn Write,
) -> Result<(), ControlError> {
    root::validate_task_id(task_id)?;
    let replay = replay_of(root, task_id)?;
    let process = pick_process(task_id, &replay, opts.process.as_deref())?;
    let stream_name = if opts.stderr { "stderr" } else { "stdout" };
    let log_path = |replay: &TaskReplay| -> Option<PathBuf> {
        let run = replay
            .processes
            .get(&process)?
            .iter()
            .rev()
            .find(|r| r.state != ProcessState::Waiting)?;
        Some(
            log_dir(replay)?
                .join(&process)
                .join(run.run.to_string())
                .join(stream_name),
        )
    };
    let mut path = log_path(&replay).ok_or_else(|| ControlError::NotStarted {
        task_id: task_id.to_owned(),
        process: process.clone(),
    })?;
    let mut file = File::open(&path).map_err(|source| ControlError::Io {
        what: "open",
        path: path.clone(),
        source,
    })?;
    let mut pos =
        start_of_last_lines(&mut file, opts.lines).map_err(|source| ControlError::Io {
            what: "read",
            path: path.clone(),
            source,
        })?;
    pos = copy_from(&mut file, pos, out).map_err(|source| ControlError::Io {
        what: "read",
        path: path.clone(),
        source,
    })?;
    if !opts.follow {
        return Ok(());
    }
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| ControlError::Io {
        what: "watch",
        path: path.clone(),
        source: e.into(),
    })?;
    let watch_dir = root.checkpoint_dir(task_id);
    for dir in [path.parent().map(Path::to_path_buf), Some(watch_dir)]
        .into_iter()
        .flatten()
    {
        let _ = inotify.add_watch(&dir, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE);
    }
    loop {
        wait_readable(&inotify, Duration::from_secs(1));
        let _ = inotify.read_events();
        pos = copy_from(&mut file, pos, out).map_err(|source| ControlError::Io {
            what: "read",
            path: path.clone(),
            source,
        })?;
        let replay = replay_of(root, task_id)?;
        if let Some(newer) = log_path(&replay)
            && newer != path
            && let Ok(f) = File::open(&newer)
        {
            if let Some(d) = newer.parent() {
                let _ = inotify.add_watch(d, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CREATE);
            }
            path = newer;
            file = f;
            pos = copy_from(&mut file, 0, out).map_err(|source| ControlError::Io {
                what: "read",
                path: path.clone(),
                source,
            })?;
        }
        if replay.state().is_terminal() {
            copy_from(&mut file, pos, out).map_err(|source| ControlError::Io {
                what: "read",
                path: path.clone(),
                source,
            })?;
            return Ok(());
        }
    }
}

fn log_dir(replay: &TaskReplay) -> Option<PathBuf> {
    let h = replay.header.as_ref()?;
    h.log_dir
        .as_ref()
        .map(PathBuf::from)
        .or_else(|| h.sandbox.as_ref().map(|s| Path::new(s).join(".logs")))
}

fn pick_process(
    task_id: &str,
    replay: &TaskReplay,
    wanted: Option<&str>,
) -> Result<String, ControlError> {
    let known = || {
        replay
            .processes
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(p) if replay.processes.contains_key(p) => Ok(p.to_owned()),
        Some(p) => Err(ControlError::NoProcess {
            task_id: task_id.to_owned(),
            process: p.to_owned(),
            known: known(),
        }),
        None if replay.processes.len() == 1 => {
            Ok(replay.processes.keys().next().cloned().unwrap_or_default())
        }
        None => Err(ControlError::WhichProcess {
            task_id: task_id.to_owned(),
            known: known(),
        }),
    }
}

/// Byte offset where the last `lines` lines of the file begin.
fn start_of_last_lines(file: &mut File, lines: usize) -> io::Result<u64> {
    let len = file.metadata()?.len();
    if lines == 0 {
        return Ok(len);
    }
    let window = len.min(64 * 1024 + 1);
    file.seek(SeekFrom::Start(len - window))?;
    let mut buf = Vec::with_capacity(window as usize);
    file.read_to_end(&mut buf)?;
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return Ok(len - window + i as u64 + 1);
            }
        }
    }
    Ok(len.saturating_sub(window))
}

fn copy_from(file: &mut File, pos: u64, out: &mut dyn Write) -> io::Result<u64> {
    file.seek(SeekFrom::Start(pos))?;
    let n = io::copy(file, out)?;
    out.flush()?;
    Ok(pos + n)
}

/// `hearth snooze`: pause a task's health checks by creating `<sandbox>/.healthchecksnooze`
/// (holding the duration, if any, which the executor counts from the file's modification time), or
/// end the pause with `clear`. The executor notices either way and records the snooze's start and
/// end in the checkpoint. Returns a sentence saying what was done.
pub fn snooze(
    root: &Root,
    task_id: &str,
    duration: Option<&str>,
    clear: bool,
) -> Result<String, ControlError> {
    root::validate_task_id(task_id)?;
    let replay = replay_of(root, task_id)?;
    let sandbox = replay
        .header
        .as_ref()
        .and_then(|h| h.sandbox.clone())
        .ok_or_else(|| ControlError::NoSandbox {
            task_id: task_id.to_owned(),
        })?;
    let path = Path::new(&sandbox).join(crate::health::snooze::SNOOZE_FILE);
    if clear {
        return match std::fs::remove_file(&path) {
            Ok(()) => Ok(format!("health checks of {task_id} resume")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(format!("health checks of {task_id} were not snoozed"))
            }
            Err(source) => Err(ControlError::Io {
                what: "remove",
                path,
                source,
            }),
        };
    }
    let content = match duration {
        Some(d) => {
            if crate::health::snooze::parse_duration(d).is_none() {
                return Err(ControlError::BadDuration {
                    value: d.to_owned(),
                });
            }
            format!("{}\n", d.trim())
        }
        None => String::new(),
    };
    crate::prepare::write_atomic(&path, content.as_bytes()).map_err(|source| ControlError::Io {
        what: "write",
        path: path.clone(),
        source,
    })?;
    Ok(match duration {
        Some(d) => format!("health checks of {task_id} snoozed for {}", d.trim()),
        None => {
            format!("health checks of {task_id} snoozed until `hearth snooze {task_id} --clear`")
        }
    })
}
