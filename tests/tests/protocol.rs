//! Fault tests of the segment protocol on the embedded backends: duplicate deliveries never
//! double-count, and segments stranded by a crash between recording and enqueueing are
//! re-driven. Assertions are on the destination's contents and the job's counters.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use bucketclone_tests::{tree, write_tree};
use coordinator::Intake;
use shared::backend::StoreFactory;
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
    let intake = Intake {
        jobs: jobs.clone(),
        segments: queue.clone(),
        stores: Arc::new(StoreFactory::new()),
        policy: coordinator::Policy::open(),
    };
    let spec = JobSpec {
        id: "j".into(),
        source: Location::local(&src).unwrap(),
        destination: Location::local(&dst).unwrap(),
        options: JobOptions { page_size: 50, ..Default::default() },
    };
    Bed { _dir: dir, src, dst, jobs, queue, intake, spec }
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
