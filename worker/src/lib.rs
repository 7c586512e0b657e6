//! The worker: leases segments from the queue and works them, many at once, through the
//! crash-safe segment protocol:
//!
//! 1. lease the message; read the segment's record; if it is already done, go to 5; if its
//!    job is not running (paused, cancelled, finished), ack it and stop;
//! 2. work one page: list it and plan its copies ([`page::plan_page`]); when the queue
//!    ran dry, hand its children on now ([`JobStore::split_segment`], then enqueue them);
//!    copy, verify, (move: delete) ([`page::finish_page`]);
//! 3. record the outcome, the children and the job's counters in ONE atomic write
//!    ([`JobStore::complete_segment`]; a repeat is a no-op);
//! 4. if the job has nothing outstanding, finalize it (verified or mismatch): after a page
//!    without children, or a split one (its children may have finished before it);
//! 5. enqueue every child still pending (duplicates are harmless), then ack the message.
//!
//! A crash before 3 redoes the page (copies are idempotent); after 3, the redelivered
//! message finds the segment done and re-enqueues its children, so nothing is stranded
//! and nothing is counted twice. A crash after a split leaves the segment pending with its
//! children recorded: the redelivery re-enqueues them and redoes the page held to the
//! split's end, so the page and its children never overlap and never leave a gap. While it
//! is pending the parent still counts as outstanding, so its children finishing first can
//! never settle the job. The lease is renewed by a heartbeat while a page is worked; when
//! the queue says it was lost, the attempt stops there, as if it had crashed.
//! A message is acknowledged only once its segment is recorded done; whatever else goes
//! wrong leaves it to come back, and after the queue's receive limit to the dead letters.

pub mod compare;
pub mod copy;
pub mod demand;
pub mod http;
pub mod limit;
pub mod page;
pub mod protection;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, info_span, warn};

use shared::error::Disposition;
use shared::faults::{AFTER_COPY, AFTER_RECORD, AFTER_SPLIT, BEFORE_ACK, crash_point};
use shared::jobstore::{JobStore, Recorded};
use shared::model::{Counters, IssueKind, JobSpec, JobState, KeyRange, ObjectIssue, SegmentCompletion, now_ms};
use shared::objstore::ObjectStore;
use shared::objstore::StoreOpener;
use shared::queue::{Delivery, LeaseId, WorkQueue};
use shared::telemetry;
use shared::wire::SegmentMessage;
use shared::{Error, Result};

pub use limit::{CopyLimit, LimitStats};
pub use page::RunStats;

/// How a worker runs. Defaults suit one machine; the service reads them from config.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names the worker in segment records and logs.
    pub id: String,
    /// The most segments worked at once; fewer are taken while copies are on hand ([`demand`]).
    pub segments_in_flight: usize,
    /// Object copies in flight at once, across all its segments.
    pub copy_concurrency: usize,
    /// Lease taken on a message; renewed every third of it while working.
    pub lease: Duration,
    /// How long one pull waits for messages.
    pub poll_wait: Duration,
    /// Children per truncated page (a continuation plus splits).
    pub fanout: usize,
    /// On stop: how long to let segments in progress finish before releasing them.
    pub drain: Duration,
    /// After a transient failure, the message comes back after this delay.
    pub retry_delay: Duration,
    /// The ECS agent's URI (`ECS_AGENT_URI`) when running as an ECS task: the worker then
    /// protects its task from scale-in while it holds segments ([`protection`]).
    pub ecs_agent_uri: Option<String>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            segments_in_flight: 8,
            copy_concurrency: 64,
            lease: Duration::from_secs(60),
            poll_wait: Duration::from_secs(1),
            fanout: 5,
            drain: Duration::from_secs(30),
            retry_delay: Duration::from_secs(5),
            ecs_agent_uri: None,
        }
    }
}

/// A job's spec with its two stores opened, cached per worker.
struct OpenJob {
    spec: JobSpec,
    src: Arc<dyn ObjectStore>,
    dst: Arc<dyn ObjectStore>,
    /// When the job store last said this job is running ([`Worker::job_running`]).
    running_seen: std::sync::Mutex<Option<Instant>>,
}

/// How long a "running" read of a job's state stands in for the next reads: at most this
/// much work starts after a pause or a cancel. Only "running" is remembered. A job read as
/// paused is read again for every segment, so its segments, which a resume sends again,
/// are never left pending on a stale answer.
const RUNNING_FRESH: Duration = Duration::from_secs(1);

/// A segment worker. Cheap to share: run it with [`Worker::run`].
pub struct Worker {
    cfg: WorkerConfig,
    queue: Arc<dyn WorkQueue>,
    jobs: Arc<dyn JobStore>,
    stores: Arc<dyn StoreOpener>,
    /// Copies and deletes in flight, adapted to throttling (at most `copy_concurrency`).
    copies: CopyLimit,
    open: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<OpenJob>>>>>,
    held: std::sync::Mutex<HashMap<LeaseId, ()>>,
    /// Whether the queue ran dry for this worker: its last pull found fewer messages than it
    /// asked for, or the one outstanding has waited [`DRY_AFTER`] without an answer. Pages of
    /// a clone hand their children on when it turns true ([`SplitWhen::QueueDry`]).
    hungry: watch::Sender<bool>,
    /// The pages it holds, for how many more to ask for ([`demand`]).
    demand: Arc<demand::Demand>,
    /// What this worker did since it started.
    pub stats: RunStats,
    /// Notified (a permit kept if nobody waits) each time this worker records a job's end:
    /// whoever waits for the job in the same process (the local runner) learns it at once.
    finished: Arc<tokio::sync::Notify>,
}

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        queue: Arc<dyn WorkQueue>,
        jobs: Arc<dyn JobStore>,
        stores: Arc<dyn StoreOpener>,
    ) -> Arc<Self> {
        let copies = CopyLimit::new(cfg.copy_concurrency);
        Arc::new(Worker {
            cfg,
            queue,
            jobs,
            stores,
            copies,
            open: Mutex::new(HashMap::new()),
            held: Default::default(),
            hungry: watch::Sender::new(true),
            demand: Arc::default(),
            stats: RunStats::default(),
            finished: Arc::default(),
        })
    }

    /// Notified each time this worker records the end of a job, a permit kept if nobody
    /// waits: wait on it, then read the job.
    pub fn finished(&self) -> Arc<tokio::sync::Notify> {
        self.finished.clone()
    }

    pub fn id(&self) -> &str {
        &self.cfg.id
    }

    /// The adaptive limit on this worker's copies and deletes, shared by its segments.
    pub fn copy_limit(&self) -> &CopyLimit {
        &self.copies
    }

    /// Leases and works segments until `stop` turns true, then drains: segments in progress
    /// get `drain` to finish, the rest are released to other workers. Returns Ok after a
    /// clean drain; errors only if the queue itself keeps failing.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> Result<()> {
        let slots = Arc::new(Semaphore::new(self.cfg.segments_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        let mut failures = 0u32;
        let mut protection = self.cfg.ecs_agent_uri.as_deref().and_then(protection::TaskProtection::new);
        while !*stop.borrow() {
            while tasks.try_join_next().is_some() {}
            if let Some(p) = protection.as_mut() {
                p.sync(!tasks.is_empty()).await;
            }
            let free = slots.available_permits();
            // As many pages as its copies will need soon, not as many as fit: a page held
            // here is one no idle worker can start ([`demand`]).
            let on_hand = self.copies.queued() + self.demand.unplanned_copies();
            let asked = demand::to_ask(free, on_hand, self.demand.per_page(), self.copies.limit());
            if asked == 0 {
                tokio::select! {
                    _ = tasks.join_next(), if !tasks.is_empty() => {}
                    _ = stop.changed() => {}
                    // Work on hand runs down copy by copy, not only as pages end.
                    _ = tokio::time::sleep(Duration::from_millis(10)), if free > 0 => {}
                }
                continue;
            }
            let pull = self.queue.pull(asked, self.cfg.lease, self.cfg.poll_wait);
            tokio::pin!(pull);
            let mut waited = false;
            let pulled = loop {
                tokio::select! {
                    r = &mut pull => break Some(r),
                    _ = stop.changed() => break None,
                    // A queue with messages answers at once: a pull still waiting found it dry.
                    _ = tokio::time::sleep(DRY_AFTER), if !waited => {
                        waited = true;
                        self.hungry.send_replace(true);
                    }
                }
            };
            let Some(pulled) = pulled else { continue };
            let deliveries = match pulled {
                Ok(d) => {
                    failures = 0;
                    self.hungry.send_replace(d.len() < asked);
                    d
                }
                Err(e) => {
                    failures += 1;
                    warn!(worker = %self.cfg.id, error = %e, "pull failed");
                    if failures > 20 && !e.is_transient() {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(25)))).await;
                    continue;
                }
            };
            for d in deliveries {
                let permit = slots.clone().acquire_owned().await.expect("slots are never closed");
                self.held.lock().expect("lease set lock").insert(d.lease.clone(), ());
                let me = self.clone();
                let pending = self.demand.take();
                tasks.spawn(async move {
                    me.handle(d, pending).await;
                    drop(permit);
                });
            }
        }
        self.drain(tasks).await;
        if let Some(p) = protection.as_mut() {
            p.sync(false).await;
        }
        Ok(())
    }

    async fn drain(&self, mut tasks: JoinSet<()>) {
        info!(worker = %self.cfg.id, in_flight = tasks.len(), "draining");
        let _ = tokio::time::timeout(self.cfg.drain, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
        let left: Vec<LeaseId> = self.held.lock().expect("lease set lock").drain().map(|(l, _)| l).collect();
        for lease in left {
            if let Err(e) = self.queue.release(&lease).await {
                warn!(error = %e, "could not release a lease; it will expire");
            }
        }
    }

    /// Works one delivery to the end, settling its message by what happened:
    /// - done (or already done): ack;
    /// - a transient failure: the message comes back after `retry_delay`;
    /// - anything else (a malformed message, a completion the job store refuses, a panic):
    ///   the message is left unacknowledged and comes back after `retry_delay` too, so the
    ///   queue's receive limit moves it to the dead-letter queue, where status shows it. A
    ///   message is never acknowledged unless its segment is recorded done.
    ///
    /// The lease is renewed while the page is worked, by the same task: when the work ends,
    /// fails or panics, renewal ends with it.
    async fn handle(self: &Arc<Self>, d: Delivery, pending: demand::Pending) {
        use futures::FutureExt;
        metrics::counter!(telemetry::SEGMENTS_LEASED).increment(1);
        let work = std::panic::AssertUnwindSafe(self.process(&d, &pending)).catch_unwind();
        let result = tokio::select! {
            r = work => r.unwrap_or_else(|_| Err(Error::invalid("panicked while working the segment"))),
            lost = self.heartbeat(&d.lease) => {
                // The message may be with another worker now: this attempt stops where it
                // is, as a crash would (the protocol is safe at every point), rather than go
                // on working beside the new holder. It neither acks nor renews.
                warn!(error = %lost, deliveries = d.deliveries, "lease lost while working; abandoning this attempt");
                metrics::counter!(telemetry::LEASES_LOST).increment(1);
                RunStats::bump(&self.stats.leases_lost);
                self.held.lock().expect("lease set lock").remove(&d.lease);
                return;
            }
        };
        let done = match result {
            Ok(()) => {
                crash_point(BEFORE_ACK);
                self.queue.ack(&d.lease).await
            }
            Err(e) if e.is_transient() => {
                warn!(error = %e, deliveries = d.deliveries, "segment failed for now; it will be retried");
                self.queue.renew(&d.lease, self.cfg.retry_delay).await
            }
            Err(e) => {
                error!(error = %e, deliveries = d.deliveries, body = %d.body,
                    "segment cannot be worked; leaving it to the dead-letter queue after its receive limit");
                self.note_failure(&d, &e).await;
                self.queue.renew(&d.lease, self.cfg.retry_delay).await
            }
        };
        if let Err(e) = done {
            warn!(error = %e, "could not settle a message; it will be redelivered");
        }
        self.held.lock().expect("lease set lock").remove(&d.lease);
    }

    /// Renews `lease` every third of the lease time until the queue says it was lost
    /// (`Conflict`: it expired, and the message may be with someone else), which it
    /// returns; other failures are retried at the next beat. Runs inside the delivery's own
    /// task, so it stops exactly when the work does.
    async fn heartbeat(&self, lease: &LeaseId) -> Error {
        loop {
            tokio::time::sleep(self.cfg.lease / 3).await;
            match self.queue.renew(lease, self.cfg.lease).await {
                Ok(()) => {}
                Err(e @ Error::Conflict(_)) => return e,
                Err(e) => warn!(error = %e, "lease renewal failed; trying again at the next beat"),
            }
        }
    }

    async fn process(&self, d: &Delivery, pending: &demand::Pending) -> Result<()> {
        let msg = SegmentMessage::parse(&d.body)?;
        let Some(job) = self.open_job(&msg.job).await? else {
            warn!(job = %msg.job, "segment of an unknown job; dropped");
            return Ok(());
        };
        let span = info_span!("segment", job = %msg.job, id = %msg.range.id(), worker = %self.cfg.id);
        self.process_segment(&job, &msg, msg.copy_blind(d.deliveries), pending).instrument(span).await
    }

    /// Says why in the job's status when a segment fails for good: its message is headed
    /// for the dead letters, and status is where people look. Best effort.
    async fn note_failure(&self, d: &Delivery, e: &Error) {
        let Ok(msg) = SegmentMessage::parse(&d.body) else { return };
        let why = format!("segment after {:?} failed (delivery {}): {e}", msg.range.start_after, d.deliveries);
        if let Err(e2) = self.jobs.note(&msg.job, Some(&why)).await {
            warn!(error = %e2, "could not note the failure on the job");
        }
    }

    /// Works `msg`'s segment; `copy_blind` when its page may be copied without listing the
    /// destination first ([`SegmentMessage::copy_blind`]).
    async fn process_segment(
        &self,
        job: &OpenJob,
        msg: &SegmentMessage,
        copy_blind: bool,
        pending: &demand::Pending,
    ) -> Result<()> {
        let (id, range) = (&job.spec.id, &msg.range);
        let Some(rec) = self.jobs.segment(id, range).await? else {
            warn!("segment not recorded in the job store; dropped");
            return Ok(());
        };
        if rec.done {
            debug!("segment already done; re-enqueueing its pending children");
            return self.enqueue_pending(id, &rec.children).await;
        }
        // Only a running job gets a new page. A paused job's segments stay pending in the
        // job store, where resuming finds them and sends them again; a cancelled or
        // finished job's are done with. Either way the message is settled.
        if !self.job_running(job).await? {
            return Ok(());
        }
        // Split by an earlier attempt: its children are sent again (that attempt may have
        // died before sending them), and its page is held to the split's end.
        let held = rec.split_end().map(str::to_string);
        let mut split = held.as_ref().map(|_| rec.children.clone());
        if let Some(kids) = &split {
            debug!(end = ?held, "segment split earlier; re-enqueueing its pending children");
            self.enqueue_pending(id, kids).await?;
        }
        let started = now_ms();
        let ctx = page::PageCtx {
            spec: &job.spec,
            src: job.src.as_ref(),
            dst: job.dst.as_ref(),
            copies: &self.copies,
            fanout: self.cfg.fanout,
            stats: &self.stats,
            jobs: self.jobs.as_ref(),
            copy_blind,
        };
        let worked = match page::plan_page(&ctx, range, held.as_deref()).await {
            Ok(planned) => {
                // Its copies count as work on hand from now on, each until it is done.
                let queued = self.copies.queue(planned.copies());
                pending.planned(Some(planned.copies()));
                // Hand the children on before the copies end, rather than after (a split
                // recorded in the job store): a move always, before it deletes anything; a
                // clone once this worker finds the queue dry, as others (or this one's free
                // slots) are waiting (see `SplitWhen`).
                let when = SplitWhen::of(&job.spec);
                if split.is_some() || planned.children().is_empty() || planned.work() == 0 || when == SplitWhen::Never {
                    page::finish_page(&ctx, planned, &queued).await
                } else if when == SplitWhen::First {
                    split = Some(self.hand_on(id, range, planned.children(), msg.fresh).await?);
                    page::finish_page(&ctx, planned, &queued).await
                } else {
                    let children = planned.children().to_vec();
                    let mut hungry = self.hungry.subscribe();
                    let dry = async move {
                        let _ = hungry.wait_for(|dry| *dry).await;
                    };
                    let finish = page::finish_page(&ctx, planned, &queued);
                    tokio::pin!(finish);
                    tokio::select! {
                        biased;
                        done = &mut finish => done,
                        _ = dry => {
                            let (done, handed) = tokio::join!(finish, self.hand_on(id, range, &children, msg.fresh));
                            split = Some(handed?);
                            done
                        }
                    }
                }
            }
            Err(e) => Err(e),
        };
        let (delta, children, issues) = match worked {
            Ok(mut p) => {
                if !p.to_delete.is_empty() {
                    // A move page not split by this attempt covers its whole range: it
                    // deletes only if no other attempt split or completed the segment
                    // meanwhile, else its page may reach into a child's keys.
                    if split.is_none()
                        && self.jobs.segment(id, range).await?.is_none_or(|r| r.done || r.split_end().is_some())
                    {
                        return Err(Error::transient(
                            "another attempt split or completed this move segment; redone to its split",
                        ));
                    }
                    // Marks first: a crash after the deletes leaves them to count by.
                    let marks: Vec<String> = p.to_delete.iter().map(|(_, m)| m.clone()).collect();
                    self.jobs.mark_moved(id, range, &marks).await?;
                    let to_delete = std::mem::take(&mut p.to_delete);
                    page::delete_verified(&ctx, &to_delete, &mut p).await;
                }
                crash_point(AFTER_COPY);
                (p.delta, split.clone().unwrap_or(p.children), p.issues)
            }
            // The page cannot be listed for good: a finding naming it, and no children
            // beyond those a split handed on (nothing below it can be listed either).
            Err(e) if e.disposition() == Disposition::Finding => {
                let split_end = split.as_ref().and_then(|k| k.first()).map(|c| c.start_after.clone());
                let page = KeyRange { start_after: range.start_after.clone(), end: split_end.or(range.end.clone()) };
                let (delta, issues) = segment_failed(&page, &e);
                (delta, split.clone().unwrap_or_default(), issues)
            }
            Err(e) => return Err(e),
        };
        let completion = SegmentCompletion {
            job: id.clone(),
            range: range.clone(),
            delta,
            children: children.clone(),
            issues,
            worker: self.cfg.id.clone(),
            started_ms: started,
            finished_ms: now_ms(),
        };
        match self.complete(&completion, split.is_some()).await? {
            Recorded::Now => {
                record_metrics(&completion.delta);
                crash_point(AFTER_RECORD);
                // Ranges no attempt has worked: as fresh as the message that made them.
                // A split sent them already.
                if split.is_none() {
                    self.push_children(id, &children, msg.fresh).await?
                }
            }
            Recorded::Already => {
                let rec = self.jobs.segment(id, range).await?;
                self.enqueue_pending(id, &rec.map(|r| r.children).unwrap_or_default()).await?;
            }
        }
        // The last completion of a job is a page without children, or a split one: its
        // children may all have finished before it.
        if (children.is_empty() || split.is_some())
            && let Some(state) = self.jobs.finalize(id).await?.filter(|s| s.is_terminal())
        {
            info!(job = %id, state = state.as_str(), "job finished");
            self.finished.notify_one();
        }
        Ok(())
    }

    /// Splits the segment ([`JobStore::split_segment`]) and sends its children: they run
    /// while this page copies, and the parent still counts until its completion. Returns
    /// the children. If another attempt split it with other children (a listing a moment
    /// apart), this attempt stops with a transient error: the page comes back, held to
    /// that split.
    async fn hand_on(&self, job: &str, range: &KeyRange, children: &[KeyRange], fresh: bool) -> Result<Vec<KeyRange>> {
        let (r, recorded) = self.jobs.split_segment(job, range, children).await?;
        if recorded != children {
            return Err(Error::transient("the segment was split by another attempt meanwhile; redone to its split"));
        }
        crash_point(AFTER_SPLIT);
        if r == Recorded::Now {
            metrics::counter!(telemetry::SEGMENTS_SPLIT).increment(1);
            RunStats::bump(&self.stats.splits);
        }
        // Another attempt's split with the same children may have sent them already.
        self.push_children(job, &recorded, fresh && r == Recorded::Now).await?;
        Ok(recorded)
    }

    /// Records the completion. A completion that never split can lose to another
    /// attempt's split, which the store refuses: that is a race, not a bad page, so the
    /// message comes back (transient) and is redone held to that split.
    async fn complete(&self, c: &SegmentCompletion, split: bool) -> Result<Recorded> {
        match self.jobs.complete_segment(c).await {
            Err(Error::Invalid(why)) if !split => {
                let now = self.jobs.segment(&c.job, &c.range).await?;
                match now.as_ref().and_then(|r| r.split_end()) {
                    Some(_) => {
                        Err(Error::transient("the segment was split by another attempt meanwhile; redone to its split"))
                    }
                    None => Err(Error::Invalid(why)),
                }
            }
            r => r,
        }
    }

    async fn enqueue_pending(&self, job: &str, children: &[KeyRange]) -> Result<()> {
        let mut pending = Vec::new();
        for c in children {
            if self.jobs.segment(job, c).await?.is_none_or(|r| !r.done) {
                pending.push(c.clone());
            }
        }
        // Sent again: an attempt may have worked them already.
        self.push_children(job, &pending, false).await?;
        // None left pending: this segment's may have been the job's last completion (a
        // split parent's, say) by an attempt that died before finalizing.
        if pending.is_empty() {
            self.jobs.finalize(job).await?;
        }
        Ok(())
    }

    async fn push_children(&self, job: &str, children: &[KeyRange], fresh: bool) -> Result<()> {
        if children.is_empty() {
            return Ok(());
        }
        let bodies: Vec<String> =
            children.iter().map(|c| SegmentMessage::first(job, c.clone(), fresh).to_json()).collect();
        shared::error::retry(8, || self.queue.push(&bodies)).await
    }

    /// Whether `job` is running, as the job store said at most [`RUNNING_FRESH`] ago: one
    /// read per job and second rather than one per segment.
    async fn job_running(&self, job: &OpenJob) -> Result<bool> {
        let fresh = |at: &Option<Instant>| at.is_some_and(|t| t.elapsed() < RUNNING_FRESH);
        if fresh(&job.running_seen.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(true);
        }
        let read_at = Instant::now();
        let state = self.jobs.job(&job.spec.id).await?.map(|j| j.state);
        let running = state == Some(JobState::Running);
        *job.running_seen.lock().unwrap_or_else(|p| p.into_inner()) = running.then_some(read_at);
        if !running {
            debug!(state = ?state.map(|s| s.as_str()), "the job is not running; segment left pending");
        }
        Ok(running)
    }

    /// The job, opened once per worker: segments of one job arriving together wait for
    /// one read of it and one opening of its stores. An unknown job is not remembered.
    async fn open_job(&self, id: &str) -> Result<Option<Arc<OpenJob>>> {
        let cell = self.open.lock().await.entry(id.to_string()).or_default().clone();
        let opened = cell
            .get_or_try_init(|| async {
                let read_at = Instant::now();
                let Some(rec) = self.jobs.job(id).await.map_err(Some)? else { return Err(None) };
                let running_seen = std::sync::Mutex::new((rec.state == JobState::Running).then_some(read_at));
                let (src, dst) =
                    tokio::try_join!(self.stores.open(&rec.spec.source), self.stores.open(&rec.spec.destination))
                        .map_err(Some)?;
                Ok(Arc::new(OpenJob { spec: rec.spec, src, dst, running_seen }))
            })
            .await;
        match opened {
            Ok(job) => Ok(Some(job.clone())),
            Err(e) => {
                let mut open = self.open.lock().await;
                if open.get(id).is_some_and(|c| c.get().is_none()) {
                    open.remove(id);
                }
                e.map_or(Ok(None), Err)
            }
        }
    }
}

/// How long a pull may wait for messages before the worker counts the queue as dry: a
/// queue holding messages answers a receive at once (SQS's long poll returns as soon as it
/// has one), so a pull still waiting is a worker with room and nothing to take.
const DRY_AFTER: Duration = Duration::from_millis(100);

/// When a truncated page with work to do records its split (and sends its children),
/// rather than with its completion.
///
/// A clone's page does it once the worker finds the queue dry, before or during its copies:
/// at the end of a job the last pages are chains (a page's rest, listed only after it), and
/// a child sent with its parent's completion waits out the parent's copies while other
/// workers have nothing to do. Not always: a split costs one more job-store write.
///
/// A move's page does it always, before any delete. A move attempt deletes the sources it
/// verified and records their marks on its segment, for a redo of that segment to count
/// them. Two attempts at one segment that list at different times (a duplicate delivery,
/// the second after the first's deletes) see different pages; without a split, the first
/// one's completion could hand a child keys the second deleted and marked on the parent,
/// where the child's redo would not find the marks, and their counts would be lost (test
/// `duplicate_work.rs`). With the split recorded before the first delete, every later
/// attempt is held to the same page, and an attempt that planned a different one stops
/// before deleting: its split is refused (other children), or, unsplit, it finds the
/// segment split or done ([`Worker::process_segment`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitWhen {
    /// Before the copies.
    First,
    /// When the worker finds the queue dry, before or during the copies.
    QueueDry,
    /// With the completion (a verification copies nothing).
    Never,
}

impl SplitWhen {
    fn of(spec: &JobSpec) -> Self {
        match spec.options.mode {
            shared::model::Mode::Move => SplitWhen::First,
            shared::model::Mode::Clone => SplitWhen::QueueDry,
            shared::model::Mode::VerifyOnly => SplitWhen::Never,
        }
    }
}

/// Counts a recorded page in the process's metrics. Only pages this worker recorded (not a
/// duplicate that lost), so across workers the totals equal the jobs' counters.
fn record_metrics(delta: &Counters) {
    use telemetry::*;
    let n = |v: i64| v.max(0) as u64;
    metrics::counter!(SEGMENTS_COMPLETED).increment(1);
    metrics::counter!(OBJECTS_COPIED).increment(n(delta.copied_objects));
    metrics::counter!(BYTES_COPIED).increment(n(delta.copied_bytes));
    metrics::counter!(OBJECTS_VERIFIED).increment(n(delta.verified_objects));
    metrics::counter!(OBJECTS_SKIPPED).increment(n(delta.skipped_objects));
    metrics::counter!(OBJECTS_FAILED).increment(n(delta.failed_objects));
    metrics::counter!(OBJECTS_DELETED).increment(n(delta.deleted_objects));
}

/// The record of a range that could not be listed at all: one finding, and a tally that
/// keeps the job from claiming "verified".
fn segment_failed(range: &KeyRange, e: &Error) -> (Counters, Vec<ObjectIssue>) {
    warn!(error = %e, "segment failed for good");
    let delta = Counters { segments_failed: 1, ..Default::default() };
    let issue = ObjectIssue {
        key: range.start_after.clone(),
        kind: IssueKind::SegmentFailed,
        source: None,
        destination: None,
        detail: Some(format!("keys after {:?} up to {:?}: {e}", range.start_after, range.end)),
    };
    (delta, vec![issue])
}
