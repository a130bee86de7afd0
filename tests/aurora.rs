//! `.aurora` configs end to end: each job of `testdata/aurora/` is evaluated by `hearth_aurora`
//! into the Aurora job JSON `hearth job inspect --json` prints, which the real `hearth` binary
//! then validates and runs.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Env, TestResult, show, states};
use hearth_aurora::{EvalOptions, evaluate, parse_bind};
use hearth_checkpoints::record::{ProcessState as P, TaskState};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/aurora")
        .join(name)
}

fn opts(binds: &[&str]) -> EvalOptions {
    EvalOptions {
        env: Arc::new(|k: &str| (k == "USER").then(|| "tester".to_owned())),
        binds: binds.iter().map(|b| parse_bind(b).unwrap()).collect(),
        ..EvalOptions::default()
    }
}

/// Evaluate `file`, write job `key`'s JSON beside the test's root, check that `hearth validate`
/// accepts it and run it with `hearth run`; returns the sandbox.
fn run_job(env: &Env, file: &str, key: &str, binds: &[&str], task_id: &str) -> PathBuf {
    let evaluated = evaluate(&data(file), &opts(binds)).unwrap();
    let json = evaluated.job_json(key).unwrap();
    let path = env.dir.path().join(format!("{task_id}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(json).unwrap()).unwrap();
    let out = common::hearth()
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "validate {key}: {}", show(&out));
    let out = env.run(
        &path,
        task_id,
        &["--no-setuid", "--no-cgroups", "--instance", "0"],
    );
    assert_eq!(out.status.code(), Some(0), "run {key}: {}", show(&out));
    assert_eq!(env.replay(task_id).state(), TaskState::Success);
    env.sandbox(task_id)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn profile_bound_job_runs_its_sequential_processes() -> TestResult {
    let env = Env::new();
    let sandbox = run_job(
        &env,
        "profiles.aurora",
        "local/tester/prod/app",
        &[],
        "profiles",
    );
    assert_eq!(
        read(&sandbox.join("version.txt")),
        "version=live\ndataset=data/prod\nit's main at 0.25 cores, verbose=False\n"
    );
    let r = env.replay("profiles");
    assert_eq!(states(&r, "greet"), vec![P::Success]);
    Ok(())
}

#[test]
fn concatenated_tasks_run_one_after_another() -> TestResult {
    let env = Env::new();
    let sandbox = run_job(
        &env,
        "combine.aurora",
        "local/www-data/prod/concat",
        &[],
        "concat",
    );
    assert_eq!(
        read(&sandbox.join("steps")),
        "download\nunpack\nconfigure\nstart\n"
    );
    Ok(())
}

#[test]
fn combined_tasks_run_every_process() -> TestResult {
    let env = Env::new();
    let sandbox = run_job(
        &env,
        "combine.aurora",
        "local/www-data/prod/combine",
        &[],
        "combine",
    );
    assert_eq!(read(&sandbox.join("steps")), "download\nunpack\n");
    assert_eq!(read(&sandbox.join("side")), "side\n");
    Ok(())
}

#[test]
fn simple_task_runs() -> TestResult {
    let env = Env::new();
    run_job(
        &env,
        "combine.aurora",
        "local/www-data/prod/simple",
        &[],
        "simple",
    );
    assert_eq!(states(&env.replay("simple"), "simple"), vec![P::Success]);
    Ok(())
}

#[test]
fn services_with_health_checks_lifecycle_and_update_strategies_run() -> TestResult {
    let env = Env::new();
    for (key, id) in [
        ("west/www-data/prod/http_checked", "http_checked"),
        ("west/www-data/prod/shell_checked", "shell_checked"),
        ("west/www-data/prod/variable", "variable"),
        ("west/www-data/prod/nightly", "nightly"),
    ] {
        run_job(&env, "services.aurora", key, &[], id);
        let log = env.sandbox(id).join(".logs/server/0/stdout");
        let out = read(&log);
        assert!(out.starts_with("serving on "), "{id}: {out:?}");
        assert!(out.trim_end().ends_with("instance 0"), "{id}: {out:?}");
    }
    Ok(())
}

#[test]
fn included_definitions_and_command_line_binds_run() -> TestResult {
    let env = Env::new();
    let sandbox = run_job(
        &env,
        "include_main.aurora",
        "local/www-data/test/included",
        &["greeting=hi there"],
        "included",
    );
    assert_eq!(read(&sandbox.join("hello.out")), "hi there\n");
    Ok(())
}

// The command line: `.aurora` files straight to `hearth validate`, `hearth run --job` and
// `hearth job inspect KEY FILE`.

#[test]
fn hearth_run_takes_an_aurora_file_and_a_job_key_with_binds() -> TestResult {
    let env = Env::new();
    let out = env.run(
        &data("include_main.aurora"),
        "cli-included",
        &[
            "--job",
            "local/www-data/test/included",
            "--bind",
            "greeting=from the command line",
            "--no-setuid",
            "--no-cgroups",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(env.replay("cli-included").state(), TaskState::Success);
    assert_eq!(
        read(&env.sandbox("cli-included").join("hello.out")),
        "from the command line\n"
    );
    Ok(())
}

#[test]
fn hearth_run_of_an_aurora_file_without_job_lists_the_keys_and_creates_nothing() -> TestResult {
    let env = Env::new();
    let out = env.run(
        &data("combine.aurora"),
        "no-job",
        &["--no-setuid", "--no-cgroups"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--job"), "{err}");
    assert!(err.contains("local/www-data/prod/combine"), "{err}");
    assert!(!env.root().join("checkpoints/no-job").exists());
    Ok(())
}

#[test]
fn hearth_validate_checks_every_job_of_an_aurora_file_or_the_one_named() -> TestResult {
    let out = common::hearth()
        .arg("validate")
        .arg(data("combine.aurora"))
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for key in ["concat", "combine", "simple"] {
        assert!(
            text.contains(&format!("local/www-data/prod/{key}: ok")),
            "{text}"
        );
    }
    let out = common::hearth()
        .arg("validate")
        .arg(data("unbound.aurora"))
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("{{version}}"),
        "{}",
        show(&out)
    );
    let out = common::hearth()
        .args(["validate", "--job", "local/www-data/prod/none"])
        .arg(data("combine.aurora"))
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("local/www-data/prod/simple"),
        "{}",
        show(&out)
    );
    Ok(())
}

#[test]
fn job_inspect_json_prints_what_the_evaluator_makes_and_validate_accepts_it() -> TestResult {
    let env = Env::new();
    let key = "local/www-data/prod/combine";
    let out = common::hearth()
        .args(["job", "inspect", "--json", key])
        .arg(data("combine.aurora"))
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let evaluated = evaluate(&data("combine.aurora"), &opts(&[]))?;
    assert_eq!(&printed, evaluated.job_json(key)?);
    let path = env.dir.path().join("combine.json");
    std::fs::write(&path, &out.stdout)?;
    let out = common::hearth().arg("validate").arg(&path).output()?;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = common::hearth()
        .args(["job", "inspect", key])
        .arg(data("combine.aurora"))
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Job level information"),
        "{}",
        show(&out)
    );
    Ok(())
}

#[test]
fn job_inspect_shows_job_task_and_processes_like_aurora() -> TestResult {
    let out = common::hearth()
        .args(["job", "inspect", "local/www-data/prod/concat"])
        .arg(data("combine.aurora"))
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = String::from_utf8(out.stdout)?;
    assert!(
        out.starts_with("Job level information\n  name:       'concat'\n"),
        "{out}"
    );
    assert!(
        out.contains("  cluster:    'local'\n  instances:  '1'\n"),
        "{out}"
    );
    assert!(
        out.contains("Task level information\n  name: 'setup'\n"),
        "{out}"
    );
    assert!(out.contains("  download < unpack\n"), "{out}");
    assert!(
        out.contains("Process 'start':\n  cmdline:\n    echo start >> steps\n"),
        "{out}"
    );
    Ok(())
}

/// `hearth` runs the evaluator as a separate executable, so that what each task's executor and
/// keeper map stays small: the `hearth` executable carries none of it.
#[test]
fn the_hearth_executable_does_not_carry_the_evaluator() -> TestResult {
    let hearth = std::fs::read(env!("CARGO_BIN_EXE_hearth"))?;
    let evaluator = std::fs::read(env!("CARGO_BIN_EXE_hearth-aurora"))?;
    let marker = regex::bytes::Regex::new("starlark-")?;
    let carries = |bin: &[u8]| marker.is_match(bin);
    assert!(
        carries(&evaluator),
        "the marker must name the evaluator's code"
    );
    assert!(!carries(&hearth), "hearth links the Starlark evaluator");
    Ok(())
}

/// Without the evaluator beside it or on `PATH`, reading an `.aurora` file says what is missing.
#[test]
fn a_missing_evaluator_is_named_in_the_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let alone = dir.path().join("hearth");
    std::fs::copy(env!("CARGO_BIN_EXE_hearth"), &alone)?;
    let out = std::process::Command::new(&alone)
        .env("PATH", dir.path())
        .arg("validate")
        .arg(data("combine.aurora"))
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hearth-aurora") && err.contains("could not be run"),
        "{err}"
    );
    Ok(())
}
