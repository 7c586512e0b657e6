//! The distributed service on the AWS emulator, as separate OS processes: `init`, a
//! coordinator, three workers; a raw request message in the original minimal format, sent
//! twice; one worker killed with SIGKILL mid-job. The job must complete, verified, with
//! exact counters, the destination listing must equal the source's, and `status --json`
//! must agree with `GET /jobs/{id}`.

use std::process::Child;
use std::time::{Duration, Instant};

use bucketclone_tests::procs::{free_port, http_get, seed_bucket, signal, spawn};
use bucketclone_tests::{bin, emulator_env, listing, moto, unique};
use shared::backend::aws::{dynamo::DynamoJobStore, s3::S3Store, sqs::SqsQueue};
use shared::jobstore::JobStore;
use shared::model::JobState;
use shared::queue::WorkQueue;

/// The source: keys only S3 can hold (spaces, `+`, `%`, accents, emoji) in a flat prefix and
/// 97 small ones.
fn objects() -> Vec<(String, Vec<u8>)> {
    let mut keys = Vec::new();
    for i in 0..1000 {
        keys.push(format!("flat/item {i:04}+%ü"));
    }
    for i in 0..1000 {
        keys.push(format!("p{:02}/sub {}/obj+{i}%20é😀", i % 97, i % 3));
    }
    keys.into_iter().enumerate().map(|(i, k)| (k, format!("object {i} ").repeat(i % 40).into_bytes())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_clones_a_bucket_with_a_worker_killed_mid_job() {
    let ctx = moto().await;
    let name = unique("bc");
    let init = bin().args(["init", "--name", &name]).envs(emulator_env()).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let again = bin().args(["init", "--name", &name]).envs(emulator_env()).output().unwrap();
    assert!(again.status.success(), "init is idempotent");

    let (src, dst) = (unique("src"), unique("dst"));
    let (count, bytes) = seed_bucket(&ctx, &src, objects()).await;
    S3Store::create_bucket(&ctx, &dst).await.unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let fast =
        [("BUCKETCLONE_WORKER__LEASE_SECS", "6".to_string()), ("BUCKETCLONE_WORKER__DRAIN_SECS", "10".to_string())];
    let mut coord = spawn(&["coordinator", "--name", &name, "--http", &addr], &[]);
    let mut workers: Vec<Child> = (0..3).map(|_| spawn(&["worker", "--name", &name], &fast)).collect();

    // The original minimal request, sent twice: one job.
    let job_id = unique("job");
    let body = format!(r#"{{"id": "{job_id}", "source": {{"name": "{src}"}}, "destination": {{"name": "{dst}"}}}}"#);
    let requests = SqsQueue::open(&ctx, &format!("{name}-requests")).await.unwrap();
    // Bad input first: garbage, and a request naming a bucket that does not exist. Neither
    // may stop the coordinator; the second becomes a failed job that says why.
    let bad_id = unique("bad");
    let missing = unique("missing");
    let bad = format!(r#"{{"id": "{bad_id}", "source": {{"name": "{missing}"}}, "destination": {{"name": "{dst}"}}}}"#);
    requests.push(&["not json at all".to_string(), bad]).await.unwrap();
    requests.push(std::slice::from_ref(&body)).await.unwrap();
    requests.push(&[body]).await.unwrap();

    let jobs = DynamoJobStore::new(&ctx, format!("{name}-jobs"));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut killed = false;
    let job = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(Instant::now() < deadline, "the job did not finish in time");
        let Some(j) = jobs.job(&job_id).await.unwrap() else { continue };
        if !killed && j.counters.segments_done >= 2 {
            workers[0].kill().unwrap(); // SIGKILL, leases held
            workers[0].wait().unwrap();
            killed = true;
        }
        if j.state.is_terminal() {
            break j;
        }
    };
    assert!(killed, "the job ended before a worker could be killed");
    assert_eq!(job.state, JobState::Verified, "{:?}", job.message);
    assert_eq!(job.counters.source_objects, count as i64);
    assert_eq!(job.counters.source_bytes, bytes as i64);
    assert_eq!(job.counters.verified_objects, count as i64);
    assert_eq!(job.counters.outstanding, 0);
    assert_eq!(jobs.jobs(1000, None).await.unwrap().iter().filter(|j| j.spec.id == job_id).count(), 1);

    let (s, d) = (S3Store::new(&ctx, &src), S3Store::new(&ctx, &dst));
    assert_eq!(listing(&s).await, listing(&d).await, "destination listing (key, size, ETag) equals the source's");

    let status = bin().args(["status", &job_id, "--json", "--name", &name]).envs(emulator_env()).output().unwrap();
    assert!(status.status.success());
    let from_cli: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let from_http = http_get(&addr, &format!("/jobs/{job_id}"));
    assert_eq!(from_cli["counters"], from_http["counters"]);
    assert_eq!(from_cli["state"], "verified");
    assert_eq!(from_http["counters"]["source_objects"], count);
    let stats = http_get(&addr, &format!("/jobs/{job_id}/stats"));
    assert_eq!(stats["same_content"], true, "source and destination statistics documents agree");
    assert_eq!(stats["destination"]["objects"], count);

    let refused = jobs.job(&bad_id).await.unwrap().expect("the refused request is recorded as a job");
    assert_eq!(refused.state, JobState::Failed);
    let why = refused.message.unwrap_or_default();
    assert!(why.contains(&missing) && why.contains("does not exist"), "{why}");

    // A verification job through `submit --verify-only`, on the same service.
    let out = bin()
        .args(["submit", &format!("s3://{src}"), &format!("s3://{dst}"), "--verify-only", "--name", &name])
        .envs(emulator_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let verify_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let verified = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(Instant::now() < deadline + Duration::from_secs(120), "the verification did not finish");
        match jobs.job(&verify_id).await.unwrap() {
            Some(j) if j.state.is_terminal() => break j,
            _ => {}
        }
    };
    assert_eq!(verified.state, JobState::Verified);
    assert_eq!((verified.counters.verified_objects, verified.counters.copied_objects), (count as i64, 0));

    for w in &workers[1..] {
        signal(w, "TERM");
    }
    for w in workers.iter_mut().skip(1) {
        assert_eq!(w.wait().unwrap().code(), Some(0), "a worker drains and exits 0 on SIGTERM");
    }
    signal(&coord, "TERM");
    assert_eq!(coord.wait().unwrap().code(), Some(0));
}
