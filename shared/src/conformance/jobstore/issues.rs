//! The conformance case on per-key issues: idempotent storage and (key, kind) paging.

use std::sync::Arc;

use super::{completion, create, issue, job_id, page_delta, range};
use crate::jobstore::JobStore;
use crate::model::{IssueKind, ObjectEntry, ObjectIssue};

/// The kind's kebab-case name: the second half of the issue order.
fn kind_name(k: IssueKind) -> String {
    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).expect("IssueKind serialises to a string")
}

/// Every issue of `job`, fetched `page` at a time with the `after` cursor.
async fn all_pages(store: &Arc<dyn JobStore>, job: &str, page: usize) -> Vec<ObjectIssue> {
    let mut out: Vec<ObjectIssue> = Vec::new();
    loop {
        let got = store.issues(job, out.last(), page).await.expect("issues()");
        assert!(got.len() <= page, "page of {page} returned {}", got.len());
        if got.is_empty() {
            return out;
        }
        out.extend(got);
        assert!(out.len() < 1_000, "paging does not advance");
    }
}

pub(super) async fn issues_page_in_key_kind_order_and_store_repeats_once(store: Arc<dyn JobStore>) {
    let (id, other) = (job_id("issues"), job_id("issues-other"));
    let (s1, s2) = (range("", Some("m")), range("m", None));
    create(&store, &id, &[s1.clone(), s2.clone()]).await;
    create(&store, &other, std::slice::from_ref(&s1)).await;

    // Long keys share a 1,000-byte prefix (DynamoDB sort keys stop at 1,024 bytes).
    let stem = "k".repeat(1_000);
    let (long_a, long_b, longest) = (format!("{stem}a"), format!("{stem}b"), "k".repeat(1_024));
    let detailed = ObjectIssue {
        source: Some(ObjectEntry { key: "data/é".into(), size: 5, etag: Some("abc".into()), storage_class: None }),
        destination: None,
        detail: Some("not in the destination".into()),
        ..issue("é", IssueKind::Missing)
    };
    let mut c1 = completion(&id, &s1, page_delta(1, 1), vec![]);
    c1.issues = vec![
        issue("b", IssueKind::Missing),
        issue("a", IssueKind::Extra),
        issue("a", IssueKind::Missing),
        issue("a b", IssueKind::SizeDiffers),
        issue("a", IssueKind::Extra),
        issue("a#b", IssueKind::ContentDiffers),
        issue("a/", IssueKind::Extra),
        detailed.clone(),
        issue(&long_b, IssueKind::Missing),
        issue(&long_a, IssueKind::Missing),
        issue(&longest, IssueKind::Unverifiable),
    ];
    let mut c2 = completion(&id, &s2, page_delta(1, 1), vec![]);
    c2.issues = vec![
        issue("a", IssueKind::Missing),
        issue("c", IssueKind::CopyFailed),
        issue(&long_a, IssueKind::Missing),
        issue("a", IssueKind::Unverifiable),
    ];
    let mut c3 = completion(&other, &s1, page_delta(1, 1), vec![]);
    c3.issues = vec![issue("a", IssueKind::Missing)];
    for c in [&c1, &c2, &c3] {
        store.complete_segment(c).await.expect("complete_segment");
    }

    let mut want: Vec<ObjectIssue> = c1.issues.iter().chain(&c2.issues).cloned().collect();
    want.sort_by_key(|i| (i.key.clone(), kind_name(i.kind)));
    want.dedup_by(|a, b| a.key == b.key && a.kind == b.kind);
    assert_eq!(want.len(), 12, "the expected set itself");

    let whole = store.issues(&id, None, 100).await.unwrap();
    assert_eq!(whole, want, "one page: every issue once, in (key, kind) order");
    for page in [1, 2, 5] {
        assert_eq!(all_pages(&store, &id, page).await, want, "pages of {page}");
    }
    // The cursor need not be a stored issue: ("a", copy-failed) sorts before ("a", extra).
    let cursor = issue("a", IssueKind::CopyFailed);
    let next = store.issues(&id, Some(&cursor), 2).await.unwrap();
    let keys: Vec<(&str, IssueKind)> = next.iter().map(|i| (i.key.as_str(), i.kind)).collect();
    assert_eq!(keys, [("a", IssueKind::Extra), ("a", IssueKind::Missing)]);
    let last = want.last().cloned();
    assert!(store.issues(&id, last.as_ref(), 10).await.unwrap().is_empty());
    let theirs = store.issues(&other, None, 100).await.unwrap();
    assert_eq!(theirs, c3.issues, "each job sees only its own issues");
}
