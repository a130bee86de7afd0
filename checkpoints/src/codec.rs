//! The payload of a frame: one `RunnerCkpt` union in the Thrift binary protocol.
//!
//! The field ids and types are Apache Thermos's (`thermos_internal.thrift`), extended with
//! Hearth's fields at ids 100 and up (see [`crate::record`] and `FORMAT.md`), so the same decoder
//! reads Hearth payloads and legacy Thermos payloads.
//!
//! Decoding goes through the `thrift` crate's [`TBinaryInputProtocol`] over the payload slice,
//! with no generated code: fields may come in any order, unknown field ids and unknown union
//! members are skipped and counted, a known id with an unexpected wire type is skipped like an
//! unknown one (what Thrift's generated readers do), enum values and required fields are checked.
//! The crate trusts the lengths it reads (a string or container length is used to allocate before
//! any byte is read, and a negative one overflows), so every length is checked here against the
//! bytes left in the payload before the crate sees it, and skipping is done here with the same
//! checks. Encoding is written out by hand: it is a few dozen bytes of big-endian integers.

use std::collections::BTreeMap;

use thrift::protocol::{TBinaryInputProtocol, TInputProtocol, TType};

use crate::record::{
    FailureCause, ProcessState, ProcessStatus, Record, ReportState, RunnerHeader, SnoozeEvent,
    StatusAck, StatusReport, StepKind, TaskState, TaskStatus, TeardownStep,
};

/// Deepest nesting of structs and containers accepted when skipping unknown fields.
pub const MAX_DEPTH: u32 = 16;

/// Thrift binary protocol type codes.
mod ty {
    pub const STOP: u8 = 0;
    pub const BOOL: u8 = 2;
    pub const DOUBLE: u8 = 4;
    pub const I32: u8 = 8;
    pub const I64: u8 = 10;
    pub const STRING: u8 = 11;
    pub const STRUCT: u8 = 12;
    pub const MAP: u8 = 13;
}

/// Why a payload is not a record. Offsets are in bytes from the start of the payload.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The thrift reader failed (most often: the payload ends inside a value).
    #[error("malformed thrift at payload byte {at}")]
    Thrift {
        at: usize,
        #[source]
        source: thrift::Error,
    },
    /// A string or container declares more than the payload holds, or a negative size.
    #[error("{what} at payload byte {at} declares {len} bytes or elements, {left} bytes left")]
    Length {
        what: &'static str,
        at: usize,
        len: i64,
        left: usize,
    },
    /// A string is not UTF-8.
    #[error("{structure}.{field} at payload byte {at} is not utf-8")]
    Utf8 {
        structure: &'static str,
        field: &'static str,
        at: usize,
    },
    /// An enum field holds a value outside the enum.
    #[error("{structure}.{field} = {value} is not a valid state")]
    BadEnum {
        structure: &'static str,
        field: &'static str,
        value: i32,
    },
    /// A required field is absent.
    #[error("{structure} lacks its required field {field}")]
    Missing {
        structure: &'static str,
        field: &'static str,
    },
    /// The union has no member we know and no unknown one either.
    #[error("RunnerCkpt has no member")]
    EmptyUnion,
    /// The union has two members set.
    #[error("RunnerCkpt has two members (field {first} and field {second})")]
    TwoMembers { first: i16, second: i16 },
    /// Nesting too deep in an unknown field.
    #[error("nesting deeper than {MAX_DEPTH} at payload byte {at}")]
    TooDeep { at: usize },
    /// A wire type that cannot be skipped (void, utf-16, or an unknown code).
    #[error("cannot skip a value of thrift type {ttype:?} at payload byte {at}")]
    Unskippable { ttype: TType, at: usize },
    /// Bytes follow the end of the union.
    #[error("{left} bytes follow the RunnerCkpt struct at payload byte {at}")]
    Trailing { at: usize, left: usize },
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The record, or `None` when the union's only member is one this build does not know
    /// (written by a newer writer); such a frame is skipped.
    pub record: Option<Record>,
    /// Fields skipped inside known structs (unknown ids, or known ids with another wire type).
    pub unknown_fields: u32,
    /// Union members skipped (unknown ids).
    pub unknown_members: u32,
}

/// Decode one payload.
pub fn decode(payload: &[u8]) -> Result<Decoded, DecodeError> {
    let mut r = Reader {
        p: TBinaryInputProtocol::new(payload, false),
        len: payload.len(),
        unknown_fields: 0,
    };
    let mut record: Option<(i16, Record)> = None;
    let mut unknown_members = 0u32;
    loop {
        let (t, id) = r.field()?;
        if t == TType::Stop {
            break;
        }
        let member = match (id, t) {
            (1, TType::Struct) => Some(Record::Header(r.header()?)),
            (2, TType::Struct) => Some(Record::Process(r.process()?)),
            (3, TType::Struct) => Some(Record::Task(r.task()?)),
            (100, TType::Struct) => Some(Record::Snooze(r.snooze()?)),
            (101, TType::Struct) => Some(Record::Teardown(r.teardown()?)),
            (102, TType::Struct) => Some(Record::Status(r.status()?)),
            (103, TType::Struct) => Some(Record::StatusAck(r.status_ack()?)),
            _ => {
                r.skip(t, 0)?;
                unknown_members += 1;
                None
            }
        };
        if let Some(m) = member {
            if let Some((first, _)) = &record {
                return Err(DecodeError::TwoMembers {
                    first: *first,
                    second: id,
                });
            }
            record = Some((id, m));
        }
    }
    let left = r.left();
    if left != 0 {
        return Err(DecodeError::Trailing { at: r.at(), left });
    }
    if record.is_none() && unknown_members == 0 {
        return Err(DecodeError::EmptyUnion);
    }
    Ok(Decoded {
        record: record.map(|(_, rec)| rec),
        unknown_fields: r.unknown_fields,
        unknown_members,
    })
}

struct Reader<'a> {
    p: TBinaryInputProtocol<&'a [u8]>,
    len: usize,
    unknown_fields: u32,
}

fn missing(structure: &'static str, field: &'static str) -> DecodeError {
    DecodeError::Missing { structure, field }
}

impl<'a> Reader<'a> {
    /// Bytes not yet read. The protocol's transport is the unread rest of the payload.
    fn left(&self) -> usize {
        self.p.transport.len()
    }

    fn at(&self) -> usize {
        self.len - self.left()
    }

    fn thrift<T>(&self, at: usize, r: thrift::Result<T>) -> Result<T, DecodeError> {
        r.map_err(|source| DecodeError::Thrift { at, source })
    }

    fn field(&mut self) -> Result<(TType, i16), DecodeError> {
        let at = self.at();
        let f = self.p.read_field_begin();
        let f = self.thrift(at, f)?;
        Ok((f.field_type, f.id.unwrap_or(0)))
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        let at = self.at();
        let v = self.p.read_bool();
        self.thrift(at, v)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let at = self.at();
        let v = self.p.read_i32();
        self.thrift(at, v)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let at = self.at();
        let v = self.p.read_i64();
        self.thrift(at, v)
    }

    fn f64(&mut self) -> Result<f64, DecodeError> {
        let at = self.at();
        let v = self.p.read_double();
        self.thrift(at, v)
    }

    /// Check a length prefix (the next 4 bytes) against what is left, without consuming it.
    fn check_len(&self, what: &'static str, unit: usize) -> Result<usize, DecodeError> {
        let rest: &[u8] = self.p.transport;
        let at = self.at();
        let Some(prefix) = rest.get(..4) else {
            return Err(DecodeError::Length {
                what,
                at,
                len: -1,
                left: rest.len(),
            });
        };
        let mut b = [0u8; 4];
        b.copy_from_slice(prefix);
        let n = i32::from_be_bytes(b);
        let left = rest.len() - 4;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(unit) <= left => Ok(n),
            _ => Err(DecodeError::Length {
                what,
                at,
                len: i64::from(n),
                left,
            }),
        }
    }

    fn string(
        &mut self,
        structure: &'static str,
        field: &'static str,
    ) -> Result<String, DecodeError> {
        self.check_len("string", 1)?;
        let at = self.at();
        match self.p.read_string() {
            Ok(s) => Ok(s),
            Err(thrift::Error::Protocol(_)) => Err(DecodeError::Utf8 {
                structure,
                field,
                at,
            }),
            Err(source) => Err(DecodeError::Thrift { at, source }),
        }
    }

    /// Skip a value we do not read, checking every length against the payload.
    fn skip(&mut self, t: TType, depth: u32) -> Result<(), DecodeError> {
        let at = self.at();
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep { at });
        }
        let r = match t {
            TType::Bool | TType::I08 => self.p.read_i8().map(drop),
            TType::I16 => self.p.read_i16().map(drop),
            TType::I32 => self.p.read_i32().map(drop),
            TType::I64 => self.p.read_i64().map(drop),
            TType::Double => self.p.read_double().map(drop),
            TType::String | TType::Utf8 => {
                let n = self.check_len("string", 1)?;
                let rest: &'a [u8] = self.p.transport;
                self.p.transport = rest.get(4 + n..).unwrap_or_default();
                Ok(())
            }
            TType::Struct => loop {
                let (ft, _) = self.field()?;
                if ft == TType::Stop {
                    return Ok(());
                }
                self.skip(ft, depth + 1)?;
            },
            TType::List | TType::Set => {
                // One type byte, then the count: every element takes at least one byte.
                let (elem, n) = self.container_header::<1>()?;
                for _ in 0..n {
                    self.skip(elem[0], depth + 1)?;
                }
                Ok(())
            }
            TType::Map => {
                let (kv, n) = self.container_header::<2>()?;
                for _ in 0..n {
                    self.skip(kv[0], depth + 1)?;
                    self.skip(kv[1], depth + 1)?;
                }
                Ok(())
            }
            other => return Err(DecodeError::Unskippable { ttype: other, at }),
        };
        self.thrift(at, r)
    }

    /// Read a container's element type byte(s) (`N` of them) and its checked element count.
    /// Each element takes at least one byte per type (`N` bytes for a map entry).
    fn container_header<const N: usize>(&mut self) -> Result<([TType; N], usize), DecodeError> {
        let at = self.at();
        let mut types = [TType::Stop; N];
        let mut codes = [0u8; N];
        for (code, t) in codes.iter_mut().zip(types.iter_mut()) {
            let b = self.p.read_byte();
            *code = self.thrift(at, b)?;
            *t = self.thrift(at, thrift_type(*code))?;
        }
        let n = self.check_len(if N == 1 { "list" } else { "map" }, N)?;
        let rest: &'a [u8] = self.p.transport;
        self.p.transport = rest.get(4..).unwrap_or_default();
        if n > 0
            && types
                .iter()
                .any(|t| matches!(t, TType::Stop | TType::Void | TType::Utf16))
        {
            return Err(DecodeError::Unskippable {
                ttype: types[0],
                at,
            });
        }
        Ok((types, n))
    }

    fn unknown(&mut self, t: TType) -> Result<(), DecodeError> {
        self.unknown_fields += 1;
        self.skip(t, 1)
    }

    fn header(&mut self) -> Result<RunnerHeader, DecodeError> {
        const S: &str = "RunnerHeader";
        let mut h = RunnerHeader::default();
        let (mut task_id, mut launch) = (None, None);
        loop {
            match self.field()? {
                (TType::Stop, _) => break,
                (TType::String, 1) => task_id = Some(self.string(S, "task_id")?),
                (TType::I64, 2) => launch = Some(self.i64()?),
                (TType::String, 3) => h.sandbox = Some(self.string(S, "sandbox")?),
                (TType::String, 4) => h.hostname = Some(self.string(S, "hostname")?),
                (TType::String, 5) => h.user = Some(self.string(S, "user")?),
                (TType::Map, 6) => h.ports = self.ports()?,
                (TType::String, 7) => h.log_dir = Some(self.string(S, "log_dir")?),
                (TType::I32, 8) => h.uid = Some(self.i32()?),
                (TType::I32, 100) => h.format_version = Some(self.i32()?),
                (t, _) => self.unknown(t)?,
            }
        }
        h.task_id = task_id.ok_or_else(|| missing(S, "task_id"))?;
        h.launch_time_ms = launch.ok_or_else(|| missing(S, "launch_time_ms"))?;
        Ok(h)
    }

    fn ports(&mut self) -> Result<BTreeMap<String, i64>, DecodeError> {
        let (kv, n) = self.container_header::<2>()?;
        let mut ports = BTreeMap::new();
        if kv != [TType::String, TType::I64] {
            // Not the map<string, i64> we know: skip it as an unknown field.
            self.unknown_fields += 1;
            for _ in 0..n {
                self.skip(kv[0], 2)?;
                self.skip(kv[1], 2)?;
            }
            return Ok(ports);
        }
        for _ in 0..n {
            let k = self.string("RunnerHeader", "ports")?;
            let v = self.i64()?;
            ports.insert(k, v);
        }
        Ok(ports)
    }

    fn process(&mut self) -> Result<ProcessStatus, DecodeError> {
        const S: &str = "ProcessStatus";
        let mut p = ProcessStatus::default();
        let (mut seq, mut process) = (None, None);
        loop {
            match self.field()? {
                (TType::Stop, _) => break,
                (TType::I64, 1) => seq = Some(self.i64()?),
                (TType::String, 3) => process = Some(self.string(S, "process")?),
                (TType::I32, 5) => {
                    let v = self.i32()?;
                    p.state = Some(ProcessState::from_i32(v).ok_or(DecodeError::BadEnum {
                        structure: S,
                        field: "state",
                        value: v,
                    })?);
                }
                (TType::I32, 10) => p.coordinator_pid = Some(self.i32()?),
                (TType::Double, 11) => p.fork_time = Some(self.f64()?),
                (TType::Double, 6) => p.start_time = Some(self.f64()?),
                (TType::I32, 7) => p.pid = Some(self.i32()?),
                (TType::Double, 8) => p.stop_time = Some(self.f64()?),
                (TType::I32, 9) => p.return_code = Some(self.i32()?),
                (TType::String, 100) => p.reason = Some(self.string(S, "reason")?),
                (TType::I32, 101) => p.signal = Some(self.i32()?),
                (TType::I32, 102) => p.run = Some(self.i32()?),
                (TType::I64, 103) => p.pid_start_ticks = Some(self.i64()?),
                (TType::I32, 104) => p.cause = Some(self.cause(S)?),
                (t, _) => self.unknown(t)?,
            }
        }
        p.seq = seq.ok_or_else(|| missing(S, "seq"))?;
        p.process = process.ok_or_else(|| missing(S, "process"))?;
        Ok(p)
    }

    fn task(&mut self) -> Result<TaskStatus, DecodeError> {
        const S: &str = "TaskStatus";
        let (mut state, mut ts) = (None, None);
        let (mut runner_pid, mut runner_uid, mut reason, mut outcome) = (None, None, None, None);
        let mut cause = None;
        loop {
            match self.field()? {
                (TType::Stop, _) => break,
                (TType::I32, 1) => {
                    let v = self.i32()?;
                    state = Some(TaskState::from_i32(v).ok_or(DecodeError::BadEnum {
                        structure: S,
                        field: "state",
                        value: v,
                    })?);
                }
                (TType::I64, 2) => ts = Some(self.i64()?),
                (TType::I32, 3) => runner_pid = Some(self.i32()?),
                (TType::I32, 4) => runner_uid = Some(self.i32()?),
                (TType::String, 100) => reason = Some(self.string(S, "reason")?),
                (TType::I32, 101) => {
                    let v = self.i32()?;
                    outcome = Some(TaskState::from_i32(v).ok_or(DecodeError::BadEnum {
                        structure: S,
                        field: "outcome",
                        value: v,
                    })?);
                }
                (TType::I32, 102) => cause = Some(self.cause(S)?),
                (t, _) => self.unknown(t)?,
            }
        }
        Ok(TaskStatus {
            state: state.ok_or_else(|| missing(S, "state"))?,
            timestamp_ms: ts.ok_or_else(|| missing(S, "timestamp_ms"))?,
            runner_pid,
            runner_uid,
            reason,
            outcome,
            cause,
        })
    }

    fn cause(&mut self, structure: &'static str) -> Result<FailureCause, DecodeError> {
        let v = self.i32()?;
        FailureCause::from_i32(v).ok_or(DecodeError::BadEnum {
            structure,
            field: "cause",
            value: v,
        })
    }

    fn snooze(&mut self) -> Result<SnoozeEvent, DecodeError> {
        const S: &str = "SnoozeEvent";
        let (mut active, mut ts, mut expires_ms, mut detail) = (None, None, None, None);
        loop {
            match self.field()? {
                (TType::Stop, _) => break,
                (TType::Bool, 1) => active = Some(self.bool()?),
                (TType::I64, 2) => ts = Some(self.i64()?),
                (TType::I64, 3) => expires_ms = Some(self.i64()?),
                (TType::String, 4) => detail = Some(self.string(S, "detail")?),
                (t, _) => self.unknown(t)?,
            }
        }
        Ok(SnoozeEvent {
            active: active.ok_or_else(|| missing(S, "active"))?,
            timestamp_ms: ts.ok_or_else(|| missing(S, "timestamp_ms"))?,
            expires_ms,
            detail,
        })
    }

    fn status(&mut self) -> Result<StatusReport, DecodeError> {
        const S: &str = "StatusReport";
        let (mut seq, mut state, mut reason, mut ts) = (None, None, None, None);
        loop {
            match self.field()? {
                (TType::Stop, _) => break,
                (TType::I64, 1) => seq = Some(self.i64()?),
                (TType::String, 2) => {
                    state = Some(ReportState::from_name(&self.string(S, "state")?))
                }
                (TType::String, 3) => reason = Some(self.string(S, "reason")?),
                (TType::I64, 4) => ts = Some(self.i64()?),
                (t, _) => self.unknown(t)?,
            }
        }
        Ok(StatusReport {
            seq: seq.ok_or_else(|| missing(S, "seq"))?,
            state: state.ok_or_else(|| missing(S, "state"))?,
            reason,
            timestamp_ms: ts.ok_or_else(|| missing(S, "timestamp_ms"))?,
        })
    }

    fn status_ack(&mut self) -> Result<StatusAck, DecodeError> {
        const S: &str = "StatusAck";
        let (mut seq, mut detail) = (None, None);
        loop {
            match self.field()? {
                (TType::Stop, _) => break,
                (TType::I64, 1) => seq = Some(self.i64()?),
                (TType::String, 2) => detail = Some(self.string(S, "detail")?),
                (t, _) => self.unknown(t)?,
            }
        }
        Ok(StatusAck {
            seq: seq.ok_or_else(|| missing(S, "seq"))?,
            detail,
        })
    }

    fn teardown(&mut self) -> Result<TeardownStep, DecodeError> {
        const S: &str = "TeardownStep";
        let (mut step, mut ts, mut detail, mut kind) = (None, None, None, None);
        loop {
            match self.field()? {
                (TType::Stop, _) => break,
                (TType::String, 1) => step = Some(self.string(S, "step")?),
                (TType::I64, 2) => ts = Some(self.i64()?),
                (TType::String, 3) => detail = Some(self.string(S, "detail")?),
                (TType::I32, 4) => kind = Some(self.i32()?),
                (t, _) => self.unknown(t)?,
            }
        }
        let name = step.ok_or_else(|| missing(S, "step"))?;
        let step = StepKind::from_wire(&name, kind).ok_or(DecodeError::BadEnum {
            structure: S,
            field: "kind",
            value: kind.unwrap_or_default(),
        })?;
        Ok(TeardownStep {
            step,
            timestamp_ms: ts.ok_or_else(|| missing(S, "timestamp_ms"))?,
            detail,
        })
    }
}

/// The wire type for a type byte (the codes of the binary protocol).
fn thrift_type(b: u8) -> thrift::Result<TType> {
    Ok(match b {
        0x00 => TType::Stop,
        0x01 => TType::Void,
        0x02 => TType::Bool,
        0x03 => TType::I08,
        0x04 => TType::Double,
        0x06 => TType::I16,
        0x08 => TType::I32,
        0x0A => TType::I64,
        0x0B => TType::String,
        0x0C => TType::Struct,
        0x0D => TType::Map,
        0x0E => TType::Set,
        0x0F => TType::List,
        0x10 => TType::Utf8,
        0x11 => TType::Utf16,
        other => {
            return Err(thrift::Error::Protocol(thrift::ProtocolError::new(
                thrift::ProtocolErrorKind::InvalidData,
                format!("unknown thrift type code {other}"),
            )));
        }
    })
}

/// Encode `record` as a `RunnerCkpt` union, appending to `out`.
///
/// Strings longer than `i32::MAX` bytes cannot be encoded; the writer refuses any payload over
/// the frame limit long before that, so their length prefix never reaches a file.
pub fn encode(record: &Record, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    match record {
        Record::Header(h) => {
            w.begin(ty::STRUCT, 1);
            w.string(1, &h.task_id);
            w.i64(2, h.launch_time_ms);
            w.opt_string(3, h.sandbox.as_deref());
            w.opt_string(4, h.hostname.as_deref());
            w.opt_string(5, h.user.as_deref());
            w.begin(ty::MAP, 6);
            w.0.extend_from_slice(&[ty::STRING, ty::I64]);
            w.len(h.ports.len());
            for (k, v) in &h.ports {
                w.len(k.len());
                w.0.extend_from_slice(k.as_bytes());
                w.0.extend_from_slice(&v.to_be_bytes());
            }
            w.opt_string(7, h.log_dir.as_deref());
            w.opt_i32(8, h.uid);
            w.opt_i32(100, h.format_version);
            w.stop();
        }
        Record::Process(p) => {
            w.begin(ty::STRUCT, 2);
            w.i64(1, p.seq);
            w.string(3, &p.process);
            w.opt_i32(5, p.state.map(|s| s as i32));
            w.opt_f64(6, p.start_time);
            w.opt_i32(7, p.pid);
            w.opt_f64(8, p.stop_time);
            w.opt_i32(9, p.return_code);
            w.opt_i32(10, p.coordinator_pid);
            w.opt_f64(11, p.fork_time);
            w.opt_string(100, p.reason.as_deref());
            w.opt_i32(101, p.signal);
            w.opt_i32(102, p.run);
            if let Some(t) = p.pid_start_ticks {
                w.i64(103, t);
            }
            w.opt_i32(104, p.cause.map(|c| c as i32));
            w.stop();
        }
        Record::Task(t) => {
            w.begin(ty::STRUCT, 3);
            w.opt_i32(1, Some(t.state as i32));
            w.i64(2, t.timestamp_ms);
            w.opt_i32(3, t.runner_pid);
            w.opt_i32(4, t.runner_uid);
            w.opt_string(100, t.reason.as_deref());
            w.opt_i32(101, t.outcome.map(|o| o as i32));
            w.opt_i32(102, t.cause.map(|c| c as i32));
            w.stop();
        }
        Record::Snooze(s) => {
            w.begin(ty::STRUCT, 100);
            w.begin(ty::BOOL, 1);
            w.0.push(u8::from(s.active));
            w.i64(2, s.timestamp_ms);
            if let Some(e) = s.expires_ms {
                w.i64(3, e);
            }
            w.opt_string(4, s.detail.as_deref());
            w.stop();
        }
        Record::Teardown(t) => {
            w.begin(ty::STRUCT, 101);
            w.string(1, t.step.name());
            w.i64(2, t.timestamp_ms);
            w.opt_string(3, t.detail.as_deref());
            w.opt_i32(4, Some(t.step.code()));
            w.stop();
        }
        Record::Status(s) => {
            w.begin(ty::STRUCT, 102);
            w.i64(1, s.seq);
            w.string(2, s.state.name());
            w.opt_string(3, s.reason.as_deref());
            w.i64(4, s.timestamp_ms);
            w.stop();
        }
        Record::StatusAck(a) => {
            w.begin(ty::STRUCT, 103);
            w.i64(1, a.seq);
            w.opt_string(2, a.detail.as_deref());
            w.stop();
        }
    }
    // End of the RunnerCkpt union.
    w.stop();
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn begin(&mut self, ttype: u8, id: i16) {
        self.0.push(ttype);
        self.0.extend_from_slice(&id.to_be_bytes());
    }

    fn stop(&mut self) {
        self.0.push(ty::STOP);
    }

    fn len(&mut self, n: usize) {
        // See `encode`: an over-long length only occurs in a payload the writer refuses.
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn string(&mut self, id: i16, s: &str) {
        self.begin(ty::STRING, id);
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt_string(&mut self, id: i16, s: Option<&str>) {
        if let Some(s) = s {
            self.string(id, s);
        }
    }

    fn i64(&mut self, id: i16, v: i64) {
        self.begin(ty::I64, id);
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn opt_i32(&mut self, id: i16, v: Option<i32>) {
        if let Some(v) = v {
            self.begin(ty::I32, id);
            self.0.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn opt_f64(&mut self, id: i16, v: Option<f64>) {
        if let Some(v) = v {
            self.begin(ty::DOUBLE, id);
            self.0.extend_from_slice(&v.to_bits().to_be_bytes());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use thrift::protocol::{
        TBinaryOutputProtocol, TFieldIdentifier, TOutputProtocol, TStructIdentifier,
    };

    use super::*;

    fn header() -> RunnerHeader {
        RunnerHeader {
            task_id: "t-1".into(),
            launch_time_ms: 1_700_000_000_123,
            sandbox: Some("/sb".into()),
            hostname: Some("h".into()),
            user: Some("u".into()),
            ports: [("http".to_owned(), 8080), ("health".to_owned(), 8081)].into(),
            log_dir: Some("/sb/.logs".into()),
            uid: Some(1000),
            format_version: Some(1),
        }
    }

    fn all_records() -> Vec<Record> {
        vec![
            Record::Header(header()),
            Record::Process(ProcessStatus {
                seq: 7,
                process: "web".into(),
                state: Some(ProcessState::Failed),
                coordinator_pid: Some(1),
                fork_time: Some(1.5),
                start_time: Some(2.5),
                pid: Some(42),
                stop_time: Some(3.25),
                return_code: Some(137),
                reason: Some("oom".into()),
                signal: Some(9),
                run: Some(2),
                pid_start_ticks: Some(123_456),
                cause: Some(FailureCause::Oom),
            }),
            Record::Process(ProcessStatus {
                seq: 0,
                process: "p".into(),
                state: Some(ProcessState::Waiting),
                ..ProcessStatus::default()
            }),
            Record::Task(TaskStatus {
                state: TaskState::Finalizing,
                timestamp_ms: 5,
                runner_pid: Some(9),
                runner_uid: None,
                reason: Some("Failed health check! timeout".into()),
                outcome: Some(TaskState::Failed),
                cause: Some(FailureCause::HealthCheck),
            }),
            Record::Snooze(SnoozeEvent {
                active: true,
                timestamp_ms: 6,
                expires_ms: Some(7),
                detail: Some("file created".into()),
            }),
            Record::Teardown(TeardownStep {
                step: StepKind::Sigterm,
                timestamp_ms: 8,
                detail: None,
            }),
            Record::Teardown(TeardownStep {
                step: StepKind::Post {
                    endpoint: "sigkill".into(),
                },
                timestamp_ms: 8,
                detail: Some("an endpoint named like a step stays a POST".into()),
            }),
            Record::Status(StatusReport {
                seq: 1,
                state: ReportState::Running,
                reason: Some("Task is healthy.".into()),
                timestamp_ms: 9,
            }),
            Record::StatusAck(StatusAck {
                seq: 1,
                detail: None,
            }),
        ]
    }

    #[test]
    fn every_record_kind_round_trips() {
        for rec in all_records() {
            let mut buf = Vec::new();
            encode(&rec, &mut buf);
            let d = decode(&buf).unwrap();
            assert_eq!(d.record, Some(rec));
            assert_eq!((d.unknown_fields, d.unknown_members), (0, 0));
        }
    }

    /// The crate's own writer produces the bytes our encoder produces (the Thermos header part).
    #[test]
    fn encoder_matches_the_thrift_crate_writer() {
        let h = RunnerHeader {
            ports: BTreeMap::new(),
            log_dir: None,
            uid: None,
            format_version: None,
            ..header()
        };
        let mut ours = Vec::new();
        encode(&Record::Header(h.clone()), &mut ours);

        let mut theirs = Vec::new();
        {
            let mut o = TBinaryOutputProtocol::new(&mut theirs, true);
            let f = |n: &str, t, id| TFieldIdentifier::new(n, t, id);
            o.write_struct_begin(&TStructIdentifier::new("RunnerCkpt"))
                .unwrap();
            o.write_field_begin(&f("runner_header", TType::Struct, 1))
                .unwrap();
            o.write_struct_begin(&TStructIdentifier::new("RunnerHeader"))
                .unwrap();
            o.write_field_begin(&f("task_id", TType::String, 1))
                .unwrap();
            o.write_string(&h.task_id).unwrap();
            o.write_field_begin(&f("launch_time_ms", TType::I64, 2))
                .unwrap();
            o.write_i64(h.launch_time_ms).unwrap();
            for (id, v) in [(3, "/sb"), (4, "h"), (5, "u")] {
                o.write_field_begin(&f("s", TType::String, id)).unwrap();
                o.write_string(v).unwrap();
            }
            o.write_field_begin(&f("ports", TType::Map, 6)).unwrap();
            o.write_map_begin(&thrift::protocol::TMapIdentifier::new(
                TType::String,
                TType::I64,
                0,
            ))
            .unwrap();
            o.write_field_stop().unwrap();
            o.write_field_stop().unwrap();
            o.flush().unwrap();
        }
        assert_eq!(ours, theirs);
    }

    #[test]
    fn fields_in_any_order_and_unknown_fields_are_accepted() {
        // TaskStatus with timestamp first, an unknown string field 9, then the state.
        let mut b = vec![ty::STRUCT, 0, 3];
        b.extend_from_slice(&[ty::I64, 0, 2]);
        b.extend_from_slice(&42i64.to_be_bytes());
        b.extend_from_slice(&[ty::STRING, 0, 9, 0, 0, 0, 2, b'h', b'i']);
        b.extend_from_slice(&[ty::I32, 0, 1, 0, 0, 0, 1]);
        b.extend_from_slice(&[ty::STOP, ty::STOP]);
        let d = decode(&b).unwrap();
        assert_eq!(d.unknown_fields, 1);
        assert_eq!(
            d.record,
            Some(Record::Task(TaskStatus {
                state: TaskState::Success,
                timestamp_ms: 42,
                runner_pid: None,
                runner_uid: None,
                reason: None,
                outcome: None,
                cause: None,
            }))
        );
    }

    #[test]
    fn a_union_holding_only_an_unknown_member_decodes_to_no_record() {
        let b = vec![
            ty::STRUCT,
            0,
            77,
            ty::I32,
            0,
            1,
            0,
            0,
            0,
            1,
            ty::STOP,
            ty::STOP,
        ];
        let d = decode(&b).unwrap();
        assert_eq!((d.record, d.unknown_members), (None, 1));
    }

    #[test]
    fn out_of_range_enum_is_rejected() {
        let b = vec![
            ty::STRUCT,
            0,
            3,
            ty::I32,
            0,
            1,
            0,
            0,
            0,
            9,
            ty::STOP,
            ty::STOP,
        ];
        assert!(matches!(
            decode(&b),
            Err(DecodeError::BadEnum { value: 9, .. })
        ));
    }

    #[test]
    fn negative_or_oversized_string_lengths_are_rejected_before_allocating() {
        for len in [-1i32, i32::MAX, 5] {
            let mut b = vec![ty::STRUCT, 0, 101, ty::STRING, 0, 1];
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(b"abc");
            assert!(
                matches!(decode(&b), Err(DecodeError::Length { .. })),
                "{len}"
            );
        }
    }

    #[test]
    fn huge_unknown_list_is_rejected_without_looping() {
        let mut b = vec![ty::STRUCT, 0, 3, 15, 0, 50, ty::STRUCT];
        b.extend_from_slice(&i32::MAX.to_be_bytes());
        b.extend_from_slice(&[ty::STOP, ty::STOP]);
        assert!(matches!(decode(&b), Err(DecodeError::Length { .. })));
    }

    #[test]
    fn missing_required_fields_two_members_and_trailing_bytes_are_rejected() {
        let no_state = vec![ty::STRUCT, 0, 3, ty::STOP, ty::STOP];
        assert!(matches!(
            decode(&no_state),
            Err(DecodeError::Missing { .. })
        ));
        let mut two = Vec::new();
        encode(&all_records()[3], &mut two);
        two.pop();
        let mut second = Vec::new();
        encode(&all_records()[5], &mut second);
        two.extend_from_slice(&second);
        assert!(matches!(decode(&two), Err(DecodeError::TwoMembers { .. })));
        let mut trailing = Vec::new();
        encode(&all_records()[0], &mut trailing);
        trailing.push(0);
        assert!(matches!(
            decode(&trailing),
            Err(DecodeError::Trailing { .. })
        ));
        assert!(matches!(decode(&[ty::STOP]), Err(DecodeError::EmptyUnion)));
    }
}
