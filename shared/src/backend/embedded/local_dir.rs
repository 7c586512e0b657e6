//! A local directory as an object store: a key is a relative path under the root.
//!
//! Guarantees: listings are in UTF-8 byte order (see [`walk`]); an object appears whole or
//! not at all (`put` writes a hidden temp file in the target directory and renames it over
//! the key); writes are made durable together by [`ObjectStore::sync`] (one `syncfs` of the
//! file system holding the root), which the engine calls before it records a page that
//! wrote here; nothing is ever written outside the root, and keys a directory
//! cannot hold (see [`keys::unsupported_reason`]) fail with `Permanent` before any write.
//! ETags are the hex MD5 of the content, computed on listing and HEAD (see [`meta`]);
//! checksums (CRC32, CRC32C, CRC64NVME, SHA256) are computed when asked for.
//! Listings name every entry in their range that is not copied, with the reason (see
//! [`listing`] for the symlink policy).
//! Server-side copy is not offered: the engine streams between directories.

mod keys;
mod listing;
mod meta;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::model::ObjectEntry;
use crate::objstore::{
    Archive, Body, Checksums, CopySource, Deleted, Download, ListPage, ListRequest, ObjectAttrs, ObjectStore,
    WriteOptions,
};
use keys::{TMP_PREFIX, key_path, parent_prefixes, unsupported};

/// A directory seen as a bucket. Cheap to clone; clones share their caches.
#[derive(Clone)]
pub struct LocalDirStore {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    dirs: walk::DirCache,
    etags: meta::EtagCache,
}

impl LocalDirStore {
    /// Removes the temporary files that puts interrupted by a crash left behind (they are
    /// hidden from listings, but a person diffing the tree sees them). Walks the whole
    /// tree: call it when resuming after a crash, while no other writer is active.
    /// Returns how many were removed.
    pub fn remove_temp_files(&self) -> Result<u64> {
        let mut removed = 0;
        let mut dirs = vec![self.root().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    dirs.push(e.path());
                } else if ft.is_file() && e.file_name().to_string_lossy().starts_with(keys::TMP_PREFIX) {
                    std::fs::remove_file(e.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// A store over the directory `root`, which need not exist yet (`check` says whether it
    /// does; the first `put` creates it). Fails `Invalid` for an empty path.
    pub fn new(root: &str) -> Result<Self> {
        if root.is_empty() {
            return Err(Error::invalid("a local directory path cannot be empty"));
        }
        Ok(LocalDirStore {
            inner: Arc::new(Inner {
                root: PathBuf::from(root),
                dirs: walk::DirCache::default(),
                etags: meta::EtagCache::default(),
            }),
        })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs blocking file-system work off the async threads.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Inner) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::transient(format!("file-system task failed: {e}")))?
    }
}

impl Inner {
    fn missing_root(&self) -> Error {
        Error::NotFound(format!("directory {} does not exist", self.root.display()))
    }

    /// Forgets cached state the store has just changed for `key`.
    fn invalidate(&self, key: &str) {
        self.etags.invalidate(key);
        for rel in parent_prefixes(key) {
            self.dirs.invalidate(rel);
        }
    }

    /// Whether a regular file holds `key` (without hashing it).
    fn exists(&self, key: &str) -> Result<bool> {
        match key_path(&self.root, key) {
            Ok(path) => Ok(std::fs::metadata(path).is_ok_and(|m| m.is_file())),
            Err(_) => Ok(false),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectEntry>> {
        // A key this directory cannot hold is not here.
        let Ok(path) = key_path(&self.root, key) else {
            return Ok(None);
        };
        self.etags.entry(&path, key).map_err(|e| io_err(e, key))
    }

    fn delete(&self, key: &str, if_etag: Option<&str>) -> Result<Deleted> {
        let Ok(path) = key_path(&self.root, key) else {
            return Ok(Deleted::Absent);
        };
        let Some(cur) = self.head(key)? else {
            return Ok(Deleted::Absent);
        };
        if if_etag.is_some_and(|want| cur.etag.as_deref() != Some(want)) {
            return Ok(Deleted::Changed);
        }
        // A write landing between the check above and this remove is lost: the window is
        // one hash long, and the engine only deletes keys it has just listed.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if walk::vanished(&e) => return Ok(Deleted::Absent),
            Err(e) => return Err(io_err(e, key)),
        }
        self.invalidate(key);
        // Remove directories the delete left empty, up to (not including) the root; a
        // directory that is not empty, or already gone, ends the climb.
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != self.root && d.starts_with(&self.root)) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(Deleted::Yes)
    }
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn sync(&self) -> Result<()> {
        self.blocking(|s| sync_file_system(&s.root).map_err(|e| io_err(e, &s.root.display().to_string()))).await
    }
    /// A file is always readable; `NotFound` when there is none.
    async fn archive(&self, key: &str) -> Result<Archive> {
        let k = key.to_string();
        match self.blocking(move |s| s.exists(&k)).await? {
            true => Ok(Archive::Readable),
            false => Err(Error::NotFound(format!("{}: no file {key:?}", self.describe()))),
        }
    }

    async fn restore(&self, key: &str, _days: u32) -> Result<()> {
        Err(Error::invalid(format!(
            "{}: {key:?} is a file: a directory has no archive to restore from",
            self.describe()
        )))
    }

    fn describe(&self) -> String {
        self.inner.root.display().to_string()
    }

    fn copy_source(&self) -> Option<CopySource> {
        None
    }

    async fn check(&self) -> Result<()> {
        self.blocking(|s| match std::fs::read_dir(&s.root) {
            Ok(_) => Ok(()),
            Err(e) if walk::vanished(&e) => Err(s.missing_root()),
            Err(e) => Err(io_err(e, &s.root.display().to_string())),
        })
        .await
    }

    async fn list(&self, req: &ListRequest) -> Result<ListPage> {
        let req = req.clone();
        self.blocking(move |s| s.list(&req)).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectEntry>> {
        let key = key.to_string();
        self.blocking(move |s| s.head(&key)).await
    }

    /// Computed from the file on demand (it keeps none): one read of the whole file, for
    /// the objects whose ETags cannot decide (see [`meta::checksums_file`]).
    async fn checksums(&self, key: &str) -> Result<Checksums> {
        let missing = format!("{key:?} in {}", self.describe());
        let path = key_path(&self.inner.root, key).map_err(|_| Error::NotFound(missing.clone()))?;
        let key = key.to_string();
        self.blocking(move |_| match meta::checksums_file(&path) {
            Ok(c) => Ok(c),
            Err(e) if walk::vanished(&e) || e.kind() == std::io::ErrorKind::IsADirectory => {
                Err(Error::NotFound(missing))
            }
            Err(e) => Err(io_err(e, &key)),
        })
        .await
    }

    async fn copy_from(&self, _: &CopySource, src: &ObjectEntry, _: &str, _: &WriteOptions) -> Result<ObjectEntry> {
        Err(Error::invalid(format!(
            "a local directory cannot copy {:?} server-side: stream it with get and put",
            src.key
        )))
    }

    /// With `if_etag`, the file's MD5 (from the cache while its size and mtime are
    /// unchanged) must match: checked right after opening, so a file replaced before the
    /// open is refused; one rewritten in place while it is read is caught by verification.
    /// A file has no attributes but the content type its name suggests (`.html`: text/html),
    /// as `aws s3 cp` guesses it.
    async fn get(&self, key: &str, if_etag: Option<&str>) -> Result<Download> {
        let not_found = || Error::NotFound(format!("{key:?} in {}", self.describe()));
        let path = key_path(&self.inner.root, key).map_err(|_| not_found())?;
        let opened = tokio::fs::File::open(&path).await;
        if let (Some(want), Ok(_)) = (if_etag, &opened) {
            let k = key.to_string();
            let now = self.blocking(move |s| s.head(&k)).await?;
            if now.as_ref().and_then(|e| e.etag.as_deref()) != Some(want) {
                return Err(Error::Conflict(format!("{key:?} in {} changed since it was listed", self.describe())));
            }
        }
        let file = match opened {
            Ok(f) => f,
            Err(e) if walk::vanished(&e) => return Err(not_found()),
            Err(e) => return Err(io_err(e, key)),
        };
        if !file.metadata().await.map_err(|e| io_err(e, key))?.is_file() {
            return Err(not_found());
        }
        let content_type = mime_guess::from_path(key).first().map(|m| m.essence_str().to_string());
        Ok(Download { body: Box::pin(file), attrs: ObjectAttrs { content_type, ..ObjectAttrs::NONE } })
    }

    /// A file keeps bytes only: `attrs` and `w` have no place in a directory.
    async fn put(&self, key: &str, body: Body, size: u64, _: &ObjectAttrs, _: &WriteOptions) -> Result<ObjectEntry> {
        let root = &self.inner.root;
        let path = key_path(root, key)?;
        let parent = path.parent().unwrap_or(root).to_path_buf();
        let tmp = parent.join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let file = create_temp(root, key, &parent, &tmp).await?;
        let written = write_body(file, body, size).await;
        let result = match written {
            Ok(etag) => finish_put(root, key, &tmp, &path).await.map(|()| etag),
            Err(e) => Err(e),
        };
        let etag = match result {
            Ok(etag) => etag,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e.context(format!("put {key:?}")));
            }
        };
        self.inner.invalidate(key);
        Ok(ObjectEntry { key: key.to_string(), size, etag: Some(etag), storage_class: None })
    }

    async fn delete(&self, key: &str, if_etag: Option<&str>) -> Result<Deleted> {
        let (key, if_etag) = (key.to_string(), if_etag.map(str::to_string));
        self.blocking(move |s| s.delete(&key, if_etag.as_deref())).await
    }
}

/// Creates the parent directories and the temp file, refusing (Permanent) when a parent
/// path is a file or the directory resolves outside the root (a symlink).
async fn create_temp(root: &Path, key: &str, parent: &Path, tmp: &Path) -> Result<tokio::fs::File> {
    // A concurrent delete may remove an emptied parent between the two steps: retry.
    for _ in 0..5 {
        if let Err(e) = tokio::fs::create_dir_all(parent).await {
            return Err(match e.kind() {
                std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => {
                    unsupported(root, key, "a parent path is a file")
                }
                _ => io_err(e, key),
            });
        }
        let (croot, cparent) = (tokio::fs::canonicalize(root).await, tokio::fs::canonicalize(parent).await);
        if let (Ok(r), Ok(p)) = (&croot, &cparent)
            && !p.starts_with(r)
        {
            return Err(unsupported(root, key, "its directory resolves outside the root"));
        }
        match tokio::fs::File::options().write(true).create_new(true).open(tmp).await {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(e, key)),
        }
    }
    Err(Error::transient(format!("{key:?}: its directory kept disappearing")))
}

/// Copies exactly `size` bytes of `body` into `file` and returns their hex MD5. Not synced
/// here: [`ObjectStore::sync`] makes a page's writes durable together.
async fn write_body(mut file: tokio::fs::File, mut body: Body, size: u64) -> Result<String> {
    let mut md5 = Md5::new();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut done = 0u64;
    loop {
        buf.clear();
        while buf.len() < buf.capacity() {
            if body.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        if buf.is_empty() {
            break;
        }
        done += buf.len() as u64;
        if done > size {
            return Err(Error::permanent(format!("the body is longer than its size {size}")));
        }
        md5.update(&buf);
        file.write_all(&buf).await?;
    }
    if done < size {
        return Err(Error::permanent(format!("the body ended after {done} of {size} bytes")));
    }
    file.flush().await?;
    Ok(hex::encode(md5.finalize()))
}

/// Renames the complete temp file over the key (durable with the next [`ObjectStore::sync`]).
async fn finish_put(root: &Path, key: &str, tmp: &Path, path: &Path) -> Result<()> {
    if let Err(e) = tokio::fs::rename(tmp, path).await {
        return Err(match e.kind() {
            std::io::ErrorKind::IsADirectory | std::io::ErrorKind::DirectoryNotEmpty => {
                unsupported(root, key, "a directory exists at its path")
            }
            _ => io_err(e, key),
        });
    }
    Ok(())
}

/// Writes every dirty page and inode of the file system holding `root` to disk: one
/// `syncfs(2)` for all the files and directories a page wrote, where a per-file `fsync` of
/// each file and its directory cost two disk flushes per object.
fn sync_file_system(root: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(root)?;
    #[cfg(target_os = "linux")]
    return rustix::fs::syncfs(&dir).map_err(std::io::Error::from);
    #[cfg(not(target_os = "linux"))]
    {
        // No syncfs: the directory's own entries, then everything.
        dir.sync_all()?;
        rustix::fs::sync();
        Ok(())
    }
}

/// An I/O error about `what`, keeping its classification.
fn io_err(e: std::io::Error, what: &str) -> Error {
    Error::from(e).context(what)
}

#[cfg(test)]
mod tests;
