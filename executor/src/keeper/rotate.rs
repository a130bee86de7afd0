//! Log rotation for processes whose logger mode is `rotate`.
//!
//! The process writes into a pipe; the keeper reads it whenever it is readable and appends to
//! `path`. When `path` would grow past `max_bytes`, it is renamed to `path.1` (older backups shift
//! to `path.2` ... `path.<backups>`, the oldest is dropped) and a fresh `path` is started. The newest
//! bytes are never lost and the total is bounded by `(backups + 1) * max_bytes`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::open_log;

#[derive(Debug)]
pub struct Rotator {
    pipe: File,
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    backups: u32,
    owner: Option<(u32, u32)>,
    closed: bool,
    /// Also gets every byte (logger destination `both`): a duplicate of the console.
    console: Option<File>,
}

impl Rotator {
    /// Open `path` and a pipe; return the rotator and the pipe's write end for the child.
    pub fn new(
        path: &Path,
        max_bytes: u64,
        backups: u32,
        owner: Option<(u32, u32)>,
        console: Option<BorrowedFd<'_>>,
    ) -> io::Result<(Rotator, OwnedFd)> {
        let console = console
            .map(|fd| fd.try_clone_to_owned().map(File::from))
            .transpose()?;
        let file = open_log(path, owner)?;
        let written = file.metadata()?.len();
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        rustix::io::ioctl_fionbio(&read, true)?;
        Ok((
            Rotator {
                pipe: File::from(read),
                path: path.to_path_buf(),
                file,
                written,
                max_bytes: max_bytes.max(1),
                backups,
                owner,
                closed: false,
                console,
            },
            write,
        ))
    }

    pub fn fd(&self) -> RawFd {
        self.pipe.as_raw_fd()
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    /// Whether every writer has closed the pipe and everything was copied.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Copy whatever the pipe holds into the log, rotating as needed. Never blocks.
    pub fn pump(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.pipe.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    return;
                }
                Ok(n) => {
                    if let Some(console) = &mut self.console {
                        let _ = console.write_all(&buf[..n]);
                    }
                    if self.write(&buf[..n]).is_err() {
                        // A full disk must not stall the process: the bytes are dropped, the pipe
                        // keeps draining, and the next write tries again.
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let room = self.max_bytes.saturating_sub(self.written);
            if room == 0 {
                self.rotate()?;
                continue;
            }
            let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            self.file.write_all(&data[..n])?;
            self.written += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let name = |i: u32| -> PathBuf {
            let mut s = self.path.clone().into_os_string();
            s.push(format!(".{i}"));
            PathBuf::from(s)
        };
        if self.backups == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(name(self.backups));
            for i in (1..self.backups).rev() {
                let from = name(i);
                if from.exists() {
                    std::fs::rename(&from, name(i + 1))?;
                }
            }
            std::fs::rename(&self.path, name(1))?;
        }
        self.file = open_log(&self.path, self.owner)?;
        self.written = 0;
        Ok(())
    }
}
