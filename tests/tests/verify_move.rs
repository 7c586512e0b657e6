//! Verification and verified move on local directories: `verify` names exactly the keys
//! that differ, with the right kind; `move` deletes only what it verified, and keeps (and
//! reports) a source that changed after its copy was verified.

use std::collections::BTreeMap;
use std::sync::Arc;

use bucketclone::local::{LocalOptions, run_with};
use bucketclone_tests::{CountingStore, report, run, tree, write_tree};
use shared::backend::StoreFactory;
use shared::backend::embedded::local_dir::LocalDirStore;
use shared::model::{IssueKind, JobOptions, JobState, Location, Mode};
use shared::objstore::ObjectStore;
use shared::objstore::{ObjectAttrs, WriteOptions};

fn sample(n: usize) -> BTreeMap<String, Vec<u8>> {
    (0..n)
        .map(|i| (format!("d{:02}/obj-{i:05}", i % 17), format!("payload {i} ").repeat(1 + i % 9).into_bytes()))
        .collect()
}

#[test]
fn verify_names_exactly_the_missing_changed_and_extra_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("s.sqlite"));
    let files = sample(300);
    write_tree(&src, &files);
    let (s, d, st) = (src.to_str().unwrap(), dst.to_str().unwrap(), state.to_str().unwrap());
    assert_eq!(run(&["clone", s, d, "--json", "--state", st]).status.code(), Some(0));
    let out = run(&["verify", s, d, "--json", "--state", st]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(report(&out)["verified"], 300);

    std::fs::remove_file(dst.join("d01/obj-00001")).unwrap();
    let changed = dst.join("d02/obj-00002");
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes[0] ^= 0xff; // same size, other content
    std::fs::write(&changed, bytes).unwrap();
    std::fs::write(dst.join("d03/extra-key"), b"not in the source").unwrap();

    let report_path = dir.path().join("diff.jsonl");
    let out = run(&["verify", s, d, "--json", "--state", st, "--report", report_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["state"], "mismatch");
    assert_eq!(r["differences"]["missing"], 1);
    assert_eq!(r["differences"]["content_differs"], 1);
    assert_eq!(r["differences"]["extra"], 1);
    assert_eq!(r["verified"], 298);
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&report_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let found: Vec<(String, String)> = lines
        .iter()
        .map(|l| (l["key"].as_str().unwrap().to_string(), l["kind"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("d01/obj-00001".to_string(), "missing".to_string()),
            ("d02/obj-00002".to_string(), "content-differs".to_string()),
            ("d03/extra-key".to_string(), "extra".to_string()),
        ]
    );
    // Verification wrote nothing.
    assert!(!dst.join("d01/obj-00001").exists());
}

#[test]
fn move_deletes_only_verified_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("s.sqlite"));
    let files = sample(250);
    write_tree(&src, &files);
    let (s, d, st) = (src.to_str().unwrap(), dst.to_str().unwrap(), state.to_str().unwrap());

    let dry = run(&["move", s, d, "--dry-run", "--state", st]);
    assert_eq!(dry.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&dry.stdout).lines().count(), 250);
    assert_eq!(tree(&src), files, "a dry run changes nothing");
    assert!(!dst.exists());

    let out = run(&["move", s, d, "--json", "--state", st]);
    assert_eq!(out.status.code(), Some(0));
    let r = report(&out);
    assert_eq!(r["deleted"]["objects"], 250);
    assert!(tree(&src).is_empty(), "every moved key is gone from the source");
    assert_eq!(tree(&dst), files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_keeps_and_reports_a_source_changed_after_its_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let files = sample(40);
    write_tree(&src, &files);
    let victim = "d05/obj-00005";

    let src_loc = Location::local(&src).unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(&src_loc.root).unwrap());
    let mut counting = CountingStore::new(inner.clone());
    // While the job copies the victim, someone rewrites it in the source.
    let writer = inner.clone();
    counting.after_get = Some(Box::new(move |key: &str| {
        if key == victim {
            let w = writer.clone();
            let body: shared::objstore::Body = Box::pin(std::io::Cursor::new(b"rewritten during the move".to_vec()));
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(w.put(victim, body, 25, &ObjectAttrs::NONE, &WriteOptions::KEEP))
                    .unwrap();
            });
        }
    }));
    let stores = Arc::new(StoreFactory::new());
    stores.insert(&src_loc, Arc::new(counting));
    let opts = LocalOptions { state: dir.path().join("s.sqlite"), workers: 2, concurrency: 8, show_progress: false };
    let options = JobOptions { mode: Mode::Move, ..Default::default() };
    let out = run_with(stores, src_loc, Location::local(&dst).unwrap(), options, &opts).await.unwrap();

    assert_eq!(out.job.state, JobState::Mismatch);
    assert_eq!(out.job.counters.deleted_objects, 39);
    assert_eq!(out.job.counters.kept_changed, 1);
    let issues = out.jobs.issues(&out.job.spec.id, None, 100).await.unwrap();
    assert_eq!(issues.len(), 1);
    assert_eq!((issues[0].key.as_str(), issues[0].kind), (victim, IssueKind::ChangedInSource));
    let left = tree(&src);
    assert_eq!(left.keys().collect::<Vec<_>>(), vec![victim]);
    assert_eq!(left[victim], b"rewritten during the move");
    assert_eq!(tree(&dst)[victim], files[victim], "the destination holds what was copied and verified");
}

/// Listings without ETags (s3s-fs, some S3-compatible stores): one HEAD per object and side,
/// never two, on a first clone and on a rerun over identical data; none with size-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_without_etags_cost_one_head_per_object_and_side() {
    use std::sync::atomic::Ordering::Relaxed;
    for size_only in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let files = sample(120);
        write_tree(&src, &files);
        for run in ["first", "rerun"] {
            let (ls, ld) = (Location::local(&src).unwrap(), Location::local(&dst).unwrap());
            let wrap = |loc: &Location| {
                let mut c = CountingStore::new(Arc::new(LocalDirStore::new(&loc.root).unwrap()));
                c.strip_list_etags = true;
                Arc::new(c)
            };
            let (cs, cd) = (wrap(&ls), wrap(&ld));
            let stores = Arc::new(StoreFactory::new());
            stores.insert(&ls, cs.clone());
            stores.insert(&ld, cd.clone());
            let opts =
                LocalOptions { state: dir.path().join("s.sqlite"), workers: 2, concurrency: 8, show_progress: false };
            let options = JobOptions { size_only, ..Default::default() };
            let out = run_with(stores, ls, ld, options, &opts).await.unwrap();
            assert_eq!(out.job.state, JobState::Verified);
            assert_eq!(out.job.counters.verified_objects, 120);
            assert_eq!(tree(&dst), files);
            let heads = (cs.requests.head.load(Relaxed), cd.requests.head.load(Relaxed));
            assert_eq!(heads, if size_only { (0, 0) } else { (120, 120) }, "{run}, size_only={size_only}");
        }
    }
}
