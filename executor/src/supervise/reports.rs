//! Status report delivery: updates for the scheduler (STARTING, RUNNING once, the terminal
//! state) are `StatusReport` records written before they are handed to the [`Reporter`]; the
//! scheduler's acknowledgements become `StatusAck` records. A restarted executor — or `hearth run`
//! on a task that already ended ([`deliver_leftovers`]) — re-sends every update after the last
//! acknowledged one, with the same sequence number, so the scheduler applies each exactly once.

use std::time::Duration;

use hearth_checkpoints::record::{Record, ReportState, StatusAck, StatusReport};
use hearth_checkpoints::replay::TaskReplay;
use hearth_checkpoints::stream::CheckpointWriter;
use hearth_scheduler::api::{ScheduleStatus, StatusUpdate};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Ending;
use crate::prepare::now_ms;
use crate::report::{ReportEvent, Reporter};

/// How long a finished executor waits for the scheduler to acknowledge its last updates.
pub const REPORT_DRAIN: Duration = Duration::from_secs(30);

/// The scheduler's status for a state written in a `StatusReport` (`None`: a name this build
/// does not know, never sent).
pub fn schedule_status(state: &ReportState) -> Option<ScheduleStatus> {
    Some(match state {
        ReportState::Starting => ScheduleStatus::Starting,
        ReportState::Running => ScheduleStatus::Running,
        ReportState::Finished => ScheduleStatus::Finished,
        ReportState::Failed => ScheduleStatus::Failed,
        ReportState::Killed => ScheduleStatus::Killed,
        ReportState::Lost => ScheduleStatus::Lost,
        ReportState::Unknown(_) => return None,
    })
}

/// The state to record for a scheduler status the executor reports.
pub fn report_state(status: ScheduleStatus) -> ReportState {
    match status {
        ScheduleStatus::Starting => ReportState::Starting,
        ScheduleStatus::Running => ReportState::Running,
        ScheduleStatus::Finished => ReportState::Finished,
        ScheduleStatus::Failed => ReportState::Failed,
        ScheduleStatus::Killed => ReportState::Killed,
        ScheduleStatus::Lost => ReportState::Lost,
        other => ReportState::Unknown(other.name().to_owned()),
    }
}

/// The updates of one task: what was written, what was acknowledged, what goes out next.
#[derive(Debug)]
pub struct Reports {
    task_id: String,
    /// Delivers status updates to the scheduler (`--scheduler`).
    reporter: Option<(Reporter, mpsc::UnboundedReceiver<ReportEvent>)>,
    /// Seq of the last status update written.
    seq: i64,
    /// Highest seq the scheduler acknowledged.
    acked: i64,
    /// Updates written this turn (or left unacknowledged by an earlier executor), handed to the
    /// reporter once durable.
    out: Vec<StatusReport>,
    /// Whether RUNNING was reported (by this executor or an earlier one of the task).
    reported_running: bool,
}

impl Reports {
    /// Pick up where the replayed stream left off; `scheduler`: where to deliver, if anywhere.
    pub fn new(
        task_id: &str,
        replay: &TaskReplay,
        scheduler: Option<&str>,
        token: Option<&str>,
    ) -> Reports {
        let reporter = scheduler.and_then(|url| {
            Reporter::start_with_token(url, token, crate::report::Backoff::default())
                .map_err(|e| tracing::warn!("status reports disabled: {e}"))
                .ok()
        });
        let acked = replay.reports_acked;
        Reports {
            task_id: task_id.to_owned(),
            reporter,
            seq: replay.reports.last().map_or(0, |r| r.seq),
            acked,
            // Updates written before and never acknowledged go out first, in order.
            out: replay
                .reports
                .iter()
                .filter(|r| r.seq > acked)
                .cloned()
                .collect(),
            reported_running: replay
                .reports
                .iter()
                .any(|r| r.state == ReportState::Running),
        }
    }

    /// A new update: the record to write (the caller appends it and prints it).
    pub fn next(&mut self, state: ReportState, reason: &str) -> StatusReport {
        self.seq += 1;
        let report = StatusReport {
            seq: self.seq,
            state,
            reason: Some(reason.to_owned()),
            timestamp_ms: now_ms(),
        };
        self.out.push(report.clone());
        report
    }

    /// Tell the scheduler, outside the sequence of updates, what is wrong right now (`None`: all
    /// is well again). Without a scheduler, nothing.
    pub fn set_condition(&self, condition: Option<(String, i64)>) {
        if let Some((reporter, _)) = &self.reporter {
            reporter.set_condition(&self.task_id, condition);
        }
    }

    /// Whether RUNNING is still to be reported (once per task, even across restarts); marks it
    /// reported.
    pub fn take_running(&mut self) -> bool {
        !std::mem::replace(&mut self.reported_running, true)
    }

    /// Whether updates wait to be handed over.
    pub fn has_out(&self) -> bool {
        !self.out.is_empty()
    }

    /// The record of an acknowledgement, if it moves the acknowledged seq forward.
    pub fn on_event(&mut self, ev: ReportEvent) -> Option<StatusAck> {
        let (seq, detail) = ack_of(ev);
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        (seq > self.acked).then(|| {
            self.acked = seq;
            StatusAck { seq, detail }
        })
    }

    /// Hand the (durable) updates to the reporter.
    pub fn send_out(&mut self) {
        let out = std::mem::take(&mut self.out);
        let Some((reporter, _)) = &self.reporter else {
            return;
        };
        for r in out {
            send(reporter, &self.task_id, r);
        }
    }

    /// The reporter's next event, or never without a reporter.
    pub async fn recv(&mut self) -> Option<ReportEvent> {
        match &mut self.reporter {
            Some((_, rx)) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Whether the scheduler has acknowledged everything written (always, without one).
    pub fn all_acked(&self) -> bool {
        self.reporter.is_none() || self.acked >= self.seq
    }

    /// Before exiting, give the scheduler a bounded time to acknowledge every update; what stays
    /// unacknowledged is in the checkpoint for a later executor. Each acknowledgement is
    /// committed.
    pub async fn drain(
        &mut self,
        writer: &mut CheckpointWriter,
    ) -> Result<(), hearth_checkpoints::stream::CheckpointError> {
        let deadline = Instant::now() + REPORT_DRAIN;
        while !self.all_acked() {
            let ev = tokio::select! {
                ev = self.recv() => ev,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(ev) = ev else {
                tracing::warn!(
                    "the scheduler did not acknowledge status updates {}..{}; they stay in the \
                     checkpoint",
                    self.acked + 1,
                    self.seq
                );
                break;
            };
            if let Some(ack) = self.on_event(ev) {
                writer.append(&Record::StatusAck(ack))?;
            }
            writer.commit()?;
        }
        Ok(())
    }
}

fn ack_of(ev: ReportEvent) -> (u64, Option<String>) {
    match ev {
        ReportEvent::Acknowledged { seq, .. } => (seq, None),
        ReportEvent::Rejected {
            seq,
            status,
            detail,
        } => (
            seq,
            Some(format!("refused by the scheduler ({status}): {detail}")),
        ),
    }
}

fn send(reporter: &Reporter, task_id: &str, r: StatusReport) {
    let Some(state) = schedule_status(&r.state) else {
        return;
    };
    let _ = reporter.send(StatusUpdate {
        task_id: task_id.to_owned(),
        seq: u64::try_from(r.seq).unwrap_or(0),
        state,
        reason: r.reason,
        timestamp_ms: r.timestamp_ms,
    });
}

/// Deliver the status updates a finished task's checkpoint holds without an acknowledgement
/// (its executor died before the scheduler heard them), record the acknowledgements, and return
/// the task's exit code.
pub async fn deliver_leftovers(opts: &crate::RunOptions, token: Option<&str>, task_id: &str) -> u8 {
    let Some(url) = opts.scheduler.as_deref() else {
        return 2;
    };
    let root = match hearth_checkpoints::root::Root::given_or_default(opts.root.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hearth: {}", crate::error_chain(&e));
            return 1;
        }
    };
    let lock_path = root.checkpoint_dir(task_id).join("executor.lock");
    if crate::prepare::lock_is_held(&lock_path) {
        eprintln!("hearth: another executor of {task_id:?} is still delivering its updates");
        return 1;
    }
    let path = root.runner_path(task_id);
    let (mut writer, replayed) = match CheckpointWriter::open_append(&path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("hearth: {}", crate::error_chain(&e));
            return 1;
        }
    };
    let code = Ending {
        state: replayed.replay.state(),
        reason: String::new(),
        cause: None,
    }
    .exit_code();
    let acked = replayed.replay.reports_acked;
    let pending: Vec<StatusReport> = replayed
        .replay
        .reports
        .iter()
        .filter(|r| r.seq > acked)
        .cloned()
        .collect();
    let Some(last) = pending.last().map(|r| r.seq) else {
        return code;
    };
    let (reporter, mut events) =
        match Reporter::start_with_token(url, token, crate::report::Backoff::default()) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("hearth: {e}");
                return 1;
            }
        };
    for r in pending {
        send(&reporter, task_id, r);
    }
    let deadline = Instant::now() + REPORT_DRAIN;
    let mut done = acked;
    while done < last {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = tokio::time::sleep_until(deadline) => None,
        };
        let Some(ev) = ev else {
            eprintln!("hearth: the scheduler did not acknowledge every pending update");
            return 1;
        };
        let (seq, detail) = ack_of(ev);
        done = done.max(i64::try_from(seq).unwrap_or(i64::MAX));
        let ack = Record::StatusAck(StatusAck { seq: done, detail });
        if writer.append(&ack).and_then(|()| writer.commit()).is_err() {
            eprintln!(
                "hearth: cannot record the acknowledgement in {}",
                path.display()
            );
            return 1;
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seq: i64, state: &str) -> StatusReport {
        StatusReport {
            seq,
            state: ReportState::from_name(state),
            reason: None,
            timestamp_ms: 1,
        }
    }

    #[test]
    fn unacknowledged_updates_of_an_earlier_executor_go_out_first_and_numbering_continues() {
        let replay = TaskReplay {
            reports: vec![report(1, "STARTING"), report(2, "RUNNING")],
            reports_acked: 1,
            ..TaskReplay::default()
        };
        let mut r = Reports::new("t", &replay, None, None);
        assert_eq!(r.out, [report(2, "RUNNING")]);
        assert!(!r.take_running(), "RUNNING was reported before the restart");
        assert_eq!(r.next(ReportState::Finished, "done").seq, 3);
    }

    #[test]
    fn acknowledgements_only_move_forward() {
        let mut r = Reports::new("t", &TaskReplay::default(), None, None);
        let ack = |seq| ReportEvent::Acknowledged {
            seq,
            duplicate: false,
        };
        assert_eq!(r.on_event(ack(2)).map(|a| a.seq), Some(2));
        assert_eq!(r.on_event(ack(1)), None);
    }

    #[test]
    fn scheduler_states_map_both_ways_by_their_aurora_names() {
        for s in [
            ScheduleStatus::Starting,
            ScheduleStatus::Running,
            ScheduleStatus::Finished,
            ScheduleStatus::Failed,
            ScheduleStatus::Killed,
            ScheduleStatus::Lost,
        ] {
            assert_eq!(schedule_status(&report_state(s)), Some(s));
            assert_eq!(report_state(s).name(), s.name());
        }
        assert_eq!(
            schedule_status(&ReportState::from_name("THROTTLED_LATER")),
            None
        );
    }
}
