//! The job status document: one JSON shape for `bucketclone status --json` and
//! `GET /jobs/{id}`, and the same counters as Prometheus series, so every view reports the
//! same numbers.

use serde_json::{Value, json};

use shared::model::{Counters, JobRecord, JobState, now_ms};
use shared::queue::QueueDepth;

use crate::supervisor::Health;

/// [`document`] plus what the supervisor knows of the job: how long nothing of it has
/// finished, and how many of its segments sit in the dead-letter queue.
pub fn document_with(job: &JobRecord, health: &Health) -> Value {
    let mut d = document(job);
    if let Some(h) = health.jobs.get(&job.spec.id) {
        d["stalled_seconds"] = json!(h.stalled_secs);
        d["dead_letter_segments"] = json!(h.dead_segments);
        d["stuck"] = json!(h.flagged);
    }
    d
}

/// The status document of one job: its spec, state, every counter, rate and ETA.
pub fn document(job: &JobRecord) -> Value {
    let c = &job.counters;
    let end = if job.state.is_terminal() { job.updated_ms } else { now_ms() };
    let secs = ((end - job.created_ms).max(1) as f64) / 1000.0;
    let rate = c.source_objects as f64 / secs;
    let per_segment = if c.segments_done > 0 { c.source_objects as f64 / c.segments_done as f64 } else { 0.0 };
    let eta = (rate > 0.0 && c.outstanding > 0).then(|| (c.outstanding as f64 * per_segment / rate).round());
    let counters: serde_json::Map<String, Value> =
        Counters::NAMES.iter().zip(c.values()).map(|(n, v)| (n.to_string(), json!(v))).collect();
    json!({
        "id": job.spec.id,
        "state": job.state.as_str(),
        "mode": job.spec.options.mode,
        "source": job.spec.source.to_string(),
        "destination": job.spec.destination.to_string(),
        "message": job.message,
        "created_ms": job.created_ms,
        "updated_ms": job.updated_ms,
        "elapsed_seconds": secs,
        "objects_per_second": (rate * 10.0).round() / 10.0,
        "eta_seconds": eta,
        "counters": counters,
    })
}

/// How long a finished job keeps its series on `/metrics`: long enough for every scraper to
/// see its final numbers, short enough that series do not pile up.
pub const FINISHED_SERIES_MS: i64 = 10 * 60 * 1000;

/// The jobs that get series: every running one, and those that ended in the last
/// [`FINISHED_SERIES_MS`] (so their final numbers are scraped); not paused ones, not old ones.
pub fn jobs_with_series(running: Vec<JobRecord>, newest: Vec<JobRecord>, now_ms: i64) -> Vec<JobRecord> {
    let mut out: Vec<JobRecord> = running.into_iter().filter(|j| j.state == JobState::Running).collect();
    for j in newest {
        let recent = j.state.is_terminal() && now_ms - j.updated_ms <= FINISHED_SERIES_MS;
        if recent && !out.iter().any(|o| o.spec.id == j.spec.id) {
            out.push(j);
        }
    }
    out
}

/// Records the coordinator's gauges into the current recorder (see
/// [`shared::telemetry::render_local`]): each queue's messages by state, dead letters
/// included, and for each of `jobs` (see [`jobs_with_series`]) its counters, outstanding
/// segments and state, and the supervisor's view (seconds stalled, segments in the
/// dead-letter queue).
pub fn record_metrics(jobs: &[JobRecord], queues: &[(&str, QueueDepth)], health: &Health) {
    use shared::telemetry::QUEUE_MESSAGES;
    for (queue, d) in queues {
        for (state, n) in [("visible", d.visible), ("in_flight", d.in_flight), ("dead_letter", d.dead_letters)] {
            metrics::gauge!(QUEUE_MESSAGES, "queue" => queue.to_string(), "state" => state).set(n as f64);
        }
    }
    for j in jobs {
        let job = j.spec.id.clone();
        metrics::gauge!("bucketclone_job_state", "job" => job.clone(), "state" => j.state.as_str()).set(1.0);
        for (name, v) in Counters::NAMES.iter().zip(j.counters.values()) {
            match *name {
                "outstanding" => {
                    metrics::gauge!("bucketclone_job_outstanding_segments", "job" => job.clone()).set(v as f64)
                }
                _ => metrics::counter!(format!("bucketclone_job_{name}_total"), "job" => job.clone())
                    .absolute(v.max(0) as u64),
            }
        }
        if let Some(h) = health.jobs.get(&j.spec.id) {
            metrics::gauge!("bucketclone_job_stalled_seconds", "job" => job.clone()).set(h.stalled_secs as f64);
            metrics::gauge!("bucketclone_job_dead_letter_segments", "job" => job.clone()).set(h.dead_segments as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::model::{JobOptions, JobSpec, JobState, Location};

    fn job() -> JobRecord {
        JobRecord {
            spec: JobSpec {
                id: "j1".into(),
                source: Location::s3("src-b", "").unwrap(),
                destination: Location::s3("dst-b", "").unwrap(),
                options: JobOptions::default(),
            },
            state: JobState::Verified,
            counters: Counters { source_objects: 10, copied_bytes: 99, segments_done: 2, ..Default::default() },
            message: None,
            created_ms: 1_000,
            updated_ms: 3_000,
        }
    }

    #[test]
    fn the_document_carries_every_counter() {
        let d = document(&job());
        assert_eq!(d["state"], "verified");
        assert_eq!(d["counters"]["source_objects"], 10);
        assert_eq!(d["counters"]["copied_bytes"], 99);
        assert_eq!(d["counters"].as_object().unwrap().len(), Counters::NAMES.len());
        assert_eq!(d["elapsed_seconds"], 2.0);
    }

    #[test]
    fn metrics_carry_the_jobs_counters_and_the_queues() {
        let depth = QueueDepth { visible: 3, in_flight: 1, dead_letters: 2 };
        let mut health = Health::default();
        health.jobs.insert("j1".into(), crate::supervisor::JobHealth { dead_segments: 2, ..Default::default() });
        let t = shared::telemetry::render_local(|| record_metrics(&[job()], &[("segments", depth)], &health));
        assert!(t.contains("# TYPE bucketclone_job_copied_bytes_total counter"), "{t}");
        assert!(t.contains("bucketclone_job_copied_bytes_total{job=\"j1\"} 99\n"), "{t}");
        assert!(t.contains("bucketclone_job_state{job=\"j1\",state=\"verified\"} 1\n"), "{t}");
        assert!(t.contains("bucketclone_queue_messages{queue=\"segments\",state=\"dead_letter\"} 2\n"), "{t}");
        assert!(t.contains("bucketclone_job_dead_letter_segments{job=\"j1\"} 2\n"), "{t}");
    }

    #[test]
    fn series_are_for_running_and_just_finished_jobs_only() {
        let with = |id: &str, state: JobState, updated_ms: i64| JobRecord {
            spec: JobSpec { id: id.into(), ..job().spec },
            state,
            updated_ms,
            ..job()
        };
        let now = 100 * FINISHED_SERIES_MS;
        let running = vec![with("run", JobState::Running, 0)];
        let newest = vec![
            with("run", JobState::Running, 0),
            with("just-done", JobState::Verified, now - 1_000),
            with("paused", JobState::Paused, now),
            with("long-done", JobState::Mismatch, now - FINISHED_SERIES_MS - 1),
        ];
        let ids: Vec<String> = jobs_with_series(running, newest, now).into_iter().map(|j| j.spec.id).collect();
        assert_eq!(ids, ["run", "just-done"]);
    }
}
