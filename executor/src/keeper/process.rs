//! Small process and file helpers of the keeper (and of the executor that forks it): times,
//! `/proc/<pid>/stat` fields, the keeper's process title, log files and directories created for
//! the task's user, and the descriptors a forked keeper must not keep.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
    let Ok(mut mem) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
    else {
        return;
    };
    // Only when that memory holds our own arguments: under a program that runs us inside its
    // own process (valgrind), it holds that program's, which it passes on at every exec.
    let mut now = vec![0; len];
    if mem.seek(SeekFrom::Start(start)).is_err()
        || mem.read_exact(&mut now).is_err()
        || now != own_arguments()
        || mem.seek(SeekFrom::Start(start)).is_err()
    {
        return;
    }
    let _ = mem.write_all(&title);
}

/// This process's arguments as the kernel lays them out: each followed by a NUL.
fn own_arguments() -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    for arg in std::env::args_os() {
        out.extend_from_slice(arg.as_bytes());
        out.push(0);
    }
    out
}

/// The parent pid and process group of `pid` (`/proc/<pid>/stat` fields 4 and 5).
pub(super) fn parent_and_group(pid: i32) -> Option<(i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(1);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
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
pub(super) fn close_inherited_fds(keep: &[RawFd]) {
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
    fn the_command_line_becomes_hearth_keeper_and_the_task_id() -> Result<(), std::io::Error> {
        // The kernel's command line is what the guard compares against before rewriting it.
        assert_eq!(std::fs::read("/proc/self/cmdline")?, own_arguments());
        rename_process("t1");
        let cmdline = std::fs::read("/proc/self/cmdline")?;
        assert!(
            cmdline.starts_with(b"hearth-keeper t1\0"),
            "{:?}",
            String::from_utf8_lossy(&cmdline)
        );
        Ok(())
    }

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
