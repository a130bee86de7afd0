//! The scheduler benchmark: `cargo bench -p hearth-scheduler --bench scheduler --features server`.
//!
//! Simulated agents (no processes) against the real core and a real SQLite file in WAL mode with
//! `synchronous=FULL`; every answer waits for the group commit that made its change durable.
//!
//! 1. **Placements**: 100 agents register; 100 batch jobs of 100 instances are created by 8
//!    concurrent clients; each create is answered once its 100 tasks are PENDING *and* placed
//!    (ASSIGNED), durably. Reported: placements/s.
//! 2. **Transitions**: 10,000 simulated executors report STARTING, RUNNING, FINISHED for their
//!    task, one update at a time, each waiting for its acknowledgement (as `hearth run` does),
//!    500 at once. Reported: durable transitions/s of these 30,000 reports, and for the whole
//!    life PENDING → ASSIGNED → STARTING → RUNNING → FINISHED (50,000 transitions).
//!    Then the same for 2,000 more tasks through the HTTP layer (the axum router in process,
//!    JSON in and out, no socket).
//! 3. **Restart**: 100,000 tasks (RUNNING, four events each) written to a fresh data dir; a
//!    child process starts the scheduler on it and answers a first request. Reported: time to
//!    serving, and the child's RSS with 100,000 tasks loaded.
//!
//! Environment: `HEARTH_BENCH_TASKS` (default 10000) and `HEARTH_BENCH_RESTART_TASKS` (default
//! 100000) change the sizes; `HEARTH_BENCH_RESTART_DIR=D` keeps (and reuses) the restart data
//! dir; `HEARTH_BENCH_PHASES=1` also times the phases of loading.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use hearth_scheduler::api::{ScheduleStatus, StatusUpdate};
use hearth_scheduler::core::now_ms;
use hearth_scheduler::lifecycle::LifecycleConfig;
use hearth_scheduler::server::{SchedulerConfig, start};
use hearth_scheduler::state::{State, StatusReply};
use hearth_scheduler::storage::{DB_FILE, SqliteStorage, commit_state};
use hearth_scheduler::wire::{AgentSync, JobKey, PortRange, ResourceVec};
use serde_json::json;

const HOSTS: usize = 100;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn agent(i: usize) -> AgentSync {
    AgentSync {
        host: format!("host{i:03}"),
        agent_id: format!("agent{i:03}"),
        resources: ResourceVec {
            cpu: 1000.0,
            ram: 1 << 40,
            disk: 1 << 40,
        },
        ports: PortRange {
            first: 20000,
            last: 30000,
        },
        attributes: BTreeMap::from([("rack".to_owned(), format!("r{}", i % 10))]),
        tasks: Vec::new(),
        acked_epoch: 0,
        wait_ms: 0,
    }
}

fn job_config(instances: usize) -> serde_json::Value {
    json!({
        "instances": instances, "service": false,
        "task": {"name": "bench",
                 "processes": [{"name": "p", "cmdline": "work --port {{thermos.ports[http]}}"}],
                 "resources": {"cpu": 0.1, "ram": 16777216, "disk": 16777216}}
    })
}

fn job_key(j: usize) -> JobKey {
    format!("bench/www/prod/job{j:04}").parse().unwrap()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    if let Ok(dir) = std::env::var("HEARTH_BENCH_RESTART_CHILD") {
        restart_child(&dir);
        return;
    }
    let tasks = env_usize("HEARTH_BENCH_TASKS", 10_000);
    let restart_tasks = env_usize("HEARTH_BENCH_RESTART_TASKS", 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("hearth scheduler benchmark (SQLite WAL, synchronous=FULL, group commit)");
    rt.block_on(lifecycle_bench(tasks));
    restart_bench(restart_tasks);
}

async fn lifecycle_bench(tasks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SchedulerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    let started = start(&cfg).unwrap();
    let core = started.core.clone();
    for i in 0..HOSTS {
        let a = agent(i);
        core.call(move |s, now| {
            let _ = s.agent_sync(&a, now);
        })
        .await
        .unwrap();
    }
    let per_job = 100.min(tasks);
    let jobs = tasks.div_ceil(per_job);
    let commits_before = core
        .stats
        .commits
        .load(std::sync::atomic::Ordering::Relaxed);

    // 1. Create and place.
    let began = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let core = core.clone();
        let next = next.clone();
        clients.push(tokio::spawn(async move {
            loop {
                let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if j >= jobs {
                    return;
                }
                let r = core
                    .call(move |s, now| {
                        let r = s.create_job(job_key(j), job_config(per_job), "bench", now);
                        // Place inside the same batch, before the commit that answers.
                        s.place_pending(now);
                        r
                    })
                    .await
                    .unwrap();
                assert!(r.is_ok(), "{r:?}");
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let place_time = began.elapsed();
    let ids: Vec<String> = core
        .call(|s: &mut State, _| {
            s.tasks
                .values()
                .filter(|t| t.state == ScheduleStatus::Assigned)
                .map(|t| t.id.clone())
                .collect()
        })
        .await
        .unwrap();
    let total = jobs * per_job;
    assert_eq!(ids.len(), total, "every task placed");
    println!(
        "placements: {total} tasks created and placed (durable) in {:.3} s = {:.0} placements/s",
        place_time.as_secs_f64(),
        total as f64 / place_time.as_secs_f64()
    );

    // 2. Executors report STARTING, RUNNING, FINISHED, one at a time each.
    let began = Instant::now();
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let mut execs = Vec::new();
    for _ in 0..500 {
        let core = core.clone();
        let queue = queue.clone();
        execs.push(tokio::spawn(async move {
            loop {
                let Some(id) = queue.lock().unwrap().pop() else {
                    return;
                };
                for (seq, state) in [
                    ScheduleStatus::Starting,
                    ScheduleStatus::Running,
                    ScheduleStatus::Finished,
                ]
                .into_iter()
                .enumerate()
                {
                    let u = StatusUpdate {
                        task_id: id.clone(),
                        seq: seq as u64 + 1,
                        state,
                        reason: None,
                        timestamp_ms: now_ms(),
                    };
                    let r = core
                        .call(move |s, now| s.status_update(&u, now))
                        .await
                        .unwrap();
                    assert!(matches!(r, StatusReply::Ack(a) if !a.duplicate));
                }
            }
        }));
    }
    for e in execs {
        e.await.unwrap();
    }
    let report_time = began.elapsed();
    let finished = core
        .call(|s: &mut State, _| {
            s.tasks
                .values()
                .filter(|t| t.state == ScheduleStatus::Finished)
                .count()
        })
        .await
        .unwrap();
    assert_eq!(finished, total);
    let commits = core
        .stats
        .commits
        .load(std::sync::atomic::Ordering::Relaxed)
        - commits_before;
    println!(
        "transitions: {} status reports (STARTING, RUNNING, FINISHED) applied durably in {:.3} s = {:.0} durable transitions/s",
        3 * total,
        report_time.as_secs_f64(),
        3.0 * total as f64 / report_time.as_secs_f64()
    );
    let whole = place_time + report_time;
    println!(
        "whole lifecycle: {} transitions (PENDING, ASSIGNED, STARTING, RUNNING, FINISHED) in {:.3} s = {:.0} durable transitions/s, {commits} commits",
        5 * total,
        whole.as_secs_f64(),
        5.0 * total as f64 / whole.as_secs_f64()
    );
    http_reports(&started, jobs).await;
    let (buckets, sum_us) = *core.stats.latency.lock().unwrap();
    let n: u64 = buckets.iter().sum();
    println!(
        "storage: {n} commits, mean commit latency {:.2} ms",
        sum_us as f64 / 1000.0 / n.max(1) as f64
    );
    drop(core);
    let hearth_scheduler::server::Started {
        core, app, thread, ..
    } = started;
    drop(core);
    drop(app);
    thread.join().unwrap().unwrap();
}

/// The same reports through the HTTP layer: the axum router in process (no socket), JSON in
/// and out, for 2,000 more tasks.
async fn http_reports(started: &hearth_scheduler::server::Started, first_job: usize) {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let router = hearth_scheduler::http::app(started.app.clone());
    let core = started.core.clone();
    let jobs = 20;
    let mut ids = Vec::new();
    for j in first_job..first_job + jobs {
        let r = core
            .call(move |s, now| {
                let r = s.create_job(job_key(j), job_config(100), "bench", now);
                s.place_pending(now);
                r
            })
            .await
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
        let key = job_key(j);
        let mut more: Vec<String> = core
            .call(move |s: &mut State, _| s.jobs[&key].active.values().cloned().collect())
            .await
            .unwrap();
        ids.append(&mut more);
    }
    let n = ids.len();
    let began = Instant::now();
    let queue = Arc::new(std::sync::Mutex::new(ids));
    let mut execs = Vec::new();
    for _ in 0..500 {
        let router = router.clone();
        let queue = queue.clone();
        execs.push(tokio::spawn(async move {
            loop {
                let Some(id) = queue.lock().unwrap().pop() else {
                    return;
                };
                for (seq, state) in ["STARTING", "RUNNING", "FINISHED"].into_iter().enumerate() {
                    let body = json!({"task_id": id, "seq": seq + 1, "state": state,
                                      "timestamp_ms": now_ms()});
                    let req = axum::http::Request::post("/api/v1/status")
                        .header("content-type", "application/json")
                        .body(Body::from(body.to_string()))
                        .unwrap();
                    let resp = router.clone().oneshot(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    let _ = resp.into_body().collect().await.unwrap();
                }
            }
        }));
    }
    for e in execs {
        e.await.unwrap();
    }
    let t = began.elapsed();
    println!(
        "transitions over HTTP (axum router in process, JSON, no socket): {} reports in {:.3} s = {:.0} durable transitions/s",
        3 * n,
        t.as_secs_f64(),
        3.0 * n as f64 / t.as_secs_f64()
    );
}

/// Write `n` RUNNING tasks into a fresh data dir, then time a child process starting on it.
fn restart_bench(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = match std::env::var_os("HEARTH_BENCH_RESTART_DIR") {
        Some(d) => std::path::PathBuf::from(d),
        None => dir.path().join("data"),
    };
    std::fs::create_dir_all(&data).unwrap();
    let began = Instant::now();
    if !data.join(DB_FILE).exists() {
        let mut storage = SqliteStorage::open(&data.join(DB_FILE)).unwrap();
        let mut state = State::new(LifecycleConfig::default(), 60_000, None);
        let now = now_ms();
        for i in 0..HOSTS {
            let _ = state.agent_sync(&agent(i), now);
        }
        let per_job = 1000.min(n);
        for j in 0..n.div_ceil(per_job) {
            state
                .create_job(job_key(j), job_config(per_job), "bench", now)
                .unwrap();
            state.place_pending(now);
            let ids: Vec<String> = state.jobs[&job_key(j)].active.values().cloned().collect();
            for (k, id) in ids.iter().enumerate() {
                for (seq, st) in [ScheduleStatus::Starting, ScheduleStatus::Running]
                    .into_iter()
                    .enumerate()
                {
                    let u = StatusUpdate {
                        task_id: id.clone(),
                        seq: seq as u64 + 1,
                        state: st,
                        reason: Some(format!("instance {k} is healthy")),
                        timestamp_ms: now,
                    };
                    state.status_update(&u, now);
                }
            }
            commit_state(&mut storage, &mut state).unwrap();
        }
        storage.checkpoint().unwrap();
    }
    let bytes = std::fs::metadata(data.join(DB_FILE)).unwrap().len();
    println!(
        "restart: wrote {n} RUNNING tasks ({:.1} MiB database) in {:.1} s",
        bytes as f64 / (1 << 20) as f64,
        began.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .env("HEARTH_BENCH_RESTART_CHILD", &data)
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        std::process::exit(1);
    }
}

/// In a fresh process: start on `dir`, answer one request, report time and RSS.
fn restart_child(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let rss_before = rss_kib();
    if std::env::var_os("HEARTH_BENCH_PHASES").is_some() {
        // Where loading spends its time (a separate pass, before the measured start).
        let t = Instant::now();
        let mut st = SqliteStorage::open(&std::path::Path::new(dir).join(DB_FILE)).unwrap();
        let opened = t.elapsed();
        let snap = hearth_scheduler::storage::Storage::load(&mut st).unwrap();
        let read = t.elapsed();
        let mut state = State::new(LifecycleConfig::default(), 60_000, None);
        state.load(
            snap.meta,
            snap.configs,
            snap.jobs,
            snap.tasks,
            snap.hosts,
            now_ms(),
        );
        let built = t.elapsed();
        println!(
            "restart phases: open {:.3} s, read rows {:.3} s, build model {:.3} s",
            opened.as_secs_f64(),
            (read - opened).as_secs_f64(),
            (built - read).as_secs_f64()
        );
    }
    let began = Instant::now();
    let cfg = SchedulerConfig::new("127.0.0.1:0".parse().unwrap(), dir.into());
    let started = start(&cfg).unwrap();
    let load = started.load_time;
    let core = started.core.clone();
    let (tasks, running) = rt.block_on(async move {
        core.call(|s: &mut State, _| {
            (
                s.tasks.len(),
                s.tasks
                    .values()
                    .filter(|t| t.state == ScheduleStatus::Running)
                    .count(),
            )
        })
        .await
        .unwrap()
    });
    let serving = began.elapsed();
    let rss = rss_kib();
    println!(
        "restart: {tasks} tasks ({running} RUNNING) loaded in {:.3} s, serving (first answer) after {:.3} s",
        load.as_secs_f64(),
        serving.as_secs_f64()
    );
    println!(
        "restart: RSS {:.1} MiB with {tasks} tasks loaded ({:.1} MiB before start)",
        rss as f64 / 1024.0,
        rss_before as f64 / 1024.0
    );
}
