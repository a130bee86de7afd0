//! Writing the turn: group commit, then acting on it — and what happens when the checkpoint's
//! disk fails (full, read-only): supervision goes on, and what needs a record waits for it.

use std::time::Duration;

use tokio::time::Instant;

use hearth_checkpoints::condition::{Condition, ConditionFile, ConditionKind};

use super::{SuperviseError, Supervisor};
use crate::keeper::protocol::Request;
use crate::prepare::now_ms;

/// Checkpoint writes are failing. Supervision goes on: exits are taken in, decisions are made and
/// recorded in memory, but nothing that needs its record durable first — spawn requests,
/// acknowledgements to the keeper, status updates, progress lines, the task's end — is acted on
/// until a retry succeeds. Kills proceed (they need no record).
#[derive(Debug, Clone, Copy)]
pub(super) struct Stall {
    since: Instant,
    /// `since` on the wall clock, for the condition people see.
    since_ms: i64,
    attempts: u64,
    pub(super) retry_at: Instant,
    backoff: Duration,
}

/// First and longest wait between checkpoint write retries.
const STALL_FIRST_RETRY: Duration = Duration::from_millis(100);
const STALL_MAX_RETRY: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Make the turn durable, then act on it: send requests, print lines.
    ///
    /// A turn whose only effects are spawn requests — nothing printed, reported, acknowledged or
    /// signalled — is written out without an fsync. Its records (FORKED ones, or bookkeeping
    /// such as a snooze event or the scheduler's acknowledgement) then outlive this executor,
    /// which is what recovery needs; only a machine crash loses them, and that ends the task's
    /// processes too (a spawn request is idempotent; an update whose acknowledgement was lost is
    /// re-sent and applied once, by its sequence number). Every other turn is committed with one
    /// fsync first.
    pub(super) async fn flush(&mut self) -> Result<(), SuperviseError> {
        let only_spawns = self.progress.is_empty()
            && !self.reports.has_out()
            && self.outbox.iter().all(|r| matches!(r, Request::Spawn(_)));
        if let Some(st) = self.stall
            && Instant::now() < st.retry_at
        {
            return Ok(());
        }
        let written = if self.p.writer.is_poisoned() {
            self.p.writer.recover()
        } else {
            Ok(())
        }
        .and_then(|()| {
            if only_spawns {
                self.p.writer.write_out()
            } else {
                self.p.writer.commit()
            }
        });
        if let Err(e) = written {
            self.stalled(&e);
            return Ok(());
        }
        if let Some(st) = self.stall.take() {
            self.stall_ended(st);
        }
        if self.outbox.iter().any(|r| matches!(r, Request::Spawn(_))) {
            crate::failpoint::reached(crate::failpoint::AFTER_FORKED);
        }
        self.reports.send_out();
        let outbox = std::mem::take(&mut self.outbox);
        self.link.send(&outbox).await?;
        self.progress.print();
        Ok(())
    }

    /// A checkpoint write failed: cut back what it left (the next write follows the last whole
    /// frame), say so loudly, and retry later, holding every act that needs the records.
    pub(super) fn stalled(&mut self, e: &hearth_checkpoints::stream::CheckpointError) {
        let recovered = self.p.writer.recover();
        let now = Instant::now();
        let st = match self.stall {
            None => {
                tracing::error!(
                    "checkpoint write failed: {}; supervision goes on, and what needs a record \
                     waits until it is written (retrying)",
                    crate::error_chain(e)
                );
                Stall {
                    since: now,
                    since_ms: now_ms(),
                    attempts: 1,
                    retry_at: now + STALL_FIRST_RETRY,
                    backoff: STALL_FIRST_RETRY,
                }
            }
            Some(st) => {
                let backoff = (st.backoff * 2).min(STALL_MAX_RETRY);
                tracing::error!(
                    "checkpoint write still failing after {:.1}s: {}",
                    st.since.elapsed().as_secs_f64(),
                    crate::error_chain(e)
                );
                Stall {
                    attempts: st.attempts.saturating_add(1),
                    retry_at: now + backoff,
                    backoff,
                    ..st
                }
            }
        };
        if let Err(r) = recovered {
            tracing::debug!(
                "cannot reopen the checkpoint yet: {}",
                crate::error_chain(&r)
            );
        }
        self.stall = Some(st);
        self.show_condition(Some((st, crate::error_chain(e))));
    }

    /// Checkpoint writes succeed again: say so everywhere the failure was shown.
    fn stall_ended(&mut self, st: Stall) {
        tracing::warn!(
            "checkpoint writes succeed again after {:.1}s and {} failed attempts; acting on what \
             was held",
            st.since.elapsed().as_secs_f64(),
            st.attempts
        );
        // A file system that went read-only comes back only through an unmount and a fresh
        // mount: the lock and the condition file this executor holds are then on the old one.
        let dir = self.p.root.checkpoint_dir(&self.p.task_id);
        match crate::prepare::keep_lock(
            &mut self.p.lock,
            &dir.join("executor.lock"),
            &self.p.task_id,
        ) {
            Ok(true) => {
                tracing::warn!(
                    "the checkpoint file system was replaced; took the task's lock again on the new one"
                );
                self.p.condition = ConditionFile::create(&dir)
                    .map_err(|e| tracing::warn!("cannot create the condition file again: {e}"))
                    .ok();
            }
            Ok(false) => {}
            Err(e) => tracing::error!(
                "cannot hold the task's lock on the new checkpoint file system: {}",
                crate::error_chain(&e)
            ),
        }
        self.show_condition(None);
    }

    /// Put the live condition (or its end) where people and the scheduler see it: the
    /// condition file beside the stream (`hearth inspect`, the observer) and the scheduler.
    fn show_condition(&mut self, stalled: Option<(Stall, String)>) {
        let condition = stalled.map(|(st, message)| Condition {
            kind: ConditionKind::CheckpointWritesFailing,
            message,
            since_ms: st.since_ms,
            updated_ms: now_ms(),
            attempts: st.attempts,
        });
        if let Some(file) = &self.p.condition {
            let written = match &condition {
                Some(c) => file.set(c),
                None => file.clear(),
            };
            if let Err(e) = written {
                tracing::debug!("cannot update {}: {e}", file.path().display());
            }
        }
        // The scheduler hears of the start, of each new error and of the end.
        self.reports.set_condition(
            condition.map(|c| (format!("{}: {}", c.kind.describe(), c.message), c.since_ms)),
        );
    }

    /// Commit, waiting out a failing disk (the task's processes have all ended by now).
    pub(super) async fn commit_until_written(&mut self) {
        loop {
            let written = if self.p.writer.is_poisoned() {
                self.p.writer.recover()
            } else {
                Ok(())
            }
            .and_then(|()| self.p.writer.commit());
            match written {
                Ok(()) => {
                    if let Some(st) = self.stall.take() {
                        self.stall_ended(st);
                    }
                    return;
                }
                Err(e) => {
                    self.stalled(&e);
                    if let Some(st) = self.stall {
                        tokio::time::sleep_until(st.retry_at).await;
                    }
                }
            }
        }
    }
}
