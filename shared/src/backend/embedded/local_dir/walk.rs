//! Listing a directory tree in S3 key order, lazily.
//!
//! A directory `d` holds exactly the keys starting with `d/`, so it takes the place of the
//! string `d/` among its siblings: `a-b` and `a.b` come before everything under `a/`, and
//! `a0` after. Visiting siblings in that order, depth first, yields keys in UTF-8 byte order.
//! The walk binary-searches each directory for the first entry that can hold a key after
//! `start_after` and under `prefix`, and stops at the first entry past `end` or the prefix,
//! or once it has enough keys: a page costs the directories on its path, not the tree.
//!
//! Sorted directory listings are cached, keyed by their key-space prefix and validated by the
//! directory's mtime on every use. A listing is cached only when that mtime is at least
//! [`SETTLE`] old, so a change within the file system's timestamp granularity cannot hide
//! behind an unchanged mtime; the store also drops entries it changes itself.

use std::collections::HashMap;
use std::io;
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

/// Sorted directory listings: each entry is a file name, or a directory name followed by `/`.
#[derive(Default)]
pub(super) struct DirCache {
    inner: Mutex<CacheMap>,
}

#[derive(Default)]
struct CacheMap {
    dirs: HashMap<String, (SystemTime, Arc<Vec<String>>)>,
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
    fn entries(&self, root: &Path, rel: &str) -> io::Result<Arc<Vec<String>>> {
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

/// Reads `dir`, keeping regular files (also through symlinks) and directories (not through
/// symlinks, so a link cannot loop the walk or lead it outside the root), sorted in key order.
/// Skips temp files, and names that are not UTF-8 (they cannot be keys).
fn read_sorted(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if vanished(&e) => return Ok(out),
        Err(e) => return Err(e),
    };
    for ent in rd {
        let ent = ent?;
        let Ok(name) = ent.file_name().into_string() else {
            tracing::warn!(dir = %dir.display(), name = ?ent.file_name(), "skipping a file name that is not UTF-8");
            continue;
        };
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        let ft = ent.file_type()?;
        if ft.is_dir() {
            out.push(name + "/");
        } else if ft.is_file() || (ft.is_symlink() && ent.path().metadata().is_ok_and(|m| m.is_file())) {
            out.push(name);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Walks the tree under `root` for `req`, returning up to `limit` keys in key order.
pub(super) fn walk(root: &Path, cache: &DirCache, req: &ListRequest, limit: usize) -> io::Result<Vec<String>> {
    let mut w = Walker { root, cache, req, limit, out: Vec::new() };
    w.dir("")?;
    Ok(w.out)
}

struct Walker<'a> {
    root: &'a Path,
    cache: &'a DirCache,
    req: &'a ListRequest,
    limit: usize,
    out: Vec<String>,
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
            let full = format!("{rel}{e}");
            entirely_before(&full, sa, true) || entirely_before(&full, prefix, false)
        });
        for e in &entries[start..] {
            let full = format!("{rel}{e}");
            let is_dir = full.ends_with('/');
            let in_prefix = full.starts_with(prefix) || (is_dir && prefix.starts_with(&full));
            if !in_prefix {
                return Ok(true);
            }
            if self.req.end.as_deref().is_some_and(|end| full.as_str() > end) {
                return Ok(true);
            }
            if is_dir {
                if self.dir(&full)? {
                    return Ok(true);
                }
            } else {
                self.out.push(full);
                if self.out.len() >= self.limit {
                    return Ok(true);
                }
            }
        }
        Ok(false)
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
        std::fs::write(dir.path().join(format!("{TMP_PREFIX}123")), b"").unwrap();
        assert_eq!(read_sorted(dir.path()).unwrap(), ["a-b", "a.b", "a/", "a0"]);
        let req = ListRequest { prefix: String::new(), start_after: String::new(), end: None, max_keys: 100 };
        let keys = walk(dir.path(), &DirCache::default(), &req, 100).unwrap();
        assert_eq!(keys, ["a-b", "a.b", "a/b/x", "a/c", "a0"]);
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
        assert_eq!(*cache.entries(dir.path(), "").unwrap(), ["one"]);
        std::fs::write(dir.path().join("two"), b"").unwrap();
        assert_eq!(*cache.entries(dir.path(), "").unwrap(), ["one", "two"]);
        assert_eq!(cache.inner.lock().unwrap().dirs.len(), 0);
        // Once settled it is cached; an external change moves the mtime and is seen.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::open(dir.path()).unwrap().set_modified(old).unwrap();
        assert_eq!(*cache.entries(dir.path(), "").unwrap(), ["one", "two"]);
        assert_eq!(cache.inner.lock().unwrap().dirs.len(), 1);
        std::fs::write(dir.path().join("three"), b"").unwrap();
        assert_eq!(*cache.entries(dir.path(), "").unwrap(), ["one", "three", "two"]);
    }
}
