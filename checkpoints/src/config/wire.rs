//! Phase 1: the config as it arrives on the wire.
//!
//! These types mirror Aurora's JSON key for key. Every key is optional and unknown keys are
//! ignored. A value of the wrong JSON type does not fail the parse: it is kept as [`Loose::Bad`]
//! so that validation can report it with its field path, alongside every other problem.
//! Numbers are kept as [`serde_json::Number`] because Aurora writes some of them as integers and
//! some as floats (`min_duration: 5`, `initial_interval_secs: 15.0`); validation decides which
//! numbers must be whole.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Number, Value};

/// A value of the expected type, or the JSON that was found instead.
#[derive(Debug, Clone, PartialEq)]
pub enum Loose<T> {
    Good(T),
    Bad(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(d)?;
        Ok(match T::deserialize(&raw) {
            Ok(t) => Loose::Good(t),
            Err(_) => Loose::Bad(raw),
        })
    }
}

/// An optional, loosely typed field.
pub type Field<T> = Option<Loose<T>>;

/// What a JSON value is, for messages: `a string`, `an object`, ...
pub fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A config in one of the three accepted shapes.
#[derive(Debug, Clone)]
pub enum WireConfig {
    /// Aurora job JSON, or a MesosTaskInstance when `instance` is present.
    Job(Box<WireJob>),
    /// A bare Thermos task.
    Task(Box<WireTask>),
}

/// The top level of a config is not one of the accepted shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error(
        "not a task config: the top level is {found}, expected an object (an Aurora job or \
         MesosTaskInstance with \"task\", or a Thermos task with \"processes\")"
    )]
    NotAnObject { found: &'static str },
    #[error(
        "not a task config: expected \"task\" (an Aurora job or MesosTaskInstance) or \
         \"processes\" (a Thermos task) at the top level"
    )]
    UnknownShape,
}

impl WireConfig {
    /// Recognise the shape of a parsed JSON document and read it into wire types.
    pub fn from_value(v: &Value) -> Result<WireConfig, ShapeError> {
        let Value::Object(map) = v else {
            return Err(ShapeError::NotAnObject { found: describe(v) });
        };
        // Every field is optional and loosely typed, so reading an object cannot fail; the
        // fallback only keeps this honest if that ever changes.
        if map.contains_key("task") {
            Ok(WireConfig::Job(Box::new(
                WireJob::deserialize(v).unwrap_or_default(),
            )))
        } else if map.contains_key("processes") {
            Ok(WireConfig::Task(Box::new(
                WireTask::deserialize(v).unwrap_or_default(),
            )))
        } else {
            Err(ShapeError::UnknownShape)
        }
    }
}

/// Aurora's `MesosJob` (the executor's `executorConfig.data`), or a `MesosTaskInstance`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireJob {
    pub task: Field<WireTask>,
    /// Present in a MesosTaskInstance only.
    pub instance: Field<Number>,
    pub role: Field<String>,
    pub environment: Field<String>,
    pub name: Field<String>,
    pub cluster: Field<String>,
    pub health_check_config: Field<WireHealthCheck>,
    pub lifecycle: Field<WireLifecycle>,
    pub announce: Field<WireAnnounce>,
}

/// Thermos's `Task`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireTask {
    pub name: Field<String>,
    pub processes: Field<Vec<Loose<WireProcess>>>,
    pub constraints: Field<Vec<Loose<WireConstraint>>>,
    pub resources: Field<WireResources>,
    pub max_failures: Field<Number>,
    pub max_concurrency: Field<Number>,
    pub finalization_wait: Field<Number>,
}

/// Thermos's `Process`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireProcess {
    pub name: Field<String>,
    pub cmdline: Field<String>,
    pub max_failures: Field<Number>,
    pub daemon: Field<bool>,
    pub ephemeral: Field<bool>,
    pub min_duration: Field<Number>,
    #[serde(rename = "final")]
    pub is_final: Field<bool>,
    pub logger: Field<WireLogger>,
}

/// Thermos's `Logger`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireLogger {
    pub destination: Field<String>,
    pub mode: Field<String>,
    pub rotate: Field<WireRotate>,
}

/// Thermos's `RotatePolicy`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireRotate {
    pub log_size: Field<Number>,
    pub backups: Field<Number>,
}

/// Thermos's `Constraint`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireConstraint {
    pub order: Field<Vec<Loose<String>>>,
}

/// Thermos's `Resources`, and two keys of Hearth's own.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireResources {
    pub cpu: Field<Number>,
    pub ram: Field<Number>,
    pub disk: Field<Number>,
    pub gpu: Field<Number>,
    /// Hearth's own: swap allowed on top of `ram`.
    pub swap: Field<Number>,
    /// Hearth's own: a soft memory limit.
    pub ram_high: Field<Number>,
}

/// Aurora's `HealthCheckConfig`, including the pre-`health_checker` keys (`endpoint`,
/// `expected_response`, `expected_response_code` at the top level) older clients wrote.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireHealthCheck {
    pub health_checker: Field<WireHealthChecker>,
    pub initial_interval_secs: Field<Number>,
    pub interval_secs: Field<Number>,
    pub timeout_secs: Field<Number>,
    pub max_consecutive_failures: Field<Number>,
    pub min_consecutive_successes: Field<Number>,
    pub endpoint: Field<String>,
    pub expected_response: Field<String>,
    pub expected_response_code: Field<Number>,
}

/// Aurora's `HealthCheckerConfig`: `http` or `shell`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireHealthChecker {
    pub http: Field<WireHttpChecker>,
    pub shell: Field<WireShellChecker>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireHttpChecker {
    pub endpoint: Field<String>,
    pub expected_response: Field<String>,
    pub expected_response_code: Field<Number>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireShellChecker {
    pub shell_command: Field<String>,
}

/// Aurora's `LifecycleConfig`. Without `http` the lifecycle endpoints are off.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireLifecycle {
    pub http: Field<WireHttpLifecycle>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireHttpLifecycle {
    pub port: Field<String>,
    pub graceful_shutdown_endpoint: Field<String>,
    pub shutdown_endpoint: Field<String>,
    pub graceful_shutdown_wait_secs: Field<Number>,
    pub shutdown_wait_secs: Field<Number>,
}

/// Aurora's `Announcer`; only the parts an executor needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WireAnnounce {
    pub primary_port: Field<String>,
    /// alias -> port name, or a fixed port number (a JSON number or a numeric string).
    pub portmap: Field<BTreeMap<String, Value>>,
}
