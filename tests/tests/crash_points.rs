//! The crash-point matrix: a process aborted at every named point of the segment protocol
//! (`shared::faults::POINTS`), on both backends, and the work finished by a clean process.
//!
//! - embedded: `bucketclone clone` (and `move`) between local directories aborts at the
//!   point's 3rd hit (so some segments are done and some are not); the same command run
//!   again must end `verified` with exact counters and the destination equal to the source.
//! - service: on moto, a worker process aborts at the point's 1st hit (the job's first
//!   segment: e.g. `after-record` strands every child); a clean worker then finishes the job,
//!   which `status --json` must show verified with exact counters.
//!
//! Every case first checks the crashed process really aborted at that point.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bucketclone_tests::procs::{Service, aborted, seed_bucket, wait_for};
use bucketclone_tests::{bin, check_local_segments, listing, moto, report, run, tree, unique, write_tree};
use shared::backend::aws::s3::S3Store;
use shared::faults::{AFTER_COPY, AFTER_LISTING, AFTER_RECORD, AFTER_SPLIT, BEFORE_ACK, MID_COPY, POINTS};
use shared::jobstore::JobStore as _;

/// 240 small files over 6 prefixes, with distinct contents of several sizes.
fn source() -> BTreeMap<String, Vec<u8>> {
    (0..240).map(|i| (format!("d{}/f{i:04}", i % 6), format!("file {i};").repeat(1 + i % 9).into_bytes())).collect()
}

fn bytes(files: &BTreeMap<String, Vec<u8>>) -> u64 {
    files.values().map(|v| v.len() as u64).sum()
}

/// Runs `bucketclone <mode> SRC DST` with `BUCKETCLONE_CRASH_AT=<point>:<hit>` and checks it
/// aborted there; then runs it again and checks the rerun finished the job exactly.
fn embedded_case(mode: &str, point: &str) {
    embedded_case_at(mode, point, 3)
}

fn embedded_case_at(mode: &str, point: &str, hit: u32) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state.sqlite"));
    let files = source();
    write_tree(&src, &files);
    let args = [
        mode,
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
        "--json",
        "--state",
        state.to_str().unwrap(),
        "--page-size",
        "20",
        "--workers",
        "2",
        "--concurrency",
        "4",
    ];
    let crashed = bin().args(args).env("BUCKETCLONE_CRASH_AT", format!("{point}:{hit}")).output().unwrap();
    let err = String::from_utf8_lossy(&crashed.stderr);
    assert!(aborted(&crashed.status), "{mode} at {point}: not aborted ({:?}): {err}", crashed.status);
    assert!(err.contains(&format!("crashing at {point}")), "{mode} at {point}: {err}");
    assert!(crashed.stdout.is_empty(), "the crashed run printed no report");

    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{mode} after a crash at {point}");
    let r = report(&out);
    let (n, b) = (files.len() as i64, bytes(&files) as i64);
    let ctx = format!("{mode} after a crash at {point}: {r}");
    assert_eq!(r["state"], "verified", "{ctx}");
    assert_eq!((r["source"]["objects"].as_i64(), r["source"]["bytes"].as_i64()), (Some(n), Some(b)), "{ctx}");
    let copied = (r["copied"]["objects"].as_i64().unwrap(), r["copied"]["bytes"].as_i64().unwrap());
    let skipped = (r["skipped"]["objects"].as_i64().unwrap(), r["skipped"]["bytes"].as_i64().unwrap());
    assert_eq!((copied.0 + skipped.0, copied.1 + skipped.1), (n, b), "copied + skipped = source: {ctx}");
    if mode == "clone" && point == MID_COPY && hit > 20 {
        // The crashed run died in the middle of a page after the first (the first page has
        // 20 keys), after copying some of it. That page's message comes back as a
        // redelivery, which lists the destination before copying (only a first delivery
        // into a destination found empty copies blind): what the crashed run copied is
        // skipped. (The first page would not do: the rerun sends it again as well.)
        assert!(skipped.0 > 0, "the rerun copied again what the crashed run had copied: {ctx}");
    }
    assert_eq!(r["verified"].as_i64(), Some(n), "{ctx}");
    assert_eq!((r["destination"]["objects"].as_i64(), r["destination"]["bytes"].as_i64()), (Some(n), Some(b)));
    assert_eq!(r["failed"], 0, "{ctx}");
    assert_eq!(tree(&dst), files, "the destination equals the source byte for byte");
    if mode == "move" {
        assert_eq!((r["deleted"]["objects"].as_i64(), r["deleted"]["bytes"].as_i64()), (Some(n), Some(b)), "{ctx}");
        assert!(tree(&src).is_empty(), "a move empties its source");
    }
    let segments = check_local_segments(&state, r["job_id"].as_str().unwrap());
    assert_eq!(r["segments"].as_i64(), Some(segments), "{ctx}");
    assert!(segments > 3, "the job had several segments ({segments})");
}

#[test]
fn embedded_clone_crash_after_listing() {
    embedded_case("clone", AFTER_LISTING);
}

/// `after-split` at its first hit, the root page (the first pull finds the queue otherwise
/// empty, so the root always splits): children recorded and not sent; the rerun sends them
/// and redoes the page held to its split. Clones only: moves never split early.
#[test]
fn embedded_clone_crash_after_split() {
    embedded_case_at("clone", AFTER_SPLIT, 1);
}

#[test]
fn embedded_clone_crash_mid_copy() {
    embedded_case("clone", MID_COPY);
}

#[test]
fn embedded_clone_crash_mid_copy_of_a_later_page() {
    embedded_case_at("clone", MID_COPY, 25);
}

#[test]
fn embedded_clone_crash_after_copy() {
    embedded_case("clone", AFTER_COPY);
}

#[test]
fn embedded_clone_crash_after_record() {
    embedded_case("clone", AFTER_RECORD);
}

#[test]
fn embedded_clone_crash_before_ack() {
    embedded_case("clone", BEFORE_ACK);
}

/// `after-copy` in a move: the page's sources are deleted, its completion is not recorded.
#[test]
fn embedded_move_crash_after_copy() {
    embedded_case("move", AFTER_COPY);
}

#[test]
fn embedded_move_crash_after_record() {
    embedded_case("move", AFTER_RECORD);
}

#[test]
fn every_point_has_an_embedded_case() {
    let cases = [AFTER_LISTING, AFTER_SPLIT, MID_COPY, AFTER_COPY, AFTER_RECORD, BEFORE_ACK];
    assert!(POINTS.iter().all(|p| cases.contains(p)), "a new crash point needs its cases here");
}

/// 30 objects with keys only S3 holds; small pages so the job has several segments.
fn service_objects(tag: usize) -> Vec<(String, Vec<u8>)> {
    (0..30)
        .map(|i| (format!("p{}/obj {i:02}+%é", i % 3), format!("{tag}:{i} ").repeat(1 + i % 5).into_bytes()))
        .collect()
}

/// One job per crash point (and a move at `after-copy`) on one deployment, one after the
/// other: a worker with the crash point set works the job's first segment and aborts there;
/// a clean worker finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_crash_points() {
    let ctx = moto().await;
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Service::start(&ctx, &unique("bccp")).await;
    let cases: Vec<(&str, &str)> =
        POINTS.iter().map(|p| ("clone", *p)).chain(std::iter::once(("move", AFTER_COPY))).collect();
    let lease = [("BUCKETCLONE_WORKER__LEASE_SECS", "3".to_string())];
    for (i, (mode, point)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let (src, dst) = (unique("cpsrc"), unique("cpdst"));
        let (n, b) = seed_bucket(&ctx, &src, service_objects(i)).await;
        S3Store::create_bucket(&ctx, &dst).await.unwrap();
        let before = listing(&S3Store::new(&ctx, &src)).await;
        let id = unique("cp");
        svc.request(serde_json::json!({"id": id, "source": {"name": src}, "destination": {"name": dst},
            "options": {"mode": mode, "page_size": 8}}))
            .await;

        let log = dir.path().join(format!("{i}.log"));
        let crash = [lease[0].clone(), ("BUCKETCLONE_CRASH_AT", point.to_string())];
        let w = svc.start_worker(&crash, Some(&log));
        let status = wait_for(svc.worker(w), Duration::from_secs(60)).expect("the crashing worker ends");
        let err = std::fs::read_to_string(&log).unwrap();
        assert!(aborted(&status), "{mode} at {point}: the worker was not aborted ({status:?}): {err}");
        assert!(err.contains(&format!("crashing at {point}")), "{mode} at {point}: {err}");

        let clean = svc.start_worker(&lease, None);
        let job = svc.wait(&id, Duration::from_secs(90)).await;
        let doc = svc.status(&id);
        let c = &doc["counters"];
        let what = format!("{mode} at {point} on the service: {doc}");
        assert_eq!(doc["state"], "verified", "{what}");
        assert_eq!((c["source_objects"].as_u64(), c["source_bytes"].as_u64()), (Some(n as u64), Some(b)), "{what}");
        let copied = c["copied_objects"].as_u64().unwrap() + c["skipped_objects"].as_u64().unwrap();
        let copied_bytes = c["copied_bytes"].as_u64().unwrap() + c["skipped_bytes"].as_u64().unwrap();
        assert_eq!((copied, copied_bytes), (n as u64, b), "copied + skipped = source: {what}");
        assert_eq!(c["verified_objects"].as_u64(), Some(n as u64), "{what}");
        assert_eq!(c["outstanding"], 0, "{what}");
        let segs = svc.jobs.segments(&id, usize::MAX).await.unwrap();
        assert!(segs.iter().all(|s| s.done) && segs.len() > 1, "{what}");
        assert_eq!(job.counters.segments_done, segs.len() as i64, "one count per segment: {what}");
        assert_eq!(listing(&S3Store::new(&ctx, &dst)).await, before, "destination equals the source: {what}");
        if mode == "move" {
            assert_eq!((c["deleted_objects"].as_u64(), c["deleted_bytes"].as_u64()), (Some(n as u64), Some(b)));
            assert!(listing(&S3Store::new(&ctx, &src)).await.is_empty(), "a move empties its source");
        }
        bucketclone_tests::procs::signal(svc.worker(clean), "TERM");
        assert_eq!(svc.worker(clean).wait().unwrap().code(), Some(0));
        eprintln!("service: {mode} at {point}: verified in {:.1}s", started.elapsed().as_secs_f64());
    }
    svc.stop();
}

/// A local clone that crashed ten times in a row must still finish on its next run: the
/// crashes were the process dying, not the segment failing. Before `release_all` reset the
/// delivery count, each crashed run counted a delivery of the segments it held, the
/// embedded queue dead-lettered them at 10, and the 11th run stopped with exit 2 "job is
/// stuck: 1 segment(s) failed on every attempt".
#[test]
fn a_local_clone_crashed_ten_times_finishes_on_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state.sqlite"));
    let files = source();
    write_tree(&src, &files);
    let args = ["clone", src.to_str().unwrap(), dst.to_str().unwrap(), "--json", "--state", state.to_str().unwrap()];
    for _ in 0..10 {
        let crashed = bin().args(args).env("BUCKETCLONE_CRASH_AT", AFTER_LISTING).output().unwrap();
        assert!(aborted(&crashed.status), "{}", String::from_utf8_lossy(&crashed.stderr));
    }
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "the 11th run: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tree(&dst), files);
}

/// A rerun started the moment a killed run exits may find the state's lock still held for a
/// moment (the kernel drops a killed process's lock with its last file reference, sometimes
/// after its parent saw it exit; the local chaos run hit it). The rerun waits a little for
/// the lock instead of refusing; a lock held for good is still refused, with exit 2.
#[test]
fn a_rerun_waits_briefly_for_the_state_lock_and_refuses_a_lock_held_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state.sqlite"));
    write_tree(&src, &source());
    let args = ["clone", src.to_str().unwrap(), dst.to_str().unwrap(), "--json", "--state", state.to_str().unwrap()];
    let lock = std::fs::File::create(state.with_extension("lock")).unwrap();

    lock.try_lock().unwrap();
    let out = run(&args);
    assert_eq!(out.status.code(), Some(2), "a lock held for good is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another bucketclone is running"));

    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        lock.unlock().unwrap();
    });
    let out = run(&args);
    release.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "a lock released within moments is waited for");
    assert_eq!(report(&out)["state"], "verified");
}
