//! The health-check snooze file, `<sandbox>/.healthchecksnooze`.
//!
//! While the file exists, health checks are not run and count as successes (see
//! [`super::algorithm`]). Its content may say when the snooze ends by itself:
//!
//! * empty (or only whitespace): no expiry — the snooze lasts until the file is removed;
//! * an RFC 3339 time (`2030-01-02T03:04:05Z`, `2030-01-02 03:04:05.5+02:00`): ends then;
//! * a duration (`90s`, `30m`, `2h`, `1d`, combined as `1h30m`; a bare number is seconds): ends
//!   that long after the file's modification time, so `touch` renews it.
//!
//! A file that cannot be read or parsed means "snoozed, no expiry", with a warning in the
//! event's detail (`malformed file: ...`). It never stops the checker.
//!
//! [`SnoozeWatch::poll`] turns the file's appearance, changes, expiry and removal into
//! [`HealthEvent::SnoozeStarted`] / [`HealthEvent::SnoozeEnded`]. A snooze whose expiry has
//! already passed when the file is first seen starts nothing. Rewriting the file while snoozed
//! reports a new start (detail `file changed`) with the new expiry.

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::HealthEvent;

/// File name of the snooze file inside the sandbox.
pub const SNOOZE_FILE: &str = ".healthchecksnooze";

/// At most this much of the file is read.
const MAX_SNOOZE_BYTES: u64 = 4096;

/// What a snooze file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnoozeSpec {
    /// When the snooze ends by itself, in ms since the Unix epoch; `None`: when the file goes.
    pub expires_ms: Option<i64>,
    /// Set when the content could not be understood (the snooze then has no expiry).
    pub warning: Option<String>,
}

/// Parse the content of a snooze file whose modification time is `mtime_ms`.
pub fn parse_snooze(content: &str, mtime_ms: i64) -> SnoozeSpec {
    let text = content.trim();
    if text.is_empty() {
        return SnoozeSpec {
            expires_ms: None,
            warning: None,
        };
    }
    if let Some(at) = parse_rfc3339_ms(text) {
        return SnoozeSpec {
            expires_ms: Some(at),
            warning: None,
        };
    }
    if let Some(d) = parse_duration(text) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return SnoozeSpec {
            expires_ms: Some(mtime_ms.saturating_add(ms)),
            warning: None,
        };
    }
    let shown: String = text.chars().take(64).collect();
    SnoozeSpec {
        expires_ms: None,
        warning: Some(format!(
            "malformed file: {shown:?} is neither an RFC 3339 time nor a duration; snoozed until \
             the file is removed"
        )),
    }
}

/// Parse a duration such as `90s`, `30m`, `2h`, `1d`, `1h30m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    parse_duration_units(text, false)
}

/// [`parse_duration`], also taking milliseconds (`500ms`, `1s500ms`) when `with_ms`: the one
/// duration parser of the command line's flags and of the snooze file (which takes whole
/// seconds only).
pub fn parse_duration_units(text: &str, with_ms: bool) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u64>().ok().map(Duration::from_secs);
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" if with_ms => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ms = total_ms.checked_add(value.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parse an RFC 3339 date-time (`T`, `t` or a space between date and time; `Z`, `z` or a
/// numeric offset) into ms since the Unix epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = b.get(from..from + len)?;
        if !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if at(i, b".") {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds from the first three digits; the rest is below our resolution.
        let mut ms = 0;
        for k in 0..3 {
            ms = ms * 10 + if k < digits { num(i + 1 + k, 1)? } else { 0 };
        }
        millis = ms;
        i += 1 + digits;
    }
    let offset_minutes = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && at(i + 3, b":") => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let total = h * 60 + m;
            if *sign == b'-' { -total } else { total }
        }
        _ => return None,
    };
    // A leap second (:60) is read as the last instant of its minute.
    let second = second.min(59);
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(secs * 1000 + millis)
}

/// Identity of one version of the file: changes when it is rewritten or touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

/// The stamp of a file that could not be looked at.
const NO_STAMP: Stamp = Stamp {
    ino: 0,
    len: 0,
    mtime_ns: 0,
};

/// Tracks the snooze file and reports its transitions.
///
/// The sandbox directory is opened once (an `O_PATH` descriptor, at the first look) and the
/// file is looked at with one `fstatat` of its name under it: no path walk per check. The file
/// is read only when that stat differs from the last one (it appeared, or its inode, size or
/// modification time changed).
#[derive(Debug)]
pub struct SnoozeWatch {
    sandbox: PathBuf,
    path: PathBuf,
    /// The sandbox directory, once opened.
    dir: Option<Arc<OwnedFd>>,
    /// The version of the file last parsed, with what it said.
    seen: Option<(Stamp, SnoozeSpec)>,
    active: bool,
}

/// A snooze file that changed and must be read: [`SnoozeRead::read`] (blocking), then
/// [`SnoozeWatch::apply`].
#[derive(Debug)]
pub struct SnoozeRead {
    dir: Arc<OwnedFd>,
    stamp: Stamp,
    mtime_ms: i64,
}

impl SnoozeRead {
    /// Read and parse the file. Blocking (a small read); any failure to read becomes a
    /// warning, never an error.
    pub fn read(self) -> (Stamp, SnoozeSpec) {
        (self.stamp, read_spec(&self.dir, self.mtime_ms))
    }
}

/// What one stat found.
enum Look {
    Gone,
    /// There, and not a directory.
    Present(Stamp, i64),
    /// Could not tell whether it is there: why.
    Unknown(std::io::Error),
}

impl SnoozeWatch {
    /// Watch `<sandbox>/.healthchecksnooze`. Nothing is opened yet.
    pub fn new(sandbox: &Path) -> Self {
        SnoozeWatch {
            sandbox: sandbox.to_owned(),
            path: sandbox.join(SNOOZE_FILE),
            dir: None,
            seen: None,
            active: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether checks are snoozed (as of the last [`poll`](Self::poll)).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// When the current snooze ends by itself, if it is active and has an expiry.
    pub fn expires_ms(&self) -> Option<i64> {
        if !self.active {
            return None;
        }
        self.seen.as_ref().and_then(|(_, spec)| spec.expires_ms)
    }

    /// Look at the file at wall-clock time `now_ms`; returns the transition, if any. Blocking
    /// (a stat, and a small read when the file changed): [`look`](Self::look) and
    /// [`apply`](Self::apply) split it for a caller that must not block on the read.
    pub fn poll(&mut self, now_ms: i64) -> Option<HealthEvent> {
        match self.look(now_ms) {
            Ok(event) => event,
            Err(read) => {
                let found = read.read();
                self.apply(found, now_ms)
            }
        }
    }

    /// Stat the file at wall-clock time `now_ms`: `Ok` with the transition, if any, when that
    /// was enough; `Err` with what to read when the file changed.
    ///
    /// It does block, but only for one `fstatat` of one name in an open directory (and, the
    /// first time, one `open` of the sandbox): as cheap as the system calls the runtime makes
    /// anyway, so it is run in place rather than on the blocking pool.
    pub fn look(&mut self, now_ms: i64) -> Result<Option<HealthEvent>, SnoozeRead> {
        let look = match open_dir(&mut self.dir, &self.sandbox) {
            Ok(dir) => match stat_snooze(dir) {
                Look::Present(stamp, mtime_ms)
                    if self.seen.as_ref().is_none_or(|(seen, _)| *seen != stamp) =>
                {
                    return Err(SnoozeRead {
                        dir: Arc::clone(dir),
                        stamp,
                        mtime_ms,
                    });
                }
                look => look,
            },
            Err(look) => look,
        };
        Ok(match look {
            Look::Gone => self.gone(),
            // The version already parsed.
            Look::Present(..) => self.transition(false, now_ms),
            Look::Unknown(e) => {
                // Exists or not, we cannot tell: err on the side of the operator's snooze.
                let spec = SnoozeSpec {
                    expires_ms: None,
                    warning: Some(format!("unreadable file: {e}; snoozed until it is removed")),
                };
                self.apply((NO_STAMP, spec), now_ms)
            }
        })
    }

    fn gone(&mut self) -> Option<HealthEvent> {
        self.seen = None;
        if self.active {
            self.active = false;
            return Some(HealthEvent::SnoozeEnded {
                detail: "file removed".into(),
            });
        }
        None
    }

    /// Take in what a version of the file says (from [`SnoozeRead::read`]) at wall-clock time
    /// `now_ms`; returns the transition, if any.
    pub fn apply(&mut self, found: (Stamp, SnoozeSpec), now_ms: i64) -> Option<HealthEvent> {
        let changed = self.seen.as_ref().is_none_or(|(seen, _)| *seen != found.0);
        // An expired version stays "seen": it must not restart the snooze on the next poll.
        self.seen = Some(found);
        self.transition(changed, now_ms)
    }

    /// The transition the version in `seen` makes at `now_ms`; `changed` when it was just read.
    fn transition(&mut self, changed: bool, now_ms: i64) -> Option<HealthEvent> {
        let (_, spec) = self.seen.as_ref()?;
        let expired = spec.expires_ms.is_some_and(|at| at <= now_ms);
        let started = |default: &str| HealthEvent::SnoozeStarted {
            expires_ms: spec.expires_ms,
            detail: spec.warning.clone().unwrap_or_else(|| default.into()),
        };
        let (active, event) = match (self.active, expired, changed) {
            (true, true, _) => (
                false,
                Some(HealthEvent::SnoozeEnded {
                    detail: "expired".into(),
                }),
            ),
            (false, false, _) => (true, Some(started("file created"))),
            (true, false, true) => (true, Some(started("file changed"))),
            (active, _, _) => (active, None),
        };
        self.active = active;
        event
    }
}

/// The sandbox's descriptor in `slot`, opened (`O_PATH`) when it is not yet; when it cannot be,
/// what that says of the snooze file.
fn open_dir<'a>(
    slot: &'a mut Option<Arc<OwnedFd>>,
    sandbox: &Path,
) -> Result<&'a Arc<OwnedFd>, Look> {
    if let Some(dir) = slot {
        return Ok(dir);
    }
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::open(sandbox, flags, Mode::empty()) {
        Ok(fd) => Ok(slot.insert(Arc::new(fd))),
        // No sandbox (yet), no snooze; it is opened again at the next look.
        Err(Errno::NOENT) => Err(Look::Gone),
        Err(e) => Err(Look::Unknown(e.into())),
    }
}

/// One stat of the snooze file's name under the sandbox's descriptor.
fn stat_snooze(dir: &OwnedFd) -> Look {
    match rustix::fs::statat(dir, SNOOZE_FILE, AtFlags::empty()) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Look::Gone,
        Ok(st) => {
            let secs = st.st_mtime;
            // Below 10^9: always fits.
            let nanos = i64::try_from(st.st_mtime_nsec).unwrap_or(0);
            let stamp = Stamp {
                ino: st.st_ino,
                len: u64::try_from(st.st_size).unwrap_or(0),
                mtime_ns: i128::from(secs) * 1_000_000_000 + i128::from(nanos),
            };
            Look::Present(stamp, secs * 1000 + nanos / 1_000_000)
        }
        Err(Errno::NOENT) => Look::Gone,
        Err(e) => Look::Unknown(e.into()),
    }
}

/// Read and parse the file under the sandbox's descriptor; any failure to read becomes a
/// warning, never an error. Blocking: reached through [`SnoozeRead::read`] only.
fn read_spec(dir: &OwnedFd, mtime_ms: i64) -> SnoozeSpec {
    let mut text = String::new();
    let read = rustix::fs::openat(
        dir,
        SNOOZE_FILE,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .and_then(|fd| {
        fs::File::from(fd)
            .take(MAX_SNOOZE_BYTES)
            .read_to_string(&mut text)
    });
    match read {
        Ok(_) => parse_snooze(&text, mtime_ms),
        Err(e) => SnoozeSpec {
            expires_ms: None,
            warning: Some(format!(
                "malformed file: cannot read it ({e}); snoozed until it is removed"
            )),
        },
    }
}
