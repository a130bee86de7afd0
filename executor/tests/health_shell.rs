//! The shell health checker running real `bash`.
#![allow(clippy::unwrap_used)]
// A test thread, not the executor's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use hearth_executor::health::ShellChecker;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn shell(cmd: &str, dir: &std::path::Path, timeout: Duration) -> ShellChecker {
    let env = vec![
        format!("HOME={}", dir.display()),
        "GREETING=hello".to_owned(),
    ];
    ShellChecker::new(cmd, dir.to_owned(), &env, None, timeout)
}

#[tokio::test]
async fn shell_check_passes_on_exit_0_in_the_sandbox_with_the_task_env() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("marker"), "")?;
    let c = shell(
        "test -e marker && test \"$GREETING\" = hello",
        dir.path(),
        Duration::from_secs(10),
    );
    assert_eq!(c.check().await, Ok(()));
    Ok(())
}

#[tokio::test]
async fn shell_check_fails_on_nonzero_exit_with_the_status() -> TestResult {
    let dir = tempfile::tempdir()?;
    let c = shell("exit 3", dir.path(), Duration::from_secs(10));
    assert_eq!(
        c.check().await.unwrap_err(),
        "Shell health check \"exit 3\" exited with status 3"
    );
    Ok(())
}

#[tokio::test]
async fn shell_check_timeout_kills_the_command_and_its_children() -> TestResult {
    let dir = tempfile::tempdir()?;
    let pidfile = dir.path().join("child.pid");
    // A background child that would outlive bash if only bash were killed.
    let c = shell(
        "sleep 30 & echo $! > child.pid; wait",
        dir.path(),
        Duration::from_millis(500),
    );
    let started = Instant::now();
    let reason = c.check().await.unwrap_err();
    assert!(reason.contains("timed out after 0.5s"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&pidfile)?.trim().parse()?;
    // The grandchild got SIGKILL with its group; wait (bounded) until it is gone or a zombie
    // of init.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
        if stat.is_empty() || state == Some(Some('Z')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grandchild {pid} survived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Regression: the check used to run with the user's uid and gid but none of its supplementary
/// groups (the standard library drops them), unlike the task's own processes.
#[tokio::test]
async fn shell_check_runs_as_the_task_user_with_its_supplementary_groups() -> TestResult {
    if !nix::unistd::getuid().is_root() {
        assert!(
            std::env::var("HEARTH_REQUIRE_CGROUPS").as_deref() != Ok("1"),
            "switching users needs root, and this CI run requires the root-only tests"
        );
        eprintln!("skipped: switching users needs root");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let as_user = |cmd: &str| {
        ShellChecker::new(
            cmd,
            dir.path().to_owned(),
            &[format!("HOME={}", dir.path().display())],
            Some((65534, 65534, vec![4242, 4343])),
            Duration::from_secs(5),
        )
    };
    let ids = "[ \"$(id -u) $(id -g)\" = \"65534 65534\" ] && id -G | tr ' ' '\\n' | grep -qx 4242 \
               && id -G | tr ' ' '\\n' | grep -qx 4343";
    assert_eq!(as_user(ids).check().await, Ok(()));
    // And nothing of root's is left: group 0 is not among its groups.
    let no_root = "! id -G | tr ' ' '\\n' | grep -qx 0";
    assert_eq!(as_user(no_root).check().await, Ok(()));
    Ok(())
}
