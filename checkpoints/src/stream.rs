//! Framing of checkpoint streams: the group-commit writer, and the reader that replays the
//! longest valid prefix of a stream and says why it stopped.
//!
//! The bytes are specified in `checkpoints/FORMAT.md`. In short, a Hearth stream is a 16-byte
//! file header (`HEARTHCK`, u32 LE version, u32 LE flags) and frames of
//! `u32 LE length | u32 LE CRC-32C | payload`; a legacy Thermos stream is frames of
//! `u32 BE length | payload`. Payloads are [`crate::codec`] records. The reader tells the two
//! apart by the magic.
//!
//! How the end of a stream is classified (see [`StreamEnd`]):
//! * an incomplete frame header or payload at the end of the file is **torn** (a crash during an
//!   append) — unless, in a Hearth stream, a whole checksummed frame is found in the bytes it
//!   claims (then its length field is damaged: corrupt) — and so is a final frame whose checksum does not match (its bytes were not all
//!   written), and so is a tail made only of zero bytes from a frame boundary on (a file system
//!   that extended the file but lost the data; a writer never writes a zero-length frame);
//! * a frame that declares more than [`MAX_PAYLOAD`] bytes, a bad checksum on a frame that has
//!   bytes after it, or a payload whose checksum matches but does not decode is **corrupt**; for
//!   legacy Thermos streams (no checksum) an undecodable payload is corrupt when bytes follow it
//!   and torn when it is the last frame;
//! * a decodable record that breaks the replay rules is **invalid**.
//!
//! # Durability
//!
//! [`CheckpointWriter::append`] only buffers. A record is durable once
//! [`CheckpointWriter::commit`] has returned `Ok`: callers must not report it to anyone, nor act
//! on it in a way that outlives the machine, before then. `commit` writes every buffered record
//! and issues one fsync (group commit: one fsync per burst of records, none when nothing is
//! pending or unsynced).
//!
//! [`CheckpointWriter::write_out`] writes the buffered records without an fsync. They then
//! survive the writer's own crash (even `kill -9`: the kernel holds them and a later reader sees
//! them), but not the machine's. That is enough before a request whose effects die with the
//! machine too — starting a process — and it lets a launch burst go out without waiting for the
//! disk; the next `commit` makes them durable along with whatever follows.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::codec;
use crate::record::{FORMAT_VERSION, Record, RunnerHeader};
use crate::replay::TaskReplay;

/// The first 8 bytes of every Hearth stream.
pub const MAGIC: [u8; 8] = *b"HEARTHCK";
/// Length of the Hearth file header: magic, u32 LE version, u32 LE flags.
pub const FILE_HEADER_LEN: usize = 16;
/// Length of a Hearth frame header: u32 LE payload length, u32 LE CRC-32C of the payload.
pub const FRAME_HEADER_LEN: usize = 8;
/// Length of a legacy Thermos frame header: u32 BE payload length.
pub const THERMOS_FRAME_HEADER_LEN: usize = 4;
/// Largest payload accepted in either framing, checked before allocating or reading it.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Which framing a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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
    /// A well-formed record breaks the transition rules; `record` is the index of its frame
    /// among the stream's frames (from 0) and `offset` the start of that frame. The records
    /// before it are replayed.
    Invalid {
        offset: u64,
        record: u64,
        detail: String,
    },
}

/// A stream, read and replayed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replayed {
    pub format: Format,
    pub replay: TaskReplay,
    /// Number of records applied (frames holding only an unknown union member are skipped and
    /// counted in [`TaskReplay::unknown_records`] instead).
    pub records: u64,
    /// Length of the prefix that was replayed (file header included): the offset of the frame
    /// where reading stopped, or the stream's length when it ended cleanly.
    pub valid_len: u64,
    pub end: StreamEnd,
}

/// Errors of the checkpoint writer and of reading a stream from disk. Damage found while
/// replaying is not an error (see [`StreamEnd`]), except that [`CheckpointWriter::open_append`]
/// refuses to append after corruption.
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
/// Records are durable only after [`CheckpointWriter::commit`] returns `Ok`: callers must not
/// report a record before then. [`CheckpointWriter::write_out`] hands them to the kernel without
/// an fsync (see the module docs). Records still buffered when the writer is dropped are lost,
/// as if the process had crashed.
///
/// After a failed write or fsync the writer is poisoned (what reached the disk is unknown, and a
/// retried fsync can report success for data that was dropped): every later call fails with
/// [`CheckpointError::Poisoned`]. Reopening with [`CheckpointWriter::open_append`] replays what is
/// on disk and truncates any torn tail the failure left.
#[derive(Debug)]
pub struct CheckpointWriter {
    file: File,
    path: PathBuf,
    pending: Vec<u8>,
    /// The bytes written since the last successful fsync, kept until one succeeds: a file
    /// system that fails the fsync (and comes back, say, checked and mounted afresh) may have
    /// dropped them, and [`CheckpointWriter::recover`] writes again what it no longer holds.
    unsynced: Vec<u8>,
    fsyncs: u64,
    poisoned: bool,
    /// Bytes of the file that `pending` follows (the file's length as this writer left it).
    written: u64,
    /// Created by this writer and not committed since: the next commit also fsyncs the
    /// directory, so that the file's entry is durable with its records.
    entry_unsynced: bool,
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> CheckpointError + 'p {
    move |source| CheckpointError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn file_header() -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Fsync the directory holding `path`, so that a newly created entry survives a crash.
fn sync_parent(path: &Path) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync the directory of", path))
}

impl CheckpointWriter {
    /// Create a new stream (failing if the file exists) holding the file header and `header`.
    /// The file and its directory are fsynced before this returns, so the header is durable.
    pub fn create(path: &Path, header: &RunnerHeader) -> Result<Self, CheckpointError> {
        Self::create_with(path, header, &[])
    }

    /// [`create`](Self::create), with `first` records after the header, all made durable by the
    /// same fsync of the file (and the one of its directory, which also makes durable whatever
    /// else was created or renamed in that directory before).
    pub fn create_with(
        path: &Path,
        header: &RunnerHeader,
        first: &[Record],
    ) -> Result<Self, CheckpointError> {
        let mut w = Self::create_new(path, header, first)?;
        w.commit()?;
        Ok(w)
    }

    /// Create a new stream (failing if the file exists) holding the file header and `header`,
    /// written out but not synced: for a stream nobody needs durable until its first record
    /// (the keeper's, whose header alone tells nothing). The first
    /// [`commit`](Self::commit) fsyncs the file and its directory, so that what it made durable
    /// is found after a machine crash; until then, a machine crash may leave no file, or an
    /// empty one.
    pub fn create_unsynced(path: &Path, header: &RunnerHeader) -> Result<Self, CheckpointError> {
        let mut w = Self::create_new(path, header, &[])?;
        w.write_out()?;
        Ok(w)
    }

    /// A new file holding the file header, `header` and `first`, buffered; its directory entry
    /// is synced by the first commit.
    fn create_new(
        path: &Path,
        header: &RunnerHeader,
        first: &[Record],
    ) -> Result<Self, CheckpointError> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)
            .map_err(io_err("create", path))?;
        let mut w = CheckpointWriter {
            file,
            path: path.to_owned(),
            pending: file_header().to_vec(),
            unsynced: Vec::new(),
            fsyncs: 0,
            poisoned: false,
            written: 0,
            entry_unsynced: true,
        };
        w.append(&Record::Header(header.clone()))?;
        for record in first {
            w.append(record)?;
        }
        Ok(w)
    }

    /// Open an existing Hearth stream for appending. The stream is replayed; a torn tail is
    /// truncated (and the truncation fsynced) so that new frames follow the last valid one.
    /// Returns the writer and the replayed stream (whose `end` still says what was found).
    ///
    /// Refuses, naming the byte offset, a stream with corruption before its end: appending after
    /// it would hide it. A record that breaks the replay rules is not refused (the framing is
    /// sound); it is reported in the returned [`Replayed::end`]. Legacy Thermos streams are
    /// read-only.
    pub fn open_append(path: &Path) -> Result<(Self, Replayed), CheckpointError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes).map_err(io_err("read", path))?;
        let (replayed, framing) = scan(&bytes, true);
        match replayed.format {
            Format::Hearth { version } if version == FORMAT_VERSION => {}
            Format::Hearth { version } if bytes.len() >= FILE_HEADER_LEN => {
                return Err(CheckpointError::Unappendable {
                    path: path.to_owned(),
                    format: format!("hearth v{version}"),
                });
            }
            Format::Hearth { .. } => {}
            Format::Thermos => {
                return Err(CheckpointError::Unappendable {
                    path: path.to_owned(),
                    format: "legacy thermos".to_owned(),
                });
            }
        }
        let mut w = CheckpointWriter {
            file,
            path: path.to_owned(),
            pending: Vec::new(),
            unsynced: Vec::new(),
            fsyncs: 0,
            poisoned: false,
            written: bytes.len() as u64,
            entry_unsynced: false,
        };
        match framing.end {
            StreamEnd::Clean | StreamEnd::Invalid { .. } => {}
            StreamEnd::Corrupt { offset, detail } => {
                return Err(CheckpointError::Corrupt {
                    path: path.to_owned(),
                    offset,
                    detail,
                });
            }
            StreamEnd::Torn { offset, .. } => {
                let keep = if offset < FILE_HEADER_LEN as u64 {
                    0
                } else {
                    offset
                };
                w.file.set_len(keep).map_err(io_err("truncate", path))?;
                w.written = keep;
                if keep == 0 {
                    w.pending.extend_from_slice(&file_header());
                }
                w.sync()?;
            }
        }
        w.commit()?;
        Ok((w, replayed))
    }

    /// Buffer a record. Nothing is written until [`CheckpointWriter::commit`]. Fails if the record
    /// encodes to more than [`MAX_PAYLOAD`] bytes (nothing is buffered then). A poisoned writer
    /// still buffers (see [`CheckpointWriter::recover`]).
    pub fn append(&mut self, record: &Record) -> Result<(), CheckpointError> {
        let start = self.pending.len();
        self.pending.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
        codec::encode(record, &mut self.pending);
        let payload = self
            .pending
            .get(start + FRAME_HEADER_LEN..)
            .unwrap_or_default();
        let len = payload.len();
        if len > MAX_PAYLOAD {
            self.pending.truncate(start);
            return Err(CheckpointError::RecordTooLarge {
                len,
                max: MAX_PAYLOAD,
            });
        }
        let crc = crc32c::crc32c(payload);
        let mut frame_header = [0u8; FRAME_HEADER_LEN];
        frame_header[..4].copy_from_slice(&(len as u32).to_le_bytes());
        frame_header[4..].copy_from_slice(&crc.to_le_bytes());
        if let Some(h) = self.pending.get_mut(start..start + FRAME_HEADER_LEN) {
            h.copy_from_slice(&frame_header);
        }
        Ok(())
    }

    /// Write every buffered record and fsync once. Free (no system call) when nothing is
    /// pending and everything written is already synced. When this returns `Ok`, every record
    /// appended so far is durable.
    pub fn commit(&mut self) -> Result<(), CheckpointError> {
        self.write_out()?;
        if !self.unsynced.is_empty() {
            self.sync()?;
        }
        if self.entry_unsynced {
            if let Err(e) = sync_parent(&self.path) {
                self.poisoned = true;
                return Err(e);
            }
            self.entry_unsynced = false;
        }
        Ok(())
    }

    /// Write every buffered record to the file without an fsync: they survive this process's
    /// crash, not the machine's, until the next [`CheckpointWriter::commit`]. Free when nothing
    /// is pending.
    pub fn write_out(&mut self) -> Result<(), CheckpointError> {
        self.check_poisoned()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.file.write_all(&self.pending) {
            self.poisoned = true;
            return Err(CheckpointError::Io {
                op: "write",
                path: self.path.clone(),
                source,
            });
        }
        self.written += self.pending.len() as u64;
        if self.unsynced.is_empty() {
            std::mem::swap(&mut self.unsynced, &mut self.pending);
        } else {
            self.unsynced.append(&mut self.pending);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), CheckpointError> {
        self.fsyncs += 1;
        match self.file.sync_data() {
            Ok(()) => {
                self.unsynced.clear();
                Ok(())
            }
            Err(source) => {
                self.poisoned = true;
                Err(CheckpointError::Io {
                    op: "fsync",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// After a failed write or fsync (a full disk, a read-only remount, a file system checked
    /// and mounted afresh): reopen the stream as [`CheckpointWriter::open_append`] does — replay
    /// it, cut back a partial frame the failure left — keep buffered every frame since the last
    /// successful fsync that the file no longer holds, and clear the poison, so that the next
    /// [`CheckpointWriter::commit`] writes them after the last whole frame. Frames that are in
    /// the file are fsynced by that commit. On failure the writer stays poisoned and keeps
    /// buffering; call again later.
    ///
    /// Bytes an fsync had made durable are not kept: a file that lost them (shorter than the
    /// last synced length) was damaged by its file system, and the frames held are written
    /// after what is left.
    pub fn recover(&mut self) -> Result<(), CheckpointError> {
        let (mut fresh, _) = Self::open_append(&self.path)?;
        let synced = self.written.saturating_sub(self.unsynced.len() as u64);
        // What this writer holds beyond the last fsync: written but unsynced, then buffered.
        let mut held = std::mem::take(&mut self.unsynced);
        held.append(&mut self.pending);
        // Of that, what the reopened file has (whole frames: a partial one was cut back).
        let landed = fresh.written.saturating_sub(synced);
        let landed = usize::try_from(landed)
            .unwrap_or(usize::MAX)
            .min(held.len());
        fresh.pending = held.split_off(landed);
        fresh.unsynced = held;
        fresh.fsyncs += self.fsyncs;
        fresh.entry_unsynced = self.entry_unsynced;
        *self = fresh;
        Ok(())
    }

    /// Whether a write or fsync failed and [`CheckpointWriter::recover`] has not succeeded since.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn check_poisoned(&self) -> Result<(), CheckpointError> {
        if self.poisoned {
            return Err(CheckpointError::Poisoned {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// The stream's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many fsyncs of the stream this writer has issued (a statistic: group commit issues
    /// one per burst of records).
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs
    }

    /// Whether records are buffered and not yet committed.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Where the framing of a stream stops, independently of the replay rules.
struct Framing {
    end: StreamEnd,
}

/// One frame found by [`Frames`].
enum Item {
    /// A decoded payload: frame offset, frame index, the payload decoded.
    Frame(u64, u64, codec::Decoded),
    /// No more frames; why.
    End(StreamEnd),
}

/// Iterates over the frames of a stream.
struct Frames<'a> {
    bytes: &'a [u8],
    pos: usize,
    index: u64,
    hearth: bool,
}

impl<'a> Frames<'a> {
    /// Detect the framing and check the file header. `Err` is the end of a stream whose file
    /// header is torn or unusable.
    fn new(bytes: &'a [u8]) -> (Format, Result<Self, StreamEnd>) {
        let frames = |pos, hearth| Frames {
            bytes,
            pos,
            index: 0,
            hearth,
        };
        let looks_hearth = match bytes.get(..MAGIC.len()) {
            Some(m) => m == MAGIC,
            None => MAGIC.starts_with(bytes),
        };
        if !looks_hearth {
            return (Format::Thermos, Ok(frames(0, false)));
        }
        let Some(h) = bytes.get(..FILE_HEADER_LEN) else {
            let end = StreamEnd::Torn {
                offset: 0,
                detail: format!(
                    "file header incomplete: {} of {FILE_HEADER_LEN} bytes",
                    bytes.len()
                ),
            };
            return (
                Format::Hearth {
                    version: FORMAT_VERSION,
                },
                Err(end),
            );
        };
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(h.get(i..i + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(b)
        };
        let (version, flags) = (word(8), word(12));
        let format = Format::Hearth { version };
        if version != FORMAT_VERSION {
            let end = StreamEnd::Corrupt {
                offset: 8,
                detail: format!(
                    "format version {version} is not one this build reads ({FORMAT_VERSION})"
                ),
            };
            return (format, Err(end));
        }
        if flags != 0 {
            let end = StreamEnd::Corrupt {
                offset: 12,
                detail: format!("unknown file header flags {flags:#x}"),
            };
            return (format, Err(end));
        }
        (format, Ok(frames(FILE_HEADER_LEN, true)))
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// The end of the stream at the current frame: `torn` or `corrupt` as classified by the
    /// caller, unless everything from here on is zero bytes (torn either way).
    fn stop(&self, torn: bool, detail: String) -> Item {
        let offset = self.offset();
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if !torn && rest.iter().all(|&b| b == 0) {
            return Item::End(StreamEnd::Torn {
                offset,
                detail: format!("zero-filled tail of {} bytes", rest.len()),
            });
        }
        Item::End(if torn {
            StreamEnd::Torn { offset, detail }
        } else {
            StreamEnd::Corrupt { offset, detail }
        })
    }

    fn next_item(&mut self) -> Item {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return Item::End(StreamEnd::Clean);
        }
        let header_len = if self.hearth {
            FRAME_HEADER_LEN
        } else {
            THERMOS_FRAME_HEADER_LEN
        };
        let Some(h) = rest.get(..header_len) else {
            return self.stop(
                true,
                format!(
                    "frame header incomplete: {} of {header_len} bytes",
                    rest.len()
                ),
            );
        };
        let mut b = [0u8; 4];
        b.copy_from_slice(h.get(..4).unwrap_or(&[0; 4]));
        let len = if self.hearth {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as usize;
        if len > MAX_PAYLOAD {
            return self.stop(
                false,
                format!("frame declares {len} bytes, over the {MAX_PAYLOAD}-byte limit"),
            );
        }
        let Some(payload) = rest.get(header_len..header_len + len) else {
            let detail = format!(
                "frame needs {} bytes, {} left",
                header_len + len,
                rest.len()
            );
            // A crash leaves a prefix of the last frame; a damaged length field in an earlier
            // frame looks the same, except that whole frames follow it. Look for one.
            if self.hearth
                && let Some(at) = next_valid_frame(self.bytes, self.pos + 1)
            {
                return self.stop(
                    false,
                    format!("{detail}, yet a valid frame starts at byte {at}"),
                );
            }
            return self.stop(true, detail);
        };
        let last = header_len + len == rest.len();
        if self.hearth {
            b.copy_from_slice(h.get(4..8).unwrap_or(&[0; 4]));
            let stored = u32::from_le_bytes(b);
            let actual = crc32c::crc32c(payload);
            if stored != actual {
                let detail =
                    format!("checksum mismatch: stored {stored:#010x}, computed {actual:#010x}");
                return self.stop(last, detail);
            }
        }
        match codec::decode(payload) {
            Ok(d) => {
                let item = Item::Frame(self.offset(), self.index, d);
                self.pos += header_len + len;
                self.index += 1;
                item
            }
            Err(e) => {
                let detail = format!("undecodable record: {}", crate::error_chain(&e));
                // A checksummed payload was written whole: undecodable means corrupt. Without a
                // checksum, an undecodable last frame may be a partial write.
                self.stop(last && !self.hearth, detail)
            }
        }
    }
}

/// Bytes of checksum work [`next_valid_frame`] may do before giving up.
const RESYNC_BUDGET: usize = 8 << 20;

/// The offset of the first position at or after `from` that holds a whole, checksummed,
/// decodable Hearth frame, looking only at positions whose payload starts like a `RunnerCkpt`
/// member we know, within [`RESYNC_BUDGET`] bytes of checksumming. Used only on the torn path,
/// where fewer than `MAX_PAYLOAD + 8` bytes are left.
fn next_valid_frame(bytes: &[u8], from: usize) -> Option<u64> {
    let mut budget = RESYNC_BUDGET;
    let mut p = from;
    while let Some(window) = bytes.get(p..p + FRAME_HEADER_LEN + 3) {
        let member = window[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 3] == [0x0C, 0, 1]
            || window[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 3] == [0x0C, 0, 2]
            || window[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 3] == [0x0C, 0, 3]
            || window[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 3] == [0x0C, 0, 100]
            || window[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 3] == [0x0C, 0, 101];
        if member {
            let mut b = [0u8; 4];
            b.copy_from_slice(&window[..4]);
            let len = u32::from_le_bytes(b) as usize;
            let start = p + FRAME_HEADER_LEN;
            if let Some(payload) = bytes.get(start..start.saturating_add(len)) {
                if len > budget {
                    return None;
                }
                budget -= len;
                b.copy_from_slice(&window[4..8]);
                if u32::from_le_bytes(b) == crc32c::crc32c(payload)
                    && codec::decode(payload).is_ok()
                {
                    return Some(p as u64);
                }
            }
        }
        p += 1;
    }
    None
}

/// Replay `bytes`. With `keep_scanning`, the framing is checked to the end even after an invalid
/// record (the records after it are not applied), so the framing's own end is known.
fn scan(bytes: &[u8], keep_scanning: bool) -> (Replayed, Framing) {
    let (format, frames) = Frames::new(bytes);
    let mut replayed = Replayed {
        format,
        replay: TaskReplay::default(),
        records: 0,
        valid_len: 0,
        end: StreamEnd::Clean,
    };
    let mut frames = match frames {
        Ok(f) => f,
        Err(end) => {
            replayed.end = end.clone();
            return (replayed, Framing { end });
        }
    };
    let mut invalid: Option<StreamEnd> = None;
    let framing_end = loop {
        match frames.next_item() {
            Item::End(end) => break end,
            Item::Frame(offset, index, decoded) => {
                if invalid.is_some() {
                    continue;
                }
                let r = &mut replayed.replay;
                // Counted only for frames that are applied (or skipped whole), so the state
                // is exactly that of the replayed prefix.
                if let Some(record) = &decoded.record {
                    if let Err(e) = r.apply(record) {
                        invalid = Some(StreamEnd::Invalid {
                            offset,
                            record: index,
                            detail: e.to_string(),
                        });
                        replayed.valid_len = offset;
                        if keep_scanning {
                            continue;
                        }
                        break StreamEnd::Clean;
                    }
                    replayed.records += 1;
                } else {
                    r.unknown_records += 1;
                }
                r.unknown_fields += u64::from(decoded.unknown_fields);
                replayed.valid_len = frames.offset();
            }
        }
    };
    if invalid.is_none() {
        replayed.valid_len = match &framing_end {
            StreamEnd::Clean => bytes.len() as u64,
            StreamEnd::Torn { offset, .. } | StreamEnd::Corrupt { offset, .. } => *offset,
            StreamEnd::Invalid { offset, .. } => *offset,
        };
    }
    replayed.end = invalid.unwrap_or_else(|| framing_end.clone());
    (replayed, Framing { end: framing_end })
}

/// Read a whole stream (either framing) and replay its longest valid prefix. Never panics and
/// never fails: why and where reading stopped is in [`Replayed::end`].
pub fn replay_bytes(bytes: &[u8]) -> Replayed {
    scan(bytes, false).0
}

/// Read the stream at `path` and replay it. Only I/O errors are errors; damage is reported in
/// [`Replayed::end`].
pub fn replay_path(path: &Path) -> Result<Replayed, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io_err("read", path))?;
    Ok(replay_bytes(&bytes))
}

/// Decode every record of a stream with the byte offset of its frame, without applying the
/// replay rules. Frames holding only an unknown union member are left out. The end is `Clean`,
/// `Torn` or `Corrupt`, never `Invalid`.
pub fn read_records(bytes: &[u8]) -> (Format, Vec<(u64, Record)>, StreamEnd) {
    let (format, frames) = Frames::new(bytes);
    let mut frames = match frames {
        Ok(f) => f,
        Err(end) => return (format, Vec::new(), end),
    };
    let mut out = Vec::new();
    loop {
        match frames.next_item() {
            Item::End(end) => return (format, out, end),
            Item::Frame(offset, _, d) => {
                if let Some(r) = d.record {
                    out.push((offset, r));
                }
            }
        }
    }
}

/// Replay a legacy Thermos task: `root/checkpoints/<task_id>/runner`, which alone holds the
/// task's whole history (Thermos's runner merged each process's coordinator stream into it).
/// The framing is detected, so a Hearth root works too.
pub fn replay_thermos_task(root: &Path, task_id: &str) -> Result<Replayed, CheckpointError> {
    replay_path(&root.join("checkpoints").join(task_id).join("runner"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{TaskState, TaskStatus};

    fn status(at: i64) -> Record {
        Record::Task(TaskStatus {
            state: TaskState::Active,
            timestamp_ms: at,
            runner_pid: None,
            runner_uid: None,
            reason: None,
            outcome: None,
            cause: None,
        })
    }

    /// The timestamps of the stream's task records, and how it ends.
    fn stamps(path: &Path) -> (Vec<i64>, StreamEnd) {
        let bytes = std::fs::read(path).unwrap_or_default();
        let (_, records, end) = read_records(&bytes);
        let stamps = records
            .iter()
            .filter_map(|(_, r)| match r {
                Record::Task(t) => Some(t.timestamp_ms),
                _ => None,
            })
            .collect();
        (stamps, end)
    }

    /// A stream with records 1 and 2 fsynced and 3 written but not synced; then the fsync fails
    /// (poisoning the writer) and `damage` does to the file what the file system did.
    fn failed_after_an_unsynced_write(
        dir: &Path,
        damage: impl FnOnce(&Path, u64),
    ) -> (PathBuf, CheckpointWriter) {
        let path = dir.join("runner");
        let mut w = CheckpointWriter::create(&path, &RunnerHeader::default()).expect("create");
        w.append(&status(1)).expect("append");
        w.append(&status(2)).expect("append");
        w.commit().expect("commit");
        let synced = w.written;
        w.append(&status(3)).expect("append");
        w.write_out().expect("write out");
        w.poisoned = true;
        damage(&path, synced);
        (path, w)
    }

    fn truncate(path: &Path, len: u64) {
        let file = OpenOptions::new().write(true).open(path).expect("open");
        file.set_len(len).expect("truncate");
    }

    #[test]
    fn a_stream_created_unsynced_is_synced_with_its_directory_by_the_first_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keeper");
        let mut w =
            CheckpointWriter::create_unsynced(&path, &RunnerHeader::default()).expect("create");
        assert_eq!(w.fsyncs, 0, "creation syncs nothing");
        assert!(w.entry_unsynced);
        // Written out at creation: readable by another process at once.
        assert_eq!(stamps(&path), (vec![], StreamEnd::Clean));
        w.commit().expect("commit");
        assert_eq!(
            w.fsyncs, 1,
            "the header's bytes are synced by the first commit"
        );
        assert!(!w.entry_unsynced, "and so is the directory entry");
        w.append(&status(1)).expect("append");
        w.commit().expect("commit");
        assert_eq!(w.fsyncs, 2);
        assert_eq!(stamps(&path), (vec![1], StreamEnd::Clean));
    }

    #[test]
    fn recover_writes_again_what_a_file_system_lost_of_the_unsynced_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Checked and mounted afresh: the unsynced record never reached the disk.
        let (path, mut w) = failed_after_an_unsynced_write(dir.path(), truncate);
        w.append(&status(4)).expect("append");
        w.recover().expect("recover");
        w.commit().expect("commit");
        assert_eq!(stamps(&path), (vec![1, 2, 3, 4], StreamEnd::Clean));
    }

    #[test]
    fn recover_cuts_back_a_partial_frame_and_writes_it_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut w) =
            failed_after_an_unsynced_write(dir.path(), |p, synced| truncate(p, synced + 5));
        w.recover().expect("recover");
        w.commit().expect("commit");
        assert_eq!(stamps(&path), (vec![1, 2, 3], StreamEnd::Clean));
    }

    #[test]
    fn recover_does_not_repeat_unsynced_bytes_the_file_still_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, mut w) = failed_after_an_unsynced_write(dir.path(), |_, _| {});
        w.append(&status(4)).expect("append");
        w.recover().expect("recover");
        let before = w.fsyncs;
        w.commit().expect("commit");
        assert_eq!(w.fsyncs, before + 1, "what landed unsynced is synced now");
        assert_eq!(stamps(&path), (vec![1, 2, 3, 4], StreamEnd::Clean));
        // Nothing held is left: a later failure has nothing of this to write again.
        assert!(w.unsynced.is_empty() && w.pending.is_empty());
    }
}
