//! The background thread: file watching (inotify through `notify`), the periodic safety rescan,
//! and resource sampling.
//!
//! Watches, per root: the root itself and `tasks/active`, `tasks/finished` (not recursive), and
//! `checkpoints/` (recursive). Events are batched for [`DEBOUNCE`] and the tasks they name are
//! refreshed (their streams polled for new bytes). Reads raise access events; only creations,
//! modifications and removals are acted on. Watching is known to miss things (an overflowing
//! queue, a file created in a directory that was itself just created), so every
//! [`crate::store::Settings::rescan_interval`] the roots are listed again and every stream polled;
//! a rescan flag from `notify` triggers one at once. Directories that appear later (a root that
//! had no `checkpoints/` yet) are watched from the next rescan on.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::error::ObserverError;
use crate::store::Observer;

/// How long events are gathered before the tasks they name are refreshed.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

enum Msg {
    Paths(Vec<PathBuf>),
    Rescan,
    Stop,
}

/// The running background thread; dropping it stops the thread.
#[derive(Debug)]
pub struct Background {
    tx: Sender<Msg>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Start watching, rescanning and sampling for `obs`.
pub fn spawn(obs: Arc<Observer>) -> Result<Background, ObserverError> {
    let (tx, rx) = mpsc::channel::<Msg>();
    let events = tx.clone();
    let watcher = if obs.settings().watch {
        let w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) => {
                if ev.need_rescan() {
                    let _ = events.send(Msg::Rescan);
                }
                if matches!(
                    ev.kind,
                    EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                ) {
                    let _ = events.send(Msg::Paths(ev.paths));
                }
            }
            Err(_) => {
                let _ = events.send(Msg::Rescan);
            }
        });
        match w {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the roots; relying on rescans");
                None
            }
        }
    } else {
        None
    };
    let handle = std::thread::Builder::new()
        .name("observer-watch".into())
        .spawn(move || run(&obs, watcher, &rx))
        .map_err(|source| ObserverError::Thread { source })?;
    Ok(Background {
        tx,
        handle: Some(handle),
    })
}

fn ensure_watches(
    obs: &Observer,
    watcher: &mut Option<notify::RecommendedWatcher>,
    watched: &mut HashSet<PathBuf>,
) {
    let Some(w) = watcher.as_mut() else { return };
    for root in obs.roots() {
        let dirs = [
            (root.path().to_path_buf(), RecursiveMode::NonRecursive),
            (root.path().join("tasks"), RecursiveMode::NonRecursive),
            (root.tasks_active_dir(), RecursiveMode::NonRecursive),
            (root.tasks_finished_dir(), RecursiveMode::NonRecursive),
            (root.checkpoints_dir(), RecursiveMode::Recursive),
        ];
        for (dir, mode) in dirs {
            if watched.contains(&dir) || !dir.is_dir() {
                continue;
            }
            match w.watch(&dir, mode) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch"),
            }
        }
    }
}

fn run(obs: &Observer, mut watcher: Option<notify::RecommendedWatcher>, rx: &mpsc::Receiver<Msg>) {
    let settings = obs.settings().clone();
    let mut watched = HashSet::new();
    ensure_watches(obs, &mut watcher, &mut watched);
    // Anything created between the initial scan and the watches being set is found here.
    obs.rescan();
    obs.sample();
    let mut next_rescan = Instant::now() + settings.rescan_interval;
    let mut next_sample = Instant::now() + settings.sample_interval;
    loop {
        let now = Instant::now();
        let wait = next_rescan.min(next_sample).saturating_duration_since(now);
        match rx.recv_timeout(wait) {
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Ok(first) => {
                let mut paths = Vec::new();
                let mut rescan = false;
                let deadline = Instant::now() + DEBOUNCE;
                let mut msg = Some(first);
                while let Some(m) = msg.take() {
                    match m {
                        Msg::Stop => return,
                        Msg::Rescan => rescan = true,
                        Msg::Paths(p) => paths.extend(p),
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    msg = rx.recv_timeout(left).ok();
                }
                if rescan {
                    obs.rescan();
                    ensure_watches(obs, &mut watcher, &mut watched);
                } else if !paths.is_empty() {
                    obs.refresh_paths(&paths);
                    // A directory that appeared (the root's first task) gets its watch now.
                    ensure_watches(obs, &mut watcher, &mut watched);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        if now >= next_rescan {
            obs.rescan();
            ensure_watches(obs, &mut watcher, &mut watched);
            next_rescan = now + settings.rescan_interval;
        }
        if now >= next_sample {
            obs.sample();
            next_sample = now + settings.sample_interval;
        }
    }
}
