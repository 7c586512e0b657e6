//! The coordinator: accepts clone requests, validates them against the real stores, records
//! the job idempotently and enqueues its first segments. It never lists the source: the
//! first segment is the whole key range, and workers split it as they go, so the first copy
//! starts seconds after a job is accepted whatever the bucket's size.

pub mod http;
pub mod service;
pub mod status;

use std::sync::Arc;

use shared::backend::StoreFactory;
use shared::jobstore::{JobStore, Recorded};
use shared::model::{JobSpec, KeyRange, Scheme};
use shared::queue::WorkQueue;
use shared::wire::SegmentMessage;
use shared::{Error, Result};

/// The ranges a job starts with. One: the workers' splitting fans it out within a few
/// rounds, and planning costs no listing.
pub fn plan(_spec: &JobSpec) -> Vec<KeyRange> {
    vec![KeyRange::all()]
}

/// What the coordinator needs to accept jobs.
#[derive(Clone)]
pub struct Intake {
    pub jobs: Arc<dyn JobStore>,
    pub segments: Arc<dyn WorkQueue>,
    pub stores: Arc<StoreFactory>,
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
        src.check().await.map_err(|e| input_error("source", &spec.source, e))?;
        if spec.destination.scheme == Scheme::Local {
            std::fs::create_dir_all(&spec.destination.root)
                .map_err(|e| Error::invalid(format!("destination {}: cannot create it: {e}", spec.destination)))?;
        }
        let dst =
            self.stores.open(&spec.destination).await.map_err(|e| input_error("destination", &spec.destination, e))?;
        dst.check().await.map_err(|e| input_error("destination", &spec.destination, e))
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

/// Re-enqueues every pending segment of a running job. Safe at any time (a duplicate
/// message finds its segment done, or works the same page twice idempotently); used when
/// the queue has run dry but the job still counts outstanding segments, i.e. a process
/// died between recording a segment and enqueueing it. Returns how many were pushed.
pub async fn redrive(intake: &Intake, job: &str) -> Result<usize> {
    let pending: Vec<String> = intake
        .jobs
        .segments(job, usize::MAX)
        .await?
        .into_iter()
        .filter(|s| !s.done)
        .map(|s| SegmentMessage::new(job, s.range).to_json())
        .collect();
    if pending.is_empty() {
        intake.jobs.finalize(job).await?;
    } else {
        tracing::warn!(job, segments = pending.len(), "re-driving pending segments that no message held");
        intake.segments.push(&pending).await?;
    }
    Ok(pending.len())
}
