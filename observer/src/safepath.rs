//! Path safety: turning a path taken from a URL into a file inside a task's sandbox, or refusing.
//!
//! The rules, in the order they are applied:
//!
//! 1. The relative path is checked as text: no NUL byte, not absolute, no `..` component. (The
//!    router has already percent-decoded it once; a double-encoded `%252e%252e` stays a literal
//!    name and simply does not exist.) Empty and `.` components are dropped.
//! 2. The base (the sandbox, or the log directory) is resolved with `realpath`, and so is the
//!    joined path, which resolves every symlink on the way.
//! 3. The resolved path must lie under the resolved base, compared **component by component**
//!    (`/sandbox-other` is not under `/sandbox`).
//! 4. When a file is opened, the open descriptor is checked once more through `/proc/self/fd`,
//!    so a symlink swapped in between the check and the open is caught too.
//!
//! Anything refused is [`PathError::Refused`] (HTTP 403); a path that passes the checks but does
//! not exist is [`PathError::NotFound`] (HTTP 404). Neither carries any byte of the file.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

/// Why a path was not served.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The path is malformed or leads outside its base.
    #[error("path {path:?} refused: {reason}")]
    Refused { path: String, reason: &'static str },
    /// The path is acceptable but nothing is there.
    #[error("no such file: {path:?}")]
    NotFound { path: String },
    /// The base directory itself cannot be resolved.
    #[error("cannot resolve directory {base}")]
    Base {
        base: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading the file's metadata or opening it failed for another reason.
    #[error("cannot open {path:?}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn refused(path: &str, reason: &'static str) -> PathError {
    PathError::Refused {
        path: path.to_owned(),
        reason,
    }
}

/// Check a relative path as text (rule 1) and return its normal components.
pub fn components(rel: &str) -> Result<Vec<&str>, PathError> {
    if rel.contains('\0') {
        return Err(refused(rel, "contains a NUL byte"));
    }
    if rel.starts_with('/') {
        return Err(refused(rel, "is absolute"));
    }
    let mut out = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(refused(rel, "contains a '..' component")),
            p => out.push(p),
        }
    }
    // Paranoia: what the OS would make of the joined components must be normal names only.
    let joined: PathBuf = out.iter().collect();
    if joined
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(refused(rel, "is not a plain relative path"));
    }
    Ok(out)
}

/// Resolve `base` (rule 2). The result is absolute and free of symlinks.
pub fn resolve_base(base: &Path) -> Result<PathBuf, PathError> {
    std::fs::canonicalize(base).map_err(|source| PathError::Base {
        base: base.to_owned(),
        source,
    })
}

/// Resolve `rel` under the already resolved `base` (rules 1–3). Returns the resolved path.
pub fn resolve_within(base: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let parts = components(rel)?;
    let mut joined = base.to_path_buf();
    joined.extend(parts);
    let real = match std::fs::canonicalize(&joined) {
        Ok(p) => p,
        Err(e) if is_missing(&e) => {
            return Err(PathError::NotFound {
                path: rel.to_owned(),
            });
        }
        Err(source) => {
            return Err(PathError::Io {
                path: rel.to_owned(),
                source,
            });
        }
    };
    if !real.starts_with(base) {
        return Err(refused(rel, "leads outside the sandbox"));
    }
    Ok(real)
}

fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) || e.raw_os_error() == Some(libc::ELOOP)
}

/// Open the regular file `rel` under the resolved `base` for reading (rules 1–4).
pub fn open_file(base: &Path, rel: &str) -> Result<(File, PathBuf), PathError> {
    let real = resolve_within(base, rel)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&real)
        .map_err(|e| {
            if is_missing(&e) {
                PathError::NotFound {
                    path: rel.to_owned(),
                }
            } else {
                PathError::Io {
                    path: rel.to_owned(),
                    source: e,
                }
            }
        })?;
    let opened =
        std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|source| {
            PathError::Io {
                path: rel.to_owned(),
                source,
            }
        })?;
    if !opened.starts_with(base) {
        return Err(refused(rel, "changed to lead outside the sandbox"));
    }
    let meta = file.metadata().map_err(|source| PathError::Io {
        path: rel.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(PathError::NotFound {
            path: rel.to_owned(),
        });
    }
    Ok((file, real))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn textual_checks_refuse_nul_absolute_and_dotdot() {
        for bad in ["/etc/passwd", "a/../../b", "..", "a\0b", "x/.."] {
            assert!(
                matches!(components(bad), Err(PathError::Refused { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(components("a//./b/").ok(), Some(vec!["a", "b"]));
        assert_eq!(
            components("..hidden/x..").ok(),
            Some(vec!["..hidden", "x.."])
        );
    }

    #[test]
    fn sibling_with_a_common_prefix_is_outside() -> TestResult {
        let dir = tempfile::tempdir()?;
        let sandbox = dir.path().join("sb");
        let sibling = dir.path().join("sb-other");
        std::fs::create_dir_all(&sandbox)?;
        std::fs::create_dir_all(&sibling)?;
        std::fs::write(sibling.join("secret"), "x")?;
        std::os::unix::fs::symlink(&sibling, sandbox.join("link"))?;
        let base = resolve_base(&sandbox)?;
        assert!(matches!(
            resolve_within(&base, "link/secret"),
            Err(PathError::Refused { .. })
        ));
        Ok(())
    }

    #[test]
    fn symlink_inside_the_sandbox_is_followed() -> TestResult {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("d"))?;
        std::fs::write(dir.path().join("d/f"), "hello")?;
        std::os::unix::fs::symlink("d/f", dir.path().join("alias"))?;
        let base = resolve_base(dir.path())?;
        let (_, real) = open_file(&base, "alias")?;
        assert_eq!(real, base.join("d/f"));
        Ok(())
    }
}
