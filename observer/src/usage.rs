//! Resource usage of tasks and processes: CPU rate and memory from the task's cgroup (or, when
//! it has none, from `/proc` for the processes the checkpoint says are running), and sandbox
//! disk usage.
//!
//! Costs, per active task and sample: two small cgroup files, plus two `/proc` files per running
//! process. Disk is a bounded walk of the sandbox (lstat only, never following symlinks or
//! crossing file systems) done far less often than the CPU and memory samples and spread over
//! the sampling ticks (see [`crate::store::Settings`]).
//!
//! Where things are looked for (both roots are parameters, so tests use fixture trees):
//! * cgroup v2: `<cgroup_root>/hearth/<task_id>/{cpu.stat,memory.current}`, and for
//!   [`Pressure`] `{cpu.pressure,memory.pressure,io.pressure,io.stat}` (v2 only: v1 has neither);
//! * cgroup v1: `<cgroup_root>/<cpuacct or cpu,cpuacct or cpu>/hearth/<task_id>/cpuacct.usage` and
//!   `<cgroup_root>/memory/hearth/<task_id>/memory.usage_in_bytes`.
//!
//! `/proc/<pid>/stat` times are in `USER_HZ` ticks, which Linux fixes at 100 on every
//! architecture Hearth targets.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

/// Linux's `USER_HZ`.
const USER_HZ: u64 = 100;
/// A disk walk stops after this many entries and reports what it counted.
pub const DISK_WALK_LIMIT: u64 = 200_000;

/// Where the usage probes read.
#[derive(Debug, Clone)]
pub struct Probe {
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// A cumulative CPU counter reading, to compute a rate from two of them.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    pub cpu_ns: u64,
    pub at: Instant,
}

impl CpuReading {
    /// Cores used between `earlier` and `self`.
    pub fn rate_since(&self, earlier: &CpuReading) -> Option<f64> {
        let wall = self.at.checked_duration_since(earlier.at)?.as_nanos();
        if wall == 0 {
            return None;
        }
        let used = self.cpu_ns.checked_sub(earlier.cpu_ns)?;
        Some(used as f64 / wall as f64)
    }
}

/// Usage figures as shown and served. `None` means not measured (yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// CPU cores in use, averaged over the last sampling interval.
    pub cpu: Option<f64>,
    /// Resident memory, bytes.
    pub ram: Option<u64>,
    /// Sandbox disk usage, bytes (tasks only).
    pub disk: Option<u64>,
}

/// A task's pressure (Linux PSI, cgroup v2): the share of the last 10 s in which some (or all)
/// of its processes waited for CPU, memory or I/O, in percent; and its cumulative I/O bytes.
/// `None`: not available (cgroup v1, PSI off, or no cgroup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pressure {
    pub cpu_some_avg10: Option<f64>,
    pub memory_some_avg10: Option<f64>,
    pub memory_full_avg10: Option<f64>,
    pub io_some_avg10: Option<f64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

impl Pressure {
    pub fn is_empty(&self) -> bool {
        *self == Pressure::default()
    }
}

/// `avg10` of the `some` or `full` line of a PSI file (`some avg10=1.50 avg60=... total=...`).
fn psi_avg10(text: &str, kind: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(kind)?.strip_prefix(' '))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// Read and written bytes summed over the devices of an `io.stat` file
/// (`8:0 rbytes=... wbytes=... rios=...`).
fn io_bytes(text: &str) -> (u64, u64) {
    let mut sums = (0u64, 0u64);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            sums.0 = sums.0.saturating_add(v.parse().unwrap_or(0));
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            sums.1 = sums.1.saturating_add(v.parse().unwrap_or(0));
        }
    }
    sums
}

/// What one sample of a task's cgroup read.
#[derive(Debug, Clone, Copy)]
pub struct CgroupSample {
    pub cpu: CpuReading,
    pub ram: Option<u64>,
    pub pressure: Pressure,
}

/// What one process sample read.
#[derive(Debug, Clone, Copy)]
pub struct ProcReading {
    pub cpu: CpuReading,
    pub rss: u64,
    pub start_ticks: u64,
}

impl Probe {
    fn read(path: &Path) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    /// The task cgroup's pressure and I/O (cgroup v2; all `None` elsewhere).
    pub fn task_pressure(&self, task_id: &str) -> Pressure {
        let dir = self.cgroup_root.join("hearth").join(task_id);
        let cpu = Self::read(&dir.join("cpu.pressure"));
        let memory = Self::read(&dir.join("memory.pressure"));
        let io = Self::read(&dir.join("io.pressure"));
        let stat = Self::read(&dir.join("io.stat")).map(|t| io_bytes(&t));
        Pressure {
            cpu_some_avg10: cpu.as_deref().and_then(|t| psi_avg10(t, "some")),
            memory_some_avg10: memory.as_deref().and_then(|t| psi_avg10(t, "some")),
            memory_full_avg10: memory.as_deref().and_then(|t| psi_avg10(t, "full")),
            io_some_avg10: io.as_deref().and_then(|t| psi_avg10(t, "some")),
            io_read_bytes: stat.map(|(r, _)| r),
            io_write_bytes: stat.map(|(_, w)| w),
        }
    }

    /// The task cgroup's cumulative CPU time and memory usage, if it has a cgroup, and on v2 its
    /// pressure and I/O (on v1 there are none to read).
    pub fn task_cgroup(&self, task_id: &str) -> Option<CgroupSample> {
        let at = Instant::now();
        let v2 = self.cgroup_root.join("hearth").join(task_id);
        if let Some(stat) = Self::read(&v2.join("cpu.stat")) {
            let usec = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse::<u64>().ok())?;
            let mem = Self::read(&v2.join("memory.current")).and_then(|s| s.trim().parse().ok());
            return Some(CgroupSample {
                cpu: CpuReading {
                    cpu_ns: usec.saturating_mul(1000),
                    at,
                },
                ram: mem,
                pressure: self.task_pressure(task_id),
            });
        }
        let ns = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu", "cpu"]
            .iter()
            .find_map(|c| {
                let p = self
                    .cgroup_root
                    .join(c)
                    .join("hearth")
                    .join(task_id)
                    .join("cpuacct.usage");
                Self::read(&p).and_then(|s| s.trim().parse::<u64>().ok())
            })?;
        let mem = Self::read(
            &self
                .cgroup_root
                .join("memory")
                .join("hearth")
                .join(task_id)
                .join("memory.usage_in_bytes"),
        )
        .and_then(|s| s.trim().parse().ok());
        Some(CgroupSample {
            cpu: CpuReading { cpu_ns: ns, at },
            ram: mem,
            pressure: Pressure::default(),
        })
    }

    /// One process's cumulative CPU time, RSS and start time, from `/proc/<pid>`.
    pub fn process(&self, pid: i32) -> Option<ProcReading> {
        let at = Instant::now();
        let dir = self.proc_root.join(pid.to_string());
        let stat = Self::read(&dir.join("stat"))?;
        // Fields after the command name, which is in parentheses and may hold anything.
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = field(14)?.saturating_add(field(15)?);
        let start_ticks = field(22)?;
        let rss_kib = Self::read(&dir.join("status"))
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        Some(ProcReading {
            cpu: CpuReading {
                cpu_ns: ticks.saturating_mul(1_000_000_000 / USER_HZ),
                at,
            },
            rss: rss_kib.saturating_mul(1024),
            start_ticks,
        })
    }
}

/// Bytes allocated under `dir` (st_blocks), not following symlinks nor leaving its file system,
/// visiting at most [`DISK_WALK_LIMIT`] entries.
pub fn disk_usage(dir: &Path) -> Option<u64> {
    let top = std::fs::symlink_metadata(dir).ok()?;
    let dev = top.dev();
    let mut total = top.blocks().saturating_mul(512);
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0u64;
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > DISK_WALK_LIMIT {
                return Some(total);
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() && meta.dev() == dev {
                stack.push(entry.path());
            }
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn v2_pressure_and_io_are_read_and_absent_files_give_none() -> TestResult {
        let dir = tempfile::tempdir()?;
        let probe = Probe {
            cgroup_root: dir.path().to_path_buf(),
            proc_root: dir.path().join("proc"),
        };
        assert!(probe.task_pressure("t1").is_empty(), "no cgroup: nothing");
        let cg = dir.path().join("hearth/t1");
        std::fs::create_dir_all(&cg)?;
        std::fs::write(
            cg.join("cpu.pressure"),
            "some avg10=12.50 avg60=3.00 avg300=1.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )?;
        std::fs::write(
            cg.join("memory.pressure"),
            "some avg10=4.25 avg60=0.00 avg300=0.00 total=9\nfull avg10=1.75 avg60=0.00 avg300=0.00 total=3\n",
        )?;
        std::fs::write(
            cg.join("io.stat"),
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=1000 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
        )?;
        let p = probe.task_pressure("t1");
        assert_eq!(p.cpu_some_avg10, Some(12.5));
        assert_eq!(p.memory_some_avg10, Some(4.25));
        assert_eq!(p.memory_full_avg10, Some(1.75));
        assert_eq!(p.io_some_avg10, None, "no io.pressure file");
        assert_eq!(
            (p.io_read_bytes, p.io_write_bytes),
            (Some(5096), Some(8192))
        );
        Ok(())
    }

    #[test]
    fn v1_cgroup_files_give_cpu_and_memory() -> TestResult {
        let dir = tempfile::tempdir()?;
        let cpu = dir.path().join("cpuacct/hearth/t1");
        let mem = dir.path().join("memory/hearth/t1");
        std::fs::create_dir_all(&cpu)?;
        std::fs::create_dir_all(&mem)?;
        std::fs::write(cpu.join("cpuacct.usage"), "2500000000\n")?;
        std::fs::write(mem.join("memory.usage_in_bytes"), "1048576\n")?;
        let probe = Probe {
            cgroup_root: dir.path().to_owned(),
            proc_root: dir.path().join("proc"),
        };
        let sample = probe.task_cgroup("t1").ok_or("no cgroup read")?;
        assert_eq!(sample.cpu.cpu_ns, 2_500_000_000);
        assert_eq!(sample.ram, Some(1_048_576));
        assert!(probe.task_cgroup("other").is_none());
        Ok(())
    }

    #[test]
    fn v2_cgroup_files_give_cpu_and_memory() -> TestResult {
        let dir = tempfile::tempdir()?;
        let cg = dir.path().join("hearth/t2");
        std::fs::create_dir_all(&cg)?;
        std::fs::write(
            cg.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )?;
        std::fs::write(cg.join("memory.current"), "4096\n")?;
        let probe = Probe {
            cgroup_root: dir.path().to_owned(),
            proc_root: dir.path().join("proc"),
        };
        let sample = probe.task_cgroup("t2").ok_or("no cgroup read")?;
        assert_eq!(sample.cpu.cpu_ns, 1_500_000);
        assert_eq!(sample.ram, Some(4096));
        Ok(())
    }

    #[test]
    fn proc_stat_with_spaces_and_parens_in_the_name_parses() -> TestResult {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("42");
        std::fs::create_dir_all(&p)?;
        // pid (comm) state ppid ... utime(14)=300 stime(15)=200 ... starttime(22)=777
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 300 200 0 0 20 0 1 0 777 1000 10";
        std::fs::write(p.join("stat"), stat)?;
        std::fs::write(p.join("status"), "Name:\tx\nVmRSS:\t   2048 kB\n")?;
        let probe = Probe {
            cgroup_root: dir.path().to_owned(),
            proc_root: dir.path().to_owned(),
        };
        let r = probe.process(42).ok_or("no reading")?;
        assert_eq!(r.cpu.cpu_ns, 5_000_000_000);
        assert_eq!(r.rss, 2048 * 1024);
        assert_eq!(r.start_ticks, 777);
        Ok(())
    }

    #[test]
    fn disk_usage_counts_nested_files_and_not_symlink_targets() -> TestResult {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("a/b"))?;
        std::fs::write(dir.path().join("a/b/f"), vec![1u8; 64 * 1024])?;
        let before = disk_usage(dir.path()).ok_or("no usage")?;
        assert!(before >= 64 * 1024, "{before}");
        std::os::unix::fs::symlink("/usr", dir.path().join("usr"))?;
        let after = disk_usage(dir.path()).ok_or("no usage")?;
        assert!(after < before + 64 * 1024, "{before} -> {after}");
        Ok(())
    }

    #[test]
    fn cpu_rate_is_cores_over_wall_time() {
        let t0 = Instant::now();
        let a = CpuReading { cpu_ns: 0, at: t0 };
        let b = CpuReading {
            cpu_ns: 500_000_000,
            at: t0 + std::time::Duration::from_secs(1),
        };
        assert_eq!(b.rate_since(&a), Some(0.5));
        assert_eq!(a.rate_since(&b), None);
    }
}
