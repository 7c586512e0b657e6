//! The distributed service's commands: `init` (queues and table), `coordinator` and `worker`
//! (long-running daemons), `submit` (a request message) and `status` (read the table).
//! The AWS backends are chosen here, once; the engine only sees the ports.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use coordinator::Intake;
use coordinator::service::CoordinatorConfig;
use shared::backend::StoreFactory;
use shared::backend::aws::AwsContext;
use shared::backend::aws::dynamo::DynamoJobStore;
use shared::backend::aws::sqs::{QueueSettings, SqsQueue};
use shared::jobstore::JobStore;
use shared::model::{JobControl, JobOptions, JobRecord, JobSpec, Location};
use shared::queue::WorkQueue;
use shared::wire::CloneRequest;
use shared::{Error, Result};
use worker::{Worker, WorkerConfig};

use crate::settings::Settings;

fn queue_settings(s: &Settings) -> QueueSettings {
    QueueSettings {
        visibility_secs: s.queue.visibility_secs,
        max_receives: s.queue.max_receives,
        retention_secs: s.queue.retention_secs,
    }
}

/// `bucketclone init`: creates (idempotently) both queues with their dead-letter queues,
/// and the table. Prints what exists afterwards.
pub async fn init(s: &Settings) -> Result<()> {
    let stores = StoreFactory::new();
    let ctx = stores.aws().await;
    let qs = queue_settings(s);
    for name in [s.requests_queue(), s.segments_queue()] {
        SqsQueue::ensure(ctx, &name, &qs).await?;
        println!("queue {name} (dead letters: {name}-dlq, after {} receives)", qs.max_receives);
    }
    DynamoJobStore::ensure_table(ctx, s.table()).await?;
    println!("table {}", s.table());
    Ok(())
}

/// The job table the settings name, keeping settled items `table.retention_days`.
fn job_store(ctx: &AwsContext, s: &Settings) -> DynamoJobStore {
    DynamoJobStore::new(ctx, s.table()).with_retention_days(s.table.retention_days)
}

struct Service {
    jobs: Arc<dyn JobStore>,
    segments: Arc<dyn WorkQueue>,
    stores: Arc<StoreFactory>,
}

async fn connect(s: &Settings) -> Result<Service> {
    let stores = Arc::new(StoreFactory::new());
    let ctx = stores.aws().await;
    let hint = |e: Error| match e {
        Error::NotFound(m) => Error::invalid(format!("{m} (run `bucketclone init --name {}` first)", s.name)),
        other => other,
    };
    let segments = Arc::new(SqsQueue::open(ctx, &s.segments_queue()).await.map_err(hint)?);
    let jobs = Arc::new(job_store(ctx, s));
    Ok(Service { jobs, segments, stores })
}

/// A watch channel that turns true on SIGTERM or Ctrl-C.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stop signal received");
        let _ = tx.send(true);
    });
    rx
}

/// The coordinator's view of the deployment: its table and segment queue, and what
/// requests may name (from the settings).
fn intake(s: &Settings, svc: Service) -> Intake {
    Intake {
        jobs: svc.jobs,
        segments: svc.segments,
        stores: svc.stores,
        policy: coordinator::Policy {
            local: coordinator::LocalPaths::Under(s.local_roots.clone()),
            connections: coordinator::Connections::Allowed {
                profiles: s.allowed_profiles.clone(),
                endpoints: s.allowed_endpoints.clone(),
            },
        },
    }
}

/// `bucketclone pause|resume|cancel JOB`: changes the job's state in the table directly
/// (resuming re-sends its pending segments); prints the state after.
pub async fn control(s: &Settings, id: &str, action: JobControl) -> Result<()> {
    let svc = connect(s).await?;
    let state = coordinator::control(&intake(s, svc), id, action).await.map_err(|e| match e {
        Error::NotFound(_) => Error::invalid(format!("no job {id} in table {}", s.table())),
        Error::Conflict(m) => Error::invalid(m),
        other => other,
    })?;
    println!("{id} {}", state.as_str());
    Ok(())
}

/// `bucketclone coordinator`: runs until SIGTERM.
pub async fn run_coordinator(s: &Settings) -> Result<()> {
    let svc = connect(s).await?;
    let requests = Arc::new(SqsQueue::open(svc.stores.aws().await, &s.requests_queue()).await?);
    let intake = intake(s, svc);
    let cfg = CoordinatorConfig { http_addr: s.http()?, ..Default::default() };
    shared::telemetry::install();
    coordinator::service::run(intake, requests, cfg, stop_on_signal(), None).await
}

/// `bucketclone worker`: runs until SIGTERM, then drains and exits 0.
pub async fn run_worker(s: &Settings) -> Result<()> {
    let svc = connect(s).await?;
    let mut cfg = WorkerConfig {
        segments_in_flight: s.worker.segments_in_flight,
        copy_concurrency: s.worker.concurrency,
        lease: Duration::from_secs(s.worker.lease_secs),
        drain: Duration::from_secs(s.worker.drain_secs),
        poll_wait: Duration::from_secs(10),
        ecs_agent_uri: std::env::var("ECS_AGENT_URI").ok(),
        ..WorkerConfig::default()
    };
    if let Ok(host) = std::env::var("HOSTNAME") {
        cfg.id = format!("{host}-{}", std::process::id());
    }
    tracing::info!(worker = %cfg.id, "worker starting");
    shared::telemetry::install();
    let stop = stop_on_signal();
    let server = match s.worker.http_addr.as_str() {
        "" => None,
        addr => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                tracing::info!(addr = %l.local_addr()?, "worker HTTP (/metrics, /healthz) listening");
                Some(tokio::spawn(worker::http::serve(l, svc.segments.clone(), svc.jobs.clone(), stop.clone())))
            }
            // Another worker on this machine has it: work anyway, without the port.
            Err(e) => {
                tracing::warn!(addr, error = %e, "worker HTTP port unavailable; running without /metrics and /healthz");
                None
            }
        },
    };
    let worker = Worker::new(cfg, svc.segments, svc.jobs, svc.stores);
    let run = worker.clone().run(stop).await;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let st = &worker.stats;
    tracing::info!(
        pages = n(&st.pages),
        copies = n(&st.copies),
        list_calls = n(&st.list_calls),
        splits = n(&st.splits),
        leases_lost = n(&st.leases_lost),
        "worker stopped; its work since it started"
    );
    if let Some(s) = server {
        let _ = s.await;
    }
    run
}

/// `bucketclone submit`: sends a clone request and returns the job id.
pub async fn submit(
    s: &Settings,
    src: Location,
    dst: Location,
    id: Option<String>,
    options: JobOptions,
) -> Result<String> {
    let id = id.unwrap_or_else(|| format!("job-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
    let spec = JobSpec { id: id.clone(), source: src, destination: dst, options };
    spec.validate()?;
    let stores = StoreFactory::new();
    let q = SqsQueue::open(stores.aws().await, &s.requests_queue()).await.map_err(|e| match e {
        Error::NotFound(m) => Error::invalid(format!("{m} (run `bucketclone init --name {}` first)", s.name)),
        other => other,
    })?;
    let body = [serde_json::to_string(&CloneRequest::from_spec(&spec))?];
    shared::error::with_retries(|| q.push(&body)).await?;
    Ok(id)
}

/// `submit --wait`: waits for the coordinator to take the request (at most a minute), then
/// watches the job to its end; exits as `status` does.
pub async fn wait(s: &Settings, id: &str) -> Result<std::process::ExitCode> {
    let jobs = job_store(StoreFactory::new().aws().await, s);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while jobs.job(id).await?.is_none() {
        if std::time::Instant::now() > deadline {
            return Err(Error::transient(format!(
                "job {id} was not accepted within a minute: is a coordinator running for {}?",
                s.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    status(s, Some(id), false, true).await
}

/// `bucketclone status`: one job (or all), as JSON documents or a table, once or watched.
pub async fn status(s: &Settings, job: Option<&str>, json: bool, watch: bool) -> Result<std::process::ExitCode> {
    let stores = StoreFactory::new();
    let jobs = job_store(stores.aws().await, s);
    let segments = SqsQueue::open(stores.aws().await, &s.segments_queue()).await.ok();
    // Watching one job on a terminal: a live progress line, then the final status.
    let mut progress = crate::progress::Progress::new(watch && job.is_some() && !json);
    loop {
        let list: Vec<JobRecord> = match job {
            Some(id) => {
                vec![jobs.job(id).await?.ok_or_else(|| Error::invalid(format!("no job {id} in table {}", s.table())))?]
            }
            None => jobs.jobs(100, None).await?,
        };
        if progress.active() && !list[0].state.is_terminal() {
            progress.update(&list[0]);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        progress.finish();
        let dead = match &segments {
            Some(q) if q.depth().await.is_ok_and(|d| d.dead_letters > 0) => {
                coordinator::supervisor::dead_segments_by_job(q, 1000).await
            }
            _ => Default::default(),
        };
        let dead_of = |j: &JobRecord| dead.get(&j.spec.id).map_or(0, |d| d.len());
        let docs: Vec<_> = list
            .iter()
            .map(|j| {
                let mut d = coordinator::status::document(j);
                d["dead_letter_segments"] = serde_json::json!(dead_of(j));
                d
            })
            .collect();
        if json {
            let v = if job.is_some() { docs[0].clone() } else { serde_json::Value::Array(docs) };
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            for j in &list {
                println!("{}", human(j));
                if dead_of(j) > 0 {
                    println!("  dead letters: {} segment(s) of this job (README: Dead letters)", dead_of(j));
                }
            }
        }
        let done = list.iter().all(|j| j.state.is_terminal());
        if !watch || done {
            // One job: its state's code (a running one, only looked at, is fine: 0).
            return Ok(match list.first().map(|j| j.state) {
                Some(st) if job.is_some() && st.is_terminal() => crate::exit_code(st),
                _ => std::process::ExitCode::SUCCESS,
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn human(j: &JobRecord) -> String {
    let c = &j.counters;
    let d = coordinator::status::document(j);
    let mut s = format!(
        "{}  {}  {} -> {}\n  segments {} done, {} outstanding | objects {} seen, {} copied ({}), {} verified, {} failed | {} obj/s",
        j.spec.id,
        j.state.as_str().to_uppercase(),
        j.spec.source,
        j.spec.destination,
        c.segments_done,
        c.outstanding,
        c.source_objects,
        c.copied_objects,
        crate::report::human_bytes(c.copied_bytes),
        c.verified_objects,
        c.failed_objects,
        d["objects_per_second"],
    );
    if let Some(eta) = d["eta_seconds"].as_f64() {
        s += &format!(" | ETA ~{eta:.0}s");
    }
    s += &format!(
        "\n  source {} objects {} | destination {} objects {}",
        c.source_objects,
        crate::report::human_bytes(c.source_bytes),
        c.dest_objects,
        crate::report::human_bytes(c.dest_bytes)
    );
    let differences = [
        ("missing", c.missing),
        ("extra", c.extra),
        ("size differs", c.size_differs),
        ("content differs", c.content_differs),
        ("unverifiable", c.unverifiable),
        ("uncopyable", c.uncopyable),
        ("needs restore", c.needs_restore),
        ("segments failed", c.segments_failed),
    ];
    let found: Vec<String> = differences.iter().filter(|(_, n)| *n > 0).map(|(w, n)| format!("{w} {n}")).collect();
    if !found.is_empty() {
        s += &format!("\n  differences: {}", found.join(", "));
    }
    if let Some(m) = &j.message {
        let label = if j.state == shared::model::JobState::Failed { "error" } else { "note" };
        s += &format!("\n  {label}: {m}");
    }
    s
}
