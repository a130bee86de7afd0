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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

/// Tracks the snooze file and reports its transitions.
#[derive(Debug)]
pub struct SnoozeWatch {
    path: PathBuf,
    /// The version of the file last parsed, with what it said.
    seen: Option<(Stamp, SnoozeSpec)>,
    active: bool,
}

impl SnoozeWatch {
    pub fn new(sandbox: &Path) -> Self {
        SnoozeWatch {
            path: sandbox.join(SNOOZE_FILE),
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

    /// Look at the file at wall-clock time `now_ms`; returns the transition, if any. Blocking (a
    /// stat, and a small read when the file changed).
    #[allow(clippy::disallowed_methods)] // the health loop calls it through spawn_blocking
    pub fn poll(&mut self, now_ms: i64) -> Option<HealthEvent> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) if !m.is_dir() => m,
            Ok(_) => return self.gone(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.gone(),
            Err(e) => {
                // Exists or not, we cannot tell: err on the side of the operator's snooze.
                let spec = SnoozeSpec {
                    expires_ms: None,
                    warning: Some(format!("unreadable file: {e}; snoozed until it is removed")),
                };
                let stamp = Stamp {
                    ino: 0,
                    len: 0,
                    mtime_ns: 0,
                };
                return self.present(stamp, spec, now_ms);
            }
        };
        let stamp = Stamp {
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        };
        let spec = match &self.seen {
            Some((s, spec)) if *s == stamp => spec.clone(),
            _ => read_spec(
                &self.path,
                meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000,
            ),
        };
        self.present(stamp, spec, now_ms)
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

    fn present(&mut self, stamp: Stamp, spec: SnoozeSpec, now_ms: i64) -> Option<HealthEvent> {
        let changed = self.seen.as_ref().is_none_or(|(s, _)| *s != stamp);
        let expired = spec.expires_ms.is_some_and(|at| at <= now_ms);
        let event = match (self.active, expired, changed) {
            (true, true, _) => {
                self.active = false;
                Some(HealthEvent::SnoozeEnded {
                    detail: "expired".into(),
                })
            }
            (false, false, _) => {
                self.active = true;
                let detail = spec
                    .warning
                    .clone()
                    .unwrap_or_else(|| "file created".into());
                Some(HealthEvent::SnoozeStarted {
                    expires_ms: spec.expires_ms,
                    detail,
                })
            }
            (true, false, true) => Some(HealthEvent::SnoozeStarted {
                expires_ms: spec.expires_ms,
                detail: spec
                    .warning
                    .clone()
                    .unwrap_or_else(|| "file changed".into()),
            }),
            _ => None,
        };
        // An expired version stays "seen": it must not restart the snooze on the next poll.
        self.seen = Some((stamp, spec));
        event
    }
}

/// Read and parse the file; any failure to read becomes a warning, never an error.
#[allow(clippy::disallowed_methods)] // reached from `SnoozeWatch::poll` only
fn read_spec(path: &Path, mtime_ms: i64) -> SnoozeSpec {
    let mut text = String::new();
    let read =
        fs::File::open(path).and_then(|f| f.take(MAX_SNOOZE_BYTES).read_to_string(&mut text));
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
