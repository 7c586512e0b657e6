//! The object-store port: a bucket or a directory, seen as a flat, ordered key space.
//!
//! Keys are arbitrary UTF-8 up to 1,024 bytes, listed in UTF-8 byte order (S3's order).
//! ETags are carried without quotes. A store that cannot hold a key (a local directory and
//! `a//b`, say) fails that key with `Permanent`, never writes outside its root.

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::pin::Pin;
use tokio::io::AsyncRead;

use crate::error::Result;
use crate::model::{Location, ObjectEntry};

/// A streamed object body.
pub type Body = Pin<Box<dyn AsyncRead + Send>>;

/// What an object carries besides its bytes, kept when it is copied. A store without a
/// notion of some of it (a local directory keeps bytes only) leaves that empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectAttrs {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    /// `Expires`, the HTTP date as the store gave it.
    pub expires: Option<String>,
    /// User metadata (S3's `x-amz-meta-*`), by lower-case name.
    pub metadata: BTreeMap<String, String>,
    /// Object tags.
    pub tags: BTreeMap<String, String>,
    /// The storage class; `None` for the store's default (S3's STANDARD).
    pub storage_class: Option<String>,
}

impl ObjectAttrs {
    /// No attributes: what a local file has, and what tests write.
    pub const NONE: ObjectAttrs = ObjectAttrs {
        content_type: None,
        content_encoding: None,
        content_disposition: None,
        content_language: None,
        cache_control: None,
        expires: None,
        metadata: BTreeMap::new(),
        tags: BTreeMap::new(),
        storage_class: None,
    };
}

/// How a job writes the objects it copies, whatever their sources say: the storage class
/// and server-side encryption of `--storage-class`, `--sse` and `--sse-kms-key-id`.
/// Unset fields keep the source's storage class and give the destination bucket's default
/// encryption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    pub storage_class: Option<String>,
    /// `AES256` (SSE-S3), `aws:kms` or `aws:kms:dsse`.
    pub sse: Option<String>,
    /// The KMS key of the destination's account, with `aws:kms`; unset: the bucket's or
    /// account's default key.
    pub sse_kms_key_id: Option<String>,
}

impl WriteOptions {
    /// Nothing imposed: the source's storage class, the destination's default encryption.
    pub const KEEP: WriteOptions = WriteOptions { storage_class: None, sse: None, sse_kms_key_id: None };

    /// The storage class a copy of an object of class `source` gets.
    pub fn class_for(&self, source: Option<&str>) -> Option<String> {
        self.storage_class.as_deref().or(source).filter(|c| *c != "STANDARD").map(str::to_string)
    }
}

/// An opened object: its body and its attributes, read in one request where the store can.
pub struct Download {
    pub body: Body,
    pub attrs: ObjectAttrs,
}

/// One page of a key range: keys under `prefix`, after `start_after` (exclusive), up to
/// `end` (inclusive) when set, at most `max_keys` of them. Keys here are full keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub prefix: String,
    pub start_after: String,
    pub end: Option<String>,
    pub max_keys: usize,
}

/// A listed page, in key order.
///
/// `entries` and `skipped` together are the page: both are in key order, both count toward
/// `max_keys`, and `truncated` speaks of what lies after the last of either. A truncated
/// page always holds at least one of them (a store that cannot make progress fails instead).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub entries: Vec<ObjectEntry>,
    /// Entries in the range that cannot be objects (see [`Uncopyable`]). Never silently
    /// dropped: the engine reports each one.
    pub skipped: Vec<Uncopyable>,
    /// True when keys may remain in the requested range after the last entry.
    pub truncated: bool,
}

impl ListPage {
    /// The last key of the page, of an entry or of a skipped one.
    pub fn last_key(&self) -> Option<&str> {
        let a = self.entries.last().map(|e| e.key.as_str());
        let b = self.skipped.last().map(|u| u.key.as_str());
        a.max(b)
    }
}

/// Something a store holds in a listed range that it cannot serve as an object: a local
/// file whose name is not UTF-8, a symlink to a directory, a name the store reserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncopyable {
    /// Where it sorts among the keys: its full key, with any bytes that are not UTF-8
    /// replaced by U+FFFD (so it names the entry for a person, and places it in one range).
    pub key: String,
    /// Why it cannot be copied, for the finding.
    pub reason: String,
}

/// Where a server-side copy can read from: stores that can copy from each other compare
/// equal on `endpoint` (the same S3 service and credentials).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CopySource {
    pub endpoint: String,
    pub bucket: String,
}

/// What a store can tell about an object's content beyond its listing: its checksums
/// (`x-amz-checksum-*`, read with a HEAD asking for them, or computed by the store) and
/// whether its ETag is an MD5 of the content. Asked for only for the pairs whose ETags
/// cannot decide.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checksums {
    /// Full-object checksums: (algorithm, base64 value), e.g. ("CRC64NVME", "..."). Equal
    /// values of one algorithm mean equal content; different values, different content.
    pub values: Vec<(String, String)>,
    /// Composite checksums (a checksum of the parts' checksums, S3's `COMPOSITE` type):
    /// equal only when the content and the part boundaries are; different values prove
    /// nothing.
    pub composite: Vec<(String, String)>,
    /// True when the object's ETag is known to be the MD5 of its content (a single-part
    /// upload without SSE-KMS or SSE-C; a local file). False when it is not, or unknown.
    pub etag_is_md5: bool,
    /// The ETag of the object these describe, when known: a different one than listed
    /// means the object changed in between and these say nothing about the listed one.
    pub etag: Option<String>,
}

impl Checksums {
    /// The full-object value of `algorithm`, if any.
    pub fn full(&self, algorithm: &str) -> Option<&str> {
        self.values.iter().find(|(a, _)| a == algorithm).map(|(_, v)| v.as_str())
    }
}

/// What a conditional delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The object was deleted.
    Yes,
    /// There was no such object: nothing to do.
    Absent,
    /// The object's ETag was not the expected one: it was kept.
    Changed,
}

/// A bucket or directory. All methods may be called concurrently.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// `s3://bucket` or the directory path, for messages.
    fn describe(&self) -> String;

    /// How other stores on the same service can copy from this one server-side, if at all.
    fn copy_source(&self) -> Option<CopySource>;

    /// Checks the store exists and can be listed: `NotFound` or `AccessDenied` otherwise.
    async fn check(&self) -> Result<()>;

    /// Lists one page of a key range in key order (see [`ListRequest`]).
    async fn list(&self, req: &ListRequest) -> Result<ListPage>;

    /// The object's size and ETag, or `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectEntry>>;

    /// What the store can tell about the object's content (see [`Checksums`]): one request
    /// (a HEAD) on S3, a read of the file in a local directory. `NotFound` if it does not
    /// exist. The engine asks only for pairs whose ETags cannot decide.
    async fn checksums(&self, key: &str) -> Result<Checksums>;

    /// Copies the object `src` (as listed) of `source`, a store whose
    /// [`ObjectStore::copy_source`] has this store's endpoint, to `dst_key` here, server-side,
    /// with the source's attributes and `w` over them. Returns the new object. Repeating it
    /// gives the same result.
    ///
    /// An object uploaded in parts is copied part by part with the source's part size, so
    /// the copy's ETag equals the source's and verification can compare them.
    async fn copy_from(
        &self,
        source: &CopySource,
        src: &ObjectEntry,
        dst_key: &str,
        w: &WriteOptions,
    ) -> Result<ObjectEntry>;

    /// Opens the object for reading, with its attributes. `NotFound` if it does not exist;
    /// `Conflict` when `if_etag` is given and the object's ETag is no longer that one (it
    /// changed since it was listed: a stale copy must never be written).
    async fn get(&self, key: &str, if_etag: Option<&str>) -> Result<Download>;

    /// Writes `size` bytes from `body` to `key` with `attrs` (those the store can hold) and
    /// `w` over them, replacing any object there, and returns the new object. The object
    /// appears whole or not at all.
    async fn put(&self, key: &str, body: Body, size: u64, attrs: &ObjectAttrs, w: &WriteOptions)
    -> Result<ObjectEntry>;

    /// Deletes `key` if its current ETag is `if_etag` (when given). Where the store has no
    /// conditional delete the adapter re-checks with a HEAD first. Idempotent.
    async fn delete(&self, key: &str, if_etag: Option<&str>) -> Result<Deleted>;

    /// Makes every write this store has acknowledged durable: after it returns, a power
    /// loss keeps them. The engine calls it once per page that wrote here, before the page
    /// is recorded (and before a move deletes any source), so writes themselves need not
    /// each wait for the disk. Nothing to do on S3, whose writes are durable when answered.
    async fn sync(&self) -> Result<()>;

    /// Whether the object's content can be read now (see [`Archive`]): one HEAD on S3, asked
    /// only for objects listed in an archive class or refused as archived. `NotFound` if it
    /// does not exist.
    async fn archive(&self, key: &str) -> Result<Archive>;

    /// Asks for a temporary readable copy of archived `key` for `days` days (S3's
    /// RestoreObject, Standard tier). Done when a restore is already in progress; `Invalid`
    /// where the store has no archives.
    async fn restore(&self, key: &str, days: u32) -> Result<()>;
}

/// Whether an object's content can be read, as far as its store tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Archive {
    /// Readable: not archived, or a restored copy is available.
    Readable,
    /// In an archive (the storage class, or the Intelligent-Tiering archive tier): it needs
    /// a restore.
    Archived(String),
    /// A restore was asked for and is not done yet.
    Restoring(String),
}

/// True for the storage classes whose objects must be restored before they are read.
/// (Intelligent-Tiering's archive tiers do not show in listings: a copy refused as
/// archived tells.)
pub fn is_archive_class(class: Option<&str>) -> bool {
    matches!(class, Some("GLACIER" | "DEEP_ARCHIVE"))
}

/// Opens the store that holds a location: how the engine reaches buckets and directories,
/// each through its own connection, without naming a backend. Chosen once, at start-up
/// (`shared::backend::StoreFactory` is the real one; tests wrap stores in it).
#[async_trait]
pub trait StoreOpener: Send + Sync {
    /// The store holding `loc` (its bucket or directory; the prefix is the caller's). It is
    /// not checked to exist ([`ObjectStore::check`] does that). `Invalid` when the
    /// location's connection cannot be used (a profile without credentials).
    async fn open(&self, loc: &Location) -> Result<std::sync::Arc<dyn ObjectStore>>;
}

/// True when two ETags are in the multipart form (`<md5>-<parts>`), whose value depends on
/// how the object was uploaded, not only on its content.
pub fn is_multipart_etag(etag: &str) -> bool {
    etag.rsplit_once('-').is_some_and(|(h, n)| h.len() == 32 && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Standard base64 with padding, as S3's checksum headers spell values.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            match i <= chunk.len() {
                true => out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char),
                false => out.push('='),
            }
        }
    }
    out
}

/// Strips the quotes S3 puts around ETags.
pub fn unquote_etag(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etags_are_recognised() {
        assert!(is_multipart_etag("d41d8cd98f00b204e9800998ecf8427e-3"));
        assert!(!is_multipart_etag("d41d8cd98f00b204e9800998ecf8427e"));
        assert!(!is_multipart_etag("abc-3"));
        assert_eq!(unquote_etag("\"abc\""), "abc");
    }

    #[test]
    fn base64_pads_like_s3() {
        assert_eq!(base64(b""), "");
        assert_eq!([base64(b"f"), base64(b"fo"), base64(b"foo")], ["Zg==", "Zm8=", "Zm9v"]);
        assert_eq!(base64(&[0xff, 0xfe, 0x00, 0x01]), "//4AAQ==");
    }
}
