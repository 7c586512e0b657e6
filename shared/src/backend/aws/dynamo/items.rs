//! The DynamoDB job store's item layout: keys, attribute names, and the mapping between
//! items and domain records (see the table design in the parent module's doc).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{Counters, IssueKind, JobRecord, JobSpec, JobState, KeyRange, ObjectIssue, SegmentRecord};

/// One DynamoDB item.
pub(super) type Item = HashMap<String, AttributeValue>;

/// The table's partition key attribute (a string): `JOB#<id>` for every item of a job.
pub const PARTITION_KEY: &str = "pk";
/// The table's sort key attribute (a string).
pub const SORT_KEY: &str = "sk";
/// The jobs index's partition key attribute (a string, only on job items).
pub const JOBS_INDEX_KEY: &str = "gsi1pk";
/// The running-jobs index's partition key attribute (a string, only on running job items).
pub const RUNNING_INDEX_KEY: &str = "gsi2pk";
/// Both indexes' sort key attribute (a number: milliseconds since the epoch).
pub const CREATED_MS: &str = "created_ms";

/// The table's time-to-live attribute (a number: seconds since the epoch), on the items of
/// settled work only: a job item once the job is verified, mismatched, failed or cancelled,
/// a segment item once it is done, an issue item when written. DynamoDB deletes an item
/// some time after it passes; nothing running or paused ever carries it.
pub const EXPIRES_AT: &str = "expires_at";
/// How long settled items are kept by default, in days (`table.retention_days`).
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// The sort key of a job item.
pub const JOB_SK: &str = "JOB";
/// The prefix of segment sort keys.
pub(super) const SEG_PREFIX: &str = "SEG#";
/// The prefix of issue sort keys, and the first string after every one of them.
pub(super) const ISSUE_PREFIX: &str = "ISSUE#";
pub(super) const ISSUE_END: &str = "ISSUE$";
/// The sparse index listing jobs: only job items carry `gsi1pk`.
pub const JOBS_INDEX: &str = "jobs-by-created";
pub const JOBS_GSI_PK: &str = "JOBS";
/// The sparse index of running jobs: only running job items carry `gsi2pk`; settling a job
/// removes it.
pub const RUNNING_INDEX: &str = "jobs-running";
pub const RUNNING_GSI_PK: &str = "RUNNING";
/// Hex digits of a key kept in an issue's sort key: 940 + prefix, hash, kind and attempt
/// stay within DynamoDB's 1,024-byte sort-key limit.
const ISSUE_HEX_MAX: usize = 940;
/// Hex digits of a completion attempt's id.
pub(super) const ATTEMPT_HEX: usize = 16;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn job_pk(job: &str) -> String {
    format!("JOB#{job}")
}

pub(super) fn seg_sk(range: &KeyRange) -> String {
    format!("{SEG_PREFIX}{}", range.id())
}

/// The primary key of an item.
pub(super) fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

/// The part of an issue's sort key that orders it: the key's UTF-8 bytes in hex, at most
/// [`ISSUE_HEX_MAX`] digits. Hex keeps byte order, and every hex digit sorts after the `#`
/// that follows, so a key sorts before the keys it is a prefix of, as in S3. Keys longer
/// than 480 bytes share their group with the keys of the same first 480 bytes; readers
/// sort inside a group by the full key.
pub(super) fn issue_group(key: &str) -> String {
    let mut h = hex::encode(key.as_bytes());
    h.truncate(ISSUE_HEX_MAX);
    h
}

/// `ISSUE#<group>#<kind>#<attempt>`, or `ISSUE#<group>#<sha256 of key>#<kind>#<attempt>`
/// when the group is truncated, so (key, kind, attempt) always has exactly one sort key.
/// Each completion attempt writes its own items: one that loses its transaction (or never
/// sends it) cannot overwrite the winner's, and readers keep only the winner's.
pub(super) fn issue_sk(i: &ObjectIssue, attempt: &str) -> Result<String> {
    let group = issue_group(&i.key);
    let kind = kind_name(i.kind)?;
    if group.len() == 2 * i.key.len() {
        return Ok(format!("{ISSUE_PREFIX}{group}#{kind}#{attempt}"));
    }
    let digest = hex::encode(&Sha256::digest(i.key.as_bytes())[..16]);
    Ok(format!("{ISSUE_PREFIX}{group}#{digest}#{kind}#{attempt}"))
}

/// The kind's kebab-case name: stored, and the second half of the issue order.
pub(super) fn kind_name(k: IssueKind) -> Result<String> {
    match serde_json::to_value(k)? {
        serde_json::Value::String(s) => Ok(s),
        v => Err(Error::permanent(format!("issue kind serialised as {v}"))),
    }
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        other => Err(malformed(name, other)),
    }
}

fn get_n(item: &Item, name: &str) -> Result<i64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| malformed(name, item.get(name))),
        None => Ok(0),
        other => Err(malformed(name, other)),
    }
}

fn malformed(name: &str, v: Option<&AttributeValue>) -> Error {
    Error::permanent(format!("malformed job store item: attribute {name} is {v:?}"))
}

/// A new running job with `outstanding` first segments.
pub(super) fn job_item(spec: &JobSpec, outstanding: usize, now: i64) -> Result<Item> {
    let mut item = key(&job_pk(&spec.id), JOB_SK);
    item.insert("gsi1pk".into(), s(JOBS_GSI_PK));
    item.insert("gsi2pk".into(), s(RUNNING_GSI_PK));
    item.insert("spec".into(), s(serde_json::to_string(spec)?));
    item.insert("state".into(), s(JobState::Running.as_str()));
    item.insert("created_ms".into(), n(now));
    item.insert("updated_ms".into(), n(now));
    for name in Counters::NAMES {
        item.insert((*name).into(), n(0));
    }
    item.insert("outstanding".into(), n(outstanding as i64));
    Ok(item)
}

pub(super) fn job_from(item: &Item) -> Result<JobRecord> {
    let spec: JobSpec = serde_json::from_str(get_s(item, "spec")?)?;
    let state = get_s(item, "state")?;
    let values = Counters::NAMES.iter().map(|name| get_n(item, name)).collect::<Result<Vec<i64>>>()?;
    Ok(JobRecord {
        state: JobState::parse(state)
            .ok_or_else(|| Error::permanent(format!("job {}: unknown state {state:?}", spec.id)))?,
        spec,
        counters: Counters::from_values(&values),
        message: get_s(item, "message").ok().map(str::to_string),
        created_ms: get_n(item, "created_ms")?,
        updated_ms: get_n(item, "updated_ms")?,
    })
}

/// A pending segment.
pub(super) fn segment_item(job: &str, range: &KeyRange) -> Result<Item> {
    let mut item = key(&job_pk(job), &seg_sk(range));
    item.insert("range".into(), s(serde_json::to_string(range)?));
    item.insert("done".into(), AttributeValue::Bool(false));
    Ok(item)
}

pub(super) fn is_done(item: &Item) -> bool {
    matches!(item.get("done"), Some(AttributeValue::Bool(true)))
}

pub(super) fn segment_from(item: &Item) -> Result<SegmentRecord> {
    let range: KeyRange = serde_json::from_str(get_s(item, "range")?)?;
    let json_or_default = |name: &str| get_s(item, name).ok().map(str::to_string);
    Ok(SegmentRecord {
        id: range.id(),
        range,
        done: is_done(item),
        children: match json_or_default("children") {
            Some(j) => serde_json::from_str(&j)?,
            None => Vec::new(),
        },
        outcome: match json_or_default("outcome") {
            Some(j) => serde_json::from_str(&j)?,
            None => Counters::default(),
        },
        worker: json_or_default("worker"),
        started_ms: get_n(item, "started_ms")?,
        finished_ms: get_n(item, "finished_ms")?,
        moved: match item.get("moved") {
            Some(AttributeValue::Ss(v)) => v.clone(),
            _ => Vec::new(),
        },
    })
}

/// An issue written by completion `attempt` of the segment with sort key `seg`.
pub(super) fn issue_item(job: &str, i: &ObjectIssue, seg: &str, attempt: &str) -> Result<Item> {
    let mut item = key(&job_pk(job), &issue_sk(i, attempt)?);
    item.insert("seg".into(), s(seg));
    item.insert("attempt".into(), s(attempt));
    item.insert("key".into(), s(&i.key));
    item.insert("kind".into(), s(kind_name(i.kind)?));
    item.insert("issue".into(), s(serde_json::to_string(i)?));
    Ok(item)
}

pub(super) fn issue_from(item: &Item) -> Result<ObjectIssue> {
    Ok(serde_json::from_str(get_s(item, "issue")?)?)
}

/// The segment sort key and completion attempt an issue item was written by; `None` for
/// items written before issues were tagged (always current).
pub(super) fn issue_attempt(item: &Item) -> Option<(String, String)> {
    Some((get_s(item, "seg").ok()?.to_string(), get_s(item, "attempt").ok()?.to_string()))
}

/// The completion attempt recorded on a done segment item.
pub(super) fn segment_attempt(item: &Item) -> Option<&str> {
    get_s(item, "attempt").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sk(key: &str) -> String {
        sk_of(key, IssueKind::Missing)
    }

    fn sk_of(key: &str, kind: IssueKind) -> String {
        let issue = ObjectIssue { key: key.into(), kind, source: None, destination: None, detail: None };
        issue_sk(&issue, &"f".repeat(ATTEMPT_HEX)).unwrap()
    }

    #[test]
    fn issue_sort_keys_follow_key_order_and_fit_dynamodb() {
        let keys = ["a", "a b", "a#b", "a/", "ab", "é", "\u{1}x"];
        let mut by_key: Vec<&str> = keys.to_vec();
        by_key.sort();
        let mut by_sk = by_key.clone();
        by_sk.sort_by_key(|k| sk(k));
        assert_eq!(by_sk, by_key, "sort keys order as the keys do");
        let longest = "é".repeat(512);
        let long_sk = sk_of(&longest, IssueKind::ChangedInSource);
        assert!(long_sk.len() <= 1024, "{}", long_sk.len());
        let (a, b) = (format!("{}a", "k".repeat(600)), format!("{}b", "k".repeat(600)));
        assert_ne!(sk(&a), sk(&b), "truncated keys still have distinct sort keys");
        assert_eq!(issue_group(&a), issue_group(&b), "and share a group");
        assert!(sk("a").ends_with(&format!("#missing#{}", "f".repeat(ATTEMPT_HEX))));
    }
}
