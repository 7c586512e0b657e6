//! Fault tests of the segment protocol on the embedded backends: duplicate deliveries never
//! double-count, and segments stranded by a crash between recording and enqueueing are
//! re-driven. Assertions are on the destination's contents and the job's counters.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use std::collections::BTreeMap;

use bucketclone_tests::{CountingStore, tree, write_tree};
use coordinator::Intake;
use shared::backend::StoreFactory;
use shared::backend::embedded::local_dir::LocalDirStore;
use shared::backend::embedded::{sqlite_jobstore::SqliteJobStore, sqlite_queue::SqliteQueue};
use shared::jobstore::JobStore;
use shared::model::{JobOptions, JobRecord, JobSpec, JobState, KeyRange, Location};
use shared::queue::WorkQueue;
use shared::wire::SegmentMessage;
use worker::{Worker, WorkerConfig};

struct Bed {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    dst: std::path::PathBuf,
    jobs: Arc<dyn JobStore>,
    queue: Arc<SqliteQueue>,
    intake: Intake,
    stores: Arc<StoreFactory>,
    spec: JobSpec,
}

fn bed(files: usize) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let content = (0..files).map(|i| (format!("k/{i:04}"), format!("{i}").into_bytes())).collect();
    write_tree(&src, &content);
    let state = dir.path().join("s.sqlite");
    let jobs: Arc<dyn JobStore> = Arc::new(SqliteJobStore::open(&state).unwrap());
    let queue = Arc::new(SqliteQueue::open(&state, "segments").unwrap());
    let stores = Arc::new(StoreFactory::new());
    let intake = Intake {
        jobs: jobs.clone(),
        segments: queue.clone(),
        stores: stores.clone(),
        policy: coordinator::Policy::open(),
    };
    let spec = JobSpec {
        id: "j".into(),
        source: Location::local(&src).unwrap(),
        destination: Location::local(&dst).unwrap(),
        options: JobOptions { page_size: 50, ..Default::default() },
    };
    Bed { _dir: dir, src, dst, jobs, queue, intake, stores, spec }
}

/// Runs `n` workers until the job is terminal or `limit` passes; returns the job.
async fn work(b: &Bed, n: usize, limit: Duration) -> JobRecord {
    let (stop, rx) = watch::channel(false);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let cfg = WorkerConfig { id: format!("w{i}"), poll_wait: Duration::from_millis(20), ..Default::default() };
            tokio::spawn(Worker::new(cfg, b.queue.clone(), b.jobs.clone(), b.intake.stores.clone()).run(rx.clone()))
        })
        .collect();
    let start = tokio::time::Instant::now();
    let job = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let j = b.jobs.job(&b.spec.id).await.unwrap().unwrap();
        if j.state.is_terminal() || start.elapsed() > limit {
            break j;
        }
    };
    stop.send(true).unwrap();
    for h in handles {
        h.await.unwrap().unwrap();
    }
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_never_double_count() {
    let b = bed(400);
    b.intake.accept(&b.spec).await.unwrap();
    // The root segment delivered three more times, and the request accepted twice more.
    let root = SegmentMessage::new("j", KeyRange::all()).to_json();
    b.queue.push(&[root.clone(), root.clone(), root]).await.unwrap();
    b.intake.accept(&b.spec).await.unwrap();
    let job = work(&b, 3, Duration::from_secs(120)).await;
    assert_eq!(job.state, JobState::Verified);
    assert_eq!(job.counters.source_objects, 400);
    assert_eq!(job.counters.copied_objects + job.counters.skipped_objects, 400);
    assert_eq!(job.counters.verified_objects, 400);
    assert_eq!(job.counters.outstanding, 0);
    let segs = b.jobs.segments("j", usize::MAX).await.unwrap();
    assert_eq!(job.counters.segments_done, segs.len() as i64, "one count per segment");
    assert_eq!(tree(&b.dst), tree(&b.src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_stranded_by_a_crash_are_redriven() {
    let b = bed(300);
    b.intake.accept(&b.spec).await.unwrap();
    // Work only the root, then lose every message, as if the process died right after
    // recording the root's completion and before enqueueing its children.
    let job = work_one_segment(&b).await;
    assert!(job.counters.segments_done >= 1);
    assert!(job.counters.outstanding > 0);
    while let Some(d) = b.queue.pull(100, Duration::from_secs(30), Duration::ZERO).await.unwrap().pop() {
        b.queue.ack(&d.lease).await.unwrap();
    }
    let stalled = work(&b, 2, Duration::from_secs(2)).await;
    assert_eq!(stalled.state, JobState::Running, "nothing can progress without messages");

    let pushed = coordinator::redrive(&b.intake, "j").await.unwrap();
    assert_eq!(pushed as i64, stalled.counters.outstanding);
    let job = work(&b, 2, Duration::from_secs(120)).await;
    assert_eq!(job.state, JobState::Verified);
    assert_eq!(job.counters.source_objects, 300);
    assert_eq!(tree(&b.dst), tree(&b.src));
}

/// Runs one worker that works exactly one segment (the root), then stops it.
async fn work_one_segment(b: &Bed) -> JobRecord {
    let (stop, rx) = watch::channel(false);
    let cfg = WorkerConfig {
        id: "once".into(),
        segments_in_flight: 1,
        poll_wait: Duration::from_millis(20),
        ..Default::default()
    };
    let h = tokio::spawn(Worker::new(cfg, b.queue.clone(), b.jobs.clone(), b.intake.stores.clone()).run(rx));
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let j = b.jobs.job("j").await.unwrap().unwrap();
        if j.counters.segments_done >= 1 {
            stop.send(true).unwrap();
            h.await.unwrap().unwrap();
            return b.jobs.job("j").await.unwrap().unwrap();
        }
    }
}

/// The finished job's books: verified, every object once, nothing outstanding, one count per
/// segment, and the destination equal to the source.
async fn assert_exact(b: &Bed, job: &JobRecord, n: i64) {
    let c = &job.counters;
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    assert_eq!((c.source_objects, c.verified_objects, c.outstanding), (n, n, 0), "{c:?}");
    assert_eq!(c.copied_objects + c.skipped_objects, n, "{c:?}");
    let segs = b.jobs.segments("j", usize::MAX).await.unwrap();
    assert!(segs.iter().all(|s| s.done), "every segment done");
    assert_eq!(c.segments_done, segs.len() as i64, "one count per segment");
    assert_eq!(tree(&b.dst), tree(&b.src));
}

/// A page whose copies are slow hands its children on first when the queue has run dry:
/// they are started, and finished, while its own copies still wait. Without the split they
/// would start only once it is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_page_hands_its_children_on_before_its_copies_finish() {
    let b = bed(400);
    std::fs::create_dir_all(&b.dst).unwrap();
    let mut slow = CountingStore::new(Arc::new(LocalDirStore::new(b.dst.to_str().unwrap()).unwrap()));
    // The root page is the first 50 keys: each of its writes waits 1.5 s.
    slow.write_delay = Some(Box::new(|k: &str| match k < "k/0050" {
        true => Duration::from_millis(1500),
        false => Duration::ZERO,
    }));
    b.stores.insert(&b.spec.destination, Arc::new(slow));
    b.intake.accept(&b.spec).await.unwrap();
    let job = work(&b, 1, Duration::from_secs(120)).await;
    assert_exact(&b, &job, 400).await;
    let root = b.jobs.segment("j", &KeyRange::all()).await.unwrap().unwrap();
    assert_eq!(root.children.first().map(|c| c.start_after.as_str()), Some("k/0049"), "{root:?}");
    let mut done_first = 0;
    for kid in &root.children {
        let k = b.jobs.segment("j", kid).await.unwrap().unwrap();
        assert!(k.started_ms < root.finished_ms, "child {kid:?} started only after its parent was done");
        done_first += (k.finished_ms < root.finished_ms) as usize;
    }
    assert!(done_first > 0, "no child finished while its parent's copies waited: {root:?}");
}

/// An attempt split the root and died. Keys written since into the root's own page, more
/// than a page of them, are copied by the redelivery, which lists the page to the split's
/// end however many pages that takes; the children do the rest. Nothing is missed or
/// counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_page_redone_after_a_crash_keeps_to_its_split_and_copies_keys_written_since() {
    let b = bed(400);
    b.intake.accept(&b.spec).await.unwrap();
    let kids = vec![
        KeyRange { start_after: "k/0049".into(), end: Some("k/0200".into()) },
        KeyRange { start_after: "k/0200".into(), end: None },
    ];
    let (r, held) = b.jobs.split_segment("j", &KeyRange::all(), &kids).await.unwrap();
    assert_eq!((r, held), (shared::jobstore::Recorded::Now, kids.clone()));
    // The dead attempt sent nothing: the queue holds only the root's message.
    let extra: BTreeMap<String, Vec<u8>> = (0..120).map(|i| (format!("k/0001-new{i:03}"), vec![b'n'; i])).collect();
    write_tree(&b.src, &extra);
    let job = work(&b, 2, Duration::from_secs(120)).await;
    assert_exact(&b, &job, 520).await;
    let root = b.jobs.segment("j", &KeyRange::all()).await.unwrap().unwrap();
    assert_eq!(root.children, kids, "the split's children, not a new listing's");
    assert_eq!(root.outcome.source_objects, 170, "the root page: 50 keys and the 120 written since");
}

/// A move whose pages are worked by several attempts at once (duplicate deliveries): one
/// attempt finds sources another already deleted after verifying the same copies. Every
/// object still counts once as deleted, and the source ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_of_a_move_count_every_delete_once() {
    let mut b = bed(400);
    b.spec.options.mode = shared::model::Mode::Move;
    b.intake.accept(&b.spec).await.unwrap();
    let root = SegmentMessage::new("j", KeyRange::all()).to_json();
    b.queue.push(&[root.clone(), root.clone(), root]).await.unwrap();
    let before = tree(&b.src);
    let job = work(&b, 3, Duration::from_secs(120)).await;
    let c = &job.counters;
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    assert_eq!((c.source_objects, c.verified_objects, c.deleted_objects), (400, 400, 400), "{c:?}");
    assert_eq!(c.outstanding, 0);
    assert!(tree(&b.src).is_empty(), "a move empties its source");
    assert_eq!(tree(&b.dst), before);
}

/// A worker says when it records a job's end, so a waiter in the same process (the local
/// runner) need not poll for it: once notified, the job reads terminal, every object
/// verified. A notification before the end, or none at all, fails this.
#[tokio::test]
async fn a_worker_says_when_it_records_a_jobs_end() {
    let b = bucketclone_tests::bed::Bed::new(30, 10);
    b.intake().accept(&b.spec).await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let w =
        Worker::new(bucketclone_tests::bed::Bed::worker_config(0), b.queue.clone(), b.jobs.clone(), b.stores.clone());
    let finished = w.finished();
    let handle = tokio::spawn(w.run(stop_rx));
    tokio::time::timeout(Duration::from_secs(60), finished.notified()).await.expect("notified within a minute");
    let job = b.jobs.job("j").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Verified, "notified before the job's end");
    assert_eq!(job.counters.verified_objects, 30);
    stop.send(true).unwrap();
    handle.await.unwrap().unwrap();
}
