//! How many segments a worker takes from the queue: as many as its copies will need soon,
//! not as many as it has room for.
//!
//! Every worker shares one queue, and a segment a worker holds is work no other worker can
//! start. A worker that took whatever fitted its segment slots (eight) held up to eight
//! pages, thousands of copies behind its own copy limit, while other workers waited on an
//! empty queue: at the start of a job, when its first pages fan out, and at its end, when
//! the last pages are few. So a worker asks for pages by its work on hand:
//!
//! - **work on hand** is the copies its pages planned and have not finished
//!   ([`CopyLimit::queued`](crate::CopyLimit::queued)), plus, for each page taken and not
//!   yet planned, the copies a page has been planning lately ([`Demand::per_page`]);
//! - it asks for nothing while that covers [`ROUNDS`] rounds of its copy limit: enough to
//!   keep its copies busy while the next page is pulled and listed;
//! - below that, for the pages that would cover it, never more than its free slots or the
//!   queue's 10: one full page when it is busy, leaving the rest to idle workers; at least
//!   [`AT_LEAST`] when it has nothing on hand, so that a pull that comes back with one
//!   tells it the queue ran dry (`Worker::hungry`: its pages then hand their children on
//!   early).
//!
//! Pages that copy nothing (a rerun over a complete destination, a verification) leave no
//! work on hand: the worker then asks for all its free slots, as listing is all there is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Rounds of the copy limit a worker keeps on hand before it takes more pages.
pub const ROUNDS: usize = 4;

/// The fewest segments asked for by a pull (when slots are free).
pub const AT_LEAST: usize = 2;

/// The most SQS delivers in one receive.
pub const QUEUE_MAX: usize = 10;

/// Copies per page assumed before a worker has planned any (a full page of a fresh clone).
const FIRST_GUESS: usize = 1000;

/// How many segments to ask the queue for.
/// - `free`: segment slots free;
/// - `on_hand`: copies planned and not finished, plus the expected copies of pages taken and
///   not planned yet;
/// - `per_page`: copies a page has been planning lately;
/// - `limit`: the copy limit now.
pub fn to_ask(free: usize, on_hand: usize, per_page: usize, limit: usize) -> usize {
    let want = ROUNDS * limit.max(1);
    if free == 0 || on_hand >= want {
        return 0;
    }
    // An idle worker asks for at least two, so that one message coming back says the queue
    // ran dry; a busy one for what it needs, leaving the rest to idle ones.
    let floor = if on_hand == 0 { AT_LEAST } else { 1 };
    (want - on_hand).div_ceil(per_page.max(1)).clamp(floor, QUEUE_MAX).min(free)
}

/// A worker's record of the pages it holds and what they plan.
#[derive(Debug)]
pub struct Demand {
    /// Pages taken and not planned yet.
    unplanned: AtomicUsize,
    /// Copies per planned page, a moving average (each new page weighs a quarter).
    per_page: AtomicUsize,
}

impl Default for Demand {
    fn default() -> Self {
        Demand { unplanned: AtomicUsize::new(0), per_page: AtomicUsize::new(FIRST_GUESS) }
    }
}

impl Demand {
    /// Copies a page has been planning lately.
    pub fn per_page(&self) -> usize {
        self.per_page.load(Ordering::Relaxed)
    }

    /// Expected copies of the pages taken and not planned yet.
    pub fn unplanned_copies(&self) -> usize {
        self.unplanned.load(Ordering::Relaxed) * self.per_page()
    }

    /// A page taken: unplanned until [`Pending::planned`] or the guard drops.
    pub fn take(self: &Arc<Self>) -> Pending {
        self.unplanned.fetch_add(1, Ordering::Relaxed);
        Pending { demand: self.clone(), open: AtomicBool::new(true) }
    }

    fn planned(&self, copies: usize) {
        // Races between pages lose an update at worst: this is an estimate.
        let avg = self.per_page();
        self.per_page.store((avg * 3 + copies) / 4, Ordering::Relaxed);
    }
}

/// A page a worker holds, counted as unplanned until it is planned or dropped.
#[derive(Debug)]
pub struct Pending {
    demand: Arc<Demand>,
    open: AtomicBool,
}

impl Pending {
    /// The page is planned with `copies` to make (they count in the copy limit's queue from
    /// now on); or, with `None`, it ended before planning anything.
    pub fn planned(&self, copies: Option<usize>) {
        if self.open.swap(false, Ordering::Relaxed) {
            self.demand.unplanned.fetch_sub(1, Ordering::Relaxed);
            if let Some(n) = copies {
                self.demand.planned(n);
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.planned(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_with_nothing_on_hand_asks_for_a_few_full_pages_not_every_slot() {
        // Pages of about a thousand copies, a limit of 64: 256 copies wanted, one page would
        // do, two are asked for so that a short answer means the queue ran dry.
        assert_eq!(to_ask(8, 0, 1000, 64), AT_LEAST);
        // Small pages: as many as cover the rounds wanted.
        assert_eq!(to_ask(8, 0, 50, 64), 6);
        assert_eq!(to_ask(8, 200, 10, 64), 6);
    }

    #[test]
    fn a_worker_with_rounds_of_copies_on_hand_asks_for_nothing() {
        assert_eq!(to_ask(8, ROUNDS * 64, 1000, 64), 0);
        assert_eq!(to_ask(8, 5000, 1000, 64), 0);
        // A throttled worker (its limit halved) wants less on hand.
        assert_eq!(to_ask(8, 130, 1000, 32), 0);
        // Busy, but short of the rounds wanted: one full page, not two.
        assert_eq!(to_ask(8, 130, 1000, 64), 1);
        assert_eq!(to_ask(8, 1, 1000, 64), 1);
    }

    #[test]
    fn pages_that_copy_nothing_fill_every_free_slot_within_the_queue_maximum() {
        assert_eq!(to_ask(8, 0, 0, 64), 8);
        assert_eq!(to_ask(16, 0, 0, 64), QUEUE_MAX);
        assert_eq!(to_ask(1, 0, 0, 64), 1);
        assert_eq!(to_ask(0, 0, 0, 64), 0);
        assert_eq!(to_ask(3, 0, 1000, 0), 2, "a limit of 0 counts as 1");
    }

    #[test]
    fn pending_pages_count_until_planned_or_dropped_and_set_the_average() {
        let d = Arc::new(Demand::default());
        let a = d.take();
        let b = d.take();
        assert_eq!(d.unplanned_copies(), 2 * FIRST_GUESS);
        a.planned(Some(0));
        a.planned(Some(0)); // counted once
        assert_eq!(d.per_page(), FIRST_GUESS * 3 / 4);
        assert_eq!(d.unplanned_copies(), d.per_page());
        drop(b);
        assert_eq!(d.unplanned_copies(), 0);
        drop(a);
        assert_eq!(d.unplanned_copies(), 0, "a planned page is not counted down twice");
        for _ in 0..40 {
            d.take().planned(Some(0));
        }
        assert_eq!(d.per_page(), 0, "pages that copy nothing bring the average to nothing");
        for _ in 0..40 {
            d.take().planned(Some(999));
        }
        assert!((990..=999).contains(&d.per_page()), "{}", d.per_page());
    }
}
