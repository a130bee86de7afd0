//! Legacy Apache Thermos checkpoint roots, read from the real files in `../shared/thermos/root`
//! (relative to the workspace root; never copied into the repository). Without them the tests
//! skip with a message, unless `HEARTH_REQUIRE_SHARED=1`, where they fail.

use std::path::PathBuf;

use hearth_checkpoints::record::{ProcessState, TaskState};
use hearth_checkpoints::replay::TaskReplay;
use hearth_checkpoints::stream::{Format, StreamEnd, replay_thermos_task};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn shared_root() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/thermos/root");
    if root.join("checkpoints").is_dir() {
        return Some(root);
    }
    let required = std::env::var("HEARTH_REQUIRE_SHARED").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "HEARTH_REQUIRE_SHARED=1 but {} is missing",
        root.display()
    );
    eprintln!(
        "skipping: the Thermos fixtures are not at {}",
        root.display()
    );
    None
}

fn load(task: &str) -> Result<Option<TaskReplay>, Box<dyn std::error::Error>> {
    let Some(root) = shared_root() else {
        return Ok(None);
    };
    let r = replay_thermos_task(&root, task)?;
    assert_eq!(r.format, Format::Thermos);
    assert_eq!(r.end, StreamEnd::Clean, "{task}");
    assert_eq!(
        r.replay.header.as_ref().map(|h| h.task_id.as_str()),
        Some(task)
    );
    Ok(Some(r.replay))
}

fn runs(t: &TaskReplay, p: &str) -> Vec<ProcessState> {
    t.processes
        .get(p)
        .map(|r| r.iter().map(|x| x.state).collect())
        .unwrap_or_default()
}

#[test]
fn thermos_hello_world_succeeds_with_its_header_after_the_first_status() -> TestResult {
    let Some(t) = load("hello_world")? else {
        return Ok(());
    };
    assert_eq!(t.state(), TaskState::Success);
    assert_eq!(t.statuses.first().map(|s| s.state), Some(TaskState::Active));
    assert_eq!(runs(&t, "echo"), [ProcessState::Success]);
    assert_eq!(t.processes["echo"][0].return_code, Some(0));
    Ok(())
}

#[test]
fn thermos_failure_keeps_failed_runs_with_stop_time_and_return_code() -> TestResult {
    let Some(t) = load("failure")? else {
        return Ok(());
    };
    use ProcessState::*;
    assert_eq!(t.state(), TaskState::Success);
    assert_eq!(runs(&t, "p1"), [Success]);
    assert_eq!(runs(&t, "p2"), [Failed, Success]);
    assert_eq!(runs(&t, "p3"), [Failed, Failed, Success]);
    for run in t.processes["p2"]
        .iter()
        .chain(&t.processes["p3"])
        .filter(|r| r.state == Failed)
    {
        assert_eq!(run.return_code, Some(1));
        assert!(run.stop_time.is_some() && run.start_time.is_some() && run.pid.is_some());
    }
    Ok(())
}

#[test]
fn thermos_ordering_runs_three_processes_one_after_another() -> TestResult {
    let Some(t) = load("ordering")? else {
        return Ok(());
    };
    assert_eq!(t.state(), TaskState::Success);
    let order = ["echo_one", "echo_two", "echo_three"];
    for p in order {
        assert_eq!(runs(&t, p), [ProcessState::Success], "{p}");
    }
    for pair in order.windows(2) {
        let stop = t.processes[pair[0]][0].stop_time.ok_or("no stop time")?;
        let fork = t.processes[pair[1]][0].fork_time.ok_or("no fork time")?;
        assert!(
            stop <= fork,
            "{} must end before {} starts",
            pair[0],
            pair[1]
        );
    }
    Ok(())
}

#[test]
fn thermos_ports_header_carries_the_allocated_ports() -> TestResult {
    let Some(t) = load("ports")? else {
        return Ok(());
    };
    assert_eq!(t.state(), TaskState::Success);
    assert_eq!(runs(&t, "echo"), [ProcessState::Success]);
    let ports = &t.header.as_ref().ok_or("no header")?.ports;
    assert_eq!(ports.get("hello"), Some(&50_000));
    assert_eq!(ports.get("world"), Some(&50_001));
    assert_eq!(ports.len(), 2);
    Ok(())
}
