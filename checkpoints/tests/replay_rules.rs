//! The transition rules of replay, one behaviour per test.

use hearth_checkpoints::record::{
    ProcessState, ProcessStatus, Record, RunnerHeader, TaskState, TaskStatus,
};
use hearth_checkpoints::replay::{ReplayError, TaskReplay};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn rec(seq: i64, state: ProcessState) -> Record {
    let mut p = ProcessStatus {
        seq,
        process: "p".to_owned(),
        state: Some(state),
        ..ProcessStatus::default()
    };
    match state {
        ProcessState::Running => p.pid = Some(10),
        ProcessState::Success | ProcessState::Failed | ProcessState::Killed => {
            p.return_code = Some(if state == ProcessState::Success { 0 } else { 3 });
            p.stop_time = Some(99.5);
        }
        _ => {}
    }
    Record::Process(p)
}

fn apply_all(records: &[Record]) -> Result<TaskReplay, ReplayError> {
    let mut t = TaskReplay::default();
    for r in records {
        t.apply(r)?;
    }
    Ok(t)
}

use ProcessState::*;

#[test]
fn waiting_after_an_ended_run_starts_the_next_run_and_failed_runs_keep_their_exit() -> TestResult {
    let t = apply_all(&[
        rec(0, Waiting),
        rec(1, Forked),
        rec(2, Running),
        rec(3, Failed),
        rec(4, Waiting),
        rec(5, Forked),
        rec(6, Running),
        rec(7, Success),
    ])?;
    let runs = &t.processes["p"];
    assert_eq!(
        runs.iter().map(|r| (r.run, r.state)).collect::<Vec<_>>(),
        [(0, Failed), (1, Success)]
    );
    assert_eq!(
        (runs[0].return_code, runs[0].stop_time, runs[0].pid),
        (Some(3), Some(99.5), Some(10))
    );
    assert_eq!(runs[1].seq, 7);
    Ok(())
}

#[test]
fn running_without_forked_is_invalid() {
    let err = apply_all(&[rec(0, Waiting), rec(1, Running)]);
    assert!(
        matches!(
            err,
            Err(ReplayError::Transition {
                from: Waiting,
                to: Running,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn a_record_before_any_waiting_is_invalid() {
    let err = apply_all(&[rec(0, Forked)]);
    assert!(matches!(err, Err(ReplayError::NoRun { .. })), "{err:?}");
}

#[test]
fn a_process_record_for_a_run_that_ended_is_invalid() {
    let err = apply_all(&[
        rec(0, Waiting),
        rec(1, Forked),
        rec(2, Lost),
        rec(3, Running),
    ]);
    assert!(
        matches!(
            err,
            Err(ReplayError::Transition {
                from: Lost,
                to: Running,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn seq_going_backwards_or_skipping_is_invalid() {
    for bad in [0, 1, 3] {
        let err = apply_all(&[rec(0, Waiting), rec(1, Forked), rec(bad, Running)]);
        assert!(
            matches!(err, Err(ReplayError::Seq { previous: 1, .. })),
            "{bad}: {err:?}"
        );
    }
}

#[test]
fn the_first_record_of_a_process_may_start_at_any_seq() -> TestResult {
    let t = apply_all(&[rec(41, Waiting), rec(42, Forked)])?;
    assert_eq!(t.processes["p"][0].state, Forked);
    Ok(())
}

#[test]
fn a_terminal_record_without_its_return_code_is_invalid() {
    let mut done = rec(3, Success);
    if let Record::Process(p) = &mut done {
        p.return_code = None;
    }
    let err = apply_all(&[rec(0, Waiting), rec(1, Forked), rec(2, Running), done]);
    assert!(
        matches!(
            err,
            Err(ReplayError::MissingField {
                field: "return_code",
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn a_record_naming_another_run_is_invalid() {
    let mut forked = rec(1, Forked);
    if let Record::Process(p) = &mut forked {
        p.run = Some(1);
    }
    let err = apply_all(&[rec(0, Waiting), forked]);
    assert!(
        matches!(
            err,
            Err(ReplayError::WrongRun {
                named: 1,
                actual: 0,
                ..
            })
        ),
        "{err:?}"
    );
}

#[test]
fn a_rejected_record_leaves_the_state_unchanged() -> TestResult {
    let mut t = apply_all(&[rec(0, Waiting)])?;
    let before = t.clone();
    assert!(t.apply(&rec(1, Success)).is_err());
    let mut named = rec(0, Waiting);
    if let Record::Process(p) = &mut named {
        p.process = "q".to_owned();
        p.run = Some(3);
    }
    assert!(t.apply(&named).is_err());
    assert_eq!(t, before);
    Ok(())
}

#[test]
fn the_header_may_follow_a_status_but_only_once() -> TestResult {
    let status = Record::Task(TaskStatus {
        state: TaskState::Active,
        timestamp_ms: 1,
        runner_pid: None,
        runner_uid: None,
        reason: None,
        outcome: None,
        cause: None,
    });
    let header = Record::Header(RunnerHeader {
        task_id: "t".to_owned(),
        ..RunnerHeader::default()
    });
    let mut t = apply_all(&[status, header.clone()])?;
    assert_eq!(t.state(), TaskState::Active);
    assert!(matches!(
        t.apply(&header),
        Err(ReplayError::SecondHeader { .. })
    ));
    Ok(())
}

#[test]
fn the_task_state_is_the_last_status_or_active() -> TestResult {
    assert_eq!(TaskReplay::default().state(), TaskState::Active);
    let st = |state| {
        Record::Task(TaskStatus {
            state,
            timestamp_ms: 0,
            runner_pid: None,
            runner_uid: None,
            reason: None,
            outcome: None,
            cause: None,
        })
    };
    let t = apply_all(&[
        st(TaskState::Active),
        st(TaskState::Cleaning),
        st(TaskState::Killed),
    ])?;
    assert_eq!(t.state(), TaskState::Killed);
    assert_eq!(t.statuses.len(), 3);
    Ok(())
}
