//! Metrics and health on every process, scraped from outside after a clone on the service:
//! the worker's counters and the coordinator's per-job series equal the job's final
//! numbers, and `/healthz` really asks the queue and the table.

use std::time::Duration;

use bucketclone_tests::procs::{Service, free_port, http_get_text, sample, seed_bucket};
use bucketclone_tests::{moto, unique};
use shared::backend::aws::s3::S3Store;
use shared::model::JobState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_clone_equal_the_jobs_numbers_and_health_checks_are_real() {
    let ctx = moto().await;
    let (src, dst) = (unique("met-src"), unique("met-dst"));
    let objects = (0..45).map(|i| (format!("p{}/k{i}", i % 4), vec![b'm'; 100 + i])).collect();
    let (count, bytes) = seed_bucket(&ctx, &src, objects).await;
    S3Store::create_bucket(&ctx, &dst).await.unwrap();
    // One object already there: skipped, not copied.
    let pre = ctx.s3();
    pre.put_object().bucket(&dst).key("p0/k0").body(vec![b'm'; 100].into()).send().await.unwrap();

    let mut svc = Service::start(&ctx, &unique("met")).await;
    let worker_addr = format!("127.0.0.1:{}", free_port());
    svc.start_worker(&[("BUCKETCLONE_WORKER__HTTP_ADDR", worker_addr.clone())], None);
    let id = unique("job");
    svc.request(serde_json::json!({"id": id, "source": {"name": src}, "destination": {"name": dst},
                                   "options": {"page_size": 10}}))
        .await;
    let job = svc.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job.state, JobState::Verified, "{:?}", job.message);
    let c = job.counters;
    assert_eq!((c.source_objects, c.copied_objects, c.skipped_objects), (count as i64, count as i64 - 1, 1));

    let (code, w) = http_get_text(&worker_addr, "/metrics");
    assert_eq!(code, 200);
    let at = |text: &str, series: &str| sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(at(&w, "bucketclone_objects_copied_total"), c.copied_objects as f64);
    assert_eq!(at(&w, "bucketclone_bytes_copied_total"), c.copied_bytes as f64);
    assert_eq!(at(&w, "bucketclone_objects_verified_total"), c.verified_objects as f64);
    assert_eq!(at(&w, "bucketclone_objects_skipped_total"), c.skipped_objects as f64);
    assert_eq!(at(&w, "bucketclone_segments_completed_total"), c.segments_done as f64);
    assert!(at(&w, "bucketclone_segments_leased_total") >= c.segments_done as f64);
    assert_eq!(at(&w, "bucketclone_copy_seconds_count"), c.copied_objects as f64, "one latency sample per copy");
    assert!(w.contains("# TYPE bucketclone_objects_copied_total counter"));
    assert!(w.contains("# TYPE bucketclone_copy_seconds histogram"));
    assert_eq!(c.copied_bytes, bytes as i64 - 100);

    let (code, m) = http_get_text(&svc.addr, "/metrics");
    assert_eq!(code, 200);
    let job_series = |name: &str| at(&m, &format!("bucketclone_job_{name}_total{{job=\"{id}\"}}"));
    assert_eq!(job_series("copied_objects"), c.copied_objects as f64);
    assert_eq!(job_series("copied_bytes"), c.copied_bytes as f64);
    assert_eq!(job_series("verified_objects"), c.verified_objects as f64);
    assert_eq!(at(&m, &format!("bucketclone_job_state{{job=\"{id}\",state=\"verified\"}}")), 1.0);
    assert_eq!(at(&m, "bucketclone_queue_messages{queue=\"segments\",state=\"dead_letter\"}"), 0.0);
    assert!(sample(&m, "bucketclone_queue_messages{queue=\"requests\",state=\"visible\"}").is_some());

    for addr in [&worker_addr, &svc.addr] {
        assert_eq!(http_get_text(addr, "/healthz"), (200, "ok\n".to_string()), "{addr}");
    }
    // Without its table, neither process is healthy, and each says why.
    let db = aws_sdk_dynamodb::Client::new(&ctx.sdk);
    db.delete_table().table_name(format!("{}-jobs", svc.name)).send().await.unwrap();
    for addr in [&worker_addr, &svc.addr] {
        let (code, body) = http_get_text(addr, "/healthz");
        assert_eq!(code, 503, "{addr}: {body}");
        assert!(body.contains("job store"), "{addr}: {body}");
    }
    svc.stop();
}
