//! Chaos runs (ignored by default; `scripts/chaos.sh` runs them, starting moto if needed):
//!
//! - the service on moto: a coordinator and 3 worker processes cloning 2,000 objects, a
//!   random worker SIGKILLed every 2-5 s and restarted;
//! - one machine: `bucketclone clone` of 20,000 small local files, SIGKILLed after a random
//!   0.3-2.5 s and rerun, until a run finishes.
//!
//! Both must end verified, with exact counters and the destination equal to the source.
//! Each prints one line of figures (`chaos ...: kills, objects, seconds`) for the README.
//! `CHAOS_SEED` replays a run's random choices.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use bucketclone_tests::procs::{Service, seed_bucket};
use bucketclone_tests::{bin, check_local_segments, listing, moto, report, tree, unique, write_tree};
use shared::backend::aws::s3::S3Store;
use shared::jobstore::JobStore;
use shared::model::JobState;

fn rng() -> StdRng {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("CHAOS_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

fn today() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos run: minutes on moto; scripts/chaos.sh"]
async fn chaos_service_with_workers_killed_at_random() {
    let mut rng = rng();
    let ctx = moto().await;
    let objects: Vec<(String, Vec<u8>)> = (0..2000)
        .map(|i| (format!("p{:02}/item {i:04}+é", i % 17), format!("object {i};").repeat(1 + i % 13).into_bytes()))
        .collect();
    let (src, dst) = (unique("chsrc"), unique("chdst"));
    let (n, bytes) = seed_bucket(&ctx, &src, objects).await;
    S3Store::create_bucket(&ctx, &dst).await.unwrap();

    let started = Instant::now();
    let mut svc = Service::start(&ctx, &unique("bcchaos")).await;
    let env = [("BUCKETCLONE_WORKER__LEASE_SECS", "6".to_string())];
    let mut slots: Vec<usize> = (0..3).map(|_| svc.start_worker(&env, None)).collect();
    let id = unique("chaos");
    svc.request(serde_json::json!({"id": id, "source": {"name": src}, "destination": {"name": dst},
        "options": {"page_size": 100}}))
        .await;

    let mut kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(rng.random_range(2000..5000));
    let job = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(1200), "the job did not finish in 20 minutes");
        if let Some(j) = svc.jobs.job(&id).await.unwrap().filter(|j| j.state.is_terminal()) {
            break j;
        }
        if Instant::now() >= next_kill {
            let slot = rng.random_range(0..slots.len());
            let w = svc.worker(slots[slot]);
            w.kill().unwrap(); // SIGKILL: leases held, pages half copied
            w.wait().unwrap();
            kills += 1;
            slots[slot] = svc.start_worker(&env, None);
            next_kill = Instant::now() + Duration::from_millis(rng.random_range(2000..5000));
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let c = &job.counters;
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    assert_eq!((c.source_objects, c.source_bytes), (n as i64, bytes as i64));
    assert_eq!((c.copied_objects + c.skipped_objects, c.copied_bytes + c.skipped_bytes), (n as i64, bytes as i64));
    assert_eq!((c.verified_objects, c.outstanding, c.failed_objects), (n as i64, 0, 0));
    let segs = svc.jobs.segments(&id, usize::MAX).await.unwrap();
    assert_eq!(c.segments_done, segs.len() as i64, "one count per segment");
    let doc = svc.status(&id);
    assert_eq!(doc["state"], "verified");
    assert_eq!(listing(&S3Store::new(&ctx, &src)).await, listing(&S3Store::new(&ctx, &dst)).await);
    svc.stop();
    println!(
        "chaos service: {kills} worker kills, {n} objects ({bytes} bytes), {} segments, {secs:.0} s, counters exact, {}",
        segs.len(),
        today()
    );
    assert!(kills > 0, "the job ended before any kill");
}

#[test]
#[ignore = "chaos run: minutes; scripts/chaos.sh"]
fn chaos_local_clone_killed_at_random_and_rerun() {
    let mut rng = rng();
    let dir = tempfile::tempdir().unwrap();
    let (src, dst, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state.sqlite"));
    let files: BTreeMap<String, Vec<u8>> = (0..20_000)
        .map(|i| (format!("d{:02}/s{}/f{i:05}", i % 41, i % 3), format!("file {i};").repeat(1 + i % 7).into_bytes()))
        .collect();
    let (n, bytes) = (files.len() as i64, files.values().map(|v| v.len() as i64).sum::<i64>());
    write_tree(&src, &files);
    let args = ["clone", src.to_str().unwrap(), dst.to_str().unwrap(), "--json", "--state", state.to_str().unwrap()];
    let log = dir.path().join("run.log");

    let started = Instant::now();
    let (mut kills, mut runs) = (0, 0);
    let out = loop {
        runs += 1;
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = bin().args(args).stdout(std::process::Stdio::piped()).stderr(log_file).spawn().unwrap();
        let limit = Duration::from_millis(rng.random_range(300..2500));
        let run_started = Instant::now();
        while run_started.elapsed() < limit && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        assert!(started.elapsed() < Duration::from_secs(1800), "not finished after {kills} kills");
    };
    let secs = started.elapsed().as_secs_f64();
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(out.status.code(), Some(0), "run {runs}, after {kills} kills: {err}");
    let r = report(&out);
    assert_eq!(r["state"], "verified", "{r}");
    assert_eq!((r["source"]["objects"].as_i64(), r["source"]["bytes"].as_i64()), (Some(n), Some(bytes)), "{r}");
    let copied = r["copied"]["objects"].as_i64().unwrap() + r["skipped"]["objects"].as_i64().unwrap();
    let copied_bytes = r["copied"]["bytes"].as_i64().unwrap() + r["skipped"]["bytes"].as_i64().unwrap();
    assert_eq!((copied, copied_bytes), (n, bytes), "copied + skipped = source: {r}");
    assert_eq!((r["verified"].as_i64(), r["failed"].as_i64()), (Some(n), Some(0)), "{r}");
    let segments = check_local_segments(&state, r["job_id"].as_str().unwrap());
    assert_eq!(r["segments"].as_i64(), Some(segments), "one count per segment");
    assert!(tree(&dst) == files, "the destination equals the source byte for byte");
    println!(
        "chaos local: {kills} kills over {runs} runs, {n} files ({bytes} bytes), {segments} segments, {secs:.0} s, counters exact, {}",
        today()
    );
    assert!(kills > 0, "the clone finished before any kill");
}
