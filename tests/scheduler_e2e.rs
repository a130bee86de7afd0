//! End-to-end tests of the scheduler, its agents and the job client: the real `hearth` binary
//! as `hearth scheduler` on the host and `hearth agent`s each in a network namespace of its own
//! (see `netns/mod.rs`), driven with `hearth job|host|scheduler ...` as a person would.
//!
//! These need root, cgroups, `ip` and `nsenter`; they skip without them, and fail instead under
//! `HEARTH_REQUIRE_CGROUPS=1` (as CI runs). Timeouts and delays are made small with the
//! scheduler's flags; every wait is a condition with a deadline.
//!
//! | issue 10 "Must show" | test |
//! |---|---|
//! | a service of 3 reaches RUNNING across two agents | `a_service_of_three_instances_reaches_running_across_two_agents` |
//! | a task whose process exits is replaced by one that reaches RUNNING | `a_task_whose_process_exits_is_replaced_by_a_new_task_that_runs` |
//! | a service that keeps dying is THROTTLED with the documented delays | `a_service_that_keeps_dying_is_throttled_with_doubling_delays` |
//! | `job kill`: every instance KILLED, nothing left in any task cgroup | `job_kill_makes_every_instance_killed_and_empties_the_task_cgroups` |
//! | scheduler `kill -9` + restart keeps every job and task | `a_scheduler_killed_mid_run_and_restarted_keeps_every_job_and_task` |
//! | agent `kill -9` + restart: tasks keep running, re-adopted | `an_agent_killed_and_restarted_keeps_its_tasks_running_and_readopts_them` |
//! | a cut link: LOST, replaced on the other agent, stale one killed on return | `a_cut_agent_loses_its_tasks_to_the_other_and_kills_the_stale_one_when_back` |
//! | `host drain` moves tasks off | `host_drain_moves_the_tasks_off_the_host` |
//! | a restored backup kills nothing before `reconcile --confirm` | `a_restored_backup_brings_the_jobs_back_and_kills_nothing_before_reconcile_confirm` |
//! | wrong password → 401, missing permission → 403 | `a_wrong_password_is_401_and_a_missing_permission_is_403` |
#![allow(clippy::unwrap_used)]

mod common;
mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Stdio;

use netns::{
    Cluster, active, all_in, cgroup_pids, event_ms, executor_pid, have_netns, host_of, instance,
    secs, service, state, task_alive, task_id,
};
use serde_json::{Value, json};

/// A cluster of `agents` hosts (`host-a`, `host-b`, ... with `rack=a`, `rack=b`, ...), the
/// scheduler started with `flags` and every agent running.
fn cluster(test: &str, agents: usize, flags: &[(&str, &str)]) -> Cluster {
    let mut c = Cluster::with_netns(test, agents);
    for (k, v) in flags {
        c.flag(k, v);
    }
    c.start_scheduler();
    for i in 0..agents {
        let letter = char::from(b'a' + u8::try_from(i).unwrap());
        let rack = format!("rack={letter}");
        c.add_agent(&format!("host-{letter}"), &[rack.as_str()]);
        c.start_agent(i);
    }
    c
}

fn ids(tasks: &[&Value]) -> BTreeSet<String> {
    tasks.iter().map(|t| task_id(t).to_owned()).collect()
}

fn find<'a>(tasks: &'a [Value], id: &str) -> Option<&'a Value> {
    tasks.iter().find(|t| task_id(t) == id)
}

/// The executor pid of every active task, by task id (each read under its host's root).
fn executor_pids(c: &Cluster, tasks: &[&Value]) -> BTreeMap<String, i32> {
    tasks
        .iter()
        .map(|t| {
            let root = c.agent(host_of(t)).root();
            let pid = executor_pid(&root, task_id(t))
                .unwrap_or_else(|| c.fail(&format!("no executor lock for {}", task_id(t))));
            (task_id(t).to_owned(), pid)
        })
        .collect()
}

#[test]
fn a_service_of_three_instances_reaches_running_across_two_agents() {
    let test = "a_service_of_three_instances_reaches_running_across_two_agents";
    if !have_netns(test) {
        return;
    }
    let c = cluster(test, 2, &[]);
    let mut job = service("web", 3, "exec sleep 3600");
    // At most two instances per rack: the third must go to the other host.
    job["constraints"] = json!({"rack": "limit:2"});
    let key = c.create(&job);
    let tasks = c.wait_tasks(&key, "3 instances RUNNING", secs(60), |t| {
        all_in(t, 3, "RUNNING")
    });
    let act = active(&tasks);
    let hosts: BTreeSet<&str> = act.iter().map(|t| host_of(t)).collect();
    assert_eq!(hosts, BTreeSet::from(["host-a", "host-b"]), "{tasks:#?}");
    let instances: BTreeSet<u64> = act.iter().map(|t| instance(t)).collect();
    assert_eq!(instances, BTreeSet::from([0, 1, 2]));
    for t in &act {
        for field in [
            "instance",
            "task_id",
            "state",
            "agent",
            "reason",
            "throttled_until",
        ] {
            assert!(t.get(field).is_some(), "status --json lacks {field}: {t}");
        }
        // Really running, on the host the scheduler says.
        let root = c.agent(host_of(t)).root();
        assert!(
            task_alive(&root, task_id(t)),
            "{} is not running",
            task_id(t)
        );
    }
    let human = c.ok(&["job", "status", &key]);
    assert!(
        human.contains("RUNNING") && human.contains("host-a") && human.contains("host-b"),
        "{human}"
    );
    let list = c.ok(&["job", "list", "root"]);
    assert!(list.contains(&key) && list.contains("RUNNING 3"), "{list}");
    let hosts = c.ok(&["host", "status"]);
    assert!(
        hosts.contains("host-a") && hosts.contains("rack=b"),
        "{hosts}"
    );
}

#[test]
fn a_task_whose_process_exits_is_replaced_by_a_new_task_that_runs() {
    let test = "a_task_whose_process_exits_is_replaced_by_a_new_task_that_runs";
    if !have_netns(test) {
        return;
    }
    let c = cluster(test, 1, &[]);
    let stop = c.dir.path().join("stop");
    let cmd = format!(
        "while [ ! -e {s} ]; do sleep 0.1; done; rm -f {s}",
        s = stop.display()
    );
    let key = c.create(&service("exits", 1, &cmd));
    let tasks = c.wait_tasks(&key, "the first task RUNNING", secs(60), |t| {
        all_in(t, 1, "RUNNING")
    });
    let first = task_id(active(&tasks)[0]).to_owned();
    std::fs::write(&stop, "").unwrap();
    let tasks = c.wait_tasks(
        &key,
        "the first task FINISHED and its replacement RUNNING",
        secs(60),
        |t| {
            find(t, &first).is_some_and(|f| state(f) == "FINISHED")
                && active(t)
                    .iter()
                    .any(|n| n["ancestor_id"] == first.as_str() && state(n) == "RUNNING")
        },
    );
    let next = active(&tasks)[0];
    assert_ne!(task_id(next), first);
    assert_eq!(instance(next), 0);
    assert!(task_alive(&c.agents[0].root(), task_id(next)));
}

#[test]
fn a_service_that_keeps_dying_is_throttled_with_doubling_delays() {
    let test = "a_service_that_keeps_dying_is_throttled_with_doubling_delays";
    if !have_netns(test) {
        return;
    }
    let c = cluster(
        test,
        1,
        &[
            ("flapping-threshold", "1m"),
            ("initial-flapping-delay", "1s"),
            ("max-flapping-delay", "4s"),
        ],
    );
    let key = c.create(&service("dies", 1, "sleep 0.3; exit 1"));
    // Watch the chain; note each THROTTLED task's reported throttled_until while it waits.
    let mut until: BTreeMap<String, i64> = BTreeMap::new();
    let mut saw_human = false;
    let tasks = c.wait_tasks(&key, "four THROTTLED replacements", secs(90), |tasks| {
        for t in tasks {
            if let (true, Some(u)) = (state(t) == "THROTTLED", t["throttled_until"].as_i64()) {
                until.insert(task_id(t).to_owned(), u);
            }
        }
        if !saw_human && tasks.iter().any(|t| state(t) == "THROTTLED") {
            let out = c.ok(&["job", "status", &key]);
            if out.contains("THROTTLED") {
                assert!(out.contains("PENDING at"), "{out}");
                saw_human = true;
            }
        }
        until.len() >= 4
    });
    assert!(saw_human, "never saw THROTTLED in the human status");
    // Follow the chain from the first task, whose replacement is the first throttled one.
    let mut chain = Vec::new();
    let mut cur = tasks
        .iter()
        .find(|t| t["ancestor_id"].is_null())
        .unwrap_or_else(|| c.fail(&format!("no first task in {tasks:#?}")));
    while let Some(next) = tasks.iter().find(|t| t["ancestor_id"] == task_id(cur)) {
        chain.push(next);
        cur = next;
    }
    let mut delays = Vec::new();
    for t in &chain {
        let Some(u) = until.get(task_id(t)) else {
            continue;
        };
        let entered =
            event_ms(t, "THROTTLED").unwrap_or_else(|| c.fail(&format!("no THROTTLED event: {t}")));
        delays.push(u - entered);
        if let Some(pending) = event_ms(t, "PENDING") {
            assert!(pending >= u - 50, "PENDING before throttled_until: {t}");
        }
    }
    eprintln!("throttle delays (throttled_until - THROTTLED event): {delays:?} ms");
    assert!(delays.len() >= 4, "{delays:?} {chain:#?}");
    let expected = [1000, 2000, 4000, 4000];
    for (got, want) in delays.iter().zip(expected) {
        assert!(
            (got - want).abs() <= 250,
            "throttle delays {delays:?}, expected {expected:?} (1 s doubling, capped at 4 s)"
        );
    }
    assert!(
        chain.iter().all(|t| t["failure_count"].as_u64().is_some()),
        "{chain:#?}"
    );
}

#[test]
fn job_kill_makes_every_instance_killed_and_empties_the_task_cgroups() {
    let test = "job_kill_makes_every_instance_killed_and_empties_the_task_cgroups";
    if !have_netns(test) {
        return;
    }
    let c = cluster(test, 2, &[]);
    // A process that ignores SIGTERM must still go (SIGKILL after finalization_wait).
    let key = c.create(&service(
        "victim",
        3,
        "trap '' TERM; sleep 3600 & sleep 3600",
    ));
    let tasks = c.wait_tasks(&key, "3 instances RUNNING", secs(60), |t| {
        all_in(t, 3, "RUNNING")
    });
    let running: Vec<(String, String)> = active(&tasks)
        .iter()
        .map(|t| (task_id(t).to_owned(), host_of(t).to_owned()))
        .collect();
    // One instance first, then the rest.
    let one = c.ok(&["job", "kill", &key, "--instances", "1"]);
    assert!(one.contains("KILLED"), "{one}");
    let tasks = c.tasks(&key);
    let act = active(&tasks);
    assert_eq!(act.len(), 2, "{tasks:#?}");
    assert!(
        act.iter()
            .all(|t| instance(t) != 1 && state(t) == "RUNNING")
    );
    c.ok(&["job", "kill", &key]);
    let tasks = c.tasks(&key);
    assert!(active(&tasks).is_empty(), "{tasks:#?}");
    for (id, host) in &running {
        let t = find(&tasks, id).unwrap_or_else(|| c.fail(&format!("{id} is gone")));
        assert_eq!(state(t), "KILLED", "{t}");
        assert!(
            cgroup_pids(id).is_empty(),
            "{id}: processes left in its cgroup: {:?}",
            cgroup_pids(id)
        );
        // Its executor exits right after reporting KILLED.
        let root = c.agent(host).root();
        c.wait_for(&format!("{id}'s executor to exit"), secs(30), || {
            (!task_alive(&root, id)).then_some(())
        });
    }
}

#[test]
fn a_scheduler_killed_mid_run_and_restarted_keeps_every_job_and_task() {
    let test = "a_scheduler_killed_mid_run_and_restarted_keeps_every_job_and_task";
    if !have_netns(test) {
        return;
    }
    let mut c = cluster(test, 2, &[]);
    let key = c.create(&service("keep", 2, "exec sleep 3600"));
    let gone = c.create(&service("gone", 1, "exec sleep 3600"));
    c.wait_tasks(&gone, "gone RUNNING", secs(60), |t| all_in(t, 1, "RUNNING"));
    c.ok(&["job", "kill", &gone]);
    let before = c.wait_tasks(&key, "2 instances RUNNING", secs(60), |t| {
        all_in(t, 2, "RUNNING")
    });
    let running = ids(&active(&before));
    let pids = executor_pids(&c, &active(&before));
    let killed = c.tasks(&gone);
    c.kill_scheduler();
    for pid in pids.values() {
        assert!(common::alive(*pid), "an executor died with the scheduler");
    }
    c.start_scheduler();
    let list = c.ok(&["job", "list", "--json"]);
    let jobs: Vec<Value> = serde_json::from_str(&list).unwrap();
    let keys: BTreeSet<&str> = jobs.iter().filter_map(|j| j["key"].as_str()).collect();
    assert_eq!(keys, BTreeSet::from([key.as_str(), gone.as_str()]));
    // The killed job's tasks are still recorded as they were.
    let again = c.tasks(&gone);
    let states = |ts: &[Value]| -> BTreeMap<String, String> {
        ts.iter()
            .map(|t| (task_id(t).to_owned(), state(t).to_owned()))
            .collect()
    };
    assert_eq!(states(&again), states(&killed));
    // Both agents sync with the new scheduler run, and nothing is replaced.
    for h in ["host-a", "host-b"] {
        c.wait_host_alive(h);
    }
    let after = c.wait_tasks(&key, "the same tasks RUNNING", secs(30), |t| {
        all_in(t, 2, "RUNNING") && ids(&active(t)) == running
    });
    assert_eq!(executor_pids(&c, &active(&after)), pids);
    let lost: Vec<&Value> = after.iter().filter(|t| state(t) == "LOST").collect();
    assert!(lost.is_empty(), "{lost:#?}");
}

#[test]
fn an_agent_killed_and_restarted_keeps_its_tasks_running_and_readopts_them() {
    let test = "an_agent_killed_and_restarted_keeps_its_tasks_running_and_readopts_them";
    if !have_netns(test) {
        return;
    }
    let mut c = cluster(test, 1, &[]);
    let key = c.create(&service("adopted", 2, "exec sleep 3600"));
    let before = c.wait_tasks(&key, "2 instances RUNNING", secs(60), |t| {
        all_in(t, 2, "RUNNING")
    });
    let running = ids(&active(&before));
    let pids = executor_pids(&c, &active(&before));
    c.kill_agent(0);
    for (id, pid) in &pids {
        assert!(common::alive(*pid), "{id}'s executor died with the agent");
    }
    c.start_agent(0);
    let after = c.wait_tasks(&key, "the same tasks RUNNING", secs(30), |t| {
        all_in(t, 2, "RUNNING") && ids(&active(t)) == running
    });
    assert_eq!(
        executor_pids(&c, &active(&after)),
        pids,
        "tasks were relaunched"
    );
    assert!(after.iter().all(|t| state(t) == "RUNNING"), "{after:#?}");
    // The restarted agent owns them: it carries out a kill.
    c.ok(&["job", "kill", &key]);
    let root = c.agents[0].root();
    for id in &running {
        c.wait_for(&format!("{id} to end"), secs(30), || {
            (!task_alive(&root, id)).then_some(())
        });
    }
}

#[test]
fn a_cut_agent_loses_its_tasks_to_the_other_and_kills_the_stale_one_when_back() {
    let test = "a_cut_agent_loses_its_tasks_to_the_other_and_kills_the_stale_one_when_back";
    if !have_netns(test) {
        return;
    }
    let mut c = Cluster::with_netns(test, 2);
    c.flag("agent-timeout", "5s");
    c.start_scheduler();
    c.add_agent("host-a", &["rack=a"]);
    c.add_agent("host-b", &["rack=b"]);
    c.start_agent(0);
    let key = c.create(&service("moved", 1, "exec sleep 3600"));
    let tasks = c.wait_tasks(&key, "RUNNING on host-a", secs(60), |t| {
        all_in(t, 1, "RUNNING")
    });
    let stale = task_id(active(&tasks)[0]).to_owned();
    assert_eq!(host_of(active(&tasks)[0]), "host-a");
    c.start_agent(1);
    c.net.as_ref().unwrap().cut(0);
    let tasks = c.wait_tasks(
        &key,
        "the task LOST and replaced on host-b",
        secs(60),
        |t| {
            find(t, &stale).is_some_and(|s| state(s) == "LOST")
                && all_in(t, 1, "RUNNING")
                && active(t).iter().all(|n| host_of(n) == "host-b")
        },
    );
    let replacement = task_id(active(&tasks)[0]).to_owned();
    assert_eq!(active(&tasks)[0]["ancestor_id"], stale.as_str());
    // Cut off, the agent keeps its task: only the scheduler knows it was replaced.
    assert!(
        task_alive(&c.agents[0].root(), &stale),
        "the stale task ended before its host came back"
    );
    c.net.as_ref().unwrap().heal(0);
    let root_a = c.agents[0].root();
    c.wait_for("the stale task to be killed on host-a", secs(60), || {
        (!task_alive(&root_a, &stale)).then_some(())
    });
    c.wait_host_alive("host-a");
    let tasks = c.tasks(&key);
    let act = active(&tasks);
    assert_eq!(act.len(), 1, "{tasks:#?}");
    assert_eq!(task_id(act[0]), replacement);
    assert!(task_alive(&c.agents[1].root(), &replacement));
}

#[test]
fn job_restart_replaces_the_chosen_instances_and_diff_compares_configs() {
    let test = "job_restart_replaces_the_chosen_instances_and_diff_compares_configs";
    if !have_netns(test) {
        return;
    }
    let c = cluster(test, 1, &[]);
    let job = service("restarted", 2, "exec sleep 3600");
    let key = c.create(&job);
    let before = c.wait_tasks(&key, "2 instances RUNNING", secs(60), |t| {
        all_in(t, 2, "RUNNING")
    });
    let old: BTreeMap<u64, String> = active(&before)
        .iter()
        .map(|t| (instance(t), task_id(t).to_owned()))
        .collect();
    let out = c.ok(&["job", "restart", &key, "--instances", "1"]);
    assert!(out.contains(&old[&1]), "{out}");
    let after = c.wait_tasks(&key, "instance 1 replaced and RUNNING", secs(60), |t| {
        all_in(t, 2, "RUNNING")
            && active(t)
                .iter()
                .any(|n| instance(n) == 1 && n["ancestor_id"] == old[&1].as_str())
    });
    let zero = active(&after)
        .into_iter()
        .find(|t| instance(t) == 0)
        .unwrap();
    assert_eq!(task_id(zero), old[&0], "instance 0 was restarted too");
    let root = c.agents[0].root();
    c.wait_for("the restarted task to end", secs(30), || {
        (!task_alive(&root, &old[&1])).then_some(())
    });

    // The config it runs, as given; a changed one differs (diff(1)'s exit codes).
    let same = c.job_file("restarted", &job);
    let out = c.hearth(&["job", "diff", &key, same.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", common::show(&out));
    let mut changed = job.clone();
    changed["instances"] = json!(3);
    let changed = c.job_file("restarted-3", &changed);
    let out = c.hearth(&["job", "diff", &key, changed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", common::show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("-  \"instances\": 2,") && text.contains("+  \"instances\": 3,"),
        "{text}"
    );
    let detail: Value = serde_json::from_str(&c.ok(&["job", "inspect", &key, "--json"])).unwrap();
    assert_eq!(detail["key"], key.as_str());
    assert_eq!(
        detail["config"]["task"]["processes"][0]["cmdline"],
        "exec sleep 3600"
    );
}

#[test]
fn host_drain_moves_the_tasks_off_the_host() {
    let test = "host_drain_moves_the_tasks_off_the_host";
    if !have_netns(test) {
        return;
    }
    let c = cluster(test, 2, &[]);
    let key = c.create(&service("drained", 2, "exec sleep 3600"));
    let tasks = c.wait_tasks(&key, "2 instances RUNNING", secs(60), |t| {
        all_in(t, 2, "RUNNING")
    });
    let drained = host_of(active(&tasks)[0]).to_owned();
    let other = if drained == "host-a" {
        "host-b"
    } else {
        "host-a"
    };
    let on_drained: Vec<String> = active(&tasks)
        .iter()
        .filter(|t| host_of(t) == drained)
        .map(|t| task_id(t).to_owned())
        .collect();
    let out = c.ok(&["host", "drain", &drained]);
    assert!(out.contains(&drained), "{out}");
    c.wait_tasks(
        &key,
        "both instances RUNNING off the drained host",
        secs(60),
        |t| all_in(t, 2, "RUNNING") && active(t).iter().all(|n| host_of(n) == other),
    );
    let root = c.agent(&drained).root();
    for id in &on_drained {
        c.wait_for(&format!("{id} to end on {drained}"), secs(30), || {
            (!task_alive(&root, id)).then_some(())
        });
    }
    let host = c.wait_for("the host DRAINED with no task", secs(30), || {
        c.hosts()
            .into_iter()
            .find(|h| h["host"] == drained.as_str() && h["mode"] == "DRAINED" && h["tasks"] == 0)
    });
    assert_eq!(host["alive"], true);
    c.ok(&["host", "activate", &drained]);
    let h = c.hosts();
    let mode = h.iter().find(|h| h["host"] == drained.as_str()).unwrap();
    assert_eq!(mode["mode"], "NONE", "{h:#?}");
}

#[test]
fn a_restored_backup_brings_the_jobs_back_and_kills_nothing_before_reconcile_confirm() {
    let test = "a_restored_backup_brings_the_jobs_back_and_kills_nothing_before_reconcile_confirm";
    if !have_netns(test) {
        return;
    }
    let mut c = cluster(test, 2, &[]);
    let kept = c.create(&service("kept", 1, "exec sleep 3600"));
    let tasks = c.wait_tasks(&kept, "kept RUNNING", secs(60), |t| all_in(t, 1, "RUNNING"));
    let kept_task = active(&tasks)[0].clone();
    let backup: Value =
        serde_json::from_str(&c.ok(&["scheduler", "backup", "now", "--json"])).unwrap();
    let name = backup["name"].as_str().unwrap().to_owned();
    let list = c.ok(&["scheduler", "backup", "list"]);
    assert!(list.contains(&name), "{list}");
    // Started after the backup: unknown to the restored scheduler.
    let later = c.create(&service("later", 1, "exec sleep 3600"));
    let tasks = c.wait_tasks(&later, "later RUNNING", secs(60), |t| {
        all_in(t, 1, "RUNNING")
    });
    let later_task = active(&tasks)[0].clone();
    c.kill_scheduler();
    let fresh = c.dir.path().join("restored");
    let out = c.ok(&[
        "scheduler",
        "restore",
        &name,
        "--backup-dir",
        c.backup_dir.to_str().unwrap(),
        "--data",
        fresh.to_str().unwrap(),
    ]);
    assert!(out.contains("reconcile --confirm"), "{out}");
    c.data = fresh;
    c.start_scheduler();
    c.wait_tasks(&kept, "the backed-up task RUNNING", secs(30), |t| {
        all_in(t, 1, "RUNNING") && task_id(active(t)[0]) == task_id(&kept_task)
    });
    let jobs: Vec<Value> = serde_json::from_str(&c.ok(&["job", "list", "--json"])).unwrap();
    let keys: Vec<&str> = jobs.iter().filter_map(|j| j["key"].as_str()).collect();
    assert_eq!(keys, vec![kept.as_str()]);
    // The agents report the unknown task: held, alive.
    let held = c.wait_for("the unknown task held", secs(30), || {
        let out = c.hearth(&["scheduler", "reconcile", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["hold"] == true
            && v["held"]
                .as_array()?
                .iter()
                .any(|h| h["task_id"] == task_id(&later_task)))
        .then_some(v)
    });
    let later_root = c.agent(host_of(&later_task)).root();
    let kept_root = c.agent(host_of(&kept_task)).root();
    assert!(
        task_alive(&later_root, task_id(&later_task)),
        "killed before confirm: {held}"
    );
    assert!(task_alive(&kept_root, task_id(&kept_task)));
    let human = c.ok(&["scheduler", "reconcile"]);
    assert!(human.contains(task_id(&later_task)), "{human}");
    c.ok(&["scheduler", "reconcile", "--confirm"]);
    c.wait_for("the unknown task killed after confirm", secs(60), || {
        (!task_alive(&later_root, task_id(&later_task))).then_some(())
    });
    assert!(task_alive(&kept_root, task_id(&kept_task)));
}

#[test]
fn agents_and_their_executors_must_present_the_agent_token() {
    let test = "agents_and_their_executors_must_present_the_agent_token";
    if !have_netns(test) {
        return;
    }
    let mut c = Cluster::with_netns(test, 2);
    let tokens = c.dir.path().join("agent-tokens");
    std::fs::write(&tokens, "# agents\nright-token-4f1c\n").unwrap();
    let wrong = c.dir.path().join("wrong-token");
    std::fs::write(&wrong, "wrong-token-0000\n").unwrap();
    let right = c.dir.path().join("right-token");
    std::fs::write(&right, "right-token-4f1c\n").unwrap();
    c.flag("agent-token-file", tokens.to_str().unwrap());
    c.start_scheduler();
    c.add_agent("host-a", &[]);
    c.add_agent("host-b", &[]);
    c.agents[0].extra_args = vec!["--token-file".into(), right.display().to_string()];
    c.agents[1].extra_args = vec!["--token-file".into(), wrong.display().to_string()];
    c.start_agent(0);
    c.spawn_agent(1);
    // The executors' status reports carry the token too, or nothing would reach RUNNING.
    let key = c.create(&service("tokened", 2, "exec sleep 3600"));
    let tasks = c.wait_tasks(&key, "2 instances RUNNING", secs(60), |t| {
        all_in(t, 2, "RUNNING")
    });
    assert!(active(&tasks).iter().all(|t| host_of(t) == "host-a"));
    let b_log = c.agents[1].log();
    c.wait_for("host-b's agent to be refused (401)", secs(30), || {
        netns::tail(&b_log, 200).contains("401").then_some(())
    });
    assert!(
        c.hosts().iter().all(|h| h["host"] != "host-b"),
        "an agent with a wrong token was registered: {:#?}",
        c.hosts()
    );
    let log = netns::tail(&c.agents[1].log(), 200);
    assert!(
        !log.contains("wrong-token-0000"),
        "the token leaked into the log"
    );
    let log = netns::tail(&c.scheduler_log(), 500);
    assert!(
        !log.contains("right-token-4f1c") && !log.contains("wrong-token-0000"),
        "a token leaked into the scheduler's log"
    );
}

/// `hearth scheduler hash-password` with the password on stdin.
fn hash(c: &Cluster, password: &str) -> String {
    let mut child = c
        .hearth_cmd(&["scheduler", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    let h = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(h.starts_with("$argon2id$"), "{h}");
    assert!(!h.contains(password));
    h
}

#[test]
fn a_wrong_password_is_401_and_a_missing_permission_is_403() {
    let test = "a_wrong_password_is_401_and_a_missing_permission_is_403";
    let mut c = Cluster::on_loopback(test);
    let ini = c.dir.path().join("security.ini");
    std::fs::write(
        &ini,
        format!(
            "[users]\nadmin = {}, admin\nbob = {}, creator\n\n[roles]\nadmin = *\n\
             creator = thrift.AuroraSchedulerManager:createJob:other\n",
            hash(&c, "admin-pw"),
            hash(&c, "bob-pw")
        ),
    )
    .unwrap();
    c.flag("security-ini", ini.to_str().unwrap());
    c.start_scheduler();
    let path = c.job_file("web", &service("web", 1, "exec sleep 3600"));
    let path = path.to_str().unwrap();
    let key = "e2e/root/test/web";

    // No credentials, and a wrong password: 401 with a challenge.
    let out = c.hearth(&["job", "create", key, path]);
    assert!(!out.status.success(), "{}", common::show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("--user"), "{err}");
    let out = c.hearth(&[
        "job",
        "create",
        key,
        path,
        "--user",
        "admin",
        "--password",
        "nope",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("401"), "{err}");
    assert!(!err.contains("nope"), "the password leaked: {err}");
    let body = json!({"key": key, "config": service("web", 1, "exec sleep 3600")}).to_string();
    let (code, resp) = netns::http_request(
        c.bind,
        "POST",
        "/api/v1/jobs",
        &[("Content-Type", "application/json")],
        &body,
    )
    .unwrap();
    assert_eq!(code, 401, "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{resp}"
    );

    // The right password without the permission: 403 naming it.
    let out = c.hearth(&[
        "job",
        "create",
        key,
        path,
        "--user",
        "bob",
        "--password",
        "bob-pw",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("403"), "{err}");
    assert!(err.contains("createJob"), "{err}");

    // The admin, from the environment: created. Reads stay open.
    let out = c
        .hearth_cmd(&["job", "create", key, path])
        .env("HEARTH_USER", "admin")
        .env("HEARTH_PASSWORD", "admin-pw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::show(&out));
    let list = c.ok(&["job", "list"]);
    assert!(list.contains(key), "{list}");
    // Credentials from ~/.netrc (HOME is the test's directory).
    let out = c.hearth(&["job", "kill", key, "--no-wait"]);
    assert!(!out.status.success(), "{}", common::show(&out));
    std::fs::write(
        c.dir.path().join(".netrc"),
        format!("machine {} login admin password admin-pw\n", c.bind.ip()),
    )
    .unwrap();
    c.ok(&["job", "kill", key, "--no-wait"]);
}

#[test]
fn hearth_dev_runs_the_example_job_and_ctrl_c_leaves_its_tasks_running() {
    let test = "hearth_dev_runs_the_example_job_and_ctrl_c_leaves_its_tasks_running";
    if !common::have_cgroups(test) {
        return;
    }
    // The dev directory is an Env's, so that its drop kills the tasks left running.
    let env = common::Env::new();
    let (port, observer) = (netns::free_port(), netns::free_port());
    let url = format!("http://127.0.0.1:{port}");
    let log = env.dir.path().join("dev.out");
    let dev = common::hearth()
        .arg("dev")
        .arg("--dir")
        .arg(env.dir.path())
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--observer-bind", &format!("127.0.0.1:{observer}")])
        .args(["--name", "devhost"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let client = |args: &[&str]| {
        common::hearth()
            .args(args)
            .env("HEARTH_SCHEDULER", &url)
            .env("HOME", env.dir.path())
            .output()
            .unwrap()
    };
    common::wait_until("hearth dev's banner", secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Ctrl-C"))
    })
    .unwrap();
    let banner = std::fs::read_to_string(&log).unwrap();
    assert!(
        banner.contains(&url) && banner.contains(&format!("http://127.0.0.1:{observer}")),
        "{banner}"
    );
    let key = "devcluster/root/devel/hello";
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/jobs/hello_service.json"
    );
    assert!(
        banner.contains("testdata/jobs/hello_service.json"),
        "{banner}"
    );
    let out = client(&["job", "create", key, example]);
    assert!(out.status.success(), "{}", common::show(&out));
    let mut tasks = Vec::new();
    common::wait_until("the example's 2 instances RUNNING", secs(60), || {
        let out = client(&["job", "status", key, "--json"]);
        tasks = serde_json::from_slice(&out.stdout).unwrap_or_default();
        all_in(&tasks, 2, "RUNNING")
    })
    .unwrap();
    assert!(active(&tasks).iter().all(|t| host_of(t) == "devhost"));
    let page = netns::http_get(format!("127.0.0.1:{observer}").parse().unwrap(), "/");
    assert!(page.is_some_and(|(code, _)| code == 200), "no observer");
    // Ctrl-C: the three stop, the tasks do not.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(dev.id()).unwrap()),
        nix::sys::signal::SIGINT,
    )
    .unwrap();
    let status = common::wait_output(dev, secs(30)).status;
    assert!(status.success(), "hearth dev exited {status}");
    assert!(netns::http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/health").is_none());
    for t in active(&tasks) {
        assert!(
            task_alive(&env.root(), task_id(t)),
            "{} stopped",
            task_id(t)
        );
    }
    let ids = netns::task_ids(&env.root());
    drop(env);
    netns::remove_cgroups(&ids);
}
