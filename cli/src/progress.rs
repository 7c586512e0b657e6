//! Progress on a terminal: objects, bytes, rate and a rough ETA, redrawn in place on stderr.
//! Silent when stderr is not a terminal (logs and `--json` stay clean).
//!
//! The total is not known up front (nothing lists the whole source first), so the ETA
//! extrapolates from the segments still outstanding and the objects per finished segment;
//! it is marked `~` and sharpens as the job goes.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use shared::model::JobRecord;

use crate::report::human_bytes;

pub struct Progress {
    enabled: bool,
    started: Instant,
    last_draw: Option<Instant>,
    drew: bool,
}

impl Progress {
    pub fn new(wanted: bool) -> Self {
        Progress {
            enabled: wanted && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_draw: None,
            drew: false,
        }
    }

    pub fn update(&mut self, job: &JobRecord) {
        if !self.enabled || self.last_draw.is_some_and(|t| t.elapsed().as_millis() < 500) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let _ = write!(std::io::stderr(), "\r\x1b[2K{}", line(job, self.started.elapsed().as_secs_f64()));
        self.drew = true;
    }

    pub fn finish(&mut self) {
        if self.drew {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// One status line: what is done, how fast, how much is left.
pub fn line(job: &JobRecord, secs: f64) -> String {
    let c = &job.counters;
    let secs = secs.max(0.001);
    let rate = c.source_objects as f64 / secs;
    let per_segment = if c.segments_done > 0 { c.source_objects as f64 / c.segments_done as f64 } else { 0.0 };
    let left = c.outstanding as f64 * per_segment;
    let eta = if rate > 0.0 && c.outstanding > 0 { format!("~{:.0}s", left / rate) } else { "-".to_string() };
    format!(
        "{} objects seen, {} copied ({}), {} verified | {:.0} obj/s, {}/s | {} segments left | ETA {}",
        c.source_objects,
        c.copied_objects,
        human_bytes(c.copied_bytes),
        c.verified_objects,
        rate,
        human_bytes((c.copied_bytes as f64 / secs) as i64),
        c.outstanding,
        eta
    )
}
