//! [`KmsLike`]: an object store wrapper that hands out ETags the way SSE-KMS does (not an
//! MD5 of the content, different on each side and new on every write, even of the same
//! bytes), says so in its checksums, and passes the wrapped store's real checksums on. The
//! two sides of a job share one [`KmsEtags`], so an ETag handed out by the source is
//! understood when the destination copies from it (and conditions use the real ETags).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use shared::Result;
use shared::conformance::objstore::md5_hex;
use shared::model::ObjectEntry;
use shared::objstore::{
    Body, Checksums, CopySource, Deleted, Download, ListPage, ListRequest, ObjectAttrs, ObjectStore, WriteOptions,
};

/// The ETags handed out by the [`KmsLike`] stores of one test: fake -> real.
#[derive(Default)]
pub struct KmsEtags {
    real: Mutex<HashMap<String, String>>,
    /// Writes through a wrapper, per (side, key): each one gives the key a new ETag.
    writes: Mutex<HashMap<(String, String), u64>>,
}

impl KmsEtags {
    fn fake(&self, side: &str, key: &str, real: Option<String>) -> Option<String> {
        let real = real?;
        let n = self.writes.lock().expect("lock").get(&(side.to_string(), key.to_string())).copied().unwrap_or(0);
        let fake = md5_hex(format!("kms\0{side}\0{key}\0{real}\0{n}").as_bytes());
        self.real.lock().expect("lock").insert(fake.clone(), real);
        Some(fake)
    }
    fn real(&self, etag: Option<&str>) -> Option<String> {
        let etag = etag?;
        Some(self.real.lock().expect("lock").get(etag).cloned().unwrap_or_else(|| etag.to_string()))
    }
    fn wrote(&self, side: &str, key: &str) {
        *self.writes.lock().expect("lock").entry((side.to_string(), key.to_string())).or_default() += 1;
    }
}

/// Wraps a store as if its objects were encrypted with SSE-KMS (see the module docs).
pub struct KmsLike {
    inner: Arc<dyn ObjectStore>,
    side: String,
    etags: Arc<KmsEtags>,
    /// Keys whose checksums this side does not report (an object stored without one).
    pub without_checksums: Mutex<HashSet<String>>,
    /// `checksums` calls, and writes (copies and puts) that succeeded.
    pub checksum_calls: AtomicU64,
    pub writes: AtomicU64,
}

impl KmsLike {
    /// `side` names the wrapper in its ETags (two sides must differ).
    pub fn new(inner: Arc<dyn ObjectStore>, side: &str, etags: Arc<KmsEtags>) -> Self {
        KmsLike {
            inner,
            side: side.to_string(),
            etags,
            without_checksums: Mutex::default(),
            checksum_calls: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }
    fn fake(&self, mut e: ObjectEntry) -> ObjectEntry {
        e.etag = self.etags.fake(&self.side, &e.key, e.etag.take());
        e
    }
    fn wrote(&self, e: Result<ObjectEntry>) -> Result<ObjectEntry> {
        let e = e?;
        self.etags.wrote(&self.side, &e.key);
        self.writes.fetch_add(1, SeqCst);
        Ok(self.fake(e))
    }
}

#[async_trait::async_trait]
impl ObjectStore for KmsLike {
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
        let mut page = self.inner.list(req).await?;
        page.entries = page.entries.into_iter().map(|e| self.fake(e)).collect();
        Ok(page)
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectEntry>> {
        Ok(self.inner.head(key).await?.map(|e| self.fake(e)))
    }
    async fn checksums(&self, key: &str) -> Result<Checksums> {
        self.checksum_calls.fetch_add(1, SeqCst);
        let mut c = self.inner.checksums(key).await?;
        c.etag_is_md5 = false;
        c.etag = self.etags.fake(&self.side, key, c.etag.take());
        if self.without_checksums.lock().expect("lock").contains(key) {
            (c.values, c.composite) = (Vec::new(), Vec::new());
        }
        Ok(c)
    }
    async fn copy_from(
        &self,
        source: &CopySource,
        src: &ObjectEntry,
        dst_key: &str,
        w: &WriteOptions,
    ) -> Result<ObjectEntry> {
        let real = ObjectEntry { etag: self.etags.real(src.etag.as_deref()), ..src.clone() };
        self.wrote(self.inner.copy_from(source, &real, dst_key, w).await)
    }
    async fn get(&self, key: &str, if_etag: Option<&str>) -> Result<Download> {
        self.inner.get(key, self.etags.real(if_etag).as_deref()).await
    }
    async fn put(
        &self,
        key: &str,
        body: Body,
        size: u64,
        attrs: &ObjectAttrs,
        w: &WriteOptions,
    ) -> Result<ObjectEntry> {
        self.wrote(self.inner.put(key, body, size, attrs, w).await)
    }
    async fn delete(&self, key: &str, if_etag: Option<&str>) -> Result<Deleted> {
        self.inner.delete(key, self.etags.real(if_etag).as_deref()).await
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
