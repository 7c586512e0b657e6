//! The job status document: one JSON shape for `bucketclone status --json`, `GET /jobs/{id}`
//! and the Prometheus gauges, so every view reports the same numbers.

use serde_json::{Value, json};

use shared::model::{Counters, JobRecord, now_ms};
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

/// Prometheus text exposition of every job's counters, the service's queue depth (dead
/// letters included) and the supervisor's view of stalled jobs.
pub fn prometheus(jobs: &[JobRecord], depth: &QueueDepth, health: &Health) -> String {
    let mut out = String::new();
    out += "# HELP bucketclone_segment_queue_messages Segment messages by state.\n";
    out += "# TYPE bucketclone_segment_queue_messages gauge\n";
    for (state, n) in [("visible", depth.visible), ("in_flight", depth.in_flight), ("dead_letter", depth.dead_letters)]
    {
        out += &format!("bucketclone_segment_queue_messages{{state=\"{state}\"}} {n}\n");
    }
    out += "# HELP bucketclone_job_dead_letter_segments A running job's segments in the dead-letter queue.\n";
    out += "# TYPE bucketclone_job_dead_letter_segments gauge\n";
    out += "# HELP bucketclone_job_stalled_seconds Seconds since a running job last finished a segment.\n";
    out += "# TYPE bucketclone_job_stalled_seconds gauge\n";
    let mut ids: Vec<&String> = health.jobs.keys().collect();
    ids.sort();
    for id in ids {
        let h = &health.jobs[id];
        out += &format!("bucketclone_job_dead_letter_segments{{job=\"{id}\"}} {}\n", h.dead_segments);
        out += &format!("bucketclone_job_stalled_seconds{{job=\"{id}\"}} {}\n", h.stalled_secs);
    }
    out += "# HELP bucketclone_job_counter A job's counter (objects, bytes, segments, differences).\n";
    out += "# TYPE bucketclone_job_counter gauge\n";
    for j in jobs {
        for (name, v) in Counters::NAMES.iter().zip(j.counters.values()) {
            out += &format!("bucketclone_job_counter{{job=\"{}\",counter=\"{name}\"}} {v}\n", j.spec.id);
        }
    }
    out += "# HELP bucketclone_job_state 1 for the job's current state.\n";
    out += "# TYPE bucketclone_job_state gauge\n";
    for j in jobs {
        out += &format!("bucketclone_job_state{{job=\"{}\",state=\"{}\"}} 1\n", j.spec.id, j.state.as_str());
    }
    out
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
    fn prometheus_text_has_one_line_per_counter() {
        let depth = QueueDepth { visible: 3, in_flight: 1, dead_letters: 2 };
        let mut health = Health::default();
        health.jobs.insert("j1".into(), crate::supervisor::JobHealth { dead_segments: 2, ..Default::default() });
        let t = prometheus(&[job()], &depth, &health);
        assert!(t.contains("bucketclone_job_counter{job=\"j1\",counter=\"copied_bytes\"} 99\n"));
        assert!(t.contains("bucketclone_segment_queue_messages{state=\"visible\"} 3\n"));
        assert!(t.contains("bucketclone_segment_queue_messages{state=\"dead_letter\"} 2\n"));
        assert!(t.contains("bucketclone_job_dead_letter_segments{job=\"j1\"} 2\n"));
        assert!(t.contains("bucketclone_job_state{job=\"j1\",state=\"verified\"} 1\n"));
    }
}
