//! Unit tests of parsing and validation: defaults, every rule, the multi-error report.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A bare task with these processes (JSON objects) and constraints (JSON list).
fn bare(processes: &str, constraints: &str) -> String {
    format!(r#"{{"name": "t", "processes": [{processes}], "constraints": {constraints}}}"#)
}

fn errors_of(json: &str) -> ConfigErrors {
    match parse(json) {
        Ok(task) => panic!("expected problems, got a valid task: {task:?}"),
        Err(e) => e,
    }
}

/// Assert `path: message` is among the problems, showing them all if not.
#[track_caller]
fn assert_problem(errors: &ConfigErrors, path: &str, message: &str) {
    assert!(
        errors.has(path, message),
        "missing `{path}: {message}` in:\n{errors}"
    );
}

#[test]
fn bare_task_gets_every_default() -> TestResult {
    let task = parse(r#"{"processes": [{"name": "hello", "cmdline": "echo hi"}]}"#)?;
    assert_eq!(
        task.name, "hello",
        "the task name defaults to the first process's"
    );
    assert_eq!(task.max_failures, 1);
    assert_eq!(task.max_concurrency, 0);
    assert_eq!(task.finalization_wait, Duration::from_secs(30));
    assert_eq!(task.resources, Resources::default());
    assert!(task.constraints.is_empty());
    let p = &task.processes[0];
    assert_eq!(p.max_failures, 1);
    assert!(!p.daemon && !p.ephemeral && !p.is_final);
    assert_eq!(p.min_duration, Duration::from_secs(5));
    assert_eq!(p.logger, LoggerConfig::default());
    assert_eq!(p.logger.log_size, 100 * 1024 * 1024);
    assert_eq!(p.logger.backups, 5);
    assert_eq!(task.job, JobInfo::default());
    Ok(())
}

#[test]
fn job_without_health_port_has_no_http_check_or_lifecycle() -> TestResult {
    let task = parse(
        r#"{"role": "r", "environment": "e", "name": "j", "cluster": "c",
            "task": {"name": "main", "processes": [{"name": "p", "cmdline": "true"}]},
            "health_check_config": {"health_checker": {"http": {}}},
            "lifecycle": {"http": {"port": "health"}}}"#,
    )?;
    assert_eq!(task.job.kind, ConfigKind::AuroraJob);
    assert_eq!(task.job.role.as_deref(), Some("r"));
    assert_eq!(task.job.cluster.as_deref(), Some("c"));
    assert_eq!(task.job.health_check, None);
    assert_eq!(task.job.lifecycle, None);
    Ok(())
}

#[test]
fn job_naming_the_health_port_gets_default_check_and_lifecycle() -> TestResult {
    let task = parse(
        r#"{"task": {"name": "main", "processes": [
            {"name": "web", "cmdline": "serve --port {{thermos.ports[health]}}"}]}}"#,
    )?;
    let hc = task.job.health_check.ok_or("health check kept")?;
    assert_eq!(
        hc.checker,
        HealthChecker::Http {
            endpoint: "/health".into(),
            expected_response: "ok".into(),
            expected_response_code: 0
        }
    );
    assert_eq!(hc.initial_interval, Duration::from_secs(15));
    assert_eq!(hc.interval, Duration::from_secs(10));
    assert_eq!(hc.timeout, Duration::from_secs(1));
    assert_eq!(hc.max_consecutive_failures, 0);
    assert_eq!(hc.min_consecutive_successes, 1);
    let lc = task.job.lifecycle.ok_or("lifecycle on")?;
    assert_eq!(lc.port, "health");
    assert_eq!(lc.graceful_shutdown_endpoint, "/quitquitquit");
    assert_eq!(lc.shutdown_endpoint, "/abortabortabort");
    assert_eq!(lc.graceful_shutdown_wait, Duration::from_secs(5));
    assert_eq!(lc.shutdown_wait, Duration::from_secs(5));
    Ok(())
}

#[test]
fn portmap_naming_health_turns_lifecycle_on() -> TestResult {
    let task = parse(
        r#"{"task": {"processes": [{"name": "web", "cmdline": "serve {{thermos.ports[http]}}"}]},
            "announce": {"portmap": {"health": "http"}}}"#,
    )?;
    assert!(task.job.lifecycle.is_some());
    assert_eq!(
        task.job.portmap.get("health").map(String::as_str),
        Some("http")
    );
    Ok(())
}

#[test]
fn bare_task_naming_health_port_gets_lifecycle_but_no_health_check() -> TestResult {
    let task =
        parse(r#"{"processes": [{"name": "w", "cmdline": "serve {{thermos.ports[health]}}"}]}"#)?;
    assert!(task.job.lifecycle.is_some());
    assert!(task.job.health_check.is_none());
    Ok(())
}

#[test]
fn empty_lifecycle_disables_it() -> TestResult {
    let task = parse(
        r#"{"task": {"processes": [{"name": "w", "cmdline": "serve {{thermos.ports[health]}}"}]},
            "lifecycle": {}}"#,
    )?;
    assert_eq!(task.job.lifecycle, None);
    assert!(task.job.health_check.is_some());
    Ok(())
}

#[test]
fn shell_wins_when_both_checkers_are_given() -> TestResult {
    let task = parse(
        r#"{"task": {"processes": [{"name": "w", "cmdline": "true"}]},
            "health_check_config": {"health_checker": {
                "http": {"endpoint": "/x"}, "shell": {"shell_command": "test -e ok"}},
                "interval_secs": 2, "timeout_secs": 0.5, "initial_interval_secs": 3}}"#,
    )?;
    let hc = task
        .job
        .health_check
        .ok_or("shell check kept without a port")?;
    assert_eq!(
        hc.checker,
        HealthChecker::Shell {
            shell_command: "test -e ok".into()
        }
    );
    assert_eq!(hc.interval, Duration::from_secs(2));
    assert_eq!(hc.timeout, Duration::from_millis(500));
    assert_eq!(hc.initial_interval, Duration::from_secs(3));
    Ok(())
}

#[test]
fn task_instance_keeps_its_instance() -> TestResult {
    let task =
        parse(r#"{"instance": 4, "task": {"processes": [{"name": "p", "cmdline": "true"}]}}"#)?;
    assert_eq!(task.job.kind, ConfigKind::TaskInstance);
    assert_eq!(task.job.instance, Some(4));
    Ok(())
}

#[test]
fn unknown_keys_are_ignored_at_every_level() -> TestResult {
    let task = parse(
        r#"{"update_config": {"batch_size": 1}, "instances": 3, "task": {"future": [1],
            "processes": [{"name": "p", "cmdline": "true", "resources": {"cpu": 1},
            "logger": {"colour": "blue"}}]}}"#,
    )?;
    assert_eq!(task.processes[0].name, "p");
    Ok(())
}

#[test]
fn whole_floats_pass_where_integers_are_required() -> TestResult {
    let task = parse(
        r#"{"processes": [{"name": "p", "cmdline": "true", "max_failures": 3.0,
            "min_duration": 0.25}], "max_concurrency": 2.0, "resources": {"ram": 1024.0}}"#,
    )?;
    assert_eq!(task.processes[0].max_failures, 3);
    assert_eq!(task.processes[0].min_duration, Duration::from_millis(250));
    assert_eq!(task.max_concurrency, 2);
    assert_eq!(task.resources.ram, 1024);
    Ok(())
}

#[test]
fn logger_settings_are_read() -> TestResult {
    let task = parse(
        r#"{"processes": [{"name": "p", "cmdline": "true", "logger": {"destination": "both",
            "mode": "rotate", "rotate": {"log_size": 1048576, "backups": 2}}}]}"#,
    )?;
    let l = &task.processes[0].logger;
    assert_eq!(l.destination, LogDestination::Both);
    assert_eq!(l.mode, LogMode::Rotate);
    assert_eq!((l.log_size, l.backups), (1048576, 2));
    Ok(())
}

#[test]
fn bad_process_names_are_rejected() {
    let e = errors_of(&bare(
        r#"{"name": "a/b", "cmdline": "x"}, {"name": ".hidden", "cmdline": "x"},
           {"name": "", "cmdline": "x"}, {"cmdline": "x"}, {"name": 7, "cmdline": "x"}"#,
        "[]",
    ));
    assert_problem(&e, "processes[0].name", "must not contain '/'");
    assert_problem(&e, "processes[1].name", "must not start with '.'");
    assert_problem(&e, "processes[2].name", "must not be empty");
    assert_problem(&e, "processes[3].name", "is required");
    assert_problem(&e, "processes[4].name", "expected a string, found a number");
    assert_eq!(e.problems.len(), 5, "{e}");
}

#[test]
fn process_name_rule_matches_thermos() {
    assert!(is_valid_process_name("a.b c"));
    assert!(is_valid_process_name("x."));
    assert!(!is_valid_process_name("."));
    assert!(!is_valid_process_name("a/"));
    assert!(!is_valid_process_name("a\nb"));
}

#[test]
fn duplicate_names_point_at_the_first() {
    let e = errors_of(&bare(
        r#"{"name": "a", "cmdline": "x"}, {"name": "b", "cmdline": "x"}, {"name": "a", "cmdline": "y"}"#,
        "[]",
    ));
    assert_problem(
        &e,
        "processes[2].name",
        r#"duplicate process name "a" (first at processes[0])"#,
    );
}

#[test]
fn missing_or_empty_cmdline_is_rejected() {
    let e = errors_of(&bare(
        r#"{"name": "a"}, {"name": "b", "cmdline": "  "}"#,
        "[]",
    ));
    assert_problem(&e, "processes[0].cmdline", "is required");
    assert_problem(&e, "processes[1].cmdline", "must not be empty");
}

#[test]
fn order_naming_unknown_process_is_rejected() {
    let e = errors_of(&bare(
        r#"{"name": "a", "cmdline": "x"}"#,
        r#"[{"order": ["a", "ghost"]}]"#,
    ));
    assert_problem(&e, "constraints[0].order[1]", r#"unknown process "ghost""#);
}

#[test]
fn order_mixing_final_and_regular_is_rejected() {
    let e = errors_of(&bare(
        r#"{"name": "a", "cmdline": "x"}, {"name": "z", "cmdline": "x", "final": true}"#,
        r#"[{"order": ["a", "z"]}]"#,
    ));
    assert_problem(
        &e,
        "constraints[0].order",
        r#"mixes final and non-final processes ("z" is final, "a" is not)"#,
    );
}

#[test]
fn depending_on_a_daemon_is_rejected() {
    let e = errors_of(&bare(
        r#"{"name": "d", "cmdline": "x", "daemon": true}, {"name": "b", "cmdline": "x"}"#,
        r#"[{"order": ["d", "b"]}]"#,
    ));
    assert_problem(
        &e,
        "constraints[0].order[1]",
        r#""b" depends on daemon process "d", which never finishes"#,
    );
}

#[test]
fn regular_process_depending_on_ephemeral_is_rejected() {
    let e = errors_of(&bare(
        r#"{"name": "e", "cmdline": "x", "ephemeral": true}, {"name": "b", "cmdline": "x"},
           {"name": "f", "cmdline": "x", "ephemeral": true}"#,
        r#"[{"order": ["e", "b"]}, {"order": ["e", "f"]}]"#,
    ));
    assert_problem(
        &e,
        "constraints[0].order[1]",
        r#"non-ephemeral process "b" depends on ephemeral process "e""#,
    );
    assert_eq!(
        e.problems.len(),
        1,
        "ephemeral after ephemeral is fine: {e}"
    );
}

#[test]
fn cycles_are_named() {
    let e = errors_of(&bare(
        r#"{"name": "a", "cmdline": "x"}, {"name": "b", "cmdline": "x"}, {"name": "c", "cmdline": "x"},
           {"name": "s", "cmdline": "x"}"#,
        r#"[{"order": ["a", "b", "c"]}, {"order": ["c", "a"]}, {"order": ["s", "s"]}]"#,
    ));
    assert_problem(&e, "constraints", "order cycle: a -> b -> c -> a");
    assert_problem(&e, "constraints", "order cycle: s -> s");
    assert_eq!(e.problems.len(), 2, "{e}");
}

#[test]
fn acyclic_diamond_is_accepted() -> TestResult {
    let task = parse(&bare(
        r#"{"name": "a", "cmdline": "x"}, {"name": "b", "cmdline": "x"}, {"name": "c", "cmdline": "x"},
           {"name": "d", "cmdline": "x"}"#,
        r#"[{"order": ["a", "b", "d"]}, {"order": ["a", "c", "d"]}]"#,
    ))?;
    assert_eq!(
        task.constraints,
        vec![vec!["a", "b", "d"], vec!["a", "c", "d"]]
    );
    Ok(())
}

#[test]
fn negative_and_fractional_counts_are_rejected() {
    let e = errors_of(
        r#"{"processes": [{"name": "p", "cmdline": "x", "max_failures": -1, "min_duration": -5}],
            "max_concurrency": 1.5, "finalization_wait": -0.5,
            "resources": {"cpu": -1, "ram": 1.5, "disk": "big"}}"#,
    );
    assert_problem(
        &e,
        "processes[0].max_failures",
        "must not be negative (got -1)",
    );
    assert_problem(
        &e,
        "processes[0].min_duration",
        "must not be negative (got -5)",
    );
    assert_problem(&e, "max_concurrency", "must be a whole number (got 1.5)");
    assert_problem(&e, "finalization_wait", "must not be negative (got -0.5)");
    assert_problem(&e, "resources.cpu", "must not be negative (got -1)");
    assert_problem(&e, "resources.ram", "must be a whole number (got 1.5)");
    assert_problem(&e, "resources.disk", "expected a number, found a string");
}

#[test]
fn swap_and_a_soft_memory_limit_are_read_and_checked_against_ram() -> TestResult {
    let task = parse(
        r#"{"processes": [{"name": "p", "cmdline": "x"}],
            "resources": {"ram": 1000, "swap": 500, "ram_high": 800}}"#,
    )?;
    assert_eq!((task.resources.swap, task.resources.ram_high), (500, 800));
    // Absent: no swap, no soft limit, and nothing new in the normalized output.
    let task = parse(r#"{"processes": [{"name": "p", "cmdline": "x"}], "resources": {"ram": 1}}"#)?;
    assert_eq!((task.resources.swap, task.resources.ram_high), (0, 0));
    let shown = serde_json::to_string(&task.resources)?;
    assert!(
        !shown.contains("swap") && !shown.contains("ram_high"),
        "{shown}"
    );
    // A soft limit alone is fine; equal to ram is the most it may be.
    parse(r#"{"processes": [{"name": "p", "cmdline": "x"}], "resources": {"ram_high": 5}}"#)?;
    parse(
        r#"{"processes": [{"name": "p", "cmdline": "x"}], "resources": {"ram": 5, "ram_high": 5}}"#,
    )?;

    let e = errors_of(
        r#"{"processes": [{"name": "p", "cmdline": "x"}],
            "resources": {"ram": 1000, "ram_high": 1001}}"#,
    );
    assert_problem(
        &e,
        "resources.ram_high",
        "must not exceed resources.ram (1000), the hard limit (got 1001)",
    );
    let e =
        errors_of(r#"{"processes": [{"name": "p", "cmdline": "x"}], "resources": {"swap": 1}}"#);
    assert_problem(
        &e,
        "resources.swap",
        "needs resources.ram: swap is allowed on top of the RAM limit",
    );
    let e = errors_of(
        r#"{"processes": [{"name": "p", "cmdline": "x"}],
            "resources": {"ram": 1, "swap": -1, "ram_high": "lots"}}"#,
    );
    assert_problem(&e, "resources.swap", "must not be negative (got -1)");
    assert_problem(
        &e,
        "resources.ram_high",
        "expected a number, found a string",
    );
    Ok(())
}

#[test]
fn counts_beyond_u32_are_rejected() {
    let e =
        errors_of(r#"{"processes": [{"name": "p", "cmdline": "x", "max_failures": 4294967296}]}"#);
    assert_problem(
        &e,
        "processes[0].max_failures",
        "must be at most 4294967295 (got 4294967296)",
    );
}

#[test]
fn bad_logger_settings_are_rejected() {
    let e = errors_of(
        r#"{"processes": [{"name": "p", "cmdline": "x", "logger": {"destination": "syslog",
            "mode": "daily", "rotate": {"log_size": 0, "backups": -2}}}]}"#,
    );
    assert_problem(
        &e,
        "processes[0].logger.destination",
        r#"must be one of file, console, both, none (got "syslog")"#,
    );
    assert_problem(
        &e,
        "processes[0].logger.mode",
        r#"must be one of standard, rotate (got "daily")"#,
    );
    assert_problem(
        &e,
        "processes[0].logger.rotate.log_size",
        "must be greater than zero",
    );
    assert_problem(
        &e,
        "processes[0].logger.rotate.backups",
        "must not be negative (got -2)",
    );
}

#[test]
fn unbindable_templates_are_rejected_at_validation() {
    let e = errors_of(
        r#"{"task": {"processes": [
            {"name": "a", "cmdline": "echo {{thermos.nope}}"},
            {"name": "b", "cmdline": "echo {{mesos.instance"},
            {"name": "c", "cmdline": "echo {{ thermos.ports[ok] }} {{mesos.hostname}}"}]}}"#,
    );
    assert_problem(
        &e,
        "task.processes[0].cmdline",
        "cannot bind {{thermos.nope}}: unknown name \"thermos.nope\" (known: thermos.ports[NAME], \
         thermos.task_id, thermos.user, mesos.instance, mesos.hostname)",
    );
    assert_problem(&e, "task.processes[1].cmdline", "unclosed '{{' at byte 5");
    assert_eq!(e.problems.len(), 2, "{e}");
}

#[test]
fn portmap_alias_cycles_are_rejected() {
    let e = errors_of(
        r#"{"task": {"processes": [{"name": "a", "cmdline": "x"}]},
            "announce": {"portmap": {"b": "c", "c": "a", "a": "b", "d": 0, "e": "bad name"}}}"#,
    );
    assert_problem(&e, "announce.portmap", "alias cycle: a -> b -> c -> a");
    assert_problem(
        &e,
        "announce.portmap.d",
        "port number must be from 1 to 65535 (got 0)",
    );
    assert_problem(
        &e,
        "announce.portmap.e",
        r#"invalid port name "bad name" (letters, digits, '_', '-', '.')"#,
    );
    assert_eq!(e.problems.len(), 3, "{e}");
}

#[test]
fn health_checker_needs_http_or_shell() {
    let e = errors_of(
        r#"{"task": {"processes": [{"name": "a", "cmdline": "x"}]},
            "health_check_config": {"health_checker": {}, "interval_secs": 0,
                "min_consecutive_successes": 0}}"#,
    );
    assert_problem(
        &e,
        "health_check_config.health_checker",
        "must configure http or shell",
    );
    assert_problem(
        &e,
        "health_check_config.interval_secs",
        "must be greater than zero",
    );
    assert_problem(
        &e,
        "health_check_config.min_consecutive_successes",
        "must be at least 1",
    );
}

#[test]
fn bad_http_checker_and_lifecycle_fields_are_rejected() {
    let e = errors_of(
        r#"{"task": {"processes": [{"name": "a", "cmdline": "x"}]},
            "health_check_config": {"health_checker": {"http": {"endpoint": "health",
                "expected_response_code": 42}}},
            "lifecycle": {"http": {"port": "", "shutdown_wait_secs": -1}}}"#,
    );
    assert_problem(
        &e,
        "health_check_config.health_checker.http.endpoint",
        r#"must start with '/' (got "health")"#,
    );
    assert_problem(
        &e,
        "health_check_config.health_checker.http.expected_response_code",
        "must be 0 (any) or an HTTP status from 100 to 599 (got 42)",
    );
    assert_problem(
        &e,
        "lifecycle.http.port",
        r#"invalid port name "" (letters, digits, '_', '-', '.')"#,
    );
    assert_problem(
        &e,
        "lifecycle.http.shutdown_wait_secs",
        "must not be negative (got -1)",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = errors_of(
        r#"{"task": {"processes": [
                {"name": "a/b"},
                {"name": "ok", "cmdline": "x", "daemon": "yes"},
                {"name": "ok", "cmdline": "x {{oops}}"}],
              "constraints": [{"order": ["ok", "missing"]}], "max_failures": -3},
            "instance": -1}"#,
    );
    let lines: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), e.problems.len());
    for expected in [
        "task.processes[0].name: must not contain '/'",
        "task.processes[0].cmdline: is required",
        "task.processes[1].daemon: expected true or false, found a string",
        "task.processes[2].name: duplicate process name \"ok\" (first at task.processes[1])",
        "task.constraints[0].order[1]: unknown process \"missing\"",
        "task.max_failures: must not be negative (got -3)",
        "instance: must not be negative (got -1)",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "missing `{expected}` in:\n{e}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("task.processes[2].cmdline: cannot bind {{oops}}"))
    );
    assert_eq!(lines.len(), 8, "{e}");
}

#[test]
fn wrong_shapes_are_one_clear_problem() {
    let e = errors_of("[1, 2]");
    assert_eq!(e.problems.len(), 1);
    assert!(
        e.problems[0]
            .message
            .starts_with("not a task config: the top level is a list")
    );
    let e = errors_of(r#"{"name": "x"}"#);
    assert!(
        e.to_string()
            .starts_with("not a task config: expected \"task\"")
    );
    let e = errors_of(r#"{"task": 5}"#);
    assert_problem(&e, "task", "expected an object, found a number");
    assert_problem(&e, "task.processes", "is required");
    let e = errors_of(r#"{"processes": []}"#);
    assert_problem(&e, "processes", "must list at least one process");
    let e = errors_of(r#"{"processes": [null, 3]}"#);
    assert_problem(&e, "processes[0]", "expected an object, found null");
    assert_problem(&e, "processes[1]", "expected an object, found a number");
}

#[test]
fn json_syntax_errors_carry_line_and_column() {
    let e = errors_of("{\n  \"processes\": [\n    {\"name\": \"a\",}\n  ]\n}");
    assert_eq!(e.problems.len(), 1);
    assert!(
        e.problems[0]
            .message
            .starts_with("invalid JSON at line 3, column 18: "),
        "{e}"
    );
    assert_eq!(e.problems[0].path, "");
}

#[test]
fn load_reports_unreadable_files_as_one_problem() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing.json");
    let e = load(&missing).err().ok_or("a missing file is an error")?;
    assert_eq!(e.problems.len(), 1);
    assert!(
        e.to_string()
            .starts_with(&format!("cannot read {}: ", missing.display()))
    );
    let e = load(dir.path()).err().ok_or("a directory is an error")?;
    assert!(e.to_string().ends_with("is a directory"), "{e}");
    let bin = dir.path().join("bin.json");
    std::fs::write(&bin, b"{\"processes\": \xff}")?;
    let e = load(&bin).err().ok_or("non-UTF-8 is an error")?;
    assert!(
        e.to_string()
            .contains("not UTF-8 (invalid byte at offset 14)"),
        "{e}"
    );
    Ok(())
}

#[test]
fn load_reads_a_valid_file() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("t.json");
    std::fs::write(
        &path,
        r#"{"processes": [{"name": "a", "cmdline": "true"}]}"#,
    )?;
    assert_eq!(load(&path)?.processes[0].cmdline, "true");
    Ok(())
}

#[test]
fn an_invalid_name_in_an_order_list_is_reported_once() {
    let e = errors_of(&bare(
        r#"{"name": "a/b", "cmdline": "x"}, {"name": "c", "cmdline": "x"}"#,
        r#"[{"order": ["a/b", "c"]}]"#,
    ));
    assert_problem(&e, "processes[0].name", "must not contain '/'");
    assert_eq!(e.problems.len(), 1, "{e}");
}

mod properties {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::Value;

    use super::super::template::{Bindings, bind_text};
    use super::super::{is_valid_process_name, parse};

    /// Keys that reach the validator's paths, plus one it must ignore.
    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "task",
            "processes",
            "name",
            "cmdline",
            "constraints",
            "order",
            "daemon",
            "ephemeral",
            "final",
            "max_failures",
            "min_duration",
            "logger",
            "destination",
            "mode",
            "rotate",
            "log_size",
            "resources",
            "ram",
            "cpu",
            "instance",
            "health_check_config",
            "health_checker",
            "http",
            "shell",
            "shell_command",
            "lifecycle",
            "port",
            "announce",
            "portmap",
            "interval_secs",
            "unknown",
        ])
        .prop_map(str::to_owned)
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            "[a-z{}/. \\[\\]]{0,16}".prop_map(Value::from),
            prop::sample::select(vec![
                "{{thermos.task_id}}",
                "{{thermos.ports[health]}}",
                "{{mesos.instance",
                "file",
                "rotate",
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever arrives, validation answers with a task or with problems, never a panic; an
        /// accepted task always has valid, unique process names and every problem says something.
        #[test]
        fn validation_never_panics_and_accepts_only_sound_tasks(v in json_value()) {
            match parse(&v.to_string()) {
                Ok(task) => {
                    prop_assert!(!task.processes.is_empty());
                    let mut seen = BTreeSet::new();
                    for p in &task.processes {
                        prop_assert!(is_valid_process_name(&p.name), "{:?}", p.name);
                        prop_assert!(seen.insert(p.name.clone()), "duplicate {:?}", p.name);
                    }
                }
                Err(e) => {
                    prop_assert!(!e.problems.is_empty());
                    prop_assert!(e.problems.iter().all(|p| !p.message.is_empty()));
                }
            }
        }

        /// A successful bind never leaves template braces behind.
        #[test]
        fn bound_text_never_keeps_template_braces(
            text in "([a-z .{}]|\\{\\{ ?(thermos\\.task_id|mesos\\.hostname|thermos\\.ports\\[p\\]|x) ?\\}\\}){0,12}"
        ) {
            let b = Bindings {
                task_id: "t1".into(),
                user: "u".into(),
                instance: Some(0),
                hostname: "h".into(),
                ports: [("p".to_owned(), 80)].into(),
            };
            if let Ok(out) = bind_text(&text, &Default::default(), &b) {
                prop_assert!(!out.contains("{{"), "{text:?} -> {out:?}");
            }
        }
    }
}
