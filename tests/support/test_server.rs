//! `hearth-test-server`: a tiny HTTP/1.1 server that plays a task with a health port, for tests
//! of health checks and teardown.
//!
//! ```text
//! hearth-test-server --port N --log PATH [--health ok|fail500|hang|wrongbody]
//!                    [--exit-on quit|abort|never] [--ignore-term]
//! ```
//!
//! Endpoints (keep-alive connections are served until the client closes them):
//! * `GET /health`: `ok` → `200 ok`; `fail500` → `500 fail`; `hang` → reads the request and
//!   never answers; `wrongbody` → `200 not ok`.
//! * `POST /health/<mode>`: switch the `/health` behaviour at run time.
//! * `POST /quitquitquit`, `POST /abortabortabort`: `200 ok`; then exit (status 0) if
//!   `--exit-on` names that endpoint.
//! * anything else: `404`.
//!
//! Every connection accepted (`accept <peer>`), request (`request <METHOD> <path>`) and signal
//! received (`signal <NAME>`) is logged to `--log` as one line,
//! `<ms> <event>`, where `<ms>` is milliseconds on a monotonic clock since the server started,
//! flushed line by line. The first line is `<ms> listening 127.0.0.1:<port>` — with `--port 0`
//! it tells the actual port. SIGTERM is logged, then the server exits with status 0 unless
//! `--ignore-term`; SIGINT is logged, then the server exits; SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2
//! are logged only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

const MAX_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Ok = 0,
    Fail500 = 1,
    Hang = 2,
    WrongBody = 3,
}

impl Health {
    fn parse(s: &str) -> Option<Health> {
        Some(match s {
            "ok" => Health::Ok,
            "fail500" => Health::Fail500,
            "hang" => Health::Hang,
            "wrongbody" => Health::WrongBody,
            _ => return None,
        })
    }

    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Fail500,
            2 => Health::Hang,
            3 => Health::WrongBody,
            _ => Health::Ok,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExitOn {
    Quit,
    Abort,
    Never,
}

#[derive(Debug)]
struct Options {
    port: u16,
    log: String,
    health: Health,
    exit_on: ExitOn,
    ignore_term: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut port = None;
    let mut log = None;
    let mut health = Health::Ok;
    let mut exit_on = ExitOn::Never;
    let mut ignore_term = false;
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--port" => port = Some(value()?.parse().map_err(|e| format!("--port: {e}"))?),
            "--log" => log = Some(value()?),
            "--health" => {
                let v = value()?;
                health = Health::parse(&v).ok_or(format!("--health: unknown mode {v:?}"))?;
            }
            "--exit-on" => {
                exit_on = match value()?.as_str() {
                    "quit" => ExitOn::Quit,
                    "abort" => ExitOn::Abort,
                    "never" => ExitOn::Never,
                    v => return Err(format!("--exit-on: unknown value {v:?}")),
                }
            }
            "--ignore-term" => ignore_term = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Options {
        port: port.ok_or("--port is required")?,
        log: log.ok_or("--log is required")?,
        health,
        exit_on,
        ignore_term,
    })
}

/// The log: one flushed line per event.
struct Log {
    file: Mutex<File>,
    start: Instant,
}

impl Log {
    fn line(&self, event: &str) {
        let line = format!("{} {event}\n", self.start.elapsed().as_millis());
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // A test server has nobody to tell about a failed log write but stderr.
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.flush()) {
            eprintln!("hearth-test-server: cannot write the log: {e}");
        }
    }
}

struct Server {
    log: Log,
    health: AtomicU8,
    exit_on: ExitOn,
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("hearth-test-server: {e}");
            return ExitCode::from(2);
        }
    };
    let file = match OpenOptions::new().create(true).append(true).open(&opts.log) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hearth-test-server: cannot open {}: {e}", opts.log);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hearth-test-server: {e}");
            return ExitCode::from(1);
        }
    };
    let server = Arc::new(Server {
        log: Log {
            file: Mutex::new(file),
            start: Instant::now(),
        },
        health: AtomicU8::new(opts.health as u8),
        exit_on: opts.exit_on,
    });
    match runtime.block_on(serve(server, opts.port, opts.ignore_term)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-test-server: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(server: Arc<Server>, port: u16, ignore_term: bool) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut quit = signal(SignalKind::quit())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    server
        .log
        .line(&format!("listening {}", listener.local_addr()?));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                server.log.line(&format!("accept {peer}"));
                let server = server.clone();
                tokio::spawn(async move { connection(server, stream).await });
            }
            _ = term.recv() => {
                server.log.line("signal SIGTERM");
                if !ignore_term {
                    server.log.line("exit SIGTERM");
                    return Ok(());
                }
            }
            _ = int.recv() => {
                server.log.line("signal SIGINT");
                return Ok(());
            }
            _ = hup.recv() => server.log.line("signal SIGHUP"),
            _ = quit.recv() => server.log.line("signal SIGQUIT"),
            _ = usr1.recv() => server.log.line("signal SIGUSR1"),
            _ = usr2.recv() => server.log.line("signal SIGUSR2"),
        }
    }
}

/// Serve requests on one connection until it closes.
async fn connection(server: Arc<Server>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_owned();
        let path = request_line.next().unwrap_or("").to_owned();
        let mut content_length = 0usize;
        let mut close = false;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        // Skip the body.
        while buf.len() < head_end + content_length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + content_length);
        server.log.line(&format!("request {method} {path}"));

        let mut exit_after = false;
        let (status, body): (u16, &str) = match (method.as_str(), path.as_str()) {
            ("GET", "/health") => match Health::from_u8(server.health.load(Ordering::SeqCst)) {
                Health::Ok => (200, "ok"),
                Health::Fail500 => (500, "fail"),
                Health::WrongBody => (200, "not ok"),
                Health::Hang => {
                    // Hold the connection open, never answer.
                    std::future::pending::<()>().await;
                    return;
                }
            },
            ("POST", p) if p.starts_with("/health/") => match Health::parse(&p[8..]) {
                Some(h) => {
                    server.health.store(h as u8, Ordering::SeqCst);
                    (200, "ok")
                }
                None => (400, "unknown mode"),
            },
            ("POST", "/quitquitquit") => {
                exit_after = server.exit_on == ExitOn::Quit;
                (200, "ok")
            }
            ("POST", "/abortabortabort") => {
                exit_after = server.exit_on == ExitOn::Abort;
                (200, "ok")
            }
            _ => (404, "not found"),
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            _ => "Internal Server Error",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close || exit_after {
                "connection: close\r\n"
            } else {
                ""
            }
        );
        let written = stream.write_all(response.as_bytes()).await;
        if exit_after {
            let _ = stream.shutdown().await;
            server.log.line(&format!("exit {path}"));
            std::process::exit(0);
        }
        if written.is_err() || close {
            return;
        }
    }
}
