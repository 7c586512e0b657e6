//! The conformance suite of the [`WorkQueue`] port. Every queue backend runs it: the embedded
//! one in its unit tests, SQS against the emulator in `tests/tests/aws_queue.rs`.
//!
//! Each case gets a fresh, empty queue from the factory and checks what the port promises:
//! bodies come back intact (unicode, large), batches past 10 work, a lease hides a message
//! until it expires or is released, `renew` extends it, `ack` removes it for good, an empty
//! `pull` waits about `wait` and wakes early when something arrives, `max` is honoured and
//! `depth` counts visible and in-flight messages. Leases are whole seconds (SQS's unit) and
//! short, so the suite runs in well under a minute even on the emulator.

use futures::FutureExt;
use futures::future::BoxFuture;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::queue::{Delivery, QueueDepth, WorkQueue};

/// A short lease: the cases that wait for an expiry wait about this long.
const SHORT: Duration = Duration::from_secs(1);
/// A lease no case outlives: the message must not come back unless released.
const LONG: Duration = Duration::from_secs(30);

type Case = (&'static str, fn(Arc<dyn WorkQueue>) -> BoxFuture<'static, ()>);

const CASES: &[Case] = &[
    ("push_then_pull_returns_bodies", |q| bodies_round_trip(q).boxed()),
    ("push_many_batches_past_ten", |q| push_many(q).boxed()),
    ("lease_hides_until_expiry", |q| lease_hides(q).boxed()),
    ("renew_extends_lease", |q| renew_extends(q).boxed()),
    ("ack_removes_for_good", |q| ack_removes(q).boxed()),
    ("release_makes_visible_at_once", |q| release_visible(q).boxed()),
    ("empty_pull_waits_about_wait", |q| empty_pull_waits(q).boxed()),
    ("pull_wakes_when_pushed", |q| pull_wakes(q).boxed()),
    ("depth_counts_visible_and_in_flight", |q| depth_counts(q).boxed()),
    ("max_is_honoured", |q| max_honoured(q).boxed()),
    ("concurrent_pulls_lose_nothing", |q| concurrent_pulls(q).boxed()),
];

/// Runs every case, each on a fresh queue from `new_queue`, and panics naming the first
/// case that fails.
pub async fn run<F, Fut>(new_queue: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn WorkQueue>>,
{
    for (name, case) in CASES {
        let queue = new_queue().await;
        let started = Instant::now();
        if let Err(panic) = AssertUnwindSafe(case(queue)).catch_unwind().await {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("queue conformance case `{name}` failed: {msg}");
        }
        tracing::info!(case = name, elapsed_ms = started.elapsed().as_millis() as u64, "queue conformance case passed");
    }
}

/// Pulls until `n` messages came or `within` passed; asserts no pull exceeds `max`.
async fn gather(q: &dyn WorkQueue, n: usize, lease: Duration, within: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let max = (n - got.len()).min(10);
        let batch = q.pull(max, lease, Duration::from_secs(1)).await.expect("pull");
        assert!(batch.len() <= max, "pull(max = {max}) returned {}", batch.len());
        got.extend(batch);
    }
    got
}

fn bodies(ds: &[Delivery]) -> Vec<String> {
    let mut v: Vec<String> = ds.iter().map(|d| d.body.clone()).collect();
    v.sort();
    v
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

async fn bodies_round_trip(q: Arc<dyn WorkQueue>) {
    let big: String = "0123456789abcdef✓".chars().cycle().take(150_000).collect();
    let sent = vec![
        "plain".to_string(),
        "ünïcødé ✓ 日本語 🪣 <a href=\"x\">&amp;</a> 'quotes' \\ \t tab\nnew line".to_string(),
        r#"{"json":true,"n":[1,2,3]}"#.to_string(),
        big.clone(),
    ];
    q.push(&sent).await.expect("push");
    let got = gather(&*q, sent.len(), LONG, Duration::from_secs(10)).await;
    let mut want = sent.clone();
    want.sort();
    assert_eq!(bodies(&got), want, "bodies changed on the way through");
    assert!(got.iter().all(|d| d.deliveries == 1), "first deliveries must count 1");
    let leases: HashSet<_> = got.iter().map(|d| d.lease.clone()).collect();
    assert_eq!(leases.len(), got.len(), "two deliveries share a lease id");
    assert!(got.iter().any(|d| d.body.len() == big.len()), "large body truncated");
}

async fn push_many(q: Arc<dyn WorkQueue>) {
    let sent = numbered("many", 25);
    q.push(&sent).await.expect("push 25");
    let got = gather(&*q, 25, LONG, Duration::from_secs(15)).await;
    assert_eq!(bodies(&got), sent, "25 pushed, pulled back something else");
    let depth = settled_depth(&*q, QueueDepth { visible: 0, in_flight: 25, dead_letters: 0 }).await;
    assert_eq!(depth, QueueDepth { visible: 0, in_flight: 25, dead_letters: 0 });
}

async fn lease_hides(q: Arc<dyn WorkQueue>) {
    q.push(&["hidden".to_string()]).await.expect("push");
    let first = gather(&*q, 1, SHORT, Duration::from_secs(5)).await;
    assert_eq!(bodies(&first), ["hidden"]);
    assert_eq!(first[0].deliveries, 1);
    let second = q.pull(10, SHORT, Duration::ZERO).await.expect("pull");
    assert!(second.is_empty(), "a leased message was delivered twice at once");
    let again = gather(&*q, 1, LONG, Duration::from_secs(6)).await;
    assert_eq!(bodies(&again), ["hidden"], "not redelivered after the lease expired");
    assert_eq!(again[0].deliveries, 2, "redelivery must count 2");
    assert_ne!(again[0].lease, first[0].lease, "a redelivery needs a new lease id");
}

async fn renew_extends(q: Arc<dyn WorkQueue>) {
    q.push(&["renewed".to_string()]).await.expect("push");
    let got = gather(&*q, 1, SHORT, Duration::from_secs(5)).await;
    assert_eq!(bodies(&got), ["renewed"]);
    let renewed_at = Instant::now();
    q.renew(&got[0].lease, Duration::from_secs(3)).await.expect("renew");
    tokio::time::sleep(Duration::from_millis(1_800)).await;
    let during = q.pull(10, SHORT, Duration::ZERO).await.expect("pull");
    assert!(during.is_empty(), "renewed lease expired at its original time");
    let after = gather(&*q, 1, LONG, Duration::from_secs(6)).await;
    assert_eq!(bodies(&after), ["renewed"], "renewed lease never expired");
    assert!(renewed_at.elapsed() >= Duration::from_millis(2_800), "came back too early");
    assert_eq!(after[0].deliveries, 2);
}

async fn ack_removes(q: Arc<dyn WorkQueue>) {
    q.push(&["acked".to_string(), "kept".to_string()]).await.expect("push");
    let got = gather(&*q, 2, SHORT, Duration::from_secs(5)).await;
    assert_eq!(bodies(&got), ["acked", "kept"]);
    let acked = got.iter().find(|d| d.body == "acked").unwrap();
    q.ack(&acked.lease).await.expect("ack");
    q.ack(&acked.lease).await.expect("a repeated ack must be Ok");
    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
    let again = gather(&*q, 2, LONG, Duration::from_secs(4)).await;
    assert_eq!(bodies(&again), ["kept"], "only the unacked message may come back");
    q.ack(&again[0].lease).await.expect("ack");
    let depth = settled_depth(&*q, QueueDepth::default()).await;
    assert_eq!(depth, QueueDepth::default(), "acked messages still counted");
}

async fn release_visible(q: Arc<dyn WorkQueue>) {
    q.push(&["released".to_string()]).await.expect("push");
    let got = gather(&*q, 1, LONG, Duration::from_secs(5)).await;
    assert_eq!(bodies(&got), ["released"]);
    q.release(&got[0].lease).await.expect("release");
    let again = q.pull(10, LONG, Duration::from_secs(3)).await.expect("pull");
    assert_eq!(bodies(&again), ["released"], "a released message must be visible at once");
    assert_eq!(again[0].deliveries, 2);
}

async fn empty_pull_waits(q: Arc<dyn WorkQueue>) {
    let t = Instant::now();
    let got = q.pull(10, SHORT, Duration::ZERO).await.expect("pull");
    assert!(got.is_empty());
    assert!(t.elapsed() < Duration::from_secs(1), "wait 0 took {:?}", t.elapsed());
    let t = Instant::now();
    let got = q.pull(10, SHORT, Duration::from_secs(1)).await.expect("pull");
    let took = t.elapsed();
    assert!(got.is_empty(), "an empty queue delivered {got:?}");
    assert!(took >= Duration::from_millis(900), "returned after {took:?}, not about 1 s");
    assert!(took < Duration::from_millis(2_500), "returned after {took:?}, not about 1 s");
}

async fn pull_wakes(q: Arc<dyn WorkQueue>) {
    let puller = {
        let q = q.clone();
        tokio::spawn(async move {
            let t = Instant::now();
            let got = q.pull(10, LONG, Duration::from_secs(8)).await.expect("pull");
            (got, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.push(&["wake".to_string()]).await.expect("push");
    let (got, took) = puller.await.expect("puller task");
    assert_eq!(bodies(&got), ["wake"]);
    assert!(took < Duration::from_millis(3_000), "a waiting pull took {took:?} to notice a push");
}

async fn depth_counts(q: Arc<dyn WorkQueue>) {
    q.push(&numbered("depth", 3)).await.expect("push");
    let want = QueueDepth { visible: 3, in_flight: 0, dead_letters: 0 };
    assert_eq!(settled_depth(&*q, want).await, want);
    let got = gather(&*q, 1, LONG, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let want = QueueDepth { visible: 2, in_flight: 1, dead_letters: 0 };
    assert_eq!(settled_depth(&*q, want).await, want);
}

async fn max_honoured(q: Arc<dyn WorkQueue>) {
    let sent = numbered("max", 5);
    q.push(&sent).await.expect("push");
    assert!(q.pull(0, LONG, Duration::ZERO).await.expect("pull 0").is_empty());
    let two = q.pull(2, LONG, Duration::from_secs(2)).await.expect("pull");
    assert!((1..=2).contains(&two.len()), "pull(max = 2) returned {}", two.len());
    let one = q.pull(1, LONG, Duration::from_secs(2)).await.expect("pull");
    assert_eq!(one.len(), 1, "pull(max = 1) returned {}", one.len());
    let mut all = two;
    all.extend(one);
    all.extend(gather(&*q, 5 - all.len(), LONG, Duration::from_secs(10)).await);
    assert_eq!(bodies(&all), sent, "pulled in parts, got back something else");
}

/// Concurrent pulls lose nothing. They may hand one message out twice: SQS standard
/// queues are at-least-once (and moto's receive is unlocked, so it does so under load);
/// the embedded queue's own tests hold it to exactly one.
async fn concurrent_pulls(q: Arc<dyn WorkQueue>) {
    let sent = numbered("race", 20);
    q.push(&sent).await.expect("push");
    let pulls = (0..4).map(|_| {
        let q = q.clone();
        tokio::spawn(async move { q.pull(10, LONG, Duration::from_secs(1)).await })
    });
    let mut seen = HashSet::new();
    for p in futures::future::join_all(pulls).await {
        let got = p.expect("task").expect("pull");
        assert!(got.len() <= 10, "pull(max = 10) returned {}", got.len());
        seen.extend(got.into_iter().map(|d| d.body));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < sent.len() && Instant::now() < deadline {
        let got = q.pull(10, LONG, Duration::from_secs(1)).await.expect("pull");
        seen.extend(got.into_iter().map(|d| d.body));
    }
    let mut seen: Vec<String> = seen.into_iter().collect();
    seen.sort();
    assert_eq!(seen, sent, "concurrent pulls lost messages");
}

/// Depth is approximate on SQS: poll briefly until it reads `want`, return the last reading.
async fn settled_depth(q: &dyn WorkQueue, want: QueueDepth) -> QueueDepth {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let d = q.depth().await.expect("depth");
        if d == want || Instant::now() >= deadline {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
