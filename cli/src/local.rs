//! Running a job on one machine: the coordinator and N workers in this process, on the
//! embedded backends (a SQLite state file holding the segment queue and the job store).
//! Killed and rerun with the same arguments, a run resumes its job from the state file:
//! finished ranges are neither listed nor copied again.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

use coordinator::supervisor::{Supervisor, SupervisorConfig};
use coordinator::{Intake, Policy};
use shared::backend::StoreFactory;
use shared::backend::embedded::local_dir::LocalDirStore;
use shared::backend::embedded::sqlite_jobstore::SqliteJobStore;
use shared::backend::embedded::sqlite_queue::SqliteQueue;
use shared::jobstore::JobStore;
use shared::model::{JobOptions, JobRecord, JobSpec, Location};
use shared::queue::WorkQueue;
use shared::{Error, Result};
use worker::{RunStats, Worker, WorkerConfig};

use crate::progress::Progress;

/// How to run a local job.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub state: PathBuf,
    pub workers: usize,
    pub concurrency: usize,
    pub show_progress: bool,
}

/// The finished job and what this process did.
pub struct Outcome {
    pub job: JobRecord,
    pub elapsed: f64,
    pub stats: RunStats,
    pub jobs: Arc<dyn JobStore>,
}

/// The default state file: `$XDG_STATE_HOME/bucketclone/state.sqlite`, else
/// `~/.local/state/bucketclone/state.sqlite`, else `./.bucketclone/state.sqlite`.
pub fn default_state() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    match base {
        Some(b) => b.join("bucketclone").join("state.sqlite"),
        None => PathBuf::from(".bucketclone/state.sqlite"),
    }
}

/// Runs (or resumes) the job `source -> destination` with `options` to its end.
pub async fn run(source: Location, destination: Location, options: JobOptions, opts: &LocalOptions) -> Result<Outcome> {
    run_with(Arc::new(StoreFactory::new()), source, destination, options, opts).await
}

/// [`run`] with the given store factory (tests register wrapped stores in it).
pub async fn run_with(
    stores: Arc<StoreFactory>,
    source: Location,
    destination: Location,
    options: JobOptions,
    opts: &LocalOptions,
) -> Result<Outcome> {
    let started = Instant::now();
    // Open the S3 buckets (the AWS configuration, each bucket's region) while the state file
    // is opened: both take milliseconds, and the job's acceptance opens the buckets again,
    // from the factory's cache. A failure here is only dropped: acceptance opens again and
    // reports it. Local directories are left to acceptance (a destination is created only
    // once the source passed).
    for loc in [&source, &destination].into_iter().filter(|l| l.scheme == shared::model::Scheme::S3) {
        let (stores, loc) = (stores.clone(), loc.clone());
        tokio::spawn(async move {
            use shared::objstore::StoreOpener;
            let _ = stores.open(&loc).await;
        });
    }
    let _lock = lock_state(&opts.state).await?;
    let jobs: Arc<dyn JobStore> = Arc::new(SqliteJobStore::open(&opts.state)?);
    let mut spec = JobSpec { id: String::new(), source, destination, options };
    spec.id = job_id(jobs.as_ref(), &spec).await?;
    spec.validate()?;
    let queue = Arc::new(SqliteQueue::open(&opts.state, &queue_name(&spec.id))?);
    // We hold the state's lock: any lease in the file belongs to a process that died, and
    // segments dead-lettered by an earlier run get another chance (the cause may be fixed).
    queue.release_all().await?;
    let requeued = queue.requeue_dead_letters().await?;
    if requeued > 0 {
        tracing::warn!(segments = requeued, "retrying segments an earlier run gave up on");
    }
    note_other_unfinished(jobs.as_ref(), &spec.id).await;
    let writes = spec.options.mode != shared::model::Mode::VerifyOnly;
    if writes
        && spec.destination.scheme == shared::model::Scheme::Local
        && interrupted_into(jobs.as_ref(), &spec).await?
    {
        // This job or another of the state file, killed while writing this directory, left
        // the temporary files of its interrupted copies behind.
        let n = LocalDirStore::new(&spec.destination.root)?.remove_temp_files()?;
        tracing::info!(removed = n, "removed temporary files of interrupted copies");
    }
    let intake = Intake { jobs: jobs.clone(), segments: queue.clone(), stores: stores.clone(), policy: Policy::open() };
    if jobs.job(&spec.id).await?.is_none() {
        intake.accept(&spec).await?;
    } else if queue.depth().await?.visible == 0 {
        // Resuming a job whose queue is empty (an earlier version kept it in a shared queue,
        // or its messages were lost): send every pending segment from the job store now.
        coordinator::supervisor::redrive(&intake, &spec.id).await?;
    }
    // Else the job's own queue, its leases just released, holds its outstanding work, one
    // message a segment: sending the first ranges again would only have them listed twice
    // (the supervisor still re-drives what a lost message left pending).

    let (stop_tx, stop_rx) = watch::channel(false);
    let stats = Arc::new(RunStats::default());
    let mut workers = Vec::new();
    let mut handles = Vec::new();
    for n in 0..opts.workers.max(1) {
        let cfg = WorkerConfig {
            id: format!("local-{n}"),
            copy_concurrency: opts.concurrency.max(1),
            // Four pages a worker, sixteen in the process, keep its copies fed (a page
            // queues up to a thousand) while each holds its listings: at eight a worker,
            // 300,000 objects peaked 7 MiB higher for the same time.
            segments_in_flight: 4,
            lease: Duration::from_secs(30),
            poll_wait: Duration::from_millis(200),
            retry_delay: Duration::from_secs(2),
            ..WorkerConfig::default()
        };
        let w = Worker::new(cfg, queue.clone(), jobs.clone(), stores.clone());
        workers.push(w.clone());
        handles.push(tokio::spawn(w.run(stop_rx.clone())));
    }
    let finished: Vec<_> = workers.iter().map(|w| w.finished()).collect();
    let job = watch_until_done(&intake, &spec.id, opts.show_progress, &finished).await;
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = h.await;
    }
    for w in &workers {
        add_stats(&stats, &w.stats);
    }
    let job = job?;
    Ok(Outcome {
        job,
        elapsed: started.elapsed().as_secs_f64(),
        stats: Arc::try_unwrap(stats).unwrap_or_default(),
        jobs,
    })
}

/// Cancels job `id` of the local state file `state`: a run of its command then starts a new
/// job instead of resuming it, and other runs stop warning of it. Its segments left in the
/// file are dropped. Refused for an unknown or finished job, and for a missing file (which
/// would be created empty).
pub async fn cancel(state: &Path, id: &str) -> Result<shared::model::JobState> {
    if !state.exists() {
        return Err(Error::invalid(format!("no state file {}", state.display())));
    }
    let jobs: Arc<dyn JobStore> = Arc::new(SqliteJobStore::open(state)?);
    let queue = Arc::new(SqliteQueue::open(state, &queue_name(id))?);
    let intake =
        Intake { jobs, segments: queue.clone(), stores: Arc::new(StoreFactory::new()), policy: Policy::open() };
    let now = coordinator::control(&intake, id, shared::model::JobControl::Cancel).await.map_err(|e| match e {
        Error::NotFound(_) => Error::invalid(format!("no job {id} in {}", state.display())),
        Error::Conflict(m) => Error::invalid(m),
        other => other,
    })?;
    let dropped = queue.purge().await?;
    tracing::info!(job = %id, segments = dropped, "cancelled; its queued segments dropped");
    Ok(now)
}

/// Whether a job of the state file that may have been killed mid-copy (any job not
/// verified: this one resumed, or another one left unfinished or cancelled) wrote into
/// `spec`'s destination directory. Walking a directory for temporary files costs a full
/// walk, so a fresh destination is not walked.
async fn interrupted_into(jobs: &dyn JobStore, spec: &JobSpec) -> Result<bool> {
    let root = &spec.destination.root;
    Ok(jobs.jobs(10_000, None).await?.iter().any(|j| {
        j.spec.destination.scheme == spec.destination.scheme
            && &j.spec.destination.root == root
            && j.state != shared::model::JobState::Verified
    }))
}

/// The queue of job `id`'s segments in the state file. One per job: a run's workers and
/// supervisor see only their own job's messages, so a run never works, re-drives or
/// finalizes another unfinished job of the same state file (killed `clone A B`, then
/// `clone A C`: B is left as it was until `clone A B` runs again).
///
/// Versions before this kept every job's segments in one queue named `segments`. A job
/// they left unfinished still resumes: its own queue is empty, so the run re-drives every
/// pending segment from the job store at once.
fn queue_name(id: &str) -> String {
    format!("segments/{id}")
}

/// Warns, in one line, of the other unfinished jobs in the state file: this run leaves them
/// alone, and their destinations may be half written.
async fn note_other_unfinished(jobs: &dyn JobStore, id: &str) {
    let Ok(all) = jobs.jobs(10_000, None).await else { return };
    let others: Vec<String> = all
        .iter()
        .filter(|j| j.spec.id != id && !j.state.is_terminal())
        .map(|j| format!("{} ({} -> {})", j.spec.id, j.spec.source, j.spec.destination))
        .collect();
    if !others.is_empty() {
        tracing::warn!(
            jobs = others.len(),
            first = %others[..others.len().min(3)].join(", "),
            "other unfinished jobs in this state file are left as they are; run their commands again to finish them, or drop one with `bucketclone cancel JOB --state FILE`"
        );
    }
}

/// How the local runner supervises its job: the same supervisor as the service, tuned for
/// one process whose queue it fully sees.
fn supervisor_config() -> SupervisorConfig {
    SupervisorConfig {
        redrive_after: Duration::from_secs(120),
        idle_ticks: 8,
        stuck_after: Duration::from_secs(3600),
        ..Default::default()
    }
}

/// How often the local runner's supervisor ticks, and how often it looks for the job's end.
const SUPERVISOR_PERIOD: Duration = Duration::from_millis(250);
const SETTLED_POLL: Duration = Duration::from_millis(20);

/// Polls the job until it is terminal, showing progress, with the supervisor re-driving
/// what nothing holds. Ends with an error when every outstanding segment of the job is
/// dead-lettered: nothing in this process can make progress then, and waiting would hang.
async fn watch_until_done(
    intake: &Intake,
    id: &str,
    show: bool,
    finished: &[Arc<tokio::sync::Notify>],
) -> Result<JobRecord> {
    let mut progress = Progress::new(show);
    let supervisor = Supervisor::for_job(intake.clone(), supervisor_config(), id);
    let read = || async { intake.jobs.job(id).await?.ok_or_else(|| Error::NotFound(format!("job {id} vanished"))) };
    loop {
        // The worker settles the job as it records the last segment and says so: look then,
        // or every 20 ms (one read of the local store), so a short job ends when it is done,
        // not up to a supervisor period later; the supervisor itself ticks every 250 ms.
        let mut job = read().await?;
        for _ in 0..SUPERVISOR_PERIOD.as_millis() / SETTLED_POLL.as_millis() {
            if job.state.is_terminal() {
                break;
            }
            let settled = async {
                if finished.is_empty() {
                    std::future::pending::<()>().await; // select_all refuses an empty set
                }
                futures::future::select_all(finished.iter().map(|n| Box::pin(n.notified()))).await;
            };
            tokio::select! {
                _ = tokio::time::sleep(SETTLED_POLL) => {}
                _ = settled => {}
            }
            job = read().await?;
        }
        if job.state.is_terminal() {
            progress.update(&job);
            progress.finish();
            return Ok(job);
        }
        let health = supervisor.tick().await?;
        let job = read().await?;
        progress.update(&job);
        if job.state.is_terminal() {
            progress.finish();
            return Ok(job);
        }
        if let Some(h) = health.jobs.get(id).filter(|h| h.dead_segments > 0 && h.flagged) {
            progress.finish();
            return Err(Error::Permanent(format!(
                "job {id} is stuck: {} segment(s) failed on every attempt ({}). \
                 Fix the cause and run the same command again to retry them.",
                h.dead_segments,
                job.message.as_deref().unwrap_or("see the log above")
            )));
        }
    }
}

fn add_stats(total: &RunStats, s: &RunStats) {
    use std::sync::atomic::Ordering::Relaxed;
    total.list_calls.fetch_add(s.list_calls.load(Relaxed), Relaxed);
    total.head_calls.fetch_add(s.head_calls.load(Relaxed), Relaxed);
    total.copies.fetch_add(s.copies.load(Relaxed), Relaxed);
    total.pages.fetch_add(s.pages.load(Relaxed), Relaxed);
    total.splits.fetch_add(s.splits.load(Relaxed), Relaxed);
}

/// The id for this run: the unfinished job with exactly this spec if there is one (resume),
/// else a new one.
///
/// "Exactly" is the whole spec: both locations with their connections (profile, region,
/// endpoint, path style, requester pays) and every option, compared as values. A rerun with
/// another profile, endpoint or option is another job, never the old one run with the old
/// settings; a rerun after an upgrade that added an option (stored specs read it as its
/// default) still resumes, whatever id the earlier version gave the job. The new id's hash
/// only makes it readable and distinct.
async fn job_id(jobs: &dyn JobStore, spec: &JobSpec) -> Result<String> {
    use sha2::{Digest, Sha256};
    for j in jobs.jobs(10_000, None).await? {
        if !j.state.is_terminal() && same_job(&j.spec, spec) {
            return Ok(j.spec.id);
        }
    }
    let key = serde_json::to_string(&(&spec.source, &spec.destination, &spec.options))?;
    let base = format!("local-{}", &hex::encode(Sha256::digest(key.as_bytes()))[..12]);
    Ok(format!("{base}-{}", shared::model::now_ms()))
}

/// The same job: everything but the id.
fn same_job(a: &JobSpec, b: &JobSpec) -> bool {
    a.source == b.source && a.destination == b.destination && a.options == b.options
}

/// How long a run waits for the state's lock before saying another run holds it. A run
/// killed with SIGKILL can still hold its lock for a moment after its parent saw it exit
/// (the kernel releases it with the process's last file reference): a rerun started at
/// once must not be refused for that.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Takes an exclusive lock next to the state file for the life of the run.
async fn lock_state(state: &Path) -> Result<File> {
    if let Some(dir) = state.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::invalid(format!("state directory {}: {e}", dir.display())))?;
    }
    let path = state.with_extension("lock");
    let f = File::create(&path).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    let started = Instant::now();
    while f.try_lock().is_err() {
        if started.elapsed() > LOCK_WAIT {
            return Err(Error::invalid(format!(
                "another bucketclone is running with state {}; wait for it or pass --state",
                state.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::model::{Connection, KeyRange};

    fn spec(profile: Option<&str>, size_only: bool) -> JobSpec {
        let conn = Connection { profile: profile.map(str::to_string), ..Default::default() };
        let source = Location::parse("s3://src/p/").unwrap().with_conn(conn).unwrap();
        let options = JobOptions { size_only, ..Default::default() };
        JobSpec { id: String::new(), source, destination: Location::parse("s3://dst/").unwrap(), options }
    }

    #[tokio::test]
    async fn a_rerun_resumes_only_the_unfinished_job_with_the_same_spec() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = SqliteJobStore::open(&dir.path().join("state.sqlite")).unwrap();
        // A job an earlier version created, under an id this version would not make.
        let mut old = spec(Some("a"), false);
        old.id = "local-0123456789ab-1".into();
        jobs.create_job(&old, &[KeyRange::all()]).await.unwrap();

        assert_eq!(job_id(&jobs, &spec(Some("a"), false)).await.unwrap(), old.id, "same spec: resumed");
        for other in [spec(Some("b"), false), spec(None, false), spec(Some("a"), true)] {
            let id = job_id(&jobs, &other).await.unwrap();
            assert_ne!(id, old.id, "another profile or option is another job: {other:?}");
            assert!(id.starts_with("local-"), "{id}");
        }
        // A job this version made: the profile is part of what it is.
        let mut made = spec(Some("c"), false);
        made.id = job_id(&jobs, &made).await.unwrap();
        jobs.create_job(&made, &[KeyRange::all()]).await.unwrap();
        assert_eq!(job_id(&jobs, &spec(Some("c"), false)).await.unwrap(), made.id);
        assert_ne!(job_id(&jobs, &spec(Some("d"), false)).await.unwrap(), made.id, "profile d is not c's job");
        // A finished job is never resumed.
        jobs.fail(&old.id, "stopped").await.unwrap();
        assert_ne!(job_id(&jobs, &spec(Some("a"), false)).await.unwrap(), old.id);
    }

    /// A job left unfinished by a version that kept every job's segments in one queue named
    /// `segments` resumes and verifies: nothing of it is stranded in the old queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_an_earlier_version_left_in_the_shared_queue_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state.sqlite"));
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..300 {
            std::fs::write(src.join(format!("k{i:03}")), format!("{i}")).unwrap();
        }
        let spec = JobSpec {
            id: "local-0123456789ab-1".into(),
            source: Location::local(&src).unwrap(),
            destination: Location::local(&dst).unwrap(),
            options: JobOptions { page_size: 7, ..Default::default() },
        };
        let stores = Arc::new(StoreFactory::new());
        let jobs: Arc<dyn JobStore> = Arc::new(SqliteJobStore::open(&state).unwrap());
        let legacy = Arc::new(SqliteQueue::open(&state, "segments").unwrap());
        let intake = Intake { jobs, segments: legacy.clone(), stores: stores.clone(), policy: Policy::open() };
        intake.accept(&spec).await.unwrap();
        // The earlier version's worker did part of the job, leaving children in the old queue.
        let cfg = WorkerConfig { id: "old".into(), copy_concurrency: 1, ..WorkerConfig::default() };
        let w = Worker::new(cfg, legacy.clone(), intake.jobs.clone(), stores.clone());
        let (stop, stopped) = watch::channel(false);
        let worker = tokio::spawn(w.run(stopped));
        while intake.jobs.job(&spec.id).await.unwrap().unwrap().counters.segments_done < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).unwrap();
        worker.await.unwrap().unwrap();
        let job = intake.jobs.job(&spec.id).await.unwrap().unwrap();
        assert!(job.counters.outstanding > 0, "stopped before its end: {job:?}");
        assert!(legacy.depth().await.unwrap().visible > 0);

        let opts = LocalOptions { state, workers: 1, concurrency: 2, show_progress: false };
        let out = run_with(stores, spec.source.clone(), spec.destination.clone(), spec.options.clone(), &opts);
        let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("no hang").unwrap();
        assert_eq!(out.job.spec.id, spec.id, "resumed, not a new job");
        assert_eq!(out.job.state, shared::model::JobState::Verified, "{:?}", out.job);
        assert_eq!(out.job.counters.verified_objects, 300);
        assert_eq!(out.job.counters.source_objects, 300, "each object counted once");
    }
}
