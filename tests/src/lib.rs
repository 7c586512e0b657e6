//! Helpers shared by the integration tests: the AWS emulator (moto) and unique names.
//!
//! The emulator's address comes from `BUCKETCLONE_TEST_ENDPOINT` (default
//! `http://127.0.0.1:5000`); `.ci/run` and `scripts/test.sh` start it. A test that needs it
//! fails with a clear message when it is not running: it is never silently skipped.

use shared::backend::aws::AwsContext;

/// The emulator's URL.
pub fn endpoint() -> String {
    std::env::var("BUCKETCLONE_TEST_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:5000".to_string())
}

/// An AWS context pointed at the running emulator. Panics with instructions if it is down.
pub async fn moto() -> AwsContext {
    let url = endpoint();
    let hostport = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    if tokio::net::TcpStream::connect(&hostport).await.is_err() {
        panic!(
            "the AWS emulator is not running at {url}: start it with `moto_server -H 127.0.0.1 -p 5000` (scripts/test.sh does)"
        );
    }
    AwsContext::for_emulator(&url).await
}

/// `base` with a random suffix, lower-case and short enough for a bucket, queue or table name.
pub fn unique(base: &str) -> String {
    format!(
        "{base}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Environment for a child `bucketclone` process so its AWS chain points at the emulator.
pub fn emulator_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
}

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// The `bucketclone` program built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bucketclone-under-test"))
}

/// Runs `bucketclone args...` with the emulator's environment; returns its output.
pub fn run(args: &[&str]) -> Output {
    let out = bin().args(args).envs(emulator_env()).output().expect("spawn bucketclone");
    eprintln!("$ bucketclone {}\n{}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

/// The JSON report a `--json` run printed.
pub fn report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON report ({e})"))
}

/// Every file under `root` as relative path -> content.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root").to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// Writes `files` (relative path -> content) under `root`.
pub fn write_tree(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (k, v) in files {
        let p = root.join(k);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, v).expect("write");
    }
}
