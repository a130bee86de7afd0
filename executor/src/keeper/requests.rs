//! The executor's requests, read from its connection and answered on it: spawn, hello, ack,
//! signal, signal-all and shutdown.

use std::io::{self, Read, Write};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Keeper;
use super::process::parent_and_group;
use super::protocol::{self, Reply, Request};

impl Keeper {
    pub(super) fn read_client(&mut self) -> io::Result<()> {
        let Some((stream, buf)) = self.client.as_mut() else {
            return Ok(());
        };
        let mut chunk = [0u8; 16 * 1024];
        stream.set_nonblocking(true)?;
        let mut closed = false;
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    // Take a bounded bite: the rest is read on the next turn, so a large burst
                    // never sits in memory whole (the keeper's heap stays small for good).
                    if buf.len() >= chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let _ = stream.set_nonblocking(false);
        let mut requests = Vec::new();
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            requests.push(protocol::parse_request(&line[..line.len() - 1]));
        }
        if buf.len() > 16 * 1024 * 1024 {
            closed = true;
        }
        // Handle the whole burst, write its records out, then answer. Runs of consecutive
        // spawns are forked back to back (see `spawn_batch`).
        let mut replies = Vec::with_capacity(requests.len());
        let mut spawns = Vec::new();
        for req in requests {
            match req {
                Ok(Request::Spawn(spec)) => spawns.push(spec),
                other => {
                    replies.extend(self.spawn_batch(std::mem::take(&mut spawns)));
                    replies.push(match other {
                        Ok(r) => self.handle(r),
                        Err(e) => Reply::Error {
                            error: e.to_string(),
                        },
                    });
                }
            }
        }
        replies.extend(self.spawn_batch(spawns));
        // The only records a request writes are spawns. They are handed to the kernel, not
        // fsynced: a crash of the keeper loses nothing written, and a crash of the machine ends
        // the processes they describe as well. The executor makes each start durable in its own
        // stream before reporting it; the keeper's next exit commit syncs these too.
        if let Err(e) = self.writer.write_out() {
            // The spawns happened: report them. Their records stay buffered and are written
            // with the next exits once the disk takes them again.
            note!("hearth-keeper: cannot write spawn records yet: {e}");
            let _ = self.writer.recover();
        }
        for r in &replies {
            self.send(r);
        }
        if closed {
            self.client = None;
        }
        Ok(())
    }

    fn handle(&mut self, req: Request) -> Reply {
        match req {
            Request::Spawn(spec) => {
                self.spawn_batch(vec![spec])
                    .pop()
                    .unwrap_or_else(|| Reply::Error {
                        error: "spawn produced no reply".into(),
                    })
            }
            // Any version's hello gets this keeper's version: the executor decides whether it
            // can adopt it.
            Request::Hello { .. } => Reply::State {
                keeper_pid: std::process::id() as i32,
                children: self.children.values().map(|r| r.child.clone()).collect(),
                exits: self.unacked.clone(),
                version: Some(protocol::PROTOCOL_VERSION),
            },
            Request::Ack { process, run } => {
                self.unacked
                    .retain(|e| !(e.child.process == process && e.child.run == run));
                Reply::Done
            }
            Request::Signal {
                process,
                run,
                signal,
            } => {
                let target = self
                    .children
                    .values()
                    .find(|r| r.child.process == process && r.child.run == run)
                    .map(|r| r.child.pid);
                let delivered = match (target, Signal::try_from(signal)) {
                    // The child is not reaped yet, so its pid (and process group id) cannot have
                    // been recycled.
                    (Some(pid), Ok(sig)) => signal_group(pid, sig),
                    _ => false,
                };
                Reply::Signalled {
                    process,
                    run,
                    delivered,
                }
            }
            Request::SignalAll { signal } => {
                let signalled = Signal::try_from(signal).map_or(0, |sig| self.signal_all(sig));
                Reply::SignalledAll { signalled }
            }
            Request::Shutdown => {
                self.shutting_down = true;
                // Bye follows once the last child is gone.
                Reply::Done
            }
        }
    }

    /// Signal every child's process group and every orphan re-parented to us. Returns how many
    /// processes were signalled.
    fn signal_all(&self, sig: Signal) -> u32 {
        let me = std::process::id() as i32;
        let mut n = 0;
        // Each run is its own process group (it was made a session leader before exec).
        let groups: Vec<i32> = self.children.keys().copied().collect();
        for &pid in &groups {
            if signal_group(pid, sig) {
                n += 1;
            }
        }
        // Orphans re-parented to us: signal their group, unless it was just signalled.
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                let Some((ppid, pgid)) = parent_and_group(pid) else {
                    continue;
                };
                if ppid != me || groups.contains(&pid) || groups.contains(&pgid) {
                    continue;
                }
                if signal_group(pid, sig) {
                    n += 1;
                }
            }
        }
        n
    }

    pub(super) fn send(&mut self, reply: &Reply) {
        let Some((stream, _)) = self.client.as_mut() else {
            return;
        };
        let mut line = match serde_json::to_vec(reply) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        if stream.write_all(&line).is_err() {
            // The executor is gone; it will ask again when it comes back.
            self.client = None;
        }
    }
}

/// Signal the process group led by `pid`, or `pid` alone when it leads no group. Each process
/// gets the signal once.
pub(super) fn signal_group(pid: i32, sig: Signal) -> bool {
    let p = Pid::from_raw(pid);
    nix::sys::signal::killpg(p, sig).is_ok() || nix::sys::signal::kill(p, sig).is_ok()
}
