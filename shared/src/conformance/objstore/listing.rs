//! Listing cases: byte order, prefix, start_after, inclusive end, max_keys, truncation.

use std::sync::Arc;

use super::{Caps, list_all, md5_hex, put, read_all, tricky_content, tricky_keys};
use crate::objstore::{ListRequest, ObjectStore};

/// Stores every tricky key; returns them sorted in byte order.
async fn fill(store: &dyn ObjectStore, caps: &Caps) -> Vec<String> {
    let mut keys = tricky_keys(caps.s3_only_keys);
    for k in &keys {
        put(store, k, &tricky_content(k)).await;
    }
    keys.sort();
    keys
}

/// Every tricky key lists once, in byte order, with its size and ETag, and reads back.
pub(super) async fn tricky_keys_list_in_byte_order(store: Arc<dyn ObjectStore>, caps: &Caps) {
    let keys = fill(&*store, caps).await;
    let listed = list_all(&*store, "", "", None, 1000).await;
    let got: Vec<&str> = listed.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(got, keys, "tricky keys: listing differs from the byte-ordered key set");
    for e in &listed {
        let data = tricky_content(&e.key);
        assert_eq!(e.size, data.len() as u64, "tricky keys: size of {:?}", e.key);
        match &e.etag {
            Some(t) => assert_eq!(*t, md5_hex(&data), "tricky keys: ETag of {:?}", e.key),
            None => assert!(!caps.list_etags, "tricky keys: no ETag listed for {:?}", e.key),
        }
        let head = store.head(&e.key).await.unwrap();
        assert_eq!(head.map(|h| h.size), Some(e.size), "tricky keys: head of {:?}", e.key);
        assert!(read_all(&*store, &e.key).await == data, "tricky keys: bytes of {:?}", e.key);
    }
    // Page by page, three at a time: every key exactly once.
    let paged: Vec<String> = list_all(&*store, "", "", None, 3).await.into_iter().map(|e| e.key).collect();
    assert_eq!(paged, keys, "tricky keys: walking pages of 3");
}

/// Many (prefix, start_after, end) ranges over the tricky keys list exactly the keys a
/// plain filter of the sorted key set gives, in pages of 3 and in one page.
pub(super) async fn ranges_match_a_model(store: Arc<dyn ObjectStore>, caps: &Caps) {
    let keys = fill(&*store, caps).await;
    let prefixes = ["", "a", "a/", "a/b", "a/b/", "deep/1/2/", "p", "zzz"];
    let afters = ["", "a-b", "a/", "a/b", "a/b/c", "a/b/c0", "emoji/", "p", "\u{10FFFF}"];
    let ends = [None, Some(""), Some("a.b"), Some("a/b/c"), Some("a/b/"), Some("emoji/🎉"), Some("p/q")];
    for prefix in prefixes {
        for after in afters {
            for end in ends {
                let want: Vec<&str> = keys
                    .iter()
                    .map(String::as_str)
                    .filter(|k| k.starts_with(prefix) && *k > after && end.is_none_or(|e| *k <= e))
                    .collect();
                let max = if want.len() > 4 { 3 } else { 1000 };
                let got = list_all(&*store, prefix, after, end, max).await;
                let got: Vec<&str> = got.iter().map(|e| e.key.as_str()).collect();
                assert_eq!(got, want, "range prefix={prefix:?} after={after:?} end={end:?}");
            }
        }
    }
}

/// Bounds on a simple key set: start_after is exclusive, end inclusive, truncation exact
/// where the store can know, empty ranges and stores list nothing.
pub(super) async fn bounds_and_truncation(store: Arc<dyn ObjectStore>) {
    let req = |prefix: &str, after: &str, end: Option<&str>, max| ListRequest {
        prefix: prefix.into(),
        start_after: after.into(),
        end: end.map(String::from),
        max_keys: max,
    };
    let page = store.list(&req("", "", None, 10)).await.expect("list of an empty store");
    assert!(page.entries.is_empty() && !page.truncated, "empty store listed {page:?}");
    for k in ["q", "r/0", "r/1", "r/2", "r/3", "r/4", "r/5", "r/6", "r/7", "r/8", "r/9", "s"] {
        put(&*store, k, k.as_bytes()).await;
    }
    let keys = |p: &crate::objstore::ListPage| p.entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>();
    let cases: [(ListRequest, &[&str], bool); 10] = [
        (req("r/", "r/2", Some("r/6"), 100), &["r/3", "r/4", "r/5", "r/6"], false),
        (req("r/", "r/2", Some("r/6"), 2), &["r/3", "r/4"], true),
        // A page that reaches `end` is complete, however many keys follow it.
        (req("r/", "r/2", Some("r/6"), 4), &["r/3", "r/4", "r/5", "r/6"], false),
        // So is one that holds the range's last key, `end` not being a key: keys follow
        // the page, but none of the range.
        (req("r/", "r/2", Some("r/5z"), 3), &["r/3", "r/4", "r/5"], false),
        (
            req("", "", Some("r/9~"), 11),
            &["q", "r/0", "r/1", "r/2", "r/3", "r/4", "r/5", "r/6", "r/7", "r/8", "r/9"],
            false,
        ),
        (req("r/", "", None, 3), &["r/0", "r/1", "r/2"], true),
        (req("r/", "r/8", None, 100), &["r/9"], false),
        (req("", "r/9", None, 100), &["s"], false),
        (req("", "", Some("r/0"), 100), &["q", "r/0"], false),
        (req("r/", "a", Some("r/1 "), 100), &["r/0", "r/1"], false),
    ];
    for (r, want, truncated) in cases {
        let page = store.list(&r).await.unwrap_or_else(|e| panic!("{r:?}: {e}"));
        assert_eq!(keys(&page), *want, "bounds: keys of {r:?}");
        assert_eq!(page.truncated, truncated, "bounds: truncated of {r:?}");
        for e in &page.entries {
            assert_eq!(e.size, e.key.len() as u64, "bounds: size of {:?}", e.key);
        }
    }
    for r in [
        req("r/", "r/5", Some("r/5"), 10),
        req("r/", "r/5", Some("r/4"), 10),
        req("r/", "r/9", None, 10),
        req("t", "", None, 10),
        req("r/x", "", None, 10),
    ] {
        let page = store.list(&r).await.unwrap_or_else(|e| panic!("{r:?}: {e}"));
        assert!(page.entries.is_empty() && !page.truncated, "bounds: {r:?} listed {page:?}");
    }
}
