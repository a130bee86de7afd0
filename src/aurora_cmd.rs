//! `.aurora` configs on the command line: `hearth validate FILE.aurora [--job KEY]`, `hearth run
//! FILE.aurora --job KEY`, and the configs `hearth job inspect|create|diff KEY FILE` read
//! (`src/job.rs`). The evaluation itself is `hearth_aurora`'s.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hearth_aurora::{AuroraError, EvalOptions, Evaluated};
use serde_json::Value;

/// Evaluation options for `--bind NAME=VALUE` arguments; a malformed one is an error naming it.
pub fn eval_options(binds: &[String]) -> Result<EvalOptions, AuroraError> {
    let binds = binds
        .iter()
        .map(|b| hearth_aurora::parse_bind(b))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EvalOptions {
        binds,
        user: invoking_user(),
        ..EvalOptions::default()
    })
}

/// The name of the user running `hearth`, for `getpass.getuser()` when no variable names one.
fn invoking_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Evaluate `path` and return the Aurora job JSON of the job `key`.
pub fn job_json(path: &Path, key: &str, binds: &[String]) -> Result<Value, AuroraError> {
    let evaluated = hearth_aurora::evaluate(path, &eval_options(binds)?)?;
    evaluated.job_json(key).cloned()
}

/// `hearth validate FILE.aurora [--job KEY] [--bind N=V]...`: every job of the file (or the one
/// named), each checked as `hearth run` would check it. Exit 2 when any fails.
pub fn validate(path: &Path, job: Option<&str>, binds: &[String], json: bool) -> ExitCode {
    let evaluated = match eval_options(binds).and_then(|o| hearth_aurora::evaluate(path, &o)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("hearth: {e}");
            return ExitCode::from(2);
        }
    };
    let keys: Vec<String> = match job {
        Some(key) => match evaluated.select_job(key) {
            Ok(j) => vec![j.key.to_string()],
            Err(e) => {
                eprintln!("hearth: {e}");
                return ExitCode::from(2);
            }
        },
        None => evaluated.keys(),
    };
    let mut failed = false;
    let mut report = Vec::new();
    for key in &keys {
        let outcome = check_job(&evaluated, key);
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

/// Whether the job `key` of `evaluated` would run: evaluated without error, and its task valid.
fn check_job(evaluated: &Evaluated, key: &str) -> Result<(), String> {
    let value = evaluated.job_json(key).map_err(|e| e.to_string())?;
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
        let value = job_json(aurora, key, binds).map_err(|e| e.to_string())?;
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
