//! Progress output: one line per transition on stdout, for people (`12:00:01.234 web[0] RUNNING
//! pid=42`) or, with `--json`, one JSON object per line for machines. Lines are collected during a
//! turn and printed only once the turn's records are durable.

use serde::Serialize;

use crate::prepare::now_ms;

/// One progress line.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub time_ms: i64,
    /// `process` (a run's transition), `task` (the task's), or `status` (an update for the
    /// scheduler: STARTING, RUNNING, FINISHED, ...).
    pub event: &'static str,
    pub task_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<u32>,
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// What a process-run line says beyond its state.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunDetail<'a> {
    pub pid: Option<i32>,
    pub return_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<&'a str>,
}

/// The turn's pending lines.
#[derive(Debug)]
pub struct Progress {
    json: bool,
    task_id: String,
    lines: Vec<String>,
}

impl Progress {
    pub fn new(task_id: &str, json: bool) -> Progress {
        Progress {
            json,
            task_id: task_id.to_owned(),
            lines: Vec::new(),
        }
    }

    /// A line about one run of a process.
    pub fn run(&mut self, process: &str, run: Option<u32>, state: &str, d: RunDetail<'_>) {
        self.push("process", Some(process), run, state, d);
    }

    /// A line about the task (STARTED, CLEANING, ...).
    pub fn task(&mut self, state: &str, reason: Option<&str>) {
        let d = RunDetail {
            reason,
            ..RunDetail::default()
        };
        self.push("task", None, None, state, d);
    }

    /// A line about a status update for the scheduler.
    pub fn status(&mut self, state: &str, reason: &str) {
        let d = RunDetail {
            reason: Some(reason),
            ..RunDetail::default()
        };
        self.push("status", None, None, state, d);
    }

    fn push(
        &mut self,
        event: &'static str,
        process: Option<&str>,
        run: Option<u32>,
        state: &str,
        d: RunDetail<'_>,
    ) {
        let ev = Event {
            time_ms: now_ms(),
            event,
            task_id: &self.task_id,
            process,
            run,
            state,
            pid: d.pid,
            return_code: d.return_code,
            signal: d.signal,
            reason: d.reason,
        };
        let line = if self.json {
            serde_json::to_string(&ev).unwrap_or_default()
        } else {
            human_line(&ev)
        };
        self.lines.push(line);
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Print the turn's lines (call once its records are durable). A stdout that cannot be
    /// written (a closed pipe, a log file on a full disk) loses the lines, never the task: the
    /// records are the truth, and `println!` would panic.
    pub fn print(&mut self) {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        for line in self.lines.drain(..) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

pub fn human_line(ev: &Event<'_>) -> String {
    let secs = ev.time_ms.div_euclid(1000);
    let ms = ev.time_ms.rem_euclid(1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let mut line = format!("{h:02}:{m:02}:{s:02}.{ms:03} ");
    match (ev.process, ev.run) {
        (Some(p), Some(r)) => line.push_str(&format!("{p}[{r}] {}", ev.state)),
        (Some(p), None) => line.push_str(&format!("{p} {}", ev.state)),
        _ if ev.event == "status" => {
            line.push_str(&format!("task {} status {}", ev.task_id, ev.state))
        }
        _ => line.push_str(&format!("task {} {}", ev.task_id, ev.state)),
    }
    if let Some(pid) = ev.pid {
        line.push_str(&format!(" pid={pid}"));
    }
    if let Some(sig) = ev.signal {
        line.push_str(&format!(" signal={}", signal_name(sig)));
    } else if let Some(rc) = ev.return_code {
        line.push_str(&format!(" rc={rc}"));
    }
    if let Some(r) = ev.reason {
        line.push_str(&format!(" ({r})"));
    }
    line
}

/// `SIGTERM` for 15, etc.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(process: Option<&'a str>, run: Option<u32>, state: &'a str) -> Event<'a> {
        Event {
            time_ms: 3_723_004,
            event: if process.is_some() { "process" } else { "task" },
            task_id: "t1",
            process,
            run,
            state,
            pid: None,
            return_code: None,
            signal: None,
            reason: None,
        }
    }

    #[test]
    fn human_lines_name_the_run_and_prefer_the_signal_over_the_code() {
        let mut e = ev(Some("web"), Some(2), "KILLED");
        e.pid = Some(42);
        e.return_code = Some(143);
        e.signal = Some(15);
        e.reason = Some("killed by the executor");
        assert_eq!(
            human_line(&e),
            "01:02:03.004 web[2] KILLED pid=42 signal=SIGTERM (killed by the executor)"
        );
        assert_eq!(
            human_line(&ev(None, None, "CLEANING")),
            "01:02:03.004 task t1 CLEANING"
        );
    }

    #[test]
    fn json_lines_leave_out_what_is_not_known() {
        let mut p = Progress::new("t1", true);
        p.task("STARTED", None);
        let v: serde_json::Value = serde_json::from_str(&p.lines[0]).expect("json");
        assert_eq!(v["event"], "task");
        assert_eq!(v["state"], "STARTED");
        assert!(v.get("pid").is_none());
    }
}
