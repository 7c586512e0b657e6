//! The coordinator's HTTP API (axum): `GET /healthz`, `GET /jobs`, `GET /jobs/{id}`,
//! `GET /jobs/{id}/stats`, `GET /metrics`. Read-only; every number comes from the job store
//! (and, for `/stats`, from listing the job's two locations).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;

use crate::Intake;
use crate::status::{document, prometheus};

/// The API's routes over `intake`'s job store and segment queue.
pub fn router(intake: Intake) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/stats", get(job_stats))
        .route("/metrics", get(metrics))
        .with_state(intake)
}

/// Serves until `stop` turns true.
pub async fn serve(listener: tokio::net::TcpListener, intake: Intake, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    };
    if let Err(e) = axum::serve(listener, router(intake)).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

fn failure(e: shared::Error) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e.to_string()}))).into_response()
}

async fn list_jobs(State(intake): State<Intake>) -> Response {
    match intake.jobs.jobs(1000).await {
        Ok(jobs) => Json(jobs.iter().map(document).collect::<Vec<_>>()).into_response(),
        Err(e) => failure(e),
    }
}

async fn get_job(State(intake): State<Intake>, Path(id): Path<String>) -> Response {
    match intake.jobs.job(&id).await {
        Ok(Some(job)) => Json(document(&job)).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no job {id}")}))).into_response(),
        Err(e) => failure(e),
    }
}

async fn metrics(State(intake): State<Intake>) -> Response {
    let jobs = match intake.jobs.jobs(1000).await {
        Ok(j) => j,
        Err(e) => return failure(e),
    };
    let depth = intake.segments.depth().await.unwrap_or_default();
    ([("content-type", "text/plain; version=0.0.4")], prometheus(&jobs, depth.visible, depth.in_flight)).into_response()
}

/// The statistics documents of a job's source and destination, side by side (computed now,
/// by listing both: one request per 1,000 objects on each side).
async fn job_stats(State(intake): State<Intake>, Path(id): Path<String>) -> Response {
    let job = match intake.jobs.job(&id).await {
        Ok(Some(job)) => job,
        Ok(None) => return (StatusCode::NOT_FOUND, Json(json!({"error": format!("no job {id}")}))).into_response(),
        Err(e) => return failure(e),
    };
    let side = |loc: shared::model::Location| {
        let stores = intake.stores.clone();
        async move {
            let store = stores.open(&loc).await?;
            shared::stats::collect(store.as_ref(), &loc, 1).await
        }
    };
    match tokio::try_join!(side(job.spec.source.clone()), side(job.spec.destination.clone())) {
        Ok((s, d)) => Json(json!({"same_content": s.same_content(&d), "source": s, "destination": d})).into_response(),
        Err(e) => failure(e),
    }
}
