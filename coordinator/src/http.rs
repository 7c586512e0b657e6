//! The coordinator's HTTP API (axum): `GET /healthz`, `GET /jobs`, `GET /jobs/{id}`,
//! `GET /jobs/{id}/stats`, `GET /metrics`, and two writes: `POST /jobs` (a clone request,
//! as on the request queue) and `POST /jobs/{id}/{pause|resume|cancel}`. Every number comes
//! from the job store (and, for `/stats`, from listing the job's two locations).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::json;
use shared::jobstore::JobCursor;
use std::collections::HashMap;
use tokio::sync::watch;

use std::sync::{Arc, Mutex};

use crate::Intake;
use crate::status::{document_with, jobs_with_series, record_metrics};
use crate::supervisor::Health;
use shared::Error;
use shared::model::{JobControl, JobState};
use shared::wire::Request;

/// What the API reads: the job store and queue, and the supervisor's latest health.
#[derive(Clone)]
pub struct Api {
    pub intake: Intake,
    pub health: Arc<Mutex<Health>>,
    /// The request queue, whose depth (dead letters included) `/metrics` shows too.
    pub requests: Option<Arc<dyn shared::queue::WorkQueue>>,
}

impl Api {
    fn health(&self) -> Health {
        self.health.lock().expect("health lock").clone()
    }
}

/// The API's routes over the job store, the segment queue and the supervisor's health.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/jobs", get(list_jobs).post(submit))
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/{action}", post(control))
        .route("/jobs/{id}/stats", get(job_stats))
        .route("/metrics", get(metrics))
        .with_state(api)
}

/// Serves until `stop` turns true.
pub async fn serve(listener: tokio::net::TcpListener, api: Api, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    };
    if let Err(e) = axum::serve(listener, router(api)).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// 200 when the segment queue and the job store answer, 503 saying which does not.
async fn healthz(State(api): State<Api>) -> Response {
    let (code, body) = shared::telemetry::health_response(api.intake.segments.as_ref(), api.intake.jobs.as_ref()).await;
    (StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), body).into_response()
}

fn failure(e: shared::Error) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e.to_string()}))).into_response()
}

/// `GET /jobs?limit=N&after=TOKEN`: jobs newest first, a page at a time (`limit` 1-1000,
/// default 100); `next` is the `after` of the following page, null on the last one.
async fn list_jobs(State(api): State<Api>, Query(q): Query<HashMap<String, String>>) -> Response {
    let bad = |m: String| (StatusCode::BAD_REQUEST, Json(json!({"error": m}))).into_response();
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return bad("limit must be 1-1000".into()),
    };
    let after = match q.get("after").map(|t| JobCursor::parse(t)) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return bad(e.to_string()),
    };
    let health = api.health();
    match api.intake.jobs.jobs(limit, after.as_ref()).await {
        Ok(jobs) => {
            let next = (jobs.len() == limit).then(|| jobs.last().map(|j| JobCursor::after(j).to_token())).flatten();
            let docs: Vec<_> = jobs.iter().map(|j| document_with(j, &health)).collect();
            Json(json!({"jobs": docs, "next": next})).into_response()
        }
        Err(e) => failure(e),
    }
}

/// A clone request in the body, accepted as from the request queue but answered directly:
/// 202 with the job's id, or 400 saying what is wrong with the request (no job is recorded).
async fn submit(State(api): State<Api>, body: String) -> Response {
    let spec = match Request::parse(&body) {
        Ok(Request::Clone(spec)) => *spec,
        Ok(Request::Control { .. }) => {
            let msg = "POST /jobs takes a clone request; control a job with POST /jobs/{id}/{action}";
            return (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response();
        }
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e.to_string()}))).into_response(),
    };
    match api.intake.accept(&spec).await {
        Ok(_) => {
            (StatusCode::ACCEPTED, Json(json!({"id": spec.id, "state": JobState::Running.as_str()}))).into_response()
        }
        Err(Error::Invalid(m)) => (StatusCode::BAD_REQUEST, Json(json!({"error": m}))).into_response(),
        Err(e) => failure(e),
    }
}

/// Pauses, resumes or cancels a job: 200 with its state after, 404 for an unknown job or
/// action, 409 when the action does not apply to the job's state.
async fn control(State(api): State<Api>, Path((id, action)): Path<(String, String)>) -> Response {
    let Some(action) = JobControl::parse(&action) else {
        let msg = format!("no action {action:?}: pause, resume or cancel");
        return (StatusCode::NOT_FOUND, Json(json!({"error": msg}))).into_response();
    };
    match crate::control(&api.intake, &id, action).await {
        Ok(state) => Json(json!({"id": id, "state": state.as_str()})).into_response(),
        Err(Error::NotFound(m)) => (StatusCode::NOT_FOUND, Json(json!({"error": m}))).into_response(),
        Err(Error::Conflict(m)) => (StatusCode::CONFLICT, Json(json!({"error": m}))).into_response(),
        Err(e) => failure(e),
    }
}

async fn get_job(State(api): State<Api>, Path(id): Path<String>) -> Response {
    match api.intake.jobs.job(&id).await {
        Ok(Some(job)) => Json(document_with(&job, &api.health())).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no job {id}")}))).into_response(),
        Err(e) => failure(e),
    }
}

/// The process's metrics, then the queues' depths and the series of running and
/// just-finished jobs, made fresh for this scrape.
async fn metrics(State(api): State<Api>) -> Response {
    let (running, newest) = match tokio::try_join!(api.intake.jobs.running(), api.intake.jobs.jobs(100, None)) {
        Ok(j) => j,
        Err(e) => return failure(e),
    };
    let jobs = jobs_with_series(running, newest, shared::model::now_ms());
    let mut queues = vec![("segments", api.intake.segments.depth().await.unwrap_or_default())];
    if let Some(q) = &api.requests {
        queues.push(("requests", q.depth().await.unwrap_or_default()));
    }
    let health = api.health();
    let mut text = shared::telemetry::render();
    text += &shared::telemetry::render_local(|| record_metrics(&jobs, &queues, &health));
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// The statistics documents of a job's source and destination, side by side (computed now,
/// by listing both: one request per 1,000 objects on each side).
async fn job_stats(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let intake = api.intake;
    let job = match intake.jobs.job(&id).await {
        Ok(Some(job)) => job,
        Ok(None) => return (StatusCode::NOT_FOUND, Json(json!({"error": format!("no job {id}")}))).into_response(),
        Err(e) => return failure(e),
    };
    let filter = shared::filter::KeyFilter::new(&job.spec.options.filters);
    let side = |loc: shared::model::Location| {
        let (stores, filter) = (intake.stores.clone(), &filter);
        async move {
            let store = stores.open(&loc).await?;
            shared::stats::collect(store.as_ref(), &loc, 1, filter).await
        }
    };
    match tokio::try_join!(side(job.spec.source.clone()), side(job.spec.destination.clone())) {
        Ok((s, d)) => Json(json!({"same_content": s.same_content(&d), "source": s, "destination": d})).into_response(),
        Err(e) => failure(e),
    }
}
