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

/// On cgroup v2, the task's pressure (PSI) and I/O bytes are sampled with its usage and shown in
/// the task JSON, on the task page and in `/metrics`.
#[tokio::test]
async fn v2_pressure_and_io_are_shown_in_json_page_and_metrics() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&TaskSpec::simple("psi", true, 1))?;
    let cg = fx.dir.path().join("no-cgroups/hearth/psi");
    std::fs::create_dir_all(&cg)?;
    std::fs::write(cg.join("cpu.stat"), "usage_usec 1000\n")?;
    std::fs::write(cg.join("memory.current"), "4096\n")?;
    std::fs::write(
        cg.join("cpu.pressure"),
        "some avg10=7.25 avg60=1.00 avg300=0.50 total=1\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    )?;
    std::fs::write(
        cg.join("memory.pressure"),
        "some avg10=2.00 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=1\n",
    )?;
    std::fs::write(
        cg.join("io.stat"),
        "8:0 rbytes=2048 wbytes=1024 rios=1 wios=1\n",
    )?;
    let obs = fx.observer()?;
    obs.sample();
    let app = app(obs);
    let (_, v) = get_json(&app, "/j/task/psi").await?;
    let p = &v["psi"]["pressure"];
    assert_eq!(p["cpu_some_avg10"], 7.25, "{v}");
    assert_eq!(p["memory_full_avg10"], 0.5, "{v}");
    assert_eq!(p["io_read_bytes"], 2048, "{v}");
    let (_, _, page) = common::get(&app, "/task/psi").await?;
    assert!(
        page.contains("Pressure (10 s)") && page.contains("7.25 %"),
        "{page}"
    );
    let (_, _, metrics) = common::get(&app, "/metrics").await?;
    assert!(
        metrics
            .lines()
            .any(|l| l == "hearth_task_cpu_pressure_some_avg10{task_id=\"psi\"} 7.25"),
        "{metrics}"
    );
    Ok(())
}
