//! `--include` and `--exclude` as a user runs them: only the keys the filters keep are
//! copied, verified, counted and moved, on local directories and between S3 buckets; the
//! keys they leave out are never touched on either side, and verify agrees with clone.

use std::collections::BTreeMap;

use bucketclone_tests::{listing, moto, new_buckets, report, run, tree, write_tree};
use shared::conformance::objstore::body;
use shared::objstore::{ObjectAttrs, ObjectStore, WriteOptions};

/// Keeps the logs and everything under keep/, except keep/tmp/.
const FILTERS: [&str; 8] = ["--exclude", "*", "--include", "*.log", "--include", "keep/*", "--exclude", "keep/tmp/*"];

fn source() -> BTreeMap<String, Vec<u8>> {
    [
        "a.log",
        "deep/er/b.log",
        "c.txt",
        "deep/d.txt",
        "keep/e.bin",
        "keep/sub/f.bin",
        "keep/tmp/g.bin",
        "keep/tmp/h.log",
        "other/keep/i.bin",
    ]
    .iter()
    .map(|k| (k.to_string(), format!("content of {k}").into_bytes()))
    .collect()
}

/// The keys [`FILTERS`] keep: the last matching filter decides (keep/tmp/h.log is a log,
/// but `--exclude keep/tmp/*` comes later), and `*` crosses `/`.
fn kept() -> Vec<&'static str> {
    vec!["a.log", "deep/er/b.log", "keep/e.bin", "keep/sub/f.bin"]
}

fn with_filters<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(FILTERS).collect()
}

#[test]
fn local_clone_verify_stats_and_move_touch_only_the_filtered_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    let state = dir.path().join("state.sqlite");
    let (s, d, st) = (src.to_str().unwrap(), dst.to_str().unwrap(), state.to_str().unwrap());
    let files = source();
    write_tree(&src, &files);
    // An excluded file already in the destination: neither extra nor overwritten.
    write_tree(&dst, &BTreeMap::from([("c.txt".to_string(), b"the destination's own".to_vec())]));

    let out = run(&with_filters(&["clone", s, d, "--json", "--state", st]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let r = report(&out);
    assert_eq!(r["state"], "verified");
    assert_eq!((r["copied"]["objects"].as_u64(), r["verified"].as_u64()), (Some(4), Some(4)));
    assert_eq!(r["source"]["objects"], 4, "excluded keys are not counted");
    assert_eq!(r["differences"]["extra"], 0, "an excluded destination file is not extra");
    let mut want: BTreeMap<String, Vec<u8>> = kept().into_iter().map(|k| (k.to_string(), files[k].clone())).collect();
    want.insert("c.txt".into(), b"the destination's own".to_vec());
    assert_eq!(tree(&dst), want);

    // Verify with the same filters agrees; without them, it names what was left out.
    let out = run(&with_filters(&["verify", s, d, "--json", "--state", st]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(report(&out)["verified"], 4);
    let out = run(&["verify", s, d, "--json", "--state", st]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!((r["differences"]["missing"].as_u64(), r["differences"]["size_differs"].as_u64()), (Some(4), Some(1)));

    // Stats counts the same keys on both sides (c.txt differs, and is left out).
    let stats = |loc: &str| report(&run(&with_filters(&["stats", loc, "--json"])));
    let (a, b) = (stats(s), stats(d));
    assert_eq!((a["objects"].as_u64(), &a["digest"]), (Some(4), &b["digest"]));
    assert_eq!(report(&run(&["stats", s, "--json", "--exclude", "*.log"]))["objects"], 6);

    // A move deletes only the kept keys from the source.
    let moved = dir.path().join("moved");
    let out = run(&with_filters(&["move", s, moved.to_str().unwrap(), "--json", "--state", st]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(report(&out)["deleted"]["objects"], 4);
    let left: Vec<String> = tree(&src).into_keys().collect();
    assert_eq!(left, ["c.txt", "deep/d.txt", "keep/tmp/g.bin", "keep/tmp/h.log", "other/keep/i.bin"]);
}

#[test]
fn a_filter_with_an_empty_pattern_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&dir.path().join("src"), &source());
    let (s, d) = (dir.path().join("src"), dir.path().join("dst"));
    let out = run(&["clone", s.to_str().unwrap(), d.to_str().unwrap(), "--include", ""]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("empty pattern"), "{err}");
    assert!(!d.join("a.log").exists(), "nothing was copied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_clone_with_filters_copies_the_included_keys_and_verify_agrees() {
    let ctx = moto().await;
    let [(a, src), (b, dst)] = new_buckets(&ctx, ["fsrc", "fdst"]).await;
    // Under a prefix: patterns match keys relative to the location.
    for (k, v) in source() {
        src.put(&format!("p/{k}"), body(v.clone()), v.len() as u64, &ObjectAttrs::NONE, &WriteOptions::KEEP)
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s.sqlite");
    let (sa, sb, st) = (format!("s3://{a}/p/"), format!("s3://{b}/q/"), st.to_str().unwrap().to_string());
    let out = run(&with_filters(&["clone", &sa, &sb, "--json", "--state", &st]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(report(&out)["copied"]["objects"], 4);
    let got: Vec<String> = listing(&dst).await.into_keys().collect();
    let want: Vec<String> = kept().iter().map(|k| format!("q/{k}")).collect();
    assert_eq!(got, want);

    let out = run(&with_filters(&["verify", &sa, &sb, "--json", "--state", &st]));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(report(&out)["verified"], 4);
    let out = run(&["verify", &sa, &sb, "--json", "--state", &st]);
    assert_eq!(out.status.code(), Some(1), "without the filters, the excluded keys are missing");
    assert_eq!(report(&out)["differences"]["missing"], 5);
}
