//! The conformance cases behind the job's promises: a completion never drops part of its
//! range, a refused request is failed in one write, a supervisor finds every running job,
//! move marks are a union, and a completion that lost its race leaves no findings.

use std::sync::Arc;

use super::{completion, counters, create, issue, job_id, page_delta, range, spec};
use crate::error::Error;
use crate::jobstore::{JobStore, Recorded};
use crate::model::{Counters, IssueKind, JobState, KeyRange};

pub(super) async fn completions_that_break_the_tiling_are_invalid(store: Arc<dyn JobStore>) {
    let id = job_id("tiling");
    let parent = range("b", Some("t"));
    create(&store, &id, std::slice::from_ref(&parent)).await;
    let before = counters(&store, &id).await;
    let refused = [
        ("the parent itself", vec![parent.clone()]),
        ("starts before the parent", vec![range("a", Some("t"))]),
        ("a gap", vec![range("c", Some("f")), range("g", Some("t"))]),
        ("ends short of the parent", vec![range("c", Some("s"))]),
        ("runs past the parent's end", vec![range("c", None)]),
        ("an empty child", vec![range("c", Some("c")), range("c", Some("t"))]),
        ("out of order", vec![range("k", Some("t")), range("c", Some("k"))]),
    ];
    for (why, kids) in refused {
        match store.complete_segment(&completion(&id, &parent, page_delta(1, 1), kids)).await {
            Err(Error::Invalid(_)) => {}
            other => panic!("children with {why}: expected Invalid, got {other:?}"),
        }
    }
    assert_eq!(counters(&store, &id).await, before, "refused completions change nothing");
    let seg = store.segment(&id, &parent).await.unwrap().expect("segment");
    assert!(!seg.done, "a refused completion leaves the segment pending: {seg:?}");
    let tiled = vec![range("c", Some("k")), range("k", Some("t"))];
    let ok = store.complete_segment(&completion(&id, &parent, page_delta(1, 1), tiled)).await.unwrap();
    assert_eq!(ok, Recorded::Now, "an exact tiling is then recorded");
    assert_eq!(counters(&store, &id).await.outstanding, 2);
}

pub(super) async fn create_failed_is_one_terminal_write(store: Arc<dyn JobStore>) {
    let id = job_id("refused");
    assert_eq!(store.create_failed(&spec(&id), "no such bucket").await.unwrap(), Recorded::Now);
    let job = store.job(&id).await.unwrap().expect("refused job recorded");
    assert_eq!((job.state, job.message.as_deref()), (JobState::Failed, Some("no such bucket")));
    assert_eq!(job.counters, Counters::default(), "a refused job has no work");
    assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Failed), "finalize leaves it failed");
    assert!(store.segments(&id, 10).await.unwrap().is_empty(), "and it owns no segments");

    assert_eq!(store.create_failed(&spec(&id), "other").await.unwrap(), Recorded::Already);
    assert_eq!(store.create_job(&spec(&id), &[KeyRange::all()]).await.unwrap(), Recorded::Already);
    let again = store.job(&id).await.unwrap().unwrap();
    assert_eq!((again.state, again.message.as_deref()), (JobState::Failed, Some("no such bucket")));

    let running = job_id("refused-late");
    create(&store, &running, &[KeyRange::all()]).await;
    assert_eq!(store.create_failed(&spec(&running), "late").await.unwrap(), Recorded::Already);
    let r = store.job(&running).await.unwrap().unwrap();
    assert_eq!((r.state, r.message), (JobState::Running, None), "an existing job is never changed");
}

pub(super) async fn running_lists_running_jobs_only_and_notes_touch_only_them(store: Arc<dyn JobStore>) {
    let (run, failed, done) = (job_id("run"), job_id("run-failed"), job_id("run-done"));
    for id in [&run, &failed, &done] {
        create(&store, id, &[KeyRange::all()]).await;
    }
    store.fail(&failed, "broken").await.unwrap();
    let c = completion(&done, &KeyRange::all(), page_delta(1, 1), Vec::new());
    assert_eq!(store.complete_segment(&c).await.unwrap(), Recorded::Now);
    assert_eq!(store.finalize(&done).await.unwrap(), Some(JobState::Verified));

    let ids: Vec<String> = store.running().await.unwrap().into_iter().map(|j| j.spec.id).collect();
    assert!(ids.contains(&run), "running() must list the running job {run}: {ids:?}");
    assert!(!ids.contains(&failed) && !ids.contains(&done), "running() lists terminal jobs: {ids:?}");

    let before = store.job(&run).await.unwrap().unwrap();
    store.note(&run, Some("stuck: no progress")).await.unwrap();
    let noted = store.job(&run).await.unwrap().unwrap();
    assert_eq!(noted.message.as_deref(), Some("stuck: no progress"));
    assert_eq!((noted.state, noted.counters), (before.state, before.counters), "a note changes nothing else");
    store.note(&run, None).await.unwrap();
    assert_eq!(store.job(&run).await.unwrap().unwrap().message, None, "a note is cleared");

    store.note(&failed, Some("stuck")).await.unwrap();
    store.note(&done, Some("stuck")).await.unwrap();
    assert_eq!(store.job(&failed).await.unwrap().unwrap().message.as_deref(), Some("broken"));
    assert_eq!(store.job(&done).await.unwrap().unwrap().message, None, "terminal jobs are not noted");
    store.note(&job_id("never-created"), Some("x")).await.unwrap();
    assert_eq!(store.job(&job_id("never-created")).await.unwrap(), None, "a note creates nothing");
}

pub(super) async fn move_marks_are_a_union(store: Arc<dyn JobStore>) {
    let id = job_id("marks");
    let seg = range("", Some("m"));
    create(&store, &id, std::slice::from_ref(&seg)).await;
    let marks = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    store.mark_moved(&id, &seg, &marks(&["a", "b"])).await.unwrap();
    let (s2, s3) = (store.clone(), store.clone());
    let (id2, id3, seg2, seg3) = (id.clone(), id.clone(), seg.clone(), seg.clone());
    let one = tokio::spawn(async move { s2.mark_moved(&id2, &seg2, &marks(&["b", "c"])).await });
    let two = tokio::spawn(async move { s3.mark_moved(&id3, &seg3, &["d".to_string()]).await });
    one.await.unwrap().unwrap();
    two.await.unwrap().unwrap();
    store.mark_moved(&id, &seg, &[]).await.unwrap();
    let mut moved = store.segment(&id, &seg).await.unwrap().expect("segment").moved;
    moved.sort();
    assert_eq!(moved, ["a", "b", "c", "d"], "repeats once, concurrent marks all kept");
    match store.mark_moved(&id, &range("m", None), &marks(&["x"])).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("marks on a segment never created: expected NotFound, got {other:?}"),
    }
}

pub(super) async fn losing_duplicate_completions_leave_no_findings(store: Arc<dyn JobStore>) {
    let id = job_id("losers");
    let seg = range("", Some("z"));
    create(&store, &id, std::slice::from_ref(&seg)).await;
    // Eight deliveries of one segment finish at once, each having seen a different failure.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let mut c = completion(&id, &seg, Counters { failed_objects: 1, ..Default::default() }, Vec::new());
            c.issues = vec![issue(&format!("k{i}"), IssueKind::CopyFailed)];
            tokio::spawn(async move { store.complete_segment(&c).await })
        })
        .collect();
    let mut now = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == Recorded::Now {
            now += 1;
        }
    }
    assert_eq!(now, 1, "exactly one completion is recorded");
    assert_eq!(counters(&store, &id).await.failed_objects, 1);
    let found = store.issues(&id, None, 100).await.unwrap();
    assert_eq!(found.len(), 1, "only the recorded completion's finding is reported, not the losers': {found:?}");
    // Paging from that finding finds nothing more.
    assert!(store.issues(&id, Some(&found[0]), 100).await.unwrap().is_empty());
}
