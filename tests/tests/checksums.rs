//! Verification when ETags cannot decide (SSE-KMS and SSE-C objects, objects uploaded in
//! parts): the pair is settled by a common full-object checksum, asked for only for the
//! pairs whose ETags differ, and is never "verified" without one.
//!
//! [`KmsLike`] stores hand out ETags that are not MD5s and differ per side and per write,
//! as SSE-KMS does, with the wrapped store's real checksums.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use bucketclone::local::{LocalOptions, Outcome, run_with};
use bucketclone_tests::faulty::{KmsEtags, KmsLike};
use bucketclone_tests::{listing, moto, new_buckets, unique, write_tree};
use shared::backend::StoreFactory;
use shared::backend::aws::s3::S3Store;
use shared::backend::embedded::local_dir::LocalDirStore;
use shared::conformance::objstore::{body, noise};
use shared::model::{JobOptions, JobState, Location, Mode};
use shared::objstore::ObjectStore;
use shared::objstore::{ObjectAttrs, WriteOptions};

/// A job's two sides, wrapped as SSE-KMS-like stores, and a state file.
struct Pair {
    dir: tempfile::TempDir,
    src: (Location, Arc<KmsLike>),
    dst: (Location, Arc<KmsLike>),
}

impl Pair {
    fn new(src: (Location, Arc<dyn ObjectStore>), dst: (Location, Arc<dyn ObjectStore>)) -> Pair {
        let etags = Arc::new(KmsEtags::default());
        let s = Arc::new(KmsLike::new(src.1, "source", etags.clone()));
        let d = Arc::new(KmsLike::new(dst.1, "destination", etags));
        Pair { dir: tempfile::tempdir().unwrap(), src: (src.0, s), dst: (dst.0, d) }
    }

    /// Runs a job of `mode` to its end with fresh engine state around the same stores.
    async fn run(&self, mode: Mode) -> Outcome {
        let stores = Arc::new(StoreFactory::new());
        stores.insert(&self.src.0, self.src.1.clone());
        stores.insert(&self.dst.0, self.dst.1.clone());
        let opts =
            LocalOptions { state: self.dir.path().join("s.sqlite"), workers: 2, concurrency: 8, show_progress: false };
        let options = JobOptions { mode, page_size: 25, ..Default::default() };
        run_with(stores, self.src.0.clone(), self.dst.0.clone(), options, &opts).await.unwrap()
    }
}

fn per_thousand(n: u64, objects: i64) -> f64 {
    n as f64 * 1000.0 / objects as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_like_etags_verify_by_checksum_and_a_rerun_copies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    // Every file the same size: only content tells them apart.
    let n = 60;
    write_tree(&src, &(0..n).map(|i| (format!("k/{i:03}"), format!("content {i:03}").into_bytes())).collect());
    std::fs::create_dir_all(&dst).unwrap();
    let side = |p: &std::path::Path| -> (Location, Arc<dyn ObjectStore>) {
        (Location::local(p).unwrap(), Arc::new(LocalDirStore::new(p.to_str().unwrap()).unwrap()))
    };
    let pair = Pair::new(side(&src), side(&dst));

    let first = pair.run(Mode::Clone).await;
    let c = &first.job.counters;
    assert_eq!(first.job.state, JobState::Verified, "{:?}", first.job);
    assert_eq!((c.copied_objects, c.verified_objects, c.content_differs), (n, n, 0));

    // The rerun proves every pair by checksum and copies nothing.
    let writes = pair.dst.1.writes.load(SeqCst);
    let again = pair.run(Mode::Clone).await;
    let c = &again.job.counters;
    assert_eq!(again.job.state, JobState::Verified, "{:?}", again.job);
    assert_eq!((c.copied_objects, c.skipped_objects, c.verified_objects), (0, n, n));
    assert_eq!(again.stats.copies.load(Relaxed), 0, "a rerun copied");
    assert_eq!(pair.dst.1.writes.load(SeqCst), writes, "a rerun wrote to the destination");
    let heads = again.stats.head_calls.load(Relaxed);
    eprintln!(
        "KMS-like rerun of {n} objects: {heads} checksum requests, {:.0} per 1,000 objects",
        per_thousand(heads, n)
    );
    assert_eq!(heads, 2 * n as u64, "one checksum request per object and side, not repeated by verification");

    // Same size, other content, behind the engine's back: a difference, never "verified".
    std::fs::write(dst.join("k/007"), b"CONTENT 007").unwrap();
    let verify = pair.run(Mode::VerifyOnly).await;
    let c = &verify.job.counters;
    assert_eq!(verify.job.state, JobState::Mismatch);
    assert_eq!((c.content_differs, c.verified_objects, c.unverifiable), (1, n - 1, 0));
    let fixed = pair.run(Mode::Clone).await;
    assert_eq!((fixed.job.state, fixed.stats.copies.load(Relaxed)), (JobState::Verified, 1));
    assert_eq!(std::fs::read(dst.join("k/007")).unwrap(), b"content 007");

    // A source object without any checksum: nothing can prove its copy identical.
    pair.src.1.without_checksums.lock().unwrap().insert("k/011".into());
    for mode in [Mode::VerifyOnly, Mode::Clone] {
        let out = pair.run(mode).await;
        let c = &out.job.counters;
        assert_eq!(out.job.state, JobState::Mismatch, "{mode:?}");
        assert_eq!((c.unverifiable, c.verified_objects, c.content_differs), (1, n - 1, 0), "{mode:?}");
    }
}

/// Plain directories (ETags are MD5s, equal on both sides) need no checksum request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_objects_need_no_checksum_request() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let n = 60;
    write_tree(&src, &(0..n).map(|i| (format!("k/{i:03}"), format!("content {i:03}").into_bytes())).collect());
    let opts = LocalOptions { state: dir.path().join("s.sqlite"), workers: 2, concurrency: 8, show_progress: false };
    let (ls, ld) = (Location::local(&src).unwrap(), Location::local(&dst).unwrap());
    let stores = || Arc::new(StoreFactory::new());
    let options = JobOptions { page_size: 25, ..Default::default() };
    for expect_copies in [n, 0] {
        let out = run_with(stores(), ls.clone(), ld.clone(), options.clone(), &opts).await.unwrap();
        assert_eq!(out.job.state, JobState::Verified);
        assert_eq!(out.stats.copies.load(Relaxed), expect_copies as u64);
        assert_eq!(out.stats.head_calls.load(Relaxed), 0, "a HEAD for a pair whose ETags decide");
    }
    // Two different MD5s of the same size: content differs, proven by the ETags (two
    // checksum requests tell the store's ETags are MD5s), and the clone fixes it.
    std::fs::write(dst.join("k/003"), b"CONTENT 003").unwrap();
    let verify = JobOptions { mode: Mode::VerifyOnly, ..options.clone() };
    let out = run_with(stores(), ls.clone(), ld.clone(), verify, &opts).await.unwrap();
    assert_eq!((out.job.state, out.job.counters.content_differs), (JobState::Mismatch, 1));
    assert_eq!(out.stats.head_calls.load(Relaxed), 2);
}

/// On S3 (moto): KMS-like ETags over real buckets, a single-part and a multipart object
/// among them; server-side copies keep the source's checksum, so the job verifies by it
/// and a rerun copies nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_like_buckets_verify_by_checksum_on_s3() {
    let ctx = moto().await;
    let [(a, src), (b, _)] = new_buckets(&ctx, ["kmssrc", "kmsdst"]).await;
    let n = 20;
    for i in 0..n {
        let data = format!("object {i:03}").into_bytes();
        src.put(&format!("o/{i:03}"), body(data.clone()), data.len() as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP)
            .await
            .unwrap();
    }
    let parted = S3Store::new(&ctx, &a).with_multipart(5 << 20, 5 << 20).with_upload_checksum("CRC32");
    let big = noise((11 << 20) + 5, 3);
    parted.put("o/parts", body(big.clone()), big.len() as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    let total = n + 1;

    let side = |name: &str| -> (Location, Arc<dyn ObjectStore>) {
        (Location::s3(name, "").unwrap(), Arc::new(S3Store::new(&ctx, name)))
    };
    let pair = Pair::new(side(&a), side(&b));
    let first = pair.run(Mode::Clone).await;
    assert_eq!(first.job.state, JobState::Verified, "{:?}", first.job);
    assert_eq!(first.job.counters.verified_objects, total);
    assert!(pair.dst.1.checksum_calls.load(SeqCst) >= total as u64, "verified without checksums");

    let again = pair.run(Mode::Clone).await;
    assert_eq!(again.job.state, JobState::Verified, "{:?}", again.job);
    assert_eq!((again.job.counters.skipped_objects, again.stats.copies.load(Relaxed)), (total, 0));
    let heads = again.stats.head_calls.load(Relaxed);
    eprintln!("KMS-like rerun on S3, {total} objects: {heads} HEADs, {:.0} per 1,000", per_thousand(heads, total));
    assert_eq!(heads, 2 * total as u64);

    // Same size, other content in the destination: content differs, then fixed by a copy.
    let plain_dst = S3Store::new(&ctx, &b);
    plain_dst.put("o/004", body(b"OBJECT 004".to_vec()), 10, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    let verify = pair.run(Mode::VerifyOnly).await;
    assert_eq!((verify.job.state, verify.job.counters.content_differs), (JobState::Mismatch, 1));
    let fixed = pair.run(Mode::Clone).await;
    assert_eq!((fixed.job.state, fixed.stats.copies.load(Relaxed)), (JobState::Verified, 1));
    assert_eq!(listing(&src).await.len(), listing(&plain_dst).await.len());
}

/// A local file uploaded in parts gets a multipart ETag, which no local MD5 matches; its
/// full-object checksum does, so the clone verifies. (moto computes "CRC64NVME" as a CRC32
/// without awscrt, so the destination asks for CRC32 here; S3 itself gets CRC64NVME.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_file_uploaded_in_parts_verifies_by_its_full_object_checksum() {
    let ctx = moto().await;
    let name = unique("mpdst");
    S3Store::create_bucket(&ctx, &name).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let big = noise((12 << 20) + 3, 8);
    write_tree(&src, &[("big".to_string(), big), ("small".to_string(), b"small".to_vec())].into_iter().collect());
    let (ls, ld) = (Location::local(&src).unwrap(), Location::s3(&name, "").unwrap());
    let stores = Arc::new(StoreFactory::new());
    let s3 = S3Store::new(&ctx, &name).with_multipart(5 << 20, 5 << 20).with_upload_checksum("CRC32");
    stores.insert(&ld, Arc::new(s3));
    let opts = LocalOptions { state: dir.path().join("s.sqlite"), workers: 1, concurrency: 4, show_progress: false };
    let out = run_with(stores, ls, ld, JobOptions::default(), &opts).await.unwrap();
    let etag = S3Store::new(&ctx, &name).head("big").await.unwrap().and_then(|e| e.etag).unwrap();
    assert!(etag.ends_with("-3"), "uploaded in parts: {etag}");
    assert_eq!(out.job.state, JobState::Verified, "{:?}", out.job);
    assert_eq!((out.job.counters.verified_objects, out.job.counters.unverifiable), (2, 0));
}
