//! What the executor and the keeper say to each other over the keeper's Unix socket.
//!
//! One JSON object per line in each direction. The executor sends [`Request`]s; the keeper answers
//! each request with exactly one [`Reply`] in order, and in between may send unsolicited
//! [`Reply::Exited`] events. An exit is written durably to the keeper's stream *before* it is sent,
//! and is resent on every new connection until the executor acknowledges it with [`Request::Ack`].

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
    Hello,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_messages_with_numbers_through_a_value() {
        let r: Reply = decode(br#"{"op":"signalled_all","signalled":3}"#).unwrap();
        assert_eq!(r, Reply::SignalledAll { signalled: 3 });
        let q: Request = decode(br#"{"op":"ack","process":"a","run":2}"#).unwrap();
        assert_eq!(
            q,
            Request::Ack {
                process: "a".into(),
                run: 2
            }
        );
        assert!(decode::<Request>(b"{").is_err());
    }
}
