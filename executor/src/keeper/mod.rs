//! The keeper: one small process per task that is the parent of every task process.
//!
//! Only a process's parent (or the subreaper it is re-parented to) can learn its exit status, so
//! the executor cannot be that parent if it is to survive its own crash. The keeper is forked from
//! the executor before the executor starts its async runtime (sharing its pages copy-on-write),
//! renames itself `hearth-keeper <task_id>` (see [`rename_process`]), and then:
//! * becomes a session leader and a child subreaper (`PR_SET_CHILD_SUBREAPER`), so double-forked
//!   descendants of the task are re-parented to it and reaped, not left as zombies;
//! * forks and execs task processes when the executor asks ([`protocol::Request::Spawn`]), joining
//!   them to the task cgroup before exec (see [`crate::spawn`]);
//! * reaps its children, writes each exit to its own checkpoint stream
//!   (`checkpoints/<task_id>/keeper`) and fsyncs it (one fsync per burst) *before* telling anyone,
//!   then sends the exit to the executor if one is connected, and again on every new connection
//!   until the executor acknowledges it (spawns are written to the same stream, unsynced: see
//!   [`hearth_checkpoints::stream::CheckpointWriter::write_out`]);
//! * answers a restarted executor over an abstract Unix socket named after the task's checkpoint
//!   directory (no file: see `socket`), and only a peer of its own user or root.
//!
//! It is single-threaded and has no async runtime: one `poll` loop over the listening socket, the
//! executor's connection, a `signalfd` for `SIGCHLD`, and the pipes of rotated logs. It holds no
//! task state beyond its children and the unacknowledged exits, so it stays small.
//!
//! Where things are: this file holds the keeper's state, its start and its `poll` loop;
//! `socket` the socket's name, binding it, finding a running keeper and accepting connections;
//! `requests` reading and answering the executor's requests; `children` starting, recording and
//! reaping task processes; `stream` the keeper's own checkpoint stream; `rotate` rotated logs;
//! `process` small `/proc`, process-title and file helpers; [`protocol`] the wire format.

/// A line on the keeper's stderr (its `keeper.log`). A write that fails — the log's disk full or
/// read-only — is dropped: `eprintln!` would panic there and end the keeper, and with it every
/// exit it holds for the executor.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod children;
mod process;
pub mod protocol;
mod requests;
mod rotate;
pub mod socket;
mod stream;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use hearth_checkpoints::stream::CheckpointWriter;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use self::process::close_inherited_fds;
pub(crate) use self::process::create_dirs_owned;
pub(crate) use self::process::open_log;
pub use self::process::{now_secs, pid_start_ticks, rename_process};
use self::protocol::{Child, Exit, Reply};
use self::rotate::Rotator;
use self::stream::HELD_RETRY;

/// How long a keeper with no child and no executor waits before it exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(60);

/// Where the keeper keeps its things.
#[derive(Debug, Clone)]
pub struct KeeperPaths {
    pub task_id: String,
    /// `checkpoints/<task_id>/keeper`: the keeper's record stream.
    pub stream: PathBuf,
    /// `checkpoints/<task_id>/keeper.log`: the keeper's own diagnostics.
    pub log: PathBuf,
    /// Every `cgroup.procs` a new child joins before exec (empty without cgroups).
    pub cgroup_procs: Vec<PathBuf>,
}

/// Run the keeper until the executor asks it to shut down and no child is left. Returns the
/// process exit code. Runs in the process [`crate::spawn::fork_keeper`] forked from the executor.
///
/// `listener` is the keeper's socket, bound by the executor before the fork: the executor can
/// then connect at once, its connection waiting in the backlog until the keeper accepts it.
pub fn run(paths: &KeeperPaths, listener: UnixListener) -> i32 {
    match Keeper::start(paths, listener).and_then(|mut k| k.serve()) {
        Ok(()) => 0,
        Err(e) => {
            note!("hearth keeper for {}: {e}", paths.task_id);
            1
        }
    }
}

struct Running {
    child: Child,
    rotators: Vec<Rotator>,
}

struct Keeper {
    paths: KeeperPaths,
    listener: UnixListener,
    client: Option<(UnixStream, Vec<u8>)>,
    signals: SignalFd,
    writer: CheckpointWriter,
    cgroup_procs: Vec<File>,
    dev_null: File,
    children: BTreeMap<i32, Running>,
    /// Exits written to the stream but not acknowledged by the executor.
    unacked: Vec<Exit>,
    /// Exits reaped but not yet durable (the stream's disk is full or read-only): reported once
    /// a retried commit succeeds.
    held: Vec<Exit>,
    shutting_down: bool,
    /// Rotators whose process has exited but whose pipe still has writers (descendants).
    orphan_rotators: Vec<Rotator>,
    /// The console's stdout and stderr (the stderr kept from before the keeper redirected its
    /// own to keeper.log).
    console_out: OwnedFd,
    console_err: OwnedFd,
}

impl Keeper {
    fn start(paths: &KeeperPaths, listener: UnixListener) -> io::Result<Keeper> {
        close_inherited_fds(&[listener.as_raw_fd()]);
        // Keep the console's stderr for processes that log to it, then send our own
        // diagnostics to keeper.log.
        let console_out = std::io::stdout().as_fd().try_clone_to_owned()?;
        let console_err = std::io::stderr().as_fd().try_clone_to_owned()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&paths.log)?;
        let _ = nix::unistd::dup2_stderr(log.as_fd());
        let _ = nix::unistd::setsid();
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;

        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(io::Error::from)?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(io::Error::from)?;

        let writer = stream::open(paths)?;

        let cgroup_procs = paths
            .cgroup_procs
            .iter()
            .map(|p| {
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(p)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let dev_null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;

        listener.set_nonblocking(true)?;

        Ok(Keeper {
            paths: paths.clone(),
            listener,
            client: None,
            signals,
            writer,
            cgroup_procs,
            dev_null,
            children: BTreeMap::new(),
            unacked: Vec::new(),
            held: Vec::new(),
            shutting_down: false,
            orphan_rotators: Vec::new(),
            console_out,
            console_err,
        })
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut idle_since = std::time::Instant::now();
        loop {
            if self.shutting_down && self.children.is_empty() && self.held.is_empty() {
                self.drain_orphan_rotators();
                self.send(&Reply::Bye);
                return Ok(());
            }
            // Nothing to keep and nobody to tell: a keeper whose executor is gone for good does
            // not linger. Every exit it saw is in its stream, where a later executor finds it.
            let idle = self.children.is_empty() && self.client.is_none() && self.held.is_empty();
            if !idle {
                idle_since = std::time::Instant::now();
            } else if idle_since.elapsed() >= IDLE_EXIT {
                self.drain_orphan_rotators();
                return Ok(());
            }
            let timeout = if idle {
                IDLE_EXIT.saturating_sub(idle_since.elapsed())
            } else {
                Duration::MAX
            };
            self.flush_held();
            let timeout = if self.held.is_empty() {
                timeout
            } else {
                timeout.min(HELD_RETRY)
            };
            let (listener_ready, client_ready, signals_ready, rotate_ready) = self.wait(timeout)?;
            if signals_ready {
                self.reap()?;
            }
            for id in rotate_ready {
                self.pump_rotator(id);
            }
            if listener_ready {
                self.accept();
            }
            if client_ready {
                self.read_client()?;
            }
        }
    }

    /// Block until something is ready; return which.
    fn wait(&mut self, timeout: Duration) -> io::Result<(bool, bool, bool, Vec<RawFd>)> {
        let rotators: Vec<&Rotator> = self
            .children
            .values()
            .flat_map(|r| r.rotators.iter())
            .chain(self.orphan_rotators.iter())
            .collect();
        let mut fds = Vec::with_capacity(3 + rotators.len());
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
        let has_client = self.client.is_some();
        if let Some((s, _)) = &self.client {
            fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        for r in &rotators {
            fds.push(PollFd::new(r.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if timeout == Duration::MAX {
            PollTimeout::NONE
        } else {
            PollTimeout::try_from(timeout.as_millis().min(60_000) as i32 + 1)
                .unwrap_or(PollTimeout::NONE)
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready = |f: &PollFd<'_>| {
            f.revents().is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let listener_ready = ready(&fds[0]);
        let signals_ready = ready(&fds[1]);
        let first_rotator = if has_client { 3 } else { 2 };
        let client_ready = has_client && ready(&fds[2]);
        let rotate_ready = fds[first_rotator..]
            .iter()
            .zip(rotators.iter())
            .filter(|(f, _)| ready(f))
            .map(|(_, r)| r.fd())
            .collect();
        Ok((listener_ready, client_ready, signals_ready, rotate_ready))
    }
}
