//! One test per planner rule. Time is built by hand (`t0 + secs(n)`) or runs on paused tokio time.

use std::collections::BTreeMap;
use std::time::Duration;

use hearth_checkpoints::config::{JobInfo, LoggerConfig, ProcessConfig, Resources, TaskConfig};
use hearth_checkpoints::record::{ProcessState, TaskState, TaskStatus};
use hearth_checkpoints::replay::{ProcessRun, TaskReplay};
use tokio::time::Instant;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A process with the config defaults except `min_duration`, which is 0 unless a test sets it.
fn process(name: &str) -> ProcessConfig {
    ProcessConfig {
        name: name.to_owned(),
        cmdline: format!("echo {name}"),
        max_failures: 1,
        daemon: false,
        ephemeral: false,
        min_duration: Duration::ZERO,
        is_final: false,
        logger: LoggerConfig::default(),
    }
}

fn task(processes: Vec<ProcessConfig>, constraints: &[&[&str]]) -> TaskConfig {
    TaskConfig {
        name: "test".to_owned(),
        processes,
        constraints: constraints
            .iter()
            .map(|order| order.iter().map(|&n| n.to_owned()).collect())
            .collect(),
        resources: Resources::default(),
        max_failures: 1,
        max_concurrency: 0,
        finalization_wait: secs(30),
        job: JobInfo::default(),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|&n| n.to_owned()).collect()
}

/// Launches `name` and ends its run with `outcome` at once.
fn run(
    p: &mut Planner,
    name: &str,
    outcome: Outcome,
    now: Instant,
) -> Result<Verdict, PlannerError> {
    p.launched(name, now)?;
    p.exited(name, outcome, now)
}

fn fail(code: i32) -> Outcome {
    Outcome::Failed { return_code: code }
}

#[test]
fn order_constraints_run_processes_in_sequence() -> TestResult {
    let t0 = Instant::now();
    let cfg = task(
        vec![process("c"), process("b"), process("a"), process("free")],
        &[&["a", "b"], &["b", "c"]],
    );
    let mut p = Planner::new(&cfg);
    assert_eq!(p.runnable(t0), names(&["a", "free"]));

    p.launched("a", t0)?;
    assert_eq!(p.runnable(t0), names(&["free"]), "b waits while a runs");
    assert!(matches!(
        p.why_not_runnable("b", t0)?,
        Some(Blocker::Predecessor(ref n)) if n == "a"
    ));
    assert!(matches!(
        p.launched("b", t0),
        Err(PlannerError::NotRunnable { .. })
    ));

    assert_eq!(p.exited("a", Outcome::Success, t0)?, Verdict::Finished);
    assert_eq!(p.runnable(t0), names(&["b", "free"]));
    run(&mut p, "b", Outcome::Success, t0)?;
    assert_eq!(p.runnable(t0), names(&["c", "free"]));
    Ok(())
}

#[test]
fn process_fails_permanently_after_max_failures() -> TestResult {
    let t0 = Instant::now();
    let mut a = process("a");
    a.max_failures = 3;
    let mut cfg = task(vec![a, process("other")], &[]);
    cfg.max_failures = 0;
    let mut p = Planner::new(&cfg);

    for _ in 0..2 {
        assert_eq!(
            run(&mut p, "a", fail(1), t0)?,
            Verdict::Restart {
                after: Duration::ZERO
            }
        );
    }
    let Verdict::PermanentlyFailed { reason } = run(&mut p, "a", fail(7), t0)? else {
        return Err("third failure should be permanent".into());
    };
    assert!(
        reason.contains("failed 3 times") && reason.contains("code 7"),
        "{reason}"
    );
    assert_eq!(p.runnable(t0), names(&["other"]));
    Ok(())
}

#[test]
fn max_failures_zero_retries_forever() -> TestResult {
    let t0 = Instant::now();
    let mut a = process("a");
    a.max_failures = 0;
    let mut p = Planner::new(&task(vec![a], &[]));
    // Everything below the run cap is retried.
    for _ in 1..MAX_UNSUCCESSFUL_RUNS {
        assert_eq!(
            run(&mut p, "a", fail(1), t0)?,
            Verdict::Restart {
                after: Duration::ZERO
            }
        );
    }
    assert_eq!(p.regular_state(), PlanState::Running);
    Ok(())
}

#[test]
fn restarts_daemon_after_min_duration_on_success() -> TestResult {
    let t0 = Instant::now();
    let mut d = process("d");
    d.daemon = true;
    d.min_duration = secs(5);
    let mut p = Planner::new(&task(vec![d], &[]));

    assert_eq!(
        run(&mut p, "d", Outcome::Success, t0)?,
        Verdict::Restart { after: secs(5) }
    );
    assert!(p.runnable(t0 + secs(4)).is_empty());
    assert_eq!(p.runnable(t0 + secs(5)), names(&["d"]));
    assert_eq!(
        p.regular_state(),
        PlanState::Running,
        "a daemon never finishes on its own"
    );
    Ok(())
}

#[test]
fn daemon_successes_never_reach_the_run_cap() -> TestResult {
    let t0 = Instant::now();
    let mut d = process("d");
    d.daemon = true;
    let mut p = Planner::new(&task(vec![d], &[]));
    for _ in 0..=MAX_UNSUCCESSFUL_RUNS {
        assert!(matches!(
            run(&mut p, "d", Outcome::Success, t0)?,
            Verdict::Restart { .. }
        ));
    }
    Ok(())
}

#[test]
fn ephemeral_process_is_not_needed_for_success_and_is_reported_for_termination() -> TestResult {
    let t0 = Instant::now();
    let mut e = process("e");
    e.ephemeral = true;
    e.daemon = true;
    let mut p = Planner::new(&task(vec![process("a"), e], &[]));

    p.launched("e", t0)?;
    run(&mut p, "a", Outcome::Success, t0)?;
    assert_eq!(p.regular_state(), PlanState::Complete);
    assert_eq!(
        p.running().collect::<Vec<_>>(),
        vec!["e"],
        "e is left to terminate"
    );
    assert!(
        p.runnable(t0).is_empty(),
        "nothing starts once the plan is complete"
    );
    Ok(())
}

#[test]
fn ephemeral_process_past_max_failures_is_finished_not_failed() -> TestResult {
    let t0 = Instant::now();
    let mut e = process("e");
    e.ephemeral = true;
    let mut p = Planner::new(&task(vec![e, process("a")], &[]));
    assert_eq!(run(&mut p, "e", fail(1), t0)?, Verdict::Finished);
    run(&mut p, "a", Outcome::Success, t0)?;
    assert_eq!(p.regular_state(), PlanState::Complete);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn min_duration_gate_delays_restart_until_next_wakeup() -> TestResult {
    let mut a = process("a");
    a.max_failures = 2;
    a.min_duration = secs(10);
    let mut b = process("b");
    b.daemon = true;
    b.min_duration = secs(3);
    let mut p = Planner::new(&task(vec![a, b], &[]));

    let start = Instant::now();
    p.launched("a", start)?;
    p.launched("b", start)?;
    assert_eq!(
        p.next_wakeup(start),
        None,
        "nothing waits on a gate while both run"
    );

    tokio::time::sleep(secs(1)).await;
    let failed_at = Instant::now();
    p.exited("a", fail(1), failed_at)?;
    assert!(p.runnable(failed_at).is_empty());
    assert!(matches!(
        p.why_not_runnable("a", failed_at)?,
        Some(Blocker::Gate { .. })
    ));
    assert_eq!(p.next_wakeup(failed_at), Some(failed_at + secs(10)));

    tokio::time::sleep(secs(2)).await;
    let b_done = Instant::now();
    p.exited("b", Outcome::Success, b_done)?;
    assert_eq!(
        p.next_wakeup(b_done),
        Some(b_done + secs(3)),
        "earliest gate wins"
    );

    let wake = p.next_wakeup(Instant::now()).ok_or("a gate is closed")?;
    tokio::time::sleep_until(wake).await;
    assert_eq!(p.runnable(Instant::now()), names(&["b"]));
    p.launched("b", Instant::now())?;

    let wake = p.next_wakeup(Instant::now()).ok_or("a's gate is closed")?;
    tokio::time::sleep_until(wake).await;
    assert_eq!(p.runnable(Instant::now()), names(&["a"]));
    assert_eq!(Instant::now() - failed_at, secs(10));
    Ok(())
}

#[test]
fn max_concurrency_limits_running_processes() -> TestResult {
    let t0 = Instant::now();
    let mut cfg = task(vec![process("a"), process("b"), process("c")], &[]);
    cfg.max_concurrency = 2;
    let mut p = Planner::new(&cfg);

    assert_eq!(p.runnable(t0), names(&["a", "b"]));
    p.launched("a", t0)?;
    p.launched("b", t0)?;
    assert!(p.runnable(t0).is_empty());
    assert!(matches!(
        p.launched("c", t0),
        Err(PlannerError::NotRunnable { .. })
    ));
    p.exited("a", Outcome::Success, t0)?;
    assert_eq!(p.runnable(t0), names(&["c"]));
    Ok(())
}

#[test]
fn task_fails_when_permanent_failures_reach_task_max_failures() -> TestResult {
    let t0 = Instant::now();
    let mut cfg = task(vec![process("a"), process("b"), process("c")], &[]);
    cfg.max_failures = 2;
    let mut p = Planner::new(&cfg);

    run(&mut p, "a", fail(1), t0)?;
    assert_eq!(
        p.regular_state(),
        PlanState::Running,
        "one failure is below the limit"
    );
    run(&mut p, "b", Outcome::Oom, t0)?;
    let PlanState::Failed { reason } = p.regular_state() else {
        return Err("two failures should fail the task".into());
    };
    assert!(reason.contains("'a'") && reason.contains("'b'"), "{reason}");
    assert!(
        p.runnable(t0).is_empty(),
        "nothing starts once the plan failed"
    );
    Ok(())
}

#[test]
fn task_max_failures_zero_lets_the_task_succeed_despite_failures() -> TestResult {
    let t0 = Instant::now();
    let mut cfg = task(vec![process("a"), process("b")], &[]);
    cfg.max_failures = 0;
    let mut p = Planner::new(&cfg);
    run(&mut p, "a", fail(1), t0)?;
    run(&mut p, "b", Outcome::Success, t0)?;
    assert_eq!(p.regular_state(), PlanState::Complete);
    Ok(())
}

#[test]
fn plan_is_deadlocked_when_a_predecessor_failed_permanently() -> TestResult {
    let t0 = Instant::now();
    let mut cfg = task(
        vec![process("a"), process("b"), process("c")],
        &[&["a", "b", "c"]],
    );
    cfg.max_failures = 0;
    let mut p = Planner::new(&cfg);
    run(&mut p, "a", fail(1), t0)?;
    let PlanState::Failed { reason } = p.regular_state() else {
        return Err("b can never run, so the plan is deadlocked".into());
    };
    assert!(
        reason.contains("'b'") && reason.contains("'a' failed"),
        "{reason}"
    );
    Ok(())
}

#[test]
fn order_cycle_is_reported_as_deadlock_instead_of_hanging() {
    let cfg = task(vec![process("a"), process("b")], &[&["a", "b", "a"]]);
    let p = Planner::new(&cfg);
    assert!(matches!(
        p.regular_state(),
        PlanState::Failed { reason } if reason.contains("cycle")
    ));
}

#[test]
fn final_plan_runs_only_when_finalizing_and_obeys_order() -> TestResult {
    let t0 = Instant::now();
    let mut f1 = process("f1");
    f1.is_final = true;
    let mut f2 = process("f2");
    f2.is_final = true;
    let mut p = Planner::new(&task(vec![f2, process("a"), f1], &[&["f1", "f2"]]));

    assert_eq!(
        p.runnable(t0),
        names(&["a"]),
        "final processes wait for the final stage"
    );
    assert_eq!(p.final_state(), PlanState::Running);
    run(&mut p, "a", Outcome::Success, t0)?;
    assert_eq!(p.regular_state(), PlanState::Complete);

    p.set_task_state(TaskState::Cleaning);
    assert!(p.runnable(t0).is_empty(), "nothing starts while cleaning");
    p.set_task_state(TaskState::Finalizing);
    assert_eq!(p.runnable(t0), names(&["f1"]));
    run(&mut p, "f1", Outcome::Success, t0)?;
    assert_eq!(p.runnable(t0), names(&["f2"]));
    run(&mut p, "f2", fail(1), t0)?;
    assert_eq!(
        p.final_state(),
        PlanState::Complete,
        "failed finals still end the plan"
    );
    Ok(())
}

#[test]
fn oom_kill_counts_as_failure() -> TestResult {
    let t0 = Instant::now();
    let mut a = process("a");
    a.max_failures = 2;
    let mut p = Planner::new(&task(vec![a], &[]));
    assert!(matches!(
        run(&mut p, "a", Outcome::Oom, t0)?,
        Verdict::Restart { .. }
    ));
    let Verdict::PermanentlyFailed { reason } = run(&mut p, "a", Outcome::Oom, t0)? else {
        return Err("second OOM kill should reach max_failures 2".into());
    };
    assert!(reason.contains(REASON_OOM), "{reason}");
    Ok(())
}

#[test]
fn foreign_signal_counts_as_failure() -> TestResult {
    let t0 = Instant::now();
    let mut p = Planner::new(&task(vec![process("a")], &[]));
    assert!(matches!(
        run(&mut p, "a", Outcome::KilledBySignal(11), t0)?,
        Verdict::PermanentlyFailed { reason } if reason.contains("signal 11")
    ));
    Ok(())
}

#[test]
fn lost_run_is_rerun_without_counting_a_failure() -> TestResult {
    let t0 = Instant::now();
    let mut a = process("a");
    a.max_failures = 2;
    a.min_duration = secs(5);
    let mut p = Planner::new(&task(vec![a], &[]));
    for n in 0..3 {
        let now = t0 + secs(5 * n);
        assert_eq!(
            run(&mut p, "a", Outcome::Lost, now)?,
            Verdict::Restart { after: secs(5) }
        );
    }
    // Had the lost runs counted, the next failure would exceed max_failures 2.
    let t1 = t0 + secs(15);
    assert_eq!(p.runnable(t1), names(&["a"]));
    assert!(matches!(
        run(&mut p, "a", fail(1), t1)?,
        Verdict::Restart { .. }
    ));
    let t2 = t1 + secs(5);
    assert!(matches!(
        run(&mut p, "a", fail(1), t2)?,
        Verdict::PermanentlyFailed { .. }
    ));
    Ok(())
}

#[test]
fn killed_by_executor_stops_process_without_restart_or_failure() -> TestResult {
    let t0 = Instant::now();
    let mut d = process("d");
    d.daemon = true;
    let mut p = Planner::new(&task(vec![d], &[]));
    assert_eq!(run(&mut p, "d", Outcome::KilledByUs, t0)?, Verdict::Stopped);
    assert!(p.runnable(t0).is_empty());
    assert_eq!(p.regular_state(), PlanState::Complete);
    Ok(())
}

#[test]
fn unsuccessful_run_cap_fails_process_permanently() -> TestResult {
    let t0 = Instant::now();
    let mut a = process("a");
    a.max_failures = 0;
    let mut cfg = task(vec![a], &[]);
    cfg.max_failures = 0;
    let mut p = Planner::new(&cfg);
    for n in 1..MAX_UNSUCCESSFUL_RUNS {
        // Lost and failed runs both count toward the cap.
        let outcome = if n % 2 == 0 { Outcome::Lost } else { fail(1) };
        assert!(matches!(
            run(&mut p, "a", outcome, t0)?,
            Verdict::Restart { .. }
        ));
    }
    let Verdict::PermanentlyFailed { reason } = run(&mut p, "a", Outcome::Lost, t0)? else {
        return Err("the run cap should stop the process".into());
    };
    assert!(
        reason.contains(&MAX_UNSUCCESSFUL_RUNS.to_string()),
        "{reason}"
    );
    assert_eq!(p.regular_state(), PlanState::Complete);
    Ok(())
}

#[test]
fn exits_and_launches_are_checked_against_the_plan() -> TestResult {
    let t0 = Instant::now();
    let mut p = Planner::new(&task(vec![process("a")], &[]));
    assert!(matches!(
        p.exited("a", Outcome::Success, t0),
        Err(PlannerError::NotRunning {
            status: "waiting",
            ..
        })
    ));
    assert!(matches!(
        p.launched("nope", t0),
        Err(PlannerError::UnknownProcess { .. })
    ));
    p.launched("a", t0)?;
    assert!(matches!(
        p.launched("a", t0),
        Err(PlannerError::NotRunnable { .. })
    ));
    Ok(())
}

fn replay_run(run: u32, state: ProcessState, stop_time: Option<f64>) -> ProcessRun {
    ProcessRun {
        run,
        state,
        seq: 0,
        pid: None,
        coordinator_pid: None,
        fork_time: None,
        start_time: None,
        stop_time,
        return_code: (state == ProcessState::Failed).then_some(1),
        signal: None,
        reason: None,
        pid_start_ticks: None,
        cause: None,
    }
}

#[test]
fn recovers_mid_run_state_from_replay() -> TestResult {
    let now = Instant::now();
    let now_wall = 1_700_000_100.0;
    let mut retry = process("retry");
    retry.max_failures = 3;
    retry.min_duration = secs(60);
    let cfg = task(
        vec![process("setup"), process("server"), retry, process("after")],
        &[&["setup", "server"], &["retry", "after"]],
    );
    let mut processes = BTreeMap::new();
    processes.insert(
        "setup".to_owned(),
        vec![replay_run(0, ProcessState::Success, Some(1_700_000_000.0))],
    );
    processes.insert(
        "server".to_owned(),
        vec![replay_run(0, ProcessState::Running, None)],
    );
    // Failed twice (the second 40 s before `now`), then a WAITING record for the next run.
    processes.insert(
        "retry".to_owned(),
        vec![
            replay_run(0, ProcessState::Failed, Some(1_700_000_000.0)),
            replay_run(1, ProcessState::Failed, Some(1_700_000_060.0)),
            replay_run(2, ProcessState::Waiting, None),
        ],
    );
    let replay = TaskReplay {
        processes,
        statuses: vec![TaskStatus {
            state: TaskState::Active,
            timestamp_ms: 1_700_000_000_000,
            runner_pid: None,
            runner_uid: None,
            reason: None,
            outcome: None,
            cause: None,
        }],
        ..TaskReplay::default()
    };

    let mut p = Planner::from_replay(&cfg, &replay, now, now_wall)?;
    assert_eq!(p.running().collect::<Vec<_>>(), vec!["server"]);
    assert!(
        p.runnable(now).is_empty(),
        "retry's gate closes 20 s from now"
    );
    assert_eq!(p.next_wakeup(now), Some(now + secs(20)));
    assert_eq!(p.runnable(now + secs(20)), names(&["retry"]));

    // The replayed failures count: one more reaches max_failures 3.
    let later = now + secs(20);
    assert!(matches!(
        run(&mut p, "retry", fail(1), later)?,
        Verdict::PermanentlyFailed { .. }
    ));
    assert_eq!(
        p.exited("server", Outcome::Success, later)?,
        Verdict::Finished
    );
    Ok(())
}

#[test]
fn replayed_run_without_stop_time_keeps_its_gate_closed_for_a_full_min_duration() -> TestResult {
    let now = Instant::now();
    let mut a = process("a");
    a.min_duration = secs(30);
    let cfg = task(vec![a], &[]);
    let mut replay = TaskReplay::default();
    replay.processes.insert(
        "a".to_owned(),
        vec![replay_run(0, ProcessState::Lost, None)],
    );
    let p = Planner::from_replay(&cfg, &replay, now, 1_700_000_000.0)?;
    assert_eq!(p.next_wakeup(now), Some(now + secs(30)));
    Ok(())
}

#[test]
fn replay_naming_an_unknown_process_is_rejected() {
    let mut replay = TaskReplay::default();
    replay.processes.insert(
        "ghost".to_owned(),
        vec![replay_run(0, ProcessState::Running, None)],
    );
    let cfg = task(vec![process("a")], &[]);
    assert!(matches!(
        Planner::from_replay(&cfg, &replay, Instant::now(), 0.0),
        Err(PlannerError::ReplayUnknownProcess { process }) if process == "ghost"
    ));
}

#[test]
fn replay_resumes_the_final_stage() -> TestResult {
    let now = Instant::now();
    let mut f = process("f");
    f.is_final = true;
    let cfg = task(vec![process("a"), f], &[]);
    let mut processes = BTreeMap::new();
    processes.insert(
        "a".to_owned(),
        vec![replay_run(0, ProcessState::Killed, Some(5.0))],
    );
    let status = |state| TaskStatus {
        state,
        timestamp_ms: 0,
        runner_pid: None,
        runner_uid: None,
        reason: None,
        outcome: None,
        cause: None,
    };
    let replay = TaskReplay {
        processes,
        statuses: vec![
            status(TaskState::Active),
            status(TaskState::Cleaning),
            status(TaskState::Finalizing),
        ],
        ..TaskReplay::default()
    };
    let p = Planner::from_replay(&cfg, &replay, now, 10.0)?;
    assert_eq!(p.task_state(), TaskState::Finalizing);
    assert_eq!(p.runnable(now), names(&["f"]));
    Ok(())
}

#[test]
fn outcomes_survive_a_round_trip_through_the_checkpoint() {
    let outcomes = [
        Outcome::Success,
        fail(3),
        Outcome::Oom,
        Outcome::KilledByUs,
        Outcome::KilledBySignal(11),
        Outcome::Lost,
    ];
    for outcome in outcomes {
        let mut recorded = replay_run(0, outcome.process_state(), None);
        recorded.reason = outcome.recorded_reason().map(str::to_owned);
        recorded.cause =
            (outcome == Outcome::Oom).then_some(hearth_checkpoints::record::FailureCause::Oom);
        recorded.return_code = match outcome {
            Outcome::Failed { return_code } => Some(return_code),
            _ => None,
        };
        recorded.signal = match outcome {
            Outcome::KilledBySignal(signal) => Some(signal),
            _ => None,
        };
        assert_eq!(Outcome::from_run(&recorded), Some(outcome));
    }
    assert_eq!(
        Outcome::from_run(&replay_run(0, ProcessState::Forked, None)),
        None
    );
}
