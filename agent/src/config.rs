//! The agent's configuration: what `hearth agent` takes, parsed and validated before anything
//! starts, and what the host has when nothing is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hearth_scheduler::wire::{PortRange, ResourceVec};

use crate::AgentError;

/// The default port range of an agent (`--ports`), Mesos's default.
pub const DEFAULT_PORTS: PortRange = PortRange {
    first: 31000,
    last: 32000,
};

/// Everything the agent runs with. Its `Debug` shows whether a token is set, never the token.
#[derive(Clone, PartialEq)]
pub struct AgentConfig {
    /// The scheduler's base URL (`http://host:port`).
    pub scheduler: String,
    /// The checkpoint root the agent's tasks run in; the agent keeps its own files under
    /// `<root>/agent/`. The root belongs to the agent: every active task in it is reported.
    pub root: PathBuf,
    /// The host name the agent registers (`--name`, default this host's name), also given to each
    /// task as `--hostname`.
    pub name: String,
    /// Attributes for constraints (`--attribute rack=r1`).
    pub attributes: BTreeMap<String, String>,
    /// What the agent offers (default: what the host has, see [`host_resources_at`]).
    pub resources: ResourceVec,
    /// The ports the scheduler may give this host's tasks.
    pub ports: PortRange,
    /// The agent token (`--token-file`), sent as `Authorization: Bearer` and handed to the
    /// executors through a file only root can read. Never logged.
    pub token: Option<String>,
    /// The `hearth` binary whose `run` and `kill` the agent starts.
    pub hearth_bin: PathBuf,
    /// More arguments for every `hearth run` (e.g. `--no-setuid`, `--no-cgroups`).
    pub extra_run_args: Vec<String>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("scheduler", &self.scheduler)
            .field("root", &self.root)
            .field("name", &self.name)
            .field("attributes", &self.attributes)
            .field("resources", &self.resources)
            .field("ports", &self.ports)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("hearth_bin", &self.hearth_bin)
            .field("extra_run_args", &self.extra_run_args)
            .finish()
    }
}

impl AgentConfig {
    /// A configuration with every default: this host's name and resources (disk: the file system
    /// holding `root`), ports 31000-32000, no token, no attributes, the running executable as
    /// `hearth`.
    pub fn new(scheduler: impl Into<String>, root: impl Into<PathBuf>) -> AgentConfig {
        let root = root.into();
        AgentConfig {
            scheduler: scheduler.into(),
            resources: host_resources_at(&root),
            root,
            name: host_name(),
            attributes: BTreeMap::new(),
            ports: DEFAULT_PORTS,
            token: None,
            hearth_bin: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hearth")),
            extra_run_args: Vec::new(),
        }
    }
}

/// This host's name (`gethostname`), or `localhost` when it cannot be read.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// What this host has: its usable cores, its RAM (`MemTotal` of `/proc/meminfo`) and the size of
/// the file system holding `/`. See [`host_resources_at`] for the disk of a given root.
pub fn host_resources() -> ResourceVec {
    host_resources_at(Path::new("/"))
}

/// [`host_resources`], with the disk of the file system holding `root` (or its nearest existing
/// ancestor).
pub fn host_resources_at(root: &Path) -> ResourceVec {
    ResourceVec {
        cpu: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        ram: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| mem_total(&m))
            .unwrap_or(0),
        disk: disk_size(root).unwrap_or(0),
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// Size in bytes of the file system holding `path` or its nearest existing ancestor.
fn disk_size(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let st = rustix::fs::statvfs(existing).ok()?;
    st.f_blocks.checked_mul(st.f_frsize)
}

/// Parse `--resources`: `cpu=4,ram=8GiB,disk=100GiB`, any subset, in any order; what is not
/// given is what the host has ([`host_resources`]).
pub fn parse_resources(s: &str) -> Result<ResourceVec, AgentError> {
    parse_resources_over(s, host_resources())
}

/// [`parse_resources`] with the disk default taken from the file system holding `root`.
pub fn parse_resources_at(s: &str, root: &Path) -> Result<ResourceVec, AgentError> {
    parse_resources_over(s, host_resources_at(root))
}

/// Parse `--resources` over `defaults`. Sizes take `B`, `K`/`KiB`/`KB`, `M`/`MiB`/`MB`,
/// `G`/`GiB`/`GB`, `T`/`TiB`/`TB`, all powers of 1024 as Aurora's `GB` is; a bare number is bytes.
pub fn parse_resources_over(s: &str, defaults: ResourceVec) -> Result<ResourceVec, AgentError> {
    let bad = |item: &str, reason: String| AgentError::Resources {
        spec: s.to_owned(),
        item: item.to_owned(),
        reason,
    };
    let mut r = defaults;
    let mut seen = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| bad(item, "expected KEY=VALUE (cpu, ram or disk)".to_owned()))?;
        let key = key.trim();
        let value = value.trim();
        let canonical = match key {
            "cpu" | "cpus" => "cpu",
            "ram" | "mem" | "memory" => "ram",
            "disk" => "disk",
            _ => {
                return Err(bad(
                    item,
                    format!("unknown resource {key:?}; use cpu, ram or disk"),
                ));
            }
        };
        if seen.contains(&canonical) {
            return Err(bad(item, format!("{canonical} is given twice")));
        }
        seen.push(canonical);
        match canonical {
            "cpu" => {
                let cpu: f64 = value.parse().map_err(|_| {
                    bad(
                        item,
                        format!("{value:?} is not a number of cores (e.g. cpu=4 or cpu=0.5)"),
                    )
                })?;
                if !cpu.is_finite() || cpu <= 0.0 {
                    return Err(bad(item, "the number of cores must be above 0".to_owned()));
                }
                r.cpu = cpu;
            }
            "ram" => r.ram = parse_size(value).map_err(|reason| bad(item, reason))?,
            _ => r.disk = parse_size(value).map_err(|reason| bad(item, reason))?,
        }
    }
    Ok(r)
}

/// A size such as `8GiB`, `512M`, `1.5G` or `1048576`.
fn parse_size(value: &str) -> Result<u64, String> {
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "KB" | "k" => 10,
        "M" | "MiB" | "MB" => 20,
        "G" | "GiB" | "GB" => 30,
        "T" | "TiB" | "TB" => 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {value:?}; use B, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a size (e.g. 8GiB, 512MiB)"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(format!("{value:?} is not a size above 0 bytes"));
    }
    Ok(bytes as u64)
}

/// Parse `--ports`: `FIRST-LAST`, inclusive, `1 <= FIRST <= LAST <= 65535`.
pub fn parse_port_range(s: &str) -> Result<PortRange, AgentError> {
    let bad = |reason: &str| AgentError::Ports {
        spec: s.to_owned(),
        reason: reason.to_owned(),
    };
    let (first, last) = s
        .trim()
        .split_once('-')
        .ok_or_else(|| bad("expected FIRST-LAST, e.g. 31000-32000"))?;
    let port = |p: &str| -> Result<u16, AgentError> {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| bad("ports are numbers from 1 to 65535"))
    };
    let range = PortRange {
        first: port(first)?,
        last: port(last)?,
    };
    if range.first > range.last {
        return Err(bad("the first port is above the last"));
    }
    Ok(range)
}

/// What the `hearth run`s this agent starts will decide about cgroups, as far as the agent must
/// know it: `None` under `--run-arg=--no-cgroups`, else the explicit `--cgroup-parent` among the
/// run arguments (`Some(Some(parent))`), or none (`Some(None)`: the executors choose by the
/// delegation rule, see [`hearth_executor::cgroup::delegation`]).
pub fn run_cgroup_parent(extra_run_args: &[String]) -> Option<Option<String>> {
    let mut parent = None;
    let mut args = extra_run_args.iter();
    while let Some(arg) = args.next() {
        if arg == "--no-cgroups" {
            return None;
        }
        if arg == "--cgroup-parent" {
            parent = args.next().cloned();
        } else if let Some(value) = arg.strip_prefix("--cgroup-parent=") {
            parent = Some(value.to_owned());
        }
    }
    Some(parent)
}

/// Settles where task cgroups go before the agent starts any executor: on a cgroup v2 host inside
/// a cgroup systemd delegated to the agent (`Delegate=yes`), the agent moves itself (and whatever
/// else runs in that cgroup) into its `supervisor` leaf, so the executors it starts begin there
/// and task cgroups go under `<delegated>/hearth`. Logs the choice and why. Nothing to do when
/// the executors run without cgroups. A failure is logged, not fatal: each executor tries again
/// and reports its own outcome with its task.
pub fn settle_task_cgroups(extra_run_args: &[String]) {
    use hearth_executor::cgroup::{self, delegation};
    let Some(explicit) = run_cgroup_parent(extra_run_args) else {
        tracing::info!("tasks run without cgroups (--run-arg=--no-cgroups)");
        return;
    };
    let settled =
        cgroup::detect_host().and_then(|h| delegation::settle_host(&h, explicit.as_deref()));
    match settled {
        Ok(_) => {}
        Err(
            e @ (cgroup::CgroupError::NotUsable { .. } | cgroup::CgroupError::NoHierarchy { .. }),
        ) => {
            tracing::info!(
                "cgroups are not usable here ({}): tasks will run without them",
                hearth_executor::error_chain(&e)
            );
        }
        Err(e) => tracing::warn!(
            "cannot settle where task cgroups go ({}); each executor will try again",
            hearth_executor::error_chain(&e)
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HOST: ResourceVec = ResourceVec {
        cpu: 2.0,
        ram: 4 << 30,
        disk: 50 << 30,
    };

    #[test]
    fn resources_take_any_subset_and_default_the_rest_to_the_host() {
        let r = parse_resources_over("cpu=4,ram=8GiB,disk=100GiB", HOST).unwrap();
        assert_eq!(
            r,
            ResourceVec {
                cpu: 4.0,
                ram: 8 << 30,
                disk: 100 << 30
            }
        );
        let r = parse_resources_over("ram=512M", HOST).unwrap();
        assert_eq!(r.ram, 512 << 20);
        assert_eq!((r.cpu, r.disk), (HOST.cpu, HOST.disk));
        let r = parse_resources_over(" disk = 1.5G , cpu=0.5 ", HOST).unwrap();
        assert_eq!(r.disk, 3 << 29);
        assert_eq!(r.cpu, 0.5);
        assert_eq!(parse_resources_over("", HOST).unwrap(), HOST);
        assert_eq!(
            parse_resources_over("ram=1048576", HOST).unwrap().ram,
            1 << 20
        );
    }

    #[test]
    fn bad_resources_name_the_item_and_what_to_do() {
        for (spec, item, words) in [
            ("cpu=four", "cpu=four", "number of cores"),
            ("cpu=0", "cpu=0", "above 0"),
            ("gpu=1", "gpu=1", "unknown resource"),
            ("ram", "ram", "KEY=VALUE"),
            ("ram=8XB", "ram=8XB", "unit"),
            ("ram=1G,mem=2G", "mem=2G", "twice"),
            ("disk=0", "disk=0", "above 0"),
        ] {
            let e = parse_resources_over(spec, HOST).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(&e, AgentError::Resources { item: i, .. } if i == item),
                "{spec}: {e:?}"
            );
            assert!(text.contains(words), "{spec}: {text}");
        }
    }

    #[test]
    fn port_ranges_are_inclusive_and_checked() {
        assert_eq!(
            parse_port_range("31000-32000").unwrap(),
            PortRange {
                first: 31000,
                last: 32000
            }
        );
        assert_eq!(parse_port_range("80-80").unwrap().last, 80);
        for bad in ["31000", "0-10", "10-5", "1-70000", "a-b", ""] {
            assert!(
                matches!(parse_port_range(bad), Err(AgentError::Ports { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_config_never_shows_its_token() {
        let mut cfg = AgentConfig::new("http://s:1", "/r");
        cfg.token = Some("s3cret-token".into());
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let m = "MemTotal:        8048576 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total(m), Some(8_048_576 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn this_host_has_cores_memory_and_disk() {
        let r = host_resources();
        assert!(r.cpu >= 1.0 && r.ram > 0 && r.disk > 0, "{r:?}");
        let under = host_resources_at(Path::new("/nonexistent/dir/below"));
        assert_eq!(
            under.disk, r.disk,
            "the nearest existing ancestor is measured"
        );
    }

    #[test]
    fn run_arguments_say_whether_and_where_executors_make_cgroups() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(run_cgroup_parent(&[]), Some(None));
        assert_eq!(run_cgroup_parent(&args(&["--no-setuid"])), Some(None));
        assert_eq!(
            run_cgroup_parent(&args(&["--cgroup-parent", "custom/p"])),
            Some(Some("custom/p".to_owned()))
        );
        assert_eq!(
            run_cgroup_parent(&args(&["--cgroup-parent=x"])),
            Some(Some("x".to_owned()))
        );
        assert_eq!(
            run_cgroup_parent(&args(&["--cgroup-parent=x", "--no-cgroups"])),
            None
        );
    }
}
