//! The scheduler as a server: configuration, start-up (load, then serve), backups, restore.
//!
//! [`serve`] validates the configuration and the security file before binding anything, opens
//! (or creates, or migrates) the database in the data directory, loads it, starts the core
//! actor, the timers (ticks, hourly backups) and the HTTP server, and runs until `shutdown`
//! completes or the core stops because a commit failed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::{Security, SecurityFileError};
use crate::core::{self, CoreHandle};
use crate::http::{self, AppState, Backups};
use crate::lifecycle::LifecycleConfig;
use crate::state::State;
use crate::storage::{self, DB_FILE, SqliteStorage, StorageError};
use crate::wire::BackupInfo;

/// Everything `hearth scheduler` is started with. Its `Debug` shows how many agent tokens there
/// are, never the tokens.
#[derive(Clone)]
pub struct SchedulerConfig {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Default `<data_dir>/backups`.
    pub backup_dir: Option<PathBuf>,
    pub security_ini: Option<PathBuf>,
    pub auth_reads: bool,
    pub allow_plaintext_passwords: bool,
    /// Bearer tokens agents (and their executors) must present; none: open.
    pub agent_tokens: Vec<String>,
    /// The cluster name jobs must carry, when set.
    pub cluster: Option<String>,
    pub agent_timeout: Duration,
    pub transient_timeout: Duration,
    pub flapping_threshold: Duration,
    pub initial_flapping_delay: Duration,
    pub max_flapping_delay: Duration,
    pub kill_retry_initial: Duration,
    pub kill_retry_max: Duration,
    pub backup_interval: Duration,
    pub backups_kept: usize,
    pub placement_retry_initial: Duration,
    pub placement_retry_max: Duration,
}

impl std::fmt::Debug for SchedulerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerConfig")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("backup_dir", &self.backup_dir)
            .field("security_ini", &self.security_ini)
            .field("auth_reads", &self.auth_reads)
            .field("allow_plaintext_passwords", &self.allow_plaintext_passwords)
            .field(
                "agent_tokens",
                &format_args!("<{} redacted>", self.agent_tokens.len()),
            )
            .field("cluster", &self.cluster)
            .field("agent_timeout", &self.agent_timeout)
            .field("transient_timeout", &self.transient_timeout)
            .field("flapping_threshold", &self.flapping_threshold)
            .field("initial_flapping_delay", &self.initial_flapping_delay)
            .field("max_flapping_delay", &self.max_flapping_delay)
            .field("kill_retry_initial", &self.kill_retry_initial)
            .field("kill_retry_max", &self.kill_retry_max)
            .field("backup_interval", &self.backup_interval)
            .field("backups_kept", &self.backups_kept)
            .field("placement_retry_initial", &self.placement_retry_initial)
            .field("placement_retry_max", &self.placement_retry_max)
            .finish()
    }
}

impl SchedulerConfig {
    /// Aurora's defaults, serving `bind` from `data_dir`.
    pub fn new(bind: SocketAddr, data_dir: PathBuf) -> SchedulerConfig {
        SchedulerConfig {
            bind,
            data_dir,
            backup_dir: None,
            security_ini: None,
            auth_reads: false,
            allow_plaintext_passwords: false,
            agent_tokens: Vec::new(),
            cluster: None,
            agent_timeout: Duration::from_secs(60),
            transient_timeout: Duration::from_secs(300),
            flapping_threshold: Duration::from_secs(300),
            initial_flapping_delay: Duration::from_secs(30),
            max_flapping_delay: Duration::from_secs(300),
            kill_retry_initial: Duration::from_secs(15),
            kill_retry_max: Duration::from_secs(300),
            backup_interval: Duration::from_secs(3600),
            backups_kept: 48,
            placement_retry_initial: Duration::from_secs(1),
            placement_retry_max: Duration::from_secs(60),
        }
    }

    /// The backup directory in force.
    pub fn backup_dir(&self) -> PathBuf {
        self.backup_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("backups"))
    }

    /// The lifecycle tunables.
    pub fn lifecycle(&self) -> LifecycleConfig {
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        LifecycleConfig {
            transient_timeout_ms: ms(self.transient_timeout),
            flapping_threshold_ms: ms(self.flapping_threshold),
            initial_flapping_delay_ms: ms(self.initial_flapping_delay),
            max_flapping_delay_ms: ms(self.max_flapping_delay),
            kill_retry_initial_ms: ms(self.kill_retry_initial),
            kill_retry_max_ms: ms(self.kill_retry_max),
            placement_retry_initial_ms: ms(self.placement_retry_initial),
            placement_retry_max_ms: ms(self.placement_retry_max),
        }
    }
}

/// Why the scheduler cannot start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("security file {path}: {source}")]
    Security {
        path: PathBuf,
        #[source]
        source: SecurityFileError,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("invalid setting {setting}: {reason}")]
    Config {
        setting: &'static str,
        reason: String,
    },
    #[error("restore into {data_dir}: {reason}")]
    Restore { data_dir: PathBuf, reason: String },
    #[error("backup {path}: {reason}")]
    Backup { path: PathBuf, reason: String },
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("the scheduler core stopped unexpectedly")]
    CoreStopped,
    #[error("the scheduler core stopped: {0}")]
    Core(String),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SchedulerError + '_ {
    move |source| SchedulerError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Hash a password for the `[users]` section (argon2id PHC string).
pub fn hash_password(password: &str) -> Result<String, SchedulerError> {
    if password.is_empty() {
        return Err(SchedulerError::Hash("the password is empty".into()));
    }
    crate::auth::hash(password).map_err(|e| SchedulerError::Hash(e.to_string()))
}

/// Restore `backup` into `data_dir` (offline; the directory must not hold a database yet).
/// The restored scheduler holds kills of tasks it does not know until `reconcile --confirm`.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<(), SchedulerError> {
    let fail = |reason: String| SchedulerError::Restore {
        data_dir: data_dir.to_owned(),
        reason,
    };
    let db = data_dir.join(DB_FILE);
    if db.exists() {
        return Err(fail(format!(
            "{} exists; restore into an empty data directory (move the old one aside first)",
            db.display()
        )));
    }
    if !backup.is_file() {
        return Err(fail(format!(
            "backup {} not found; hearth scheduler backup list shows the backups",
            backup.display()
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
    let tmp = data_dir.join(format!("{DB_FILE}.restoring"));
    let _ = std::fs::remove_file(&tmp);
    std::fs::copy(backup, &tmp).map_err(io_err(&tmp))?;
    {
        // Check the copy opens (migrating it if it is older) and set the hold.
        let mut st = SqliteStorage::open(&tmp)?;
        let mut state = State::new(LifecycleConfig::default(), 60_000, None);
        storage::load_state(&mut st, &mut state, core::now_ms())?;
        state.set_hold();
        storage::commit_state(&mut st, &mut state)?;
        // Fold the WAL back into the file before it is renamed.
        st.checkpoint()?;
    }
    let f = std::fs::File::open(&tmp).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &db).map_err(io_err(&db))?;
    let dir = std::fs::File::open(data_dir).map_err(io_err(data_dir))?;
    dir.sync_all().map_err(io_err(data_dir))?;
    tracing::info!(
        "restored {} into {}; kills of unknown tasks are held until reconcile --confirm",
        backup.display(),
        data_dir.display()
    );
    Ok(())
}

/// Write a backup of the database at `db` into `dir` now; keep the newest `kept`.
pub fn backup_now(db: &Path, dir: &Path, kept: usize) -> Result<BackupInfo, SchedulerError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let now = core::now_ms();
    let mut n = 0;
    let mut name = format!("scheduler-{now}-{n}.db");
    while dir.join(&name).exists() {
        n += 1;
        name = format!("scheduler-{now}-{n}.db");
    }
    let dest = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let fail = |reason: String| SchedulerError::Backup {
        path: dest.clone(),
        reason,
    };
    let conn = storage::open_reader(db).map_err(|e| fail(e.to_string()))?;
    storage::backup_connection(&conn, &tmp).map_err(|e| fail(e.to_string()))?;
    let f = std::fs::File::open(&tmp).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    let bytes = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    let all = list_backups(dir)?;
    if all.len() > kept {
        for old in &all[kept..] {
            let _ = std::fs::remove_file(dir.join(&old.name));
        }
    }
    Ok(BackupInfo {
        name,
        created_ms: now,
        bytes,
    })
}

/// The backups in `dir`, newest first.
pub fn list_backups(dir: &Path) -> Result<Vec<BackupInfo>, SchedulerError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stamp) = name
            .strip_prefix("scheduler-")
            .and_then(|s| s.strip_suffix(".db"))
        else {
            continue;
        };
        let mut parts = stamp.split('-');
        let created_ms: i64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let n: u32 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
        out.push((
            (created_ms, n),
            BackupInfo {
                name,
                created_ms,
                bytes,
            },
        ));
    }
    out.sort_by_key(|b| std::cmp::Reverse(b.0));
    Ok(out.into_iter().map(|(_, b)| b).collect())
}

/// A started scheduler (for tests and benchmarks): its core and its HTTP state.
#[derive(Debug)]
pub struct Started {
    pub core: CoreHandle,
    pub app: AppState,
    pub thread: std::thread::JoinHandle<Result<(), core::CoreError>>,
    /// Send `true` to end held long-polls (shutdown).
    pub shutting_down: tokio::sync::watch::Sender<bool>,
    /// How long loading took.
    pub load_time: Duration,
    /// What was loaded, for the one start-up log line.
    pub summary: String,
}

/// Validate `cfg`, open and load the database, start the core. Binds nothing.
pub fn start(cfg: &SchedulerConfig) -> Result<Started, SchedulerError> {
    if cfg.agent_timeout < Duration::from_millis(100) {
        return Err(SchedulerError::Config {
            setting: "agent_timeout",
            reason: "must be at least 100 ms".into(),
        });
    }
    if cfg.backups_kept == 0 {
        return Err(SchedulerError::Config {
            setting: "backups_kept",
            reason: "must be at least 1".into(),
        });
    }
    let security = match &cfg.security_ini {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(io_err(path))?;
            Some(
                Security::parse(&text, cfg.allow_plaintext_passwords).map_err(|source| {
                    SchedulerError::Security {
                        path: path.clone(),
                        source,
                    }
                })?,
            )
        }
    };
    std::fs::create_dir_all(&cfg.data_dir).map_err(io_err(&cfg.data_dir))?;
    let db = cfg.data_dir.join(DB_FILE);
    let began = std::time::Instant::now();
    let mut st = SqliteStorage::open(&db)?;
    let mut state = State::new(
        cfg.lifecycle(),
        cfg.agent_timeout.as_millis() as i64,
        cfg.cluster.clone(),
    );
    storage::load_state(&mut st, &mut state, core::now_ms())?;
    let load_time = began.elapsed();
    let summary = format!(
        "{} job(s), {} task(s), {} host(s) loaded in {} ms{}",
        state.jobs.len(),
        state.tasks.len(),
        state.hosts.len(),
        load_time.as_millis(),
        if state.hold {
            "; reconcile hold on: unknown tasks are kept until hearth scheduler reconcile --confirm"
        } else {
            ""
        }
    );
    let (core, thread) = core::spawn(Box::new(st), state, core::now_ms);
    let (shutting_down, down_rx) = tokio::sync::watch::channel(false);
    let app = AppState {
        shutting_down: down_rx,
        core: core.clone(),
        security: security.map(Arc::new),
        agent_tokens: Arc::new(cfg.agent_tokens.clone()),
        auth_reads: cfg.auth_reads,
        agent_timeout: cfg.agent_timeout,
        backups: Arc::new(Backups {
            db,
            dir: cfg.backup_dir(),
            kept: cfg.backups_kept,
        }),
    };
    Ok(Started {
        core,
        app,
        thread,
        shutting_down,
        load_time,
        summary,
    })
}

/// How often time is let pass in the model (throttles, timeouts, kill resends, placement).
pub const TICK: Duration = Duration::from_millis(200);

/// Run the scheduler until `shutdown` completes (or the core stops on a storage failure).
pub async fn serve(
    cfg: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SchedulerError> {
    let started = start(&cfg)?;
    let listener = TcpListener::bind(cfg.bind)
        .await
        .map_err(|source| SchedulerError::Bind {
            addr: cfg.bind,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(cfg.bind);
    tracing::info!("scheduler listening on http://{addr} ({})", started.summary);
    let core = started.core.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if core.call(|s, now| s.tick(now)).await.is_err() {
                return;
            }
        }
    });
    let backups = started.app.backups.clone();
    let interval = cfg.backup_interval;
    let backup_timer = tokio::spawn(async move {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            every.tick().await;
            let b = backups.clone();
            match tokio::task::spawn_blocking(move || backup_now(&b.db, &b.dir, b.kept)).await {
                Ok(Ok(info)) => tracing::info!("backup {} written", info.name),
                Ok(Err(e)) => tracing::error!("hourly backup failed: {e}"),
                Err(e) => tracing::error!("hourly backup task failed: {e}"),
            }
        }
    });
    let stats = started.core.stats.clone();
    let core_failed = async move { stats.stopped.notified().await };
    let router = http::app(started.app.clone());
    let down = started.shutting_down.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = core_failed => {}
        }
        let _ = down.send(true);
    };
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await;
    ticker.abort();
    backup_timer.abort();
    let failed = started
        .core
        .stats
        .failed
        .load(std::sync::atomic::Ordering::SeqCst);
    drop(started.app);
    drop(started.core);
    served.map_err(|source| SchedulerError::Io {
        path: PathBuf::from("http server"),
        source,
    })?;
    if failed {
        // The thread has ended with the commit error.
        return match tokio::task::spawn_blocking(move || started.thread.join()).await {
            Ok(Ok(Err(core::CoreError::Storage(e)))) => Err(SchedulerError::Storage(e)),
            Ok(Ok(Err(e))) => Err(SchedulerError::Core(e.to_string())),
            _ => Err(SchedulerError::CoreStopped),
        };
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backups_keep_the_newest_and_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        drop(SqliteStorage::open(&db).unwrap());
        let backups = dir.path().join("backups");
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(backup_now(&db, &backups, 2).unwrap().name);
        }
        let list = list_backups(&backups).unwrap();
        let listed: Vec<&str> = list.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(listed, vec![names[3].as_str(), names[2].as_str()]);
        assert!(list.iter().all(|b| b.bytes > 0));
        // Nothing but the two backups is left behind (no temporary files).
        assert_eq!(std::fs::read_dir(&backups).unwrap().count(), 2);
    }

    #[test]
    fn restore_refuses_a_missing_backup_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = restore(&dir.path().join("nope.db"), &dir.path().join("data")).unwrap_err();
        assert!(e.to_string().contains("nope.db"), "{e}");
    }

    #[test]
    fn debug_never_shows_agent_tokens() {
        let mut c = SchedulerConfig::new("127.0.0.1:1".parse().unwrap(), "/d".into());
        c.agent_tokens = vec!["s3cr3t-token".into()];
        let text = format!("{c:?}");
        assert!(
            !text.contains("s3cr3t-token") && text.contains("1 redacted"),
            "{text}"
        );
    }

    #[test]
    fn hash_password_makes_an_argon2id_string() {
        let h = hash_password("pw").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(hash_password("").is_err());
    }
}
