//! What the executor and the keeper say to each other over the keeper's Unix socket.
//!
//! One JSON object per line in each direction. The executor sends [`Request`]s; the keeper answers
//! each request with exactly one [`Reply`] in order, and in between may send unsolicited
//! [`Reply::Exited`] events. An exit is written durably to the keeper's stream *before* it is sent,
//! and is resent on every new connection until the executor acknowledges it with [`Request::Ack`].
//!
//! # Versions
//!
//! The keeper outlives the executor, and the `hearth` binary can be replaced while a task runs: a
//! new executor must then adopt a keeper forked from the old binary. [`Request::Hello`] carries the
//! executor's [`PROTOCOL_VERSION`] and [`Reply::State`] the keeper's; a keeper that says none speaks
//! version 1 (a version-1 keeper ignores the field in `hello`). An executor adopts keepers of
//! [`OLDEST_SUPPORTED`]`..=`[`PROTOCOL_VERSION`]. Version 1 is recorded in
//! `testdata/keeper/protocol-v1.jsonl`, which the tests replay.
//!
//! * 1: the first protocol.
//! * 2: `hello` and `state` carry the version. No other change.
//!
//! A message that does not parse, or that is not what was expected, is a [`ProtocolError`] naming
//! what was expected and what came.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Decode one message line. It is read into a `serde_json::Value` first and the message taken
/// from that: when serde_json's `arbitrary_precision` feature is on (the `starlark` crate, which
/// `hearth-aurora` uses, turns it on for every crate of the build), numbers inside internally
/// tagged enums such as [`Request`] and [`Reply`] cannot be read straight from text, and every
/// message with a number would be refused.
pub fn decode<T: DeserializeOwned>(line: &[u8]) -> serde_json::Result<T> {
    let value: serde_json::Value = serde_json::from_slice(line)?;
    T::deserialize(value)
}

/// The protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest keeper protocol this build's executor adopts.
pub const OLDEST_SUPPORTED: u32 = 1;

/// A protocol violation on the keeper's socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("expected {expected}, received an unparsable message {received:?}: {detail}")]
    Unparsable {
        expected: &'static str,
        received: String,
        detail: String,
    },
    #[error("expected {expected}, received {received}")]
    UnexpectedMessage {
        expected: &'static str,
        received: String,
    },
    #[error(
        "the keeper speaks protocol version {keeper}; this executor supports {OLDEST_SUPPORTED} to {PROTOCOL_VERSION}"
    )]
    UnsupportedVersion { keeper: u32 },
}

/// Parse one line from the keeper.
pub fn parse_reply(line: &[u8]) -> Result<Reply, ProtocolError> {
    decode(line).map_err(|e| ProtocolError::Unparsable {
        expected: "a keeper reply",
        received: String::from_utf8_lossy(line).into_owned(),
        detail: e.to_string(),
    })
}

/// Parse one line from the executor.
pub fn parse_request(line: &[u8]) -> Result<Request, ProtocolError> {
    decode(line).map_err(|e| ProtocolError::Unparsable {
        expected: "an executor request",
        received: String::from_utf8_lossy(line).into_owned(),
        detail: e.to_string(),
    })
}

/// How a process of the task is to be started. Everything is prepared by the executor, so the
/// keeper only forks, applies it and execs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnSpec {
    pub process: String,
    pub run: u32,
    /// Program and arguments; `argv[0]` is the path that is executed.
    pub argv: Vec<String>,
    /// The complete environment (`KEY=VALUE`).
    pub env: Vec<String>,
    pub cwd: String,
    /// Credentials to switch to, when running as root for another user.
    pub credentials: Option<Credentials>,
    /// Where the process's stdout and stderr go.
    pub stdout: LogTarget,
    pub stderr: LogTarget,
}

/// A user to become: `setgroups`, `setgid`, `setuid`, in that order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Destination of one output stream of a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogTarget {
    /// Append to this file (created with mode 0640 and owned by `owner` if given).
    File { path: String },
    /// Rotate: the keeper reads a pipe and writes `path`, moving it to `path.1`, `path.2`, ... when
    /// it exceeds `max_bytes`, keeping `backups` old files.
    Rotate {
        path: String,
        max_bytes: u64,
        backups: u32,
        /// Also copy everything to the console (logger destination `both`).
        #[serde(default)]
        console: bool,
    },
    /// The keeper's own stdout/stderr (the console the executor was started from).
    Inherit,
    /// `/dev/null`.
    Discard,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start a process. Answered by [`Reply::Spawned`] or [`Reply::SpawnFailed`].
    Spawn(SpawnSpec),
    /// Who is alive, and which exits are not acknowledged yet. Answered by [`Reply::State`].
    /// `version`: the executor's protocol version (absent in version 1).
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
    },
    /// The executor has recorded this exit durably; the keeper may forget it. Answered by
    /// [`Reply::Done`].
    Ack { process: String, run: u32 },
    /// Send `signal` to the process group of this run (if it is still running). Answered by
    /// [`Reply::Signalled`].
    Signal {
        process: String,
        run: u32,
        signal: i32,
    },
    /// Send `signal` to every process the keeper is the parent of — its children's process groups
    /// and the orphans re-parented to it (double-forked daemons) — for hosts without cgroups.
    /// Answered by [`Reply::SignalledAll`].
    SignalAll { signal: i32 },
    /// The task is over: exit once no child is left. Answered by [`Reply::Done`], then
    /// [`Reply::Bye`] when the keeper exits.
    Shutdown,
}

/// A child the keeper is supervising.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Child {
    pub process: String,
    pub run: u32,
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot.
    pub start_ticks: Option<i64>,
    /// Seconds since the epoch.
    pub fork_time: f64,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exit {
    pub child: Child,
    pub status: ExitStatus,
    /// Seconds since the epoch.
    pub stop_time: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    Spawned(Child),
    SpawnFailed {
        process: String,
        run: u32,
        error: String,
    },
    State {
        keeper_pid: i32,
        children: Vec<Child>,
        exits: Vec<Exit>,
        /// The keeper's protocol version (absent: version 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u32>,
    },
    Signalled {
        process: String,
        run: u32,
        delivered: bool,
    },
    /// Answer to [`Request::SignalAll`]: how many processes (groups) were signalled.
    SignalledAll {
        signalled: u32,
    },
    /// Answer to [`Request::Ack`] and [`Request::Shutdown`].
    Done,
    Exited(Exit),
    Bye,
    /// The request could not be understood.
    Error {
        error: String,
    },
}

impl Request {
    /// The `hello` of this build.
    pub fn hello() -> Request {
        Request::Hello {
            version: Some(PROTOCOL_VERSION),
        }
    }
}

impl Reply {
    /// The message's name on the wire (`state`, `exited`, …), for errors.
    pub fn op(&self) -> &'static str {
        match self {
            Reply::Spawned(_) => "spawned",
            Reply::SpawnFailed { .. } => "spawn_failed",
            Reply::State { .. } => "state",
            Reply::Signalled { .. } => "signalled",
            Reply::SignalledAll { .. } => "signalled_all",
            Reply::Done => "done",
            Reply::Exited(_) => "exited",
            Reply::Bye => "bye",
            Reply::Error { .. } => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSCRIPT_V1: &str = include_str!("../../../testdata/keeper/protocol-v1.jsonl");

    #[test]
    fn messages_with_numbers_parse_whatever_serde_json_features_the_build_has() {
        assert!(matches!(
            parse_reply(br#"{"op":"signalled_all","signalled":3}"#),
            Ok(Reply::SignalledAll { signalled: 3 })
        ));
        assert!(matches!(
            parse_request(br#"{"op":"ack","process":"a","run":2}"#),
            Ok(Request::Ack { run: 2, .. })
        ));
        assert!(parse_request(b"{").is_err());
    }

    /// The transcript's lines: `(true, json)` for a request, `(false, json)` for a reply.
    fn transcript() -> Vec<(bool, &'static str)> {
        TRANSCRIPT_V1
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| match l.split_at(2) {
                ("> ", json) => (true, json),
                ("< ", json) => (false, json),
                _ => panic!("bad transcript line {l:?}"),
            })
            .collect()
    }

    #[test]
    fn every_reply_of_a_version_1_keeper_parses() {
        let replies: Vec<Reply> = transcript()
            .into_iter()
            .filter(|(req, _)| !req)
            .map(|(_, json)| parse_reply(json.as_bytes()))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(replies.len(), 10);
        let Reply::State { version, .. } = &replies[0] else {
            panic!("{:?}", replies[0]);
        };
        assert_eq!(*version, None, "a version-1 keeper says no version");
    }

    #[test]
    fn every_request_of_a_version_1_executor_parses_except_the_unknown_one() {
        for (json, is_request) in transcript().into_iter().map(|(r, j)| (j, r)) {
            if !is_request {
                continue;
            }
            let parsed = parse_request(json.as_bytes());
            if json.contains("no_such_request") {
                let Err(ProtocolError::Unparsable { received, .. }) = parsed else {
                    panic!("{parsed:?}");
                };
                assert_eq!(received, json);
            } else if let Err(e) = parsed {
                panic!("{e}");
            }
        }
    }

    /// The version-1 keeper's request type, as it was (its `hello` was a unit variant).
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(tag = "op", rename_all = "snake_case")]
    enum RequestV1 {
        Hello,
    }

    #[test]
    fn a_version_1_keeper_reads_this_builds_hello() {
        let line = serde_json::to_string(&Request::hello()).unwrap_or_default();
        assert_eq!(line, r#"{"op":"hello","version":2}"#);
        let v1: Result<RequestV1, _> = serde_json::from_str(&line);
        assert_eq!(v1.ok(), Some(RequestV1::Hello));
    }

    #[test]
    fn a_version_1_hello_still_reaches_this_keeper() {
        assert_eq!(
            parse_request(br#"{"op":"hello"}"#),
            Ok(Request::Hello { version: None })
        );
    }

    #[test]
    fn an_unparsable_reply_names_what_was_expected_and_what_came() {
        let e = parse_reply(b"{\"op\":\"exploded\"}").expect_err("not a reply");
        let text = e.to_string();
        assert!(
            text.starts_with("expected a keeper reply, received"),
            "{text}"
        );
        assert!(text.contains("exploded"), "{text}");
    }
}
