//! The conformance cases on jobs, segments and counters (issues are in `issues.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::{applied, completion, counters, create, job_id, page_delta, range, ranges, spec};
use crate::error::Error;
use crate::jobstore::{JobStore, MAX_CHILDREN, Recorded};
use crate::model::{Counters, JobState, KeyRange};

pub(super) async fn create_job_is_idempotent(store: Arc<dyn JobStore>) {
    let id = job_id("create");
    let first = vec![range("", Some("m")), range("m", None), range("", Some("m"))];
    create(&store, &id, &first).await;
    let job = store.job(&id).await.unwrap().expect("created job");
    assert_eq!(job.spec, spec(&id), "spec stored as given");
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.message, None);
    assert!(job.created_ms > 0 && job.updated_ms >= job.created_ms, "{job:?}");
    let expected = Counters { outstanding: 2, ..Default::default() };
    assert_eq!(job.counters, expected, "a duplicate first range is one segment");

    let mut other = spec(&id);
    other.destination.prefix = "elsewhere/".into();
    let again = store.create_job(&other, &[range("", Some("z")), range("z", None)]).await.unwrap();
    assert_eq!(again, Recorded::Already, "second create_job");
    let job2 = store.job(&id).await.unwrap().unwrap();
    assert_eq!(job2.spec, spec(&id), "second create_job must not change the spec");
    assert_eq!(job2.counters, expected, "second create_job must not change counters");
    let mut ids: Vec<String> = segment_ids(&store, &id).await;
    ids.sort();
    let mut want = vec![first[0].id(), first[1].id()];
    want.sort();
    assert_eq!(ids, want, "segments are the first call's, once each");
    assert_eq!(store.job(&job_id("never-created")).await.unwrap(), None);
}

pub(super) async fn completion_applies_once_and_creates_pending_children(store: Arc<dyn JobStore>) {
    let id = job_id("once");
    let all = KeyRange::all();
    create(&store, &id, std::slice::from_ref(&all)).await;
    let kids = vec![range("c", Some("p")), range("p", None)];
    let delta = page_delta(3, 30);
    let c = completion(&id, &all, delta, kids.clone());
    assert_eq!(store.complete_segment(&c).await.unwrap(), Recorded::Now);
    let want = Counters { outstanding: 2, segments_done: 1, ..applied(delta, 2) };
    assert_eq!(counters(&store, &id).await, want, "delta and children applied once");

    assert_eq!(store.complete_segment(&c).await.unwrap(), Recorded::Already);
    let mut other = c.clone();
    other.delta.copied_objects = 99;
    other.children = vec![range("x", None)];
    assert_eq!(store.complete_segment(&other).await.unwrap(), Recorded::Already);
    assert_eq!(counters(&store, &id).await, want, "repeats change nothing");

    let seg = store.segment(&id, &all).await.unwrap().expect("segment");
    assert!(seg.done, "{seg:?}");
    assert_eq!((seg.id.as_str(), &seg.range), (all.id().as_str(), &all));
    assert_eq!(seg.children, kids, "children recorded on the parent");
    assert_eq!(seg.outcome, applied(delta, 2), "outcome is what was added");
    for k in &kids {
        let child = store.segment(&id, k).await.unwrap().expect("child exists");
        assert_eq!(child.id, k.id());
        assert_eq!(&child.range, k);
        assert!(!child.done && child.children.is_empty(), "{child:?}");
        assert_eq!(child.outcome, Counters::default());
        assert_eq!((child.worker.as_deref(), child.started_ms), (None, 0));
    }
    let x = store.segment(&id, &range("x", None)).await.unwrap();
    assert_eq!(x, None, "a repeat's children are not created");
}

pub(super) async fn unknown_segment_or_job_is_not_found(store: Arc<dyn JobStore>) {
    let id = job_id("notfound");
    create(&store, &id, &[range("", Some("m"))]).await;
    let before = counters(&store, &id).await;
    let stray = range("m", None);
    let c = completion(&id, &stray, page_delta(1, 1), vec![range("q", None)]);
    match store.complete_segment(&c).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("completing an unknown segment gave {other:?}, want NotFound"),
    }
    assert_eq!(counters(&store, &id).await, before, "nothing applied");
    assert_eq!(store.segment(&id, &stray).await.unwrap(), None);
    assert_eq!(store.segment(&id, &range("q", None)).await.unwrap(), None);
    let mut c2 = c.clone();
    c2.job = job_id("no-such-job");
    match store.complete_segment(&c2).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("completing in an unknown job gave {other:?}, want NotFound"),
    }
}

pub(super) async fn existing_child_is_not_reset_nor_recounted(store: Arc<dyn JobStore>) {
    let id = job_id("existing");
    let (a, b) = (range("", None), range("m", Some("t")));
    create(&store, &id, &[a.clone(), b.clone()]).await;
    let db = page_delta(2, 20);
    let done_b = completion(&id, &b, db, vec![]);
    assert_eq!(store.complete_segment(&done_b).await.unwrap(), Recorded::Now);
    let b_before = store.segment(&id, &b).await.unwrap().unwrap();
    assert!(b_before.done);

    // `a` names `b` (already done) and a fresh `c` as its children.
    let c = range("t", None);
    let da = page_delta(1, 10);
    let done_a = completion(&id, &a, da, vec![b.clone(), c.clone()]);
    assert_eq!(store.complete_segment(&done_a).await.unwrap(), Recorded::Now);
    assert_eq!(store.segment(&id, &b).await.unwrap().unwrap(), b_before, "not reset");
    let c_rec = store.segment(&id, &c).await.unwrap().expect("new child created");
    assert!(!c_rec.done);
    let a_rec = store.segment(&id, &a).await.unwrap().unwrap();
    assert_eq!(a_rec.children, vec![b.clone(), c.clone()]);
    assert_eq!(a_rec.outcome, applied(da, 1), "only the new child counts");
    let got = counters(&store, &id).await;
    assert_eq!(got.outstanding, 1, "only `c` is outstanding: {got:?}");
    assert_eq!(got.segments_done, 2);
    assert_eq!(got.copied_bytes, 30);
}

/// `n` adjacent ranges after `base000` that end where the whole key space ends: the
/// children of a page of `("", None)` whose last key was `base000`.
fn tiling(base: &str, n: usize) -> Vec<KeyRange> {
    let mut v = ranges(base, n);
    if let Some(last) = v.last_mut() {
        last.end = None;
    }
    v
}

pub(super) async fn too_many_children_is_invalid_and_changes_nothing(store: Arc<dyn JobStore>) {
    let id = job_id("limit");
    let first = vec![range("", None), range("zz0", Some("zz1")), range("zz1", Some("zz2"))];
    match store.create_job(&spec(&id), &ranges("f", MAX_CHILDREN + 1)).await {
        Err(Error::Invalid(_)) => {}
        other => panic!("create_job with too many first segments gave {other:?}"),
    }
    assert_eq!(store.job(&id).await.unwrap(), None, "no job after a refusal");
    create(&store, &id, &first).await;
    let too_many = completion(&id, &first[0], page_delta(1, 1), tiling("x", MAX_CHILDREN + 1));
    match store.complete_segment(&too_many).await {
        Err(Error::Invalid(_)) => {}
        other => panic!("{} children gave {other:?}, want Invalid", MAX_CHILDREN + 1),
    }
    assert!(!store.segment(&id, &first[0]).await.unwrap().unwrap().done);
    assert_eq!(counters(&store, &id).await.outstanding, 3);
    let most = completion(&id, &first[0], page_delta(1, 1), tiling("x", MAX_CHILDREN));
    assert_eq!(store.complete_segment(&most).await.unwrap(), Recorded::Now);
    let got = counters(&store, &id).await;
    assert_eq!(got.outstanding, 3 + MAX_CHILDREN as i64 - 1, "{got:?}");
    assert_eq!(segment_ids(&store, &id).await.len(), 3 + MAX_CHILDREN);
}

pub(super) async fn concurrent_distinct_completions_are_exact(store: Arc<dyn JobStore>) {
    let id = job_id("distinct");
    let first = ranges("", 20);
    create(&store, &id, &first).await;
    let tasks: Vec<_> = first
        .iter()
        .enumerate()
        .map(|(i, r)| {
            // Even segments hand on one child (inside their own range), odd ones none.
            let kids =
                if i % 2 == 0 { vec![range(&format!("{}-half", r.start_after), r.end.as_deref())] } else { vec![] };
            let c = completion(&id, r, page_delta(1, i as i64), kids);
            let s = store.clone();
            tokio::spawn(async move { s.complete_segment(&c).await })
        })
        .collect();
    for t in futures::future::join_all(tasks).await {
        assert_eq!(t.expect("task").expect("complete_segment"), Recorded::Now);
    }
    let got = counters(&store, &id).await;
    let want = Counters { outstanding: 10, segments_done: 20, ..applied(page_delta(20, (0..20).sum()), 0) };
    assert_eq!(got, want, "20 concurrent completions of distinct segments");
    // The job's counters are its first segments plus every done segment's outcome.
    let mut sum = Counters { outstanding: 20, ..Default::default() };
    for seg in store.segments(&id, 1_000).await.unwrap() {
        sum.add(&seg.outcome);
    }
    assert_eq!(sum, got, "outcomes add up to the job's counters");
}

pub(super) async fn concurrent_duplicate_completions_count_once(store: Arc<dyn JobStore>) {
    let id = job_id("dupes");
    let seg = range("", None);
    create(&store, &id, std::slice::from_ref(&seg)).await;
    let c = completion(&id, &seg, page_delta(7, 70), vec![range("k", None)]);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (s, c) = (store.clone(), c.clone());
            tokio::spawn(async move { s.complete_segment(&c).await })
        })
        .collect();
    let mut now = 0;
    for t in futures::future::join_all(tasks).await {
        match t.expect("task").expect("complete_segment") {
            Recorded::Now => now += 1,
            Recorded::Already => {}
        }
    }
    assert_eq!(now, 1, "exactly one of 20 duplicate completions is Now");
    let want = Counters { outstanding: 1, ..applied(page_delta(7, 70), 1) };
    assert_eq!(counters(&store, &id).await, want, "applied exactly once");
}

pub(super) async fn finalize_waits_for_outstanding_then_settles(store: Arc<dyn JobStore>) {
    let id = job_id("finalize");
    let (r1, r2) = (range("", Some("m")), range("m", None));
    create(&store, &id, &[r1.clone(), r2.clone()]).await;
    assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Running));
    let c1 = completion(&id, &r1, page_delta(1, 1), vec![]);
    store.complete_segment(&c1).await.unwrap();
    assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Running));
    let c2 = completion(&id, &r2, page_delta(1, 1), vec![]);
    store.complete_segment(&c2).await.unwrap();
    assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Verified));
    assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Verified));
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Verified);
    store.fail(&id, "too late").await.unwrap();
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.message), (JobState::Verified, None), "fail spares it");

    let bad = job_id("mismatch");
    create(&store, &bad, std::slice::from_ref(&r1)).await;
    let delta = Counters { missing: 1, ..page_delta(2, 2) };
    store.complete_segment(&completion(&bad, &r1, delta, vec![])).await.unwrap();
    assert_eq!(store.finalize(&bad).await.unwrap(), Some(JobState::Mismatch));
    assert_eq!(store.finalize(&bad).await.unwrap(), Some(JobState::Mismatch));
    assert_eq!(store.job(&bad).await.unwrap().unwrap().state, JobState::Mismatch);
    assert_eq!(store.finalize(&job_id("unknown")).await.unwrap(), None);
}

pub(super) async fn fail_sets_failed_once_and_spares_terminal_jobs(store: Arc<dyn JobStore>) {
    let id = job_id("fail");
    create(&store, &id, &[KeyRange::all()]).await;
    store.fail(&id, "source bucket does not exist").await.unwrap();
    let job = store.job(&id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.message.as_deref(), Some("source bucket does not exist"));
    store.fail(&id, "a second reason").await.unwrap();
    let again = store.job(&id).await.unwrap().unwrap();
    assert_eq!(again.message, job.message, "the first failure's message stays");
    assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Failed));

    let empty = job_id("fail-empty");
    create(&store, &empty, &[]).await;
    store.fail(&empty, "stopped").await.unwrap();
    assert_eq!(store.finalize(&empty).await.unwrap(), Some(JobState::Failed));
    match store.fail(&job_id("unknown"), "x").await {
        Err(Error::NotFound(_)) => {}
        other => panic!("fail on an unknown job gave {other:?}, want NotFound"),
    }
}

pub(super) async fn segments_lists_done_and_pending_of_its_job_only(store: Arc<dyn JobStore>) {
    let (id, twin) = (job_id("segments"), job_id("segments-twin"));
    let first = ranges("s", 3);
    create(&store, &id, &first).await;
    create(&store, &twin, &first).await;
    let kid = range("s000-a", first[0].end.as_deref());
    let mut c = completion(&id, &first[0], page_delta(4, 4), vec![kid.clone()]);
    (c.worker, c.started_ms, c.finished_ms) = ("worker-7".into(), 111, 222);
    store.complete_segment(&c).await.unwrap();

    let segs = store.segments(&id, 100).await.unwrap();
    assert_eq!(segs.len(), 4, "three first segments and one child: {segs:?}");
    for s in &segs {
        assert_eq!(s.id, s.range.id());
        if s.range == first[0] {
            assert!(s.done);
            assert_eq!(s.worker.as_deref(), Some("worker-7"));
            assert_eq!((s.started_ms, s.finished_ms), (111, 222));
            assert_eq!(s.children, vec![kid.clone()]);
        } else {
            assert!(first.contains(&s.range) || s.range == kid, "stray {s:?}");
            assert!(!s.done && s.worker.is_none() && s.finished_ms == 0, "{s:?}");
        }
    }
    assert_eq!(store.segments(&id, 2).await.unwrap().len(), 2, "limit honoured");
    let twin_segs = store.segments(&twin, 100).await.unwrap();
    assert_eq!(twin_segs.len(), 3, "same ranges, other job: {twin_segs:?}");
    assert!(twin_segs.iter().all(|s| !s.done), "the twin's segments stay pending");
}

pub(super) async fn jobs_lists_newest_first(store: Arc<dyn JobStore>) {
    let ids: Vec<String> = (0..3).map(|i| job_id(&format!("jobs{i}"))).collect();
    for id in &ids {
        create(&store, id, &[KeyRange::all()]).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    // An index may lag its table (a DynamoDB GSI): wait a little for all three.
    let mut ours = Vec::new();
    for _ in 0..50 {
        let all = store.jobs(10_000, None).await.unwrap();
        ours = all.into_iter().map(|j| j.spec.id).filter(|i| ids.contains(i)).collect();
        if ours.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ours, newest_first, "jobs() newest first");
    let one = store.jobs(1, None).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].spec.id, ids[2], "jobs(1) is the newest");
    assert_eq!(one[0].counters.outstanding, 1, "full records, not keys");
    assert_eq!(store.jobs(2, None).await.unwrap().len(), 2, "limit honoured");

    // Pages of two, each after the last job of the one before, list every job once.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = store.jobs(2, after.as_ref()).await.unwrap();
        paged.extend(page.iter().map(|j| j.spec.id.clone()));
        match page.last() {
            Some(last) if page.len() == 2 => after = Some(crate::jobstore::JobCursor::after(last)),
            _ => break,
        }
    }
    let distinct: std::collections::HashSet<&String> = paged.iter().collect();
    assert_eq!(distinct.len(), paged.len(), "no job on two pages");
    let ours_paged: Vec<String> = paged.into_iter().filter(|i| ids.contains(i)).collect();
    assert_eq!(ours_paged, newest_first, "paging keeps the order and loses nothing");
}

async fn segment_ids(store: &Arc<dyn JobStore>, job: &str) -> Vec<String> {
    let segs = store.segments(job, 10_000).await.unwrap();
    segs.into_iter().map(|s| s.id).collect()
}
