//! The SQLite job store's tables, the statements generated from [`Counters::NAMES`], the
//! schema migration, and the mapping between rows and domain records.

use std::collections::HashSet;

use rusqlite::{Connection, Row, TransactionBehavior};

use crate::error::{Error, Result};
use crate::model::{Counters, JobRecord, JobSpec, JobState, KeyRange, SegmentRecord};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobstore_job (
    id TEXT PRIMARY KEY NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobstore_job_by_created ON jobstore_job (created_ms);
CREATE TABLE IF NOT EXISTS jobstore_segment (
    job TEXT NOT NULL,
    id TEXT NOT NULL,
    start_after TEXT NOT NULL,
    end_key TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    children TEXT NOT NULL DEFAULT '[]',
    outcome TEXT NOT NULL DEFAULT '{}',
    worker TEXT,
    started_ms INTEGER NOT NULL DEFAULT 0,
    finished_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobstore_issue (
    job TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (job, key, kind)
) WITHOUT ROWID;
";

pub(super) const SEGMENT_COLUMNS: &str =
    "id, start_after, end_key, done, children, outcome, worker, started_ms, finished_ms, moved";

/// Statements generated from [`Counters::NAMES`].
pub(super) struct Sql {
    /// `SELECT <job columns> FROM jobstore_job`, to which callers add a clause.
    pub(super) select_job: String,
    /// Adds `?1..?n` (counters in NAMES order) to job `?n+2`, setting `updated_ms = ?n+1`.
    pub(super) add_counters: String,
}

impl Sql {
    pub(super) fn new() -> Self {
        let cols: Vec<String> = Counters::NAMES.iter().map(|n| format!("c_{n}")).collect();
        let n = cols.len();
        let sets: Vec<String> = cols.iter().enumerate().map(|(i, c)| format!("{c} = {c} + ?{}", i + 1)).collect();
        Sql {
            select_job: format!(
                "SELECT spec, state, message, created_ms, updated_ms, {} FROM jobstore_job",
                cols.join(", ")
            ),
            add_counters: format!(
                "UPDATE jobstore_job SET {}, updated_ms = ?{} WHERE id = ?{}",
                sets.join(", "),
                n + 1,
                n + 2
            ),
        }
    }
}

/// The tables of a new file: [`SCHEMA`] (the first version's, which older files have) with
/// every counter's column and the segment's `moved` in it, so a new file needs no ALTER
/// TABLE (each one re-reads the whole schema: a score of them was most of the time to open a
/// new state file).
pub(super) fn fresh_schema() -> String {
    let counters: String = Counters::NAMES.iter().map(|n| format!(",\n    c_{n} INTEGER NOT NULL DEFAULT 0")).collect();
    SCHEMA
        .replacen("    updated_ms INTEGER NOT NULL\n", &format!("    updated_ms INTEGER NOT NULL{counters}\n"), 1)
        .replacen(
            "    finished_ms INTEGER NOT NULL DEFAULT 0,\n",
            "    finished_ms INTEGER NOT NULL DEFAULT 0,\n    moved TEXT NOT NULL DEFAULT '[]',\n",
            1,
        )
}

/// Creates the tables, and a `c_<name>` column for every counter the file lacks.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    tx.execute_batch(&fresh_schema()).map_err(db_err)?;
    let have: HashSet<String> = {
        let mut st = tx.prepare("SELECT name FROM pragma_table_info('jobstore_job')").map_err(db_err)?;
        st.query_map([], |r| r.get(0)).map_err(db_err)?.collect::<rusqlite::Result<_>>().map_err(db_err)?
    };
    for name in Counters::NAMES {
        if !have.contains(&format!("c_{name}")) {
            let ddl = format!("ALTER TABLE jobstore_job ADD COLUMN c_{name} INTEGER NOT NULL DEFAULT 0");
            tx.execute(&ddl, []).map_err(db_err)?;
        }
    }
    let seg_has_moved: bool = tx
        .query_row("SELECT COUNT(*) FROM pragma_table_info('jobstore_segment') WHERE name = 'moved'", [], |r| r.get(0))
        .map_err(db_err)?;
    if !seg_has_moved {
        tx.execute("ALTER TABLE jobstore_segment ADD COLUMN moved TEXT NOT NULL DEFAULT '[]'", []).map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

/// `Transient` for lock contention, `Permanent` otherwise.
pub(super) fn db_err(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => Error::transient(format!("sqlite: {e}")),
        _ => Error::permanent(format!("sqlite: {e}")),
    }
}

pub(super) fn job_from_row(r: &Row) -> Result<JobRecord> {
    let spec: JobSpec = serde_json::from_str(&r.get::<_, String>(0).map_err(db_err)?)?;
    let state: String = r.get(1).map_err(db_err)?;
    let mut values = Vec::with_capacity(Counters::NAMES.len());
    for i in 0..Counters::NAMES.len() {
        values.push(r.get::<_, i64>(5 + i).map_err(db_err)?);
    }
    Ok(JobRecord {
        state: JobState::parse(&state)
            .ok_or_else(|| Error::permanent(format!("job {}: unknown state {state:?}", spec.id)))?,
        spec,
        counters: Counters::from_values(&values),
        message: r.get(2).map_err(db_err)?,
        created_ms: r.get(3).map_err(db_err)?,
        updated_ms: r.get(4).map_err(db_err)?,
    })
}

pub(super) fn segment_from_row(r: &Row) -> Result<SegmentRecord> {
    let children: String = r.get(4).map_err(db_err)?;
    let outcome: String = r.get(5).map_err(db_err)?;
    Ok(SegmentRecord {
        id: r.get(0).map_err(db_err)?,
        range: KeyRange { start_after: r.get(1).map_err(db_err)?, end: r.get(2).map_err(db_err)? },
        done: r.get(3).map_err(db_err)?,
        children: serde_json::from_str(&children)?,
        outcome: serde_json::from_str(&outcome)?,
        worker: r.get(6).map_err(db_err)?,
        started_ms: r.get(7).map_err(db_err)?,
        finished_ms: r.get(8).map_err(db_err)?,
        moved: serde_json::from_str(&r.get::<_, String>(9).map_err(db_err)?)?,
    })
}

pub(super) fn read_job(conn: &Connection, sql: &Sql, id: &str) -> Result<Option<JobRecord>> {
    let q = format!("{} WHERE id = ?1", sql.select_job);
    let mut st = conn.prepare_cached(&q).map_err(db_err)?;
    let mut rows = st.query([id]).map_err(db_err)?;
    match rows.next().map_err(db_err)? {
        Some(r) => job_from_row(r).map(Some),
        None => Ok(None),
    }
}
