//! One flat prefix of 50,000 keys is worked by several workers at once, early in the job:
//! the first segment's splits fan the range out within a few rounds. And a worker takes no
//! more pages than its copies need soon, leaving the rest to idle workers. Read from the
//! job store's segment records (who worked which range, from when to when).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use bucketclone_tests::bed::Bed;
use bucketclone_tests::faulty::SlowStore;
use coordinator::Intake;
use shared::backend::StoreFactory;
use shared::backend::embedded::local_dir::LocalDirStore;
use shared::backend::embedded::{sqlite_jobstore::SqliteJobStore, sqlite_queue::SqliteQueue};
use shared::jobstore::JobStore;
use shared::model::{JobOptions, JobSpec, JobState, Location};
use worker::{Worker, WorkerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_prefix_of_50k_keys_is_worked_by_several_workers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::create_dir_all(src.join("flat")).unwrap();
    for i in 0..50_000 {
        std::fs::write(src.join(format!("flat/{i:06}")), b"").unwrap();
    }
    let state = dir.path().join("state.sqlite");
    let jobs: Arc<dyn JobStore> = Arc::new(SqliteJobStore::open(&state).unwrap());
    let queue = Arc::new(SqliteQueue::open(&state, "segments").unwrap());
    let stores = Arc::new(StoreFactory::new());
    let spec = JobSpec {
        id: "flat-50k".into(),
        source: Location::local(&src).unwrap(),
        destination: Location::local(&dst).unwrap(),
        options: JobOptions::default(),
    };
    let intake = Intake {
        jobs: jobs.clone(),
        segments: queue.clone(),
        stores: stores.clone(),
        policy: coordinator::Policy::open(),
    };
    intake.accept(&spec).await.unwrap();

    let (stop, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    for n in 0..4 {
        let cfg = WorkerConfig { id: format!("w{n}"), poll_wait: Duration::from_millis(50), ..Default::default() };
        handles.push(tokio::spawn(Worker::new(cfg, queue.clone(), jobs.clone(), stores.clone()).run(stop_rx.clone())));
    }
    let job = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let j = jobs.job("flat-50k").await.unwrap().unwrap();
        if j.state.is_terminal() {
            break j;
        }
    };
    stop.send(true).unwrap();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    assert_eq!(job.state, JobState::Verified);
    assert_eq!(job.counters.source_objects, 50_000);
    assert_eq!(job.counters.copied_objects, 50_000);

    let mut segs = jobs.segments("flat-50k", usize::MAX).await.unwrap();
    assert!(segs.iter().all(|s| s.done));
    segs.sort_by_key(|s| s.started_ms);
    let workers: std::collections::HashSet<_> = segs.iter().filter_map(|s| s.worker.clone()).collect();
    assert!(workers.len() >= 3, "only {} workers took part", workers.len());
    // Walk segments in start order: how many were in flight when each started, and how many
    // were already finished by then. Several in flight must happen early in the job.
    let first_wide = segs.iter().enumerate().find_map(|(i, s)| {
        let in_flight = segs[..=i].iter().filter(|o| o.finished_ms > s.started_ms).count();
        let finished = segs[..i].iter().filter(|o| o.finished_ms <= s.started_ms).count();
        (in_flight >= 4).then_some(finished)
    });
    let finished = first_wide.expect("never 4 segments in flight at once");
    assert!(finished <= 10, "4-wide only after {finished} of {} segments were done", segs.len());
}

/// Pages of 20 objects, copies of 10 ms, two at a time per worker: a page is 100 ms of one
/// worker's copies, and the job fans out to 30 pages. A worker asks for pages only while it
/// has fewer than four rounds of copies on hand ([`worker::demand`]), so it holds a page or
/// two (and one finishing) at a time. A worker that took all its slots would take up to
/// eight pages at once, 800 ms of its copies, while others waited for work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_holds_only_the_pages_its_copies_need_soon() {
    let b = Bed::new(600, 20);
    let dst = Arc::new(LocalDirStore::new(b.dst.to_str().unwrap()).unwrap());
    b.stores.insert(&b.spec.destination, Arc::new(SlowStore::new(dst, Duration::from_millis(10))));
    b.intake().accept(&b.spec).await.unwrap();
    let job =
        b.work(4, Duration::from_secs(60), |i| WorkerConfig { copy_concurrency: 2, ..Bed::worker_config(i) }).await;
    assert_eq!(job.state, JobState::Verified);
    assert_eq!(job.counters.copied_objects, 600);

    let segs = b.jobs.segments("j", usize::MAX).await.unwrap();
    assert!(segs.len() >= 30, "{} segments", segs.len());
    let mut most = std::collections::BTreeMap::new();
    for s in &segs {
        let w = s.worker.clone().expect("a done segment names its worker");
        // Pages this worker held when this one started (this one included).
        let held = segs
            .iter()
            .filter(|o| o.worker == s.worker && o.started_ms <= s.started_ms && o.finished_ms > s.started_ms)
            .count();
        let m = most.entry(w).or_insert(0);
        *m = held.max(*m);
    }
    eprintln!("pages held at once, by worker: {most:?}");
    assert!(most.len() >= 3, "only {} workers took part: {most:?}", most.len());
    assert!(most.values().all(|&m| m <= 4), "pages held at once, by worker: {most:?}");
}
