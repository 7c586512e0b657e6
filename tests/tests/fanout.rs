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

/// A page hands its children on as soon as its worker finds the queue dry, even in the middle
/// of its copies; before, a worker busy when it planned the page sent them only with its
/// completion, so at the end of a job the last pages ran one after another while other
/// workers waited. Two jobs of 40 objects, pages of 20, copies of 200 ms, two at a time.
/// Worker `w0` starts alone: its first pull asks for two pages and finds both roots, so the
/// queue does not look dry when it plans them (their children are not handed on then).
/// Worker `w1` starts once they are taken, and waits on an empty queue. Near the end of its
/// copies `w0` pulls, finds nothing, and its pages hand their children on: `w1` and `w0`'s
/// free slots start them while the roots still copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_hands_its_children_on_when_the_queue_runs_dry_during_its_copies() {
    let b = Bed::new(40, 20);
    let other_dst = b.dir.path().join("dst2");
    std::fs::create_dir_all(&other_dst).unwrap();
    let other = JobSpec { id: "j2".into(), destination: Location::local(&other_dst).unwrap(), ..b.spec.clone() };
    for (loc, dir) in [(&b.spec.destination, &b.dst), (&other.destination, &other_dst)] {
        let store = Arc::new(LocalDirStore::new(dir.to_str().unwrap()).unwrap());
        b.stores.insert(loc, Arc::new(SlowStore::new(store, Duration::from_millis(200))));
    }
    b.intake().accept(&b.spec).await.unwrap();
    b.intake().accept(&other).await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let worker = |i: usize| {
        let cfg = WorkerConfig { copy_concurrency: 2, ..Bed::worker_config(i) };
        tokio::spawn(Worker::new(cfg, b.queue.clone(), b.jobs.clone(), b.stores.clone()).run(stop_rx.clone()))
    };
    let mut handles = vec![worker(0)];
    // Both roots taken by w0 (a pull of the embedded queue takes milliseconds; their copies
    // take about four seconds, the last four rounds of them, after w0 finds the queue dry,
    // 800 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    handles.push(worker(1));
    let mut done = Vec::new();
    for id in ["j", "j2"] {
        let job = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let j = b.jobs.job(id).await.unwrap().unwrap();
            if j.state.is_terminal() {
                break j;
            }
        };
        assert_eq!(job.state, JobState::Verified);
        assert_eq!(job.counters.copied_objects, 40);
        done.push(b.jobs.segments(id, usize::MAX).await.unwrap());
    }
    stop.send(true).unwrap();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    for segs in done {
        let root = segs.iter().find(|s| s.range.start_after.is_empty()).expect("the job's first segment");
        assert_eq!(root.worker.as_deref(), Some("w0"), "{root:?}");
        assert!(!root.children.is_empty(), "the first page was truncated: {root:?}");
        let children: Vec<_> = segs.iter().filter(|s| root.children.contains(&s.range)).collect();
        assert!(
            children.iter().any(|c| c.started_ms < root.finished_ms),
            "no child started before its parent finished ({}): {:?}",
            root.finished_ms,
            children.iter().map(|c| (c.started_ms, c.worker.clone())).collect::<Vec<_>>()
        );
    }
}
