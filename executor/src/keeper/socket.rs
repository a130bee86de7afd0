//! The keeper's socket: its address, binding it (done by the executor before the fork), finding a
//! running keeper, and who may talk to it.
//!
//! The keeper listens on an *abstract* Unix socket (Linux): a name in the kernel, not a file, so
//! the checkpoint directory may be on any file system (one that cannot hold socket files, such as
//! a shared folder or a FAT disk, included), and the 108-byte limit of socket paths no longer
//! depends on how long the checkpoint root's path is. The name is derived from the task's
//! canonical checkpoint directory (see [`abstract_name`]), so an executor restarted with the same
//! root finds it again, and binding it twice fails (`EADDRINUSE`): one keeper per task.
//!
//! An abstract socket has no file permissions, so the keeper checks the credentials of every
//! connection it accepts (`SO_PEERCRED`) and refuses any peer whose uid is neither its own nor
//! root; the executor checks the keeper it connects to the same way. Abstract names belong to a
//! network namespace: an executor finds its task's keeper only from the namespace it was started in.
//!
//! Keepers started by earlier builds listen on the socket file `checkpoints/<task_id>/keeper.sock`
//! ([`legacy_path`]); an executor adopting a task looks there when nothing answers on the abstract
//! name. Nothing binds that path any more.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{UnixCredentials, getsockopt, sockopt};

use super::Keeper;
use super::protocol::Reply;

/// The prefix of every keeper's abstract socket name.
pub const NAME_PREFIX: &str = "hearth-keeper/";

/// The longest abstract name: `sun_path` holds 108 bytes, the first of which is the NUL that
/// makes the name abstract.
const MAX_NAME: usize = 107;

/// Where a task's keeper listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperAddr {
    /// This build's: an abstract socket name (without the leading NUL).
    Abstract(Vec<u8>),
    /// Earlier builds': the socket file `checkpoints/<task_id>/keeper.sock`. Only connected to.
    Legacy(PathBuf),
}

impl fmt::Display for KeeperAddr {
    /// Abstract names as `ss -x` shows them, with a leading `@`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeeperAddr::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            KeeperAddr::Legacy(path) => write!(f, "{}", path.display()),
        }
    }
}

impl KeeperAddr {
    /// Connect (blocking; a keeper's connection waits in its listen backlog until accepted).
    /// Does not check who listens: see [`check_peer`].
    pub fn connect(&self) -> io::Result<UnixStream> {
        match self {
            KeeperAddr::Abstract(name) => {
                UnixStream::connect_addr(&SocketAddr::from_abstract_name(name)?)
            }
            KeeperAddr::Legacy(path) => UnixStream::connect(path),
        }
    }
}

/// The abstract socket name of the keeper of the task whose checkpoint directory is
/// `checkpoint_dir`: `hearth-keeper/<h>/<task_id>`, where `<h>` is the 128-bit FNV-1a hash of the
/// directory's canonical path in hex (the path itself may be longer than a name can be), and the
/// task id (for people reading `ss -xlp`) is cut to fit the 107 bytes a name may have.
pub fn abstract_name(checkpoint_dir: &Path, task_id: &str) -> Vec<u8> {
    let canonical = std::fs::canonicalize(checkpoint_dir);
    let dir = canonical.as_deref().unwrap_or(checkpoint_dir);
    let hash = fnv1a_128(dir.as_os_str().as_encoded_bytes());
    let mut name = format!("{NAME_PREFIX}{hash:032x}/").into_bytes();
    let room = MAX_NAME - name.len();
    let mut end = task_id.len().min(room);
    while !task_id.is_char_boundary(end) {
        end -= 1;
    }
    name.extend_from_slice(&task_id.as_bytes()[..end]);
    name
}

/// The socket file earlier builds' keepers listen on.
pub fn legacy_path(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir.join("keeper.sock")
}

/// FNV-1a, 128 bits: a fixed, documented hash (the name must not change between builds).
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

/// Bind a keeper's abstract socket. The executor binds it before forking the keeper, which
/// inherits the listener. Fails with `AddrInUse` when the name is taken: the task's keeper (or
/// whatever else holds it) is running.
pub fn bind(name: &[u8]) -> io::Result<UnixListener> {
    UnixListener::bind_addr(&SocketAddr::from_abstract_name(name)?)
}

/// Whether a process with these credentials may talk to a keeper run by `own_uid` (or be trusted
/// as the keeper by an executor run by `own_uid`): the same user, or root.
pub fn may_talk(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid || peer_uid == 0
}

/// The credentials of the process at the other end of `stream` (for a connected client: of the
/// process that made the listening socket).
pub fn peer_credentials(stream: &impl AsFd) -> io::Result<UnixCredentials> {
    getsockopt(stream, sockopt::PeerCredentials).map_err(io::Error::from)
}

/// Why the process listening at a keeper's address cannot be used as the keeper.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot read the credentials of the process listening at {addr}: {source}")]
    Credentials {
        addr: KeeperAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "{addr} is held by pid {pid} (uid {uid}), which is neither this user (uid {own_uid}) nor \
         root"
    )]
    Untrusted {
        addr: KeeperAddr,
        pid: i32,
        uid: u32,
        own_uid: u32,
    },
}

/// Check that the process listening at the other end of `stream` (connected to `addr`) may be
/// trusted as a keeper: it runs as this user or as root.
pub fn check_peer(stream: &UnixStream, addr: &KeeperAddr) -> Result<(), PeerError> {
    let cred = peer_credentials(stream).map_err(|source| PeerError::Credentials {
        addr: addr.clone(),
        source,
    })?;
    let own_uid = nix::unistd::geteuid().as_raw();
    if may_talk(cred.uid(), own_uid) {
        return Ok(());
    }
    Err(PeerError::Untrusted {
        addr: addr.clone(),
        pid: cred.pid(),
        uid: cred.uid(),
        own_uid,
    })
}

/// Find the task's running keeper: this build's abstract name first, then the socket file of
/// earlier builds. `Ok(None)` when neither answers (no keeper runs: start one).
pub fn find_running(checkpoint_dir: &Path, task_id: &str) -> Result<Option<KeeperAddr>, PeerError> {
    let candidates = [
        KeeperAddr::Abstract(abstract_name(checkpoint_dir, task_id)),
        KeeperAddr::Legacy(legacy_path(checkpoint_dir)),
    ];
    for addr in candidates {
        if let Ok(stream) = addr.connect() {
            check_peer(&stream, &addr)?;
            return Ok(Some(addr));
        }
    }
    Ok(None)
}

/// Who holds the abstract name `name`, as `(pid, uid)`, if anyone answers on it (for the error
/// when binding it fails).
pub fn holder(name: &[u8]) -> Option<(i32, u32)> {
    let stream = KeeperAddr::Abstract(name.to_vec()).connect().ok()?;
    let cred = peer_credentials(&stream).ok()?;
    Some((cred.pid(), cred.uid()))
}

impl Keeper {
    /// Accept a connection: a new executor replaces the old connection. A peer that is neither
    /// this keeper's user nor root is told so, logged and dropped (the socket is abstract: it
    /// has no file permissions to keep others out).
    pub(super) fn accept(&mut self) {
        let Ok((mut stream, _)) = self.listener.accept() else {
            return;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let own_uid = nix::unistd::geteuid().as_raw();
        let refused = match peer_credentials(&stream) {
            Ok(c) if may_talk(c.uid(), own_uid) => None,
            Ok(c) => Some(format!(
                "pid {} (uid {}): only uid {own_uid} or root may talk to this keeper",
                c.pid(),
                c.uid()
            )),
            Err(e) => Some(format!("a peer whose credentials cannot be read: {e}")),
        };
        if let Some(why) = refused {
            note!(
                "hearth-keeper {}: refused a connection from {why}",
                self.paths.task_id
            );
            if let Ok(mut line) = serde_json::to_vec(&Reply::Error {
                error: format!("refused: {why}"),
            }) {
                line.push(b'\n');
                let _ = stream.write_all(&line);
            }
            return;
        }
        self.client = Some((stream, Vec::new()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_128_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_128(b""), 0x6c62272e07bb014262b821756295c58d);
        assert_eq!(fnv1a_128(b"a"), 0xd228cb696f1a8caf78912b704e4a8964);
    }

    #[test]
    fn names_are_stable_distinct_per_directory_and_fit_however_long_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("checkpoints/a");
        let b = dir.path().join("checkpoints/b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let name = abstract_name(&a, "a");
        assert_eq!(name, abstract_name(&a, "a"));
        assert_ne!(name, abstract_name(&b, "b"));
        assert!(name.starts_with(NAME_PREFIX.as_bytes()));
        assert!(name.ends_with(b"/a"));
        // The same directory reached through a symlink is the same keeper.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert_eq!(abstract_name(&link.join("checkpoints/a"), "a"), name);

        let long_id = "é".repeat(200);
        let deep = dir.path().join("x".repeat(200)).join(&long_id);
        let n = abstract_name(&deep, &long_id);
        assert!(n.len() <= MAX_NAME, "{}", n.len());
        assert!(std::str::from_utf8(&n).is_ok());
    }

    #[test]
    fn a_bound_name_cannot_be_bound_twice_and_is_found_before_the_legacy_file() {
        let dir = tempfile::tempdir().unwrap();
        let name = abstract_name(dir.path(), "twice");
        let _first = bind(&name).unwrap();
        let err = bind(&name).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert_eq!(holder(&name).map(|h| h.0), Some(std::process::id() as i32));
        assert_eq!(
            find_running(dir.path(), "twice").unwrap(),
            Some(KeeperAddr::Abstract(name))
        );
    }

    #[test]
    fn a_keeper_of_an_earlier_build_is_found_at_its_socket_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_running(dir.path(), "old").unwrap(), None);
        let _old = UnixListener::bind(legacy_path(dir.path())).unwrap();
        assert_eq!(
            find_running(dir.path(), "old").unwrap(),
            Some(KeeperAddr::Legacy(legacy_path(dir.path())))
        );
    }

    #[test]
    fn only_the_same_user_or_root_may_talk() {
        assert!(may_talk(1000, 1000));
        assert!(may_talk(0, 1000));
        assert!(may_talk(0, 0));
        assert!(!may_talk(65534, 1000));
        assert!(!may_talk(65534, 0));
    }
}
