#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::algorithm::NOT_ENOUGH_SUCCESSES;
use super::*;

// ---- the algorithm, on tables of outcomes ----

/// `S` healthy, `F` unhealthy (reason `f<attempt index>`), `Z` snoozed.
fn outcomes(s: &str) -> Vec<CheckOutcome> {
    s.chars()
        .enumerate()
        .map(|(i, c)| match c {
            'S' => CheckOutcome::Healthy,
            'F' => CheckOutcome::Unhealthy(format!("f{i}")),
            'Z' => CheckOutcome::Snoozed,
            other => panic!("bad outcome letter {other}"),
        })
        .collect()
}

/// `.` starting, `R` became running, `r` running, `U` unhealthy.
fn verdicts(alg: &mut HealthAlgorithm, s: &str) -> (String, Option<String>) {
    let mut out = String::new();
    let mut reason = None;
    for o in outcomes(s) {
        out.push(match alg.record(o) {
            Verdict::Starting => '.',
            Verdict::BecameRunning => 'R',
            Verdict::Running => 'r',
            Verdict::Unhealthy(r) => {
                reason.get_or_insert(r);
                'U'
            }
        });
    }
    (out, reason)
}

fn alg(
    initial_secs: u64,
    interval_secs: u64,
    max_failures: u32,
    min_successes: u32,
) -> HealthAlgorithm {
    HealthAlgorithm::new(
        Duration::from_secs(initial_secs),
        Duration::from_secs(interval_secs),
        max_failures,
        min_successes,
    )
}

#[test]
fn grace_attempts_are_the_ceiling_of_initial_interval_over_interval() {
    assert_eq!(alg(15, 10, 0, 1).forgiving_attempts(), 2);
    assert_eq!(alg(20, 10, 0, 1).forgiving_attempts(), 2);
    assert_eq!(alg(0, 10, 0, 1).forgiving_attempts(), 0);
    let a = HealthAlgorithm::new(Duration::from_millis(10_500), Duration::from_secs(10), 0, 1);
    assert_eq!(a.forgiving_attempts(), 2);
    assert_eq!(alg(15, 10, 3, 2).max_attempts_to_running(), 7);
}

#[test]
fn verdict_tables_follow_aurora_rules() {
    // (initial, interval, max_failures, min_successes, outcomes, verdicts, deciding reason)
    type Row = (
        u64,
        u64,
        u32,
        u32,
        &'static str,
        &'static str,
        Option<&'static str>,
    );
    let table: &[Row] = &[
        // Failures in the grace attempts are forgiven.
        (15, 10, 0, 1, "FFS", "..R", None),
        // The first failure after the grace fails the task when no failure is allowed.
        (15, 10, 0, 1, "FFF", "..U", Some("f2")),
        // RUNNING needs the successes in a row.
        (0, 10, 0, 3, "SSS", "..R", None),
        // After RUNNING: consecutive failures beyond the limit fail it; a success resets them.
        (0, 10, 2, 1, "SFFSFFF", "RrrrrrU", Some("f6")),
        // Flapping until the attempts run out: unhealthy right after the last allowed attempt.
        (10, 10, 2, 2, "FSFSFS", ".....U", Some(NOT_ENOUGH_SUCCESSES)),
        // Fail fast: a failure leaving fewer attempts than successes needed.
        (0, 10, 3, 3, "SFSF", "...U", Some("f3")),
        // Unhealthy is final.
        (0, 10, 0, 1, "FSS", "UUU", Some("f0")),
        // Snoozed checks never fail the task, are not attempts, and do not make it RUNNING.
        (0, 10, 0, 1, "ZZZZZZZZZS", ".........R", None),
        // A snoozed check resets the failure streak.
        (0, 10, 1, 1, "SFZFF", "RrrrU", Some("f4")),
        // ...and the success streak: successes must follow each other, unsnoozed.
        (0, 10, 5, 2, "SZS", "...", None),
    ];
    for (i, &(initial, interval, max_f, min_s, input, expected, reason)) in table.iter().enumerate()
    {
        let mut a = alg(initial, interval, max_f, min_s);
        let (got, got_reason) = verdicts(&mut a, input);
        assert_eq!(got, expected, "row {i}: {input}");
        assert_eq!(got_reason.as_deref(), reason, "row {i}: {input}");
    }
}

// ---- the monitor, on paused time ----

/// A probe answering from a script, then with `then` forever; counts its calls.
struct Scripted {
    script: Mutex<VecDeque<Result<(), String>>>,
    then: Result<(), String>,
    calls: AtomicUsize,
}

impl Scripted {
    fn new(script: Vec<Result<(), String>>, then: Result<(), String>) -> Arc<Self> {
        Arc::new(Scripted {
            script: Mutex::new(script.into()),
            then,
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Probe for Arc<Scripted> {
    fn check(
        &mut self,
        _deadline: Pin<&mut Sleep>,
    ) -> impl Future<Output = Result<(), String>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let next = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.then.clone());
        std::future::ready(next)
    }
}

fn monitor(
    probe: Arc<Scripted>,
    a: HealthAlgorithm,
    interval_secs: u64,
    sandbox: &std::path::Path,
) -> (HealthMonitor, mpsc::Receiver<HealthEvent>) {
    HealthMonitor::start_with(
        probe,
        a,
        Schedule {
            interval: Duration::from_secs(interval_secs),
            timeout: Duration::from_secs(1),
        },
        SnoozeWatch::new(sandbox),
    )
}

#[tokio::test(start_paused = true)]
async fn monitor_reports_healthy_after_min_successes_one_interval_apart() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Scripted::new(vec![], Ok(()));
    let start = tokio::time::Instant::now();
    let (_m, mut rx) = monitor(probe.clone(), alg(0, 10, 0, 2), 10, dir.path());
    assert_eq!(rx.recv().await, Some(HealthEvent::Healthy));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(probe.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn monitor_reports_unhealthy_once_with_prefixed_reason_then_stops() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Scripted::new(vec![], Err("boom".into()));
    let start = tokio::time::Instant::now();
    let (m, mut rx) = monitor(probe.clone(), alg(0, 10, 2, 1), 10, dir.path());
    assert_eq!(
        rx.recv().await,
        Some(HealthEvent::Unhealthy {
            reason: "Failed health check! boom".into()
        })
    );
    // Three failures at 0 s, 10 s and 20 s: the third exceeds the two allowed.
    assert_eq!(start.elapsed(), Duration::from_secs(20));
    assert_eq!(rx.recv().await, None);
    assert!(m.is_finished());
    assert_eq!(probe.calls(), 3);
}

/// A probe whose checks never get an answer: each fails at its deadline, noting when.
struct Unanswered {
    started: tokio::time::Instant,
    failed_at: Arc<Mutex<Vec<Duration>>>,
}

impl Probe for Unanswered {
    async fn check(&mut self, deadline: Pin<&mut Sleep>) -> Result<(), String> {
        deadline.await;
        self.failed_at.lock().unwrap().push(self.started.elapsed());
        Err("timed out".into())
    }
}

#[tokio::test(start_paused = true)]
async fn each_check_gets_its_timeout_from_its_start_and_the_interval_from_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let failed_at = Arc::new(Mutex::new(Vec::new()));
    let probe = Unanswered {
        started: tokio::time::Instant::now(),
        failed_at: failed_at.clone(),
    };
    let schedule = Schedule {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(3),
    };
    let (_m, mut rx) = HealthMonitor::start_with(
        probe,
        alg(0, 10, 2, 1),
        schedule,
        SnoozeWatch::new(dir.path()),
    );
    assert!(matches!(
        rx.recv().await,
        Some(HealthEvent::Unhealthy { .. })
    ));
    // Checks start at 0, 13 and 26 s; each fails 3 s later.
    let secs = |s| Duration::from_secs(s);
    assert_eq!(*failed_at.lock().unwrap(), [secs(3), secs(16), secs(29)]);
}

#[tokio::test(start_paused = true)]
async fn snooze_file_pauses_health_checks_until_removed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(SNOOZE_FILE);
    std::fs::write(&file, "").unwrap();
    let probe = Scripted::new(vec![], Err("down".into()));
    let (_m, mut rx) = monitor(probe.clone(), alg(0, 10, 0, 1), 10, dir.path());
    assert_eq!(
        rx.recv().await,
        Some(HealthEvent::SnoozeStarted {
            expires_ms: None,
            detail: "file created".into()
        })
    );
    tokio::time::sleep(Duration::from_secs(95)).await;
    assert_eq!(probe.calls(), 0, "no check runs while snoozed");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(
        rx.recv().await,
        Some(HealthEvent::SnoozeEnded {
            detail: "file removed".into()
        })
    );
    assert!(matches!(
        rx.recv().await,
        Some(HealthEvent::Unhealthy { .. })
    ));
    assert_eq!(probe.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn stopped_monitor_runs_no_more_checks() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Scripted::new(vec![], Ok(()));
    let (m, mut rx) = monitor(probe.clone(), alg(0, 10, 0, 1), 10, dir.path());
    assert_eq!(rx.recv().await, Some(HealthEvent::Healthy));
    m.stop();
    let calls = probe.calls();
    tokio::time::sleep(Duration::from_secs(100)).await;
    assert_eq!(probe.calls(), calls);
    assert_eq!(rx.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn http_checker_without_a_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HealthCheckConfig {
        checker: HealthChecker::Http {
            endpoint: "/health".into(),
            expected_response: "ok".into(),
            expected_response_code: 0,
        },
        initial_interval: Duration::from_secs(15),
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        max_consecutive_failures: 0,
        min_consecutive_successes: 1,
    };
    let r = HealthMonitor::start(&cfg, None, dir.path().to_owned(), vec![], None);
    assert!(matches!(r, Err(HealthError::NoHealthPort)));
}

// ---- judging HTTP responses ----

#[test]
fn http_judge_compares_trimmed_lowercased_body_and_code() {
    let resp = |status: u16, body: &str| http::BoundedResponse {
        status,
        body: body.as_bytes().to_vec(),
        truncated: false,
    };
    assert!(http::judge(&resp(200, "  OK\n"), "ok", 0).is_ok());
    assert!(
        http::judge(&resp(500, "ok"), "ok", 0).is_ok(),
        "code unchecked when 0"
    );
    assert_eq!(
        http::judge(&resp(200, "ok"), "ok", 204).unwrap_err(),
        "Response code differs from expected response (expected 204, got 200)"
    );
    assert_eq!(
        http::judge(&resp(200, "nope"), "ok", 0).unwrap_err(),
        "Response differs from expected response (expected \"ok\", got \"nope\")"
    );
    assert!(
        http::judge(&resp(503, "anything"), "", 0).is_ok(),
        "nothing to compare"
    );
    let long = http::BoundedResponse {
        status: 200,
        body: b"ok".to_vec(),
        truncated: true,
    };
    assert!(
        http::judge(&long, "ok", 0).is_err(),
        "a truncated body never matches"
    );
}
