//! Load benchmark of the observer on a synthetic root: 1,000 finished and 100 active tasks
//! (three processes each, written with the real checkpoint writer), one of them with a 1 GiB
//! stdout.
//!
//! It starts the observer in this process on a loopback port, then:
//! 1. runs `wrk` with 32 connections against `/main`, `/main/finished/500/50`, `/j/task_ids` and
//!    `/j/task_ids/all/0/1000`, printing p50 and p99;
//! 2. runs `wrk` with one connection against `/logdata` tails of the 1 GiB log;
//! 3. leaves the observer idle (100 active tasks, watching and sampling as in production) and
//!    measures its CPU time from `/proc/self/stat`.
//!
//! Run with `scripts/observer-bench.sh` (or `cargo bench -p hearth-observer --bench load`).
//! `OBSERVER_BENCH_SECS` sets each `wrk` run's duration (default 10), `OBSERVER_BENCH_IDLE_SECS`
//! the idle window (default 30).
// A test, off the server's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hearth_checkpoints::record::{
    ProcessState, ProcessStatus, Record, RunnerHeader, TaskState, TaskStatus,
};
use hearth_checkpoints::root::{Root, TaskPlace};
use hearth_checkpoints::stream::CheckpointWriter;
use hearth_observer::{Observer, Settings};

type Error = Box<dyn std::error::Error>;

const FINISHED: usize = 1000;
const ACTIVE: usize = 100;
const BIG_LOG: u64 = 1 << 30;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_task(root: &Root, sandboxes: &Path, i: usize, active: bool) -> Result<String, Error> {
    let id = format!(
        "{}-{i:04}-www-data-prod-svc-{}",
        if active { "act" } else { "fin" },
        i % 7
    );
    let sandbox = sandboxes.join(&id);
    let logs = sandbox.join(".logs");
    let place = if active {
        TaskPlace::Active
    } else {
        TaskPlace::Finished
    };
    let names = ["setup", "server", "sidecar"];
    let config = serde_json::json!({
        "name": format!("svc-{}", i % 7),
        "processes": names.iter().map(|n| serde_json::json!({"name": n, "cmdline": "true"})).collect::<Vec<_>>(),
        "resources": {"cpu": 1.0, "ram": 1u64 << 30, "disk": 10u64 << 30, "gpu": 0},
    });
    std::fs::write(
        root.task_config_path(&id, place),
        serde_json::to_vec(&config)?,
    )?;
    std::fs::create_dir_all(root.checkpoint_dir(&id))?;
    let launch = 1_700_000_000_000 + i as i64 * 60_000;
    let header = RunnerHeader {
        task_id: id.clone(),
        launch_time_ms: launch,
        sandbox: Some(sandbox.display().to_string()),
        hostname: Some("localhost".into()),
        user: Some("www-data".into()),
        ports: BTreeMap::from([("http".to_owned(), 31000 + i as i64)]),
        log_dir: Some(logs.display().to_string()),
        uid: Some(33),
        format_version: Some(1),
    };
    let mut w = CheckpointWriter::create(&root.runner_path(&id), &header)?;
    w.append(&Record::Task(TaskStatus {
        state: TaskState::Active,
        timestamp_ms: launch,
        runner_pid: Some(1),
        runner_uid: Some(0),
        reason: None,
        outcome: None,
        cause: None,
    }))?;
    for (k, name) in names.iter().enumerate() {
        let runs = if *name == "server" { 2 } else { 1 };
        let mut seq = 0;
        for run in 0..runs {
            let dir = logs.join(name).join(run.to_string());
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("stdout"), format!("{name} run {run}\n"))?;
            std::fs::write(dir.join("stderr"), "")?;
            let last = run + 1 == runs;
            let t = launch as f64 / 1000.0 + run as f64 * 30.0;
            let mut put = |state, f: &dyn Fn(&mut ProcessStatus)| -> Result<(), Error> {
                let mut p = ProcessStatus {
                    seq,
                    process: (*name).to_owned(),
                    state: Some(state),
                    ..ProcessStatus::default()
                };
                f(&mut p);
                seq += 1;
                w.append(&Record::Process(p))?;
                Ok(())
            };
            put(ProcessState::Waiting, &|_| {})?;
            put(ProcessState::Forked, &|p| p.fork_time = Some(t))?;
            // Pids above any pid_max in use here, so no real process is sampled by mistake.
            let pid = 3_000_000 + (i * 10 + k) as i32;
            put(ProcessState::Running, &|p| {
                p.pid = Some(pid);
                p.start_time = Some(t);
                p.pid_start_ticks = Some(1);
            })?;
            if !(active && last && *name != "setup") {
                let (state, rc) = if last {
                    (ProcessState::Success, 0)
                } else {
                    (ProcessState::Failed, 1)
                };
                put(state, &|p| {
                    p.return_code = Some(rc);
                    p.stop_time = Some(t + 20.0);
                })?;
            }
        }
    }
    if !active {
        w.append(&Record::Task(TaskStatus {
            state: TaskState::Success,
            timestamp_ms: launch + 120_000,
            runner_pid: Some(1),
            runner_uid: Some(0),
            reason: None,
            outcome: None,
            cause: None,
        }))?;
    }
    w.commit()?;
    Ok(id)
}

fn write_big_log(path: &Path) -> Result<(), Error> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let line = b"2024-01-01T00:00:00Z INFO request served in 1.2ms path=/api/v1/things status=200 bytes=5120\n";
    let mut written = 0u64;
    while written < BIG_LOG {
        f.write_all(line)?;
        written += line.len() as u64;
    }
    f.flush()?;
    Ok(())
}

/// Run wrk and return (p50, p99) in milliseconds, printing its summary.
fn wrk(url: &str, conns: u32, secs: u64) -> Result<(f64, f64, f64), Error> {
    let out = Command::new("wrk")
        .args([
            &format!("-t{}", conns.min(2)),
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let pct = |label: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
        parse_wrk_time(line.split_whitespace().nth(1)?)
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        return Err(format!("wrk saw errors:\n{text}").into());
    }
    Ok((
        pct("50%").ok_or("no p50")?,
        pct("99%").ok_or("no p99")?,
        rps,
    ))
}

fn parse_wrk_time(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

fn self_cpu_ticks() -> Result<u64, Error> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = stat
        .get(stat.rfind(')').ok_or("bad stat")? + 1..)
        .ok_or("bad stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = f.get(12).ok_or("no stime")?.parse()?;
    Ok(utime + stime)
}

fn main() -> Result<(), Error> {
    // `cargo bench` passes `--bench`; anything else (a filter) is ignored.
    if Command::new("wrk").arg("--version").output().is_err() {
        return Err("wrk is not installed (apt-get install wrk)".into());
    }
    let secs = env_secs("OBSERVER_BENCH_SECS", 10);
    let idle_secs = env_secs("OBSERVER_BENCH_IDLE_SECS", 30);
    let scratch = tempfile::Builder::new()
        .prefix("observer-bench")
        .tempdir_in(std::env::temp_dir())?;
    let root = Root::new(scratch.path().join("root"));
    std::fs::create_dir_all(root.tasks_active_dir())?;
    std::fs::create_dir_all(root.tasks_finished_dir())?;
    let sandboxes = scratch.path().join("sandboxes");
    let t = Instant::now();
    let mut active_ids = Vec::new();
    for i in 0..FINISHED {
        write_task(&root, &sandboxes, i, false)?;
    }
    for i in 0..ACTIVE {
        active_ids.push(write_task(&root, &sandboxes, FINISHED + i, true)?);
    }
    let big_task = active_ids.first().ok_or("no active task")?.clone();
    let big_log = sandboxes.join(&big_task).join(".logs/server/1/stdout");
    write_big_log(&big_log)?;
    let big_size = std::fs::metadata(&big_log)?.len();
    println!(
        "synthetic root: {FINISHED} finished + {ACTIVE} active tasks, 1 GiB log, written in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let obs = Observer::open(&[root.path().to_owned()], Settings::default())?;
    println!(
        "initial load of {} tasks: {:.0} ms",
        obs.count(hearth_observer::store::Which::All),
        t.elapsed().as_secs_f64() * 1000.0
    );
    let background = hearth_observer::watch::spawn(obs.clone())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let app = hearth_observer::app(obs.clone());
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let base = format!("http://{addr}");

    println!("\nwrk -t2 -c32 -d{secs}s --latency (p50 / p99 / requests per second):");
    for path in [
        "/main",
        "/main/finished/500/50",
        "/j/task_ids",
        "/j/task_ids/all/0/1000",
    ] {
        let (p50, p99, rps) = wrk(&format!("{base}{path}"), 32, secs)?;
        println!("  {path:<28} p50 {p50:7.2} ms   p99 {p99:7.2} ms   {rps:9.0} req/s");
    }
    println!("\nwrk -t1 -c1 -d{secs}s --latency, tail of a {big_size}-byte log:");
    for len in [4096u64, 65536] {
        let path = format!(
            "/logdata/{big_task}/server/1/stdout?offset={}&length={len}",
            big_size - len
        );
        let (p50, p99, rps) = wrk(&format!("{base}{path}"), 1, secs)?;
        println!(
            "  last {len:>6} bytes               p50 {p50:7.2} ms   p99 {p99:7.2} ms   {rps:9.0} req/s"
        );
    }

    // Idle: let the load settle, then measure the whole process (only the observer runs in it).
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let c0 = self_cpu_ticks()?;
    std::thread::sleep(Duration::from_secs(idle_secs));
    let c1 = self_cpu_ticks()?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (c1 - c0) as f64 / 100.0;
    println!(
        "\nidle with {ACTIVE} active tasks for {wall:.0}s (rescan every 30s, samples every 5s): \
         {:.2}% of one core ({cpu:.2}s CPU)",
        cpu / wall * 100.0
    );
    drop(background);
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
