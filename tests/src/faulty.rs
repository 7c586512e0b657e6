//! Fault injection for tests: [`ThrottlingStore`], an object store that answers
//! `Throttled` like S3's per-prefix request limit; [`SlowStore`], slow writes that count
//! concurrent writes of one key; [`LostRenewals`], a queue whose lease renewals never
//! arrive; [`FailingEndpoint`], an HTTP server that fails every request with one status
//! and counts them (to count what an SDK client really sends); and [`KmsLike`], a store
//! whose ETags are not MD5s, as with SSE-KMS.

mod kms;
pub use kms::{KmsEtags, KmsLike};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use shared::model::ObjectEntry;
use shared::objstore::{Body, Checksums, CopySource, Deleted, ListPage, ListRequest, ObjectStore};
use shared::objstore::{Download, ObjectAttrs, WriteOptions};
use shared::queue::{Delivery, LeaseId, QueueDepth, WorkQueue};
use shared::{Error, Result};

/// Wraps a store; while throttling is on, a copy or put arriving when `max_in_flight` of
/// them are already running is refused at once with `Throttled` (503 SlowDown). Admitted
/// writes take `latency` more, so concurrency is visible; everything else passes through.
pub type ThrottlingStore = Gated<Throttle>;

/// The gate of a [`ThrottlingStore`].
pub struct Throttle {
    max_in_flight: usize,
    latency: Duration,
    on: AtomicBool,
    in_flight: AtomicUsize,
    throttled: AtomicU64,
    written: AtomicU64,
    peak: AtomicUsize,
}

/// Decrements a counter when dropped.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl ThrottlingStore {
    /// Throttling is on from the start.
    pub fn new(inner: Arc<dyn ObjectStore>, max_in_flight: usize, latency: Duration) -> Self {
        Gated {
            inner,
            gate: Throttle {
                max_in_flight,
                latency,
                on: AtomicBool::new(true),
                in_flight: AtomicUsize::new(0),
                throttled: AtomicU64::new(0),
                written: AtomicU64::new(0),
                peak: AtomicUsize::new(0),
            },
        }
    }
}

impl Throttle {
    /// Turns throttling on or off (writes still take `latency`).
    pub fn set_throttling(&self, on: bool) {
        self.on.store(on, SeqCst);
    }
    /// Writes refused with `Throttled` so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(SeqCst)
    }
    /// Writes passed on that succeeded.
    pub fn written(&self) -> u64 {
        self.written.load(SeqCst)
    }
    /// The most writes admitted at once.
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(SeqCst)
    }
}

impl WriteGate for Throttle {
    async fn write<'a, T: Send + 'a>(
        &'a self,
        what: &'a str,
        key: &'a str,
        op: impl Future<Output = Result<T>> + Send + 'a,
    ) -> Result<T> {
        let n = self.in_flight.fetch_add(1, SeqCst) + 1;
        let _running = Running(&self.in_flight);
        if self.on.load(SeqCst) && n > self.max_in_flight {
            self.throttled.fetch_add(1, SeqCst);
            return Err(Error::Throttled(format!("{what} {key}: 503 SlowDown (injected: {n} in flight)")));
        }
        self.peak.fetch_max(n, SeqCst);
        tokio::time::sleep(self.latency).await;
        let r = op.await;
        if r.is_ok() {
            self.written.fetch_add(1, SeqCst);
        }
        r
    }
}

/// What a [`Gated`] store does around each write (a copy or a put) of `key`.
pub trait WriteGate: Send + Sync + 'static {
    fn write<'a, T: Send + 'a>(
        &'a self,
        what: &'a str,
        key: &'a str,
        op: impl Future<Output = Result<T>> + Send + 'a,
    ) -> impl Future<Output = Result<T>> + Send + 'a;
}

/// Wraps a store: every write goes through the gate `G`, everything else passes through.
/// Derefs to the gate, for its counters and switches.
pub struct Gated<G> {
    inner: Arc<dyn ObjectStore>,
    gate: G,
}

impl<G> std::ops::Deref for Gated<G> {
    type Target = G;
    fn deref(&self) -> &G {
        &self.gate
    }
}

#[async_trait::async_trait]
impl<G: WriteGate> ObjectStore for Gated<G> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn copy_source(&self) -> Option<CopySource> {
        self.inner.copy_source()
    }
    async fn check(&self) -> Result<()> {
        self.inner.check().await
    }
    async fn list(&self, req: &ListRequest) -> Result<ListPage> {
        self.inner.list(req).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectEntry>> {
        self.inner.head(key).await
    }
    async fn checksums(&self, key: &str) -> Result<Checksums> {
        self.inner.checksums(key).await
    }
    async fn copy_from(
        &self,
        source: &CopySource,
        src: &ObjectEntry,
        dst_key: &str,
        w: &WriteOptions,
    ) -> Result<ObjectEntry> {
        self.gate.write("copy", dst_key, self.inner.copy_from(source, src, dst_key, w)).await
    }
    async fn get(&self, key: &str, if_etag: Option<&str>) -> Result<Download> {
        self.inner.get(key, if_etag).await
    }
    async fn put(
        &self,
        key: &str,
        body: Body,
        size: u64,
        attrs: &ObjectAttrs,
        w: &WriteOptions,
    ) -> Result<ObjectEntry> {
        self.gate.write("put", key, self.inner.put(key, body, size, attrs, w)).await
    }
    async fn delete(&self, key: &str, if_etag: Option<&str>) -> Result<Deleted> {
        self.inner.delete(key, if_etag).await
    }
    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }
    async fn archive(&self, key: &str) -> Result<shared::objstore::Archive> {
        self.inner.archive(key).await
    }
    async fn restore(&self, key: &str, days: u32) -> Result<()> {
        self.inner.restore(key, days).await
    }
}

/// An HTTP endpoint on 127.0.0.1 answering every request with `status` and an empty body,
/// one request per connection. Stops when dropped.
pub struct FailingEndpoint {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl FailingEndpoint {
    pub async fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let server = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let _ = answer(conn, status, &counted).await;
                });
            }
        });
        FailingEndpoint { addr, requests, server }
    }
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(SeqCst)
    }
}

impl Drop for FailingEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads one request (head and body), counts it, answers `status`, closes.
async fn answer(conn: tokio::net::TcpStream, status: u16, counted: &AtomicU64) -> std::io::Result<()> {
    let mut conn = BufReader::new(conn);
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Ok(()); // closed before a whole request
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await?;
    counted.fetch_add(1, SeqCst);
    let reply = format!("HTTP/1.1 {status} Injected\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    conn.get_mut().write_all(reply.as_bytes()).await?;
    conn.get_mut().shutdown().await
}

/// Wraps a store; every write (copy or put) takes `latency` more, and the store counts
/// writes and *overlaps*: writes of a key that began while another write of the same key
/// was still running. One worker writes a key once per page, so an overlap means two
/// workers were copying the same segment at the same time.
pub type SlowStore = Gated<Slow>;

/// The gate of a [`SlowStore`].
pub struct Slow {
    latency: Duration,
    running: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    begun: AtomicU64,
    writes: AtomicU64,
    overlaps: AtomicU64,
}

impl SlowStore {
    pub fn new(inner: Arc<dyn ObjectStore>, latency: Duration) -> Self {
        Gated {
            inner,
            gate: Slow {
                latency,
                running: Default::default(),
                begun: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                overlaps: AtomicU64::new(0),
            },
        }
    }
}

impl Slow {
    /// Writes begun (finished or not).
    pub fn begun(&self) -> u64 {
        self.begun.load(SeqCst)
    }
    /// Writes that succeeded.
    pub fn writes(&self) -> u64 {
        self.writes.load(SeqCst)
    }
    /// Writes that began while another write of the same key was running.
    pub fn overlaps(&self) -> u64 {
        self.overlaps.load(SeqCst)
    }
}

impl WriteGate for Slow {
    async fn write<'a, T: Send + 'a>(
        &'a self,
        _what: &'a str,
        key: &'a str,
        op: impl Future<Output = Result<T>> + Send + 'a,
    ) -> Result<T> {
        {
            let mut running = self.running.lock().expect("lock");
            let n = running.entry(key.to_string()).or_default();
            if *n > 0 {
                self.overlaps.fetch_add(1, SeqCst);
            }
            *n += 1;
        }
        self.begun.fetch_add(1, SeqCst);
        tokio::time::sleep(self.latency).await;
        let r = op.await;
        *self.running.lock().expect("lock").get_mut(key).expect("counted above") -= 1;
        if r.is_ok() {
            self.writes.fetch_add(1, SeqCst);
        }
        r
    }
}

/// Wraps a queue; renewals are lost, as when a worker is cut off from the queue or paused:
/// its leases expire while it works, and the queue hands its messages to another worker.
/// [`LostRenewals::silent`]: answered Ok and never sent, so the worker never learns;
/// [`LostRenewals::late`]: sent that much late, after the lease lapsed, so the queue
/// answers that it was lost.
pub struct LostRenewals {
    queue: Arc<dyn WorkQueue>,
    late: Option<Duration>,
}

impl LostRenewals {
    pub fn silent(queue: Arc<dyn WorkQueue>) -> Self {
        LostRenewals { queue, late: None }
    }
    pub fn late(queue: Arc<dyn WorkQueue>, by: Duration) -> Self {
        LostRenewals { queue, late: Some(by) }
    }
}

#[async_trait::async_trait]
impl WorkQueue for LostRenewals {
    async fn push(&self, bodies: &[String]) -> Result<()> {
        self.queue.push(bodies).await
    }
    async fn pull(&self, max: usize, lease: Duration, wait: Duration) -> Result<Vec<Delivery>> {
        self.queue.pull(max, lease, wait).await
    }
    async fn renew(&self, lease: &LeaseId, lease_for: Duration) -> Result<()> {
        match self.late {
            None => Ok(()),
            Some(by) => {
                tokio::time::sleep(by).await;
                self.queue.renew(lease, lease_for).await
            }
        }
    }
    async fn ack(&self, lease: &LeaseId) -> Result<()> {
        self.queue.ack(lease).await
    }
    async fn release(&self, lease: &LeaseId) -> Result<()> {
        self.queue.release(lease).await
    }
    async fn depth(&self) -> Result<QueueDepth> {
        self.queue.depth().await
    }
    async fn dead_letters(&self, max: usize) -> Result<Vec<String>> {
        self.queue.dead_letters(max).await
    }
}
