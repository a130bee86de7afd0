//! The observer's model: every task of every root, its replay kept up to date incrementally, its
//! config summary, its resource usage, and the ordered lists the task list pages from.
//!
//! Concurrency: the index (task id → cell, plus the two ordered lists) sits behind an `RwLock`
//! that requests only read; each task's data sits behind its own `Mutex`, held only while a
//! stream is polled or a summary copied. The background thread ([`crate::watch`]) refreshes the
//! tasks that changed and rebuilds the ordered lists; request handlers that show one task poll
//! its stream first (a `stat`, and a read of the new bytes if it grew), so a task page is never
//! staler than the file.
//!
//! A task id found in more than one root is shown from the first root given.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hearth_checkpoints::condition::{Condition, read_condition};
use hearth_checkpoints::record::TaskState;
use hearth_checkpoints::root::{LoadedTask, Root, TaskPlace};
use hearth_checkpoints::stream::Format;
use serde::Serialize;

use crate::error::ObserverError;
use crate::safepath;
use crate::tail::StreamTail;
use crate::usage::{CpuReading, Pressure, Probe, Usage, disk_usage};

/// Tunables of the background work. The defaults suit a host with hundreds of active tasks.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Full rescan of every root (the safety net under file watching).
    pub rescan_interval: Duration,
    /// CPU and memory sampling of active tasks.
    pub sample_interval: Duration,
    /// How old a task's disk figure may get before its sandbox is walked again.
    pub disk_interval: Duration,
    /// Most sandboxes walked per sampling tick (spreads the disk cost over ticks).
    pub disk_walks_per_tick: usize,
    /// Where cgroups and `/proc` are read.
    pub probe: Probe,
    /// Whether to watch the roots with inotify (off in tests that drive refreshes by hand).
    pub watch: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rescan_interval: Duration::from_secs(30),
            sample_interval: Duration::from_secs(5),
            disk_interval: Duration::from_secs(60),
            disk_walks_per_tick: 25,
            probe: Probe::default(),
            watch: true,
        }
    }
}

/// Which tasks a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    Active,
    Finished,
    All,
}

impl Which {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Which::Active),
            "finished" => Some(Which::Finished),
            "all" => Some(Which::All),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Which::Active => "active",
            Which::Finished => "finished",
            Which::All => "all",
        }
    }
}

/// What the task's config file says, as far as the observer shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigInfo {
    pub name: Option<String>,
    pub cpu: Option<f64>,
    pub ram: Option<u64>,
    pub disk: Option<u64>,
    /// Process names in config order (processes that never ran are shown too).
    pub processes: Vec<String>,
}

impl ConfigInfo {
    fn read(path: &Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        // A bare task, or an Aurora job / task instance that wraps one in `task`.
        let task = if v.get("processes").is_some() {
            &v
        } else {
            v.get("task").unwrap_or(&v)
        };
        let res = task.get("resources");
        let num = |k: &str| {
            res.and_then(|r| r.get(k))
                .and_then(serde_json::Value::as_f64)
        };
        Some(ConfigInfo {
            name: task.get("name").and_then(|n| n.as_str()).map(str::to_owned),
            cpu: num("cpu"),
            ram: num("ram").map(|v| v as u64),
            disk: num("disk").map(|v| v as u64),
            processes: task
                .get("processes")
                .and_then(|p| p.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.get("name").and_then(|n| n.as_str()))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// One row of the task list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub task_id: String,
    pub name: Option<String>,
    pub role: Option<String>,
    pub launch_time_ms: Option<i64>,
    pub state: TaskState,
    /// When the task entered its current state.
    pub state_since_ms: Option<i64>,
    pub active: bool,
    pub usage: Usage,
}

/// Per-process usage of a running process.
#[derive(Debug, Clone, Default)]
pub struct ProcUsage {
    pub pid: i32,
    pub last: Option<CpuReading>,
    pub usage: Usage,
}

/// The mutable part of a task.
#[derive(Debug)]
pub struct TaskData {
    pub tail: StreamTail,
    pub place: Option<TaskPlace>,
    pub config: ConfigInfo,
    config_from: Option<TaskPlace>,
    pub usage: Usage,
    last_cpu: Option<CpuReading>,
    disk_at: Option<Instant>,
    pub processes: HashMap<String, ProcUsage>,
    pub summary: Summary,
    /// What the task's executor says is wrong right now (checkpoint writes failing), if anything.
    pub condition: Option<Condition>,
    /// The task cgroup's pressure and I/O (cgroup v2).
    pub pressure: Pressure,
}

/// One task.
#[derive(Debug)]
pub struct TaskCell {
    pub task_id: String,
    /// Index of the root it was found in.
    pub root: usize,
    data: Mutex<TaskData>,
}

impl TaskCell {
    /// The task's data, locked.
    pub fn lock(&self) -> MutexGuard<'_, TaskData> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the list row.
    pub fn summary(&self) -> Summary {
        self.lock().summary.clone()
    }
}

#[derive(Debug, Default)]
struct Index {
    tasks: HashMap<String, Arc<TaskCell>>,
    active: Vec<Arc<TaskCell>>,
    finished: Vec<Arc<TaskCell>>,
}

/// Every task of every root.
#[derive(Debug)]
pub struct Observer {
    roots: Vec<Root>,
    index: RwLock<Index>,
    settings: Settings,
}

impl TaskData {
    fn new(root: &Root, task_id: &str, place: Option<TaskPlace>) -> Self {
        TaskData {
            tail: StreamTail::new(root.runner_path(task_id)),
            place,
            config: ConfigInfo::default(),
            config_from: None,
            usage: Usage::default(),
            last_cpu: None,
            disk_at: None,
            processes: HashMap::new(),
            condition: None,
            pressure: Pressure::default(),
            summary: Summary {
                task_id: task_id.to_owned(),
                name: None,
                role: None,
                launch_time_ms: None,
                state: TaskState::Active,
                state_since_ms: None,
                active: place == Some(TaskPlace::Active),
                usage: Usage::default(),
            },
        }
    }

    /// Poll the stream and re-read the config if it moved. Returns whether anything changed.
    fn refresh(&mut self, root: &Root, task_id: &str) -> bool {
        let mut changed = match self.tail.poll() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(task_id, error = %e, "cannot read checkpoint stream");
                false
            }
        };
        let condition = read_condition(&root.checkpoint_dir(task_id));
        if condition != self.condition {
            self.condition = condition;
            changed = true;
        }
        let place = root.task_place(task_id);
        if place != self.place || self.config_from != place {
            self.place = place;
            self.config_from = place;
            self.config = place
                .and_then(|p| ConfigInfo::read(&root.task_config_path(task_id, p)))
                .unwrap_or_default();
            changed = true;
        }
        if changed {
            self.update_summary(task_id);
        }
        changed
    }

    fn update_summary(&mut self, task_id: &str) {
        let replay = self.tail.replay();
        let state = replay.state();
        let active = match self.place {
            Some(TaskPlace::Active) => true,
            Some(TaskPlace::Finished) => false,
            None => self.tail.is_loaded() && !state.is_terminal(),
        };
        // The time of the transition into the current state (the first of a run of equal ones).
        let mut since = None;
        let mut prev = None;
        for s in &replay.statuses {
            if prev != Some(s.state) {
                since = Some(s.timestamp_ms);
            }
            prev = Some(s.state);
        }
        let header = replay.header.as_ref();
        self.summary = Summary {
            task_id: task_id.to_owned(),
            name: self.config.name.clone(),
            role: header.and_then(|h| h.user.clone()),
            launch_time_ms: header
                .map(|h| h.launch_time_ms)
                .filter(|&t| t > 0)
                .or_else(|| replay.statuses.first().map(|s| s.timestamp_ms)),
            state,
            state_since_ms: since,
            active,
            usage: self.usage,
        };
    }
}

impl Observer {
    /// Open the roots (each must be an existing directory) and load every task in them.
    pub fn open(roots: &[PathBuf], settings: Settings) -> Result<Arc<Self>, ObserverError> {
        if roots.is_empty() {
            return Err(ObserverError::NoRoots);
        }
        for r in roots {
            let meta = std::fs::metadata(r).map_err(|source| ObserverError::Root {
                path: r.clone(),
                source,
            })?;
            if !meta.is_dir() {
                return Err(ObserverError::RootNotDir { path: r.clone() });
            }
        }
        let obs = Arc::new(Observer {
            roots: roots.iter().map(Root::new).collect(),
            index: RwLock::new(Index::default()),
            settings,
        });
        obs.rescan();
        Ok(obs)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The task with this id.
    pub fn task(&self, task_id: &str) -> Option<Arc<TaskCell>> {
        self.read_index().tasks.get(task_id).cloned()
    }

    /// The task with this id, its stream polled first so it is current.
    pub fn fresh_task(&self, task_id: &str) -> Option<Arc<TaskCell>> {
        let cell = self.task(task_id)?;
        let changed = {
            let root = self.roots.get(cell.root)?;
            cell.lock().refresh(root, task_id)
        };
        if changed {
            self.rebuild_order();
        }
        Some(cell)
    }

    /// Number of tasks of a kind.
    pub fn count(&self, which: Which) -> usize {
        let idx = self.read_index();
        match which {
            Which::Active => idx.active.len(),
            Which::Finished => idx.finished.len(),
            Which::All => idx.active.len() + idx.finished.len(),
        }
    }

    /// A page of tasks: active ones by launch time, newest first; finished ones by the time they
    /// finished, newest first; `all` is active then finished. A negative offset counts from the
    /// end (Thermos's rule: it wraps when the list is longer than its magnitude, else is 0).
    pub fn page(&self, which: Which, offset: i64, num: usize) -> (Vec<Arc<TaskCell>>, usize) {
        let idx = self.read_index();
        let total = match which {
            Which::Active => idx.active.len(),
            Which::Finished => idx.finished.len(),
            Which::All => idx.active.len() + idx.finished.len(),
        };
        let start = normalize_offset(offset, total);
        let iter: Box<dyn Iterator<Item = &Arc<TaskCell>>> = match which {
            Which::Active => Box::new(idx.active.iter()),
            Which::Finished => Box::new(idx.finished.iter()),
            Which::All => Box::new(idx.active.iter().chain(idx.finished.iter())),
        };
        (iter.skip(start).take(num).cloned().collect(), total)
    }

    /// Every task (unordered).
    pub fn all_tasks(&self) -> Vec<Arc<TaskCell>> {
        self.read_index().tasks.values().cloned().collect()
    }

    /// Re-list every root: add new tasks, drop vanished ones, poll every stream.
    pub fn rescan(&self) {
        let mut seen: HashSet<String> = HashSet::new();
        let mut found: Vec<(usize, String)> = Vec::new();
        for (i, root) in self.roots.iter().enumerate() {
            match root.list_tasks() {
                Ok(entries) => {
                    for e in entries {
                        if seen.insert(e.task_id.clone()) {
                            found.push((i, e.task_id));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(root = %root.path().display(), error = %e, "cannot list root")
                }
            }
        }
        {
            let mut idx = self.write_index();
            idx.tasks.retain(|id, _| seen.contains(id));
            for (i, id) in &found {
                if let Some(cell) = idx.tasks.get(id)
                    && cell.root == *i
                {
                    continue;
                }
                idx.tasks.insert(id.clone(), self.new_cell(*i, id));
            }
        }
        for cell in self.all_tasks() {
            if let Some(root) = self.roots.get(cell.root) {
                cell.lock().refresh(root, &cell.task_id);
            }
        }
        self.rebuild_order();
    }

    fn new_cell(&self, root: usize, task_id: &str) -> Arc<TaskCell> {
        let r = &self.roots[root.min(self.roots.len() - 1)];
        Arc::new(TaskCell {
            task_id: task_id.to_owned(),
            root,
            data: Mutex::new(TaskData::new(r, task_id, None)),
        })
    }

    /// Refresh the tasks that file events under these paths concern. Paths that name no task
    /// (or a task not yet known) trigger a lookup of that task in its root.
    pub fn refresh_paths(&self, paths: &[PathBuf]) {
        let mut ids: Vec<(usize, String)> = Vec::new();
        let mut relist = false;
        for p in paths {
            match self.task_of_path(p) {
                Some(t) => ids.push(t),
                None => relist = true,
            }
        }
        ids.sort();
        ids.dedup();
        let mut changed = false;
        for (root_idx, id) in ids {
            let cell = match self.task(&id) {
                Some(c) => c,
                None => {
                    let Some(root) = self.roots.get(root_idx) else {
                        continue;
                    };
                    if root.task_place(&id).is_none() && !root.checkpoint_dir(&id).exists() {
                        continue;
                    }
                    let cell = self.new_cell(root_idx, &id);
                    self.write_index()
                        .tasks
                        .entry(id.clone())
                        .or_insert(cell)
                        .clone()
                }
            };
            let Some(root) = self.roots.get(cell.root) else {
                continue;
            };
            let gone = root.task_place(&id).is_none() && !root.checkpoint_dir(&id).exists();
            if gone {
                self.write_index().tasks.remove(&id);
                changed = true;
                continue;
            }
            changed |= cell.lock().refresh(root, &id);
        }
        if relist {
            self.rescan();
        } else if changed {
            self.rebuild_order();
        }
    }

    /// Which task (root index, id) a path under a root belongs to.
    fn task_of_path(&self, path: &Path) -> Option<(usize, String)> {
        for (i, root) in self.roots.iter().enumerate() {
            for dir in [
                root.checkpoints_dir(),
                root.tasks_active_dir(),
                root.tasks_finished_dir(),
            ] {
                if let Ok(rest) = path.strip_prefix(&dir) {
                    let first = rest.components().next()?;
                    let id = first.as_os_str().to_str()?;
                    // The executor's atomic writes go through `.<id>.tmp`.
                    let id = id
                        .strip_prefix('.')
                        .and_then(|s| s.strip_suffix(".tmp"))
                        .unwrap_or(id);
                    if hearth_checkpoints::root::validate_task_id(id).is_err() {
                        return None;
                    }
                    return Some((i, id.to_owned()));
                }
            }
        }
        None
    }

    /// Rebuild the ordered lists from the summaries.
    pub fn rebuild_order(&self) {
        let cells = self.all_tasks();
        let mut active: Vec<(i64, String, Arc<TaskCell>)> = Vec::new();
        let mut finished: Vec<(i64, String, Arc<TaskCell>)> = Vec::new();
        for cell in cells {
            let s = cell.summary();
            if s.active {
                active.push((s.launch_time_ms.unwrap_or(0), s.task_id, cell));
            } else {
                let t = s.state_since_ms.or(s.launch_time_ms).unwrap_or(0);
                finished.push((t, s.task_id, cell));
            }
        }
        let order = |v: &mut Vec<(i64, String, Arc<TaskCell>)>| {
            v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        };
        order(&mut active);
        order(&mut finished);
        let mut idx = self.write_index();
        idx.active = active.into_iter().map(|t| t.2).collect();
        idx.finished = finished.into_iter().map(|t| t.2).collect();
    }

    /// Sample CPU and memory of every active task (and of its running processes), and walk a
    /// few sandboxes whose disk figure is old.
    pub fn sample(&self) {
        let active: Vec<Arc<TaskCell>> = self.read_index().active.clone();
        let mut walks = 0usize;
        let probe = &self.settings.probe;
        for cell in active {
            let sandbox = self.sandbox(&cell);
            let mut d = cell.lock();
            if let Some(sample) = probe.task_cgroup(&cell.task_id) {
                if let Some(prev) = d.last_cpu {
                    d.usage.cpu = sample.cpu.rate_since(&prev);
                }
                d.last_cpu = Some(sample.cpu);
                d.usage.ram = sample.ram;
                d.pressure = sample.pressure;
            }
            // Running processes, from the replay.
            let running: Vec<(String, i32, Option<i64>)> = d
                .tail
                .replay()
                .processes
                .iter()
                .filter_map(|(name, runs)| {
                    let last = runs.last()?;
                    let live = matches!(
                        last.state,
                        hearth_checkpoints::record::ProcessState::Running
                            | hearth_checkpoints::record::ProcessState::Forked
                    );
                    live.then_some((name.clone(), last.pid?, last.pid_start_ticks))
                })
                .collect();
            d.processes.retain(|n, _| running.iter().any(|r| &r.0 == n));
            let mut sum_cpu = 0.0;
            let mut sum_ram = 0u64;
            let mut any = false;
            for (name, pid, ticks) in running {
                let Some(r) = probe.process(pid) else {
                    continue;
                };
                if ticks.is_some_and(|t| u64::try_from(t).ok() != Some(r.start_ticks)) {
                    continue; // the pid was recycled
                }
                let pu = d.processes.entry(name).or_default();
                if pu.pid != pid {
                    *pu = ProcUsage {
                        pid,
                        ..ProcUsage::default()
                    };
                }
                if let Some(prev) = pu.last {
                    pu.usage.cpu = r.cpu.rate_since(&prev);
                }
                pu.last = Some(r.cpu);
                pu.usage.ram = Some(r.rss);
                sum_cpu += pu.usage.cpu.unwrap_or(0.0);
                sum_ram += r.rss;
                any = true;
            }
            if d.last_cpu.is_none() && any {
                // No cgroup: the task's figures are its processes' (children not counted).
                d.usage.cpu = Some(sum_cpu);
                d.usage.ram = Some(sum_ram);
            }
            let disk_due = d
                .disk_at
                .is_none_or(|t| t.elapsed() >= self.settings.disk_interval);
            if disk_due && walks < self.settings.disk_walks_per_tick {
                walks += 1;
                d.disk_at = Some(Instant::now());
                drop(d);
                let disk = sandbox.as_deref().and_then(disk_usage);
                d = cell.lock();
                d.usage.disk = disk;
            }
            let usage = d.usage;
            d.summary.usage = usage;
        }
    }

    /// The task's sandbox directory, resolved. From the header; for a legacy Thermos root that
    /// was moved (the header names a directory that no longer exists), `<root>/<last component
    /// of the header's sandbox>` when that exists, which is where Thermos put sandboxes.
    pub fn sandbox(&self, cell: &TaskCell) -> Option<PathBuf> {
        let (sandbox, thermos) = {
            let d = cell.lock();
            let h = d.tail.replay().header.as_ref()?;
            (
                PathBuf::from(h.sandbox.as_ref()?),
                d.tail.format() == Format::Thermos,
            )
        };
        if let Ok(p) = safepath::resolve_base(&sandbox) {
            return Some(p);
        }
        if thermos {
            let root = self.roots.get(cell.root)?;
            let moved = root.path().join(sandbox.file_name()?);
            return safepath::resolve_base(&moved).ok();
        }
        None
    }

    /// The base directory of the task's logs, resolved: the header's `log_dir` when it lies
    /// inside the sandbox (it is refused otherwise); else `<sandbox>/.logs` for Hearth, and
    /// `<root>/logs/<task_id>` for a legacy Thermos task (Thermos's layout before `log_dir`).
    pub fn log_base(&self, cell: &TaskCell) -> Option<PathBuf> {
        let (log_dir, thermos) = {
            let d = cell.lock();
            let h = d.tail.replay().header.as_ref()?;
            (h.log_dir.clone(), d.tail.format() == Format::Thermos)
        };
        let sandbox = self.sandbox(cell);
        if let Some(dir) = log_dir {
            let sandbox = sandbox?;
            let real = safepath::resolve_base(Path::new(&dir)).ok()?;
            return real.starts_with(&sandbox).then_some(real);
        }
        if thermos {
            let root = self.roots.get(cell.root)?;
            return safepath::resolve_base(&root.path().join("logs").join(&cell.task_id)).ok();
        }
        safepath::resolve_base(&sandbox?.join(".logs")).ok()
    }

    /// The task as the checkpoints crate's [`LoadedTask`], for its JSON rendering.
    pub fn loaded(&self, cell: &TaskCell) -> LoadedTask {
        let d = cell.lock();
        LoadedTask {
            task_id: cell.task_id.clone(),
            replayed: d.tail.replayed(),
            runner_path: d.tail.path().to_owned(),
            place: d.place,
            condition: d.condition.clone(),
        }
    }
}

fn normalize_offset(offset: i64, total: usize) -> usize {
    if offset >= 0 {
        return usize::try_from(offset).unwrap_or(usize::MAX);
    }
    let mag = offset.unsigned_abs();
    let total64 = total as u64;
    if total64 > mag {
        usize::try_from(total64 - mag).unwrap_or(0)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_offset;

    #[test]
    fn negative_offsets_count_from_the_end_or_clamp_to_zero() {
        assert_eq!(normalize_offset(5, 10), 5);
        assert_eq!(normalize_offset(-3, 10), 7);
        assert_eq!(normalize_offset(-30, 10), 0);
    }
}
