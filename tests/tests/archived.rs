//! Archived source objects (Glacier Flexible Retrieval, Deep Archive) on the AWS emulator:
//! each is named "needs restore", never a copy failure and never verified; the job ends
//! `mismatch`, or "verified, N skipped" with `--skip-archived`; `--restore DAYS` asks for
//! the restores, and a rerun of the same job copies what was restored.

use bucketclone_tests::{listing, moto, new_buckets, report, run};
use shared::backend::aws::s3::S3Store;
use shared::conformance::objstore::body;
use shared::objstore::{Archive, ObjectAttrs, ObjectStore, WriteOptions};

async fn put(store: &S3Store, key: &str, class: Option<&str>) {
    let data = format!("content of {key}").into_bytes();
    let w = WriteOptions { storage_class: class.map(str::to_string), ..WriteOptions::KEEP };
    store.put(key, body(data.clone()), data.len() as u64, &ObjectAttrs::NONE, &w).await.unwrap();
}

/// Needs-restore findings in a `--report` file, as (key, detail).
fn needs_restore(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "needs-restore")
        .map(|v| (v["key"].as_str().unwrap().to_string(), v["detail"].as_str().unwrap_or_default().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_objects_need_a_restore_and_are_skipped_only_when_asked() {
    let ctx = moto().await;
    let [(a, src), (b, dst)] = new_buckets(&ctx, ["asrc", "adst"]).await;
    for k in ["plain/1", "plain/2", "plain/3"] {
        put(&src, k, None).await;
    }
    put(&src, "cold/glacier", Some("GLACIER")).await;
    put(&src, "cold/deep", Some("DEEP_ARCHIVE")).await;
    put(&src, "cold/instant", Some("GLACIER_IR")).await;
    assert_eq!(src.archive("cold/glacier").await.unwrap(), Archive::Archived("GLACIER".into()));
    assert_eq!(src.archive("cold/instant").await.unwrap(), Archive::Readable, "instant retrieval is readable");

    let dir = tempfile::tempdir().unwrap();
    let (sa, sb) = (format!("s3://{a}"), format!("s3://{b}"));
    let st = dir.path().join("s.sqlite");
    let rep = dir.path().join("findings.jsonl");
    let (st, rp) = (st.to_str().unwrap(), rep.to_str().unwrap());

    // Without a choice: a mismatch naming both archived objects, neither failed nor missing.
    let out = run(&["clone", &sa, &sb, "--json", "--state", st, "--report", rp]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let r = report(&out);
    assert_eq!(r["state"], "mismatch");
    assert_eq!((r["copied"]["objects"].as_u64(), r["failed"].as_u64()), (Some(4), Some(0)));
    let d = &r["differences"];
    assert_eq!((d["needs_restore"].as_u64(), d["missing"].as_u64()), (Some(2), Some(0)));
    let found = needs_restore(&rep);
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["cold/deep", "cold/glacier"]);
    assert!(found[1].1.contains("GLACIER") && found[1].1.contains("--skip-archived"), "{found:?}");
    assert!(!listing(&dst).await.contains_key("cold/glacier"));

    // --skip-archived: verified, with the two counted as skipped, and said on the first line.
    let out = run(&["clone", &sa, &sb, "--state", st, "--skip-archived"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("VERIFIED, 2 skipped (archived, need restore)"), "{text}");

    // --restore 1: restores are asked for (the emulator does them at once); the job is
    // still a mismatch, and the same job run again copies both and verifies.
    let args = ["clone", &sa, &sb, "--json", "--state", st, "--restore", "1", "--report", rp];
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(needs_restore(&rep).iter().all(|(_, d)| d.contains("restore requested for 1 days")), "{rep:?}");
    assert_eq!(src.archive("cold/deep").await.unwrap(), Archive::Readable, "restored");
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = report(&out);
    assert_eq!((r["state"].as_str(), r["copied"]["objects"].as_u64()), (Some("verified"), Some(2)));
    assert_eq!(r["differences"]["needs_restore"], 0);
    let (s, d) = (listing(&src).await, listing(&dst).await);
    assert_eq!(s.keys().collect::<Vec<_>>(), d.keys().collect::<Vec<_>>());
}
