//! `hearth job create|status|kill|restart|list|diff|inspect`: thin clients over the scheduler's
//! job endpoints (`hearth_scheduler::wire`), with human tables by default and `--json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use hearth_scheduler::api::ScheduleStatus;
use hearth_scheduler::wire::{CreateJobRequest, JobKey, TaskStatus, Tier};
use serde_json::Value;

use crate::client::{Client, ConnectArgs};
use crate::output::{self, UsageError, fmt_relative, fmt_time, now_ms, table};

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a job from a config and schedule its instances.
    Create {
        /// cluster/role/environment/name (must match the config's, or fills in what it lacks).
        key: JobKey,
        /// The job config: an Aurora job JSON (what `hearth run` takes) with `instances`,
        /// `service`, `max_task_failures`, `production`, `tier`, `priority`, `constraints`.
        config: PathBuf,
        /// For an `.aurora` config: bind a template variable, NAME=VALUE (repeatable).
        #[arg(long = "bind")]
        binds: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
        /// Print the scheduler's answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a job's tasks: the active ones and the recent terminal ones, by instance.
    ///
    /// THROTTLED tasks show when they become PENDING; PENDING tasks show why they cannot be
    /// placed yet.
    Status {
        key: JobKey,
        #[command(flatten)]
        connect: ConnectArgs,
        /// Print the tasks as a JSON list (instance, task_id, state, agent, reason,
        /// throttled_until, ancestor_id, failure_count, ports, events).
        #[arg(long)]
        json: bool,
    },
    /// Kill a job's instances (all by default) and wait until every one has ended.
    Kill {
        key: JobKey,
        /// Instances to kill, e.g. `0-2,5` [default: all].
        #[arg(long, value_parser = parse_instances)]
        instances: Option<Instances>,
        /// Return once the scheduler accepted the kill, without waiting for the tasks to end.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the tasks to end, e.g. 90s, 5m.
        #[arg(long, default_value = "5m", value_parser = crate::args::duration)]
        timeout: Duration,
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
    /// Restart a job's instances (all by default): each is killed and replaced by a new task.
    Restart {
        key: JobKey,
        /// Instances to restart, e.g. `0-2,5` [default: all].
        #[arg(long, value_parser = parse_instances)]
        instances: Option<Instances>,
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
    /// List the scheduler's jobs, or one role's.
    List {
        role: Option<String>,
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
    /// Compare a config with the one the job runs (exit 0 same, 1 different, 2 trouble).
    Diff {
        key: JobKey,
        config: PathBuf,
        /// For an `.aurora` config: bind a template variable, NAME=VALUE (repeatable).
        #[arg(long = "bind")]
        binds: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
        /// Print both configs as JSON: {"scheduler": ..., "local": ..., "same": bool}.
        #[arg(long)]
        json: bool,
    },
    /// Show a job: with CONFIG, the job KEY of that config file (`.aurora` or JSON) as Hearth
    /// reads it, offline (`--json`: the Aurora job JSON that `hearth run` and `job create` take);
    /// without, the scheduler's view: its settings and the config it runs.
    Inspect {
        key: JobKey,
        /// A config file to read instead of asking the scheduler.
        config: Option<PathBuf>,
        /// For an `.aurora` config: bind a template variable, NAME=VALUE (repeatable).
        #[arg(long = "bind")]
        binds: Vec<String>,
        #[command(flatten)]
        connect: ConnectArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: JobCommand) -> ExitCode {
    let is_diff = matches!(cmd, JobCommand::Diff { .. });
    match dispatch(cmd) {
        Ok(code) => code,
        Err(e) => {
            let code = output::fail(&e);
            // `job diff` keeps diff(1)'s convention: 1 means "different", trouble is 2.
            if is_diff { ExitCode::from(2) } else { code }
        }
    }
}

fn dispatch(cmd: JobCommand) -> anyhow::Result<ExitCode> {
    let done = match cmd {
        JobCommand::Diff {
            key,
            config,
            binds,
            connect,
            json,
        } => {
            let same = diff(&key, &config, &binds, &connect, json)?;
            return Ok(if same {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        JobCommand::Create {
            key,
            config,
            binds,
            connect,
            json,
        } => create(&key, &config, &binds, &connect, json),
        JobCommand::Status { key, connect, json } => status(&key, &connect, json),
        JobCommand::Kill {
            key,
            instances,
            no_wait,
            timeout,
            connect,
            json,
        } => kill(
            &key,
            instances.map(|i| i.0),
            !no_wait,
            timeout,
            &connect,
            json,
        ),
        JobCommand::Restart {
            key,
            instances,
            connect,
            json,
        } => {
            let client = Client::connect(&connect)?;
            let resp = client
                .restart(&key, instances.map(|i| i.0))
                .with_context(|| format!("job restart {key}"))?;
            if json {
                output::print_json(&resp)
            } else {
                println!("{}", resp.message);
                for t in &resp.tasks {
                    println!("  restarting {t}");
                }
                println!("watch the new tasks: hearth job status {key}");
                Ok(())
            }
        }
        JobCommand::List {
            role,
            connect,
            json,
        } => list(role.as_deref(), &connect, json),
        JobCommand::Inspect {
            key,
            config: Some(path),
            binds,
            json,
            ..
        } => inspect_file(&key, &path, &binds, json),
        JobCommand::Inspect {
            key,
            config: None,
            connect,
            json,
            ..
        } => inspect(&key, &connect, json),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// Read the job `key` from a config: an Aurora job JSON, or an `.aurora` file evaluated with
/// `binds` (`--bind NAME=VALUE`). The task part is validated as `hearth run` would.
pub fn load_job_config(path: &Path, key: &JobKey, binds: &[String]) -> anyhow::Result<Value> {
    let value = if hearth::aurora_cmd::is_aurora_file(path) {
        hearth::aurora_cmd::job_json(path, &key.to_string(), binds).map_err(UsageError)?
    } else {
        if !binds.is_empty() {
            return Err(UsageError(format!(
                "{}: --bind applies to .aurora configs only; a JSON config has no templates \
                 to bind",
                path.display()
            ))
            .into());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read job config {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            UsageError(format!(
                "job config {} is not valid JSON: {e}",
                path.display()
            ))
        })?
    };
    if !value.is_object() {
        return Err(UsageError(format!(
            "job config {} must be a JSON object (an Aurora job)",
            path.display()
        ))
        .into());
    }
    if let Err(errors) = hearth_checkpoints::config::parse(&value.to_string()) {
        return Err(UsageError(format!(
            "{}: invalid task config:\n{errors}",
            path.display()
        ))
        .into());
    }
    Ok(value)
}

/// `job inspect KEY CONFIG`: the job as read from a file, without a scheduler.
fn inspect_file(key: &JobKey, path: &Path, binds: &[String], json: bool) -> anyhow::Result<()> {
    if hearth::aurora_cmd::is_aurora_file(path) {
        let value =
            hearth::aurora_cmd::job_json(path, &key.to_string(), binds).map_err(UsageError)?;
        if json {
            return output::print_json(&value);
        }
        print!("{}", crate::job_view::render_inspect(&value));
        return Ok(());
    }
    let mut value = load_job_config(path, key, binds)?;
    bind_key(&mut value, key, path)?;
    if json {
        output::print_json(&value)
    } else {
        print!("{}", crate::job_view::render_inspect(&value));
        Ok(())
    }
}

/// Make the config name the job `key`: fill in the parts it lacks, refuse ones that differ.
pub fn bind_key(config: &mut Value, key: &JobKey, path: &Path) -> Result<(), UsageError> {
    let Some(obj) = config.as_object_mut() else {
        return Err(UsageError(format!(
            "job config {} must be a JSON object",
            path.display()
        )));
    };
    for (field, want) in [
        ("cluster", &key.cluster),
        ("role", &key.role),
        ("environment", &key.environment),
        ("name", &key.name),
    ] {
        match obj.get(field) {
            None | Some(Value::Null) => {
                obj.insert(field.to_owned(), Value::String(want.clone()));
            }
            Some(Value::String(have)) if have == want => {}
            Some(have) => {
                return Err(UsageError(format!(
                    "job key {key} does not match {}: its {field} is {have}, the key's is \
                     {want:?}; use a key that matches the config or edit the config",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// A set of instance numbers, parsed from `0-2,5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instances(pub Vec<u32>);

/// `0-2,5` → `[0, 1, 2, 5]`.
pub fn parse_instances(s: &str) -> Result<Instances, String> {
    let mut set = BTreeSet::new();
    for part in s.split(',').map(str::trim) {
        let num = |t: &str| {
            t.trim().parse::<u32>().map_err(|e| {
                format!(
                    "instances {s:?}: {t:?} is not an instance number ({e}); expected e.g. 0-2,5"
                )
            })
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("instances {s:?}: range {part:?} runs backwards"));
                }
                if b - a > 100_000 {
                    return Err(format!("instances {s:?}: range {part:?} is too large"));
                }
                set.extend(a..=b);
            }
            None => {
                set.insert(num(part)?);
            }
        }
    }
    Ok(Instances(set.into_iter().collect()))
}

fn inspect(key: &JobKey, connect: &ConnectArgs, json: bool) -> anyhow::Result<()> {
    let client = Client::connect(connect)?;
    let detail = client
        .job(key)
        .with_context(|| format!("job inspect {key}"))?;
    if json {
        return output::print_json(&detail);
    }
    let s = &detail.summary;
    println!("job {}", s.key);
    println!("  instances          {}", s.instances);
    println!(
        "  kind               {}",
        if s.service { "service" } else { "batch" }
    );
    println!("  tier               {}", tier(s.tier));
    println!("  priority           {}", s.priority);
    println!("  max_task_failures  {}", detail.max_task_failures);
    println!("  created            {}", fmt_time(s.created_ms));
    for (attr, c) in &detail.constraints {
        println!("  constraint         {attr} = {c}");
    }
    println!("  tasks              {}", counts(&s.task_counts));
    println!("config:");
    println!("{}", serde_json::to_string_pretty(&detail.config)?);
    Ok(())
}

fn create(
    key: &JobKey,
    path: &Path,
    binds: &[String],
    connect: &ConnectArgs,
    json: bool,
) -> anyhow::Result<()> {
    let mut config = load_job_config(path, key, binds)?;
    bind_key(&mut config, key, path)?;
    let client = Client::connect(connect)?;
    let summary = client
        .create_job(&CreateJobRequest {
            key: key.clone(),
            config,
        })
        .with_context(|| format!("job create {key}"))?;
    if json {
        return output::print_json(&summary);
    }
    println!(
        "created job {key}: {} instance{} ({})",
        summary.instances,
        if summary.instances == 1 { "" } else { "s" },
        if summary.service { "service" } else { "batch" }
    );
    println!("watch it: hearth job status {key}");
    Ok(())
}

fn status(key: &JobKey, connect: &ConnectArgs, json: bool) -> anyhow::Result<()> {
    let client = Client::connect(connect)?;
    let mut tasks = client
        .tasks(key)
        .with_context(|| format!("job status {key}"))?;
    if json {
        return output::print_json(&tasks);
    }
    sort_tasks(&mut tasks);
    if tasks.is_empty() {
        println!("job {key} has no tasks");
        return Ok(());
    }
    print!("{}", render_tasks(&tasks, now_ms()));
    Ok(())
}

/// By instance; within one, the newest first.
fn sort_tasks(tasks: &mut [TaskStatus]) {
    tasks.sort_by_key(|t| (t.instance, std::cmp::Reverse(last_event_ms(t))));
}

fn last_event_ms(t: &TaskStatus) -> i64 {
    t.events.last().map_or(0, |e| e.timestamp_ms)
}

/// The status table: one row per task.
pub fn render_tasks(tasks: &[TaskStatus], now: i64) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.instance.to_string(),
                t.state.name().to_owned(),
                t.agent.clone().unwrap_or_else(|| "-".to_owned()),
                t.events
                    .last()
                    .map_or_else(|| "-".to_owned(), |e| fmt_relative(e.timestamp_ms, now)),
                t.task_id.clone(),
                detail(t, now),
            ]
        })
        .collect();
    table(
        &["INSTANCE", "STATE", "HOST", "SINCE", "TASK", "DETAIL"],
        &rows,
    )
}

/// What a person wants to know about a task in its state; a condition its executor reports
/// (checkpoint writes failing) comes first, in capitals.
fn detail(t: &TaskStatus, now: i64) -> String {
    let in_state = detail_in_state(t, now);
    match &t.executor_condition {
        Some(c) if in_state.is_empty() => format!("WARNING: {c}"),
        Some(c) => format!("WARNING: {c}; {in_state}"),
        None => in_state,
    }
}

fn detail_in_state(t: &TaskStatus, now: i64) -> String {
    let reason = t.reason.clone().unwrap_or_default();
    match t.state {
        ScheduleStatus::Throttled => match t.throttled_until {
            Some(until) => format!(
                "flapping: PENDING at {} ({}){}",
                fmt_time(until),
                fmt_relative(until, now),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!("; {reason}")
                }
            ),
            None => reason,
        },
        ScheduleStatus::Pending if !reason.is_empty() => format!("cannot be placed: {reason}"),
        ScheduleStatus::Pending => "waiting for a host".to_owned(),
        _ => match (reason.is_empty(), t.failure_count) {
            (_, 0) => reason,
            (true, n) => format!("failures: {n}"),
            (false, n) => format!("{reason} (failures: {n})"),
        },
    }
}

fn kill(
    key: &JobKey,
    instances: Option<Vec<u32>>,
    wait: bool,
    timeout: Duration,
    connect: &ConnectArgs,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::connect(connect)?;
    let resp = client
        .kill(key, instances.clone())
        .with_context(|| format!("job kill {key}"))?;
    if !json {
        println!("{}", resp.message);
    }
    if !wait {
        return if json {
            output::print_json(&resp)
        } else {
            Ok(())
        };
    }
    let wanted = |t: &TaskStatus| {
        instances
            .as_ref()
            .is_none_or(|list| list.contains(&t.instance))
    };
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let tasks = client
            .tasks(key)
            .with_context(|| format!("job kill {key}: waiting for the tasks to end"))?;
        let mut alive: Vec<&TaskStatus> = tasks
            .iter()
            .filter(|t| wanted(t) && !t.state.is_terminal())
            .collect();
        if alive.is_empty() {
            if json {
                return output::print_json(&resp);
            }
            let mut ended: Vec<&TaskStatus> = tasks
                .iter()
                .filter(|t| resp.tasks.contains(&t.task_id))
                .collect();
            ended.sort_by_key(|t| t.instance);
            for t in &ended {
                println!("instance {} {} {}", t.instance, t.state.name(), t.task_id);
            }
            for id in &resp.tasks {
                if !ended.iter().any(|t| &t.task_id == id) {
                    println!("{id} removed (it had not started)");
                }
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            alive.sort_by_key(|t| t.instance);
            let list: Vec<String> = alive
                .iter()
                .map(|t| {
                    format!(
                        "instance {} ({} {} on {})",
                        t.instance,
                        t.task_id,
                        t.state.name(),
                        t.agent.as_deref().unwrap_or("no host")
                    )
                })
                .collect();
            bail!(
                "job kill {key}: still not ended after {}: {}; the scheduler keeps re-sending \
                 the kill (is the agent of that host running? see `hearth host status`)",
                output::fmt_span(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)),
                list.join(", ")
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

fn list(role: Option<&str>, connect: &ConnectArgs, json: bool) -> anyhow::Result<()> {
    let client = Client::connect(connect)?;
    let mut jobs = client.list_jobs(role).context("job list")?;
    if json {
        return output::print_json(&jobs);
    }
    jobs.sort_by(|a, b| a.key.cmp(&b.key));
    if jobs.is_empty() {
        match role {
            Some(r) => println!("no jobs of role {r}"),
            None => println!("no jobs"),
        }
        return Ok(());
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.key.to_string(),
                j.instances.to_string(),
                if j.service { "service" } else { "batch" }.to_owned(),
                tier(j.tier).to_owned(),
                counts(&j.task_counts),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["JOB", "INSTANCES", "KIND", "TIER", "TASKS"], &rows)
    );
    Ok(())
}

fn tier(t: Tier) -> &'static str {
    match t {
        Tier::Preferred => "preferred",
        Tier::Preemptible => "preemptible",
        Tier::Revocable => "revocable",
    }
}

fn counts(c: &std::collections::BTreeMap<String, u32>) -> String {
    if c.is_empty() {
        return "-".to_owned();
    }
    c.iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Print the differences; true when there are none.
fn diff(
    key: &JobKey,
    path: &Path,
    binds: &[String],
    connect: &ConnectArgs,
    json: bool,
) -> anyhow::Result<bool> {
    let mut local = load_job_config(path, key, binds)?;
    bind_key(&mut local, key, path)?;
    let client = Client::connect(connect)?;
    let detail = client.job(key).with_context(|| format!("job diff {key}"))?;
    let remote = detail.config;
    let same = canonical(&remote) == canonical(&local);
    if json {
        output::print_json(&serde_json::json!({
            "scheduler": remote, "local": local, "same": same,
        }))?;
        return Ok(same);
    }
    if same {
        println!("job {key}: no differences from {}", path.display());
        return Ok(true);
    }
    let a = pretty_lines(&remote)?;
    let b = pretty_lines(&local)?;
    println!("--- scheduler {key}");
    println!("+++ {}", path.display());
    for line in with_context(&line_diff(&a, &b), 3) {
        println!("{line}");
    }
    Ok(false)
}

/// The value with every object's keys sorted (so that key order never shows as a difference).
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                if let Some(x) = m.get(k) {
                    out.insert(k.clone(), canonical(x));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn pretty_lines(v: &Value) -> anyhow::Result<Vec<String>> {
    Ok(serde_json::to_string_pretty(&canonical(v))?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// A line diff (longest common subsequence): ` ` kept, `-` only in `a`, `+` only in `b`.
pub fn line_diff(a: &[String], b: &[String]) -> Vec<String> {
    let (n, m) = (a.len(), b.len());
    // lcs[i][j] = length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(format!(" {}", a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("-{}", a[i]));
            i += 1;
        } else {
            out.push(format!("+{}", b[j]));
            j += 1;
        }
    }
    out
}

/// The changed lines of a [`line_diff`] with `context` unchanged lines around each change;
/// `...` stands for what is left out.
pub fn with_context(diff: &[String], context: usize) -> Vec<String> {
    let changed: Vec<usize> = diff
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.starts_with(' '))
        .map(|(i, _)| i)
        .collect();
    let near = |i: usize| changed.iter().any(|&c| c.abs_diff(i) <= context);
    let mut out = Vec::new();
    let mut skipped = false;
    for (i, line) in diff.iter().enumerate() {
        if near(i) {
            if skipped {
                out.push("...".to_owned());
                skipped = false;
            }
            out.push(line.clone());
        } else {
            skipped = true;
        }
    }
    if skipped {
        out.push("...".to_owned());
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hearth_scheduler::wire::TaskEvent;
    use std::collections::BTreeMap;

    #[test]
    fn instances_parse_ranges_and_lists() {
        assert_eq!(parse_instances("0-2,5").unwrap().0, vec![0, 1, 2, 5]);
        assert_eq!(parse_instances("3").unwrap().0, vec![3]);
        assert_eq!(parse_instances("2,1,1-2").unwrap().0, vec![1, 2]);
        assert!(parse_instances("2-1").unwrap_err().contains("backwards"));
        assert!(parse_instances("a").unwrap_err().contains("\"a\""));
    }

    #[test]
    fn a_config_takes_the_parts_of_the_key_it_lacks_and_refuses_others() {
        let key: JobKey = "west/root/test/hello".parse().unwrap();
        let mut c = serde_json::json!({"role": "root", "name": "hello", "task": {}});
        bind_key(&mut c, &key, Path::new("c.json")).unwrap();
        assert_eq!(c["cluster"], "west");
        assert_eq!(c["environment"], "test");
        let mut c = serde_json::json!({"role": "www", "name": "hello"});
        let e = bind_key(&mut c, &key, Path::new("c.json")).unwrap_err();
        assert!(
            e.0.contains("west/root/test/hello") && e.0.contains("role"),
            "{e}"
        );
    }

    #[test]
    fn a_bind_on_a_json_config_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(&path, "{}").unwrap();
        let key: JobKey = "west/root/test/hello".parse().unwrap();
        let e = load_job_config(&path, &key, &["x=1".to_owned()]).unwrap_err();
        assert!(e.to_string().contains("--bind"), "{e}");
        assert!(e.downcast_ref::<UsageError>().is_some());
    }

    fn task(instance: u32, state: ScheduleStatus) -> TaskStatus {
        TaskStatus {
            job: "c/r/test/j".parse().unwrap(),
            instance,
            task_id: format!("r-test-j-{instance}-1-abcd"),
            state,
            agent: None,
            reason: None,
            throttled_until: None,
            ancestor_id: None,
            failure_count: 0,
            ports: BTreeMap::new(),
            executor_condition: None,
            events: vec![TaskEvent {
                timestamp_ms: 10_000,
                state,
                message: None,
            }],
        }
    }

    #[test]
    fn an_executor_condition_leads_the_detail() {
        let mut t = task(0, ScheduleStatus::Running);
        t.reason = Some("Task is healthy.".to_owned());
        t.executor_condition = Some("checkpoint writes failing: No space left on device".into());
        let out = render_tasks(&[t], 10_000);
        assert!(
            out.contains(
                "WARNING: checkpoint writes failing: No space left on device; Task is healthy."
            ),
            "{out}"
        );
    }

    #[test]
    fn throttled_tasks_show_when_they_become_pending() {
        let mut t = task(0, ScheduleStatus::Throttled);
        t.throttled_until = Some(40_000);
        let out = render_tasks(&[t], 10_000);
        assert!(
            out.contains("PENDING at 1970-01-01 00:00:40Z (in 30s)"),
            "{out}"
        );
    }

    #[test]
    fn pending_tasks_show_why_they_cannot_be_placed() {
        let mut t = task(1, ScheduleStatus::Pending);
        t.reason = Some("Insufficient resources: ram".into());
        let out = render_tasks(&[t], 12_000);
        assert!(
            out.contains("cannot be placed: Insufficient resources: ram"),
            "{out}"
        );
        assert!(out.starts_with("INSTANCE  STATE"), "{out}");
    }

    #[test]
    fn line_diff_marks_added_and_removed_lines() {
        let a: Vec<String> = ["{", "  \"a\": 1,", "  \"b\": 2", "}"]
            .map(String::from)
            .to_vec();
        let b: Vec<String> = ["{", "  \"a\": 1,", "  \"b\": 3", "}"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            line_diff(&a, &b),
            vec![" {", "   \"a\": 1,", "-  \"b\": 2", "+  \"b\": 3", " }"]
        );
        let mut d: Vec<String> = (0..20).map(|i| format!(" l{i}")).collect();
        d[10] = "-x".into();
        let shown = with_context(&d, 2);
        assert_eq!(
            shown,
            vec!["...", " l8", " l9", "-x", " l11", " l12", "..."]
        );
        assert_eq!(
            canonical(&serde_json::json!({"b": 1, "a": 2})),
            serde_json::json!({"a": 2, "b": 1})
        );
    }
}
