//! A file's object metadata: its size, and its ETag, the hex MD5 of its content (what S3
//! gives a single-part upload, so local and S3 copies compare equal).
//!
//! Cost: an MD5 reads the whole file (about 500 MB/s per core), on every listing and HEAD.
//! Results are cached in memory by (key, size, mtime), but only for files whose mtime was at
//! least [`SETTLE`] old when hashed, so a rewrite within the file system's timestamp
//! granularity, keeping the size, cannot be served a stale hash.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

use md5::{Digest, Md5};
use sha2::Sha256;

use super::walk::{SETTLE, vanished};
use crate::model::ObjectEntry;
use crate::objstore::{Checksums, base64};

/// At most this many hashes are remembered (about 10 MB); the cache is emptied when full.
const CACHE_MAX: usize = 100_000;

/// Hashes of settled files, by key.
#[derive(Default)]
pub(super) struct EtagCache {
    inner: Mutex<HashMap<String, (u64, SystemTime, String)>>,
}

impl EtagCache {
    /// Forgets the hash of `key` (the store changed it).
    pub(super) fn invalidate(&self, key: &str) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// The object at `path` for `key`, or `None` when there is no regular file there.
    pub(super) fn entry(&self, path: &Path, key: &str) -> io::Result<Option<ObjectEntry>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(None),
            Err(e) if vanished(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let (size, mtime) = (meta.len(), meta.modified()?);
        let cached = {
            let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            map.get(key).filter(|(s, t, _)| *s == size && *t == mtime).map(|(_, _, h)| h.clone())
        };
        let etag = match cached {
            Some(h) => h,
            None => {
                let h = match md5_file(path) {
                    Ok(h) => h,
                    Err(e) if vanished(&e) => return Ok(None),
                    Err(e) => return Err(e),
                };
                self.remember(key, size, mtime, &h);
                h
            }
        };
        Ok(Some(ObjectEntry { key: key.to_string(), size, etag: Some(etag), storage_class: None }))
    }

    fn remember(&self, key: &str, size: u64, mtime: SystemTime, hash: &str) {
        let settled = SystemTime::now().duration_since(mtime).is_ok_and(|age| age >= SETTLE);
        if !settled {
            return;
        }
        self.insert(key, size, mtime, hash);
    }

    fn insert(&self, key: &str, size: u64, mtime: SystemTime, hash: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_MAX {
            map.clear();
        }
        map.insert(key.to_string(), (size, mtime, hash.to_string()));
    }
}

/// A buffer for reading `f` whole: its size (plus one byte, to see the end in the same
/// read), between 4 KiB and 1 MiB. Hashing runs on many blocking threads at once, so a
/// fixed megabyte per small file would cost a megabyte per thread for 64 KiB of data.
fn read_buffer(f: &std::fs::File) -> Vec<u8> {
    let size = f.metadata().map(|m| m.len()).unwrap_or(1 << 20);
    vec![0u8; (size + 1).clamp(4 << 10, 1 << 20) as usize]
}

/// The hex MD5 of the file at `path`.
pub(super) fn md5_file(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Md5::new();
    let mut buf = read_buffer(&f);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// The file's content digests, in one read: its MD5 (the ETag) and the full-object
/// checksums S3 can store (CRC32, CRC32C, CRC64NVME, SHA256), base64 as S3 spells them, so
/// a file compares with an S3 object whatever checksum the object carries.
pub(super) fn checksums_file(path: &Path) -> io::Result<Checksums> {
    use crc_fast::CrcAlgorithm::{Crc32Iscsi, Crc32IsoHdlc, Crc64Nvme};
    let mut f = std::fs::File::open(path)?;
    let (mut md5, mut sha) = (Md5::new(), Sha256::new());
    let mut crcs = [("CRC32", Crc32IsoHdlc, 4), ("CRC32C", Crc32Iscsi, 4), ("CRC64NVME", Crc64Nvme, 8)]
        .map(|(name, alg, bytes)| (name, crc_fast::Digest::new(alg), bytes));
    let mut buf = read_buffer(&f);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
        crcs.iter_mut().for_each(|(_, d, _)| d.update(&buf[..n]));
    }
    let mut values: Vec<(String, String)> = crcs
        .iter()
        .map(|(name, d, bytes)| (name.to_string(), base64(&d.finalize().to_be_bytes()[8 - bytes..])))
        .collect();
    values.push(("SHA256".into(), base64(&sha.finalize())));
    Ok(Checksums { values, composite: Vec::new(), etag_is_md5: true, etag: Some(hex::encode(md5.finalize())) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn hashes_are_cached_only_for_settled_files_and_follow_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"hello").unwrap();
        let cache = EtagCache::default();
        let e = cache.entry(&p, "k").unwrap().unwrap();
        assert_eq!(e.etag.as_deref(), Some("5d41402abc4b2a76b9719d911017c592"));
        assert!(cache.inner.lock().unwrap().is_empty(), "fresh file cached");

        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(old).unwrap();
        cache.entry(&p, "k").unwrap();
        assert_eq!(cache.inner.lock().unwrap().len(), 1);
        // Same size, new content and mtime: the hash follows.
        std::fs::write(&p, b"world").unwrap();
        let e = cache.entry(&p, "k").unwrap().unwrap();
        assert_eq!(e.etag.as_deref(), Some("7d793037a0760186574b0282f2f435e7"));
        assert_eq!(cache.entry(&dir.path().join("none"), "none").unwrap(), None);
    }

    #[test]
    fn checksums_are_what_s3_stores_for_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"hello").unwrap();
        let c = checksums_file(&p).unwrap();
        // CRC32 as moto and S3 report it for "hello" (see the S3 conformance case).
        assert_eq!(c.full("CRC32"), Some("NhCmhg=="));
        assert_eq!(c.full("SHA256"), Some("LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="));
        assert_eq!(c.etag.as_deref(), Some("5d41402abc4b2a76b9719d911017c592"));
        assert!(c.etag_is_md5 && c.composite.is_empty());
    }
}
