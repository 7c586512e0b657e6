//! Copying one object: server-side when both stores are on the same S3 endpoint, streamed
//! (get, then put) otherwise, with the source's attributes (content headers, metadata,
//! tags, storage class) and the job's write options over them. Both are conditional on the ETag the source was listed with
//! (CopySourceIfMatch, GET If-Match), so a copy never writes a version other than the one
//! listed and verified: a worker whose lease expired cannot put an old version over a newer
//! copy. Transient failures (`Throttled` included) are retried under the process's
//! [`RetryPolicy`] (`AWS_MAX_ATTEMPTS` attempts in all, jittered backoff); each attempt runs
//! in a slot of the worker's [`CopyLimit`] and reports to it, and the backoff holds no slot.
//! A streamed attempt re-opens the source: a body cannot be replayed. A repeated copy gives
//! the same result, so retries and redeliveries are safe.

use shared::Result;
use shared::error::RetryPolicy;
use shared::model::ObjectEntry;
use shared::objstore::{ObjectStore, WriteOptions};

use crate::limit::CopyLimit;

/// Copies `src` (a source entry, full key) to `dst_key` in `dst`; returns the new object.
/// At most `limit` attempts of the worker's copies run at once.
pub async fn copy_object(
    src: &dyn ObjectStore,
    dst: &dyn ObjectStore,
    entry: &ObjectEntry,
    dst_key: &str,
    w: &WriteOptions,
    limit: &CopyLimit,
) -> Result<ObjectEntry> {
    let server_side = match (src.copy_source(), dst.copy_source()) {
        (Some(s), Some(d)) if s.endpoint == d.endpoint => Some(s),
        _ => None,
    };
    let started = std::time::Instant::now();
    let copied = limit
        .run(&RetryPolicy::current(), || async {
            match &server_side {
                Some(s) => dst.copy_from(s, entry, dst_key, w).await,
                None => {
                    let d = src.get(&entry.key, entry.etag.as_deref()).await?;
                    dst.put(dst_key, d.body, entry.size, &d.attrs, w).await
                }
            }
        })
        .await;
    if copied.is_ok() {
        metrics::histogram!(shared::telemetry::COPY_SECONDS).record(started.elapsed().as_secs_f64());
    }
    copied
}
