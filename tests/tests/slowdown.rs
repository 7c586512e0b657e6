//! Back-off: a destination answering 503 SlowDown above a few concurrent writes lowers the
//! worker's copy limit, the clone still ends verified, and the limit recovers once the
//! throttling stops. And retries happen in one layer: `AWS_MAX_ATTEMPTS=2` is two
//! requests on the wire, not two times the SDK's own attempts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use bucketclone_tests::faulty::{FailingEndpoint, ThrottlingStore};
use bucketclone_tests::{bin, tree, write_tree};
use coordinator::Intake;
use shared::backend::StoreFactory;
use shared::backend::aws::AwsContext;
use shared::backend::aws::s3::S3Store;
use shared::backend::embedded::local_dir::LocalDirStore;
use shared::backend::embedded::{sqlite_jobstore::SqliteJobStore, sqlite_queue::SqliteQueue};
use shared::error::RetryPolicy;
use shared::jobstore::JobStore;
use shared::model::{JobOptions, JobRecord, JobSpec, JobState, Location};
use shared::objstore::ObjectStore;
use shared::{Error, Result};
use worker::{Worker, WorkerConfig};

/// Writes the destination takes at once before it throttles.
const K: usize = 3;
/// The worker's copy concurrency: the limit's ceiling.
const CEILING: usize = 8;

fn files(range: std::ops::Range<usize>) -> BTreeMap<String, Vec<u8>> {
    range.map(|i| (format!("p/{i:04}"), format!("object {i}").repeat(i % 7 + 1).into_bytes())).collect()
}

/// Accepts a clone `id` of `src` into `dst` and waits (at most a minute) for its end.
async fn clone(intake: &Intake, id: &str, src: &Location, dst: &Location) -> JobRecord {
    let spec = JobSpec { id: id.into(), source: src.clone(), destination: dst.clone(), options: JobOptions::default() };
    intake.accept(&spec).await.unwrap();
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let job = intake.jobs.job(id).await.unwrap().unwrap();
        if job.state.is_terminal() {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "job {id} still running: {job:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowdown_lowers_the_copy_limit_the_clone_verifies_and_the_limit_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("s.sqlite"));
    let first = files(0..120);
    write_tree(&src, &first);
    std::fs::create_dir_all(&dst).unwrap();
    let (src_loc, dst_loc) = (Location::local(&src).unwrap(), Location::local(&dst).unwrap());
    let stores = Arc::new(StoreFactory::new());
    let local: Arc<dyn ObjectStore> = Arc::new(LocalDirStore::new(&dst_loc.root).unwrap());
    let throttling = Arc::new(ThrottlingStore::new(local, K, Duration::from_millis(20)));
    stores.insert(&dst_loc, throttling.clone());
    let jobs: Arc<dyn JobStore> = Arc::new(SqliteJobStore::open(&state).unwrap());
    let queue = Arc::new(SqliteQueue::open(&state, "segments").unwrap());
    let intake = Intake {
        jobs: jobs.clone(),
        segments: queue.clone(),
        stores: stores.clone(),
        policy: coordinator::Policy::open(),
    };
    let cfg = WorkerConfig {
        id: "w".into(),
        copy_concurrency: CEILING,
        poll_wait: Duration::from_millis(20),
        ..Default::default()
    };
    let worker = Worker::new(cfg, queue.clone(), jobs.clone(), stores.clone());
    let (stop, stop_rx) = watch::channel(false);
    let running = tokio::spawn(worker.clone().run(stop_rx));

    // Throttled: every object is copied and verified, with the limit brought down to K or
    // below, and a bounded number of throttled attempts (not one or more per object).
    let job = clone(&intake, "throttled", &src_loc, &dst_loc).await;
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    assert_eq!((job.counters.copied_objects, job.counters.failed_objects), (120, 0));
    assert_eq!(tree(&dst), first);
    let s = worker.copy_limit().stats();
    let throttled = throttling.throttled();
    eprintln!("throttled: {s:?}, store: {throttled} throttled, peak {}", throttling.peak_in_flight());
    assert!(throttled > 0, "the destination never throttled: the test proves nothing");
    assert_eq!(s.throttles, throttled, "every throttled attempt reached the limit");
    assert!(s.lowest <= K, "the limit never went down to {K}: {s:?}");
    assert!(s.decreases >= 2 && s.decreases <= throttled, "{s:?}");
    assert!(throttled <= 120 / 3, "{throttled} throttled attempts for 120 objects");
    assert_eq!(throttling.written(), 120);

    // Throttling off: 80 more objects, and the limit climbs back to the ceiling.
    throttling.set_throttling(false);
    let all = files(0..200);
    write_tree(&src, &all);
    let job = clone(&intake, "calm", &src_loc, &dst_loc).await;
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    assert_eq!((job.counters.copied_objects, job.counters.skipped_objects), (80, 120));
    assert_eq!(tree(&dst), all);
    let s = worker.copy_limit().stats();
    eprintln!("recovered: {s:?}");
    assert_eq!(throttling.throttled(), throttled, "no throttling after it was switched off");
    assert_eq!((s.limit, s.in_flight), (CEILING, 0), "{s:?}");

    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn aws_max_attempts_2_is_two_requests_in_all_not_two_times_the_sdks() {
    let endpoint = FailingEndpoint::start(500).await;
    let ctx = AwsContext::for_emulator(&endpoint.url()).await;
    let store = S3Store::new(&ctx, "bucket");
    let two = RetryPolicy::from_values(Some("2"), None).unwrap();
    let r = two.run(|| store.head("some/key")).await;
    assert!(matches!(r, Err(Error::Transient(_))), "{r:?}");
    assert_eq!(endpoint.requests(), 2);
    // The default budget: 5 requests, not 5 x 5.
    let r: Result<_> = RetryPolicy::default().run(|| store.head("some/key")).await;
    assert!(r.is_err());
    assert_eq!(endpoint.requests(), 2 + 5);
}

/// Runs `bucketclone stats s3://bucket` against `endpoint` with `AWS_MAX_ATTEMPTS`.
fn stats_with(endpoint: &FailingEndpoint, max_attempts: &str) -> std::process::Output {
    bin()
        .args(["stats", "s3://bucket"])
        .env("AWS_ENDPOINT_URL", endpoint.url())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", max_attempts)
        .env_remove("AWS_RETRY_MODE")
        .output()
        .expect("run bucketclone")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_program_honours_aws_max_attempts_and_refuses_a_bad_value_at_start_up() {
    let endpoint = Arc::new(FailingEndpoint::start(503).await);
    let e = endpoint.clone();
    let out = tokio::task::spawn_blocking(move || stats_with(&e, "2")).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(endpoint.requests(), 2, "two HEADs of the bucket in all: {out:?}");

    let e = endpoint.clone();
    let out = tokio::task::spawn_blocking(move || stats_with(&e, "0")).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim().starts_with("error: AWS_MAX_ATTEMPTS=\"0\""), "{err}");
    assert_eq!(endpoint.requests(), 2, "nothing was sent with a bad setting");
}
