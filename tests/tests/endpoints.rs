//! Per-service endpoints: S3 on one emulator, SQS and DynamoDB on another, and no global
//! `AWS_ENDPOINT_URL` (before, S3 then lost path-style addressing and failed). The service (init, coordinator, worker, status)
//! must reach each service where its own `AWS_ENDPOINT_URL_<SERVICE>` says, and complete a
//! verified job whose buckets exist only on the S3 emulator.

use std::time::Duration;

use bucketclone_tests::procs::{SecondMoto, Service, seed_bucket};
use bucketclone_tests::{endpoint, listing, moto, unique};
use shared::backend::aws::{AwsContext, s3::S3Store};
use shared::model::JobState;
use shared::objstore::{ListRequest, ObjectStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_on_one_endpoint_and_sqs_dynamodb_on_another() {
    let control = moto().await;
    let s3_moto = SecondMoto::start();
    let s3 = AwsContext::for_emulator(&s3_moto.url).await;
    let (src, dst) = (unique("src"), unique("dst"));
    let objects =
        (0..60).map(|i| (format!("p{}/obj {i}", i % 7), format!("body {i}").repeat(i).into_bytes())).collect();
    let (count, bytes) = seed_bucket(&s3, &src, objects).await;
    S3Store::create_bucket(&s3, &dst).await.unwrap();

    let env = vec![
        ("AWS_ENDPOINT_URL", String::new()), // removed
        // A host name, not an IP: for an IP the SDK picks path-style addressing by itself.
        ("AWS_ENDPOINT_URL_S3", s3_moto.url.replace("127.0.0.1", "localhost")),
        ("AWS_ENDPOINT_URL_SQS", endpoint()),
        ("AWS_ENDPOINT_URL_DYNAMODB", endpoint()),
        ("AWS_MAX_ATTEMPTS", "2".to_string()),
    ];
    let mut svc = Service::start_with(&control, &unique("ep"), env).await;
    svc.start_worker(&[], None);
    let id = unique("job");
    svc.request(serde_json::json!({"id": id, "source": {"name": src}, "destination": {"name": dst}})).await;
    let job = svc.wait(&id, Duration::from_secs(180)).await;
    assert_eq!(job.state, JobState::Verified, "{:?}", job.message);
    assert_eq!((job.counters.source_objects, job.counters.source_bytes), (count as i64, bytes as i64));
    assert_eq!((job.counters.copied_objects, job.counters.verified_objects), (count as i64, count as i64));
    assert_eq!(svc.status(&id)["state"], "verified", "status reaches the table on its own endpoint");

    let (s, d) = (S3Store::new(&s3, &src), S3Store::new(&s3, &dst));
    assert_eq!(listing(&s).await, listing(&d).await, "destination equals source on the S3 endpoint");
    // The buckets live only on the S3 emulator: nothing was written through the other one.
    let req = ListRequest { prefix: String::new(), start_after: String::new(), end: None, max_keys: 1 };
    assert!(S3Store::new(&control, &dst).list(&req).await.is_err(), "no such bucket on the control endpoint");
    svc.stop();
}
