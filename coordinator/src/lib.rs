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

use shared::error::with_retries;
use shared::jobstore::{JobStore, Recorded};
use shared::model::{JobControl, JobSpec, JobState, KeyRange, Location, Mode, Scheme, resolve_path};
use shared::objstore::{ListRequest, StoreOpener};
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

/// Which connections requests may name (see [`shared::model::Connection`]).
///
/// A request naming an endpoint makes the workers send requests signed with their own
/// credentials wherever it says, and one naming a profile makes them use that profile's
/// credentials. So a service accepts only the endpoints and profiles its configuration
/// lists (`allowed_endpoints`, `allowed_profiles`). Regions, path style and requester pays
/// grant nothing and are always accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connections {
    /// Any (the local runner: the user's own machine and credentials).
    Any,
    /// Only these profiles and endpoints (none by default).
    Allowed { profiles: Vec<String>, endpoints: Vec<String> },
}

impl Connections {
    /// Refuses (`Invalid`) a location whose profile or endpoint is not allowed.
    pub fn check(&self, side: &str, loc: &Location) -> Result<()> {
        let Connections::Allowed { profiles, endpoints } = self else {
            return Ok(());
        };
        if let Some(p) = &loc.conn.profile
            && !profiles.contains(p)
        {
            return Err(Error::invalid(format!(
                "{side} {loc}: profile {p:?} is not one this service may use (its `allowed_profiles` setting)"
            )));
        }
        let same = |a: &str, b: &str| a.trim_end_matches('/').eq_ignore_ascii_case(b.trim_end_matches('/'));
        if let Some(u) = &loc.conn.endpoint_url
            && !endpoints.iter().any(|e| same(e, u))
        {
            return Err(Error::invalid(format!(
                "{side} {loc}: endpoint {u} is not one this service may reach (its `allowed_endpoints` setting)"
            )));
        }
        Ok(())
    }
}

/// What requests may name: local directories and connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub local: LocalPaths,
    pub connections: Connections,
}

impl Policy {
    /// Anything: the local runner, on the user's own machine with the user's credentials.
    pub fn open() -> Self {
        Policy { local: LocalPaths::Any, connections: Connections::Any }
    }

    fn check(&self, spec: &JobSpec) -> Result<()> {
        for (side, loc) in [("source", &spec.source), ("destination", &spec.destination)] {
            self.local.check(side, loc)?;
            self.connections.check(side, loc)?;
        }
        Ok(())
    }
}

/// What the coordinator needs to accept jobs.
#[derive(Clone)]
pub struct Intake {
    pub jobs: Arc<dyn JobStore>,
    pub segments: Arc<dyn WorkQueue>,
    pub stores: Arc<dyn StoreOpener>,
    /// What requests may name.
    pub policy: Policy,
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
        self.policy.check(spec)?;
        let mut empty_destination = false;
        if self.jobs.job(&spec.id).await?.is_none() {
            empty_destination = self.check_stores(spec).await?;
        }
        let first = plan(spec);
        let recorded = self.jobs.create_job(spec, &first).await?;
        // Only the call that recorded the job may say its destination was empty: a repeat
        // (a resume, a duplicate request) may follow copies.
        let fresh = empty_destination && recorded == Recorded::Now;
        let mut pending = Vec::new();
        for r in &first {
            // A job recorded by this call has no segment done yet.
            if recorded == Recorded::Now || self.jobs.segment(&spec.id, r).await?.is_none_or(|s| !s.done) {
                pending.push(SegmentMessage::first(&spec.id, r.clone(), fresh).to_json());
            }
        }
        shared::error::retry(8, || self.segments.push(&pending)).await?;
        tracing::info!(job = %spec.id, new = (recorded == Recorded::Now), fresh, source = %spec.source, destination = %spec.destination, "job accepted");
        Ok(recorded)
    }

    /// Checks both stores and says whether a clone's destination is empty (see
    /// [`Intake::is_empty`]). The two sides at once, unless the destination is a directory
    /// this job would create: that is created only once the source has passed.
    async fn check_stores(&self, spec: &JobSpec) -> Result<bool> {
        let source =
            async { self.open_checked(&spec.source).await.map_err(|e| input_error("source", &spec.source, e)) };
        let destination = async {
            self.open_checked(&spec.destination).await.map_err(|e| input_error("destination", &spec.destination, e))?;
            Ok(spec.options.mode == Mode::Clone && self.is_empty(&spec.destination).await)
        };
        // Only a job that writes may create its destination directory; verify never creates.
        if spec.destination.scheme == Scheme::Local && spec.options.mode != Mode::VerifyOnly {
            source.await?;
            std::fs::create_dir_all(&spec.destination.root)
                .map_err(|e| Error::invalid(format!("destination {}: cannot create it: {e}", spec.destination)))?;
            return destination.await;
        }
        // Both answer; the source's error is the one reported when both are wrong.
        let (source, destination) = tokio::join!(source, destination);
        source?;
        destination
    }

    /// Whether `loc` holds no object at all (one list call of one key). A cost hint (see
    /// [`SegmentMessage::fresh`]): a failure reads as "not empty".
    async fn is_empty(&self, loc: &Location) -> bool {
        let req = ListRequest { prefix: loc.prefix.clone(), start_after: loc.full_key(""), end: None, max_keys: 1 };
        let listed = with_retries(|| async { self.stores.open(loc).await?.list(&req).await }).await;
        match listed {
            Ok(page) => page.entries.is_empty() && page.skipped.is_empty() && !page.truncated,
            Err(e) => {
                tracing::debug!(error = %e, destination = %loc, "could not tell whether the destination is empty");
                false
            }
        }
    }

    /// Opens `loc`'s store and checks it exists, with retries: opening may ask a bucket
    /// for its region, and that request counts as an attempt.
    async fn open_checked(&self, loc: &Location) -> Result<()> {
        with_retries(|| async { self.stores.open(loc).await?.check().await }).await
    }
}

/// Pauses, resumes or cancels job `id`. Returns its state after the action: the action's
/// target, whether it happened now or before (a repeat is a no-op), or for a resumed job
/// with nothing outstanding the state it settled in.
///
/// Pausing or cancelling takes effect within one segment: workers work no new page of a
/// job that is not running and settle its messages; pages in progress finish and count. A
/// paused job's pending segments stay in the job store, so resuming sends them all again
/// (duplicates are harmless) and settles the job if nothing is outstanding.
///
/// Errors: `NotFound` for an unknown job; `Conflict` when the action does not apply to the
/// job's state (resuming a cancelled job, pausing a finished one).
pub async fn control(intake: &Intake, id: &str, action: JobControl) -> Result<JobState> {
    let (_, to) = action.transition();
    let state = intake.jobs.control(id, action).await?.ok_or_else(|| Error::NotFound(format!("no job {id}")))?;
    if state != to {
        return Err(Error::Conflict(format!("job {id} is {}: it cannot {}", state.as_str(), action.as_str())));
    }
    tracing::info!(job = %id, action = action.as_str(), state = state.as_str(), "job control");
    if action == JobControl::Resume {
        supervisor::redrive(intake, id).await?;
        if let Some(now) = intake.jobs.job(id).await?.map(|j| j.state) {
            return Ok(now);
        }
    }
    Ok(state)
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

#[cfg(test)]
mod tests {
    use super::*;
    use shared::model::Connection;

    #[test]
    fn a_service_accepts_only_the_profiles_and_endpoints_it_lists() {
        let allowed = Connections::Allowed {
            profiles: vec!["minio".into()],
            endpoints: vec!["https://minio.internal:9000".into()],
        };
        let at = |conn: Connection| Location::parse("s3://data").unwrap().with_conn(conn).unwrap();
        let endpoint = |u: &str| Connection { endpoint_url: Some(u.into()), ..Default::default() };
        let profile = |p: &str| Connection { profile: Some(p.into()), ..Default::default() };
        assert!(allowed.check("source", &at(Connection::default())).is_ok());
        assert!(allowed.check("source", &at(endpoint("https://MINIO.internal:9000/"))).is_ok());
        assert!(allowed.check("source", &at(profile("minio"))).is_ok());
        let region = Connection { region: Some("eu-west-1".into()), request_payer: true, ..Default::default() };
        assert!(allowed.check("source", &at(region)).is_ok(), "regions and requester pays grant nothing");
        let e = allowed.check("source", &at(endpoint("http://169.254.169.254"))).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains("allowed_endpoints"), "{e}");
        let e = allowed.check("destination", &at(profile("admin"))).unwrap_err();
        assert!(e.to_string().contains("destination") && e.to_string().contains("allowed_profiles"), "{e}");
        let none = Connections::Allowed { profiles: vec![], endpoints: vec![] };
        assert!(none.check("source", &at(profile("minio"))).is_err(), "nothing is allowed by default");
        assert!(Connections::Any.check("source", &at(profile("anything"))).is_ok());
    }
}
