//! Path traversal: a corpus of hostile paths against every endpoint that reads the sandbox or the
//! logs. Each must be refused (403) or not found (404), and no response may carry a byte of a
//! file outside the sandbox.
// A test, off the server's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use axum::http::StatusCode;
use common::{Fixture, TaskSpec, TestResult, get};
use hearth_observer::app;

/// Content of a file next to (outside) the sandbox; no response may contain it.
const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-SANDBOX";

/// Hostile paths, as they would appear in a URL after `/{endpoint}/{task_id}/`.
const HOSTILE: &[&str] = &[
    // Plain and encoded parent traversal.
    "../secret.txt",
    "../../../../etc/passwd",
    "sub/../../secret.txt",
    "%2e%2e/secret.txt",
    "%2E%2E/%2E%2E/etc/passwd",
    "..%2fsecret.txt",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "sub/..%2f..%2fsecret.txt",
    ".%2e/secret.txt",
    "%2e./secret.txt",
    // Double encoding (decoded once: a literal name that does not exist).
    "%252e%252e/secret.txt",
    "%252e%252e%252fsecret.txt",
    // Absolute paths.
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "//etc/passwd",
    // NUL bytes.
    "passwd_link%00.txt",
    "ok.txt%00/../../secret.txt",
    // Backslashes are names on Linux, never separators.
    "..%5c..%5csecret.txt",
    "..\\..\\secret.txt",
    // Symlinks inside the sandbox pointing out of it.
    "passwd_link",
    "etc_link/passwd",
    "escape_dir/secret.txt",
    "sub/up_link/secret.txt",
    "loop_a",
    // A sibling directory sharing the sandbox's name as a prefix.
    "../sandbox-evil/secret.txt",
    "evil_sibling_link/secret.txt",
    // Proc tricks.
    "proc_link/self/environ",
    // Overlong UTF-8 encodings of '.' and '/'.
    "%c0%ae%c0%ae/secret.txt",
    "..%c0%afsecret.txt",
];

fn setup() -> Result<Fixture, Box<dyn std::error::Error>> {
    let fx = Fixture::new()?;
    fx.write_task(&TaskSpec::simple("t1", false, 1))?;
    let sb = fx.sandbox("t1");
    let outside = sb.parent().ok_or("no parent")?;
    std::fs::write(outside.join("secret.txt"), SECRET)?;
    let evil = outside.join("t1-evil");
    std::fs::create_dir_all(&evil)?;
    std::fs::write(evil.join("secret.txt"), SECRET)?;
    // The corpus names `sandbox-evil` relative to the sandbox's parent; make it exist too.
    let evil2 = outside.join("sandbox-evil");
    std::fs::create_dir_all(&evil2)?;
    std::fs::write(evil2.join("secret.txt"), SECRET)?;
    std::fs::write(sb.join("ok.txt"), "fine")?;
    std::fs::create_dir_all(sb.join("sub"))?;
    fn link(
        target: impl AsRef<std::path::Path>,
        at: impl AsRef<std::path::Path>,
    ) -> std::io::Result<()> {
        std::os::unix::fs::symlink(target, at)
    }
    link("/etc/passwd", sb.join("passwd_link"))?;
    link("/etc", sb.join("etc_link"))?;
    link(outside, sb.join("escape_dir"))?;
    link("../..", sb.join("sub/up_link"))?;
    link("loop_b", sb.join("loop_a"))?;
    link("loop_a", sb.join("loop_b"))?;
    link(&evil, sb.join("evil_sibling_link"))?;
    link("/proc", sb.join("proc_link"))?;
    Ok(fx)
}

fn assert_clean(uri: &str, status: StatusCode, body: &str) {
    assert!(
        status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
        "{uri}: status {status}, body {body}"
    );
    assert!(!body.contains(SECRET), "{uri} leaked the secret: {body}");
    assert!(
        !body.contains("root:x:0:0"),
        "{uri} leaked /etc/passwd: {body}"
    );
}

#[tokio::test]
async fn hostile_paths_are_refused_on_every_sandbox_endpoint() -> TestResult {
    assert!(HOSTILE.len() >= 25);
    let fx = setup()?;
    let app = app(fx.observer()?);
    // The sandbox itself is served, so refusals are not an accident of a broken setup.
    let (s, _, body) = get(&app, "/filedata/t1/ok.txt?offset=0").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("fine"));
    for path in HOSTILE {
        for endpoint in ["file", "filedata", "download", "browse"] {
            let uri = format!("/{endpoint}/t1/{path}");
            let uri = uri.replace('\\', "%5C");
            let (status, _, body) = get(&app, &uri).await?;
            assert_clean(&uri, status, &body);
        }
    }
    Ok(())
}

#[tokio::test]
async fn symlink_to_etc_passwd_is_listed_but_never_served() -> TestResult {
    let fx = setup()?;
    let app = app(fx.observer()?);
    let (s, _, listing) = get(&app, "/browse/t1/").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(listing.contains("passwd_link"));
    assert!(!listing.contains("root:x"));
    for uri in [
        "/file/t1/passwd_link",
        "/filedata/t1/passwd_link?offset=0",
        "/download/t1/passwd_link",
    ] {
        let (s, _, body) = get(&app, uri).await?;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}");
        assert_clean(uri, s, &body);
    }
    Ok(())
}

#[tokio::test]
async fn a_log_symlinked_out_of_the_sandbox_is_refused() -> TestResult {
    let fx = setup()?;
    let log = fx.sandbox("t1").join(".logs/hello/0/stdout");
    std::fs::remove_file(&log)?;
    std::os::unix::fs::symlink("/etc/passwd", &log)?;
    let app = app(fx.observer()?);
    for uri in [
        "/logdata/t1/hello/0/stdout?offset=0",
        "/logs/t1/hello/0/stdout",
        "/logdata/t1/..%2f..%2f..%2fetc/0/passwd",
        "/logdata/t1/hello/0/..%2f..%2f..%2fok.txt",
    ] {
        let (s, _, body) = get(&app, uri).await?;
        assert_clean(uri, s, &body);
    }
    Ok(())
}

#[tokio::test]
async fn a_log_dir_outside_the_sandbox_in_the_header_is_not_trusted() -> TestResult {
    use hearth_checkpoints::record::{ProcessState, ProcessStatus, Record, RunnerHeader};
    let fx = Fixture::new()?;
    let sb = fx.sandbox("liar");
    std::fs::create_dir_all(&sb)?;
    let elsewhere = fx.dir.path().join("elsewhere/p/0");
    std::fs::create_dir_all(&elsewhere)?;
    std::fs::write(elsewhere.join("stdout"), SECRET)?;
    std::fs::create_dir_all(fx.root.checkpoint_dir("liar"))?;
    let header = RunnerHeader {
        task_id: "liar".into(),
        sandbox: Some(sb.display().to_string()),
        log_dir: Some(fx.dir.path().join("elsewhere").display().to_string()),
        ..RunnerHeader::default()
    };
    let mut w = hearth_checkpoints::stream::CheckpointWriter::create(
        &fx.root.runner_path("liar"),
        &header,
    )?;
    w.append(&Record::Process(ProcessStatus {
        seq: 0,
        process: "p".into(),
        state: Some(ProcessState::Waiting),
        ..ProcessStatus::default()
    }))?;
    w.commit()?;
    let app = app(fx.observer()?);
    let uri = "/logdata/liar/p/0/stdout?offset=0";
    let (s, _, body) = get(&app, uri).await?;
    assert_clean(uri, s, &body);
    Ok(())
}
