//! The DynamoDB job store's writes that must be atomic: creating a job with its first
//! segments, and completing a segment (one TransactWriteItems each), plus the batched
//! reads and idempotent issue puts around them.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::DynamoJobStore;
use super::items::{
    EXPIRES_AT, Item, is_done, issue_item, issue_sk, job_item, job_pk, key, n, s, seg_sk, segment_from, segment_item,
};
use crate::backend::aws::sdk_error;
use crate::error::{Error, Result};
use crate::jobstore::{Recorded, split_mismatch};
use crate::model::{Counters, JobSpec, KeyRange, ObjectIssue, SegmentCompletion, now_ms};

/// Rounds of "read which children exist, then write" before giving up on a child race.
const CHILD_RACE_ROUNDS: usize = 5;
/// Rounds of resending unprocessed batch items before reporting a transient failure.
const BATCH_ROUNDS: u32 = 8;
const CCF: &str = "ConditionalCheckFailed";

/// The cancellation reason codes of a cancelled transaction, one per action, in order.
fn cancellation(e: &SdkError<TransactWriteItemsError, HttpResponse>) -> Option<Vec<String>> {
    match e.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(t) => {
            Some(t.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_string()).collect())
        }
        _ => None,
    }
}

/// A cancellation no condition explains: a conflict with another transaction or
/// throttling (retry), a malformed request (stop), or something unknown.
fn cancelled(what: &str, codes: &[String]) -> Error {
    let msg = format!("{what}: transaction cancelled: {}", codes.join(", "));
    let has = |c: &str| codes.iter().any(|x| x == c);
    if has("TransactionConflict") || has("ThrottlingError") || has("ProvisionedThroughputExceeded") {
        Error::Transient(msg)
    } else if has("ValidationError") {
        Error::Invalid(msg)
    } else {
        Error::Permanent(msg)
    }
}

/// Why a completion's transaction was cancelled, from its per-action reason codes
/// (action 0: the segment, 1: the job, 2..: the new children).
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The segment's condition failed: it is done (or missing); re-read to tell which.
    SegmentSettled,
    /// The job's condition failed: no such job.
    JobMissing,
    /// A child was created since it was read: re-read and try again.
    ChildAppeared,
    /// Anything else, classified (a conflict with another transaction is transient).
    Failed(Error),
}

fn verdict(codes: &[String]) -> Verdict {
    let failed = |i: usize| codes.get(i).map(String::as_str) == Some(CCF);
    if codes.iter().any(|x| x == "TransactionConflict") {
        Verdict::Failed(cancelled("completing segment", codes))
    } else if failed(0) {
        Verdict::SegmentSettled
    } else if failed(1) {
        Verdict::JobMissing
    } else if (2..codes.len()).any(failed) {
        Verdict::ChildAppeared
    } else {
        Verdict::Failed(cancelled("completing segment", codes))
    }
}

fn build_err(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("building a DynamoDB request: {e}"))
}

fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl DynamoJobStore {
    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// One attempt at creating the job and its first segments in one transaction.
    pub(super) async fn create_once(&self, spec: &JobSpec, first: &[KeyRange]) -> Result<Recorded> {
        let job = job_item(spec, first.len(), now_ms())?;
        let mut actions = vec![self.put(job, Some("attribute_not_exists(pk)"))?];
        for r in first {
            // Unconditional, like SQLite's REPLACE: a job that does not exist owns no segments.
            actions.push(self.put(segment_item(&spec.id, r)?, None)?);
        }
        let sent = self.client.transact_write_items().set_transact_items(Some(actions)).send().await;
        match sent {
            Ok(_) => Ok(Recorded::Now),
            Err(e) => match cancellation(&e) {
                Some(codes) if codes.first().map(String::as_str) == Some(CCF) => Ok(Recorded::Already),
                Some(codes) => Err(cancelled("creating job", &codes)),
                None => Err(sdk_error("creating job", e)),
            },
        }
    }

    /// One attempt at a completion (see the parent module's doc for the protocol). Issues
    /// are written tagged with `attempt`, which the transaction records on the segment.
    pub(super) async fn complete_once(
        &self,
        c: &SegmentCompletion,
        children: &[KeyRange],
        attempt: &str,
    ) -> Result<Recorded> {
        let (pk, seg) = (job_pk(&c.job), seg_sk(&c.range));
        let mut issues_written = false;
        // Round 0 reads nothing: it writes as if the segment were pending, never split, with
        // none of its children recorded, as nearly every completion finds it. Its conditions
        // hold exactly when that is so; when they do not, the transaction changes nothing and
        // the next rounds read what is there.
        for round in 0..=CHILD_RACE_ROUNDS {
            let found = match round {
                0 => HashMap::new(),
                _ => {
                    let mut keys = vec![key(&pk, &seg)];
                    keys.extend(children.iter().map(|k| key(&pk, &seg_sk(k))));
                    self.batch_get(keys).await?
                }
            };
            let split = match found.get(&(pk.clone(), seg.clone())) {
                None if round == 0 => None,
                None => return Err(not_found_segment(&c.job, &c.range)),
                Some(item) if is_done(item) => return Ok(Recorded::Already),
                Some(item) => split_of(item)?,
            };
            if !issues_written {
                self.put_issues(&c.job, &seg, attempt, &c.issues).await?;
                issues_written = true;
            }
            // A split segment's children exist and count already: the same ones, or refused.
            let (created, new): (i64, Vec<&KeyRange>) = match &split {
                Some(sp) if sp.children.as_slice() == children => (sp.created, Vec::new()),
                Some(_) => return Err(split_mismatch(&c.range)),
                None => {
                    let new: Vec<&KeyRange> =
                        children.iter().filter(|k| !found.contains_key(&(pk.clone(), seg_sk(k)))).collect();
                    (new.len() as i64, new)
                }
            };
            let outcome = Counters { outstanding: created - 1, segments_done: 1, ..c.delta };
            // The split's addition is in the job already; only the rest is added now.
            let before = split.as_ref().map_or(0, |sp| sp.created);
            let added = Counters { outstanding: outcome.outstanding - before, ..outcome };
            let raw = split.as_ref().map(|sp| sp.raw.as_str());
            let mut actions = vec![self.segment_done(c, children, &outcome, attempt, raw)?, self.job_add(&pk, &added)?];
            for k in &new {
                let child = segment_item(&c.job, k)?;
                actions.push(self.put(child, Some("attribute_not_exists(pk)"))?);
            }
            let sent = self.client.transact_write_items().set_transact_items(Some(actions)).send().await;
            let codes = match sent {
                Ok(_) => return Ok(Recorded::Now),
                Err(e) => match cancellation(&e) {
                    Some(codes) => codes,
                    None => return Err(sdk_error("completing segment", e)),
                },
            };
            match verdict(&codes) {
                // Done (by a duplicate) or split meanwhile, or a child appeared: the next
                // round reads which.
                Verdict::SegmentSettled | Verdict::ChildAppeared => {
                    tracing::debug!(job = %c.job, segment = %c.range.id(), "the segment or a child changed meanwhile; re-reading");
                }
                Verdict::JobMissing => {
                    return Err(Error::NotFound(format!("job {} does not exist", c.job)));
                }
                Verdict::Failed(e) => return Err(e),
            }
        }
        Err(Error::transient(format!(
            "completing segment {} of job {}: the segment or its children kept changing concurrently",
            c.range.id(),
            c.job
        )))
    }

    /// One attempt at a split ([`crate::jobstore::JobStore::split_segment`]): the children
    /// recorded on the pending segment (condition: pending and never split), those not
    /// recorded yet created, the job's `outstanding` up by them, in one transaction.
    pub(super) async fn split_once(
        &self,
        job: &str,
        range: &KeyRange,
        children: &[KeyRange],
    ) -> Result<(Recorded, Vec<KeyRange>)> {
        let (pk, seg) = (job_pk(job), seg_sk(range));
        for _ in 0..CHILD_RACE_ROUNDS {
            let mut keys = vec![key(&pk, &seg)];
            keys.extend(children.iter().map(|k| key(&pk, &seg_sk(k))));
            let found = self.batch_get(keys).await?;
            let Some(item) = found.get(&(pk.clone(), seg.clone())) else {
                return Err(not_found_segment(job, range));
            };
            let recorded = segment_from(item)?;
            if recorded.done || !recorded.children.is_empty() {
                return Ok((Recorded::Already, recorded.children));
            }
            let new: Vec<&KeyRange> =
                children.iter().filter(|k| !found.contains_key(&(pk.clone(), seg_sk(k)))).collect();
            let added = Counters { outstanding: new.len() as i64, ..Default::default() };
            let mut actions = vec![self.segment_split(job, range, children, &added)?, self.job_add(&pk, &added)?];
            for k in &new {
                actions.push(self.put(segment_item(job, k)?, Some("attribute_not_exists(pk)"))?);
            }
            let sent = self.client.transact_write_items().set_transact_items(Some(actions)).send().await;
            let codes = match sent {
                Ok(_) => return Ok((Recorded::Now, children.to_vec())),
                Err(e) => match cancellation(&e) {
                    Some(codes) => codes,
                    None => return Err(sdk_error("splitting segment", e)),
                },
            };
            match verdict(&codes) {
                Verdict::SegmentSettled | Verdict::ChildAppeared => {
                    tracing::debug!(job, segment = %range.id(), "the segment or a child changed meanwhile; re-reading");
                }
                Verdict::JobMissing => return Err(Error::NotFound(format!("job {job} does not exist"))),
                Verdict::Failed(e) => return Err(e),
            }
        }
        Err(Error::transient(format!(
            "splitting segment {} of job {job}: the segment or its children kept changing concurrently",
            range.id()
        )))
    }

    /// A pending, never split segment gets its children and the split's outcome.
    fn segment_split(
        &self,
        job: &str,
        range: &KeyRange,
        children: &[KeyRange],
        outcome: &Counters,
    ) -> Result<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&job_pk(job), &seg_sk(range))))
            .update_expression("SET #children = :ch, #outcome = :oc")
            .condition_expression("attribute_exists(pk) AND #done = :false AND attribute_not_exists(#children)")
            .set_expression_attribute_names(Some(names(&[
                ("#done", "done"),
                ("#children", "children"),
                ("#outcome", "outcome"),
            ])))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":ch", s(serde_json::to_string(children)?))
            .expression_attribute_values(":oc", s(serde_json::to_string(outcome)?))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Segment pending -> done with its outcome and the attempt whose issues count
    /// (condition: exists, not done, and split as it was read: with the children JSON
    /// `split`, or never).
    fn segment_done(
        &self,
        c: &SegmentCompletion,
        children: &[KeyRange],
        outcome: &Counters,
        attempt: &str,
        split: Option<&str>,
    ) -> Result<TransactWriteItem> {
        let split_condition = match split {
            Some(_) => "#children = :split",
            None => "attribute_not_exists(#children)",
        };
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&job_pk(&c.job), &seg_sk(&c.range))))
            .update_expression(
                "SET #done = :t, #children = :ch, #outcome = :oc, #worker = :w, #started = :s, #finished = :f, \
                 #attempt = :a, #exp = :exp",
            )
            .condition_expression(format!("attribute_exists(pk) AND #done = :false AND {split_condition}"))
            .set_expression_attribute_names(Some(names(&[
                ("#done", "done"),
                ("#children", "children"),
                ("#outcome", "outcome"),
                ("#worker", "worker"),
                ("#started", "started_ms"),
                ("#finished", "finished_ms"),
                ("#attempt", "attempt"),
                ("#exp", EXPIRES_AT),
            ])))
            .expression_attribute_values(":exp", self.expiry())
            .expression_attribute_values(":a", s(attempt))
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":ch", s(serde_json::to_string(children)?))
            .expression_attribute_values(":oc", s(serde_json::to_string(outcome)?))
            .expression_attribute_values(":w", s(&c.worker))
            .expression_attribute_values(":s", n(c.started_ms))
            .expression_attribute_values(":f", n(c.finished_ms));
        if let Some(raw) = split {
            update = update.expression_attribute_values(":split", s(raw));
        }
        let update = update.build().map_err(build_err)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The job's counters += `outcome` (its non-zero fields), and `updated_ms`.
    fn job_add(&self, pk: &str, outcome: &Counters) -> Result<TransactWriteItem> {
        let mut adds = Vec::new();
        let mut b = Update::builder().table_name(&self.table).set_key(Some(key(pk, super::items::JOB_SK)));
        for (i, (name, v)) in Counters::NAMES.iter().zip(outcome.values()).enumerate() {
            if v != 0 || *name == "segments_done" {
                adds.push(format!("#c{i} :c{i}"));
                b = b
                    .expression_attribute_names(format!("#c{i}"), *name)
                    .expression_attribute_values(format!(":c{i}"), n(v));
            }
        }
        let update = b
            .update_expression(format!("ADD {} SET #updated = :now", adds.join(", ")))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#updated", "updated_ms")
            .expression_attribute_values(":now", n(now_ms()))
            .build()
            .map_err(build_err)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Puts the issues, 25 per BatchWriteItem, resending unprocessed ones. Idempotent: an
    /// issue's item key is derived from (job, key, kind, attempt).
    async fn put_issues(&self, job: &str, seg: &str, attempt: &str, issues: &[ObjectIssue]) -> Result<()> {
        let mut seen = HashSet::new();
        let mut requests = Vec::new();
        for i in issues {
            if seen.insert(issue_sk(i, attempt)?) {
                let mut item = issue_item(job, i, seg, attempt)?;
                item.insert(EXPIRES_AT.into(), self.expiry());
                let put = PutRequest::builder().set_item(Some(item)).build().map_err(build_err)?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
        }
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            for round in 0.. {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| sdk_error("writing issues", e))?;
                pending = out.unprocessed_items.and_then(|mut m| m.remove(&self.table)).unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                if round + 1 >= BATCH_ROUNDS {
                    return Err(Error::transient("writing issues: items stayed unprocessed"));
                }
                backoff(round).await;
            }
        }
        Ok(())
    }

    /// Strongly consistent BatchGetItem of `keys` (any number), by (pk, sk).
    pub(super) async fn batch_get(&self, keys: Vec<Item>) -> Result<HashMap<ItemKey, Item>> {
        let mut found = HashMap::new();
        let mut seen = HashSet::new();
        let keys: Vec<Item> = keys.into_iter().filter(|k| seen.insert(item_key(k))).collect();
        for chunk in keys.chunks(100) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .consistent_read(true)
                    .build()
                    .map_err(build_err)?,
            );
            let mut round = 0;
            while let Some(request) = pending.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| sdk_error("reading items", e))?;
                for item in out.responses.and_then(|mut m| m.remove(&self.table)).unwrap_or_default() {
                    found.insert(item_key(&item), item);
                }
                pending = out.unprocessed_keys.and_then(|mut m| m.remove(&self.table));
                if pending.is_some() {
                    round += 1;
                    if round >= BATCH_ROUNDS {
                        return Err(Error::transient("reading items: keys stayed unprocessed"));
                    }
                    backoff(round).await;
                }
            }
        }
        Ok(found)
    }
}

/// An item's (pk, sk).
pub(super) type ItemKey = (String, String);

pub(super) fn item_key(item: &Item) -> ItemKey {
    let get = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => v.clone(),
        _ => String::new(),
    };
    (get("pk"), get("sk"))
}

fn not_found_segment(job: &str, range: &KeyRange) -> Error {
    Error::NotFound(format!("job {job} has no segment {}", range.id()))
}

/// A pending segment's split, as read: its children (and their JSON, as stored), and how
/// many children the split created.
struct Split {
    children: Vec<KeyRange>,
    raw: String,
    created: i64,
}

/// The split of a pending segment item, if it was split.
fn split_of(item: &Item) -> Result<Option<Split>> {
    let Some(AttributeValue::S(raw)) = item.get("children") else { return Ok(None) };
    let rec = segment_from(item)?;
    Ok(Some(Split { children: rec.children, raw: raw.clone(), created: rec.outcome.outstanding }))
}

/// Jittered exponential pause between resends of unprocessed batch items.
async fn backoff(round: u32) {
    let cap = (50u64 << round.min(6)).min(2_000);
    tokio::time::sleep(Duration::from_millis(rand::random_range(cap / 2..=cap))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(codes: &[&str]) -> Verdict {
        verdict(&codes.iter().map(|c| c.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn cancellation_reasons_decide_what_a_completion_does_next() {
        assert_eq!(v(&[CCF, "None", "None"]), Verdict::SegmentSettled);
        assert_eq!(v(&["None", CCF]), Verdict::JobMissing);
        assert_eq!(v(&["None", "None", "None", CCF]), Verdict::ChildAppeared);
        // A conflict wins over conditions: the conditions were judged on a moving item.
        assert!(matches!(v(&[CCF, "TransactionConflict"]), Verdict::Failed(Error::Transient(_))));
        assert!(matches!(v(&["None", "ValidationError"]), Verdict::Failed(Error::Invalid(_))));
        assert!(matches!(v(&["None", "None"]), Verdict::Failed(Error::Permanent(_))));
    }
}
