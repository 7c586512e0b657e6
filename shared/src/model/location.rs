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
/// path (no `.` or `..` segment) and `prefix` is empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    pub scheme: Scheme,
    /// The bucket name, or the directory's absolute path.
    pub root: String,
    /// Key prefix under `root`: empty, or ending with `/`.
    #[serde(default)]
    pub prefix: String,
}

impl Location {
    /// An S3 location; the prefix is normalised to end with `/`.
    pub fn s3(bucket: impl Into<String>, prefix: impl Into<String>) -> Result<Self> {
        let bucket = bucket.into();
        validate_bucket(&bucket)?;
        Ok(Location { scheme: Scheme::S3, root: bucket, prefix: normalise_prefix(prefix.into()) })
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
        Ok(Location { scheme: Scheme::Local, root, prefix: String::new() })
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
    /// are compared resolved ([`resolve_path`]), so this reads the file system.
    pub fn overlaps(&self, other: &Location) -> bool {
        if self.scheme != other.scheme {
            return false;
        }
        match self.scheme {
            Scheme::S3 => {
                self.root == other.root
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
            Scheme::S3 => write!(f, "s3://{}/{}", self.root, self.prefix),
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
