//! The pages in a real headless Chromium, driven over WebDriver (chromedriver + fantoccini):
//! open the task list, click into a task, a process and its stdout, then append a line to the
//! log and see the live viewer show it. Screenshots are saved as `target/observer-task.png`
//! and `target/observer-browser.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test is skipped with a
//! printed reason, unless `HEARTH_REQUIRE_BROWSER=1` (CI), where it fails.
// A test, off the server's runtime: plain file calls are fine here.
#![allow(clippy::disallowed_methods)]

mod common;

use hearth_testkit::wait_until_async;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Error, Fixture, RunSpec, TaskSpec, TestResult};
use fantoccini::{Client, ClientBuilder, Locator};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Kills chromedriver (and with it the browser it started) when the test ends, however it ends.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn browser_available() -> Result<bool, Error> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return Ok(true);
    }
    if std::env::var_os("HEARTH_REQUIRE_BROWSER").is_some_and(|v| v == "1") {
        return Err(format!(
            "HEARTH_REQUIRE_BROWSER=1 but {missing:?} is missing (apt-get install chromium chromium-driver)"
        )
        .into());
    }
    eprintln!(
        "skipping: {missing:?} not installed (apt-get install chromium chromium-driver; set \
         HEARTH_REQUIRE_BROWSER=1 to fail instead)"
    );
    Ok(false)
}

fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_driver() -> Result<(Driver, u16), Error> {
    let port = free_port()?;
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok((Driver(child), port))
}

async fn connect(port: u16, profile: &Path) -> Result<Client, Error> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await?;
    Ok(client)
}

fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target")
        .join(name)
}

async fn save_screenshot(client: &Client, name: &str) -> TestResult {
    let png = client.screenshot().await?;
    let path = screenshot_path(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, png)?;
    eprintln!("screenshot: {}", path.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_log_in_chromium_shows_a_line_appended_after_load() -> TestResult {
    if !browser_available()? {
        return Ok(());
    }
    let fx = Fixture::new()?;
    let mut spec = TaskSpec::simple("web-1", true, 1_700_000_000_000);
    spec.processes = vec![(
        "server".into(),
        vec![RunSpec {
            end: None,
            stdout: "server starting\nlistening on :8080\n".into(),
        }],
    )];
    fx.write_task(&spec)?;
    for i in 0..3 {
        fx.write_task(&TaskSpec::simple(&format!("done-{i}"), false, 1000 + i))?;
    }
    let obs = fx.observer()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, hearth_observer::app(obs)).await;
    });

    let (_driver, port) = start_driver()?;
    wait_until_async(
        "chromedriver to listen",
        Duration::from_secs(20),
        || async { TcpStream::connect(("127.0.0.1", port)).is_ok() },
    )
    .await?;
    let profile = tempfile::tempdir()?;
    let client = connect(port, profile.path()).await?;
    let result = drive(&client, addr, &fx).await;
    // Save what the browser shows whether or not the checks passed.
    let shot = save_screenshot(&client, "observer-browser.png").await;
    let _ = client.close().await;
    server.abort();
    result.and(shot)
}

async fn drive(client: &Client, addr: SocketAddr, fx: &Fixture) -> TestResult {
    client.goto(&format!("http://{addr}/")).await?;
    let title = client.title().await?;
    assert!(title.contains("Tasks"), "{title}");
    client
        .find(Locator::Css("a[href='/task/web-1']"))
        .await?
        .click()
        .await?;
    save_screenshot(client, "observer-task.png").await?;
    client
        .find(Locator::Css("a[href='/process/web-1/server']"))
        .await?
        .click()
        .await?;
    let runs = client.find(Locator::Id("runs")).await?.text().await?;
    assert!(runs.contains("RUNNING"), "{runs}");
    client
        .find(Locator::Css("a[href='/logs/web-1/server/0/stdout']"))
        .await?
        .click()
        .await?;
    let content = client.find(Locator::Id("content")).await?;
    let text = content.text().await?;
    assert!(text.contains("listening on :8080"), "{text}");

    // Append after the page has loaded: the viewer must show it without a reload.
    let log = fx.sandbox("web-1").join(".logs/server/0/stdout");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log)?;
    writeln!(f, "appended after the page loaded")?;
    drop(f);
    let url_before = client.current_url().await?;
    wait_until_async(
        "the appended line in the viewer",
        Duration::from_secs(15),
        || {
            let content = content.clone();
            async move {
                content
                    .text()
                    .await
                    .is_ok_and(|t| t.contains("appended after the page loaded"))
            }
        },
    )
    .await?;
    assert_eq!(client.current_url().await?, url_before, "the page reloaded");
    Ok(())
}
