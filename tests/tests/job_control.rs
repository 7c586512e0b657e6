//! Job control on the service, from outside: pause, resume and cancel over the CLI, HTTP
//! and the request queue, `POST /jobs` to submit, and `submit --wait`. A paused job is
//! held with its counts and finishes exactly once resumed; a cancelled one stops taking
//! pages within seconds and keeps its counts.

use std::time::{Duration, Instant};

use bucketclone_tests::procs::{Service, http_post, seed_bucket};
use bucketclone_tests::{listing, moto, unique};
use shared::backend::aws::{AwsContext, s3::S3Store};
use shared::jobstore::JobStore;
use shared::model::{Counters, JobState};

async fn buckets(ctx: &AwsContext, n: usize) -> (String, String, usize) {
    let (src, dst) = (unique("ctl-src"), unique("ctl-dst"));
    let objects = (0..n).map(|i| (format!("d{}/k{i:04}", i % 9), format!("object {i}").into_bytes())).collect();
    let (count, _) = seed_bucket(ctx, &src, objects).await;
    S3Store::create_bucket(ctx, &dst).await.unwrap();
    (src, dst, count)
}

async fn counters(svc: &Service, id: &str) -> (JobState, Counters) {
    let j = svc.jobs.job(id).await.unwrap().expect("the job exists");
    (j.state, j.counters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_job_is_held_and_finishes_exactly_once_resumed() {
    let ctx = moto().await;
    let (src, dst, count) = buckets(&ctx, 120).await;
    let svc = Service::start(&ctx, &unique("ctl")).await;
    let id = unique("job");
    let body = serde_json::json!({"id": id, "source": {"name": src}, "destination": {"name": dst},
                                  "options": {"page_size": 10}});
    let (code, doc) = http_post(&svc.addr, "/jobs", &body.to_string());
    assert_eq!((code, doc["id"].as_str()), (202, Some(id.as_str())), "{doc}");
    let (code, doc) = http_post(&svc.addr, "/jobs", r#"{"id":"x","source":{"name":"a-b"}}"#);
    assert_eq!(code, 400, "a bad request is refused on the spot: {doc}");

    // Paused before any worker runs: the first segment's message is taken and left pending.
    let out = svc.cli(&["pause", &id]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{id} paused"));
    let mut svc = svc;
    svc.start_worker(&[], None);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (state, held) = counters(&svc, &id).await;
    assert_eq!((state, held.segments_done, held.copied_objects), (JobState::Paused, 0, 0), "nothing is worked");
    assert_eq!(svc.status(&id)["state"], "paused");

    let (code, doc) = http_post(&svc.addr, &format!("/jobs/{id}/resume"), "");
    assert_eq!((code, doc["state"].as_str()), (200, Some("running")), "{doc}");
    let job = svc.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.state, JobState::Verified, "{:?}", job.message);
    let c = job.counters;
    assert_eq!((c.source_objects, c.copied_objects, c.verified_objects), (count as i64, count as i64, count as i64));
    assert_eq!(listing(&S3Store::new(&ctx, &src)).await, listing(&S3Store::new(&ctx, &dst)).await);

    let (code, doc) = http_post(&svc.addr, &format!("/jobs/{id}/pause"), "");
    assert_eq!(code, 409, "a finished job cannot be paused: {doc}");
    let (code, _) = http_post(&svc.addr, "/jobs/nosuch-job/cancel", "");
    assert_eq!(code, 404);
    svc.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_stops_within_seconds_and_keeps_its_counts() {
    let ctx = moto().await;
    let (src, dst, count) = buckets(&ctx, 600).await;
    let mut svc = Service::start(&ctx, &unique("ctl")).await;
    // One slow worker: a page of 5 objects at a time, two copies in flight.
    svc.start_worker(
        &[("BUCKETCLONE_WORKER__CONCURRENCY", "2".into()), ("BUCKETCLONE_WORKER__SEGMENTS_IN_FLIGHT", "1".into())],
        None,
    );
    let id = unique("job");
    svc.request(serde_json::json!({"id": id, "source": {"name": src}, "destination": {"name": dst},
                                   "options": {"page_size": 5}}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters_of(&svc, &id).await.is_none_or(|c| c.copied_objects < 20) {
        assert!(Instant::now() < deadline, "the job did not start copying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    svc.request(serde_json::json!({"action": "cancel", "id": id})).await;
    let asked = Instant::now();
    while counters(&svc, &id).await.0 != JobState::Cancelled {
        assert!(asked.elapsed() < Duration::from_secs(15), "the cancel request was not applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The page in progress may still finish; after that, nothing moves.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, settled) = counters(&svc, &id).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (state, later) = counters(&svc, &id).await;
    assert_eq!(state, JobState::Cancelled);
    assert_eq!(later, settled, "a cancelled job takes no new page");
    assert!(later.copied_objects < count as i64, "it stopped before the end: {later:?}");
    assert_eq!(later.copied_objects, listing(&S3Store::new(&ctx, &dst)).await.len() as i64, "its counts are exact");
    let out = svc.cli(&["status", &id, "--json"]);
    assert_eq!(out.status.code(), Some(1), "status of a cancelled job: not verified");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["state"].as_str(), doc["counters"]["copied_objects"].as_i64()),
        (Some("cancelled"), Some(later.copied_objects))
    );
    let out = svc.cli(&["resume", &id]);
    assert_eq!(out.status.code(), Some(2), "a cancelled job cannot be resumed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"));

    // submit --wait follows a job to its end and exits as status does.
    let (src2, dst2, _) = buckets(&ctx, 15).await;
    let out = svc.cli(&["submit", &format!("s3://{src2}"), &format!("s3://{dst2}"), "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("VERIFIED"));
    svc.stop();
}

async fn counters_of(svc: &Service, id: &str) -> Option<Counters> {
    svc.jobs.job(id).await.unwrap().map(|j| j.counters)
}
