//! `job inspect`'s human-readable view of a job, in the layout of Aurora's client.

use std::fmt::Write;

use serde_json::Value as Json;

fn text(v: Option<&Json>) -> String {
    match v {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Bool(true)) => "True".into(),
        Some(Json::Bool(false)) => "False".into(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// Render a job's JSON the way `aurora job inspect` prints it: job level, task level, then each
/// process with its flags and command line.
pub fn render_inspect(job: &Json) -> String {
    let mut o = String::new();
    let g = |k: &str| job.get(k);
    let _ = writeln!(o, "Job level information");
    let _ = writeln!(o, "  name:       '{}'", text(g("name")));
    let _ = writeln!(o, "  role:       '{}'", text(g("role")));
    if g("contact").is_some() {
        let _ = writeln!(o, "  contact:    '{}'", text(g("contact")));
    }
    let _ = writeln!(o, "  cluster:    '{}'", text(g("cluster")));
    let _ = writeln!(o, "  instances:  '{}'", text(g("instances")));
    if g("cron_schedule").is_some() {
        let _ = writeln!(o, "  cron:");
        let _ = writeln!(o, "    schedule: '{}'", text(g("cron_schedule")));
        let _ = writeln!(o, "    policy:   '{}'", text(g("cron_collision_policy")));
    }
    if let Some(Json::Object(c)) = g("constraints") {
        let _ = writeln!(o, "  constraints:");
        for (k, v) in c {
            let _ = writeln!(o, "    '{k}': '{}'", text(Some(v)));
        }
    }
    if let Some(p) = g("partition_policy") {
        let _ = writeln!(o, "  partition_policy:");
        let _ = writeln!(o, "    reschedule: {}", text(p.get("reschedule")));
        let _ = writeln!(o, "    delay_secs: '{}'", text(p.get("delay_secs")));
    }
    let _ = writeln!(o, "  service:    {}", text(g("service")));
    let _ = writeln!(o, "  production: {}", text(g("production")));
    let _ = writeln!(o);
    let task = g("task").cloned().unwrap_or(Json::Null);
    let _ = writeln!(o, "Task level information");
    let _ = writeln!(o, "  name: '{}'", text(task.get("name")));
    if let Some(Json::Array(cs)) = task.get("constraints")
        && !cs.is_empty()
    {
        let _ = writeln!(o, "  constraints:");
        for c in cs {
            let names: Vec<String> = match c.get("order") {
                Some(Json::Array(a)) => a.iter().map(|n| text(Some(n))).collect(),
                _ => Vec::new(),
            };
            let _ = writeln!(o, "  {}", names.join(" < "));
        }
    }
    let _ = writeln!(o);
    if let Some(Json::Array(ps)) = task.get("processes") {
        for p in ps {
            let _ = writeln!(o, "Process '{}':", text(p.get("name")));
            for flag in ["daemon", "ephemeral", "final"] {
                if p.get(flag) == Some(&Json::Bool(true)) {
                    let _ = writeln!(o, "  {flag}");
                }
            }
            let _ = writeln!(o, "  cmdline:");
            for line in text(p.get("cmdline")).lines() {
                let _ = writeln!(o, "    {line}");
            }
            let _ = writeln!(o);
        }
    }
    o
}
