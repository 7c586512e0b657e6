use std::sync::Arc;

use super::*;
use crate::conformance::objstore::{self as suite, Caps};
use crate::objstore::{ObjectAttrs, WriteOptions};

fn store_in(dir: &Path) -> LocalDirStore {
    LocalDirStore::new(dir.to_str().unwrap()).unwrap()
}

fn all(max_keys: usize) -> ListRequest {
    ListRequest { prefix: String::new(), start_after: String::new(), end: None, max_keys }
}

#[tokio::test]
async fn local_dir_store_passes_the_conformance_suite() {
    let base = Arc::new(tempfile::tempdir().unwrap());
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let missing: Arc<dyn ObjectStore> = Arc::new(store_in(&base.path().join("missing")));
    let caps = Caps { s3_only_keys: false, list_etags: true, missing };
    suite::run(
        || {
            let (base, n) = (base.clone(), n.clone());
            async move {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let dir = base.path().join(format!("case-{i}"));
                std::fs::create_dir(&dir).unwrap();
                Arc::new(store_in(&dir)) as Arc<dyn ObjectStore>
            }
        },
        caps,
    )
    .await;
}

#[tokio::test]
async fn put_never_writes_through_a_symlink_out_of_the_root() {
    let outside = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
    let store = store_in(dir.path());
    let r = store.put("link/x", suite_body(b"data"), 4, &ObjectAttrs::NONE, &WriteOptions::KEEP).await;
    assert!(matches!(&r, Err(Error::Permanent(m)) if m.contains("outside")), "{r:?}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn keys_that_clash_with_files_and_directories_are_permanent_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store.put("f", suite_body(b"1"), 1, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    store.put("d/x", suite_body(b"2"), 1, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    for key in ["f/under", "d"] {
        let r = store.put(key, suite_body(b"3"), 1, &ObjectAttrs::NONE, &WriteOptions::KEEP).await;
        assert!(matches!(&r, Err(Error::Permanent(m)) if m.contains(&format!("{key:?}"))), "{key}: {r:?}");
    }
    // Neither left a temp file behind, nor changed the objects.
    let page = store.list(&all(10)).await.unwrap();
    let keys: Vec<_> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["d/x", "f"]);
    let names: Vec<_> = std::fs::read_dir(dir.path().join("d")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["x"]);
}

#[tokio::test]
async fn leftover_temp_files_and_special_files_are_listed_as_uncopyable_never_as_objects() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub").join(format!("{TMP_PREFIX}abc")), b"partial").unwrap();
    std::fs::write(dir.path().join("real"), b"r").unwrap();
    std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
    let store = store_in(dir.path());
    let page = store.list(&all(10)).await.unwrap();
    let keys: Vec<_> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["real"]);
    let tmp = format!("sub/{TMP_PREFIX}abc");
    assert_eq!(skipped(&page), [("sock", "a socket, not a regular file"), (tmp.as_str(), "reserved")]);
    assert_eq!(store.head(&tmp).await.unwrap(), None);
}

/// The skipped entries of a page as (key, a telling part of the reason).
fn skipped(page: &ListPage) -> Vec<(&str, &str)> {
    page.skipped
        .iter()
        .map(|u| {
            let tell = ["a socket, not a regular file", "reserved", "not UTF-8", "broken", "a symlink to a directory"]
                .into_iter()
                .find(|t| u.reason.contains(t))
                .unwrap_or(u.reason.as_str());
            (u.key.as_str(), tell)
        })
        .collect()
}

#[tokio::test]
async fn every_entry_not_copied_is_listed_with_its_reason_in_key_order() {
    use std::os::unix::ffi::OsStrExt;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside the root").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("a"), b"a").unwrap();
    std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"b\xe9")), b"latin-1").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("c-dirlink")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("d-broken")).unwrap();
    std::os::unix::fs::symlink(root.join("a"), root.join("e-filelink")).unwrap();
    std::fs::write(root.join("f"), b"f").unwrap();
    let store = store_in(root);
    let page = store.list(&all(10)).await.unwrap();
    let keys: Vec<_> = page.entries.iter().map(|e| (e.key.as_str(), e.size)).collect();
    // A symlink to a file is an object with its target's content.
    assert_eq!(keys, [("a", 1), ("e-filelink", 1), ("f", 1)]);
    assert_eq!(
        skipped(&page),
        [("b\u{FFFD}", "not UTF-8"), ("c-dirlink", "a symlink to a directory"), ("d-broken", "broken")]
    );
    assert!(page.skipped[0].reason.contains("b\\xe9"), "{:?}", page.skipped[0]);
    assert!(!page.truncated);
    // In pages of two, both kinds count toward the page and the page continues after either.
    let mut req = all(2);
    let mut seen = Vec::new();
    loop {
        let page = store.list(&req).await.unwrap();
        assert!(page.entries.len() + page.skipped.len() <= 2);
        seen.extend(page.entries.iter().map(|e| e.key.clone()).chain(page.skipped.iter().map(|u| u.key.clone())));
        match (page.truncated, page.last_key()) {
            (true, Some(l)) => req.start_after = l.to_string(),
            _ => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["a", "b\u{FFFD}", "c-dirlink", "d-broken", "e-filelink", "f"]);
    // Ranges bound them like any key.
    let req =
        ListRequest { prefix: String::new(), start_after: "a".into(), end: Some("c-dirlink".into()), max_keys: 10 };
    let page = store.list(&req).await.unwrap();
    assert!(page.entries.is_empty());
    assert_eq!(skipped(&page), [("b\u{FFFD}", "not UTF-8"), ("c-dirlink", "a symlink to a directory")]);
}

#[tokio::test]
async fn a_page_whose_walked_files_all_vanished_walks_on_and_is_never_empty_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    for k in ["k1", "k2", "k3", "k4"] {
        std::fs::write(dir.path().join(k), k).unwrap();
    }
    // The directory's listing is cached while its mtime is unchanged: delete files behind
    // the cache's back (keeping the mtime), so the walk yields names that are gone when the
    // page is built, as when files vanish between the walk and the hashing.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    let set_old = || std::fs::File::open(dir.path()).unwrap().set_modified(old).unwrap();
    set_old();
    let store = store_in(dir.path());
    assert_eq!(store.list(&all(10)).await.unwrap().entries.len(), 4);
    for k in ["k1", "k2", "k3"] {
        std::fs::remove_file(dir.path().join(k)).unwrap();
    }
    set_old();
    let page = store.list(&all(2)).await.unwrap();
    let keys: Vec<_> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["k4"], "the walk went on past k1, k2 (page 1) and k3");
    std::fs::remove_file(dir.path().join("k4")).unwrap();
    set_old();
    let page = store.list(&all(2)).await.unwrap();
    assert_eq!((page.entries.len(), page.skipped.len(), page.truncated), (0, 0, false), "the range is exhausted");
}

#[tokio::test]
async fn files_written_behind_the_stores_back_are_listed_with_their_md5() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path());
    store.put("a/1", suite_body(b"one"), 3, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    assert_eq!(store.list(&all(10)).await.unwrap().entries.len(), 1);
    std::fs::write(dir.path().join("a/2"), b"two").unwrap();
    let page = store.list(&all(10)).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    assert_eq!(page.entries[1].etag.as_deref(), Some("b8a9f715dbb64fd5c56e7783c6820a61"));
}

#[tokio::test]
async fn delete_prunes_emptied_directories_but_not_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = store_in(&root);
    store.put("x/y/z", suite_body(b"z"), 1, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    store.put("x/w", suite_body(b"w"), 1, &ObjectAttrs::NONE, &WriteOptions::KEEP).await.unwrap();
    assert_eq!(store.delete("x/y/z", None).await.unwrap(), Deleted::Yes);
    assert!(!root.join("x/y").exists() && root.join("x").exists());
    assert_eq!(store.delete("x/w", None).await.unwrap(), Deleted::Yes);
    assert!(!root.join("x").exists() && root.is_dir());
    store.check().await.expect("the root stays");
}

#[tokio::test]
async fn a_page_in_a_large_flat_directory_honours_every_bound() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..2000 {
        std::fs::write(dir.path().join(format!("k{i:05}")), b"").unwrap();
    }
    std::fs::create_dir(dir.path().join("k01000x")).unwrap();
    std::fs::write(dir.path().join("k01000x/inner"), b"").unwrap();
    let store = store_in(dir.path());
    let req =
        ListRequest { prefix: "k0".into(), start_after: "k00999".into(), end: Some("k01001".into()), max_keys: 10 };
    let page = store.list(&req).await.unwrap();
    let keys: Vec<_> = page.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["k01000", "k01000x/inner", "k01001"]);
    assert!(!page.truncated);
}

fn suite_body(b: &[u8]) -> Body {
    Box::pin(std::io::Cursor::new(b.to_vec()))
}
