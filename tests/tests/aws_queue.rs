//! `SqsQueue` against the emulator: the shared queue conformance suite (a fresh queue per
//! case), and what `ensure` sets up (idempotently): the dead-letter queue, the redrive
//! policy and the retention and long-poll settings.

use std::sync::Arc;
use std::time::Duration;

use bucketclone_tests::{moto, unique};
use shared::Error;
use shared::backend::aws::sqs::{QueueSettings, SqsQueue};
use shared::queue::{QueueDepth, WorkQueue};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_passes_the_conformance_suite() {
    let ctx = moto().await;
    shared::conformance::queue::run(|| {
        let ctx = ctx.clone();
        async move {
            let q =
                SqsQueue::ensure(&ctx, &unique("bcq"), &QueueSettings::default()).await.expect("ensure a fresh queue");
            Arc::new(q) as Arc<dyn WorkQueue>
        }
    })
    .await;
}

#[tokio::test]
async fn ensure_is_idempotent_and_redrives_to_the_dlq() {
    let ctx = moto().await;
    let name = unique("bcq");
    // A visibility other than the default's: the queue gets the one asked for.
    let settings = QueueSettings { visibility_secs: 90, ..QueueSettings::default() };
    let first = SqsQueue::ensure(&ctx, &name, &settings).await.unwrap();
    let second = SqsQueue::ensure(&ctx, &name, &settings).await.unwrap();
    assert_eq!(first.url(), second.url(), "ensure twice must name the same queue");
    assert!(first.url().ends_with(&format!("/{name}")), "url {}", first.url());

    let attrs = first.attributes().await.unwrap();
    assert_eq!(attrs["VisibilityTimeout"], "90");
    assert_eq!(attrs["MessageRetentionPeriod"], (4 * 24 * 3600).to_string());
    assert_eq!(attrs["ReceiveMessageWaitTimeSeconds"], "20");
    let redrive: serde_json::Value = serde_json::from_str(&attrs["RedrivePolicy"]).unwrap();
    let target = redrive["deadLetterTargetArn"].as_str().expect("a DLQ arn");
    assert!(target.ends_with(&format!(":{name}-dlq")), "redrive names {target}");
    assert_eq!(receive_count(&redrive), 10);

    let dlq = SqsQueue::open(&ctx, &format!("{name}-dlq")).await.expect("the DLQ exists");
    let dlq_attrs = dlq.attributes().await.unwrap();
    assert_eq!(dlq_attrs["QueueArn"], target);
    assert_eq!(dlq_attrs["MessageRetentionPeriod"], (14 * 24 * 3600).to_string());

    // Ensuring with other settings updates the existing queue instead of failing.
    let tighter = QueueSettings { visibility_secs: 30, max_receives: 3, ..Default::default() };
    let third = SqsQueue::ensure(&ctx, &name, &tighter).await.unwrap();
    assert_eq!(third.url(), first.url());
    let attrs = third.attributes().await.unwrap();
    assert_eq!(attrs["VisibilityTimeout"], "30");
    let redrive: serde_json::Value = serde_json::from_str(&attrs["RedrivePolicy"]).unwrap();
    assert_eq!(receive_count(&redrive), 3);
}

#[tokio::test]
async fn a_message_received_too_often_moves_to_the_dlq() {
    let ctx = moto().await;
    let name = unique("bcq");
    let settings = QueueSettings { max_receives: 1, ..Default::default() };
    let q = SqsQueue::ensure(&ctx, &name, &settings).await.unwrap();
    q.push(&["poison".to_string()]).await.unwrap();
    let got = q.pull(10, Duration::from_secs(1), Duration::from_secs(2)).await.unwrap();
    assert_eq!(got.len(), 1);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let again = q.pull(10, Duration::from_secs(1), Duration::from_secs(1)).await.unwrap();
    assert!(again.is_empty(), "delivered past max_receives: {again:?}");
    assert_eq!(q.depth().await.unwrap(), QueueDepth { dead_letters: 1, ..Default::default() });

    let dlq = SqsQueue::open(&ctx, &format!("{name}-dlq")).await.unwrap();
    let dead = dlq.pull(10, Duration::from_secs(30), Duration::from_secs(2)).await.unwrap();
    let bodies: Vec<_> = dead.iter().map(|d| d.body.as_str()).collect();
    assert_eq!(bodies, ["poison"]);
}

#[tokio::test]
async fn open_and_ensure_report_clear_errors() {
    let ctx = moto().await;
    let missing = SqsQueue::open(&ctx, &unique("absent")).await;
    assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");
    let bad_name = SqsQueue::ensure(&ctx, "has spaces", &QueueSettings::default()).await;
    assert!(matches!(bad_name, Err(Error::Invalid(_))), "{bad_name:?}");
    let bad = QueueSettings { max_receives: 0, ..Default::default() };
    let bad_settings = SqsQueue::ensure(&ctx, &unique("bcq"), &bad).await;
    assert!(matches!(bad_settings, Err(Error::Invalid(_))), "{bad_settings:?}");
}

#[tokio::test]
async fn many_large_bodies_arrive_whole() {
    // Ten 100 KB bodies: more than one SQS batch can carry (256 KiB), so push splits them
    // (the split itself is unit-tested in sqs.rs: moto does not enforce the byte limit).
    let ctx = moto().await;
    let q = SqsQueue::ensure(&ctx, &unique("bcq"), &QueueSettings::default()).await.unwrap();
    let sent: Vec<String> = (0..10).map(|i| format!("{i}").repeat(100_000)).collect();
    q.push(&sent).await.expect("push ten 100 KB bodies");
    let mut got = Vec::new();
    for _ in 0..10 {
        let batch = q.pull(10, Duration::from_secs(60), Duration::from_secs(1)).await.unwrap();
        got.extend(batch.into_iter().map(|d| d.body));
        if got.len() >= sent.len() {
            break;
        }
    }
    got.sort();
    assert_eq!(got, sent);
}

/// `maxReceiveCount` as SQS returns it: a number, or a string holding one.
fn receive_count(redrive: &serde_json::Value) -> u64 {
    let v = &redrive["maxReceiveCount"];
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("no maxReceiveCount in {redrive}"))
}
