//! The one error type of the cgroup module.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

/// Everything that can go wrong while managing a task's cgroup.
///
/// Every variant names the file or directory it concerns, so an operator can look at it directly.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No usable cgroup hierarchy was found in the mount table.
    #[error("no cgroup hierarchy is mounted (according to {path})")]
    NoHierarchy { path: PathBuf },

    /// A hierarchy exists but this process cannot manage cgroups in it.
    #[error("cgroups at {path} are not usable: {reason}")]
    NotUsable {
        path: PathBuf,
        reason: String,
        #[source]
        source: Option<nix::Error>,
    },

    /// A cgroup or parent name is not a plain relative path.
    #[error("invalid cgroup name {path:?}: {reason}")]
    InvalidName { path: PathBuf, reason: &'static str },

    /// A requested limit makes no sense (zero, negative, not a number).
    #[error("invalid limit {field} = {value}: {reason}")]
    InvalidLimit {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    /// A limit or a feature needs a controller that is not mounted or not available.
    #[error("{path}: controller {controller} is not available")]
    MissingController {
        path: PathBuf,
        controller: &'static str,
    },

    /// The v2 parent did not enable a controller for its children even after we asked.
    #[error(
        "{path}: controller {controller} could not be enabled (subtree_control reads {read:?})"
    )]
    ControllerNotEnabled {
        path: PathBuf,
        controller: &'static str,
        read: String,
    },

    /// The task's cgroup directory already exists (use `open_existing` to re-attach).
    #[error("cgroup {path} already exists")]
    AlreadyExists { path: PathBuf },

    /// The task's cgroup directory does not exist.
    #[error("cgroup {path} does not exist")]
    NotFound { path: PathBuf },

    /// Creating a directory failed.
    #[error("creating cgroup directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Removing a directory failed (after retries, for `EBUSY`).
    #[error("removing cgroup directory {path}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Reading a control file failed.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Writing a control file failed (the kernel refused the value, or the file is missing).
    #[error("writing {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },

    /// A control file held something we could not parse.
    #[error("{path}: cannot parse {what} from {text:?}")]
    Parse {
        path: PathBuf,
        what: &'static str,
        text: String,
    },

    /// A limit was written without error but reads back as something else.
    #[error("{path}: the kernel did not take the limit: wrote {wrote:?}, reads back {read:?}")]
    LimitNotApplied {
        path: PathBuf,
        wrote: String,
        read: String,
    },

    /// Sending a signal to a member of the cgroup failed (other than "no such process").
    #[error("sending {signal} to pid {pid} of cgroup {path}")]
    Signal {
        path: PathBuf,
        pid: i32,
        signal: Signal,
        #[source]
        source: nix::Error,
    },

    /// The cgroup still had processes when the wait for it to empty ran out.
    #[error("cgroup {path} still holds {} process(es) after {waited:?}: {pids:?}", pids.len())]
    NotEmpty {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },

    /// Processes kept appearing in the delegated cgroup while we moved them into its leaf.
    #[error(
        "cannot empty the delegated cgroup {path} into its leaf {leaf}: processes {pids:?} are \
         still there"
    )]
    StillOccupied {
        path: PathBuf,
        leaf: PathBuf,
        pids: Vec<i32>,
    },

    /// Creating failed, and removing what had been created failed too. Both errors are kept.
    #[error("creating cgroup {path} failed ({cause}), and cleaning up failed too")]
    CleanupFailed {
        path: PathBuf,
        cause: Box<CgroupError>,
        #[source]
        cleanup: Box<CgroupError>,
    },
}
