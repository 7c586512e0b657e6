//! Named crash points, for fault tests of the segment protocol.
//!
//! The worker calls [`crash_point`] at each step where a crash leaves different state
//! behind. With `BUCKETCLONE_CRASH_AT=<point>` (or `<point>:<n>`) in its environment, the
//! process aborts the `n`th time (default: the first) it reaches that point: no destructor
//! runs, nothing is flushed or acknowledged, exactly as after a SIGKILL. Without the
//! variable every call is one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The points, in protocol order.
pub const POINTS: &[&str] = &[AFTER_LISTING, AFTER_SPLIT, MID_COPY, AFTER_COPY, AFTER_RECORD, BEFORE_ACK];
/// A page's source and destination are listed; nothing copied yet.
pub const AFTER_LISTING: &str = "after-listing";
/// A page's children are recorded by its split (handed on early); not yet enqueued.
pub const AFTER_SPLIT: &str = "after-split";
/// One object of the page is copied, others may be in flight.
pub const MID_COPY: &str = "mid-copy";
/// Every copy of the page is done and verified (a move's deletes done too); the
/// completion is not recorded.
pub const AFTER_COPY: &str = "after-copy";
/// The completion is recorded; its children are not enqueued.
pub const AFTER_RECORD: &str = "after-record";
/// The children are enqueued; the segment's message is not acknowledged.
pub const BEFORE_ACK: &str = "before-ack";

struct Plan {
    point: String,
    nth: u64,
    hits: AtomicU64,
}

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let v = std::env::var("BUCKETCLONE_CRASH_AT").ok()?;
        let (point, nth) = match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        if !POINTS.contains(&point.as_str()) {
            eprintln!("BUCKETCLONE_CRASH_AT={point}: unknown crash point (known: {})", POINTS.join(", "));
            std::process::exit(2);
        }
        Some(Plan { point, nth: nth.max(1), hits: AtomicU64::new(0) })
    })
    .as_ref()
}

/// Aborts the process here if the environment asks for a crash at `point` and this is the
/// chosen hit. See the module doc.
pub fn crash_point(point: &str) {
    if let Some(p) = plan()
        && p.point == point
        && p.hits.fetch_add(1, Ordering::SeqCst) + 1 == p.nth
    {
        eprintln!("bucketclone: crashing at {point} (BUCKETCLONE_CRASH_AT)");
        std::process::abort();
    }
}
