//! The supervisor: the one piece of code that watches jobs, run by the coordinator service
//! and by the local runner alike.
//!
//! Each [`Supervisor::tick`] looks at every running job (found by state, however many and
//! however old: [`JobStore::running`]), or at the one job it was made for
//! ([`Supervisor::for_job`]: a local run, which must touch nothing but its own job), and,
//! one job's trouble never stopping the others:
//! - finalizes a job whose segments are all done (`verified` or `mismatch`);
//! - re-drives a job that stopped making progress: re-enqueues its pending segments (a
//!   process died between recording a segment and enqueueing its children, or a message was
//!   lost). Duplicates are harmless: a redelivered segment is worked idempotently. A job is
//!   re-driven when nothing of it finished for `redrive_after`, or sooner when the whole
//!   segment queue has been empty for `idle_ticks` ticks;
//! - counts each job's segments in the dead-letter queue, and never re-drives those (they
//!   failed their receive limit; re-driving would only send them round again);
//! - flags a stuck job: a note in its status (`message`) saying for how long nothing
//!   finished and how many of its segments are dead-lettered, cleared when it moves again.
//!
//! Invariant: the supervisor never changes a job's counters and never records a segment; it
//! only finalizes (which the store allows only at 0 outstanding), enqueues, and notes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use shared::Result;
use shared::model::{JobRecord, JobState, KeyRange};
use shared::wire::SegmentMessage;

use crate::Intake;

/// How often and how patiently the supervisor acts.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// A job with no segment finished for this long is re-driven. Longer than a page takes.
    pub redrive_after: Duration,
    /// Ticks in a row with an empty segment queue (nothing visible, nothing in flight) after
    /// which every stalled running job is re-driven at once.
    pub idle_ticks: u32,
    /// A job with no segment finished for this long is flagged stuck in its status.
    pub stuck_after: Duration,
    /// Dead-letter bodies read per tick to attribute them to jobs.
    pub dead_letter_sample: usize,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            redrive_after: Duration::from_secs(180),
            idle_ticks: 2,
            stuck_after: Duration::from_secs(600),
            dead_letter_sample: 1000,
        }
    }
}

/// What the supervisor knows of one running job after a tick.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobHealth {
    /// Seconds since a segment of the job last finished (as seen by this supervisor).
    pub stalled_secs: u64,
    /// The job's segments sitting in the dead-letter queue.
    pub dead_segments: usize,
    /// Times it was re-driven since it last made progress.
    pub redrives: u32,
    /// True when its status carries a "stuck" note from us.
    pub flagged: bool,
}

/// The outcome of one tick: for status, metrics and the local runner.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Running jobs by id.
    pub jobs: HashMap<String, JobHealth>,
    /// Messages in the segment queue's dead-letter queue (all jobs).
    pub dead_letters: u64,
    /// Jobs finalized by this tick.
    pub finalized: Vec<String>,
}

struct Seen {
    progress: (i64, i64),
    since: Instant,
    last_redrive: Option<Instant>,
    health: JobHealth,
}

/// Least time between two re-drives of one job on an idle queue.
const IDLE_REDRIVE_GAP: Duration = Duration::from_secs(2);

/// Watches jobs; see the module doc. Cheap to share; `tick` may be called from one task.
pub struct Supervisor {
    intake: Intake,
    cfg: SupervisorConfig,
    seen: Mutex<HashMap<String, Seen>>,
    idle: Mutex<u32>,
    /// The one job this supervisor watches; `None`: every running job.
    only: Option<String>,
}

const STUCK: &str = "stuck: ";

impl Supervisor {
    pub fn new(intake: Intake, cfg: SupervisorConfig) -> Self {
        Supervisor { intake, cfg, seen: Mutex::default(), idle: Mutex::new(0), only: None }
    }

    /// A supervisor of job `id` alone, whose segment queue (`intake.segments`) holds only
    /// that job's messages: the local runner's. Other running jobs in the same store are
    /// neither finalized, re-driven nor noted by it.
    pub fn for_job(intake: Intake, cfg: SupervisorConfig, id: &str) -> Self {
        Supervisor { only: Some(id.to_string()), ..Supervisor::new(intake, cfg) }
    }

    /// One pass over every running job. Errors on one job are logged and the others go on;
    /// only failing to read the running jobs at all is an error.
    pub async fn tick(&self) -> Result<Health> {
        let depth = self.intake.segments.depth().await?;
        let idle = {
            let mut n = self.idle.lock().expect("idle lock");
            *n = if depth.visible + depth.in_flight == 0 { *n + 1 } else { 0 };
            *n >= self.cfg.idle_ticks
        };
        let dead = if depth.dead_letters > 0 { self.dead_by_job().await } else { HashMap::new() };
        let running = match &self.only {
            None => self.intake.jobs.running().await?,
            Some(id) => self.intake.jobs.job(id).await?.into_iter().filter(|j| j.state == JobState::Running).collect(),
        };
        let mut health = Health { dead_letters: depth.dead_letters, ..Default::default() };
        for job in &running {
            let id = job.spec.id.clone();
            let no_dead = HashSet::new();
            let dead_ranges = dead.get(&id).unwrap_or(&no_dead);
            match self.watch(job, dead_ranges, idle).await {
                Ok(Some(h)) => {
                    health.jobs.insert(id, h);
                }
                Ok(None) => health.finalized.push(id),
                Err(e) => warn!(job = %id, error = %e, "supervising a job failed; the others go on"),
            }
        }
        let live: HashSet<&str> = running.iter().map(|j| j.spec.id.as_str()).collect();
        self.seen.lock().expect("seen lock").retain(|id, _| live.contains(id.as_str()));
        Ok(health)
    }

    /// Looks after one running job. `None` when it was finalized.
    async fn watch(&self, job: &JobRecord, dead: &HashSet<KeyRange>, idle: bool) -> Result<Option<JobHealth>> {
        let id = &job.spec.id;
        let c = &job.counters;
        if c.outstanding <= 0
            && c.segments_done > 0
            && let Some(state) = self.intake.jobs.finalize(id).await?.filter(|s| s.is_terminal())
        {
            info!(job = %id, state = state.as_str(), "job finished");
            return Ok(None);
        }
        let (stalled, last_redrive, mut health) = self.progress(job, dead.len());
        let quiet = last_redrive.map_or(stalled, |t| t.elapsed());
        if quiet >= self.cfg.redrive_after || (idle && quiet >= IDLE_REDRIVE_GAP.min(self.cfg.redrive_after)) {
            let pushed = redrive_except(&self.intake, id, dead).await?;
            health.redrives += 1;
            if pushed > 0 {
                warn!(job = %id, segments = pushed, stalled_secs = stalled.as_secs(), "re-drove pending segments");
            }
            self.update(id, |s| {
                s.last_redrive = Some(Instant::now());
                s.health.redrives = health.redrives;
            });
        }
        let stuck = stalled >= self.cfg.stuck_after || (!dead.is_empty() && dead.len() as i64 >= c.outstanding);
        let noted = job.message.as_deref().is_some_and(|m| m.starts_with(STUCK));
        if stuck {
            let note = stuck_note(job, stalled, dead.len());
            if job.message.as_deref() != Some(note.as_str()) {
                self.intake.jobs.note(id, Some(&note)).await?;
            }
            health.flagged = true;
        } else if noted {
            self.intake.jobs.note(id, None).await?;
        }
        self.update(id, |s| s.health.flagged = health.flagged);
        Ok(Some(health))
    }

    /// How long the job has gone without a segment finishing, when it was last re-driven,
    /// and its health so far.
    fn progress(&self, job: &JobRecord, dead: usize) -> (Duration, Option<Instant>, JobHealth) {
        let now = (job.counters.segments_done, job.counters.outstanding);
        let fresh = || Seen { progress: now, since: Instant::now(), last_redrive: None, health: JobHealth::default() };
        let mut seen = self.seen.lock().expect("seen lock");
        let s = seen.entry(job.spec.id.clone()).or_insert_with(fresh);
        if s.progress != now {
            *s = fresh();
        }
        let stalled = s.since.elapsed();
        s.health.stalled_secs = stalled.as_secs();
        s.health.dead_segments = dead;
        (stalled, s.last_redrive, s.health.clone())
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Seen)) {
        if let Some(s) = self.seen.lock().expect("seen lock").get_mut(id) {
            f(s);
        }
    }

    /// The segments in the dead-letter queue, by job (from a sample of its bodies).
    async fn dead_by_job(&self) -> HashMap<String, HashSet<KeyRange>> {
        dead_segments_by_job(self.intake.segments.as_ref(), self.cfg.dead_letter_sample).await
    }
}

/// The segments sitting in `queue`'s dead-letter queue, by job, from a sample of up to
/// `sample` bodies (a peek: they stay there). A failure to read is logged and gives none.
pub async fn dead_segments_by_job(
    queue: &dyn shared::queue::WorkQueue,
    sample: usize,
) -> HashMap<String, HashSet<KeyRange>> {
    let mut out: HashMap<String, HashSet<KeyRange>> = HashMap::new();
    match queue.dead_letters(sample).await {
        Ok(bodies) => {
            for b in bodies {
                if let Ok(m) = SegmentMessage::parse(&b) {
                    out.entry(m.job).or_default().insert(m.range);
                }
            }
        }
        Err(e) => warn!(error = %e, "reading the dead-letter queue failed"),
    }
    out
}

fn stuck_note(job: &JobRecord, stalled: Duration, dead: usize) -> String {
    // Keep what a worker said about the failure (its last error), dropping an older note.
    let last_error = match job.message.as_deref() {
        Some(m) if m.starts_with(STUCK) => m.split_once(LAST_ERROR).map(|(_, e)| e.to_string()),
        Some(m) => Some(m.to_string()),
        None => None,
    };
    let mut s =
        format!("{STUCK}no segment finished for {}s; {} outstanding", stalled.as_secs(), job.counters.outstanding);
    if dead > 0 {
        s += &format!(", {dead} of them in the dead-letter queue (README: Dead letters)");
    }
    if let Some(e) = last_error {
        s += LAST_ERROR;
        s += &e;
    }
    s
}

const LAST_ERROR: &str = "; last error: ";

/// Re-enqueues every pending segment of a running job. Safe at any time (a duplicate
/// message finds its segment done, or works the same page twice idempotently). Finalizes the
/// job when nothing is pending. Returns how many were pushed.
pub async fn redrive(intake: &Intake, job: &str) -> Result<usize> {
    redrive_except(intake, job, &HashSet::new()).await
}

async fn redrive_except(intake: &Intake, job: &str, skip: &HashSet<KeyRange>) -> Result<usize> {
    let segments = intake.jobs.segments(job, usize::MAX).await?;
    let pending: Vec<String> = segments
        .into_iter()
        .filter(|s| !s.done && !skip.contains(&s.range))
        .map(|s| SegmentMessage::new(job, s.range).to_json())
        .collect();
    if pending.is_empty() {
        intake.jobs.finalize(job).await?;
    } else {
        shared::error::retry(8, || intake.segments.push(&pending)).await?;
    }
    Ok(pending.len())
}
