//! Reading, writing and parsing cgroup control files.
//!
//! Control files are tiny text files; every helper here names the file in its error. The parsers
//! are pure functions over the text so they can be tested on captured kernel output.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::CgroupError;

/// Reads a whole control file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a control file, or `None` when it does not exist.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes one value to a control file, in a single `write` call as the kernel expects.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value.as_bytes()).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

/// Parses a file holding one unsigned integer (`cpuacct.usage`, `memory.current`, ...).
pub(crate) fn parse_u64(path: &Path, text: &str, what: &'static str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        what,
        text: text.to_owned(),
    })
}

/// Reads a file holding one unsigned integer.
pub(crate) fn read_u64(path: &Path, what: &'static str) -> Result<u64, CgroupError> {
    parse_u64(path, &read(path)?, what)
}

/// Parses a file holding one integer or the word `max` (`pids.max`, `memory.max`): `None` = max.
pub(crate) fn parse_max(
    path: &Path,
    text: &str,
    what: &'static str,
) -> Result<Option<u64>, CgroupError> {
    match text.trim() {
        "max" => Ok(None),
        _ => parse_u64(path, text, what).map(Some),
    }
}

/// The value of `key` in a flat-keyed file: lines of `key value` (`memory.events`,
/// `memory.oom_control`, `cpu.stat`, `cgroup.events`).
pub(crate) fn keyed_u64(path: &Path, text: &str, key: &'static str) -> Result<u64, CgroupError> {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .ok_or_else(|| CgroupError::Parse {
            path: path.to_path_buf(),
            what: key,
            text: text.to_owned(),
        })
}

/// Parses `cgroup.procs`: one pid per line. Pids outside our pid namespace read as 0 and are
/// skipped (we could not signal them anyway).
pub(crate) fn parse_procs(path: &Path, text: &str) -> Result<Vec<i32>, CgroupError> {
    let mut pids = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let pid: i32 = line.parse().map_err(|_| CgroupError::Parse {
            path: path.to_path_buf(),
            what: "pid",
            text: line.to_owned(),
        })?;
        if pid > 0 {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Parses v2 `cpu.max`: `QUOTA PERIOD` or `max PERIOD`; returns the quota in cores.
pub(crate) fn parse_cpu_max(path: &Path, text: &str) -> Result<Option<f64>, CgroupError> {
    let bad = || CgroupError::Parse {
        path: path.to_path_buf(),
        what: "cpu.max quota and period",
        text: text.to_owned(),
    };
    let (quota, period) = text.trim().split_once(' ').ok_or_else(bad)?;
    let period: u64 = period.parse().map_err(|_| bad())?;
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| bad())?;
    if period == 0 {
        return Err(bad());
    }
    Ok(Some(quota as f64 / period as f64))
}

/// `cgroup.procs` inside a cgroup directory.
pub(crate) fn procs_file(dir: &Path) -> PathBuf {
    dir.join("cgroup.procs")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MEMORY_EVENTS: &str = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
    const OOM_CONTROL: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
    const CPU_STAT: &str = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n\
        nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n";

    #[test]
    fn memory_events_oom_kill_is_not_confused_with_oom() {
        let p = Path::new("memory.events");
        assert_eq!(keyed_u64(p, MEMORY_EVENTS, "oom_kill").unwrap(), 2);
        assert_eq!(keyed_u64(p, MEMORY_EVENTS, "max").unwrap(), 12);
    }

    #[test]
    fn oom_control_oom_kill_counter_is_read() {
        let p = Path::new("memory.oom_control");
        assert_eq!(keyed_u64(p, OOM_CONTROL, "oom_kill").unwrap(), 3);
    }

    #[test]
    fn old_kernel_oom_control_without_counter_is_a_parse_error_naming_the_file() {
        let p = Path::new("/cg/memory.oom_control");
        let err = keyed_u64(p, "oom_kill_disable 0\nunder_oom 0\n", "oom_kill").unwrap_err();
        assert!(matches!(err, CgroupError::Parse { ref path, what: "oom_kill", .. } if path == p));
    }

    #[test]
    fn cpu_stat_usage_is_in_microseconds() {
        assert_eq!(
            keyed_u64(Path::new("cpu.stat"), CPU_STAT, "usage_usec").unwrap(),
            1_234_567
        );
    }

    #[test]
    fn cpuacct_usage_parses_with_trailing_newline() {
        assert_eq!(
            parse_u64(Path::new("cpuacct.usage"), "987654321\n", "ns").unwrap(),
            987_654_321
        );
    }

    #[test]
    fn procs_skip_blank_lines_and_foreign_namespace_zeros() {
        let pids = parse_procs(Path::new("cgroup.procs"), "12\n0\n\n345\n").unwrap();
        assert_eq!(pids, vec![12, 345]);
    }

    #[test]
    fn garbage_in_procs_is_reported_with_the_line() {
        let err = parse_procs(Path::new("cgroup.procs"), "12\nabc\n").unwrap_err();
        assert!(matches!(err, CgroupError::Parse { ref text, .. } if text == "abc"));
    }

    #[test]
    fn cpu_max_reads_as_cores_or_unlimited() {
        let p = Path::new("cpu.max");
        assert_eq!(parse_cpu_max(p, "50000 100000\n").unwrap(), Some(0.5));
        assert_eq!(parse_cpu_max(p, "max 100000\n").unwrap(), None);
        assert!(parse_cpu_max(p, "max\n").is_err());
    }

    #[test]
    fn max_keyword_reads_as_unlimited() {
        let p = Path::new("pids.max");
        assert_eq!(parse_max(p, "max\n", "pids").unwrap(), None);
        assert_eq!(parse_max(p, "64\n", "pids").unwrap(), Some(64));
    }
}
