//! DynamoJobStore against the emulator: the job store conformance suite, and idempotent
//! table creation. The suite shares one table across its cases (creating a table per
//! case is slow on moto); its cases use unique job ids, as its contract allows.
//!
//! moto is not atomic under concurrent requests: two updates of one item can lose an ADD
//! (seen here: `dest_objects` 19 after 20 concurrent completions, every other counter
//! right), and a cancelled transaction restores a snapshot of the whole table taken
//! before it started. DynamoDB isolates both. So the suite runs through [`OneAtATime`],
//! which lets one call into the store run at a time: the concurrent cases still check
//! that 20 duplicate completions give one `Now` and exact counters, but DynamoDB's own
//! isolation is not (cannot be) tested here.

use std::sync::Arc;

use async_trait::async_trait;
use bucketclone_tests::{moto, unique};
use shared::Result;
use shared::backend::aws::dynamo::DynamoJobStore;
use shared::jobstore::{JobStore, Recorded};
use shared::model::{
    JobControl, JobRecord, JobSpec, JobState, KeyRange, Location, ObjectIssue, SegmentCompletion, SegmentRecord,
};

/// A store that lets one call at a time through to the inner one (see the module doc).
struct OneAtATime {
    inner: DynamoJobStore,
    turn: tokio::sync::Mutex<()>,
}

#[async_trait]
impl JobStore for OneAtATime {
    async fn create_job(&self, spec: &JobSpec, first: &[KeyRange]) -> Result<Recorded> {
        let _turn = self.turn.lock().await;
        self.inner.create_job(spec, first).await
    }
    async fn create_failed(&self, spec: &JobSpec, message: &str) -> Result<Recorded> {
        let _turn = self.turn.lock().await;
        self.inner.create_failed(spec, message).await
    }
    async fn running(&self) -> Result<Vec<JobRecord>> {
        let _turn = self.turn.lock().await;
        self.inner.running().await
    }
    async fn note(&self, job: &str, message: Option<&str>) -> Result<()> {
        let _turn = self.turn.lock().await;
        self.inner.note(job, message).await
    }
    async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        let _turn = self.turn.lock().await;
        self.inner.job(id).await
    }
    async fn jobs(&self, limit: usize, after: Option<&shared::jobstore::JobCursor>) -> Result<Vec<JobRecord>> {
        let _turn = self.turn.lock().await;
        self.inner.jobs(limit, after).await
    }
    async fn segment(&self, job: &str, range: &KeyRange) -> Result<Option<SegmentRecord>> {
        let _turn = self.turn.lock().await;
        self.inner.segment(job, range).await
    }
    async fn segments(&self, job: &str, limit: usize) -> Result<Vec<SegmentRecord>> {
        let _turn = self.turn.lock().await;
        self.inner.segments(job, limit).await
    }
    async fn complete_segment(&self, c: &SegmentCompletion) -> Result<Recorded> {
        let _turn = self.turn.lock().await;
        self.inner.complete_segment(c).await
    }
    async fn split_segment(&self, job: &str, range: &KeyRange, kids: &[KeyRange]) -> Result<(Recorded, Vec<KeyRange>)> {
        let _turn = self.turn.lock().await;
        self.inner.split_segment(job, range, kids).await
    }
    async fn mark_moved(&self, job: &str, range: &KeyRange, marks: &[String]) -> Result<()> {
        let _turn = self.turn.lock().await;
        self.inner.mark_moved(job, range, marks).await
    }
    async fn finalize(&self, job: &str) -> Result<Option<JobState>> {
        let _turn = self.turn.lock().await;
        self.inner.finalize(job).await
    }
    async fn fail(&self, job: &str, message: &str) -> Result<()> {
        let _turn = self.turn.lock().await;
        self.inner.fail(job, message).await
    }
    async fn control(&self, job: &str, action: JobControl) -> Result<Option<JobState>> {
        let _turn = self.turn.lock().await;
        self.inner.control(job, action).await
    }
    async fn issues(&self, job: &str, after: Option<&ObjectIssue>, limit: usize) -> Result<Vec<ObjectIssue>> {
        let _turn = self.turn.lock().await;
        self.inner.issues(job, after, limit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamo_job_store_passes_the_conformance_suite() {
    let ctx = moto().await;
    let table = unique("jobs");
    let store = DynamoJobStore::ensure_table(&ctx, table.clone()).await.expect("ensure_table");
    let one_at_a_time: Arc<dyn JobStore> = Arc::new(OneAtATime { inner: store, turn: tokio::sync::Mutex::new(()) });
    shared::conformance::jobstore::run(|| {
        let store = one_at_a_time.clone();
        async move { store }
    })
    .await;
}

#[tokio::test]
async fn ensure_table_twice_is_idempotent_and_keeps_the_data() {
    let ctx = moto().await;
    let table = unique("jobs");
    let first = DynamoJobStore::ensure_table(&ctx, table.clone()).await.expect("first ensure_table");
    let spec = JobSpec {
        id: "kept".into(),
        source: Location::s3("src-bkt", "").unwrap(),
        destination: Location::s3("dst-bkt", "").unwrap(),
        options: Default::default(),
    };
    let created = first.create_job(&spec, &[KeyRange::all()]).await.unwrap();
    assert_eq!(created, Recorded::Now);
    let second =
        DynamoJobStore::ensure_table(&ctx, table.clone()).await.expect("second ensure_table on the existing table");
    let job = second.job("kept").await.unwrap().expect("job survives");
    assert_eq!((job.spec, job.counters.outstanding), (spec, 1));
    let listed = second.jobs(10, None).await.unwrap();
    assert_eq!(listed.len(), 1, "the index of the existing table works");
}

#[tokio::test]
async fn a_store_on_a_missing_table_reports_not_found() {
    let ctx = moto().await;
    let store = DynamoJobStore::new(&ctx, unique("absent"));
    match store.job("x").await {
        Err(shared::Error::NotFound(_)) => {}
        other => panic!("reading from a missing table gave {other:?}, want NotFound"),
    }
}

/// Duplicate deliveries of one segment racing on DynamoDB itself (no `OneAtATime`: the
/// testbed's moto serialises requests, not calls): every delivery writes its findings
/// before its transaction, all but one transaction lose, and the report must hold only the
/// winner's finding. Before findings were tagged by attempt, the losers' stayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn findings_of_completions_that_lost_the_race_are_not_reported() {
    use shared::model::{Counters, IssueKind};
    let ctx = moto().await;
    let store = Arc::new(DynamoJobStore::ensure_table(&ctx, unique("jobs")).await.expect("ensure_table"));
    let spec = JobSpec {
        id: "race".into(),
        source: Location::s3("src-bkt", "").unwrap(),
        destination: Location::s3("dst-bkt", "").unwrap(),
        options: Default::default(),
    };
    store.create_job(&spec, &[KeyRange::all()]).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let c = SegmentCompletion {
                job: "race".into(),
                range: KeyRange::all(),
                delta: Counters { failed_objects: 1, ..Default::default() },
                children: Vec::new(),
                issues: vec![ObjectIssue {
                    key: format!("k{i}"),
                    kind: IssueKind::CopyFailed,
                    source: None,
                    destination: None,
                    detail: Some(format!("delivery {i}")),
                }],
                worker: format!("w{i}"),
                started_ms: 1,
                finished_ms: 2,
            };
            tokio::spawn(async move { store.complete_segment(&c).await.unwrap() })
        })
        .collect();
    let mut recorded = Vec::new();
    for t in futures::future::join_all(tasks).await {
        recorded.push(t.unwrap());
    }
    assert_eq!(recorded.iter().filter(|r| **r == Recorded::Now).count(), 1, "{recorded:?}");
    let job = store.job("race").await.unwrap().unwrap();
    assert_eq!(job.counters.failed_objects, 1);
    let seg = store.segment("race", &KeyRange::all()).await.unwrap().unwrap();
    let found = store.issues("race", None, 100).await.unwrap();
    assert_eq!(found.len(), 1, "only the recorded delivery's finding: {found:?}");
    assert_eq!(Some(found[0].detail.clone().unwrap().replace("delivery ", "w")), seg.worker, "and it is the winner's");
}

/// A table made before the `jobs-running` index: `running()` still finds running jobs (by
/// reading every job), and `ensure_table` (what `bucketclone init` runs) adds the index and
/// enters the jobs written before it, so the supervisor keeps seeing them.
#[tokio::test]
async fn a_table_from_before_the_running_index_is_upgraded_without_losing_running_jobs() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
        ProjectionType, ScalarAttributeType,
    };
    let ctx = moto().await;
    let table = unique("oldjobs");
    let client = ctx.dynamodb();
    let attr = |n: &str, t| AttributeDefinition::builder().attribute_name(n).attribute_type(t).build().unwrap();
    let key = |n: &str, k| KeySchemaElement::builder().attribute_name(n).key_type(k).build().unwrap();
    let jobs_index = GlobalSecondaryIndex::builder()
        .index_name("jobs-by-created")
        .key_schema(key("gsi1pk", KeyType::Hash))
        .key_schema(key("created_ms", KeyType::Range))
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()
        .unwrap();
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", ScalarAttributeType::S))
        .attribute_definitions(attr("sk", ScalarAttributeType::S))
        .attribute_definitions(attr("gsi1pk", ScalarAttributeType::S))
        .attribute_definitions(attr("created_ms", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(jobs_index)
        .send()
        .await
        .expect("old-style table");
    let old = DynamoJobStore::new(&ctx, table.clone());
    let spec = |id: &str| JobSpec {
        id: id.into(),
        source: Location::s3("src-bkt", "").unwrap(),
        destination: Location::s3("dst-bkt", "").unwrap(),
        options: Default::default(),
    };
    for id in ["old-running", "old-failed"] {
        old.create_job(&spec(id), &[KeyRange::all()]).await.unwrap();
        // As an earlier version wrote it: no `gsi2pk`.
        client
            .update_item()
            .table_name(&table)
            .key("pk", AttributeValue::S(format!("JOB#{id}")))
            .key("sk", AttributeValue::S("JOB".into()))
            .update_expression("REMOVE gsi2pk")
            .send()
            .await
            .unwrap();
    }
    old.fail("old-failed", "broken").await.unwrap();
    let ids = |jobs: Vec<JobRecord>| jobs.into_iter().map(|j| j.spec.id).collect::<Vec<_>>();
    assert_eq!(ids(old.running().await.unwrap()), ["old-running"], "without the index: every job read");

    let upgraded = DynamoJobStore::ensure_table(&ctx, table.clone()).await.expect("ensure_table upgrades");
    let desc = client.describe_table().table_name(&table).send().await.unwrap().table.unwrap();
    let names: Vec<_> = desc.global_secondary_indexes().iter().filter_map(|i| i.index_name()).collect();
    assert!(names.contains(&"jobs-running"), "index added: {names:?}");
    upgraded.create_job(&spec("new-running"), &[KeyRange::all()]).await.unwrap();
    let mut running = ids(upgraded.running().await.unwrap());
    running.sort();
    assert_eq!(running, ["new-running", "old-running"], "old running jobs entered in the index");
    upgraded.fail("old-running", "stopped").await.unwrap();
    assert_eq!(ids(upgraded.running().await.unwrap()), ["new-running"], "a settled job leaves the index");
}

/// Settled work expires, and nothing else does: `ensure_table` turns the table's TTL on for
/// `expires_at`; a pending segment and a running or paused job carry no expiry; a done
/// segment, its findings and a settled job (finished, failed, refused or cancelled, with the
/// segments it left pending) carry one at the store's retention from when they settled.
#[tokio::test]
async fn settled_items_expire_after_the_retention_and_running_ones_never_do() {
    use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};
    use shared::backend::aws::dynamo::schema::EXPIRES_AT;
    use shared::model::{Counters, IssueKind};
    let ctx = moto().await;
    let table = unique("ttl");
    let store = DynamoJobStore::ensure_table(&ctx, table.clone()).await.expect("ensure_table").with_retention_days(20);
    let client = ctx.dynamodb();
    let ttl = client.describe_time_to_live().table_name(&table).send().await.unwrap();
    let ttl = ttl.time_to_live_description().expect("a TTL description");
    assert_eq!(
        (ttl.time_to_live_status(), ttl.attribute_name()),
        (Some(&TimeToLiveStatus::Enabled), Some(EXPIRES_AT)),
        "ensure_table turns TTL on"
    );
    // The items of one job, by sort key: their expiry in seconds from now, if any.
    let expiries = |job: &str| {
        let client = client.clone();
        let (table, pk) = (table.clone(), format!("JOB#{job}"));
        async move {
            let out = client
                .query()
                .table_name(&table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk))
                .consistent_read(true)
                .send()
                .await
                .unwrap();
            let now = shared::model::now_ms() / 1000;
            out.items()
                .iter()
                .map(|i| {
                    let sk = i["sk"].as_s().unwrap().split('#').next().unwrap().to_string();
                    let exp = i.get(EXPIRES_AT).map(|v| v.as_n().unwrap().parse::<i64>().unwrap() - now);
                    (sk, exp)
                })
                .collect::<Vec<_>>()
        }
    };
    let twenty_days = |e: Option<i64>| e.is_some_and(|s| (20 * 86_400 - 120..=20 * 86_400).contains(&s));
    let spec = |id: &str| JobSpec {
        id: id.into(),
        source: Location::s3("src-bkt", "").unwrap(),
        destination: Location::s3("dst-bkt", "").unwrap(),
        options: Default::default(),
    };
    let left = KeyRange { start_after: String::new(), end: Some("m".into()) };
    let right = KeyRange { start_after: "m".into(), end: None };
    let done = |job: &str, range: &KeyRange, issue: bool| SegmentCompletion {
        job: job.into(),
        range: range.clone(),
        delta: Counters { failed_objects: i64::from(issue), ..Default::default() },
        children: Vec::new(),
        issues: if issue {
            vec![ObjectIssue {
                key: "a".into(),
                kind: IssueKind::CopyFailed,
                source: None,
                destination: None,
                detail: None,
            }]
        } else {
            Vec::new()
        },
        worker: "w".into(),
        started_ms: 1,
        finished_ms: 2,
    };

    store.create_job(&spec("runs"), &[left.clone(), right.clone()]).await.unwrap();
    assert!(expiries("runs").await.iter().all(|(_, e)| e.is_none()), "a new job expires nowhere");
    store.complete_segment(&done("runs", &left, true)).await.unwrap();
    let items = expiries("runs").await;
    let of = |sk: &str| items.iter().filter(|(k, _)| k == sk).map(|(_, e)| *e).collect::<Vec<_>>();
    assert_eq!(of("JOB"), [None], "the running job does not expire");
    let segs = of("SEG");
    assert_eq!(segs.len(), 2);
    assert_eq!(segs.iter().filter(|e| e.is_none()).count(), 1, "the pending segment does not expire: {segs:?}");
    assert_eq!(segs.iter().filter(|e| twenty_days(**e)).count(), 1, "the done one does: {segs:?}");
    assert!(of("ISSUE").iter().all(|e| twenty_days(*e)) && of("ISSUE").len() == 1, "its finding too: {items:?}");

    assert_eq!(store.control("runs", JobControl::Pause).await.unwrap(), Some(JobState::Paused));
    assert!(expiries("runs").await.iter().any(|(k, e)| k == "JOB" && e.is_none()), "a paused job is kept");
    assert_eq!(store.control("runs", JobControl::Resume).await.unwrap(), Some(JobState::Running));
    store.complete_segment(&done("runs", &right, false)).await.unwrap();
    assert_eq!(store.finalize("runs").await.unwrap(), Some(JobState::Mismatch));
    assert!(expiries("runs").await.iter().all(|(_, e)| twenty_days(*e)), "a finished job expires whole");

    store.create_job(&spec("cancelled"), &[KeyRange::all()]).await.unwrap();
    assert_eq!(store.control("cancelled", JobControl::Cancel).await.unwrap(), Some(JobState::Cancelled));
    store.create_job(&spec("failed"), &[KeyRange::all()]).await.unwrap();
    store.fail("failed", "no such bucket").await.unwrap();
    store.create_failed(&spec("refused"), "bad request").await.unwrap();
    for job in ["cancelled", "failed", "refused"] {
        let items = expiries(job).await;
        assert!(items.iter().any(|(k, _)| k == "JOB"), "{job}: {items:?}");
        // The segments nothing will complete now expire with their job.
        assert!(items.iter().all(|(_, e)| twenty_days(*e)), "{job}: the settled job expires whole: {items:?}");
    }
    assert_eq!(expiries("cancelled").await.len(), 2, "the cancelled job and its pending segment");
}
