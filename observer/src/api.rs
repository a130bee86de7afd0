//! The JSON API, `/metrics` and `/health`, and the lookups the HTML pages share with them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hearth_checkpoints::record::{ProcessState, TaskState};
use hearth_checkpoints::replay::ProcessRun;
use serde_json::{Value, json};

use crate::chunk::{ChunkRequest, read_chunk};
use crate::error::ApiError;
use crate::safepath;
use crate::store::{Observer, TaskCell, Which};
use crate::usage::Usage;

pub type AppState = Arc<Observer>;

/// Default page size of task lists (Thermos's).
pub const DEFAULT_NUM: usize = 20;
/// Largest page size served.
pub const MAX_NUM: usize = 1000;

/// The task, current, or 404.
pub fn task(obs: &Observer, task_id: &str) -> Result<Arc<TaskCell>, ApiError> {
    obs.fresh_task(task_id)
        .ok_or_else(|| ApiError::UnknownTask {
            task_id: task_id.to_owned(),
        })
}

/// Parse `type`, `offset` and `num` of a list request (Thermos's defaults: all, 0, 20).
pub fn list_params(
    which: Option<&str>,
    offset: Option<&str>,
    num: Option<&str>,
) -> Result<(Which, i64, usize), ApiError> {
    let which = match which {
        None => Which::All,
        Some(w) => Which::parse(w).ok_or_else(|| ApiError::BadParam {
            field: "type",
            value: w.to_owned(),
        })?,
    };
    let offset = match offset {
        None => 0,
        Some(o) => o.parse::<i64>().map_err(|_| ApiError::BadParam {
            field: "offset",
            value: o.to_owned(),
        })?,
    };
    let num = match num {
        None => DEFAULT_NUM,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => n.min(MAX_NUM),
            _ => {
                return Err(ApiError::BadParam {
                    field: "num",
                    value: n.to_owned(),
                });
            }
        },
    };
    Ok((which, offset, num))
}

/// `/j/task_ids`.
pub async fn task_ids_bare(State(obs): State<AppState>) -> Result<Response, ApiError> {
    task_ids_reply(&obs, &HashMap::new())
}

/// `/j/task_ids/{type}[/{offset}[/{num}]]`.
pub async fn task_ids(
    State(obs): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    task_ids_reply(&obs, &p)
}

fn task_ids_reply(obs: &Observer, p: &HashMap<String, String>) -> Result<Response, ApiError> {
    let (which, offset, num) = list_params(
        p.get("type").map(String::as_str),
        p.get("offset").map(String::as_str),
        p.get("num").map(String::as_str),
    )?;
    let (cells, total) = obs.page(which, offset, num);
    let ids: Vec<&str> = cells.iter().map(|c| c.task_id.as_str()).collect();
    Ok(Json(json!({
        "task_ids": ids,
        "type": which.name(),
        "offset": offset,
        "num": num,
        "task_count": total,
    }))
    .into_response())
}

fn usage_json(u: &Usage) -> Value {
    json!({ "cpu": u.cpu, "ram": u.ram, "disk": u.disk })
}

/// One task as served by `/j/task`: the replay in `hearth inspect --json`'s shape, plus the
/// config's name and resources and the measured usage.
pub fn task_json(obs: &Observer, cell: &TaskCell) -> Value {
    let mut v = hearth_checkpoints::inspect::to_json(&obs.loaded(cell));
    let d = cell.lock();
    if let Some(map) = v.as_object_mut() {
        map.insert("name".into(), json!(d.config.name));
        map.insert("active".into(), json!(d.summary.active));
        map.insert("state_timestamp_ms".into(), json!(d.summary.state_since_ms));
        map.insert(
            "resources".into(),
            json!({ "cpu": d.config.cpu, "ram": d.config.ram, "disk": d.config.disk }),
        );
        map.insert("resource_consumption".into(), usage_json(&d.usage));
        map.insert("pressure".into(), json!(d.pressure));
    }
    v
}

/// `/j/task/{id}`.
pub async fn task_one(
    State(obs): State<AppState>,
    Path(task_id): Path<String>,
) -> Result<Response, ApiError> {
    let cell = task(&obs, &task_id)?;
    let mut out = serde_json::Map::new();
    out.insert(task_id, task_json(&obs, &cell));
    Ok(Json(Value::Object(out)).into_response())
}

/// `/j/task?task_id=a,b`.
pub async fn task_many(
    State(obs): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let ids: Vec<&str> = q
        .get("task_id")
        .map(|s| s.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mut out = serde_json::Map::new();
    let mut missing = Vec::new();
    for id in ids {
        match obs.fresh_task(id) {
            Some(cell) => {
                out.insert(id.to_owned(), task_json(&obs, &cell));
            }
            None => missing.push(id.to_owned()),
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::UnknownTasks { task_ids: missing });
    }
    Ok(Json(Value::Object(out)).into_response())
}

/// Find a run of a process. `run` is an index; negative counts from the end (`-1` is the latest
/// run, as in Thermos); absent means the latest.
pub fn find_run(
    cell: &TaskCell,
    process: &str,
    run: Option<&str>,
) -> Result<(Vec<ProcessRun>, usize), ApiError> {
    let d = cell.lock();
    let runs = d
        .tail
        .replay()
        .processes
        .get(process)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::UnknownProcess {
            task_id: cell.task_id.clone(),
            process: process.to_owned(),
        })?;
    let unknown = || ApiError::UnknownRun {
        task_id: cell.task_id.clone(),
        process: process.to_owned(),
        run: run.unwrap_or("").to_owned(),
    };
    let idx = match run {
        None => runs.len() - 1,
        Some(r) => {
            let n: i64 = r.parse().map_err(|_| unknown())?;
            let len = runs.len() as i64;
            let i = if n < 0 { n + len } else { n };
            if i < 0 || i >= len {
                return Err(unknown());
            }
            usize::try_from(i).map_err(|_| unknown())?
        }
    };
    Ok((runs.clone(), idx))
}

/// One run as JSON (Thermos's process tuple, with Hearth's extra fields).
pub fn run_json(cell: &TaskCell, process: &str, run: &ProcessRun) -> Value {
    let mut v = json!({
        "process_name": process,
        "process_run": run.run,
        "state": run.state.name(),
        "pid": run.pid,
        "start_time": run.start_time,
        "stop_time": run.stop_time,
        "return_code": run.return_code,
        "signal": run.signal,
        "reason": run.reason,
    });
    if matches!(run.state, ProcessState::Running | ProcessState::Forked)
        && let Some(map) = v.as_object_mut()
    {
        let d = cell.lock();
        let used = d
            .processes
            .get(process)
            .map(|p| p.usage)
            .unwrap_or_default();
        map.insert("used".into(), usage_json(&used));
    }
    v
}

/// `/j/process/{id}/{process}[/{run}]`.
pub async fn process(
    State(obs): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let task_id = p.get("task_id").map(String::as_str).unwrap_or_default();
    let process = p.get("process").map(String::as_str).unwrap_or_default();
    let cell = task(&obs, task_id)?;
    let (runs, idx) = find_run(&cell, process, p.get("run").map(String::as_str))?;
    let run = runs.get(idx).ok_or_else(|| ApiError::UnknownRun {
        task_id: task_id.to_owned(),
        process: process.to_owned(),
        run: idx.to_string(),
    })?;
    Ok(Json(run_json(&cell, process, run)).into_response())
}

/// Open the log of a run: `<log base>/<process>/<run>/<stdout|stderr>`, checked to lie inside
/// the log base after resolving symlinks.
pub fn open_log(
    obs: &Observer,
    cell: &TaskCell,
    process: &str,
    run: &str,
    log_type: &str,
) -> Result<(File, u32), ApiError> {
    if log_type != "stdout" && log_type != "stderr" {
        return Err(ApiError::UnknownLogType {
            log_type: log_type.to_owned(),
        });
    }
    let (runs, idx) = find_run(cell, process, Some(run))?;
    let run_no = runs.get(idx).map_or(0, |r| r.run);
    let base = obs.log_base(cell).ok_or_else(|| ApiError::NoLogs {
        task_id: cell.task_id.clone(),
    })?;
    // The process name comes from the checkpoint: it must be one plain component.
    let parts = safepath::components(process).map_err(|source| ApiError::Path {
        task_id: cell.task_id.clone(),
        source,
    })?;
    if parts.len() != 1 {
        return Err(ApiError::Path {
            task_id: cell.task_id.clone(),
            source: safepath::PathError::Refused {
                path: process.to_owned(),
                reason: "process name is not one path component",
            },
        });
    }
    let rel = format!("{process}/{run_no}/{log_type}");
    let (file, _) = safepath::open_file(&base, &rel).map_err(|source| ApiError::Path {
        task_id: cell.task_id.clone(),
        source,
    })?;
    Ok((file, run_no))
}

/// Parse `offset` and `length` from a query string.
pub fn chunk_request(q: &HashMap<String, String>) -> Result<ChunkRequest, ApiError> {
    let get = |field: &'static str| -> Result<Option<i64>, ApiError> {
        match q.get(field).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| ApiError::BadParam {
                field,
                value: v.to_owned(),
            }),
        }
    };
    Ok(ChunkRequest {
        offset: get("offset")?,
        length: get("length")?,
    })
}

fn chunk_reply(task_id: &str, file: &File, req: ChunkRequest) -> Result<Response, ApiError> {
    let chunk = read_chunk(file, req).map_err(|source| ApiError::Io {
        op: "read",
        task_id: task_id.to_owned(),
        source,
    })??;
    Ok(Json(chunk).into_response())
}

/// `/logdata/{id}/{process}/{run}/{type}?offset=&length=`.
pub async fn logdata(
    State(obs): State<AppState>,
    Path((task_id, process, run, log_type)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let req = chunk_request(&q)?;
    let cell = task(&obs, &task_id)?;
    let (file, _) = open_log(&obs, &cell, &process, &run, &log_type)?;
    chunk_reply(&task_id, &file, req)
}

/// Open a file of the task's sandbox.
pub fn open_sandbox_file(
    obs: &Observer,
    cell: &TaskCell,
    path: &str,
) -> Result<(File, std::path::PathBuf), ApiError> {
    let sandbox = obs.sandbox(cell).ok_or_else(|| ApiError::NoSandbox {
        task_id: cell.task_id.clone(),
    })?;
    safepath::open_file(&sandbox, path).map_err(|source| ApiError::Path {
        task_id: cell.task_id.clone(),
        source,
    })
}

/// `/filedata/{id}/{*path}?offset=&length=`.
pub async fn filedata(
    State(obs): State<AppState>,
    Path((task_id, path)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let req = chunk_request(&q)?;
    let cell = task(&obs, &task_id)?;
    let (file, _) = open_sandbox_file(&obs, &cell, &path)?;
    chunk_reply(&task_id, &file, req)
}

/// `/health`.
pub async fn health() -> &'static str {
    "ok\n"
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Metric families, each with its help text and samples, written in order.
struct Families(Vec<(&'static str, &'static str, String)>);

impl Families {
    fn add(&mut self, name: &'static str, labels: &str, value: impl std::fmt::Display) {
        if let Some(f) = self.0.iter_mut().find(|f| f.0 == name) {
            let _ = writeln!(f.2, "{name}{{{labels}}} {value}");
        }
    }
}

/// `/metrics`: Prometheus text format.
pub async fn metrics(State(obs): State<AppState>) -> Response {
    let mut f = Families(
        [
            (
                "hearth_observer_tasks",
                "Tasks the observer knows, by list.",
            ),
            ("hearth_task_state", "1 for the state the task is in."),
            ("hearth_task_cpu_cores", "CPU cores used by the task."),
            ("hearth_task_memory_bytes", "Memory used by the task."),
            ("hearth_task_disk_bytes", "Disk used by the task's sandbox."),
            (
                "hearth_task_cpu_pressure_some_avg10",
                "Percent of the last 10 s some of the task's processes waited for CPU (cgroup v2).",
            ),
            (
                "hearth_task_memory_pressure_some_avg10",
                "Percent of the last 10 s some of the task's processes waited for memory (cgroup v2).",
            ),
            (
                "hearth_task_memory_pressure_full_avg10",
                "Percent of the last 10 s all of the task's processes waited for memory (cgroup v2).",
            ),
            (
                "hearth_task_io_pressure_some_avg10",
                "Percent of the last 10 s some of the task's processes waited for I/O (cgroup v2).",
            ),
            (
                "hearth_task_io_read_bytes",
                "Bytes the task has read from block devices (cgroup v2).",
            ),
            (
                "hearth_task_io_write_bytes",
                "Bytes the task has written to block devices (cgroup v2).",
            ),
            (
                "hearth_process_state",
                "1 for the state of the process's latest run.",
            ),
            (
                "hearth_process_restarts",
                "Runs of the process after its first.",
            ),
            (
                "hearth_process_last_exit_code",
                "Exit code of the process's latest ended run.",
            ),
            (
                "hearth_process_cpu_cores",
                "CPU cores used by the running process.",
            ),
            (
                "hearth_process_memory_bytes",
                "Resident memory of the running process.",
            ),
        ]
        .into_iter()
        .map(|(n, h)| (n, h, String::new()))
        .collect(),
    );
    for w in [Which::Active, Which::Finished] {
        f.add(
            "hearth_observer_tasks",
            &format!("type=\"{}\"", w.name()),
            obs.count(w),
        );
    }
    let mut cells = obs.all_tasks();
    cells.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    for cell in cells {
        let d = cell.lock();
        let t = format!("task_id=\"{}\"", label(&cell.task_id));
        let state: TaskState = d.summary.state;
        f.add(
            "hearth_task_state",
            &format!("{t},state=\"{}\"", state.name()),
            1,
        );
        if let Some(c) = d.usage.cpu {
            f.add("hearth_task_cpu_cores", &t, c);
        }
        if let Some(m) = d.usage.ram {
            f.add("hearth_task_memory_bytes", &t, m);
        }
        if let Some(b) = d.usage.disk {
            f.add("hearth_task_disk_bytes", &t, b);
        }
        let p = &d.pressure;
        for (name, value) in [
            ("hearth_task_cpu_pressure_some_avg10", p.cpu_some_avg10),
            (
                "hearth_task_memory_pressure_some_avg10",
                p.memory_some_avg10,
            ),
            (
                "hearth_task_memory_pressure_full_avg10",
                p.memory_full_avg10,
            ),
            ("hearth_task_io_pressure_some_avg10", p.io_some_avg10),
        ] {
            if let Some(v) = value {
                f.add(name, &t, v);
            }
        }
        if let Some(b) = p.io_read_bytes {
            f.add("hearth_task_io_read_bytes", &t, b);
        }
        if let Some(b) = p.io_write_bytes {
            f.add("hearth_task_io_write_bytes", &t, b);
        }
        for (name, runs) in &d.tail.replay().processes {
            let Some(last) = runs.last() else { continue };
            let p = format!("{t},process=\"{}\"", label(name));
            f.add(
                "hearth_process_state",
                &format!("{p},state=\"{}\"", last.state.name()),
                1,
            );
            f.add("hearth_process_restarts", &p, runs.len() - 1);
            if let Some(rc) = runs.iter().rev().find_map(|r| r.return_code) {
                f.add("hearth_process_last_exit_code", &p, rc);
            }
            if let Some(u) = d.processes.get(name) {
                if let Some(c) = u.usage.cpu {
                    f.add("hearth_process_cpu_cores", &p, c);
                }
                if let Some(m) = u.usage.ram {
                    f.add("hearth_process_memory_bytes", &p, m);
                }
            }
        }
    }
    let mut out = String::new();
    for (name, help, samples) in f.0 {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        out.push_str(&samples);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
