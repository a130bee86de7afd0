//! Aurora's task lifecycle as a pure state machine (DESIGN §11): the legal transitions, and the
//! side effects of each as commands the caller carries out. Time is passed in; nothing here does
//! I/O.
//!
//! * INIT → PENDING | THROTTLED ([`new_task_state`]); THROTTLED → PENDING | KILLING;
//!   PENDING → ASSIGNED | KILLING (killing a task that never ran deletes it).
//! * ASSIGNED, STARTING, RUNNING → FINISHED | FAILED | KILLED | KILLING | LOST | RESTARTING |
//!   DRAINING | PREEMPTING; ASSIGNED → STARTING | RUNNING; STARTING → RUNNING.
//! * RESTARTING, DRAINING, PREEMPTING → FINISHED | FAILED | KILLING | KILLED | LOST.
//! * KILLING → FINISHED | FAILED | KILLED | LOST. Terminal states are final.
//!
//! Side effects ([`Effect`]): FINISHED reschedules a service; FAILED counts a failure and
//! reschedules a service, or a batch task while failures < `max_task_failures` (−1: always);
//! KILLED not preceded by KILLING reschedules; LOST reschedules without counting a failure;
//! RESTARTING / DRAINING / PREEMPTING / KILLING send a kill, and the terminal state after the
//! first three reschedules without a failure; KILLING → terminal never reschedules. A
//! replacement of a task that flapped waits THROTTLED (deterministic doubling delay).

use std::fmt;

use crate::api::ScheduleStatus::{self, *};
use crate::model::{KillOrder, Task};
use crate::wire::TaskEvent;

/// The lifecycle's tunables (Aurora's defaults in [`LifecycleConfig::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleConfig {
    pub transient_timeout_ms: i64,
    pub flapping_threshold_ms: i64,
    pub initial_flapping_delay_ms: i64,
    pub max_flapping_delay_ms: i64,
    pub kill_retry_initial_ms: i64,
    pub kill_retry_max_ms: i64,
    pub placement_retry_initial_ms: i64,
    pub placement_retry_max_ms: i64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            transient_timeout_ms: 5 * 60_000,
            flapping_threshold_ms: 5 * 60_000,
            initial_flapping_delay_ms: 30_000,
            max_flapping_delay_ms: 5 * 60_000,
            kill_retry_initial_ms: 15_000,
            kill_retry_max_ms: 5 * 60_000,
            placement_retry_initial_ms: 1_000,
            placement_retry_max_ms: 60_000,
        }
    }
}

/// What the job says about rescheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobPolicy {
    pub service: bool,
    pub max_task_failures: i32,
}

/// A side effect of a transition, for the caller to carry out (durably, then act).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Store the task's new state.
    Save,
    /// Order the task killed on its agent (resent with backoff until it ends).
    Kill,
    /// Remove the task (it never ran).
    Delete,
    /// Create a replacement task for the instance (the failure already counted on the ended
    /// task when `counted_failure`); it waits THROTTLED until `throttle_until` when given.
    Reschedule {
        counted_failure: bool,
        throttle_until: Option<i64>,
        flap_streak: u32,
    },
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct IllegalTransition {
    pub task_id: String,
    pub from: ScheduleStatus,
    pub to: ScheduleStatus,
}

impl fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {}: illegal transition {} -> {}",
            self.task_id,
            self.from.name(),
            self.to.name()
        )
    }
}

/// States in which the task is on an agent and has not been asked to stop.
pub fn is_live(s: ScheduleStatus) -> bool {
    matches!(s, Assigned | Starting | Running)
}

/// States in which a kill has been sent and the replacement waits for the end.
pub fn is_interrupting(s: ScheduleStatus) -> bool {
    matches!(s, Restarting | Draining | Preempting)
}

/// States that time out into LOST.
pub fn is_transient(s: ScheduleStatus) -> bool {
    matches!(
        s,
        Assigned | Starting | Killing | Restarting | Draining | Preempting
    )
}

/// Whether the lifecycle allows `from -> to` (`from == to` is a no-op, not a transition).
pub fn is_legal(from: ScheduleStatus, to: ScheduleStatus) -> bool {
    match from {
        Throttled => matches!(to, Pending | Killing),
        Pending => matches!(to, Assigned | Killing),
        Assigned | Starting | Running => {
            matches!(
                to,
                Finished | Failed | Killed | Killing | Lost | Restarting | Draining | Preempting
            ) || (from == Assigned && matches!(to, Starting | Running))
                || (from == Starting && to == Running)
        }
        Restarting | Draining | Preempting => {
            matches!(to, Finished | Failed | Killing | Killed | Lost)
        }
        Killing => matches!(to, Finished | Failed | Killed | Lost),
        Finished | Failed | Killed | Lost => false,
    }
}

/// Every state, for tables and tests.
pub const ALL_STATES: [ScheduleStatus; 13] = [
    Pending, Assigned, Starting, Running, Finished, Failed, Killing, Killed, Lost, Restarting,
    Throttled, Draining, Preempting,
];

/// The state a new task starts in (INIT → PENDING | THROTTLED).
pub fn new_task_state(throttle_until: Option<i64>, now: i64) -> ScheduleStatus {
    match throttle_until {
        Some(t) if t > now => Throttled,
        _ => Pending,
    }
}

/// Whether `task` (just ended) flapped: it ran (last active event → terminal event) less than the
/// threshold and was never interrupted (RESTARTING, KILLING, DRAINING).
pub fn flapped(task: &Task, cfg: &LifecycleConfig) -> bool {
    if task
        .events
        .iter()
        .any(|e| matches!(e.state, Restarting | Killing | Draining))
    {
        return false;
    }
    let Some(end) = task.events.iter().rev().find(|e| e.state.is_terminal()) else {
        return false;
    };
    let Some(last_active) = task.events.iter().rev().find(|e| !e.state.is_terminal()) else {
        return false;
    };
    end.timestamp_ms - last_active.timestamp_ms < cfg.flapping_threshold_ms
}

/// The throttle delay for a task with `streak` consecutive flapping ancestors: 0 for none, then
/// the initial delay doubled for each further one, capped.
pub fn flapping_delay_ms(streak: u32, cfg: &LifecycleConfig) -> i64 {
    if streak == 0 {
        return 0;
    }
    let mut d = cfg.initial_flapping_delay_ms;
    for _ in 1..streak {
        if d >= cfg.max_flapping_delay_ms {
            break;
        }
        d = d.saturating_mul(2);
    }
    d.min(cfg.max_flapping_delay_ms)
}

/// The next backoff after `current` (0 = first), doubling from `initial` up to `max`.
pub fn next_backoff(current: i64, initial: i64, max: i64) -> i64 {
    if current <= 0 {
        initial.min(max)
    } else {
        current.saturating_mul(2).min(max)
    }
}

/// Move `task` to `to` at `now`, recording the event; returns the side effects to carry out.
/// `from == to` is a no-op (no effects). Illegal transitions leave the task untouched.
pub fn transition(
    task: &mut Task,
    to: ScheduleStatus,
    message: Option<String>,
    now: i64,
    policy: JobPolicy,
    cfg: &LifecycleConfig,
) -> Result<Vec<Effect>, IllegalTransition> {
    let from = task.state;
    if from == to {
        return Ok(Vec::new());
    }
    if !is_legal(from, to) {
        return Err(IllegalTransition {
            task_id: task.id.clone(),
            from,
            to,
        });
    }
    if to == Killing && matches!(from, Pending | Throttled) {
        // A task that never ran is simply removed; no KILLED is recorded.
        return Ok(vec![Effect::Delete]);
    }
    task.state = to;
    task.events.push(TaskEvent {
        timestamp_ms: now,
        state: to,
        message,
    });
    if to != Throttled {
        task.throttled_until = None;
    }
    if to != Pending {
        task.pending_reason = None;
        task.placement_retry = None;
    }
    let mut effects = vec![Effect::Save];
    match to {
        Killing | Restarting | Draining | Preempting => {
            task.kill = Some(KillOrder {
                next_ms: now,
                backoff_ms: 0,
                epoch: 0,
            });
            effects.push(Effect::Kill);
        }
        Finished | Failed | Killed | Lost => {
            task.kill = None;
            let interrupted = is_interrupting(from);
            let mut counted_failure = false;
            let reschedule = if from == Killing {
                false
            } else if interrupted {
                true
            } else {
                match to {
                    Finished => policy.service,
                    Failed => {
                        task.failure_count = task.failure_count.saturating_add(1);
                        counted_failure = true;
                        policy.service
                            || policy.max_task_failures < 0
                            || i64::from(task.failure_count) < i64::from(policy.max_task_failures)
                    }
                    // Killed by someone else, or lost: reschedule without counting a failure.
                    _ => true,
                }
            };
            if reschedule {
                let flap_streak = if flapped(task, cfg) {
                    task.flap_streak.saturating_add(1)
                } else {
                    0
                };
                let delay = flapping_delay_ms(flap_streak, cfg);
                effects.push(Effect::Reschedule {
                    counted_failure,
                    throttle_until: (delay > 0).then_some(now.saturating_add(delay)),
                    flap_streak,
                });
            }
        }
        _ => {}
    }
    Ok(effects)
}

/// What time alone does to a task at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// THROTTLED long enough: to PENDING.
    Unthrottle,
    /// A transient state lasted too long: to LOST ("Task timed out").
    TimedOut,
    /// A kill is due to be (re)sent.
    ResendKill,
}

/// The reason a timed-out task is LOST with.
pub const TIMED_OUT: &str = "Task timed out";

/// Check the task's timers at `now` (at most one fires per call, in that order).
pub fn due_timer(task: &Task, now: i64, cfg: &LifecycleConfig) -> Option<Timer> {
    if task.state == Throttled {
        return match task.throttled_until {
            Some(t) if t > now => None,
            _ => Some(Timer::Unthrottle),
        };
    }
    if is_transient(task.state) && now - task.last_event_ms() >= cfg.transient_timeout_ms {
        return Some(Timer::TimedOut);
    }
    if let Some(k) = task.kill
        && k.next_ms <= now
    {
        return Some(Timer::ResendKill);
    }
    None
}

/// Record that the kill was sent at `now` under `epoch`; the next send backs off.
pub fn kill_sent(task: &mut Task, now: i64, epoch: u64, cfg: &LifecycleConfig) {
    let backoff = match task.kill {
        Some(k) => next_backoff(
            k.backoff_ms,
            cfg.kill_retry_initial_ms,
            cfg.kill_retry_max_ms,
        ),
        None => cfg.kill_retry_initial_ms,
    };
    task.kill = Some(KillOrder {
        next_ms: now.saturating_add(backoff),
        backoff_ms: backoff,
        epoch,
    });
}

/// Record that placement failed at `now` for `reason`; the next try backs off.
pub fn placement_failed(task: &mut Task, reason: String, now: i64, cfg: &LifecycleConfig) {
    let backoff = next_backoff(
        task.placement_retry.map_or(0, |(_, b)| b),
        cfg.placement_retry_initial_ms,
        cfg.placement_retry_max_ms,
    );
    task.placement_retry = Some((now.saturating_add(backoff), backoff));
    task.pending_reason = Some(reason);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::JobKey;

    const SERVICE: JobPolicy = JobPolicy {
        service: true,
        max_task_failures: 1,
    };
    const BATCH: JobPolicy = JobPolicy {
        service: false,
        max_task_failures: 3,
    };

    fn cfg() -> LifecycleConfig {
        LifecycleConfig::default()
    }

    /// A task that went through `path` (the first state at t=0, then one per second).
    fn task_through(path: &[ScheduleStatus]) -> Task {
        let job: JobKey = "c/r/prod/j".parse().unwrap();
        Task {
            id: "r-prod-j-0-1-abcd".into(),
            job: std::sync::Arc::new(job),
            config_id: 1,
            instance: 0,
            state: *path.last().unwrap(),
            host: Some("h1".into()),
            ports: Default::default(),
            ancestor: None,
            failure_count: 0,
            flap_streak: 0,
            throttled_until: None,
            events: path
                .iter()
                .enumerate()
                .map(|(i, s)| TaskEvent {
                    timestamp_ms: i as i64 * 1000,
                    state: *s,
                    message: None,
                })
                .collect(),
            last_seq: None,
            assigned_epoch: 0,
            pending_reason: None,
            placement_retry: None,
            condition: None,
            kill: None,
        }
    }

    fn go(path: &[ScheduleStatus], to: ScheduleStatus, policy: JobPolicy) -> (Task, Vec<Effect>) {
        let mut t = task_through(path);
        let now = t.last_event_ms() + 1000;
        let eff = transition(&mut t, to, None, now, policy, &cfg()).unwrap();
        (t, eff)
    }

    fn rescheduled(eff: &[Effect]) -> bool {
        eff.iter().any(|e| matches!(e, Effect::Reschedule { .. }))
    }

    const LEGAL: &[(ScheduleStatus, ScheduleStatus)] = &[
        (Throttled, Pending),
        (Throttled, Killing),
        (Pending, Assigned),
        (Pending, Killing),
        (Assigned, Starting),
        (Assigned, Running),
        (Starting, Running),
        (Assigned, Finished),
        (Assigned, Failed),
        (Assigned, Killed),
        (Assigned, Killing),
        (Assigned, Lost),
        (Assigned, Restarting),
        (Assigned, Draining),
        (Assigned, Preempting),
        (Starting, Finished),
        (Starting, Failed),
        (Starting, Killed),
        (Starting, Killing),
        (Starting, Lost),
        (Starting, Restarting),
        (Starting, Draining),
        (Starting, Preempting),
        (Running, Finished),
        (Running, Failed),
        (Running, Killed),
        (Running, Killing),
        (Running, Lost),
        (Running, Restarting),
        (Running, Draining),
        (Running, Preempting),
        (Restarting, Finished),
        (Restarting, Failed),
        (Restarting, Killing),
        (Restarting, Killed),
        (Restarting, Lost),
        (Draining, Finished),
        (Draining, Failed),
        (Draining, Killing),
        (Draining, Killed),
        (Draining, Lost),
        (Preempting, Finished),
        (Preempting, Failed),
        (Preempting, Killing),
        (Preempting, Killed),
        (Preempting, Lost),
        (Killing, Finished),
        (Killing, Failed),
        (Killing, Killed),
        (Killing, Lost),
    ];

    #[test]
    fn the_table_is_exactly_designs_list() {
        for from in ALL_STATES {
            for to in ALL_STATES {
                if from == to {
                    continue;
                }
                assert_eq!(
                    is_legal(from, to),
                    LEGAL.contains(&(from, to)),
                    "{} -> {}",
                    from.name(),
                    to.name()
                );
            }
        }
    }

    #[test]
    fn every_legal_transition_is_taken_and_recorded() {
        for &(from, to) in LEGAL {
            let (t, eff) = go(&[from], to, SERVICE);
            if to == Killing && matches!(from, Pending | Throttled) {
                assert_eq!(eff, vec![Effect::Delete]);
                continue;
            }
            assert_eq!(t.state, to, "{} -> {}", from.name(), to.name());
            assert_eq!(t.events.last().unwrap().state, to);
            assert_eq!(eff[0], Effect::Save);
        }
    }

    #[test]
    fn every_illegal_transition_is_refused_and_changes_nothing() {
        for from in ALL_STATES {
            for to in ALL_STATES {
                if from == to || LEGAL.contains(&(from, to)) {
                    continue;
                }
                let mut t = task_through(&[from]);
                let before = t.clone();
                let e = transition(&mut t, to, None, 5000, SERVICE, &cfg()).unwrap_err();
                assert_eq!((e.from, e.to), (from, to));
                assert!(e.to_string().contains("illegal transition"), "{e}");
                assert_eq!(t, before);
            }
        }
    }

    #[test]
    fn terminal_states_are_final() {
        for from in [Finished, Failed, Killed, Lost] {
            for to in ALL_STATES {
                assert!(!is_legal(from, to));
            }
        }
    }

    #[test]
    fn same_state_is_a_no_op() {
        let (t, eff) = go(&[Pending, Assigned, Running], Running, SERVICE);
        assert!(eff.is_empty());
        assert_eq!(t.events.len(), 3);
    }

    #[test]
    fn init_goes_to_pending_or_throttled() {
        assert_eq!(new_task_state(None, 10), Pending);
        assert_eq!(new_task_state(Some(11), 10), Throttled);
        assert_eq!(new_task_state(Some(10), 10), Pending);
    }

    #[test]
    fn finished_reschedules_only_a_service() {
        let path = [Pending, Assigned, Starting, Running];
        assert!(rescheduled(&go(&path, Finished, SERVICE).1));
        assert!(!rescheduled(&go(&path, Finished, BATCH).1));
    }

    #[test]
    fn failed_counts_a_failure_and_reschedules_a_service() {
        let (t, eff) = go(&[Pending, Assigned, Running], Failed, SERVICE);
        assert_eq!(t.failure_count, 1);
        assert!(matches!(
            eff[1],
            Effect::Reschedule {
                counted_failure: true,
                ..
            }
        ));
    }

    #[test]
    fn failed_batch_task_reschedules_while_under_max_task_failures() {
        let mut t = task_through(&[Pending, Assigned, Running]);
        t.failure_count = 1;
        let eff = transition(&mut t, Failed, None, 9000, BATCH, &cfg()).unwrap();
        assert_eq!(t.failure_count, 2);
        assert!(rescheduled(&eff), "2 < 3");
        let mut t = task_through(&[Pending, Assigned, Running]);
        t.failure_count = 2;
        let eff = transition(&mut t, Failed, None, 9000, BATCH, &cfg()).unwrap();
        assert_eq!(t.failure_count, 3);
        assert!(!rescheduled(&eff), "3 failures reach max_task_failures 3");
        // Default max_task_failures 1: one failure is final.
        let one = JobPolicy {
            service: false,
            max_task_failures: 1,
        };
        assert!(!rescheduled(&go(&[Running], Failed, one).1));
    }

    #[test]
    fn unlimited_failures_always_reschedule_a_batch_task() {
        let unlimited = JobPolicy {
            service: false,
            max_task_failures: -1,
        };
        let mut t = task_through(&[Running]);
        t.failure_count = 1000;
        let eff = transition(&mut t, Failed, None, 9000, unlimited, &cfg()).unwrap();
        assert!(rescheduled(&eff));
    }

    #[test]
    fn killed_without_killing_reschedules_without_a_failure() {
        let (t, eff) = go(&[Pending, Assigned, Running], Killed, BATCH);
        assert_eq!(t.failure_count, 0);
        assert!(matches!(
            eff[1],
            Effect::Reschedule {
                counted_failure: false,
                ..
            }
        ));
    }

    #[test]
    fn lost_reschedules_without_a_failure() {
        let (t, eff) = go(&[Pending, Assigned], Lost, BATCH);
        assert_eq!(t.failure_count, 0);
        assert!(rescheduled(&eff));
    }

    #[test]
    fn killing_sends_a_kill_and_its_end_never_reschedules() {
        let (t, eff) = go(&[Running], Killing, SERVICE);
        assert_eq!(eff, vec![Effect::Save, Effect::Kill]);
        assert!(t.kill.is_some());
        for end in [Finished, Failed, Killed, Lost] {
            let (t, eff) = go(&[Running, Killing], end, SERVICE);
            assert_eq!(eff, vec![Effect::Save], "{}", end.name());
            assert_eq!(t.failure_count, 0);
            assert!(t.kill.is_none(), "the end confirms the kill");
        }
    }

    #[test]
    fn killing_a_task_that_never_ran_deletes_it() {
        for from in [Pending, Throttled] {
            let (t, eff) = go(&[from], Killing, SERVICE);
            assert_eq!(eff, vec![Effect::Delete]);
            assert_eq!(t.state, from, "no KILLING/KILLED recorded");
        }
    }

    #[test]
    fn restarting_draining_preempting_kill_then_reschedule_without_failure() {
        for via in [Restarting, Draining, Preempting] {
            let (_, eff) = go(&[Running], via, BATCH);
            assert_eq!(eff, vec![Effect::Save, Effect::Kill], "{}", via.name());
            for end in [Finished, Failed, Killed, Lost] {
                let (t, eff) = go(&[Running, via], end, BATCH);
                assert_eq!(t.failure_count, 0, "{} -> {}", via.name(), end.name());
                let Effect::Reschedule {
                    counted_failure,
                    throttle_until,
                    ..
                } = eff[1]
                else {
                    panic!("{} -> {}: {eff:?}", via.name(), end.name());
                };
                assert!(!counted_failure);
                // RESTARTING and DRAINING interrupt the run: never a flap. (PREEMPTING is not in
                // Aurora's list of interruptions, so a short run before it still counts.)
                if via != Preempting {
                    assert_eq!(throttle_until, None);
                }
            }
        }
    }

    #[test]
    fn a_short_uninterrupted_run_flaps_and_its_replacement_is_throttled() {
        // RUNNING at t=1 s, FAILED at t=3 s: ran 2 s < 5 min.
        let mut t = task_through(&[Pending, Running]);
        let eff = transition(&mut t, Failed, None, 3000, SERVICE, &cfg()).unwrap();
        assert!(matches!(
            eff[1],
            Effect::Reschedule {
                throttle_until: Some(33_000),
                flap_streak: 1,
                ..
            }
        ));
    }

    #[test]
    fn a_long_run_does_not_flap() {
        let mut t = task_through(&[Pending, Running]);
        let eff = transition(&mut t, Failed, None, 1000 + 5 * 60_000, SERVICE, &cfg()).unwrap();
        assert!(matches!(
            eff[1],
            Effect::Reschedule {
                throttle_until: None,
                flap_streak: 0,
                ..
            }
        ));
    }

    #[test]
    fn flapping_delay_doubles_per_consecutive_ancestor_and_is_capped() {
        let c = cfg();
        let delays: Vec<i64> = (0..7).map(|s| flapping_delay_ms(s, &c)).collect();
        assert_eq!(
            delays,
            vec![0, 30_000, 60_000, 120_000, 240_000, 300_000, 300_000]
        );
        assert_eq!(flapping_delay_ms(u32::MAX, &c), 300_000);
        let mut t = task_through(&[Pending, Running]);
        t.flap_streak = 2;
        let eff = transition(&mut t, Failed, None, 3000, SERVICE, &c).unwrap();
        assert!(matches!(
            eff[1],
            Effect::Reschedule {
                throttle_until: Some(123_000),
                flap_streak: 3,
                ..
            }
        ));
    }

    #[test]
    fn timers_unthrottle_time_out_and_resend_kills() {
        let c = cfg();
        let mut t = task_through(&[Throttled]);
        t.throttled_until = Some(30_000);
        assert_eq!(due_timer(&t, 29_999, &c), None);
        assert_eq!(due_timer(&t, 30_000, &c), Some(Timer::Unthrottle));
        for s in [
            Assigned, Starting, Killing, Restarting, Draining, Preempting,
        ] {
            let t = task_through(&[s]);
            assert_eq!(due_timer(&t, c.transient_timeout_ms - 1, &c), None);
            assert_eq!(
                due_timer(&t, c.transient_timeout_ms, &c),
                Some(Timer::TimedOut),
                "{}",
                s.name()
            );
        }
        let t = task_through(&[Running]);
        assert_eq!(due_timer(&t, 100 * c.transient_timeout_ms, &c), None);
        let mut t = task_through(&[Running]);
        transition(&mut t, Killing, None, 1000, SERVICE, &c).unwrap();
        assert_eq!(due_timer(&t, 1000, &c), Some(Timer::ResendKill));
    }

    #[test]
    fn kill_resends_back_off_from_15_s_to_5_min() {
        let c = cfg();
        let mut t = task_through(&[Running]);
        transition(&mut t, Killing, None, 0, SERVICE, &c).unwrap();
        let mut waits = Vec::new();
        let mut now = 0;
        for epoch in 1..=7 {
            kill_sent(&mut t, now, epoch, &c);
            let k = t.kill.unwrap();
            waits.push(k.next_ms - now);
            now = k.next_ms;
        }
        assert_eq!(
            waits,
            vec![15_000, 30_000, 60_000, 120_000, 240_000, 300_000, 300_000]
        );
    }

    #[test]
    fn placement_retries_back_off_from_1_s_to_1_min() {
        let c = cfg();
        let mut t = task_through(&[Pending]);
        let mut waits = Vec::new();
        for _ in 0..8 {
            placement_failed(&mut t, "Insufficient resources: ram".into(), 0, &c);
            waits.push(t.placement_retry.unwrap().1);
        }
        assert_eq!(
            waits,
            vec![1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(
            t.pending_reason.as_deref(),
            Some("Insufficient resources: ram")
        );
    }
}
