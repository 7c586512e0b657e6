//! The final report of a job: one JSON object for `--json`, a short summary for people, and
//! the job's findings streamed as JSON lines.

use serde::Serialize;
use std::io::Write;

use shared::Result;
use shared::jobstore::JobStore;
use shared::model::{JobRecord, ObjectIssue};
use worker::RunStats;

#[derive(Debug, Serialize)]
pub struct Side {
    pub location: String,
    pub objects: i64,
    pub bytes: i64,
}

#[derive(Debug, Serialize)]
pub struct Tally {
    pub objects: i64,
    pub bytes: i64,
}

#[derive(Debug, Serialize)]
pub struct Differences {
    pub missing: i64,
    pub extra: i64,
    pub size_differs: i64,
    pub content_differs: i64,
    pub unverifiable: i64,
    /// Source entries that cannot be copied (reported skips with `--skip-uncopyable`).
    pub uncopyable: i64,
    /// Archived source objects that need a restore (reported skips with `--skip-archived`).
    pub needs_restore: i64,
}

#[derive(Debug, Serialize)]
pub struct ThisRun {
    pub list_calls: u64,
    pub head_calls: u64,
    pub copies: u64,
    pub pages: u64,
    /// Pages whose children were handed on before their copies (one job-store write each).
    pub splits: u64,
}

/// The one JSON object `--json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub job_id: String,
    pub state: &'static str,
    pub mode: shared::model::Mode,
    pub source: Side,
    pub destination: Side,
    pub copied: Tally,
    pub skipped: Tally,
    pub verified: i64,
    pub failed: i64,
    pub differences: Differences,
    pub deleted: Tally,
    pub kept_changed: i64,
    pub segments: i64,
    pub segments_failed: i64,
    pub elapsed_seconds: f64,
    pub this_run: ThisRun,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Report {
    pub fn new(job: &JobRecord, elapsed: f64, stats: &RunStats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &job.counters;
        Report {
            job_id: job.spec.id.clone(),
            state: job.state.as_str(),
            mode: job.spec.options.mode,
            source: Side { location: job.spec.source.to_string(), objects: c.source_objects, bytes: c.source_bytes },
            destination: Side {
                location: job.spec.destination.to_string(),
                objects: c.dest_objects,
                bytes: c.dest_bytes,
            },
            copied: Tally { objects: c.copied_objects, bytes: c.copied_bytes },
            skipped: Tally { objects: c.skipped_objects, bytes: c.skipped_bytes },
            verified: c.verified_objects,
            failed: c.failed_objects,
            differences: Differences {
                missing: c.missing,
                extra: c.extra,
                size_differs: c.size_differs,
                content_differs: c.content_differs,
                unverifiable: c.unverifiable,
                uncopyable: c.uncopyable,
                needs_restore: c.needs_restore,
            },
            deleted: Tally { objects: c.deleted_objects, bytes: c.deleted_bytes },
            kept_changed: c.kept_changed,
            segments: c.segments_done,
            segments_failed: c.segments_failed,
            elapsed_seconds: (elapsed * 1000.0).round() / 1000.0,
            this_run: ThisRun {
                list_calls: stats.list_calls.load(Relaxed),
                head_calls: stats.head_calls.load(Relaxed),
                copies: stats.copies.load(Relaxed),
                pages: stats.pages.load(Relaxed),
                splits: stats.splits.load(Relaxed),
            },
            message: job.message.clone(),
        }
    }

    /// A few lines for a person.
    pub fn human(&self) -> String {
        let d = &self.differences;
        // A verified job that skipped entries says so on its first line.
        let state = match (self.state, d.uncopyable, d.needs_restore) {
            ("verified", 0, 0) => "VERIFIED".to_string(),
            ("verified", u, 0) => format!("VERIFIED, {u} skipped (uncopyable)"),
            ("verified", 0, a) => format!("VERIFIED, {a} skipped (archived, need restore)"),
            ("verified", u, a) => format!("VERIFIED, {} skipped ({u} uncopyable, {a} archived, need restore)", u + a),
            (s, _, _) => s.to_uppercase(),
        };
        let mut s = format!(
            "job {}: {}\n  source       {}  {} objects, {}\n  destination  {}  {} objects, {}\n  copied {} objects ({}), already identical {}, verified {}, failed {}\n",
            self.job_id,
            state,
            self.source.location,
            self.source.objects,
            human_bytes(self.source.bytes),
            self.destination.location,
            self.destination.objects,
            human_bytes(self.destination.bytes),
            self.copied.objects,
            human_bytes(self.copied.bytes),
            self.skipped.objects,
            self.verified,
            self.failed,
        );
        // Skipped entries of a verified job are on its first line, not differences.
        let skipped = if self.state == "verified" { 0 } else { d.uncopyable + d.needs_restore };
        if d.missing + d.extra + d.size_differs + d.content_differs + d.unverifiable + skipped > 0 {
            s += &format!(
                "  differences: missing {}, extra {}, size differs {}, content differs {}, unverifiable {}, uncopyable {}, needs restore {}\n",
                d.missing, d.extra, d.size_differs, d.content_differs, d.unverifiable, d.uncopyable, d.needs_restore
            );
        }
        if self.deleted.objects + self.kept_changed > 0 {
            s += &format!(
                "  deleted from source {} ({}), kept because changed {}\n",
                self.deleted.objects,
                human_bytes(self.deleted.bytes),
                self.kept_changed
            );
        }
        s += &format!("  {} segments in {:.1} s", self.segments, self.elapsed_seconds);
        if self.this_run.splits > 0 {
            s += &format!(" ({} split early)", self.this_run.splits);
        }
        s += "\n";
        if let Some(m) = &self.message {
            s += &format!("  error: {m}\n");
        }
        s
    }
}

/// Writes every finding of `job` as one JSON line each, paging through the store. Returns
/// how many were written.
pub async fn stream_issues(jobs: &dyn JobStore, job: &str, out: &mut dyn Write) -> Result<usize> {
    let mut after: Option<ObjectIssue> = None;
    let mut n = 0;
    loop {
        let page = jobs.issues(job, after.as_ref(), 1000).await?;
        for i in &page {
            serde_json::to_writer(&mut *out, i)?;
            writeln!(out)?;
            n += 1;
        }
        match page.last() {
            Some(last) => after = Some(last.clone()),
            None => return Ok(n),
        }
    }
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(b: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", units[u]) }
}
