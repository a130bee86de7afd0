//! The keeper's socket: where it lives, binding it (done by the executor before the fork), and
//! accepting the executor's connections.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Keeper;

/// The keeper socket's path for a task checkpoint directory.
pub fn socket_path(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir.join("keeper.sock")
}

/// Bind a keeper's socket at `path` (replacing a stale one), readable only by its owner. The
/// executor binds it before forking the keeper, which inherits the listener.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

impl Keeper {
    pub(super) fn accept(&mut self) {
        if let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            // A new executor replaces the old connection.
            self.client = Some((stream, Vec::new()));
        }
    }
}
