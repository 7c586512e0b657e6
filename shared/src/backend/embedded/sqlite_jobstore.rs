//! [`SqliteJobStore`]: the job store in one SQLite file, for one machine.
//!
//! Tables (all prefixed `jobstore_`, so the file may also hold another component's tables,
//! such as the embedded queue's, on its own connection):
//! - `jobstore_job`: one row per job; the spec as JSON, and one integer column `c_<name>`
//!   per counter in [`Counters::NAMES`] (added at open when missing, so new counters
//!   migrate an old file).
//! - `jobstore_segment`: one row per (job, range id); `done`, children and outcome as JSON.
//! - `jobstore_issue`: one row per (job, key, kind), the issue as JSON. SQLite's default
//!   BINARY collation compares UTF-8 bytes, S3's key order.
//!
//! Every write is ONE `BEGIN IMMEDIATE` transaction (immediate, so two writers never
//! deadlock upgrading read locks), which is what makes completions exactly-once: the
//! segment's pending -> done change is checked and made in the same transaction as the
//! counters. WAL mode, `synchronous = FULL` (a committed completion survives power loss)
//! and a busy timeout let other connections share the file. Blocking calls run on
//! `spawn_blocking` behind one mutex-guarded connection.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::{Error, Result};
use crate::jobstore::{JobCursor, JobStore, Recorded, split_mismatch};
use crate::model::{
    Counters, IssueKind, JobControl, JobRecord, JobSpec, JobState, KeyRange, ObjectIssue, SegmentCompletion,
    SegmentRecord, now_ms, validate_job_id,
};

mod schema;
#[cfg(test)]
mod tests;

use schema::{SEGMENT_COLUMNS, Sql, db_err, job_from_row, migrate, read_job, segment_from_row};

/// How long a statement waits for another connection's write lock before `Transient`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The job store in one SQLite file. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteJobStore {
    conn: Arc<Mutex<Connection>>,
    sql: Arc<Sql>,
}

impl SqliteJobStore {
    /// Opens (creating if needed) the job store in the SQLite file at `path`, creating or
    /// migrating its tables. Safe to call from several processes on the same file.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path).map_err(|e| db_err(e).context(format!("opening {}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(db_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode = %mode, "SQLite refused WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
        migrate(&mut conn)?;
        Ok(SqliteJobStore { conn: Arc::new(Mutex::new(conn)), sql: Arc::new(Sql::new()) })
    }

    /// Runs `f` on the connection on a blocking thread.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Sql) -> Result<T> + Send + 'static,
    {
        let (conn, sql) = (self.conn.clone(), self.sql.clone());
        tokio::task::spawn_blocking(move || {
            // A panic mid-call rolled its transaction back on unwind: the connection is fine.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard, &sql)
        })
        .await
        .map_err(|e| Error::permanent(format!("job store task failed: {e}")))?
    }
}

/// The kind's kebab-case name: stored, and the second half of the issue order.
fn kind_name(k: IssueKind) -> Result<String> {
    match serde_json::to_value(k)? {
        serde_json::Value::String(s) => Ok(s),
        v => Err(Error::permanent(format!("issue kind serialised as {v}"))),
    }
}

/// A segment's state as a write needs it: done, its recorded children, its outcome.
struct SegState {
    done: bool,
    children: Vec<KeyRange>,
    outcome: Counters,
}

fn seg_state(tx: &rusqlite::Transaction, job: &str, range: &KeyRange) -> Result<SegState> {
    let row: Option<(bool, String, String)> = tx
        .query_row(
            "SELECT done, children, outcome FROM jobstore_segment WHERE job = ?1 AND id = ?2",
            params![job, range.id()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(db_err)?;
    let Some((done, children, outcome)) = row else {
        return Err(Error::NotFound(format!("job {job} has no segment {}", range.id())));
    };
    Ok(SegState { done, children: serde_json::from_str(&children)?, outcome: serde_json::from_str(&outcome)? })
}

/// Creates the `children` not recorded yet (pending); returns how many it created.
fn create_children(tx: &rusqlite::Transaction, job: &str, children: &[KeyRange]) -> Result<i64> {
    let mut created = 0i64;
    for k in children {
        created += tx
            .execute(
                "INSERT OR IGNORE INTO jobstore_segment (job, id, start_after, end_key) VALUES (?1, ?2, ?3, ?4)",
                params![job, k.id(), k.start_after, k.end],
            )
            .map_err(db_err)? as i64;
    }
    Ok(created)
}

/// Adds `delta` to the job's counters.
fn add_counters(tx: &rusqlite::Transaction, sql: &Sql, job: &str, delta: &Counters) -> Result<()> {
    let mut args: Vec<rusqlite::types::Value> = delta.values().into_iter().map(Into::into).collect();
    args.push(now_ms().into());
    args.push(job.to_string().into());
    let changed = tx.execute(&sql.add_counters, rusqlite::params_from_iter(args)).map_err(db_err)?;
    if changed == 0 {
        return Err(Error::NotFound(format!("job {job} does not exist")));
    }
    Ok(())
}

/// Applies one completion inside `tx` (the caller commits on `Now`).
fn complete_in(
    tx: &rusqlite::Transaction,
    sql: &Sql,
    c: &SegmentCompletion,
    children: &[KeyRange],
) -> Result<Recorded> {
    let seg = seg_state(tx, &c.job, &c.range)?;
    if seg.done {
        return Ok(Recorded::Already);
    }
    // A split segment's children exist and count already: the same ones, or refused.
    let created = match seg.children.is_empty() {
        true => create_children(tx, &c.job, children)?,
        false if seg.children == children => seg.outcome.outstanding,
        false => return Err(split_mismatch(&c.range)),
    };
    let outcome = Counters { outstanding: created - 1, segments_done: 1, ..c.delta };
    tx.execute(
        "UPDATE jobstore_segment SET done = 1, children = ?3, outcome = ?4, worker = ?5, started_ms = ?6, finished_ms = ?7 WHERE job = ?1 AND id = ?2 AND done = 0",
        params![
            c.job,
            c.range.id(),
            serde_json::to_string(children)?,
            serde_json::to_string(&outcome)?,
            c.worker,
            c.started_ms,
            c.finished_ms
        ],
    )
    .map_err(db_err)?;
    for i in &c.issues {
        tx.execute(
            "INSERT OR IGNORE INTO jobstore_issue (job, key, kind, body) VALUES (?1, ?2, ?3, ?4)",
            params![c.job, i.key, kind_name(i.kind)?, serde_json::to_string(i)?],
        )
        .map_err(db_err)?;
    }
    // The split's addition is in the job already; only the rest is added now.
    add_counters(tx, sql, &c.job, &Counters { outstanding: outcome.outstanding - seg.outcome.outstanding, ..outcome })?;
    Ok(Recorded::Now)
}

/// Applies one split inside `tx` (the caller commits on `Now`).
fn split_in(
    tx: &rusqlite::Transaction,
    sql: &Sql,
    job: &str,
    range: &KeyRange,
    children: &[KeyRange],
) -> Result<(Recorded, Vec<KeyRange>)> {
    let seg = seg_state(tx, job, range)?;
    if seg.done || !seg.children.is_empty() {
        return Ok((Recorded::Already, seg.children));
    }
    let created = create_children(tx, job, children)?;
    let outcome = Counters { outstanding: created, ..Default::default() };
    tx.execute(
        "UPDATE jobstore_segment SET children = ?3, outcome = ?4 WHERE job = ?1 AND id = ?2 AND done = 0",
        params![job, range.id(), serde_json::to_string(children)?, serde_json::to_string(&outcome)?],
    )
    .map_err(db_err)?;
    add_counters(tx, sql, job, &outcome)?;
    Ok((Recorded::Now, children.to_vec()))
}

fn immediate(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn create_job(&self, spec: &JobSpec, first: &[KeyRange]) -> Result<Recorded> {
        validate_job_id(&spec.id)?;
        let first = crate::jobstore::distinct(first, "first segments")?;
        let (id, spec_json) = (spec.id.clone(), serde_json::to_string(spec)?);
        self.call(move |conn, _| {
            let tx = immediate(conn)?;
            let now = now_ms();
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO jobstore_job (id, spec, state, created_ms, updated_ms, c_outstanding) VALUES (?1, ?2, 'running', ?3, ?3, ?4)",
                    params![id, spec_json, now, first.len() as i64],
                )
                .map_err(db_err)?;
            if inserted == 0 {
                return Ok(Recorded::Already);
            }
            for r in &first {
                // REPLACE, like the DynamoDB Put: a new job owns no segments yet.
                tx.execute(
                    "INSERT OR REPLACE INTO jobstore_segment (job, id, start_after, end_key) VALUES (?1, ?2, ?3, ?4)",
                    params![id, r.id(), r.start_after, r.end],
                )
                .map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
            Ok(Recorded::Now)
        })
        .await
    }

    async fn create_failed(&self, spec: &JobSpec, message: &str) -> Result<Recorded> {
        validate_job_id(&spec.id)?;
        let (id, spec_json, message) = (spec.id.clone(), serde_json::to_string(spec)?, message.to_string());
        self.call(move |conn, _| {
            let now = now_ms();
            let inserted = conn
                .execute(
                    "INSERT OR IGNORE INTO jobstore_job (id, spec, state, message, created_ms, updated_ms) VALUES (?1, ?2, 'failed', ?3, ?4, ?4)",
                    params![id, spec_json, message, now],
                )
                .map_err(db_err)?;
            Ok(if inserted == 0 { Recorded::Already } else { Recorded::Now })
        })
        .await
    }

    async fn running(&self) -> Result<Vec<JobRecord>> {
        self.call(move |conn, sql| {
            let q = format!("{} WHERE state = 'running' ORDER BY created_ms DESC, rowid DESC", sql.select_job);
            let mut st = conn.prepare_cached(&q).map_err(db_err)?;
            let mut rows = st.query([]).map_err(db_err)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(db_err)? {
                out.push(job_from_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn note(&self, job: &str, message: Option<&str>) -> Result<()> {
        let (job, message) = (job.to_string(), message.map(str::to_string));
        self.call(move |conn, _| {
            conn.execute(
                "UPDATE jobstore_job SET message = ?2 WHERE id = ?1 AND state = 'running' AND message IS NOT ?2",
                params![job, message],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        let id = id.to_string();
        self.call(move |conn, sql| read_job(conn, sql, &id)).await
    }

    async fn jobs(&self, limit: usize, after: Option<&JobCursor>) -> Result<Vec<JobRecord>> {
        let after = after.map(|c| (c.created_ms, c.id.clone()));
        self.call(move |conn, sql| {
            // rowid breaks ties between jobs created in the same millisecond.
            let q = format!(
                "{} WHERE ?2 IS NULL OR created_ms < ?2 \
                 OR (created_ms = ?2 AND rowid < (SELECT rowid FROM jobstore_job WHERE id = ?3)) \
                 ORDER BY created_ms DESC, rowid DESC LIMIT ?1",
                sql.select_job
            );
            let mut st = conn.prepare_cached(&q).map_err(db_err)?;
            let (ms, id) = (after.as_ref().map(|a| a.0), after.map(|a| a.1));
            let mut rows = st.query(params![limit as i64, ms, id]).map_err(db_err)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(db_err)? {
                out.push(job_from_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn segment(&self, job: &str, range: &KeyRange) -> Result<Option<SegmentRecord>> {
        let (job, id) = (job.to_string(), range.id());
        self.call(move |conn, _| {
            let q = format!("SELECT {SEGMENT_COLUMNS} FROM jobstore_segment WHERE job = ?1 AND id = ?2");
            let mut st = conn.prepare_cached(&q).map_err(db_err)?;
            let mut rows = st.query([job, id]).map_err(db_err)?;
            rows.next().map_err(db_err)?.map(segment_from_row).transpose()
        })
        .await
    }

    async fn segments(&self, job: &str, limit: usize) -> Result<Vec<SegmentRecord>> {
        let job = job.to_string();
        self.call(move |conn, _| {
            let q = format!("SELECT {SEGMENT_COLUMNS} FROM jobstore_segment WHERE job = ?1 LIMIT ?2");
            let mut st = conn.prepare_cached(&q).map_err(db_err)?;
            let mut rows = st.query(params![job, limit as i64]).map_err(db_err)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(db_err)? {
                out.push(segment_from_row(r)?);
            }
            Ok(out)
        })
        .await
    }

    async fn complete_segment(&self, c: &SegmentCompletion) -> Result<Recorded> {
        let children = crate::jobstore::completion_children(c)?;
        let c = c.clone();
        self.call(move |conn, sql| {
            let tx = immediate(conn)?;
            let r = complete_in(&tx, sql, &c, &children)?;
            if r == Recorded::Now {
                tx.commit().map_err(db_err)?;
            }
            Ok(r)
        })
        .await
    }

    async fn split_segment(
        &self,
        job: &str,
        range: &KeyRange,
        children: &[KeyRange],
    ) -> Result<(Recorded, Vec<KeyRange>)> {
        let children = crate::jobstore::split_children(range, children)?;
        let (job, range) = (job.to_string(), range.clone());
        self.call(move |conn, sql| {
            let tx = immediate(conn)?;
            let r = split_in(&tx, sql, &job, &range, &children)?;
            if r.0 == Recorded::Now {
                tx.commit().map_err(db_err)?;
            }
            Ok(r)
        })
        .await
    }

    async fn mark_moved(&self, job: &str, range: &KeyRange, marks: &[String]) -> Result<()> {
        let (job, id, marks) = (job.to_string(), range.id(), marks.to_vec());
        self.call(move |conn, _| {
            let tx = immediate(conn)?;
            let moved: Option<String> = tx
                .query_row("SELECT moved FROM jobstore_segment WHERE job = ?1 AND id = ?2", params![job, id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(db_err)?;
            let Some(moved) = moved else {
                return Err(Error::NotFound(format!("job {job} has no segment {id}")));
            };
            let mut set: std::collections::BTreeSet<String> = serde_json::from_str(&moved)?;
            set.extend(marks);
            tx.execute(
                "UPDATE jobstore_segment SET moved = ?3 WHERE job = ?1 AND id = ?2",
                params![job, id, serde_json::to_string(&set)?],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn finalize(&self, job: &str) -> Result<Option<JobState>> {
        let job = job.to_string();
        self.call(move |conn, sql| {
            let tx = immediate(conn)?;
            let Some(rec) = read_job(&tx, sql, &job)? else {
                return Ok(None);
            };
            if rec.state != JobState::Running || rec.counters.outstanding > 0 {
                return Ok(Some(rec.state));
            }
            let state = rec.final_state();
            tx.execute(
                "UPDATE jobstore_job SET state = ?2, updated_ms = ?3 WHERE id = ?1",
                params![job, state.as_str(), now_ms()],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(Some(state))
        })
        .await
    }

    async fn control(&self, job: &str, action: JobControl) -> Result<Option<JobState>> {
        let job = job.to_string();
        self.call(move |conn, _| {
            let (from, to) = action.transition();
            let tx = immediate(conn)?;
            let state: Option<String> = tx
                .query_row("SELECT state FROM jobstore_job WHERE id = ?1", [&job], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            let Some(now) = state.as_deref().and_then(JobState::parse) else {
                return Ok(None);
            };
            if !from.contains(&now) {
                return Ok(Some(now));
            }
            tx.execute(
                "UPDATE jobstore_job SET state = ?2, updated_ms = ?3 WHERE id = ?1",
                params![job, to.as_str(), now_ms()],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(Some(to))
        })
        .await
    }

    async fn fail(&self, job: &str, message: &str) -> Result<()> {
        let (job, message) = (job.to_string(), message.to_string());
        self.call(move |conn, _| {
            let tx = immediate(conn)?;
            let state: Option<String> = tx
                .query_row("SELECT state FROM jobstore_job WHERE id = ?1", [&job], |r| r.get(0))
                .optional()
                .map_err(db_err)?;
            match state.as_deref().map(JobState::parse) {
                None => Err(Error::NotFound(format!("job {job} does not exist"))),
                Some(Some(JobState::Running)) => {
                    tx.execute(
                        "UPDATE jobstore_job SET state = 'failed', message = ?2, updated_ms = ?3 WHERE id = ?1",
                        params![job, message, now_ms()],
                    )
                    .map_err(db_err)?;
                    tx.commit().map_err(db_err)
                }
                Some(_) => Ok(()),
            }
        })
        .await
    }

    async fn issues(&self, job: &str, after: Option<&ObjectIssue>, limit: usize) -> Result<Vec<ObjectIssue>> {
        let job = job.to_string();
        let after = match after {
            Some(i) => Some((i.key.clone(), kind_name(i.kind)?)),
            None => None,
        };
        self.call(move |conn, _| {
            let (key, kind) = after.unwrap_or_default();
            // No cursor: ("", "") precedes every row, as no stored kind is empty.
            let mut st = conn
                .prepare_cached(
                    "SELECT body FROM jobstore_issue WHERE job = ?1 AND (key, kind) > (?2, ?3) ORDER BY key, kind LIMIT ?4",
                )
                .map_err(db_err)?;
            let mut rows = st.query(params![job, key, kind, limit as i64]).map_err(db_err)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(db_err)? {
                let body: String = r.get(0).map_err(db_err)?;
                out.push(serde_json::from_str(&body)?);
            }
            Ok(out)
        })
        .await
    }
}
