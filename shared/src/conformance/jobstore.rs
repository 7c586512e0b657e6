//! The [`JobStore`] conformance suite: every backend must pass [`run`].
//!
//! Contract with the caller: `new_store` returns a store in which the suite's job ids are
//! unused. A fresh, empty store per case is ideal; one store shared by every case also works
//! (slow emulators: one DynamoDB table for the whole suite), because every case uses job ids
//! with a random suffix and looks only at its own jobs. The one exception: the `jobs` case
//! expects that nobody else creates jobs in the store while the suite runs.
//!
//! Semantics pinned here beyond the port's doc comments (both backends agree on them):
//! - `outstanding` grows by the children a completion actually creates, minus one: a child
//!   that already exists is neither reset nor counted again, so the job can still finish.
//! - A segment's `outcome` is exactly what its completion added to the job's counters
//!   (`outstanding` = new children - 1, `segments_done` = 1, the rest from the delta).
//! - Duplicate ranges in one call are one segment; more than [`MAX_CHILDREN`] is `Invalid`.
//! - Issues are ordered by key (UTF-8 byte order), then by the kind's kebab-case name.
//! - `fail` on an unknown job is `NotFound`; `finalize` on one is `Ok(None)`.
//! - `outstanding` always equals the job's pending segments, split or not; a split parent
//!   is one of them until its completion.

mod cases;
mod control;
mod issues;
mod split;
mod trust;

use std::future::Future;
use std::sync::Arc;

use crate::jobstore::{JobStore, MAX_CHILDREN};
use crate::model::{Counters, IssueKind, JobSpec, KeyRange, Location, ObjectIssue, SegmentCompletion};

/// Runs every case against stores from `new_store`, panicking with the case's name and a
/// clear message on the first failure.
pub async fn run<F, Fut>(new_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn JobStore>>,
{
    macro_rules! case {
        ($module:ident :: $name:ident) => {{
            tracing::info!(case = stringify!($name), "job store conformance case");
            $module::$name(new_store().await).await;
        }};
    }
    case!(cases::create_job_is_idempotent);
    case!(cases::completion_applies_once_and_creates_pending_children);
    case!(cases::unknown_segment_or_job_is_not_found);
    case!(cases::existing_child_is_not_reset_nor_recounted);
    case!(cases::too_many_children_is_invalid_and_changes_nothing);
    case!(cases::concurrent_distinct_completions_are_exact);
    case!(cases::concurrent_duplicate_completions_count_once);
    case!(cases::finalize_waits_for_outstanding_then_settles);
    case!(cases::fail_sets_failed_once_and_spares_terminal_jobs);
    case!(cases::segments_lists_done_and_pending_of_its_job_only);
    case!(cases::jobs_lists_newest_first);
    case!(issues::issues_page_in_key_kind_order_and_store_repeats_once);
    case!(split::split_hands_children_on_and_the_parent_still_counts);
    case!(split::a_split_parent_completes_only_with_its_split_children);
    case!(split::bad_splits_are_refused_and_change_nothing);
    case!(split::racing_splits_and_completions_keep_the_books);
    case!(trust::completions_that_break_the_tiling_are_invalid);
    case!(trust::create_failed_is_one_terminal_write);
    case!(trust::running_lists_running_jobs_only_and_notes_touch_only_them);
    case!(trust::move_marks_are_a_union);
    case!(trust::losing_duplicate_completions_leave_no_findings);
    case!(control::pause_keeps_counting_and_resume_settles);
    case!(control::cancel_is_final_and_keeps_the_counts);
}

/// A job id unused anywhere: `case` plus a random suffix.
fn job_id(case: &str) -> String {
    format!("{case}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn spec(id: &str) -> JobSpec {
    JobSpec {
        id: id.to_string(),
        source: Location::s3("conformance-src", "data/").expect("valid source"),
        destination: Location::s3("conformance-dst", "").expect("valid destination"),
        options: Default::default(),
    }
}

fn range(start_after: &str, end: Option<&str>) -> KeyRange {
    KeyRange { start_after: start_after.to_string(), end: end.map(str::to_string) }
}

/// `n` adjacent ranges `(k000, k001], (k001, k002], ...` starting after `base`.
fn ranges(base: &str, n: usize) -> Vec<KeyRange> {
    (0..n).map(|i| range(&format!("{base}{i:03}"), Some(&format!("{base}{:03}", i + 1)))).collect()
}

fn completion(job: &str, r: &KeyRange, delta: Counters, children: Vec<KeyRange>) -> SegmentCompletion {
    SegmentCompletion {
        job: job.to_string(),
        range: r.clone(),
        delta,
        children,
        issues: Vec::new(),
        worker: "worker-1".to_string(),
        started_ms: 1_000,
        finished_ms: 2_000,
    }
}

fn issue(key: &str, kind: IssueKind) -> ObjectIssue {
    ObjectIssue { key: key.to_string(), kind, source: None, destination: None, detail: None }
}

/// The job's counters; panics if the job is missing.
async fn counters(store: &Arc<dyn JobStore>, job: &str) -> Counters {
    store.job(job).await.expect("job() failed").unwrap_or_else(|| panic!("job {job} should exist")).counters
}

/// Creates `id` with `first`, asserting it was created now.
async fn create(store: &Arc<dyn JobStore>, id: &str, first: &[KeyRange]) {
    let r = store.create_job(&spec(id), first).await.unwrap_or_else(|e| panic!("create_job({id}) failed: {e}"));
    assert_eq!(r, crate::jobstore::Recorded::Now, "first create_job({id})");
}

/// A delta with some tallies, and bogus `outstanding`/`segments_done` the store must ignore.
fn page_delta(objects: i64, bytes: i64) -> Counters {
    Counters {
        outstanding: 1_000,
        segments_done: 1_000,
        source_objects: objects,
        source_bytes: bytes,
        dest_objects: objects,
        dest_bytes: bytes,
        copied_objects: objects,
        copied_bytes: bytes,
        verified_objects: objects,
        ..Default::default()
    }
}

/// What the store must record as a segment's outcome for `delta` and `new_children`.
fn applied(delta: Counters, new_children: i64) -> Counters {
    Counters { outstanding: new_children - 1, segments_done: 1, ..delta }
}

const _: () = assert!(MAX_CHILDREN >= 20, "the concurrent cases need 20 first segments");
