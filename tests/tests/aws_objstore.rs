//! S3Store against the AWS emulator: the object-store conformance suite (with the keys only
//! S3 can hold), multipart copies keeping the source's ETag, streamed uploads, and copies
//! of a source that changed since it was listed.

use std::sync::Arc;

use bucketclone_tests::{moto, unique};
use shared::backend::aws::AwsContext;
use shared::backend::aws::s3::S3Store;
use shared::conformance::objstore::{self as suite, Caps, body, md5_hex, noise, read_all};
use shared::error::Error;
use shared::model::ObjectEntry;
use shared::objstore::ObjectStore;
use shared::objstore::{ObjectAttrs, WriteOptions};

const MIB: usize = 1 << 20;

/// A store over a new, empty bucket.
async fn fresh(ctx: &AwsContext) -> S3Store {
    let name = unique("objstore");
    ctx.s3().create_bucket().bucket(&name).send().await.unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    S3Store::new(ctx, &name)
}

#[tokio::test]
async fn s3_store_passes_the_conformance_suite() {
    let ctx = moto().await;
    let caps =
        Caps { s3_only_keys: true, list_etags: true, missing: Arc::new(S3Store::new(&ctx, &unique("never-created"))) };
    suite::run(
        || {
            let ctx = ctx.clone();
            async move { Arc::new(fresh(&ctx).await) as Arc<dyn ObjectStore> }
        },
        caps,
    )
    .await;
}

/// At S3's cap on keys per list call, a page of a bounded range keeps one key back to
/// learn whether the range goes on: the paged listing cases again with the cap at 3 (so
/// pages of 3 and of 1,000 both hit it), where "truncated" must still be exact.
#[tokio::test]
async fn s3_store_listing_is_exact_at_the_list_cap() {
    let ctx = moto().await;
    let caps =
        Caps { s3_only_keys: true, list_etags: true, missing: Arc::new(S3Store::new(&ctx, &unique("never-created"))) };
    let new_store = || {
        let ctx = ctx.clone();
        async move { Arc::new(fresh(&ctx).await.with_list_cap(3)) as Arc<dyn ObjectStore> }
    };
    suite::run_paged_listing(&new_store, &caps).await;
}

/// The ETag S3 gives an object uploaded in parts of these sizes.
fn multipart_etag(data: &[u8], part: usize) -> String {
    let mut digests = Vec::new();
    for chunk in data.chunks(part) {
        let hex = md5_hex(chunk);
        digests.extend((0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()));
    }
    format!("{}-{}", md5_hex(&digests), data.len().div_ceil(part))
}

#[tokio::test]
async fn multipart_copy_keeps_the_source_etag() {
    let ctx = moto().await;
    // CRC32: moto stores a CRC32 named CRC64NVME for multipart uploads, which the SDK's
    // response validation then refuses on GET.
    let src = fresh(&ctx).await.with_multipart(6 * MIB as u64, 5 * MIB as u64).with_upload_checksum("CRC32");
    let dst = fresh(&ctx).await;
    let data = noise(11 * MIB + 7, 42);
    let put = src
        .put("big/source", body(data.clone()), data.len() as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP)
        .await
        .unwrap();
    let want = multipart_etag(&data, 5 * MIB);
    assert!(want.ends_with("-3"), "{want}");
    assert_eq!(put.etag.as_deref(), Some(want.as_str()), "ETag of the 3-part upload");
    assert_eq!(src.head("big/source").await.unwrap(), Some(put.clone()));

    let source = src.copy_source().unwrap();
    for (dst_key, listed) in [
        ("copy of big/source é+%", put.clone()),
        // No ETag in the listing: the adapter HEADs the source first.
        ("copy without a listed etag", ObjectEntry { etag: None, ..put.clone() }),
    ] {
        let copy = dst.copy_from(&source, &listed, dst_key, &WriteOptions::KEEP).await.unwrap();
        assert_eq!(copy.etag, put.etag, "copy ETag of {dst_key:?}");
        assert_eq!(copy.size, data.len() as u64);
        assert_eq!(dst.head(dst_key).await.unwrap().and_then(|h| h.etag), put.etag);
        assert!(read_all(&dst, dst_key).await == data, "bytes of {dst_key:?}");
    }
}

#[tokio::test]
async fn large_bodies_stream_and_must_match_their_size() {
    let ctx = moto().await;
    let store = fresh(&ctx).await;
    let data = noise(9 * MIB + 3, 7);
    let put = store
        .put("streamed", body(data.clone()), data.len() as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP)
        .await
        .unwrap();
    assert_eq!(put.etag, Some(md5_hex(&data)));
    assert!(read_all(&store, "streamed").await == data);

    let n = data.len() as u64;
    let short =
        store.put("short", body(data[..data.len() - 1].to_vec()), n, &ObjectAttrs::NONE, &WriteOptions::KEEP).await;
    assert!(short.is_err(), "a short streamed body was accepted");
    let long = store.put("long", body(data.clone()), n - 1, &ObjectAttrs::NONE, &WriteOptions::KEEP).await;
    assert!(long.is_err(), "a long streamed body was accepted");
    for key in ["short", "long"] {
        assert_eq!(store.head(key).await.unwrap(), None, "{key} was written");
    }
}

#[tokio::test]
async fn a_multipart_copy_of_a_source_changed_since_listing_fails_permanently() {
    // (Single-part copies send x-amz-copy-source-if-match, which moto ignores; the
    // multipart path also checks the source's ETag itself, which this test exercises.)
    let ctx = moto().await;
    let src = fresh(&ctx).await.with_multipart(6 * MIB as u64, 5 * MIB as u64);
    let dst = fresh(&ctx).await;
    let n = 11 * MIB;
    let old = src.put("k", body(noise(n, 1)), n as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    let new = src.put("k", body(noise(n, 2)), n as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    assert_ne!(old.etag, new.etag);
    let r = dst.copy_from(&src.copy_source().unwrap(), &old, "k", &WriteOptions::KEEP).await;
    assert!(matches!(&r, Err(Error::Permanent(m)) if m.contains("changed")), "{r:?}");
    assert_eq!(dst.head("k").await.unwrap(), None);
}

#[tokio::test]
async fn checksums_report_what_s3_stored() {
    let ctx = moto().await;
    let store = fresh(&ctx).await;
    store.put("k", body(b"hello".to_vec()), 5, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    let sums = store.checksums("k").await.unwrap();
    // Uploads ask for CRC64NVME (the SDK computes it, moto stores it); a local file of the
    // same bytes computes the same value.
    assert_eq!(sums.values, vec![("CRC64NVME".to_string(), suite::checksum_of("CRC64NVME", b"hello").unwrap())]);
    assert!(sums.etag_is_md5 && sums.composite.is_empty());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("k"), b"hello").unwrap();
    let local = shared::backend::embedded::local_dir::LocalDirStore::new(dir.path().to_str().unwrap()).unwrap();
    assert_eq!(local.checksums("k").await.unwrap().full("CRC64NVME"), sums.full("CRC64NVME"));
}

/// Objects uploaded in parts carry a full-object checksum; their copies carry the same one.
#[tokio::test]
async fn uploads_in_parts_carry_a_full_object_checksum_and_copies_keep_it() {
    let ctx = moto().await;
    // moto stores a CRC32 under the name CRC64NVME for multipart uploads (without awscrt):
    // ask for CRC32, which it computes right.
    let src = fresh(&ctx).await.with_multipart(6 * MIB as u64, 5 * MIB as u64).with_upload_checksum("CRC32");
    let dst = fresh(&ctx).await;
    let data = noise(11 * MIB + 7, 4);
    let put =
        src.put("big", body(data.clone()), data.len() as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    assert!(put.etag.as_deref().is_some_and(|e| e.ends_with("-3")), "{put:?}");
    let sums = src.checksums("big").await.unwrap();
    assert!(!sums.etag_is_md5, "a multipart ETag is no MD5 of the content");
    assert_eq!(sums.values, vec![("CRC32".to_string(), suite::checksum_of("CRC32", &data).unwrap())]);
    dst.copy_from(&src.copy_source().unwrap(), &put, "copy", &WriteOptions::KEEP).await.unwrap();
    assert_eq!(dst.checksums("copy").await.unwrap().values, sums.values, "the multipart copy's checksum");
}

/// Opening a bucket asks HeadBucket (for its region); the first check takes that answer
/// rather than asking again, and every later check asks: a store opened while its bucket
/// existed must not vouch for it once it is gone.
#[tokio::test]
async fn only_the_first_check_after_opening_takes_the_opening_answer() {
    let ctx = moto().await;
    let name = unique("opened");
    ctx.s3().create_bucket().bucket(&name).send().await.unwrap();
    let store = S3Store::open(&ctx, &name, false).await.unwrap();
    ctx.s3().delete_bucket().bucket(&name).send().await.unwrap();
    store.check().await.expect("the first check takes the opening HeadBucket's answer");
    let gone = store.check().await;
    assert!(matches!(gone, Err(Error::NotFound(_))), "a later check must ask: {gone:?}");
    let reopened = S3Store::open(&ctx, &name, false).await.unwrap();
    assert!(matches!(reopened.check().await, Err(Error::NotFound(_))), "opened after the delete: not found");
}
