//! Why a task could not be started.

use std::io;
use std::path::PathBuf;

use hearth_checkpoints::{root, stream};
use thiserror::Error;

use crate::cgroup;
use crate::keeper::socket::{KeeperAddr, PeerError};

/// Why a task could not be started. `Usage` errors map to exit code 2 and leave nothing behind.
#[derive(Debug, Error)]
pub enum PrepareError {
    #[error("invalid task config {path}:\n{errors}")]
    Config { path: PathBuf, errors: String },
    /// The caller's mistake (a flag, a user that does not exist).
    #[error("{0}")]
    Usage(String),
    /// A bug in the executor, not the caller's mistake: exit code 5.
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("user {name:?}: cannot look it up")]
    UserLookup {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("task {task_id:?} is already run by executor pid {pid} (pass --force to take it over)")]
    Owned { task_id: String, pid: i32 },
    #[error("task {task_id:?} already ended {state}; choose another --task-id")]
    AlreadyFinished {
        task_id: String,
        state: &'static str,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint {path}")]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: stream::CheckpointError,
    },
    #[error(transparent)]
    Root(#[from] root::RootError),
    #[error("task {task_id:?}: cannot {what} its keeper ({addr})")]
    Keeper {
        task_id: String,
        what: &'static str,
        addr: KeeperAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "task {task_id:?}: its keeper's socket {addr} is already held{}",
        holder.map_or(String::new(), |(pid, uid)| format!(" by pid {pid} (uid {uid})"))
    )]
    KeeperSocketTaken {
        task_id: String,
        addr: KeeperAddr,
        /// Who answers on it, `(pid, uid)`, when anyone does.
        holder: Option<(i32, u32)>,
    },
    #[error("task {task_id:?}: {source}")]
    KeeperPeer { task_id: String, source: PeerError },
    /// A start failed after creating the task's cgroup, and removing the cgroup failed too.
    #[error(
        "{}; and its cgroup {} could not be removed: {}",
        crate::error_chain(failure.as_ref()),
        cgroup.display(),
        crate::error_chain(cleanup)
    )]
    CgroupLeft {
        failure: Box<PrepareError>,
        cgroup: PathBuf,
        cleanup: cgroup::CgroupError,
    },
    #[error("cgroup for task {task_id:?}")]
    Cgroup {
        task_id: String,
        #[source]
        source: cgroup::CgroupError,
    },
}

impl PrepareError {
    /// Whether this is the caller's mistake (exit code 2) rather than a failure to run.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            PrepareError::Config { .. }
                | PrepareError::Usage(_)
                | PrepareError::Owned { .. }
                | PrepareError::AlreadyFinished { .. }
        ) || matches!(self, PrepareError::Root(e) if e.is_usage())
            || matches!(self, PrepareError::CgroupLeft { failure, .. } if failure.is_usage())
    }

    /// The exit code of `hearth run` for this error: 2 for the caller's mistakes, 5 for an
    /// internal error, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            PrepareError::CgroupLeft { failure, .. } => failure.exit_code(),
            PrepareError::Internal(_) => 5,
            e if e.is_usage() => 2,
            _ => 1,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_whose_cgroup_cannot_be_removed_reports_both_errors() {
        let err = PrepareError::CgroupLeft {
            failure: Box::new(PrepareError::Keeper {
                task_id: "t".into(),
                what: "fork",
                addr: KeeperAddr::Abstract(b"hearth-keeper/x/t".to_vec()),
                source: io::Error::from_raw_os_error(libc::EAGAIN),
            }),
            cgroup: "hearth/t".into(),
            cleanup: cgroup::CgroupError::RemoveDir {
                path: "/sys/fs/cgroup/pids/hearth/t".into(),
                source: io::Error::from_raw_os_error(libc::EBUSY),
            },
        };
        let text = err.to_string();
        assert!(
            text.starts_with(
                "task \"t\": cannot fork its keeper (@hearth-keeper/x/t): Resource temporarily \
                 unavailable"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "; and its cgroup hearth/t could not be removed: removing cgroup directory \
                 /sys/fs/cgroup/pids/hearth/t: Device or resource busy (os error 16)"
            ),
            "{text}"
        );
        assert_eq!(err.exit_code(), 1);
    }
}
