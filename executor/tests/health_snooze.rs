//! Snooze-file parsing and transitions, on real files.
#![allow(clippy::unwrap_used)]
// A test thread, not the executor's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use hearth_executor::health::snooze::{parse_duration, parse_rfc3339_ms, parse_snooze};
use hearth_executor::health::{HealthEvent, SNOOZE_FILE, SnoozeWatch};

#[test]
fn rfc3339_times_parse_to_epoch_ms() {
    assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339_ms("2000-03-01T00:00:00Z"),
        Some(951_868_800_000)
    );
    assert_eq!(
        parse_rfc3339_ms("2024-02-29T12:00:00.25+02:00"),
        Some(1_709_200_800_250)
    );
    assert_eq!(
        parse_rfc3339_ms("2024-02-29 10:00:00.250z"),
        Some(1_709_200_800_250)
    );
    assert_eq!(parse_rfc3339_ms("1969-12-31T23:00:00-01:00"), Some(0));
    for bad in [
        "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z",
        "2024-01-01T24:00:00Z",
        "2024-01-01T00:00:00",
        "2024-01-01T00:00:00+0200",
        "2024-01-01",
        "tomorrow",
    ] {
        assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
    }
}

#[test]
fn durations_parse_with_units_and_combinations() {
    assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("1d"), Some(Duration::from_secs(86_400)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
    for bad in ["", "m", "5x", "1.5h", "-3m", "3 m"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn snooze_content_sets_expiry_or_warns() {
    let mtime = 1_000_000;
    assert_eq!(parse_snooze("  \n", mtime).expires_ms, None);
    assert_eq!(
        parse_snooze("30m\n", mtime).expires_ms,
        Some(mtime + 1_800_000)
    );
    assert_eq!(
        parse_snooze("1970-01-01T00:00:10Z", mtime).expires_ms,
        Some(10_000)
    );
    let malformed = parse_snooze("until the coffee is ready", mtime);
    assert_eq!(malformed.expires_ms, None);
    assert!(malformed.warning.unwrap().starts_with("malformed file: "));
}

#[test]
fn duration_snooze_starts_expires_and_restarts_when_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SNOOZE_FILE);
    let mut watch = SnoozeWatch::new(dir.path());
    assert_eq!(watch.poll(0), None, "no file, no snooze");
    std::fs::write(&path, "90s").unwrap();
    let mtime = std::fs::metadata(&path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let now = mtime + 1000;
    assert_eq!(
        watch.poll(now),
        Some(HealthEvent::SnoozeStarted {
            expires_ms: Some(mtime + 90_000),
            detail: "file created".into()
        })
    );
    assert!(watch.is_active());
    assert_eq!(watch.poll(now + 1000), None);
    assert_eq!(
        watch.poll(mtime + 90_000),
        Some(HealthEvent::SnoozeEnded {
            detail: "expired".into()
        })
    );
    assert!(!watch.is_active());
    assert_eq!(
        watch.poll(mtime + 100_000),
        None,
        "an expired file stays expired"
    );
    // Rewritten with an absolute time in the far future: snoozed again.
    std::fs::write(&path, "2999-01-01T00:00:00Z").unwrap();
    assert!(matches!(
        watch.poll(mtime + 100_000),
        Some(HealthEvent::SnoozeStarted {
            expires_ms: Some(_),
            ..
        })
    ));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        watch.poll(mtime + 100_000),
        Some(HealthEvent::SnoozeEnded {
            detail: "file removed".into()
        })
    );
}

#[test]
fn malformed_or_unreadable_snooze_file_snoozes_without_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SNOOZE_FILE);
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    let mut watch = SnoozeWatch::new(dir.path());
    match watch.poll(0) {
        Some(HealthEvent::SnoozeStarted { expires_ms, detail }) => {
            assert_eq!(expires_ms, None);
            assert!(detail.starts_with("malformed file: "), "{detail}");
        }
        other => panic!("expected a snooze start, got {other:?}"),
    }
    assert!(watch.is_active());
    assert_eq!(watch.expires_ms(), None);
}

#[test]
fn sandbox_made_after_the_watch_is_watched_once_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("sandbox");
    let mut watch = SnoozeWatch::new(&sandbox);
    assert_eq!(watch.poll(0), None, "no sandbox, no snooze");
    std::fs::create_dir(&sandbox).unwrap();
    assert_eq!(watch.poll(0), None);
    std::fs::write(sandbox.join(SNOOZE_FILE), "").unwrap();
    assert_eq!(
        watch.poll(0),
        Some(HealthEvent::SnoozeStarted {
            expires_ms: None,
            detail: "file created".into()
        })
    );
    assert_eq!(watch.poll(0), None, "unchanged: no new event");
}
