//! Statistics of a location: object count and bytes, overall and per prefix down to a
//! depth, and an order-independent digest over (key, size, ETag), so two environments are
//! compared by comparing two small documents (equal documents: same keys, sizes, ETags).
//!
//! The digest is the sum, modulo 2^256, of SHA-256(relative key, size, ETag) over every
//! object: independent of listing order and of how the walk was split, and changed by any
//! added, removed, resized or rewritten object (a rewrite changes the ETag).
//!
//! Entries the store lists as uncopyable (a local name that is not UTF-8, a symlinked
//! directory...) are not objects: they are counted apart, and the first
//! [`UNCOPYABLE_SHOWN`] are named with their reason, so a tree that cannot be cloned whole
//! never looks like one that can.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::Result;
use crate::error::with_retries;
use crate::filter::KeyFilter;
use crate::model::{Location, ObjectEntry};
use crate::objstore::{ListRequest, ObjectStore, Uncopyable};

/// How many uncopyable entries a document names (it counts them all).
pub const UNCOPYABLE_SHOWN: usize = 100;

/// Count and bytes of one prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub objects: u64,
    pub bytes: u64,
}

/// The statistics document of a location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsDoc {
    pub location: String,
    pub objects: u64,
    pub bytes: u64,
    /// Hex of the 256-bit order-independent digest.
    pub digest: String,
    /// Objects without an ETag in the listing (their digest term uses size only).
    pub without_etag: u64,
    pub depth: usize,
    /// Per prefix (relative, ending in `/`) down to `depth` levels; `""` holds top-level keys.
    pub prefixes: BTreeMap<String, Tally>,
    /// Entries in the location that cannot be objects (not counted above).
    #[serde(default)]
    pub uncopyable: u64,
    /// The first [`UNCOPYABLE_SHOWN`] of them, in key order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncopyable_entries: Vec<SkippedEntry>,
}

/// An uncopyable entry, by its key relative to the location (a lossy rendering where the
/// name is not UTF-8) and why it cannot be copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedEntry {
    pub key: String,
    pub reason: String,
}

impl StatsDoc {
    /// True when both documents describe the same objects (locations may differ), and as
    /// many uncopyable entries.
    pub fn same_content(&self, other: &StatsDoc) -> bool {
        self.objects == other.objects
            && self.bytes == other.bytes
            && self.digest == other.digest
            && self.uncopyable == other.uncopyable
    }
}

/// Accumulates a [`StatsDoc`] from entries in any order.
#[derive(Debug, Clone)]
pub struct StatsBuilder {
    depth: usize,
    total: Tally,
    digest: [u64; 4],
    without_etag: u64,
    prefixes: BTreeMap<String, Tally>,
    uncopyable: u64,
    uncopyable_entries: Vec<SkippedEntry>,
}

impl StatsBuilder {
    pub fn new(depth: usize) -> Self {
        StatsBuilder {
            depth,
            total: Tally::default(),
            digest: [0; 4],
            without_etag: 0,
            prefixes: BTreeMap::new(),
            uncopyable: 0,
            uncopyable_entries: Vec::new(),
        }
    }

    /// Counts one uncopyable entry by its key relative to the location.
    pub fn add_uncopyable(&mut self, rel_key: &str, reason: &str) {
        self.uncopyable += 1;
        if self.uncopyable_entries.len() < UNCOPYABLE_SHOWN {
            self.uncopyable_entries.push(SkippedEntry { key: rel_key.to_string(), reason: reason.to_string() });
        }
    }

    /// Adds one object by its key relative to the location.
    pub fn add(&mut self, rel_key: &str, size: u64, etag: Option<&str>) {
        self.total.objects += 1;
        self.total.bytes += size;
        if etag.is_none() {
            self.without_etag += 1;
        }
        let mut h = Sha256::new();
        h.update(rel_key.as_bytes());
        h.update([0]);
        h.update(size.to_be_bytes());
        h.update(etag.unwrap_or("").as_bytes());
        let d = h.finalize();
        // Add as a 256-bit little-endian number of four u64 limbs.
        let mut carry = 0u128;
        for (i, limb) in self.digest.iter_mut().enumerate() {
            let v = u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            let s = *limb as u128 + v as u128 + carry;
            *limb = s as u64;
            carry = s >> 64;
        }
        if self.depth > 0 {
            let parts: Vec<&str> = rel_key.split('/').collect();
            let levels = (parts.len() - 1).min(self.depth);
            if levels == 0 {
                let t = self.prefixes.entry(String::new()).or_default();
                t.objects += 1;
                t.bytes += size;
            }
            for l in 1..=levels {
                let p = format!("{}/", parts[..l].join("/"));
                let t = self.prefixes.entry(p).or_default();
                t.objects += 1;
                t.bytes += size;
            }
        }
    }

    pub fn finish(self, location: String) -> StatsDoc {
        let digest = self.digest.iter().rev().map(|l| format!("{l:016x}")).collect();
        StatsDoc {
            location,
            objects: self.total.objects,
            bytes: self.total.bytes,
            digest,
            without_etag: self.without_etag,
            depth: self.depth,
            prefixes: self.prefixes,
            uncopyable: self.uncopyable,
            uncopyable_entries: self.uncopyable_entries,
        }
    }
}

/// Walks every object under `loc` that `filter` keeps (one list page after another) into
/// a document.
pub async fn collect(store: &dyn ObjectStore, loc: &Location, depth: usize, filter: &KeyFilter) -> Result<StatsDoc> {
    let mut b = StatsBuilder::new(depth);
    let mut req =
        ListRequest { prefix: loc.prefix.clone(), start_after: loc.prefix.clone(), end: None, max_keys: 1000 };
    loop {
        let page = with_retries(|| store.list(&req)).await?;
        for ObjectEntry { key, size, etag, .. } in &page.entries {
            if let Some(rel) = loc.rel_key(key).filter(|k| !k.is_empty() && filter.admits(k)) {
                b.add(rel, *size, etag.as_deref());
            }
        }
        for Uncopyable { key, reason } in &page.skipped {
            let rel = loc.rel_key(key).unwrap_or(key);
            if filter.admits(rel) {
                b.add_uncopyable(rel, reason);
            }
        }
        // After the last key of either kind: a page may end with an uncopyable entry.
        match (page.truncated, page.last_key()) {
            (true, Some(last)) => req.start_after = last.to_string(),
            _ => return Ok(b.finish(loc.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(entries: &[(&str, u64, &str)], depth: usize) -> StatsDoc {
        let mut b = StatsBuilder::new(depth);
        for (k, s, e) in entries {
            b.add(k, *s, Some(e));
        }
        b.finish("x".into())
    }

    #[test]
    fn the_digest_ignores_order_and_sees_every_change() {
        let a = doc(&[("a/1", 1, "e1"), ("a/2", 2, "e2"), ("b", 3, "e3")], 0);
        let b = doc(&[("b", 3, "e3"), ("a/2", 2, "e2"), ("a/1", 1, "e1")], 0);
        assert!(a.same_content(&b));
        assert!(!a.same_content(&doc(&[("a/1", 1, "e1"), ("a/2", 2, "eX"), ("b", 3, "e3")], 0)));
        assert!(!a.same_content(&doc(&[("a/1", 1, "e1"), ("a/2", 2, "e2")], 0)));
        assert!(!a.same_content(&doc(&[("a/1", 1, "e1"), ("a/2", 2, "e2"), ("c", 3, "e3")], 0)));
    }

    #[test]
    fn uncopyable_entries_are_counted_apart_and_make_documents_differ() {
        let a = doc(&[("a", 1, "e")], 1);
        let mut b = StatsBuilder::new(1);
        b.add("a", 1, Some("e"));
        for i in 0..UNCOPYABLE_SHOWN + 5 {
            b.add_uncopyable(&format!("bad{i:03}"), "its name is not UTF-8");
        }
        let b = b.finish("x".into());
        assert_eq!((b.objects, b.uncopyable, b.uncopyable_entries.len()), (1, 105, UNCOPYABLE_SHOWN));
        assert_eq!(
            b.uncopyable_entries[0],
            SkippedEntry { key: "bad000".into(), reason: "its name is not UTF-8".into() }
        );
        assert_eq!(a.digest, b.digest);
        assert!(!a.same_content(&b), "a tree with uncopyable entries is not the same as one without");
    }

    #[test]
    fn prefixes_are_counted_down_to_the_depth() {
        let d = doc(&[("a/x/1", 1, "e"), ("a/x/2", 2, "e"), ("a/y", 4, "e"), ("top", 8, "e")], 2);
        assert_eq!(d.prefixes["a/"], Tally { objects: 3, bytes: 7 });
        assert_eq!(d.prefixes["a/x/"], Tally { objects: 2, bytes: 3 });
        assert_eq!(d.prefixes[""], Tally { objects: 1, bytes: 8 });
        assert!(!d.prefixes.contains_key("a/x/1/"));
        assert_eq!((d.objects, d.bytes), (4, 15));
    }
}
