//! The executor's end of the keeper's Unix socket: requests out in bounded pieces, replies in
//! through a reader task, one JSON object per line each way (see [`crate::keeper::protocol`]).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SuperviseError;
use crate::keeper::protocol::{
    Child, Exit, OLDEST_SUPPORTED, PROTOCOL_VERSION, ProtocolError, Reply, Request, parse_reply,
};
use crate::keeper::socket::{self, KeeperAddr};

/// Requests to the keeper are written in pieces of about this size.
const SEND_CHUNK: usize = 16 * 1024;

/// A connection to the task's keeper.
#[derive(Debug)]
pub struct Link {
    tx: OwnedWriteHalf,
    replies: mpsc::UnboundedReceiver<Reply>,
}

/// What the keeper answered to `hello`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    pub keeper_pid: i32,
    pub children: Vec<Child>,
    pub exits: Vec<Exit>,
    /// The keeper's protocol version.
    pub version: u32,
}

impl Link {
    /// Connect to the keeper, and make sure it runs as this user or root (an abstract socket
    /// name has no file permissions: anyone could bind it first). Its socket is bound before the
    /// keeper is forked (`prepare`), so the first attempt normally succeeds — the connection
    /// waits in the listen backlog until the keeper accepts it. A refused or missing socket is
    /// retried with a short backoff for up to 10 s before giving up.
    pub async fn connect(addr: &KeeperAddr) -> Result<Link, SuperviseError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut backoff = Duration::from_millis(1);
        let stream = loop {
            match addr.connect() {
                Ok(s) => {
                    socket::check_peer(&s, addr)?;
                    s.set_nonblocking(true)
                        .map_err(|source| SuperviseError::Keeper {
                            addr: addr.clone(),
                            source,
                        })?;
                    break UnixStream::from_std(s).map_err(|source| SuperviseError::Keeper {
                        addr: addr.clone(),
                        source,
                    })?;
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(SuperviseError::Keeper {
                        addr: addr.clone(),
                        source: e,
                    });
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
            }
        };
        Ok(Link::over(stream))
    }

    /// A link over a connected socket.
    pub fn over(stream: UnixStream) -> Link {
        let (rx, tx) = stream.into_split();
        let (replies_tx, replies) = mpsc::unbounded_channel::<Reply>();
        tokio::spawn(async move {
            let mut lines = BufReader::new(rx).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match parse_reply(line.as_bytes()) {
                    Ok(reply) => {
                        if replies_tx.send(reply).is_err() {
                            break;
                        }
                    }
                    // Said loudly, then skipped: the keeper's next messages may well be fine, and
                    // an exit it sent is re-sent on the next connection until acknowledged.
                    Err(e) => tracing::error!("keeper protocol: {e}"),
                }
            }
        });
        Link { tx, replies }
    }

    /// Say `hello` and wait for the keeper's state. Exits the keeper re-sends before it are
    /// skipped (they are in the state too); anything else is a protocol error, and so is a keeper
    /// of a version this executor does not adopt.
    pub async fn hello(&mut self) -> Result<Hello, SuperviseError> {
        self.send(&[Request::hello()]).await?;
        loop {
            match self.recv().await {
                Some(Reply::State {
                    keeper_pid,
                    children,
                    exits,
                    version,
                }) => {
                    let version = version.unwrap_or(1);
                    if !(OLDEST_SUPPORTED..=PROTOCOL_VERSION).contains(&version) {
                        return Err(ProtocolError::UnsupportedVersion { keeper: version }.into());
                    }
                    return Ok(Hello {
                        keeper_pid,
                        children,
                        exits,
                        version,
                    });
                }
                Some(Reply::Exited(exit)) => {
                    tracing::debug!(?exit, "an exit re-sent before the keeper's state");
                }
                Some(other) => {
                    return Err(ProtocolError::UnexpectedMessage {
                        expected: "state (the answer to hello)",
                        received: format!("{} ({other:?})", other.op()),
                    }
                    .into());
                }
                None => {
                    return Err(SuperviseError::KeeperGone {
                        fate: String::new(),
                    });
                }
            }
        }
    }

    /// Send requests, in bounded chunks: a launch burst is never serialized whole.
    pub async fn send(&mut self, requests: &[Request]) -> Result<(), SuperviseError> {
        if requests.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(SEND_CHUNK.min(requests.len() * 512) + 1024);
        for (i, r) in requests.iter().enumerate() {
            if serde_json::to_writer(&mut buf, r).is_ok() {
                buf.push(b'\n');
            }
            if buf.len() >= SEND_CHUNK || i + 1 == requests.len() {
                self.tx
                    .write_all(&buf)
                    .await
                    .map_err(|_| SuperviseError::KeeperGone {
                        fate: String::new(),
                    })?;
                buf.clear();
            }
        }
        Ok(())
    }

    /// The next reply; `None` once the keeper closed the connection.
    pub async fn recv(&mut self) -> Option<Reply> {
        self.replies.recv().await
    }

    /// A reply already here, without waiting.
    pub fn try_recv(&mut self) -> Option<Reply> {
        self.replies.try_recv().ok()
    }
}

/// What became of the keeper whose connection closed, for the error an operator reads: its exit
/// status if it was our child and has ended (waited for briefly), whether it still runs, or ""
/// when nothing can be told.
pub(super) async fn keeper_fate(pid: Option<i32>) -> String {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let Some(pid) = pid else {
        return String::new();
    };
    let p = nix::unistd::Pid::from_raw(pid);
    for _ in 0..20 {
        match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                return format!("; the keeper (pid {pid}) exited with status {code}");
            }
            Ok(WaitStatus::Signaled(_, sig, core)) => {
                let core = if core { ", core dumped" } else { "" };
                return format!("; the keeper (pid {pid}) was killed by {sig}{core}");
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            // Not our child (an adopted keeper): only whether it still runs can be told.
            Err(_) => {
                let alive = nix::sys::signal::kill(p, None).is_ok();
                return if alive {
                    format!("; the keeper (pid {pid}) still runs")
                } else {
                    format!("; the keeper (pid {pid}) is gone")
                };
            }
        }
    }
    format!("; the keeper (pid {pid}) still runs")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const TRANSCRIPT_V1: &str = include_str!("../../../testdata/keeper/protocol-v1.jsonl");

    /// A keeper that answers from the version-1 transcript: for each request line read, the
    /// replies recorded after it. Returns what the executor sent.
    async fn v1_keeper(server: UnixStream) -> Vec<String> {
        let mut script: Vec<(String, Vec<String>)> = Vec::new();
        for line in TRANSCRIPT_V1.lines() {
            if let Some(req) = line.strip_prefix("> ") {
                script.push((req.to_owned(), Vec::new()));
            } else if let Some(reply) = line.strip_prefix("< ")
                && let Some(last) = script.last_mut()
            {
                last.1.push(reply.to_owned());
            }
        }
        let (rx, mut tx) = server.into_split();
        let mut lines = BufReader::new(rx).lines();
        let mut seen = Vec::new();
        // The one request this build cannot even express (an unknown op) is not sent.
        let mut script = script
            .into_iter()
            .filter(|(req, _)| crate::keeper::protocol::parse_request(req.as_bytes()).is_ok());
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
            let Some((_, replies)) = script.next() else {
                break;
            };
            for r in replies {
                let _ = tx.write_all(format!("{r}\n").as_bytes()).await;
            }
        }
        seen
    }

    #[tokio::test]
    async fn a_keeper_of_the_previous_protocol_is_adopted() -> Result<(), Box<dyn std::error::Error>>
    {
        tokio::time::timeout(Duration::from_secs(10), adopt_a_v1_keeper()).await?
    }

    async fn adopt_a_v1_keeper() -> Result<(), Box<dyn std::error::Error>> {
        let (ours, theirs) = UnixStream::pair()?;
        let keeper = tokio::spawn(v1_keeper(theirs));
        let mut link = Link::over(ours);
        let hello = link.hello().await?;
        assert_eq!(hello.version, 1);
        assert_eq!(hello.keeper_pid, 4242);
        assert_eq!(hello.children.len(), 1);
        assert_eq!(hello.exits.len(), 1);
        // The rest of the transcript: every reply of a version-1 keeper is understood.
        let requests: Vec<Request> = TRANSCRIPT_V1
            .lines()
            .filter_map(|l| l.strip_prefix("> "))
            .skip(1)
            .filter_map(|l| crate::keeper::protocol::parse_request(l.as_bytes()).ok())
            .collect();
        link.send(&requests).await?;
        let mut ops = Vec::new();
        while let Some(r) = link.recv().await {
            ops.push(r.op());
            if matches!(r, Reply::Bye) {
                break;
            }
        }
        assert_eq!(
            ops,
            [
                "done",
                "spawned",
                "exited",
                "spawn_failed",
                "signalled",
                "signalled_all",
                "done",
                "bye"
            ]
        );
        drop(link);
        let seen = keeper.await?;
        assert_eq!(seen[0], r#"{"op":"hello","version":2}"#);
        Ok(())
    }

    /// A keeper started by a build before abstract sockets listens on the socket file
    /// `checkpoints/<task_id>/keeper.sock`: the executor finds it there (nothing answers on the
    /// abstract name) and adopts it.
    #[tokio::test]
    async fn a_keeper_listening_on_the_old_socket_file_is_found_and_adopted()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = socket::legacy_path(dir.path());
        let listener = tokio::net::UnixListener::bind(&path)?;
        // Every connection gets the transcript: the first is `prepare`'s probe.
        let keeper = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(v1_keeper(stream));
            }
        });
        let addr = socket::find_running(dir.path(), "old")?.ok_or("no keeper found")?;
        assert_eq!(addr, KeeperAddr::Legacy(path));
        let mut link =
            tokio::time::timeout(Duration::from_secs(10), Link::connect(&addr)).await??;
        let hello = tokio::time::timeout(Duration::from_secs(10), link.hello()).await??;
        assert_eq!((hello.version, hello.keeper_pid), (1, 4242));
        drop(link);
        keeper.abort();
        Ok(())
    }

    #[tokio::test]
    async fn a_reply_other_than_state_to_hello_is_a_protocol_error()
    -> Result<(), Box<dyn std::error::Error>> {
        let (ours, theirs) = UnixStream::pair()?;
        let (_rx, mut tx) = theirs.into_split();
        tx.write_all(b"{\"op\":\"done\"}\n").await?;
        let mut link = Link::over(ours);
        let err = link.hello().await.expect_err("done is not state");
        assert_eq!(
            err.to_string(),
            "keeper protocol: expected state (the answer to hello), received done (Done)"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_keeper_of_a_newer_protocol_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let (ours, theirs) = UnixStream::pair()?;
        let (_rx, mut tx) = theirs.into_split();
        tx.write_all(
            b"{\"op\":\"state\",\"keeper_pid\":1,\"children\":[],\"exits\":[],\"version\":99}\n",
        )
        .await?;
        let mut link = Link::over(ours);
        let err = link.hello().await.expect_err("version 99");
        assert!(err.to_string().contains("version 99"), "{err}");
        Ok(())
    }
}
