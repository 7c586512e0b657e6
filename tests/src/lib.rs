//! Helpers shared by the integration tests: the AWS emulator (moto) and unique names.
//!
//! The emulator's address comes from `BUCKETCLONE_TEST_ENDPOINT` (default
//! `http://127.0.0.1:5000`); `.ci/run` and `scripts/test.sh` start it. A test that needs it
//! fails with a clear message when it is not running: it is never silently skipped.

pub mod bed;
pub mod faulty;
pub mod hooked_jobs;
pub mod procs;

use shared::backend::aws::AwsContext;

/// The emulator's URL.
pub fn endpoint() -> String {
    std::env::var("BUCKETCLONE_TEST_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".to_string())
}

/// An AWS context pointed at the running emulator. Panics with instructions if it is down.
pub async fn moto() -> AwsContext {
    let url = endpoint();
    let hostport = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    if tokio::net::TcpStream::connect(&hostport).await.is_err() {
        panic!(
            "the AWS emulator is not running at {url}: start it with `moto_server -H 127.0.0.1 -p 5000` (scripts/test.sh does)"
        );
    }
    AwsContext::for_emulator(&url).await
}

/// `base` with a random suffix, lower-case and short enough for a bucket, queue or table name.
pub fn unique(base: &str) -> String {
    format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// New empty buckets on the emulator, named after `bases` with random suffixes, with stores
/// over them.
pub async fn new_buckets<const N: usize>(
    ctx: &AwsContext,
    bases: [&str; N],
) -> [(String, shared::backend::aws::s3::S3Store); N] {
    use shared::backend::aws::s3::S3Store;
    let mut out = Vec::with_capacity(N);
    for base in bases {
        let name = unique(base);
        S3Store::create_bucket(ctx, &name).await.unwrap();
        out.push((name.clone(), S3Store::new(ctx, &name)));
    }
    out.try_into().unwrap_or_else(|_| unreachable!("N buckets"))
}

/// Environment for a child `bucketclone` process so its AWS chain points at the emulator.
pub fn emulator_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// The `bucketclone` program built for these tests (`src/bin/bucketclone-under-test.rs`,
/// which cargo builds next to the test executables, one directory up from `deps/`).
pub fn bin() -> Command {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target directory");
    let path = dir.join(format!("bucketclone-under-test{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{} is missing: run the tests with cargo test", path.display());
    Command::new(path)
}

/// Runs `bucketclone args...` with the emulator's environment; returns its output.
pub fn run<S: AsRef<str>>(args: &[S]) -> Output {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    logged(bin().args(&args).envs(emulator_env()), &args)
}

/// Runs `cmd` (a `bucketclone` with `args` among its arguments) and prints what it printed,
/// for a failing test's log.
pub fn logged(cmd: &mut Command, args: &[&str]) -> Output {
    let out = cmd.output().expect("spawn bucketclone");
    eprintln!(
        "$ bucketclone {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON report a `--json` run printed.
pub fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON report ({e})"))
}

/// Every file under `root` as relative path -> content.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// Writes `files` (relative path -> content) under `root`.
pub fn write_tree(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (k, v) in files {
        let p = root.join(k);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, v).expect("write");
    }
}

use shared::model::ObjectEntry;
use shared::objstore::{Body, Checksums, CopySource, Deleted, ListPage, ListRequest, ObjectStore};
use shared::objstore::{Download, ObjectAttrs, WriteOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests made through a [`CountingStore`], by kind.
#[derive(Debug, Default)]
pub struct Requests {
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub checksums: AtomicU64,
    pub copy: AtomicU64,
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub delete: AtomicU64,
}

impl Requests {
    pub fn total(&self) -> u64 {
        [&self.list, &self.head, &self.checksums, &self.copy, &self.get, &self.put, &self.delete]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// Rewrites (or fails) a listing page: what [`CountingStore::on_list`] runs.
pub type ListHook = Box<dyn Fn(&ListRequest, ListPage) -> shared::Result<ListPage> + Send + Sync>;
/// How long a write of a key waits: what [`CountingStore::write_delay`] runs.
pub type DelayHook = Box<dyn Fn(&str) -> std::time::Duration + Send + Sync>;
/// Runs before a call on a key; an error is returned instead of making the call.
pub type KeyHook = Box<dyn Fn(&str) -> shared::Result<()> + Send + Sync>;

/// An object store that counts every request it passes to the store it wraps, and lets a
/// test misbehave at the edges: hooks that rewrite or fail listings, refuse HEADs or GETs,
/// or change an object right after a `get` (while a job is copying it). The one wrapper
/// the tests share, so a new store method is forwarded in one place.
pub struct CountingStore {
    pub inner: Arc<dyn ObjectStore>,
    pub requests: Arc<Requests>,
    #[allow(clippy::type_complexity)]
    pub after_get: Option<Box<dyn Fn(&str) + Send + Sync>>,
    /// Runs before each GET; an error is returned instead.
    pub before_get: Option<KeyHook>,
    /// Runs before each HEAD; an error is returned instead.
    pub before_head: Option<KeyHook>,
    /// Rewrites (or fails) each listing page, after `strip_list_etags`.
    pub on_list: Option<ListHook>,
    /// Drop ETags from listings, as some S3-compatible servers do (s3s-fs).
    pub strip_list_etags: bool,
    /// How long each write (a copy or a put) of a key waits before it is made.
    pub write_delay: Option<DelayHook>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        CountingStore {
            inner,
            requests: Arc::default(),
            after_get: None,
            before_get: None,
            before_head: None,
            on_list: None,
            strip_list_etags: false,
            write_delay: None,
        }
    }
    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    async fn delay(&self, key: &str) {
        if let Some(d) = &self.write_delay {
            tokio::time::sleep(d(key)).await;
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for CountingStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn copy_source(&self) -> Option<CopySource> {
        self.inner.copy_source()
    }
    async fn check(&self) -> shared::Result<()> {
        self.inner.check().await
    }
    async fn list(&self, req: &ListRequest) -> shared::Result<ListPage> {
        Self::bump(&self.requests.list);
        let mut page = self.inner.list(req).await?;
        if self.strip_list_etags {
            page.entries.iter_mut().for_each(|e| e.etag = None);
        }
        match &self.on_list {
            Some(hook) => hook(req, page),
            None => Ok(page),
        }
    }
    async fn head(&self, key: &str) -> shared::Result<Option<ObjectEntry>> {
        Self::bump(&self.requests.head);
        if let Some(hook) = &self.before_head {
            hook(key)?;
        }
        self.inner.head(key).await
    }
    async fn checksums(&self, key: &str) -> shared::Result<Checksums> {
        Self::bump(&self.requests.checksums);
        self.inner.checksums(key).await
    }
    async fn copy_from(
        &self,
        source: &CopySource,
        src: &ObjectEntry,
        dst_key: &str,
        w: &WriteOptions,
    ) -> shared::Result<ObjectEntry> {
        Self::bump(&self.requests.copy);
        self.delay(dst_key).await;
        self.inner.copy_from(source, src, dst_key, w).await
    }
    async fn get(&self, key: &str, if_etag: Option<&str>) -> shared::Result<Download> {
        Self::bump(&self.requests.get);
        if let Some(hook) = &self.before_get {
            hook(key)?;
        }
        let body = self.inner.get(key, if_etag).await;
        if let Some(hook) = &self.after_get {
            hook(key);
        }
        body
    }
    async fn put(
        &self,
        key: &str,
        body: Body,
        size: u64,
        attrs: &ObjectAttrs,
        w: &WriteOptions,
    ) -> shared::Result<ObjectEntry> {
        Self::bump(&self.requests.put);
        self.delay(key).await;
        self.inner.put(key, body, size, attrs, w).await
    }
    async fn delete(&self, key: &str, if_etag: Option<&str>) -> shared::Result<Deleted> {
        Self::bump(&self.requests.delete);
        self.inner.delete(key, if_etag).await
    }
    async fn sync(&self) -> shared::Result<()> {
        self.inner.sync().await
    }
    async fn archive(&self, key: &str) -> shared::Result<shared::objstore::Archive> {
        self.inner.archive(key).await
    }
    async fn restore(&self, key: &str, days: u32) -> shared::Result<()> {
        self.inner.restore(key, days).await
    }
}

/// Every object of a store as full key -> (size, ETag), page after page.
pub async fn listing(store: &dyn ObjectStore) -> BTreeMap<String, (u64, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut req = ListRequest { prefix: String::new(), start_after: String::new(), end: None, max_keys: 1000 };
    loop {
        let page = store.list(&req).await.expect("list");
        for ObjectEntry { key, size, etag, .. } in &page.entries {
            out.insert(key.clone(), (*size, etag.clone()));
        }
        match (page.truncated, page.last_key()) {
            (true, Some(l)) => req.start_after = l.to_string(),
            _ => return out,
        }
    }
}

/// Checks, in the state file of a finished local run, that job `id` has nothing outstanding,
/// every segment recorded done, and `segments_done` equal to the segments recorded (each
/// counted once, however often it was worked); returns that count.
pub fn check_local_segments(state: &Path, id: &str) -> i64 {
    use shared::jobstore::JobStore;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = shared::backend::embedded::sqlite_jobstore::SqliteJobStore::open(state).expect("state file");
        let job = store.job(id).await.expect("read job").expect("the job is in the state file");
        let segs = store.segments(id, usize::MAX).await.expect("read segments");
        assert!(segs.iter().all(|s| s.done), "every segment done");
        assert_eq!(job.counters.outstanding, 0, "nothing outstanding");
        assert_eq!(job.counters.segments_done, segs.len() as i64, "one count per segment");
        segs.len() as i64
    })
}
