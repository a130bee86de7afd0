//! The layout of a checkpoint root, and finding and loading the tasks in it.
//!
//! A root (Hearth's, or a legacy Thermos one: both have the same shape) looks like this:
//!
//! ```text
//! <root>/tasks/active/<task_id>        the bound task config (JSON) while the task runs
//! <root>/tasks/finished/<task_id>      ... moved here once the task is terminal
//! <root>/checkpoints/<task_id>/runner  the executor's record stream (Thermos: the runner's)
//! <root>/checkpoints/<task_id>/keeper  the keeper's own stream of process exits (Hearth only)
//! ```
//!
//! Thermos also left `checkpoints/<task_id>/coordinator.<process>` streams; its runner merged them
//! into `runner`, so the runner stream alone is the full history and they are not read here.
//!
//! The framing of a stream (Hearth or Thermos) is detected by [`crate::stream::replay_path`];
//! nothing here depends on it. The executor, the observer and the `hearth` CLI all go through
//! [`Root`], so the layout is written down in one place.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use regex::Regex;

use crate::condition::{Condition, read_condition};
use crate::record::Record;
use crate::stream::{CheckpointError, Replayed, StreamEnd, replay_path};

/// Where Hearth keeps its root when it runs as root and no `--root` is given.
pub const SYSTEM_ROOT: &str = "/var/run/hearth";

/// Longest task id accepted, in bytes. Aurora's ids are well under 200; 255 is the longest file
/// name most Linux file systems allow, and a task id is used as one.
pub const MAX_TASK_ID_LEN: usize = 255;

/// Problems finding or loading tasks in a checkpoint root.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// The task id cannot name a file in the root.
    #[error("invalid task id {task_id:?}: {problem}")]
    InvalidTaskId {
        task_id: String,
        problem: &'static str,
    },
    /// No `--root` was given and no default applies.
    #[error(
        "no default checkpoint root: not running as root (which uses {SYSTEM_ROOT}) and \
         XDG_RUNTIME_DIR is not set; give the root explicitly"
    )]
    NoDefaultRoot,
    /// The root, or one of its directories, could not be read.
    #[error("cannot read directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Neither a checkpoint directory nor a task config exists for the task.
    #[error("no task {task_id:?} in checkpoint root {root}")]
    TaskNotFound { task_id: String, root: PathBuf },
    /// The task is known (it has a config or a checkpoint directory) but has no runner stream.
    #[error("task {task_id:?} has no checkpoint stream at {path}")]
    NoRunnerStream { task_id: String, path: PathBuf },
    /// A path given to read directly does not exist or cannot be examined.
    #[error("cannot read {path}")]
    BadPath {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The stream exists but could not be opened or read. (The source names the path.)
    #[error("cannot replay the checkpoint stream")]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: CheckpointError,
    },
}

impl RootError {
    /// Whether the error is the caller's mistake (a malformed argument) rather than a problem
    /// found on disk. The CLI maps the first to exit code 2, the second to 1.
    pub fn is_usage(&self) -> bool {
        matches!(self, RootError::InvalidTaskId { .. })
    }
}

/// Which of the two task config directories a task is listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPlace {
    /// `tasks/active`: the task has not reached a terminal state.
    Active,
    /// `tasks/finished`: the task is terminal.
    Finished,
}

/// One task found by [`Root::list_tasks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    pub task_id: String,
    /// True when the task's config is in `tasks/active` and not (yet) in `tasks/finished`. A task
    /// known only by its checkpoint directory is reported as not active: only its replayed
    /// stream can say more.
    pub active: bool,
}

/// A task's replayed checkpoint stream, and where it came from.
#[derive(Debug)]
pub struct LoadedTask {
    /// The task id: the directory name in a root, or, for a stream read by path, the id in its
    /// header (falling back to the directory or file name).
    pub task_id: String,
    /// The runner stream, replayed (and, later, merged with the keeper's stream).
    pub replayed: Replayed,
    /// The runner stream that was read.
    pub runner_path: PathBuf,
    /// Where the task's config was found, when the task was loaded from a root.
    pub place: Option<TaskPlace>,
    /// What its executor says is wrong right now (see [`crate::condition`]), if anything.
    pub condition: Option<Condition>,
}

impl LoadedTask {
    /// Whether the stream ended in corruption or an invalid record, rather than cleanly or with
    /// the torn tail a crash leaves behind. The replayed prefix is still usable either way.
    pub fn stream_damaged(&self) -> bool {
        matches!(
            self.replayed.end,
            StreamEnd::Corrupt { .. } | StreamEnd::Invalid { .. }
        )
    }
}

/// The tasks of a root that [`Root::load_tasks`] could load, and the errors of those it could
/// not.
#[derive(Debug, Default)]
pub struct LoadedTasks {
    pub tasks: Vec<LoadedTask>,
    pub errors: Vec<RootError>,
}

impl LoadedTasks {
    /// Whether every task was loaded and no stream is damaged (torn tails are fine).
    pub fn all_intact(&self) -> bool {
        self.errors.is_empty() && !self.tasks.iter().any(LoadedTask::stream_damaged)
    }
}

/// A checkpoint root directory. Constructing one touches nothing on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    path: PathBuf,
}

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Root { path: path.into() }
    }

    /// The root given by `--root`, or the default one (see [`default_root`]).
    pub fn given_or_default(path: Option<&Path>) -> Result<Self, RootError> {
        match path {
            Some(p) => Ok(Root::new(p)),
            None => default_root().map(Root::new),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<root>/tasks/active`.
    pub fn tasks_active_dir(&self) -> PathBuf {
        self.path.join("tasks").join("active")
    }

    /// `<root>/tasks/finished`.
    pub fn tasks_finished_dir(&self) -> PathBuf {
        self.path.join("tasks").join("finished")
    }

    /// `<root>/tasks/{active,finished}/<task_id>`. The id must have passed [`validate_task_id`].
    pub fn task_config_path(&self, task_id: &str, place: TaskPlace) -> PathBuf {
        match place {
            TaskPlace::Active => self.tasks_active_dir(),
            TaskPlace::Finished => self.tasks_finished_dir(),
        }
        .join(task_id)
    }

    /// `<root>/checkpoints`.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    /// `<root>/checkpoints/<task_id>`. The id must have passed [`validate_task_id`].
    pub fn checkpoint_dir(&self, task_id: &str) -> PathBuf {
        self.checkpoints_dir().join(task_id)
    }

    /// `<root>/checkpoints/<task_id>/runner`: the executor's stream.
    pub fn runner_path(&self, task_id: &str) -> PathBuf {
        self.checkpoint_dir(task_id).join(RUNNER_FILE)
    }

    /// `<root>/checkpoints/<task_id>/keeper`: the keeper's stream of process exits.
    pub fn keeper_path(&self, task_id: &str) -> PathBuf {
        self.checkpoint_dir(task_id).join(KEEPER_FILE)
    }

    /// Where the task's config is: `tasks/finished` wins over `tasks/active`, since a task is
    /// copied to `finished` before it is removed from `active`.
    pub fn task_place(&self, task_id: &str) -> Option<TaskPlace> {
        [TaskPlace::Finished, TaskPlace::Active]
            .into_iter()
            .find(|&place| self.task_config_path(task_id, place).exists())
    }

    /// Every task of the root, sorted by id: those with a config in `tasks/active` or
    /// `tasks/finished`, and those with only a directory under `checkpoints/`. Missing
    /// subdirectories count as empty; a missing root is an error. Names that are not UTF-8 or not
    /// valid task ids are skipped: they cannot have been written by an executor.
    pub fn list_tasks(&self) -> Result<Vec<TaskEntry>, RootError> {
        std::fs::metadata(&self.path).map_err(|source| RootError::ReadDir {
            path: self.path.clone(),
            source,
        })?;
        let mut tasks: BTreeMap<String, bool> = BTreeMap::new();
        for name in dir_names(&self.checkpoints_dir())? {
            tasks.entry(name).or_insert(false);
        }
        for name in dir_names(&self.tasks_active_dir())? {
            tasks.insert(name, true);
        }
        for name in dir_names(&self.tasks_finished_dir())? {
            tasks.insert(name, false);
        }
        Ok(tasks
            .into_iter()
            .map(|(task_id, active)| TaskEntry { task_id, active })
            .collect())
    }

    /// Replay the task's runner stream (merged with its keeper stream, see
    /// [`merge_keeper_stream`]). A torn or corrupt stream is not an error: the replayed prefix is
    /// returned and [`Replayed::end`] says where and why it stopped.
    pub fn load_task(&self, task_id: &str) -> Result<LoadedTask, RootError> {
        validate_task_id(task_id)?;
        let place = self.task_place(task_id);
        let runner_path = self.runner_path(task_id);
        if !runner_path.exists() {
            if place.is_none() && !self.checkpoint_dir(task_id).exists() {
                return Err(RootError::TaskNotFound {
                    task_id: task_id.to_owned(),
                    root: self.path.clone(),
                });
            }
            return Err(RootError::NoRunnerStream {
                task_id: task_id.to_owned(),
                path: runner_path,
            });
        }
        let replayed = read_stream(&runner_path)?;
        let replayed = merge_keeper_stream(replayed, &self.keeper_path(task_id))?;
        Ok(LoadedTask {
            task_id: task_id.to_owned(),
            replayed,
            runner_path,
            place,
            condition: read_condition(&self.checkpoint_dir(task_id)),
        })
    }

    /// Load every task whose id `filter` matches (anywhere in the id, as `grep` does), or every
    /// task. A task that cannot be loaded does not stop the others: its error is collected.
    pub fn load_tasks(&self, filter: Option<&Regex>) -> Result<LoadedTasks, RootError> {
        let mut loaded = LoadedTasks::default();
        for entry in self.list_tasks()? {
            if filter.is_some_and(|re| !re.is_match(&entry.task_id)) {
                continue;
            }
            match self.load_task(&entry.task_id) {
                Ok(task) => loaded.tasks.push(task),
                Err(e) => loaded.errors.push(e),
            }
        }
        Ok(loaded)
    }
}

const RUNNER_FILE: &str = "runner";
const KEEPER_FILE: &str = "keeper";

/// The root used when none is given: [`SYSTEM_ROOT`] when running as root, else
/// `$XDG_RUNTIME_DIR/hearth`, else [`RootError::NoDefaultRoot`].
pub fn default_root() -> Result<PathBuf, RootError> {
    default_root_for(
        rustix::process::geteuid().is_root(),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

fn default_root_for(
    is_root: bool,
    xdg_runtime_dir: Option<OsString>,
) -> Result<PathBuf, RootError> {
    if is_root {
        return Ok(PathBuf::from(SYSTEM_ROOT));
    }
    match xdg_runtime_dir {
        // XDG says a relative value must be ignored.
        Some(dir) if Path::new(&dir).is_absolute() => Ok(Path::new(&dir).join("hearth")),
        _ => Err(RootError::NoDefaultRoot),
    }
}

/// Check that `task_id` can name one file in a root: non-empty, at most [`MAX_TASK_ID_LEN`]
/// bytes, no `/` or NUL, and not `.` or `..`.
pub fn validate_task_id(task_id: &str) -> Result<(), RootError> {
    let problem = if task_id.is_empty() {
        Some("empty")
    } else if task_id.len() > MAX_TASK_ID_LEN {
        Some("longer than 255 bytes")
    } else if task_id.contains('/') {
        Some("contains '/'")
    } else if task_id.contains('\0') {
        Some("contains a NUL byte")
    } else if task_id == "." || task_id == ".." {
        Some("is '.' or '..'")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(RootError::InvalidTaskId {
            task_id: task_id.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Load what `target` names, for `hearth inspect`.
///
/// With `root` given, `target` is always a task id in that root. Without it, a `target` that
/// exists on disk is read directly (a stream file, or a task's checkpoint directory holding
/// `runner`); anything else is a task id in the default root.
pub fn load_target(target: &str, root: Option<&Path>) -> Result<LoadedTask, RootError> {
    if root.is_none() && Path::new(target).exists() {
        return load_path(Path::new(target));
    }
    validate_task_id(target)?;
    Root::given_or_default(root)?.load_task(target)
}

/// Read a stream file, or the `runner` stream of a task checkpoint directory, outside any root.
pub fn load_path(path: &Path) -> Result<LoadedTask, RootError> {
    let meta = std::fs::metadata(path).map_err(|source| RootError::BadPath {
        path: path.to_owned(),
        source,
    })?;
    let (runner_path, dir) = if meta.is_dir() {
        (path.join(RUNNER_FILE), Some(path))
    } else if path.file_name().is_some_and(|n| n == RUNNER_FILE) {
        (path.to_owned(), path.parent())
    } else {
        (path.to_owned(), None)
    };
    let mut replayed = read_stream(&runner_path)?;
    if let Some(dir) = dir {
        replayed = merge_keeper_stream(replayed, &dir.join(KEEPER_FILE))?;
    }
    let from_header = replayed
        .replay
        .header
        .as_ref()
        .map(|h| h.task_id.clone())
        .filter(|id| !id.is_empty());
    let from_name = || {
        dir.unwrap_or(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
    };
    Ok(LoadedTask {
        task_id: from_header.unwrap_or_else(from_name),
        replayed,
        runner_path,
        place: None,
        condition: dir.and_then(read_condition),
    })
}

/// Merge the keeper's stream at `keeper` into the replay of the runner stream.
///
/// The keeper is the parent of the task's processes and writes every exit to its own stream, so
/// after an executor crash the exits it saw are there and not (yet) in the runner stream. This is
/// the one place where the two are combined for readers (CLI, observer, a restarted executor).
///
/// The keeper writes `ProcessStatus` records carrying their `run`: RUNNING at spawn, and the
/// terminal state at exit. Each terminal record whose run the runner stream still shows as live is
/// applied to that run (state, stop time, return code, signal), with a reason saying where it came
/// from. The runner's own records win whenever both have one. A finished task is left alone.
pub fn merge_keeper_stream(mut runner: Replayed, keeper: &Path) -> Result<Replayed, RootError> {
    if runner.replay.state().is_terminal() {
        return Ok(runner);
    }
    let bytes = match std::fs::read(keeper) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(runner),
        Err(source) => {
            return Err(RootError::BadPath {
                path: keeper.to_path_buf(),
                source,
            });
        }
    };
    merge_keeper_records(&mut runner.replay, &bytes);
    Ok(runner)
}

/// Apply the exits recorded in a keeper stream (`keeper_bytes`) to the runs of `replay` that the
/// runner stream still shows as live (see [`merge_keeper_stream`]). Returns whether any changed.
pub fn merge_keeper_records(replay: &mut crate::replay::TaskReplay, keeper_bytes: &[u8]) -> bool {
    let mut changed = false;
    let (_, records, _) = crate::stream::read_records(keeper_bytes);
    for (_, record) in records {
        let Record::Process(exit) = record else {
            continue;
        };
        let (Some(state), Some(run)) = (exit.state, exit.run) else {
            continue;
        };
        if !state.is_terminal() {
            continue;
        }
        let Some(r) = replay
            .processes
            .get_mut(&exit.process)
            .and_then(|runs| runs.iter_mut().find(|r| i64::from(r.run) == i64::from(run)))
        else {
            continue;
        };
        if r.state.is_terminal() {
            continue;
        }
        // The keeper saw this run end while no executor was there to record it.
        r.state = state;
        r.stop_time = exit.stop_time;
        r.return_code = exit.return_code;
        r.signal = exit.signal;
        r.reason = Some("recorded by the keeper; the executor has not merged it yet".to_owned());
        changed = true;
    }
    changed
}

fn read_stream(path: &Path) -> Result<Replayed, RootError> {
    replay_path(path).map_err(|source| RootError::Checkpoint {
        path: path.to_owned(),
        source,
    })
}

/// Names in `dir` that are valid task ids; a missing directory has none.
fn dir_names(dir: &Path) -> Result<Vec<String>, RootError> {
    let read_err = |source| RootError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        if let Ok(name) = entry.file_name().into_string()
            && validate_task_id(&name).is_ok()
        {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn layout_paths_follow_the_documented_shape() {
        let root = Root::new("/r");
        assert_eq!(root.tasks_active_dir(), Path::new("/r/tasks/active"));
        assert_eq!(root.tasks_finished_dir(), Path::new("/r/tasks/finished"));
        assert_eq!(
            root.task_config_path("t1", TaskPlace::Active),
            Path::new("/r/tasks/active/t1")
        );
        assert_eq!(
            root.task_config_path("t1", TaskPlace::Finished),
            Path::new("/r/tasks/finished/t1")
        );
        assert_eq!(root.checkpoint_dir("t1"), Path::new("/r/checkpoints/t1"));
        assert_eq!(
            root.runner_path("t1"),
            Path::new("/r/checkpoints/t1/runner")
        );
        assert_eq!(
            root.keeper_path("t1"),
            Path::new("/r/checkpoints/t1/keeper")
        );
    }

    #[test]
    fn task_ids_that_cannot_name_one_file_are_rejected() {
        for bad in ["", ".", "..", "a/b", "/abs", "nul\0byte"] {
            assert!(
                matches!(validate_task_id(bad), Err(RootError::InvalidTaskId { .. })),
                "{bad:?} should be rejected"
            );
        }
        assert!(validate_task_id(&"x".repeat(MAX_TASK_ID_LEN + 1)).is_err());
        for good in [
            "hello_world",
            "1234-www-data-prod-hello-0-abcd",
            "...",
            ".hidden",
            "a b",
        ] {
            assert!(
                validate_task_id(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
        assert!(validate_task_id(&"x".repeat(MAX_TASK_ID_LEN)).is_ok());
    }

    #[test]
    fn invalid_task_id_message_names_the_id_and_problem() {
        let err = validate_task_id("a/b").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid task id \"a/b\": contains '/'")
        );
    }

    #[test]
    fn default_root_is_system_dir_as_root_else_xdg_runtime_dir() {
        let xdg = Some(OsString::from("/run/user/1000"));
        assert_eq!(
            default_root_for(true, xdg.clone()).ok(),
            Some(PathBuf::from(SYSTEM_ROOT))
        );
        assert_eq!(
            default_root_for(false, xdg).ok(),
            Some(PathBuf::from("/run/user/1000/hearth"))
        );
        assert!(matches!(
            default_root_for(false, None),
            Err(RootError::NoDefaultRoot)
        ));
        assert!(matches!(
            default_root_for(false, Some(OsString::from("relative"))),
            Err(RootError::NoDefaultRoot)
        ));
    }

    #[test]
    fn list_tasks_merges_configs_and_checkpoint_dirs_finished_winning() -> TestResult {
        let dir = tempfile::tempdir()?;
        let root = Root::new(dir.path());
        std::fs::create_dir_all(root.tasks_active_dir())?;
        std::fs::create_dir_all(root.tasks_finished_dir())?;
        std::fs::write(root.task_config_path("running", TaskPlace::Active), "{}")?;
        std::fs::write(root.task_config_path("done", TaskPlace::Finished), "{}")?;
        // Moving to finished: copied, not yet removed from active.
        std::fs::write(root.task_config_path("moving", TaskPlace::Active), "{}")?;
        std::fs::write(root.task_config_path("moving", TaskPlace::Finished), "{}")?;
        std::fs::create_dir_all(root.checkpoint_dir("orphan"))?;
        std::fs::create_dir_all(root.checkpoint_dir("running"))?;

        let listed = root.list_tasks()?;
        let expect = [
            ("done", false),
            ("moving", false),
            ("orphan", false),
            ("running", true),
        ];
        let expect: Vec<TaskEntry> = expect
            .iter()
            .map(|&(id, active)| TaskEntry {
                task_id: id.to_owned(),
                active,
            })
            .collect();
        assert_eq!(listed, expect);
        Ok(())
    }

    #[test]
    fn list_tasks_of_an_empty_root_is_empty_and_of_a_missing_root_an_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        assert_eq!(Root::new(dir.path()).list_tasks()?, Vec::new());
        let missing = dir.path().join("nope");
        match Root::new(&missing).list_tasks() {
            Err(RootError::ReadDir { path, .. }) => assert_eq!(path, missing),
            other => return Err(format!("expected ReadDir, got {other:?}").into()),
        }
        Ok(())
    }

    #[test]
    fn load_task_tells_unknown_tasks_from_tasks_without_a_stream() -> TestResult {
        let dir = tempfile::tempdir()?;
        let root = Root::new(dir.path());
        assert!(matches!(
            root.load_task("ghost"),
            Err(RootError::TaskNotFound { ref task_id, .. }) if task_id == "ghost"
        ));
        std::fs::create_dir_all(root.checkpoint_dir("fresh"))?;
        assert!(matches!(
            root.load_task("fresh"),
            Err(RootError::NoRunnerStream { ref path, .. }) if *path == root.runner_path("fresh")
        ));
        assert!(matches!(
            root.load_task(".."),
            Err(RootError::InvalidTaskId { .. })
        ));
        Ok(())
    }

    #[test]
    fn load_target_with_a_root_never_reads_a_path() {
        // "/" exists, but with a root the argument is a task id, and "/" is not a valid one.
        let err = load_target("/", Some(Path::new("/nonexistent-root")));
        assert!(matches!(err, Err(ref e) if e.is_usage()));
    }
}
