//! The HTML pages, rendered through the router without a socket (and without JavaScript).
// A test, off the server's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use axum::http::StatusCode;
use common::{Fixture, RunSpec, TaskSpec, TestResult, get};
use hearth_checkpoints::record::ProcessState;
use hearth_observer::app;

fn spec() -> TaskSpec {
    let mut s = TaskSpec::simple("web-1", true, 1_700_000_000_000);
    s.ports.insert("http".into(), 31337);
    s.processes = vec![
        (
            "server".into(),
            vec![
                RunSpec {
                    end: Some((ProcessState::Killed, 137)),
                    stdout: "first run\n".into(),
                },
                RunSpec {
                    end: None,
                    stdout: "line one\nline <two> & three\n".into(),
                },
            ],
        ),
        (
            "setup".into(),
            vec![RunSpec {
                end: Some((ProcessState::Success, 0)),
                stdout: "ok\n".into(),
            }],
        ),
    ];
    s
}

#[tokio::test]
async fn task_list_has_tabs_rows_and_pagination() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&spec())?;
    for i in 0..25 {
        fx.write_task(&TaskSpec::simple(&format!("done-{i:02}"), false, 1000 + i))?;
    }
    let app = app(fx.observer()?);
    let (s, ctype, body) = get(&app, "/").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("text/html"));
    assert!(body.contains("href=\"/task/web-1\""), "{body}");
    assert!(body.contains("Active (1)") && body.contains("Finished (25)"));
    assert!(body.contains("www-data") && body.contains("web-1-name"));
    let (_, _, page1) = get(&app, "/main/finished/0/10").await?;
    assert!(page1.contains("done-24") && !page1.contains("done-14"));
    assert!(page1.contains("href=\"/main/finished/10/10\""), "{page1}");
    let (_, _, page3) = get(&app, "/main/finished/20/10").await?;
    assert!(page3.contains("done-00") && !page3.contains("id=\"next\""));
    let (s, _, _) = get(&app, "/main/finished/zero").await?;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn task_page_shows_header_ports_processes_and_log_links() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&spec())?;
    let app = app(fx.observer()?);
    let (s, _, body) = get(&app, "/task/web-1").await?;
    assert_eq!(s, StatusCode::OK);
    for needle in [
        "href=\"http://localhost:31337/\"",
        "href=\"/process/web-1/server\"",
        "href=\"/logs/web-1/server/1/stdout\"",
        "href=\"/browse/web-1/\"",
        "RUNNING",
        "ACTIVE",
        "64.0 MiB",
    ] {
        assert!(body.contains(needle), "missing {needle} in {body}");
    }
    let (s, _, _) = get(&app, "/task/unknown").await?;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, raw) = get(&app, "/rawtask/web-1").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(raw.contains("&quot;server&quot;"));
    Ok(())
}

#[tokio::test]
async fn process_page_lists_every_run_with_exit_and_reason() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&spec())?;
    let app = app(fx.observer()?);
    let (s, _, body) = get(&app, "/process/web-1/server").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("signal 9"), "{body}");
    assert!(body.contains("killed by executor"));
    assert!(body.contains("href=\"/logs/web-1/server/0/stderr\""));
    assert!(body.contains("KILLED") && body.contains("RUNNING"));
    Ok(())
}

#[tokio::test]
async fn log_viewer_renders_the_tail_escaped_without_javascript() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&spec())?;
    let app = app(fx.observer()?);
    let (s, _, body) = get(&app, "/logs/web-1/server/1/stdout").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("line &lt;two&gt; &amp; three"), "{body}");
    assert!(body.contains("data-url=\"/logdata/web-1/server/1/stdout\""));
    Ok(())
}

#[tokio::test]
async fn log_viewer_pages_backwards_over_a_large_log() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&spec())?;
    let log = fx.sandbox("web-1").join(".logs/server/1/stdout");
    let line = "x".repeat(99) + "\n";
    std::fs::write(&log, line.repeat(2000))?; // 200,000 bytes
    let app = app(fx.observer()?);
    let (_, _, body) = get(&app, "/logs/web-1/server/1/stdout").await?;
    assert!(body.contains("href=\"?end=134464\""), "{body:.600}");
    let (_, _, older) = get(&app, "/logs/web-1/server/1/stdout?end=134464").await?;
    assert!(
        older.contains("bytes 68928–134464 of 200000"),
        "{older:.800}"
    );
    Ok(())
}

#[tokio::test]
async fn browser_lists_the_sandbox_and_downloads_files() -> TestResult {
    let fx = Fixture::new()?;
    fx.write_task(&spec())?;
    let sb = fx.sandbox("web-1");
    std::fs::create_dir_all(sb.join("data"))?;
    std::fs::write(sb.join("data/blob.bin"), [0u8, 1, 2, 255])?;
    let app = app(fx.observer()?);
    let (s, _, root) = get(&app, "/browse/web-1").await?;
    assert_eq!(s, StatusCode::OK);
    assert!(root.contains("href=\"/browse/web-1/data\""), "{root}");
    assert!(root.contains("drwx"));
    let (_, _, sub) = get(&app, "/browse/web-1/data").await?;
    assert!(
        sub.contains("href=\"/download/web-1/data/blob.bin\""),
        "{sub}"
    );
    let req = axum::http::Request::builder()
        .uri("/download/web-1/data/blob.bin")
        .body(axum::body::Body::empty())?;
    let resp = tower::ServiceExt::oneshot(app.clone(), req).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    let disp = resp
        .headers()
        .get("content-disposition")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(disp, "attachment; filename=\"blob.bin\"");
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    assert_eq!(&bytes[..], &[0u8, 1, 2, 255]);
    let (s, _, _) = get(&app, "/browse/web-1/data/blob.bin").await?;
    assert_eq!(s, StatusCode::SEE_OTHER);
    Ok(())
}
