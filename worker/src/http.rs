//! The worker's small HTTP port: `GET /metrics` (the process's metrics, Prometheus text)
//! and `GET /healthz` (200 when the segment queue and the job store answer, else 503).

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::watch;

use shared::jobstore::JobStore;
use shared::queue::WorkQueue;

/// Serves the routes on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    queue: Arc<dyn WorkQueue>,
    jobs: Arc<dyn JobStore>,
    mut stop: watch::Receiver<bool>,
) {
    let healthz = move || {
        let (queue, jobs) = (queue.clone(), jobs.clone());
        async move {
            let (code, body) = shared::telemetry::health_response(queue.as_ref(), jobs.as_ref()).await;
            (StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE), body).into_response()
        }
    };
    let metrics =
        || async { ([("content-type", "text/plain; version=0.0.4")], shared::telemetry::render()).into_response() };
    let app = Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics));
    let shutdown = async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                return;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "worker HTTP server failed");
    }
}
