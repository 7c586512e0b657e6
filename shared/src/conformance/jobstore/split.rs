//! The conformance cases on splits: children handed on before their parent's page is done
//! ([`JobStore::split_segment`]). What they pin, above all: while a split parent is pending
//! it still counts, so its children finishing first can never settle the job.

use std::sync::Arc;

use super::{applied, completion, counters, create, job_id, page_delta, range};
use crate::error::Error;
use crate::jobstore::{JobStore, MAX_CHILDREN, Recorded};
use crate::model::{Counters, JobState, KeyRange};

/// `outstanding` equals the job's pending segments, and the first segments plus every
/// segment's outcome (a pending split's included) add up to the counters.
async fn check_books(store: &Arc<dyn JobStore>, id: &str, first: usize) -> Counters {
    let got = counters(store, id).await;
    let segs = store.segments(id, 10_000).await.unwrap();
    let pending = segs.iter().filter(|s| !s.done).count() as i64;
    assert_eq!(got.outstanding, pending, "outstanding is the pending segments: {got:?} {segs:?}");
    let mut sum = Counters { outstanding: first as i64, ..Default::default() };
    for s in &segs {
        sum.add(&s.outcome);
    }
    assert_eq!(sum, got, "outcomes add up to the job's counters: {segs:?}");
    got
}

pub(super) async fn split_hands_children_on_and_the_parent_still_counts(store: Arc<dyn JobStore>) {
    let id = job_id("split");
    let all = KeyRange::all();
    create(&store, &id, std::slice::from_ref(&all)).await;
    let kids = vec![range("c", Some("p")), range("p", None)];
    let (r, held) = store.split_segment(&id, &all, &kids).await.unwrap();
    assert_eq!((r, &held), (Recorded::Now, &kids), "the first split records its children");
    let seg = store.segment(&id, &all).await.unwrap().unwrap();
    assert!(!seg.done, "a split segment stays pending: {seg:?}");
    assert_eq!((seg.children.as_slice(), seg.split_end()), (kids.as_slice(), Some("c")));
    assert_eq!(seg.outcome, Counters { outstanding: 2, ..Default::default() });
    for k in &kids {
        let child = store.segment(&id, k).await.unwrap().expect("a split creates its children");
        assert!(!child.done && child.children.is_empty(), "{child:?}");
    }
    assert_eq!(check_books(&store, &id, 1).await.outstanding, 3, "the parent and its two children");

    // A second split, with other children (a later listing), changes nothing.
    let other = vec![range("f", None)];
    let (r, held) = store.split_segment(&id, &all, &other).await.unwrap();
    assert_eq!((r, held), (Recorded::Already, kids.clone()), "a repeat returns the first split's children");
    assert_eq!(store.segment(&id, &range("f", None)).await.unwrap(), None, "a repeat creates nothing");

    // The children finish first: the job must not settle while the parent is pending.
    for k in &kids {
        let c = completion(&id, k, page_delta(2, 20), vec![]);
        assert_eq!(store.complete_segment(&c).await.unwrap(), Recorded::Now);
        assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Running), "settled under a pending parent");
    }
    assert_eq!(check_books(&store, &id, 1).await.outstanding, 1);

    // The parent's completion names the split's children; it creates and counts none.
    let delta = page_delta(3, 30);
    let done = completion(&id, &all, delta, kids.clone());
    assert_eq!(store.complete_segment(&done).await.unwrap(), Recorded::Now);
    assert_eq!(store.complete_segment(&done).await.unwrap(), Recorded::Already);
    let seg = store.segment(&id, &all).await.unwrap().unwrap();
    assert!(seg.done && seg.split_end().is_none(), "{seg:?}");
    assert_eq!((seg.children, seg.outcome), (kids.clone(), applied(delta, 2)), "as if unsplit");
    let got = check_books(&store, &id, 1).await;
    assert_eq!((got.outstanding, got.segments_done, got.copied_objects), (0, 3, 7), "{got:?}");
    assert_eq!(store.finalize(&id).await.unwrap(), Some(JobState::Verified));

    // A done segment is not split: its completion's children come back.
    let (r, held) = store.split_segment(&id, &all, &other).await.unwrap();
    assert_eq!((r, held), (Recorded::Already, kids));
}

pub(super) async fn a_split_parent_completes_only_with_its_split_children(store: Arc<dyn JobStore>) {
    let id = job_id("split-held");
    let all = KeyRange::all();
    create(&store, &id, std::slice::from_ref(&all)).await;
    let kids = vec![range("m", None)];
    store.split_segment(&id, &all, &kids).await.unwrap();
    let before = check_books(&store, &id, 1).await;
    for wrong in [vec![], vec![range("q", None)], vec![range("m", Some("q")), range("q", None)]] {
        let c = completion(&id, &all, page_delta(1, 1), wrong.clone());
        match store.complete_segment(&c).await {
            Err(Error::Invalid(_)) => {}
            other => panic!("completing a split segment with {wrong:?} gave {other:?}, want Invalid"),
        }
        assert_eq!(counters(&store, &id).await, before, "a refused completion changes nothing");
        assert!(!store.segment(&id, &all).await.unwrap().unwrap().done);
    }
    assert_eq!(store.segment(&id, &range("q", None)).await.unwrap(), None);
}

pub(super) async fn bad_splits_are_refused_and_change_nothing(store: Arc<dyn JobStore>) {
    let id = job_id("split-bad");
    let seg = range("b", Some("y"));
    create(&store, &id, std::slice::from_ref(&seg)).await;
    let tiling = |n: usize| -> Vec<KeyRange> {
        let mut v: Vec<KeyRange> =
            (0..n).map(|i| range(&format!("c{i:03}"), Some(&format!("c{:03}", i + 1)))).collect();
        if let Some(l) = v.last_mut() {
            l.end = Some("y".into());
        }
        v
    };
    let bad: Vec<(&str, Vec<KeyRange>)> = vec![
        ("no children", vec![]),
        ("past the parent's end", vec![range("c", None)]),
        ("starting before the parent", vec![range("a", Some("y"))]),
        ("with a gap", vec![range("c", Some("d")), range("e", Some("y"))]),
        ("too many", tiling(MAX_CHILDREN + 1)),
    ];
    for (why, kids) in bad {
        match store.split_segment(&id, &seg, &kids).await {
            Err(Error::Invalid(_)) => {}
            other => panic!("a split {why} gave {other:?}, want Invalid"),
        }
        let rec = store.segment(&id, &seg).await.unwrap().unwrap();
        assert!(rec.children.is_empty(), "a split {why} recorded {rec:?}");
        assert_eq!(check_books(&store, &id, 1).await.outstanding, 1, "a split {why}");
    }
    match store.split_segment(&id, &range("x", None), &[range("z", None)]).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("splitting an unknown segment gave {other:?}, want NotFound"),
    }
    assert_eq!(store.segment(&id, &range("z", None)).await.unwrap(), None);
}

/// Attempts at one segment race: splits with different children (listings a moment apart)
/// and completions that never split. Exactly one split or completion wins, every split
/// call reports the winner's children, and the books stay exact.
pub(super) async fn racing_splits_and_completions_keep_the_books(store: Arc<dyn JobStore>) {
    for round in 0..3 {
        let id = job_id(&format!("split-race{round}"));
        let all = KeyRange::all();
        create(&store, &id, std::slice::from_ref(&all)).await;
        let kids = |i: usize| vec![range(&format!("k{i}"), Some("s")), range("s", None)];
        let splits: Vec<_> = (0..6)
            .map(|i| {
                let (s, id, all) = (store.clone(), id.clone(), all.clone());
                tokio::spawn(async move { s.split_segment(&id, &all, &kids(i)).await })
            })
            .collect();
        let completions: Vec<_> = (0..2)
            .map(|i| {
                let (s, c) = (store.clone(), completion(&id, &all, page_delta(1, 1), kids(10 + i)));
                tokio::spawn(async move { s.complete_segment(&c).await })
            })
            .collect();
        let mut held = Vec::new();
        let mut splits_now = 0;
        for t in futures::future::join_all(splits).await {
            let (r, children) = t.expect("task").expect("split_segment");
            splits_now += (r == Recorded::Now) as usize;
            held.push(children);
        }
        let mut completed = 0;
        for t in futures::future::join_all(completions).await {
            match t.expect("task") {
                Ok(Recorded::Now) => completed += 1,
                Ok(Recorded::Already) => {}
                // Lost to a split with other children: refused, changing nothing.
                Err(Error::Invalid(_)) => {}
                Err(e) => panic!("a racing completion failed: {e}"),
            }
        }
        assert!(splits_now + completed <= 1, "round {round}: {splits_now} splits and {completed} completions won");
        let seg = store.segment(&id, &all).await.unwrap().unwrap();
        assert!(held.iter().all(|h| *h == seg.children), "round {round}: {held:?} against {seg:?}");
        let got = check_books(&store, &id, 1).await;
        let want = if completed == 1 { 2 } else { 3 };
        assert_eq!(got.outstanding, want, "round {round}: {seg:?}");
    }
}
