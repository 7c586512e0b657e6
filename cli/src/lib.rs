//! The `bucketclone` command line, as a library so the integration tests can build the very
//! same program (`tests/src/bin`). The binary's `main` only calls [`main`].
//!
//! `bucketclone` is the one user-facing binary. Each subcommand wires the crates together:
//! local jobs on the embedded backends (`clone`, `verify`, `move`, `demo`, `stats`).
//!
//! Exit codes: 0 done and verified; 1 the job finished with differences or failures;
//! 2 usage, configuration or input errors (one line on stderr says which).

pub mod demo;
mod filter_args;
pub mod local;
pub mod progress;
pub mod report;
pub mod service;
pub mod settings;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use shared::error::with_retries;
use shared::filter::{Filter, KeyFilter};
use shared::model::{Connection, JobControl, JobOptions, JobState, Location, Mode, Scheme};
use shared::objstore::StoreOpener;
use shared::{Error, Result};

const EXAMPLES: &str = "\
Examples:
  bucketclone demo                                      # a sample clone on this machine, verified
  bucketclone clone s3://src-bucket s3://dst-bucket/backup
  bucketclone clone ./photos s3://my-bucket/photos --storage-class STANDARD_IA
  bucketclone clone s3://data s3://data --source-endpoint-url https://minio.internal:9000 \\
      --source-profile minio --destination-profile prod
  bucketclone verify s3://a s3://b --report diff.jsonl
  bucketclone move s3://a/old s3://b/new --dry-run
  bucketclone submit s3://src s3://dst --name prod --wait    # on the deployed service
  bucketclone status JOB --name prod --watch
  bucketclone completions bash > /etc/bash_completion.d/bucketclone

Exit codes: 0 verified; 1 finished with differences or failures, or cancelled; 2 usage,
configuration or input errors.";

#[derive(Parser)]
#[command(
    name = "bucketclone",
    version,
    about = "Clone very large S3 buckets, verified",
    max_term_width = 100,
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy SRC to DST on this machine, verify every object, resume if interrupted.
    Clone(JobArgs),
    /// Compare SRC with DST and report every difference (never writes).
    Verify(JobArgs),
    /// Clone, verify, then delete from SRC only what was verified identical in DST.
    Move(MoveArgs),
    /// Make a sample source (7,500 objects over 195 prefixes), clone it, verify it.
    Demo(DemoArgs),
    /// Statistics of a bucket, prefix or directory: counts, bytes, per prefix, a digest.
    Stats(StatsArgs),
    /// Create the service's queues (with dead-letter queues) and table. Idempotent.
    Init(ServiceArgs),
    /// Run the coordinator service: accept requests, watch jobs, serve the HTTP API.
    Coordinator(CoordinatorArgs),
    /// Run a worker service: lease segments and work them until SIGTERM, then drain.
    Worker(WorkerArgs),
    /// Send a clone request to the service; prints the job id.
    Submit(SubmitArgs),
    /// Show jobs from the service's table.
    Status(StatusArgs),
    /// Hold a running job: workers take no new page of it until it is resumed.
    Pause(ControlArgs),
    /// Let a paused job go on (its pending segments are sent again).
    Resume(ControlArgs),
    /// Stop a running or paused job for good, keeping its counts. With --state: a job of a
    /// local state file (one a killed `clone` left unfinished), which no rerun then resumes.
    Cancel(CancelArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
struct ControlArgs {
    /// The job's id.
    job: String,
    #[command(flatten)]
    svc: ServiceArgs,
}

#[derive(Args)]
struct CancelArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// Cancel a job of this local state file instead of the service's.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["name", "config"])]
    state: Option<PathBuf>,
}

#[derive(Args)]
struct StatsArgs {
    /// s3://bucket[/prefix] or a local directory.
    location: String,
    #[command(flatten)]
    conn: GlobalConn,
    #[arg(long)]
    json: bool,
    /// Count per prefix down to this many levels.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    #[command(flatten)]
    filters: filter_args::FilterArgs,
}

/// Which deployment to talk to.
#[derive(Args, Clone)]
struct ServiceArgs {
    /// Resource name prefix (queues <name>-requests/-segments, table <name>-jobs). Env: BUCKETCLONE_NAME.
    #[arg(long)]
    name: Option<String>,
    /// A TOML configuration file. Env: BUCKETCLONE_CONFIG.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct CoordinatorArgs {
    #[command(flatten)]
    svc: ServiceArgs,
    /// Address of the HTTP API (default 127.0.0.1:8080). Env: BUCKETCLONE_HTTP_ADDR.
    #[arg(long)]
    http: Option<String>,
}

#[derive(Args)]
struct WorkerArgs {
    #[command(flatten)]
    svc: ServiceArgs,
    /// Object copies in flight. Env: BUCKETCLONE_WORKER__CONCURRENCY.
    #[arg(long)]
    concurrency: Option<usize>,
}

#[derive(Args)]
struct SubmitArgs {
    src: String,
    dst: String,
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    writes: WriteArgs,
    #[command(flatten)]
    archived: ArchivedArgs,
    #[command(flatten)]
    filters: filter_args::FilterArgs,
    /// The job id (default: a new random one). The same id twice is one job.
    #[arg(long)]
    id: Option<String>,
    /// What the job does: clone, verify-only or move.
    #[arg(long, value_enum, default_value = "clone")]
    mode: ModeArg,
    /// Compare only; never write (the same as --mode verify-only).
    #[arg(long)]
    verify_only: bool,
    /// Wait for the job to end, showing its status; exit as `status` does (0 verified).
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    svc: ServiceArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Clone,
    VerifyOnly,
    Move,
}

#[derive(Args)]
struct StatusArgs {
    /// One job's id (default: every job).
    job: Option<String>,
    #[arg(long)]
    json: bool,
    /// Refresh every 2 s until the job ends.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    svc: ServiceArgs,
}

fn settings(a: &ServiceArgs, http: Option<String>, concurrency: Option<usize>) -> Result<settings::Settings> {
    settings::Settings::load(&settings::Overrides {
        config: a.config.clone(),
        name: a.name.clone(),
        http_addr: http,
        concurrency,
    })
}

/// How to reach S3 for every S3 location of the command (over the standard AWS chain).
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Connection (S3 locations)")]
struct GlobalConn {
    /// AWS profile (shared config files) for S3 locations. Default: the standard chain.
    #[arg(long)]
    profile: Option<String>,
    /// Region for S3 locations. Default: each bucket's own, looked up.
    #[arg(long)]
    region: Option<String>,
    /// An S3-compatible endpoint (MinIO, Ceph, R2), e.g. http://minio.internal:9000.
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Accept the request charges of Requester Pays buckets.
    #[arg(long)]
    request_payer: bool,
}

impl GlobalConn {
    fn conn(&self) -> Connection {
        Connection {
            profile: self.profile.clone(),
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            path_style: None,
            request_payer: self.request_payer,
        }
    }
}

/// Per-side connections: each side's flag wins over the global one, so a clone can read
/// MinIO with one profile and write AWS with another.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Connection (S3 locations)")]
struct ConnArgs {
    #[command(flatten)]
    global: GlobalConn,
    /// AWS profile for the source.
    #[arg(long)]
    source_profile: Option<String>,
    /// Region of the source bucket.
    #[arg(long)]
    source_region: Option<String>,
    /// S3-compatible endpoint of the source.
    #[arg(long)]
    source_endpoint_url: Option<String>,
    /// Path-style addressing for the source (default: on for custom endpoints).
    #[arg(long, value_name = "BOOL")]
    source_path_style: Option<bool>,
    /// AWS profile for the destination.
    #[arg(long)]
    destination_profile: Option<String>,
    /// Region of the destination bucket.
    #[arg(long)]
    destination_region: Option<String>,
    /// S3-compatible endpoint of the destination.
    #[arg(long)]
    destination_endpoint_url: Option<String>,
    /// Path-style addressing for the destination (default: on for custom endpoints).
    #[arg(long, value_name = "BOOL")]
    destination_path_style: Option<bool>,
}

impl ConnArgs {
    /// The two locations, each with its connection. Global flags apply to S3 sides only; a
    /// side's own flag on a local directory is an error.
    fn locations(&self, src: &str, dst: &str) -> Result<(Location, Location)> {
        let side =
            |url: &str, profile: &Option<String>, region: &Option<String>, ep: &Option<String>, ps: Option<bool>| {
                let own = Connection {
                    profile: profile.clone(),
                    region: region.clone(),
                    endpoint_url: ep.clone(),
                    path_style: ps,
                    request_payer: false,
                };
                with_global(Location::parse(url)?, own, &self.global)
            };
        let s = side(src, &self.source_profile, &self.source_region, &self.source_endpoint_url, self.source_path_style)
            .map_err(|e| e.context("source"))?;
        let d = side(
            dst,
            &self.destination_profile,
            &self.destination_region,
            &self.destination_endpoint_url,
            self.destination_path_style,
        )
        .map_err(|e| e.context("destination"))?;
        Ok((s, d))
    }
}

/// `loc` with its own connection over the global flags (which only S3 locations take).
fn with_global(loc: Location, own: Connection, global: &GlobalConn) -> Result<Location> {
    let conn = match loc.scheme {
        Scheme::S3 => own.or(&global.conn()),
        Scheme::Local => own,
    };
    loc.with_conn(conn)
}

/// Where and how a local job runs.
#[derive(Args, Clone)]
struct RunArgs {
    /// Workers in this process.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Object copies in flight per worker.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The state file (SQLite) that makes a rerun resume. Default: ~/.local/state/bucketclone/state.sqlite
    #[arg(long)]
    state: Option<PathBuf>,
    /// Print one JSON report object instead of a summary.
    #[arg(long)]
    json: bool,
    /// Keys listed per segment (1-1000).
    #[arg(long, default_value_t = 1000)]
    page_size: u32,
    /// Compare by size alone where a listing has no ETag (no per-object HEAD).
    #[arg(long)]
    size_only: bool,
    /// Report source entries that cannot be copied (a file name that is not UTF-8, a
    /// symlink to a directory) as skipped instead of failing verification.
    #[arg(long)]
    skip_uncopyable: bool,
    #[command(flatten)]
    archived: ArchivedArgs,
    #[command(flatten)]
    writes: WriteArgs,
    #[command(flatten)]
    filters: filter_args::FilterArgs,
}

impl WriteArgs {
    fn apply(&self, o: JobOptions) -> JobOptions {
        JobOptions {
            storage_class: self.storage_class.clone(),
            sse: self.sse.clone(),
            sse_kms_key_id: self.sse_kms_key_id.clone(),
            ..o
        }
    }
}

/// What to do with archived source objects (Glacier Flexible Retrieval, Deep Archive,
/// Intelligent-Tiering archive tiers), which cannot be copied until they are restored.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Archived objects (S3 sources)")]
struct ArchivedArgs {
    /// Report archived objects that are not restored as skipped ("needs restore") instead of
    /// failing verification: the job can end "verified, N skipped".
    #[arg(long)]
    skip_archived: bool,
    /// Ask S3 to restore each archived object for DAYS days (RestoreObject, Standard tier);
    /// run the same job again once the restores are done to copy them.
    #[arg(long, value_name = "DAYS")]
    restore: Option<u32>,
}

impl ArchivedArgs {
    fn apply(&self, o: JobOptions) -> JobOptions {
        JobOptions { skip_archived: self.skip_archived, restore_days: self.restore, ..o }
    }
}

/// How copies are written to an S3 destination, whatever the sources say.
#[derive(Args, Clone, Default)]
#[command(next_help_heading = "Writing (S3 destinations)")]
struct WriteArgs {
    /// Storage class of every copy (STANDARD_IA, GLACIER_IR, ...). Default: the source's.
    #[arg(long, value_name = "CLASS")]
    storage_class: Option<String>,
    /// Server-side encryption of every copy: AES256, aws:kms or aws:kms:dsse. Default: the
    /// destination bucket's default encryption.
    #[arg(long, value_name = "ALGORITHM")]
    sse: Option<String>,
    /// KMS key (id, ARN or alias in the destination's account) for --sse aws:kms.
    #[arg(long, value_name = "KEY")]
    sse_kms_key_id: Option<String>,
}

#[derive(Args)]
struct JobArgs {
    /// s3://bucket[/prefix] or a local directory.
    src: String,
    /// s3://bucket[/prefix] or a local directory.
    dst: String,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    conn: ConnArgs,
    /// Write every difference as one JSON line to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Args)]
struct MoveArgs {
    #[command(flatten)]
    job: JobArgs,
    /// List what would be deleted after a verified copy; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct DemoArgs {
    #[arg(long, default_value_t = 7500)]
    objects: usize,
    #[arg(long, default_value_t = 195)]
    prefixes: usize,
    /// Where to build the sample (kept afterwards). Default: a temporary directory, removed.
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let filters = filter_args::ordered(&matches);
    let daemon = matches!(cli.command, Command::Coordinator(_) | Command::Worker(_));
    init_logs(if daemon { "info" } else { "warn" });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    match rt.block_on(dispatch(cli.command, filters)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The log level: an env-filter, e.g. `info,worker=debug`.
pub const LOG_ENV: &str = "BUCKETCLONE_LOG";
/// The log format: `json` or `text` (default: text on a terminal, JSON otherwise).
pub const LOG_FORMAT_ENV: &str = "BUCKETCLONE_LOG_FORMAT";

/// Logs go to stderr: human lines on a terminal, JSON lines otherwise (a service's log
/// collector, a file), never with colour codes outside a terminal;
/// `BUCKETCLONE_LOG_FORMAT=json|text` decides explicitly. The level comes from
/// `BUCKETCLONE_LOG` (an env-filter, e.g. `info,worker=debug`).
fn init_logs(default: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(default));
    let terminal = std::io::stderr().is_terminal();
    let json = match std::env::var(LOG_FORMAT_ENV).as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !terminal,
    };
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(terminal).with_writer(|| progress::LogWriter);
    if json { b.json().init() } else { b.init() }
}

/// Runs `cmd`; `filters` are its `--include`/`--exclude` in command-line order.
async fn dispatch(cmd: Command, filters: Vec<Filter>) -> Result<ExitCode> {
    // Invalid AWS_MAX_ATTEMPTS, AWS_RETRY_MODE, BUCKETCLONE_S3_PATH_STYLE or AWS_CA_BUNDLE stop every
    // command here, before any work.
    shared::error::RetryPolicy::init()?;
    shared::backend::aws::check_env()?;
    match cmd {
        Command::Clone(a) => run_job(a, Mode::Clone, filters).await,
        Command::Verify(a) => run_job(a, Mode::VerifyOnly, filters).await,
        Command::Move(m) if m.dry_run => dry_run_move(&m.job, &filters).await,
        Command::Move(m) => run_job(m.job, Mode::Move, filters).await,
        Command::Demo(d) => run_demo(d, filters).await,
        Command::Stats(a) => stats(&a, &filters).await,
        Command::Init(a) => service::init(&settings(&a, None, None)?).await.map(|()| ExitCode::SUCCESS),
        Command::Coordinator(a) => {
            service::run_coordinator(&settings(&a.svc, a.http, None)?).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Worker(a) => {
            service::run_worker(&settings(&a.svc, None, a.concurrency)?).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Submit(a) => {
            let mode = match (a.verify_only, a.mode) {
                (true, _) | (_, ModeArg::VerifyOnly) => Mode::VerifyOnly,
                (_, ModeArg::Clone) => Mode::Clone,
                (_, ModeArg::Move) => Mode::Move,
            };
            let (src, dst) = a.conn.locations(&a.src, &a.dst)?;
            let options = JobOptions { mode, filters, ..a.archived.apply(a.writes.apply(JobOptions::default())) };
            let s = settings(&a.svc, None, None)?;
            let id = service::submit(&s, src, dst, a.id, options).await?;
            println!("{id}");
            match a.wait {
                true => service::wait(&s, &id).await,
                false => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Status(a) => service::status(&settings(&a.svc, None, None)?, a.job.as_deref(), a.json, a.watch).await,
        Command::Pause(a) => control(a, JobControl::Pause).await,
        Command::Resume(a) => control(a, JobControl::Resume).await,
        Command::Cancel(CancelArgs { control: a, state: None }) => control(a, JobControl::Cancel).await,
        Command::Cancel(CancelArgs { control: a, state: Some(state) }) => {
            let state = local::cancel(&state, &a.job).await?;
            println!("{} {}", a.job, state.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "bucketclone", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn control(a: ControlArgs, action: JobControl) -> Result<ExitCode> {
    service::control(&settings(&a.svc, None, None)?, &a.job, action).await.map(|()| ExitCode::SUCCESS)
}

fn local_options(r: &RunArgs) -> local::LocalOptions {
    local::LocalOptions {
        state: r.state.clone().unwrap_or_else(local::default_state),
        workers: r.workers,
        concurrency: r.concurrency,
        show_progress: !r.json,
    }
}

fn job_options(r: &RunArgs, mode: Mode, filters: Vec<Filter>) -> JobOptions {
    JobOptions {
        mode,
        filters,
        page_size: r.page_size,
        size_only: r.size_only,
        skip_uncopyable: r.skip_uncopyable,
        ..r.archived.apply(r.writes.apply(JobOptions::default()))
    }
}

async fn run_job(a: JobArgs, mode: Mode, filters: Vec<Filter>) -> Result<ExitCode> {
    let (src, dst) = a.conn.locations(&a.src, &a.dst)?;
    let out = local::run(src, dst, job_options(&a.run, mode, filters), &local_options(&a.run)).await?;
    if let Some(path) = &a.report {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        report::stream_issues(out.jobs.as_ref(), &out.job.spec.id, &mut f).await?;
    } else if !a.run.json {
        print_some_issues(&out).await?;
    }
    finish(&out, a.run.json)
}

async fn run_demo(d: DemoArgs, filters: Vec<Filter>) -> Result<ExitCode> {
    let tmp;
    let dir = match &d.dir {
        Some(p) => p.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("bucketclone-demo-{}", std::process::id()));
            tmp.clone()
        }
    };
    let (src, dst) = (dir.join("source"), dir.join("destination"));
    if src.exists() || dst.exists() {
        return Err(Error::invalid(format!("{} already holds a demo: remove it or pick another --dir", dir.display())));
    }
    let (n, bytes) = demo::make_sample(&src, d.objects, d.prefixes)?;
    if !d.run.json {
        eprintln!(
            "demo: made {n} objects ({}) over {} prefixes in {}",
            report::human_bytes(bytes as i64),
            d.prefixes,
            src.display()
        );
    }
    let mut opts = local_options(&d.run);
    if d.run.state.is_none() {
        opts.state = dir.join("state.sqlite");
    }
    let out =
        local::run(Location::local(&src)?, Location::local(&dst)?, job_options(&d.run, Mode::Clone, filters), &opts)
            .await;
    if d.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    finish(&out?, d.run.json)
}

/// Opens the store of `loc`, which must exist: never creates anything. A bucket or
/// directory that does not exist is an input error (exit 2) naming it.
async fn open_existing(what: &str, loc: &Location) -> Result<std::sync::Arc<dyn shared::objstore::ObjectStore>> {
    let stores = shared::backend::StoreFactory::new();
    // Opening may ask the bucket for its region: that request is the first attempt.
    let store = with_retries(|| async {
        let store = stores.open(loc).await?;
        store.check().await?;
        Ok(store)
    })
    .await
    .map_err(|e| match e {
        Error::NotFound(m) => Error::Invalid(format!("{what} {loc} does not exist ({m})")),
        other => other.context(format!("{what} {loc}")),
    })?;
    Ok(store)
}

async fn stats(a: &StatsArgs, filters: &[Filter]) -> Result<ExitCode> {
    let loc = with_global(Location::parse(&a.location)?, Connection::default(), &a.conn)?;
    shared::filter::validate(filters)?;
    let store = open_existing("location", &loc).await?;
    let doc = shared::stats::collect(store.as_ref(), &loc, a.depth, &KeyFilter::new(filters)).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "{}  {} objects, {}  digest {}",
            doc.location,
            doc.objects,
            report::human_bytes(doc.bytes as i64),
            doc.digest
        );
        for (p, t) in &doc.prefixes {
            let name = if p.is_empty() { "(top level)" } else { p.as_str() };
            println!("  {name:<40} {:>10} objects {:>12}", t.objects, report::human_bytes(t.bytes as i64));
        }
        if doc.uncopyable > 0 {
            println!("  uncopyable: {} entries, not counted above (a clone cannot copy them)", doc.uncopyable);
            for u in &doc.uncopyable_entries {
                println!("    {}: {}", u.key, u.reason);
            }
            if doc.uncopyable > doc.uncopyable_entries.len() as u64 {
                println!("    ... and {} more", doc.uncopyable - doc.uncopyable_entries.len() as u64);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `move --dry-run`: every source object would be deleted once its copy is verified;
/// uncopyable entries would stay. Refuses what the move itself would refuse up front.
async fn dry_run_move(a: &JobArgs, filters: &[Filter]) -> Result<ExitCode> {
    let (src, dst) = a.conn.locations(&a.src, &a.dst)?;
    shared::filter::validate(filters)?;
    let filter = KeyFilter::new(filters);
    let kept_by = |full: &str| filter.admits(src.rel_key(full).unwrap_or(full));
    if src.overlaps(&dst) {
        return Err(Error::invalid(format!(
            "destination {dst} overlaps source {src}: a move must not write inside its own source"
        )));
    }
    let store = open_existing("source", &src).await?;
    let mut req = shared::objstore::ListRequest {
        prefix: src.prefix.clone(),
        start_after: src.prefix.clone(),
        end: None,
        max_keys: 1000,
    };
    let (mut n, mut bytes, mut kept) = (0u64, 0u64, 0u64);
    loop {
        let page = with_retries(|| store.list(&req)).await?;
        for e in page.entries.iter().filter(|e| kept_by(&e.key)) {
            println!("would delete after verified copy: {}", src.rel_key(&e.key).unwrap_or(&e.key));
            n += 1;
            bytes += e.size;
        }
        for u in page.skipped.iter().filter(|u| kept_by(&u.key)) {
            println!("would keep (uncopyable): {}: {}", src.rel_key(&u.key).unwrap_or(&u.key), u.reason);
            kept += 1;
        }
        match (page.truncated, page.last_key()) {
            (true, Some(last)) => req.start_after = last.to_string(),
            _ => break,
        }
    }
    eprintln!(
        "dry run: {n} objects ({}) would be copied, verified, then deleted from {src}",
        report::human_bytes(bytes as i64)
    );
    if kept > 0 {
        eprintln!(
            "dry run: {kept} uncopyable entries would stay, and the move would end mismatch without --skip-uncopyable"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn print_some_issues(out: &local::Outcome) -> Result<()> {
    let issues = out.jobs.issues(&out.job.spec.id, None, 20).await?;
    for i in &issues {
        eprintln!("  {:?} {}{}", i.kind, i.key, i.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default());
    }
    if issues.len() == 20 {
        eprintln!("  ... (use --report FILE for every difference)");
    }
    Ok(())
}

fn finish(out: &local::Outcome, json: bool) -> Result<ExitCode> {
    let r = report::Report::new(&out.job, out.elapsed, &out.stats);
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", r.human());
    }
    Ok(exit_code(out.job.state))
}

/// The exit code a job's state gives: 0 verified; 1 finished without being verified
/// (differences, failures, or cancelled); 2 failed (the job could not run) or not finished.
pub fn exit_code(state: JobState) -> ExitCode {
    match state {
        JobState::Verified => ExitCode::SUCCESS,
        JobState::Mismatch | JobState::Cancelled => ExitCode::from(1),
        JobState::Running | JobState::Paused | JobState::Failed => ExitCode::from(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent_and_completes() {
        Cli::command().debug_assert();
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "bucketclone", &mut out);
        let script = String::from_utf8(out).unwrap();
        for word in ["clone", "submit", "cancel", "--source-endpoint-url", "--storage-class"] {
            assert!(script.contains(word), "the bash completion offers {word}");
        }
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Examples:") && help.contains("bucketclone demo"), "{help}");
    }
}
