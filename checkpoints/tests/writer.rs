//! The group-commit writer: creation, durability points, torn-tail recovery, refusals.

use std::fs::OpenOptions;
use std::io::Write;

use hearth_checkpoints::record::{
    ProcessState, ProcessStatus, Record, RunnerHeader, TaskState, TaskStatus,
};
use hearth_checkpoints::stream::{
    CheckpointError, CheckpointWriter, FILE_HEADER_LEN, MAX_PAYLOAD, StreamEnd, read_records,
    replay_path,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn header() -> RunnerHeader {
    RunnerHeader {
        task_id: "t-1".to_owned(),
        launch_time_ms: 1,
        ..RunnerHeader::default()
    }
}

fn status(at: i64) -> Record {
    Record::Task(TaskStatus {
        state: TaskState::Active,
        timestamp_ms: at,
        runner_pid: None,
        runner_uid: None,
        reason: None,
        outcome: None,
        cause: None,
    })
}

#[test]
fn group_commit_issues_one_fsync_per_burst_and_none_when_idle() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runner");
    let mut w = CheckpointWriter::create(&path, &header())?;
    let base = w.fsyncs();
    for i in 0..100 {
        w.append(&status(i))?;
    }
    assert!(w.has_pending());
    w.commit()?;
    assert_eq!(w.fsyncs(), base + 1);
    w.commit()?;
    w.commit()?;
    assert_eq!(
        w.fsyncs(),
        base + 1,
        "commit with nothing pending must not fsync"
    );
    w.append(&status(100))?;
    w.commit()?;
    assert_eq!(w.fsyncs(), base + 2);
    let r = replay_path(&path)?;
    assert_eq!((r.records, r.end), (102, StreamEnd::Clean));
    Ok(())
}

#[test]
fn write_out_reaches_the_file_without_an_fsync_and_the_next_commit_syncs_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runner");
    let mut w = CheckpointWriter::create(&path, &header())?;
    let base = w.fsyncs();
    w.append(&status(1))?;
    w.append(&status(2))?;
    w.write_out()?;
    assert!(!w.has_pending());
    assert_eq!(w.fsyncs(), base, "write_out must not fsync");
    // A reader (another process after a crash of this one) sees the records at once.
    assert_eq!(replay_path(&path)?.records, 3);
    w.write_out()?;
    assert_eq!(w.fsyncs(), base);
    // Nothing is pending, but written bytes are not yet durable: commit must still fsync.
    w.commit()?;
    assert_eq!(w.fsyncs(), base + 1);
    w.commit()?;
    assert_eq!(w.fsyncs(), base + 1, "everything is synced now");
    Ok(())
}

#[test]
fn appended_records_reach_the_file_only_at_commit() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runner");
    let mut w = CheckpointWriter::create(&path, &header())?;
    assert_eq!(
        replay_path(&path)?.records,
        1,
        "the header is durable once create returns"
    );
    w.append(&status(1))?;
    assert_eq!(replay_path(&path)?.records, 1);
    w.commit()?;
    assert_eq!(replay_path(&path)?.records, 2);
    Ok(())
}

#[test]
fn create_refuses_an_existing_stream() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runner");
    CheckpointWriter::create(&path, &header())?;
    let err = CheckpointWriter::create(&path, &header());
    assert!(
        matches!(err, Err(CheckpointError::Io { op: "create", .. })),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn open_append_truncates_a_torn_tail_then_appends_after_the_last_whole_frame() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runner");
    let mut w = CheckpointWriter::create(&path, &header())?;
    w.append(&status(1))?;
    w.commit()?;
    drop(w);
    let good = std::fs::metadata(&path)?.len();
    // Half of a frame, as a crash in the middle of a write leaves it.
    let mut scratch = CheckpointWriter::create(&dir.path().join("scratch"), &header())?;
    scratch.append(&status(2))?;
    scratch.commit()?;
    let scratch_bytes = std::fs::read(dir.path().join("scratch"))?;
    let (_, recs, _) = read_records(&scratch_bytes);
    let frame = &scratch_bytes[recs[1].0 as usize..];
    OpenOptions::new()
        .append(true)
        .open(&path)?
        .write_all(&frame[..frame.len() / 2])?;

    let (mut w, replayed) = CheckpointWriter::open_append(&path)?;
    assert!(
        matches!(replayed.end, StreamEnd::Torn { offset, .. } if offset == good),
        "{:?}",
        replayed.end
    );
    assert_eq!(replayed.records, 2);
    assert_eq!(
        std::fs::metadata(&path)?.len(),
        good,
        "the torn tail is truncated"
    );
    w.append(&status(3))?;
    w.commit()?;
    let r = replay_path(&path)?;
    assert_eq!((r.records, &r.end), (3, &StreamEnd::Clean));
    assert_eq!(r.replay.statuses.last().map(|s| s.timestamp_ms), Some(3));
    Ok(())
}

#[test]
fn open_append_rewrites_a_torn_file_header() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runner");
    std::fs::write(&path, b"HEART")?;
    let (mut w, replayed) = CheckpointWriter::open_append(&path)?;
    assert!(matches!(replayed.end, StreamEnd::Torn { offset: 0, .. }));
    assert_eq!(std::fs::metadata(&path)?.len(), FILE_HEADER_LEN as u64);
    w.append(&Record::Header(header()))?;
    w.commit()?;
    let r = replay_path(&path)?;
    assert_eq!((r.records, r.end), (1, StreamEnd::Clean));
    Ok(())
}

#[test]
fn open_append_refuses_corruption_before_the_end_naming_its_offset() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runner");
    let mut w = CheckpointWriter::create(&path, &header())?;
    w.append(&status(1))?;
    w.append(&status(2))?;
    w.commit()?;
    drop(w);
    let mut bytes = std::fs::read(&path)?;
    let (_, recs, _) = read_records(&bytes);
    let victim = recs[1].0;
    // Damage the payload of the middle frame.
    bytes[victim as usize + 12] ^= 0x40;
    std::fs::write(&path, &bytes)?;
    match CheckpointWriter::open_append(&path) {
        Err(CheckpointError::Corrupt { offset, .. }) => assert_eq!(offset, victim),
        other => panic!("expected corruption at {victim}, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path)?,
        bytes,
        "a refused stream is left as it was"
    );
    Ok(())
}

#[test]
fn open_append_refuses_a_legacy_thermos_stream() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runner");
    std::fs::write(&path, [0, 0, 0, 1, 0])?;
    let err = CheckpointWriter::open_append(&path);
    assert!(
        matches!(err, Err(CheckpointError::Unappendable { .. })),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn open_append_keeps_a_stream_whose_records_break_the_replay_rules() -> TestResult {
    // A keeper-style stream: exits without the WAITING/FORKED records of the runner's stream.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keeper");
    let mut w = CheckpointWriter::create(&path, &header())?;
    w.append(&Record::Process(ProcessStatus {
        process: "p".to_owned(),
        state: Some(ProcessState::Running),
        pid: Some(7),
        run: Some(0),
        ..ProcessStatus::default()
    }))?;
    w.commit()?;
    drop(w);
    let len = std::fs::metadata(&path)?.len();
    let (mut w, replayed) = CheckpointWriter::open_append(&path)?;
    assert!(
        matches!(replayed.end, StreamEnd::Invalid { record: 1, .. }),
        "{:?}",
        replayed.end
    );
    assert_eq!(std::fs::metadata(&path)?.len(), len, "nothing is truncated");
    w.append(&status(5))?;
    w.commit()?;
    let (_, recs, end) = read_records(&std::fs::read(&path)?);
    assert_eq!((recs.len(), end), (3, StreamEnd::Clean));
    Ok(())
}

#[test]
fn an_oversized_record_is_refused_and_nothing_is_buffered() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runner");
    let mut w = CheckpointWriter::create(&path, &header())?;
    let big = Record::Task(TaskStatus {
        state: TaskState::Failed,
        timestamp_ms: 0,
        runner_pid: None,
        runner_uid: None,
        reason: Some("x".repeat(MAX_PAYLOAD)),
        outcome: None,
        cause: None,
    });
    let err = w.append(&big);
    assert!(
        matches!(err, Err(CheckpointError::RecordTooLarge { .. })),
        "{err:?}"
    );
    assert!(!w.has_pending());
    Ok(())
}
