//! Clone, verify, stats and move between S3 buckets on the AWS emulator: the keys only S3
//! can hold, objects uploaded in parts, and the request cost of verification.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bucketclone::local::{LocalOptions, run_with};
use bucketclone_tests::{CountingStore, listing, moto, report, run, unique};
use shared::backend::StoreFactory;
use shared::backend::aws::{AwsContext, s3::S3Store};
use shared::conformance::objstore::{body, tricky_content, tricky_keys};
use shared::model::{JobOptions, JobState, Location, Mode};
use shared::objstore::ObjectStore;
use shared::objstore::{ObjectAttrs, WriteOptions};

async fn bucket(ctx: &AwsContext, base: &str) -> (String, S3Store) {
    let name = unique(base);
    S3Store::create_bucket(ctx, &name).await.unwrap();
    (name.clone(), S3Store::new(ctx, &name))
}

async fn put(store: &dyn ObjectStore, key: &str, bytes: Vec<u8>) {
    let n = bytes.len() as u64;
    store.put(key, body(bytes), n, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_verify_and_stats_between_buckets() {
    let ctx = moto().await;
    let (a, src) = bucket(&ctx, "src").await;
    let (b, dst) = bucket(&ctx, "dst").await;
    for k in tricky_keys(true) {
        put(&src, &k, tricky_content(&k)).await;
    }
    // An object uploaded in parts: its ETag is of the multipart form.
    // CRC32: moto stores a CRC32 named CRC64NVME for multipart uploads (see the README).
    let parted = S3Store::new(&ctx, &a).with_multipart(5 << 20, 5 << 20).with_upload_checksum("CRC32");
    put(&parted, "parts/twelve-mib", (0..12 << 20).map(|i| (i % 241) as u8).collect()).await;
    let n = tricky_keys(true).len() + 1;

    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s.sqlite");
    let (sa, sb, st) = (format!("s3://{a}"), format!("s3://{b}"), st.to_str().unwrap().to_string());
    let out = run(&["clone", &sa, &sb, "--json", "--state", &st]);
    assert_eq!(out.status.code(), Some(0));
    let r = report(&out);
    assert_eq!((r["copied"]["objects"].as_u64(), r["verified"].as_u64()), (Some(n as u64), Some(n as u64)));
    assert_eq!(r["differences"]["unverifiable"], 0, "a multipart source is verified, not guessed");
    assert_eq!(listing(&src).await, listing(&dst).await);

    assert_eq!(run(&["verify", &sa, &sb, "--json", "--state", &st]).status.code(), Some(0));
    let stats = |loc: &str| {
        let out = run(&["stats", loc, "--json"]);
        assert_eq!(out.status.code(), Some(0));
        report(&out)
    };
    let (s1, d1) = (stats(&sa), stats(&sb));
    assert_eq!((&s1["digest"], &s1["objects"], &s1["bytes"]), (&d1["digest"], &d1["objects"], &d1["bytes"]));

    // One byte changed (same size), one deleted, one added.
    let mut changed = tricky_content("plain.txt");
    changed[0] ^= 1;
    put(&dst, "plain.txt", changed).await;
    dst.delete("with space.txt", None).await.unwrap();
    put(&dst, "zz-extra", b"extra".to_vec()).await;
    let d2 = stats(&sb);
    assert_ne!(s1["digest"], d2["digest"]);

    let path = dir.path().join("diff.jsonl");
    let out = run(&["verify", &sa, &sb, "--json", "--state", &st, "--report", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let found: Vec<(String, String)> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["key"].as_str().unwrap().to_string(), v["kind"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("plain.txt".to_string(), "content-differs".to_string()),
            ("with space.txt".to_string(), "missing".to_string()),
            ("zz-extra".to_string(), "extra".to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_between_buckets_deletes_what_it_verified() {
    let ctx = moto().await;
    let (a, src) = bucket(&ctx, "msrc").await;
    let (b, dst) = bucket(&ctx, "mdst").await;
    for i in 0..120 {
        put(&src, &format!("m/{i:03} é"), format!("{i}").repeat(i).into_bytes()).await;
    }
    let before = listing(&src).await;
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s.sqlite");
    let out = run(&["move", &format!("s3://{a}"), &format!("s3://{b}"), "--json", "--state", st.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(report(&out)["deleted"]["objects"], 120);
    assert!(listing(&src).await.is_empty());
    assert_eq!(listing(&dst).await, before);
}

/// Verification's request cost, counted at the store: the README quotes these numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_costs_one_list_page_per_side_per_thousand_objects() {
    let ctx = moto().await;
    let (a, _) = bucket(&ctx, "vsrc").await;
    let (b, _) = bucket(&ctx, "vdst").await;
    let n = 3000;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (s, d) = (S3Store::new(&ctx, &a), S3Store::new(&ctx, &b));
        tasks.spawn(async move {
            let k = format!("v/{i:05}");
            put(&s, &k, vec![b'x'; i % 100]).await;
            put(&d, &k, vec![b'x'; i % 100]).await;
        });
        while tasks.len() >= 16 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while tasks.join_next().await.is_some() {}

    let stores = Arc::new(StoreFactory::with_aws(ctx.clone()));
    let (la, lb) = (Location::s3(&a, "").unwrap(), Location::s3(&b, "").unwrap());
    let cs = Arc::new(CountingStore::new(Arc::new(S3Store::new(&ctx, &a))));
    let cd = Arc::new(CountingStore::new(Arc::new(S3Store::new(&ctx, &b))));
    stores.insert(&la, cs.clone());
    stores.insert(&lb, cd.clone());
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalOptions { state: dir.path().join("s.sqlite"), workers: 2, concurrency: 16, show_progress: false };
    let options = JobOptions { mode: Mode::VerifyOnly, ..Default::default() };
    let out = run_with(stores, la, lb, options, &opts).await.unwrap();
    assert_eq!(out.job.state, JobState::Verified);
    assert_eq!(out.job.counters.verified_objects, n as i64);

    let per_k = |v: u64| v as f64 * 1000.0 / n as f64;
    let (sl, dl) = (cs.requests.list.load(Relaxed), cd.requests.list.load(Relaxed));
    eprintln!(
        "verification of {n} objects: source {sl} lists, destination {dl} lists, {} other requests; per 1,000 objects: {:.2} + {:.2} lists",
        cs.requests.total() + cd.requests.total() - sl - dl,
        per_k(sl),
        per_k(dl)
    );
    assert_eq!(cs.requests.head.load(Relaxed) + cd.requests.head.load(Relaxed), 0, "no per-object HEAD");
    assert_eq!(cs.requests.total() - sl + cd.requests.total() - dl, 0, "nothing but listings");
    // One page per side per segment, plus one call per side for each empty split range.
    assert!(per_k(sl) <= 3.0 && per_k(dl) <= 3.0, "source {sl}, destination {dl} list calls for {n} objects");
}

/// Storage classes: a server-side copy keeps the source's class (S3 would make it STANDARD),
/// and an archived object is named as needing a restore, never copied or verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_keep_the_storage_class_and_archived_objects_need_a_restore() {
    let ctx = moto().await;
    let (a, _) = bucket(&ctx, "src").await;
    let (b, _) = bucket(&ctx, "dst").await;
    let s3 = ctx.s3();
    for (key, class) in
        [("ia/one", "STANDARD_IA"), ("ia/two", "ONEZONE_IA"), ("plain", "STANDARD"), ("cold", "GLACIER")]
    {
        let body = format!("{key} in {class}").into_bytes();
        s3.put_object().bucket(&a).key(key).storage_class(class.into()).body(body.into()).send().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s.sqlite");
    let (sa, sb) = (format!("s3://{a}"), format!("s3://{b}"));
    let found = dir.path().join("findings.jsonl");
    let args = ["--json", "--state", st.to_str().unwrap(), "--report", found.to_str().unwrap()];
    let out = run(&[&["clone", &sa, &sb][..], &args[..]].concat());
    assert_eq!(out.status.code(), Some(1), "an archived object keeps the job from verifying");
    let r = report(&out);
    assert_eq!((&r["state"], &r["copied"]["objects"], &r["failed"]), (&"mismatch".into(), &3.into(), &0.into()));
    assert_eq!(r["differences"]["needs_restore"], 1);
    let text = std::fs::read_to_string(&found).unwrap();
    let findings: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cold: Vec<_> = findings.iter().filter(|f| f["key"] == "cold").collect();
    assert_eq!(cold.len(), 1, "{findings:?}");
    assert_eq!(cold[0]["kind"], "needs-restore");
    let why = cold[0]["detail"].as_str().unwrap_or_default();
    assert!(why.contains("restore") && why.contains("GLACIER"), "{why}");

    for (key, class) in [("ia/one", Some("STANDARD_IA")), ("ia/two", Some("ONEZONE_IA")), ("plain", None)] {
        let h = s3.head_object().bucket(&b).key(key).send().await.unwrap();
        let got = h.storage_class().map(|c| c.as_str()).filter(|c| *c != "STANDARD");
        assert_eq!(got, class, "{key}: the copy's storage class");
    }
    assert!(s3.head_object().bucket(&b).key("cold").send().await.is_err(), "the archived object is not copied");
}
