//! Health and disk checking as the event loop holds them: started once the processes are
//! launched, stopped when CLEANING begins; an unhealthy task or a disk overrun asks for a
//! teardown.

use hearth_checkpoints::record::{FailureCause, Record, SnoozeEvent, TaskState};
use tokio::sync::mpsc;

use super::{Ending, NO_HEALTH_CHECK, Phase, Supervisor, launch};
use crate::disk::{DiskEvent, DiskMonitor};
use crate::health::{FAILED_HEALTH_CHECK, HealthEvent, HealthMonitor};
use crate::prepare::now_ms;
use crate::report::HEALTHY_REASON;

/// Health and disk checking: started once the processes are launched, stopped by CLEANING.
pub(super) enum Checks {
    NotStarted,
    Started {
        health: Option<(HealthMonitor, mpsc::Receiver<HealthEvent>)>,
        disk: Option<(DiskMonitor, mpsc::Receiver<DiskEvent>)>,
    },
    Stopped,
}

#[derive(Debug)]
pub(super) enum CheckEvent {
    Health(HealthEvent),
    Disk(DiskEvent),
}

impl Checks {
    /// The next event of either monitor, or never.
    pub(super) async fn next(&mut self) -> CheckEvent {
        let Checks::Started { health, disk } = self else {
            return std::future::pending().await;
        };
        tokio::select! {
            Some(ev) = recv(health) => CheckEvent::Health(ev),
            Some(ev) = recv(disk) => CheckEvent::Disk(ev),
            else => std::future::pending().await,
        }
    }

    pub(super) fn stop(&mut self) {
        if let Checks::Started { health, disk } = self {
            if let Some((h, _)) = health {
                h.stop();
            }
            if let Some((d, _)) = disk {
                d.stop();
            }
        }
        *self = Checks::Stopped;
    }
}

/// The next message of an optional monitor's channel, or never.
async fn recv<M, T>(m: &mut Option<(M, mpsc::Receiver<T>)>) -> Option<T> {
    match m {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Start health and disk checking once the processes are launched; without a health check
    /// the task is RUNNING at once.
    pub(super) fn start_checks(&mut self) {
        let disk = (self.p.task.resources.disk > 0)
            .then(|| crate::disk::start(self.p.sandbox.clone(), self.p.task.resources.disk));
        let Some(cfg) = self.p.task.job.health_check.clone() else {
            self.checks = Checks::Started { health: None, disk };
            self.report_running(NO_HEALTH_CHECK);
            return;
        };
        let port = self
            .p
            .header
            .ports
            .get("health")
            .and_then(|p| u16::try_from(*p).ok());
        let env = launch::environment(&self.p, "health-check", 0);
        let creds = self
            .p
            .user
            .switch
            .then(|| (self.p.user.uid, self.p.user.gid, self.p.user.groups.clone()));
        let health = match HealthMonitor::start(&cfg, port, self.p.sandbox.clone(), env, creds) {
            Ok(m) => Some(m),
            Err(e) => {
                self.request_teardown(Ending {
                    state: TaskState::Failed,
                    reason: format!("{FAILED_HEALTH_CHECK} cannot start checking: {e}"),
                    cause: Some(FailureCause::HealthCheck),
                });
                None
            }
        };
        self.checks = Checks::Started { health, disk };
    }

    pub(super) fn on_health(&mut self, ev: HealthEvent) {
        match ev {
            HealthEvent::Healthy => self.report_running(HEALTHY_REASON),
            HealthEvent::Unhealthy { reason } => self.request_teardown(Ending {
                state: TaskState::Failed,
                reason,
                cause: Some(FailureCause::HealthCheck),
            }),
            HealthEvent::SnoozeStarted { expires_ms, detail } => {
                self.append(Record::Snooze(SnoozeEvent {
                    active: true,
                    timestamp_ms: now_ms(),
                    expires_ms,
                    detail: Some(detail.clone()),
                }));
                self.progress.task("SNOOZED", Some(&detail));
            }
            HealthEvent::SnoozeEnded { detail } => {
                self.append(Record::Snooze(SnoozeEvent {
                    active: false,
                    timestamp_ms: now_ms(),
                    expires_ms: None,
                    detail: Some(detail.clone()),
                }));
                self.progress.task("SNOOZE_ENDED", Some(&detail));
            }
        }
    }

    /// An unhealthy task or a disk overrun: tear down, unless something else already does.
    pub(super) fn request_teardown(&mut self, ending: Ending) {
        if matches!(self.phase, Phase::Active) && self.teardown_requested.is_none() {
            tracing::debug!(reason = %ending.reason, "teardown requested");
            self.teardown_requested = Some(ending);
        }
    }
}
