//! The JSON API, `/metrics` and `/health`, driven through the router without a socket.
// A test, off the server's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use axum::http::StatusCode;
use common::{Fixture, RunSpec, TaskSpec, TestResult, get, get_json};
use hearth_checkpoints::record::{ProcessState, ProcessStatus, Record, TaskState, TaskStatus};
use hearth_observer::app;

fn two_run_task(id: &str) -> TaskSpec {
    let mut spec = TaskSpec::simple(id, false, 1_700_000_000_000);
    spec.processes = vec![(
        "flaky".into(),
        vec![
            RunSpec {
                end: Some((ProcessState::Failed, 3)),
                stdout: "first try\n".into(),
            },
            RunSpec {
                end: Some((ProcessState::Success, 0)),
                stdout: "0123456789".into(),
            },
        ],
    )];
    spec
}

#[tokio::test]
async fn task_ids_lists_active_and_finished_newest_first_with_paging() -> TestResult {
    let fx = Fixture::new()?;
    for i in 0..3 {
        fx.write_task(&TaskSpec::simple(&format!("act{i}"), true, 1_000_000 + i))?;
        fx.write_task(&TaskSpec::simple(&format!("fin{i}"), false, 2_000_000 + i))?;
    }
    let app = app(fx.observer()?);
    let (s, v) = get_json(&app, "/j/task_ids/active").await?;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["task_ids"], serde_json::json!(["act2", "act1", "act0"]));
    assert_eq!(v["task_count"], 3);
    let (_, v) = get_json(&app, "/j/task_ids/finished/1/1").await?;
    assert_eq!(v["task_ids"], serde_json::json!(["fin1"]));
    let (_, v) = get_json(&app, "/j/task_ids").await?;
    assert_eq!(v["type"], "all");
    assert_eq!(v["task_ids"].as_array().map(Vec::len), Some(6));
    // A negative offset counts from the end.
    let (_, v) = get_json(&app, "/j/task_ids/all/-2").await?;
    assert_eq!(v["task_ids"], serde_json::json!(["fin1", "fin0"]));
    let (s, v) = get_json(&app, "/j/task_ids/sideways").await?;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().is_some_and(|e| e.contains("type")));
    Ok(())
}

#[tokio::test]
async fn task_json_has_the_inspect_shape_plus_config_and_usage() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&two_run_task("t1"))?;
    let app = app(fx.observer()?);
    let (s, v) = get_json(&app, "/j/task/t1").await?;
    assert_eq!(s, StatusCode::OK);
    let t = &v["t1"];
    assert_eq!(t["task_id"], "t1");
    assert_eq!(t["state"], "SUCCESS");
    assert_eq!(t["name"], "t1-name");
    assert_eq!(t["resources"]["ram"], 67_108_864);
    let runs = t["processes"]["flaky"].as_array().ok_or("no runs")?;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["state"], "FAILED");
    assert_eq!(runs[0]["return_code"], 3);
    assert!(t.get("resource_consumption").is_some());
    Ok(())
}

/// A failing checkpoint disk (the executor's condition file) shows in the task JSON and as a
/// warning on the task page, and goes away when cleared.
#[tokio::test]
async fn a_live_condition_shows_in_task_json_and_page_until_cleared() -> TestResult {
    use hearth_checkpoints::condition::{Condition, ConditionFile, ConditionKind};
    let fx = Fixture::new()?;
    fx.write_task(&TaskSpec::simple("t1", true, 1_700_000_000_000))?;
    let file = ConditionFile::create(&fx.root.checkpoint_dir("t1"))?;
    file.set(&Condition {
        kind: ConditionKind::CheckpointWritesFailing,
        message: "No space left on device (os error 28)".into(),
        since_ms: 1_700_000_001_000,
        updated_ms: 1_700_000_002_000,
        attempts: 4,
    })?;
    let app = app(fx.observer()?);
    let (_, v) = get_json(&app, "/j/task/t1").await?;
    assert_eq!(v["t1"]["condition"]["kind"], "checkpoint_writes_failing");
    assert_eq!(v["t1"]["condition"]["attempts"], 4);
    let (s, _, body) = get(&app, "/task/t1").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("WARNING: checkpoint writes failing since ")
            && body.contains("No space left on device (os error 28) (4 failed attempts)"),
        "{body}"
    );
    file.clear()?;
    let (_, v) = get_json(&app, "/j/task/t1").await?;
    assert_eq!(v["t1"]["condition"], serde_json::Value::Null);
    let (_, _, body) = get(&app, "/task/t1").await?;
    assert!(!body.contains("checkpoint writes failing"), "{body}");
    Ok(())
}

#[tokio::test]
async fn unknown_ids_are_404_with_a_json_error_never_500() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&two_run_task("t1"))?;
    let app = app(fx.observer()?);
    for uri in [
        "/j/task/nope",
        "/j/task?task_id=t1,nope",
        "/j/process/nope/flaky",
        "/j/process/t1/nope",
        "/j/process/t1/flaky/2",
        "/j/process/t1/flaky/-3",
        "/j/process/t1/flaky/x",
        "/logdata/nope/flaky/0/stdout",
        "/logdata/t1/nope/0/stdout",
        "/logdata/t1/flaky/7/stdout",
        "/logdata/t1/flaky/0/stdin",
        "/filedata/nope/x",
        "/filedata/t1/missing.txt",
        "/j/nothing-here",
    ] {
        let (s, v) = get_json(&app, uri).await?;
        assert_eq!(s, StatusCode::NOT_FOUND, "{uri}: {v}");
        assert!(v["error"].is_string(), "{uri}: {v}");
    }
    Ok(())
}

#[tokio::test]
async fn process_endpoint_serves_latest_given_and_negative_runs() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&two_run_task("t1"))?;
    let app = app(fx.observer()?);
    let (_, latest) = get_json(&app, "/j/process/t1/flaky").await?;
    assert_eq!(latest["process_run"], 1);
    assert_eq!(latest["state"], "SUCCESS");
    let (_, first) = get_json(&app, "/j/process/t1/flaky/0").await?;
    assert_eq!(first["state"], "FAILED");
    assert_eq!(first["return_code"], 3);
    let (_, minus_two) = get_json(&app, "/j/process/t1/flaky/-2").await?;
    assert_eq!(minus_two, first);
    Ok(())
}

#[tokio::test]
async fn logdata_follows_thermos_chunk_semantics() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&two_run_task("t1"))?;
    let app = app(fx.observer()?);
    let base = "/logdata/t1/flaky/1/stdout";
    let (_, v) = get_json(&app, base).await?;
    assert_eq!(
        (v["offset"].as_u64(), v["length"].as_u64()),
        (Some(10), Some(0))
    );
    let (_, v) = get_json(&app, &format!("{base}?offset=3&length=4")).await?;
    assert_eq!(v["data"], "3456");
    let (_, v) = get_json(&app, &format!("{base}?offset=6")).await?;
    assert_eq!(v["data"], "6789");
    let (_, v) = get_json(&app, &format!("{base}?offset=-1&length=-1")).await?;
    assert_eq!(v["length"], 0);
    let (s, _) = get_json(&app, &format!("{base}?offset=-7")).await?;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = get_json(&app, &format!("{base}?length=lots")).await?;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Negative run numbers count from the end, as for /j/process.
    let (_, v) = get_json(&app, "/logdata/t1/flaky/-2/stdout?offset=0").await?;
    assert_eq!(v["data"], "first try\n");
    Ok(())
}

#[tokio::test]
async fn filedata_reads_sandbox_files_by_chunk() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&two_run_task("t1"))?;
    std::fs::create_dir_all(fx.sandbox("t1").join("sub dir"))?;
    std::fs::write(fx.sandbox("t1").join("sub dir/notes.txt"), "abcdef")?;
    let app = app(fx.observer()?);
    let (s, v) = get_json(&app, "/filedata/t1/sub%20dir/notes.txt?offset=2&length=3").await?;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["data"], "cde");
    assert_eq!(v["size"], 6);
    Ok(())
}

#[tokio::test]
async fn metrics_report_states_restarts_and_exit_codes() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&two_run_task("t1"))?;
    fx.write_task(&TaskSpec::simple("live", true, 5))?;
    let app = app(fx.observer()?);
    let (s, ctype, body) = get(&app, "/metrics").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    for line in [
        "hearth_task_state{task_id=\"t1\",state=\"SUCCESS\"} 1",
        "hearth_task_state{task_id=\"live\",state=\"ACTIVE\"} 1",
        "hearth_process_state{task_id=\"t1\",process=\"flaky\",state=\"SUCCESS\"} 1",
        "hearth_process_restarts{task_id=\"t1\",process=\"flaky\"} 1",
        "hearth_process_last_exit_code{task_id=\"t1\",process=\"flaky\"} 0",
        "hearth_process_state{task_id=\"live\",process=\"hello\",state=\"RUNNING\"} 1",
        "hearth_observer_tasks{type=\"active\"} 1",
        "# TYPE hearth_task_state gauge",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in\n{body}"
        );
    }
    let (s, _, body) = get(&app, "/health").await?;
    assert_eq!((s, body.trim()), (StatusCode::OK, "ok"));
    Ok(())
}

#[tokio::test]
async fn appended_records_are_read_incrementally() -> TestResult {
    let fx = Fixture::new()?;
    let mut w = fx.write_task(&TaskSpec::simple("grow", true, 1_000))?;
    let obs = fx.observer()?;
    let app = app(obs.clone());
    let (_, v) = get_json(&app, "/j/process/grow/hello").await?;
    assert_eq!(v["state"], "RUNNING");
    let cell = obs.task("grow").ok_or("no task")?;
    let first_read = cell.lock().tail.bytes_read();
    let size_before = std::fs::metadata(fx.root.runner_path("grow"))?.len();
    assert_eq!(first_read, size_before);

    w.append(&Record::Process(ProcessStatus {
        seq: 3,
        process: "hello".into(),
        state: Some(ProcessState::Success),
        return_code: Some(0),
        stop_time: Some(9.0),
        ..ProcessStatus::default()
    }))?;
    w.append(&Record::Task(TaskStatus {
        state: TaskState::Success,
        timestamp_ms: 9_000,
        runner_pid: None,
        runner_uid: None,
        reason: None,
        outcome: None,
        cause: None,
    }))?;
    w.commit()?;
    let size_after = std::fs::metadata(fx.root.runner_path("grow"))?.len();

    let (_, v) = get_json(&app, "/j/task/grow").await?;
    assert_eq!(v["grow"]["state"], "SUCCESS");
    assert_eq!(v["grow"]["processes"]["hello"][0]["state"], "SUCCESS");
    // Only the appended bytes were read the second time.
    assert_eq!(cell.lock().tail.bytes_read(), size_after);
    Ok(())
}

#[tokio::test]
async fn torn_tail_is_reread_once_complete() -> TestResult {
    use std::io::Write;
    let fx = Fixture::new()?;
    let _w = fx.write_task(&TaskSpec::simple("torn", true, 1_000))?;
    // Build the bytes of one more frame with a scratch writer, then append them in two halves.
    let scratch = fx.dir.path().join("scratch");
    let header = hearth_checkpoints::record::RunnerHeader::default();
    let mut sw = hearth_checkpoints::stream::CheckpointWriter::create(&scratch, &header)?;
    let before = std::fs::metadata(&scratch)?.len();
    sw.append(&Record::Task(TaskStatus {
        state: TaskState::Failed,
        timestamp_ms: 5_000,
        runner_pid: None,
        runner_uid: None,
        reason: Some("boom".into()),
        outcome: None,
        cause: None,
    }))?;
    sw.commit()?;
    let all = std::fs::read(&scratch)?;
    let frame = all.get(usize::try_from(before)?..).ok_or("no frame")?;
    let (a, b) = frame.split_at(frame.len() / 2);

    let obs = fx.observer()?;
    let app = app(obs);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(fx.root.runner_path("torn"))?;
    f.write_all(a)?;
    let (_, v) = get_json(&app, "/j/task/torn").await?;
    assert_eq!(v["torn"]["state"], "ACTIVE");
    f.write_all(b)?;
    let (_, v) = get_json(&app, "/j/task/torn").await?;
    assert_eq!(v["torn"]["state"], "FAILED");
    assert_eq!(v["torn"]["stream"]["end"], "clean");
    Ok(())
}

#[tokio::test]
async fn legacy_thermos_root_is_served_like_a_hearth_root() -> TestResult {
    let Some(root) = common::shared_thermos_root()? else {
        return Ok(());
    };
    let scratch = tempfile::tempdir()?;
    let obs = hearth_observer::Observer::open(&[root], common::test_settings(scratch.path()))?;
    let app = app(obs);
    let (_, v) = get_json(&app, "/j/task_ids/finished").await?;
    let ids = v["task_ids"].as_array().ok_or("no ids")?;
    assert_eq!(ids.len(), 4, "{v}");
    let (s, v) = get_json(&app, "/j/task/failure").await?;
    assert_eq!(s, StatusCode::OK);
    let p3 = v["failure"]["processes"]["p3"].as_array().ok_or("no p3")?;
    let states: Vec<&str> = p3.iter().filter_map(|r| r["state"].as_str()).collect();
    assert_eq!(states, ["FAILED", "FAILED", "SUCCESS"]);
    let (s, v) = get_json(&app, "/logdata/ports/echo/0/stdout?offset=0").await?;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["data"].as_str().map(str::trim), Some("50000 50001"));
    let (s, _, body) = get(&app, "/task/ports").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("50000"), "{body}");
    // The root was moved since 2012: the header's sandbox is found under the root.
    let (s, _, listing) = get(&app, "/browse/failure/").await?;
    assert_eq!(s, StatusCode::OK, "{listing}");
    assert!(listing.contains("href=\"/file/failure/p1\""), "{listing}");
    Ok(())
}

#[tokio::test]
async fn exits_only_the_keeper_recorded_are_shown_while_the_executor_is_down() -> TestResult {
    let fx = Fixture::new()?;
    drop(fx.write_task(&TaskSpec::simple("down", true, 1_000))?);
    let app = app(fx.observer()?);
    let (_, v) = get_json(&app, "/j/process/down/hello").await?;
    assert_eq!(v["state"], "RUNNING");

    // The keeper saw the run end after the executor's last write.
    let keeper = fx.root.keeper_path("down");
    let mut w = hearth_checkpoints::stream::CheckpointWriter::create(
        &keeper,
        &hearth_checkpoints::record::RunnerHeader {
            task_id: "down".into(),
            ..Default::default()
        },
    )?;
    w.append(&Record::Process(ProcessStatus {
        process: "hello".into(),
        state: Some(ProcessState::Failed),
        run: Some(0),
        pid: Some(4242),
        return_code: Some(7),
        stop_time: Some(20.0),
        ..ProcessStatus::default()
    }))?;
    w.commit()?;
    drop(w);
    let later = std::fs::metadata(fx.root.runner_path("down"))?.modified()?
        + std::time::Duration::from_secs(1);
    std::fs::File::options()
        .write(true)
        .open(&keeper)?
        .set_modified(later)?;

    let (_, v) = get_json(&app, "/j/process/down/hello").await?;
    assert_eq!(v["state"], "FAILED", "{v}");
    assert_eq!(v["return_code"], 7, "{v}");
    Ok(())
}
