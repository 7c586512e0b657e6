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
