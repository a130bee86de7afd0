//! Renderings of replayed tasks, for `hearth inspect` and `hearth status` (and anyone else who
//! wants the same view).
//!
//! * [`to_json`]: one task, in the shape of DESIGN section 7 (`task_id`, `state`, `header`,
//!   `statuses`, `processes`) with Thermos state names, plus `format`, `source`, `snoozes`,
//!   `teardown` and `stream` (how the stream ended: a torn or corrupt tail is visible here too).
//! * [`render_text`]: the same for a person: header, status history, one table per process, and a
//!   warning line when the stream did not end cleanly.
//! * [`status_json`] and [`render_status_text`]: one line per task with its latest process states.
//!
//! Times are shown as UTC RFC 3339 with milliseconds; text coming from the stream (names,
//! reasons, paths) has its control characters escaped so a hostile file cannot drive the terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::record::{RunnerHeader, SnoozeEvent, TaskStatus, TeardownStep};
use crate::replay::ProcessRun;
use crate::root::LoadedTask;
use crate::stream::{Format, Replayed, StreamEnd};

/// One task as JSON (see the module docs for the shape).
pub fn to_json(task: &LoadedTask) -> Value {
    let replay = &task.replayed.replay;
    let processes: Map<String, Value> = replay
        .processes
        .iter()
        .map(|(name, runs)| (name.clone(), runs.iter().map(run_json).collect()))
        .collect();
    json!({
        "task_id": task.task_id,
        "state": replay.state().name(),
        "format": format_json(&task.replayed.format),
        "source": task.runner_path.display().to_string(),
        "header": replay.header.as_ref().map(header_json),
        "statuses": replay.statuses.iter().map(task_status_json).collect::<Vec<_>>(),
        "processes": processes,
        "snoozes": replay.snoozes.iter().map(snooze_json).collect::<Vec<_>>(),
        "teardown": replay.teardown.iter().map(teardown_json).collect::<Vec<_>>(),
        "reports": replay.reports.iter().map(|r| json!({
            "seq": r.seq,
            "state": r.state,
            "reason": r.reason,
            "timestamp_ms": r.timestamp_ms,
            "acknowledged": r.seq <= replay.reports_acked,
        })).collect::<Vec<_>>(),
        "stream": stream_json(&task.replayed),
        "condition": task.condition,
    })
}

/// One task as text for an operator.
pub fn render_text(task: &LoadedTask) -> String {
    let replay = &task.replayed.replay;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "task {}: {}",
        clean(&task.task_id),
        replay.state().name()
    );
    if let Some(c) = &task.condition {
        let _ = writeln!(out, "WARNING: {}", clean(&c.summary(format_time_ms)));
    }
    if let Some(warning) = stream_warning(&task.replayed) {
        let _ = writeln!(out, "warning: {warning}");
    }
    let mut fields: Vec<(&str, String)> = vec![
        ("format", format_text(&task.replayed.format)),
        (
            "stream",
            format!(
                "{} ({} records, {} bytes, {})",
                clean(&task.runner_path.display().to_string()),
                task.replayed.records,
                task.replayed.valid_len,
                end_kind(&task.replayed.end)
            ),
        ),
    ];
    match &replay.header {
        Some(h) => fields.extend(header_fields(h, &task.task_id)),
        None => fields.push((
            "header",
            "none (the stream has no header record)".to_owned(),
        )),
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in &fields {
        let _ = writeln!(out, "  {key:<width$}  {value}");
    }

    out.push_str("\nstatus history\n");
    if replay.statuses.is_empty() {
        out.push_str("  none recorded (the task is ACTIVE)\n");
    } else {
        let rows = replay.statuses.iter().map(|s| {
            vec![
                format_time_ms(s.timestamp_ms),
                s.state.name().to_owned(),
                s.runner_pid.map_or_else(dash, |p| p.to_string()),
                s.reason
                    .as_deref()
                    .map_or_else(String::new, |r| clean(r).into_owned()),
            ]
        });
        out.push_str(&table(&["TIME", "STATE", "EXECUTOR PID", "REASON"], rows));
    }

    for (name, runs) in &replay.processes {
        let latest = runs.last().map_or("-", |r| r.state.name());
        let plural = if runs.len() == 1 { "run" } else { "runs" };
        let _ = writeln!(
            out,
            "\nprocess {} ({} {plural}, latest {latest})",
            clean(name),
            runs.len()
        );
        out.push_str(&table(
            &[
                "RUN", "STATE", "PID", "RC/SIG", "START", "STOP", "DURATION", "REASON",
            ],
            runs.iter().map(run_row),
        ));
    }
    if replay.processes.is_empty() {
        out.push_str("\nno process has run\n");
    }

    if !replay.snoozes.is_empty() {
        out.push_str("\nhealth-check snoozes\n");
        let rows = replay.snoozes.iter().map(|s| {
            vec![
                format_time_ms(s.timestamp_ms),
                if s.active { "start" } else { "end" }.to_owned(),
                s.expires_ms.map_or_else(dash, format_time_ms),
                opt_text(s.detail.as_deref()),
            ]
        });
        out.push_str(&table(&["TIME", "EVENT", "EXPIRES", "DETAIL"], rows));
    }
    if !replay.teardown.is_empty() {
        out.push_str("\nteardown\n");
        let rows = replay.teardown.iter().map(|t| {
            vec![
                format_time_ms(t.timestamp_ms),
                clean(t.step.name()).into_owned(),
                opt_text(t.detail.as_deref()),
            ]
        });
        out.push_str(&table(&["TIME", "STEP", "DETAIL"], rows));
    }
    out
}

/// Tasks as a JSON list of `{"task_id", "state", "launch_time_ms", "processes": {NAME: STATE}}`
/// (the state of each process's latest run), plus `"stream"`: `clean`, `torn`, `corrupt` or
/// `invalid`, and `"condition"`: the live [`Condition`](crate::condition::Condition), only when
/// there is one.
pub fn status_json(tasks: &[LoadedTask]) -> Value {
    tasks
        .iter()
        .map(|task| {
            let replay = &task.replayed.replay;
            let processes: Map<String, Value> = latest_states(task)
                .map(|(name, state)| (name.to_owned(), Value::from(state)))
                .collect();
            let mut row = json!({
                "task_id": task.task_id,
                "state": replay.state().name(),
                "launch_time_ms": replay.header.as_ref().map(|h| h.launch_time_ms),
                "processes": processes,
                "stream": end_kind(&task.replayed.end),
            });
            if let Some(c) = &task.condition {
                row["condition"] = json!(c);
            }
            row
        })
        .collect()
}

/// Tasks as a text table: id, state (with a note when the stream did not end cleanly), launch
/// time, and `name=STATE` of each process's latest run.
pub fn render_status_text(tasks: &[LoadedTask]) -> String {
    if tasks.is_empty() {
        return "no tasks\n".to_owned();
    }
    let rows = tasks.iter().map(|task| {
        let replay = &task.replayed.replay;
        let mut state = replay.state().name().to_owned();
        if !matches!(task.replayed.end, StreamEnd::Clean) {
            let _ = write!(state, " ({} stream)", end_kind(&task.replayed.end));
        }
        if let Some(c) = &task.condition {
            let _ = write!(state, " ({}!)", c.kind.describe());
        }
        let processes: Vec<String> = latest_states(task)
            .map(|(name, state)| format!("{}={state}", clean(name)))
            .collect();
        vec![
            clean(&task.task_id).into_owned(),
            state,
            replay
                .header
                .as_ref()
                .map_or_else(dash, |h| format_time_ms(h.launch_time_ms)),
            processes.join(" "),
        ]
    });
    table(&["TASK", "STATE", "LAUNCHED", "PROCESSES"], rows)
}

fn latest_states(task: &LoadedTask) -> impl Iterator<Item = (&str, &'static str)> {
    task.replayed
        .replay
        .processes
        .iter()
        .filter_map(|(name, runs)| runs.last().map(|run| (name.as_str(), run.state.name())))
}

fn format_json(format: &Format) -> Value {
    match format {
        Format::Hearth { version } => json!({"kind": "hearth", "version": version}),
        Format::Thermos => json!({"kind": "thermos"}),
    }
}

fn format_text(format: &Format) -> String {
    match format {
        Format::Hearth { version } => format!("hearth v{version}"),
        Format::Thermos => "thermos (legacy)".to_owned(),
    }
}

fn header_json(h: &RunnerHeader) -> Value {
    json!({
        "task_id": h.task_id,
        "launch_time_ms": h.launch_time_ms,
        "sandbox": h.sandbox,
        "log_dir": h.log_dir,
        "hostname": h.hostname,
        "user": h.user,
        "uid": h.uid,
        "ports": h.ports,
        "format_version": h.format_version,
    })
}

/// The header as `(label, value)` lines; the header's task id only when it differs from the
/// id the task was loaded under.
fn header_fields(h: &RunnerHeader, task_id: &str) -> Vec<(&'static str, String)> {
    let user = match (&h.user, h.uid) {
        (Some(user), Some(uid)) => format!("{} (uid {uid})", clean(user)),
        (Some(user), None) => clean(user).into_owned(),
        (None, Some(uid)) => format!("uid {uid}"),
        (None, None) => dash(),
    };
    let ports = if h.ports.is_empty() {
        "none".to_owned()
    } else {
        let ports: Vec<String> = h
            .ports
            .iter()
            .map(|(name, port)| format!("{}={port}", clean(name)))
            .collect();
        ports.join(" ")
    };
    let mut fields = Vec::new();
    if h.task_id != task_id {
        fields.push(("header id", clean(&h.task_id).into_owned()));
    }
    fields.extend([
        ("user", user),
        ("host", opt_text(h.hostname.as_deref())),
        ("sandbox", opt_text(h.sandbox.as_deref())),
        ("log dir", opt_text(h.log_dir.as_deref())),
        ("ports", ports),
        ("launched", format_time_ms(h.launch_time_ms)),
    ]);
    fields
}

fn task_status_json(s: &TaskStatus) -> Value {
    let mut v = json!({
        "state": s.state.name(),
        "timestamp_ms": s.timestamp_ms,
        "runner_pid": s.runner_pid,
        "runner_uid": s.runner_uid,
    });
    if let (Some(reason), Value::Object(map)) = (&s.reason, &mut v) {
        map.insert("reason".to_owned(), Value::from(reason.as_str()));
    }
    v
}

fn run_json(r: &ProcessRun) -> Value {
    let mut v = json!({
        "run": r.run,
        "state": r.state.name(),
        "pid": r.pid,
        "return_code": r.return_code,
        "fork_time": r.fork_time,
        "start_time": r.start_time,
        "stop_time": r.stop_time,
        "reason": r.reason,
    });
    if let (Some(signal), Value::Object(map)) = (r.signal, &mut v) {
        map.insert("signal".to_owned(), Value::from(signal));
    }
    v
}

fn run_row(r: &ProcessRun) -> Vec<String> {
    let rc = match (r.signal, r.return_code) {
        (Some(sig), _) => signal_name(sig),
        (None, Some(rc)) => rc.to_string(),
        (None, None) => dash(),
    };
    let duration = match (r.start_time, r.stop_time) {
        (Some(start), Some(stop)) => format_duration(stop - start),
        _ => dash(),
    };
    vec![
        r.run.to_string(),
        r.state.name().to_owned(),
        r.pid.map_or_else(dash, |p| p.to_string()),
        rc,
        r.start_time.map_or_else(dash, format_time_secs),
        r.stop_time.map_or_else(dash, format_time_secs),
        duration,
        r.reason
            .as_deref()
            .map_or_else(String::new, |s| clean(s).into_owned()),
    ]
}

fn snooze_json(s: &SnoozeEvent) -> Value {
    json!({
        "active": s.active,
        "timestamp_ms": s.timestamp_ms,
        "expires_ms": s.expires_ms,
        "detail": s.detail,
    })
}

fn teardown_json(t: &TeardownStep) -> Value {
    json!({"step": t.step.name(), "timestamp_ms": t.timestamp_ms, "detail": t.detail})
}

fn stream_json(r: &Replayed) -> Value {
    let end = match &r.end {
        StreamEnd::Clean => json!("clean"),
        StreamEnd::Torn { offset, detail } => {
            json!({"torn": {"offset": offset, "detail": detail}})
        }
        StreamEnd::Corrupt { offset, detail } => {
            json!({"corrupt": {"offset": offset, "detail": detail}})
        }
        StreamEnd::Invalid {
            offset,
            record,
            detail,
        } => json!({"invalid": {"offset": offset, "record": record, "detail": detail}}),
    };
    json!({"records": r.records, "valid_len": r.valid_len, "end": end})
}

fn end_kind(end: &StreamEnd) -> &'static str {
    match end {
        StreamEnd::Clean => "clean",
        StreamEnd::Torn { .. } => "torn",
        StreamEnd::Corrupt { .. } => "corrupt",
        StreamEnd::Invalid { .. } => "invalid",
    }
}

/// The line an operator must not miss when the stream did not end cleanly.
fn stream_warning(r: &Replayed) -> Option<String> {
    let records = match r.records {
        1 => "the 1 record".to_owned(),
        n => format!("the {n} records"),
    };
    match &r.end {
        StreamEnd::Clean => None,
        StreamEnd::Torn { offset, detail } => Some(format!(
            "checkpoint tail torn at byte {offset}: {}; replayed {records} before it",
            clean(detail)
        )),
        StreamEnd::Corrupt { offset, detail } => Some(format!(
            "checkpoint corrupt at byte {offset}: {}; replayed {records} before it, the rest \
             of the file was not read",
            clean(detail)
        )),
        StreamEnd::Invalid {
            offset,
            record,
            detail,
        } => Some(format!(
            "checkpoint record {record} at byte {offset} is invalid: {}; replayed {records} \
             before it, the rest of the file was not read",
            clean(detail)
        )),
    }
}

/// Rows under a header, columns separated by two spaces, every line indented by two.
fn table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_cells: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_cells).chain(&rows) {
        let mut line = String::from(" ");
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, " {cell:<w$} ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn dash() -> String {
    "-".to_owned()
}

fn opt_text(s: Option<&str>) -> String {
    s.map_or_else(dash, |s| clean(s).into_owned())
}

/// `s` with control characters escaped (`\n`, `\u{1b}`), so it stays on its line and cannot
/// send terminal escapes.
fn clean(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_debug().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

fn signal_name(signal: i32) -> String {
    const NAMES: [&str; 16] = [
        "", "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM",
    ];
    match usize::try_from(signal).ok().and_then(|i| NAMES.get(i)) {
        Some(name) if !name.is_empty() => format!("SIG{name}"),
        _ => format!("signal {signal}"),
    }
}

/// Seconds since the epoch (Thermos's process times) as UTC RFC 3339.
fn format_time_secs(secs: f64) -> String {
    let ms = (secs * 1000.0).round();
    if ms.is_finite() && ms.abs() < 1e15 {
        // In range: the cast is exact for integers below 2^53.
        format_time_ms(ms as i64)
    } else {
        format!("{secs}s since the epoch")
    }
}

/// Milliseconds since the epoch as UTC RFC 3339 with milliseconds (`2012-05-23T20:34:46.123Z`).
pub fn format_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let day_secs = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        day_secs / 3600,
        day_secs / 60 % 60,
        day_secs % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01. Days are grouped in 400-year
/// eras of 146 097 days, each starting on a March 1st so the leap day ends the year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A run's length: `0.250s`, `12.5s`, `3m07s`, `2h05m10s`, `3d04h05m`.
fn format_duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return format!("{secs:.3}s");
    }
    if secs < 10.0 {
        return format!("{secs:.3}s");
    }
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    // Whole seconds from here on; a minute or more of run time needs no finer grain.
    let total = secs.round() as u64;
    let (d, h, m, s) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else {
        format!("{m}m{s:02}s")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::record::{ProcessState, TaskState};
    use crate::replay::TaskReplay;

    fn run(run: u32, state: ProcessState) -> ProcessRun {
        ProcessRun {
            run,
            state,
            seq: 0,
            pid: Some(4000 + i32::try_from(run).unwrap_or(0)),
            coordinator_pid: None,
            fork_time: Some(1_337_805_286.0),
            start_time: Some(1_337_805_286.5),
            stop_time: state.is_terminal().then_some(1_337_805_288.0),
            return_code: None,
            signal: None,
            reason: None,
            pid_start_ticks: None,
            cause: None,
        }
    }

    /// A task whose `web` process failed once (rc 1), was killed by SIGKILL (oom), and runs
    /// again; the task was killed with a reason; the stream's tail is torn.
    fn sample() -> LoadedTask {
        let failed = ProcessRun {
            return_code: Some(1),
            ..run(0, ProcessState::Failed)
        };
        let oom = ProcessRun {
            return_code: Some(137),
            signal: Some(9),
            reason: Some("oom".to_owned()),
            ..run(1, ProcessState::Failed)
        };
        let header = RunnerHeader {
            task_id: "t-1".to_owned(),
            launch_time_ms: 1_337_805_286_123,
            sandbox: Some("/sandbox".to_owned()),
            hostname: Some("host-1".to_owned()),
            user: Some("www".to_owned()),
            ports: BTreeMap::from([("http".to_owned(), 8080)]),
            uid: Some(33),
            ..RunnerHeader::default()
        };
        let statuses = vec![
            TaskStatus {
                state: TaskState::Active,
                timestamp_ms: 1_337_805_286_000,
                runner_pid: Some(10),
                runner_uid: Some(0),
                reason: None,
                outcome: None,
                cause: None,
            },
            TaskStatus {
                state: TaskState::Killed,
                timestamp_ms: 1_337_805_290_000,
                runner_pid: Some(10),
                runner_uid: Some(0),
                reason: Some("killed by operator".to_owned()),
                outcome: None,
                cause: None,
            },
        ];
        let replay = TaskReplay {
            header: Some(header),
            statuses,
            processes: BTreeMap::from([(
                "web".to_owned(),
                vec![failed, oom, run(2, ProcessState::Running)],
            )]),
            ..TaskReplay::default()
        };
        LoadedTask {
            task_id: "t-1".to_owned(),
            replayed: Replayed {
                format: Format::Hearth { version: 1 },
                replay,
                records: 12,
                valid_len: 900,
                end: StreamEnd::Torn {
                    offset: 900,
                    detail: "frame needs 40 bytes, 7 left".to_owned(),
                },
            },
            runner_path: PathBuf::from("/root/checkpoints/t-1/runner"),
            place: None,
            condition: None,
        }
    }

    #[test]
    fn json_has_the_design_shape_with_thermos_state_names() {
        let v = to_json(&sample());
        assert_eq!(v["task_id"], "t-1");
        assert_eq!(v["state"], "KILLED");
        assert_eq!(v["format"], json!({"kind": "hearth", "version": 1}));
        assert_eq!(v["header"]["ports"], json!({"http": 8080}));
        assert_eq!(v["header"]["launch_time_ms"], 1_337_805_286_123_i64);
        assert_eq!(v["statuses"][0]["state"], "ACTIVE");
        assert_eq!(v["statuses"][1]["timestamp_ms"], 1_337_805_290_000_i64);
        let runs = &v["processes"]["web"];
        assert_eq!(runs[0]["run"], 0);
        assert_eq!(runs[0]["state"], "FAILED");
        assert_eq!(runs[0]["return_code"], 1);
        assert_eq!(runs[0]["stop_time"], 1_337_805_288.0);
        assert_eq!(runs[2]["state"], "RUNNING");
        assert_eq!(runs[2]["stop_time"], Value::Null);
    }

    #[test]
    fn json_carries_signal_and_status_reason_only_when_present() {
        let v = to_json(&sample());
        let runs = &v["processes"]["web"];
        assert!(runs[0].get("signal").is_none());
        assert_eq!(runs[1]["signal"], 9);
        assert_eq!(runs[1]["reason"], "oom");
        assert!(v["statuses"][0].get("reason").is_none());
        assert_eq!(v["statuses"][1]["reason"], "killed by operator");
    }

    #[test]
    fn json_shows_a_torn_tail_with_its_offset() {
        let v = to_json(&sample());
        assert_eq!(
            v["stream"],
            json!({"records": 12, "valid_len": 900, "end": {"torn": {
                "offset": 900, "detail": "frame needs 40 bytes, 7 left"}}})
        );
        let mut clean_task = sample();
        clean_task.replayed.end = StreamEnd::Clean;
        assert_eq!(to_json(&clean_task)["stream"]["end"], "clean");
    }

    #[test]
    fn text_leads_with_the_torn_tail_warning() {
        let text = render_text(&sample());
        let second_line = text.lines().nth(1);
        assert_eq!(
            second_line,
            Some(
                "warning: checkpoint tail torn at byte 900: frame needs 40 bytes, 7 left; \
                 replayed the 12 records before it"
            )
        );
    }

    #[test]
    fn a_live_condition_leads_the_text_and_shows_in_json_and_status() {
        use crate::condition::{Condition, ConditionKind};
        let mut task = sample();
        assert_eq!(to_json(&task)["condition"], Value::Null);
        task.condition = Some(Condition {
            kind: ConditionKind::CheckpointWritesFailing,
            message: "No space left on device (os error 28)".to_owned(),
            since_ms: 1_337_805_290_000,
            updated_ms: 1_337_805_299_000,
            attempts: 7,
        });
        let text = render_text(&task);
        let second_line = text.lines().nth(1).unwrap_or_default();
        assert!(
            second_line.starts_with("WARNING: checkpoint writes failing since ")
                && second_line
                    .ends_with("No space left on device (os error 28) (7 failed attempts)"),
            "{second_line}"
        );
        let v = to_json(&task);
        assert_eq!(v["condition"]["kind"], "checkpoint_writes_failing");
        assert_eq!(v["condition"]["attempts"], 7);
        let status = status_json(std::slice::from_ref(&task));
        assert_eq!(status[0]["condition"]["kind"], "checkpoint_writes_failing");
        assert!(render_status_text(&[task]).contains("(checkpoint writes failing!)"));
    }

    #[test]
    fn text_shows_header_history_and_one_row_per_run() {
        let text = render_text(&sample());
        for expected in [
            "task t-1: KILLED",
            "www (uid 33)",
            "http=8080",
            "KILLED",
            "killed by operator",
            "process web (3 runs, latest RUNNING)",
            "SIGKILL",
            "oom",
            "1.500s",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        let launched = text
            .lines()
            .find(|l| l.trim_start().starts_with("launched "));
        assert!(
            launched.is_some_and(|l| l.ends_with(" 2012-05-23T20:34:46.123Z")),
            "launch time missing:\n{text}"
        );
        assert!(
            !text.contains("header id"),
            "header id equals the task id:\n{text}"
        );
        let failed_row = text.lines().find(|l| l.trim_start().starts_with("0 "));
        assert!(
            failed_row.is_some_and(|l| l.contains("FAILED") && l.contains(" 1 ")),
            "run 0 row should show FAILED and rc 1:\n{text}"
        );
    }

    #[test]
    fn status_lists_each_process_by_its_latest_run() {
        let tasks = [sample()];
        assert_eq!(
            status_json(&tasks),
            json!([{"task_id": "t-1", "state": "KILLED", "launch_time_ms": 1_337_805_286_123_i64,
                    "processes": {"web": "RUNNING"}, "stream": "torn"}])
        );
        let text = render_status_text(&tasks);
        assert!(text.contains("KILLED (torn stream)"), "{text}");
        assert!(text.contains("web=RUNNING"), "{text}");
        assert_eq!(render_status_text(&[]), "no tasks\n");
    }

    #[test]
    fn times_render_as_utc_rfc3339_with_millis() {
        assert_eq!(format_time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            format_time_ms(1_337_805_286_123),
            "2012-05-23T20:34:46.123Z"
        );
        assert_eq!(
            format_time_ms(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
        assert_eq!(format_time_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            format_time_secs(1_337_805_286.123_4),
            "2012-05-23T20:34:46.123Z"
        );
    }

    #[test]
    fn times_out_of_range_do_not_panic() {
        assert_eq!(format_time_secs(f64::NAN), "NaNs since the epoch");
        assert!(format_time_secs(1e300).ends_with("since the epoch"));
        assert!(!format_time_ms(i64::MAX).is_empty());
        assert!(!format_time_ms(i64::MIN).is_empty());
    }

    #[test]
    fn durations_get_coarser_as_they_grow() {
        assert_eq!(format_duration(0.25), "0.250s");
        assert_eq!(format_duration(12.46), "12.5s");
        assert_eq!(format_duration(187.0), "3m07s");
        assert_eq!(format_duration(7510.0), "2h05m10s");
        assert_eq!(format_duration(273_900.0), "3d04h05m");
        assert_eq!(format_duration(-1.0), "-1.000s");
    }

    #[test]
    fn signals_are_named_when_known() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(0), "signal 0");
        assert_eq!(signal_name(64), "signal 64");
        assert_eq!(signal_name(-3), "signal -3");
    }

    #[test]
    fn control_characters_from_the_stream_are_escaped() {
        assert_eq!(clean("plain name"), "plain name");
        assert_eq!(clean("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
    }

    #[test]
    fn table_columns_align_and_lines_have_no_trailing_space() {
        let rows = vec![
            vec!["0".to_owned(), "SUCCESS".to_owned(), String::new()],
            vec!["10".to_owned(), "FAILED".to_owned(), "oom".to_owned()],
        ];
        let got = table(&["RUN", "STATE", "REASON"], rows.into_iter());
        let want = "  RUN  STATE    REASON\n  0    SUCCESS\n  10   FAILED   oom\n";
        assert_eq!(got, want);
    }
}
