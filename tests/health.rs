//! End-to-end tests of health checks, snoozes, the teardown escalation and the disk quota:
//! `hearth run` on Aurora jobs whose process is the real `hearth-test-server`, judged from the
//! server's request log and from the checkpoint.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{
    Env, OutsideServer, ServerLog, TestResult, report_states, runs, server_cmdline, show,
    task_status_ms, wait_output,
};
use hearth_checkpoints::record::{ProcessState, TaskState};
use hearth_checkpoints::replay::TaskReplay;
use serde_json::{Value, json};

/// How much later than configured a step may come on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Long enough for any start-up or ending in these tests.
const LIMIT: Duration = Duration::from_secs(30);

const HEALTH_GET: &str = "request GET /health";
const QUIT_POST: &str = "request POST /quitquitquit";
const ABORT_POST: &str = "request POST /abortabortabort";

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap()
}

/// A job with one process, `server`, running the test server with `server_args`.
fn server_job(
    env: &Env,
    name: &str,
    log: &ServerLog,
    server_args: &str,
    task_extra: Value,
    job_extra: Value,
) -> std::path::PathBuf {
    env.job(
        name,
        json!([{"name": "server", "cmdline": server_cmdline(&log.path, server_args)}]),
        task_extra,
        job_extra,
    )
}

/// Wait until the task reported RUNNING (its health check passed).
fn wait_running(env: &Env, id: &str) -> TaskReplay {
    env.wait_replay(id, "a RUNNING status update", LIMIT, |r| {
        report_states(r).iter().any(|s| s == "RUNNING")
    })
}

/// Assert `later - earlier` is at least `wait` and at most `wait + SLACK` (ms).
fn assert_spaced(what: &str, earlier: i64, later: i64, wait: Duration) {
    let gap = later - earlier;
    assert!(
        gap >= ms(wait) && gap <= ms(wait + SLACK),
        "{what}: {gap} ms apart, expected {} ms (up to {} ms later)",
        ms(wait),
        ms(SLACK)
    );
}

#[test]
fn lifecycle_escalation_follows_the_configured_order_and_spacing() -> TestResult {
    let env = Env::new();
    let log = env.server_log("stubborn");
    let (graceful, shutdown, finalization) = (
        Duration::from_secs(1),
        Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let cfg = server_job(
        &env,
        "stubborn",
        &log,
        "--ignore-term",
        json!({"finalization_wait": finalization.as_secs()}),
        json!({
            "health_check_config": {"initial_interval_secs": 0.2, "interval_secs": 0.2},
            "lifecycle": {"http": {"port": "health",
                                    "graceful_shutdown_wait_secs": graceful.as_secs(),
                                    "shutdown_wait_secs": shutdown.as_secs()}},
        }),
    );
    let exec = env.spawn(&cfg, "stubborn", &[]);
    wait_running(&env, "stubborn");
    let kill = env.kill("stubborn");
    assert!(kill.status.success(), "{}", show(&kill));
    let out = wait_output(exec, LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));

    // What the server saw: quit, abort, SIGTERM, each one wait after the previous.
    let quit = log.first(QUIT_POST).ok_or_else(|| log.dump())? as i64;
    let abort = log.first(ABORT_POST).ok_or_else(|| log.dump())? as i64;
    let term = log.first("signal SIGTERM").ok_or_else(|| log.dump())? as i64;
    assert_spaced(
        "server: quitquitquit → abortabortabort",
        quit,
        abort,
        graceful,
    );
    assert_spaced("server: abortabortabort → SIGTERM", abort, term, shutdown);
    assert_eq!(log.count(QUIT_POST), 1, "{}", log.dump());
    assert_eq!(log.count(ABORT_POST), 1, "{}", log.dump());

    // What the checkpoint says: the same steps in order, then SIGKILL, spaced by the waits.
    let r = env.replay("stubborn");
    assert_eq!(r.state(), TaskState::Killed);
    let steps: Vec<&str> = r.teardown.iter().map(|s| s.step.name()).collect();
    assert_eq!(
        steps,
        ["quitquitquit", "abortabortabort", "sigterm", "sigkill"]
    );
    let at: Vec<i64> = r.teardown.iter().map(|s| s.timestamp_ms).collect();
    assert_spaced(
        "checkpoint: quitquitquit → abortabortabort",
        at[0],
        at[1],
        graceful,
    );
    assert_spaced(
        "checkpoint: abortabortabort → sigterm",
        at[1],
        at[2],
        shutdown,
    );
    assert_spaced("checkpoint: sigterm → sigkill", at[2], at[3], finalization);
    assert!(
        task_status_ms(&r, TaskState::Cleaning) <= at[0],
        "the first POST came before CLEANING was recorded"
    );

    let run = &runs(&r, "server")[0];
    assert_eq!(run.state, ProcessState::Killed);
    assert_eq!(run.signal, Some(9), "{run:?}");
    let stopped = (run.stop_time.unwrap() * 1000.0) as i64;
    assert_spaced(
        "checkpoint: sigterm → the run's end",
        at[2],
        stopped,
        finalization,
    );
    Ok(())
}

#[test]
fn a_server_that_exits_on_quitquitquit_ends_the_escalation_early() -> TestResult {
    let env = Env::new();
    let log = env.server_log("polite");
    let wait = Duration::from_secs(30);
    let cfg = server_job(
        &env,
        "polite",
        &log,
        "--exit-on quit",
        json!({"finalization_wait": wait.as_secs()}),
        json!({
            "health_check_config": {"initial_interval_secs": 0.2, "interval_secs": 0.2},
            "lifecycle": {"http": {"port": "health",
                                    "graceful_shutdown_wait_secs": wait.as_secs(),
                                    "shutdown_wait_secs": wait.as_secs()}},
        }),
    );
    let exec = env.spawn(&cfg, "polite", &[]);
    wait_running(&env, "polite");
    let kill = env.kill("polite");
    assert!(kill.status.success(), "{}", show(&kill));
    let out = wait_output(exec, wait);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));

    let r = env.replay("polite");
    assert_eq!(r.state(), TaskState::Killed);
    let took = task_status_ms(&r, TaskState::Killed) - task_status_ms(&r, TaskState::Cleaning);
    assert!(
        took < ms(wait),
        "the task took {took} ms to end after the kill; the first wait is {} ms",
        ms(wait)
    );
    let steps: Vec<&str> = r.teardown.iter().map(|s| s.step.name()).collect();
    assert_eq!(steps, ["quitquitquit"]);
    assert_eq!(log.count(QUIT_POST), 1, "{}", log.dump());
    assert_eq!(log.count(ABORT_POST), 0, "{}", log.dump());
    assert!(log.first("exit /quitquitquit").is_some(), "{}", log.dump());
    // The server ended by itself, not by a signal.
    let run = &runs(&r, "server")[0];
    assert_eq!((run.return_code, run.signal), (Some(0), None), "{run:?}");
    Ok(())
}

#[test]
fn a_server_that_returns_500_is_torn_down_failed_after_the_configured_attempts() -> TestResult {
    // The first check runs as soon as the processes are launched, before a server inside the
    // task can listen: those attempts are refused and never reach its log. To see every attempt,
    // the server here is started by the test and already listens when the executor starts; the
    // executor is given its port as the agent would (`--port health=N`).
    let env = Env::new();
    let server = OutsideServer::start(
        env.server_log("sick"),
        &["--health", "fail500", "--exit-on", "quit"],
    );
    let (initial, interval, max_failures) = (0.5_f64, 0.2_f64, 2_u32);
    let cfg = env.job(
        "sick",
        json!([{"name": "app",
                "cmdline": "echo serving health on {{thermos.ports[health]}}; exec sleep 600"}]),
        json!({}),
        json!({
            "health_check_config": {"initial_interval_secs": initial,
                                    "interval_secs": interval,
                                    "max_consecutive_failures": max_failures,
                                    "timeout_secs": 1},
            // The server leaves on /quitquitquit; the task's own process goes at SIGTERM.
            "lifecycle": {"http": {"port": "health", "graceful_shutdown_wait_secs": 0.2}},
        }),
    );
    let port = server.port_arg();
    let out = wait_output(env.spawn(&cfg, "sick", &["--port", &port]), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = env.replay("sick");
    assert_eq!(r.state(), TaskState::Failed);
    let reason = r.statuses.last().and_then(|s| s.reason.clone()).unwrap();
    assert!(
        reason.starts_with("Failed health check!"),
        "reason {reason:?}"
    );
    // Aurora's rule: the first ceil(initial / interval) failures are forgiven (grace); after
    // that the task fails on the failure that makes more than `max_consecutive_failures` in a
    // row. Every check is one GET.
    let grace = (initial / interval).ceil() as usize;
    let expected = grace + max_failures as usize + 1;
    assert_eq!(
        server.log.count(HEALTH_GET),
        expected,
        "{}",
        server.log.dump()
    );
    // The teardown asked the server first.
    assert_eq!(server.log.count(QUIT_POST), 1, "{}", server.log.dump());
    // The scheduler hears the health check's own words.
    assert_eq!(r.reports.last().map(|u| u.state.name()), Some("FAILED"));
    assert_eq!(
        r.reports.last().and_then(|u| u.reason.clone()),
        Some(reason)
    );
    Ok(())
}

#[test]
fn a_hanging_health_endpoint_is_timed_out() -> TestResult {
    let env = Env::new();
    let log = env.server_log("hung");
    let (timeout, interval) = (Duration::from_millis(300), Duration::from_millis(200));
    let cfg = server_job(
        &env,
        "hung",
        &log,
        "--health hang --exit-on quit",
        json!({}),
        json!({
            "health_check_config": {"initial_interval_secs": interval.as_secs_f64(),
                                    "interval_secs": interval.as_secs_f64(),
                                    "max_consecutive_failures": 0,
                                    "timeout_secs": timeout.as_secs_f64()},
        }),
    );
    let out = wait_output(env.spawn(&cfg, "hung", &[]), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = env.replay("hung");
    assert_eq!(r.state(), TaskState::Failed);
    let reason = r.statuses.last().and_then(|s| s.reason.clone()).unwrap();
    assert!(
        reason.starts_with("Failed health check!") && reason.contains("timed out"),
        "reason {reason:?}"
    );
    // One forgiven attempt (usually refused: the server is still starting), then the first
    // counted failure ends it: two checks, each bounded by the timeout, one interval apart.
    let attempts = 2;
    assert!(log.count(HEALTH_GET) >= 1, "{}", log.dump());
    let started = (runs(&r, "server")[0].start_time.unwrap() * 1000.0) as i64;
    let took = task_status_ms(&r, TaskState::Cleaning) - started;
    let bound = ms((timeout + interval) * attempts as u32 + SLACK);
    assert!(
        took <= bound,
        "unhealthy after {took} ms; expected within {bound} ms"
    );
    Ok(())
}

/// A healthy server with fast checks, RUNNING; returns the task id's config.
fn healthy_job(env: &Env, name: &str, log: &ServerLog, interval: Duration) -> std::path::PathBuf {
    server_job(
        env,
        name,
        log,
        "--exit-on quit",
        json!({}),
        json!({
            "health_check_config": {"initial_interval_secs": interval.as_secs_f64(),
                                    "interval_secs": interval.as_secs_f64(),
                                    "timeout_secs": 1},
        }),
    )
}

#[test]
fn snooze_file_pauses_health_checks() -> TestResult {
    let env = Env::new();
    let log = env.server_log("dozy");
    let interval = Duration::from_millis(200);
    let cfg = healthy_job(&env, "dozy", &log, interval);
    let exec = env.spawn(&cfg, "dozy", &[]);
    wait_running(&env, "dozy");

    let snooze = env.snooze("dozy", &[]);
    assert!(snooze.status.success(), "{}", show(&snooze));
    let r = env.wait_replay("dozy", "the snooze start record", LIMIT, |r| {
        !r.snoozes.is_empty()
    });
    assert!(r.snoozes[0].active && r.snoozes[0].expires_ms.is_none());
    // Every check begun before the start record was logged by the server before it answered;
    // from here on, none may come while the file stays. Watch a window of five intervals.
    let before = log.count(HEALTH_GET);
    std::thread::sleep(interval * 5);
    assert_eq!(
        log.count(HEALTH_GET),
        before,
        "checks ran while snoozed:\n{}",
        log.dump()
    );

    let clear = env.snooze("dozy", &["--clear"]);
    assert!(clear.status.success(), "{}", show(&clear));
    let r = env.wait_replay("dozy", "the snooze end record", LIMIT, |r| {
        r.snoozes.len() >= 2
    });
    common::wait_until("checks to resume", LIMIT, || log.count(HEALTH_GET) > before).unwrap();
    assert_eq!(
        r.snoozes.iter().map(|s| s.active).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(r.snoozes[1].detail.as_deref(), Some("file removed"));
    assert!(r.snoozes[1].timestamp_ms >= r.snoozes[0].timestamp_ms);
    assert_eq!(
        r.state(),
        TaskState::Active,
        "a snooze must not fail the task"
    );

    let kill = env.kill("dozy");
    assert!(kill.status.success(), "{}", show(&kill));
    let out = wait_output(exec, LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    Ok(())
}

#[test]
fn an_expired_snooze_resumes_checks() -> TestResult {
    let env = Env::new();
    let log = env.server_log("nap");
    let interval = Duration::from_millis(200);
    let cfg = healthy_job(&env, "nap", &log, interval);
    let exec = env.spawn(&cfg, "nap", &[]);
    wait_running(&env, "nap");

    let snooze = env.snooze("nap", &["--for", "1s"]);
    assert!(snooze.status.success(), "{}", show(&snooze));
    let r = env.wait_replay("nap", "the snooze start record", LIMIT, |r| {
        !r.snoozes.is_empty()
    });
    let start = r.snoozes[0].clone();
    assert!(start.active);
    assert!(start.expires_ms.is_some(), "no expiry in {start:?}");
    let expires = start.expires_ms.unwrap();
    let before = log.count(HEALTH_GET);

    let r = env.wait_replay("nap", "the snooze end record", LIMIT, |r| {
        r.snoozes.len() >= 2
    });
    let end = &r.snoozes[1];
    assert!(!end.active);
    assert_eq!(end.detail.as_deref(), Some("expired"));
    assert!(
        end.timestamp_ms >= expires && end.timestamp_ms <= expires + ms(SLACK),
        "snooze ended at {} ms, expiry {expires} ms",
        end.timestamp_ms
    );
    common::wait_until("checks to resume", LIMIT, || log.count(HEALTH_GET) > before).unwrap();
    assert_eq!(r.snoozes.len(), 2, "{:?}", r.snoozes);

    let kill = env.kill("nap");
    assert!(kill.status.success(), "{}", show(&kill));
    let out = wait_output(exec, LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    Ok(())
}

#[test]
fn a_task_over_its_disk_quota_fails_with_the_thermos_reason() -> TestResult {
    let env = Env::new();
    let reserved: u64 = 1 << 20;
    let written: u64 = 5 << 20;
    let cfg = env.task(
        "hog",
        json!([{"name": "writer",
                "cmdline": format!("head -c {written} /dev/zero > big && exec sleep 600")}]),
        json!({"resources": {"cpu": 1.0, "ram": 256 << 20, "disk": reserved}}),
    );
    let out = wait_output(env.spawn(&cfg, "hog", &[]), LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let r = env.replay("hog");
    assert_eq!(r.state(), TaskState::Failed);
    let reason = r.statuses.last().and_then(|s| s.reason.clone()).unwrap();
    let prefix = format!("Disk limit exceeded. Reserved {reserved} bytes vs used ");
    let used: u64 = reason
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" bytes."))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("reason {reason:?} is not Thermos's disk reason"))?;
    assert!(used > reserved, "used {used} <= reserved {reserved}");
    // The write ended when the file was last modified; the teardown began within 5 s of it.
    let mtime = std::fs::metadata(env.sandbox("hog").join("big"))?.modified()?;
    let written_ms = ms(mtime.duration_since(std::time::UNIX_EPOCH)?);
    let cleaning = task_status_ms(&r, TaskState::Cleaning);
    assert!(
        cleaning - written_ms < 5000,
        "teardown began {} ms after the write",
        cleaning - written_ms
    );
    Ok(())
}

#[test]
fn a_kill_right_after_the_start_stops_the_process_with_sigterm() -> TestResult {
    if !common::have_cgroups("a_kill_right_after_the_start_stops_the_process_with_sigterm") {
        return Ok(());
    }
    let env = Env::new();
    let wait = Duration::from_secs(10);
    let cfg = env.task(
        "early",
        json!([{"name": "sleep", "cmdline": "exec sleep 600"}]),
        json!({"finalization_wait": wait.as_secs()}),
    );
    let exec = env.spawn(&cfg, "early", &[]);
    env.wait_replay("early", "the process RUNNING", LIMIT, |r| {
        runs(r, "sleep").first().map(|run| run.state) == Some(ProcessState::Running)
    });
    let kill = env.kill("early");
    assert!(kill.status.success(), "{}", show(&kill));
    let out = wait_output(exec, LIMIT);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let r = env.replay("early");
    let run = &runs(&r, "sleep")[0];
    assert_eq!(run.signal, Some(libc::SIGTERM), "{run:?}");
    let took = task_status_ms(&r, TaskState::Killed) - task_status_ms(&r, TaskState::Cleaning);
    assert!(took < ms(wait), "the kill took {took} ms");
    Ok(())
}
