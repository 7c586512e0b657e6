//! Building a listed page from a walk: the one place that decides what a name is.
//!
//! Symlink policy: a symlink to a regular file is an object with its target's content (the
//! target may lie outside the root: the link is what the user put there). A symlink to a
//! directory is not followed, and neither is a broken link nor one to a special file: each
//! is one uncopyable entry. So are fifos, sockets and devices, and any name the store cannot
//! read or hash when the page is built (permission denied, an I/O error): a finding for that
//! name, never a failed page. A name that vanished since the walk simply drops out, and a
//! page whose every name vanished walks on, so a page marked truncated is never empty.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::meta::EtagCache;
use super::walk::{self, Walked, transient, vanished};
use super::{Inner, io_err};
use crate::error::{Error, Result};
use crate::model::ObjectEntry;
use crate::objstore::{ListPage, ListRequest, Uncopyable};

/// What a walked name turned out to be when its page was built.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    Object(ObjectEntry),
    Uncopyable(String),
    /// It is not there any more.
    Gone,
}

impl Inner {
    /// Lists one page (see [`crate::objstore::ObjectStore::list`]).
    pub(super) fn list(&self, req: &ListRequest) -> Result<ListPage> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::invalid(format!("{} is not a directory", self.root.display())));
            }
            Err(e) if vanished(&e) => return Err(self.missing_root()),
            Err(e) => return Err(io_err(e, &self.root.display().to_string())),
        }
        let mut req = req.clone();
        req.max_keys = req.max_keys.max(1);
        loop {
            let walked = walk::walk(&self.root, &self.dirs, &req, req.max_keys)
                .map_err(|e| io_err(e, &format!("listing {}", self.root.display())))?;
            let mut page = ListPage { truncated: walked.more, ..ListPage::default() };
            for name in &walked.names {
                match examine(&self.etags, &self.root.join(&name.key), name)? {
                    Found::Object(e) => page.entries.push(e),
                    Found::Uncopyable(reason) => page.skipped.push(Uncopyable { key: name.key.clone(), reason }),
                    Found::Gone => {}
                }
            }
            // The walk never passes `end`, so `more` makes `truncated` exact. When every name
            // of a full walk vanished, the page would have no key to continue after: walk on.
            match walked.names.last() {
                Some(last) if page.truncated && page.last_key().is_none() => req.start_after = last.key.clone(),
                _ => return Ok(page),
            }
        }
    }
}

/// Decides what the walked `name` at `path` is: an object (hashed), uncopyable (with the
/// reason), or gone. Errors only for transient I/O trouble (the page is listed again).
pub(super) fn examine(etags: &EtagCache, path: &Path, name: &Walked) -> Result<Found> {
    if let Some(reason) = &name.uncopyable {
        return Ok(Found::Uncopyable(reason.to_string()));
    }
    let link = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return unreadable(e, "it cannot be examined"),
    };
    let ft = link.file_type();
    let target = if ft.is_symlink() {
        match std::fs::metadata(path) {
            Ok(m) => m.file_type(),
            // The link is still there (it was just read) but its target is not.
            Err(e) if vanished(&e) => {
                return Ok(Found::Uncopyable("a broken symlink: its target does not exist".into()));
            }
            Err(e) => return unreadable(e, "a symlink whose target cannot be examined"),
        }
    } else {
        ft
    };
    let what = match target {
        t if t.is_file() => {
            return match etags.entry(path, &name.key) {
                Ok(Some(e)) => Ok(Found::Object(e)),
                Ok(None) => Ok(Found::Gone),
                Err(e) => unreadable(e, "it cannot be read"),
            };
        }
        // A directory here was a file when walked: it was replaced, as good as gone.
        t if t.is_dir() && !ft.is_symlink() => return Ok(Found::Gone),
        t if t.is_dir() => "a directory",
        t if t.is_fifo() => "a named pipe (FIFO)",
        t if t.is_socket() => "a socket",
        t if t.is_block_device() || t.is_char_device() => "a device",
        _ => "something else",
    };
    Ok(Found::Uncopyable(match ft.is_symlink() {
        true => format!("a symlink to {what}: not followed"),
        false => format!("{what}, not a regular file"),
    }))
}

/// The rule for an I/O error on one name: vanished, it is gone; transient, the page fails
/// (to be listed again); anything else makes the name uncopyable, naming the error.
fn unreadable(e: io::Error, what: &str) -> Result<Found> {
    if vanished(&e) {
        Ok(Found::Gone)
    } else if transient(&e) {
        Err(Error::from(e).context(what))
    } else {
        Ok(Found::Uncopyable(format!("{what}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one rule for a name that cannot be read. Permission and I/O errors cannot be
    /// produced here (the tests may run as root), so the rule is tested on the errors.
    #[test]
    fn an_unreadable_name_is_uncopyable_a_vanished_one_gone_a_transient_error_retried() {
        let denied = unreadable(io::Error::from(io::ErrorKind::PermissionDenied), "it cannot be read");
        assert!(matches!(&denied, Ok(Found::Uncopyable(r)) if r.starts_with("it cannot be read: ")), "{denied:?}");
        let eio = unreadable(io::Error::from_raw_os_error(5), "it cannot be read");
        assert!(matches!(&eio, Ok(Found::Uncopyable(r)) if r.contains("error")), "{eio:?}");
        assert_eq!(unreadable(io::Error::from(io::ErrorKind::NotFound), "x").unwrap(), Found::Gone);
        assert!(unreadable(io::Error::from(io::ErrorKind::Interrupted), "x").unwrap_err().is_transient());
    }

    #[test]
    fn a_special_file_is_uncopyable_and_a_name_gone_since_the_walk_drops_out() {
        let dir = tempfile::tempdir().unwrap();
        let etags = EtagCache::default();
        let walked = |k: &str| Walked { key: k.into(), uncopyable: None };
        std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        let found = examine(&etags, &dir.path().join("s"), &walked("s")).unwrap();
        assert_eq!(found, Found::Uncopyable("a socket, not a regular file".into()));
        assert_eq!(examine(&etags, &dir.path().join("gone"), &walked("gone")).unwrap(), Found::Gone);
    }
}
