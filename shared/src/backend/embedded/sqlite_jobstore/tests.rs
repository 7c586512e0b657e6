//! The SQLite job store: the conformance suite on temp files, persistence, migration.

use super::schema::SCHEMA;
use super::*;
use crate::model::Location;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_job_store_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    crate::conformance::jobstore::run(|| {
        let path = dir.path().join(format!("jobs-{}.sqlite", n.fetch_add(1, Ordering::SeqCst)));
        async move { Arc::new(SqliteJobStore::open(&path).unwrap()) as Arc<dyn JobStore> }
    })
    .await;
}

#[tokio::test]
async fn survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.sqlite");
    let spec = JobSpec {
        id: "reopen".into(),
        source: Location::s3("src-bkt", "").unwrap(),
        destination: Location::s3("dst-bkt", "x/").unwrap(),
        options: Default::default(),
    };
    let (all, kid) = (KeyRange::all(), KeyRange { start_after: "k".into(), end: None });
    let issue = ObjectIssue {
        key: "a b".into(),
        kind: IssueKind::Missing,
        source: None,
        destination: None,
        detail: Some("gone".into()),
    };
    let before = {
        let store = SqliteJobStore::open(&path).unwrap();
        store.create_job(&spec, std::slice::from_ref(&all)).await.unwrap();
        let c = SegmentCompletion {
            job: "reopen".into(),
            range: all.clone(),
            delta: Counters { missing: 1, source_objects: 4, ..Default::default() },
            children: vec![kid.clone()],
            issues: vec![issue.clone()],
            worker: "w".into(),
            started_ms: 5,
            finished_ms: 6,
        };
        assert_eq!(store.complete_segment(&c).await.unwrap(), Recorded::Now);
        store.job("reopen").await.unwrap().unwrap()
    };
    let store = SqliteJobStore::open(&path).unwrap();
    let after = store.job("reopen").await.unwrap().unwrap();
    assert_eq!(after, before, "the job survives reopening");
    assert_eq!((after.counters.missing, after.counters.outstanding), (1, 1));
    assert!(store.segment("reopen", &all).await.unwrap().unwrap().done);
    assert!(!store.segment("reopen", &kid).await.unwrap().unwrap().done);
    assert_eq!(store.issues("reopen", None, 10).await.unwrap(), vec![issue]);
}

/// A new file is made with every column: opening it alters nothing.
#[test]
fn a_new_file_has_every_column_from_the_start() {
    let fresh = super::schema::fresh_schema();
    for name in Counters::NAMES {
        assert!(fresh.contains(&format!("c_{name} INTEGER NOT NULL DEFAULT 0")), "{name}: {fresh}");
    }
    assert!(fresh.contains("moved TEXT NOT NULL DEFAULT '[]'"), "{fresh}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.sqlite");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&fresh).unwrap();
    let version = |c: &Connection| c.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0)).unwrap();
    let before = version(&conn);
    drop(conn);
    drop(SqliteJobStore::open(&path).unwrap());
    assert_eq!(version(&Connection::open(&path).unwrap()), before, "opening a new file altered its schema");
}

#[tokio::test]
async fn adds_missing_counter_columns_to_an_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch("ALTER TABLE jobstore_job ADD COLUMN c_outstanding INTEGER NOT NULL DEFAULT 0").unwrap();
    }
    let store = SqliteJobStore::open(&path).unwrap();
    let spec = JobSpec {
        id: "old".into(),
        source: Location::s3("src-bkt", "").unwrap(),
        destination: Location::s3("dst-bkt", "").unwrap(),
        options: Default::default(),
    };
    store.create_job(&spec, &[KeyRange::all()]).await.unwrap();
    let job = store.job("old").await.unwrap().unwrap();
    assert_eq!((job.counters.outstanding, job.counters.missing), (1, 0));
}
