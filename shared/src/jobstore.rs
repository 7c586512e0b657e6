//! The job-store port: jobs, their segments and their per-key findings, with exactly-once
//! accounting under at-least-once delivery.
//!
//! Invariants every backend keeps:
//! - `create_job` is idempotent on the job id: a second call changes nothing.
//! - A segment moves pending -> done once. `complete_segment` does, in ONE atomic write, the
//!   move, the segment's outcome, its children's records (pending, unless they exist), and
//!   the job's counters (`outstanding += children created - 1`, `segments_done += 1`, plus the page's
//!   tallies). A repeat finds the segment done and returns [`Recorded::Already`], changing
//!   nothing, so counters are never doubled.
//! - A pending segment may be split once ([`JobStore::split_segment`]): its children are
//!   recorded and created (pending, unless they exist) and `outstanding += children
//!   created`, in ONE atomic write, while the segment stays pending and still counts one.
//!   Its completion must then name the same children; it creates and counts none
//!   (`outstanding -= 1`). Since the parent still counts while its children run,
//!   `outstanding` cannot reach zero before the parent is done, however soon they finish.
//! - Counters change once per segment (twice for a split one), never once per object.
//! - A completion whose children do not tile the rest of its range
//!   ([`crate::keyrange::check_children`]) is refused with `Invalid` and changes nothing.
//! - `issues` reports only the findings of completions that were recorded: findings written
//!   by an attempt whose atomic write then failed (a crash, a lost race) never show.

use async_trait::async_trait;

use crate::error::Result;
use crate::model::{JobControl, JobRecord, JobSpec, JobState, KeyRange, ObjectIssue, SegmentCompletion, SegmentRecord};

/// The most children one [`JobStore::complete_segment`] may create, and the most first
/// segments one [`JobStore::create_job`] may record: the whole write is one DynamoDB
/// transaction (at most 100 actions, two of them the segment and the job). More is `Invalid`.
pub const MAX_CHILDREN: usize = 90;

/// Whether a write happened now or had already happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// This call made the change.
    Now,
    /// The change was already there (a repeated delivery, a second request): nothing changed.
    Already,
}

/// Where a page of [`JobStore::jobs`] ends: the last job's creation time and id. As text
/// (`<created_ms>.<id>`) it is the `after` of `GET /jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCursor {
    pub created_ms: i64,
    pub id: String,
}

impl JobCursor {
    /// The cursor just after `job`.
    pub fn after(job: &JobRecord) -> Self {
        JobCursor { created_ms: job.created_ms, id: job.spec.id.clone() }
    }
    pub fn to_token(&self) -> String {
        format!("{}.{}", self.created_ms, self.id)
    }
    /// Reads a token; `Invalid` when it is not one.
    pub fn parse(token: &str) -> Result<Self> {
        let bad = || crate::Error::invalid(format!("{token:?} is not a page token"));
        let (ms, id) = token.split_once('.').ok_or_else(bad)?;
        crate::model::validate_job_id(id).map_err(|_| bad())?;
        Ok(JobCursor { created_ms: ms.parse().map_err(|_| bad())?, id: id.to_string() })
    }
}

/// Durable job state. All methods may be called concurrently from many processes.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Records a new running job and its first segments (pending; `outstanding` = their
    /// number). Idempotent on `spec.id`: if the job exists nothing changes and `Already` is
    /// returned, whatever the spec says.
    async fn create_job(&self, spec: &JobSpec, first: &[KeyRange]) -> Result<Recorded>;

    /// The job, if it exists. Strongly consistent: reflects every completed write.
    async fn job(&self, id: &str) -> Result<Option<JobRecord>>;

    /// Records `spec` as a job that is `Failed` from the start with `message` (a refused
    /// request), in ONE write: no reader ever sees it running. Idempotent on `spec.id`: an
    /// existing job is never changed, and `Already` is returned.
    async fn create_failed(&self, spec: &JobSpec, message: &str) -> Result<Recorded>;

    /// Jobs newest first, at most `limit`, strictly after `after` (the last job of the
    /// previous page) in that order: page through them to list any number.
    async fn jobs(&self, limit: usize, after: Option<&JobCursor>) -> Result<Vec<JobRecord>>;

    /// Every running job, however many and however old: what a supervisor watches.
    async fn running(&self) -> Result<Vec<JobRecord>>;

    /// Sets (or with `None` clears) the `message` of a running job: why it is stuck, say.
    /// Changes nothing else; a no-op on a terminal or unknown job.
    async fn note(&self, job: &str, message: Option<&str>) -> Result<()>;

    /// The segment with this range, if recorded.
    async fn segment(&self, job: &str, range: &KeyRange) -> Result<Option<SegmentRecord>>;

    /// The job's segments (done or pending), at most `limit`, in no particular order.
    async fn segments(&self, job: &str, limit: usize) -> Result<Vec<SegmentRecord>>;

    /// Applies one segment's work exactly once (see the module invariants). The issues are
    /// stored idempotently by (job, key, kind), before or with the atomic write; `issues()`
    /// only ever returns those of the completion that was recorded, never those of one that
    /// lost to a duplicate or crashed before recording.
    /// Fails with `NotFound` if the segment was never created, and `Invalid` (changing
    /// nothing) when the children break [`crate::keyrange::check_children`], or differ from
    /// those of the segment's split.
    async fn complete_segment(&self, c: &SegmentCompletion) -> Result<Recorded>;

    /// Hands a pending segment's children on before its page is done, so other workers
    /// take them while this one copies (see the module invariants). `children` must tile
    /// the rest of the range after a key inside it ([`crate::keyrange::check_children`]),
    /// and be at least one (else `Invalid`, changing nothing). Returns the children the
    /// segment holds after the call: these (`Now`), or, changing nothing (`Already`), those
    /// an earlier split or its completion recorded, which may differ: the page is then held
    /// to theirs ([`SegmentRecord::split_end`](crate::model::SegmentRecord::split_end)).
    /// `NotFound` for a segment never created.
    async fn split_segment(
        &self,
        job: &str,
        range: &KeyRange,
        children: &[KeyRange],
    ) -> Result<(Recorded, Vec<KeyRange>)>;

    /// Move: adds `marks` ([`crate::model::move_mark`]) to the segment's record of source
    /// objects about to be deleted. Called BEFORE the deletes, so a page redone after a crash
    /// that came after them still counts those objects exactly once. A set union: repeats and
    /// concurrent calls lose nothing. `NotFound` for a segment never created.
    async fn mark_moved(&self, job: &str, range: &KeyRange, marks: &[String]) -> Result<()>;

    /// Moves a running (not paused) job whose `outstanding` is 0 to its final state (from its counters:
    /// `Verified` or `Mismatch`). Returns the job's state after the call; a job still running
    /// with segments outstanding is left alone. Idempotent.
    async fn finalize(&self, job: &str) -> Result<Option<JobState>>;

    /// Ends a running job as `Failed` with `message` (a bad request, a missing bucket).
    /// No-op on a terminal job.
    async fn fail(&self, job: &str, message: &str) -> Result<()>;

    /// Pauses, resumes or cancels the job, in one conditional write: only from the states
    /// [`JobControl::transition`] allows, keeping its counters. Returns the job's state
    /// after the call (unchanged when the action does not apply), `None` for an unknown job.
    /// A paused job is not [`JobStore::running`]; segment completions still count on it.
    async fn control(&self, job: &str, action: JobControl) -> Result<Option<JobState>>;

    /// The job's findings ordered by (key, kind), strictly after `after` (the last issue of
    /// the previous page), at most `limit`: page through them to stream a report of any size.
    async fn issues(&self, job: &str, after: Option<&ObjectIssue>, limit: usize) -> Result<Vec<ObjectIssue>>;
}

/// The ranges without repeats (by id, first kept), refusing more than [`MAX_CHILDREN`]
/// (`Invalid`): what every backend writes for a job's first segments.
pub(crate) fn distinct(ranges: &[KeyRange], what: &str) -> Result<Vec<KeyRange>> {
    let mut seen = std::collections::HashSet::new();
    let out: Vec<KeyRange> = ranges.iter().filter(|r| seen.insert(r.id())).cloned().collect();
    if out.len() > MAX_CHILDREN {
        return Err(crate::Error::invalid(format!("{} {what}: at most {MAX_CHILDREN} per write", out.len())));
    }
    Ok(out)
}

/// A completion's children as every backend writes them: [`distinct`], tiling the rest of
/// the range ([`crate::keyrange::check_children`]); else `Invalid`.
pub(crate) fn completion_children(c: &SegmentCompletion) -> Result<Vec<KeyRange>> {
    let children = distinct(&c.children, "children")?;
    crate::keyrange::check_children(&c.range, &children)?;
    Ok(children)
}

/// A split's children as every backend writes them: [`distinct`], at least one, tiling
/// the rest of the range ([`crate::keyrange::check_split`]); else `Invalid`.
pub(crate) fn split_children(range: &KeyRange, children: &[KeyRange]) -> Result<Vec<KeyRange>> {
    let children = distinct(children, "children")?;
    crate::keyrange::check_split(range, &children)?;
    Ok(children)
}

/// Why a split segment's completion is refused: its children are not the split's.
pub(crate) fn split_mismatch(range: &KeyRange) -> crate::Error {
    crate::Error::invalid(format!(
        "segment ({:?}, {:?}] was split: its completion must name the split's children",
        range.start_after, range.end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_bad_ones_are_refused() {
        let c = JobCursor { created_ms: 1_764_000_000_123, id: "job.a-1".into() };
        assert_eq!(JobCursor::parse(&c.to_token()).unwrap(), c);
        for bad in ["", "123", "x.job", "12.bad id", "12."] {
            assert!(matches!(JobCursor::parse(bad), Err(crate::Error::Invalid(_))), "{bad:?}");
        }
    }
}
