//! Replay throughput: records per second from memory, and a 100 MB stream read from disk and
//! replayed (what `hearth inspect` does).
//!
//! `cargo bench -p hearth-checkpoints --bench replay`

use std::path::Path;

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use hearth_checkpoints::record::{
    ProcessState, ProcessStatus, Record, RunnerHeader, TaskState, TaskStatus,
};
use hearth_checkpoints::stream::{CheckpointWriter, StreamEnd, replay_bytes, replay_path};

fn main() {
    divan::main();
}

/// Write a realistic stream to `path`: `procs` processes, each run going WAITING, FORKED,
/// RUNNING, then FAILED or SUCCESS, until the stream is at least `bytes` long. Returns the
/// number of records.
fn write_stream(path: &Path, procs: usize, bytes: u64) -> u64 {
    let header = RunnerHeader {
        task_id: "www-data/prod/bench/0-0000".to_owned(),
        launch_time_ms: 1_717_000_000_000,
        sandbox: Some("/var/lib/hearth/sandboxes/bench".to_owned()),
        ..RunnerHeader::default()
    };
    let mut w = match CheckpointWriter::create(path, &header) {
        Ok(w) => w,
        Err(e) => panic!("cannot create {}: {e}", path.display()),
    };
    let names: Vec<String> = (0..procs).map(|i| format!("worker_{i:04}")).collect();
    let mut seq = vec![-1i64; procs];
    let mut records = 1u64;
    let push = |w: &mut CheckpointWriter, r: Record| {
        if let Err(e) = w.append(&r) {
            panic!("append: {e}");
        }
    };
    push(
        &mut w,
        Record::Task(TaskStatus {
            state: TaskState::Active,
            timestamp_ms: 0,
            runner_pid: Some(1),
            runner_uid: Some(0),
            reason: None,
            outcome: None,
            cause: None,
        }),
    );
    records += 1;
    let mut round = 0u64;
    'outer: loop {
        for (i, name) in names.iter().enumerate() {
            for state in [
                ProcessState::Waiting,
                ProcessState::Forked,
                ProcessState::Running,
                ProcessState::Failed,
            ] {
                seq[i] += 1;
                let t = 1.7e9 + seq[i] as f64;
                let mut p = ProcessStatus {
                    seq: seq[i],
                    process: name.clone(),
                    state: Some(state),
                    ..ProcessStatus::default()
                };
                match state {
                    ProcessState::Forked => (p.fork_time, p.coordinator_pid) = (Some(t), Some(2)),
                    ProcessState::Running => {
                        (p.start_time, p.pid) = (Some(t), Some(1000 + i as i32))
                    }
                    ProcessState::Failed => (p.stop_time, p.return_code) = (Some(t), Some(1)),
                    _ => {}
                }
                push(&mut w, Record::Process(p));
                records += 1;
            }
        }
        round += 1;
        if let Err(e) = w.commit() {
            panic!("commit: {e}");
        }
        if round.is_multiple_of(16) && std::fs::metadata(path).map_or(0, |m| m.len()) >= bytes {
            break 'outer;
        }
    }
    records
}

#[divan::bench(sample_count = 20)]
fn replay_records_from_memory(b: Bencher) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("runner");
    let records = write_stream(&path, 100, 16 << 20);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(replay_bytes(&bytes).end, StreamEnd::Clean);
    b.counter(ItemsCount::new(records))
        .bench(|| replay_bytes(black_box(&bytes)));
}

#[divan::bench(sample_count = 7, sample_size = 1)]
fn inspect_100_mb_stream(b: Bencher) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = dir.path().join("runner");
    write_stream(&path, 100, 100_000_000);
    let len = std::fs::metadata(&path).map_or(0, |m| m.len());
    b.counter(BytesCount::new(len)).bench(|| {
        let r = replay_path(black_box(&path)).unwrap_or_else(|e| panic!("replay: {e}"));
        assert_eq!(r.end, StreamEnd::Clean);
        r.records
    });
}
