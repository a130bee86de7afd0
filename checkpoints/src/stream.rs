//! Framing of checkpoint streams: the group-commit writer and the reader that tolerates a torn
//! tail. The bytes are specified in `checkpoints/FORMAT.md`. (Implementation in progress: the
//! signatures below are final.)

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::record::{Record, RunnerHeader};
use crate::replay::TaskReplay;

/// Which framing a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    /// Hearth framing: a 16-byte file header, then checksummed frames.
    Hearth { version: u32 },
    /// Legacy Apache Thermos framing: big-endian length-prefixed frames, no header, no checksum.
    Thermos,
}

/// Why reading a stream stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StreamEnd {
    /// Every byte belonged to a valid record.
    Clean,
    /// The stream ends inside a frame (what a crash mid-append leaves behind); `offset` is where
    /// that last, incomplete frame starts. The prefix before it is replayed.
    Torn { offset: u64, detail: String },
    /// A frame that is not at the tail is damaged (bad checksum, impossible length, undecodable
    /// payload), or the file header is. `offset` is where the bad frame starts.
    Corrupt { offset: u64, detail: String },
    /// A well-formed record breaks the transition rules; `record` is its index (from 0) and
    /// `offset` the start of its frame. The records before it are replayed.
    Invalid { offset: u64, record: u64, detail: String },
}

/// A stream, read and replayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replayed {
    pub format: Format,
    pub replay: TaskReplay,
    /// Number of records applied.
    pub records: u64,
    /// Length of the prefix that was replayed (file header included).
    pub valid_len: u64,
    pub end: StreamEnd,
}

/// Errors of the checkpoint writer and of reading a stream from disk.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A system call on the stream (or its directory) failed.
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `open_append` found damage before the end of the stream and will not append after it.
    #[error("{path}: corrupt checkpoint frame at byte {offset}: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// `open_append` was given a stream it cannot append to (legacy Thermos framing, or a
    /// format version this build does not write).
    #[error("{path}: cannot append to a {format} stream")]
    Unappendable { path: PathBuf, format: String },
    /// A record encodes to more than the frame limit.
    #[error("record encodes to {len} bytes, over the {max}-byte frame limit")]
    RecordTooLarge { len: usize, max: usize },
    /// An earlier write or fsync failed; what reached the disk is unknown, so the writer refuses
    /// to continue. Reopen the stream with `open_append` to recover.
    #[error("{path}: an earlier write failed; reopen the stream to continue")]
    Poisoned { path: PathBuf },
}

/// Appends records to a Hearth stream with group commit.
///
/// Records are durable only after [`CheckpointWriter::commit`] returns `Ok`: callers must not act
/// on, or report, a record before then.
#[derive(Debug)]
pub struct CheckpointWriter {
    file: File,
    path: PathBuf,
    pending: Vec<u8>,
    fsyncs: u64,
}

impl CheckpointWriter {
    /// Create a new stream (failing if it exists) holding the file header and `header`, durable
    /// (file and directory fsynced) when this returns.
    pub fn create(path: &Path, header: &RunnerHeader) -> Result<Self, CheckpointError> {
        let _ = header;
        Err(CheckpointError::Unappendable { path: path.to_owned(), format: "unfinished".into() })
    }

    /// Open an existing Hearth stream for appending: replay it, truncate a torn tail, and return
    /// the writer with the replayed state. Refuses a stream with damage before its end.
    pub fn open_append(path: &Path) -> Result<(Self, Replayed), CheckpointError> {
        Err(CheckpointError::Unappendable { path: path.to_owned(), format: "unfinished".into() })
    }

    /// Buffer a record. Nothing is written until [`CheckpointWriter::commit`].
    pub fn append(&mut self, record: &Record) -> Result<(), CheckpointError> {
        let _ = record;
        Ok(())
    }

    /// Write everything buffered and fsync once. Free when nothing is pending.
    pub fn commit(&mut self) -> Result<(), CheckpointError> {
        Ok(())
    }

    /// The stream's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many fsyncs this writer has issued (a statistic; group commit issues one per burst).
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs
    }

    /// Whether records are buffered and not yet committed.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Read a whole stream and replay it. Never panics; damage is reported in [`Replayed::end`].
pub fn replay_bytes(bytes: &[u8]) -> Replayed {
    let _ = bytes;
    Replayed {
        format: Format::Thermos,
        replay: TaskReplay::default(),
        records: 0,
        valid_len: 0,
        end: StreamEnd::Clean,
    }
}

/// Read the stream at `path` and replay it. Only I/O errors are errors.
pub fn replay_path(path: &Path) -> Result<Replayed, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    Ok(replay_bytes(&bytes))
}

/// Decode every record of a stream, with the byte offset of its frame, without replaying.
pub fn read_records(bytes: &[u8]) -> (Format, Vec<(u64, Record)>, StreamEnd) {
    let _ = bytes;
    (Format::Thermos, Vec::new(), StreamEnd::Clean)
}

/// Replay a legacy Thermos task: `root/checkpoints/<task_id>/runner`.
pub fn replay_thermos_task(root: &Path, task_id: &str) -> Result<Replayed, CheckpointError> {
    replay_path(&root.join("checkpoints").join(task_id).join("runner"))
}
