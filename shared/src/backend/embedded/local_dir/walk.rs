//! Listing a directory tree in S3 key order, lazily.
//!
//! A directory `d` holds exactly the keys starting with `d/`, so it takes the place of the
//! string `d/` among its siblings: `a-b` and `a.b` come before everything under `a/`, and
//! `a0` after. Visiting siblings in that order, depth first, yields keys in UTF-8 byte order.
//! The walk binary-searches each directory for the first entry that can hold a key after
//! `start_after` and under `prefix`, and stops at the first entry past `end` or the prefix,
//! or once it has enough keys: a page costs the directories on its path, not the tree.
//!
//! The walk yields every name it meets in the range, never drops one: names that can be
//! objects (decided when the page is built, see [`super::listing`]), and names that never
//! can, with the reason: a name that is not UTF-8 (placed by its lossy rendering), a name
//! with the reserved prefix `.bucketclone-tmp-`, a directory that cannot be read (placed
//! at `dir/`, where its keys would be). Directories are entered only when they are real
//! directories: a symlink is never followed into a directory (no loops, nothing outside the
//! root is walked), it is one name like a file's.
//!
//! Sorted directory listings are cached, keyed by their key-space prefix and validated by the
//! directory's mtime on every use. A listing is cached only when that mtime is at least
//! [`SETTLE`] old, so a change within the file system's timestamp granularity cannot hide
//! behind an unchanged mtime; the store also drops entries it changes itself. What a name is
//! beyond "a directory or not" (a symlink's target) is not cached: it can change without
//! the directory changing.

use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::keys::TMP_PREFIX;
use crate::objstore::ListRequest;

/// How old an mtime must be before data derived from it is cached.
pub(super) const SETTLE: Duration = Duration::from_secs(2);

/// At most this many directory entries are held in the cache (about 50 MB); a directory
/// larger than that alone is re-read and sorted on every page that passes through it.
const CACHE_BUDGET: usize = 1_000_000;

/// One name of a sorted directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Name {
    /// Where it sorts among its siblings: the name, followed by `/` for a directory the
    /// walk enters; the lossy rendering of a name that is not UTF-8.
    pub sort: String,
    /// `None` for a directory to enter or a name that may be an object; else why the name
    /// can never be one.
    pub uncopyable: Option<Arc<str>>,
}

impl Name {
    fn is_dir(&self) -> bool {
        self.uncopyable.is_none() && self.sort.ends_with('/')
    }
}

/// Sorted directory listings, by key-space prefix.
#[derive(Default)]
pub(super) struct DirCache {
    inner: Mutex<CacheMap>,
}

#[derive(Default)]
struct CacheMap {
    dirs: HashMap<String, (SystemTime, Arc<Vec<Name>>)>,
    entries: usize,
}

impl DirCache {
    /// Forgets the listing of the directory with key-space prefix `rel` (`""` is the root).
    pub(super) fn invalidate(&self, rel: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, v)) = map.dirs.remove(rel) {
            map.entries -= v.len();
        }
    }

    /// The sorted entries of the directory `root/rel`. A directory that vanished, or became
    /// a file, is empty.
    fn entries(&self, root: &Path, rel: &str) -> io::Result<Arc<Vec<Name>>> {
        let dir = root.join(rel);
        let mtime = match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => m.modified()?,
            Ok(_) => return Ok(Arc::default()),
            Err(e) if vanished(&e) => return Ok(Arc::default()),
            Err(e) => return Err(e),
        };
        {
            let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((t, v)) = map.dirs.get(rel)
                && *t == mtime
            {
                return Ok(v.clone());
            }
        }
        let listing = Arc::new(read_sorted(&dir)?);
        let settled = SystemTime::now().duration_since(mtime).is_ok_and(|age| age >= SETTLE);
        if settled && listing.len() <= CACHE_BUDGET {
            let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if map.entries + listing.len() > CACHE_BUDGET {
                map.dirs.clear();
                map.entries = 0;
            }
            map.entries += listing.len();
            if let Some((_, old)) = map.dirs.insert(rel.to_string(), (mtime, listing.clone())) {
                map.entries -= old.len();
            }
        }
        Ok(listing)
    }
}

/// True for errors meaning "this path is not there (any more)".
pub(super) fn vanished(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

/// True for errors that may pass if the same call is made again (the store's one rule,
/// [`crate::Error`]'s classification of I/O errors): a page meeting one is listed again
/// later; any other error on one name makes that name uncopyable, never fails the page.
pub(super) fn transient(e: &io::Error) -> bool {
    crate::Error::from(io::Error::from(e.kind())).is_transient()
}

/// Reads `dir` into its names, sorted in key order (see [`Name`]). Only real directories
/// (not symlinks to them) are marked to be entered.
fn read_sorted(dir: &Path) -> io::Result<Vec<Name>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if vanished(&e) => return Ok(out),
        Err(e) => return Err(e),
    };
    for ent in rd {
        let ent = ent?;
        let is_dir = ent.file_type().is_ok_and(|t| t.is_dir());
        let name = match ent.file_name().into_string() {
            Ok(n) => n,
            Err(raw) => {
                let bytes = raw.as_bytes().escape_ascii();
                let reason = match is_dir {
                    true => format!(
                        "a directory whose name is not UTF-8 (bytes \"{bytes}\"): nothing under it can be a key"
                    ),
                    false => format!("its name is not UTF-8 (bytes \"{bytes}\"), so it cannot be a key"),
                };
                out.push(Name { sort: raw.to_string_lossy().into_owned(), uncopyable: Some(reason.into()) });
                continue;
            }
        };
        if name.starts_with(TMP_PREFIX) {
            let reason = format!("the name prefix {TMP_PREFIX} is reserved for bucketclone's temporary files");
            out.push(Name { sort: name, uncopyable: Some(reason.into()) });
        } else if is_dir {
            out.push(Name { sort: name + "/", uncopyable: None });
        } else {
            out.push(Name { sort: name, uncopyable: None });
        }
    }
    out.sort_unstable_by(|a, b| a.sort.cmp(&b.sort));
    Ok(out)
}

/// One name the walk met in the range: its full key, and why it cannot be an object when
/// that is already known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Walked {
    pub key: String,
    pub uncopyable: Option<Arc<str>>,
}

/// What a walk found: names in key order, and whether the range goes on after them.
#[derive(Debug, Default)]
pub(super) struct WalkOut {
    pub names: Vec<Walked>,
    /// True when the walk stopped at a name past the limit (so `names` holds exactly
    /// `limit` distinct keys, and at least one more name is in the range).
    pub more: bool,
}

/// Walks the tree under `root` for `req`, returning up to `limit` distinct keys in key
/// order. Names sharing one key (two names that are not UTF-8 with the same lossy
/// rendering) are never split across pages: a page may then hold more than `limit` names.
pub(super) fn walk(root: &Path, cache: &DirCache, req: &ListRequest, limit: usize) -> io::Result<WalkOut> {
    let mut w = Walker { root, cache, req, limit: limit.max(1), distinct: 0, out: WalkOut::default() };
    w.dir("")?;
    Ok(w.out)
}

struct Walker<'a> {
    root: &'a Path,
    cache: &'a DirCache,
    req: &'a ListRequest,
    limit: usize,
    distinct: usize,
    out: WalkOut,
}

impl Walker<'_> {
    /// Visits the directory with key-space prefix `rel`. Returns true when the walk is over:
    /// the page is full, or an entry lies past `end` or past the prefix (and so does every
    /// later entry, here and in the directories above).
    fn dir(&mut self, rel: &str) -> io::Result<bool> {
        let entries = self.cache.entries(self.root, rel)?;
        let (sa, prefix) = (self.req.start_after.as_str(), self.req.prefix.as_str());
        // Entries that cannot hold a key > start_after and >= prefix form a leading run.
        let start = entries.partition_point(|e| {
            let full = format!("{rel}{}", e.sort);
            entirely_before(&full, sa, true) || entirely_before(&full, prefix, false)
        });
        for e in &entries[start..] {
            let full = format!("{rel}{}", e.sort);
            let is_dir = e.is_dir();
            let in_prefix = full.starts_with(prefix) || (is_dir && prefix.starts_with(&full));
            if !in_prefix {
                return Ok(true);
            }
            if self.req.end.as_deref().is_some_and(|end| full.as_str() > end) {
                return Ok(true);
            }
            let stop = match is_dir {
                true => self.subdir(full)?,
                false => self.push(full, e.uncopyable.clone()),
            };
            if stop {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Visits the directory `full` (ending in `/`). One that cannot be read is one
    /// uncopyable name at `full`, reported by the page whose range holds that key.
    fn subdir(&mut self, full: String) -> io::Result<bool> {
        match self.dir(&full) {
            Ok(stop) => Ok(stop),
            Err(e) if transient(&e) => Err(e),
            Err(e) => {
                let in_range = full.as_str() > self.req.start_after.as_str() && full.starts_with(&self.req.prefix);
                let reason = format!("a directory that cannot be read: {e}");
                Ok(in_range && self.push(full, Some(reason.into())))
            }
        }
    }

    /// Adds a name; returns true (without adding it) when it is a new key past the limit.
    fn push(&mut self, key: String, uncopyable: Option<Arc<str>>) -> bool {
        let new_key = self.out.names.last().is_none_or(|l| l.key != key);
        if new_key && self.distinct >= self.limit {
            self.out.more = true;
            return true;
        }
        self.distinct += usize::from(new_key);
        self.out.names.push(Walked { key, uncopyable });
        false
    }
}

/// True when no key at `entry` (a file key, or a directory's `prefix/` standing for every
/// key under it) is after `bound` (`strict`: > bound, else >= bound).
fn entirely_before(entry: &str, bound: &str, strict: bool) -> bool {
    if entry.ends_with('/') {
        // Keys under a directory extend it: some may pass `bound` if the bound extends it.
        entry < bound && !bound.starts_with(entry)
    } else if strict {
        entry <= bound
    } else {
        entry < bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_sort_as_their_prefix() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a-b", "a.b", "a0", "a/c", "a/b/x"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        let sorted: Vec<String> = read_sorted(dir.path()).unwrap().into_iter().map(|n| n.sort).collect();
        assert_eq!(sorted, ["a-b", "a.b", "a/", "a0"]);
        let req = ListRequest { prefix: String::new(), start_after: String::new(), end: None, max_keys: 100 };
        let out = walk(dir.path(), &DirCache::default(), &req, 100).unwrap();
        let keys: Vec<&str> = out.names.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["a-b", "a.b", "a/b/x", "a/c", "a0"]);
        assert!(!out.more);
    }

    fn keys_of(out: &WalkOut) -> Vec<(&str, bool)> {
        out.names.iter().map(|n| (n.key.as_str(), n.uncopyable.is_some())).collect()
    }

    #[test]
    fn names_that_cannot_be_keys_are_walked_in_key_order_never_entered() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["a/1", "m", "z"] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), b"").unwrap();
        }
        // "b\xff" (a file) and "c\xfe/" (a directory with a file inside) are not UTF-8.
        std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"b\xff")), b"").unwrap();
        std::fs::create_dir(root.join(std::ffi::OsStr::from_bytes(b"c\xfe"))).unwrap();
        std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"c\xfe/inner")), b"").unwrap();
        std::fs::create_dir(root.join(format!("{TMP_PREFIX}d"))).unwrap();
        std::fs::write(root.join(format!("{TMP_PREFIX}d/x")), b"").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("l")).unwrap();
        let req = |sa: &str| ListRequest { prefix: String::new(), start_after: sa.into(), end: None, max_keys: 100 };
        let cache = DirCache::default();
        let out = walk(root, &cache, &req(""), 100).unwrap();
        let tmp = format!("{TMP_PREFIX}d");
        assert_eq!(
            keys_of(&out),
            [
                (tmp.as_str(), true),
                ("a/1", false),
                ("b\u{FFFD}", true),
                ("c\u{FFFD}", true),
                ("l", false),
                ("m", false),
                ("z", false)
            ]
        );
        let reason = out.names[2].uncopyable.as_deref().unwrap();
        assert!(reason.contains("not UTF-8") && reason.contains("b\\xff"), "{reason}");
        assert!(out.names[3].uncopyable.as_deref().unwrap().contains("directory"));
        // They count toward the limit, and ranges apply to them like to any key.
        let out = walk(root, &cache, &req("a/1"), 2).unwrap();
        assert_eq!(keys_of(&out), [("b\u{FFFD}", true), ("c\u{FFFD}", true)]);
        assert!(out.more);
        let out = walk(root, &cache, &req("c\u{FFFD}"), 100).unwrap();
        assert_eq!(keys_of(&out), [("l", false), ("m", false), ("z", false)]);
    }

    #[test]
    fn names_sharing_a_lossy_key_stay_on_one_page() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        for raw in [&b"k\xfe"[..], b"k\xff", b"z"] {
            std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(raw)), b"").unwrap();
        }
        let req = ListRequest { prefix: String::new(), start_after: String::new(), end: None, max_keys: 1 };
        let out = walk(dir.path(), &DirCache::default(), &req, 1).unwrap();
        assert_eq!(keys_of(&out), [("k\u{FFFD}", true), ("k\u{FFFD}", true)]);
        assert!(out.more);
    }

    #[test]
    fn only_transient_errors_fail_a_walk() {
        assert!(transient(&io::Error::from(io::ErrorKind::Interrupted)));
        assert!(!transient(&io::Error::from(io::ErrorKind::PermissionDenied)));
        assert!(!transient(&io::Error::from_raw_os_error(5))); // EIO
    }

    #[test]
    fn bounds_prune_whole_directories() {
        assert!(entirely_before("a/", "b", true));
        assert!(!entirely_before("a/", "a/x", true));
        assert!(!entirely_before("a/", "a", true));
        assert!(entirely_before("a", "a", true));
        assert!(!entirely_before("a", "a", false));
        assert!(!entirely_before("b/", "a", true));
    }

    #[test]
    fn cache_serves_settled_listings_until_the_directory_changes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("one"), b"").unwrap();
        let cache = DirCache::default();
        // Fresh directory: not cached, so a second file shows at once.
        let names = |cache: &DirCache| -> Vec<String> {
            cache.entries(dir.path(), "").unwrap().iter().map(|n| n.sort.clone()).collect()
        };
        assert_eq!(names(&cache), ["one"]);
        std::fs::write(dir.path().join("two"), b"").unwrap();
        assert_eq!(names(&cache), ["one", "two"]);
        assert_eq!(cache.inner.lock().unwrap().dirs.len(), 0);
        // Once settled it is cached; an external change moves the mtime and is seen.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::open(dir.path()).unwrap().set_modified(old).unwrap();
        assert_eq!(names(&cache), ["one", "two"]);
        assert_eq!(cache.inner.lock().unwrap().dirs.len(), 1);
        std::fs::write(dir.path().join("three"), b"").unwrap();
        assert_eq!(names(&cache), ["one", "three", "two"]);
    }
}
