//! The coordinator: accepts clone requests, validates them against the real stores, records
//! the job idempotently and enqueues its first segments. It never lists the source: the
//! first segment is the whole key range, and workers split it as they go, so the first copy
//! starts seconds after a job is accepted whatever the bucket's size.

pub mod http;
pub mod service;
pub mod status;
pub mod supervisor;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shared::backend::StoreFactory;
use shared::error::with_retries;
use shared::jobstore::{JobStore, Recorded};
use shared::model::{JobSpec, KeyRange, Location, Mode, Scheme, resolve_path};
use shared::queue::WorkQueue;
use shared::wire::SegmentMessage;
use shared::{Error, Result};

pub use supervisor::redrive;

/// The ranges a job starts with. One: the workers' splitting fans it out within a few
/// rounds, and planning costs no listing.
pub fn plan(_spec: &JobSpec) -> Vec<KeyRange> {
    vec![KeyRange::all()]
}

/// Which local directories a request may name.
///
/// A local path means "this machine's disk". That is what a user running `bucketclone
/// clone` on their machine wants, and never what a queue message to a fleet of workers can
/// mean: each worker would read and write its own disk, and anyone who can send to the queue
/// could make the workers read or write any directory. So the service refuses local paths
/// unless its configuration names the roots they must lie under (a shared file system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalPaths {
    /// Any directory (the local runner: the user's own machine).
    Any,
    /// Only directories under one of these roots; none at all when empty (the default of
    /// the service).
    Under(Vec<PathBuf>),
}

impl LocalPaths {
    /// Refuses (`Invalid`) a local location outside the allowed roots. Both sides are
    /// compared resolved (symlinks and `..` followed where the path exists).
    pub fn check(&self, side: &str, loc: &Location) -> Result<()> {
        let roots = match (self, loc.scheme) {
            (LocalPaths::Any, _) | (_, Scheme::S3) => return Ok(()),
            (LocalPaths::Under(roots), Scheme::Local) => roots,
        };
        let path = resolve_path(Path::new(&loc.root));
        if roots.iter().any(|r| path.starts_with(resolve_path(r))) {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "{side} {loc}: this service does not accept local paths{}",
            if roots.is_empty() {
                " (each worker would use its own disk); name a bucket, or list shared roots in the `local_roots` setting".to_string()
            } else {
                format!(" outside {}", roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "))
            }
        )))
    }
}

/// What the coordinator needs to accept jobs.
#[derive(Clone)]
pub struct Intake {
    pub jobs: Arc<dyn JobStore>,
    pub segments: Arc<dyn WorkQueue>,
    pub stores: Arc<StoreFactory>,
    /// Which local directories requests may name.
    pub local: LocalPaths,
}

impl Intake {
    /// Validates `spec` (offline checks, then both stores exist and can be listed; a missing
    /// local destination directory is created), records the job and enqueues its first
    /// segments. Idempotent on the job id: a second call for an existing job re-enqueues its
    /// first segments if they are still pending and changes nothing else.
    ///
    /// Errors: `Invalid` for anything the requester must fix (the message says what);
    /// other variants for infrastructure trouble.
    pub async fn accept(&self, spec: &JobSpec) -> Result<Recorded> {
        spec.validate()?;
        self.local.check("source", &spec.source)?;
        self.local.check("destination", &spec.destination)?;
        if self.jobs.job(&spec.id).await?.is_none() {
            self.check_stores(spec).await?;
        }
        let first = plan(spec);
        let recorded = self.jobs.create_job(spec, &first).await?;
        let mut pending = Vec::new();
        for r in &first {
            if self.jobs.segment(&spec.id, r).await?.is_none_or(|s| !s.done) {
                pending.push(SegmentMessage::new(&spec.id, r.clone()).to_json());
            }
        }
        shared::error::retry(8, || self.segments.push(&pending)).await?;
        tracing::info!(job = %spec.id, new = (recorded == Recorded::Now), source = %spec.source, destination = %spec.destination, "job accepted");
        Ok(recorded)
    }

    async fn check_stores(&self, spec: &JobSpec) -> Result<()> {
        let src = self.stores.open(&spec.source).await.map_err(|e| input_error("source", &spec.source, e))?;
        with_retries(|| src.check()).await.map_err(|e| input_error("source", &spec.source, e))?;
        // Only a job that writes may create its destination directory; verify never creates.
        if spec.destination.scheme == Scheme::Local && spec.options.mode != Mode::VerifyOnly {
            std::fs::create_dir_all(&spec.destination.root)
                .map_err(|e| Error::invalid(format!("destination {}: cannot create it: {e}", spec.destination)))?;
        }
        let dst =
            self.stores.open(&spec.destination).await.map_err(|e| input_error("destination", &spec.destination, e))?;
        with_retries(|| dst.check()).await.map_err(|e| input_error("destination", &spec.destination, e))
    }
}

/// A store problem the requester must fix becomes `Invalid` with a message naming the side;
/// passing faults stay as they are.
fn input_error(side: &str, loc: &shared::model::Location, e: Error) -> Error {
    match e {
        Error::NotFound(m) => Error::Invalid(format!("{side} {loc} does not exist ({m})")),
        Error::AccessDenied(m) => Error::Invalid(format!("{side} {loc}: access denied ({m})")),
        Error::Invalid(m) | Error::Permanent(m) => Error::Invalid(format!("{side} {loc}: {m}")),
        other => other,
    }
}
