//! The conformance suite of the [`ObjectStore`] port. Every backend runs it: a backend that
//! passes can stand in for another without the engine noticing.
//!
//! [`run`] takes a factory returning a fresh, empty store per case and panics, naming the
//! case, on the first failure. [`tricky_keys`] is the key set real tools lose; the clone
//! tests use it too.

mod listing;
mod objects;

use std::future::Future;
use std::sync::Arc;

use md5::{Digest, Md5};
use tokio::io::AsyncReadExt;

use crate::error::Error;
use crate::model::ObjectEntry;
use crate::objstore::{Body, ListRequest, ObjectStore};
use crate::objstore::{ObjectAttrs, WriteOptions};

/// What the backend under test can do, so the suite checks exactly that.
#[derive(Clone)]
pub struct Caps {
    /// The backend holds every key S3 can: `//`, a leading `/`, `.` and `..` segments, a
    /// folder marker `dir/`, a key that is also a directory (`a/b` next to `a/b/c`), 1,024
    /// bytes. When false the suite checks each of those is refused with `Permanent` naming
    /// the key, and that nothing is written.
    pub s3_only_keys: bool,
    /// Listings carry ETags (some S3-compatible servers leave them out).
    pub list_etags: bool,
    /// A store of the same kind whose bucket or directory does not exist.
    pub missing: Arc<dyn ObjectStore>,
}

/// Keys that real tools lose or mangle, in no particular order. With `s3_only`, also the
/// keys only S3 can hold; each of those clashes with a common key or is unrepresentable as a
/// path, so a local directory refuses every one of them even next to the common keys.
pub fn tricky_keys(s3_only: bool) -> Vec<String> {
    let mut keys: Vec<String> = [
        "plain.txt",
        "with space.txt",
        "  spaces around  ",
        "plus+sign",
        "percent%41literal%",
        "question?mark",
        "hash#fragment",
        "equals=and&ampersand",
        "quote's \"double\"",
        "semi;colon,comma",
        "colon:star*pipe|angle<>",
        "back\\slash",
        "tilde~caret^backtick`",
        ".hidden/.dotfile",
        "-dash-first",
        "accents/café/naïve résumé",
        "cjk/日本語/中文.txt",
        "emoji/🎉 party/🚀.bin",
        // U+FF61 sorts before the emoji in UTF-8 (S3's order), after them in UTF-16.
        "halfwidth｡",
        "a-b",
        "a.b",
        "a/b/c",
        "a/b/d",
        "a/b-",
        "a/bc",
        "a0",
        "p/q",
        "deep/1/2/3/4/5/6/7/8/9/10/leaf",
    ]
    .map(String::from)
    .to_vec();
    if s3_only {
        let long = format!("long/{}", "k".repeat(1019));
        keys.extend(
            [
                "double//slash",
                "/leading-slash",
                "dot/./segment",
                "dotdot/../segment",
                "dir/",
                "a/b",
                "p",
                "plain.txt/under-a-file",
                long.as_str(),
            ]
            .map(String::from),
        );
    }
    keys
}

/// The content the suite stores at a tricky key: nothing for a folder marker, else the key
/// itself repeated (so sizes differ and a swapped object is caught).
pub fn tricky_content(key: &str) -> Vec<u8> {
    if key.ends_with('/') { Vec::new() } else { key.repeat(1 + key.len() % 3).into_bytes() }
}

/// Runs every case, each on a fresh store from `new_store`. Panics on the first failure.
pub async fn run<F, Fut>(new_store: F, caps: Caps)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn ObjectStore>>,
{
    objects::round_trips(new_store().await).await;
    objects::missing_objects(new_store().await).await;
    objects::put_replaces(new_store().await).await;
    objects::sync_and_archive(new_store().await).await;
    objects::bad_bodies_write_nothing(new_store().await).await;
    objects::conditional_delete(new_store().await).await;
    objects::conditional_get(new_store().await).await;
    objects::checksums_describe_the_content(new_store().await).await;
    objects::concurrent_puts(new_store().await).await;
    objects::check_store(new_store().await, &caps).await;
    run_paged_listing(&new_store, &caps).await;
    listing::bounds_and_truncation(new_store().await).await;
    if !caps.s3_only_keys {
        objects::unsupported_keys_are_refused(new_store().await).await;
    }
    let a = new_store().await;
    if a.copy_source().is_some() {
        objects::server_side_copy(a, new_store().await, &caps).await;
    }
}

/// The listing cases that walk whole ranges page by page, each on a fresh store from
/// `new_store` (for a store whose listing has settings of its own: they check what holds
/// whatever a page's size, not the sizes).
pub async fn run_paged_listing<F, Fut>(new_store: &F, caps: &Caps)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn ObjectStore>>,
{
    listing::tricky_keys_list_in_byte_order(new_store().await, caps).await;
    listing::ranges_match_a_model(new_store().await, caps).await;
}

/// A body over `bytes`.
pub fn body(bytes: Vec<u8>) -> Body {
    Box::pin(std::io::Cursor::new(bytes))
}

/// The hex MD5 of `bytes`: a single-part object's ETag.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// The full-object checksum `algorithm` of `bytes` as S3 spells it (base64 of the
/// big-endian value), for the algorithms the suite can compute.
pub fn checksum_of(algorithm: &str, bytes: &[u8]) -> Option<String> {
    use crc_fast::CrcAlgorithm::{Crc32Iscsi, Crc32IsoHdlc, Crc64Nvme};
    use sha2::{Digest as _, Sha256};
    let crc = |alg, width: usize| crate::objstore::base64(&crc_fast::checksum(alg, bytes).to_be_bytes()[8 - width..]);
    match algorithm {
        "CRC32" => Some(crc(Crc32IsoHdlc, 4)),
        "CRC32C" => Some(crc(Crc32Iscsi, 4)),
        "CRC64NVME" => Some(crc(Crc64Nvme, 8)),
        "SHA256" => Some(crate::objstore::base64(&Sha256::digest(bytes))),
        _ => None,
    }
}

/// `n` bytes of deterministic noise (so a misplaced chunk is caught, unlike zeroes).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Puts `bytes` at `key`, checking the returned entry.
pub(crate) async fn put(store: &dyn ObjectStore, key: &str, bytes: &[u8]) -> ObjectEntry {
    let got = store
        .put(key, body(bytes.to_vec()), bytes.len() as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP)
        .await
        .unwrap_or_else(|e| panic!("put {key:?} ({} bytes) failed: {e}", bytes.len()));
    assert_eq!(got.key, key, "put returned another key");
    assert_eq!(got.size, bytes.len() as u64, "put {key:?} returned a wrong size");
    assert_eq!(got.etag, Some(md5_hex(bytes)), "put {key:?}: ETag is not the MD5");
    got
}

/// Reads the whole object at `key`.
pub async fn read_all(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    let mut r = store.get(key, None).await.map(|d| d.body).unwrap_or_else(|e| panic!("get {key:?} failed: {e}"));
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap_or_else(|e| panic!("reading {key:?} failed: {e}"));
    out
}

/// Lists the whole range page by page with `max_keys`, checking every page: at most
/// `max_keys` entries and skipped entries together, keys strictly increasing across pages
/// and inside the range, listing continued after `last_key()`, and only the last page not
/// truncated (an empty last page is allowed after a full one, but not in a range with an
/// `end`, where "truncated" must mean that keys of the range follow). Returns the entries.
pub(crate) async fn list_all(
    store: &dyn ObjectStore,
    prefix: &str,
    start_after: &str,
    end: Option<&str>,
    max_keys: usize,
) -> Vec<ObjectEntry> {
    let ctx = format!("list prefix={prefix:?} start_after={start_after:?} end={end:?} max={max_keys}");
    let mut out: Vec<ObjectEntry> = Vec::new();
    let mut after = start_after.to_string();
    let mut truncated_before = false;
    for _ in 0..10_000 {
        let req = ListRequest {
            prefix: prefix.to_string(),
            start_after: after.clone(),
            end: end.map(str::to_string),
            max_keys,
        };
        let page = store.list(&req).await.unwrap_or_else(|e| panic!("{ctx}: failed at {after:?}: {e}"));
        let size = page.entries.len() + page.skipped.len();
        assert!(size <= max_keys, "{ctx}: page of {size} entries and skipped ones");
        // Entries and skipped entries together are the page, each in key order.
        let mut keys: Vec<&str> = page.entries.iter().map(|e| e.key.as_str()).collect();
        keys.extend(page.skipped.iter().map(|u| u.key.as_str()));
        keys.sort_unstable();
        for k in keys {
            assert!(k > after.as_str(), "{ctx}: {k:?} not after {after:?}");
            assert!(k.starts_with(prefix), "{ctx}: {k:?} outside the prefix");
            assert!(end.is_none_or(|end| k <= end), "{ctx}: {k:?} past end");
            after = k.to_string();
        }
        assert_eq!(page.last_key(), (size > 0).then_some(after.as_str()), "{ctx}: last_key");
        let was_empty = size == 0;
        // A bounded range's work is split at truncated pages: one claimed truncated with
        // nothing of the range after it makes a segment listed for nothing.
        assert!(
            !(was_empty && truncated_before && end.is_some()),
            "{ctx}: a page was truncated but nothing of the range followed it"
        );
        out.extend(page.entries);
        if !page.truncated {
            return out;
        }
        assert!(!was_empty, "{ctx}: an empty page claims to be truncated");
        truncated_before = true;
    }
    panic!("{ctx}: listing never ended");
}

/// Asserts `err` is `NotFound`.
pub(crate) fn assert_not_found<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) {
    match r {
        Err(Error::NotFound(_)) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}
