//! The task configuration model.
//!
//! Two phases: [`wire`] holds serde types that mirror Aurora's JSON as it is (every key optional,
//! unknown keys ignored); validation turns them into the model below, reporting every problem at
//! once with its field path. The [`template`] binder fills `{{thermos.*}}` and `{{mesos.*}}`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub mod template;
pub mod wire;

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

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    /// CPU cores (fractional); 0 = no limit.
    pub cpu: f64,
    /// Bytes of memory; 0 = no limit.
    pub ram: u64,
    /// Bytes of sandbox disk; 0 = no limit.
    pub disk: u64,
    pub gpu: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
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
