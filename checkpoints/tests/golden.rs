//! Golden files of format version 1: parsed by every test run, written once by the ignored
//! generator below (`cargo test -p hearth-checkpoints --test golden -- --ignored generate`), and
//! never rewritten once committed (the generator creates files with `create_new` semantics, so
//! it fails rather than overwrite one).

use std::path::PathBuf;

use hearth_checkpoints::record::{
    FailureCause, ProcessState, ProcessStatus, Record, ReportState, RunnerHeader, SnoozeEvent,
    StatusAck, StatusReport, StepKind, TaskState, TaskStatus, TeardownStep,
};
use hearth_checkpoints::stream::{CheckpointWriter, Format, StreamEnd, replay_path};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/checkpoints/v1")
}

const T0: i64 = 1_717_000_000_000;

fn secs(ms_after_t0: i64) -> f64 {
    (T0 + ms_after_t0) as f64 / 1000.0
}

fn header(task_id: &str) -> RunnerHeader {
    RunnerHeader {
        task_id: task_id.to_owned(),
        launch_time_ms: T0,
        sandbox: Some(format!("/var/lib/hearth/sandboxes/{task_id}")),
        hostname: Some("agent-7.example.com".to_owned()),
        user: Some("www-data".to_owned()),
        ports: [("health".to_owned(), 31_337), ("http".to_owned(), 31_338)].into(),
        log_dir: Some(format!("/var/lib/hearth/sandboxes/{task_id}/.logs")),
        uid: Some(33),
        format_version: Some(1),
    }
}

fn task(state: TaskState, at: i64, reason: Option<&str>) -> Record {
    Record::Task(TaskStatus {
        state,
        timestamp_ms: T0 + at,
        runner_pid: Some(4242),
        runner_uid: Some(0),
        reason: reason.map(str::to_owned),
        outcome: None,
        cause: None,
    })
}

/// Writes the records of one process, keeping its seq and run.
struct Proc {
    name: &'static str,
    seq: i64,
    run: i32,
    pid: i32,
}

impl Proc {
    fn new(name: &'static str, pid: i32) -> Self {
        Proc {
            name,
            seq: -1,
            run: -1,
            pid,
        }
    }

    fn rec(&mut self, state: ProcessState, _at: i64, fill: ProcessStatus) -> Record {
        if state == ProcessState::Waiting {
            self.run += 1;
            self.pid += 10;
        }
        self.seq += 1;
        Record::Process(ProcessStatus {
            seq: self.seq,
            process: self.name.to_owned(),
            state: Some(state),
            run: Some(self.run),
            ..fill
        })
    }

    /// WAITING, FORKED, RUNNING at `at`, `at+1`, `at+2` ms.
    fn start(&mut self, at: i64) -> Vec<Record> {
        let mut v = vec![self.rec(ProcessState::Waiting, at, ProcessStatus::default())];
        v.extend(self.launch(at));
        v
    }

    /// FORKED, RUNNING at `at+1`, `at+2` ms.
    fn launch(&mut self, at: i64) -> Vec<Record> {
        vec![
            self.rec(
                ProcessState::Forked,
                at + 1,
                ProcessStatus {
                    fork_time: Some(secs(at + 1)),
                    coordinator_pid: Some(4243),
                    ..ProcessStatus::default()
                },
            ),
            self.rec(
                ProcessState::Running,
                at + 2,
                ProcessStatus {
                    start_time: Some(secs(at + 2)),
                    pid: Some(self.pid),
                    pid_start_ticks: Some(1_000 + i64::from(self.pid)),
                    ..ProcessStatus::default()
                },
            ),
        ]
    }

    fn end(
        &mut self,
        state: ProcessState,
        at: i64,
        rc: i32,
        signal: Option<i32>,
        reason: Option<&str>,
    ) -> Record {
        self.rec(
            state,
            at,
            ProcessStatus {
                pid: Some(self.pid),
                stop_time: Some(secs(at)),
                return_code: Some(rc),
                signal,
                reason: reason.map(str::to_owned),
                ..ProcessStatus::default()
            },
        )
    }
}

fn write(name: &str, task_id: &str, bursts: Vec<Vec<Record>>) -> TestResult {
    let path = golden_dir().join(name);
    let mut w = CheckpointWriter::create(&path, &header(task_id))?;
    for burst in bursts {
        for r in &burst {
            w.append(r)?;
        }
        w.commit()?;
    }
    Ok(())
}

#[test]
#[ignore = "writes the golden files; run once per format version, then commit them"]
fn generate() -> TestResult {
    std::fs::create_dir_all(golden_dir())?;
    // success: two processes in order, both succeed.
    let (mut a, mut b) = (Proc::new("fetch", 100), Proc::new("serve", 200));
    let mut s = vec![task(TaskState::Active, 0, None)];
    s.extend(a.start(10));
    let b_wait = b.rec(ProcessState::Waiting, 10, ProcessStatus::default());
    s.push(b_wait);
    let mut s2 = vec![a.end(ProcessState::Success, 500, 0, None, None)];
    s2.extend(b.launch(600));
    let s3 = vec![
        b.end(ProcessState::Success, 900, 0, None, None),
        task(TaskState::Success, 950, None),
    ];
    write(
        "success.ckpt",
        "www-data/prod/hello/0-1a2b",
        vec![s, s2, s3],
    )?;

    // retries: `flaky` fails twice then succeeds; `hog` is OOM-killed until its failures are
    // exhausted and the task fails.
    let (mut f, mut h) = (Proc::new("flaky", 300), Proc::new("hog", 400));
    let mut bursts = vec![vec![task(TaskState::Active, 0, None)]];
    let mut t = 10;
    for (i, rc) in [(0, 1), (1, 2), (2, 0)] {
        let mut burst = f.start(t);
        burst.extend(h.start(t).into_iter().filter(|_| i < 2));
        bursts.push(burst);
        let state = if rc == 0 {
            ProcessState::Success
        } else {
            ProcessState::Failed
        };
        let mut ends = vec![f.end(state, t + 100, rc, None, None)];
        if i < 2 {
            ends.push(h.end(ProcessState::Failed, t + 150, 137, Some(9), Some("oom")));
        }
        bursts.push(ends);
        t += 1000;
    }
    bursts.push(vec![
        task(TaskState::Cleaning, t, None),
        task(TaskState::Finalizing, t + 10, None),
        task(
            TaskState::Failed,
            t + 20,
            Some("1 process failed: hog (oom)"),
        ),
    ]);
    write("retries.ckpt", "www-data/prod/batch/3-9f8e", bursts)?;

    // killed: a server with a snooze, then a kill with every teardown step and a final process.
    let (mut web, mut fin) = (Proc::new("web", 500), Proc::new("upload_logs", 600));
    let mut b1 = vec![task(TaskState::Active, 0, None)];
    b1.extend(web.start(10));
    let step = |s: &str, at: i64, d: Option<&str>| {
        Record::Teardown(TeardownStep {
            step: StepKind::from_wire(s, None).expect("a step name"),
            timestamp_ms: T0 + at,
            detail: d.map(str::to_owned),
        })
    };
    let snooze = |active: bool, at: i64, expires: Option<i64>, d: &str| {
        Record::Snooze(SnoozeEvent {
            active,
            timestamp_ms: T0 + at,
            expires_ms: expires.map(|e| T0 + e),
            detail: Some(d.to_owned()),
        })
    };
    let b2 = vec![snooze(true, 5_000, Some(1_805_000), "file created")];
    let b3 = vec![snooze(false, 65_000, None, "file removed")];
    let mut b4 = vec![
        task(TaskState::Cleaning, 70_000, Some("killed by the agent")),
        step("quitquitquit", 70_001, Some("connection refused")),
        step("abortabortabort", 70_002, Some("connection refused")),
        step("sigterm", 70_003, None),
        web.end(
            ProcessState::Killed,
            70_500,
            143,
            Some(15),
            Some("killed by the executor (SIGTERM)"),
        ),
        task(TaskState::Finalizing, 70_501, None),
        step("finalize", 70_502, None),
    ];
    b4.extend(fin.start(70_503));
    let b5 = vec![
        fin.end(ProcessState::Success, 71_000, 0, None, None),
        step("done", 71_001, Some("all processes exited")),
        task(TaskState::Killed, 71_002, Some("killed by the agent")),
    ];
    write(
        "killed.ckpt",
        "www-data/prod/web/0-77aa",
        vec![b1, b2, b3, b4, b5],
    )?;
    Ok(())
}

fn load(name: &str) -> Result<hearth_checkpoints::stream::Replayed, Box<dyn std::error::Error>> {
    let r = replay_path(&golden_dir().join(name))?;
    assert_eq!(r.format, Format::Hearth { version: 1 }, "{name}");
    assert_eq!(r.end, StreamEnd::Clean, "{name}");
    assert_eq!(
        r.replay.unknown_fields + r.replay.unknown_records,
        0,
        "{name}"
    );
    Ok(r)
}

fn states(r: &hearth_checkpoints::replay::TaskReplay, p: &str) -> Vec<ProcessState> {
    r.processes
        .get(p)
        .map(|runs| runs.iter().map(|x| x.state).collect())
        .unwrap_or_default()
}

#[test]
fn golden_success_replays_two_successful_processes() -> TestResult {
    let r = load("success.ckpt")?;
    // Header, ACTIVE, fetch WAITING/FORKED/RUNNING, serve WAITING, fetch SUCCESS,
    // serve FORKED/RUNNING/SUCCESS, task SUCCESS.
    assert_eq!(r.records, 11);
    let t = &r.replay;
    assert_eq!(t.state(), TaskState::Success);
    let h = t.header.as_ref().ok_or("no header")?;
    assert_eq!(h.task_id, "www-data/prod/hello/0-1a2b");
    assert_eq!(h.ports.get("http"), Some(&31_338));
    assert_eq!(h.format_version, Some(1));
    assert_eq!(states(t, "fetch"), [ProcessState::Success]);
    assert_eq!(states(t, "serve"), [ProcessState::Success]);
    let serve = &t.processes["serve"][0];
    assert_eq!(
        (serve.pid, serve.return_code, serve.seq),
        (Some(210), Some(0), 3)
    );
    Ok(())
}

#[test]
fn golden_retries_keep_every_failed_run_with_its_exit() -> TestResult {
    let r = load("retries.ckpt")?;
    let t = &r.replay;
    assert_eq!(t.state(), TaskState::Failed);
    assert_eq!(
        t.statuses.last().and_then(|s| s.reason.as_deref()),
        Some("1 process failed: hog (oom)")
    );
    use ProcessState::*;
    assert_eq!(states(t, "flaky"), [Failed, Failed, Success]);
    let flaky = &t.processes["flaky"];
    assert_eq!(
        flaky.iter().map(|x| x.return_code).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(0)]
    );
    assert!(
        flaky
            .iter()
            .all(|x| x.stop_time.is_some() && x.start_time.is_some())
    );
    assert_eq!(flaky.iter().map(|x| x.run).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(states(t, "hog"), [Failed, Failed]);
    let hog = &t.processes["hog"][1];
    assert_eq!(
        (hog.return_code, hog.signal, hog.reason.as_deref()),
        (Some(137), Some(9), Some("oom"))
    );
    assert_eq!(hog.seq, 7);
    Ok(())
}

#[test]
fn golden_killed_records_snoozes_and_every_teardown_step() -> TestResult {
    let r = load("killed.ckpt")?;
    let t = &r.replay;
    assert_eq!(t.state(), TaskState::Killed);
    assert_eq!(
        t.statuses.iter().map(|s| s.state).collect::<Vec<_>>(),
        [
            TaskState::Active,
            TaskState::Cleaning,
            TaskState::Finalizing,
            TaskState::Killed
        ]
    );
    assert_eq!(
        t.snoozes.iter().map(|s| s.active).collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(t.snoozes[0].expires_ms, Some(T0 + 1_805_000));
    assert_eq!(
        t.teardown.iter().map(|s| s.step.name()).collect::<Vec<_>>(),
        [
            "quitquitquit",
            "abortabortabort",
            "sigterm",
            "finalize",
            "done"
        ]
    );
    let web = &t.processes["web"][0];
    assert_eq!(
        (web.state, web.return_code, web.signal),
        (ProcessState::Killed, Some(143), Some(15))
    );
    assert_eq!(states(t, "upload_logs"), [ProcessState::Success]);
    Ok(())
}

/// The typed fields added after the first v1 files (teardown step kinds, failure causes, status
/// reports): `typed.ckpt`, written once by this generator.
#[test]
#[ignore = "writes a golden file; run once, then commit it"]
fn generate_typed() -> TestResult {
    let (mut web, mut hog) = (Proc::new("web", 700), Proc::new("hog", 800));
    let report = |seq: i64, state: ReportState, reason: &str, at: i64| {
        Record::Status(StatusReport {
            seq,
            state,
            reason: Some(reason.to_owned()),
            timestamp_ms: T0 + at,
        })
    };
    let step = |step: StepKind, at: i64, d: Option<&str>| {
        Record::Teardown(TeardownStep {
            step,
            timestamp_ms: T0 + at,
            detail: d.map(str::to_owned),
        })
    };
    let mut b1 = vec![
        task(TaskState::Active, 0, None),
        report(1, ReportState::Starting, "Initializing sandbox.", 1),
    ];
    b1.extend(web.start(10));
    b1.extend(hog.start(10));
    let mut oom = hog.end(ProcessState::Failed, 2_000, 137, Some(9), Some("oom"));
    if let Record::Process(p) = &mut oom {
        p.cause = Some(FailureCause::Oom);
    }
    let b2 = vec![
        report(2, ReportState::Running, "Task is healthy.", 1_000),
        Record::StatusAck(StatusAck {
            seq: 2,
            detail: None,
        }),
        oom,
    ];
    let health = "Failed health check! Response code differs from expected response";
    let cleaning = |state: TaskState, at: i64, reason: Option<&str>| {
        Record::Task(TaskStatus {
            state,
            timestamp_ms: T0 + at,
            runner_pid: Some(4242),
            runner_uid: Some(0),
            reason: reason.map(str::to_owned),
            outcome: Some(TaskState::Failed),
            cause: Some(FailureCause::HealthCheck),
        })
    };
    let b3 = vec![
        cleaning(TaskState::Cleaning, 5_000, Some(health)),
        step(
            StepKind::Post {
                endpoint: "sigterm".into(),
            },
            5_001,
            Some("Connected { status: Some(200) }"),
        ),
        step(StepKind::Sigterm, 5_002, None),
        web.end(
            ProcessState::Killed,
            5_100,
            143,
            Some(15),
            Some("killed by the executor (SIGTERM)"),
        ),
        cleaning(TaskState::Finalizing, 5_101, None),
        Record::Task(TaskStatus {
            cause: Some(FailureCause::HealthCheck),
            ..match task(TaskState::Failed, 5_102, Some(health)) {
                Record::Task(t) => t,
                _ => unreachable!(),
            }
        }),
        report(3, ReportState::Failed, health, 5_103),
    ];
    write("typed.ckpt", "www-data/prod/web/1-typed", vec![b1, b2, b3])
}

#[test]
fn golden_typed_fields_replay_as_written() -> TestResult {
    let r = load("typed.ckpt")?;
    let t = &r.replay;
    assert_eq!(t.state(), TaskState::Failed);
    assert_eq!(
        t.teardown
            .iter()
            .map(|s| s.step.clone())
            .collect::<Vec<_>>(),
        [
            // A lifecycle endpoint that happens to be named like a step stays a POST.
            StepKind::Post {
                endpoint: "sigterm".into()
            },
            StepKind::Sigterm
        ]
    );
    assert_eq!(
        t.reports
            .iter()
            .map(|r| r.state.clone())
            .collect::<Vec<_>>(),
        [
            ReportState::Starting,
            ReportState::Running,
            ReportState::Failed
        ]
    );
    assert_eq!(t.reports_acked, 2);
    assert_eq!(t.processes["hog"][0].cause, Some(FailureCause::Oom));
    let last = t.statuses.last().expect("a task status");
    assert_eq!(last.cause, Some(FailureCause::HealthCheck));
    Ok(())
}

#[test]
fn golden_files_without_typed_fields_read_the_same_types_from_their_text() -> TestResult {
    // Written before the typed fields existed: the kinds and causes come from the names.
    let killed = load("killed.ckpt")?;
    let kinds: Vec<_> = killed
        .replay
        .teardown
        .iter()
        .map(|s| s.step.clone())
        .collect();
    let post = |e: &str| StepKind::Post {
        endpoint: e.to_owned(),
    };
    assert_eq!(
        kinds,
        [
            post("quitquitquit"),
            post("abortabortabort"),
            StepKind::Sigterm,
            StepKind::Finalize,
            StepKind::Done
        ]
    );
    let retries = load("retries.ckpt")?;
    let hog = retries.replay.processes["hog"].last().expect("a run");
    assert_eq!(hog.reason.as_deref(), Some("oom"));
    assert_eq!(hog.cause, Some(FailureCause::Oom));
    assert!(retries.replay.statuses.iter().all(|s| s.cause.is_none()));
    Ok(())
}
