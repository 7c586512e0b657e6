//! S3 (or any S3-compatible service) as an object store: one bucket.
//!
//! Guarantees beyond the port: a listing page ending at the range's `end` is never marked
//! truncated; server-side copies are conditional on the listed source ETag (a source changed
//! since listing fails `Permanent`, it is never copied half old, half new); an object
//! uploaded in parts is copied part for part, so the copy keeps the source's ETag. Listings
//! from servers that send no ETags are passed on with `etag: None`.

mod body;
mod checksums;
pub(in crate::backend::aws) mod lean;
mod listing;
mod multipart;
mod sigv4;
mod wire;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, ServerSideEncryption, StorageClass};
use std::collections::BTreeMap;

use super::{AwsContext, sdk_error};
use crate::error::{Error, Result};
use crate::model::ObjectEntry;
use crate::objstore::{
    Archive, Body, Checksums, CopySource, Deleted, Download, ListPage, ListRequest, ObjectAttrs, ObjectStore,
    WriteOptions, is_multipart_etag, unquote_etag,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// The largest object a single PutObject or CopyObject may write.
const SINGLE_MAX: u64 = 5 << 30;
/// Bodies up to this size are read into memory, so the SDK can checksum them.
const INLINE_MAX: u64 = 8 << 20;
/// Part size of multipart uploads (grown when the object needs more than 10,000 parts).
const PART_SIZE: u64 = 64 << 20;

/// One bucket on the configured S3 endpoint.
pub struct S3Store {
    pub client: aws_sdk_s3::Client,
    /// The same service for ListObjectsV2 alone, on connections of its own (see
    /// [`S3Store::new`]), where the lean client does not list.
    list_client: aws_sdk_s3::Client,
    pub bucket: String,
    pub endpoint: String,
    /// Objects larger than this are uploaded in parts.
    multipart_threshold: u64,
    part_size: u64,
    /// The full-object checksum uploads ask for (see [`S3Store::with_upload_checksum`]).
    upload_checksum: aws_sdk_s3::types::ChecksumAlgorithm,
    /// The most keys one ListObjectsV2 call returns (S3's 1,000; see [`S3Store::with_list_cap`]).
    list_cap: usize,
    /// CopyObject and ListObjectsV2 without the SDK's request pipeline, where it sends the
    /// same requests (see [`lean`]); `None`: both go through the SDK.
    lean: Option<lean::Lean>,
    /// [`S3Store::open`]'s HeadBucket, for this client and bucket, was answered 200: the
    /// first [`ObjectStore::check`] takes that as its answer rather than asking again (a
    /// job's acceptance opens, then checks, both of its buckets). Later checks ask.
    opened_ok: std::sync::atomic::AtomicBool,
}

impl S3Store {
    /// The bucket `bucket` on the context's endpoint. Never fails: see [`ObjectStore::check`].
    ///
    /// Listings go over a client (so a connection pool) of their own. A connection keeps a
    /// read buffer as large as the largest response it has read: a listing page is up to
    /// ~300 KB, a copy's answer a few hundred bytes. Sharing one pool, every copy connection
    /// (hundreds) ends up holding a listing-sized buffer; apart, only the few listing
    /// connections (about one per page in flight) do.
    pub fn new(ctx: &AwsContext, bucket: &str) -> Self {
        S3Store {
            client: ctx.s3(),
            list_client: ctx.s3(),
            bucket: bucket.to_string(),
            endpoint: ctx.endpoint_id(),
            multipart_threshold: SINGLE_MAX,
            part_size: PART_SIZE,
            upload_checksum: checksums::DEFAULT_ALGORITHM.into(),
            list_cap: 1000,
            lean: lean::Lean::for_bucket(ctx, bucket),
            opened_ok: false.into(),
        }
    }

    /// Asks for at most `cap` keys per list call (at least 2), as if the service's cap were
    /// `cap`: for tests of pages at the cap with few objects.
    pub fn with_list_cap(mut self, cap: usize) -> Self {
        self.list_cap = cap.clamp(2, 1000);
        self
    }

    /// The bucket on `ctx`'s service, with a client for the bucket's own region unless
    /// `region_fixed` (the location named one): S3 answers requests for a bucket signed for
    /// another region with a 301, so a cross-region clone needs a client per region. The
    /// region is asked of the bucket (HeadBucket's `x-amz-bucket-region`, which S3 sends
    /// with its refusals too); when it cannot be learnt the context's region is kept and
    /// [`ObjectStore::check`] reports what is wrong. `Transient` when the service did not
    /// answer at all.
    pub async fn open(ctx: &AwsContext, bucket: &str, region_fixed: bool) -> Result<Self> {
        if region_fixed {
            return Ok(S3Store::new(ctx, bucket));
        }
        let (region, answered_ok) = bucket_region(ctx, bucket).await?;
        if let Some(r) = region
            && Some(r.as_str()) != ctx.region()
        {
            tracing::debug!(bucket, region = %r, "bucket is in another region");
            return Ok(S3Store::new(&ctx.in_region(&r), bucket));
        }
        let store = S3Store::new(ctx, bucket);
        store.opened_ok.store(answered_ok, std::sync::atomic::Ordering::Relaxed);
        Ok(store)
    }

    /// Creates the bucket if it does not exist (an existing bucket of ours is fine). For
    /// tests, benchmarks and trying the tool on an emulator; clones never create buckets.
    pub async fn create_bucket(ctx: &AwsContext, bucket: &str) -> Result<()> {
        match ctx.s3().create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    aws_sdk_s3::error::ProvideErrorMetadata::code(&e),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(super::sdk_error(&format!("create bucket {bucket}"), e)),
        }
    }

    /// Uploads objects over `threshold` bytes (at most 5 GiB) in parts of at least
    /// `part_size` (at least 5 MiB). For tests of the multipart path with small objects.
    pub fn with_multipart(mut self, threshold: u64, part_size: u64) -> Self {
        self.multipart_threshold = threshold.min(SINGLE_MAX);
        self.part_size = part_size.max(5 << 20);
        self
    }

    /// Uploads (puts and multipart uploads) ask for a full-object checksum of `algorithm`
    /// (`CRC32`, `CRC32C` or `CRC64NVME`; CRC64NVME by default). For tests on emulators
    /// that compute CRC64NVME wrongly (moto without awscrt stores a CRC32 under that name).
    pub fn with_upload_checksum(mut self, algorithm: &str) -> Self {
        self.upload_checksum = algorithm.into();
        self
    }

    fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The source entry `key` of a copy from `source`, as a HEAD reads it (a listing gave no
    /// ETag); `NotFound` when it is gone.
    async fn head_source(&self, source: &CopySource, key: &str) -> Result<ObjectEntry> {
        let h = self.head_in(&source.bucket, key, None).await?;
        let h = h.ok_or_else(|| Error::NotFound(format!("s3://{}/{key}", source.bucket)))?;
        Ok(ObjectEntry {
            key: key.to_string(),
            size: h.content_length().unwrap_or(0).max(0) as u64,
            etag: h.e_tag().map(unquote_etag),
            storage_class: class_name(h.storage_class().map(|c| c.as_str())),
        })
    }

    /// HEAD of `bucket/key` (of one part when `part` is set); `None` when it does not exist.
    async fn head_in(
        &self,
        bucket: &str,
        key: &str,
        part: Option<i32>,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>> {
        let r = self.client.head_object().bucket(bucket).key(key).set_part_number(part).send().await;
        match r {
            Ok(out) => Ok(Some(out)),
            Err(e) => match sdk_error(&format!("head s3://{bucket}/{key}"), e) {
                Error::NotFound(_) => Ok(None),
                e => Err(e),
            },
        }
    }
}

impl S3Store {
    /// ListObjectsV2 through the SDK: up to `max_keys` keys under the request's prefix after
    /// its `start_after`.
    async fn sdk_list(
        &self,
        req: &ListRequest,
        max_keys: usize,
    ) -> std::result::Result<
        listing::Listed,
        aws_smithy_runtime_api::client::result::SdkError<
            aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error,
            HttpResponse,
        >,
    > {
        let out = self
            .list_client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_prefix(Some(req.prefix.clone()).filter(|p| !p.is_empty()))
            .set_start_after(Some(req.start_after.clone()).filter(|s| !s.is_empty()))
            .max_keys(max_keys as i32)
            .send()
            .await?;
        let entries = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectEntry {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().map(unquote_etag),
                    storage_class: class_name(o.storage_class().map(|c| c.as_str())),
                })
            })
            .collect();
        Ok(listing::Listed { entries, truncated: out.is_truncated().unwrap_or(false) })
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    fn copy_source(&self) -> Option<CopySource> {
        Some(CopySource { endpoint: self.endpoint.clone(), bucket: self.bucket.clone() })
    }

    async fn check(&self) -> Result<()> {
        if self.opened_ok.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let r = self.client.head_bucket().bucket(&self.bucket).send().await;
        match r.map_err(|e| sdk_error(&format!("check {}", self.describe()), e)) {
            Ok(_) => Ok(()),
            Err(Error::NotFound(_)) => Err(Error::NotFound(format!("bucket {} does not exist", self.bucket))),
            Err(Error::AccessDenied(m)) => Err(Error::AccessDenied(format!(
                "bucket {} may not be listed with these credentials ({m})",
                self.bucket
            ))),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, req: &ListRequest) -> Result<ListPage> {
        if req.end.as_deref().is_some_and(|e| e <= req.start_after.as_str()) {
            return Ok(ListPage::default());
        }
        // S3 knows no `end`: it says "truncated" when any key follows the page, in the range
        // or past it. So a bounded page asks for one key more than it keeps: a key kept back
        // that lies in the range proves the range goes on. Without it, a range holding
        // exactly a page of keys came back "truncated", and its rest was listed once more
        // for nothing (a fifth of the pages on the benchmark's many-prefix shape). At S3's
        // cap of 1,000 a page keeps 999.
        let max = req.max_keys.clamp(1, self.list_cap);
        let (ask, keep) = match req.end {
            Some(_) if max < self.list_cap => (max + 1, max),
            Some(_) => (max, (max - 1).max(1)),
            None => (max, max),
        };
        let what = || format!("list {}", self.describe());
        let listed = match &self.lean {
            Some(lean) => lean.list(&req.prefix, &req.start_after, ask).await.map_err(|f| f.into_error(&what()))?,
            None => lean::Listing::Unsure,
        };
        let listing::Listed { mut entries, mut truncated } = match listed {
            lean::Listing::Page(page) => page,
            lean::Listing::Unsure => self.sdk_list(req, ask).await.map_err(|e| sdk_error(&what(), e))?,
        };
        if let Some(end) = req.end.as_deref() {
            let listed = entries.len();
            entries.retain(|e| e.key.as_str() <= end);
            // Keys past `end` were dropped, or the page stops at `end`: the range is done.
            if entries.len() < listed || entries.last().is_some_and(|e| e.key == end) {
                truncated = false;
            }
        }
        if entries.len() > keep {
            // What is kept back lies in the range: the range goes on after the page.
            entries.truncate(keep);
            truncated = true;
        }
        Ok(ListPage { entries, skipped: Vec::new(), truncated })
    }

    async fn sync(&self) -> Result<()> {
        Ok(())
    }

    async fn archive(&self, key: &str) -> Result<Archive> {
        let h = self.head_in(&self.bucket, key, None).await?;
        let h = h.ok_or_else(|| Error::NotFound(format!("s3://{}/{key}", self.bucket)))?;
        let class = h.storage_class().map(|c| c.as_str().to_string());
        Ok(archive_of(class.as_deref(), h.archive_status().map(|s| s.as_str()), h.restore()))
    }

    async fn restore(&self, key: &str, days: u32) -> Result<()> {
        use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier};
        let what = format!("restore s3://{}/{key}", self.bucket);
        let h = self.head_in(&self.bucket, key, None).await?;
        let h = h.ok_or_else(|| Error::NotFound(what.clone()))?;
        // Intelligent-Tiering's archive tiers take no days: the object moves back to the
        // frequent tier. Glacier and Deep Archive give a copy for `days`.
        let request = match h.archive_status() {
            Some(_) => RestoreRequest::builder().build(),
            None => {
                let tier = GlacierJobParameters::builder().tier(Tier::Standard).build().map_err(Error::invalid)?;
                RestoreRequest::builder().days(days as i32).glacier_job_parameters(tier).build()
            }
        };
        let r = self.client.restore_object().bucket(&self.bucket).key(key).restore_request(request).send().await;
        match r.map_err(|e| sdk_error(&what, e)) {
            // RestoreAlreadyInProgress (409): someone asked before.
            Ok(_) | Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectEntry>> {
        Ok(self.head_in(&self.bucket, key, None).await?.map(|h| ObjectEntry {
            key: key.to_string(),
            size: h.content_length().unwrap_or(0).max(0) as u64,
            etag: h.e_tag().map(unquote_etag),
            storage_class: class_name(h.storage_class().map(|c| c.as_str())),
        }))
    }

    async fn checksums(&self, key: &str) -> Result<Checksums> {
        let h = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("checksums of {}", self.url(key)), e))?;
        Ok(checksums::from_head(&h))
    }

    async fn copy_from(
        &self,
        source: &CopySource,
        src: &ObjectEntry,
        dst_key: &str,
        w: &WriteOptions,
    ) -> Result<ObjectEntry> {
        if source.endpoint != self.endpoint {
            return Err(Error::invalid(format!(
                "cannot copy server-side from {} to {}",
                source.endpoint, self.endpoint
            )));
        }
        // Without a listed ETag, HEAD the source: its ETag conditions the copy and says
        // whether it was uploaded in parts. The paths a listed single-part copy does not
        // take are boxed: their futures (the SDK's above all, ~10 KB) would otherwise make
        // every copy's future that large, allocated and moved for each object.
        let headed;
        let src = match &src.etag {
            Some(_) => src,
            None => {
                headed = Box::pin(self.head_source(source, &src.key)).await?;
                &headed
            }
        };
        let multipart = src.etag.as_deref().is_some_and(is_multipart_etag);
        if multipart || src.size > SINGLE_MAX {
            return Box::pin(multipart::copy(self, source, src, dst_key, w)).await;
        }
        // Content headers, user metadata and tags are S3's to copy (its COPY directives).
        // A copy is STANDARD unless told: keep the source's class. No checksum algorithm: S3
        // then gives the copy the source's checksum, so both sides carry one to compare.
        let storage_class = w.class_for(src.storage_class.as_deref());
        let copy_source = multipart::copy_source_header(&source.bucket, &src.key);
        let if_match = src.etag.as_deref().map(quote);
        let etag = match self.lean.as_ref().filter(|l| l.copies()) {
            Some(lean) => lean
                .copy(&lean::Copy {
                    dst_key,
                    source: &copy_source,
                    if_match: if_match.as_deref(),
                    storage_class: storage_class.as_deref(),
                    sse: w.sse.as_deref(),
                    sse_kms_key_id: w.sse_kms_key_id.as_deref(),
                })
                .await
                .map_err(|f| multipart::copy_failed(source, src, dst_key, |what| f.into_error(what)))?,
            None => {
                let sdk = self
                    .client
                    .copy_object()
                    .bucket(&self.bucket)
                    .key(dst_key)
                    .copy_source(copy_source)
                    .set_copy_source_if_match(if_match)
                    .set_storage_class(storage_class.as_deref().map(StorageClass::from))
                    .set_server_side_encryption(w.sse.as_deref().map(ServerSideEncryption::from))
                    .set_ssekms_key_id(w.sse_kms_key_id.clone())
                    .send();
                let out = Box::pin(sdk).await.map_err(|e| multipart::copy_error(source, src, dst_key, e))?;
                out.copy_object_result().and_then(|r| r.e_tag()).map(str::to_string)
            }
        };
        let etag = etag.as_deref().map(unquote_etag);
        Ok(ObjectEntry { key: dst_key.to_string(), size: src.size, etag, storage_class })
    }

    async fn get(&self, key: &str, if_etag: Option<&str>) -> Result<Download> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(if_etag.map(quote))
            .send()
            .await
            .map_err(|e| sdk_error(&format!("get {}", self.url(key)), e))?;
        let mut attrs = attrs_of!(out);
        if out.tag_count().is_some_and(|n| n > 0) {
            attrs.tags = self.tags(&self.bucket, key).await?;
        }
        Ok(Download { body: Box::pin(out.body.into_async_read()), attrs })
    }

    async fn put(
        &self,
        key: &str,
        mut body: Body,
        size: u64,
        attrs: &ObjectAttrs,
        w: &WriteOptions,
    ) -> Result<ObjectEntry> {
        if size > self.multipart_threshold {
            return multipart::upload(self, key, body, size, self.part_size, attrs, w).await;
        }
        let stream = if size <= INLINE_MAX {
            let data = body::read_exact(&mut body, size).await?;
            body::expect_end(&mut body, size).await?;
            ByteStream::from(data)
        } else {
            // Streamed: not replayable, so the SDK cannot retry it; the caller re-opens.
            ByteStream::from_body_1_x(body::ReaderBody::new(body, size))
        };
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            .checksum_algorithm(self.upload_checksum.clone())
            .body(stream);
        let out =
            with_attrs!(req, attrs, w).send().await.map_err(|e| sdk_error(&format!("put {}", self.url(key)), e))?;
        let storage_class = w.class_for(attrs.storage_class.as_deref());
        Ok(ObjectEntry { key: key.to_string(), size, etag: out.e_tag().map(unquote_etag), storage_class })
    }

    /// HEADs first (S3 deletes of a missing key succeed, and not every server honours
    /// `If-Match` on delete), then deletes with `If-Match` when an ETag is given. Where the
    /// server ignores `If-Match`, a write between the HEAD and the delete can be lost: a
    /// window of one round trip.
    async fn delete(&self, key: &str, if_etag: Option<&str>) -> Result<Deleted> {
        let Some(cur) = self.head(key).await? else {
            return Ok(Deleted::Absent);
        };
        if if_etag.is_some_and(|want| cur.etag.as_deref() != Some(want)) {
            return Ok(Deleted::Changed);
        }
        let r = self.client.delete_object().bucket(&self.bucket).key(key).set_if_match(if_etag.map(quote)).send().await;
        match r.map_err(|e| sdk_error(&format!("delete {}", self.url(key)), e)) {
            Ok(_) => Ok(Deleted::Yes),
            Err(Error::Conflict(_)) => Ok(Deleted::Changed),
            Err(Error::NotFound(_)) => Ok(Deleted::Absent),
            Err(e) => Err(e),
        }
    }
}

/// The region `bucket` reports, from HeadBucket's answer or refusal (`None` when the
/// answer names none), and whether HeadBucket was answered 200; `Transient` when there was
/// no answer.
async fn bucket_region(ctx: &AwsContext, bucket: &str) -> Result<(Option<String>, bool)> {
    let mut answered_ok = false;
    let region = match ctx.s3().head_bucket().bucket(bucket).send().await {
        Ok(out) => {
            answered_ok = true;
            out.bucket_region().map(str::to_string)
        }
        Err(e) => match e.raw_response().map(|r| r.headers().get("x-amz-bucket-region").map(str::to_string)) {
            // A refusal (403, 404, 301) names the region when S3 knows it; a missing or
            // forbidden bucket is reported by the check that follows, not here.
            Some(region) if region.is_some() || !is_passing(e.raw_response()) => region,
            // No answer, or a passing one (5xx, throttling): the caller's retry policy
            // decides, and this request counts as one of its attempts.
            _ => return Err(sdk_error(&format!("find the region of bucket {bucket}"), e)),
        },
    };
    Ok((region.filter(|r| !r.is_empty()), answered_ok))
}

/// What a HEAD says about an object's archive: its storage class, Intelligent-Tiering's
/// `x-amz-archive-status`, and `x-amz-restore` (`ongoing-request="true"` while a restore
/// runs, `ongoing-request="false", expiry-date=...` once a copy is readable).
fn archive_of(class: Option<&str>, archive_status: Option<&str>, restore: Option<&str>) -> Archive {
    let what = match archive_status {
        Some(s) => format!("{} {s}", class.unwrap_or("INTELLIGENT_TIERING")),
        None => class.unwrap_or("STANDARD").to_string(),
    };
    match restore {
        Some(r) if r.contains("ongoing-request=\"true\"") => Archive::Restoring(what),
        Some(r) if r.contains("ongoing-request=\"false\"") => Archive::Readable,
        _ if archive_status.is_some() || crate::objstore::is_archive_class(class) => Archive::Archived(what),
        _ => Archive::Readable,
    }
}

/// Whether `response` is a passing failure (a 5xx or a 429) rather than an answer.
fn is_passing(response: Option<&HttpResponse>) -> bool {
    response.is_some_and(|r| r.status().is_server_error() || r.status().as_u16() == 429)
}

/// A listed or HEADed storage class as [`ObjectEntry::storage_class`] keeps it: `None` for
/// the default, STANDARD (which HEAD leaves out and listings spell out).
fn class_name(class: Option<&str>) -> Option<String> {
    class.filter(|c| *c != "STANDARD").map(str::to_string)
}

/// A PutObject or CreateMultipartUpload request builder with an object's attributes and
/// the job's write options set: the one place that says how a new object is written.
macro_rules! with_attrs {
    ($req:expr, $attrs:expr, $w:expr) => {{
        let (attrs, w): (&ObjectAttrs, &WriteOptions) = ($attrs, $w);
        let metadata: std::collections::HashMap<String, String> = attrs.metadata.clone().into_iter().collect();
        $req.set_content_type(attrs.content_type.clone())
            .set_content_encoding(attrs.content_encoding.clone())
            .set_content_disposition(attrs.content_disposition.clone())
            .set_content_language(attrs.content_language.clone())
            .set_cache_control(attrs.cache_control.clone())
            .set_expires($crate::backend::aws::s3::http_date(attrs.expires.as_deref()))
            .set_metadata(Some(metadata).filter(|m| !m.is_empty()))
            .set_tagging($crate::backend::aws::s3::tagging(&attrs.tags))
            .set_storage_class(
                w.class_for(attrs.storage_class.as_deref()).map(|c| aws_sdk_s3::types::StorageClass::from(c.as_str())),
            )
            .set_server_side_encryption(w.sse.as_deref().map(aws_sdk_s3::types::ServerSideEncryption::from))
            .set_ssekms_key_id(w.sse_kms_key_id.clone())
    }};
}
pub(super) use with_attrs;

/// The attributes in a GetObject or HeadObject answer (tags excepted: they take a request
/// of their own), as [`ObjectAttrs`].
macro_rules! attrs_of {
    ($out:expr) => {{
        let out = &$out;
        let own = |v: Option<&str>| v.map(str::to_string);
        ObjectAttrs {
            content_type: own(out.content_type()),
            content_encoding: own(out.content_encoding()),
            content_disposition: own(out.content_disposition()),
            content_language: own(out.content_language()),
            cache_control: own(out.cache_control()),
            expires: own(out.expires_string()),
            metadata: out
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect())
                .unwrap_or_default(),
            tags: Default::default(),
            storage_class: class_name(out.storage_class().map(|c| c.as_str())),
        }
    }};
}
pub(super) use attrs_of;

impl S3Store {
    /// The tags of `bucket/key`.
    pub(super) async fn tags(&self, bucket: &str, key: &str) -> Result<BTreeMap<String, String>> {
        let out = self
            .client
            .get_object_tagging()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("tags of s3://{bucket}/{key}"), e))?;
        Ok(out.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
    }
}

/// Tags as the `x-amz-tagging` header wants them: a URL-encoded query string.
pub(super) fn tagging(tags: &BTreeMap<String, String>) -> Option<String> {
    const ENC: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, ENC).to_string();
    let pairs: Vec<String> = tags.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect();
    (!pairs.is_empty()).then(|| pairs.join("&"))
}

/// An HTTP date (`Expires`) as the SDK's date type; `None` when absent or not a date.
pub(super) fn http_date(s: Option<&str>) -> Option<aws_smithy_types::DateTime> {
    s.and_then(|s| aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::HttpDate).ok())
}

/// An ETag in the quoted form HTTP conditions use.
fn quote(etag: &str) -> String {
    let mut quoted = String::with_capacity(etag.len() + 2);
    quoted.push('"');
    quoted.push_str(etag);
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::{Archive, archive_of};

    #[test]
    fn a_head_tells_archived_restoring_and_restored_apart() {
        let archived = |c: &str| Archive::Archived(c.to_string());
        assert_eq!(archive_of(None, None, None), Archive::Readable);
        assert_eq!(archive_of(Some("STANDARD_IA"), None, None), Archive::Readable);
        assert_eq!(archive_of(Some("GLACIER_IR"), None, None), Archive::Readable, "instant retrieval reads");
        assert_eq!(archive_of(Some("GLACIER"), None, None), archived("GLACIER"));
        assert_eq!(archive_of(Some("DEEP_ARCHIVE"), None, None), archived("DEEP_ARCHIVE"));
        assert_eq!(
            archive_of(Some("INTELLIGENT_TIERING"), Some("DEEP_ARCHIVE_ACCESS"), None),
            archived("INTELLIGENT_TIERING DEEP_ARCHIVE_ACCESS")
        );
        assert_eq!(
            archive_of(Some("GLACIER"), None, Some("ongoing-request=\"true\"")),
            Archive::Restoring("GLACIER".into())
        );
        let restored = "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"";
        assert_eq!(archive_of(Some("GLACIER"), None, Some(restored)), Archive::Readable);
    }

    /// A copy goes out as S3's CopyObject without the SDK's pipeline: the key percent-encoded
    /// in the path, the source and its ETag condition, the class and encryption asked for,
    /// every one of them signed; the ETag is read from the answer.
    #[tokio::test]
    async fn a_copy_is_a_signed_put_with_the_copy_headers() {
        use crate::model::ObjectEntry;
        use crate::objstore::{CopySource, ObjectStore, WriteOptions};
        let (url, server) = crate::backend::aws::tests::serve_one(
            "<CopyObjectResult><ETag>&quot;0123abcd&quot;</ETag></CopyObjectResult>",
        )
        .await;
        let store = super::S3Store::new(&super::AwsContext::for_emulator(&url).await, "dst");
        assert!(store.lean.is_some(), "an emulator's plain SigV4 endpoint takes the lean path");
        let source = CopySource { endpoint: store.endpoint.clone(), bucket: "src".into() };
        let src =
            ObjectEntry { key: "a b+c/é$.txt".into(), size: 5, etag: Some("0123abcd".into()), storage_class: None };
        let w = WriteOptions {
            storage_class: Some("STANDARD_IA".into()),
            sse: Some("AES256".into()),
            sse_kms_key_id: None,
        };
        let copied = store.copy_from(&source, &src, "to/a b+c/é$.txt", &w).await.unwrap();
        assert_eq!((copied.etag.as_deref(), copied.size), (Some("0123abcd"), 5));
        assert_eq!(copied.storage_class.as_deref(), Some("STANDARD_IA"));
        let head = server.await.unwrap();
        assert!(head.starts_with("put /dst/to/a%20b%2bc/%c3%a9%24.txt http/1.1\r\n"), "{head}");
        for h in [
            "x-amz-copy-source: src/a%20b%2bc/%c3%a9%24.txt",
            "x-amz-copy-source-if-match: \"0123abcd\"",
            "x-amz-storage-class: standard_ia",
            "x-amz-server-side-encryption: aes256",
            "content-length: 0",
        ] {
            assert!(head.contains(&format!("{h}\r\n")), "{h} missing: {head}");
        }
        assert!(
            head.contains("signedheaders=host;x-amz-content-sha256;x-amz-copy-source;x-amz-copy-source-if-match;x-amz-date;x-amz-server-side-encryption;x-amz-storage-class,"),
            "{head}"
        );
        assert!(!head.contains("aws-sdk-rust"), "not through the SDK: {head}");

        // Requester pays: on the copy, and signed.
        let (url, server) = crate::backend::aws::tests::serve_one("<CopyObjectResult></CopyObjectResult>").await;
        let payer = crate::model::Connection { request_payer: true, ..Default::default() };
        let store = super::S3Store::new(&super::AwsContext::for_emulator(&url).await.with_overrides(&payer), "dst");
        let source = CopySource { endpoint: store.endpoint.clone(), bucket: "src".into() };
        let copied = store.copy_from(&source, &src, "k", &WriteOptions::KEEP).await.unwrap();
        assert_eq!(copied.etag, None, "an answer without an ETag is a copy whose ETag is unknown");
        let head = server.await.unwrap();
        assert!(head.contains("x-amz-request-payer: requester\r\n"), "{head}");
        assert!(head.contains(";x-amz-request-payer,"), "signed: {head}");
    }

    /// S3 can fail a copy after answering 200: that is a failure (retried), never a copy.
    #[tokio::test]
    async fn an_error_inside_a_200_fails_the_copy() {
        use crate::error::Error;
        use crate::model::ObjectEntry;
        use crate::objstore::{CopySource, ObjectStore, WriteOptions};
        let (url, _server) =
            crate::backend::aws::tests::serve_one("<Error><Code>InternalError</Code><Message>x</Message></Error>")
                .await;
        let store = super::S3Store::new(&super::AwsContext::for_emulator(&url).await, "dst");
        let source = CopySource { endpoint: store.endpoint.clone(), bucket: "src".into() };
        let src = ObjectEntry { key: "k".into(), size: 1, etag: Some("e".into()), storage_class: None };
        let r = store.copy_from(&source, &src, "k", &WriteOptions::KEEP).await;
        assert!(matches!(r, Err(Error::Transient(ref m)) if m.contains("InternalError")), "{r:?}");
    }

    /// A clock off by an hour: S3 refuses the copy as too skewed (a retried failure), and
    /// the next one is signed with the service's time, taken from the refusal's `Date`.
    #[tokio::test]
    async fn a_skewed_clock_is_corrected_from_the_services_answer() {
        use crate::error::Error;
        use crate::model::ObjectEntry;
        use crate::objstore::{CopySource, ObjectStore, WriteOptions};
        use aws_smithy_types::date_time::{DateTime, Format};
        let ahead = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let date = DateTime::from(ahead).fmt(Format::HttpDate).unwrap();
        let refusal = "<Error><Code>RequestTimeTooSkewed</Code><Message>too skewed</Message></Error>";
        let ok = "<CopyObjectResult><ETag>\"e\"</ETag></CopyObjectResult>";
        let (url, server) = crate::backend::aws::tests::serve(vec![
            format!("HTTP/1.1 403 Forbidden\r\ndate: {date}\r\ncontent-length: {}\r\n\r\n{refusal}", refusal.len()),
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{ok}", ok.len()),
        ])
        .await;
        let store = super::S3Store::new(&super::AwsContext::for_emulator(&url).await, "dst");
        let source = CopySource { endpoint: store.endpoint.clone(), bucket: "src".into() };
        let src = ObjectEntry { key: "k".into(), size: 1, etag: Some("e".into()), storage_class: None };
        let first = store.copy_from(&source, &src, "k", &WriteOptions::KEEP).await;
        assert!(matches!(first, Err(Error::Transient(_))), "{first:?}");
        store.copy_from(&source, &src, "k", &WriteOptions::KEEP).await.unwrap();
        let heads = server.await.unwrap();
        // `x-amz-date: 20261203T144218Z`, as seconds.
        let amz_date = |head: &str| {
            let v = head.lines().find_map(|l| l.strip_prefix("x-amz-date: ")).unwrap();
            let t = format!("{}-{}-{}T{}:{}:{}Z", &v[0..4], &v[4..6], &v[6..8], &v[9..11], &v[11..13], &v[13..15]);
            DateTime::from_str(&t, Format::DateTime).unwrap().secs()
        };
        let moved = amz_date(&heads[1]) - amz_date(&heads[0]);
        assert!((3590..3700).contains(&moved), "the second copy is signed an hour later: {moved} s");
    }

    /// No answer is a retried failure that says why; a request HTTP cannot carry is not
    /// retried.
    #[tokio::test]
    async fn no_answer_is_retried_and_an_unsendable_copy_is_not() {
        use crate::error::Error;
        use crate::model::ObjectEntry;
        use crate::objstore::{CopySource, ObjectStore, WriteOptions};
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let store = super::S3Store::new(&super::AwsContext::for_emulator(&url).await, "dst");
        let source = CopySource { endpoint: store.endpoint.clone(), bucket: "src".into() };
        let src = ObjectEntry { key: "k".into(), size: 1, etag: Some("e".into()), storage_class: None };
        let r = store.copy_from(&source, &src, "k", &WriteOptions::KEEP).await;
        assert!(
            matches!(r, Err(Error::Transient(ref m)) if m.contains("no answer") && m.contains("s3://src/k")),
            "{r:?}"
        );
        let w =
            WriteOptions { sse: Some("aws:kms".into()), sse_kms_key_id: Some("key\nid".into()), storage_class: None };
        let r = store.copy_from(&source, &src, "k", &w).await;
        assert!(matches!(r, Err(Error::Permanent(_))), "{r:?}");
    }

    /// A listed single-part copy's future holds only the lean request: the paths it does not
    /// take (HEAD, multipart, the SDK's CopyObject, whose future alone is ~10 KB) are boxed,
    /// so each of the millions of copies does not allocate and move their size.
    #[tokio::test]
    async fn a_copy_future_holds_only_the_path_it_takes() {
        use crate::model::ObjectEntry;
        use crate::objstore::{CopySource, ObjectStore, WriteOptions};
        let store = super::S3Store::new(&super::AwsContext::for_emulator("http://127.0.0.1:9").await, "dst");
        let source = CopySource { endpoint: store.endpoint.clone(), bucket: "src".into() };
        let src = ObjectEntry { key: "k".into(), size: 1, etag: Some("e".into()), storage_class: None };
        let copy = store.copy_from(&source, &src, "k", &WriteOptions::KEEP);
        let size = std::mem::size_of_val(&*copy);
        assert!(size < 3 * 1024, "a copy's future is {size} bytes");
    }
}
