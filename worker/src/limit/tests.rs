//! The copy limit on tokio's paused clock: admissions, one decrease per burst, the
//! cooldown, additive recovery, and retries that free their slot while backing off.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

fn throttled<T>() -> Result<T> {
    Err(Error::Throttled("503 SlowDown".into()))
}

/// How many slots can be taken now without waiting (they are given back afterwards).
async fn admissible(limit: &CopyLimit) -> usize {
    let mut held = Vec::new();
    while let Ok(p) = tokio::time::timeout(Duration::from_millis(1), limit.acquire()).await {
        held.push(p);
    }
    held.len()
}

#[tokio::test(start_paused = true)]
async fn admits_up_to_the_limit_and_the_next_when_one_is_released() {
    let limit = CopyLimit::new(3);
    let held = [limit.acquire().await, limit.acquire().await, limit.acquire().await];
    assert_eq!(limit.stats().in_flight, 3);
    assert!(tokio::time::timeout(Duration::from_secs(60), limit.acquire()).await.is_err());
    let [a, _b, _c] = held;
    drop(a);
    assert!(tokio::time::timeout(Duration::from_millis(1), limit.acquire()).await.is_ok());
    assert_eq!(CopyLimit::new(0).limit(), 1, "the ceiling is at least 1");
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_throttles_is_one_decrease_and_lowers_admissions() {
    let limit = CopyLimit::new(16);
    let held: Vec<_> = futures::future::join_all((0..16).map(|_| limit.acquire())).await;
    for p in &held {
        p.observe(&throttled::<()>());
    }
    let s = limit.stats();
    assert_eq!((s.limit, s.throttles, s.decreases), (8, 16, 1));
    // The 16 busy slots are taken back as they are released: 8 may run afterwards.
    drop(held);
    assert_eq!(admissible(&limit).await, 8);
    assert_eq!(limit.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn attempts_admitted_after_a_decrease_lower_it_again_down_to_one() {
    let limit = CopyLimit::new(8);
    for want in [4, 2, 1, 1] {
        let p = limit.acquire().await;
        p.observe(&throttled::<()>());
        assert_eq!(limit.limit(), want);
    }
    let s = limit.stats();
    assert_eq!((s.decreases, s.lowest, s.throttles), (3, 1, 4));
    assert_eq!(admissible(&limit).await, 1);
}

#[tokio::test(start_paused = true)]
async fn an_old_attempt_lowers_the_limit_again_only_after_the_cooldown() {
    let limit = CopyLimit::new(16).with_cooldown(Duration::from_millis(500));
    let (a, b, c) = (limit.acquire().await, limit.acquire().await, limit.acquire().await);
    a.observe(&throttled::<()>());
    tokio::time::advance(Duration::from_millis(499)).await;
    b.observe(&throttled::<()>());
    assert_eq!(limit.limit(), 8, "same burst: ignored");
    tokio::time::advance(Duration::from_millis(1)).await;
    c.observe(&throttled::<()>());
    assert_eq!(limit.limit(), 4, "the cooldown is over: fresh pressure");
    // Other errors say nothing about load.
    c.observe(&Err::<(), _>(Error::transient("connection reset")));
    c.observe(&Err::<(), _>(Error::permanent("access denied")));
    assert_eq!(limit.stats().throttles, 3);
    assert_eq!(limit.limit(), 4);
}

#[tokio::test(start_paused = true)]
async fn successes_raise_the_limit_one_per_limit_successes_up_to_the_ceiling() {
    let limit = CopyLimit::new(6);
    for _ in 0..3 {
        limit.acquire().await.observe(&throttled::<()>());
    }
    assert_eq!(limit.limit(), 1);
    // From 1 to 6 takes 1 + 2 + 3 + 4 + 5 = 15 successes.
    let mut seen = Vec::new();
    for _ in 0..15 {
        limit.acquire().await.observe(&Ok(()));
        seen.push(limit.limit());
    }
    assert_eq!(seen, [2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5, 6]);
    for _ in 0..50 {
        limit.acquire().await.observe(&Ok(()));
    }
    let s = limit.stats();
    assert_eq!((s.limit, s.increases, s.lowest), (6, 5, 1));
    assert_eq!(admissible(&limit).await, 6);
}

#[tokio::test(start_paused = true)]
async fn an_increase_while_slots_are_busy_repays_the_debt_first() {
    let limit = CopyLimit::new(4);
    let held: Vec<_> = futures::future::join_all((0..4).map(|_| limit.acquire())).await;
    held[0].observe(&throttled::<()>()); // 4 -> 2, all four busy: a debt of 2
    held[1].observe(&Ok(()));
    held[2].observe(&Ok(())); // 2 successes: 2 -> 3
    assert_eq!(limit.limit(), 3);
    drop(held);
    assert_eq!(admissible(&limit).await, 3);
}

#[tokio::test(start_paused = true)]
async fn a_throttled_copy_is_retried_and_frees_its_slot_before_it_backs_off() {
    let limit = CopyLimit::new(1);
    let calls = AtomicU32::new(0);
    let policy = RetryPolicy::default();
    let start = Instant::now();
    // The first attempt runs 1 s, then is throttled; the second succeeds.
    let copy = limit.run(&policy, || async {
        match calls.fetch_add(1, Ordering::SeqCst) {
            0 => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                throttled()
            }
            _ => Ok(start.elapsed()),
        }
    });
    // Another copy queues for the only slot, gets it when the first attempt ends (not when
    // the copy ends), and holds it for 10 s; the retry waits for it.
    let other = async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let p = limit.acquire().await;
        let got_at = start.elapsed();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(p);
        got_at
    };
    let (done_at, other_got_at) = tokio::join!(copy, other);
    let handed_on = Duration::from_secs(1)..Duration::from_millis(1_010);
    assert!(
        handed_on.contains(&other_got_at),
        "the slot was handed on at {other_got_at:?}, not when the attempt ended"
    );
    assert!(done_at.unwrap() >= Duration::from_secs(11), "the retry waited for a slot");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let s = limit.stats();
    assert_eq!((s.throttles, s.limit, s.in_flight), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_copy_throttled_on_every_attempt_gives_up_after_the_policy_budget() {
    let limit = CopyLimit::new(4);
    let calls = AtomicU32::new(0);
    let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
    let r: Result<()> = limit
        .run(&policy, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            throttled()
        })
        .await;
    assert!(matches!(r, Err(Error::Throttled(_))));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Each attempt was admitted after the previous decrease: 4 -> 2 -> 1 -> 1.
    let s = limit.stats();
    assert_eq!((s.throttles, s.decreases, s.limit), (3, 2, 1));
}

#[test]
fn queued_copies_count_down_as_they_finish_and_a_dropped_page_takes_its_rest_back() {
    let limit = CopyLimit::new(4);
    let a = limit.queue(5);
    let b = limit.queue(3);
    assert_eq!(limit.queued(), 8);
    a.done();
    a.done();
    assert_eq!(limit.queued(), 6);
    drop(a); // abandoned with three left
    assert_eq!(limit.queued(), 3);
    for _ in 0..5 {
        b.done(); // more than it queued: counted three times only
    }
    assert_eq!(limit.queued(), 0);
    drop(b);
    assert_eq!(limit.queued(), 0, "nothing taken back twice");
}
