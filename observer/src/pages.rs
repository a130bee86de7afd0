//! Server-rendered HTML pages. Every page works without JavaScript; the log and file viewers
//! add a small script that follows the file as it grows and pages backwards.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use hearth_checkpoints::replay::ProcessRun;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::api::{self, AppState, find_run, list_params, open_log, open_sandbox_file, task};
use crate::chunk::{ChunkRequest, read_chunk};
use crate::error::ApiError;
use crate::safepath;
use crate::store::{Observer, TaskCell, Which};
use crate::usage::Usage;

/// Bytes of a log shown when a viewer opens, and fetched per "older" click.
pub const VIEW_CHUNK: u64 = 64 * 1024;
/// Most directory entries listed on one page.
pub const MAX_LISTING: usize = 5000;

/// An error, as an HTML page.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let msg = self.0.public_message();
        let body = layout(
            &format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
            html! {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.error { (msg) }
                p { a href="/" { "Back to the task list" } }
            },
        );
        (status, Html(body.into_string())).into_response()
    }
}

type PageResult = Result<Response, PageError>;

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
a{color:#0645ad;text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #ddd;padding:.25em .7em;text-align:left;font-size:.92em;vertical-align:top}
th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.tabs a{padding:.3em .8em;border:1px solid #ccc;border-bottom:none;margin-right:.2em}
.tabs a.on{background:#eee;font-weight:bold}
.state-SUCCESS{color:#080}.state-FAILED,.state-LOST{color:#b00}.state-KILLED{color:#a50}
.state-RUNNING,.state-ACTIVE{color:#06c}
pre.log{background:#111;color:#ddd;padding:.8em;max-height:75vh;overflow:auto;white-space:pre-wrap}
.error{color:#b00}.muted{color:#777}
nav{margin-bottom:1em}
"#;

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " — Hearth observer" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { a href="/" { "Hearth observer" } }
                (body)
            }
        }
    }
}

fn page(title: &str, body: Markup) -> Response {
    Html(layout(title, body).into_string()).into_response()
}

/// Percent-encode one URL path segment.
pub fn enc(seg: &str) -> String {
    let mut s = String::with_capacity(seg.len());
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Percent-encode a relative path, keeping its `/` separators.
pub fn enc_path(path: &str) -> String {
    path.split('/')
        .filter(|p| !p.is_empty())
        .map(enc)
        .collect::<Vec<_>>()
        .join("/")
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn fmt_time(secs: f64) -> String {
    if !secs.is_finite() {
        return String::new();
    }
    let total = secs.floor() as i64;
    let days = total.div_euclid(86_400);
    let rem = total.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn fmt_pct(p: Option<f64>) -> String {
    p.map_or_else(|| "-".to_owned(), |p| format!("{p:.2} %"))
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.map(|m| fmt_time(m as f64 / 1000.0)).unwrap_or_default()
}

/// A duration as `1d 2h`, `3h 4m`, `5m 6s` or `7.8s`.
pub fn fmt_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return String::new();
    }
    let s = secs as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Bytes as `1.5 GiB`.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn fmt_cpu(c: Option<f64>) -> String {
    c.map(|c| format!("{c:.2}")).unwrap_or_default()
}

fn fmt_opt_bytes(b: Option<u64>) -> String {
    b.map(fmt_bytes).unwrap_or_default()
}

fn state_cell(name: &str) -> Markup {
    html! { span class=(format!("state-{name}")) { (name) } }
}

/// `/`.
pub async fn index(State(obs): State<AppState>) -> PageResult {
    main_page(&obs, Which::Active, 0, api::DEFAULT_NUM)
}

/// `/main/{type}[/{offset}[/{num}]]`.
pub async fn main_with(
    State(obs): State<AppState>,
    Path(p): Path<HashMap<String, String>>,
) -> PageResult {
    let (which, offset, num) = list_params(
        p.get("type").map(String::as_str),
        p.get("offset").map(String::as_str),
        p.get("num").map(String::as_str),
    )?;
    main_page(&obs, which, offset, num)
}

/// `/main`.
pub async fn main_bare(State(obs): State<AppState>) -> PageResult {
    main_page(&obs, Which::Active, 0, api::DEFAULT_NUM)
}

fn main_page(obs: &Observer, which: Which, offset: i64, num: usize) -> PageResult {
    let (cells, total) = obs.page(which, offset, num);
    let rows: Vec<_> = cells.iter().map(|c| c.summary()).collect();
    let start = if offset < 0 {
        (total as i64 + offset).max(0)
    } else {
        offset
    };
    let now = now_secs();
    let tab = |w: Which, label: &str| {
        html! {
            a class=@if w == which { "on" } href=(format!("/main/{}/0/{num}", w.name())) {
                (label) " (" (obs.count(w)) ")"
            }
        }
    };
    let body = html! {
        h1 { "Tasks" }
        div.tabs {
            (tab(Which::Active, "Active")) (tab(Which::Finished, "Finished")) (tab(Which::All, "All"))
        }
        table #tasks {
            thead { tr {
                th { "Task" } th { "Name" } th { "Role" } th { "Launched" } th { "State" }
                th { "In state" } th { "CPU" } th { "RAM" } th { "Disk" }
            } }
            tbody {
                @for s in &rows {
                    tr {
                        td { a href=(format!("/task/{}", enc(&s.task_id))) { (s.task_id) } }
                        td { (s.name.as_deref().unwrap_or("")) }
                        td { (s.role.as_deref().unwrap_or("")) }
                        td { (fmt_ms(s.launch_time_ms)) }
                        td { (state_cell(s.state.name())) }
                        td.num { (s.state_since_ms.map(|m| fmt_duration(now - m as f64 / 1000.0)).unwrap_or_default()) }
                        td.num { (fmt_cpu(s.usage.cpu)) }
                        td.num { (fmt_opt_bytes(s.usage.ram)) }
                        td.num { (fmt_opt_bytes(s.usage.disk)) }
                    }
                }
            }
        }
        p {
            @if start > 0 {
                a #prev href=(format!("/main/{}/{}/{num}", which.name(), (start - num as i64).max(0))) { "« newer" } " "
            }
            span.muted { (start + i64::from(!rows.is_empty())) "–" (start + rows.len() as i64) " of " (total) }
            @if (start as usize).saturating_add(rows.len()) < total {
                " " a #next href=(format!("/main/{}/{}/{num}", which.name(), start + rows.len() as i64)) { "older »" }
            }
        }
    };
    let body = html! {
        (body)
        @if which == Which::Active {
            // Active tasks change: refresh the list every 10 s (the page works without it).
            script { (PreEscaped("setTimeout(function(){location.reload();},10000);")) }
        }
    };
    Ok(page("Tasks", body))
}

fn run_duration(r: &ProcessRun, now: f64) -> Option<f64> {
    let start = r.start_time.or(r.fork_time)?;
    let stop = r
        .stop_time
        .unwrap_or(if r.state.is_terminal() { start } else { now });
    Some(stop - start)
}

fn exit_text(r: &ProcessRun) -> String {
    match (r.signal, r.return_code) {
        (Some(sig), _) => format!("signal {sig}"),
        (None, Some(rc)) => format!("rc {rc}"),
        _ => String::new(),
    }
}

fn log_links(task_id: &str, process: &str, run: u32) -> Markup {
    html! {
        a href=(format!("/logs/{}/{}/{run}/stdout", enc(task_id), enc(process))) { "stdout" } " "
        a href=(format!("/logs/{}/{}/{run}/stderr", enc(task_id), enc(process))) { "stderr" }
    }
}

fn usage_cells(u: &Usage) -> Markup {
    html! { td.num { (fmt_cpu(u.cpu)) } td.num { (fmt_opt_bytes(u.ram)) } }
}

/// `/task/{id}`.
pub async fn task_page(State(obs): State<AppState>, Path(task_id): Path<String>) -> PageResult {
    let cell = task(&obs, &task_id)?;
    let sandbox = obs.sandbox(&cell);
    let d = cell.lock();
    let replay = d.tail.replay().clone();
    let header = replay.header.clone().unwrap_or_default();
    let summary = d.summary.clone();
    let config = d.config.clone();
    let usage = d.usage;
    let proc_usage: HashMap<String, Usage> = d
        .processes
        .iter()
        .map(|(k, v)| (k.clone(), v.usage))
        .collect();
    let warning = stream_warning(&d.tail.replayed().end);
    let condition = d.condition.clone();
    let pressure = d.pressure;
    drop(d);
    let now = now_secs();
    let host = header
        .hostname
        .clone()
        .unwrap_or_else(|| "localhost".into());
    let mut names: Vec<String> = config.processes.clone();
    for n in replay.processes.keys() {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let eid = enc(&task_id);
    let body = html! {
        h1 { "Task " (task_id) }
        @if let Some(c) = condition { p.error #condition { "WARNING: " (c.summary(|ms| fmt_ms(Some(ms)))) } }
        @if let Some(w) = warning { p.error { (w) } }
        table #header {
            tr { th { "Name" } td { (config.name.as_deref().unwrap_or("")) } }
            tr { th { "State" } td { (state_cell(summary.state.name())) " since " (fmt_ms(summary.state_since_ms)) } }
            tr { th { "Role" } td { (header.user.as_deref().unwrap_or("")) } }
            tr { th { "Host" } td { (host) } }
            tr { th { "Launched" } td { (fmt_ms(summary.launch_time_ms)) } }
            tr { th { "Sandbox" } td {
                @if sandbox.is_some() { a href=(format!("/browse/{eid}/")) { (header.sandbox.as_deref().unwrap_or("")) } }
                @else { (header.sandbox.as_deref().unwrap_or("")) " " span.muted { "(not on this host)" } }
            } }
            tr { th { "Raw" } td { a href=(format!("/rawtask/{eid}")) { "replayed checkpoint" } " · " a href=(format!("/j/task/{eid}")) { "JSON" } } }
        }
        h2 { "Resources" }
        table #resources {
            tr { th {} th { "CPU" } th { "RAM" } th { "Disk" } }
            tr { th { "Requested" } td.num { (fmt_cpu(config.cpu)) } td.num { (fmt_opt_bytes(config.ram)) } td.num { (fmt_opt_bytes(config.disk)) } }
            tr { th { "Used" } td.num { (fmt_cpu(usage.cpu)) } td.num { (fmt_opt_bytes(usage.ram)) } td.num { (fmt_opt_bytes(usage.disk)) } }
            @if !pressure.is_empty() {
                tr #pressure { th { "Pressure (10 s)" } td.num { (fmt_pct(pressure.cpu_some_avg10)) } td.num { (fmt_pct(pressure.memory_some_avg10)) " some, " (fmt_pct(pressure.memory_full_avg10)) " full" } td.num { "I/O " (fmt_pct(pressure.io_some_avg10)) "; read " (fmt_opt_bytes(pressure.io_read_bytes)) ", written " (fmt_opt_bytes(pressure.io_write_bytes)) } }
            }
        }
        @if !header.ports.is_empty() {
            h2 { "Ports" }
            table #ports { @for (name, port) in &header.ports {
                tr { th { (name) } td { a href=(format!("http://{host}:{port}/")) { (port) } } }
            } }
        }
        h2 { "Processes" }
        table #processes {
            tr { th { "Process" } th { "Runs" } th { "State" } th { "Pid" } th { "Exit" } th { "Reason" }
                 th { "Started" } th { "Duration" } th { "CPU" } th { "RAM" } th { "Logs" } }
            @for name in &names {
                @let runs = replay.processes.get(name);
                @let last = runs.and_then(|r| r.last());
                tr {
                    td { a href=(format!("/process/{eid}/{}", enc(name))) { (name) } }
                    td.num { (runs.map_or(0, Vec::len)) }
                    td { (state_cell(last.map_or("WAITING", |r| r.state.name()))) }
                    td.num { (last.and_then(|r| r.pid).map(|p| p.to_string()).unwrap_or_default()) }
                    td { (last.map(exit_text).unwrap_or_default()) }
                    td { (last.and_then(|r| r.reason.as_deref()).unwrap_or("")) }
                    td { (last.and_then(|r| r.start_time).map(fmt_time).unwrap_or_default()) }
                    td.num { (last.and_then(|r| run_duration(r, now)).map(fmt_duration).unwrap_or_default()) }
                    (usage_cells(&proc_usage.get(name).copied().unwrap_or_default()))
                    td { @if let Some(r) = last { (log_links(&task_id, name, r.run)) } }
                }
            }
        }
        h2 { "Status history" }
        table #statuses {
            tr { th { "State" } th { "Time" } th { "Reason" } }
            @for s in &replay.statuses {
                tr { td { (state_cell(s.state.name())) } td { (fmt_ms(Some(s.timestamp_ms))) } td { (s.reason.as_deref().unwrap_or("")) } }
            }
        }
        @if !replay.snoozes.is_empty() {
            h2 { "Health-check snoozes" }
            table { tr { th { "Event" } th { "Time" } th { "Expires" } th { "Detail" } }
                @for s in &replay.snoozes {
                    tr { td { (if s.active { "start" } else { "end" }) } td { (fmt_ms(Some(s.timestamp_ms))) }
                         td { (fmt_ms(s.expires_ms)) } td { (s.detail.as_deref().unwrap_or("")) } }
                }
            }
        }
        @if !replay.teardown.is_empty() {
            h2 { "Teardown" }
            table { tr { th { "Step" } th { "Time" } th { "Detail" } }
                @for t in &replay.teardown {
                    tr { td { (t.step.name()) } td { (fmt_ms(Some(t.timestamp_ms))) } td { (t.detail.as_deref().unwrap_or("")) } }
                }
            }
        }
    };
    Ok(page(&format!("Task {task_id}"), body))
}

fn stream_warning(end: &hearth_checkpoints::stream::StreamEnd) -> Option<String> {
    use hearth_checkpoints::stream::StreamEnd as E;
    match end {
        E::Clean | E::Torn { .. } => None,
        E::Corrupt { offset, detail } => Some(format!(
            "checkpoint stream corrupt at byte {offset}: {detail}; showing what came before"
        )),
        E::Invalid { offset, detail, .. } => Some(format!(
            "checkpoint stream has an invalid record at byte {offset}: {detail}; showing what came before"
        )),
    }
}

/// `/rawtask/{id}`.
pub async fn rawtask(State(obs): State<AppState>, Path(task_id): Path<String>) -> PageResult {
    let cell = task(&obs, &task_id)?;
    let v = api::task_json(&obs, &cell);
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    Ok(page(
        &format!("Raw task {task_id}"),
        html! {
            h1 { "Task " a href=(format!("/task/{}", enc(&task_id))) { (task_id) } ": replayed checkpoint" }
            pre #raw { (text) }
        },
    ))
}

/// `/process/{id}/{process}`.
pub async fn process_page(
    State(obs): State<AppState>,
    Path((task_id, process)): Path<(String, String)>,
) -> PageResult {
    let cell = task(&obs, &task_id)?;
    let (runs, _) = find_run(&cell, &process, None)?;
    let used = cell
        .lock()
        .processes
        .get(&process)
        .map(|p| p.usage)
        .unwrap_or_default();
    let now = now_secs();
    let body = html! {
        h1 { "Process " (process) " of " a href=(format!("/task/{}", enc(&task_id))) { (task_id) } }
        p { "CPU " (fmt_cpu(used.cpu)) " · RAM " (fmt_opt_bytes(used.ram)) }
        table #runs {
            tr { th { "Run" } th { "State" } th { "Pid" } th { "Exit" } th { "Reason" } th { "Started" }
                 th { "Stopped" } th { "Duration" } th { "Logs" } }
            @for r in runs.iter().rev() {
                tr {
                    td.num { (r.run) }
                    td { (state_cell(r.state.name())) }
                    td.num { (r.pid.map(|p| p.to_string()).unwrap_or_default()) }
                    td { (exit_text(r)) }
                    td { (r.reason.as_deref().unwrap_or("")) }
                    td { (r.start_time.map(fmt_time).unwrap_or_default()) }
                    td { (r.stop_time.map(fmt_time).unwrap_or_default()) }
                    td.num { (run_duration(r, now).map(fmt_duration).unwrap_or_default()) }
                    td { (log_links(&task_id, &process, r.run)) }
                }
            }
        }
    };
    Ok(page(&format!("{process} of {task_id}"), body))
}

const VIEWER_JS: &str = r#"
(function(){
  var pre=document.getElementById('content'), v=document.getElementById('viewer');
  var url=v.dataset.url, start=+v.dataset.start, end=+v.dataset.end, step=+v.dataset.step;
  var older=document.getElementById('older'), range=document.getElementById('range');
  function show(){if(range)range.textContent='bytes '+start+'\u2013'+end+' of '+end;}
  function get(q){return fetch(url+q).then(function(r){return r.json();});}
  function atBottom(){return pre.scrollTop+pre.clientHeight>=pre.scrollHeight-4;}
  function poll(){
    get('?offset='+end).then(function(c){
      if(c.length>0){var b=atBottom();pre.appendChild(document.createTextNode(c.data));end=c.offset+c.length;show();if(b)pre.scrollTop=pre.scrollHeight;}
      else if(c.size<end){end=c.size;}
    }).catch(function(){}).then(function(){setTimeout(poll,1000);});
  }
  if(older){older.addEventListener('click',function(e){
    e.preventDefault(); if(start<=0)return;
    var from=Math.max(0,start-step);
    get('?offset='+from+'&length='+(start-from)).then(function(c){
      pre.insertBefore(document.createTextNode(c.data),pre.firstChild);start=from;show();
      if(start<=0)older.remove();
    });
  });}
  pre.scrollTop=pre.scrollHeight;
  setTimeout(poll,1000);
})();
"#;

/// The log/file viewer around `file`: the chunk ending at `end` (default: the end of the file),
/// a link to the older bytes, and the script that follows the file.
fn viewer(
    title: &str,
    heading: Markup,
    file: &std::fs::File,
    data_url: &str,
    q: &HashMap<String, String>,
    task_id: &str,
) -> PageResult {
    let size = file
        .metadata()
        .map_err(|source| ApiError::Io {
            op: "stat",
            task_id: task_id.to_owned(),
            source,
        })?
        .len();
    let end = match q.get("end") {
        None => size,
        Some(v) => v.parse::<u64>().map_err(|_| ApiError::BadParam {
            field: "end",
            value: v.clone(),
        })?,
    }
    .min(size);
    let start = end.saturating_sub(VIEW_CHUNK);
    let req = ChunkRequest {
        offset: i64::try_from(start).ok(),
        length: i64::try_from(end - start).ok(),
    };
    let chunk = read_chunk(file, req)
        .map_err(|source| ApiError::Io {
            op: "read",
            task_id: task_id.to_owned(),
            source,
        })?
        .map_err(ApiError::from)?;
    let body = html! {
        h1 { (heading) }
        p {
            @if start > 0 { a #older href=(format!("?end={start}")) { "« older" } " · " }
            span.muted #range { "bytes " (start) "–" (end) " of " (size) }
            @if end < size { " · " a href="?" { "newest" } }
        }
        div #viewer data-url=(data_url) data-start=(start) data-end=(end) data-step=(VIEW_CHUNK) {
            pre.log #content { (chunk.data) }
        }
        @if end == size { script { (PreEscaped(VIEWER_JS)) } }
    };
    Ok(page(title, body))
}

/// `/logs/{id}/{process}/{run}/{type}`.
pub async fn logs_page(
    State(obs): State<AppState>,
    Path((task_id, process, run, log_type)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let cell = task(&obs, &task_id)?;
    let (file, run_no) = open_log(&obs, &cell, &process, &run, &log_type)?;
    let heading = html! {
        a href=(format!("/task/{}", enc(&task_id))) { (task_id) } " / "
        a href=(format!("/process/{}/{}", enc(&task_id), enc(&process))) { (process) }
        " / run " (run_no) " / " (log_type)
    };
    let data_url = format!(
        "/logdata/{}/{}/{run_no}/{}",
        enc(&task_id),
        enc(&process),
        enc(&log_type)
    );
    viewer(
        &format!("{log_type} of {process}"),
        heading,
        &file,
        &data_url,
        &q,
        &task_id,
    )
}

/// `/file/{id}/{*path}`.
pub async fn file_page(
    State(obs): State<AppState>,
    Path((task_id, path)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> PageResult {
    let cell = task(&obs, &task_id)?;
    let (file, _) = open_sandbox_file(&obs, &cell, &path)?;
    let heading = html! {
        a href=(format!("/task/{}", enc(&task_id))) { (task_id) } " / "
        a href=(format!("/browse/{}/", enc(&task_id))) { "sandbox" } " / " (path) " "
        a href=(format!("/download/{}/{}", enc(&task_id), enc_path(&path))) { "(download)" }
    };
    let data_url = format!("/filedata/{}/{}", enc(&task_id), enc_path(&path));
    viewer(&path, heading, &file, &data_url, &q, &task_id)
}

fn mode_string(meta: &std::fs::Metadata) -> String {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        'l'
    } else if ft.is_dir() {
        'd'
    } else if ft.is_file() {
        '-'
    } else {
        '?'
    };
    let mode = meta.permissions().mode();
    let mut s = String::with_capacity(10);
    s.push(kind);
    for (bit, c) in [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ] {
        s.push(if mode & bit != 0 { c } else { '-' });
    }
    s
}

/// `/browse/{id}`.
pub async fn browse_root(State(obs): State<AppState>, Path(task_id): Path<String>) -> PageResult {
    browse_dir(&obs, &task_id, "")
}

/// `/browse/{id}/{*path}`.
pub async fn browse(
    State(obs): State<AppState>,
    Path((task_id, path)): Path<(String, String)>,
) -> PageResult {
    browse_dir(&obs, &task_id, &path)
}

fn browse_dir(obs: &Observer, task_id: &str, path: &str) -> PageResult {
    let cell: std::sync::Arc<TaskCell> = task(obs, task_id)?;
    let sandbox = obs.sandbox(&cell).ok_or_else(|| ApiError::NoSandbox {
        task_id: task_id.to_owned(),
    })?;
    let path_err = |source| ApiError::Path {
        task_id: task_id.to_owned(),
        source,
    };
    let dir = safepath::resolve_within(&sandbox, path).map_err(path_err)?;
    let meta = std::fs::metadata(&dir).map_err(|source| ApiError::Io {
        op: "stat",
        task_id: task_id.to_owned(),
        source,
    })?;
    let rel = safepath::components(path).map_err(path_err)?.join("/");
    if !meta.is_dir() {
        return Ok(
            Redirect::to(&format!("/file/{}/{}", enc(task_id), enc_path(&rel))).into_response(),
        );
    }
    let mut entries: Vec<(String, std::fs::Metadata)> = Vec::new();
    let rd = std::fs::read_dir(&dir).map_err(|source| ApiError::Io {
        op: "list a directory",
        task_id: task_id.to_owned(),
        source,
    })?;
    for e in rd.flatten().take(MAX_LISTING) {
        if let (Ok(name), Ok(m)) = (e.file_name().into_string(), e.metadata()) {
            entries.push((name, m));
        }
    }
    entries.sort_by(|a, b| b.1.is_dir().cmp(&a.1.is_dir()).then_with(|| a.0.cmp(&b.0)));
    let eid = enc(task_id);
    let join = |name: &str| {
        if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        }
    };
    let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
    let body = html! {
        h1 { a href=(format!("/task/{eid}")) { (task_id) } " / sandbox / " (rel) }
        table #listing {
            tr { th { "Mode" } th { "Links" } th { "Uid" } th { "Gid" } th { "Size" } th { "Modified" } th { "Name" } th {} }
            @if !rel.is_empty() {
                tr { td {} td {} td {} td {} td {} td {} td { a href=(format!("/browse/{eid}/{}", enc_path(parent))) { ".." } } td {} }
            }
            @for (name, m) in &entries {
                @let p = join(name);
                tr {
                    td { code { (mode_string(m)) } }
                    td.num { (m.nlink()) }
                    td.num { (m.uid()) }
                    td.num { (m.gid()) }
                    td.num { (m.len()) }
                    td { (fmt_time(m.mtime() as f64)) }
                    @if m.is_dir() {
                        td { a href=(format!("/browse/{eid}/{}", enc_path(&p))) { (name) "/" } }
                        td {}
                    } @else {
                        td { a href=(format!("/file/{eid}/{}", enc_path(&p))) { (name) } }
                        td { a href=(format!("/download/{eid}/{}", enc_path(&p))) { "download" } }
                    }
                }
            }
        }
        @if entries.len() >= MAX_LISTING { p.muted { "Only the first " (MAX_LISTING) " entries are listed." } }
    };
    Ok(page(&format!("{task_id}: {rel}"), body))
}

/// `/download/{id}/{*path}`.
pub async fn download(
    State(obs): State<AppState>,
    Path((task_id, path)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let cell = task(&obs, &task_id)?;
    let (file, real) = open_sandbox_file(&obs, &cell, &path)?;
    let len = file.metadata().map(|m| m.len()).ok();
    let name: String = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into())
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .collect();
    // Serve exactly the length announced, even if the file grows meanwhile.
    let reader =
        tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len.unwrap_or(u64::MAX));
    let stream = tokio_util::io::ReaderStream::new(reader);
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some(len) = len
        && let Ok(v) = header::HeaderValue::from_str(&len.to_string())
    {
        h.insert(header::CONTENT_LENGTH, v);
    }
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_as_utc_calendar_dates() {
        assert_eq!(fmt_time(0.0), "1970-01-01 00:00:00");
        assert_eq!(fmt_time(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(fmt_time(1_700_000_000.5), "2023-11-14 22:13:20");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        assert_eq!(enc_path("d/e f"), "d/e%20f");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(fmt_duration(5.25), "5.2s");
        assert_eq!(fmt_duration(125.0), "2m 5s");
        assert_eq!(fmt_duration(7322.0), "2h 2m");
    }
}
