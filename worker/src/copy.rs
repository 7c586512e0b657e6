//! Copying one object: server-side when both stores are on the same S3 endpoint, streamed
//! (get, then put) otherwise. Both are conditional on the ETag the source was listed with
//! (CopySourceIfMatch, GET If-Match), so a copy never writes a version other than the one
//! listed and verified: a worker whose lease expired cannot put an old version over a newer
//! copy. Transient failures are retried with jittered backoff; a repeated copy gives the
//! same result, so retries and redeliveries are safe.

use shared::Result;
use shared::error::retry;
use shared::model::ObjectEntry;
use shared::objstore::ObjectStore;

/// Attempts per object before a copy is recorded as failed.
pub const COPY_ATTEMPTS: u32 = 5;

/// Copies `src` (a source entry, full key) to `dst_key` in `dst`; returns the new object.
pub async fn copy_object(
    src: &dyn ObjectStore,
    dst: &dyn ObjectStore,
    entry: &ObjectEntry,
    dst_key: &str,
) -> Result<ObjectEntry> {
    let server_side = match (src.copy_source(), dst.copy_source()) {
        (Some(s), Some(d)) if s.endpoint == d.endpoint => Some(s),
        _ => None,
    };
    retry(COPY_ATTEMPTS, || async {
        match &server_side {
            Some(s) => dst.copy_from(s, entry, dst_key).await,
            None => {
                let body = src.get(&entry.key, entry.etag.as_deref()).await?;
                dst.put(dst_key, body, entry.size).await
            }
        }
    })
    .await
}
