//! Executor benchmarks, run with `cargo bench --bench executor` (as root, for cgroups).
//!
//! Drives the real `hearth` binary and reports, over several trials, medians of:
//! (a) overhead memory: summed PSS of the executor and the keeper of a task supervising 100
//!     `sleep`s;
//! (b) launch: from starting `hearth run` to all 100 processes RUNNING in the checkpoint (the
//!     executor prints a process's RUNNING line only after the record is durable), next to a
//!     minimal C fork/exec loop starting the same 100 `bash -c` commands in the same trial. The
//!     row is followed by the CPU time the keeper and the executor used until then and the
//!     time the keeper spent runnable but waiting for a CPU (`/proc/<pid>/schedstat`);
//! (b') the same launch with `--no-cgroups`, the fallback for hosts without usable cgroups (each
//!     task process is a session of its own, and with the kernel's session autogroups, on by
//!     default on many distributions, each is then a scheduling group of its own: 100 starting
//!     shells outweigh the keeper 100 to 1, where with a cpu cgroup they weigh as one);
//! (b'') the C loop again, its children in a cpu cgroup of their own (see below);
//! (c) exit to durable record: from the moment a process exits (it stamps the wall clock right
//!     before `_exit`) to its durable exit record (the executor's line, printed after the fsync);
//! (d) restart latency with `min_duration: 0`: from a run's exit stamp to the start of the next run
//!     as recorded in the checkpoint;
//! (e) kill: from SIGTERM to the executor to the last of 100 SIGTERM-honouring processes gone;
//! (f) health-check cost: CPU (their threads' `schedstat`) of the executor and keeper over
//!     `HEARTH_BENCH_IDLE_SECS` (default 60) for a task of 10 processes whose HTTP health check
//!     runs every second (against `hearth-test-server`), once the task is RUNNING.
//!
//! `HEARTH_BENCH_TRIALS` (default 9) sets the trial count; (c) and (d) spread their 200 exits over
//! the trials, and (f) is one window of `HEARTH_BENCH_IDLE_SECS` without a baseline.
//!
//! `HEARTH_BENCH_BASELINE=PATH` names another `hearth` binary (an earlier build, say). Every row
//! that runs `hearth`, (a) to (f), then measures both binaries in each trial, alternating which of
//! the two goes first, and prints under the row both medians with their ranges and the per-trial
//! ratio this build / baseline (median and range): the machine's drift between runs of the bench
//! is larger than most changes. (f) then has `HEARTH_BENCH_TRIALS` windows per binary; (c) and (d)
//! compare the per-trial medians.
//!
//! On (b): the C loop's time depends on how often its own 100 `bash` children, starting up on the
//! same cores, preempt it, so the row also shows both ranges, how many trials were within the
//! target, and the best Hearth trial against the loop's best trial. Hearth's task processes run
//! in a cgroup of their own; with the cpu controller, the scheduler then weighs them as one group
//! against the keeper, and they cannot starve it the way the plain loop's children starve the
//! loop. Row (b'') therefore runs the same C loop with its children in a cpu cgroup of their own
//! too: the floor for the placement Hearth gives them, shown beside the target's floor so that
//! neither hides the other.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth_checkpoints::stream::replay_path;
use serde_json::{Value, json};

const N: usize = 100;

/// Exits and restarts measured for (c) and (d), spread over the trials.
const RESTARTS: usize = 200;

fn main() {
    let trials: usize = std::env::var("HEARTH_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let idle_secs: u64 = std::env::var("HEARTH_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::Builder::new()
        .prefix("hearth-bench-")
        .tempdir()
        .unwrap();
    let dir = dir.path();
    let forkloop = compile(dir, "forkloop");
    let stamp = compile(dir, "stamp_exit");
    let bins = Contestants {
        this: this_hearth().to_owned(),
        baseline: std::env::var_os("HEARTH_BENCH_BASELINE").map(PathBuf::from),
    };

    let floor_cgroup = FloorCgroup::create();
    let mut floor = Vec::new();
    let mut floor_grouped = Vec::new();
    let mut sleeps = Pair::default();
    let mut no_cgroups = Pair::default();
    let mut restarts = Pair::default();
    for t in 0..trials {
        floor.push(c_floor(&forkloop, None));
        if let Some(cg) = &floor_cgroup {
            floor_grouped.push(c_floor(&forkloop, Some(&cg.procs)));
        }
        sleeps.push(bins.trial(t, |bin, who| {
            hundred_sleeps(bin, dir, &format!("sleeps-{who}-{t}"), &[])
        }));
    }
    for t in 0..trials {
        no_cgroups.push(bins.trial(t, |bin, who| {
            let id = format!("plain-{who}-{t}");
            hundred_sleeps(bin, dir, &id, &["--no-cgroups"]).launch
        }));
    }
    let runs = RESTARTS.div_ceil(trials.max(1)).max(20);
    for t in 0..trials {
        restarts.push(bins.trial(t, |bin, who| {
            restart_loop(bin, dir, &stamp, runs, &format!("restarts-{who}-{t}"))
        }));
    }
    // Without a baseline one window, as a trial of this row is a whole idle window.
    let health_trials = if bins.baseline.is_some() { trials } else { 1 };
    let mut health = Pair::default();
    for t in 0..health_trials {
        health.push(bins.trial(t, |bin, who| {
            health_cpu(bin, dir, idle_secs, &format!("healthy-{who}-{t}"))
        }));
    }

    let pss = sleeps.map(|t| t.pss);
    let launch = sleeps.map(|t| t.launch);
    let kill = sleeps.map(|t| t.kill);
    let keeper_cpu = sleeps.map(|t| t.keeper_cpu);
    let keeper_waiting = sleeps.map(|t| t.keeper_waiting);
    let executor_cpu = sleeps.map(|t| t.executor_cpu);
    let no_cgroups = no_cgroups.map(|l| *l);
    let exit_lat: Vec<f64> = restarts.this.iter().flat_map(|r| r.0.clone()).collect();
    let restart_lat: Vec<f64> = restarts.this.iter().flat_map(|r| r.1.clone()).collect();
    let cpu_pct = health.map(|h| h.0);
    let checks = health.map(|h| h.1 as f64);

    let ms = |d: &[f64]| format!("{:.2} ms", median(d) * 1e3);
    println!("executor benchmarks ({trials} trials, medians)");
    if let Some(b) = &bins.baseline {
        println!(
            "baseline: {}, measured in the same trials as this build ({}), alternating which \
             goes first",
            b.display(),
            bins.this.display()
        );
    }
    println!(
        "(a) overhead PSS, executor + keeper, {N} sleeps: {:.0} KiB (target <= 4096 KiB)",
        median(&pss.this)
    );
    let kind = |i: usize| {
        median(
            &sleeps
                .this
                .iter()
                .map(|t| t.pss_kinds[i])
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "    of which: hearth code {:.0}, hearth data {:.0}, heap {:.0}, stack {:.0}, shared \
         libraries {:.0}, other {:.0} KiB",
        kind(0),
        kind(1),
        kind(2),
        kind(3),
        kind(4),
        kind(5)
    );
    bins.compare(&pss, |v| format!("{v:.0} KiB"));
    let ratios = per_trial(&launch.this, &floor);
    let range = |d: &[f64]| format!("{:.1}..{:.1} ms", pct(d, 0.0) * 1e3, pct(d, 1.0) * 1e3);
    println!(
        "(b) launch {N} processes to RUNNING: hearth {} ({}) vs C fork/exec loop {} ({}); \
         per-trial ratio {}, {} of {trials} trials within 1.2x; best trial vs best trial \
         {:.2}x (target <= 1.2x)",
        ms(&launch.this),
        range(&launch.this),
        ms(&floor),
        range(&floor),
        spread(&ratios),
        ratios.iter().filter(|r| **r <= 1.2).count(),
        pct(&launch.this, 0.0) / pct(&floor, 0.0)
    );
    println!(
        "    during the launch: keeper CPU {}, keeper runnable but waiting for a CPU {}, \
         executor CPU {} (from /proc/<pid>/schedstat)",
        ms(&keeper_cpu.this),
        ms(&keeper_waiting.this),
        ms(&executor_cpu.this)
    );
    bins.compare(&launch, millis);
    bins.compare_as("keeper CPU during the launch", &keeper_cpu, millis);
    bins.compare_as("executor CPU during the launch", &executor_cpu, millis);
    println!(
        "(b') the same launch with --no-cgroups (process groups and the subreaper): {} ({})",
        ms(&no_cgroups.this),
        range(&no_cgroups.this)
    );
    bins.compare(&no_cgroups, millis);
    match &floor_cgroup {
        Some(cg) => {
            println!(
                "(b'') the C loop with its children in a cpu cgroup of their own ({}): {} ({}); \
                 hearth per-trial ratio {}",
                cg.dir.display(),
                ms(&floor_grouped),
                range(&floor_grouped),
                spread(&per_trial(&launch.this, &floor_grouped))
            );
        }
        None => println!("(b'') not measured: no cpu cgroup controller could be used here"),
    }
    println!(
        "(c) process exit to durable record: median {:.3} ms, p90 {:.3} ms over {} exits (target median < 1 ms)",
        median(&exit_lat) * 1e3,
        pct(&exit_lat, 0.9) * 1e3,
        exit_lat.len()
    );
    bins.compare_as("per-trial median", &restarts.map(|r| median(&r.0)), micros);
    println!(
        "(d) restart latency, min_duration 0: median {:.3} ms, p90 {:.3} ms over {} restarts (target median < 2 ms)",
        median(&restart_lat) * 1e3,
        pct(&restart_lat, 0.9) * 1e3,
        restart_lat.len()
    );
    bins.compare_as("per-trial median", &restarts.map(|r| median(&r.1)), micros);
    println!(
        "(e) kill {N} SIGTERM-honouring processes: {} (target < 50 ms)",
        ms(&kill.this)
    );
    bins.compare(&kill, millis);
    println!(
        "(f) executor + keeper CPU, 10 processes, HTTP check every 1 s, over {idle_secs} s: \
         {:.4} % of one core, {:.0} checks served (target < 0.5 %)",
        median(&cpu_pct.this),
        median(&checks.this)
    );
    bins.compare(&cpu_pct, |v| format!("{v:.4} %"));
}

fn millis(v: f64) -> String {
    format!("{:.2} ms", v * 1e3)
}

fn micros(v: f64) -> String {
    format!("{:.0} us", v * 1e6)
}

/// The `hearth` binaries measured: this build's and, with `HEARTH_BENCH_BASELINE`, another.
struct Contestants {
    this: PathBuf,
    baseline: Option<PathBuf>,
}

/// One row's per-trial measurements of this build and of the baseline (empty without one).
struct Pair<T> {
    this: Vec<T>,
    base: Vec<T>,
}

impl<T> Default for Pair<T> {
    fn default() -> Self {
        Pair {
            this: Vec::new(),
            base: Vec::new(),
        }
    }
}

impl<T> Pair<T> {
    fn push(&mut self, (this, base): (T, Option<T>)) {
        self.this.push(this);
        self.base.extend(base);
    }

    fn map(&self, f: impl Fn(&T) -> f64) -> Pair<f64> {
        Pair {
            this: self.this.iter().map(&f).collect(),
            base: self.base.iter().map(&f).collect(),
        }
    }
}

impl Contestants {
    /// Trial `t` of one measurement: `measure(binary, "this" | "base")` for this build and, when
    /// there is a baseline, for it too, the baseline first in odd trials so that neither always
    /// runs on a machine the other has just warmed (or loaded).
    fn trial<T>(&self, t: usize, mut measure: impl FnMut(&Path, &str) -> T) -> (T, Option<T>) {
        let Some(base) = &self.baseline else {
            return (measure(&self.this, "this"), None);
        };
        if t % 2 == 1 {
            let b = measure(base, "base");
            (measure(&self.this, "this"), Some(b))
        } else {
            let this = measure(&self.this, "this");
            (this, Some(measure(base, "base")))
        }
    }

    /// With a baseline, the line under a row comparing the two: both medians and ranges and the
    /// per-trial ratio this build / baseline.
    fn compare(&self, row: &Pair<f64>, fmt: impl Fn(f64) -> String) {
        self.compare_as("", row, fmt);
    }

    fn compare_as(&self, what: &str, row: &Pair<f64>, fmt: impl Fn(f64) -> String) {
        if self.baseline.is_none() {
            return;
        }
        let figures = |d: &[f64]| {
            format!(
                "{} ({}..{})",
                fmt(median(d)),
                fmt(pct(d, 0.0)),
                fmt(pct(d, 1.0))
            )
        };
        let what = if what.is_empty() {
            String::new()
        } else {
            format!("{what}, ")
        };
        println!(
            "    {what}this build {} vs baseline {}: per-trial ratio this/baseline {}",
            figures(&row.this),
            figures(&row.base),
            spread(&per_trial(&row.this, &row.base))
        );
    }
}

fn compile(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/bench/c/{name}.c"));
    let out = dir.join(name);
    let ok = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cc failed for {}", src.display());
    out
}

fn now_wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `a[i] / b[i]` for each trial.
fn per_trial(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// "median 0.25x, range 0.16x..0.76x" of per-trial ratios.
fn spread(ratios: &[f64]) -> String {
    format!(
        "median {:.2}x, range {:.2}x..{:.2}x",
        median(ratios),
        pct(ratios, 0.0),
        pct(ratios, 1.0)
    )
}

fn median(v: &[f64]) -> f64 {
    pct(v, 0.5)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// A cpu cgroup for the grouped floor's children (v1 `cpu` hierarchy, or the v2 root when it
/// hands the cpu controller to its children), removed when dropped.
struct FloorCgroup {
    dir: PathBuf,
    procs: PathBuf,
}

impl FloorCgroup {
    fn create() -> Option<FloorCgroup> {
        let base = Path::new("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(base.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|k| k == "cpu"));
        let parent = if v2 {
            base.to_owned()
        } else {
            base.join("cpu")
        };
        if !v2 && !parent.join("cgroup.procs").exists() {
            return None;
        }
        let dir = parent.join(format!("hearth-bench-floor-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let procs = dir.join("cgroup.procs");
        Some(FloorCgroup { dir, procs })
    }
}

impl Drop for FloorCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The C loop's time to fork and exec N `bash -c "sleep 1000"`, in seconds; with `procs`, its
/// children join that cgroup before exec.
fn c_floor(forkloop: &Path, procs: Option<&Path>) -> f64 {
    let out = Command::new(forkloop)
        .args([&N.to_string(), "sleep 1000"])
        .args(procs)
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = out.id() as i32;
    let out = out.wait_with_output().unwrap();
    let ns: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let group = nix::unistd::Pid::from_raw(pgid);
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::SIGKILL);
    // Let the floor's processes go before the next measurement starts.
    let start = Instant::now();
    while nix::sys::signal::killpg(group, None).is_ok() && start.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    ns / 1e9
}

fn write_task(dir: &Path, name: &str, task: &Value) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(task).unwrap()).unwrap();
    path
}

/// PSS of `pid` by kind of mapping, in KiB: the `hearth` executable's code, the rest of the
/// executable (read-only data, relocated data), heap, stack, shared libraries, everything else.
fn pss_by_kind(pid: i32) -> [f64; 6] {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut kinds = [0.0; 6];
    let mut kind = 5;
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            kind = if path == exe.to_string_lossy() {
                if perms.contains('x') { 0 } else { 1 }
            } else if path == "[heap]" {
                2
            } else if path == "[stack]" {
                3
            } else if path.starts_with('/') {
                4
            } else {
                5
            };
        } else if first == "Pss:" {
            kinds[kind] += fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        }
    }
    kinds
}

fn pss_kib(pid: i32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// One trial of [`hundred_sleeps`]; times in seconds, memory in KiB.
struct Trial {
    launch: f64,
    pss: f64,
    pss_kinds: Vec<f64>,
    kill: f64,
    keeper_cpu: f64,
    keeper_waiting: f64,
    executor_cpu: f64,
}

/// Time `pid` has run on a CPU and time it was runnable but waiting for one, in seconds
/// (`/proc/<pid>/schedstat`).
fn schedstat(pid: i32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    let mut f = s
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0) / 1e9);
    (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0))
}

/// Launch N sleeps, measure launch time, scheduling and PSS, then kill and measure teardown.
fn hundred_sleeps(hearth: &Path, dir: &Path, task_id: &str, extra: &[&str]) -> Trial {
    let procs: Vec<Value> = (0..N)
        .map(|i| json!({"name": format!("s{i:03}"), "cmdline": "sleep 1000"}))
        .collect();
    let cfg = write_task(dir, task_id, &json!({"name": task_id, "processes": procs}));
    let root = dir.join("root");
    let t0 = Instant::now();
    let (mut child, mut lines) = start_task(hearth, &cfg, &root, task_id, extra);
    let mut pids = Vec::new();
    while pids.len() < N {
        let line = lines.next().unwrap().unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "process" && v["state"] == "RUNNING" {
            pids.push(v["pid"].as_i64().unwrap() as i32);
        }
    }
    let launch = t0.elapsed().as_secs_f64();

    let replay = replay_path(&root.join("checkpoints").join(task_id).join("runner"))
        .unwrap()
        .replay;
    let keeper = replay
        .processes
        .values()
        .find_map(|runs| runs.last().and_then(|r| r.coordinator_pid))
        .unwrap();
    let (keeper_cpu, keeper_waiting) = schedstat(keeper);
    let (executor_cpu, _) = schedstat(child.id() as i32);
    // Let the executor settle (its allocations after the launch burst) before reading PSS.
    std::thread::sleep(Duration::from_millis(200));
    let pss = pss_kib(child.id() as i32) + pss_kib(keeper);
    let (e, k) = (pss_by_kind(child.id() as i32), pss_by_kind(keeper));
    let pss_kinds: Vec<f64> = e.iter().zip(&k).map(|(a, b)| a + b).collect();

    let t1 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "processes survived the kill"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let kill = t1.elapsed().as_secs_f64();
    for _ in lines.by_ref() {}
    child.wait().unwrap();
    Trial {
        launch,
        pss,
        pss_kinds,
        kill,
        keeper_cpu,
        keeper_waiting,
        executor_cpu,
    }
}

/// A daemon that exits at once, `runs` times: exit-to-record and restart latencies.
fn restart_loop(
    hearth: &Path,
    dir: &Path,
    stamp: &Path,
    runs: usize,
    task_id: &str,
) -> (Vec<f64>, Vec<f64>) {
    let stamps = dir.join(format!("{task_id}.stamps"));
    let cmd = format!("exec {} {} 0", stamp.display(), stamps.display());
    let cfg = write_task(
        dir,
        task_id,
        &json!({"name": task_id, "processes": [
            {"name": "d", "daemon": true, "min_duration": 0, "cmdline": cmd}
        ]}),
    );
    let root = dir.join("root");
    let (mut child, mut lines) = start_task(hearth, &cfg, &root, task_id, &[]);
    let mut arrivals = Vec::new();
    while arrivals.len() < runs {
        let line = lines.next().unwrap().unwrap();
        let at = now_wall();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "process" && v["state"] == "SUCCESS" && v["process"] == "d" {
            arrivals.push(at);
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    for _ in lines.by_ref() {}
    child.wait().unwrap();

    let exits: Vec<f64> = std::fs::read_to_string(&stamps)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let exit_lat: Vec<f64> = arrivals.iter().zip(&exits).map(|(a, e)| a - e).collect();
    let replay = replay_path(&root.join("checkpoints").join(task_id).join("runner"))
        .unwrap()
        .replay;
    let starts: Vec<f64> = replay.processes["d"]
        .iter()
        .filter_map(|r| r.start_time)
        .collect();
    let restart_lat: Vec<f64> = exits
        .iter()
        .zip(starts.iter().skip(1))
        .take(runs - 1)
        .map(|(e, s)| s - e)
        .collect();
    (exit_lat, restart_lat)
}

/// CPU time, in seconds, of a process's live threads (`/proc/<pid>/task/*/schedstat`, in
/// nanoseconds: the clock ticks of `/proc/<pid>/stat` are too coarse for an idle executor). A
/// thread that ends within a measured window is not counted.
fn cpu_secs(pid: i32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1e9
        })
        .sum()
}

/// (f): the steady-state cost of supervising a healthy task with a 1 s HTTP health check.
fn health_cpu(hearth: &Path, dir: &Path, secs: u64, task_id: &str) -> (f64, usize) {
    let log = dir.join(format!("{task_id}-server.log"));
    let server = format!(
        "exec {} --port {{{{thermos.ports[health]}}}} --log {}",
        env!("CARGO_BIN_EXE_hearth-test-server"),
        log.display()
    );
    let mut procs = vec![json!({"name": "server", "cmdline": server})];
    for i in 0..9 {
        procs.push(json!({"name": format!("s{i}"), "cmdline": "exec sleep 100000"}));
    }
    let cfg = write_task(
        dir,
        task_id,
        &json!({
            "role": "root", "environment": "bench", "name": task_id,
            "task": {"name": task_id, "processes": procs},
            "health_check_config": {"initial_interval_secs": 1.0, "interval_secs": 1.0,
                                    "timeout_secs": 1.0, "max_consecutive_failures": 3}
        }),
    );
    let root = dir.join("root");
    let (mut child, mut lines) = start_task(hearth, &cfg, &root, task_id, &[]);
    loop {
        let line = lines.next().unwrap().unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "status" && v["state"] == "RUNNING" {
            break;
        }
    }
    let replay = replay_path(&root.join("checkpoints").join(task_id).join("runner"))
        .unwrap()
        .replay;
    let keeper = replay
        .processes
        .values()
        .find_map(|runs| runs.last().and_then(|r| r.coordinator_pid))
        .unwrap();
    let exec = child.id() as i32;
    let count = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("GET /health"))
            .count()
    };
    let (t0, c0, n0) = (Instant::now(), cpu_secs(exec) + cpu_secs(keeper), count());
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, c1, n1) = (t0.elapsed(), cpu_secs(exec) + cpu_secs(keeper), count());
    let pct = (c1 - c0) / t1.as_secs_f64() * 100.0;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(exec), nix::sys::signal::SIGTERM).unwrap();
    for _ in lines.by_ref() {}
    child.wait().unwrap();
    (pct, n1 - n0)
}

/// The `hearth` binary of this build.
fn this_hearth() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hearth"))
}

/// `<hearth> run CFG --root ROOT --task-id ID --json`, with its progress lines to read.
fn start_task(
    hearth: &Path,
    cfg: &Path,
    root: &Path,
    task_id: &str,
    extra: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = Command::new(hearth)
        .arg("run")
        .arg(cfg)
        .arg("--root")
        .arg(root)
        .args(["--task-id", task_id, "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}
