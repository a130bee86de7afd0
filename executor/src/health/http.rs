//! HTTP health checks and the HTTP lifecycle (teardown) endpoints.
//!
//! [`HttpProbe`] is a small HTTP/1.1 client made for one job: `GET` one URL on the loopback
//! again and again, as cheaply as it can be done. It keeps one connection open from check to
//! check, sends a request built once as bytes, and reads the response into one buffer that it
//! also keeps; no task is spawned and nothing is allocated per check while the server keeps the
//! connection alive. Its response parser is strict and small:
//!
//! * the status line (`HTTP/1.1` or `HTTP/1.0`, three digits, an optional reason); interim
//!   `1xx` responses are skipped;
//! * header lines, of which `Content-Length`, `Transfer-Encoding` and `Connection` are read;
//!   the head is at most [`MAX_HEAD_BYTES`];
//! * the body, framed as RFC 9112 section 6.3 says: none (`1xx`, `204`, `304`), chunked,
//!   `Content-Length`, or up to the end of the connection. At most [`MAX_BODY_BYTES`] of it are
//!   read; a longer body is reported as truncated and its connection dropped, not drained.
//!
//! Anything else (a garbage status line, a header line without a colon, a bad chunk size)
//! fails the check with a reason saying what was wrong.
//!
//! The connection is kept after a complete response unless the server asked to close it, the
//! body ran to the end of the connection, or bytes followed the response. Before a kept
//! connection is reused it is looked at without blocking: if the server closed it (or sent
//! something unasked) while it was idle, a new one is made. When a reused connection still
//! closes before any byte of the response arrives — the server closed it as the request went
//! out — the request is sent once more on a new connection (a `GET` may be repeated).
//!
//! Every check is bounded in time: `timeout` covers connecting, sending, waiting for the head
//! and reading the body, so a server that accepts and never answers fails the check at the
//! timeout (and its connection is dropped).
//!
//! [`post_lifecycle`] posts to `/quitquitquit` or `/abortabortabort` on a fresh connection and
//! says whether it could connect at all (DESIGN section 6: a wait is skipped when its POST could
//! not connect). It reads the response's head with the same parser.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

#[cfg(test)]
mod tests;

/// Bytes of a response body read at most.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// Bytes of a response head (status line and headers) accepted at most; also the size of the
/// read buffer, so it bounds any one line of a chunked body's framing too.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The characters of a body quoted in a failure reason.
const QUOTED_CHARS: usize = 32;

/// The characters of a malformed line quoted in a failure reason.
const QUOTED_LINE_CHARS: usize = 40;

/// A response with a bounded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// True when the body had more than [`MAX_BODY_BYTES`] (the rest was not read).
    pub truncated: bool,
}

/// A keep-alive `GET` of one URL, `http://127.0.0.1:<port><endpoint>`.
#[derive(Debug)]
pub struct HttpProbe {
    addr: SocketAddr,
    /// The URL, for failure reasons.
    url: String,
    /// The whole request, built once.
    request: Box<[u8]>,
    /// The connection kept from the last exchange, if the server let it be kept.
    conn: Option<TcpStream>,
    /// The read buffer, [`MAX_HEAD_BYTES`] long.
    buf: Box<[u8]>,
    /// The last response; its body's allocation is reused.
    response: BoundedResponse,
}

impl HttpProbe {
    /// A probe of `http://127.0.0.1:<port><endpoint>`. `endpoint` must be a request path
    /// (`/health`, `/health?deep=1`): starting with `/`, visible ASCII only; a `#fragment` is
    /// left out, as no client sends it.
    pub fn new(port: u16, endpoint: &str) -> Result<Self, super::HealthError> {
        let endpoint =
            request_target(endpoint).map_err(|problem| super::HealthError::Endpoint {
                endpoint: endpoint.to_owned(),
                problem,
            })?;
        let request = format!(
            "GET {endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             User-Agent: hearth-health-checker\r\n\r\n"
        );
        Ok(HttpProbe {
            addr: loopback(port),
            url: format!("http://127.0.0.1:{port}{endpoint}"),
            request: request.into_bytes().into_boxed_slice(),
            conn: None,
            buf: vec![0; MAX_HEAD_BYTES].into_boxed_slice(),
            response: BoundedResponse {
                status: 0,
                body: Vec::new(),
                truncated: false,
            },
        })
    }

    /// The URL this probe gets.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `GET` the URL within `timeout`; returns the status and at most [`MAX_BODY_BYTES`] of the
    /// body, and whether the body was longer.
    pub async fn get(&mut self, timeout: Duration) -> Result<&BoundedResponse, String> {
        let deadline = pin!(tokio::time::sleep(timeout));
        self.get_until(deadline, timeout).await
    }

    /// [`get`](Self::get), bounded by `deadline`, a timer that the caller set `timeout` after
    /// the start of the check (`timeout` is for the failure reason).
    pub async fn get_until(
        &mut self,
        deadline: Pin<&mut Sleep>,
        timeout: Duration,
    ) -> Result<&BoundedResponse, String> {
        tokio::select! {
            biased;
            done = self.exchange() => done.map(|()| &self.response),
            // The connection was taken out of `self.conn` by the exchange: dropped with it.
            () = deadline => Err(format!("timed out after {}", secs(timeout))),
        }
    }

    /// One request and its response, on the kept connection if it is still good, else (or when
    /// the server closed it as the request went out) on a new one.
    async fn exchange(&mut self) -> Result<(), String> {
        if let Some(stream) = self.conn.take().filter(idle_and_open) {
            match self.exchange_on(stream).await {
                Err(Failure {
                    before_response: true,
                    ..
                }) => {}
                done => return done.map_err(|f| f.reason),
            }
        }
        let stream = connect(self.addr)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        self.exchange_on(stream).await.map_err(|f| f.reason)
    }

    async fn exchange_on(&mut self, mut stream: TcpStream) -> Result<(), Failure> {
        if let Err(e) = stream.write_all(&self.request).await {
            return Err(Failure {
                reason: format!("sending the request: {e}"),
                before_response: true,
            });
        }
        let mut reader = Reader::new(&mut stream, &mut self.buf);
        let head = reader.final_head().await?;
        let response = &mut self.response;
        response.status = head.status;
        response.body.clear();
        let complete = match head.framing {
            Framing::Empty => true,
            Framing::Length(len) => reader.body_of_length(len, &mut response.body).await?,
            Framing::Chunked => reader.chunked_body(&mut response.body).await?,
            Framing::UntilClose => reader.body_until_close(&mut response.body).await?,
        };
        response.truncated = !complete;
        // Bytes after the response (nothing was asked for): the connection cannot be trusted.
        if complete && head.keep_alive && reader.pending().is_empty() {
            self.conn = Some(stream);
        }
        Ok(())
    }
}

/// Whether a kept connection may be reused: nothing has arrived on it since the last response
/// (no end of stream, no unasked bytes, no error). Does not block; costs no system call unless
/// the runtime saw the socket become readable.
fn idle_and_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// What of `endpoint` goes into a request line: all of it but a `#fragment`.
fn request_target(endpoint: &str) -> Result<&str, &'static str> {
    if !endpoint.starts_with('/') {
        return Err("it must start with '/'");
    }
    if !endpoint.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("it must be visible ASCII, without spaces");
    }
    Ok(endpoint
        .split_once('#')
        .map_or(endpoint, |(target, _)| target))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    // One write per request: Nagle's algorithm would only ever delay it.
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Why one exchange failed.
#[derive(Debug)]
struct Failure {
    reason: String,
    /// Nothing of a response had arrived when the connection failed or closed: on a reused
    /// connection, the server most likely closed it as the request went out.
    before_response: bool,
}

impl Failure {
    fn new(reason: String) -> Self {
        Failure {
            reason,
            before_response: false,
        }
    }

    fn malformed(what: String) -> Self {
        Failure::new(format!("malformed response: {what}"))
    }
}

/// How the body of a response is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`1xx`, `204`, `304`).
    Empty,
    Length(u64),
    Chunked,
    /// The body is the rest of the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    framing: Framing,
    /// The connection may carry the next request after this response's body.
    keep_alive: bool,
    /// Bytes of the head, its blank line included.
    len: usize,
}

/// The next line of `data` from `from`: its content (line end excluded; a bare `\n` is taken
/// as a line end too) and the index just past it; `None` when no line end has arrived yet.
fn next_line(data: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = data.get(from..)?;
    let nl = memchr::memchr(b'\n', rest)?;
    let line = &rest[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, from + nl + 1))
}

/// A line quoted in a failure reason, shortened.
fn quote(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut shown: String = text.chars().take(QUOTED_LINE_CHARS).collect();
    if text.chars().count() > QUOTED_LINE_CHARS {
        shown.push_str("...");
    }
    format!("{shown:?}")
}

/// How every status line starts.
const STATUS_PREFIX: &[u8] = b"HTTP/1.";

/// Parse a response head at the start of `data`: `Ok(None)` while it is incomplete.
fn parse_head(data: &[u8]) -> Result<Option<Head>, String> {
    let Some((status_line, mut at)) = next_line(data, 0) else {
        // Not a whole line yet; but what has come must be the start of a status line (a server
        // answering something else is told at once, not at the timeout).
        let n = data.len().min(STATUS_PREFIX.len());
        if data[..n] != STATUS_PREFIX[..n] {
            return Err(format!("bad status line {}", quote(data)));
        }
        return Ok(None);
    };
    let (status, http11) = parse_status_line(status_line)?;
    let mut length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_asked = false;
    loop {
        let Some((line, next)) = next_line(data, at) else {
            return Ok(None);
        };
        at = next;
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(format!("folded header line {}", quote(line)));
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(format!("header line without a colon: {}", quote(line)));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(format!("bad header name in {}", quote(line)));
        }
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value)
                .ok_or_else(|| format!("bad Content-Length {}", quote(value)))?;
            if length.is_some_and(|m| m != n) {
                return Err("conflicting Content-Length headers".to_owned());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            // Only the last coding matters: chunked must be applied last to frame the body.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or(value);
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_asked |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if transfer_encoding {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let persistent = if http11 {
        !close
    } else {
        keep_alive_asked && !close
    };
    // Both headers: Transfer-Encoding wins, and the connection must be closed after (RFC 9112
    // section 6.3, item 3).
    let keep_alive =
        persistent && framing != Framing::UntilClose && !(transfer_encoding && length.is_some());
    Ok(Some(Head {
        status,
        framing,
        keep_alive,
        len: at,
    }))
}

/// `HTTP/1.1 200 OK` → `(200, true)`; the reason phrase may be missing.
fn parse_status_line(line: &[u8]) -> Result<(u16, bool), String> {
    let bad = || format!("bad status line {}", quote(line));
    let (http11, rest) = if let Some(rest) = line.strip_prefix(b"HTTP/1.1 ") {
        (true, rest)
    } else if let Some(rest) = line.strip_prefix(b"HTTP/1.0 ") {
        (false, rest)
    } else {
        return Err(bad());
    };
    let code = rest.get(..3).ok_or_else(bad)?;
    if !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return Err(bad());
    }
    if rest.len() > 3 && rest[3] != b' ' {
        return Err(bad());
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    Ok((status, http11))
}

/// A token byte of a header name (RFC 9110 section 5.6.2).
fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTES[usize::from(b)]
}

/// [`is_token_byte`] as a table: every byte of every header name is looked up.
const TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'!' | b'#'..=b'\'' | b'*' | b'+')
            || matches!(c, b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        b += 1;
    }
    table
};

/// A non-empty run of decimal digits that fits in a `u64`.
fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The size on a chunk-size line (`1a`, `1a;name=value`).
fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || !(rest.is_empty() || rest[0] == b';') {
        return Err(format!("bad chunk size line {}", quote(line)));
    }
    line[..digits]
        .iter()
        .try_fold(0u64, |n, &b| {
            let d = char::from(b).to_digit(16)?;
            n.checked_mul(16)?.checked_add(u64::from(d))
        })
        .ok_or_else(|| format!("chunk size too large in {}", quote(line)))
}

/// Reads one response from a stream through a buffer: the bytes in `buf[start..end]` have
/// arrived and are not consumed yet.
struct Reader<'a> {
    stream: &'a mut TcpStream,
    buf: &'a mut [u8],
    start: usize,
    end: usize,
    /// Bytes received so far.
    received: usize,
}

impl<'a> Reader<'a> {
    fn new(stream: &'a mut TcpStream, buf: &'a mut [u8]) -> Self {
        Reader {
            stream,
            buf,
            start: 0,
            end: 0,
            received: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Read more; `false` at the end of the stream. The buffer must not be full of pending
    /// bytes (the callers bound what they wait for below its size).
    async fn fill(&mut self) -> Result<bool, Failure> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            return Err(Failure::malformed(format!(
                "a line longer than {} bytes",
                self.buf.len()
            )));
        }
        match self.stream.read(&mut self.buf[self.end..]).await {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.end += n;
                self.received += n;
                Ok(true)
            }
            Err(e) => Err(Failure {
                reason: format!("reading the response: {e}"),
                before_response: self.received == 0,
            }),
        }
    }

    /// [`fill`](Self::fill), where the end of the stream is a failure: `what` was cut short.
    async fn fill_or_fail(&mut self, what: &str) -> Result<(), Failure> {
        if self.fill().await? {
            return Ok(());
        }
        Err(Failure {
            reason: format!("connection closed {what}"),
            before_response: self.received == 0,
        })
    }

    /// The head of the final response (interim `1xx` ones are skipped), consumed.
    async fn final_head(&mut self) -> Result<Head, Failure> {
        loop {
            let head = loop {
                if let Some(head) = parse_head(self.pending()).map_err(Failure::malformed)? {
                    break head;
                }
                if self.pending().len() >= self.buf.len() {
                    return Err(Failure::new(format!(
                        "response head larger than {} bytes",
                        self.buf.len()
                    )));
                }
                let what = if self.received == 0 {
                    "before the response"
                } else {
                    "in the middle of the response head"
                };
                self.fill_or_fail(what).await?;
            };
            self.start += head.len;
            if !(100..200).contains(&head.status) {
                return Ok(head);
            }
        }
    }

    /// The next line (its line end excluded) as `parse` reads it; consumed when it parses.
    async fn line<T>(
        &mut self,
        what: &str,
        parse: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, Failure> {
        loop {
            if let Some((line, next)) = next_line(self.pending(), 0) {
                let parsed = parse(line).map_err(Failure::malformed)?;
                self.start += next;
                return Ok(parsed);
            }
            self.fill_or_fail(what).await?;
        }
    }

    /// Move up to `n` pending bytes (reading as needed) into `body`.
    async fn copy(&mut self, mut n: usize, body: &mut Vec<u8>, what: &str) -> Result<(), Failure> {
        while n > 0 {
            if self.start == self.end {
                self.fill_or_fail(what).await?;
            }
            let take = n.min(self.end - self.start);
            body.extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take;
        }
        Ok(())
    }

    /// A body of `len` bytes: `true` when all of it fit in [`MAX_BODY_BYTES`].
    async fn body_of_length(&mut self, len: u64, body: &mut Vec<u8>) -> Result<bool, Failure> {
        let fits = len <= MAX_BODY_BYTES as u64;
        let want = if fits {
            usize::try_from(len).unwrap_or(MAX_BODY_BYTES)
        } else {
            MAX_BODY_BYTES
        };
        self.copy(want, body, "before the end of the body").await?;
        Ok(fits)
    }

    /// A chunked body: `true` when all of it fit in [`MAX_BODY_BYTES`] (its trailers are read
    /// and ignored).
    async fn chunked_body(&mut self, body: &mut Vec<u8>) -> Result<bool, Failure> {
        const CUT: &str = "in the middle of a chunked body";
        loop {
            let size = self.line(CUT, parse_chunk_size).await?;
            if size == 0 {
                break;
            }
            let room = MAX_BODY_BYTES - body.len();
            match usize::try_from(size) {
                Ok(size) if size <= room => self.copy(size, body, CUT).await?,
                _ => {
                    self.copy(room, body, CUT).await?;
                    return Ok(false);
                }
            }
            self.line(CUT, |line| {
                if line.is_empty() {
                    Ok(())
                } else {
                    Err("chunk data longer than its size".to_owned())
                }
            })
            .await?;
        }
        let mut trailers = 0;
        loop {
            let len = self.line(CUT, |line| Ok(line.len())).await?;
            if len == 0 {
                return Ok(true);
            }
            trailers += len;
            if trailers > MAX_HEAD_BYTES {
                return Err(Failure::new(format!(
                    "trailers larger than {MAX_HEAD_BYTES} bytes"
                )));
            }
        }
    }

    /// A body delimited by the end of the connection: `true` when all of it fit in
    /// [`MAX_BODY_BYTES`].
    async fn body_until_close(&mut self, body: &mut Vec<u8>) -> Result<bool, Failure> {
        loop {
            let room = MAX_BODY_BYTES - body.len();
            let pending = self.end - self.start;
            if pending > room {
                body.extend_from_slice(&self.buf[self.start..self.start + room]);
                self.start += room;
                return Ok(false);
            }
            body.extend_from_slice(self.pending());
            self.start = self.end;
            if !self.fill().await? {
                return Ok(true);
            }
        }
    }
}

/// One HTTP health check: `GET http://127.0.0.1:<port><endpoint>`.
#[derive(Debug)]
pub struct HttpChecker {
    probe: HttpProbe,
    expected_response: String,
    expected_response_code: u16,
    timeout: Duration,
}

impl HttpChecker {
    pub fn new(
        port: u16,
        endpoint: &str,
        expected_response: &str,
        expected_response_code: u16,
        timeout: Duration,
    ) -> Result<Self, super::HealthError> {
        Ok(HttpChecker {
            probe: HttpProbe::new(port, endpoint)?,
            expected_response: expected_response.trim().to_lowercase(),
            expected_response_code,
            timeout,
        })
    }

    /// The URL checked.
    pub fn url(&self) -> &str {
        self.probe.url()
    }

    /// Run the check: `Ok(())` when healthy, else the reason.
    pub async fn check(&mut self) -> Result<(), String> {
        let deadline = pin!(tokio::time::sleep(self.timeout));
        self.check_until(deadline).await
    }

    /// [`check`](Self::check), bounded by `deadline`: a timer the caller set the check's
    /// timeout after its start.
    pub async fn check_until(&mut self, deadline: Pin<&mut Sleep>) -> Result<(), String> {
        match self.probe.get_until(deadline, self.timeout).await {
            Ok(response) => judge(
                response,
                &self.expected_response,
                self.expected_response_code,
            ),
            Err(e) => Err(format!("Failed to signal {}: {e}", self.probe.url())),
        }
    }
}

/// Aurora's rule: the body (trimmed, lower-cased) must equal `expected` when it is non-empty,
/// and the status must equal `expected_code` when it is non-zero. `expected` is already
/// lower-cased.
pub fn judge(response: &BoundedResponse, expected: &str, expected_code: u16) -> Result<(), String> {
    if !expected.is_empty() && !body_matches(response, expected) {
        let got = String::from_utf8_lossy(&response.body)
            .trim()
            .to_lowercase();
        let mut shown: String = got.chars().take(QUOTED_CHARS).collect();
        if response.truncated || got.chars().count() > QUOTED_CHARS {
            shown.push_str("...");
        }
        return Err(format!(
            "Response differs from expected response (expected {expected:?}, got {shown:?})"
        ));
    }
    if expected_code != 0 && response.status != expected_code {
        return Err(format!(
            "Response code differs from expected response (expected {expected_code}, got {})",
            response.status
        ));
    }
    Ok(())
}

/// Whether the body, trimmed and lower-cased, is `expected` (lower-cased). An ASCII body (the
/// usual `ok`) is compared in place, without building its lower-cased copy.
fn body_matches(response: &BoundedResponse, expected: &str) -> bool {
    if response.truncated {
        return false;
    }
    match std::str::from_utf8(&response.body) {
        Ok(text) if text.is_ascii() => text.trim().eq_ignore_ascii_case(expected),
        _ => {
            String::from_utf8_lossy(&response.body)
                .trim()
                .to_lowercase()
                == expected
        }
    }
}

/// Outcome of a lifecycle POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// The connection was made; `status` is the response's, or `None` when none came in time.
    Connected { status: Option<u16> },
    /// No connection (refused, unreachable, or not within the timeout): why.
    Refused { detail: String },
}

impl PostOutcome {
    pub fn connected(&self) -> bool {
        matches!(self, PostOutcome::Connected { .. })
    }
}

/// `POST http://127.0.0.1:<port><endpoint>` with an empty body, on a fresh connection, within
/// `timeout` overall. The status is that of the response's head; the body is not read.
pub async fn post_lifecycle(port: u16, endpoint: &str, timeout: Duration) -> PostOutcome {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = match tokio::time::timeout_at(deadline, connect(loopback(port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return PostOutcome::Refused {
                detail: e.to_string(),
            };
        }
        Err(_) => {
            return PostOutcome::Refused {
                detail: format!("connect timed out after {}", secs(timeout)),
            };
        }
    };
    let Ok(endpoint) = request_target(endpoint) else {
        return PostOutcome::Connected { status: None };
    };
    let request = format!(
        "POST {endpoint} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: hearth-lifecycle\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let exchange = async {
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut buf = vec![0; MAX_HEAD_BYTES];
        let head = Reader::new(&mut stream, &mut buf).final_head().await.ok()?;
        Some(head.status)
    };
    let status = tokio::time::timeout_at(deadline, exchange)
        .await
        .ok()
        .flatten();
    PostOutcome::Connected { status }
}
