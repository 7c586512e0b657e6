//! What a clone asks of its stores, counted at the store: the destination is listed once
//! per page when the job found it empty (nothing there to skip), twice when it was not
//! (once to skip what is there, once to verify what was copied).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bucketclone::local::{LocalOptions, Outcome, run_with};
use bucketclone_tests::bed::Bed;
use bucketclone_tests::hooked_jobs::HookedJobs;
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

/// What a page asks of the job store: its segment read once, its completion once, and the
/// job's state (to know it is still running) about once a second per worker, not once per
/// page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_reads_its_segment_once_and_the_job_state_is_read_once_a_second() {
    let b = Bed::new(400, 10);
    let jobs = Arc::new(HookedJobs::new(b.jobs.clone()));
    b.intake().accept(&b.spec).await.unwrap();
    let started = Instant::now();
    let job = b.work_with(2, Duration::from_secs(60), Bed::worker_config, jobs.clone()).await;
    let secs = started.elapsed().as_secs();
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    let pages = job.counters.segments_done as u64;
    assert!(pages >= 40, "400 keys in pages of 10: {pages} pages");
    let (segment_reads, completions) = (jobs.segment_reads.load(Relaxed), jobs.completions.load(Relaxed));
    assert_eq!((segment_reads, completions), (pages, pages), "one read and one completion per page");
    // Per worker: one read when it opens the job, one per second after that.
    let job_reads = jobs.job_reads.load(Relaxed);
    assert!(job_reads <= 2 * (secs + 2), "{job_reads} reads of the job's state in {secs} s for {pages} pages");
}
