//! Human output of the client commands: aligned tables, times, and the error convention
//! (`hearth: <what went wrong and what to do>` on stderr, exit 1; 2 for usage and invalid
//! configs).

use std::fmt::Write as _;
use std::process::ExitCode;

/// An error that is the user's to fix before anything was sent (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Print the error chain once and pick the exit status.
pub fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("hearth: {e:#}");
    if e.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// Run a command body, printing its error.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Columns separated by two spaces, each as wide as its widest cell; the last is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<pad$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2026-12-02 01:23:45Z` for a time in milliseconds since the epoch.
pub fn fmt_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// `in 12s`, `3m ago`, `now`.
pub fn fmt_relative(ms: i64, now: i64) -> String {
    let delta = ms - now;
    let span = fmt_span(delta.unsigned_abs());
    if delta.unsigned_abs() < 1000 {
        "now".to_owned()
    } else if delta > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// `850ms`, `12s`, `3m10s`, `2h5m`, `3d4h`.
pub fn fmt_span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d{}h", s / 86_400, (s / 3600) % 24),
    }
}

/// `1.5 GiB`, `512 MiB`, `100 B`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Gregorian year, month, day of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_leave_the_last_unpadded() {
        let t = table(
            &["A", "LONGER", "C"],
            &[
                vec!["x".into(), "y".into(), "z".into()],
                vec!["wide cell".into(), "".into(), "last".into()],
            ],
        );
        assert_eq!(
            t,
            "A          LONGER  C\nx          y       z\nwide cell          last\n"
        );
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_time(1_795_999_425_000), "2026-11-30 00:43:45Z");
        assert_eq!(fmt_relative(13_500, 1_000), "in 12s");
        assert_eq!(fmt_relative(1_000, 191_000), "3m10s ago");
        assert_eq!(fmt_relative(1_000, 1_400), "now");
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(fmt_bytes(100), "100 B");
        assert_eq!(fmt_bytes(8 << 30), "8 GiB");
        assert_eq!(fmt_bytes(1536 << 20), "1.5 GiB");
    }
}
