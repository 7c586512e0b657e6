//! Which keys a directory can hold, and where they live: a key is a relative path whose
//! segments are real file names. Anything else is refused with `Permanent`, naming the key,
//! before anything touches the disk, so a bad key can never write outside the root.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Names of in-flight `put` temp files. They never appear in listings, and no key may use
/// the prefix for one of its segments.
pub(super) const TMP_PREFIX: &str = ".bucketclone-tmp-";

/// The longest file name Linux file systems accept, in bytes.
const MAX_SEGMENT: usize = 255;

/// Why a directory cannot hold `key`, or `None` when it can.
pub(super) fn unsupported_reason(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("the key is empty");
    }
    if key.contains('\0') {
        return Some("a file name cannot contain NUL");
    }
    if key.starts_with('/') {
        return Some("a leading '/' has no file-name equivalent");
    }
    if key.ends_with('/') {
        return Some("a folder marker (trailing '/') cannot be a file");
    }
    for seg in key.split('/') {
        let reason = match seg {
            "" => "an empty segment ('//') has no file-name equivalent",
            "." | ".." => "a '.' or '..' segment would change the path",
            s if s.len() > MAX_SEGMENT => "a segment is longer than 255 bytes",
            s if s.starts_with(TMP_PREFIX) => "the segment prefix .bucketclone-tmp- is reserved",
            _ => continue,
        };
        return Some(reason);
    }
    None
}

/// The path of `key` under `root`, or `Permanent` naming the key when a directory cannot hold
/// it. The result is always strictly inside `root` (checked after joining, not only assumed).
pub(super) fn key_path(root: &Path, key: &str) -> Result<PathBuf> {
    if let Some(reason) = unsupported_reason(key) {
        return Err(unsupported(root, key, reason));
    }
    let path = root.join(key);
    if !path.starts_with(root) || path == root {
        return Err(unsupported(root, key, "the path leaves the directory"));
    }
    Ok(path)
}

/// The `Permanent` error for a key this directory cannot hold.
pub(super) fn unsupported(root: &Path, key: &str, reason: &str) -> Error {
    Error::Permanent(format!("key {key:?} cannot be stored in directory {}: {reason}", root.display()))
}

/// The key-space prefix of the directory holding `key` (`"a/b/"` for `a/b/c`, `""` at the
/// root), and of every directory above it, deepest first.
pub(super) fn parent_prefixes(key: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(key);
    std::iter::from_fn(move || {
        let cur = rest?;
        match cur.rfind('/') {
            Some(i) => {
                rest = Some(&cur[..i]);
                Some(&key[..=i])
            }
            None => {
                rest = None;
                Some("")
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_a_directory_cannot_hold_are_refused_with_their_name() {
        let root = Path::new("/srv/data");
        let long = "x".repeat(256);
        for key in [
            "",
            "a//b",
            "/abs",
            "a/./b",
            "a/../../etc/passwd",
            "..",
            "dir/",
            "nul\0byte",
            long.as_str(),
            "a/.bucketclone-tmp-1",
        ] {
            match key_path(root, key) {
                Err(Error::Permanent(m)) => assert!(m.contains(&format!("{key:?}")), "{m}"),
                other => panic!("key {key:?} should be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn ordinary_keys_map_inside_the_root() {
        let root = Path::new("/srv/data");
        let seg = "y".repeat(255);
        for key in ["a", "a b/c+d%20", ".hidden/..dots", "x.../...y", seg.as_str()] {
            let p = key_path(root, key).unwrap();
            assert!(p.starts_with(root) && p != root);
            assert_eq!(p.strip_prefix(root).unwrap().to_str().unwrap(), key);
        }
    }

    #[test]
    fn parent_prefixes_walk_up_to_the_root() {
        let got: Vec<&str> = parent_prefixes("a/b/c").collect();
        assert_eq!(got, vec!["a/b/", "a/", ""]);
        assert_eq!(parent_prefixes("top").collect::<Vec<_>>(), vec![""]);
    }
}
