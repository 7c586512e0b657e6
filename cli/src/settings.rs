//! Service configuration, in layers: built-in defaults, an optional file (`--config` or
//! `BUCKETCLONE_CONFIG`; TOML), `BUCKETCLONE_*` environment variables (nested keys with
//! `__`, e.g. `BUCKETCLONE_WORKER__CONCURRENCY=128`), then command-line flags. Validated
//! once at start-up. AWS region, credentials and endpoint are NOT here: they come from the
//! standard AWS chain (`AWS_PROFILE`, `AWS_REGION`, `AWS_ENDPOINT_URL`, ...).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

use shared::backend::aws::dynamo::schema::DEFAULT_RETENTION_DAYS;
use shared::backend::aws::sqs::DLQ_RETENTION_SECS;
use shared::{Error, Result};

/// Prefix of the environment variables the loader reads (`BUCKETCLONE_<KEY>`, nested keys
/// joined with [`ENV_SEPARATOR`]).
pub const ENV_PREFIX: &str = "BUCKETCLONE";
/// Separator of nested keys in environment variable names (`BUCKETCLONE_WORKER__CONCURRENCY`).
pub const ENV_SEPARATOR: &str = "__";
/// The configuration file's environment variable (when `--config` is not given).
pub const CONFIG_ENV: &str = "BUCKETCLONE_CONFIG";

/// Everything the services read from configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Prefix of the resources' names: queues `<name>-requests`, `<name>-segments` (each with
    /// a `-dlq`), table `<name>-jobs`.
    pub name: String,
    /// The coordinator's HTTP API address.
    pub http_addr: String,
    pub worker: WorkerSettings,
    pub queue: QueueSettings,
    pub table: TableSettings,
    /// Local directories requests may name (a file system every worker shares). Empty, the
    /// default: the service refuses local paths, since each worker would use its own disk.
    #[serde(default)]
    pub local_roots: Vec<PathBuf>,
    /// AWS profiles a request may name for one of its sides (see `coordinator::Connections`).
    /// Empty, the default: requests use the service's own credentials.
    #[serde(default)]
    pub allowed_profiles: Vec<String>,
    /// S3-compatible endpoints a request may name for one of its sides. Empty, the default:
    /// requests reach the service's own S3 endpoint only.
    #[serde(default)]
    pub allowed_endpoints: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// The worker's HTTP port (`/metrics`, `/healthz`); empty: none.
    pub http_addr: String,
    pub segments_in_flight: usize,
    pub concurrency: usize,
    pub lease_secs: u64,
    pub drain_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueueSettings {
    pub visibility_secs: u32,
    pub max_receives: u32,
    pub retention_secs: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TableSettings {
    /// Days a settled job's items stay in the table before DynamoDB's TTL deletes them
    /// (a job from when it settled, a segment from its completion). Running and paused
    /// jobs never expire.
    pub retention_days: u32,
}

/// Flags that override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub name: Option<String>,
    pub http_addr: Option<String>,
    pub concurrency: Option<usize>,
}

impl Settings {
    /// Loads and validates the layers, reading the process environment.
    pub fn load(o: &Overrides) -> Result<Self> {
        Self::load_with_env(o, None)
    }

    /// As [`Settings::load`], with `env` standing in for the process environment when given
    /// (the variables `BUCKETCLONE_*` of a deployment, checked without setting them).
    pub fn load_with_env(o: &Overrides, env: Option<Vec<(String, String)>>) -> Result<Self> {
        let bad = |e: config::ConfigError| Error::invalid(format!("configuration: {e}"));
        let mut b = config::Config::builder()
            .set_default("name", "bucketclone")
            .and_then(|b| b.set_default("http_addr", "127.0.0.1:8080"))
            .and_then(|b| b.set_default("worker.http_addr", "127.0.0.1:9090"))
            .and_then(|b| b.set_default("worker.segments_in_flight", 8))
            .and_then(|b| b.set_default("worker.concurrency", 64))
            .and_then(|b| b.set_default("worker.lease_secs", 60))
            .and_then(|b| b.set_default("worker.drain_secs", 30))
            .and_then(|b| b.set_default("queue.visibility_secs", 60))
            .and_then(|b| b.set_default("queue.max_receives", 10))
            .and_then(|b| b.set_default("queue.retention_secs", 4 * 24 * 3600))
            .and_then(|b| b.set_default("table.retention_days", DEFAULT_RETENTION_DAYS))
            .map_err(bad)?;
        let config_env = match &env {
            Some(vars) => vars.iter().find(|(k, _)| k == CONFIG_ENV).map(|(_, v)| v.into()),
            None => std::env::var_os(CONFIG_ENV),
        };
        let file = o.config.clone().or_else(|| config_env.map(PathBuf::from));
        if let Some(f) = file {
            b = b.add_source(config::File::from(f).format(config::FileFormat::Toml).required(true));
        }
        let vars = env.map(|v| v.into_iter().collect::<config::Map<String, String>>());
        b = b.add_source(
            config::Environment::with_prefix(ENV_PREFIX).prefix_separator("_").separator(ENV_SEPARATOR).source(vars),
        );
        for (k, v) in [("name", o.name.clone()), ("http_addr", o.http_addr.clone())] {
            if let Some(v) = v {
                b = b.set_override(k, v).map_err(bad)?;
            }
        }
        if let Some(c) = o.concurrency {
            b = b.set_override("worker.concurrency", c as u64).map_err(bad)?;
        }
        let s: Settings = b.build().and_then(|c| c.try_deserialize()).map_err(bad)?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty() || n.len() > 60 || !n.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
            return Err(Error::invalid(format!("name {n:?}: 1-60 characters of A-Z a-z 0-9 - _")));
        }
        self.http()?;
        if self.worker.concurrency == 0 || self.worker.segments_in_flight == 0 {
            return Err(Error::invalid("worker.concurrency and worker.segments_in_flight must be at least 1"));
        }
        if self.worker.lease_secs < 3 || self.worker.lease_secs > 43_200 {
            return Err(Error::invalid("worker.lease_secs must be between 3 and 43200 (the SQS maximum)"));
        }
        // A done segment is read again only by a duplicate of a message still in a queue (a
        // dead-letter queue's included: it can be re-driven): it must outlive every such
        // message, so the items outlast both retentions.
        let retention = u64::from(self.table.retention_days) * 86_400;
        let longest = u64::from(self.queue.retention_secs.max(DLQ_RETENTION_SECS));
        if retention <= longest || self.table.retention_days > 3650 {
            return Err(Error::invalid(format!(
                "table.retention_days must be more than the queues' retention ({longest} s, dead-letter \
                 queues included) and at most 3650"
            )));
        }
        Ok(())
    }

    pub fn http(&self) -> Result<SocketAddr> {
        self.http_addr.parse().map_err(|e| Error::invalid(format!("http_addr {:?}: {e}", self.http_addr)))
    }
    pub fn requests_queue(&self) -> String {
        format!("{}-requests", self.name)
    }
    pub fn segments_queue(&self) -> String {
        format!("{}-segments", self.name)
    }
    pub fn table(&self) -> String {
        format!("{}-jobs", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        let body = "name = \"from-file\"\nlocal_roots = [\"/mnt/shared\"]\nallowed_endpoints = [\"http://minio:9000\"]\n\
                    allowed_profiles = [\"minio\"]\n[worker]\nconcurrency = 7\n";
        std::fs::write(&f, body).unwrap();
        let s = Settings::load(&Overrides { config: Some(f.clone()), ..Default::default() }).unwrap();
        assert_eq!((s.name.as_str(), s.worker.concurrency, s.worker.lease_secs), ("from-file", 7, 60));
        assert_eq!(s.local_roots, [PathBuf::from("/mnt/shared")]);
        let defaults = Settings::load(&Overrides::default()).unwrap();
        assert!(defaults.local_roots.is_empty(), "the service refuses local paths by default");
        assert_eq!(
            (s.allowed_endpoints.as_slice(), s.allowed_profiles.as_slice()),
            (&["http://minio:9000".to_string()][..], &["minio".to_string()][..])
        );
        assert!(
            defaults.allowed_endpoints.is_empty() && defaults.allowed_profiles.is_empty(),
            "and other endpoints and profiles"
        );
        assert_eq!(s.segments_queue(), "from-file-segments");
        let o = Overrides { config: Some(f), name: Some("flag".into()), concurrency: Some(3), ..Default::default() };
        let s = Settings::load(&o).unwrap();
        assert_eq!((s.name.as_str(), s.worker.concurrency), ("flag", 3));
    }

    #[test]
    fn the_example_file_in_deploy_loads() {
        let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/bucketclone.example.toml");
        let s = Settings::load(&Overrides { config: Some(f), ..Default::default() }).unwrap();
        assert_eq!((s.name.as_str(), s.http_addr.as_str(), s.queue.max_receives), ("prod", "0.0.0.0:8080", 10));
    }

    #[test]
    fn invalid_settings_are_refused_with_the_reason() {
        let o = Overrides { name: Some("bad name!".into()), ..Default::default() };
        assert!(Settings::load(&o).unwrap_err().to_string().contains("name"));
        let o = Overrides { http_addr: Some("nowhere".into()), ..Default::default() };
        assert!(Settings::load(&o).unwrap_err().to_string().contains("http_addr"));
    }

    #[test]
    fn settled_items_must_outlive_every_message_that_could_reach_them() {
        let defaults = Settings::load(&Overrides::default()).unwrap();
        assert_eq!(defaults.table.retention_days, DEFAULT_RETENTION_DAYS);
        let env = |days: &str, queue_secs: &str| {
            Some(vec![
                ("BUCKETCLONE_TABLE__RETENTION_DAYS".to_string(), days.to_string()),
                ("BUCKETCLONE_QUEUE__RETENTION_SECS".to_string(), queue_secs.to_string()),
            ])
        };
        let s = Settings::load_with_env(&Overrides::default(), env("15", "1209600")).unwrap();
        assert_eq!(s.table.retention_days, 15, "15 days outlast the SQS maximum of 14");
        // 5 days outlast the main queues' 4, not the dead-letter queues' 14.
        for (days, queue) in [("14", "1209600"), ("4", "345600"), ("5", "345600"), ("0", "60"), ("3651", "60")] {
            let e = Settings::load_with_env(&Overrides::default(), env(days, queue)).unwrap_err().to_string();
            assert!(e.contains("table.retention_days"), "{days} days, queue {queue} s: {e}");
        }
    }
}
