//! What a clone asks of its stores, counted at the store: the destination is listed once
//! per page when the job found it empty (nothing there to skip), twice when it was not
//! (once to skip what is there, once to verify what was copied).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bucketclone::local::{LocalOptions, Outcome, run_with};
use bucketclone_tests::{CountingStore, tree, write_tree};
use shared::backend::StoreFactory;
use shared::backend::embedded::local_dir::LocalDirStore;
use shared::model::{JobOptions, JobState, Location};

fn source() -> BTreeMap<String, Vec<u8>> {
    (0..600).map(|i| (format!("d{}/f{i:04}", i % 7), format!("file {i}").into_bytes())).collect()
}

/// Clones `src` into `dst` in pages of 50, counting the destination's requests.
async fn clone(src: &Path, dst: &Path, state: &Path) -> (Outcome, u64) {
    std::fs::create_dir_all(dst).unwrap();
    let (ls, ld) = (Location::local(src).unwrap(), Location::local(dst).unwrap());
    let counted = Arc::new(CountingStore::new(Arc::new(LocalDirStore::new(dst.to_str().unwrap()).unwrap())));
    let stores = Arc::new(StoreFactory::new());
    stores.insert(&ld, counted.clone());
    let opts = LocalOptions { state: state.to_path_buf(), workers: 2, concurrency: 8, show_progress: false };
    let options = JobOptions { page_size: 50, ..Default::default() };
    let out = run_with(stores, ls, ld, options, &opts).await.unwrap();
    (out, counted.requests.list.load(Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_destination_is_listed_once_per_page_and_a_partial_one_twice() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let files = source();
    write_tree(&src, &files);
    let n = files.len() as i64;

    // Empty: one listing per page (after its copies), and one at the start to find it empty.
    let empty = dir.path().join("empty");
    let (out, lists) = clone(&src, &empty, &dir.path().join("a.sqlite")).await;
    let pages = out.stats.pages.load(Relaxed);
    assert_eq!(out.job.state, JobState::Verified);
    assert_eq!((out.job.counters.copied_objects, out.job.counters.verified_objects), (n, n));
    assert!(pages >= 12, "{pages} pages of at most 50 for {n} objects");
    assert_eq!(lists, pages + 1, "destination list calls for {pages} pages into an empty destination");
    assert_eq!(tree(&empty), files);

    // A quarter already there: each page lists the destination before copying too, and
    // skips what is there.
    let partial = dir.path().join("partial");
    let present: BTreeMap<String, Vec<u8>> = files.iter().step_by(4).map(|(k, v)| (k.clone(), v.clone())).collect();
    write_tree(&partial, &present);
    let (out, lists) = clone(&src, &partial, &dir.path().join("b.sqlite")).await;
    let pages = out.stats.pages.load(Relaxed);
    let c = &out.job.counters;
    assert_eq!(out.job.state, JobState::Verified);
    assert_eq!((c.skipped_objects, c.copied_objects), (present.len() as i64, n - present.len() as i64));
    // Every page lists first (the skips above prove it), and those that copied list again.
    assert!(lists > pages + 1, "{lists} destination list calls for {pages} pages");
    assert_eq!(tree(&partial), files);
}
