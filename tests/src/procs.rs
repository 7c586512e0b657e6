//! Real `bucketclone` processes for tests: spawning them with the emulator's environment,
//! signals, the HTTP API, and a service deployment on moto (`init`, a coordinator, workers
//! started and killed at will, requests, `status --json`).
//!
//! Every process spawned through a [`Service`] is killed when it is dropped, so a failing
//! test leaves no worker polling the emulator behind.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shared::backend::aws::{AwsContext, dynamo::DynamoJobStore, s3::S3Store, sqs::SqsQueue};
use shared::jobstore::JobStore;
use shared::model::JobRecord;
use shared::objstore::ObjectStore;
use shared::queue::WorkQueue;

use crate::{bin, emulator_env};
use shared::objstore::{ObjectAttrs, WriteOptions};

/// `bucketclone args...` with the emulator's environment plus `extra_env` (an empty value
/// removes the variable), logging at info.
fn command(args: &[&str], extra_env: &[(&str, String)]) -> Command {
    let mut c = bin();
    c.args(args).envs(emulator_env()).env("BUCKETCLONE_LOG", "info").stdout(Stdio::null());
    for (k, v) in extra_env {
        if v.is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    c
}

/// Spawns `bucketclone args...`; its stderr goes to the test's.
pub fn spawn(args: &[&str], extra_env: &[(&str, String)]) -> Child {
    command(args, extra_env).stderr(Stdio::inherit()).spawn().expect("spawn bucketclone")
}

/// Spawns `bucketclone args...` with its stderr written to `log` (read it with
/// [`std::fs::read_to_string`] once the process ended; a pipe nobody reads would block it).
pub fn spawn_logged(args: &[&str], extra_env: &[(&str, String)], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("create a log file");
    command(args, extra_env).stderr(Stdio::from(file)).spawn().expect("spawn bucketclone")
}

/// Sends `sig` (`TERM`, `KILL`, ...) to the child.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status().expect("run kill");
    assert!(ok.success(), "kill -{sig} {}", child.id());
}

/// Waits at most `limit` for the child to exit.
pub fn wait_for(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return Some(s);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when the process ended by `abort()` (SIGABRT), as a crash point does.
pub fn aborted(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(6)
}

/// `GET path` on the coordinator's HTTP API at `addr`; the body as JSON (must be 200).
pub fn http_get(addr: &str, path: &str) -> serde_json::Value {
    let (code, body) = http_get_text(addr, path);
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("a JSON body")
}

/// `GET path` on an HTTP server at `addr`: the status code and the body as text.
pub fn http_get_text(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP server");
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    (code, body.to_string())
}

/// The value of the Prometheus sample `series` (name and labels exactly as rendered) in
/// `text`, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `POST path` with a JSON `body` on the coordinator's HTTP API at `addr`: the status code
/// and the body as JSON.
pub fn http_post(addr: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP API");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    (code, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// Creates `bucket` and writes `objects` (key, body) into it, 16 at a time; returns
/// (objects, bytes).
pub async fn seed_bucket(ctx: &AwsContext, bucket: &str, objects: Vec<(String, Vec<u8>)>) -> (usize, u64) {
    S3Store::create_bucket(ctx, bucket).await.expect("create bucket");
    let store = std::sync::Arc::new(S3Store::new(ctx, bucket));
    let (count, bytes) = (objects.len(), objects.iter().map(|(_, b)| b.len() as u64).sum());
    let mut tasks = tokio::task::JoinSet::new();
    for (k, body) in objects {
        let store = store.clone();
        tasks.spawn(async move {
            let n = body.len() as u64;
            store
                .put(&k, Box::pin(std::io::Cursor::new(body)), n, &ObjectAttrs::NONE, &WriteOptions::KEEP)
                .await
                .expect("put");
        });
        while tasks.len() >= 16 {
            tasks.join_next().await.expect("a task").expect("put task");
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("put task");
    }
    (count, bytes)
}

/// A deployment on the emulator: its queues and table (`init`), a coordinator process with
/// its HTTP API, and the worker processes started through it.
pub struct Service {
    pub name: String,
    pub addr: String,
    pub jobs: DynamoJobStore,
    requests: SqsQueue,
    coordinator: Child,
    workers: Vec<Child>,
    /// Environment every process of the deployment gets on top of the emulator's.
    env: Vec<(&'static str, String)>,
}

impl Service {
    /// `bucketclone init --name <name>`, then a coordinator.
    pub async fn start(ctx: &AwsContext, name: &str) -> Service {
        Service::start_with(ctx, name, Vec::new()).await
    }

    /// [`Service::start`], every process of it (and `status`) with `env` on top of the
    /// emulator's environment; `ctx` must reach the deployment's queues and table.
    pub async fn start_with(ctx: &AwsContext, name: &str, env: Vec<(&'static str, String)>) -> Service {
        let init = command(&["init", "--name", name], &env).stderr(Stdio::piped()).output().expect("run init");
        assert!(init.status.success(), "init: {}", String::from_utf8_lossy(&init.stderr));
        let addr = format!("127.0.0.1:{}", free_port());
        let coordinator = spawn(&["coordinator", "--name", name, "--http", &addr], &env);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the coordinator's HTTP API did not come up on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let requests = SqsQueue::open(ctx, &format!("{name}-requests")).await.expect("requests queue");
        let jobs = DynamoJobStore::new(ctx, format!("{name}-jobs"));
        Service { name: name.to_string(), addr, jobs, requests, coordinator, workers: Vec::new(), env }
    }

    /// Starts a worker with `extra_env`, its stderr in `log` (or the test's); returns its
    /// index for [`Service::worker`].
    pub fn start_worker(&mut self, extra_env: &[(&str, String)], log: Option<&Path>) -> usize {
        let args = ["worker", "--name", &self.name];
        let env: Vec<(&str, String)> = self.env.iter().cloned().chain(extra_env.iter().cloned()).collect();
        let child = match log {
            Some(log) => spawn_logged(&args, &env, log),
            None => spawn(&args, &env),
        };
        self.workers.push(child);
        self.workers.len() - 1
    }

    /// The `i`th worker started.
    pub fn worker(&mut self, i: usize) -> &mut Child {
        &mut self.workers[i]
    }

    /// Sends one raw request message (the request format, as JSON).
    pub async fn request(&self, body: serde_json::Value) {
        self.requests.push(&[body.to_string()]).await.expect("send a request");
    }

    /// Polls the table until job `id` is terminal; panics after `limit`.
    pub async fn wait(&self, id: &str, limit: Duration) -> JobRecord {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(j) = self.jobs.job(id).await.expect("read the job").filter(|j| j.state.is_terminal()) {
                return j;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish within {limit:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `bucketclone args... --name <name>` with the deployment's environment, to its end.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let args: Vec<&str> = args.iter().copied().chain(["--name", self.name.as_str()]).collect();
        let out = command(&args, &self.env).stdout(Stdio::piped()).stderr(Stdio::piped()).output().expect("run");
        eprintln!("$ bucketclone {}\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        out
    }

    /// `bucketclone status <id> --json`: the status document.
    pub fn status(&self, id: &str) -> serde_json::Value {
        let out = command(&["status", id, "--json", "--name", &self.name], &self.env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("status");
        assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status --json prints one document")
    }

    /// SIGTERM to every worker still running, then to the coordinator; each must exit 0.
    pub fn stop(mut self) {
        for w in self.workers.iter_mut() {
            if w.try_wait().expect("try_wait").is_some() {
                continue;
            }
            signal(w, "TERM");
            assert_eq!(w.wait().expect("wait").code(), Some(0), "a worker drains and exits 0 on SIGTERM");
        }
        signal(&self.coordinator, "TERM");
        assert_eq!(self.coordinator.wait().expect("wait").code(), Some(0), "the coordinator exits 0 on SIGTERM");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().chain(std::iter::once(&mut self.coordinator)) {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A second moto server of its own, killed on drop.
pub struct SecondMoto {
    child: Child,
    pub url: String,
}

impl SecondMoto {
    pub fn start() -> SecondMoto {
        Self::start_with(&[])
    }

    /// One serving HTTPS with the certificate and key in these PEM files.
    pub fn start_tls(cert: &Path, key: &Path) -> SecondMoto {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let mut m = Self::start_with(&["--tls-cert", &cert, "--tls-key", &key]);
        m.url = m.url.replace("http://", "https://");
        m
    }

    fn start_with(extra: &[&str]) -> SecondMoto {
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/moto_server.py");
        // The Python scripts/moto.sh found or installed moto for (a venv under target/).
        let python = std::env::var("BUCKETCLONE_PYTHON").unwrap_or_else(|_| "python3".into());
        let child = Command::new(python)
            .args([script, "-H", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a second moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the second moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        SecondMoto { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for SecondMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
