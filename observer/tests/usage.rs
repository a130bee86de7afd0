//! Resource sampling against a real process (`/proc`) and a fixture cgroup tree.
// A test, off the server's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::{Child, Command};

use common::{Fixture, RunSpec, TaskSpec, TestResult, get_json};
use hearth_checkpoints::record::{ProcessState, ProcessStatus, Record};
use hearth_observer::app;

/// Kills the helper process when the test ends.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn running_process_memory_comes_from_proc_when_there_is_no_cgroup() -> TestResult {
    let fx = Fixture::new()?;
    let mut spec = TaskSpec::simple("live", true, 1);
    spec.processes = vec![(
        "sleeper".into(),
        vec![RunSpec {
            end: None,
            stdout: String::new(),
        }],
    )];
    let mut w = fx.write_task(&spec)?;
    let child = Reap(Command::new("sleep").arg("60").spawn()?);
    let pid = i32::try_from(child.0.id())?;
    // The fixture wrote RUNNING with a made-up pid: record a second run with the real one.
    for (seq, state) in [
        (3, ProcessState::Killed),
        (4, ProcessState::Waiting),
        (5, ProcessState::Forked),
        (6, ProcessState::Running),
    ] {
        w.append(&Record::Process(ProcessStatus {
            seq,
            process: "sleeper".into(),
            state: Some(state),
            pid: (state == ProcessState::Running).then_some(pid),
            return_code: (state == ProcessState::Killed).then_some(137),
            ..ProcessStatus::default()
        }))?;
    }
    w.commit()?;
    let obs = fx.observer()?;
    obs.sample();
    let app = app(obs);
    let (_, v) = get_json(&app, "/j/process/live/sleeper").await?;
    assert_eq!(v["pid"], pid);
    let ram = v["used"]["ram"].as_u64().ok_or(format!("no ram in {v}"))?;
    assert!(ram > 0, "{v}");
    let (_, t) = get_json(&app, "/j/task/live").await?;
    assert_eq!(t["live"]["resource_consumption"]["ram"], ram);
    Ok(())
}

#[tokio::test]
async fn task_cpu_rate_and_memory_come_from_its_cgroup() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&TaskSpec::simple("cg", true, 1))?;
    let cg = fx.dir.path().join("no-cgroups");
    let cpu = cg.join("cpuacct/hearth/cg");
    let mem = cg.join("memory/hearth/cg");
    std::fs::create_dir_all(&cpu)?;
    std::fs::create_dir_all(&mem)?;
    std::fs::write(cpu.join("cpuacct.usage"), "1000000000")?;
    std::fs::write(mem.join("memory.usage_in_bytes"), "5242880")?;
    let obs = fx.observer()?;
    obs.sample();
    // A rate needs two readings; the counter grows by 10 s of CPU in between.
    std::fs::write(cpu.join("cpuacct.usage"), "11000000000")?;
    obs.sample();
    let cell = obs.task("cg").ok_or("no task")?;
    let usage = cell.summary().usage;
    assert_eq!(usage.ram, Some(5_242_880));
    assert!(usage.cpu.is_some_and(|c| c > 0.0), "{usage:?}");
    assert!(usage.disk.is_some_and(|d| d > 0), "{usage:?}");
    let (_, _, metrics) = common::get(&app(obs), "/metrics").await?;
    assert!(
        metrics
            .lines()
            .any(|l| l == "hearth_task_memory_bytes{task_id=\"cg\"} 5242880"),
        "{metrics}"
    );
    Ok(())
}
