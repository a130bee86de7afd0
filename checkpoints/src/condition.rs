//! A task's live condition: what is wrong with it right now that its checkpoint stream cannot
//! say — today, only that checkpoint writes are failing (a full or read-only file system).
//!
//! The stream is the record of what happened; it cannot carry the news that it can no longer be
//! written. So the executor keeps a small side file, `checkpoints/<task_id>/condition`, that it
//! creates at start-up at its full size ([`CONDITION_SIZE`] bytes of spaces, synced) and later
//! only overwrites in place: rewriting blocks a file already owns needs no free space on tmpfs,
//! ext4 or xfs, so the file can still be written when the disk is full. (On a file system that
//! has turned read-only nothing can be written; the condition then reaches the operator through
//! the executor's log and the scheduler only.)
//!
//! The file holds one JSON object ([`Condition`]) padded with spaces, or only spaces when all is
//! well. Readers (`hearth inspect`, the observer) treat a missing, blank or unreadable file as "no
//! condition". A condition left by an executor that died is cleared by the next one at start.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name inside a task's checkpoint directory.
pub const CONDITION_FILE: &str = "condition";

/// The file's fixed size; a condition that would not fit has its message shortened.
pub const CONDITION_SIZE: usize = 4096;

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKind {
    /// Checkpoint writes fail; supervision goes on, and what needs a record waits for it.
    CheckpointWritesFailing,
}

impl ConditionKind {
    /// A short phrase for people.
    pub fn describe(self) -> &'static str {
        match self {
            ConditionKind::CheckpointWritesFailing => "checkpoint writes failing",
        }
    }
}

/// A task's live condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub kind: ConditionKind,
    /// The latest error, as one line.
    pub message: String,
    /// When the condition began, milliseconds since the Unix epoch.
    pub since_ms: i64,
    /// When it was last seen to hold (the latest failed attempt).
    pub updated_ms: i64,
    /// Failed attempts so far.
    pub attempts: u64,
}

impl Condition {
    /// One line for people: `checkpoint writes failing since ...: <message> (N attempts)`.
    pub fn summary(&self, format_time: impl Fn(i64) -> String) -> String {
        format!(
            "{} since {}: {} ({} failed attempt{})",
            self.kind.describe(),
            format_time(self.since_ms),
            self.message,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }

    /// The file's bytes: the JSON padded with spaces to [`CONDITION_SIZE`], the message
    /// shortened (on a character boundary) if the whole would not fit.
    fn encode(&self) -> Vec<u8> {
        let mut c = self.clone();
        loop {
            // Serializing plain strings and integers cannot fail.
            let mut bytes = serde_json::to_vec(&c).unwrap_or_default();
            if bytes.len() <= CONDITION_SIZE || c.message.is_empty() {
                bytes.resize(CONDITION_SIZE, b' ');
                bytes.truncate(CONDITION_SIZE);
                return bytes;
            }
            let over = bytes.len() - CONDITION_SIZE + 3;
            let mut keep = c.message.len().saturating_sub(over);
            while !c.message.is_char_boundary(keep) {
                keep -= 1;
            }
            c.message.truncate(keep);
            c.message.push_str("...");
        }
    }
}

/// The condition file of a task's checkpoint directory.
pub fn condition_path(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir.join(CONDITION_FILE)
}

/// Read the condition in `checkpoint_dir`, if one is set. A missing, blank or unparsable file
/// means none (an unparsable one is an older or torn write, never worth failing a reader over).
pub fn read_condition(checkpoint_dir: &Path) -> Option<Condition> {
    let bytes = std::fs::read(condition_path(checkpoint_dir)).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The executor's handle on the condition file: created at full size at start, then only
/// overwritten in place.
#[derive(Debug)]
pub struct ConditionFile {
    file: File,
    path: PathBuf,
}

impl ConditionFile {
    /// Create (or reset) the file in `checkpoint_dir`: [`CONDITION_SIZE`] spaces, so that later
    /// writes, in place, need no new space (the file system reserves or allocates the blocks when
    /// they are first written). Not fsynced: the file is news for readers of a live task, not a
    /// record, and every start creates it again.
    pub fn create(checkpoint_dir: &Path) -> io::Result<ConditionFile> {
        let path = condition_path(checkpoint_dir);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let cf = ConditionFile { file, path };
        cf.write(&[b' '; CONDITION_SIZE])?;
        cf.file.set_len(CONDITION_SIZE as u64)?;
        Ok(cf)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Set the condition (in place; not synced: it is news for readers now, not a record).
    pub fn set(&self, condition: &Condition) -> io::Result<()> {
        self.write(&condition.encode())
    }

    /// Clear it.
    pub fn clear(&self) -> io::Result<()> {
        self.write(&[b' '; CONDITION_SIZE])
    }

    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, 0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample(message: &str) -> Condition {
        Condition {
            kind: ConditionKind::CheckpointWritesFailing,
            message: message.to_owned(),
            since_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_005_000,
            attempts: 3,
        }
    }

    #[test]
    fn a_set_condition_reads_back_and_a_cleared_one_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_condition(dir.path()), None, "no file: no condition");
        let cf = ConditionFile::create(dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(cf.path()).unwrap().len(),
            CONDITION_SIZE as u64
        );
        assert_eq!(read_condition(dir.path()), None, "blank file: no condition");
        let c = sample("No space left on device (os error 28)");
        cf.set(&c).unwrap();
        assert_eq!(read_condition(dir.path()), Some(c));
        assert_eq!(
            std::fs::metadata(cf.path()).unwrap().len(),
            CONDITION_SIZE as u64,
            "writes stay within the allocated size"
        );
        cf.clear().unwrap();
        assert_eq!(read_condition(dir.path()), None);
    }

    #[test]
    fn a_long_message_is_shortened_to_fit_and_still_parses() {
        let dir = tempfile::tempdir().unwrap();
        let cf = ConditionFile::create(dir.path()).unwrap();
        let long = "é".repeat(3 * CONDITION_SIZE);
        cf.set(&sample(&long)).unwrap();
        let back = read_condition(dir.path()).unwrap();
        assert!(back.message.ends_with("..."));
        assert!(back.message.len() < CONDITION_SIZE);
        assert_eq!(
            std::fs::metadata(cf.path()).unwrap().len(),
            CONDITION_SIZE as u64
        );
    }

    #[test]
    fn a_condition_left_by_an_earlier_executor_is_reset_at_create() {
        let dir = tempfile::tempdir().unwrap();
        ConditionFile::create(dir.path())
            .unwrap()
            .set(&sample("x"))
            .unwrap();
        ConditionFile::create(dir.path()).unwrap();
        assert_eq!(read_condition(dir.path()), None);
    }

    #[test]
    fn garbage_in_the_file_means_no_condition() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(condition_path(dir.path()), "{not json").unwrap();
        assert_eq!(read_condition(dir.path()), None);
    }

    #[test]
    fn summary_names_the_kind_time_message_and_attempts() {
        let s = sample("disk full").summary(|ms| format!("T{ms}"));
        assert_eq!(
            s,
            "checkpoint writes failing since T1700000000000: disk full (3 failed attempts)"
        );
    }
}
