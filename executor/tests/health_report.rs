//! The status reporter against the scheduler's receiving server, stopped and restarted.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use hearth_executor::report::{Backoff, ReportEvent, Reporter};
use hearth_scheduler::api::{ScheduleStatus, StatusUpdate};
use hearth_scheduler::receiver::{StatusStore, serve};
use tokio::sync::{mpsc, oneshot};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn update(seq: u64, state: ScheduleStatus) -> StatusUpdate {
    StatusUpdate {
        task_id: "task-1".into(),
        seq,
        state,
        reason: Some(format!("update {seq}")),
        timestamp_ms: 1_000 + i64::try_from(seq).unwrap(),
    }
}

/// Start the receiver on `port` (0: any); returns the port and a stop switch.
async fn receiver(
    port: u16,
    store: Arc<StatusStore>,
) -> (u16, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        serve(listener, store, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (port, stop, handle)
}

async fn next_ack(events: &mut mpsc::UnboundedReceiver<ReportEvent>) -> u64 {
    match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
        Ok(Some(ReportEvent::Acknowledged { seq, .. })) => seq,
        other => panic!("expected an acknowledgement, got {other:?}"),
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn every_update_is_applied_once_in_order_across_a_scheduler_restart() -> TestResult {
    let store = StatusStore::new();
    let (port, stop, server) = receiver(0, store.clone()).await;
    let (reporter, mut events) =
        Reporter::start(&format!("http://127.0.0.1:{port}"), fast_backoff())?;

    reporter.send(update(1, ScheduleStatus::Starting))?;
    assert_eq!(next_ack(&mut events).await, 1);

    // The scheduler goes away; updates keep coming.
    stop.send(()).ok();
    server.await?;
    reporter.send(update(2, ScheduleStatus::Running))?;
    reporter.send(update(3, ScheduleStatus::Failed))?;
    // Nothing can be acknowledged while it is down.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), events.recv())
            .await
            .is_err()
    );

    // Back on the same port, with its state.
    let (_, _stop2, _server2) = receiver(port, store.clone()).await;
    assert_eq!(next_ack(&mut events).await, 2);
    assert_eq!(next_ack(&mut events).await, 3);
    let applied: Vec<(u64, ScheduleStatus)> = store
        .applied("task-1")
        .iter()
        .map(|u| (u.seq, u.state))
        .collect();
    assert_eq!(
        applied,
        vec![
            (1, ScheduleStatus::Starting),
            (2, ScheduleStatus::Running),
            (3, ScheduleStatus::Failed)
        ]
    );
    Ok(())
}

#[tokio::test]
async fn resend_after_a_lost_acknowledgement_is_not_applied_twice() -> TestResult {
    let store = StatusStore::new();
    store.lose_next_acks(1);
    let (port, _stop, _server) = receiver(0, store.clone()).await;
    let (reporter, mut events) =
        Reporter::start(&format!("http://127.0.0.1:{port}"), fast_backoff())?;
    reporter.send(update(1, ScheduleStatus::Starting))?;
    reporter.send(update(2, ScheduleStatus::Running))?;
    match tokio::time::timeout(Duration::from_secs(20), events.recv()).await? {
        Some(ReportEvent::Acknowledged { seq: 1, duplicate }) => assert!(duplicate),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(next_ack(&mut events).await, 2);
    assert_eq!(store.applied("task-1").len(), 2);
    assert_eq!(store.received(), 3, "one resend");
    Ok(())
}

#[tokio::test]
async fn a_restarted_executor_resending_unacknowledged_updates_fills_the_gap() -> TestResult {
    let store = StatusStore::new();
    let (port, _stop, _server) = receiver(0, store.clone()).await;
    let url = format!("http://127.0.0.1:{port}");
    {
        let (reporter, mut events) = Reporter::start(&url, fast_backoff())?;
        reporter.send(update(1, ScheduleStatus::Starting))?;
        assert_eq!(next_ack(&mut events).await, 1);
    }
    // The new executor resends 1 (its ack was not recorded) and 2.
    let (reporter, mut events) = Reporter::start(&url, fast_backoff())?;
    reporter.send(update(1, ScheduleStatus::Starting))?;
    reporter.send(update(2, ScheduleStatus::Running))?;
    assert_eq!(next_ack(&mut events).await, 1);
    assert_eq!(next_ack(&mut events).await, 2);
    let seqs: Vec<u64> = store.applied("task-1").iter().map(|u| u.seq).collect();
    assert_eq!(seqs, vec![1, 2]);
    Ok(())
}
