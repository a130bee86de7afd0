//! CPU cost of HTTP health checking: 10 health monitors, each checking `hearth-test-server`'s
//! `/health` every second, for 60 s (set `HEARTH_BENCH_SECS` to change), measured with
//! `getrusage(RUSAGE_SELF)` (user + system time of this process: the monitors, their HTTP
//! clients and the runtime — not the server). Target: under 0.5 % of one core.
//!
//! Run: `cargo bench -p hearth-executor --bench health_cpu`

// A test thread, not the executor's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use hearth_checkpoints::config::{HealthCheckConfig, HealthChecker};
use hearth_executor::health::{HealthEvent, HealthMonitor};
use nix::sys::resource::{UsageWho, getrusage};

#[path = "../tests/support/mod.rs"]
mod support;

const MONITORS: usize = 10;

fn cpu_seconds() -> f64 {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => f64::NAN,
    }
}

fn main() -> ExitCode {
    // `cargo test --all-targets` runs benches without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return ExitCode::SUCCESS;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("health_cpu: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let secs: u64 = std::env::var("HEARTH_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let log = dir.path().join("server.log");
    let mut server = Command::new(support::test_server_bin()?)
        .args(["--port", "0", "--log"])
        .arg(&log)
        .spawn()
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(p) = text
                .lines()
                .find_map(|l| l.split_once("listening 127.0.0.1:"))
                .and_then(|(_, p)| p.trim().parse::<u16>().ok())
            {
                break p;
            }
            if Instant::now() > deadline {
                return Err("test server did not start".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let cfg = HealthCheckConfig {
            checker: HealthChecker::Http {
                endpoint: "/health".into(),
                expected_response: "ok".into(),
                expected_response_code: 0,
            },
            initial_interval: Duration::ZERO,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_consecutive_failures: 0,
            min_consecutive_successes: 1,
        };
        let cpu0 = cpu_seconds();
        let wall0 = Instant::now();
        let mut monitors = Vec::new();
        for _ in 0..MONITORS {
            let (m, rx) =
                HealthMonitor::start(&cfg, Some(port), dir.path().to_owned(), vec![], None)
                    .map_err(|e| e.to_string())?;
            monitors.push((m, rx));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu = cpu_seconds() - cpu0;
        let wall = wall0.elapsed().as_secs_f64();
        let mut unhealthy = 0;
        for (_, rx) in &mut monitors {
            while let Ok(ev) = rx.try_recv() {
                if matches!(ev, HealthEvent::Unhealthy { .. }) {
                    unhealthy += 1;
                }
            }
        }
        Ok((cpu, wall, unhealthy))
    });
    let _ = server.kill();
    let _ = server.wait();
    let (cpu, wall, unhealthy) = result?;
    let requests = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with("request GET /health"))
        .count();
    let accepts = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" accept "))
        .count();
    println!(
        "health_cpu: {MONITORS} HTTP monitors x 1/s for {wall:.1} s: {requests} checks over {accepts} \
         connections, {unhealthy} unhealthy; CPU {:.3} s = {:.3} % of one core ({:.1} us per check)",
        cpu,
        100.0 * cpu / wall,
        1e6 * cpu / requests.max(1) as f64
    );
    Ok(())
}
