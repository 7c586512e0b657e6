//! [`DynamoJobStore`]: the job store in one DynamoDB table (single-table design).
//!
//! Every item of a job shares its partition, so one job's writes never touch another's:
//!
//! | item    | `pk`       | `sk`                        | other attributes                                    |
//! |---------|------------|-----------------------------|-----------------------------------------------------|
//! | job     | `JOB#<id>` | `JOB`                       | `spec` (JSON), `state`, `message`, `created_ms`, `updated_ms`, one number per counter named as in `Counters::NAMES`, `gsi1pk = "JOBS"`, `gsi2pk = "RUNNING"` while running |
//! | segment | `JOB#<id>` | `SEG#<range id>`            | `range` (JSON), `done` (bool), `children` (JSON, set by a split or the completion), `outcome` (JSON counters), `worker`, `started_ms`, `finished_ms`, `attempt`, `moved` (string set) |
//! | issue   | `JOB#<id>` | `ISSUE#<hex(key)>#<kind>#<attempt>` | `key`, `kind`, `issue` (JSON), `seg` (its segment's sort key), `attempt` |
//!
//! - **Expiry (TTL)**: settled items carry `expires_at` (epoch seconds, the table's TTL
//!   attribute), the retention after they settled: a job item from the write that makes it
//!   verified, mismatched, failed or cancelled; a segment item from its completion; an issue
//!   item from its write. Running and paused jobs and pending segments never carry it, so
//!   nothing a job still needs can expire under it: a done segment is read again only by a
//!   duplicate delivery of its own message or its parent's, and the retention is longer than
//!   a queue keeps any message (settings check it), so a done segment outlives them all.
//! - **Jobs, newest first**: the global secondary index `jobs-by-created` (partition
//!   `gsi1pk`, sort `created_ms`) is sparse (only job items carry `gsi1pk`) and projects
//!   keys only, so the once-per-segment counter updates never write to it (with an ALL
//!   projection every completion would also write the index's single `JOBS` partition).
//!   `jobs()` queries it backwards, then reads the items with a consistent BatchGetItem.
//!   The index itself is eventually consistent: a job appears in `jobs()` shortly after
//!   its creation, while `job()` sees it at once.
//! - **Running jobs, however many**: the sparse keys-only index `jobs-running` (partition
//!   `gsi2pk = "RUNNING"`, sort `created_ms`) holds only running jobs: `create_job` sets
//!   `gsi2pk`, `finalize` and `fail` remove it in the same write that settles the job, and
//!   `create_failed` never sets it. The supervisor's `running()` reads it, so its cost grows
//!   with the jobs running, not with every job ever run.
//! - **Issues in (key, kind) order**: the key is hex-encoded in the sort key, which keeps
//!   UTF-8 byte order (raw keys would not: `a b` must sort after `a`, but ` ` < `#`), then
//!   `#` (below every hex digit, so a key sorts before its extensions) and the kind's
//!   kebab-case name. Sort keys stop at 1,024 bytes, so keys over 480 bytes keep 960 hex
//!   digits plus `#<hash of the key>`; `issues()` sorts such shared-prefix groups by the
//!   full key (stored in `issue`) before paging.
//! - **Completions, exactly once**: issues are written first (BatchWriteItem, idempotent
//!   puts, tagged with a random id of this completion attempt), then ONE TransactWriteItems: segment update (condition: exists and
//!   `done = false`), job update (ADD the counters, condition: exists) and a put per child
//!   not yet recorded (condition: `attribute_not_exists(pk)`). The first try reads
//!   nothing: it writes for a segment pending, never split, none of its children recorded,
//!   as nearly every completion finds it, so a page costs one read (the worker's) and one
//!   transaction. When any condition fails, nothing is written, and each later try reads
//!   the segment and its children first (one consistent BatchGetItem). `outstanding` grows by the children
//!   created, minus one. The segment's failed condition means `Already` (or `NotFound`);
//!   a conflict with a concurrent transaction on the job item is retried with backoff.
//!   The segment update records the attempt id, and `issues()` returns only issues whose
//!   attempt completed their segment: an attempt that crashed, or lost to a duplicate,
//!   after writing its issues leaves items nobody reads.
//!   At most [`MAX_CHILDREN`] children: 2 + 90 actions fit the 100-action limit.
//! - **Splits** (children handed on before the page is done) are one TransactWriteItems of
//!   the same shape: segment update (condition: exists, `done = false` and no `children`
//!   yet) setting `children` and an `outcome` of `outstanding` = children created, job ADD
//!   `outstanding`, and a conditional put per new child. The split segment's completion
//!   then requires its `children` to be exactly what was read (`#children = :split`), adds
//!   `outstanding -1` only, and creates no child; a completion of a segment never split
//!   requires `attribute_not_exists(children)`. So a split and a completion racing on one
//!   segment cannot both apply: the loser's condition fails, it re-reads, and reports what
//!   the winner recorded.

mod items;
mod table;
mod write;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{AwsContext, sdk_error};
use crate::error::{Error, Result, retry, with_retries};
use crate::jobstore::{JobCursor, JobStore, MAX_CHILDREN, Recorded};
use crate::model::{
    JobControl, JobRecord, JobSpec, JobState, KeyRange, ObjectIssue, SegmentCompletion, SegmentRecord, now_ms,
    validate_job_id,
};
use items::{
    EXPIRES_AT, ISSUE_END, ISSUE_PREFIX, JOB_SK, JOBS_GSI_PK, JOBS_INDEX, RUNNING_GSI_PK, RUNNING_INDEX, SEG_PREFIX,
    issue_attempt, issue_from, issue_group, job_from, job_pk, key, kind_name, n, s, seg_sk, segment_attempt,
    segment_from,
};

/// The table's key schema and indexes, as [`DynamoJobStore::ensure_table`] creates them
/// (for templates that create the table instead: see `deploy/`).
pub mod schema {
    pub use super::items::{
        CREATED_MS, DEFAULT_RETENTION_DAYS, EXPIRES_AT, JOB_SK, JOBS_GSI_PK, JOBS_INDEX, JOBS_INDEX_KEY, PARTITION_KEY,
        RUNNING_GSI_PK, RUNNING_INDEX, RUNNING_INDEX_KEY, SORT_KEY,
    };
}

const _: () = assert!(MAX_CHILDREN + 2 <= 100, "a completion must fit one transaction");

/// Attempts at a write that keeps meeting transient conflicts (a hot job item).
const WRITE_ATTEMPTS: u32 = 10;

/// The job store in one DynamoDB table. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DynamoJobStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// Seconds a settled item is kept (its `expires_at` = settling time + this).
    retention_secs: i64,
}

impl DynamoJobStore {
    /// A store on an existing `table` (see [`DynamoJobStore::ensure_table`]), keeping settled
    /// items [`schema::DEFAULT_RETENTION_DAYS`] days. No I/O.
    pub fn new(ctx: &AwsContext, table: String) -> Self {
        DynamoJobStore {
            client: ctx.dynamodb(),
            table,
            retention_secs: i64::from(items::DEFAULT_RETENTION_DAYS) * 86_400,
        }
    }

    /// The same store, keeping settled items `days` days (see the module doc: Expiry).
    pub fn with_retention_days(mut self, days: u32) -> Self {
        self.retention_secs = i64::from(days) * 86_400;
        self
    }

    /// `expires_at` for an item settled now.
    pub(super) fn expiry(&self) -> AttributeValue {
        n(now_ms() / 1000 + self.retention_secs)
    }

    /// Creates `table` if it does not exist (on-demand billing, the key design above),
    /// waits until it is ACTIVE, and returns a store on it. Idempotent; refuses (`Invalid`)
    /// an existing table that lacks the `jobs-by-created` index. A table made before the
    /// `jobs-running` index gets it, and its running jobs are entered in it.
    pub async fn ensure_table(ctx: &AwsContext, table: String) -> Result<Self> {
        let store = DynamoJobStore::new(ctx, table);
        if table::ensure(&store.client, &store.table).await? == table::Ensured::AddedRunningIndex {
            store.backfill_running().await?;
        }
        Ok(store)
    }

    /// Enters every running job in the `jobs-running` index (jobs written before it existed).
    async fn backfill_running(&self) -> Result<()> {
        let pks = self.index_keys(JOBS_INDEX, JOBS_GSI_PK, usize::MAX).await?;
        for job in self.read_jobs(pks).await? {
            if job.state != JobState::Running {
                continue;
            }
            let b = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(&job_pk(&job.spec.id), JOB_SK)))
                .update_expression("SET gsi2pk = :r")
                .condition_expression("#state = :running")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":r", s(RUNNING_GSI_PK))
                .expression_attribute_values(":running", s(JobState::Running.as_str()));
            match with_retries(|| async { b.clone().send().await.map_err(|e| sdk_error("indexing a running job", e)) })
                .await
            {
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The `pk`s in a sparse keys-only index's partition `value`, newest first, at most `limit`.
    async fn index_keys(&self, index: &str, value: &str, limit: usize) -> Result<Vec<String>> {
        self.index_keys_from(index, value, limit, None).await
    }

    /// [`Self::index_keys`] after the item whose keys are `start` (exclusive).
    async fn index_keys_from(
        &self,
        index: &str,
        value: &str,
        limit: usize,
        mut start: Option<std::collections::HashMap<String, AttributeValue>>,
    ) -> Result<Vec<String>> {
        let attr = if index == JOBS_INDEX { "gsi1pk" } else { "gsi2pk" };
        let mut pks: Vec<String> = Vec::new();
        while pks.len() < limit {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#p = :v")
                .expression_attribute_names("#p", attr)
                .expression_attribute_values(":v", s(value))
                .scan_index_forward(false)
                .limit((limit - pks.len()).min(1_000) as i32)
                .set_exclusive_start_key(start);
            let out =
                with_retries(|| async { query.clone().send().await.map_err(|e| sdk_error("listing jobs", e)) }).await?;
            for item in out.items() {
                if let Some(AttributeValue::S(pk)) = item.get("pk") {
                    pks.push(pk.clone());
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        pks.truncate(limit);
        Ok(pks)
    }

    /// The job items of `pks` (consistent reads), in that order; deleted ones are skipped.
    async fn read_jobs(&self, pks: Vec<String>) -> Result<Vec<JobRecord>> {
        let keys: Vec<_> = pks.iter().map(|pk| key(pk, JOB_SK)).collect();
        let found = with_retries(|| self.batch_get(keys.clone())).await?;
        let mut out = Vec::with_capacity(pks.len());
        for pk in pks {
            if let Some(item) = found.get(&(pk, JOB_SK.to_string())) {
                out.push(job_from(item)?);
            }
        }
        Ok(out)
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<items::Item>> {
        let get = self.client.get_item().table_name(&self.table).set_key(Some(key(pk, sk))).consistent_read(true);
        let out = with_retries(|| async { get.clone().send().await.map_err(|e| sdk_error("reading item", e)) }).await?;
        Ok(out.item)
    }

    /// Stamps `expires_at` on the segments of a job settled before they were done (cancelled
    /// or failed): nothing completes them any more. Idempotent, so every cancel or fail of a
    /// settled job repeats it and one that was interrupted finishes; a segment that completes
    /// meanwhile keeps the expiry its completion gave it.
    async fn expire_pending(&self, job: &str) -> Result<()> {
        let mut pending = Vec::new();
        self.query_range(job, SEG_PREFIX, "SEG$", 1_000, |item| {
            if !item.contains_key(EXPIRES_AT) {
                pending.push(items::get_s(item, "sk")?.to_string());
            }
            Ok(true)
        })
        .await?;
        let expiry = self.expiry();
        for sk in pending {
            let b = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(&job_pk(job), &sk)))
                .update_expression("SET #exp = if_not_exists(#exp, :exp)")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#exp", EXPIRES_AT)
                .expression_attribute_values(":exp", expiry.clone());
            match with_retries(|| async { b.clone().send().await.map_err(|e| sdk_error("expiring a segment", e)) })
                .await
            {
                Ok(_) | Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Items of one job's partition with a sort key in [`lo`, `hi`], consistent, in sort
    /// key order, a page at a time: `visit` returns false to stop.
    async fn query_range(
        &self,
        job: &str,
        lo: &str,
        hi: &str,
        page: usize,
        mut visit: impl FnMut(&items::Item) -> Result<bool>,
    ) -> Result<()> {
        let mut start = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(job_pk(job)))
                .expression_attribute_values(":lo", s(lo))
                .expression_attribute_values(":hi", s(hi))
                .consistent_read(true)
                .limit(page.clamp(1, 1_000) as i32)
                .set_exclusive_start_key(start);
            let out =
                with_retries(|| async { query.clone().send().await.map_err(|e| sdk_error("querying job items", e)) })
                    .await?;
            for item in out.items() {
                if !visit(item)? {
                    return Ok(());
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn create_job(&self, spec: &JobSpec, first: &[KeyRange]) -> Result<Recorded> {
        validate_job_id(&spec.id)?;
        let first = crate::jobstore::distinct(first, "first segments")?;
        retry(WRITE_ATTEMPTS, || self.create_once(spec, &first)).await
    }

    async fn create_failed(&self, spec: &JobSpec, message: &str) -> Result<Recorded> {
        validate_job_id(&spec.id)?;
        let mut item = items::job_item(spec, 0, now_ms())?;
        item.insert("state".into(), s(JobState::Failed.as_str()));
        item.insert("message".into(), s(message));
        item.insert(EXPIRES_AT.into(), self.expiry());
        item.remove("gsi2pk");
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)");
        // A retry after a put that landed meets its own condition: `Already`, as it should.
        match with_retries(|| async { put.clone().send().await.map_err(|e| sdk_error("recording a refused job", e)) })
            .await
        {
            Ok(_) => Ok(Recorded::Now),
            Err(Error::Conflict(_)) => Ok(Recorded::Already),
            Err(e) => Err(e),
        }
    }

    /// Queries the sparse `jobs-running` index (only running jobs are in it), then reads
    /// the jobs consistently and keeps those still running: the index lags a little.
    async fn running(&self) -> Result<Vec<JobRecord>> {
        let pks = match self.index_keys(RUNNING_INDEX, RUNNING_GSI_PK, usize::MAX).await {
            Ok(pks) => pks,
            // DynamoDB says ValidationException, moto ResourceNotFound. A missing table fails
            // again below, as NotFound.
            Err(Error::Invalid(e) | Error::NotFound(e)) => {
                // A table made before the index existed: `bucketclone init` adds it.
                tracing::warn!(table = %self.table, error = %e, "no {RUNNING_INDEX} index (rerun `bucketclone init`); reading every job");
                self.index_keys(JOBS_INDEX, JOBS_GSI_PK, usize::MAX).await?
            }
            Err(e) => return Err(e),
        };
        Ok(self.read_jobs(pks).await?.into_iter().filter(|j| j.state == JobState::Running).collect())
    }

    async fn note(&self, job: &str, message: Option<&str>) -> Result<()> {
        let b = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&job_pk(job), JOB_SK)))
            .condition_expression("#state = :running")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#message", "message")
            .expression_attribute_values(":running", s(JobState::Running.as_str()));
        let b = match message {
            Some(m) => b.update_expression("SET #message = :m").expression_attribute_values(":m", s(m)),
            None => b.update_expression("REMOVE #message"),
        };
        match with_retries(|| async { b.clone().send().await.map_err(|e| sdk_error("noting on a job", e)) }).await {
            Ok(_) | Err(Error::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.get(&job_pk(id), JOB_SK).await?.map(|item| job_from(&item)).transpose()
    }

    async fn jobs(&self, limit: usize, after: Option<&JobCursor>) -> Result<Vec<JobRecord>> {
        // The index resumes after exactly that item: its index key and its table key.
        let start = after.map(|c| {
            let mut k = key(&job_pk(&c.id), JOB_SK);
            k.insert("gsi1pk".into(), s(JOBS_GSI_PK));
            k.insert("created_ms".into(), n(c.created_ms));
            k
        });
        let pks = self.index_keys_from(JOBS_INDEX, JOBS_GSI_PK, limit, start).await?;
        self.read_jobs(pks).await
    }

    async fn segment(&self, job: &str, range: &KeyRange) -> Result<Option<SegmentRecord>> {
        self.get(&job_pk(job), &seg_sk(range)).await?.map(|item| segment_from(&item)).transpose()
    }

    async fn segments(&self, job: &str, limit: usize) -> Result<Vec<SegmentRecord>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // '$' follows '#': every segment sort key lies in [SEG#, SEG$].
        self.query_range(job, SEG_PREFIX, "SEG$", limit, |item| {
            out.push(segment_from(item)?);
            Ok(out.len() < limit)
        })
        .await?;
        Ok(out)
    }

    async fn complete_segment(&self, c: &SegmentCompletion) -> Result<Recorded> {
        let children = crate::jobstore::completion_children(c)?;
        // One id for every retry of this call: its issue puts stay idempotent.
        let attempt = uuid::Uuid::new_v4().simple().to_string()[..items::ATTEMPT_HEX].to_string();
        retry(WRITE_ATTEMPTS, || self.complete_once(c, &children, &attempt)).await
    }

    async fn split_segment(
        &self,
        job: &str,
        range: &KeyRange,
        children: &[KeyRange],
    ) -> Result<(Recorded, Vec<KeyRange>)> {
        let children = crate::jobstore::split_children(range, children)?;
        retry(WRITE_ATTEMPTS, || self.split_once(job, range, &children)).await
    }

    /// `ADD` to a string set: DynamoDB's own union, so concurrent marks lose nothing.
    async fn mark_moved(&self, job: &str, range: &KeyRange, marks: &[String]) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&job_pk(job), &seg_sk(range))))
            .update_expression("ADD #moved :marks")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#moved", "moved")
            .expression_attribute_values(":marks", AttributeValue::Ss(marks.to_vec()))
            .send()
            .await;
        match sent.map_err(|e| sdk_error("marking moved objects", e)) {
            Ok(_) => Ok(()),
            Err(Error::Conflict(_)) => Err(Error::NotFound(format!("job {job} has no segment {}", range.id()))),
            Err(e) => Err(e),
        }
    }

    async fn finalize(&self, job: &str) -> Result<Option<JobState>> {
        let Some(rec) = self.job(job).await? else {
            return Ok(None);
        };
        if rec.state != JobState::Running || rec.counters.outstanding > 0 {
            return Ok(Some(rec.state));
        }
        let state = rec.final_state();
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&job_pk(job), JOB_SK)))
            .update_expression("SET #state = :final, #updated = :now, #exp = :exp REMOVE gsi2pk")
            .condition_expression("#state = :running AND #out = :zero")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_values(":exp", self.expiry())
            .expression_attribute_names("#updated", "updated_ms")
            .expression_attribute_names("#out", "outstanding")
            .expression_attribute_values(":final", s(state.as_str()))
            .expression_attribute_values(":running", s(JobState::Running.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now_ms()));
        match with_retries(|| async { updated.clone().send().await.map_err(|e| sdk_error("finalizing job", e)) }).await
        {
            Ok(_) => Ok(Some(state)),
            // Someone else settled it (or failed it) first: report what it is now.
            Err(Error::Conflict(_)) => Ok(self.job(job).await?.map(|j| j.state)),
            Err(e) => Err(e),
        }
    }

    /// One conditional update: the state, and the job's entry in the `jobs-running` index
    /// (a paused or cancelled job leaves it, a resumed one comes back).
    async fn control(&self, job: &str, action: JobControl) -> Result<Option<JobState>> {
        let (from, to) = action.transition();
        let set = "SET #state = :to, #updated = :now";
        let expr = match to {
            JobState::Running => format!("{set}, gsi2pk = :r"),
            // Cancelled: settled, so it expires; paused: kept until resumed or cancelled.
            _ if to.is_terminal() => format!("{set}, #exp = :exp REMOVE gsi2pk"),
            _ => format!("{set} REMOVE gsi2pk"),
        };
        let allowed: Vec<String> = (0..from.len()).map(|i| format!(":f{i}")).collect();
        let mut b = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&job_pk(job), JOB_SK)))
            .update_expression(expr)
            .condition_expression(format!("#state IN ({})", allowed.join(", ")))
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#updated", "updated_ms")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":now", n(now_ms()));
        if to == JobState::Running {
            b = b.expression_attribute_values(":r", s(RUNNING_GSI_PK));
        }
        if to.is_terminal() {
            b = b.expression_attribute_names("#exp", EXPIRES_AT).expression_attribute_values(":exp", self.expiry());
        }
        for (name, st) in allowed.iter().zip(from) {
            b = b.expression_attribute_values(name, s(st.as_str()));
        }
        let now =
            match with_retries(|| async { b.clone().send().await.map_err(|e| sdk_error("changing a job's state", e)) })
                .await
            {
                Ok(_) => Some(to),
                // Not in a state the action applies to (or no such job): say what it is.
                Err(Error::Conflict(_)) => self.job(job).await?.map(|j| j.state),
                Err(e) => return Err(e),
            };
        if now == Some(JobState::Cancelled) {
            self.expire_pending(job).await?;
        }
        Ok(now)
    }

    async fn fail(&self, job: &str, message: &str) -> Result<()> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&job_pk(job), JOB_SK)))
            .update_expression("SET #state = :failed, #message = :m, #updated = :now, #exp = :exp REMOVE gsi2pk")
            .condition_expression("attribute_exists(pk) AND #state = :running")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#exp", EXPIRES_AT)
            .expression_attribute_values(":exp", self.expiry())
            .expression_attribute_names("#message", "message")
            .expression_attribute_names("#updated", "updated_ms")
            .expression_attribute_values(":failed", s(JobState::Failed.as_str()))
            .expression_attribute_values(":running", s(JobState::Running.as_str()))
            .expression_attribute_values(":m", s(message))
            .expression_attribute_values(":now", n(now_ms()));
        match with_retries(|| async { updated.clone().send().await.map_err(|e| sdk_error("failing job", e)) }).await {
            Ok(_) => {}
            Err(Error::Conflict(_)) => match self.job(job).await? {
                Some(j) if j.state != JobState::Failed => return Ok(()), // settled otherwise: a no-op
                Some(_) => {}                                            // failed: finish expiring it
                None => return Err(Error::NotFound(format!("job {job} does not exist"))),
            },
            Err(e) => return Err(e),
        }
        self.expire_pending(job).await
    }

    async fn issues(&self, job: &str, after: Option<&ObjectIssue>, limit: usize) -> Result<Vec<ObjectIssue>> {
        // Past every attempt of the cursor's (key, kind): '~' sorts after every hex digit.
        let mut cursor = match after {
            Some(a) => Some((a.key.clone(), kind_name(a.kind)?, "~".to_string())),
            None => None,
        };
        let mut out = Vec::new();
        while out.len() < limit {
            let want = limit - out.len();
            let batch = self.issue_items(job, cursor.as_ref(), want).await?;
            let Some(last) = batch.last() else { break };
            cursor = Some(last.0.clone());
            let full = batch.len() == want;
            for issue in self.current_issues(job, batch).await? {
                // Two segments may report one (key, kind): it is one issue.
                if out.last().is_none_or(|l: &ObjectIssue| (&l.key, l.kind) != (&issue.key, issue.kind)) {
                    out.push(issue);
                }
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }
}

/// An issue item's order, (key, kind, attempt), with the issue and its writer.
type IssueRow = ((String, String, String), ObjectIssue, Option<(String, String)>);

impl DynamoJobStore {
    /// Up to `limit` issue items after `cursor` in (key, kind, attempt) order, whatever
    /// attempt wrote them.
    async fn issue_items(
        &self,
        job: &str,
        cursor: Option<&(String, String, String)>,
        limit: usize,
    ) -> Result<Vec<IssueRow>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Start at the cursor's group: earlier groups hold only smaller keys.
        let lo = match cursor {
            Some((k, _, _)) => format!("{ISSUE_PREFIX}{}", issue_group(k)),
            None => ISSUE_PREFIX.to_string(),
        };
        // Read whole groups until `limit` items past the cursor are in hand, then sort
        // (only groups of long keys can be out of order) and cut.
        let mut got: Vec<IssueRow> = Vec::new();
        let mut last_group: Option<String> = None;
        self.query_range(job, &lo, ISSUE_END, limit.saturating_add(1), |item| {
            let issue = issue_from(item)?;
            let group = issue_group(&issue.key);
            if got.len() >= limit && last_group.as_ref() != Some(&group) {
                return Ok(false);
            }
            let writer = issue_attempt(item);
            let attempt = writer.as_ref().map(|(_, a)| a.clone()).unwrap_or_default();
            let sort = (issue.key.clone(), kind_name(issue.kind)?, attempt);
            if cursor.is_none_or(|c| sort > *c) {
                got.push((sort, issue, writer));
                last_group = Some(group);
            }
            Ok(true)
        })
        .await?;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got.truncate(limit);
        Ok(got)
    }

    /// The issues written by the attempt that completed their segment: one whose
    /// transaction lost, or never ran, left items that no reader may see.
    async fn current_issues(&self, job: &str, rows: Vec<IssueRow>) -> Result<Vec<ObjectIssue>> {
        let pk = job_pk(job);
        let segs: Vec<_> = rows.iter().filter_map(|r| r.2.as_ref().map(|(seg, _)| key(&pk, seg))).collect();
        let found = if segs.is_empty() { Default::default() } else { self.batch_get(segs).await? };
        Ok(rows
            .into_iter()
            .filter(|(_, _, writer)| match writer {
                None => true,
                Some((seg, attempt)) => found
                    .get(&(pk.clone(), seg.clone()))
                    .is_some_and(|item| items::is_done(item) && segment_attempt(item) == Some(attempt.as_str())),
            })
            .map(|(_, issue, _)| issue)
            .collect())
    }
}
