//! The worker's adaptive copy limit (AIMD): how many copies (and move's deletes) may be in
//! flight at once, lowered when the store answers `Throttled` (503 SlowDown, 429) and
//! raised again while it does not.
//!
//! - It starts at the ceiling (`copy_concurrency`) and stays within [1, ceiling].
//! - Multiplicative decrease: a throttled attempt halves the limit, once per burst: only
//!   an attempt admitted after the last decrease (it saw the lowered limit and was still
//!   throttled), or any attempt once the last decrease is `cooldown` old, lowers it again.
//!   The throttles of attempts already in flight when it fell are the same burst.
//! - Additive increase: +1 after `limit` successes in a row without a decrease.
//! - In flight never exceeds the limit for new admissions: a decrease takes back free
//!   slots at once and busy ones as they are released.
//! - Each attempt holds a slot only while it runs ([`CopyLimit::run`]): the backoff before
//!   a retry holds none, so a throttled copy does not keep its slot while it waits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use shared::error::RetryPolicy;
use shared::{Error, Result};

/// What the limit has done, for tests and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitStats {
    /// The configured maximum.
    pub ceiling: usize,
    /// The limit now.
    pub limit: usize,
    /// The lowest the limit has been.
    pub lowest: usize,
    /// Attempts that came back `Throttled`.
    pub throttles: u64,
    /// Times the limit was halved.
    pub decreases: u64,
    /// Times the limit was raised by one.
    pub increases: u64,
    /// Slots held now.
    pub in_flight: usize,
}

/// An adaptive concurrency limit. Share it by reference; all methods take `&self`.
#[derive(Debug)]
pub struct CopyLimit {
    /// Free slots. Invariant: free + held - `debt` == `limit`.
    slots: Semaphore,
    cooldown: Duration,
    state: Mutex<State>,
    /// Copies planned and not finished ([`CopyLimit::queue`]).
    queued: AtomicUsize,
}

#[derive(Debug)]
struct State {
    stats: LimitStats,
    /// Slots to take back as they are released (a decrease while they were busy).
    debt: usize,
    /// Successes since the last change of the limit.
    successes: usize,
    /// Bumped by every decrease; an attempt remembers the one it was admitted in.
    epoch: u64,
    last_decrease: Option<Instant>,
}

/// One admitted attempt's slot; released on drop. Report the attempt's outcome with
/// [`Permit::observe`].
#[derive(Debug)]
pub struct Permit<'a> {
    limit: &'a CopyLimit,
    slot: Option<SemaphorePermit<'a>>,
    epoch: u64,
}

impl CopyLimit {
    /// Default for [`CopyLimit::with_cooldown`].
    pub const COOLDOWN: Duration = Duration::from_secs(1);

    /// A limit starting at, and never above, `ceiling` (at least 1).
    pub fn new(ceiling: usize) -> Self {
        let ceiling = ceiling.max(1);
        let stats = LimitStats { ceiling, limit: ceiling, lowest: ceiling, ..Default::default() };
        CopyLimit {
            slots: Semaphore::new(ceiling),
            cooldown: Self::COOLDOWN,
            state: Mutex::new(State { stats, debt: 0, successes: 0, epoch: 0, last_decrease: None }),
            queued: AtomicUsize::new(0),
        }
    }

    /// After a decrease, how long throttles of attempts admitted before it are ignored.
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Waits for a slot (first come, first served).
    pub async fn acquire(&self) -> Permit<'_> {
        let slot = self.slots.acquire().await.expect("the copy limit's semaphore is never closed");
        let mut s = self.lock();
        s.stats.in_flight += 1;
        Permit { limit: self, slot: Some(slot), epoch: s.epoch }
    }

    /// Runs `op` under `policy`, each attempt in a slot of its own, reporting each
    /// attempt's outcome; `Throttled` attempts are retried like any transient failure.
    pub async fn run<T, F, Fut>(&self, policy: &RetryPolicy, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        use shared::telemetry::{RETRIES, THROTTLES};
        let attempts = std::sync::atomic::AtomicU32::new(0);
        policy
            .run(|| {
                let attempt = op();
                if attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 0 {
                    metrics::counter!(RETRIES).increment(1);
                }
                async move {
                    let permit = self.acquire().await;
                    let in_flight = InFlightGauge::up();
                    let r = attempt.await;
                    drop(in_flight);
                    if matches!(r, Err(shared::Error::Throttled(_))) {
                        metrics::counter!(THROTTLES).increment(1);
                    }
                    permit.observe(&r);
                    r
                }
            })
            .await
    }

    /// The most the limit ever admits at once.
    pub fn ceiling(&self) -> usize {
        self.lock().stats.ceiling
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.lock().stats.limit
    }

    /// Copies planned by the worker's pages and not finished, running or waiting for a
    /// slot: its work on hand, by which it decides how many more pages to take.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Counts `n` planned copies as queued, each until [`Queued::done`] or the guard drops
    /// (a page abandoned midway leaves nothing counted).
    pub fn queue(&self, n: usize) -> Queued<'_> {
        self.queued.fetch_add(n, Ordering::Relaxed);
        Queued { limit: self, left: AtomicUsize::new(n) }
    }

    /// A snapshot of what the limit has done.
    pub fn stats(&self) -> LimitStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn on_success(&self) {
        let mut s = self.lock();
        s.successes += 1;
        if s.successes < s.stats.limit || s.stats.limit >= s.stats.ceiling {
            return;
        }
        s.successes = 0;
        s.stats.limit += 1;
        s.stats.increases += 1;
        if s.debt > 0 {
            s.debt -= 1;
        } else {
            self.slots.add_permits(1);
        }
        tracing::debug!(limit = s.stats.limit, ceiling = s.stats.ceiling, "copy limit raised");
    }

    fn on_throttle(&self, epoch: u64) {
        let mut s = self.lock();
        s.stats.throttles += 1;
        let now = Instant::now();
        let fresh = epoch == s.epoch || s.last_decrease.is_none_or(|t| now.duration_since(t) >= self.cooldown);
        if !fresh || s.stats.limit == 1 {
            return;
        }
        let from = s.stats.limit;
        let to = (from / 2).max(1);
        let taken = self.slots.forget_permits(from - to);
        s.debt += from - to - taken;
        s.stats.limit = to;
        s.stats.lowest = s.stats.lowest.min(to);
        s.stats.decreases += 1;
        s.successes = 0;
        s.epoch += 1;
        s.last_decrease = Some(now);
        tracing::info!(from, to, throttles = s.stats.throttles, "throttled: copy limit halved");
    }
}

impl Permit<'_> {
    /// Reports the attempt's outcome: a success counts toward an increase, `Throttled`
    /// may halve the limit; other errors say nothing about load and change nothing.
    pub fn observe<T>(&self, r: &Result<T>) {
        match r {
            Ok(_) => self.limit.on_success(),
            Err(Error::Throttled(_)) => self.limit.on_throttle(self.epoch),
            Err(_) => {}
        }
    }
}

/// A page's planned copies in [`CopyLimit::queued`], counted down as they finish.
#[derive(Debug)]
pub struct Queued<'a> {
    limit: &'a CopyLimit,
    left: AtomicUsize,
}

impl Queued<'_> {
    /// One of the copies finished (at most as many times as were queued count).
    pub fn done(&self) {
        if self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            self.limit.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.limit.queued.fetch_sub(*self.left.get_mut(), Ordering::Relaxed);
    }
}

/// One copy in [`shared::telemetry::COPIES_IN_FLIGHT`] while it lives: a copy dropped
/// midway (its page abandoned) leaves the gauge as a finished one does.
struct InFlightGauge;

impl InFlightGauge {
    fn up() -> InFlightGauge {
        metrics::gauge!(shared::telemetry::COPIES_IN_FLIGHT).increment(1.0);
        InFlightGauge
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        metrics::gauge!(shared::telemetry::COPIES_IN_FLIGHT).decrement(1.0);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let mut s = self.limit.lock();
        s.stats.in_flight -= 1;
        if s.debt > 0 {
            s.debt -= 1;
            slot.forget();
        }
        // Else `slot` drops here and the slot is free again.
    }
}

#[cfg(test)]
#[path = "limit/tests.rs"]
mod tests;
