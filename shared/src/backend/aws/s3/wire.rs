//! HTTP/1.1 for the lean client ([`super::lean`]): a request's bytes written and its answer
//! read on a connection the request holds for the exchange, connections kept per origin and
//! reused.
//!
//! hyper's pooled client puts a task and two channels between a request and its
//! connection: the request is sent to the connection's task, which writes it, reads the
//! answer and sends it back, each step a wake-up; every request also goes through the
//! pool's checkout (keyed by scheme and authority) and builds an `http::Request` (a URI
//! parsed, a header map hashed). Profiled on the seed set, that machinery was the largest
//! share of bucketclone's CPU (`bench/RESULTS.notes.md`, "One connection per exchange").
//! A copy or a listing needs none of it: one request at a time, an empty body, a small
//! answer or a listing page. Here the request's own future writes the request and reads the
//! answer.
//!
//! What an HTTP/1.1 client must do, and this one does:
//! - answers framed by `Content-Length`, by chunked transfer coding (trailers read and
//!   dropped) or by the connection's close (RFC 9112 §6.3); informational (`1xx`) answers
//!   skipped; `204` and `304` carry no body;
//! - a connection is reused only when its answer was read to the end, nothing more came
//!   after it, and neither side asked to close it (`Connection: close`; HTTP/1.0 without
//!   keep-alive);
//! - a kept connection on which anything came while it sat idle (its close, an answer
//!   nobody asked for, such as a 408) is not used;
//! - a kept connection the server closed just as a request went out fails before any answer
//!   comes: the request is sent once more on a new connection (only then: PUT and GET are idempotent,
//!   RFC 9110 §9.2.2, and no byte of an answer was seen);
//! - limits: an answer's head at most 64 KiB, its body at most 64 MiB, connecting at most
//!   3.1 s (the SDK's default); at most 512 idle connections kept per origin, and those idle
//!   for over a minute closed: when a request would take one, and in every origin of the
//!   process (a bucket no longer cloned included) by a sweep at most every half minute,
//!   made by whichever request ends then;
//! - TCP keepalive (probes after 60 s of silence, every 10 s): a peer that vanished without
//!   closing (a NAT or load balancer that dropped the flow) fails the exchange within a few
//!   minutes, where a read would otherwise wait for ever; a slow answer does not, as the
//!   peer's kernel answers the probes;
//! - `https` over rustls with the machine's roots (and `AWS_CA_BUNDLE`'s), as the SDK's.
//!
//! Every failure is [`Failed`]: no answer, or not a whole one. The lean client reports it as
//! such, and the engine retries it like the SDK's transport errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The SDK's default connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
/// TCP keepalive: the first probe after this much silence, then one per interval (the
/// system's count of them, 9 on Linux).
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// A kept connection idle for longer is closed rather than reused.
const IDLE: Duration = Duration::from_secs(60);
/// At most this many idle connections are kept per origin.
const MAX_IDLE: usize = 512;
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;
/// A connection's read buffer is given back to the allocator when it grew past this (a
/// listing page is up to ~300 KB; a copy's answer a few hundred bytes).
const KEEP_BUFFER: usize = 1024 * 1024;

/// An exchange that did not end in a whole answer.
#[derive(Debug)]
pub(super) struct Failed(pub String);

/// An answer: its status, its `Date` header when it is not a success (the lean client reads
/// the service's clock from an error), its body.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    pub date: Option<String>,
    pub body: Bytes,
}

/// Where requests go: `scheme://host:port`, with its kept connections.
pub(super) struct Origin {
    /// What to connect to: a host name or an IP address (without an IPv6 address's brackets).
    host: String,
    port: u16,
    /// `Some` for `https`.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: Mutex<Vec<Conn>>,
}

/// Which set of kept connections a request goes over. A connection keeps a read buffer as
/// large as the largest answer it has read: a listing page is up to ~300 KB, a copy's answer
/// a few hundred bytes. Sharing connections, every copy connection (hundreds) would end up
/// holding a listing-sized buffer; apart, only the few listing connections do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Pool {
    Copies,
    Listings,
}

impl Origin {
    /// The process's origin for `https`, `host` (as in a URL: an IPv6 address in brackets)
    /// and `port`, in `pool`: made on first use, then shared, so that connections are reused
    /// by every store of the same bucket host. `None` for `https` when the machine's root
    /// certificates cannot be loaded (the SDK then reports why).
    pub fn shared(https: bool, host: &str, port: u16, pool: Pool) -> Option<Arc<Origin>> {
        let key = (https, host.to_string(), port, pool);
        let mut origins = ORIGINS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, o)) = origins.iter().find(|(k, _)| *k == key) {
            return Some(o.clone());
        }
        let origin = Arc::new(Origin::new(https, host, port)?);
        origins.push((key, origin.clone()));
        Some(origin)
    }

    /// Closes every origin's connections that have been idle too long (see [`Origin::keep`]).
    fn sweep_all() {
        let origins: Vec<Arc<Origin>> =
            ORIGINS.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, o)| o.clone()).collect();
        for origin in origins {
            // Kept last to first: the ones idle too long are at the front.
            let mut idle = origin.idle.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = idle.iter().position(|c| c.used.elapsed() < IDLE).unwrap_or(idle.len());
            idle.drain(..fresh);
        }
    }

    fn new(https: bool, host: &str, port: u16) -> Option<Origin> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let tls = match https {
            false => None,
            true => {
                let name = ServerName::try_from(bare.to_string()).ok()?;
                Some((TlsConnector::from(tls_config()?), name))
            }
        };
        Some(Origin { host: bare.to_string(), port, tls, idle: Mutex::new(Vec::new()) })
    }

    /// Writes `request` (a whole HTTP/1.1 request: head and body) and reads the answer, on a
    /// kept connection or a new one.
    pub async fn exchange(&self, request: &[u8]) -> Result<Answer, Failed> {
        loop {
            let (mut conn, kept) = match self.kept() {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            match conn.exchange(request).await {
                Ok((answer, reusable)) => {
                    if reusable {
                        self.keep(conn);
                    }
                    return Ok(answer);
                }
                // A kept connection the server closed while it sat idle: once more, on a new
                // one (each retry takes a fresh connection or a different kept one).
                Err(Exchange::NoAnswer(_)) if kept => continue,
                Err(Exchange::NoAnswer(why) | Exchange::Broken(why)) => return Err(Failed(why)),
            }
        }
    }

    /// The most recently used kept connection not idle for too long; older ones are closed.
    /// Those the server closed, or sent anything on, while they sat idle are closed too: a
    /// request sent on one would fail, or read what came as its answer.
    fn kept(&self) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let conn = idle.pop()?;
                if conn.used.elapsed() >= IDLE {
                    // The rest were used even earlier.
                    idle.clear();
                    return None;
                }
                conn
            };
            if !conn.stirred() {
                return Some(conn);
            }
        }
    }

    /// Keeps `conn` for a later request; every half minute or so, first closes the
    /// connections of every origin that have been idle too long, so that a bucket no longer
    /// cloned does not hold its connections open (hyper's pool runs a timer for that).
    fn keep(&self, mut conn: Conn) {
        conn.used = Instant::now();
        if conn.buf.capacity() > KEEP_BUFFER {
            conn.buf = Vec::new();
        }
        // Milliseconds since the process's first kept connection, at the last sweep.
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        static LAST_SWEEP: AtomicU64 = AtomicU64::new(0);
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64;
        let last = LAST_SWEEP.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= IDLE.as_millis() as u64 / 2
            && LAST_SWEEP.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            Self::sweep_all();
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, Failed> {
        let at = || format!("{}:{}", self.host, self.port);
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| Failed(format!("connect to {}: timed out after {CONNECT_TIMEOUT:?}", at())))?
            .map_err(|e| Failed(format!("connect to {}: {e}", at())))?;
        let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_TIME).with_interval(KEEPALIVE_INTERVAL);
        tcp.set_nodelay(true)
            .and_then(|()| socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive))
            .map_err(|e| Failed(format!("connect to {}: {e}", at())))?;
        let io = match &self.tls {
            None => Io::Plain(tcp),
            Some((tls, name)) => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| Failed(format!("TLS with {}: timed out after {CONNECT_TIMEOUT:?}", at())))?
                    .map_err(|e| Failed(format!("TLS with {}: {e}", at())))?;
                Io::Tls(Box::new(stream))
            }
        };
        Ok(Conn { io, buf: Vec::new(), used: Instant::now() })
    }
}

/// Every origin of the process, by scheme, host, port and pool.
type Key = (bool, String, u16, Pool);
static ORIGINS: Mutex<Vec<(Key, Arc<Origin>)>> = Mutex::new(Vec::new());

/// The rustls configuration of every `https` origin: the machine's roots and
/// `AWS_CA_BUNDLE`'s, as the SDK's client has them.
fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = match super::super::tls::ca_bundle().ok().flatten() {
                Some(bundle) => bundle.root_store(),
                None => {
                    let mut roots = rustls::RootCertStore::empty();
                    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                    roots
                }
            };
            if roots.is_empty() {
                tracing::debug!("no root certificates");
                return None;
            }
            let provider = rustls::crypto::aws_lc_rs::default_provider();
            let config = rustls::ClientConfig::builder_with_provider(provider.into())
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(config))
        })
        .clone()
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

struct Conn {
    io: Io,
    /// The answer as read so far; kept between exchanges for its capacity.
    buf: Vec<u8>,
    used: Instant,
}

/// How an exchange on one connection failed.
#[derive(Debug)]
enum Exchange {
    /// Nothing of an answer came: the request may be sent again on another connection.
    NoAnswer(String),
    /// Part of an answer came, or it was not HTTP.
    Broken(String),
}

/// How an answer's body ends (RFC 9112 §6.3).
#[derive(Debug, PartialEq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    Close,
}

/// An answer's head, as far as framing and keeping the connection go.
#[derive(Debug, PartialEq)]
struct Head {
    len: usize,
    status: u16,
    framing: Framing,
    /// The connection may carry another request after this answer.
    keep_alive: bool,
    date: Option<String>,
}

impl Conn {
    /// Whether anything came on this idle connection since its last answer: bytes, its close
    /// or an error. Costs no system call when nothing did (tokio knows the socket has not
    /// been readable since the last read, which ended the answer).
    fn stirred(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut byte);
        let io = &mut self.io;
        futures::future::poll_fn(|cx| std::pin::Pin::new(&mut *io).poll_read(cx, &mut buf)).now_or_never().is_some()
    }

    /// The answer to `request` and whether this connection may be reused.
    async fn exchange(&mut self, request: &[u8]) -> Result<(Answer, bool), Exchange> {
        self.buf.clear();
        let io_err = |e: std::io::Error| Exchange::NoAnswer(format!("send the request: {e}"));
        self.io.write_all(request).await.map_err(io_err)?;
        self.io.flush().await.map_err(io_err)?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf).map_err(Exchange::Broken)? {
                if (100..200).contains(&head.status) {
                    self.buf.drain(..head.len);
                    continue;
                }
                break head;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Exchange::Broken(format!("an answer's head longer than {MAX_HEAD} bytes")));
            }
            let nothing_yet = self.buf.is_empty();
            match self.read_more().await {
                Ok(0) | Err(_) if nothing_yet => {
                    return Err(Exchange::NoAnswer("the connection closed before an answer came".into()));
                }
                Ok(0) => return Err(Exchange::Broken("the connection closed inside an answer's head".into())),
                Ok(_) => {}
                Err(e) => return Err(Exchange::Broken(format!("read the answer: {e}"))),
            }
        };
        let start = head.len;
        let cut =
            |what: &str| Exchange::Broken(format!("the connection closed inside {what} (status {})", head.status));
        let (body, end) = match head.framing {
            Framing::Empty => (Bytes::new(), start),
            Framing::Length(n) => {
                if n > MAX_BODY {
                    return Err(Exchange::Broken(format!("an answer of {n} bytes: more than {MAX_BODY}")));
                }
                while self.buf.len() < start + n {
                    if self.read_some().await? == 0 {
                        return Err(cut("an answer's body"));
                    }
                }
                (Bytes::copy_from_slice(&self.buf[start..start + n]), start + n)
            }
            Framing::Chunked => loop {
                if let Some(end) = chunked_end(&self.buf[start..]).map_err(Exchange::Broken)? {
                    break (dechunk(&self.buf[start..start + end]), start + end);
                }
                if self.read_some().await? == 0 {
                    return Err(cut("a chunked answer"));
                }
            },
            Framing::Close => {
                while self.read_some().await? > 0 {}
                (Bytes::copy_from_slice(&self.buf[start..]), self.buf.len())
            }
        };
        // Bytes after the answer were never asked for: the connection is not reused.
        let reusable = head.keep_alive && head.framing != Framing::Close && end == self.buf.len();
        Ok((Answer { status: head.status, date: head.date, body }, reusable))
    }

    /// [`Conn::read_more`] past the head: a failure is a broken answer, and a body over
    /// [`MAX_BODY`] too.
    async fn read_some(&mut self) -> Result<usize, Exchange> {
        if self.buf.len() > MAX_HEAD + MAX_BODY {
            return Err(Exchange::Broken(format!("an answer of more than {MAX_BODY} bytes")));
        }
        self.read_more().await.map_err(|e| Exchange::Broken(format!("read the answer: {e}")))
    }

    /// Reads what has come onto the end of `buf`: how many bytes (0: the connection closed).
    async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(self.buf.len().max(8192));
        }
        self.io.read_buf(&mut self.buf).await
    }
}

/// The answer's head at the start of `buf`, `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut answer = httparse::Response::new(&mut headers);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP answer: {e}")),
    };
    let status = answer.code.ok_or("an HTTP answer without a status")?;
    let keep_date = !(200..300).contains(&status);
    let mut length: Option<usize> = None;
    let mut chunked = None;
    let (mut close, mut keep) = (false, false);
    let mut date = None;
    for h in answer.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().map(str::trim).filter(|v| v.bytes().all(|b| b.is_ascii_digit()));
            let n = v.and_then(|v| v.parse::<usize>().ok());
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Err("an answer with an invalid or conflicting Content-Length".into()),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: chunked or not (then the body runs to the close).
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if keep_date && name.eq_ignore_ascii_case("date") {
            date = std::str::from_utf8(h.value).ok().map(str::to_string);
        }
    }
    let framing = match (status, chunked, length) {
        (100..=199 | 204 | 304, _, _) => Framing::Empty,
        (_, Some(true), _) => Framing::Chunked,
        (_, Some(false), _) => Framing::Close,
        (_, None, Some(0)) => Framing::Empty,
        (_, None, Some(n)) => Framing::Length(n),
        (_, None, None) => Framing::Close,
    };
    // HTTP/1.1 keeps the connection unless told not to; HTTP/1.0 only when told to. A body
    // framed both ways leaves the connection unusable after it (RFC 9112 §6.3).
    let keep_alive = !close && (answer.version == Some(1) || keep) && !(chunked.is_some() && length.is_some());
    Ok(Some(Head { len, status, framing, keep_alive, date }))
}

/// Where a chunked body at the start of `data` ends (its last chunk and trailers read), or
/// `None` while incomplete.
fn chunked_end(data: &[u8]) -> Result<Option<usize>, String> {
    let mut at = 0;
    loop {
        let (line, size) = match httparse::parse_chunk_size(&data[at..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err("a chunked answer with an invalid chunk size".into()),
        };
        at += line;
        if size == 0 {
            // Trailer fields, each a line, then an empty line.
            loop {
                let Some(eol) = memchr::memmem::find(&data[at..], b"\r\n") else { return Ok(None) };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        let size =
            usize::try_from(size).ok().filter(|&s| s <= MAX_BODY).ok_or("a chunk larger than an answer may be")?;
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        if &data[at + size..at + size + 2] != b"\r\n" {
            return Err("a chunk not followed by CRLF".into());
        }
        at += size + 2;
    }
}

/// The body of a whole chunked answer that [`chunked_end`] vouched for.
fn dechunk(data: &[u8]) -> Bytes {
    let mut body = Vec::new();
    let mut at = 0;
    while let Ok(httparse::Status::Complete((line, size))) = httparse::parse_chunk_size(&data[at..]) {
        at += line;
        if size == 0 {
            break;
        }
        let size = size as usize;
        body.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
    body.into()
}

/// What both kinds of connection are, so that [`Io`] hands its reads and writes on once.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Io {
    fn stream(self: std::pin::Pin<&mut Self>) -> std::pin::Pin<&mut dyn Stream> {
        match self.get_mut() {
            Io::Plain(s) => std::pin::Pin::new(s),
            Io::Tls(s) => std::pin::Pin::new(s.as_mut()),
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// What a scripted server does on one connection for each request it reads.
    #[derive(Clone)]
    enum Step {
        /// Writes these bytes, `piece` bytes at a time (0: all at once).
        Answer(&'static str, usize),
        /// Closes the connection without answering.
        Close,
        /// A moment after the last answer, without waiting for a request: sends these bytes
        /// (`""`: closes).
        Unasked(&'static str),
    }

    /// A server on a new port: connection `i` follows `script[i]`, one step per request, and
    /// closes after its last step. The origin, and the count of connections and requests.
    async fn scripted(script: Vec<Vec<Step>>) -> (Origin, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (conns, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, r) = (conns.clone(), requests.clone());
        tokio::spawn(async move {
            for steps in script {
                let Ok((mut sock, _)) = listener.accept().await else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                tokio::spawn(async move {
                    for step in steps {
                        if let Step::Unasked(bytes) = step {
                            // After the client has read the answer before, and kept the
                            // connection.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            if bytes.is_empty() {
                                return;
                            }
                            sock.write_all(bytes.as_bytes()).await.unwrap();
                            continue;
                        }
                        let mut head = Vec::new();
                        let mut byte = [0u8; 1];
                        while !head.ends_with(b"\r\n\r\n") {
                            match sock.read(&mut byte).await {
                                Ok(1) => head.push(byte[0]),
                                _ => return,
                            }
                        }
                        r.fetch_add(1, Ordering::SeqCst);
                        match step {
                            Step::Close | Step::Unasked(_) => return,
                            Step::Answer(bytes, 0) => sock.write_all(bytes.as_bytes()).await.unwrap(),
                            Step::Answer(bytes, piece) => {
                                for part in bytes.as_bytes().chunks(piece) {
                                    sock.write_all(part).await.unwrap();
                                    sock.flush().await.unwrap();
                                    tokio::task::yield_now().await;
                                }
                            }
                        }
                    }
                });
            }
        });
        (Origin::new(false, "127.0.0.1", port).unwrap(), conns, requests)
    }

    const GET: &[u8] = b"GET /b/ HTTP/1.1\r\nhost: x\r\n\r\n";
    /// An answer with a two-byte body: `ok`.
    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[tokio::test]
    async fn a_sized_answer_is_read_and_its_connection_reused() {
        let hello = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let (origin, conns, requests) = scripted(vec![vec![Step::Answer(hello, 0), Step::Answer(hello, 2)]]).await;
        for _ in 0..2 {
            let a = origin.exchange(GET).await.unwrap();
            assert_eq!((a.status, &a.body[..], a.date), (200, &b"hello"[..], None));
        }
        assert_eq!((conns.load(Ordering::SeqCst), requests.load(Ordering::SeqCst)), (1, 2));
    }

    #[tokio::test]
    async fn a_chunked_answer_is_decoded_with_its_extensions_and_trailers() {
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nDate: x\r\n\r\n\
                       5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: y\r\n\r\n";
        let (origin, conns, _) = scripted(vec![vec![Step::Answer(chunked, 3), Step::Answer(chunked, 0)]]).await;
        for _ in 0..2 {
            let a = origin.exchange(GET).await.unwrap();
            assert_eq!(&a.body[..], b"hello 0123456789");
            assert_eq!(a.date, None, "the Date of a success is not kept");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_framed_by_the_close_is_read_to_the_end_and_the_connection_dropped() {
        let until_close = "HTTP/1.1 500 Oops\r\nDate: Wed, 01 Jan 2025 00:00:00 GMT\r\n\r\n<Error/>";
        let (origin, conns, _) = scripted(vec![vec![Step::Answer(until_close, 4)], vec![Step::Answer(OK, 0)]]).await;
        let a = origin.exchange(GET).await.unwrap();
        assert_eq!((a.status, &a.body[..]), (500, &b"<Error/>"[..]));
        assert_eq!(a.date.as_deref(), Some("Wed, 01 Jan 2025 00:00:00 GMT"), "an error's Date is kept");
        assert_eq!(&origin.exchange(GET).await.unwrap().body[..], b"ok");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    /// `Connection: close`, HTTP/1.0 without keep-alive, or bytes past the answer: the next
    /// request goes on a new connection.
    #[tokio::test]
    async fn a_connection_is_not_reused_when_either_side_may_not() {
        for first in [
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ] {
            let (origin, conns, _) =
                scripted(vec![vec![Step::Answer(first, 0), Step::Answer(OK, 0)], vec![Step::Answer(OK, 0)]]).await;
            for _ in 0..2 {
                assert_eq!(&origin.exchange(GET).await.unwrap().body[..], b"ok", "{first:?}");
            }
            assert_eq!(conns.load(Ordering::SeqCst), 2, "{first:?}");
        }
        let keep = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
        let (origin, conns, _) = scripted(vec![vec![Step::Answer(keep, 0), Step::Answer(keep, 0)]]).await;
        for _ in 0..2 {
            origin.exchange(GET).await.unwrap();
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1, "HTTP/1.0 with keep-alive is kept");
    }

    #[tokio::test]
    async fn informational_answers_are_skipped_and_empty_ones_have_no_body() {
        let answers = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let empty = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (origin, conns, _) = scripted(vec![vec![Step::Answer(answers, 7), Step::Answer(empty, 0)]]).await;
        let a = origin.exchange(GET).await.unwrap();
        assert_eq!((a.status, a.body.len()), (204, 0));
        assert_eq!(origin.exchange(GET).await.unwrap().status, 200);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    /// A kept connection the server closed is tried once, then the request goes on a new
    /// one; a new connection that closes without answering is a failure, not a loop.
    #[tokio::test]
    async fn a_request_on_a_closed_kept_connection_is_sent_again_on_a_new_one() {
        let (origin, conns, requests) =
            scripted(vec![vec![Step::Answer(OK, 0), Step::Close], vec![Step::Answer(OK, 0)], vec![Step::Close]]).await;
        origin.exchange(GET).await.unwrap();
        assert_eq!(&origin.exchange(GET).await.unwrap().body[..], b"ok");
        assert_eq!((conns.load(Ordering::SeqCst), requests.load(Ordering::SeqCst)), (2, 3));
        let Failed(why) = origin.exchange(GET).await.unwrap_err();
        assert!(why.contains("closed before an answer"), "{why}");
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    /// A kept connection the server closed, or sent an answer nobody asked for on (a server
    /// timing out an idle connection with a 408), is not used: the request goes on a new
    /// connection and gets its own answer.
    #[tokio::test]
    async fn a_kept_connection_stirred_while_idle_is_not_used() {
        for unasked in ["", "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"] {
            // After the unasked bytes the server would answer on the same connection.
            let first = vec![Step::Answer(OK, 0), Step::Unasked(unasked), Step::Answer(OK, 0)];
            let (origin, conns, requests) = scripted(vec![first, vec![Step::Answer(OK, 0)]]).await;
            origin.exchange(GET).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            let a = origin.exchange(GET).await.unwrap();
            assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]), "{unasked:?}");
            assert_eq!((conns.load(Ordering::SeqCst), requests.load(Ordering::SeqCst)), (2, 2), "{unasked:?}");
        }
    }

    /// Part of an answer and then the close: a failure, and the request is not sent again
    /// (the server may have acted on it; the engine decides).
    #[tokio::test]
    async fn an_answer_cut_short_is_a_failure_and_not_sent_again() {
        for cut in [
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n",
            "HTTP/1.1 200 OK\r\nContent-",
        ] {
            let (origin, conns, requests) =
                scripted(vec![vec![Step::Answer(OK, 0), Step::Answer(cut, 0)], vec![Step::Answer(OK, 0)]]).await;
            origin.exchange(GET).await.unwrap();
            let Failed(why) = origin.exchange(GET).await.unwrap_err();
            assert!(why.contains("closed inside"), "{cut:?}: {why}");
            assert_eq!((conns.load(Ordering::SeqCst), requests.load(Ordering::SeqCst)), (1, 2), "{cut:?}");
        }
    }

    #[tokio::test]
    async fn answers_that_are_not_http_or_not_framed_right_are_failures() {
        for (bad, says) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "Content-Length"),
            ("HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok", "Content-Length"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n", "chunk size"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n", "CRLF"),
            ("SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP answer"),
        ] {
            let (origin, _, _) = scripted(vec![vec![Step::Answer(bad, 0)]]).await;
            let Failed(why) = origin.exchange(GET).await.unwrap_err();
            assert!(why.contains(says), "{bad:?}: {why}");
        }
    }

    /// Connections probe a silent peer (keepalive), and send small requests at once (no
    /// Nagle delay).
    #[tokio::test]
    async fn connections_are_kept_alive_and_not_delayed() {
        let (origin, ..) = scripted(vec![vec![]]).await;
        let conn = origin.connect().await.unwrap();
        let Io::Plain(tcp) = &conn.io else { panic!("plain") };
        let sock = socket2::SockRef::from(tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_TIME);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert!(tcp.nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_failure_naming_the_address() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let origin = Origin::new(false, "127.0.0.1", port).unwrap();
        let Failed(why) = origin.exchange(GET).await.unwrap_err();
        assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    }

    /// A kept connection idle for too long is closed instead of used, when a request would
    /// take it and by the sweep over every origin.
    #[tokio::test]
    async fn connections_idle_too_long_are_closed() {
        let (origin, conns, _) = scripted(vec![vec![Step::Answer(OK, 0)], vec![Step::Answer(OK, 0)]]).await;
        let age = |origin: &Origin| {
            let mut idle = origin.idle.lock().unwrap();
            assert_eq!(idle.len(), 1);
            idle[0].used -= IDLE;
        };
        origin.exchange(GET).await.unwrap();
        age(&origin);
        origin.exchange(GET).await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2, "the idle one was not reused");

        let (origin, ..) = scripted(vec![vec![Step::Answer(OK, 0)]]).await;
        let shared = Origin::shared(false, "127.0.0.1", origin.port, Pool::Copies).unwrap();
        shared.exchange(GET).await.unwrap();
        Origin::sweep_all();
        assert_eq!(shared.idle.lock().unwrap().len(), 1, "a connection just used is kept");
        age(&shared);
        Origin::sweep_all();
        assert_eq!(shared.idle.lock().unwrap().len(), 0);
    }

    #[test]
    fn origins_are_shared_per_host_port_scheme_and_pool() {
        let a = Origin::shared(false, "h.example", 1, Pool::Copies).unwrap();
        assert!(Arc::ptr_eq(&a, &Origin::shared(false, "h.example", 1, Pool::Copies).unwrap()));
        for other in [
            Origin::shared(false, "h.example", 1, Pool::Listings),
            Origin::shared(false, "h.example", 2, Pool::Copies),
            Origin::shared(false, "g.example", 1, Pool::Copies),
        ] {
            assert!(!Arc::ptr_eq(&a, &other.unwrap()));
        }
        let v6 = Origin::new(false, "[::1]", 80).unwrap();
        assert_eq!(v6.host, "::1");
    }

    /// Chunk size lines in lowercase or uppercase hex, with or without extensions.
    fn encode_chunked(body: &[u8], sizes: &[usize], upper: bool, ext: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).clamp(1, rest.len());
            let size = if upper { format!("{n:X}") } else { format!("{n:x}") };
            out.extend_from_slice(size.as_bytes());
            if ext {
                out.extend_from_slice(b"; name=\"v\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&rest[..n]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    proptest! {
        /// Any chunking of any body decodes to that body, whole only at its very end: every
        /// shorter prefix is incomplete, never a body.
        #[test]
        fn chunked_bodies_decode_to_what_was_sent(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            sizes in proptest::collection::vec(1usize..300, 1..6),
            upper: bool,
            ext: bool,
        ) {
            let wire = encode_chunked(&body, &sizes, upper, ext);
            prop_assert_eq!(chunked_end(&wire), Ok(Some(wire.len())));
            prop_assert_eq!(&dechunk(&wire)[..], &body[..]);
            for cut in 0..wire.len() {
                prop_assert_eq!(chunked_end(&wire[..cut]), Ok(None), "cut at {}", cut);
            }
        }
    }
}
