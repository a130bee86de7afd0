//! `hearth dev`: the whole system on one machine in one command — a scheduler, one agent whose
//! tasks live under the dev directory, and the observer over that agent's root — for trying
//! Hearth out and for developing it.
//!
//! The three are child processes of this one (the same binary), each logging to
//! `<dir>/logs/<name>.log`. Ctrl-C (or SIGTERM) stops them; the tasks do not stop with them:
//! each task has its own executor, in its own session, which keeps it running and reporting.
//! The next `hearth dev` on the same directory re-adopts them (the agent finds them in its root,
//! the scheduler in its database); `hearth job kill KEY` stops a job for good.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::process::{Child, Command};

use crate::output;
use crate::server::{runtime, shutdown_signal};

/// The example job `hearth dev` suggests.
const EXAMPLE_JOB: &str = "testdata/jobs/hello_service.json";

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the scheduler's database, the agent's root and the logs live.
    #[arg(long, default_value = ".hearth-dev")]
    pub dir: PathBuf,
    /// The scheduler's address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub bind: SocketAddr,
    /// The observer's address.
    #[arg(long, default_value_t = hearth_observer::DEFAULT_BIND)]
    pub observer_bind: SocketAddr,
    /// The agent's host name [default: this host's name].
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(args: DevArgs) -> ExitCode {
    output::exit(dev(args))
}

fn dev(args: DevArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(&args.dir)
        .with_context(|| format!("dev directory {}", args.dir.display()))?;
    let data = dir.join("scheduler");
    let root = dir.join("root");
    let logs = dir.join("logs");
    for d in [&data, &root, &logs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let exe = std::env::current_exe().context("finding the hearth binary")?;
    let name = match args.name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned()),
    };
    let url = format!("http://{}", args.bind);
    let rt = runtime()?;
    rt.block_on(async {
        let mut children: Vec<(&str, Child)> = Vec::new();
        let result = async {
            let scheduler = start(
                &exe,
                &logs,
                "scheduler",
                &[
                    "scheduler".as_ref(),
                    "--bind".as_ref(),
                    args.bind.to_string().as_ref(),
                    "--data".as_ref(),
                    data.as_os_str(),
                ],
            )?;
            children.push(("scheduler", scheduler));
            if let Some((_, s)) = children.last_mut() {
                wait_listening(args.bind, s, &logs.join("scheduler.log")).await?;
            }
            let mut agent_args: Vec<std::ffi::OsString> = vec![
                "agent".into(),
                "--scheduler".into(),
                url.clone().into(),
                "--root".into(),
                root.clone().into(),
                "--name".into(),
                name.clone().into(),
            ];
            if !nix::unistd::getuid().is_root() {
                // Tasks run as the developer: there is no user to switch to.
                agent_args.push("--run-arg=--no-setuid".into());
            }
            let agent_refs: Vec<&std::ffi::OsStr> =
                agent_args.iter().map(std::ffi::OsString::as_os_str).collect();
            children.push(("agent", start(&exe, &logs, "agent", &agent_refs)?));
            children.push((
                "observer",
                start(
                    &exe,
                    &logs,
                    "observer",
                    &[
                        "observe".as_ref(),
                        "--root".as_ref(),
                        root.as_os_str(),
                        "--bind".as_ref(),
                        args.observer_bind.to_string().as_ref(),
                    ],
                )?,
            ));
            print_banner(&dir, &url, &name, args.observer_bind, &root, &logs);
            // Run until Ctrl-C, or until one of them dies.
            let waits = children
                .iter_mut()
                .map(|(n, c)| Box::pin(async move { (*n, c.wait().await) }));
            tokio::select! {
                () = shutdown_signal() => {
                    println!("stopping the scheduler, the agent and the observer (tasks keep running)");
                    Ok(())
                }
                (n, status) = first_of(waits) => {
                    bail!("the {n} exited ({status:?}); see {}", logs.join(format!("{n}.log")).display())
                }
            }
        }
        .await;
        stop_all(&mut children).await;
        result
    })
}

/// The output of the first of several futures to finish (a tiny `select_all`).
async fn first_of<F: std::future::Future + Unpin>(
    futures: impl IntoIterator<Item = F>,
) -> F::Output {
    let mut futures: Vec<F> = futures.into_iter().collect();
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn start(exe: &Path, logs: &Path, name: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<Child> {
    let log_path = logs.join(format!("{name}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let err = log
        .try_clone()
        .with_context(|| format!("opening {}", log_path.display()))?;
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting the {name}"))
}

/// Wait until the scheduler accepts connections (it exits on a bad flag or a busy port).
async fn wait_listening(addr: SocketAddr, child: &mut Child, log: &Path) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the scheduler exited ({status}) before listening on {addr}; see {}",
                log.display()
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the scheduler does not listen on {addr} after 20 s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGTERM each child, then SIGKILL whichever has not exited within 10 s.
async fn stop_all(children: &mut [(&str, Child)]) {
    for (_, c) in children.iter() {
        if let Some(pid) = c.id().and_then(|p| i32::try_from(p).ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM);
        }
    }
    for (name, c) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), c.wait())
            .await
            .is_err()
        {
            eprintln!("hearth dev: the {name} did not stop within 10 s; killing it");
            let _ = c.kill().await;
        }
    }
}

fn print_banner(dir: &Path, url: &str, host: &str, observer: SocketAddr, root: &Path, logs: &Path) {
    println!("hearth dev: state under {}", dir.display());
    println!(
        "  scheduler  {url}  (log {})",
        logs.join("scheduler.log").display()
    );
    println!(
        "  agent      host {host}, tasks under {}  (log {})",
        root.display(),
        logs.join("agent.log").display()
    );
    println!(
        "  observer   http://{observer}  (log {})",
        logs.join("observer.log").display()
    );
    println!();
    if url == hearth_scheduler::wire::DEFAULT_SCHEDULER_URL {
        println!("Try it, in another shell:");
    } else {
        println!("Try it, in another shell, with HEARTH_SCHEDULER={url}:");
    }
    println!("  hearth job create devcluster/root/devel/hello {EXAMPLE_JOB}");
    println!("  hearth job status devcluster/root/devel/hello");
    println!("  hearth host status");
    println!("  hearth job kill devcluster/root/devel/hello");
    println!();
    println!(
        "Ctrl-C stops these three; running tasks keep running and the next `hearth dev` re-adopts them."
    );
}
