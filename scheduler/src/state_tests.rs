//! Scenario tests of the model: an agent syncs, tasks are placed, reports move them, time
//! passes. Plus a property test of random event sequences.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::api::ScheduleStatus::*;
use crate::wire::{AgentTask, PortRange};
use proptest::prelude::*;
use serde_json::json;

const T0: i64 = 1_000_000;

fn state() -> State {
    State::new(LifecycleConfig::default(), 60_000, None)
}

fn key() -> JobKey {
    "west/www/prod/web".parse().unwrap()
}

fn config(instances: u32, service: bool) -> serde_json::Value {
    json!({
        "instances": instances, "service": service, "max_task_failures": 2,
        "task": {"name": "web", "processes": [{"name": "p", "cmdline": "serve {{thermos.ports[http]}}"}],
                 "resources": {"cpu": 1.0, "ram": 1024, "disk": 1024}}
    })
}

fn sync(host: &str, tasks: &[(&str, bool, Option<ScheduleStatus>)], acked: u64) -> AgentSync {
    AgentSync {
        host: host.into(),
        agent_id: format!("{host}-agent"),
        resources: ResourceVec {
            cpu: 4.0,
            ram: 1 << 30,
            disk: 1 << 30,
        },
        ports: PortRange {
            first: 31000,
            last: 31100,
        },
        attributes: BTreeMap::new(),
        tasks: tasks
            .iter()
            .map(|(id, running, terminal)| AgentTask {
                task_id: id.to_string(),
                running: *running,
                terminal: *terminal,
            })
            .collect(),
        acked_epoch: acked,
        wait_ms: 0,
    }
}

fn orders(
    s: &mut State,
    host: &str,
    tasks: &[(&str, bool, Option<ScheduleStatus>)],
    acked: u64,
    now: i64,
) -> AgentOrders {
    match s.agent_sync(&sync(host, tasks, acked), now) {
        SyncReply::Orders(o) => o,
        SyncReply::Wait(_) => s.agent_poll(host, acked, now),
    }
}

fn update(id: &str, seq: u64, state: ScheduleStatus) -> StatusUpdate {
    StatusUpdate {
        task_id: id.into(),
        seq,
        state,
        reason: None,
        timestamp_ms: 0,
    }
}

fn active(s: &State, instance: u32) -> Task {
    let id = &s.jobs[&key()].active[&instance];
    s.tasks[id].clone()
}

/// One host, one running service task.
fn running_one() -> (State, String) {
    let mut s = state();
    orders(&mut s, "h1", &[], 0, T0);
    s.create_job(key(), config(1, true), "alice", T0).unwrap();
    s.place_pending(T0);
    let o = orders(&mut s, "h1", &[], 0, T0);
    assert_eq!(o.launch.len(), 1);
    let id = o.launch[0].task_id.clone();
    assert_eq!(
        s.status_update(&update(&id, 1, Starting), T0),
        StatusReply::Ack(StatusAck {
            task_id: id.clone(),
            seq: 1,
            duplicate: false
        })
    );
    s.status_update(&update(&id, 2, Running), T0);
    assert_eq!(s.tasks[&id].state, Running);
    s.check_invariants().unwrap();
    (s, id)
}

#[test]
fn a_created_job_is_placed_launched_and_runs() {
    let (s, id) = running_one();
    let t = &s.tasks[&id];
    assert_eq!(t.host.as_deref(), Some("h1"));
    assert_eq!(t.ports.get("http"), Some(&31000));
    assert!(id.starts_with("www-prod-web-0-"), "{id}");
    hearth_checkpoints::root::validate_task_id(&id).unwrap();
    let states: Vec<_> = t.events.iter().map(|e| e.state).collect();
    assert_eq!(states, vec![Pending, Assigned, Starting, Running]);
    assert_eq!(s.hosts["h1"].used.cpu, 1.0);
}

#[test]
fn launch_orders_stop_once_acknowledged() {
    let (mut s, id) = running_one();
    let epoch = s.epoch;
    let o = orders(&mut s, "h1", &[(&id, true, None)], epoch, T0 + 1);
    assert!(o.launch.is_empty() && o.kill.is_empty());
}

#[test]
fn a_finished_service_task_is_replaced_with_its_ancestor_recorded() {
    let (mut s, id) = running_one();
    s.status_update(&update(&id, 3, Finished), T0 + 10 * 60_000);
    s.place_pending(T0 + 10 * 60_000);
    let t = active(&s, 0);
    assert_ne!(t.id, id);
    assert_eq!(t.ancestor.as_deref(), Some(id.as_str()));
    assert_eq!(t.state, Assigned, "placed again at once");
    assert_eq!(s.tasks[&id].state, Finished);
    assert!(!s.hosts["h1"].tasks.contains(&id));
    s.check_invariants().unwrap();
}

#[test]
fn a_flapping_task_is_throttled_then_pending() {
    let (mut s, id) = running_one();
    s.status_update(&update(&id, 3, Failed), T0 + 1000);
    let t = active(&s, 0);
    assert_eq!(t.state, Throttled);
    assert_eq!(t.throttled_until, Some(T0 + 1000 + 30_000));
    assert_eq!(t.failure_count, 1);
    let shown = s.job_tasks(&key()).unwrap();
    assert_eq!(shown[0].throttled_until, Some(T0 + 31_000));
    s.tick(T0 + 30_999);
    assert_eq!(active(&s, 0).state, Throttled);
    s.tick(T0 + 31_000);
    assert_eq!(active(&s, 0).state, Assigned, "PENDING, then placed");
}

#[test]
fn batch_task_failures_stop_at_max_task_failures() {
    let mut s = state();
    orders(&mut s, "h1", &[], 0, T0);
    s.create_job(key(), config(1, false), "a", T0).unwrap();
    s.place_pending(T0);
    let mut now = T0;
    let first = active(&s, 0).id;
    s.status_update(&update(&first, 1, Running), now);
    now += 10 * 60_000;
    s.status_update(&update(&first, 2, Failed), now);
    let second = active(&s, 0);
    assert_eq!(second.failure_count, 1);
    s.place_pending(now);
    s.status_update(&update(&second.id, 1, Running), now);
    now += 10 * 60_000;
    s.status_update(&update(&second.id, 2, Failed), now);
    assert!(
        s.jobs[&key()].active.is_empty(),
        "2 failures = max_task_failures 2"
    );
    assert_eq!(s.tasks[&second.id].failure_count, 2);
}

#[test]
fn kill_sends_orders_and_the_killed_task_is_not_replaced() {
    let (mut s, id) = running_one();
    let acked = s.epoch;
    let r = s.kill_job(&key(), None, "alice", T0 + 5).unwrap();
    assert_eq!(r.tasks, vec![id.clone()]);
    assert_eq!(s.tasks[&id].state, Killing);
    assert!(s.woken.contains("h1"));
    let o = orders(&mut s, "h1", &[(&id, true, None)], acked, T0 + 6);
    assert_eq!(o.kill, vec![id.clone()]);
    // Unconfirmed: resent after 15 s.
    let acked = o.epoch;
    let o = orders(&mut s, "h1", &[(&id, true, None)], acked, T0 + 7);
    assert!(o.kill.is_empty());
    s.tick(T0 + 5 + 15_000);
    let o = orders(&mut s, "h1", &[(&id, true, None)], acked, T0 + 15_006);
    assert_eq!(o.kill, vec![id.clone()], "resent");
    s.status_update(&update(&id, 3, Killed), T0 + 15_010);
    assert_eq!(s.tasks[&id].state, Killed);
    assert!(s.jobs[&key()].active.is_empty());
    assert!(s.tasks[&id].kill.is_none());
}

#[test]
fn killing_a_pending_task_deletes_it() {
    let mut s = state();
    s.create_job(key(), config(2, true), "a", T0).unwrap();
    s.place_pending(T0);
    let ids: Vec<String> = s.jobs[&key()].active.values().cloned().collect();
    assert_eq!(
        s.tasks[&ids[0]].pending_reason.as_deref(),
        Some("No live agent")
    );
    s.kill_job(&key(), Some(&[1]), "a", T0).unwrap();
    assert!(!s.tasks.contains_key(&ids[1]));
    assert!(s.dirty.deleted_tasks.contains(&ids[1]));
    assert_eq!(s.jobs[&key()].active.len(), 1);
}

#[test]
fn killed_by_someone_else_is_replaced() {
    let (mut s, id) = running_one();
    s.status_update(&update(&id, 3, Killed), T0 + 10 * 60_000);
    assert_eq!(active(&s, 0).ancestor.as_deref(), Some(id.as_str()));
}

#[test]
fn restart_kills_then_replaces_without_a_failure() {
    let (mut s, id) = running_one();
    s.restart_job(&key(), None, "a", T0 + 1).unwrap();
    assert_eq!(s.tasks[&id].state, Restarting);
    s.status_update(&update(&id, 3, Killed), T0 + 2);
    s.place_pending(T0 + 2);
    let t = active(&s, 0);
    assert_eq!(t.failure_count, 0);
    assert_eq!(t.state, Assigned, "no throttle after a restart");
}

#[test]
fn drain_moves_tasks_off_and_marks_the_host_drained() {
    let (mut s, id) = running_one();
    orders(&mut s, "h2", &[], 0, T0);
    s.drain_host("h1", "ops", T0 + 1);
    assert_eq!(s.tasks[&id].state, Draining);
    assert_eq!(s.hosts["h1"].mode, HostMode::Draining);
    s.status_update(&update(&id, 3, Killed), T0 + 2);
    s.place_pending(T0 + 2);
    let t = active(&s, 0);
    assert_eq!(t.host.as_deref(), Some("h2"));
    assert_eq!(s.hosts["h1"].mode, HostMode::Drained);
    let h = s.activate_host("h1", "ops", T0 + 3).unwrap();
    assert_eq!(h.mode, HostMode::None);
}

#[test]
fn a_silent_agent_loses_its_tasks_and_gets_them_killed_when_back() {
    let (mut s, id) = running_one();
    orders(&mut s, "h2", &[], 0, T0);
    // h2 keeps syncing, h1 falls silent.
    orders(&mut s, "h2", &[], 0, T0 + 50_000);
    s.tick(T0 + 60_001);
    assert_eq!(s.tasks[&id].state, Lost);
    let t = active(&s, 0);
    assert_eq!(t.failure_count, 0);
    // It ran a minute: a flap, so the replacement waits 30 s, then goes to the live agent.
    assert_eq!(t.throttled_until, Some(T0 + 60_001 + 30_000));
    orders(&mut s, "h2", &[], 0, T0 + 90_001);
    s.tick(T0 + 90_001);
    let t = active(&s, 0);
    assert_eq!(t.host.as_deref(), Some("h2"), "replaced on the other agent");
    assert!(!s.hosts["h1"].alive);
    // h1 comes back still running the old task: it is ordered killed (fencing).
    let o = orders(&mut s, "h1", &[(&id, true, None)], 0, T0 + 70_000);
    assert_eq!(o.kill, vec![id.clone()]);
    assert!(s.hosts["h1"].alive);
}

#[test]
fn an_acknowledged_task_the_agent_does_not_have_is_lost() {
    let (mut s, id) = running_one();
    let acked = s.epoch;
    orders(&mut s, "h1", &[], acked, T0 + 5);
    assert_eq!(s.tasks[&id].state, Lost);
    assert!(
        s.tasks[&id]
            .last_message()
            .unwrap()
            .contains("does not have it")
    );
}

#[test]
fn an_unacknowledged_assignment_is_not_lost() {
    let mut s = state();
    orders(&mut s, "h1", &[], 0, T0);
    s.create_job(key(), config(1, true), "a", T0).unwrap();
    s.place_pending(T0);
    let o = orders(&mut s, "h1", &[], 0, T0 + 1);
    assert_eq!(o.launch.len(), 1);
    assert_eq!(active(&s, 0).state, Assigned);
}

#[test]
fn an_ack_from_another_life_of_the_scheduler_loses_nothing() {
    let mut s = state();
    orders(&mut s, "h1", &[], 0, T0);
    s.create_job(key(), config(1, true), "a", T0).unwrap();
    s.place_pending(T0);
    let id = active(&s, 0).id;
    // The agent acknowledged epochs (from before a restore) beyond any this scheduler issued.
    let far = s.epoch + 1_000_000;
    let o = orders(&mut s, "h1", &[], far, T0 + 1);
    assert_eq!(s.tasks[&id].state, Assigned, "not LOST");
    assert_eq!(o.launch.len(), 1, "launched again");
    assert!(o.epoch >= far, "new orders are newer than the agent's ack");
}

#[test]
fn strays_are_killed_unless_held_and_confirm_kills_them() {
    let mut s = state();
    let o = orders(&mut s, "h1", &[("ghost", true, None)], 0, T0);
    assert_eq!(o.kill, vec!["ghost".to_owned()]);
    let mut s = state();
    s.set_hold();
    let o = orders(&mut s, "h1", &[("ghost", true, None)], 0, T0);
    assert!(o.kill.is_empty());
    assert_eq!(s.reconcile_status().held.len(), 1);
    s.reconcile_confirm("admin", T0 + 1);
    assert!(!s.hold);
    let o = orders(&mut s, "h1", &[("ghost", true, None)], 0, T0 + 2);
    assert_eq!(o.kill, vec!["ghost".to_owned()]);
}

#[test]
fn a_report_for_a_dead_task_is_acknowledged_and_the_task_killed() {
    let (mut s, id) = running_one();
    s.kill_job(&key(), None, "a", T0).unwrap();
    s.status_update(&update(&id, 3, Killed), T0 + 1);
    let acked = s.epoch;
    let r = s.status_update(&update(&id, 4, Running), T0 + 2);
    assert!(matches!(r, StatusReply::Ack(a) if !a.duplicate));
    let o = s.agent_poll("h1", acked, T0 + 3);
    assert_eq!(o.kill, vec![id]);
    // Unknown tasks are acknowledged too.
    assert!(matches!(
        s.status_update(&update("nope", 7, Running), T0),
        StatusReply::Ack(_)
    ));
}

#[test]
fn status_reports_keep_the_exactly_once_contract() {
    let (mut s, id) = running_one();
    assert_eq!(
        s.status_update(&update(&id, 2, Running), T0),
        StatusReply::Ack(StatusAck {
            task_id: id.clone(),
            seq: 2,
            duplicate: true
        })
    );
    assert_eq!(
        s.status_update(&update(&id, 5, Finished), T0),
        StatusReply::Conflict(StatusConflict {
            task_id: id.clone(),
            expected_seq: 3
        })
    );
    assert_eq!(s.tasks[&id].state, Running);
}

#[test]
fn transient_states_time_out_into_lost() {
    let mut s = state();
    orders(&mut s, "h1", &[], 0, T0);
    s.create_job(key(), config(1, true), "a", T0).unwrap();
    s.place_pending(T0);
    let id = active(&s, 0).id;
    // Keep the agent alive, never report the task.
    orders(&mut s, "h1", &[(&id, true, None)], 0, T0 + 299_000);
    s.tick(T0 + 300_000);
    assert_eq!(s.tasks[&id].state, Lost);
    assert_eq!(s.tasks[&id].last_message(), Some(lifecycle::TIMED_OUT));
}

#[test]
fn unplaceable_tasks_stay_pending_with_the_reason_and_back_off() {
    let mut s = state();
    orders(&mut s, "h1", &[], 0, T0);
    let mut c = config(1, true);
    c["task"]["resources"]["ram"] = json!(1u64 << 40);
    s.create_job(key(), c, "a", T0).unwrap();
    s.place_pending(T0);
    let t = active(&s, 0);
    assert_eq!(t.state, Pending);
    let shown = s.job_tasks(&key()).unwrap();
    assert_eq!(
        shown[0].reason.as_deref(),
        Some("Insufficient resources: ram (1 host)")
    );
    assert_eq!(t.placement_retry.map(|r| r.1), Some(1000));
    s.place_pending(T0 + 500);
    assert_eq!(
        active(&s, 0).placement_retry.map(|r| r.1),
        Some(1000),
        "not due yet"
    );
    s.place_pending(T0 + 1000);
    assert_eq!(active(&s, 0).placement_retry.map(|r| r.1), Some(2000));
}

#[test]
fn a_new_agent_gets_waiting_tasks_placed_at_once() {
    let mut s = state();
    s.create_job(key(), config(1, true), "a", T0).unwrap();
    for n in 0..8 {
        s.place_pending(T0 + n * 60_000);
    }
    assert_eq!(active(&s, 0).placement_retry.map(|r| r.1), Some(60_000));
    let o = orders(&mut s, "h1", &[], 0, T0 + 480_001);
    assert!(o.launch.is_empty());
    s.place_pending(T0 + 480_001);
    assert_eq!(
        active(&s, 0).state,
        Assigned,
        "no minute-long wait for the backoff"
    );
}

#[test]
fn a_service_of_three_on_two_agents_uses_both() {
    let mut s = state();
    orders(&mut s, "h1", &[], 0, T0);
    orders(&mut s, "h2", &[], 0, T0);
    s.create_job(key(), config(3, true), "a", T0).unwrap();
    s.place_pending(T0);
    let hosts: BTreeSet<String> = s.tasks.values().filter_map(|t| t.host.clone()).collect();
    assert_eq!(hosts.len(), 2);
}

#[test]
fn creating_an_existing_job_conflicts_and_a_wrong_cluster_is_refused() {
    let (mut s, _) = running_one();
    let e = s.create_job(key(), config(1, true), "a", T0).unwrap_err();
    assert_eq!(e.status, 409);
    let mut s = State::new(LifecycleConfig::default(), 60_000, Some("east".into()));
    let e = s.create_job(key(), config(1, true), "a", T0).unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("east"), "{}", e.message);
}

#[test]
fn ended_tasks_are_pruned_beyond_100_and_an_hour() {
    let mut s = state();
    orders(&mut s, "h1", &[], 0, T0);
    s.create_job(key(), config(1, true), "a", T0).unwrap();
    let mut now = T0;
    for _ in 0..105 {
        s.place_pending(now);
        let t = active(&s, 0);
        let seq = t.last_seq.unwrap_or(0);
        s.status_update(&update(&t.id, seq + 1, Running), now);
        now += 10 * 60_000;
        s.status_update(&update(&t.id, seq + 2, Finished), now);
    }
    assert_eq!(s.jobs[&key()].terminal.len(), 105);
    s.prune(now);
    assert_eq!(s.jobs[&key()].terminal.len(), 100);
    assert_eq!(s.dirty.deleted_tasks.len(), 5);
}

// ---- property test ----------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Ev {
    Report {
        instance: u32,
        state: ScheduleStatus,
    },
    Kill {
        instance: u32,
    },
    Restart,
    Drain,
    Activate,
    Sync {
        host: usize,
        report_all: bool,
    },
    /// The agent reports one of its tasks ended (its executor's report was lost).
    SyncEnded {
        host: usize,
        pick: usize,
        state: ScheduleStatus,
    },
    /// A (late) report for any task ever seen, dead ones included.
    ReportAny {
        pick: usize,
        state: ScheduleStatus,
    },
    Tick {
        advance_ms: i64,
    },
}

fn ev() -> impl Strategy<Value = Ev> {
    let states = prop::sample::select(vec![
        Starting, Running, Finished, Failed, Killed, Lost, Killing,
    ]);
    prop_oneof![
        6 => (0u32..3, states).prop_map(|(instance, state)| Ev::Report { instance, state }),
        1 => (0u32..3).prop_map(|instance| Ev::Kill { instance }),
        1 => Just(Ev::Restart),
        1 => Just(Ev::Drain),
        1 => Just(Ev::Activate),
        2 => (0usize..2, any::<bool>()).prop_map(|(host, report_all)| Ev::Sync { host, report_all }),
        1 => (0usize..2, any::<usize>(), prop::sample::select(vec![Finished, Failed, Killed, Lost]))
            .prop_map(|(host, pick, state)| Ev::SyncEnded { host, pick, state }),
        1 => (any::<usize>(), prop::sample::select(vec![Starting, Running, Finished, Killed]))
            .prop_map(|(pick, state)| Ev::ReportAny { pick, state }),
        2 => (0i64..120_000).prop_map(|advance_ms| Ev::Tick { advance_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_events_keep_the_invariants(events in prop::collection::vec(ev(), 1..80)) {
        let mut s = state();
        let mut now = T0;
        orders(&mut s, "h0", &[], 0, now);
        orders(&mut s, "h1", &[], 0, now);
        s.create_job(key(), config(3, true), "a", now).unwrap();
        s.place_pending(now);
        let mut failures: HashMap<u32, u32> = HashMap::new();
        let mut ended: HashMap<String, ScheduleStatus> = HashMap::new();
        let mut seqs: HashMap<String, u64> = HashMap::new();
        for e in events {
            match e {
                Ev::Report { instance, state } => {
                    if let Some(id) = s.jobs[&key()].active.get(&instance).cloned() {
                        let seq = seqs.entry(id.clone()).or_insert(0);
                        *seq += 1;
                        s.status_update(&update(&id, *seq, state), now);
                    }
                }
                Ev::Kill { instance } => {
                    let _ = s.kill_job(&key(), Some(&[instance]), "a", now);
                }
                Ev::Restart => { let _ = s.restart_job(&key(), None, "a", now); }
                Ev::Drain => { s.drain_host("h0", "a", now); }
                Ev::Activate => { let _ = s.activate_host("h0", "a", now); }
                Ev::Sync { host, report_all } => {
                    let name = format!("h{host}");
                    let ids: Vec<String> = s.hosts[&name].tasks.iter().cloned().collect();
                    let reported: Vec<(&str, bool, Option<ScheduleStatus>)> = if report_all {
                        ids.iter().map(|i| (i.as_str(), true, None)).collect()
                    } else {
                        Vec::new()
                    };
                    let acked = s.epoch;
                    orders(&mut s, &name, &reported, acked, now);
                }
                Ev::SyncEnded { host, pick, state } => {
                    let name = format!("h{host}");
                    let ids: Vec<String> = s.hosts[&name].tasks.iter().cloned().collect();
                    if !ids.is_empty() {
                        let ended = ids[pick % ids.len()].clone();
                        let reported: Vec<(&str, bool, Option<ScheduleStatus>)> = ids
                            .iter()
                            .map(|i| if *i == ended { (i.as_str(), false, Some(state)) } else { (i.as_str(), true, None) })
                            .collect();
                        let acked = s.epoch;
                        orders(&mut s, &name, &reported, acked, now);
                    }
                }
                Ev::ReportAny { pick, state } => {
                    let mut all: Vec<String> = s.tasks.keys().cloned().collect();
                    all.sort();
                    if !all.is_empty() {
                        let id = all[pick % all.len()].clone();
                        let seq = seqs.entry(id.clone()).or_insert(0);
                        *seq += 1;
                        s.status_update(&update(&id, *seq, state), now);
                    }
                }
                Ev::Tick { advance_ms } => {
                    now += advance_ms;
                    s.tick(now);
                }
            }
            s.place_pending(now);
            prop_assert_eq!(s.check_invariants(), Ok(()));
            // Failure counts per instance never decrease.
            for (i, id) in &s.jobs[&key()].active {
                let f = s.tasks[id].failure_count;
                let before = failures.entry(*i).or_insert(0);
                prop_assert!(f >= *before, "instance {} failures {} < {}", i, f, before);
                *before = f;
            }
            // Terminal states are final.
            for (id, st) in &ended {
                if let Some(t) = s.tasks.get(id) {
                    prop_assert_eq!(t.state, *st, "task {} left its terminal state", id);
                }
            }
            for t in s.tasks.values() {
                if t.state.is_terminal() {
                    ended.insert(t.id.clone(), t.state);
                }
            }
        }
    }
}
