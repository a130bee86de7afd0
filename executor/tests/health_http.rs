//! The HTTP health checker and the lifecycle POSTs against the real `hearth-test-server`.
#![allow(clippy::unwrap_used)]
// A test thread, not the executor's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use hearth_executor::health::{HttpChecker, PostOutcome, post_lifecycle};

mod support;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn test_server_bin() -> PathBuf {
    support::test_server_bin().unwrap()
}

/// A running test server; killed on drop.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let child = Command::new(test_server_bin())
            .args(["--port", "0", "--log"])
            .arg(&log)
            .args(args)
            .spawn()
            .unwrap();
        // Wait (with a deadline) for the `listening 127.0.0.1:PORT` line.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = text
                .lines()
                .find_map(|l| l.split_once("listening 127.0.0.1:"))
                .and_then(|(_, p)| p.trim().parse::<u16>().ok())
            {
                break port;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "test server did not start"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        Server {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_once(' ').map_or(l, |(_, ev)| ev).to_owned())
            .collect()
    }
}

fn checker(port: u16, expected: &str, code: u16, timeout: Duration) -> HttpChecker {
    HttpChecker::new(port, "/health", expected, code, timeout).unwrap()
}

#[tokio::test]
async fn http_check_passes_on_expected_body_over_one_kept_alive_connection() -> TestResult {
    let server = Server::start(&["--health", "ok"]).await;
    let mut c = checker(server.port, "ok", 200, Duration::from_secs(5));
    assert_eq!(c.check().await, Ok(()));
    assert_eq!(c.check().await, Ok(()));
    assert_eq!(c.check().await, Ok(()));
    let accepts = server
        .log_lines()
        .iter()
        .filter(|l| l.starts_with("accept "))
        .count();
    assert_eq!(accepts, 1, "checks must reuse the kept connection");
    assert_eq!(
        server
            .log_lines()
            .iter()
            .filter(|l| *l == "request GET /health")
            .count(),
        3
    );
    Ok(())
}

#[tokio::test]
async fn http_check_fails_on_500_with_the_code_in_the_reason() -> TestResult {
    let server = Server::start(&["--health", "fail500"]).await;
    let mut c = checker(server.port, "", 200, Duration::from_secs(5));
    assert_eq!(
        c.check().await.unwrap_err(),
        "Response code differs from expected response (expected 200, got 500)"
    );
    // With the default expectation (body "ok"), the body decides.
    let mut c = checker(server.port, "ok", 0, Duration::from_secs(5));
    assert!(c.check().await.unwrap_err().starts_with("Response differs"));
    Ok(())
}

#[tokio::test]
async fn http_check_fails_on_wrong_body() -> TestResult {
    let server = Server::start(&["--health", "wrongbody"]).await;
    let mut c = checker(server.port, "OK", 0, Duration::from_secs(5));
    assert_eq!(
        c.check().await.unwrap_err(),
        "Response differs from expected response (expected \"ok\", got \"not ok\")"
    );
    Ok(())
}

#[tokio::test]
async fn http_check_times_out_against_a_server_that_never_answers() -> TestResult {
    let server = Server::start(&["--health", "hang"]).await;
    let mut c = checker(server.port, "ok", 0, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let reason = c.check().await.unwrap_err();
    let took = started.elapsed();
    assert!(reason.contains("timed out after 0.3s"), "{reason}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_secs(3),
        "timeout not honoured: {took:?}"
    );
    Ok(())
}

#[tokio::test]
async fn http_check_follows_health_mode_switches_at_run_time() -> TestResult {
    let server = Server::start(&["--health", "ok"]).await;
    let mut c = checker(server.port, "ok", 0, Duration::from_secs(5));
    assert_eq!(c.check().await, Ok(()));
    let switched = post_lifecycle(server.port, "/health/fail500", Duration::from_secs(5)).await;
    assert_eq!(switched, PostOutcome::Connected { status: Some(200) });
    assert!(c.check().await.is_err());
    Ok(())
}

#[tokio::test]
async fn http_check_reports_refused_connection() -> TestResult {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut c = checker(port, "ok", 0, Duration::from_secs(2));
    let reason = c.check().await.unwrap_err();
    assert!(
        reason.starts_with(&format!("Failed to signal http://127.0.0.1:{port}/health")),
        "{reason}"
    );
    Ok(())
}

#[tokio::test]
async fn lifecycle_posts_report_connection_and_status() -> TestResult {
    let server = Server::start(&["--exit-on", "abort"]).await;
    let quit = post_lifecycle(server.port, "/quitquitquit", Duration::from_secs(5)).await;
    assert_eq!(quit, PostOutcome::Connected { status: Some(200) });
    let abort = post_lifecycle(server.port, "/abortabortabort", Duration::from_secs(5)).await;
    assert_eq!(abort, PostOutcome::Connected { status: Some(200) });
    let lines = server.log_lines();
    assert!(lines.contains(&"request POST /quitquitquit".to_owned()));
    assert!(lines.contains(&"request POST /abortabortabort".to_owned()));
    // The server exited on abort: the next POST cannot connect.
    let mut server = server;
    let status = server.child.wait()?;
    assert!(status.success());
    let after = post_lifecycle(server.port, "/quitquitquit", Duration::from_secs(5)).await;
    assert!(!after.connected(), "{after:?}");
    Ok(())
}

#[tokio::test]
async fn lifecycle_post_to_a_hanging_server_is_connected_without_status() -> TestResult {
    // A listener that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let out = post_lifecycle(port, "/quitquitquit", Duration::from_millis(200)).await;
    assert_eq!(out, PostOutcome::Connected { status: None });
    hold.abort();
    Ok(())
}

#[tokio::test]
async fn test_server_logs_sigterm_and_exits_unless_told_to_ignore_it() -> TestResult {
    let mut plain = Server::start(&[]).await;
    let ignoring = Server::start(&["--ignore-term"]).await;
    for s in [&plain, &ignoring] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(s.child.id())?),
            nix::sys::signal::Signal::SIGTERM,
        )?;
    }
    assert!(plain.child.wait()?.success());
    // The one that ignores SIGTERM logs it and keeps answering.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ignoring.log_lines().contains(&"signal SIGTERM".to_owned()) {
        assert!(std::time::Instant::now() < deadline, "SIGTERM not logged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = checker(ignoring.port, "ok", 0, Duration::from_secs(5));
    assert_eq!(c.check().await, Ok(()));
    assert!(plain.log_lines().contains(&"signal SIGTERM".to_owned()));
    Ok(())
}
