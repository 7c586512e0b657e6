//! Metrics: the `metrics` facade, rendered in the Prometheus text format by
//! `metrics-exporter-prometheus`. Processes record through the facade (a no-op until
//! [`install`] runs, so libraries and tests need no setup); each service serves [`render`]
//! on `GET /metrics`.
//!
//! The names, in one place so dashboards and alarms can rely on them:
//! - worker: [`OBJECTS_COPIED`], [`BYTES_COPIED`], [`OBJECTS_VERIFIED`], [`OBJECTS_SKIPPED`],
//!   [`OBJECTS_FAILED`], [`OBJECTS_DELETED`] (counted from the pages this process recorded,
//!   so across workers they add up to the jobs' counters exactly), [`SEGMENTS_LEASED`],
//!   [`SEGMENTS_COMPLETED`], [`SEGMENTS_SPLIT`] (children handed on before their page was
//!   done), [`LEASES_LOST`] (attempts abandoned when the queue said their lease was
//!   lost), [`COPY_SECONDS`] (a histogram), [`COPIES_IN_FLIGHT`],
//!   [`RETRIES`], [`THROTTLES`];
//! - coordinator: [`QUEUE_MESSAGES`] by queue and state (dead letters included), and per
//!   running job only (see [`render_local`]) its counters, state, stalled time and dead
//!   letters.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const OBJECTS_COPIED: &str = "bucketclone_objects_copied_total";
pub const BYTES_COPIED: &str = "bucketclone_bytes_copied_total";
pub const OBJECTS_VERIFIED: &str = "bucketclone_objects_verified_total";
pub const OBJECTS_SKIPPED: &str = "bucketclone_objects_skipped_total";
pub const OBJECTS_FAILED: &str = "bucketclone_objects_failed_total";
pub const OBJECTS_DELETED: &str = "bucketclone_objects_deleted_total";
pub const SEGMENTS_LEASED: &str = "bucketclone_segments_leased_total";
pub const SEGMENTS_COMPLETED: &str = "bucketclone_segments_completed_total";
pub const SEGMENTS_SPLIT: &str = "bucketclone_segments_split_total";
pub const LEASES_LOST: &str = "bucketclone_leases_lost_total";
pub const COPY_SECONDS: &str = "bucketclone_copy_seconds";
pub const COPIES_IN_FLIGHT: &str = "bucketclone_copies_in_flight";
pub const RETRIES: &str = "bucketclone_retries_total";
pub const THROTTLES: &str = "bucketclone_throttles_total";
pub const QUEUE_MESSAGES: &str = "bucketclone_queue_messages";

/// Copy latency buckets, in seconds: a small server-side copy takes milliseconds, a large
/// streamed one minutes.
const COPY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(COPY_SECONDS.to_string()), COPY_BUCKETS)
        .expect("the copy latency buckets are not empty")
}

/// Installs the process's recorder (once; later calls do nothing). Services call it at
/// start-up; without it, recording is a no-op.
pub fn install() {
    HANDLE.get_or_init(|| match builder().install_recorder() {
        Ok(h) => h,
        // Another recorder was installed first (a test harness): keep ours unexported.
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            builder().build_recorder().handle()
        }
    });
}

/// The process's metrics in the Prometheus text format (empty before [`install`]).
pub fn render() -> String {
    HANDLE.get().map(|h| h.render()).unwrap_or_default()
}

/// Renders what `record` records, into a recorder of its own that lives for this call
/// only: series that exist only while something is true (a running job's counters) are
/// made fresh for each scrape, so a finished job's series are gone at the next one.
pub fn render_local(record: impl FnOnce()) -> String {
    let recorder = builder().build_recorder();
    metrics::with_local_recorder(&recorder, record);
    recorder.handle().render()
}

/// What `/healthz` answers: the process can reach its queue and its job store (one cheap
/// request each). `Err` names what failed.
pub async fn check_health(
    queue: &dyn crate::queue::WorkQueue,
    jobs: &dyn crate::jobstore::JobStore,
) -> crate::Result<()> {
    queue.depth().await.map_err(|e| e.context("queue"))?;
    jobs.job("healthz-probe").await.map_err(|e| e.context("job store"))?;
    Ok(())
}

/// `/healthz` as an HTTP status and body: 200 `ok`, or 503 with the reason.
pub async fn health_response(
    queue: &dyn crate::queue::WorkQueue,
    jobs: &dyn crate::jobstore::JobStore,
) -> (u16, String) {
    match check_health(queue, jobs).await {
        Ok(()) => (200, "ok\n".to_string()),
        Err(e) => (503, format!("unhealthy: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_renders_hold_only_what_was_recorded_in_them() {
        let one = render_local(|| {
            metrics::counter!(OBJECTS_COPIED, "job" => "a").absolute(7);
            metrics::gauge!(QUEUE_MESSAGES, "queue" => "segments", "state" => "visible").set(3.0);
            metrics::histogram!(COPY_SECONDS).record(0.02);
        });
        assert!(one.contains("# TYPE bucketclone_objects_copied_total counter"), "{one}");
        assert!(one.contains("bucketclone_objects_copied_total{job=\"a\"} 7"), "{one}");
        assert!(one.contains("bucketclone_queue_messages{queue=\"segments\",state=\"visible\"} 3"), "{one}");
        assert!(one.contains("bucketclone_copy_seconds_bucket{le=\"0.025\"} 1"), "buckets as configured: {one}");
        let two = render_local(|| metrics::counter!(OBJECTS_COPIED, "job" => "b").absolute(1));
        assert!(!two.contains("job=\"a\""), "a fresh recorder per render: {two}");
    }
}
