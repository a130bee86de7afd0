//! `hearth run` hands the task over to `hearth-executor`, the executable that holds the executor
//! alone (`src/run_cmd.rs`): the executor and its keeper are that program, in the process `hearth
//! run` started, and a `hearth-executor` of another build refuses to run.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Env, TestResult, show, states};
use hearth_checkpoints::record::ProcessState as P;
use serde_json::json;

fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

#[test]
fn the_executor_and_its_keeper_run_as_hearth_executor_in_the_process_hearth_run_started()
-> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "handed",
        json!([{"name": "p", "cmdline": "exec sleep 1000"}]),
        json!({}),
    );
    let child = env.spawn(&cfg, "handed", &[]);
    let pid = child.id();
    env.wait_replay(
        "handed",
        "the process to run",
        Duration::from_secs(20),
        |r| states(r, "p").contains(&P::Running),
    );
    let executor = exe(pid);
    assert_eq!(
        executor.file_name().and_then(|n| n.to_str()),
        Some("hearth-executor"),
        "the executor's executable is {}",
        executor.display()
    );
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let keepers: Vec<u32> = children
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .filter(|c| exe(*c) == executor)
        .collect();
    assert_eq!(keepers.len(), 1, "the executor's children: {children}");
    let k = env.kill("handed");
    assert!(k.status.success(), "{}", show(&k));
    let out = common::wait_output(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    Ok(())
}

#[test]
fn a_hearth_executor_of_another_version_refuses_to_run_and_creates_nothing() -> TestResult {
    let env = Env::new();
    let cfg = env.task(
        "other",
        json!([{"name": "p", "cmdline": "true"}]),
        json!({}),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth-executor"))
        .arg("--expect-version=0.0.0-another-build")
        .arg("run")
        .arg(&cfg)
        .arg("--root")
        .arg(env.root())
        .arg("--task-id")
        .arg("other")
        .output()?;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("but hearth is 0.0.0-another-build: install both from the same build"),
        "{stderr}"
    );
    assert!(!env.root().join("checkpoints").exists(), "{}", show(&out));
    Ok(())
}
