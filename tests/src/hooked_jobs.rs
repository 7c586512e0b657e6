//! A job store passed through to another, counting the calls tests reason about and
//! refusing or delaying completions, or segment listings, on demand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;
use shared::jobstore::{JobCursor, JobStore, Recorded};
use shared::model::{
    JobControl, JobRecord, JobSpec, JobState, KeyRange, ObjectIssue, SegmentCompletion, SegmentRecord,
};
use shared::{Error, Result};

pub struct HookedJobs {
    pub inner: Arc<dyn JobStore>,
    /// The next this many completions fail with a permanent error, changing nothing.
    pub refusals: AtomicU32,
    /// `segments()` of this job fails, as an unreadable table would.
    pub unreadable: Option<String>,
    /// Calls of `job()`.
    pub job_reads: AtomicU64,
    /// Calls of `segment()`.
    pub segment_reads: AtomicU64,
    /// Calls of `complete_segment()`, refused ones included.
    pub completions: AtomicU64,
    /// Every completion waits this long before it is sent (attempts racing a slow one).
    pub complete_delay: std::time::Duration,
}

impl HookedJobs {
    pub fn new(inner: Arc<dyn JobStore>) -> HookedJobs {
        HookedJobs {
            inner,
            refusals: AtomicU32::new(0),
            unreadable: None,
            job_reads: AtomicU64::new(0),
            segment_reads: AtomicU64::new(0),
            completions: AtomicU64::new(0),
            complete_delay: std::time::Duration::ZERO,
        }
    }

    /// One that refuses the first `n` completions.
    pub fn refusing(inner: Arc<dyn JobStore>, n: u32) -> HookedJobs {
        HookedJobs { refusals: AtomicU32::new(n), ..HookedJobs::new(inner) }
    }
}

#[async_trait]
impl JobStore for HookedJobs {
    async fn create_job(&self, spec: &JobSpec, first: &[KeyRange]) -> Result<Recorded> {
        self.inner.create_job(spec, first).await
    }
    async fn create_failed(&self, spec: &JobSpec, message: &str) -> Result<Recorded> {
        self.inner.create_failed(spec, message).await
    }
    async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.job_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.job(id).await
    }
    async fn jobs(&self, limit: usize, after: Option<&JobCursor>) -> Result<Vec<JobRecord>> {
        self.inner.jobs(limit, after).await
    }
    async fn running(&self) -> Result<Vec<JobRecord>> {
        self.inner.running().await
    }
    async fn note(&self, job: &str, message: Option<&str>) -> Result<()> {
        self.inner.note(job, message).await
    }
    async fn segment(&self, job: &str, range: &KeyRange) -> Result<Option<SegmentRecord>> {
        self.segment_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.segment(job, range).await
    }
    async fn segments(&self, job: &str, limit: usize) -> Result<Vec<SegmentRecord>> {
        if self.unreadable.as_deref() == Some(job) {
            return Err(Error::Permanent(format!("segments of job {job}: the table is unreadable")));
        }
        self.inner.segments(job, limit).await
    }
    async fn complete_segment(&self, c: &SegmentCompletion) -> Result<Recorded> {
        self.completions.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.complete_delay).await;
        let left = self.refusals.load(Ordering::SeqCst);
        if left > 0 && self.refusals.compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return Err(Error::Permanent("completion refused (test)".into()));
        }
        self.inner.complete_segment(c).await
    }
    async fn split_segment(&self, job: &str, range: &KeyRange, kids: &[KeyRange]) -> Result<(Recorded, Vec<KeyRange>)> {
        self.inner.split_segment(job, range, kids).await
    }
    async fn mark_moved(&self, job: &str, range: &KeyRange, marks: &[String]) -> Result<()> {
        self.inner.mark_moved(job, range, marks).await
    }
    async fn finalize(&self, job: &str) -> Result<Option<JobState>> {
        self.inner.finalize(job).await
    }
    async fn fail(&self, job: &str, message: &str) -> Result<()> {
        self.inner.fail(job, message).await
    }
    async fn control(&self, job: &str, action: JobControl) -> Result<Option<JobState>> {
        self.inner.control(job, action).await
    }
    async fn issues(&self, job: &str, after: Option<&ObjectIssue>, limit: usize) -> Result<Vec<ObjectIssue>> {
        self.inner.issues(job, after, limit).await
    }
}
