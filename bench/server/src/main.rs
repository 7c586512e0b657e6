//! bench-server: an in-memory S3 server for benchmarks, on s3s.
//!
//! Each bucket is an ordered map (`BTreeMap`) behind a lock, so a ListObjectsV2 page costs
//! O(log n + page) whatever the prefix, delimiter, start-after or continuation token (a
//! common prefix is skipped with one range query, never key by key). Listings carry sizes,
//! quoted MD5 ETags and LastModified, like S3.
//!
//! Authentication: any access key is accepted. Requests with an ordinary payload have their
//! `Authorization` dropped before s3s sees them (so no signature is checked); streaming
//! (aws-chunked) uploads keep it so s3s can decode the chunks, and are checked against the
//! secret given by `--secret` (default `bench-secret`). With `--check-signatures` every
//! request keeps its `Authorization` and s3s checks its SigV4 signature (slower: for
//! checking a client's signing, not for timing it).
//!
//! `x-amz-copy-source` is decoded here from the raw header, `+` as a space like S3 does
//! (s5cmd encodes spaces as `+`; s3s would keep the `+`).
//!
//! Request counts: `GET /_bench/stats` answers a JSON object with the requests served since
//! the last `GET /_bench/stats?reset` (or the start), by kind (`list`, `copy`, `put`,
//! `part`, `get`, `head`, `delete`, `other`), and the timing of the object transfers (copies,
//! puts, completed multipart uploads and object GETs: what moves an object, whichever way):
//! milliseconds from the reset to the first and last transfer, and the transfer rate over the
//! first and the last 10% of them and over each tenth (`tenth_rates`). bench/run resets
//! before starting a client and reads after it exits.
//!
//! Usage: bench-server [--addr 127.0.0.1:9100] [--latency-ms N] [--secret S] [--check-signatures]
//!                     [--seed BUCKET:COUNT:SIZE:PREFIXES[:FLAT_PERCENT]]...
//!
//! A seed creates BUCKET with COUNT objects of SIZE bytes (one shared body per size, so a
//! million objects cost their keys, not their bodies): FLAT_PERCENT % of them (default 0)
//! under one flat prefix `flat/`, the rest spread round-robin over PREFIXES prefixes
//! `dNNNNNN/`. The same spec always gives the same keys and ETags, so seeding a destination
//! with the source's spec makes a complete copy (for no-op reruns).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

#[derive(Clone)]
struct Obj {
    body: Bytes,
    md5: [u8; 16],
    mtime: SystemTime,
}

type BucketMap = Arc<RwLock<BTreeMap<Box<str>, Obj>>>;

#[derive(Default)]
struct Store {
    buckets: RwLock<HashMap<String, BucketMap>>,
}

impl Store {
    fn bucket(&self, name: &str) -> S3Result<BucketMap> {
        self.buckets.read().unwrap().get(name).cloned().ok_or_else(|| s3_error!(NoSuchBucket))
    }
}

fn etag(md5: &[u8; 16]) -> ETag {
    let mut s = String::with_capacity(32);
    for b in md5 {
        s.push_str(&format!("{b:02x}"));
    }
    ETag::Strong(s)
}

fn md5_of(b: &[u8]) -> [u8; 16] {
    Md5::digest(b).into()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

/// Percent-decoding with `+` as a space (form decoding), as S3 reads `x-amz-copy-source`.
fn decode_copy_source(raw: &[u8]) -> Option<(String, String)> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < raw.len() => {
                let h = std::str::from_utf8(&raw[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    let s = String::from_utf8(out).ok()?;
    let s = s.strip_prefix('/').unwrap_or(&s);
    // `?versionId=` is not part of the key (a literal `?` in a key arrives as %3F).
    let s = match s.find("?versionId=") {
        Some(i) => &s[..i],
        None => s,
    };
    let (b, k) = s.split_once('/')?;
    Some((b.to_owned(), k.to_owned()))
}

struct Page {
    keys: Vec<(String, Obj)>,
    prefixes: Vec<String>,
    /// Where the next page starts, when truncated.
    next: Option<Bound<String>>,
}

/// The smallest string greater than every string that starts with `cp`, if any.
fn after_prefix(cp: &str) -> Option<String> {
    let mut s = cp.to_owned();
    while let Some(c) = s.pop() {
        let mut n = c as u32 + 1;
        if (0xD800..0xE000).contains(&n) {
            n = 0xE000;
        }
        if let Some(c2) = char::from_u32(n) {
            s.push(c2);
            return Some(s);
        }
    }
    None
}

fn list(
    map: &BTreeMap<Box<str>, Obj>,
    prefix: &str,
    delimiter: Option<&str>,
    start: Bound<String>,
    max: usize,
) -> Page {
    let mut page = Page { keys: Vec::new(), prefixes: Vec::new(), next: None };
    let mut lower = match &start {
        Bound::Included(s) | Bound::Excluded(s) if s.as_str() >= prefix => start,
        _ => Bound::Included(prefix.to_owned()),
    };
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut resume: Option<Bound<String>> = None;
    'outer: loop {
        let range = match &lower {
            Bound::Included(s) => map.range::<str, _>((Bound::Included(s.as_str()), Bound::Unbounded)),
            Bound::Excluded(s) => map.range::<str, _>((Bound::Excluded(s.as_str()), Bound::Unbounded)),
            Bound::Unbounded => map.range::<str, _>(..),
        };
        for (k, v) in range {
            if !k.starts_with(prefix) {
                break 'outer;
            }
            if page.keys.len() + page.prefixes.len() >= max {
                page.next = resume;
                break 'outer;
            }
            if let Some(d) = delimiter
                && let Some(p) = k[prefix.len()..].find(d)
            {
                let cp = k[..prefix.len() + p + d.len()].to_owned();
                match after_prefix(&cp) {
                    Some(n) => {
                        page.prefixes.push(cp);
                        resume = Some(Bound::Included(n.clone()));
                        lower = Bound::Included(n);
                        continue 'outer;
                    }
                    None => {
                        page.prefixes.push(cp);
                        break 'outer;
                    }
                }
            }
            page.keys.push((k.to_string(), v.clone()));
            resume = Some(Bound::Excluded(k.to_string()));
        }
        break;
    }
    page
}

fn token_of(b: &Bound<String>) -> String {
    match b {
        Bound::Included(s) => format!("I{}", hex(s)),
        Bound::Excluded(s) => format!("E{}", hex(s)),
        Bound::Unbounded => String::new(),
    }
}

fn parse_token(t: &str) -> S3Result<Bound<String>> {
    let bad = || s3_error!(InvalidArgument, "bad continuation token");
    match t.split_at_checked(1) {
        Some(("I", h)) => Ok(Bound::Included(unhex(h).ok_or_else(bad)?)),
        Some(("E", h)) => Ok(Bound::Excluded(unhex(h).ok_or_else(bad)?)),
        _ => Err(bad()),
    }
}

fn to_object(k: String, o: &Obj) -> Object {
    Object {
        key: Some(k),
        size: Some(o.body.len() as i64),
        e_tag: Some(etag(&o.md5)),
        last_modified: Some(Timestamp::from(o.mtime)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}

fn max_keys(m: Option<i32>) -> usize {
    m.map(|m| m.clamp(0, 1000) as usize).unwrap_or(1000)
}

#[derive(Clone)]
struct Bench {
    store: Arc<Store>,
}

#[async_trait::async_trait]
impl S3 for Bench {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.store.buckets.write().unwrap().entry(req.input.bucket.clone()).or_default();
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{}", req.input.bucket)) }))
    }

    /// Bench only: drops the bucket with everything in it (fresh destinations between runs).
    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        match self.store.buckets.write().unwrap().remove(&req.input.bucket) {
            Some(_) => Ok(S3Response::new(DeleteBucketOutput::default())),
            None => Err(s3_error!(NoSuchBucket)),
        }
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.store.bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput { bucket_region: Some("us-east-1".into()), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.store.bucket(&req.input.bucket)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let mut names: Vec<String> = self.store.buckets.read().unwrap().keys().cloned().collect();
        names.sort();
        let buckets = names
            .into_iter()
            .map(|n| Bucket {
                name: Some(n),
                creation_date: Some(Timestamp::from(SystemTime::UNIX_EPOCH)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let bucket = self.store.bucket(&i.bucket)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let start = match (&i.continuation_token, &i.start_after) {
            (Some(t), _) => parse_token(t)?,
            (None, Some(s)) => Bound::Excluded(s.clone()),
            (None, None) => Bound::Unbounded,
        };
        let page = {
            let map = bucket.read().unwrap();
            list(&map, &prefix, i.delimiter.as_deref(), start, max_keys(i.max_keys))
        };
        let key_count = (page.keys.len() + page.prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(prefix),
            delimiter: i.delimiter,
            max_keys: Some(max_keys(i.max_keys) as i32),
            key_count: Some(key_count),
            start_after: i.start_after,
            continuation_token: i.continuation_token,
            is_truncated: Some(page.next.is_some()),
            next_continuation_token: page.next.as_ref().map(token_of),
            contents: Some(page.keys.into_iter().map(|(k, o)| to_object(k, &o)).collect()),
            common_prefixes: Some(page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let bucket = self.store.bucket(&i.bucket)?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let start = match &i.marker {
            Some(m) if !m.is_empty() => Bound::Excluded(m.clone()),
            _ => Bound::Unbounded,
        };
        let page = {
            let map = bucket.read().unwrap();
            list(&map, &prefix, i.delimiter.as_deref(), start, max_keys(i.max_keys))
        };
        // V1's marker is exclusive: after a common prefix, its last key under it will do.
        let next_marker = match &page.next {
            Some(Bound::Excluded(k)) => Some(k.clone()),
            Some(_) => page.prefixes.last().map(|p| {
                let map = bucket.read().unwrap();
                let end = after_prefix(p);
                let last = match &end {
                    Some(e) => {
                        map.range::<str, _>((Bound::Included(p.as_str()), Bound::Excluded(e.as_str()))).next_back()
                    }
                    None => map.range::<str, _>((Bound::Included(p.as_str()), Bound::Unbounded)).next_back(),
                };
                last.map(|(k, _)| k.to_string()).unwrap_or_else(|| p.clone())
            }),
            None => None,
        };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(prefix),
            delimiter: i.delimiter,
            marker: i.marker,
            max_keys: Some(max_keys(i.max_keys) as i32),
            is_truncated: Some(page.next.is_some()),
            next_marker,
            contents: Some(page.keys.into_iter().map(|(k, o)| to_object(k, &o)).collect()),
            common_prefixes: Some(page.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            ..Default::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let bucket = self.store.bucket(&req.input.bucket)?;
        let o = bucket.read().unwrap().get(req.input.key.as_str()).cloned().ok_or_else(|| s3_error!(NoSuchKey))?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(o.body.len() as i64),
            e_tag: Some(etag(&o.md5)),
            last_modified: Some(Timestamp::from(o.mtime)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let bucket = self.store.bucket(&req.input.bucket)?;
        let o = bucket.read().unwrap().get(req.input.key.as_str()).cloned().ok_or_else(|| s3_error!(NoSuchKey))?;
        let len = o.body.len() as u64;
        let (body, content_range) = match &req.input.range {
            Some(r) => {
                let r = r.check(len).map_err(|_| s3_error!(InvalidRange))?;
                let cr = format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), len);
                (o.body.slice(r.start as usize..r.end as usize), Some(cr))
            }
            None => (o.body.clone(), None),
        };
        let n = body.len() as i64;
        let mut resp = S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            content_length: Some(n),
            content_range: content_range.clone(),
            e_tag: Some(etag(&o.md5)),
            last_modified: Some(Timestamp::from(o.mtime)),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        });
        if content_range.is_some() {
            resp.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        Ok(resp)
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let i = req.input;
        let bucket = self.store.bucket(&i.bucket)?;
        let body = match i.body {
            Some(b) => {
                let mut body: s3s::Body = b.into();
                body.store_all_limited(usize::MAX).await.map_err(|e| s3_error!(IncompleteBody, "{e}"))?
            }
            None => Bytes::new(),
        };
        let md5 = md5_of(&body);
        bucket.write().unwrap().insert(i.key.into(), Obj { body, md5, mtime: SystemTime::now() });
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(etag(&md5)), ..Default::default() }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let raw = req.headers.get("x-amz-copy-source").ok_or_else(|| s3_error!(InvalidArgument, "no copy source"))?;
        let (sb, sk) =
            decode_copy_source(raw.as_bytes()).ok_or_else(|| s3_error!(InvalidArgument, "bad copy source"))?;
        let src = self.store.bucket(&sb)?;
        let o = src.read().unwrap().get(sk.as_str()).cloned().ok_or_else(|| s3_error!(NoSuchKey))?;
        let dst = self.store.bucket(&req.input.bucket)?;
        let now = SystemTime::now();
        let copy = Obj { mtime: now, ..o };
        let md5 = copy.md5;
        dst.write().unwrap().insert(req.input.key.into(), copy);
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&md5)),
                last_modified: Some(Timestamp::from(now)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let bucket = self.store.bucket(&req.input.bucket)?;
        bucket.write().unwrap().remove(req.input.key.as_str());
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = self.store.bucket(&req.input.bucket)?;
        let mut deleted = Vec::new();
        {
            let mut map = bucket.write().unwrap();
            for id in req.input.delete.objects {
                map.remove(id.key.as_str());
                deleted.push(DeletedObject { key: Some(id.key), ..Default::default() });
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), ..Default::default() }))
    }
}

/// Requests by kind, and when each object write happened (see the module doc).
struct Stats {
    kinds: [AtomicU64; KINDS.len()],
    since: Mutex<Instant>,
    /// Microseconds from `since` of each object transfer.
    transfers: Mutex<Vec<u64>>,
}

const KINDS: [&str; 8] = ["list", "copy", "put", "part", "get", "head", "delete", "other"];

impl Stats {
    fn new() -> Self {
        Stats { kinds: Default::default(), since: Mutex::new(Instant::now()), transfers: Mutex::new(Vec::new()) }
    }

    /// Counts one request; returns whether it transfers an object.
    fn count<B>(&self, req: &http::Request<B>) -> bool {
        let path = req.uri().path().trim_start_matches('/');
        let has_key = path.split_once('/').is_some_and(|(_, k)| !k.is_empty());
        let query = req.uri().query().unwrap_or("");
        let has = |q: &str| query.split('&').any(|p| p == q || p.starts_with(&format!("{q}=")));
        let kind = match (req.method().as_str(), has_key) {
            ("GET", false) if !path.is_empty() && !has("location") && !has("versioning") => "list",
            ("PUT", true) if has("partNumber") => "part",
            ("PUT", true) if req.headers().contains_key("x-amz-copy-source") => "copy",
            ("PUT", true) => "put",
            ("POST", true) if has("uploadId") => "put", // completes a multipart upload
            ("GET", true) => "get",
            ("HEAD", true) => "head",
            ("DELETE", true) => "delete",
            ("POST", false) if has("delete") => "delete",
            _ => "other",
        };
        let i = KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len() - 1);
        self.kinds[i].fetch_add(1, Ordering::Relaxed);
        matches!(kind, "copy" | "put" | "get")
    }

    fn transferred(&self) {
        let at = self.since.lock().unwrap().elapsed().as_micros() as u64;
        self.transfers.lock().unwrap().push(at);
    }

    /// The JSON report; `reset` starts a new count afterwards.
    fn report(&self, reset: bool) -> String {
        let mut t = self.transfers.lock().unwrap();
        t.sort_unstable();
        let n = t.len();
        let ms = |us: u64| us as f64 / 1000.0;
        // Transfers per second over the transfers [a, b).
        let rate = |a: usize, b: usize| {
            let span = t[b - 1].saturating_sub(t[a]);
            if b - a < 2 || span == 0 { 0.0 } else { (b - a - 1) as f64 / (span as f64 / 1e6) }
        };
        let tenth = (n / 10).max(2).min(n);
        let mut out = String::from("{");
        for (k, c) in KINDS.iter().zip(&self.kinds) {
            out += &format!("\"{k}\":{},", c.load(Ordering::Relaxed));
        }
        if n > 0 {
            out += &format!(
                "\"transfers\":{n},\"first_transfer_ms\":{:.1},\"last_transfer_ms\":{:.1},\"first10_rate\":{:.1},\"last10_rate\":{:.1}",
                ms(t[0]),
                ms(t[n - 1]),
                rate(0, tenth),
                rate(n - tenth, n)
            );
            // Each tenth's rate: where in the run the pace changes.
            let tenths: Vec<String> = (0..10)
                .map(|i| (i * n / 10, ((i + 1) * n / 10).min(n)))
                .map(|(a, b)| format!("{:.0}", if b > a + 1 { rate(a, b) } else { 0.0 }))
                .collect();
            out += &format!(",\"tenth_rates\":[{}]", tenths.join(","));
        } else {
            out += "\"transfers\":0";
        }
        out += "}";
        if reset {
            t.clear();
            for c in &self.kinds {
                c.store(0, Ordering::Relaxed);
            }
            *self.since.lock().unwrap() = Instant::now();
        }
        out
    }
}

struct AnyKey(String);

#[async_trait::async_trait]
impl s3s::auth::S3Auth for AnyKey {
    async fn get_secret_key(&self, _access_key: &str) -> S3Result<s3s::auth::SecretKey> {
        Ok(s3s::auth::SecretKey::from(self.0.as_str()))
    }
}

struct AllowAll;

#[async_trait::async_trait]
impl s3s::access::S3Access for AllowAll {
    async fn check(&self, _cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        Ok(())
    }
}

fn seed(store: &Store, spec: &str) -> Result<usize, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let bad = || format!("bad --seed {spec}: BUCKET:COUNT:SIZE:PREFIXES[:FLAT_PERCENT]");
    if parts.len() < 4 || parts.len() > 5 {
        return Err(bad());
    }
    let name = parts[0].to_owned();
    let count: usize = parts[1].parse().map_err(|_| bad())?;
    let size: usize = parts[2].parse().map_err(|_| bad())?;
    let prefixes: usize = parts[3].parse::<usize>().map_err(|_| bad())?.max(1);
    let flat_pct: usize = parts.get(4).map(|p| p.parse()).transpose().map_err(|_| bad())?.unwrap_or(0);
    let body = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let md5 = md5_of(&body);
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01
    let flat = count * flat_pct / 100;
    let mut map = BTreeMap::new();
    for i in 0..count {
        let key =
            if i < flat { format!("flat/f{i:08}.bin") } else { format!("d{:06}/f{i:08}.bin", (i - flat) % prefixes) };
        map.insert(key.into_boxed_str(), Obj { body: body.clone(), md5, mtime });
    }
    store.buckets.write().unwrap().insert(name, Arc::new(RwLock::new(map)));
    Ok(count)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut addr = "127.0.0.1:9100".to_owned();
    let mut latency = Duration::ZERO;
    let mut secret = "bench-secret".to_owned();
    let mut check_signatures = false;
    let store = Arc::new(Store::default());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--addr" => addr = val()?,
            "--latency-ms" => latency = Duration::from_millis(val()?.parse()?),
            "--secret" => secret = val()?,
            "--check-signatures" => check_signatures = true,
            "--seed" => {
                let spec = val()?;
                let t = std::time::Instant::now();
                let n = seed(&store, &spec)?;
                eprintln!("seeded {spec}: {n} objects in {:.2?}", t.elapsed());
            }
            "-h" | "--help" => {
                println!(
                    "bench-server [--addr HOST:PORT] [--latency-ms N] [--secret S] [--check-signatures] [--seed BUCKET:COUNT:SIZE:PREFIXES[:FLAT_PERCENT]]..."
                );
                return Ok(());
            }
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }

    let mut b = S3ServiceBuilder::new(Bench { store });
    b.set_auth(AnyKey(secret));
    b.set_access(AllowAll);
    let service = b.build();

    let stats = Arc::new(Stats::new());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bench-server listening on http://{}", listener.local_addr()?);
    loop {
        let (sock, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = sock.set_nodelay(true);
        let service = service.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let service = service.clone();
                let stats = stats.clone();
                async move {
                    if req.uri().path() == "/_bench/stats" {
                        let body = stats.report(req.uri().query() == Some("reset"));
                        let mut resp = http::Response::new(s3s::Body::from(body));
                        resp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
                        return Ok(resp);
                    }
                    let transfers = stats.count(&req);
                    let streaming = req
                        .headers()
                        .get("x-amz-content-sha256")
                        .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
                    if !streaming && !check_signatures {
                        req.headers_mut().remove(http::header::AUTHORIZATION);
                    }
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    let resp = service.call(req.map(s3s::Body::from)).await;
                    if transfers && resp.as_ref().is_ok_and(|r| r.status().is_success()) {
                        stats.transferred();
                    }
                    resp
                }
            });
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(sock), svc).await;
        });
    }
}
