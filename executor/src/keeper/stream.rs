//! The keeper's own checkpoint stream (`checkpoints/<task_id>/keeper`): opened (or created) at
//! start, and made durable before any exit is reported. A new stream is not synced at creation:
//! its header alone records nothing, and the first exit's commit syncs the file and its
//! directory (which keeps two fsyncs off the launch path).

use std::io;
use std::time::Duration;

use hearth_checkpoints::record::RunnerHeader;
use hearth_checkpoints::stream::CheckpointWriter;

use super::process::now_secs;
use super::protocol::Reply;
use super::{Keeper, KeeperPaths};

/// How often held exits are retried while the keeper stream cannot be written.
pub(super) const HELD_RETRY: Duration = Duration::from_millis(250);

/// Open the keeper's stream for appending, or create it with a header of its own.
pub(super) fn open(paths: &KeeperPaths) -> io::Result<CheckpointWriter> {
    if paths.stream.exists() {
        CheckpointWriter::open_append(&paths.stream).map(|(w, _)| w)
    } else {
        let header = RunnerHeader {
            task_id: paths.task_id.clone(),
            launch_time_ms: (now_secs() * 1000.0) as i64,
            ..RunnerHeader::default()
        };
        CheckpointWriter::create_unsynced(&paths.stream, &header)
    }
    .map_err(io::Error::other)
}

impl Keeper {
    /// Make the held exits durable, then tell the executor. A failing disk (full, read-only)
    /// does not end the keeper: the exits stay held, a partial frame is cut back, and the serve
    /// loop retries every [`HELD_RETRY`].
    pub(super) fn flush_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if self.writer.is_poisoned()
            && let Err(e) = self.writer.recover()
        {
            note!("hearth-keeper: cannot reopen the keeper stream yet: {e}");
            return;
        }
        if let Err(e) = self.writer.commit() {
            note!("hearth-keeper: cannot write exits yet, holding them: {e}");
            let _ = self.writer.recover();
            return;
        }
        let exits = std::mem::take(&mut self.held);
        for e in &exits {
            self.send(&Reply::Exited(e.clone()));
        }
        self.unacked.extend(exits);
    }
}
