//! Tests of [`SqliteQueue`]: the shared conformance suite, and what only this backend
//! promises (durability across reopening, dead letters, stale leases, shared files).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state.db");
    (dir, path)
}

fn one(body: &str) -> Vec<String> {
    vec![body.to_string()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    // Every case gets its own queue name in ONE file: also proves queues sharing a file
    // stay apart.
    let (_dir, path) = temp_db();
    let n = AtomicUsize::new(0);
    crate::conformance::queue::run(|| {
        let name = format!("case-{}", n.fetch_add(1, Ordering::SeqCst));
        let path = path.clone();
        async move { Arc::new(SqliteQueue::open(&path, &name).unwrap()) as Arc<dyn WorkQueue> }
    })
    .await;
}

#[tokio::test]
async fn messages_and_leases_survive_reopening_the_file() {
    let (_dir, path) = temp_db();
    let q = SqliteQueue::open(&path, "segments").unwrap();
    q.push(&["a".into(), "b".into()]).await.unwrap();
    let held = q.pull(1, Duration::from_secs(600), Duration::ZERO).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].body, "a", "FIFO: the first pushed comes first");
    drop(q);

    let q = SqliteQueue::open(&path, "segments").unwrap();
    assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 1, in_flight: 1, dead_letters: 0 });
    assert_eq!(q.release_all().await.unwrap(), 1);
    let mut got = q.pull(10, Duration::from_secs(600), Duration::ZERO).await.unwrap();
    got.sort_by(|x, y| x.body.cmp(&y.body));
    let seen: Vec<_> = got.iter().map(|d| (d.body.as_str(), d.deliveries)).collect();
    assert_eq!(seen, [("a", 2), ("b", 1)], "a lease released on restart counts one delivery, the killed one");
    // The lease held before the restart was invalidated by release_all.
    assert!(matches!(q.renew(&held[0].lease, Duration::from_secs(5)).await, Err(Error::Conflict(_))));
}

#[tokio::test]
async fn exhausted_messages_go_to_the_dead_letters() {
    let (_dir, path) = temp_db();
    let q = SqliteQueue::open(&path, "poison").unwrap().with_max_deliveries(2);
    q.push(&["poison".into(), "fine".into()]).await.unwrap();
    for round in 1..=2 {
        let got = q.pull(10, MS(1), Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 2, "round {round}");
        assert!(got.iter().all(|d| d.deliveries == round));
        let fine = got.iter().find(|d| d.body == "fine").unwrap();
        if round == 2 {
            q.ack(&fine.lease).await.unwrap();
        }
        tokio::time::sleep(MS(5)).await;
    }
    assert!(q.dead_letters(100).await.unwrap().is_empty(), "dead-lettered too early");
    let third = q.pull(10, MS(1), Duration::ZERO).await.unwrap();
    assert!(third.is_empty(), "delivered a third time: {third:?}");
    assert_eq!(q.dead_letters(100).await.unwrap(), ["poison"]);
    assert_eq!(q.depth().await.unwrap(), QueueDepth { dead_letters: 1, ..Default::default() });
    // A rerun gives it another chance, as a message delivered before.
    assert_eq!(q.requeue_dead_letters().await.unwrap(), 1);
    let back = q.pull(10, MS(1), Duration::ZERO).await.unwrap();
    let seen: Vec<_> = back.iter().map(|d| (d.body.as_str(), d.deliveries)).collect();
    assert_eq!(seen, [("poison", 2)]);
}

#[tokio::test]
async fn a_stale_lease_cannot_touch_the_new_delivery() {
    let (_dir, path) = temp_db();
    let q = SqliteQueue::open(&path, "q").unwrap();
    q.push(&one("m")).await.unwrap();
    let old = q.pull(1, MS(20), Duration::ZERO).await.unwrap().remove(0);
    tokio::time::sleep(MS(40)).await;
    // Expired: renewing now is refused even before anyone else took it.
    assert!(matches!(q.renew(&old.lease, MS(500)).await, Err(Error::Conflict(_))));
    let new = q.pull(1, Duration::from_secs(60), Duration::ZERO).await.unwrap().remove(0);
    assert_eq!((new.body.as_str(), new.deliveries), ("m", 2));

    assert!(matches!(q.renew(&old.lease, MS(500)).await, Err(Error::Conflict(_))));
    q.ack(&old.lease).await.expect("a stale ack is Ok");
    q.release(&old.lease).await.expect("a stale release is Ok");
    assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 0, in_flight: 1, dead_letters: 0 });

    q.renew(&new.lease, Duration::from_secs(60)).await.expect("the holder renews");
    q.ack(&new.lease).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    assert!(matches!(q.ack(&LeaseId("nonsense".into())).await, Err(Error::Invalid(_))));
}

#[tokio::test]
async fn a_released_lease_is_dead() {
    let (_dir, path) = temp_db();
    let q = SqliteQueue::open(&path, "q").unwrap();
    q.push(&one("m")).await.unwrap();
    let d = q.pull(1, Duration::from_secs(60), Duration::ZERO).await.unwrap().remove(0);
    q.release(&d.lease).await.unwrap();
    assert!(matches!(q.renew(&d.lease, MS(500)).await, Err(Error::Conflict(_))));
    q.ack(&d.lease).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), QueueDepth { visible: 1, in_flight: 0, dead_letters: 0 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_one_file_share_queues_but_not_across_names() {
    let (_dir, path) = temp_db();
    let producer = SqliteQueue::open(&path, "segments").unwrap();
    let consumer = SqliteQueue::open(&path, "segments").unwrap();
    let other = SqliteQueue::open(&path, "requests").unwrap();
    // A consumer on another connection is woken by polling, not by the producer's Notify.
    let waiting = tokio::spawn(async move { consumer.pull(10, Duration::from_secs(60), Duration::from_secs(5)).await });
    tokio::time::sleep(MS(100)).await;
    producer.push(&one("seg-1")).await.unwrap();
    let got = waiting.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "seg-1");
    assert_eq!(other.depth().await.unwrap(), QueueDepth::default());
    assert!(other.pull(10, MS(100), Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(producer.depth().await.unwrap(), QueueDepth { visible: 0, in_flight: 1, dead_letters: 0 });
}

#[tokio::test]
async fn a_zero_lease_pull_terminates_and_redelivers() {
    let (_dir, path) = temp_db();
    let q = SqliteQueue::open(&path, "q").unwrap();
    q.push(&["a".into(), "b".into()]).await.unwrap();
    let got = q.pull(10, Duration::ZERO, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 2, "each message once per pull, even with a zero lease");
    let again = q.pull(10, Duration::ZERO, Duration::ZERO).await.unwrap();
    assert!(again.iter().all(|d| d.deliveries == 2) && again.len() == 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_on_two_connections_never_share_a_message() {
    // Stricter than the shared suite (which SQS's at-least-once cannot promise): each
    // message goes to exactly one of many racing pulls, across connections too.
    let (_dir, path) = temp_db();
    let a = SqliteQueue::open(&path, "q").unwrap();
    let b = SqliteQueue::open(&path, "q").unwrap();
    let sent: Vec<String> = (0..200).map(|i| format!("m{i:03}")).collect();
    a.push(&sent).await.unwrap();
    let pulls = (0..8).map(|i| {
        let q = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = q.pull(7, Duration::from_secs(60), MS(50)).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|d| d.body));
            }
        })
    });
    let mut all: Vec<String> = Vec::new();
    for p in futures::future::join_all(pulls).await {
        all.extend(p.unwrap());
    }
    all.sort();
    assert_eq!(all, sent, "a message was lost or delivered twice");
}

#[tokio::test]
async fn purge_empties_one_queue_and_its_dead_letters_and_no_other() {
    let (_dir, path) = temp_db();
    let gone = SqliteQueue::open(&path, "segments/a").unwrap().with_max_deliveries(1);
    let kept = SqliteQueue::open(&path, "segments/b").unwrap();
    gone.push(&["dead".into()]).await.unwrap();
    gone.pull(1, MS(1), Duration::ZERO).await.unwrap();
    tokio::time::sleep(MS(5)).await;
    assert!(gone.pull(1, MS(1), Duration::ZERO).await.unwrap().is_empty(), "delivered once: dead now");
    gone.push(&["x".into(), "y".into()]).await.unwrap();
    gone.pull(1, Duration::from_secs(600), Duration::ZERO).await.unwrap();
    kept.push(&["z".into()]).await.unwrap();

    assert_eq!(gone.depth().await.unwrap(), QueueDepth { visible: 1, in_flight: 1, dead_letters: 1 });
    assert_eq!(gone.purge().await.unwrap(), 3);
    assert_eq!(gone.depth().await.unwrap(), QueueDepth::default());
    assert_eq!(kept.depth().await.unwrap(), QueueDepth { visible: 1, in_flight: 0, dead_letters: 0 });
}
