//! Progress on a terminal: objects, bytes, rate and a rough ETA, drawn by indicatif in place
//! on stderr, with log lines written around it. Silent when stderr is not a terminal (logs
//! and `--json` stay clean).
//!
//! The total is not known up front (nothing lists the whole source first), so the ETA
//! extrapolates from the segments still outstanding and the objects per finished segment;
//! it is marked `~` and sharpens as the job goes.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::model::JobRecord;

use crate::report::human_bytes;

/// The bar on screen, if any: log lines are written around it ([`LogWriter`]).
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A live progress line (indicatif) for one job, redrawn in place on stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// A progress line when `wanted` and stderr is a terminal; otherwise nothing is drawn.
    pub fn new(wanted: bool) -> Self {
        let bar = (wanted && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
            bar.enable_steady_tick(Duration::from_millis(250));
            *BAR.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar.clone());
            bar
        });
        Progress { bar, started: Instant::now() }
    }

    /// True while a line is drawn.
    pub fn active(&self) -> bool {
        self.bar.is_some()
    }

    pub fn update(&mut self, job: &JobRecord) {
        if let Some(bar) = &self.bar {
            // The job's own age (it may have started before this process), at least ours.
            let age = (shared::model::now_ms() - job.created_ms).max(0) as f64 / 1000.0;
            bar.set_message(line(job, age.max(self.started.elapsed().as_secs_f64())));
        }
    }

    /// Leaves the last line on screen and stops drawing.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
            *BAR.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Where log lines go: stderr, around the progress line when one is drawn, so a warning
/// never tears it.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)).map(|()| buf.len()),
            None => std::io::stderr().write_all(buf).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
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
