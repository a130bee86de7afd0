//! Finding the task's running keeper, or binding its socket and forking a new one; and undoing
//! the cgroup of a start that fails there.

use std::io;
use std::path::Path;

use super::PrepareError;
use crate::cgroup::TaskCgroup;
use crate::keeper::socket::{self as keeper_socket, KeeperAddr};
use crate::keeper::{self, KeeperPaths};

/// The task's running keeper (adopted after a restart), else a new one.
pub(super) fn find_or_start_keeper(
    task_id: &str,
    ckpt_dir: &Path,
    keeper_stream: &Path,
    cgroup: Option<&TaskCgroup>,
) -> Result<KeeperAddr, PrepareError> {
    let running = keeper_socket::find_running(ckpt_dir, task_id).map_err(|source| {
        PrepareError::KeeperPeer {
            task_id: task_id.to_owned(),
            source,
        }
    })?;
    if let Some(addr) = running {
        return Ok(addr);
    }
    let paths = KeeperPaths {
        task_id: task_id.to_owned(),
        stream: keeper_stream.to_path_buf(),
        log: ckpt_dir.join("keeper.log"),
        cgroup_procs: cgroup.map(|c| c.join_files()).unwrap_or_default(),
    };
    start_keeper(&paths, keeper_socket::abstract_name(ckpt_dir, task_id))
}

/// Remove the cgroup a failed start created (it holds no process: none was started). When that
/// fails too, the error says both.
pub(super) fn undo_cgroup(failure: PrepareError, cgroup: &TaskCgroup) -> PrepareError {
    match cgroup.remove() {
        Ok(()) => failure,
        Err(cleanup) => PrepareError::CgroupLeft {
            failure: Box::new(failure),
            cgroup: cgroup.name().to_path_buf(),
            cleanup,
        },
    }
}

/// Bind the keeper's abstract socket `name`, then fork the keeper, which inherits it. The keeper
/// stays our child while we live; if we die first it is re-parented (to init or the nearest
/// subreaper) and outlives us, and a restarted executor reaches it through the same name.
fn start_keeper(paths: &KeeperPaths, name: Vec<u8>) -> Result<KeeperAddr, PrepareError> {
    if !crate::spawn::is_single_threaded() {
        return Err(PrepareError::Internal(
            "the keeper must be forked before any thread starts",
        ));
    }
    let task_id = || paths.task_id.clone();
    let listener = match keeper_socket::bind(&name) {
        Ok(l) => l,
        // One keeper per task: the name is held by a keeper that did not answer us (or by
        // something else entirely).
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            return Err(PrepareError::KeeperSocketTaken {
                task_id: task_id(),
                holder: keeper_socket::holder(&name),
                addr: KeeperAddr::Abstract(name),
            });
        }
        Err(source) => {
            return Err(PrepareError::Keeper {
                task_id: task_id(),
                what: "bind the socket of",
                addr: KeeperAddr::Abstract(name),
                source,
            });
        }
    };
    let addr = KeeperAddr::Abstract(name);
    let p = paths.clone();
    crate::spawn::fork_keeper(move || {
        keeper::rename_process(&p.task_id);
        keeper::run(&p, listener)
    })
    .map_err(|source| PrepareError::Keeper {
        task_id: task_id(),
        what: "fork",
        addr: addr.clone(),
        source,
    })?;
    Ok(addr)
}
