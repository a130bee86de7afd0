//! Incremental replay of a growing checkpoint stream.
//!
//! [`StreamTail::poll`] reads only the bytes appended since the last call and applies their
//! records to the replay it keeps. It re-reads from the start when the file was replaced (another
//! inode) or shrank (a torn tail truncated by a restarted executor). A torn frame at the end is
//! not consumed, so it is read again, whole, once the writer has finished it. After corruption or
//! an invalid record the tail stops where the full reader would, and reports the same end.
//!
//! Frames are self-delimiting, so the appended bytes of a Hearth stream are decoded by giving
//! [`read_records`] a buffer that starts with the stream's 16-byte file header followed by the new
//! bytes; a legacy Thermos stream has no file header, so the new bytes are decoded alone.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use hearth_checkpoints::replay::TaskReplay;
use hearth_checkpoints::stream::{
    FILE_HEADER_LEN, Format, MAGIC, Replayed, StreamEnd, read_records, replay_bytes,
};

/// A checkpoint stream being followed.
#[derive(Debug)]
pub struct StreamTail {
    path: PathBuf,
    /// (device, inode) of the file last read.
    identity: Option<(u64, u64)>,
    format: Format,
    /// Bytes of the stream consumed (a frame boundary).
    consumed: u64,
    replay: TaskReplay,
    records: u64,
    end: StreamEnd,
    /// The stream ended in corruption or an invalid record: nothing after it is read.
    stopped: bool,
    /// Bytes read from disk over the tail's life (a statistic, for tests and benchmarks).
    bytes_read: u64,
    /// The replay with the exits the task's keeper recorded while no executor was there to
    /// write them to the runner stream (`root::merge_keeper_records`); `None` when there are none.
    merged: Option<TaskReplay>,
    /// Length and modification time of the keeper stream when `merged` was computed.
    keeper_seen: Option<(u64, std::time::SystemTime)>,
}

impl StreamTail {
    /// Follow the stream at `path`. Nothing is read until [`StreamTail::poll`].
    pub fn new(path: PathBuf) -> Self {
        StreamTail {
            path,
            identity: None,
            format: Format::Thermos,
            consumed: 0,
            replay: TaskReplay::default(),
            records: 0,
            end: StreamEnd::Clean,
            stopped: false,
            bytes_read: 0,
            merged: None,
            keeper_seen: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The replay so far, including exits only the keeper has recorded yet.
    pub fn replay(&self) -> &TaskReplay {
        self.merged.as_ref().unwrap_or(&self.replay)
    }

    /// Merge the keeper's stream (`keeper` beside `runner`) when it was written after the runner
    /// stream — that is, when the executor has not caught up with it (it is down). Cheap when
    /// nothing changed: one `stat`. Returns whether the visible replay changed.
    fn merge_keeper(&mut self, runner_changed: bool) -> bool {
        let keeper = self.path.with_file_name("keeper");
        let stat = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        };
        let (Some(k), Some((_, runner_mtime))) = (stat(&keeper), stat(&self.path)) else {
            let had = self.merged.take().is_some();
            self.keeper_seen = None;
            return had;
        };
        if !runner_changed && self.keeper_seen == Some(k) {
            return false;
        }
        self.keeper_seen = Some(k);
        let had = self.merged.is_some();
        self.merged = None;
        if self.replay.state().is_terminal() || k.1 <= runner_mtime {
            return had;
        }
        let Ok(bytes) = std::fs::read(&keeper) else {
            return had;
        };
        let mut merged = self.replay.clone();
        if hearth_checkpoints::root::merge_keeper_records(&mut merged, &bytes) {
            self.merged = Some(merged);
            return true;
        }
        had
    }

    /// The stream's framing (legacy Thermos until a Hearth file header has been seen).
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the stream exists and has been read at least once.
    pub fn is_loaded(&self) -> bool {
        self.identity.is_some()
    }

    /// Total bytes read from disk so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The replay in the shape the checkpoints crate returns from a full read.
    pub fn replayed(&self) -> Replayed {
        Replayed {
            format: self.format,
            replay: self.replay.clone(),
            records: self.records,
            valid_len: self.consumed,
            end: self.end.clone(),
        }
    }

    fn reset(&mut self) {
        let path = std::mem::take(&mut self.path);
        let bytes_read = self.bytes_read;
        *self = StreamTail::new(path);
        self.bytes_read = bytes_read;
    }

    /// Read what was appended since the last call. Returns whether the replay changed. A missing
    /// file is not an error (the task has not written its stream yet, or it was removed).
    pub fn poll(&mut self) -> io::Result<bool> {
        let changed = self.poll_runner()?;
        let merged = self.merge_keeper(changed);
        Ok(changed || merged)
    }

    fn poll_runner(&mut self) -> io::Result<bool> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let had = self.identity.is_some();
                if had {
                    self.reset();
                }
                return Ok(had);
            }
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let identity = (meta.dev(), meta.ino());
        let len = meta.len();
        let mut changed = false;
        if self.identity.is_some_and(|id| id != identity) || len < self.consumed {
            self.reset();
            changed = true;
        }
        if self.identity.is_none() {
            self.identity = Some(identity);
            changed = true;
        }
        if self.stopped || len == self.consumed {
            return Ok(changed);
        }
        let new = read_range(&file, self.consumed, len)?;
        self.bytes_read += new.len() as u64;
        if self.consumed == 0 {
            let r = replay_bytes(&new);
            self.format = r.format;
            self.replay = r.replay;
            self.records = r.records;
            self.consumed = r.valid_len;
            self.stopped = matches!(r.end, StreamEnd::Corrupt { .. } | StreamEnd::Invalid { .. });
            self.end = r.end;
            return Ok(true);
        }
        self.apply_appended(&new);
        Ok(true)
    }

    fn apply_appended(&mut self, new: &[u8]) {
        let (buf, base) = match self.format {
            Format::Hearth { version } => {
                let mut buf = Vec::with_capacity(FILE_HEADER_LEN + new.len());
                buf.extend_from_slice(&MAGIC);
                buf.extend_from_slice(&version.to_le_bytes());
                buf.extend_from_slice(&0u32.to_le_bytes());
                buf.extend_from_slice(new);
                (buf, self.consumed.saturating_sub(FILE_HEADER_LEN as u64))
            }
            Format::Thermos => (new.to_vec(), self.consumed),
        };
        let (_, records, end) = read_records(&buf);
        for (offset, record) in &records {
            if let Err(e) = self.replay.apply(record) {
                self.end = StreamEnd::Invalid {
                    offset: base + offset,
                    record: self.records,
                    detail: e.to_string(),
                };
                self.consumed = base + offset;
                self.stopped = true;
                return;
            }
            self.records += 1;
        }
        let shift = |offset: u64| base + offset;
        self.end = match end {
            StreamEnd::Clean => {
                self.consumed = base + buf.len() as u64;
                StreamEnd::Clean
            }
            StreamEnd::Torn { offset, detail } => {
                self.consumed = shift(offset);
                StreamEnd::Torn {
                    offset: shift(offset),
                    detail,
                }
            }
            StreamEnd::Corrupt { offset, detail } => {
                self.consumed = shift(offset);
                self.stopped = true;
                StreamEnd::Corrupt {
                    offset: shift(offset),
                    detail,
                }
            }
            StreamEnd::Invalid {
                offset,
                record,
                detail,
            } => {
                self.consumed = shift(offset);
                self.stopped = true;
                StreamEnd::Invalid {
                    offset: shift(offset),
                    record,
                    detail,
                }
            }
        };
    }
}

fn read_range(file: &File, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; len];
    let mut got = 0usize;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], from + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}
