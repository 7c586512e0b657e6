//! The coordinator as a long-running service: long-polls the request queue, accepts jobs
//! (idempotently on their id), records bad requests as failed jobs with a clear message (in
//! one write), runs the [`Supervisor`] (finalize, re-drive, dead letters, stuck jobs), and
//! serves the HTTP API (`/healthz`, `/jobs`, `/jobs/{id}`, `/metrics`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

use shared::model::{JobSpec, Location, Scheme};
use shared::queue::WorkQueue;
use shared::wire::Request;
use shared::{Error, Result};

use crate::supervisor::{Health, Supervisor, SupervisorConfig};
use crate::{Intake, http};

/// How the coordinator service runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// How long one poll of the request queue waits.
    pub poll_wait: Duration,
    /// How often running jobs are checked (finalize, re-drive).
    pub watch_every: Duration,
    /// Lease on a request while it is being accepted.
    pub lease: Duration,
    /// How the supervisor re-drives and flags jobs.
    pub supervisor: SupervisorConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            http_addr: ([127, 0, 0, 1], 8080).into(),
            poll_wait: Duration::from_secs(10),
            watch_every: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            supervisor: SupervisorConfig::default(),
        }
    }
}

/// Runs until `stop` turns true. Returns the address the HTTP API is bound to through
/// `bound` as soon as it listens (useful with port 0).
pub async fn run(
    intake: Intake,
    requests: Arc<dyn WorkQueue>,
    cfg: CoordinatorConfig,
    stop: watch::Receiver<bool>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|e| Error::invalid(format!("cannot listen on {}: {e}", cfg.http_addr)))?;
    let addr = listener.local_addr()?;
    info!(%addr, "HTTP API listening");
    if let Some(b) = bound {
        let _ = b.send(addr);
    }
    let health = Arc::new(std::sync::Mutex::new(Health::default()));
    let api = http::Api { intake: intake.clone(), health: health.clone(), requests: Some(requests.clone()) };
    let server = tokio::spawn(http::serve(listener, api, stop.clone()));
    let supervisor = Supervisor::new(intake.clone(), cfg.supervisor.clone());
    let watcher = tokio::spawn(supervise(supervisor, health, cfg.watch_every, stop.clone()));
    let mut stop_rx = stop.clone();
    while !*stop_rx.borrow() {
        let pulled = tokio::select! {
            r = requests.pull(10, cfg.lease, cfg.poll_wait) => r,
            _ = stop_rx.changed() => break,
        };
        let deliveries = match pulled {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "polling the request queue failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for d in deliveries {
            match handle_request(&intake, &d.body).await {
                Ok(()) => {
                    if let Err(e) = requests.ack(&d.lease).await {
                        warn!(error = %e, "could not delete a handled request; it will be handled again (idempotent)");
                    }
                }
                Err(e) => warn!(error = %e, "request not accepted yet; it will be retried"),
            }
        }
    }
    let _ = watcher.await;
    let _ = server.await;
    Ok(())
}

/// Accepts one request body. Ok means "done with this message" (accepted, or refused and
/// recorded); an error means "try again later" (the message stays on the queue).
pub async fn handle_request(intake: &Intake, body: &str) -> Result<()> {
    let spec = match Request::parse(body) {
        Ok(Request::Clone(spec)) => *spec,
        Ok(Request::Control { id, action }) => {
            return match crate::control(intake, &id, action).await {
                Ok(_) => Ok(()),
                // Nothing to retry: an unknown job, or one the action does not apply to.
                Err(e @ (Error::NotFound(_) | Error::Conflict(_))) => {
                    warn!(job = %id, action = action.as_str(), error = %e, "control request not applied");
                    Ok(())
                }
                Err(e) => Err(e),
            };
        }
        Err(Error::Invalid(msg)) => {
            return match loose_spec(body) {
                Some(spec) => record_refusal(intake, &spec, &msg).await,
                None => {
                    error!(error = %msg, body, "unreadable clone request dropped: it names no usable job id");
                    Ok(())
                }
            };
        }
        Err(e) => return Err(e),
    };
    match intake.accept(&spec).await {
        Ok(_) => Ok(()),
        Err(Error::Invalid(msg)) => record_refusal(intake, &spec, &msg).await,
        Err(e) => Err(e),
    }
}

/// Records a refused request as a failed job, in one write, so its status says why. An
/// existing job with that id is never touched.
async fn record_refusal(intake: &Intake, spec: &JobSpec, msg: &str) -> Result<()> {
    error!(job = %spec.id, error = %msg, "clone request refused");
    if intake.jobs.create_failed(spec, msg).await? == shared::jobstore::Recorded::Already {
        warn!(job = %spec.id, "a job with this id exists; the refused request did not change it");
    }
    Ok(())
}

/// The job a malformed request was about, as far as it can be read: its id (if valid) and
/// whatever it names as buckets, unvalidated, for the failed job's record.
fn loose_spec(body: &str) -> Option<JobSpec> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let id = v.get("id")?.as_str()?.to_string();
    shared::model::validate_job_id(&id).ok()?;
    let side = |s: &str| Location {
        scheme: Scheme::S3,
        root: v.pointer(&format!("/{s}/name")).and_then(|n| n.as_str()).unwrap_or("?").to_string(),
        prefix: String::new(),
        conn: Default::default(),
    };
    Some(JobSpec { id, source: side("source"), destination: side("destination"), options: Default::default() })
}

/// Runs the supervisor every `every` until `stop`, publishing each tick's health.
async fn supervise(
    sup: Supervisor,
    health: Arc<std::sync::Mutex<Health>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        match sup.tick().await {
            Ok(h) => *health.lock().expect("health lock") = h,
            Err(e) => warn!(error = %e, "checking running jobs failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_request_still_yields_its_id_when_it_has_one() {
        let s = loose_spec(r#"{"id":"job-7","source":{"name":"Bad Name"},"destination":{}}"#).unwrap();
        assert_eq!(s.id, "job-7");
        assert_eq!(s.source.root, "Bad Name");
        assert_eq!(s.destination.root, "?");
        assert!(loose_spec(r#"{"id":"bad id!","source":{}}"#).is_none());
        assert!(loose_spec("not json").is_none());
    }
}
