//! Errors: each names the file, the line and column where it can, and what to write instead.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Python that the rewrites do not support, found at a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub line: usize,
    pub col: usize,
    pub what: String,
    pub instead: String,
}

/// Why a config file could not be evaluated at all.
#[derive(Debug, thiserror::Error)]
pub enum AuroraError {
    #[error("{}: cannot read the config: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: the config is {size} bytes, more than the {limit} a config may have", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{}:{line}:{col}: {what}; {instead}", file.display())]
    Unsupported {
        file: PathBuf,
        line: usize,
        col: usize,
        what: String,
        instead: String,
    },
    #[error("{}:{line}:{col}: {message}", file.display())]
    Eval {
        file: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{}:{line}:{col}: include({target:?}): {reason}", file.display())]
    Include {
        file: PathBuf,
        line: usize,
        col: usize,
        target: String,
        reason: String,
    },
    #[error(
        "{}: evaluation took longer than the time limit of {limit:?}{at} and was stopped; look \
         for a loop that runs too long or a template that expands without end (raise the limit \
         only if the config is really that large)",
        file.display()
    )]
    TimeLimit {
        file: PathBuf,
        limit: Duration,
        at: Location,
    },
    #[error(
        "{}: evaluation used more than the memory limit of {} MiB{at} and was stopped; look for \
         a list or string that grows without bound",
        file.display(),
        limit / (1024 * 1024)
    )]
    MemoryLimit {
        file: PathBuf,
        limit: usize,
        at: Location,
    },
    #[error(
        "{}: the config defines no `jobs` list; end it with `jobs = [job1, job2]`",
        file.display()
    )]
    NoJobs { file: PathBuf },
    #[error("{}: {message}", file.display())]
    BadJobs { file: PathBuf, message: String },
    #[error("--bind {text:?}: expected NAME=VALUE, e.g. --bind profile.version=42")]
    BadBind { text: String },
    #[error(
        "{}: no job {key}; the file defines: {}",
        file.display(),
        if known.is_empty() { "no jobs".to_owned() } else { known.join(", ") }
    )]
    UnknownJob {
        file: PathBuf,
        key: String,
        known: Vec<String>,
    },
    #[error(
        "{}: {key} is not a job key; write CLUSTER/ROLE/ENVIRONMENT/NAME (the file defines: {})",
        file.display(),
        known.join(", ")
    )]
    BadKey {
        file: PathBuf,
        key: String,
        known: Vec<String>,
    },
    #[error(
        "{}: {count} jobs have the key {key}; give each job a distinct cluster, role, \
         environment or name",
        file.display()
    )]
    AmbiguousJob {
        file: PathBuf,
        key: String,
        count: usize,
    },
    #[error("{}: job {key}: {error}", file.display())]
    Job {
        file: PathBuf,
        key: String,
        #[source]
        error: JobError,
    },
}

/// Where in a file something happened, when known (` at file:line:col`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location(pub Option<(PathBuf, usize, usize)>);

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some((file, line, col)) => write!(f, " (at {}:{line}:{col})", file.display()),
            None => Ok(()),
        }
    }
}

/// A problem with one field of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field path, e.g. `task.processes[0].cmdline`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Why one job of a file cannot be used (the file's other jobs still can).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error(
        "it runs in a container ({kind}); Hearth runs a task's processes on the host, without \
         container images. Remove `container=` from this job to run it on the host"
    )]
    Container { kind: String },
    #[error("{}", problems.iter().map(|p| format!("\n  - {p}")).collect::<String>())]
    Invalid { problems: Vec<Problem> },
}
