//! Duplicate work: two workers on the same segment at the same time. Worker A works one
//! segment at a time and its lease renewals never arrive ([`LostRenewals`]: a worker cut off
//! from the queue, or paused); the destination is slow ([`SlowStore`]: every write takes
//! longer than A's lease). So A's lease lapses while its copies are in flight, and the queue
//! hands the segment to worker B, which lists the destination (A's copies are not there
//! yet) and copies the same keys. Both try to record the segment. The destination must equal the source and every counter be exact:
//! the job store records a segment once.
//!
//! The store counts overlapping writes of one key (one delivery writes a key once), so each
//! test proves two deliveries of one segment really were worked at the same time.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use bucketclone_tests::bed::Bed;
use bucketclone_tests::faulty::{LostRenewals, SlowStore};
use bucketclone_tests::hooked_jobs::HookedJobs;
use bucketclone_tests::procs::seed_bucket;
use bucketclone_tests::{listing, moto, tree, unique};
use coordinator::{Intake, Policy};
use shared::backend::StoreFactory;
use shared::backend::aws::dynamo::DynamoJobStore;
use shared::backend::aws::s3::S3Store;
use shared::backend::aws::sqs::{QueueSettings, SqsQueue};
use shared::backend::embedded::local_dir::LocalDirStore;
use shared::jobstore::JobStore;
use shared::model::{JobOptions, JobRecord, JobSpec, JobState, Location};
use shared::queue::WorkQueue;
use worker::{Worker, WorkerConfig};

/// What the race runs on: either backend.
struct Race {
    queue: Arc<dyn WorkQueue>,
    jobs: Arc<dyn JobStore>,
    stores: Arc<StoreFactory>,
    slow: Arc<SlowStore>,
    id: String,
}

impl Race {
    /// Starts A (renewals lost, lease `lease_a`, one segment at a time), waits until it
    /// copies, starts B, and waits for the job's end (at most `limit`). Both copy a whole
    /// page (`page` keys) at once.
    async fn run(&self, lease_a: Duration, page: usize, limit: Duration) -> JobRecord {
        let (stop, rx) = watch::channel(false);
        let start = |cfg: WorkerConfig, queue: Arc<dyn WorkQueue>| {
            tokio::spawn(Worker::new(cfg, queue, self.jobs.clone(), self.stores.clone()).run(rx.clone()))
        };
        let cfg = |i, lease| WorkerConfig {
            lease,
            copy_concurrency: page,
            poll_wait: Duration::from_millis(500),
            ..Bed::worker_config(i)
        };
        let a = WorkerConfig { segments_in_flight: 1, ..cfg(0, lease_a) };
        let a = start(a, Arc::new(LostRenewals::silent(self.queue.clone())));
        let started = Instant::now();
        while self.slow.begun() == 0 {
            assert!(started.elapsed() < limit, "worker A never copied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let b = start(cfg(1, Duration::from_secs(30)), self.queue.clone());
        let job = settled(self.jobs.as_ref(), &self.id, started, limit).await;
        stop.send(true).unwrap();
        for h in [a, b] {
            h.await.unwrap().unwrap();
        }
        job
    }

    /// The job is verified, each of its `n` objects (`bytes`) counted exactly once, each
    /// segment once; and the two workers did overlap on one key at least.
    async fn check(&self, job: &JobRecord, n: i64, bytes: i64) {
        eprintln!("writes {}, overlapping writes of one key {}", self.slow.writes(), self.slow.overlaps());
        assert!(self.slow.overlaps() > 0, "the two workers never copied one key at the same time");
        assert!(self.slow.writes() > n as u64, "no key was copied twice ({} writes)", self.slow.writes());
        let c = &job.counters;
        assert_eq!(job.state, JobState::Verified, "{job:?}");
        assert_eq!((c.source_objects, c.source_bytes), (n, bytes));
        assert_eq!((c.copied_objects + c.skipped_objects, c.copied_bytes + c.skipped_bytes), (n, bytes), "{c:?}");
        assert_eq!((c.verified_objects, c.dest_objects, c.outstanding), (n, n, 0), "{c:?}");
        let segs = self.jobs.segments(&self.id, usize::MAX).await.unwrap();
        assert!(segs.iter().all(|s| s.done));
        assert_eq!(c.segments_done, segs.len() as i64, "one count per segment");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_segment_at_once_embedded() {
    // Pages of 30; each write takes 800 ms, A's lease lapses after 200 ms.
    let b = Bed::new(120, 30);
    let dst = Arc::new(LocalDirStore::new(b.dst.to_str().unwrap()).unwrap());
    let slow = Arc::new(SlowStore::new(dst, Duration::from_millis(800)));
    b.stores.insert(&b.spec.destination, slow.clone());
    b.intake().accept(&b.spec).await.unwrap();
    let race = Race { queue: b.queue.clone(), jobs: b.jobs.clone(), stores: b.stores.clone(), slow, id: "j".into() };
    let job = race.run(Duration::from_millis(200), 30, Duration::from_secs(60)).await;
    let bytes = tree(&b.src).values().map(|v| v.len() as i64).sum();
    race.check(&job, 120, bytes).await;
    assert_eq!(tree(&b.dst), tree(&b.src), "the destination equals the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_segment_at_once_on_moto() {
    let ctx = moto().await;
    let (src, dst) = (unique("dwsrc"), unique("dwdst"));
    let objects = (0..40).map(|i| (format!("k/{i:02} +é"), format!("object {i}").repeat(i % 4 + 1).into_bytes()));
    let (n, bytes) = seed_bucket(&ctx, &src, objects.collect()).await;
    S3Store::create_bucket(&ctx, &dst).await.unwrap();
    let jobs = Arc::new(DynamoJobStore::ensure_table(&ctx, unique("bcdw")).await.unwrap());
    let queue = Arc::new(SqsQueue::ensure(&ctx, &unique("bcdw"), &QueueSettings::default()).await.unwrap());
    let stores = Arc::new(StoreFactory::with_aws(ctx.clone()));
    let spec = JobSpec {
        id: unique("dw"),
        source: Location::parse(&format!("s3://{src}")).unwrap(),
        destination: Location::parse(&format!("s3://{dst}")).unwrap(),
        options: JobOptions { page_size: 20, ..Default::default() },
    };
    // Pages of 20; each write takes 4 s, A's lease (SQS visibility) lapses after 1 s.
    let slow = Arc::new(SlowStore::new(Arc::new(S3Store::new(&ctx, &dst)), Duration::from_secs(4)));
    stores.insert(&spec.destination, slow.clone());
    let intake = Intake { jobs: jobs.clone(), segments: queue.clone(), stores: stores.clone(), policy: Policy::open() };
    intake.accept(&spec).await.unwrap();
    let race = Race { queue, jobs, stores, slow, id: spec.id.clone() };
    let job = race.run(Duration::from_secs(1), 20, Duration::from_secs(120)).await;
    race.check(&job, n as i64, bytes as i64).await;
    let (s, d) = (S3Store::new(&ctx, &src), S3Store::new(&ctx, &dst));
    assert_eq!(listing(&s).await, listing(&d).await, "destination listing (key, size, ETag) equals the source's");
}

/// A worker whose lease the queue says it lost stops working the page there, as if it had
/// crashed, instead of copying on beside the segment's new holder. Worker A's renewals
/// reach the queue after its lease lapsed, and its destination is slow: every write
/// takes longer than A takes to learn that the lease is gone. So A abandons each page with
/// its writes unfinished, and B, a worker like any other, does the whole job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_told_its_lease_was_lost_abandons_the_page() {
    let b = Bed::new(90, 30);
    b.intake().accept(&b.spec).await.unwrap();
    let a_dst = Arc::new(SlowStore::new(
        Arc::new(LocalDirStore::new(b.dst.to_str().unwrap()).unwrap()),
        Duration::from_secs(3),
    ));
    let a_stores = Arc::new(StoreFactory::new());
    a_stores.insert(&b.spec.destination, a_dst.clone());
    let (stop, rx) = watch::channel(false);
    // Lease 300 ms, renewed every 100 ms, each renewal arriving 500 ms late.
    let a_cfg = WorkerConfig { lease: Duration::from_millis(300), segments_in_flight: 1, ..Bed::worker_config(0) };
    let queue_a = Arc::new(LostRenewals::late(b.queue.clone(), Duration::from_millis(500)));
    let a = Worker::new(a_cfg, queue_a, b.jobs.clone(), a_stores);
    let a_run = tokio::spawn(a.clone().run(rx.clone()));
    let started = Instant::now();
    while a_dst.begun() == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "worker A never copied");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let b_worker = Worker::new(Bed::worker_config(1), b.queue.clone(), b.jobs.clone(), b.stores.clone());
    let b_run = tokio::spawn(b_worker.run(rx.clone()));
    let job = settled(b.jobs.as_ref(), "j", started, Duration::from_secs(60)).await;
    stop.send(true).unwrap();
    for h in [a_run, b_run] {
        h.await.unwrap().unwrap();
    }
    let lost = a.stats.leases_lost.load(std::sync::atomic::Ordering::SeqCst);
    assert!(a_dst.begun() > 0);
    assert_eq!(a_dst.writes(), 0, "worker A finished writes after its lease was lost (told {lost} times)");
    assert!(lost >= 1, "worker A was never told its lease was lost");
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    let c = &job.counters;
    assert_eq!((c.source_objects, c.copied_objects, c.verified_objects, c.outstanding), (90, 90, 90, 0), "{c:?}");
    assert_eq!(tree(&b.dst), tree(&b.src), "the destination equals the source");
}

/// Two attempts at one move segment that list at different times. A (its completion slow)
/// lists the first page of 10 keys, copies, marks and deletes them; B, a duplicate delivery,
/// lists after those deletes, so its page is the next 10 keys; A's completion is recorded
/// first. Before moves split their segment ahead of any delete, B deleted the second 10
/// keys and marked them on the parent, whose child (from A's completion) then found them
/// only in the destination, with no marks of its own: the job ended verified, counting 10
/// objects of 20 moved. Now A's split holds B to A's page: every object counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_attempts_listing_at_different_times_count_every_object_once() {
    let mut b = Bed::new(20, 10);
    b.spec.options.mode = shared::model::Mode::Move;
    let original = tree(&b.src);
    b.intake().accept(&b.spec).await.unwrap();
    let (stop, rx) = watch::channel(false);
    let slow =
        |by: u64| Arc::new(HookedJobs { complete_delay: Duration::from_secs(by), ..HookedJobs::new(b.jobs.clone()) });
    let a = Worker::new(Bed::worker_config(0), b.queue.clone(), slow(1), b.stores.clone());
    let a = tokio::spawn(a.run(rx.clone()));
    // A has deleted its page's sources.
    let files = || std::fs::read_dir(b.src.join("k")).map(|d| d.count()).unwrap_or(0);
    let start = Instant::now();
    while files() > 10 {
        assert!(start.elapsed() < Duration::from_secs(30), "A never deleted its page");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let again = serde_json::to_string(&shared::wire::SegmentMessage::new("j", shared::model::KeyRange::all())).unwrap();
    b.queue.push(&[again]).await.unwrap();
    let w = Worker::new(Bed::worker_config(1), b.queue.clone(), slow(3), b.stores.clone());
    let w = tokio::spawn(w.run(rx.clone()));
    let job = settled(b.jobs.as_ref(), "j", start, Duration::from_secs(60)).await;
    // B's delayed completion lands (and loses) after the job settled.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.send(true).unwrap();
    a.await.unwrap().unwrap();
    w.await.unwrap().unwrap();
    let after = b.jobs.job("j").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Verified);
    assert_eq!(after.counters, job.counters, "nothing counted after the job settled");
    let c = &job.counters;
    assert_eq!((c.source_objects, c.verified_objects, c.deleted_objects), (20, 20, 20), "{c:?}");
    assert_eq!(files(), 0, "every source moved");
    assert_eq!(tree(&b.dst), original, "the destination holds every object");
}

/// The job once it is terminal, or as it stands `limit` after `since`.
async fn settled(jobs: &dyn JobStore, id: &str, since: Instant, limit: Duration) -> JobRecord {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let j = jobs.job(id).await.unwrap().unwrap();
        if j.state.is_terminal() || since.elapsed() > limit {
            return j;
        }
    }
}
