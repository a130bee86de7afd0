//! How long evaluating `.aurora` files takes: a typical file (one job, a few processes) and a
//! file with 1,000 jobs, in process (median of several runs) and as a whole process (start,
//! evaluate every job, print, exit) when `hearth-aurora` has been built.
//!
//! ```text
//! cargo build --release --bin hearth-aurora
//! cargo bench -p hearth-aurora --bench evaluate
//! ```
//!
//! With `HEARTH_BIN=target/release/hearth` it also times `hearth validate FILE` (start, evaluate
//! and check every job, print, exit), the command people run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUNS: usize = 15;

fn typical() -> String {
    r#"
import os

class Profile(Struct):
  version = Default(String, 'live')
  environment = Default(String, 'prod')
  instances = Default(Integer, 2)

fetch = Process(name = 'fetch', cmdline = 'curl -sO https://packages.example.com/{{profile.version}}/app.tar.gz')
unpack = Process(name = 'unpack', cmdline = 'tar xzf app.tar.gz')
run = Process(name = 'run', cmdline = '''./app --port={{thermos.ports[http]}} --env={{profile.environment}}''')

task = SequentialTask(
  processes = [fetch, unpack, run],
  resources = Resources(cpu = 1.0, ram = 512 * MB, disk = 2 * GB),
)

jobs = [
  Service(cluster = 'west', role = 'www-data', environment = '{{profile.environment}}',
          name = 'app', instances = '{{profile.instances}}', task = task,
          health_check_config = HealthCheckConfig(initial_interval_secs = 30),
          update_config = UpdateConfig(batch_size = 2, watch_secs = 30)).bind(profile = Profile()),
]
"#
    .to_owned()
}

/// 1,000 jobs written out one by one (as generated configs are), each with two processes.
fn thousand() -> String {
    let mut s = String::from(
        "class Profile(Struct):\n  version = Default(String, 'live')\n\n\
         base = Process(max_failures = 3, min_duration = 1)\n\
         res = Resources(cpu = 0.5, ram = 256 * MB, disk = 1 * GB)\n\njobs = []\n",
    );
    for i in 0..1000 {
        let _ = write!(
            s,
            "jobs.append(Job(\n  cluster = 'west', role = 'team{r}', environment = 'prod', \
             name = 'job{i}',\n  instances = {inst},\n  task = SequentialTask(\n    name = \
             'task{i}',\n    processes = [\n      base(name = 'setup', cmdline = 'echo setup \
             {{{{profile.version}}}} {i}'),\n      base(name = 'run', cmdline = './run \
             --port={{{{thermos.ports[http]}}}} --shard={{{{mesos.instance}}}}'),\n    ],\n    \
             resources = res,\n  ),\n).bind(profile = Profile()))\n",
            r = i % 10,
            inst = 1 + i % 5,
        );
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn in_process(path: &Path, jobs: usize) -> Duration {
    let opts = hearth_aurora::EvalOptions {
        env: Arc::new(|_: &str| None),
        user: Some("bench".into()),
        ..hearth_aurora::EvalOptions::default()
    };
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let e = hearth_aurora::evaluate(path, &opts);
        let took = t.elapsed();
        match e {
            Ok(e) => {
                assert_eq!(e.jobs.len(), jobs);
                assert!(e.jobs.iter().all(|j| j.json.is_ok()));
            }
            Err(e) => panic!("{e}"),
        }
        times.push(took);
    }
    median(times)
}

/// Wall time of a whole process that evaluates the file and prints every job's JSON: an upper
/// bound of its process (CPU) time, start-up included.
fn whole_process(bin: &Path, path: &Path) -> Duration {
    whole_command(bin, &[], path)
}

/// Like [`whole_process`], for `bin ARGS... FILE`.
fn whole_command(bin: &Path, args: &[&str], path: &Path) -> Duration {
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let status = Command::new(bin)
            .args(args)
            .arg(path)
            .env("USER", "bench")
            .stdout(Stdio::null())
            .status();
        times.push(t.elapsed());
        assert!(
            status.is_ok_and(|s| s.success()),
            "{} failed",
            bin.display()
        );
    }
    median(times)
}

fn main() {
    let dir = std::env::temp_dir().join(format!("hearth-aurora-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return;
    }
    let typical_path = dir.join("typical.aurora");
    let thousand_path = dir.join("thousand.aurora");
    let written = std::fs::write(&typical_path, typical())
        .and_then(|()| std::fs::write(&thousand_path, thousand()));
    if let Err(e) = written {
        eprintln!("cannot write the bench configs: {e}");
        return;
    }
    println!("median of {RUNS} runs");
    println!(
        "in process   typical (1 job, 3 processes): {:>10.2?}",
        in_process(&typical_path, 1)
    );
    println!(
        "in process   1,000 jobs:                   {:>10.2?}",
        in_process(&thousand_path, 1000)
    );
    // The evaluator's executable, `hearth-aurora`, in this bench's profile directory.
    let bin: Option<PathBuf> = std::env::current_exe().ok().and_then(|exe| {
        let profile_dir = exe.parent()?.parent()?.to_path_buf();
        let candidates = [
            profile_dir.join("hearth-aurora"),
            profile_dir.parent()?.join("release/hearth-aurora"),
        ];
        candidates.into_iter().find(|p| p.exists())
    });
    match bin {
        Some(bin) => {
            println!(
                "process      typical, start to exit:       {:>10.2?}   ({})",
                whole_process(&bin, &typical_path),
                bin.display()
            );
            println!(
                "process      1,000 jobs, start to exit:    {:>10.2?}",
                whole_process(&bin, &thousand_path)
            );
        }
        None => println!(
            "process      skipped: build it first with \
             `cargo build --release --bin hearth-aurora`"
        ),
    }
    if let Some(hearth) = std::env::var_os("HEARTH_BIN").map(PathBuf::from) {
        println!(
            "hearth validate typical, start to exit:    {:>10.2?}   ({})",
            whole_command(&hearth, &["validate"], &typical_path),
            hearth.display()
        );
        println!(
            "hearth validate 1,000 jobs, start to exit: {:>10.2?}",
            whole_command(&hearth, &["validate"], &thousand_path)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
