//! `hearth validate`, driven through the real binary.
//!
//! * Every `testdata/configs/invalid/NAME.json` must exit 2 and print, on stderr, each line of
//!   `NAME.expected` (a field path and message) as a line of its own.
//! * Every `testdata/configs/valid/*.json` (and the demo task `testdata/tasks/hello_world.json`)
//!   must exit 0, and `--json` must show the normalized task with its defaults filled in.
//! * Aurora's own samples in `../shared/thermos/executor_json/` (never copied here) must validate.
//!   When they are missing this test skips with a printed reason, unless
//!   `HEARTH_REQUIRE_SHARED=1` (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn project(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn hearth_validate(config: &Path, json: bool) -> Result<Output, std::io::Error> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.arg("validate").arg(config);
    if json {
        cmd.arg("--json");
    }
    cmd.output()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The files in `dir` ending in `.ext`, sorted.
fn files_with(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Validate `config` with `--json`, expect exit 0, and parse the normalized task.
fn validated_json(config: &Path) -> Result<Value, Box<dyn std::error::Error>> {
    let out = hearth_validate(config, true)?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} should be valid; stderr:\n{}",
        config.display(),
        stderr_of(&out)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn every_invalid_config_exits_2_and_reports_its_expected_problems() -> TestResult {
    let dir = project("testdata/configs/invalid");
    let configs = files_with(&dir, "json")?;
    assert!(
        configs.len() >= 30,
        "expected at least 30 invalid configs, found {}",
        configs.len()
    );
    let mut failures = Vec::new();
    for config in &configs {
        let expected_path = config.with_extension("expected");
        let expected = match std::fs::read_to_string(&expected_path) {
            Ok(text) => text,
            Err(e) => {
                failures.push(format!("{}: {e}", expected_path.display()));
                continue;
            }
        };
        let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        if expected.is_empty() {
            failures.push(format!("{}: no expected lines", expected_path.display()));
            continue;
        }
        let out = hearth_validate(config, false)?;
        let stderr = stderr_of(&out);
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{}: exit {:?}, expected 2; stderr:\n{stderr}",
                config.display(),
                out.status.code()
            ));
            continue;
        }
        if !out.stdout.is_empty() {
            failures.push(format!("{}: printed to stdout", config.display()));
        }
        for line in expected {
            if !stderr.lines().any(|l| l.trim_end() == line) {
                failures.push(format!(
                    "{}: missing line `{line}`; stderr:\n{stderr}",
                    config.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    Ok(())
}

#[test]
fn every_expected_file_has_its_config() -> TestResult {
    let dir = project("testdata/configs/invalid");
    for expected in files_with(&dir, "expected")? {
        assert!(
            expected.with_extension("json").is_file(),
            "{} has no config",
            expected.display()
        );
    }
    Ok(())
}

#[test]
fn every_valid_config_exits_0() -> TestResult {
    let dir = project("testdata/configs/valid");
    let configs = files_with(&dir, "json")?;
    assert!(!configs.is_empty(), "no valid configs in {}", dir.display());
    for config in configs {
        let out = hearth_validate(&config, false)?;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: stderr:\n{}",
            config.display(),
            stderr_of(&out)
        );
        assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
    }
    Ok(())
}

#[test]
fn minimal_thermos_task_gets_every_default() -> TestResult {
    let task = validated_json(&project("testdata/configs/valid/thermos_minimal.json"))?;
    assert_eq!(
        task["name"], "hello",
        "task name defaults to the first process's"
    );
    assert_eq!(task["max_failures"], 1);
    assert_eq!(task["max_concurrency"], 0);
    assert_eq!(task["finalization_wait"], 30.0);
    assert_eq!(task["constraints"], json!([]));
    assert_eq!(
        task["resources"],
        json!({"cpu": 0.0, "ram": 0, "disk": 0, "gpu": 0})
    );
    assert_eq!(
        task["processes"][0],
        json!({
            "name": "hello",
            "cmdline": "echo hello",
            "max_failures": 1,
            "daemon": false,
            "ephemeral": false,
            "min_duration": 5.0,
            "final": false,
            "logger": {
                "destination": "file",
                "mode": "standard",
                "log_size": 104857600,
                "backups": 5
            }
        })
    );
    assert_eq!(task["job"]["kind"], "thermos_task");
    assert_eq!(task["job"]["health_check"], Value::Null);
    assert_eq!(task["job"]["lifecycle"], Value::Null);
    Ok(())
}

#[test]
fn process_fields_final_processes_and_loggers_are_kept() -> TestResult {
    let task = validated_json(&project(
        "testdata/configs/valid/thermos_all_process_fields.json",
    ))?;
    let procs = task["processes"].as_array().ok_or("processes is a list")?;
    let names: Vec<&str> = procs.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["fetch", "unpack", "stats", "archive", "notify"]);
    assert_eq!(procs[0]["max_failures"], 3);
    assert_eq!(procs[0]["min_duration"], 2.5);
    assert_eq!(
        procs[1]["logger"],
        json!({"destination": "both", "mode": "rotate", "log_size": 1048576, "backups": 2})
    );
    assert_eq!(procs[2]["daemon"], true);
    assert_eq!(procs[2]["ephemeral"], true);
    assert_eq!(procs[2]["max_failures"], 0);
    assert_eq!(procs[2]["logger"]["destination"], "none");
    assert_eq!(procs[3]["final"], true);
    assert_eq!(procs[4]["logger"]["destination"], "console");
    assert_eq!(
        task["constraints"],
        json!([["fetch", "unpack"], ["archive", "notify"]])
    );
    assert_eq!(
        task["resources"],
        json!({"cpu": 0.5, "ram": 134217728, "disk": 1073741824, "gpu": 0})
    );
    assert_eq!(task["max_failures"], 2);
    assert_eq!(task["max_concurrency"], 4);
    assert_eq!(task["finalization_wait"], 45.0);
    Ok(())
}

#[test]
fn aurora_service_keeps_health_check_lifecycle_and_portmap() -> TestResult {
    let task = validated_json(&project("testdata/configs/valid/aurora_service.json"))?;
    let job = &task["job"];
    assert_eq!(job["kind"], "aurora_job");
    assert_eq!(job["role"], "www-data");
    assert_eq!(job["environment"], "prod");
    assert_eq!(job["name"], "frontend");
    assert_eq!(job["cluster"], "west");
    assert_eq!(
        job["health_check"],
        json!({
            "checker": {"http": {
                "endpoint": "/healthz",
                "expected_response": "ok",
                "expected_response_code": 200
            }},
            "initial_interval": 30.0,
            "interval": 5.0,
            "timeout": 2.0,
            "max_consecutive_failures": 3,
            "min_consecutive_successes": 2
        })
    );
    assert_eq!(
        job["lifecycle"],
        json!({
            "port": "health",
            "graceful_shutdown_endpoint": "/quitquitquit",
            "shutdown_endpoint": "/abortabortabort",
            "graceful_shutdown_wait": 10.0,
            "shutdown_wait": 3.0
        })
    );
    assert_eq!(job["portmap"], json!({"aurora": "http", "metrics": "9102"}));
    // Validation leaves templates for the executor to bind.
    let cmdline = task["processes"][0]["cmdline"].as_str().ok_or("cmdline")?;
    assert!(cmdline.contains("{{thermos.ports[http]}}"), "{cmdline}");
    Ok(())
}

#[test]
fn task_instance_shell_check_wins_and_empty_lifecycle_disables_it() -> TestResult {
    let task = validated_json(&project("testdata/configs/valid/mesos_task_instance.json"))?;
    let job = &task["job"];
    assert_eq!(job["kind"], "task_instance");
    assert_eq!(job["instance"], 2);
    assert_eq!(
        job["health_check"]["checker"],
        json!({"shell": {"shell_command": "test -s /tmp/{{thermos.task_id}}/progress"}})
    );
    assert_eq!(job["health_check"]["interval"], 20.0);
    assert_eq!(job["health_check"]["initial_interval"], 15.0);
    assert_eq!(job["lifecycle"], Value::Null);
    Ok(())
}

#[test]
fn hello_world_demo_task_is_valid() -> TestResult {
    let task = validated_json(&project("testdata/tasks/hello_world.json"))?;
    assert_eq!(task["name"], "hello_world");
    assert_eq!(task["processes"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        task["constraints"],
        json!([["write_greeting", "read_greeting"]])
    );
    Ok(())
}

#[test]
fn missing_config_file_exits_2_with_one_problem() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nope.json");
    let out = hearth_validate(&missing, false)?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = stderr_of(&out);
    let wanted = format!("cannot read {}: ", missing.display());
    assert!(
        stderr.lines().any(|l| l.starts_with(&wanted)),
        "stderr:\n{stderr}"
    );
    Ok(())
}

/// `../shared/thermos/executor_json`, or `None` (after saying why) when it is absent and not
/// required.
fn aurora_samples() -> Option<PathBuf> {
    let dir = project("../shared/thermos/executor_json");
    if dir.is_dir() {
        return Some(dir);
    }
    let required = std::env::var_os("HEARTH_REQUIRE_SHARED").is_some_and(|v| v == "1");
    assert!(
        !required,
        "HEARTH_REQUIRE_SHARED=1 but the shared Aurora samples are missing at {}",
        dir.display()
    );
    eprintln!(
        "skipping: shared Aurora samples not found at {} (set HEARTH_REQUIRE_SHARED=1 to fail \
         instead)",
        dir.display()
    );
    None
}

#[test]
fn aurora_client_job_json_validates() -> TestResult {
    let Some(dir) = aurora_samples() else {
        return Ok(());
    };
    let task = validated_json(&dir.join("hello_world_job.json"))?;
    assert_eq!(task["name"], "main");
    assert_eq!(task["job"]["kind"], "aurora_job");
    assert_eq!(task["job"]["role"], "john_doe");
    assert_eq!(task["job"]["environment"], "staging66");
    assert_eq!(task["job"]["name"], "hello_world");
    assert_eq!(task["job"]["cluster"], "smf1-test");
    assert_eq!(task["resources"]["cpu"], 0.1);
    assert_eq!(task["resources"]["ram"], 67108864);
    assert_eq!(task["resources"]["gpu"], 2);
    assert_eq!(task["processes"][0]["cmdline"], "echo {{mesos.instance}}");
    assert_eq!(task["processes"][0]["min_duration"], 5.0);
    // No process names the health port, so (as in Aurora) no HTTP check and no lifecycle calls.
    assert_eq!(task["job"]["health_check"], Value::Null);
    assert_eq!(task["job"]["lifecycle"], Value::Null);
    Ok(())
}

#[test]
fn aurora_inspect_output_with_unknown_keys_validates() -> TestResult {
    let Some(dir) = aurora_samples() else {
        return Ok(());
    };
    // Carries `instances`, `update_config` and `cron_schedule`, which an executor ignores.
    let task = validated_json(&dir.join("inspect_write_json.json"))?;
    assert_eq!(task["name"], "task");
    assert_eq!(task["job"]["role"], "bozo");
    assert_eq!(task["processes"][0]["cmdline"], "ls -la");
    Ok(())
}
