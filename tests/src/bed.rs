//! An in-process test bed for the engine on the embedded backends: a source directory of
//! small files, a destination, a SQLite job store and queue, and workers run until the job
//! ends. Stores can be wrapped (faults, delays) by registering them in the bed's factory
//! before the workers start; so can the job store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use coordinator::{Intake, Policy};
use shared::backend::StoreFactory;
use shared::backend::embedded::local_dir::LocalDirStore;
use shared::backend::embedded::{sqlite_jobstore::SqliteJobStore, sqlite_queue::SqliteQueue};
use shared::jobstore::JobStore;
use shared::model::{JobOptions, JobRecord, JobSpec, Location};
use shared::objstore::ObjectStore;
use worker::{Worker, WorkerConfig};

use crate::write_tree;

/// One job over `files` small files under `k/`, and everything to run it.
pub struct Bed {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub dst: PathBuf,
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<SqliteQueue>,
    pub stores: Arc<StoreFactory>,
    pub spec: JobSpec,
}

impl Bed {
    /// `files` files `k/0000`.. with distinct contents; a job `j` with `page_size` keys per page.
    pub fn new(files: usize, page_size: u32) -> Bed {
        let dir = tempfile::tempdir().expect("tempdir");
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        let content = (0..files).map(|i| (format!("k/{i:04}"), format!("content {i}").into_bytes())).collect();
        write_tree(&src, &content);
        std::fs::create_dir_all(&dst).expect("mkdir dst");
        let state = dir.path().join("s.sqlite");
        let jobs: Arc<dyn JobStore> = Arc::new(SqliteJobStore::open(&state).expect("job store"));
        let queue = Arc::new(SqliteQueue::open(&state, "segments").expect("queue"));
        let spec = JobSpec {
            id: "j".into(),
            source: Location::local(&src).expect("src"),
            destination: Location::local(&dst).expect("dst"),
            options: JobOptions { page_size, ..Default::default() },
        };
        Bed { dir, src, dst, jobs, queue, stores: Arc::new(StoreFactory::new()), spec }
    }

    /// The source directory as a plain store (to wrap and register with [`Bed::wrap_source`]).
    pub fn source_store(&self) -> Arc<dyn ObjectStore> {
        Arc::new(LocalDirStore::new(self.src.to_str().expect("utf-8 path")).expect("store"))
    }

    /// Makes the engine see `store` as the job's source.
    pub fn wrap_source(&self, store: Arc<dyn ObjectStore>) {
        self.stores.insert(&self.spec.source, store);
    }

    /// The coordinator's intake over this bed (any local path allowed).
    pub fn intake(&self) -> Intake {
        Intake {
            jobs: self.jobs.clone(),
            segments: self.queue.clone(),
            stores: self.stores.clone(),
            policy: Policy::open(),
        }
    }

    /// A worker configuration for tests: quick polls and quick retries.
    pub fn worker_config(i: usize) -> WorkerConfig {
        WorkerConfig {
            id: format!("w{i}"),
            poll_wait: Duration::from_millis(20),
            retry_delay: Duration::from_millis(100),
            ..Default::default()
        }
    }

    /// Runs `n` workers configured by `cfg` until the job is terminal or `limit` passes;
    /// returns the job as it stands then.
    pub async fn work(&self, n: usize, limit: Duration, cfg: impl Fn(usize) -> WorkerConfig) -> JobRecord {
        self.work_with(n, limit, cfg, self.jobs.clone()).await
    }

    /// [`Bed::work`], the workers going through `jobs` (a wrapper of the bed's job store,
    /// say), the bed watching the job through its own.
    pub async fn work_with(
        &self,
        n: usize,
        limit: Duration,
        cfg: impl Fn(usize) -> WorkerConfig,
        jobs: Arc<dyn JobStore>,
    ) -> JobRecord {
        let (stop, rx) = watch::channel(false);
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let w = Worker::new(cfg(i), self.queue.clone(), jobs.clone(), self.stores.clone());
                tokio::spawn(w.run(rx.clone()))
            })
            .collect();
        let start = tokio::time::Instant::now();
        let job = loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let j = self.jobs.job(&self.spec.id).await.expect("job").expect("job exists");
            if j.state.is_terminal() || start.elapsed() > limit {
                break j;
            }
        };
        stop.send(true).expect("stop");
        for h in handles {
            h.await.expect("worker task").expect("worker run");
        }
        job
    }
}
