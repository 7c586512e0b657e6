//! Multipart copies and uploads.
//!
//! A copy of an object uploaded in parts reuses the source's part boundaries, so the copy's
//! ETag (the MD5 of the part MD5s, `-N`) equals the source's and verification can compare
//! them. Every part copy is conditional on the source ETag, so a source replaced mid-copy
//! fails the copy instead of mixing versions. A failed upload is aborted (best effort: a
//! bucket lifecycle rule for incomplete uploads catches the rest).
//!
//! Each part request is retried in place under the process's [`RetryPolicy`]: the SDK makes
//! one attempt, and a part failing must not restart an upload of thousands of parts. Other
//! requests here fail the whole operation, which the engine retries.
//!
//! [`RetryPolicy`]: crate::error::RetryPolicy

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::{S3Store, attrs_of, body, class_name, quote, with_attrs};
use crate::backend::aws::sdk_error;
use crate::error::{Error, Result, with_retries};
use crate::model::ObjectEntry;
use crate::objstore::{Body, CopySource, ObjectAttrs, ObjectStore, WriteOptions, unquote_etag};

/// Part copies (or part HEADs) in flight at once for one object.
const PARALLEL: usize = 4;
/// Part size when copying an object that was not uploaded in parts (over 5 GiB).
const COPY_PART: u64 = 512 << 20;
/// S3's limit on parts per upload.
const MAX_PARTS: u64 = 10_000;

/// Every byte but unreserved characters and `/` is percent-encoded.
pub(super) const KEY_ENCODE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// The `x-amz-copy-source` value for `bucket/key`: the SDK sends it as given, so the key
/// must be percent-encoded here.
pub(super) fn copy_source_header(bucket: &str, key: &str) -> String {
    let mut header = String::with_capacity(bucket.len() + 1 + key.len() * 3 / 2);
    header.push_str(bucket);
    header.push('/');
    header.extend(utf8_percent_encode(key, KEY_ENCODE));
    header
}

/// Classifies a copy failure; a failed `x-amz-copy-source-if-match` means the source
/// changed since it was listed, which is not "already done" but a failure of this copy.
pub(super) fn copy_error<E>(
    source: &CopySource,
    src: &ObjectEntry,
    dst_key: &str,
    e: aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    copy_failed(source, src, dst_key, |what| sdk_error(what, e))
}

/// [`copy_error`] for a failure already classified by `classify(what)`.
pub(super) fn copy_failed(
    source: &CopySource,
    src: &ObjectEntry,
    dst_key: &str,
    classify: impl FnOnce(&str) -> Error,
) -> Error {
    let what = format!("copy s3://{}/{} to {dst_key:?}", source.bucket, src.key);
    match classify(&what) {
        Error::Archived(m) => Error::Archived(format!(
            "the source is archived (storage class {}): restore it (RestoreObject) before it can be copied ({m})",
            src.storage_class.as_deref().unwrap_or("unknown")
        )),
        Error::Conflict(m) => Error::Permanent(format!(
            "{what}: the source changed since it was listed (ETag no longer {:?}): {m}",
            src.etag.as_deref().unwrap_or("")
        )),
        e => e,
    }
}

/// The part size for `size` bytes: at least `min`, and large enough for 10,000 parts.
fn part_size_for(size: u64, min: u64) -> u64 {
    let need = size.div_ceil(MAX_PARTS).div_ceil(1 << 20) << 20;
    min.max(need)
}

/// `[start, end]` byte ranges of consecutive parts of the given sizes.
fn ranges(sizes: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut at = 0;
    sizes
        .into_iter()
        .map(|n| {
            at += n;
            (at - n, at - 1)
        })
        .collect()
}

/// Copies `src` (uploaded in parts, or over 5 GiB) part by part to `dst_key` in `store`.
pub(super) async fn copy(
    store: &S3Store,
    source: &CopySource,
    src: &ObjectEntry,
    dst_key: &str,
    w: &WriteOptions,
) -> Result<ObjectEntry> {
    let missing = || Error::NotFound(format!("s3://{}/{}", source.bucket, src.key));
    // A plain HEAD checks the source is still the listed object (a part HEAD carries the
    // part's ETag on some servers) and gives its checksum, which the copy asks for too;
    // part 1's HEAD gives the part size and count.
    let cur = store
        .client
        .head_object()
        .bucket(&source.bucket)
        .key(&src.key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|e| sdk_error(&format!("head s3://{}/{}", source.bucket, src.key), e))?;
    let cur_size = cur.content_length().unwrap_or(0).max(0) as u64;
    if cur.e_tag().map(unquote_etag) != src.etag || cur_size != src.size {
        return Err(Error::Permanent(format!(
            "copy s3://{}/{}: the source changed since it was listed",
            source.bucket, src.key
        )));
    }
    let head1 = store.head_in(&source.bucket, &src.key, Some(1)).await?.ok_or_else(missing)?;
    let parts = part_ranges(store, source, src, &head1).await?;
    // UploadPartCopy copies bytes only: the attributes come from the source's HEAD (the
    // plain one: a part's HEAD need not carry them) and its tags.
    let mut attrs = attrs_of!(cur);
    attrs.tags = store.tags(&source.bucket, &src.key).await?;
    let sum = super::checksums::for_copy_of(&super::checksums::from_head(&cur));
    let id = create(store, dst_key, &attrs, w, &sum).await?;
    let header = copy_source_header(&source.bucket, &src.key);
    let if_match = src.etag.as_deref().map(quote);
    let copied: Result<Vec<CompletedPart>> = futures::stream::iter(parts.into_iter().enumerate())
        .map(|(i, (start, end))| {
            let req = store
                .client
                .upload_part_copy()
                .bucket(&store.bucket)
                .key(dst_key)
                .upload_id(&id)
                .part_number(i as i32 + 1)
                .copy_source(&header)
                .copy_source_range(format!("bytes={start}-{end}"))
                .set_copy_source_if_match(if_match.clone());
            async move {
                let out = with_retries(|| async {
                    req.clone().send().await.map_err(|e| copy_error(source, src, dst_key, e))
                })
                .await?;
                let r = out.copy_part_result();
                let part = completed(i as i32 + 1, r.and_then(|r| r.e_tag()))
                    .set_checksum_crc32(r.and_then(|r| r.checksum_crc32()).map(str::to_string))
                    .set_checksum_crc32_c(r.and_then(|r| r.checksum_crc32_c()).map(str::to_string))
                    .set_checksum_crc64_nvme(r.and_then(|r| r.checksum_crc64_nvme()).map(str::to_string))
                    .set_checksum_sha1(r.and_then(|r| r.checksum_sha1()).map(str::to_string))
                    .set_checksum_sha256(r.and_then(|r| r.checksum_sha256()).map(str::to_string));
                Ok(part.build())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect()
        .await;
    let entry = match copied {
        Ok(parts) => complete(store, dst_key, &id, parts, src.size).await,
        Err(e) => Err(e),
    };
    finish(store, dst_key, &id, entry, src.size).await
}

/// The source's part boundaries: uniform parts of part 1's size when part 1 and the last
/// part agree with that, else every part's own size (one HEAD each).
async fn part_ranges(
    store: &S3Store,
    source: &CopySource,
    src: &ObjectEntry,
    head1: &HeadObjectOutput,
) -> Result<Vec<(u64, u64)>> {
    let size = src.size;
    let Some(n) = head1.parts_count().filter(|n| *n >= 1).map(|n| n as u64) else {
        let p = part_size_for(size, COPY_PART);
        return Ok(ranges(uniform(size, p)));
    };
    let first = head1.content_length().unwrap_or(0).max(0) as u64;
    let last = size.saturating_sub((n - 1) * first);
    if first > 0 && (n - 1) * first < size && last <= first {
        let last_ok = n == 1
            || store.head_in(&source.bucket, &src.key, Some(n as i32)).await?.and_then(|h| h.content_length())
                == Some(last as i64);
        if last_ok {
            return Ok(ranges(uniform(size, first)));
        }
    }
    let sizes: Vec<u64> = futures::stream::iter(1..=n as i32)
        .map(|i| async move {
            let h = store.head_in(&source.bucket, &src.key, Some(i)).await?;
            let len = h
                .and_then(|h| h.content_length())
                .ok_or_else(|| Error::Permanent(format!("s3://{}/{}: part {i} vanished", source.bucket, src.key)))?;
            Ok::<u64, Error>(len.max(0) as u64)
        })
        .buffered(PARALLEL)
        .try_collect()
        .await?;
    if sizes.iter().sum::<u64>() != size {
        return Err(Error::Permanent(format!(
            "s3://{}/{}: its parts do not add up to its size",
            source.bucket, src.key
        )));
    }
    Ok(ranges(sizes))
}

/// Sizes of `size` bytes cut into parts of `part` bytes.
fn uniform(size: u64, part: u64) -> impl Iterator<Item = u64> {
    (0..size.div_ceil(part)).map(move |i| part.min(size - i * part))
}

/// Uploads `size` bytes of `body` to `key` in parts of at least `min_part`, each read into
/// memory (so each part can be retried).
pub(super) async fn upload(
    store: &S3Store,
    key: &str,
    mut body: Body,
    size: u64,
    min_part: u64,
    attrs: &ObjectAttrs,
    w: &WriteOptions,
) -> Result<ObjectEntry> {
    // A full-object checksum, so the object verifies against a source that has the same
    // one (a local file computes it), whatever its part size.
    let sum = (store.upload_checksum.clone(), ChecksumType::FullObject);
    let id = create(store, key, attrs, w, &sum).await?;
    let part = part_size_for(size, min_part);
    let uploaded: Result<Vec<CompletedPart>> = async {
        let mut parts = Vec::new();
        for (i, len) in uniform(size, part).enumerate() {
            let data = bytes::Bytes::from(body::read_exact(&mut body, len).await?);
            let out = with_retries(|| async {
                store
                    .client
                    .upload_part()
                    .bucket(&store.bucket)
                    .key(key)
                    .upload_id(&id)
                    .part_number(i as i32 + 1)
                    .content_length(len as i64)
                    .checksum_algorithm(sum.0.clone())
                    .body(ByteStream::from(data.clone()))
                    .send()
                    .await
                    .map_err(|e| sdk_error(&format!("upload part {} of {}", i + 1, store.url(key)), e))
            })
            .await?;
            let part = completed(i as i32 + 1, out.e_tag())
                .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                .set_checksum_crc32_c(out.checksum_crc32_c().map(str::to_string))
                .set_checksum_crc64_nvme(out.checksum_crc64_nvme().map(str::to_string))
                .set_checksum_sha1(out.checksum_sha1().map(str::to_string))
                .set_checksum_sha256(out.checksum_sha256().map(str::to_string));
            parts.push(part.build());
        }
        body::expect_end(&mut body, size).await?;
        Ok(parts)
    }
    .await;
    let entry = match uploaded {
        Ok(parts) => complete(store, key, &id, parts, size).await,
        Err(e) => Err(e),
    };
    finish(store, key, &id, entry, size).await
}

fn completed(n: i32, etag: Option<&str>) -> aws_sdk_s3::types::builders::CompletedPartBuilder {
    CompletedPart::builder().part_number(n).set_e_tag(etag.map(str::to_string))
}

/// Starts a multipart upload of an object with `attrs` and `w` over them, asking for the
/// checksum `sum`.
async fn create(
    store: &S3Store,
    key: &str,
    attrs: &ObjectAttrs,
    w: &WriteOptions,
    sum: &(ChecksumAlgorithm, ChecksumType),
) -> Result<String> {
    let req = store
        .client
        .create_multipart_upload()
        .bucket(&store.bucket)
        .key(key)
        .checksum_algorithm(sum.0.clone())
        .checksum_type(sum.1.clone());
    let out = with_attrs!(req, attrs, w)
        .send()
        .await
        .map_err(|e| sdk_error(&format!("start upload to {}", store.url(key)), e))?;
    out.upload_id().map(str::to_string).ok_or_else(|| Error::transient(format!("no upload id for {}", store.url(key))))
}

/// Completes the upload with its parts in order; returns the new object's ETag.
async fn complete(
    store: &S3Store,
    key: &str,
    id: &str,
    mut parts: Vec<CompletedPart>,
    size: u64,
) -> Result<Option<String>> {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    parts.sort_by_key(|p| p.part_number());
    let n = parts.len();
    let r = store
        .client
        .complete_multipart_upload()
        .bucket(&store.bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await;
    let e = match r {
        Ok(out) => return Ok(out.e_tag().map(unquote_etag)),
        Err(e) => e,
    };
    // Some servers (moto 5) answer a completed upload with XML the SDK cannot parse: a 200
    // with no error code. (S3's "200 with an <Error> body" carries a code and is not this.)
    // Confirm with a HEAD that an object of this size and part count is there.
    if e.raw_response().is_some_and(|r| r.status().as_u16() == 200) && e.code().is_none() {
        let suffix = format!("-{n}");
        if let Some(h) = store.head(key).await?
            && h.size == size
            && h.etag.as_deref().is_some_and(|t| t.ends_with(&suffix))
        {
            return Ok(h.etag);
        }
    }
    Err(sdk_error(&format!("complete upload to {}", store.url(key)), e))
}

/// The new object on success; on failure aborts the upload and returns the error.
async fn finish(store: &S3Store, key: &str, id: &str, etag: Result<Option<String>>, size: u64) -> Result<ObjectEntry> {
    match etag {
        Ok(etag) => Ok(ObjectEntry { key: key.to_string(), size, etag, storage_class: None }),
        Err(e) => {
            let abort = store.client.abort_multipart_upload().bucket(&store.bucket).key(key).upload_id(id).send().await;
            if let Err(a) = abort {
                tracing::warn!(key = %key, upload_id = %id, error = %sdk_error("abort", a), "could not abort a failed upload");
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_keeps_slashes_and_unreserved_characters_only() {
        assert_eq!(copy_source_header("b", "a/b c+d%e?f#g"), "b/a/b%20c%2Bd%25e%3Ff%23g");
        assert_eq!(copy_source_header("b", "~x-y_z.w"), "b/~x-y_z.w");
        assert_eq!(copy_source_header("b", "é"), "b/%C3%A9");
    }

    #[test]
    fn parts_tile_the_object() {
        assert_eq!(ranges(uniform(10, 4)), vec![(0, 3), (4, 7), (8, 9)]);
        assert_eq!(ranges(uniform(8, 4)), vec![(0, 3), (4, 7)]);
        assert_eq!(part_size_for(1 << 30, 64 << 20), 64 << 20);
        let huge = 5u64 << 40;
        let p = part_size_for(huge, 64 << 20);
        assert!(huge.div_ceil(p) <= MAX_PARTS && p.is_multiple_of(1 << 20));
    }
}
