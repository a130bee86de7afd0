//! The scheduler's client: a thin, typed, blocking HTTP client over the endpoints of
//! [`hearth_scheduler::wire`], and where its URL and credentials come from.
//!
//! Every `hearth job|host|scheduler backup|reconcile` command is one or two calls here. The
//! client is a short-lived process, so it makes one HTTP/1 connection on a current-thread
//! runtime and nothing else (no TLS: the scheduler serves plain HTTP).
//!
//! Credentials, first found wins: `--user`/`--password` (or `HEARTH_USER`/`HEARTH_PASSWORD`),
//! then the `machine` entry of `~/.netrc` (`$NETRC` overrides the path) for the scheduler's host,
//! then its `default` entry. Without any, requests go out unauthenticated (reads are open unless
//! the scheduler runs with `--auth-reads`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use hearth_scheduler::wire::{
    ApiError, BackupInfo, ChangeResponse, CreateJobRequest, HostStatus, InstancesRequest,
    JobDetail, JobKey, JobSummary, ReconcileRequest, ReconcileStatus, TaskStatus,
};

/// The largest response body the client reads (a status of many tasks is a few MiB).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What to do when the client gets no credentials right.
const CREDENTIALS_HINT: &str = "pass --user/--password, set HEARTH_USER/HEARTH_PASSWORD or add \
                                the scheduler host to ~/.netrc";

/// Where to reach the scheduler and as whom: the options every client command takes.
/// `Debug` never shows the password.
#[derive(Clone, clap::Args)]
pub struct ConnectArgs {
    /// The scheduler's URL.
    #[arg(long, env = "HEARTH_SCHEDULER", default_value = hearth_scheduler::wire::DEFAULT_SCHEDULER_URL)]
    pub scheduler: String,
    /// User for HTTP Basic auth [default: from ~/.netrc].
    #[arg(long, env = "HEARTH_USER")]
    pub user: Option<String>,
    /// Password for HTTP Basic auth (prefer HEARTH_PASSWORD or ~/.netrc: a command line is
    /// visible to other users).
    #[arg(long, env = "HEARTH_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl fmt::Debug for ConnectArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectArgs")
            .field("scheduler", &self.scheduler)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// A user and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// What can go wrong talking to the scheduler. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("scheduler URL {url:?} is not valid: {reason} (expected http://HOST:PORT)")]
    BadUrl { url: String, reason: String },
    #[error(
        "no scheduler at {url}: start one with `hearth scheduler --bind ADDR --data DIR` (or \
         `hearth dev`), or point --scheduler / HEARTH_SCHEDULER at a running one ({reason})"
    )]
    Connect { url: String, reason: String },
    #[error("the scheduler at {url} did not answer {method} {path} within {secs} s")]
    Timeout {
        url: String,
        method: String,
        path: String,
        secs: u64,
    },
    #[error(
        "401 unauthenticated: wrong or missing credentials for {url}: {CREDENTIALS_HINT} ({message})"
    )]
    Unauthenticated { url: String, message: String },
    #[error(
        "403 forbidden: {message} (user {user:?}; ask an administrator to grant the permission \
         in the scheduler's security INI)"
    )]
    Forbidden { user: String, message: String },
    #[error("404 not found: {message}")]
    NotFound { message: String },
    #[error("409 conflict: {message}")]
    Conflict { message: String },
    #[error("400 bad request: {message}")]
    BadRequest { message: String },
    #[error("{status} from the scheduler at {url} ({path}): {message}")]
    Status {
        url: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("cannot read the scheduler's answer to {method} {path}: {reason}")]
    Decode {
        method: String,
        path: String,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Netrc { path: PathBuf, reason: String },
    #[error(
        "--user {user:?} has no password: pass --password, set HEARTH_PASSWORD or add it to ~/.netrc"
    )]
    NoPassword { user: String },
    #[error("a password without a user: pass --user or set HEARTH_USER too")]
    NoUser,
    #[error("cannot start the client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A connection to one scheduler.
#[derive(Debug)]
pub struct Client {
    base: String,
    credentials: Option<Credentials>,
    runtime: tokio::runtime::Runtime,
    http: HttpClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client for the scheduler and credentials the options name.
    pub fn connect(args: &ConnectArgs) -> Result<Client, ClientError> {
        let base = args.scheduler.trim_end_matches('/').to_owned();
        let uri: Uri =
            base.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| ClientError::BadUrl {
                    url: base.clone(),
                    reason: e.to_string(),
                })?;
        if uri.scheme_str() != Some("http") {
            return Err(ClientError::BadUrl {
                url: base,
                reason: "only http:// is supported".to_owned(),
            });
        }
        let host = uri.host().unwrap_or_default().to_owned();
        let credentials = resolve_credentials(args, &host)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        let http = HttpClient::builder(TokioExecutor::new()).build_http();
        Ok(Client {
            base,
            credentials,
            runtime,
            http,
        })
    }

    fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.raw(method.clone(), path, body)?;
        if !status.is_success() {
            return Err(self.error(status, path, &bytes));
        }
        // Through a `Value`: some answers flatten a struct (`JobDetail`), and a flattened struct
        // read straight from text loses its numbers when serde_json's `arbitrary_precision` is
        // on (the `.aurora` evaluator's Starlark turns it on for the whole binary).
        let decode = |e: serde_json::Error| ClientError::Decode {
            method: method.to_string(),
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(decode)?;
        serde_json::from_value(value).map_err(decode)
    }

    /// One request; the status and body as they came.
    fn raw<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let bad_url = |reason: String| ClientError::BadUrl {
            url: url.clone(),
            reason,
        };
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| bad_url(e.to_string()))?,
            None => Vec::new(),
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(&url)
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(c) = &self.credentials {
            req = req.header(
                hyper::header::AUTHORIZATION,
                basic_auth(&c.user, &c.password),
            );
        }
        let req = req
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| bad_url(e.to_string()))?;
        let timeout = || ClientError::Timeout {
            url: self.base.clone(),
            method: method.to_string(),
            path: path.to_owned(),
            secs: REQUEST_TIMEOUT.as_secs(),
        };
        self.runtime.block_on(async {
            let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(req))
                .await
                .map_err(|_| timeout())?
                .map_err(|e| ClientError::Connect {
                    url: self.base.clone(),
                    reason: hearth_checkpoints::error_chain(&e),
                })?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY);
            let bytes = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
                .await
                .map_err(|_| timeout())?
                .map_err(|e| ClientError::Decode {
                    method: method.to_string(),
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok((status, bytes))
        })
    }

    /// The error for an unsuccessful answer, with the scheduler's own message.
    fn error(&self, status: StatusCode, path: &str, body: &[u8]) -> ClientError {
        let message = match serde_json::from_slice::<ApiError>(body) {
            Ok(e) => e.message,
            Err(_) => {
                let text = String::from_utf8_lossy(body).trim().to_owned();
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("no message").to_owned()
                } else {
                    text.chars().take(500).collect()
                }
            }
        };
        match status.as_u16() {
            400 => ClientError::BadRequest { message },
            401 => ClientError::Unauthenticated {
                url: self.base.clone(),
                message,
            },
            403 => ClientError::Forbidden {
                user: self
                    .credentials
                    .as_ref()
                    .map_or_else(|| "anonymous".to_owned(), |c| c.user.clone()),
                message,
            },
            404 => ClientError::NotFound { message },
            409 => ClientError::Conflict { message },
            s => ClientError::Status {
                url: self.base.clone(),
                path: path.to_owned(),
                status: s,
                message,
            },
        }
    }

    pub fn create_job(&self, req: &CreateJobRequest) -> Result<JobSummary, ClientError> {
        self.call(Method::POST, "/api/v1/jobs", Some(req))
    }

    pub fn list_jobs(&self, role: Option<&str>) -> Result<Vec<JobSummary>, ClientError> {
        let path = match role {
            Some(r) => format!("/api/v1/jobs?role={}", query_escape(r)),
            None => "/api/v1/jobs".to_owned(),
        };
        self.call::<(), _>(Method::GET, &path, None)
    }

    pub fn job(&self, key: &JobKey) -> Result<JobDetail, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/api/v1/jobs/{}", key.path()), None)
    }

    pub fn tasks(&self, key: &JobKey) -> Result<Vec<TaskStatus>, ClientError> {
        self.call::<(), _>(
            Method::GET,
            &format!("/api/v1/jobs/{}/tasks", key.path()),
            None,
        )
    }

    pub fn kill(
        &self,
        key: &JobKey,
        instances: Option<Vec<u32>>,
    ) -> Result<ChangeResponse, ClientError> {
        self.call(
            Method::POST,
            &format!("/api/v1/jobs/{}/kill", key.path()),
            Some(&InstancesRequest { instances }),
        )
    }

    pub fn restart(
        &self,
        key: &JobKey,
        instances: Option<Vec<u32>>,
    ) -> Result<ChangeResponse, ClientError> {
        self.call(
            Method::POST,
            &format!("/api/v1/jobs/{}/restart", key.path()),
            Some(&InstancesRequest { instances }),
        )
    }

    pub fn hosts(&self) -> Result<Vec<HostStatus>, ClientError> {
        self.call::<(), _>(Method::GET, "/api/v1/hosts", None)
    }

    pub fn drain(&self, host: &str) -> Result<HostStatus, ClientError> {
        self.call::<(), _>(
            Method::POST,
            &format!("/api/v1/hosts/{}/drain", path_escape(host)),
            None,
        )
    }

    pub fn activate(&self, host: &str) -> Result<HostStatus, ClientError> {
        self.call::<(), _>(
            Method::POST,
            &format!("/api/v1/hosts/{}/activate", path_escape(host)),
            None,
        )
    }

    pub fn backup_now(&self) -> Result<BackupInfo, ClientError> {
        self.call::<(), _>(Method::POST, "/api/v1/backups", None)
    }

    pub fn backups(&self) -> Result<Vec<BackupInfo>, ClientError> {
        self.call::<(), _>(Method::GET, "/api/v1/backups", None)
    }

    pub fn reconcile_status(&self) -> Result<ReconcileStatus, ClientError> {
        self.call::<(), _>(Method::GET, "/api/v1/reconcile", None)
    }

    pub fn reconcile(&self, confirm: bool) -> Result<ReconcileStatus, ClientError> {
        self.call(
            Method::POST,
            "/api/v1/reconcile",
            Some(&ReconcileRequest { confirm }),
        )
    }
}

/// The credentials the options, the environment or `~/.netrc` give for `host`.
fn resolve_credentials(args: &ConnectArgs, host: &str) -> Result<Option<Credentials>, ClientError> {
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        return Ok(Some(Credentials {
            user: user.clone(),
            password: password.clone(),
        }));
    }
    let from_netrc = match netrc_path() {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(&path).map_err(|e| ClientError::Netrc {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            netrc_lookup(&text, host).map_err(|reason| ClientError::Netrc { path, reason })?
        }
        _ => None,
    };
    if args.user.is_none() && args.password.is_some() {
        return Err(ClientError::NoUser);
    }
    match (&args.user, from_netrc) {
        // A user named on the command line takes the netrc password only when the logins agree.
        (Some(user), Some(c)) if &c.user == user => Ok(Some(c)),
        (Some(user), _) => Err(ClientError::NoPassword { user: user.clone() }),
        (None, found) => Ok(found),
    }
}

fn netrc_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NETRC") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".netrc"))
}

/// The login and password of `host`'s `machine` entry in a netrc file, else of its `default`
/// entry. `macdef` bodies are skipped; an entry without both login and password is no match.
pub fn netrc_lookup(text: &str, host: &str) -> Result<Option<Credentials>, String> {
    #[derive(Default)]
    struct Entry {
        machine: Option<String>,
        login: Option<String>,
        password: Option<String>,
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut tokens = line.split_whitespace();
        while let Some(tok) = tokens.next() {
            let mut value = |what: &str| {
                tokens
                    .next()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("`{what}` without a value"))
            };
            match tok {
                "machine" => entries.push(Entry {
                    machine: Some(value("machine")?),
                    ..Entry::default()
                }),
                "default" => entries.push(Entry::default()),
                "login" | "password" | "account" => {
                    let v = value(tok)?;
                    let Some(e) = entries.last_mut() else {
                        return Err(format!("`{tok}` before any `machine` or `default`"));
                    };
                    match tok {
                        "login" => e.login = Some(v),
                        "password" => e.password = Some(v),
                        _ => {}
                    }
                }
                "macdef" => {
                    // A macro runs to the next empty line.
                    for l in lines.by_ref() {
                        if l.trim().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                t if t.starts_with('#') => break,
                other => return Err(format!("unknown token {other:?}")),
            }
        }
    }
    let pick = |e: &Entry| match (&e.login, &e.password) {
        (Some(user), Some(password)) => Some(Credentials {
            user: user.clone(),
            password: password.clone(),
        }),
        _ => None,
    };
    let exact = entries
        .iter()
        .find(|e| e.machine.as_deref() == Some(host))
        .and_then(pick);
    Ok(exact.or_else(|| entries.iter().find(|e| e.machine.is_none()).and_then(pick)))
}

/// `Basic base64(user:password)`.
fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

/// Standard base64 with padding (RFC 4648).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Percent-encode everything but unreserved characters (RFC 3986).
fn path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_escape(s: &str) -> String {
    path_escape(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain:?}");
        }
        assert_eq!(
            basic_auth("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn netrc_picks_the_machine_entry_then_the_default() {
        let text = "machine other login a password pa\n\
                    # a comment\n\
                    macdef init\n  cd /tmp\n  ls\n\n\
                    machine sched.example login bob\n  password s3cret\n\
                    default login anon password guest\n";
        let c = netrc_lookup(text, "sched.example").unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("bob", "s3cret"));
        let c = netrc_lookup(text, "elsewhere").unwrap().unwrap();
        assert_eq!(c.user, "anon");
        assert!(
            netrc_lookup("machine x login y password z", "w")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn netrc_errors_name_the_problem() {
        let e = netrc_lookup("machine", "x").err().unwrap();
        assert!(e.contains("machine"), "{e}");
        let e = netrc_lookup("login bob", "x").err().unwrap();
        assert!(e.contains("before any"), "{e}");
    }

    #[test]
    fn credentials_never_show_the_password() {
        let c = Credentials {
            user: "bob".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn connect_args_never_show_the_password() {
        let a = ConnectArgs {
            scheduler: "http://x:1".into(),
            user: Some("bob".into()),
            password: Some("s3cret".into()),
        };
        let shown = format!("{a:?}");
        assert!(
            shown.contains("bob") && !shown.contains("s3cret"),
            "{shown}"
        );
        let lone = ConnectArgs { user: None, ..a };
        assert!(matches!(
            resolve_credentials(&lone, "x"),
            Err(ClientError::NoUser)
        ));
    }

    #[test]
    fn host_names_are_escaped_in_paths() {
        assert_eq!(path_escape("a b/c"), "a%20b%2Fc");
        assert_eq!(path_escape("host-1.example"), "host-1.example");
    }
}
