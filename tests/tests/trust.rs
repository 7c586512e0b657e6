//! A job never says `verified` while something is missing, and never stalls unseen: the
//! engine on the embedded backends against stores and a job store that misbehave at the
//! edges (an empty truncated page, one object whose HEAD is refused, a completion the job
//! store refuses once, a panic while working, a source changed between listing and copy).
//! Each test fails on the engine as it was before these cases were handled.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bucketclone_tests::bed::Bed;
use bucketclone_tests::hooked_jobs::HookedJobs;
use bucketclone_tests::{CountingStore, tree};
use shared::Error;
use shared::model::{IssueKind, JobState, KeyRange};
use shared::objstore::ListPage;
use shared::queue::WorkQueue;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_page_marked_truncated_is_listed_again_never_taken_as_the_end() {
    let b = Bed::new(200, 20);
    let empties = Arc::new(AtomicU32::new(0));
    let mut w = CountingStore::new(b.source_store());
    let seen = empties.clone();
    // The first three listings of the source answer "truncated" with nothing in them, as
    // some S3-compatible servers do (and a directory whose files vanish mid-listing did).
    w.on_list = Some(Box::new(move |_, page| {
        if seen.fetch_add(1, Ordering::SeqCst) < 3 {
            return Ok(ListPage { entries: vec![], skipped: vec![], truncated: true });
        }
        Ok(page)
    }));
    b.wrap_source(Arc::new(w));
    b.intake().accept(&b.spec).await.unwrap();
    let job = b.work(2, LIMIT, Bed::worker_config).await;
    assert!(empties.load(Ordering::SeqCst) > 3, "the empty pages were served");
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    assert_eq!(job.counters.source_objects, 200, "every object of the range was listed");
    assert_eq!(job.counters.verified_objects, 200);
    assert_eq!(tree(&b.dst), tree(&b.src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_object_whose_check_is_refused_does_not_abandon_its_range() {
    let b = Bed::new(100, 20);
    let mut w = CountingStore::new(b.source_store());
    // No ETags in listings, so every comparison HEADs; one HEAD answers 403.
    w.strip_list_etags = true;
    w.before_head = Some(Box::new(|key| match key {
        "k/0005" => Err(Error::AccessDenied("HEAD k/0005: 403".into())),
        _ => Ok(()),
    }));
    b.wrap_source(Arc::new(w));
    b.intake().accept(&b.spec).await.unwrap();
    let job = b.work(2, LIMIT, Bed::worker_config).await;
    assert_eq!(job.state, JobState::Mismatch, "one object is unproven: never verified");
    let c = &job.counters;
    assert_eq!(c.source_objects, 100, "the rest of the range was listed: {c:?}");
    assert_eq!(c.verified_objects, 99);
    assert_eq!((c.unverifiable, c.segments_failed), (1, 0), "{c:?}");
    let issues = b.jobs.issues("j", None, 100).await.unwrap();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!((issues[0].key.as_str(), issues[0].kind), ("k/0005", IssueKind::CheckFailed));
    assert!(issues[0].detail.as_deref().unwrap_or_default().contains("403"), "{issues:?}");
    assert_eq!(tree(&b.dst), tree(&b.src), "every object was copied, the refused one too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_whose_completion_fails_is_never_acked_and_comes_back() {
    let mut b = Bed::new(120, 20);
    b.jobs = Arc::new(HookedJobs::refusing(b.jobs.clone(), 2));
    b.intake().accept(&b.spec).await.unwrap();
    let job = b.work(2, LIMIT, Bed::worker_config).await;
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    assert_eq!(job.counters.source_objects, 120);
    assert_eq!(job.counters.verified_objects, 120);
    assert_eq!(tree(&b.dst), tree(&b.src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_working_ends_the_lease_and_the_segment_is_dead_lettered_and_flagged() {
    let mut b = Bed::new(30, 10);
    b.queue = Arc::new(
        shared::backend::embedded::sqlite_queue::SqliteQueue::open(&b.dir.path().join("s.sqlite"), "segments")
            .unwrap()
            .with_max_deliveries(3),
    );
    let mut w = CountingStore::new(b.source_store());
    w.on_list = Some(Box::new(|_, _| panic!("a bug while listing")));
    b.wrap_source(Arc::new(w));
    b.intake().accept(&b.spec).await.unwrap();
    let short_lease = |i| worker::WorkerConfig { lease: Duration::from_millis(300), ..Bed::worker_config(i) };
    let job = b.work(1, Duration::from_secs(4), short_lease).await;
    assert_eq!(job.state, JobState::Running);
    let depth = b.queue.depth().await.unwrap();
    assert_eq!((depth.visible, depth.in_flight, depth.dead_letters), (0, 0, 1), "the panicking segment is dead");

    // The supervisor attributes the dead letter to the job and flags it, with the cause.
    let sup = coordinator::supervisor::Supervisor::new(b.intake(), Default::default());
    let health = sup.tick().await.unwrap();
    let h = &health.jobs["j"];
    assert_eq!((h.dead_segments, h.flagged), (1, true), "{h:?}");
    let job = b.jobs.job("j").await.unwrap().unwrap();
    let note = job.message.unwrap_or_default();
    assert!(note.starts_with("stuck: ") && note.contains("dead-letter") && note.contains("panicked"), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_after_listing_is_never_copied_stale() {
    let b = Bed::new(40, 20);
    let changed = Arc::new(AtomicBool::new(false));
    let mut w = CountingStore::new(b.source_store());
    let (flag, path) = (changed.clone(), b.src.join("k/0007"));
    // Right before the copy reads k/0007, someone rewrites it.
    w.before_get = Some(Box::new(move |key| {
        if key == "k/0007" && !flag.swap(true, Ordering::SeqCst) {
            std::fs::write(&path, b"rewritten after the listing").unwrap();
        }
        Ok(())
    }));
    b.wrap_source(Arc::new(w));
    b.intake().accept(&b.spec).await.unwrap();
    let job = b.work(1, LIMIT, Bed::worker_config).await;
    assert!(changed.load(Ordering::SeqCst));
    assert_eq!(job.state, JobState::Mismatch, "{job:?}");
    assert_eq!(job.counters.failed_objects, 1);
    let issues = b.jobs.issues("j", None, 10).await.unwrap();
    assert_eq!(
        issues.iter().map(|i| (i.key.as_str(), i.kind)).collect::<Vec<_>>(),
        [("k/0007", IssueKind::CopyFailed)]
    );
    assert!(!b.dst.join("k/0007").exists(), "a version other than the listed one was written");
    assert_eq!(tree(&b.dst).len(), 39);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_redrives_a_stranded_job_among_many_while_the_queue_is_busy() {
    let mut b = Bed::new(5, 10);
    b.jobs = Arc::new(HookedJobs { unreadable: Some("broken".into()), ..HookedJobs::new(b.jobs.clone()) });
    let intake = b.intake();
    // The oldest job's first segment is recorded but its message is lost.
    intake.accept(&b.spec).await.unwrap();
    b.queue.pull(10, Duration::from_secs(600), Duration::ZERO).await.unwrap();
    // 1,050 newer running jobs, one of which cannot be read, and a queue never idle.
    for i in 0..1050 {
        let mut spec = b.spec.clone();
        spec.id = if i == 0 { "broken".into() } else { format!("newer-{i:04}") };
        b.jobs.create_job(&spec, &[KeyRange { start_after: "x".into(), end: None }]).await.unwrap();
    }
    b.queue.push(&["busy".into()]).await.unwrap();
    let cfg =
        coordinator::supervisor::SupervisorConfig { redrive_after: Duration::from_millis(300), ..Default::default() };
    let sup = coordinator::supervisor::Supervisor::new(intake, cfg);
    sup.tick().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let health = sup.tick().await.unwrap();
    assert_eq!(health.jobs["j"].redrives, 1, "the stranded job was re-driven");
    let mut bodies = HashSet::new();
    loop {
        let pulled = b.queue.pull(500, Duration::from_secs(600), Duration::ZERO).await.unwrap();
        if pulled.is_empty() {
            break;
        }
        bodies.extend(pulled.into_iter().map(|d| d.body));
    }
    let root = shared::wire::SegmentMessage::new("j", KeyRange::all()).to_json();
    assert!(bodies.contains(&root), "its segment is back on the queue: {bodies:?}");
}

/// A local run's supervisor looks after its own job only: another running job of the same
/// store, stranded too, is neither re-driven into this job's queue nor noted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_for_one_job_leaves_the_other_jobs_alone() {
    let b = Bed::new(5, 10);
    let intake = b.intake();
    for id in ["other", "j"] {
        // Recorded, with its first segment's message lost.
        let spec = shared::model::JobSpec { id: id.into(), ..b.spec.clone() };
        b.jobs.create_job(&spec, &[KeyRange::all()]).await.unwrap();
    }
    let cfg = coordinator::supervisor::SupervisorConfig {
        redrive_after: Duration::from_millis(300),
        stuck_after: Duration::from_millis(300),
        ..Default::default()
    };
    let sup = coordinator::supervisor::Supervisor::for_job(intake, cfg, "j");
    sup.tick().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let health = sup.tick().await.unwrap();
    assert_eq!(health.jobs.keys().collect::<Vec<_>>(), ["j"], "it watches its own job only");
    assert_eq!(health.jobs["j"].redrives, 1);
    let pulled = b.queue.pull(10, Duration::from_secs(600), Duration::ZERO).await.unwrap();
    let bodies: Vec<String> = pulled.into_iter().map(|d| d.body).collect();
    assert_eq!(bodies, [shared::wire::SegmentMessage::new("j", KeyRange::all()).to_json()]);
    let other = b.jobs.job("other").await.unwrap().unwrap();
    assert_eq!((other.state, other.message), (JobState::Running, None), "the other job is untouched");
    assert!(b.jobs.job("j").await.unwrap().unwrap().message.is_some_and(|m| m.starts_with("stuck")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_refuses_local_paths_unless_its_configuration_names_their_root() {
    let b = Bed::new(3, 10);
    let request = |id: &str, src: &std::path::Path, dst: &std::path::Path| {
        serde_json::json!({"id": id, "source": {"path": src}, "destination": {"path": dst}}).to_string()
    };
    let mut intake = b.intake();
    intake.policy.local = coordinator::LocalPaths::Under(vec![]);
    coordinator::service::handle_request(&intake, &request("no-roots", &b.src, &b.dst)).await.unwrap();
    let job = b.jobs.job("no-roots").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed, "refused in one write: {job:?}");
    assert!(job.message.unwrap_or_default().contains("does not accept local paths"));

    // Allowed under a configured root; refused outside it, `..` and symlinks resolved.
    let root = b.dir.path().join("shared-fs");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(&b.src, root.join("link-to-src")).unwrap();
    intake.policy.local = coordinator::LocalPaths::Under(vec![root.clone()]);
    let (inside_src, inside_dst) = (root.join("a"), root.join("b"));
    std::fs::create_dir_all(&inside_src).unwrap();
    coordinator::service::handle_request(&intake, &request("inside", &inside_src, &inside_dst)).await.unwrap();
    assert_eq!(b.jobs.job("inside").await.unwrap().unwrap().state, JobState::Running);
    for (id, src) in [("dotdot", root.join("a/../../src")), ("symlink", root.join("link-to-src"))] {
        coordinator::service::handle_request(&intake, &request(id, &src, &inside_dst)).await.unwrap();
        let job = b.jobs.job(id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Failed, "{id}: {job:?}");
    }
    let depth = b.queue.depth().await.unwrap();
    assert_eq!(depth.visible, 1, "only the accepted job has a segment on the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_page_redone_after_its_deletes_still_counts_every_object_once() {
    let mut b = Bed::new(60, 20);
    b.spec.options.mode = shared::model::Mode::Move;
    // Every page's first completion fails after its deletes, as if the worker died then.
    b.jobs = Arc::new(HookedJobs::refusing(b.jobs.clone(), 3));
    let before = tree(&b.src);
    b.intake().accept(&b.spec).await.unwrap();
    let job = b.work(1, LIMIT, Bed::worker_config).await;
    assert_eq!(job.state, JobState::Verified, "{job:?}");
    let c = &job.counters;
    assert_eq!((c.source_objects, c.verified_objects, c.deleted_objects), (60, 60, 60), "{c:?}");
    assert_eq!(c.copied_objects + c.skipped_objects, 60, "{c:?}");
    assert_eq!(c.extra, 0);
    assert_eq!(tree(&b.dst), before, "everything moved");
    assert!(tree(&b.src).is_empty(), "and nothing left behind");
}
