//! `hearth inspect` and `hearth status`, driven through the real binary, over the legacy Thermos
//! root in `../shared/thermos` (data written by Apache Thermos itself; never copied here) and
//! over damaged copies of its streams.
//!
//! When the shared data is missing these tests skip with a printed reason, unless
//! `HEARTH_REQUIRE_SHARED=1` (CI), where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// `../shared/thermos/root`, or `None` (after saying why) when it is absent and not required.
fn thermos_root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/thermos/root");
    if root.is_dir() {
        return Some(root);
    }
    let required = std::env::var_os("HEARTH_REQUIRE_SHARED").is_some_and(|v| v == "1");
    assert!(
        !required,
        "HEARTH_REQUIRE_SHARED=1 but the shared Thermos data is missing at {}",
        root.display()
    );
    eprintln!(
        "skipping: shared Thermos data not found at {} (set HEARTH_REQUIRE_SHARED=1 to fail instead)",
        root.display()
    );
    None
}

fn hearth(args: &[&str]) -> Result<Output, std::io::Error> {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(args)
        .env_remove("XDG_RUNTIME_DIR")
        .output()
}

fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `hearth inspect --root ROOT TASK --json`, expect success, and parse the JSON.
fn inspect_json(root: &Path, task: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let root = root.to_str().ok_or("root path is not UTF-8")?;
    let out = hearth(&["inspect", "--root", root, task, "--json"])?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The states of every run of `process`, in order.
fn run_states(task: &Value, process: &str) -> Vec<String> {
    task["processes"][process]
        .as_array()
        .map(|runs| {
            runs.iter()
                .map(|r| r["state"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Byte offsets at which each frame of a Thermos stream (4-byte big-endian length, payload)
/// starts, plus the end of the last one.
fn thermos_frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    let mut at = 0;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        at += 4 + len;
        starts.push(at);
    }
    starts
}

#[test]
fn inspect_hello_world_replays_one_successful_echo() -> TestResult {
    let Some(root) = thermos_root() else {
        return Ok(());
    };
    let task = inspect_json(&root, "hello_world")?;
    assert_eq!(task["task_id"], "hello_world");
    assert_eq!(task["state"], "SUCCESS");
    assert_eq!(task["format"]["kind"], "thermos");
    assert_eq!(task["stream"]["end"], "clean");
    assert_eq!(task["header"]["task_id"], "hello_world");
    // Thermos wrote a TaskStatus(ACTIVE) before the header; it still counts.
    assert_eq!(task["statuses"][0]["state"], "ACTIVE");
    assert_eq!(run_states(&task, "echo"), ["SUCCESS"]);
    let run = &task["processes"]["echo"][0];
    assert_eq!(run["run"], 0);
    assert_eq!(run["return_code"], 0);
    assert!(run["pid"].is_i64(), "pid missing: {run}");
    assert!(
        run["start_time"].is_f64() && run["stop_time"].is_f64(),
        "{run}"
    );
    Ok(())
}

#[test]
fn inspect_failure_keeps_return_code_and_stop_time_of_failed_runs() -> TestResult {
    let Some(root) = thermos_root() else {
        return Ok(());
    };
    let task = inspect_json(&root, "failure")?;
    assert_eq!(task["state"], "SUCCESS");
    assert_eq!(run_states(&task, "p1"), ["SUCCESS"]);
    assert_eq!(run_states(&task, "p2"), ["FAILED", "SUCCESS"]);
    assert_eq!(run_states(&task, "p3"), ["FAILED", "FAILED", "SUCCESS"]);
    for process in ["p2", "p3"] {
        let runs = task["processes"][process].as_array().ok_or("no runs")?;
        for (i, run) in runs.iter().enumerate() {
            assert_eq!(run["run"], i, "{process}: {run}");
            assert!(run["stop_time"].is_f64(), "{process} run {i}: {run}");
            let rc = run["return_code"].as_i64().ok_or("no return_code")?;
            if run["state"] == "FAILED" {
                assert_ne!(rc, 0, "{process} run {i} failed with rc 0");
            } else {
                assert_eq!(rc, 0, "{process} run {i}");
            }
        }
    }
    Ok(())
}

#[test]
fn inspect_ordering_runs_each_echo_once_one_after_another() -> TestResult {
    let Some(root) = thermos_root() else {
        return Ok(());
    };
    let task = inspect_json(&root, "ordering")?;
    assert_eq!(task["state"], "SUCCESS");
    let mut previous_stop = f64::MIN;
    for process in ["echo_one", "echo_two", "echo_three"] {
        assert_eq!(run_states(&task, process), ["SUCCESS"], "{process}");
        let run = &task["processes"][process][0];
        let start = run["start_time"].as_f64().ok_or("no start_time")?;
        let stop = run["stop_time"].as_f64().ok_or("no stop_time")?;
        assert!(
            previous_stop <= start,
            "{process} started at {start}, before its predecessor stopped at {previous_stop}"
        );
        previous_stop = stop;
    }
    Ok(())
}

#[test]
fn inspect_ports_shows_the_ports_of_the_header() -> TestResult {
    let Some(root) = thermos_root() else {
        return Ok(());
    };
    let task = inspect_json(&root, "ports")?;
    assert_eq!(task["state"], "SUCCESS");
    assert_eq!(run_states(&task, "echo"), ["SUCCESS"]);
    assert_eq!(
        task["header"]["ports"],
        serde_json::json!({"hello": 50000, "world": 50001})
    );
    Ok(())
}

#[test]
fn inspect_text_shows_header_history_and_runs() -> TestResult {
    let Some(root) = thermos_root() else {
        return Ok(());
    };
    let root = root.to_str().ok_or("root path is not UTF-8")?;
    let out = hearth(&["inspect", "--root", root, "ports"])?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    let text = stdout_of(&out);
    for expected in [
        "task ports: SUCCESS",
        "thermos",
        "hello=50000 world=50001",
        "status history",
        "process echo (1 run, latest SUCCESS)",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("warning"), "clean stream warned:\n{text}");
    Ok(())
}

#[test]
fn status_json_lists_every_task_with_latest_process_states() -> TestResult {
    let Some(root) = thermos_root() else {
        return Ok(());
    };
    let root = root.to_str().ok_or("root path is not UTF-8")?;
    let out = hearth(&["status", "--root", root, "--json"])?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    let tasks: Value = serde_json::from_slice(&out.stdout)?;
    let ids: Vec<&str> = tasks
        .as_array()
        .ok_or("not a list")?
        .iter()
        .filter_map(|t| t["task_id"].as_str())
        .collect();
    assert_eq!(ids, ["failure", "hello_world", "ordering", "ports"]);
    for task in tasks.as_array().ok_or("not a list")? {
        assert_eq!(task["state"], "SUCCESS", "{task}");
        assert!(task["launch_time_ms"].is_i64(), "{task}");
    }
    assert_eq!(
        tasks[0]["processes"],
        serde_json::json!({"p1": "SUCCESS", "p2": "SUCCESS", "p3": "SUCCESS"})
    );
    Ok(())
}

#[test]
fn status_regex_filters_task_ids() -> TestResult {
    let Some(root) = thermos_root() else {
        return Ok(());
    };
    let root = root.to_str().ok_or("root path is not UTF-8")?;
    let out = hearth(&["status", "--root", root, "or"])?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    let text = stdout_of(&out);
    let listed: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, ["hello_world", "ordering", "ports"], "{text}");
    assert!(text.contains("echo_one=SUCCESS"), "{text}");
    Ok(())
}

#[test]
fn inspect_of_a_torn_stream_shows_the_prefix_and_the_tear_and_exits_0() -> TestResult {
    let Some(root) = thermos_root() else {
        return Ok(());
    };
    let bytes = std::fs::read(root.join("checkpoints/failure/runner"))?;
    let starts = thermos_frame_starts(&bytes);
    // Cut the second-to-last frame in half: the frames before it survive.
    let torn_frame = starts.len() - 3;
    let tear_at = starts[torn_frame];
    let cut = tear_at + (starts[torn_frame + 1] - tear_at) / 2;
    let dir = tempfile::tempdir()?;
    let checkpoint_dir = dir.path().join("failure");
    std::fs::create_dir(&checkpoint_dir)?;
    let runner = checkpoint_dir.join("runner");
    std::fs::write(&runner, &bytes[..cut])?;

    // Path mode, by file, as text.
    let out = hearth(&["inspect", runner.to_str().ok_or("not UTF-8")?])?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    let text = stdout_of(&out);
    let tear = format!("checkpoint tail torn at byte {tear_at}: ");
    assert!(text.contains(&tear), "{tear:?} missing from:\n{text}");
    assert!(
        text.contains(&format!("replayed the {torn_frame} records before it")),
        "{text}"
    );
    assert!(text.contains("process p3"), "{text}");

    // Path mode, by checkpoint directory, as JSON.
    let out = hearth(&[
        "inspect",
        checkpoint_dir.to_str().ok_or("not UTF-8")?,
        "--json",
    ])?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    let task: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(task["task_id"], "failure");
    assert_eq!(task["stream"]["end"]["torn"]["offset"], tear_at);
    assert_eq!(task["stream"]["records"], torn_frame);
    assert_eq!(task["stream"]["valid_len"], tear_at);
    assert_eq!(run_states(&task, "p1"), ["SUCCESS"]);
    Ok(())
}

#[test]
fn inspect_of_a_corrupt_stream_shows_the_prefix_and_the_offset_and_exits_1() -> TestResult {
    let Some(root) = thermos_root() else {
        return Ok(());
    };
    let mut bytes = std::fs::read(root.join("checkpoints/hello_world/runner"))?;
    let starts = thermos_frame_starts(&bytes);
    // The third frame's payload now opens with a field of a type Thrift does not have.
    let bad_frame = 2;
    let bad_at = starts[bad_frame];
    bytes[bad_at + 4] = 0xee;
    let dir = tempfile::tempdir()?;
    let runner = dir.path().join("runner");
    std::fs::write(&runner, &bytes)?;
    let runner = runner.to_str().ok_or("not UTF-8")?;

    let out = hearth(&["inspect", runner, "--json"])?;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr_of(&out));
    let task: Value = serde_json::from_slice(&out.stdout)?;
    let end = &task["stream"]["end"];
    let damage = end.get("corrupt").or_else(|| end.get("invalid"));
    let damage = damage.ok_or_else(|| format!("stream end is not corrupt/invalid: {end}"))?;
    assert_eq!(damage["offset"], bad_at);
    assert_eq!(task["stream"]["records"], bad_frame);
    assert!(
        task["header"]["task_id"] == "hello_world",
        "prefix lost: {task}"
    );

    let out = hearth(&["inspect", runner])?;
    assert_eq!(out.status.code(), Some(1));
    let text = stdout_of(&out);
    assert!(text.contains(&format!("at byte {bad_at}")), "{text}");
    assert!(text.contains("the rest of the file was not read"), "{text}");
    Ok(())
}

/// A golden Hearth v1 file (`testdata/checkpoints/v1/`), committed with the repository.
fn golden(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/checkpoints/v1")
        .join(name);
    Ok(path.to_str().ok_or("not UTF-8")?.to_owned())
}

#[test]
fn inspect_golden_hearth_file_shows_failed_runs_with_signal_and_reasons() -> TestResult {
    let out = hearth(&["inspect", &golden("retries.ckpt")?, "--json"])?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    let task: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        task["format"],
        serde_json::json!({"kind": "hearth", "version": 1})
    );
    assert_eq!(task["stream"]["end"], "clean");
    assert_eq!(task["state"], "FAILED");
    let last_status = task["statuses"].as_array().and_then(|s| s.last());
    assert_eq!(
        last_status.map(|s| &s["reason"]),
        Some(&Value::from("1 process failed: hog (oom)"))
    );
    assert_eq!(run_states(&task, "flaky"), ["FAILED", "FAILED", "SUCCESS"]);
    let codes: Vec<&Value> = (0..3)
        .map(|i| &task["processes"]["flaky"][i]["return_code"])
        .collect();
    assert_eq!(codes, [1, 2, 0]);
    assert!(task["processes"]["flaky"][0].get("signal").is_none());
    let hog = &task["processes"]["hog"][1];
    assert_eq!(
        (&hog["state"], &hog["signal"], &hog["reason"]),
        (&"FAILED".into(), &9.into(), &"oom".into())
    );
    Ok(())
}

#[test]
fn inspect_golden_hearth_file_text_shows_snoozes_and_teardown() -> TestResult {
    let out = hearth(&["inspect", &golden("killed.ckpt")?])?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    let text = stdout_of(&out);
    for expected in [
        "KILLED",
        "hearth v1",
        "health=31337 http=31338",
        "killed by the agent",
        "SIGTERM",
        "health-check snoozes",
        "file removed",
        "teardown",
        "abortabortabort",
        "all processes exited",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("warning"), "clean stream warned:\n{text}");
    Ok(())
}

#[test]
fn inspect_of_a_missing_task_exits_1_naming_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_str().ok_or("not UTF-8")?;
    let out = hearth(&["inspect", "--root", root, "no_such_task"])?;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("no_such_task") && err.contains(root), "{err}");
    assert!(out.stdout.is_empty());
    Ok(())
}

#[test]
fn inspect_of_a_missing_path_without_root_exits_1_naming_the_root() -> TestResult {
    // Without --root and without XDG_RUNTIME_DIR, a non-root user has no default root; as root
    // the default root is used and does not hold this task. Either way: exit 1 and a reason.
    let out = hearth(&["inspect", "definitely-not-a-task-or-path"])?;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr_of(&out));
    assert!(stderr_of(&out).contains("root"), "{}", stderr_of(&out));
    Ok(())
}

#[test]
fn inspect_of_an_invalid_task_id_is_a_usage_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_str().ok_or("not UTF-8")?;
    let out = hearth(&["inspect", "--root", root, "../escape"])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("../escape"), "{}", stderr_of(&out));
    Ok(())
}

#[test]
fn status_with_an_invalid_regex_is_a_usage_error_naming_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_str().ok_or("not UTF-8")?;
    let out = hearth(&["status", "--root", root, "hello(["])?;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("hello(["), "{}", stderr_of(&out));
    Ok(())
}

#[test]
fn status_of_a_missing_root_exits_1_naming_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("gone");
    let missing = missing.to_str().ok_or("not UTF-8")?;
    let out = hearth(&["status", "--root", missing])?;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains(missing), "{}", stderr_of(&out));
    Ok(())
}

#[test]
fn status_of_an_empty_root_says_so() -> TestResult {
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_str().ok_or("not UTF-8")?;
    let out = hearth(&["status", "--root", root])?;
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    assert_eq!(stdout_of(&out), "no tasks\n");
    let out = hearth(&["status", "--root", root, "--json"])?;
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout)?,
        serde_json::json!([])
    );
    Ok(())
}
