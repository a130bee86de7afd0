//! The disk monitor on a real directory.
#![allow(clippy::unwrap_used)]
// A test thread, not the executor's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use hearth_executor::disk::{self, DiskEvent};

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test]
async fn file_written_past_the_limit_is_detected_within_5_seconds() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join(".logs/proc/0"))?;
    std::fs::write(dir.path().join("small"), vec![1u8; 10_000])?;
    let limit = 2 * 1024 * 1024;
    let (monitor, mut events) = disk::start(dir.path().to_owned(), limit);
    // Let the first walk finish: nothing to report yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(600), events.recv())
            .await
            .is_err()
    );
    // A brand-new subdirectory with a file crossing the limit.
    let deep = dir.path().join("new/deeper");
    std::fs::create_dir_all(&deep)?;
    std::fs::write(deep.join("big"), vec![7u8; 3 * 1024 * 1024])?;
    let started = std::time::Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await?
        .unwrap();
    let DiskEvent::Exceeded { reserved, used } = event.clone();
    assert_eq!(reserved, limit);
    assert!(used > limit, "{used}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(event.reason().starts_with(&format!(
        "Disk limit exceeded. Reserved {limit} bytes vs used "
    )));
    assert!(monitor.used() > limit);
    Ok(())
}

#[tokio::test]
async fn appends_to_an_existing_file_are_counted() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("log");
    std::fs::write(&path, b"start\n")?;
    let limit = 1024 * 1024;
    let (_monitor, mut events) = disk::start(dir.path().to_owned(), limit);
    tokio::time::sleep(Duration::from_millis(300)).await;
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
    for _ in 0..20 {
        f.write_all(&[b'x'; 64 * 1024])?;
    }
    f.sync_all()?;
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await?
        .unwrap();
    assert!(matches!(event, DiskEvent::Exceeded { used, .. } if used > limit));
    Ok(())
}
