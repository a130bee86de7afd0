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
//! * answers a restarted executor over the Unix socket `checkpoints/<task_id>/keeper.sock`.
//!
//! It is single-threaded and has no async runtime: one `poll` loop over the listening socket, the
//! executor's connection, a `signalfd` for `SIGCHLD`, and the pipes of rotated logs. It holds no
//! task state beyond its children and the unacknowledged exits, so it stays small.

pub mod protocol;
mod rotate;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_checkpoints::record::{ProcessState, ProcessStatus, Record, RunnerHeader};
use hearth_checkpoints::stream::CheckpointWriter;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use self::protocol::{Child, Exit, ExitStatus, LogTarget, Reply, Request, SpawnSpec};
use self::rotate::Rotator;
use crate::spawn::{self, ChildLogs, Fds, Ids, Prepared};

/// How long a keeper with no child and no executor waits before it exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(60);

/// Where the keeper keeps its things.
#[derive(Debug, Clone)]
pub struct KeeperPaths {
    pub task_id: String,
    /// `checkpoints/<task_id>/keeper.sock`.
    pub socket: PathBuf,
    /// `checkpoints/<task_id>/keeper`: the keeper's record stream.
    pub stream: PathBuf,
    /// `checkpoints/<task_id>/keeper.log`: the keeper's own diagnostics.
    pub log: PathBuf,
    /// Every `cgroup.procs` a new child joins before exec (empty without cgroups).
    pub cgroup_procs: Vec<PathBuf>,
}

/// The keeper socket's path for a task checkpoint directory.
pub fn socket_path(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir.join("keeper.sock")
}

/// Bind a keeper's socket at `path` (replacing a stale one), readable only by its owner. The
/// executor binds it before forking the keeper, which inherits the listener.
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Seconds since the epoch, as Thermos records times.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22), if it exists.
///
/// Read once per spawn on the launch path, so with one `read` into a stack buffer (no stat, no
/// allocation): the fields up to 22 always fit in it.
pub fn pid_start_ticks(pid: i32) -> Option<i64> {
    let mut buf = [0u8; 1024];
    let n = File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    start_ticks_of(buf.get(..n)?)
}

/// Field 22 of a `/proc/<pid>/stat` line.
fn start_ticks_of(stat: &[u8]) -> Option<i64> {
    // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // After ')': field 3 (state) is the first; field 22 is the 20th.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Make the forked keeper recognisable: its name (`ps -e`, `top`, `pgrep`) becomes
/// `hearth-keeper`, and its command line (`ps -f`, `pkill -f`) `hearth-keeper <task_id>`, so that
/// nobody mistakes it for (or kills it along with) the executor it was forked from. Best effort.
pub fn rename_process(task_id: &str) {
    let _ = nix::sys::prctl::set_name(c"hearth-keeper");
    // The command line lives in our own memory between `arg_start` and `arg_end`
    // (`/proc/self/stat` fields 48 and 49); rewrite it in place through `/proc/self/mem`.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    // After ')', field 3 is the first; fields 48 and 49 are the 46th and 47th.
    let mut fields = rest.split_ascii_whitespace().skip(45);
    let (Some(Ok(start)), Some(Ok(end))) = (
        fields.next().map(str::parse::<u64>),
        fields.next().map(str::parse::<u64>),
    ) else {
        return;
    };
    let Some(len) = end.checked_sub(start).and_then(|l| usize::try_from(l).ok()) else {
        return;
    };
    let mut title = format!("hearth-keeper {task_id}").into_bytes();
    title.truncate(len.saturating_sub(1));
    title.resize(len, 0);
    if let Ok(mut mem) = OpenOptions::new().write(true).open("/proc/self/mem") {
        use std::io::{Seek, SeekFrom};
        if mem.seek(SeekFrom::Start(start)).is_ok() {
            let _ = mem.write_all(&title);
        }
    }
}

/// Run the keeper until the executor asks it to shut down and no child is left. Returns the
/// process exit code. Runs in the process [`crate::spawn::fork_keeper`] forked from the executor.
///
/// `listener` is the keeper's socket, bound by the executor before the fork: the executor can
/// then connect at once, its connection waiting in the backlog until the keeper accepts it.
/// How often held exits are retried while the keeper stream cannot be written.
const HELD_RETRY: Duration = Duration::from_millis(250);

pub fn run(paths: &KeeperPaths, listener: UnixListener) -> i32 {
    match Keeper::start(paths, listener).and_then(|mut k| k.serve()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hearth keeper for {}: {e}", paths.task_id);
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

        let writer = if paths.stream.exists() {
            CheckpointWriter::open_append(&paths.stream).map(|(w, _)| w)
        } else {
            let header = RunnerHeader {
                task_id: paths.task_id.clone(),
                launch_time_ms: (now_secs() * 1000.0) as i64,
                ..RunnerHeader::default()
            };
            CheckpointWriter::create(&paths.stream, &header)
        }
        .map_err(io::Error::other)?;

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
                let _ = std::fs::remove_file(&self.paths.socket);
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

    fn accept(&mut self) {
        if let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            // A new executor replaces the old connection.
            self.client = Some((stream, Vec::new()));
        }
    }

    fn read_client(&mut self) -> io::Result<()> {
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
            eprintln!("hearth-keeper: cannot write spawn records yet: {e}");
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

    /// Start a batch of processes in three passes: prepare everything (argument vectors, log
    /// directories and files), fork them all back to back, then record them. Forking in a tight
    /// loop lets the keeper finish the batch before the new shells compete with it for the CPU.
    ///
    /// The fork pass writes as little of the keeper's memory as it can: after each fork every
    /// page the keeper writes is copied first (copy-on-write, shared with a child that has not
    /// exec'd yet), so it only stores a pid and a time per child into a vector allocated
    /// beforehand, and everything else — moving specs, closing the children's descriptors,
    /// freeing what was prepared — waits until the last fork.
    fn spawn_batch(&mut self, specs: Vec<SpawnSpec>) -> Vec<Reply> {
        let mut ready = Vec::with_capacity(specs.len());
        let mut replies: Vec<Option<Reply>> = Vec::with_capacity(specs.len());
        for spec in specs {
            match self.prepare_spawn(&spec) {
                Ok(Prep::Running(child)) => replies.push(Some(Reply::Spawned(child))),
                Ok(Prep::Ready(p)) => {
                    replies.push(None);
                    ready.push((replies.len() - 1, spec, p));
                }
                Err(error) => replies.push(Some(Reply::SpawnFailed {
                    process: spec.process,
                    run: spec.run,
                    error,
                })),
            }
        }
        let procs: Vec<RawFd> = self.cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
        let stdin = self.dev_null.as_raw_fd();
        let mut pids = Vec::with_capacity(ready.len());
        for (_, spec, p) in &ready {
            let fds = Fds {
                stdin,
                stdout: p.stdout.raw(),
                stderr: p.stderr.raw(),
                cgroup_procs: &procs,
            };
            let fork_time = now_secs();
            pids.push((fork_time, spawn::spawn(&spec.process, &p.exec, fds)));
        }
        for ((slot, spec, p), (fork_time, pid)) in ready.into_iter().zip(pids) {
            // The keeper's copies of the child's descriptors close here.
            let ReadySpawn { rotators, .. } = *p;
            replies[slot] = Some(match pid {
                Ok(pid) => self.record_spawn(&spec, pid, fork_time, rotators),
                Err(e) => Reply::SpawnFailed {
                    process: spec.process,
                    run: spec.run,
                    error: e.to_string(),
                },
            });
        }
        replies.into_iter().flatten().collect()
    }

    /// Everything a spawn needs before its fork, or the child already running for it.
    fn prepare_spawn(&mut self, spec: &SpawnSpec) -> Result<Prep, String> {
        if self.shutting_down {
            return Err("the keeper is shutting down".into());
        }
        if let Some(r) = self
            .children
            .values()
            .find(|r| r.child.process == spec.process && r.child.run == spec.run)
        {
            // Idempotent: a restarted executor may resend a spawn it never saw answered.
            return Ok(Prep::Running(r.child.clone()));
        }
        let ids = spec.credentials.as_ref().map(|c| Ids {
            uid: c.uid,
            gid: c.gid,
            groups: c.groups.clone(),
        });
        let owner = spec.credentials.as_ref().map(|c| (c.uid, c.gid));
        let (stdout, rot_out) = self.open_target(&spec.stdout, 1, owner)?;
        let (stderr, rot_err) = self.open_target(&spec.stderr, 2, owner)?;
        // Plain log files are created by the child itself (see `spawn::ChildLogs`).
        let file = |t: &LogTarget| match t {
            LogTarget::File { path } => Some(PathBuf::from(path)),
            _ => None,
        };
        let (out_path, err_path) = (file(&spec.stdout), file(&spec.stderr));
        let mut dirs: Vec<PathBuf> = Vec::new();
        for p in [&out_path, &err_path].into_iter().flatten() {
            for d in missing_dirs(p) {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
        let logs = ChildLogs::new(
            &spec.process,
            &dirs,
            out_path.as_deref(),
            err_path.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let exec = Prepared::new(&spec.process, &spec.argv, &spec.env, &spec.cwd, ids)
            .map_err(|e| e.to_string())?
            .with_logs(logs);
        Ok(Prep::Ready(Box::new(ReadySpawn {
            exec,
            stdout,
            stderr,
            rotators: [rot_out, rot_err].into_iter().flatten().collect(),
        })))
    }

    /// Record a forked child (written out at the end of the burst, durable at the next exit
    /// commit) and start supervising it.
    fn record_spawn(
        &mut self,
        spec: &SpawnSpec,
        pid: i32,
        fork_time: f64,
        rotators: Vec<Rotator>,
    ) -> Reply {
        let child = Child {
            process: spec.process.clone(),
            run: spec.run,
            pid,
            start_ticks: pid_start_ticks(pid),
            fork_time,
        };
        let appended = self.writer.append(&Record::Process(ProcessStatus {
            process: child.process.clone(),
            state: Some(ProcessState::Running),
            coordinator_pid: Some(std::process::id() as i32),
            fork_time: Some(fork_time),
            start_time: Some(fork_time),
            pid: Some(pid),
            run: Some(child.run as i32),
            pid_start_ticks: child.start_ticks,
            ..ProcessStatus::default()
        }));
        self.children.insert(
            pid,
            Running {
                child: child.clone(),
                rotators,
            },
        );
        match appended {
            Ok(()) => Reply::Spawned(child),
            // The child runs and is supervised; only its start could not be written down.
            Err(e) => Reply::SpawnFailed {
                process: spec.process.clone(),
                run: spec.run,
                error: format!("started as pid {pid}, but its record failed: {e}"),
            },
        }
    }

    /// Open the descriptor a child writes one stream to.
    fn open_target(
        &self,
        target: &LogTarget,
        inherit: RawFd,
        owner: Option<(u32, u32)>,
    ) -> Result<(TargetFd, Option<Rotator>), String> {
        match target {
            LogTarget::Inherit => Ok((TargetFd::Borrowed(self.console(inherit).as_raw_fd()), None)),
            LogTarget::Discard => Ok((TargetFd::Borrowed(self.dev_null.as_raw_fd()), None)),
            // The child opens it; until then its setup errors go to the keeper's own log.
            LogTarget::File { .. } => Ok((TargetFd::Borrowed(2), None)),
            LogTarget::Rotate {
                path,
                max_bytes,
                backups,
                console,
            } => {
                let console = console.then(|| self.console(inherit));
                let (rot, write_end) =
                    Rotator::new(Path::new(path), *max_bytes, *backups, owner, console)
                        .map_err(|e| format!("{path}: {e}"))?;
                Ok((TargetFd::Owned(write_end), Some(rot)))
            }
        }
    }

    /// The console descriptor for stream 1 or 2: the terminal (or pipe) the executor was started
    /// with — not the keeper's own log, which its stderr was redirected to.
    fn console(&self, stream: RawFd) -> std::os::fd::BorrowedFd<'_> {
        match stream {
            2 => self.console_err.as_fd(),
            _ => self.console_out.as_fd(),
        }
    }

    fn pump_rotator(&mut self, fd: RawFd) {
        let found = self
            .children
            .values_mut()
            .flat_map(|r| r.rotators.iter_mut())
            .chain(self.orphan_rotators.iter_mut())
            .find(|r| r.fd() == fd);
        if let Some(r) = found {
            r.pump();
        }
        self.orphan_rotators.retain(|r| !r.is_closed());
    }

    fn drain_orphan_rotators(&mut self) {
        for r in &mut self.orphan_rotators {
            r.pump();
        }
        self.orphan_rotators.clear();
    }

    /// Reap every exited child; write their exits with one fsync; then tell the executor.
    fn reap(&mut self) -> io::Result<()> {
        while let Ok(Some(_)) = self.signals.read_signal() {}
        let mut exits = Vec::new();
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            // Orphans re-parented to us (double-forked daemons) are reaped and forgotten.
            let Some(mut running) = self.children.remove(&pid.as_raw()) else {
                continue;
            };
            for mut r in running.rotators.drain(..) {
                r.pump();
                if !r.is_closed() {
                    self.orphan_rotators.push(r);
                }
            }
            let exit = Exit {
                child: running.child,
                status,
                stop_time: now_secs(),
            };
            let (state, return_code, signal) = match status {
                ExitStatus::Code(0) => (ProcessState::Success, 0, None),
                ExitStatus::Code(c) => (ProcessState::Failed, c, None),
                ExitStatus::Signal(s) => (ProcessState::Killed, 128 + s, Some(s)),
            };
            self.writer
                .append(&Record::Process(ProcessStatus {
                    process: exit.child.process.clone(),
                    state: Some(state),
                    pid: Some(pid.as_raw()),
                    stop_time: Some(exit.stop_time),
                    return_code: Some(return_code),
                    signal,
                    run: Some(exit.child.run as i32),
                    ..ProcessStatus::default()
                }))
                .map_err(io::Error::other)?;
            exits.push(exit);
        }
        self.held.extend(exits);
        self.flush_held();
        Ok(())
    }

    /// Make the held exits durable, then tell the executor. A failing disk (full, read-only)
    /// does not end the keeper: the exits stay held, a partial frame is cut back, and the serve
    /// loop retries every [`HELD_RETRY`].
    fn flush_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if self.writer.is_poisoned()
            && let Err(e) = self.writer.recover()
        {
            eprintln!("hearth-keeper: cannot reopen the keeper stream yet: {e}");
            return;
        }
        if let Err(e) = self.writer.commit() {
            eprintln!("hearth-keeper: cannot write exits yet, holding them: {e}");
            let _ = self.writer.recover();
            return;
        }
        let exits = std::mem::take(&mut self.held);
        for e in &exits {
            self.send(&Reply::Exited(e.clone()));
        }
        self.unacked.extend(exits);
    }

    fn send(&mut self, reply: &Reply) {
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

/// A spawn ready to fork.
struct ReadySpawn {
    exec: Prepared,
    stdout: TargetFd,
    stderr: TargetFd,
    rotators: Vec<Rotator>,
}

enum Prep {
    Ready(Box<ReadySpawn>),
    Running(Child),
}

/// A descriptor for the child's stdout/stderr: ours to close, or borrowed.
enum TargetFd {
    Owned(OwnedFd),
    Borrowed(RawFd),
}

impl TargetFd {
    fn raw(&self) -> RawFd {
        match self {
            TargetFd::Owned(f) => f.as_raw_fd(),
            TargetFd::Borrowed(fd) => *fd,
        }
    }
}

/// The parent pid and process group of `pid` (`/proc/<pid>/stat` fields 4 and 5).
fn parent_and_group(pid: i32) -> Option<(i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(1);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

/// Signal the process group led by `pid`, or `pid` alone when it leads no group. Each process
/// gets the signal once.
fn signal_group(pid: i32, sig: Signal) -> bool {
    let p = Pid::from_raw(pid);
    nix::sys::signal::killpg(p, sig).is_ok() || nix::sys::signal::kill(p, sig).is_ok()
}

/// The directories above `file` that do not exist yet, outermost first.
fn missing_dirs(file: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    missing.reverse();
    missing
}

/// Open a log file for appending, creating its directory, owned by the task's user.
pub(crate) fn open_log(path: &Path, owner: Option<(u32, u32)>) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        create_dirs_owned(dir, owner)?;
    }
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    Ok(f)
}

/// `mkdir -p` that chowns the directories it creates.
pub(crate) fn create_dirs_owned(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_owned(parent, owner)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Close every descriptor above 2 except `keep` (the keeper is forked from the executor and must
/// not hold its lock file, its checkpoint writer or its sockets).
fn close_inherited_fds(keep: &[RawFd]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        let _ = nix::unistd::close(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_are_field_22_even_when_the_command_name_holds_spaces_and_parens() {
        let line = b"4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                     987654 1000 200 18446744073709551615";
        assert_eq!(start_ticks_of(line), Some(987_654));
        assert_eq!(start_ticks_of(b"4242 (short) S 1 2"), None);
        assert_eq!(start_ticks_of(b"no parenthesis at all"), None);
    }

    #[test]
    fn pid_start_ticks_reads_a_live_process_and_nothing_for_a_missing_one() {
        let me = std::process::id() as i32;
        let stat = std::fs::read(format!("/proc/{me}/stat")).unwrap_or_default();
        assert!(pid_start_ticks(me).is_some());
        assert_eq!(pid_start_ticks(me), start_ticks_of(&stat));
        assert_eq!(pid_start_ticks(i32::MAX), None);
    }
}
