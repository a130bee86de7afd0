//! Sandbox disk usage and the disk quota (`resources.disk`).
//!
//! # How usage is measured without walking the tree every second
//!
//! The monitor keeps, for every directory of the sandbox, the bytes allocated to the directory
//! itself and to the non-directory entries directly inside it (`st_blocks * 512`, as `du`
//! counts), plus the list of its subdirectories; the sandbox's usage is the running sum.
//!
//! * **Start:** one full walk. Each directory gets an inotify watch *before* it is read, so
//!   nothing written while we walk is missed (a file created in a brand-new subdirectory is
//!   picked up by the walk of that subdirectory, which starts after its watch exists).
//! * **Then, incrementally:** inotify events (create, delete, modify, move) mark their directory
//!   dirty. 250 ms after the first mark, only the dirty directories are re-read — one `readdir`
//!   and one `fstatat` per entry of *those* directories; a new subdirectory is watched and
//!   walked, a vanished one is dropped with everything below it. A task appending to a log
//!   costs one re-read of the log's directory per 250 ms, whatever the size of the sandbox.
//! * **Safety net:** inotify can overflow (`IN_Q_OVERFLOW`), and writes through `mmap` raise no
//!   event, so a full walk still runs periodically; its period adapts to its cost: 200 times the
//!   last walk's duration, at least 60 s (a walk taking 5 ms runs once a minute; one taking 1 s,
//!   every 200 s — under 0.5 % of a core either way). An overflow triggers a full walk at once.
//! * **Without inotify** (no instance, or the watch limit is reached for some directory): full
//!   walks every `clamp(100 × walk duration, 1 s, 4 s)`, so the limit is still caught within 5 s
//!   for sandboxes that can be walked in under 40 ms, at a cost of ~1 % of a core; bigger
//!   sandboxes are walked less often (we prefer a late detection to an executor eating a core).
//!
//! A task over its limit is reported once, as [`DiskEvent::Exceeded`], within ~250 ms of the
//! write that crossed it (inotify mode). The reason text is Aurora's:
//! `Disk limit exceeded. Reserved X bytes vs used Y bytes.`
//!
//! # Caveats
//! * A file with several hard links inside the sandbox is counted once per link.
//! * Blocking file-system work runs on tokio's blocking pool, never on the event loop.
//! * Inotify is driven through the `notify` crate's watcher, which reads events on a thread of
//!   its own (one per monitor) and hands them to the event loop over a bounded channel; when that
//!   channel is full, the monitor does a full walk instead, as on `IN_Q_OVERFLOW`.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{INotifyWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Delay between the first event and the re-read of dirty directories (batches bursts).
const SETTLE: Duration = Duration::from_millis(250);
/// Full-walk period with inotify: at least this, else 200 × the walk's duration.
const FULL_WALK_MIN: Duration = Duration::from_secs(60);
const FULL_WALK_COST_FACTOR: u32 = 200;
/// Full-walk period without inotify: 100 × the walk's duration, within these bounds.
const POLL_MIN: Duration = Duration::from_secs(1);
const POLL_MAX: Duration = Duration::from_secs(4);
const POLL_COST_FACTOR: u32 = 100;
/// Changed paths queued between the watcher's thread and the event loop; beyond this, a full walk.
const EVENT_QUEUE: usize = 4096;

/// What the disk monitor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskEvent {
    /// The sandbox uses more than the task reserved.
    Exceeded { reserved: u64, used: u64 },
}

impl DiskEvent {
    /// The task's failure reason (Aurora's wording).
    pub fn reason(&self) -> String {
        match self {
            DiskEvent::Exceeded { reserved, used } => {
                format!("Disk limit exceeded. Reserved {reserved} bytes vs used {used} bytes.")
            }
        }
    }
}

/// Watches a sandbox's disk usage in a tokio task; dropping it (or [`stop`](Self::stop)) ends
/// the watch.
#[derive(Debug)]
pub struct DiskMonitor {
    handle: JoinHandle<()>,
    used: Arc<AtomicU64>,
}

impl DiskMonitor {
    /// Bytes used by the sandbox at the last measurement.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.handle.abort();
    }
}

impl Drop for DiskMonitor {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Start measuring `sandbox`; report when usage exceeds `limit` bytes (0: never, only measure).
/// Must be called inside a tokio runtime.
pub fn start(sandbox: PathBuf, limit: u64) -> (DiskMonitor, mpsc::Receiver<DiskEvent>) {
    let (tx, rx) = mpsc::channel(1);
    let used = Arc::new(AtomicU64::new(0));
    let handle = tokio::spawn(run(sandbox, limit, used.clone(), tx));
    (DiskMonitor { handle, used }, rx)
}

#[derive(Debug, Default)]
struct Dir {
    bytes: u64,
    subdirs: Vec<PathBuf>,
}

/// Per-directory usage of a tree, with inotify watches on its directories.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    dirs: HashMap<PathBuf, Dir>,
    total: u64,
    notify: Option<INotifyWatcher>,
    /// Directories with a watch (one per directory; none recursive).
    watched: HashSet<PathBuf>,
    /// Some directory could not be watched: only full walks are trustworthy.
    unwatched: bool,
}

fn allocated(meta: &fs::Metadata) -> u64 {
    meta.blocks().saturating_mul(512)
}

impl Tree {
    /// Walk `root`, watching every directory when `notify` is given.
    fn build(root: PathBuf, notify: Option<INotifyWatcher>) -> Tree {
        let mut tree = Tree {
            root: root.clone(),
            dirs: HashMap::new(),
            total: 0,
            notify,
            watched: HashSet::new(),
            unwatched: false,
        };
        tree.add_tree(root);
        tree
    }

    /// A tree without watches (tests and one-off measurements).
    pub fn measure(root: &Path) -> u64 {
        Tree::build(root.to_owned(), None).total
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    fn watch(&mut self, path: &Path) {
        let Some(n) = &mut self.notify else {
            self.unwatched = true;
            return;
        };
        match n.watch(path, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(path.to_owned());
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
            Err(e) => {
                if !self.unwatched {
                    tracing::warn!(path = %path.display(), error = %e,
                        "cannot watch a sandbox directory; disk usage falls back to periodic walks");
                }
                self.unwatched = true;
            }
        }
    }

    fn unwatch(&mut self, path: &Path) {
        if self.watched.remove(path)
            && let Some(n) = &mut self.notify
        {
            // The watcher drops the watch of a directory moved away by itself: not found is fine.
            let _ = n.unwatch(path);
        }
    }

    /// Read one directory (not recursively): its own blocks and its entries' blocks.
    #[allow(clippy::disallowed_methods)] // tree work runs on the blocking pool only
    fn read_dir(path: &Path) -> Option<Dir> {
        let meta = fs::symlink_metadata(path).ok()?;
        if !meta.is_dir() {
            return None;
        }
        let mut dir = Dir {
            bytes: allocated(&meta),
            subdirs: Vec::new(),
        };
        let entries = match fs::read_dir(path) {
            Ok(e) => e,
            Err(_) => return Some(dir),
        };
        for entry in entries.flatten() {
            // Does not follow symlinks: a link costs its own blocks only.
            let Ok(m) = entry.metadata() else { continue };
            if m.is_dir() {
                dir.subdirs.push(entry.path());
            } else {
                dir.bytes = dir.bytes.saturating_add(allocated(&m));
            }
        }
        Some(dir)
    }

    /// Watch, then read, `path` and everything below it.
    fn add_tree(&mut self, path: PathBuf) {
        let mut stack = vec![path];
        while let Some(p) = stack.pop() {
            if self.dirs.contains_key(&p) {
                continue;
            }
            self.watch(&p);
            if let Some(dir) = Self::read_dir(&p) {
                self.total = self.total.saturating_add(dir.bytes);
                stack.extend(dir.subdirs.iter().cloned());
                self.dirs.insert(p, dir);
            } else {
                self.unwatch(&p);
            }
        }
    }

    /// Forget `path` and everything below it.
    fn remove_tree(&mut self, path: &Path) {
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            if let Some(dir) = self.dirs.remove(&p) {
                self.total = self.total.saturating_sub(dir.bytes);
                stack.extend(dir.subdirs);
            }
            self.unwatch(&p);
        }
    }

    /// Re-read one known directory; follow subdirectories that appeared or vanished.
    fn rescan(&mut self, path: &Path) {
        let Some(old) = self.dirs.get(path) else {
            return;
        };
        let old_subdirs: HashSet<PathBuf> = old.subdirs.iter().cloned().collect();
        let old_bytes = old.bytes;
        let Some(new) = Self::read_dir(path) else {
            // Gone: its parent's rescan (or the next full walk) settles the rest.
            self.remove_tree(path);
            return;
        };
        let new_subdirs: HashSet<PathBuf> = new.subdirs.iter().cloned().collect();
        self.total = self
            .total
            .saturating_sub(old_bytes)
            .saturating_add(new.bytes);
        self.dirs.insert(path.to_owned(), new);
        for gone in old_subdirs.difference(&new_subdirs) {
            self.remove_tree(gone);
        }
        for added in new_subdirs.difference(&old_subdirs) {
            self.add_tree(added.clone());
        }
    }

    /// Record a change at `path`: its directory, and the path itself if it is a directory we
    /// know (a directory's own deletion or move), need a re-read.
    fn mark_dirty(&self, path: &Path, dirty: &mut HashSet<PathBuf>) {
        if self.dirs.contains_key(path) {
            dirty.insert(path.to_owned());
        }
        if let Some(parent) = path.parent()
            && self.dirs.contains_key(parent)
        {
            dirty.insert(parent.to_owned());
        }
    }

    /// Start over: forget everything and walk the whole tree again.
    fn full_walk(&mut self) {
        let root = self.root.clone();
        self.remove_tree(&root);
        self.dirs.clear();
        self.total = 0;
        self.unwatched = self.notify.is_none();
        self.add_tree(root);
    }
}

/// Run blocking tree work on the blocking pool; returns the tree and the work's duration.
async fn blocking<F>(mut tree: Tree, work: F) -> Option<(Tree, Duration)>
where
    F: FnOnce(&mut Tree) + Send + 'static,
{
    let started = Instant::now();
    let tree = tokio::task::spawn_blocking(move || {
        work(&mut tree);
        tree
    })
    .await
    .ok()?;
    Some((tree, started.elapsed()))
}

fn full_walk_period(walk: Duration, unwatched: bool) -> Duration {
    if unwatched {
        (walk * POLL_COST_FACTOR).clamp(POLL_MIN, POLL_MAX)
    } else {
        (walk * FULL_WALK_COST_FACTOR).max(FULL_WALK_MIN)
    }
}

/// What the watcher's thread tells the event loop.
#[derive(Debug)]
enum Change {
    /// Something changed at this path: an entry of a watched directory, or one itself.
    At(PathBuf),
    /// The kernel's queue overflowed: only a full walk is trustworthy.
    Lost,
}

/// An inotify watcher whose events reach `tx`; `lost` is raised when `tx` is full.
fn watcher(tx: mpsc::Sender<Change>, lost: Arc<AtomicBool>) -> notify::Result<INotifyWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        let changes = match res {
            Ok(ev) if ev.need_rescan() => vec![Change::Lost],
            // Opening, closing or chmod-ing a file allocates no blocks.
            Ok(ev)
                if matches!(
                    ev.kind,
                    EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
                ) =>
            {
                Vec::new()
            }
            Ok(ev) => ev.paths.into_iter().map(Change::At).collect(),
            Err(_) => vec![Change::Lost],
        };
        for change in changes {
            if tx.try_send(change).is_err() {
                lost.store(true, Ordering::Relaxed);
            }
        }
    };
    INotifyWatcher::new(handler, notify::Config::default())
}

async fn run(root: PathBuf, limit: u64, used: Arc<AtomicU64>, tx: mpsc::Sender<DiskEvent>) {
    let lost = Arc::new(AtomicBool::new(false));
    let (change_tx, change_rx) = mpsc::channel(EVENT_QUEUE);
    let (notify, mut changes) = match watcher(change_tx, lost.clone()) {
        Ok(w) => (Some(w), Some(change_rx)),
        Err(e) => {
            tracing::warn!(error = %e, "no inotify; disk usage is measured by periodic walks");
            (None, None)
        }
    };
    let started = Instant::now();
    let Ok(mut tree) = tokio::task::spawn_blocking(move || Tree::build(root, notify)).await else {
        return;
    };
    let mut walk_cost = started.elapsed();
    let mut reported = false;
    let mut dirty: HashSet<PathBuf> = HashSet::new();
    let mut overflow = false;
    let mut flush_at: Option<Instant> = None;
    let mut next_walk = Instant::now() + full_walk_period(walk_cost, tree.unwatched);
    loop {
        used.store(tree.total(), Ordering::Relaxed);
        if limit > 0 && !reported && tree.total() > limit {
            reported = true;
            let event = DiskEvent::Exceeded {
                reserved: limit,
                used: tree.total(),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
        tokio::select! {
            change = async { changes.as_mut()?.recv().await }, if changes.is_some() => {
                let Some(first) = change else {
                    tracing::warn!("the inotify watcher stopped; disk usage falls back to walks");
                    changes = None;
                    tree.notify = None;
                    tree.watched.clear();
                    tree.unwatched = true;
                    continue;
                };
                let mut next = Some(first);
                while let Some(change) = next {
                    match change {
                        Change::Lost => overflow = true,
                        Change::At(p) => tree.mark_dirty(&p, &mut dirty),
                    }
                    next = changes.as_mut().and_then(|rx| rx.try_recv().ok());
                }
                if lost.swap(false, Ordering::Relaxed) {
                    overflow = true;
                }
                if (overflow || !dirty.is_empty()) && flush_at.is_none() {
                    flush_at = Some(Instant::now() + SETTLE);
                }
            }
            () = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                flush_at = None;
                let paths: Vec<PathBuf> = dirty.drain().collect();
                let full = std::mem::take(&mut overflow);
                let Some((t, cost)) = blocking(tree, move |t| {
                    if full {
                        t.full_walk();
                    } else {
                        for p in &paths {
                            t.rescan(p);
                        }
                    }
                })
                .await else { return };
                tree = t;
                if full {
                    walk_cost = cost;
                    next_walk = Instant::now() + full_walk_period(walk_cost, tree.unwatched);
                }
            }
            () = tokio::time::sleep_until(next_walk) => {
                let Some((t, cost)) = blocking(tree, Tree::full_walk).await else { return };
                tree = t;
                walk_cost = cost;
                next_walk = Instant::now() + full_walk_period(walk_cost, tree.unwatched);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn reason_uses_aurora_wording() {
        let e = DiskEvent::Exceeded {
            reserved: 10,
            used: 20,
        };
        assert_eq!(
            e.reason(),
            "Disk limit exceeded. Reserved 10 bytes vs used 20 bytes."
        );
    }

    #[test]
    fn full_walk_period_adapts_to_walk_cost() {
        assert_eq!(
            full_walk_period(Duration::from_millis(5), false),
            FULL_WALK_MIN
        );
        assert_eq!(
            full_walk_period(Duration::from_secs(1), false),
            Duration::from_secs(200)
        );
        assert_eq!(full_walk_period(Duration::from_millis(1), true), POLL_MIN);
        assert_eq!(
            full_walk_period(Duration::from_millis(20), true),
            Duration::from_secs(2)
        );
        assert_eq!(full_walk_period(Duration::from_secs(1), true), POLL_MAX);
    }

    #[tokio::test]
    async fn a_write_in_a_watched_subdirectory_marks_that_directory_dirty() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        fs::create_dir_all(root.join("a/b")).unwrap();
        let lost = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
        let tree = Tree::build(root.clone(), Some(watcher(tx, lost).unwrap()));
        assert!(!tree.unwatched);
        assert_eq!(tree.watched.len(), 3, "{:?}", tree.watched);
        fs::write(root.join("a/b/f"), vec![1u8; 10_000]).unwrap();
        let mut dirty = HashSet::new();
        while !dirty.contains(&root.join("a/b")) {
            let change = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("no inotify event within 5 s")
                .unwrap();
            if let Change::At(p) = change {
                tree.mark_dirty(&p, &mut dirty);
            }
        }
        // Only the file's own directory: neither its parent nor the root.
        assert_eq!(dirty, HashSet::from([root.join("a/b")]));
    }

    #[test]
    fn incremental_rescans_match_a_full_walk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), vec![1u8; 100_000]).unwrap();
        let mut tree = Tree::build(root.clone(), None);
        assert_eq!(tree.total(), Tree::measure(&root));
        // Grow a file, add a subtree, remove another, then re-read only the touched dirs.
        fs::write(root.join("a/b/f"), vec![1u8; 300_000]).unwrap();
        fs::create_dir_all(root.join("a/c/d")).unwrap();
        fs::write(root.join("a/c/d/g"), vec![2u8; 50_000]).unwrap();
        tree.rescan(&root.join("a/b"));
        tree.rescan(&root.join("a"));
        assert_eq!(tree.total(), Tree::measure(&root));
        fs::remove_dir_all(root.join("a/b")).unwrap();
        tree.rescan(&root.join("a/b"));
        tree.rescan(&root.join("a"));
        assert_eq!(tree.total(), Tree::measure(&root));
        assert!(!tree.dirs.contains_key(&root.join("a/b")));
    }
}
