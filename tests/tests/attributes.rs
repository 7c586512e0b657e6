//! What a copy keeps besides the bytes: content headers, user metadata, tags and storage
//! class, on every copy path (CopyObject, UploadPartCopy, a streamed PUT, a streamed
//! multipart upload), and the job's `--storage-class` and `--sse` over them. Checked the way
//! a user would: HeadObject and GetObjectTagging agree on both sides.

use std::collections::BTreeMap;
use std::sync::Arc;

use bucketclone::local::{LocalOptions, run_with};
use bucketclone_tests::procs::SecondMoto;
use bucketclone_tests::{moto, unique};
use shared::backend::StoreFactory;
use shared::backend::aws::{AwsContext, s3::S3Store};
use shared::conformance::objstore::body;
use shared::model::{Connection, JobOptions, JobState, Location};
use shared::objstore::{ObjectAttrs, ObjectStore, WriteOptions};

/// Every attribute a copy keeps, set on the source objects.
fn attrs() -> ObjectAttrs {
    ObjectAttrs {
        content_type: Some("text/html; charset=utf-8".into()),
        content_encoding: Some("identity".into()),
        content_disposition: Some("attachment; filename=\"report 1.html\"".into()),
        content_language: Some("en-GB".into()),
        cache_control: Some("max-age=60, public".into()),
        expires: Some("Wed, 21 Oct 2026 07:28:00 GMT".into()),
        metadata: BTreeMap::from([("owner".into(), "alice".into()), ("x-trace".into(), "a=1;b=2".into())]),
        tags: BTreeMap::from([("team".into(), "data eng".into()), ("env".into(), "prod/α".into())]),
        storage_class: Some("STANDARD_IA".into()),
    }
}

/// Keys and sizes: one single-part object, one over the lowered multipart threshold.
const OBJECTS: &[(&str, usize)] = &[("single/page.html", 3000), ("multi/big.bin", 12 << 20)];

/// What HeadObject and GetObjectTagging say of `bucket/key`, as one comparable text.
async fn seen(ctx: &AwsContext, bucket: &str, key: &str) -> String {
    let s3 = ctx.s3();
    let h = s3.head_object().bucket(bucket).key(key).send().await.unwrap();
    let t = s3.get_object_tagging().bucket(bucket).key(key).send().await.unwrap();
    let tags: BTreeMap<_, _> = t.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect();
    let meta: BTreeMap<_, _> = h.metadata().cloned().unwrap_or_default().into_iter().collect();
    format!(
        "type {:?}, encoding {:?}, disposition {:?}, language {:?}, cache {:?}, expires {:?}, meta {meta:?}, tags {tags:?}, class {:?}, sse {:?}",
        h.content_type(),
        h.content_encoding(),
        h.content_disposition(),
        h.content_language(),
        h.cache_control(),
        h.expires_string(),
        h.storage_class().map(|c| c.as_str()).unwrap_or("STANDARD"),
        h.server_side_encryption().map(|e| e.as_str()),
    )
}

/// A source bucket with [`OBJECTS`], all carrying [`attrs`] (the large one uploaded in parts).
async fn source(ctx: &AwsContext) -> String {
    let name = unique("attr-src");
    S3Store::create_bucket(ctx, &name).await.unwrap();
    // CRC32: moto stores a CRC32 named CRC64NVME for multipart uploads (see the README).
    let store = S3Store::new(ctx, &name).with_multipart(5 << 20, 5 << 20).with_upload_checksum("CRC32");
    for (key, size) in OBJECTS {
        let bytes: Vec<u8> = (0..*size).map(|i| (i % 251) as u8).collect();
        store.put(key, body(bytes), *size as u64, &attrs(), &WriteOptions::KEEP).await.unwrap();
    }
    let parted = store.head("multi/big.bin").await.unwrap().unwrap();
    assert!(parted.etag.unwrap().ends_with("-3"), "the large source object is in parts");
    name
}

/// Clones `src` on `ctx` to a new bucket on `dst_ctx` (another service when `dst_url` is
/// given: the copies are streamed, large ones as multipart uploads); returns its name.
async fn clone(
    ctx: &AwsContext,
    src: &str,
    dst_ctx: &AwsContext,
    dst_url: Option<&str>,
    options: JobOptions,
) -> String {
    let dst = unique("attr-dst");
    S3Store::create_bucket(dst_ctx, &dst).await.unwrap();
    let conn = Connection { endpoint_url: dst_url.map(str::to_string), ..Default::default() };
    let (ls, ld) = (Location::s3(src, "").unwrap(), Location::s3(&dst, "").unwrap().with_conn(conn).unwrap());
    let stores = Arc::new(StoreFactory::with_aws(ctx.clone()));
    let store = S3Store::new(dst_ctx, &dst).with_multipart(5 << 20, 5 << 20).with_upload_checksum("CRC32");
    stores.insert(&ld, Arc::new(store));
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalOptions { state: dir.path().join("s.sqlite"), workers: 1, concurrency: 4, show_progress: false };
    let out = run_with(stores, ls, ld, options, &opts).await.unwrap();
    assert_eq!(out.job.state, JobState::Verified, "{:?}", out.job.message);
    assert_eq!(out.job.counters.copied_objects, OBJECTS.len() as i64);
    dst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_copy_path_keeps_every_attribute() {
    let ctx = moto().await;
    let second = SecondMoto::start();
    let other = AwsContext::for_emulator(&second.url).await;
    let src = source(&ctx).await;

    let server_side = clone(&ctx, &src, &ctx, None, JobOptions::default()).await;
    let streamed = clone(&ctx, &src, &other, Some(&second.url), JobOptions::default()).await;
    for (key, _) in OBJECTS {
        let want = seen(&ctx, &src, key).await;
        assert!(want.contains("STANDARD_IA") && want.contains("alice") && want.contains("data eng"), "{want}");
        assert_eq!(seen(&ctx, &server_side, key).await, want, "{key}: server-side copy");
        assert_eq!(seen(&other, &streamed, key).await, want, "{key}: streamed copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_storage_class_and_encryption_apply_to_every_copy() {
    let ctx = moto().await;
    let second = SecondMoto::start();
    let other = AwsContext::for_emulator(&second.url).await;
    let src = source(&ctx).await;

    let options =
        || JobOptions { storage_class: Some("ONEZONE_IA".into()), sse: Some("AES256".into()), ..Default::default() };
    let server_side = clone(&ctx, &src, &ctx, None, options()).await;
    let streamed = clone(&ctx, &src, &other, Some(&second.url), options()).await;
    for (key, _) in OBJECTS {
        let want = seen(&ctx, &src, key)
            .await
            .replace("STANDARD_IA", "ONEZONE_IA")
            .replace("sse None", "sse Some(\"AES256\")");
        assert_eq!(seen(&ctx, &server_side, key).await, want, "{key}: server-side copy");
        assert_eq!(seen(&other, &streamed, key).await, want, "{key}: streamed copy");
    }
}
