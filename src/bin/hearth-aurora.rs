//! `hearth-aurora`: evaluates an `.aurora` job config for `hearth`, in a process of its own.
//!
//! ```text
//! hearth-aurora FILE [--job CLUSTER/ROLE/ENVIRONMENT/NAME] [--bind NAME=VALUE]...
//! ```
//!
//! It prints one JSON object on stdout, `{"hearth_aurora": VERSION, "jobs": [JOB...]}`, where each
//! `JOB` is `{"key": K, "json": {...}}` (the Aurora job JSON) or `{"key": K, "error": "..."}` (why
//! that job cannot be used), in the order of the file's `jobs` list; with `--job`, only that job.
//! A file that cannot be evaluated at all, a malformed `--bind` or a `--job` the file does not
//! define prints the reason on stderr and exits 2.
//!
//! Why a second executable: the evaluator (Starlark) is most of `hearth`'s code and runs 400
//! static constructors at every start. `hearth run` and its keeper stay resident for a task's
//! whole life, so `hearth` does not link the evaluator and runs this program when it reads an
//! `.aurora` file (`src/aurora_cmd.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use hearth_aurora::{AuroraError, EvalOptions, evaluate, parse_bind};
use serde_json::{Value, json};

fn main() -> ExitCode {
    match run() {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<Value, String> {
    let mut opts = EvalOptions {
        user: invoking_user(),
        ..EvalOptions::default()
    };
    let mut file = None;
    let mut key = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bind" => {
                let text = args.next().ok_or("--bind needs NAME=VALUE")?;
                opts.binds
                    .push(parse_bind(&text).map_err(|e| e.to_string())?);
            }
            "--job" => {
                key = Some(
                    args.next()
                        .ok_or("--job needs CLUSTER/ROLE/ENVIRONMENT/NAME")?,
                )
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}; {USAGE}")),
            _ if file.is_none() => file = Some(PathBuf::from(arg)),
            _ => return Err(format!("unexpected argument {arg:?}; {USAGE}")),
        }
    }
    let file = file.ok_or(USAGE)?;
    let evaluated = evaluate(&file, &opts).map_err(|e| e.to_string())?;
    let jobs: Vec<&hearth_aurora::Job> = match &key {
        Some(key) => vec![evaluated.select_job(key).map_err(|e| e.to_string())?],
        None => evaluated.jobs.iter().collect(),
    };
    let jobs: Vec<Value> = jobs
        .into_iter()
        .map(|job| {
            let key = job.key.to_string();
            match &job.json {
                Ok(value) => json!({"key": key, "json": value}),
                Err(error) => {
                    let error = AuroraError::Job {
                        file: evaluated.path.clone(),
                        key: key.clone(),
                        error: error.clone(),
                    };
                    json!({"key": key, "error": error.to_string()})
                }
            }
        })
        .collect();
    Ok(json!({"hearth_aurora": env!("CARGO_PKG_VERSION"), "jobs": jobs}))
}

const USAGE: &str = "usage: hearth-aurora FILE [--job CLUSTER/ROLE/ENVIRONMENT/NAME] \
                     [--bind NAME=VALUE]...";

/// The name of the user running this, for `getpass.getuser()` when no variable names one.
fn invoking_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}
