//! Where objects live: a bucket or a directory, and a key prefix in it. Parsing of
//! `s3://bucket/prefix` and local paths, and the overlap check that keeps a clone from
//! writing inside its own source.
//!
//! A local path is made absolute and lexically normal when parsed (`.` dropped, `..`
//! removing the segment before it, as a shell's `cd` does), and the store opens exactly
//! that path. The overlap check compares paths [`resolve_path`]d: symlinks followed as far
//! as the path exists, so `./x/../src` and `./src/backup`, or a link to the source, are seen
//! for what they are.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Which kind of store a [`Location`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// An S3 bucket on the endpoint of the standard AWS configuration chain.
    S3,
    /// A directory on this machine; keys are relative paths.
    Local,
}

/// A place objects are read from or written to: a bucket or directory, and a key prefix in it.
///
/// Invariant: `prefix` is empty or ends with `/` (a location names a "folder", as
/// `aws s3 sync` does), and for [`Scheme::Local`] `root` is an absolute, lexically normal
/// path (no `.` or `..` segment), `prefix` is empty and `conn` is the default.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    pub scheme: Scheme,
    /// The bucket name, or the directory's absolute path.
    pub root: String,
    /// Key prefix under `root`: empty, or ending with `/`.
    #[serde(default)]
    pub prefix: String,
    /// How to reach the bucket's service (S3 only); the default is the process's AWS chain.
    #[serde(default, skip_serializing_if = "Connection::is_default")]
    pub conn: Connection,
}

/// How to reach the S3 service that holds one location, so the source and the destination
/// of a job can sit in different accounts, regions or services (MinIO or R2 to AWS).
///
/// Every field unset is the process's standard AWS chain (environment, shared profile,
/// instance or task role), as a location without a connection always had. Credentials are
/// never carried here, only the name of a profile that holds them: jobs are stored and sent
/// over queues.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Connection {
    /// A profile of the shared AWS config and credentials files (keys, a role to assume, SSO).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The bucket's region. Unset: discovered from the bucket itself (HeadBucket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An S3-compatible endpoint (`https://minio.internal:9000`) instead of AWS's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Path-style addressing (bucket in the path). Unset: on exactly for custom endpoints,
    /// unless `BUCKETCLONE_S3_PATH_STYLE` says otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_style: Option<bool>,
    /// Accept the request charges of a Requester Pays bucket (`x-amz-request-payer`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub request_payer: bool,
}

impl Connection {
    pub fn is_default(&self) -> bool {
        *self == Connection::default()
    }

    /// Each field of `self`, or `fallback`'s where `self` leaves it unset (a per-side flag
    /// over a global one).
    pub fn or(&self, fallback: &Connection) -> Connection {
        Connection {
            profile: self.profile.clone().or_else(|| fallback.profile.clone()),
            region: self.region.clone().or_else(|| fallback.region.clone()),
            endpoint_url: self.endpoint_url.clone().or_else(|| fallback.endpoint_url.clone()),
            path_style: self.path_style.or(fallback.path_style),
            request_payer: self.request_payer || fallback.request_payer,
        }
    }

    /// Checks what can be checked without I/O: names and the endpoint's form.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = &self.profile
            && (p.is_empty() || p.len() > 128 || p.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err(Error::invalid(format!("profile {p:?}: not a profile name")));
        }
        if let Some(r) = &self.region
            && (r.is_empty()
                || r.len() > 64
                || !r.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'))
        {
            return Err(Error::invalid(format!("region {r:?}: expected a region name such as eu-west-1")));
        }
        if let Some(u) = &self.endpoint_url {
            let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
            if rest.is_none_or(|h| h.is_empty() || h.starts_with('/') || h.chars().any(char::is_whitespace)) {
                return Err(Error::invalid(format!(
                    "endpoint URL {u:?}: expected http://host[:port] or https://host[:port]"
                )));
            }
        }
        Ok(())
    }

    /// The endpoint this connection talks to, for telling services apart: its own URL, else
    /// the process's (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`), else `None` for AWS itself.
    pub fn effective_endpoint(&self) -> Option<String> {
        let url = self.endpoint_url.clone().or_else(|| configured_s3_endpoint(&|k: &str| std::env::var(k).ok()));
        url.map(|u| u.trim_end_matches('/').to_ascii_lowercase())
    }
}

/// S3's custom endpoint configured in the environment (`var` looks a variable up), as the
/// AWS SDK reads it: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, and neither when
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`. (A profile's `endpoint_url` is not seen here.)
pub fn configured_s3_endpoint(var: &impl Fn(&str) -> Option<String>) -> Option<String> {
    if var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    let set = |k: &str| var(k).filter(|v| !v.is_empty());
    set("AWS_ENDPOINT_URL_S3").or_else(|| set("AWS_ENDPOINT_URL"))
}

impl Location {
    /// An S3 location; the prefix is normalised to end with `/`.
    pub fn s3(bucket: impl Into<String>, prefix: impl Into<String>) -> Result<Self> {
        let bucket = bucket.into();
        validate_bucket(&bucket)?;
        Ok(Location {
            scheme: Scheme::S3,
            root: bucket,
            prefix: normalise_prefix(prefix.into()),
            conn: Connection::default(),
        })
    }

    /// A local-directory location rooted at `path` (made absolute and lexically normal, not
    /// required to exist).
    pub fn local(path: impl AsRef<Path>) -> Result<Self> {
        let p = path.as_ref();
        if p.as_os_str().is_empty() {
            return Err(Error::invalid("empty directory path"));
        }
        let abs = std::path::absolute(p).map_err(|e| Error::invalid(format!("{}: {e}", p.display())))?;
        let root = lexical(&abs)
            .to_str()
            .ok_or_else(|| Error::invalid(format!("{}: path is not UTF-8", p.display())))?
            .trim_end_matches('/')
            .to_string();
        let root = if root.is_empty() { "/".to_string() } else { root };
        Ok(Location { scheme: Scheme::Local, root, prefix: String::new(), conn: Connection::default() })
    }

    /// Parses `s3://bucket[/prefix]` or a local directory path.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            return Location::s3(bucket, prefix);
        }
        if s.contains("://") {
            return Err(Error::invalid(format!("{s}: only s3:// URLs and local directories are supported")));
        }
        Location::local(s)
    }

    /// This location reached through `conn` (S3 only: a local directory refuses one).
    pub fn with_conn(mut self, conn: Connection) -> Result<Self> {
        conn.validate()?;
        if self.scheme == Scheme::Local && !conn.is_default() {
            return Err(Error::invalid(format!(
                "{self}: a profile, region, endpoint or request-payer setting applies to S3 locations only"
            )));
        }
        self.conn = conn;
        Ok(self)
    }

    /// The full key in this location for a key relative to its prefix.
    pub fn full_key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// The key relative to this location's prefix, if `full` is under it.
    pub fn rel_key<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.prefix.as_str())
    }

    /// True when the two locations share keys: one's key space lies inside the other's.
    /// A clone between overlapping locations would copy into its own source. Local paths
    /// are compared resolved ([`resolve_path`]), so this reads the file system. Buckets
    /// are the same bucket when their names and effective endpoints are (profiles and
    /// regions do not make two buckets of one name different).
    pub fn overlaps(&self, other: &Location) -> bool {
        if self.scheme != other.scheme {
            return false;
        }
        match self.scheme {
            Scheme::S3 => {
                self.root == other.root
                    && self.conn.effective_endpoint() == other.conn.effective_endpoint()
                    && (self.prefix.starts_with(&other.prefix) || other.prefix.starts_with(&self.prefix))
            }
            Scheme::Local => {
                let (a, b) = (resolve_path(Path::new(&self.root)), resolve_path(Path::new(&other.root)));
                a.starts_with(&b) || b.starts_with(&a)
            }
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::S3 => {
                write!(f, "s3://{}/{}", self.root, self.prefix)?;
                // Two services may hold buckets of one name: say which.
                match &self.conn.endpoint_url {
                    Some(u) => write!(f, " at {u}"),
                    None => Ok(()),
                }
            }
            Scheme::Local => write!(f, "{}", self.root),
        }
    }
}

/// `path` lexically normal: `.` segments dropped, each `..` removing the segment before it
/// (never above the root), without looking at the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !out.has_root() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` (absolute) as the file system sees it: made lexically normal, then its longest
/// existing ancestor canonicalised (symlinks followed) and the rest appended as given.
pub fn resolve_path(path: &Path) -> PathBuf {
    let normal = lexical(path);
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            return rest.into_iter().rev().fold(c, |p, seg| p.join(seg));
        }
        match (existing.file_name().map(|f| f.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return normal,
        }
    }
}

fn normalise_prefix(p: String) -> String {
    if p.is_empty() || p.ends_with('/') { p } else { format!("{p}/") }
}

/// Checks the S3 bucket naming rules that matter before any request is sent.
pub fn validate_bucket(b: &str) -> Result<()> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric();
    if ok { Ok(()) } else { Err(Error::invalid(format!("{b:?} is not a valid S3 bucket name"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls_and_normalises_prefixes() {
        let l = Location::parse("s3://my-bucket/backup").unwrap();
        assert_eq!((l.scheme, l.root.as_str(), l.prefix.as_str()), (Scheme::S3, "my-bucket", "backup/"));
        assert_eq!(Location::parse("s3://my-bucket").unwrap().prefix, "");
        assert_eq!(l.full_key("a b"), "backup/a b");
        assert!(Location::parse("s3://UPPER").is_err());
        assert!(Location::parse("gs://x/y").is_err());
    }

    #[test]
    fn overlap_detects_destination_inside_source_and_the_reverse() {
        let p = |s: &str| Location::parse(s).unwrap();
        assert!(p("s3://bkt").overlaps(&p("s3://bkt/backup")));
        assert!(p("s3://bkt/backup").overlaps(&p("s3://bkt")));
        assert!(p("s3://bkt/a").overlaps(&p("s3://bkt/a")));
        assert!(!p("s3://bkt/a").overlaps(&p("s3://bkt/ab")));
        assert!(!p("s3://bkt").overlaps(&p("s3://other")));
        assert!(p("/tmp/x").overlaps(&p("/tmp/x/sub")));
        assert!(!p("/tmp/x").overlaps(&p("/tmp/xy")));
    }

    #[test]
    fn buckets_on_different_endpoints_never_overlap_and_connections_are_checked() {
        let on = |url: &str, ep: Option<&str>| {
            let conn = Connection { endpoint_url: ep.map(str::to_string), ..Default::default() };
            Location::parse(url).unwrap().with_conn(conn).unwrap()
        };
        // MinIO's `data` to AWS's `data`: two buckets.
        assert!(!on("s3://data", Some("http://minio:9000")).overlaps(&on("s3://data", None)));
        assert!(on("s3://data", Some("http://MINIO:9000/")).overlaps(&on("s3://data/x", Some("http://minio:9000"))));
        let profile = Connection { profile: Some("other".into()), ..Default::default() };
        assert!(on("s3://data", None).overlaps(&Location::parse("s3://data/x").unwrap().with_conn(profile).unwrap()));

        let bad = |c: Connection| Location::parse("s3://data").unwrap().with_conn(c).unwrap_err().to_string();
        assert!(bad(Connection { endpoint_url: Some("minio:9000".into()), ..Default::default() }).contains("endpoint"));
        assert!(bad(Connection { region: Some("EU West".into()), ..Default::default() }).contains("region"));
        assert!(bad(Connection { profile: Some("a b".into()), ..Default::default() }).contains("profile"));
        let local =
            Location::parse("/tmp/x").unwrap().with_conn(Connection { request_payer: true, ..Default::default() });
        assert!(local.unwrap_err().to_string().contains("S3 locations only"));

        let g = Connection { region: Some("us-east-2".into()), request_payer: true, ..Default::default() };
        let side = Connection { region: Some("eu-west-1".into()), ..Default::default() };
        assert_eq!(
            side.or(&g),
            Connection { region: Some("eu-west-1".into()), request_payer: true, ..Default::default() }
        );
        assert!(Connection::default().or(&Connection::default()).is_default());
    }

    #[test]
    fn the_configured_endpoint_is_read_as_the_sdk_reads_it() {
        fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        }
        assert_eq!(
            configured_s3_endpoint(&env(&[("AWS_ENDPOINT_URL_S3", "http://s3:1")])).as_deref(),
            Some("http://s3:1")
        );
        let both = env(&[("AWS_ENDPOINT_URL_S3", "http://s3:1"), ("AWS_ENDPOINT_URL", "http://g:1")]);
        assert_eq!(configured_s3_endpoint(&both).as_deref(), Some("http://s3:1"), "the per-service variable wins");
        assert_eq!(configured_s3_endpoint(&env(&[("AWS_ENDPOINT_URL", "http://g:1")])).as_deref(), Some("http://g:1"));
        let ignored = env(&[("AWS_ENDPOINT_URL_S3", "http://x:1"), ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")]);
        assert_eq!(configured_s3_endpoint(&ignored), None);
    }

    #[test]
    fn local_paths_are_made_absolute_and_lexically_normal() {
        let p = |s: &str| Location::parse(s).unwrap().root;
        assert_eq!(p("/a/./b/../c/"), "/a/c");
        assert_eq!(p("/a/b/../../.."), "/");
        assert_eq!(p("/.."), "/");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(p("./x/../src"), cwd.join("src").to_str().unwrap());
    }

    #[test]
    fn local_overlap_sees_through_dot_dot_and_symlinks_where_the_path_exists() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let src = base.join("src");
        std::fs::create_dir(&src).unwrap();
        std::os::unix::fs::symlink(&src, base.join("link")).unwrap();
        let p = |rel: &str| Location::local(format!("{}/{rel}", base.display())).unwrap();
        // `x` does not exist: `x/..` is taken lexically, as the store will open it.
        assert!(p("x/../src").overlaps(&p("src/backup")));
        assert!(p("src/backup/new").overlaps(&p("x/../src")));
        // Through a symlink to the source, existing or not below it.
        assert!(p("src").overlaps(&p("link/backup")));
        assert!(p("link").overlaps(&p("src")));
        assert!(!p("src").overlaps(&p("srcx/link")));
        assert!(!p("src").overlaps(&p("other")));
    }
}
