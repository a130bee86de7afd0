//! The task configuration model.
//!
//! Two phases, as in every config loader we trust:
//!
//! 1. [`wire`]: serde types that mirror Aurora's JSON as it is. Every key is optional, unknown keys
//!    are ignored (a newer client must not break an older executor), and a value of the wrong type
//!    is kept aside rather than failing the parse, so that phase 2 can report it with its path.
//! 2. [`validate`]: turns the wire types into the model below, filling every default of DESIGN
//!    section 3 and collecting **every** problem at once, each with the field path it concerns
//!    (`task.processes[2].name: must not contain '/'`).
//!
//! The [`template`] binder then fills `{{thermos.*}}` and `{{mesos.*}}` once the executor knows the
//! task id, user, instance, hostname and ports.
//!
//! Three shapes are accepted: an Aurora **job** JSON (`executorConfig.data`: has `task`), a
//! **MesosTaskInstance** (has `task` and `instance`) and a bare **Thermos task** (has `processes`).
//! Field paths follow the file: `task.processes[0].name` in a job, `processes[0].name` in a bare
//! task.
//!
//! Decisions worth knowing (Aurora compatibility):
//! * Aurora's client writes a `health_check_config` (HTTP) and a `lifecycle` into every job, and
//!   Aurora's executor only uses them when the task has a `health` port. We do the same: the HTTP
//!   health checker and the lifecycle endpoints are kept in the model only when the task *names*
//!   the port (in a `{{thermos.ports[...]}}` template, directly or through an `announce.portmap`
//!   alias, or as a portmap key or target). A shell health checker needs no port and is always
//!   kept. A job without `health_check_config` gets the default one under the same rule; a bare
//!   Thermos task never gets a health check it did not ask for.
//! * `lifecycle: {}` (Aurora's `DisableLifecycle`) turns the lifecycle endpoints off.
//! * Counts and byte sizes must be whole, non-negative numbers (`5` and `5.0` both pass); durations
//!   may be fractional seconds.
//! * `resources` takes two keys of Hearth's own beside Aurora's `cpu`, `ram`, `disk` and `gpu`:
//!   `swap` (bytes of swap allowed on top of `ram`; default 0, no swap; needs `ram`) and
//!   `ram_high` (a soft limit in bytes, cgroup v2 `memory.high`; at most `ram`). See
//!   [`Resources`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

pub mod template;
mod validate;
pub mod wire;

pub use validate::is_valid_process_name;

/// Configs larger than this are refused before they are read into memory.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Parse and validate a task config given as JSON text (any of the three shapes).
pub fn parse(json: &str) -> Result<TaskConfig, ConfigErrors> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| json_syntax(&e))?;
    let wire = wire::WireConfig::from_value(&value)
        .map_err(|e| ConfigErrors::single("", e.to_string()))?;
    validate::validate(&wire)
}

/// Read, parse and validate the task config at `path`. An unreadable file or a JSON syntax error
/// is reported as a single problem; this never panics.
pub fn load(path: &Path) -> Result<TaskConfig, ConfigErrors> {
    let cannot_read = |e: std::io::Error| {
        ConfigErrors::single("", format!("cannot read {}: {e}", path.display()))
    };
    let meta = std::fs::metadata(path).map_err(cannot_read)?;
    if meta.is_dir() {
        return Err(ConfigErrors::single(
            "",
            format!("cannot read {}: is a directory", path.display()),
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigErrors::single(
            "",
            format!(
                "cannot read {}: {} bytes is over the {MAX_CONFIG_BYTES}-byte limit for a config",
                path.display(),
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(cannot_read)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        ConfigErrors::single(
            "",
            format!(
                "cannot read {}: not UTF-8 (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    parse(&text)
}

/// A JSON syntax error as one problem, with its line and column.
fn json_syntax(e: &serde_json::Error) -> ConfigErrors {
    // serde_json's message ends with " at line L column C"; we say where first.
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => full.as_str(),
    };
    ConfigErrors::single(
        "",
        format!(
            "invalid JSON at line {}, column {}: {message}",
            e.line(),
            e.column()
        ),
    )
}

/// One problem found in a config: where (a field path such as `task.processes[2].name`, or empty
/// for the file as a whole) and what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config. Displays as one `path: message` line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub problems: Vec<ConfigProblem>,
}

impl ConfigErrors {
    /// A report of exactly one problem.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors {
            problems: vec![ConfigProblem {
                path: path.into(),
                message: message.into(),
            }],
        }
    }

    pub fn problems(&self) -> &[ConfigProblem] {
        &self.problems
    }

    /// Whether some problem is exactly `path: message` (handy in tests and callers).
    pub fn has(&self, path: &str, message: &str) -> bool {
        self.problems
            .iter()
            .any(|p| p.path == path && p.message == message)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Which of the accepted shapes a config arrived in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigKind {
    /// Aurora's job JSON (`executorConfig.data`): task fields live under `task`.
    AuroraJob,
    /// A MesosTaskInstance: like a job, plus `instance`.
    TaskInstance,
    /// A bare Thermos task: task fields at the top level.
    #[default]
    ThermosTask,
}

impl ConfigKind {
    /// The field-path prefix of task fields in this shape (`task.` or nothing).
    pub fn task_prefix(self) -> &'static str {
        match self {
            ConfigKind::AuroraJob | ConfigKind::TaskInstance => "task.",
            ConfigKind::ThermosTask => "",
        }
    }
}

/// A validated task, ready to run (templates may still be unbound until [`template`] binds them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskConfig {
    /// Task name (`task.name`).
    pub name: String,
    /// Regular and final processes, in config order.
    pub processes: Vec<ProcessConfig>,
    /// Order constraints: each inner list adds edges `p[k-1] -> p[k]`.
    pub constraints: Vec<Vec<String>>,
    pub resources: Resources,
    /// Permanently failed regular processes that fail the task; 0 = unlimited.
    pub max_failures: u32,
    /// Most processes running at once; 0 = unlimited.
    pub max_concurrency: u32,
    #[serde(with = "secs")]
    pub finalization_wait: Duration,
    /// Job-level settings (absent for a bare Thermos task).
    pub job: JobInfo,
}

/// Job-level settings from Aurora's job JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobInfo {
    pub role: Option<String>,
    pub environment: Option<String>,
    pub name: Option<String>,
    pub cluster: Option<String>,
    /// MesosTaskInstance's `instance`.
    pub instance: Option<u32>,
    pub health_check: Option<HealthCheckConfig>,
    pub lifecycle: Option<LifecycleConfig>,
    /// `announce.portmap`: alias -> port name or number.
    pub portmap: BTreeMap<String, String>,
    /// The shape the config arrived in (decides the prefix of field paths).
    pub kind: ConfigKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessConfig {
    pub name: String,
    /// Run as `/bin/bash -c CMDLINE`.
    pub cmdline: String,
    /// 0 = retry forever.
    pub max_failures: u32,
    pub daemon: bool,
    pub ephemeral: bool,
    /// Minimum time between the end of one run and the start of the next.
    #[serde(with = "secs")]
    pub min_duration: Duration,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub logger: LoggerConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogDestination {
    File,
    Console,
    Both,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogMode {
    Standard,
    Rotate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggerConfig {
    pub destination: LogDestination,
    pub mode: LogMode,
    /// Bytes per log file before rotation (rotate mode).
    pub log_size: u64,
    /// Rotated files kept (rotate mode).
    pub backups: u32,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        LoggerConfig {
            destination: LogDestination::File,
            mode: LogMode::Standard,
            log_size: 100 * 1024 * 1024,
            backups: 5,
        }
    }
}

/// What a task may use. `cpu`, `ram`, `disk` and `gpu` are Aurora's; `swap` and `ram_high` are
/// Hearth's own (Aurora's client does not write them), enforced on cgroup v2 only.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    /// CPU cores (fractional); 0 = no limit.
    pub cpu: f64,
    /// Bytes of memory (RAM); 0 = no limit.
    pub ram: u64,
    /// Bytes of sandbox disk; 0 = no limit.
    pub disk: u64,
    pub gpu: u64,
    /// Bytes of swap the task may use on top of `ram` (cgroup v2 `memory.swap.max`); 0, the
    /// default, = none: a task with a RAM limit does not swap. Needs `ram`.
    #[serde(skip_serializing_if = "is_zero")]
    pub swap: u64,
    /// A soft memory limit in bytes below `ram` (cgroup v2 `memory.high`): above it the kernel
    /// throttles the task and reclaims its memory hard, without killing it; 0, the default, =
    /// none. At most `ram` when `ram` is set. Refused at start on cgroup v1, which has no
    /// equivalent.
    #[serde(skip_serializing_if = "is_zero")]
    pub ram_high: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Serialized as Aurora writes it: `{"http": {...}}` or `{"shell": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthChecker {
    Http {
        endpoint: String,
        expected_response: String,
        expected_response_code: u16,
    },
    Shell {
        shell_command: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheckConfig {
    pub checker: HealthChecker,
    #[serde(with = "secs")]
    pub initial_interval: Duration,
    #[serde(with = "secs")]
    pub interval: Duration,
    #[serde(with = "secs")]
    pub timeout: Duration,
    pub max_consecutive_failures: u32,
    pub min_consecutive_successes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LifecycleConfig {
    /// Port name the lifecycle endpoints listen on (`health`).
    pub port: String,
    pub graceful_shutdown_endpoint: String,
    pub shutdown_endpoint: String,
    #[serde(with = "secs")]
    pub graceful_shutdown_wait: Duration,
    #[serde(with = "secs")]
    pub shutdown_wait: Duration,
}

/// Serialize durations as fractional seconds, the unit Aurora's JSON uses.
mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests;
