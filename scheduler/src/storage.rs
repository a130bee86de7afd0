//! Durable storage: a small [`Storage`] trait (so a replicated backend can come later) and its
//! SQLite implementation.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`: a commit has reached the disk when
//! [`Storage::commit`] returns. The core actor calls it once per batch of operations (group
//! commit) and answers nobody before it returns.
//!
//! Rows are small: a job's config is stored once (`configs`), tasks refer to it by id, and a
//! task row holds its state, placement, counters and event history (compact JSON). The schema
//! is versioned with `PRAGMA user_version`; [`SqliteStorage::open`] migrates older files in
//! place, inside one transaction.
//!
//! | version | change |
//! |---|---|
//! | 1 | meta, configs, jobs, tasks, hosts |
//! | 2 | `tasks.flap_streak` (consecutive flapping ancestors), the `audit` table |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::api::ScheduleStatus;
use crate::model::{Host, JobSpec, Task};
use crate::state::{AuditRecord, Meta, State};
use crate::wire::{AuditEntry, HostMode, JobKey, PortRange, ResourceVec, TaskEvent};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 2;

/// The database file inside the data directory.
pub const DB_FILE: &str = "scheduler.db";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "storage {path}: schema version {found} is newer than this build's {SCHEMA_VERSION}; \
         run a newer hearth"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("storage {path}: {what} {key}: {reason}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        key: String,
        reason: String,
    },
}

/// Everything stored, as loaded at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub meta: Meta,
    pub configs: Vec<(i64, JobKey, serde_json::Value)>,
    /// (spec, config id, created ms)
    pub jobs: Vec<(JobSpec, i64, i64)>,
    pub tasks: Vec<Task>,
    pub hosts: Vec<Host>,
}

/// One batch of changes, committed atomically.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub meta: Option<Meta>,
    pub configs: Vec<(i64, &'a JobKey, &'a serde_json::Value)>,
    pub jobs: Vec<(&'a JobSpec, i64, i64)>,
    pub deleted_jobs: Vec<&'a JobKey>,
    pub tasks: Vec<&'a Task>,
    pub deleted_tasks: Vec<&'a str>,
    pub hosts: Vec<&'a Host>,
    pub audit: Vec<AuditRecord>,
}

impl Batch<'_> {
    pub fn is_empty(&self) -> bool {
        self.meta.is_none()
            && self.configs.is_empty()
            && self.jobs.is_empty()
            && self.deleted_jobs.is_empty()
            && self.tasks.is_empty()
            && self.deleted_tasks.is_empty()
            && self.hosts.is_empty()
            && self.audit.is_empty()
    }

    /// The batch of what `state` marked dirty (the caller clears the marks after the commit).
    pub fn from_state(state: &State) -> Batch<'_> {
        let d = &state.dirty;
        Batch {
            meta: d.meta.then(|| state.meta()),
            configs: d
                .configs
                .iter()
                .map(|(id, k, v)| (*id, k, v.as_ref()))
                .collect(),
            jobs: d
                .jobs
                .iter()
                .filter_map(|k| state.jobs.get(k))
                .map(|j| (j.spec.as_ref(), j.config_id, j.created_ms))
                .collect(),
            deleted_jobs: d.deleted_jobs.iter().collect(),
            tasks: d
                .tasks
                .iter()
                .filter_map(|id| state.tasks.get(id))
                .collect(),
            deleted_tasks: d.deleted_tasks.iter().map(String::as_str).collect(),
            hosts: d.hosts.iter().filter_map(|h| state.hosts.get(h)).collect(),
            audit: d.audit.clone(),
        }
    }
}

/// Where the scheduler's state lives.
pub trait Storage: Send {
    /// Everything stored but the tasks.
    fn load_base(&mut self) -> Result<Snapshot, StorageError>;
    /// How many tasks are stored (to size the model before loading them).
    fn count_tasks(&mut self) -> Result<usize, StorageError>;
    /// Every task, one at a time, so that no list of them all is built.
    fn load_tasks(&mut self, each: &mut dyn FnMut(Task)) -> Result<(), StorageError>;
    /// Everything stored, the tasks in [`Snapshot::tasks`].
    fn load(&mut self) -> Result<Snapshot, StorageError> {
        let mut snap = self.load_base()?;
        let mut tasks = Vec::with_capacity(self.count_tasks()?);
        self.load_tasks(&mut |t| tasks.push(t))?;
        snap.tasks = tasks;
        Ok(snap)
    }
    /// Make `batch` durable, all of it or nothing.
    fn commit(&mut self, batch: &Batch<'_>) -> Result<(), StorageError>;
}

/// SQLite storage in one file.
#[derive(Debug)]
pub struct SqliteStorage {
    path: PathBuf,
    conn: Connection,
}

const SCHEMA_V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE configs (id INTEGER PRIMARY KEY, job TEXT NOT NULL, config TEXT NOT NULL);
CREATE TABLE jobs (key TEXT PRIMARY KEY, spec TEXT NOT NULL, config_id INTEGER NOT NULL,
                   created_ms INTEGER NOT NULL);
CREATE TABLE tasks (id TEXT PRIMARY KEY, job TEXT NOT NULL, config_id INTEGER NOT NULL,
                    instance INTEGER NOT NULL, state TEXT NOT NULL, host TEXT, ports TEXT,
                    ancestor TEXT, failure_count INTEGER NOT NULL,
                    throttled_until INTEGER, events TEXT NOT NULL, last_seq INTEGER,
                    assigned_epoch INTEGER NOT NULL);
CREATE TABLE hosts (name TEXT PRIMARY KEY, agent_id TEXT NOT NULL, mode TEXT NOT NULL,
                    attributes TEXT NOT NULL, resources TEXT NOT NULL, ports TEXT NOT NULL);
";

const MIGRATE_V1_TO_V2: &str = "
ALTER TABLE tasks ADD COLUMN flap_streak INTEGER NOT NULL DEFAULT 0;
CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL,
                    user TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
                    details TEXT NOT NULL);
";

fn state_from_name(name: &str) -> Option<ScheduleStatus> {
    use ScheduleStatus::*;
    Some(match name {
        "PENDING" => Pending,
        "ASSIGNED" => Assigned,
        "STARTING" => Starting,
        "RUNNING" => Running,
        "FINISHED" => Finished,
        "FAILED" => Failed,
        "KILLING" => Killing,
        "KILLED" => Killed,
        "LOST" => Lost,
        "RESTARTING" => Restarting,
        "THROTTLED" => Throttled,
        "DRAINING" => Draining,
        "PREEMPTING" => Preempting,
        _ => return None,
    })
}

fn mode_name(m: HostMode) -> &'static str {
    match m {
        HostMode::None => "NONE",
        HostMode::Scheduled => "SCHEDULED",
        HostMode::Draining => "DRAINING",
        HostMode::Drained => "DRAINED",
    }
}

fn mode_from_name(name: &str) -> HostMode {
    match name {
        "SCHEDULED" => HostMode::Scheduled,
        "DRAINING" => HostMode::Draining,
        "DRAINED" => HostMode::Drained,
        _ => HostMode::None,
    }
}

/// A task's events as stored: `[[ms, "STATE", message|null], ...]`.
type EventRow<'a> = (i64, &'a str, Option<String>);

impl SqliteStorage {
    /// Open (creating or migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<SqliteStorage, StorageError> {
        let err = |source| StorageError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "OFF")
            .map_err(err)?;
        let mut s = SqliteStorage {
            path: path.to_owned(),
            conn,
        };
        s.migrate()?;
        Ok(s)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
        |source| StorageError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// The schema version of the open file.
    pub fn version(&self) -> Result<i64, StorageError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(self.err())
    }

    fn migrate(&mut self) -> Result<(), StorageError> {
        let found = self.version()?;
        if found > SCHEMA_VERSION {
            return Err(StorageError::TooNew {
                path: self.path.clone(),
                found,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |source| StorageError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        if found < 1 {
            tx.execute_batch(SCHEMA_V1).map_err(err)?;
        }
        if found < 2 {
            tx.execute_batch(MIGRATE_V1_TO_V2).map_err(err)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        if found > 0 {
            tracing::info!(
                "storage {}: migrated schema {found} -> {SCHEMA_VERSION}",
                self.path.display()
            );
        }
        Ok(())
    }

    fn corrupt(&self, what: &'static str, key: &str, reason: impl ToString) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            what,
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// Fold the write-ahead log into the database file.
    pub fn checkpoint(&self) -> Result<(), StorageError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(self.err())
    }

    /// Read the newest `limit` audit entries (newest first).
    pub fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StorageError> {
        read_audit(&self.conn, limit).map_err(self.err())
    }

    /// Write a consistent copy of the database to `dest` (which must not exist).
    pub fn backup_to(&self, dest: &Path) -> Result<(), StorageError> {
        backup_connection(&self.conn, dest).map_err(self.err())
    }
}

/// Read audit entries from any connection.
pub fn read_audit(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare(
        "SELECT id, ts, user, action, target, details FROM audit ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([i64::from(limit)], |r| {
        Ok(AuditEntry {
            id: r.get(0)?,
            timestamp_ms: r.get(1)?,
            user: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            details: r.get(5)?,
        })
    })?;
    rows.collect()
}

/// `VACUUM INTO`: a compact, consistent copy of the committed state.
pub fn backup_connection(conn: &Connection, dest: &Path) -> rusqlite::Result<()> {
    let dest = dest.to_string_lossy().into_owned();
    conn.execute("VACUUM INTO ?1", [dest])?;
    Ok(())
}

/// Open a read-only connection to the database at `path` (backups, audit reads).
pub fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Serializing plain data (maps of strings and numbers) cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

impl Storage for SqliteStorage {
    fn load_base(&mut self) -> Result<Snapshot, StorageError> {
        let mut snap = Snapshot::default();
        let err = self.err();
        let get_meta = |key: &str| -> Result<Option<String>, StorageError> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(&err)
        };
        snap.meta = Meta {
            epoch: get_meta("epoch")?.and_then(|v| v.parse().ok()).unwrap_or(0),
            hold: get_meta("hold")?.is_some_and(|v| v == "1"),
            next_config_id: get_meta("next_config_id")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
        };
        {
            let mut stmt = self
                .conn
                .prepare("SELECT id, job, config FROM configs")
                .map_err(&err)?;
            let mut rows = stmt.query([]).map_err(&err)?;
            while let Some(r) = rows.next().map_err(&err)? {
                let id: i64 = r.get(0).map_err(&err)?;
                let job: String = r.get(1).map_err(&err)?;
                let text: String = r.get(2).map_err(&err)?;
                let key: JobKey = job
                    .parse()
                    .map_err(|e| self.corrupt("config", &id.to_string(), e))?;
                let v = serde_json::from_str(&text)
                    .map_err(|e| self.corrupt("config", &id.to_string(), e))?;
                snap.configs.push((id, key, v));
            }
        }
        {
            let mut stmt = self
                .conn
                .prepare("SELECT key, spec, config_id, created_ms FROM jobs")
                .map_err(&err)?;
            let mut rows = stmt.query([]).map_err(&err)?;
            while let Some(r) = rows.next().map_err(&err)? {
                let key: String = r.get(0).map_err(&err)?;
                let spec: String = r.get(1).map_err(&err)?;
                let spec: JobSpec =
                    serde_json::from_str(&spec).map_err(|e| self.corrupt("job", &key, e))?;
                snap.jobs
                    .push((spec, r.get(2).map_err(&err)?, r.get(3).map_err(&err)?));
            }
        }
        {
            let mut stmt = self
                .conn
                .prepare("SELECT name, agent_id, mode, attributes, resources, ports FROM hosts")
                .map_err(&err)?;
            let mut rows = stmt.query([]).map_err(&err)?;
            while let Some(r) = rows.next().map_err(&err)? {
                let name: String = r.get(0).map_err(&err)?;
                let mut h = Host::new(&name);
                h.agent_id = r.get(1).map_err(&err)?;
                let mode: String = r.get(2).map_err(&err)?;
                h.mode = mode_from_name(&mode);
                let a: String = r.get(3).map_err(&err)?;
                h.attributes =
                    serde_json::from_str(&a).map_err(|e| self.corrupt("host", &name, e))?;
                let res: String = r.get(4).map_err(&err)?;
                h.resources = serde_json::from_str::<ResourceVec>(&res)
                    .map_err(|e| self.corrupt("host", &name, e))?;
                let p: String = r.get(5).map_err(&err)?;
                h.ports = serde_json::from_str::<PortRange>(&p)
                    .map_err(|e| self.corrupt("host", &name, e))?;
                snap.hosts.push(h);
            }
        }
        Ok(snap)
    }

    fn count_tasks(&mut self) -> Result<usize, StorageError> {
        let count: i64 = self
            .conn
            .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .map_err(self.err())?;
        Ok(count.max(0) as usize)
    }

    fn load_tasks(&mut self, each: &mut dyn FnMut(Task)) -> Result<(), StorageError> {
        let err = self.err();
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT id, job, config_id, instance, state, host, ports, ancestor, \
                     failure_count, flap_streak, throttled_until, events, last_seq, \
                     assigned_epoch FROM tasks",
                )
                .map_err(&err)?;
            let mut rows = stmt.query([]).map_err(&err)?;
            let mut jobs: BTreeMap<String, Arc<JobKey>> = BTreeMap::new();
            let mut last: Option<(String, Arc<JobKey>)> = None;
            while let Some(r) = rows.next().map_err(&err)? {
                let id: String = r.get(0).map_err(&err)?;
                let text = |i: usize| -> Result<&str, StorageError> {
                    r.get_ref(i)
                        .map_err(&err)?
                        .as_str()
                        .map_err(|e| self.corrupt("task", &id, e))
                };
                let job_text = text(1)?;
                let job = match &last {
                    // Rows of one job usually follow each other.
                    Some((text, k)) if text == job_text => k.clone(),
                    _ => {
                        let k = match jobs.get(job_text) {
                            Some(k) => k.clone(),
                            None => {
                                let k: JobKey =
                                    job_text.parse().map_err(|e| self.corrupt("task", &id, e))?;
                                let k = Arc::new(k);
                                jobs.insert(job_text.to_owned(), k.clone());
                                k
                            }
                        };
                        last = Some((job_text.to_owned(), k.clone()));
                        k
                    }
                };
                let state = text(4)?;
                let state = state_from_name(state)
                    .ok_or_else(|| self.corrupt("task", &id, format!("state {state:?}")))?;
                let ports: BTreeMap<String, u16> = match r.get_ref(6).map_err(&err)? {
                    rusqlite::types::ValueRef::Null => BTreeMap::new(),
                    v => {
                        let bytes = v.as_bytes().map_err(|e| self.corrupt("task", &id, e))?;
                        serde_json::from_slice(bytes).map_err(|e| self.corrupt("task", &id, e))?
                    }
                };
                let events: Vec<EventRow<'_>> =
                    serde_json::from_str(text(11)?).map_err(|e| self.corrupt("task", &id, e))?;
                let mut evs = Vec::with_capacity(events.len());
                for (ts, s, message) in events {
                    let state = state_from_name(s)
                        .ok_or_else(|| self.corrupt("task", &id, format!("event state {s:?}")))?;
                    evs.push(TaskEvent {
                        timestamp_ms: ts,
                        state,
                        message,
                    });
                }
                let last_seq: Option<i64> = r.get(12).map_err(&err)?;
                let epoch: i64 = r.get(13).map_err(&err)?;
                each(Task {
                    id,
                    job,
                    config_id: r.get(2).map_err(&err)?,
                    instance: r.get(3).map_err(&err)?,
                    state,
                    host: r.get(5).map_err(&err)?,
                    ports: ports.into(),
                    ancestor: r.get(7).map_err(&err)?,
                    failure_count: r.get(8).map_err(&err)?,
                    flap_streak: r.get(9).map_err(&err)?,
                    throttled_until: r.get(10).map_err(&err)?,
                    events: evs,
                    last_seq: last_seq.map(|s| s.max(0) as u64),
                    assigned_epoch: epoch.max(0) as u64,
                    pending_reason: None,
                    placement_retry: None,
                    condition: None,
                    kill: None,
                });
            }
        }
        Ok(())
    }

    fn commit(&mut self, batch: &Batch<'_>) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |source| StorageError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        if let Some(m) = batch.meta {
            let mut st = tx
                .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
                .map_err(err)?;
            st.execute(params!["epoch", m.epoch.to_string()])
                .map_err(err)?;
            st.execute(params!["hold", if m.hold { "1" } else { "0" }])
                .map_err(err)?;
            st.execute(params!["next_config_id", m.next_config_id.to_string()])
                .map_err(err)?;
        }
        if !batch.configs.is_empty() {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO configs (id, job, config) VALUES (?1, ?2, ?3)",
                )
                .map_err(err)?;
            for (id, key, config) in &batch.configs {
                st.execute(params![id, key.to_string(), json(config)])
                    .map_err(err)?;
            }
        }
        if !batch.jobs.is_empty() {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO jobs (key, spec, config_id, created_ms) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            for (spec, config_id, created) in &batch.jobs {
                st.execute(params![
                    spec.key.to_string(),
                    json(spec),
                    config_id,
                    created
                ])
                .map_err(err)?;
            }
        }
        if !batch.deleted_jobs.is_empty() {
            let mut st = tx
                .prepare_cached("DELETE FROM jobs WHERE key = ?1")
                .map_err(err)?;
            let mut cf = tx
                .prepare_cached("DELETE FROM configs WHERE job = ?1")
                .map_err(err)?;
            for key in &batch.deleted_jobs {
                st.execute([key.to_string()]).map_err(err)?;
                cf.execute([key.to_string()]).map_err(err)?;
            }
        }
        if !batch.tasks.is_empty() {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO tasks (id, job, config_id, instance, state, host, \
                     ports, ancestor, failure_count, flap_streak, throttled_until, events, \
                     last_seq, assigned_epoch) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(err)?;
            for t in &batch.tasks {
                let events: Vec<(i64, &str, Option<&str>)> = t
                    .events
                    .iter()
                    .map(|e| (e.timestamp_ms, e.state.name(), e.message.as_deref()))
                    .collect();
                let ports = (!t.ports.is_empty()).then(|| json(&t.ports.to_map()));
                st.execute(params![
                    t.id,
                    t.job.to_string(),
                    t.config_id,
                    t.instance,
                    t.state.name(),
                    t.host,
                    ports,
                    t.ancestor,
                    t.failure_count,
                    t.flap_streak,
                    t.throttled_until,
                    json(&events),
                    t.last_seq.map(|s| s.min(i64::MAX as u64) as i64),
                    t.assigned_epoch.min(i64::MAX as u64) as i64,
                ])
                .map_err(err)?;
            }
        }
        if !batch.deleted_tasks.is_empty() {
            let mut st = tx
                .prepare_cached("DELETE FROM tasks WHERE id = ?1")
                .map_err(err)?;
            for id in &batch.deleted_tasks {
                st.execute([id]).map_err(err)?;
            }
        }
        if !batch.hosts.is_empty() {
            let mut st = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO hosts (name, agent_id, mode, attributes, resources, \
                     ports) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(err)?;
            for h in &batch.hosts {
                st.execute(params![
                    h.name,
                    h.agent_id,
                    mode_name(h.mode),
                    json(&h.attributes),
                    json(&h.resources),
                    json(&h.ports),
                ])
                .map_err(err)?;
            }
        }
        if !batch.audit.is_empty() {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO audit (ts, user, action, target, details) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            for a in &batch.audit {
                st.execute(params![
                    a.timestamp_ms,
                    a.user,
                    a.action,
                    a.target,
                    a.details
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(())
    }
}

/// Commit `state`'s changes to `storage`; on success clear the marks and return the time taken.
pub fn commit_state(
    storage: &mut dyn Storage,
    state: &mut State,
) -> Result<std::time::Duration, StorageError> {
    let start = Instant::now();
    let batch = Batch::from_state(state);
    if batch.is_empty() {
        state.dirty = Default::default();
        return Ok(std::time::Duration::ZERO);
    }
    storage.commit(&batch)?;
    drop(batch);
    state.dirty = Default::default();
    Ok(start.elapsed())
}

/// Load everything `storage` holds into a fresh `state`.
pub fn load_state(
    storage: &mut dyn Storage,
    state: &mut State,
    now: i64,
) -> Result<(), StorageError> {
    let snap = storage.load_base()?;
    state.load_base(snap.meta, snap.configs, snap.jobs, snap.hosts, now);
    let mut ended = Vec::new();
    let n = storage.count_tasks()?;
    state.tasks.reserve(n);
    // Reading and decoding rows on one thread, building the model on this one: a restart with
    // many tasks uses both cores.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Task>>(64);
    let read = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut chunk = Vec::with_capacity(LOAD_CHUNK);
            let r = storage.load_tasks(&mut |t| {
                chunk.push(t);
                if chunk.len() == LOAD_CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
                    // The receiver only goes away if this thread's caller panicked.
                    let _ = tx.send(full);
                }
            });
            let _ = tx.send(chunk);
            r
        });
        for chunk in rx {
            for t in chunk {
                state.load_task(t, now, &mut ended);
            }
        }
        reader.join()
    });
    match read {
        Ok(r) => r?,
        Err(panic) => std::panic::resume_unwind(panic),
    }
    state.load_done(ended);
    Ok(())
}

/// Tasks handed from the reading thread to the building one at a time.
const LOAD_CHUNK: usize = 512;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::lifecycle::LifecycleConfig;
    use serde_json::json;

    fn job_config() -> serde_json::Value {
        json!({
            "instances": 2, "service": true,
            "task": {"name": "t", "processes": [{"name": "p", "cmdline": "sleep 100"}],
                     "resources": {"cpu": 0.1, "ram": 1024, "disk": 1024}}
        })
    }

    fn state() -> State {
        State::new(LifecycleConfig::default(), 60_000, None)
    }

    #[test]
    fn a_committed_state_loads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut st = SqliteStorage::open(&path).unwrap();
        let mut s = state();
        let key: JobKey = "c/r/prod/j".parse().unwrap();
        s.create_job(key.clone(), job_config(), "alice", 1000)
            .unwrap();
        s.drain_host("h1", "bob", 1000);
        commit_state(&mut st, &mut s).unwrap();
        assert!(s.dirty.is_empty());
        drop(st);

        let mut st = SqliteStorage::open(&path).unwrap();
        let mut t = state();
        load_state(&mut st, &mut t, 2000).unwrap();
        assert_eq!(t.tasks.len(), 2);
        for (id, task) in &s.tasks {
            assert_eq!(t.tasks.get(id), Some(task));
        }
        assert_eq!(t.jobs[&key].active.len(), 2);
        assert_eq!(t.hosts["h1"].mode, HostMode::Drained);
        assert_eq!(t.meta(), s.meta());
        let audit = st.audit(10).unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(audit[1].user, "alice");
        assert_eq!(audit[1].action, "createJob");
        assert_eq!(audit[0].action, "drainHosts");
        t.check_invariants().unwrap();
    }

    #[test]
    fn a_version_1_file_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let spec =
                crate::model::parse_job(&"c/r/prod/j".parse().unwrap(), &job_config()).unwrap();
            conn.execute(
                "INSERT INTO configs VALUES (1, 'c/r/prod/j', ?1)",
                [job_config().to_string()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO jobs VALUES ('c/r/prod/j', ?1, 1, 5)",
                [serde_json::to_string(&spec).unwrap()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO tasks (id, job, config_id, instance, state, failure_count, events, \
                 assigned_epoch) VALUES ('r-prod-j-0-5-0001', 'c/r/prod/j', 1, 0, 'PENDING', 2, \
                 '[[5,\"PENDING\",null]]', 0)",
                [],
            )
            .unwrap();
        }
        let mut st = SqliteStorage::open(&path).unwrap();
        assert_eq!(st.version().unwrap(), SCHEMA_VERSION);
        let snap = st.load().unwrap();
        assert_eq!(snap.tasks.len(), 1);
        assert_eq!(snap.tasks[0].failure_count, 2);
        assert_eq!(snap.tasks[0].flap_streak, 0);
        assert!(st.audit(5).unwrap().is_empty(), "audit table exists");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let e = SqliteStorage::open(&path).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[test]
    fn backups_are_complete_copies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut st = SqliteStorage::open(&path).unwrap();
        let mut s = state();
        s.create_job("c/r/prod/j".parse().unwrap(), job_config(), "a", 1)
            .unwrap();
        commit_state(&mut st, &mut s).unwrap();
        let copy = dir.path().join("copy.db");
        let reader = open_reader(&path).unwrap();
        backup_connection(&reader, &copy).unwrap();
        let mut st2 = SqliteStorage::open(&copy).unwrap();
        assert_eq!(st2.load().unwrap().tasks.len(), 2);
    }
}
