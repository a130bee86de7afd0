//! Crash survival: the executor is `kill -9`ed at several points of a task's life and started again
//! with the same command; every exit status must reach the checkpoint and no process may ever run
//! twice at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Env, TestResult, runs, show, wait_output, wait_until};
use hearth_checkpoints::record::{ProcessState, TaskState};
use serde_json::json;

const PROCESSES: usize = 20;

/// `(pid, run)` starts and `(pid, rc)` ends, in ledger order, per process.
#[derive(Debug, Default)]
struct Ledger {
    lines: Vec<(String, i32, i32)>,
}

fn ledgers(env: &Env, task_id: &str) -> BTreeMap<String, Ledger> {
    let mut out = BTreeMap::new();
    for i in 0..PROCESSES {
        let name = format!("p{i:02}");
        let text = std::fs::read_to_string(env.sandbox(task_id).join(format!("ledger.{name}")))
            .unwrap_or_default();
        let mut l = Ledger::default();
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() == 3 {
                l.lines.push((
                    w[0].to_owned(),
                    w[1].parse().unwrap(),
                    w[2].parse().unwrap(),
                ));
            }
        }
        out.insert(name, l);
    }
    out
}

fn count(env: &Env, task_id: &str, kind: &str) -> usize {
    ledgers(env, task_id)
        .values()
        .map(|l| l.lines.iter().filter(|x| x.0 == kind).count())
        .sum()
}

/// `kill -9` the executor and reap it.
fn kill9(mut exec: std::process::Child) {
    exec.kill().unwrap();
    exec.wait().unwrap();
}

#[test]
fn kill_9_at_every_stage_loses_no_exit_status_and_never_runs_a_process_twice() -> TestResult {
    let env = Env::new();
    let procs: Vec<_> = (0..PROCESSES)
        .map(|i| {
            // First runs exit 0, 1 or 2 after a staggered sleep; a retry exits 0.
            json!({
                "name": format!("p{i:02}"),
                "max_failures": 3,
                "min_duration": 0,
                "cmdline": format!(
                    "L=ledger.$HEARTH_PROCESS; echo \"start $$ $HEARTH_RUN\" >> $L; sleep {}; \
                     if [ $HEARTH_RUN -ge 1 ]; then rc=0; else rc={}; fi; echo \"end $$ $rc\" >> $L; exit $rc",
                    0.15 * (i % 10) as f64 + 0.1,
                    i % 3
                ),
            })
        })
        .collect();
    let cfg = env.task("crashy", json!(procs), json!({"max_failures": 0}));
    let id = "crashy";
    let runner = env.root().join("checkpoints").join(id).join("runner");

    // 1. Before the launches: as soon as the checkpoint exists.
    let exec = env.spawn(&cfg, id, &[]);
    wait_until("the checkpoint", Duration::from_secs(20), || {
        runner.exists()
    })
    .unwrap();
    kill9(exec);

    // 2. During the launches: a few processes have started.
    let exec = env.spawn(&cfg, id, &[]);
    wait_until("five starts", Duration::from_secs(20), || {
        count(&env, id, "start") >= 5
    })
    .unwrap();
    kill9(exec);
    // Let some processes end while no executor is there.
    let ends = count(&env, id, "end");
    wait_until(
        "an exit while the executor is down",
        Duration::from_secs(20),
        || count(&env, id, "end") > ends,
    )
    .unwrap();

    // 3. After the launches, while retries run.
    let exec = env.spawn(&cfg, id, &[]);
    wait_until("twelve exits", Duration::from_secs(30), || {
        count(&env, id, "end") >= 12
    })
    .unwrap();
    kill9(exec);

    // 4. Finish.
    let exec = env.spawn(&cfg, id, &[]);
    let out = wait_output(exec, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    let replay = env.replay(id);
    assert_eq!(replay.state(), TaskState::Success);
    for (name, ledger) in ledgers(&env, id) {
        // Never two runs at once: the ledger alternates start, end.
        for (i, line) in ledger.lines.iter().enumerate() {
            let want = if i % 2 == 0 { "start" } else { "end" };
            assert_eq!(
                line.0, want,
                "{name}: ledger out of order: {:?}",
                ledger.lines
            );
        }
        // Every real run is in the checkpoint with the status it really returned.
        let real: BTreeMap<i32, i32> = ledger
            .lines
            .iter()
            .filter(|l| l.0 == "end")
            .map(|l| (l.1, l.2))
            .collect();
        let recorded: Vec<_> = runs(&replay, &name)
            .iter()
            .filter(|r| r.pid.is_some())
            .collect();
        assert_eq!(
            recorded.len(),
            real.len(),
            "{name}: runs {:?} vs ledger {:?}",
            runs(&replay, &name),
            ledger.lines
        );
        for r in recorded {
            let pid = r.pid.unwrap();
            let rc = real.get(&pid).copied();
            assert_eq!(
                r.return_code, rc,
                "{name}: pid {pid} recorded {r:?}, really returned {rc:?}"
            );
            let expect = if rc == Some(0) {
                ProcessState::Success
            } else {
                ProcessState::Failed
            };
            assert_eq!(r.state, expect, "{name}: {r:?}");
        }
        assert_eq!(
            runs(&replay, &name).last().unwrap().state,
            ProcessState::Success,
            "{name}"
        );
    }
    Ok(())
}

#[test]
fn inspect_shows_exits_the_keeper_saw_while_the_executor_was_down() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "down",
        json!([
            {"name": "quick", "ephemeral": true, "cmdline": "sleep 0.3; exit 4"},
            {"name": "slow", "cmdline": "exec sleep 1000"},
        ]),
        json!({}),
    );
    let exec = env.spawn(&cfg, "down", &[]);
    wait_until("both processes running", Duration::from_secs(20), || {
        env.root().join("checkpoints/down/runner").exists()
            && ["quick", "slow"].iter().all(|p| {
                runs(&env.replay("down"), p)
                    .last()
                    .is_some_and(|r| r.state == ProcessState::Running)
            })
    })
    .unwrap();
    kill9(exec);
    let quick_pid = runs(&env.replay("down"), "quick")[0].pid.unwrap();
    wait_until("quick to exit", Duration::from_secs(20), || {
        !common::alive(quick_pid)
    })
    .unwrap();
    let inspect = || {
        let out = common::hearth()
            .args(["inspect", "down", "--json", "--root"])
            .arg(env.root())
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    wait_until(
        "the keeper's record of the exit",
        Duration::from_secs(5),
        || inspect()["processes"]["quick"][0]["state"] == "FAILED",
    )
    .unwrap();
    let shown = inspect();
    assert_eq!(shown["processes"]["quick"][0]["return_code"], 4);
    assert_eq!(shown["processes"]["slow"][0]["state"], "RUNNING");

    // A new executor adopts the task and records the exit for good; then tear it down.
    let exec = env.spawn(&cfg, "down", &[]);
    wait_until(
        "the exit in the runner stream",
        Duration::from_secs(20),
        || runs(&env.replay("down"), "quick")[0].state == ProcessState::Failed,
    )
    .unwrap();
    let k = env.kill("down");
    assert!(k.status.success(), "{}", show(&k));
    let out = wait_output(exec, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let r = env.replay("down");
    assert_eq!(runs(&r, "quick")[0].return_code, Some(4));
    assert_eq!(runs(&r, "slow")[0].state, ProcessState::Killed);
    Ok(())
}

#[test]
fn exits_the_keeper_recorded_survive_the_keeper_itself_dying() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "keeperdies",
        json!([
            {"name": "quick", "ephemeral": true, "cmdline": "sleep 0.2; exit 5"},
            {"name": "slow", "min_duration": 0, "cmdline": "exec sleep 1000"},
        ]),
        json!({}),
    );
    let exec = env.spawn(&cfg, "keeperdies", &[]);
    wait_until("both processes running", Duration::from_secs(20), || {
        env.root().join("checkpoints/keeperdies/runner").exists()
            && ["quick", "slow"].iter().all(|p| {
                runs(&env.replay("keeperdies"), p)
                    .last()
                    .is_some_and(|r| r.state == ProcessState::Running)
            })
    })
    .unwrap();
    let first = env.replay("keeperdies");
    let keeper = runs(&first, "slow")[0].coordinator_pid.unwrap();
    let old_slow = runs(&first, "slow")[0].pid.unwrap();
    kill9(exec);
    let keeper_stream = env.root().join("checkpoints/keeperdies/keeper");
    wait_until(
        "the keeper to record quick's exit",
        Duration::from_secs(20),
        || {
            let bytes = std::fs::read(&keeper_stream).unwrap_or_default();
            hearth_checkpoints::stream::read_records(&bytes)
                .1
                .iter()
                .any(|(_, r)| {
                    matches!(r, hearth_checkpoints::record::Record::Process(p)
                if p.process == "quick" && p.return_code == Some(5))
                })
        },
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::SIGKILL,
    )?;
    wait_until("the keeper to die", Duration::from_secs(5), || {
        !common::alive(keeper)
    })
    .unwrap();

    let exec = env.spawn(&cfg, "keeperdies", &[]);
    wait_until("slow to run again", Duration::from_secs(20), || {
        runs(&env.replay("keeperdies"), "slow").len() >= 2
            && runs(&env.replay("keeperdies"), "slow")[1].state == ProcessState::Running
    })
    .unwrap();
    assert!(
        !common::alive(old_slow),
        "the orphaned first run of slow was left running"
    );
    // A shell that gets SIGTERM while it is still starting may swallow it (bash's own handlers):
    // kill once the run is the `sleep` itself.
    let new_slow = runs(&env.replay("keeperdies"), "slow")[1].pid.unwrap();
    wait_until("slow's shell to exec sleep", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{new_slow}/comm")).is_ok_and(|c| c.trim() == "sleep")
    })
    .unwrap();
    let k = env.kill("keeperdies");
    assert!(k.status.success(), "{}", show(&k));
    let out = wait_output(exec, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let r = env.replay("keeperdies");
    let quick = &runs(&r, "quick")[0];
    assert_eq!(
        (quick.state, quick.return_code),
        (ProcessState::Failed, Some(5))
    );
    assert_eq!(runs(&r, "slow")[0].state, ProcessState::Lost);
    assert_eq!(runs(&r, "slow")[1].state, ProcessState::Killed);
    Ok(())
}

#[test]
fn kill_adopts_a_task_whose_executor_died_and_tears_it_down() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "orphan",
        json!([{"name": "server", "cmdline": "exec sleep 1000"}]),
        json!({"finalization_wait": 5}),
    );
    let exec = env.spawn(&cfg, "orphan", &[]);
    wait_until("the process to run", Duration::from_secs(20), || {
        env.root().join("checkpoints/orphan/runner").exists()
            && runs(&env.replay("orphan"), "server")
                .last()
                .is_some_and(|r| r.state == ProcessState::Running)
    })
    .unwrap();
    let pid = runs(&env.replay("orphan"), "server")[0].pid.unwrap();
    wait_until("the shell to exec sleep", Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    })
    .unwrap();
    kill9(exec);
    let k = env.kill("orphan");
    assert!(k.status.success(), "{}", show(&k));
    assert!(
        String::from_utf8_lossy(&k.stdout).contains("KILLED"),
        "{}",
        show(&k)
    );
    assert!(!common::alive(pid), "the adopted process is still running");
    let r = env.replay("orphan");
    assert_eq!(r.state(), TaskState::Killed);
    assert_eq!(runs(&r, "server")[0].state, ProcessState::Killed);
    Ok(())
}

#[test]
fn an_executor_killed_during_teardown_is_restarted_and_ends_the_task_killed() -> TestResult {
    let env = Env::new();
    // The shell shrugs off SIGTERM, so the task stays in CLEANING until the SIGKILL.
    let cfg = env.task(
        "tear",
        json!([{"name": "stubborn", "cmdline":
            "trap 'echo term >> got_term' TERM; touch ready; while true; do sleep 0.1; done"}]),
        json!({"finalization_wait": 3}),
    );
    let exec = env.spawn(&cfg, "tear", &[]);
    wait_until("the shell to set its trap", Duration::from_secs(20), || {
        env.sandbox("tear").join("ready").exists()
    })
    .unwrap();
    let term = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(exec.id() as i32),
        nix::sys::signal::SIGTERM,
    );
    assert!(term.is_ok(), "{term:?}");
    wait_until("CLEANING to be recorded", Duration::from_secs(10), || {
        env.replay("tear").state() == TaskState::Cleaning
    })
    .unwrap();
    kill9(exec);
    let cleaning = env
        .replay("tear")
        .statuses
        .into_iter()
        .rfind(|s| s.state == TaskState::Cleaning)
        .unwrap();
    assert_eq!(cleaning.outcome, Some(TaskState::Killed), "{cleaning:?}");

    let out = env.run(&cfg, "tear", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let r = env.replay("tear");
    assert_eq!(r.state(), TaskState::Killed);
    let run = &runs(&r, "stubborn")[0];
    assert_eq!(run.state, ProcessState::Killed);
    assert!(!common::alive(run.pid.unwrap()), "the process survived");
    assert!(env.sandbox("tear").join("got_term").exists());
    Ok(())
}

/// Regression (phantom LOST runs): an executor killed after recording a run FORKED but before the
/// keeper received the spawn request used to record that run LOST on restart (`lost: no keeper
/// knows this run`) although the process never existed. The keeper lived, so the restarted
/// executor must send the request again and the run must really happen, once.
#[test]
fn phantom_lost_runs_regression_a_kill_between_forked_and_the_spawn_request_loses_nothing()
-> TestResult {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let env = Env::new();
    let procs: Vec<_> = (0..3)
        .map(|i| {
            // Runs 0..8 fail, run 9 succeeds: plenty of launches to crash in.
            json!({
                "name": format!("p{i:02}"),
                "max_failures": 0,
                "min_duration": 0,
                "cmdline": "L=ledger.$HEARTH_PROCESS; echo \"start $$ $HEARTH_RUN\" >> $L; \
                            if [ $HEARTH_RUN -ge 9 ]; then rc=0; else rc=1; fi; \
                            echo \"end $$ $rc\" >> $L; exit $rc",
            })
        })
        .collect();
    let cfg = env.task("phantom", json!(procs), json!({"max_failures": 0}));
    let id = "phantom";
    let mut crashes = 0;
    for visit in [1, 2, 3, 1, 4, 2, 1, 3, 2, 1, 5, 1, 2, 3, 1, 2, 1, 1, 2, 1] {
        // Output to a file, not a pipe: the keeper inherits it and outlives the executor.
        let log = env.root().with_file_name(format!("exec-{crashes}.log"));
        let mut child = env
            .run_cmd(&cfg, id, &[])
            .env(
                hearth_executor::failpoint::ENV,
                format!("after-forked:{visit}"),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .unwrap();
        let mut status = None;
        wait_until("the executor to end", Duration::from_secs(60), || {
            status = child.try_wait().unwrap();
            status.is_some()
        })
        .unwrap();
        let status = status.unwrap();
        if status.signal() != Some(libc::SIGKILL) {
            let stderr = std::fs::read_to_string(&log)?;
            assert_eq!(status.code(), Some(0), "{stderr}");
            break;
        }
        crashes += 1;
        let replay = env.replay(id);
        let lost: Vec<_> = replay
            .processes
            .values()
            .flatten()
            .filter(|r| r.state == ProcessState::Lost)
            .collect();
        assert!(lost.is_empty(), "after crash {crashes}: LOST runs {lost:?}");
    }
    assert!(crashes >= 10, "only {crashes} crashes happened");
    if env.replay(id).state() != TaskState::Success {
        let out = env.run(&cfg, id, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    }
    let replay = env.replay(id);
    assert_eq!(replay.state(), TaskState::Success);
    for i in 0..3 {
        let name = format!("p{i:02}");
        let runs = runs(&replay, &name);
        assert!(
            runs.iter().all(|r| r.state != ProcessState::Lost),
            "{name}: {runs:?}"
        );
        // Every run ran exactly once, in order, and is recorded with what it returned.
        let text = std::fs::read_to_string(env.sandbox(id).join(format!("ledger.{name}")))?;
        let starts: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("start "))
            .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(starts, (0..10).collect::<Vec<_>>(), "{name}: ledger {text}");
        let states: Vec<_> = runs.iter().map(|r| r.state).collect();
        let mut want = vec![ProcessState::Failed; 9];
        want.push(ProcessState::Success);
        assert_eq!(states, want, "{name}");
    }
    Ok(())
}

/// When the keeper dies under the executor, the executor's error says how it died (its exit
/// status, read from the kernel), not only that the connection closed.
#[test]
fn a_keeper_killed_under_the_executor_is_named_with_its_signal() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "keeperdies",
        json!([{"name": "p", "cmdline": "exec sleep 1000"}]),
        json!({}),
    );
    let exec = env.spawn(&cfg, "keeperdies", &["--no-cgroups"]);
    // The keeper's pid is in the RUNNING record (its coordinator pid).
    let mut keeper = None;
    let running = wait_until("p to run", Duration::from_secs(30), || {
        keeper = env.try_replay("keeperdies").and_then(|r| {
            runs(&r, "p")
                .last()
                .filter(|x| x.state == ProcessState::Running)
                .and_then(|x| x.coordinator_pid)
        });
        keeper.is_some()
    });
    if let Some(k) = keeper {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(k),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let out = wait_output(exec, Duration::from_secs(30));
    running.unwrap();
    let keeper = keeper.ok_or("no keeper pid recorded")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stderr.contains(&format!(
            "the keeper closed its connection unexpectedly; the keeper (pid {keeper}) was killed by SIGKILL"
        )),
        "{}",
        show(&out)
    );
    Ok(())
}
