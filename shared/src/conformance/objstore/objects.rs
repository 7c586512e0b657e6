//! Cases on single objects: put, head, get, replace, delete, copy, check.

use std::sync::Arc;

use super::{
    Caps, assert_not_found, body, checksum_of, list_all, md5_hex, noise, put, read_all, tricky_content, tricky_keys,
};
use crate::error::Error;
use crate::model::ObjectEntry;
use crate::objstore::{Deleted, ObjectStore};
use crate::objstore::{ObjectAttrs, WriteOptions};

/// Empty, small and several-MiB objects read back byte for byte, with size and MD5 ETag.
pub(super) async fn round_trips(store: Arc<dyn ObjectStore>) {
    for (i, n) in [0usize, 1, 1000, (5 << 20) + 7].into_iter().enumerate() {
        let key = format!("rt/{n}");
        let bytes = noise(n, i as u64);
        let put = put(&*store, &key, &bytes).await;
        let head = store.head(&key).await.expect("head after put");
        assert_eq!(head, Some(put.clone()), "round_trips: head of {key:?} differs from put");
        let got = read_all(&*store, &key).await;
        assert!(got == bytes, "round_trips: {key:?} read back {} bytes, wrote {n}", got.len());
    }
}

/// Writes made durable by `sync` read back the same afterwards (durability itself needs a
/// power cut to test); an ordinary object is readable, not archived, and its head agrees
/// with the put's answer (a store may answer a head from what the put computed).
pub(super) async fn sync_and_archive(store: Arc<dyn ObjectStore>) {
    let bytes = noise(3000, 7);
    let put = put(&*store, "durable/one", &bytes).await;
    store.sync().await.expect("sync after a put");
    store.sync().await.expect("sync with nothing new");
    assert_eq!(store.head("durable/one").await.unwrap(), Some(put), "sync_and_archive: head after sync");
    assert_eq!(read_all(&*store, "durable/one").await, bytes, "sync_and_archive: content after sync");
    let archive = store.archive("durable/one").await.expect("archive of an ordinary object");
    assert_eq!(archive, crate::objstore::Archive::Readable, "sync_and_archive: archive");
    assert_not_found("sync_and_archive: archive of a missing key", store.archive("durable/absent").await.map(|_| ()));
}

/// A missing key: head is None, get is NotFound, delete is Absent.
pub(super) async fn missing_objects(store: Arc<dyn ObjectStore>) {
    put(&*store, "present", b"x").await;
    for key in ["absent", "presen", "present/child", "present2"] {
        let head = store.head(key).await.expect("head of a missing key");
        assert_eq!(head, None, "missing_objects: head of {key:?}");
        assert_not_found(
            &format!("missing_objects: get {key:?}"),
            store.get(key, None).await.map(|d| d.body).map(|_| ()),
        );
        let del = store.delete(key, None).await.expect("delete of a missing key");
        assert_eq!(del, Deleted::Absent, "missing_objects: delete {key:?}");
    }
    assert_eq!(read_all(&*store, "present").await, b"x", "missing_objects: neighbour changed");
}

/// A put over an existing key replaces it whole: one object, the new bytes.
pub(super) async fn put_replaces(store: Arc<dyn ObjectStore>) {
    let (v1, v2) = (noise(100, 1), noise(10, 2));
    put(&*store, "k/v", &v1).await;
    let new = put(&*store, "k/v", &v2).await;
    assert_eq!(store.head("k/v").await.unwrap(), Some(new.clone()), "put_replaces: head");
    assert_eq!(read_all(&*store, "k/v").await, v2, "put_replaces: get");
    assert_eq!(list_all(&*store, "", "", None, 10).await, vec![new], "put_replaces: listing");
}

/// A body shorter or longer than its declared size fails the put and writes nothing.
pub(super) async fn bad_bodies_write_nothing(store: Arc<dyn ObjectStore>) {
    let short = store.put("short", body(vec![1; 5]), 10, &ObjectAttrs::NONE, &WriteOptions::KEEP).await;
    assert!(short.is_err(), "bad_bodies: a 5-byte body for 10 bytes was accepted: {short:?}");
    let long = store.put("long", body(vec![1; 10]), 5, &ObjectAttrs::NONE, &WriteOptions::KEEP).await;
    assert!(long.is_err(), "bad_bodies: a 10-byte body for 5 bytes was accepted: {long:?}");
    for key in ["short", "long"] {
        assert_eq!(store.head(key).await.unwrap(), None, "bad_bodies: {key:?} was written");
    }
    let left = list_all(&*store, "", "", None, 100).await;
    assert!(left.is_empty(), "bad_bodies: a failed put left {left:?}");
}

/// Delete with the wrong ETag keeps the object; with the right one (or none) removes it.
pub(super) async fn conditional_delete(store: Arc<dyn ObjectStore>) {
    let bytes = noise(64, 3);
    let obj = put(&*store, "d/x/1", &bytes).await;
    let sibling = put(&*store, "d/y", b"sibling").await;
    let wrong = md5_hex(b"something else");
    let r = store.delete("d/x/1", Some(&wrong)).await.expect("delete, wrong ETag");
    assert_eq!(r, Deleted::Changed, "conditional_delete: wrong ETag");
    assert_eq!(read_all(&*store, "d/x/1").await, bytes, "conditional_delete: kept object changed");
    let r = store.delete("d/x/1", obj.etag.as_deref()).await.expect("delete, right ETag");
    assert_eq!(r, Deleted::Yes, "conditional_delete: right ETag");
    assert_eq!(store.head("d/x/1").await.unwrap(), None, "conditional_delete: still there");
    let r = store.delete("d/x/1", obj.etag.as_deref()).await.expect("second delete");
    assert_eq!(r, Deleted::Absent, "conditional_delete: deleting twice");
    assert_eq!(list_all(&*store, "", "", None, 10).await, vec![sibling.clone()]);
    // The emptied place can hold objects again; an unconditional delete removes them.
    put(&*store, "d/x", b"now a file").await;
    assert_eq!(store.delete("d/x", None).await.unwrap(), Deleted::Yes);
    assert_eq!(list_all(&*store, "", "", None, 10).await, vec![sibling]);
}

/// A get conditional on the listed ETag reads that version, and refuses (`Conflict`) once
/// the object has changed: a stale copy is never written.
pub(super) async fn conditional_get(store: Arc<dyn ObjectStore>) {
    let old = put(&*store, "g/obj", b"version one").await;
    let etag = old.etag.clone().expect("put returns an ETag");
    let mut r = store.get("g/obj", Some(&etag)).await.map(|d| d.body).expect("get with the current ETag");
    let mut got = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut r, &mut got).await.unwrap();
    assert_eq!(got, b"version one", "conditional_get: right ETag");
    put(&*store, "g/obj", b"version two, longer").await;
    match store.get("g/obj", Some(&etag)).await.map(|d| d.body) {
        Err(Error::Conflict(_)) => {}
        Err(e) => panic!("conditional_get: stale ETag must be Conflict, got {e:?}"),
        Ok(_) => panic!("conditional_get: stale ETag must be refused, got a body"),
    }
    assert_eq!(read_all(&*store, "g/obj").await, b"version two, longer", "unconditional get");
}

/// Puts running at once all land; racing puts to one key leave one of them, whole.
pub(super) async fn concurrent_puts(store: Arc<dyn ObjectStore>) {
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let bytes = noise(1000 + i as usize, i);
            s.put(
                &format!("c/{i:02}"),
                body(bytes.clone()),
                bytes.len() as u64,
                &ObjectAttrs::NONE,
                &WriteOptions::KEEP,
            )
            .await
        }));
    }
    let versions: Vec<Vec<u8>> = (0..8).map(|i| noise(100 * (i + 1), 100 + i as u64)).collect();
    for v in &versions {
        let (s, v) = (store.clone(), v.clone());
        tasks.push(tokio::spawn(async move {
            s.put("same", body(v.clone()), v.len() as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP).await
        }));
    }
    for t in tasks {
        t.await.expect("put task panicked").expect("concurrent put failed");
    }
    let listed = list_all(&*store, "", "", None, 1000).await;
    assert_eq!(listed.len(), 17, "concurrent_puts: listed {listed:?}");
    let same = read_all(&*store, "same").await;
    assert!(versions.contains(&same), "concurrent_puts: \"same\" holds a mix ({} bytes)", same.len());
    let head = store.head("same").await.unwrap().expect("same exists");
    assert_eq!(head.etag, Some(md5_hex(&same)), "concurrent_puts: ETag does not match content");
}

/// `checksums` of a written object: its ETag, an MD5 (a single-part write), and at least one
/// full-object checksum, each one right for the bytes; `NotFound` for a missing key.
pub(super) async fn checksums_describe_the_content(store: Arc<dyn ObjectStore>) {
    for (key, bytes) in [("sum/hello", b"hello".to_vec()), ("sum/empty", Vec::new()), ("sum/noise", noise(70_000, 5))] {
        let obj = put(&*store, key, &bytes).await;
        let c = store.checksums(key).await.unwrap_or_else(|e| panic!("checksums of {key:?}: {e}"));
        assert_eq!(c.etag, obj.etag, "checksums of {key:?}: the ETag");
        assert!(c.etag_is_md5, "checksums of {key:?}: a single-part write's ETag is its MD5");
        assert!(!c.values.is_empty(), "checksums of {key:?}: no full-object checksum ({c:?})");
        for (alg, v) in &c.values {
            if let Some(want) = checksum_of(alg, &bytes) {
                assert_eq!(v, &want, "checksums of {key:?}: {alg}");
            }
        }
    }
    assert_not_found("checksums of a missing key", store.checksums("sum/absent").await);
}

/// `check` passes on an existing store; on a missing one `check` and `list` are NotFound.
pub(super) async fn check_store(store: Arc<dyn ObjectStore>, caps: &Caps) {
    store.check().await.unwrap_or_else(|e| panic!("check of {} failed: {e}", store.describe()));
    let missing = &caps.missing;
    assert_not_found(&format!("check of missing {}", missing.describe()), missing.check().await);
    let req =
        crate::objstore::ListRequest { prefix: String::new(), start_after: String::new(), end: None, max_keys: 10 };
    assert_not_found("list of a missing store", missing.list(&req).await);
}

/// Without `s3_only_keys`, every S3-only key is refused with `Permanent` naming it, even
/// next to the common keys, and nothing else changes.
pub(super) async fn unsupported_keys_are_refused(store: Arc<dyn ObjectStore>) {
    let common = tricky_keys(false);
    for k in &common {
        put(&*store, k, &tricky_content(k)).await;
    }
    for k in tricky_keys(true).iter().filter(|k| !common.contains(k)) {
        let data = tricky_content(k);
        match store.put(k, body(data.clone()), data.len() as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP).await {
            Err(Error::Permanent(m)) => {
                assert!(m.contains(k.as_str()) || m.contains(&format!("{k:?}")), "message {m:?} does not name {k:?}")
            }
            other => panic!("unsupported key {k:?}: expected Permanent, got {other:?}"),
        }
    }
    let mut want = common.clone();
    want.sort();
    let got: Vec<String> = list_all(&*store, "", "", None, 1000).await.into_iter().map(|e| e.key).collect();
    assert_eq!(got, want, "unsupported keys changed the store");
    for k in &common {
        assert_eq!(read_all(&*store, k).await, tricky_content(k), "{k:?} changed");
    }
}

/// Server-side copies of every tricky key (and a several-MiB object) from `a` to `b` give
/// the same bytes and ETag; repeating a copy gives the same result.
pub(super) async fn server_side_copy(a: Arc<dyn ObjectStore>, b: Arc<dyn ObjectStore>, caps: &Caps) {
    let src = a.copy_source().expect("copy source");
    let mut keys = tricky_keys(caps.s3_only_keys);
    keys.push("big/object".into());
    for k in &keys {
        let data = if k == "big/object" { noise((6 << 20) + 3, 9) } else { tricky_content(k) };
        let entry = put(&*a, k, &data).await;
        let dst = format!("copied/{k}");
        for attempt in 0..2 {
            let got = b
                .copy_from(&src, &entry, &dst, &WriteOptions::KEEP)
                .await
                .unwrap_or_else(|e| panic!("copy {k:?}: {e}"));
            let want = ObjectEntry { key: dst.clone(), ..entry.clone() };
            assert_eq!(got, want, "server_side_copy: copy {attempt} of {k:?}");
        }
        assert_eq!(b.head(&dst).await.unwrap().map(|e| e.etag), Some(entry.etag.clone()));
        assert!(read_all(&*b, &dst).await == data, "server_side_copy: bytes of {k:?} differ");
        if k == "big/object" || k == "plain.txt" {
            // The copy carries the source's checksum, so the two can be compared by it.
            let (cs, cd) = (a.checksums(k).await.unwrap(), b.checksums(&dst).await.unwrap());
            let common = cs.values.iter().any(|(alg, v)| cd.full(alg) == Some(v.as_str()));
            assert!(common, "server_side_copy: {k:?} and its copy share no checksum: {cs:?} / {cd:?}");
        }
    }
    // Within one store too.
    let e = a.head("plain.txt").await.unwrap().expect("plain.txt");
    let c = a.copy_from(&src, &e, "plain copy", &WriteOptions::KEEP).await.expect("copy within a store");
    assert_eq!((c.size, c.etag), (e.size, e.etag), "server_side_copy: within a store");
    let ghost = ObjectEntry { key: "no such key".into(), size: 1, etag: Some(md5_hex(b"x")), storage_class: None };
    assert_not_found("copy of a missing source", b.copy_from(&src, &ghost, "ghost", &WriteOptions::KEEP).await);
}
