//! The executor's end of the keeper's Unix socket: requests out in bounded pieces, replies in
//! through a reader task, one JSON object per line each way (see [`crate::keeper::protocol`]).

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::SuperviseError;
use crate::keeper::protocol::{Reply, Request};

/// Requests to the keeper are written in pieces of about this size.
const SEND_CHUNK: usize = 16 * 1024;

/// A connection to the task's keeper.
#[derive(Debug)]
pub struct Link {
    tx: OwnedWriteHalf,
    replies: mpsc::UnboundedReceiver<Reply>,
}

impl Link {
    /// Connect to the keeper. Its socket is bound before the keeper is forked (`prepare`), so the
    /// first attempt normally succeeds — the connection waits in the listen backlog until the
    /// keeper accepts it. A refused or missing socket is retried with a short backoff for up to
    /// 10 s before giving up.
    pub async fn connect(path: &Path) -> Result<Link, SuperviseError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut backoff = Duration::from_millis(1);
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(SuperviseError::Keeper {
                        path: path.to_path_buf(),
                        source: e,
                    });
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
            }
        };
        let (rx, tx) = stream.into_split();
        let (replies_tx, replies) = mpsc::unbounded_channel::<Reply>();
        tokio::spawn(async move {
            let mut lines = BufReader::new(rx).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<Reply>(&line) {
                    Ok(reply) => {
                        if replies_tx.send(reply).is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::error!(
                        received = %line,
                        error = %e,
                        "the keeper sent a message this executor cannot parse; ignored"
                    ),
                }
            }
        });
        Ok(Link { tx, replies })
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
                    .map_err(|_| SuperviseError::KeeperGone)?;
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
