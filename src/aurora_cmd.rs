//! `.aurora` configs on the command line: `hearth validate FILE.aurora [--job KEY]`, `hearth run
//! FILE.aurora --job KEY`, and the configs `hearth job inspect|create|diff KEY FILE` read
//! (`src/job.rs`).
//!
//! The evaluation runs in another executable, `hearth-aurora` (`src/bin/hearth-aurora.rs`), found
//! beside `hearth` or else on `PATH`: the evaluator is most of the code there is, and every
//! command that starts `hearth` (or `hearth-executor`) would pay for it.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::Value;

/// The name of the evaluator's executable.
const EVALUATOR: &str = "hearth-aurora";

/// One job of an evaluated file: its key, and its Aurora job JSON or why it cannot be used.
#[derive(Debug)]
pub struct EvaluatedJob {
    pub key: String,
    pub json: Result<Value, String>,
}

/// Where the evaluator is: beside this executable (how both are built and installed), else on
/// `PATH`.
fn evaluator() -> PathBuf {
    crate::run_cmd::beside_this_executable(EVALUATOR).unwrap_or_else(|| PathBuf::from(EVALUATOR))
}

/// Evaluate `path` with `--bind NAME=VALUE` arguments: every job of the file, or only `job`. The
/// error is what to tell the user: the file's, a bind's or the key's problem, or why the
/// evaluator could not be run.
pub fn evaluate(
    path: &Path,
    job: Option<&str>,
    binds: &[String],
) -> Result<Vec<EvaluatedJob>, String> {
    let program = evaluator();
    let mut cmd = Command::new(&program);
    cmd.arg(path);
    if let Some(key) = job {
        cmd.arg("--job").arg(key);
    }
    for bind in binds {
        cmd.arg("--bind").arg(bind);
    }
    let out = cmd.output().map_err(|e| {
        format!(
            "{}: .aurora configs are evaluated by {EVALUATOR}, which could not be run ({}: {e}); \
             it is built and installed with hearth (`cargo build --release` builds both)",
            path.display(),
            program.display()
        )
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        return Err(match out.status.code() {
            Some(2) if !stderr.is_empty() => stderr.to_owned(),
            _ => format!(
                "{}: {} failed ({}){}{stderr}",
                path.display(),
                program.display(),
                out.status,
                if stderr.is_empty() { "" } else { ": " }
            ),
        });
    }
    parse_output(&out.stdout).map_err(|why| {
        format!(
            "{}: {} printed what hearth cannot read ({why}); are both from the same build?",
            path.display(),
            program.display()
        )
    })
}

/// The evaluator's stdout: `{"hearth_aurora": VERSION, "jobs": [{"key", "json" | "error"}...]}`.
fn parse_output(stdout: &[u8]) -> Result<Vec<EvaluatedJob>, String> {
    let value: Value = serde_json::from_slice(stdout).map_err(|e| e.to_string())?;
    let version = value.get("hearth_aurora").and_then(Value::as_str);
    if version != Some(env!("CARGO_PKG_VERSION")) {
        return Err(format!(
            "version {}, this hearth is {}",
            version.unwrap_or("unknown"),
            env!("CARGO_PKG_VERSION")
        ));
    }
    let jobs = value
        .get("jobs")
        .and_then(Value::as_array)
        .ok_or("no \"jobs\" list")?;
    jobs.iter()
        .map(|job| {
            let key = job
                .get("key")
                .and_then(Value::as_str)
                .ok_or("a job without a \"key\"")?
                .to_owned();
            let json = match (job.get("json"), job.get("error").and_then(Value::as_str)) {
                (Some(json), None) => Ok(json.clone()),
                (None, Some(error)) => Err(error.to_owned()),
                _ => return Err(format!("job {key}: neither \"json\" nor \"error\"")),
            };
            Ok(EvaluatedJob { key, json })
        })
        .collect()
}

/// Whether a path names a `.aurora` config (rather than JSON).
pub fn is_aurora_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "aurora")
}

/// Evaluate `path` and return the Aurora job JSON of the job `key`.
pub fn job_json(path: &Path, key: &str, binds: &[String]) -> Result<Value, String> {
    let mut jobs = evaluate(path, Some(key), binds)?;
    match jobs.pop() {
        Some(job) if jobs.is_empty() => job.json,
        _ => Err(format!(
            "{}: {EVALUATOR} did not return exactly the job {key}",
            path.display()
        )),
    }
}

/// `hearth validate FILE.aurora [--job KEY] [--bind N=V]...`: every job of the file (or the one
/// named), each checked as `hearth run` would check it. Exit 2 when any fails.
pub fn validate(path: &Path, job: Option<&str>, binds: &[String], json: bool) -> ExitCode {
    let jobs = match evaluate(path, job, binds) {
        Ok(jobs) => jobs,
        Err(e) => {
            eprintln!("hearth: {e}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    let mut report = Vec::new();
    for EvaluatedJob { key, json: value } in &jobs {
        let outcome = check_job(value);
        failed |= outcome.is_err();
        if json {
            report.push(match &outcome {
                Ok(()) => serde_json::json!({"job": key, "ok": true}),
                Err(problem) => serde_json::json!({"job": key, "ok": false, "error": problem}),
            });
        } else {
            match outcome {
                Ok(()) => println!("{key}: ok"),
                Err(problem) => println!("{key}: {problem}"),
            }
        }
    }
    if json {
        println!("{}", Value::Array(report));
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether a job would run: evaluated without error, and its task valid.
fn check_job(value: &Result<Value, String>) -> Result<(), String> {
    let value = value.as_ref().map_err(Clone::clone)?;
    hearth_checkpoints::config::parse(&value.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A JSON file holding the job `key` of an `.aurora` file, for `hearth run` (which copies its
/// config into the task's checkpoint directory, so the file is only needed until it starts).
#[derive(Debug)]
pub struct Materialized {
    pub path: PathBuf,
}

impl Materialized {
    pub fn new(aurora: &Path, key: &str, binds: &[String]) -> Result<Materialized, String> {
        let value = job_json(aurora, key, binds)?;
        let safe: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = std::env::temp_dir().join(format!("hearth-{}-{safe}.json", std::process::id()));
        let text = serde_json::to_vec_pretty(&value).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(Materialized { path })
    }
}

impl Drop for Materialized {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
