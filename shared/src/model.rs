//! The domain: where objects live ([`Location`]), what a job is ([`JobSpec`], [`JobRecord`]),
//! the unit of work ([`KeyRange`], a half-open key range relative to the job's source prefix),
//! what a page of work changes ([`Counters`], [`SegmentCompletion`]) and what a difference is
//! ([`ObjectIssue`]). Pure data: no I/O here.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod location;
pub use location::{Connection, Location, Scheme, configured_s3_endpoint, resolve_path, validate_bucket};

/// A job's identifier: 1 to 128 characters of `[A-Za-z0-9._-]`, so it is safe in keys,
/// URLs and file names.
pub fn validate_job_id(id: &str) -> Result<()> {
    let ok = (1..=128).contains(&id.len())
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("job id {id:?} must be 1-128 characters of A-Z a-z 0-9 . _ -")))
    }
}

/// What a job does with each page of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Copy what is missing or different, then verify.
    #[default]
    Clone,
    /// Compare only; never write.
    VerifyOnly,
    /// Clone, verify, then delete from the source what was verified identical in this run.
    Move,
}

/// Tunables of one job, carried in the job so every worker applies the same ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobOptions {
    pub mode: Mode,
    /// Keys listed per segment (one list page; S3 caps it at 1,000).
    pub page_size: u32,
    /// Compare by size alone when a listing has no ETag, instead of one HEAD per object.
    pub size_only: bool,
    /// Source entries that cannot be copied at all (a local file whose name is not UTF-8, a
    /// symlinked directory) are reported skips instead of differences: the job can end
    /// "verified, N skipped". Off by default: then such an entry makes the job a mismatch.
    pub skip_uncopyable: bool,
    /// Archived source objects (Glacier Flexible Retrieval, Deep Archive, Intelligent-Tiering
    /// archive tiers) that are not restored are reported "needs restore" and counted as
    /// skipped: the job can end "verified, N skipped". Off by default: then they make it a
    /// mismatch.
    #[serde(default)]
    pub skip_archived: bool,
    /// Ask S3 to restore each archived source object for this many days (RestoreObject,
    /// Standard tier); a later run of the same job copies the restored ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_days: Option<u32>,
    /// The storage class of every object written (`STANDARD_IA`, `GLACIER_IR`, ...); unset:
    /// each keeps its source's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Server-side encryption of every object written: `AES256` (SSE-S3), `aws:kms` or
    /// `aws:kms:dsse`; unset: the destination bucket's default encryption.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse: Option<String>,
    /// The destination account's KMS key for `aws:kms`; unset: the bucket's default key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sse_kms_key_id: Option<String>,
    /// Include and exclude patterns, in order, with `aws s3 sync` semantics (see
    /// [`crate::filter`]): a key they leave out is not part of the job on either side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<crate::filter::Filter>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            mode: Mode::Clone,
            page_size: 1000,
            size_only: false,
            skip_uncopyable: false,
            skip_archived: false,
            restore_days: None,
            storage_class: None,
            sse: None,
            sse_kms_key_id: None,
            filters: Vec::new(),
        }
    }
}

/// S3's storage classes a copy may be written in.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
];

impl JobOptions {
    /// How the job writes objects (see [`crate::objstore::WriteOptions`]).
    pub fn write_options(&self) -> crate::objstore::WriteOptions {
        crate::objstore::WriteOptions {
            storage_class: self.storage_class.clone(),
            sse: self.sse.clone(),
            sse_kms_key_id: self.sse_kms_key_id.clone(),
        }
    }

    /// Checks the write settings: known values, a KMS key only with KMS, and none at all
    /// for a local destination (a file keeps bytes only).
    fn validate_writes(&self, destination: &Location) -> Result<()> {
        if let Some(c) = &self.storage_class
            && !STORAGE_CLASSES.contains(&c.as_str())
        {
            return Err(Error::invalid(format!("storage class {c:?}: expected one of {}", STORAGE_CLASSES.join(", "))));
        }
        if let Some(e) = &self.sse
            && !["AES256", "aws:kms", "aws:kms:dsse"].contains(&e.as_str())
        {
            return Err(Error::invalid(format!("sse {e:?}: expected AES256, aws:kms or aws:kms:dsse")));
        }
        if self.sse_kms_key_id.is_some() && !self.sse.as_deref().is_some_and(|e| e.starts_with("aws:kms")) {
            return Err(Error::invalid("sse_kms_key_id needs sse aws:kms or aws:kms:dsse"));
        }
        let writes = self.storage_class.is_some() || self.sse.is_some();
        if writes && destination.scheme == Scheme::Local {
            return Err(Error::invalid(format!(
                "destination {destination}: a local directory keeps bytes only, so it takes no storage class or encryption"
            )));
        }
        Ok(())
    }
}

/// Everything a worker needs to know about a job, fixed when the job is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub id: String,
    pub source: Location,
    pub destination: Location,
    #[serde(default)]
    pub options: JobOptions,
}

impl JobSpec {
    /// Validates what can be checked without I/O: the id, the options, and that the
    /// destination does not overlap the source.
    pub fn validate(&self) -> Result<()> {
        validate_job_id(&self.id)?;
        if !(1..=1000).contains(&self.options.page_size) {
            return Err(Error::invalid("page_size must be between 1 and 1000"));
        }
        if self.options.mode == Mode::Move && self.options.size_only {
            return Err(Error::invalid("a move deletes only what was proven identical: size_only is not allowed"));
        }
        for (side, loc) in [("source", &self.source), ("destination", &self.destination)] {
            loc.clone().with_conn(loc.conn.clone()).map_err(|e| e.context(side))?;
        }
        self.options.validate_writes(&self.destination)?;
        if let Some(d) = self.options.restore_days
            && !(1..=36_500).contains(&d)
        {
            return Err(Error::invalid(format!("restore_days {d}: S3 keeps a restored copy for 1 to 36500 days")));
        }
        if self.options.restore_days.is_some() && self.options.mode == Mode::VerifyOnly {
            return Err(Error::invalid("restore_days: a verify-only job reads nothing, so it restores nothing"));
        }
        crate::filter::validate(&self.options.filters)?;
        if self.source.overlaps(&self.destination) {
            return Err(Error::invalid(format!(
                "destination {} overlaps source {}: a clone must not write inside its own source",
                self.destination, self.source
            )));
        }
        Ok(())
    }
}

/// A half-open range of keys, relative to the job's source prefix: every key `k` with
/// `start_after < k` and (`k <= end`, or no `end`). The empty `start_after` means "from the
/// first key". Both bounds come from S3's own vocabulary: `start_after` is ListObjectsV2's
/// StartAfter, and an inclusive `end` lets adjacent ranges `(a, b]`, `(b, c]` tile the key
/// space with no key lost or doubled. Ordering is UTF-8 byte order, S3's listing order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    #[serde(default)]
    pub start_after: String,
    #[serde(default)]
    pub end: Option<String>,
}

impl KeyRange {
    /// The whole key space.
    pub fn all() -> Self {
        KeyRange { start_after: String::new(), end: None }
    }
    /// True when `key` lies in this range.
    pub fn contains(&self, key: &str) -> bool {
        key > self.start_after.as_str() && self.end.as_deref().is_none_or(|e| key <= e)
    }
    /// A stable id derived from the range alone, so a re-sent segment is the same segment.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.start_after.as_bytes());
        match &self.end {
            Some(e) => {
                h.update([1u8]);
                h.update(e.as_bytes());
            }
            None => h.update([0u8]),
        }
        hex::encode(&h.finalize()[..12])
    }
}

/// One object as a listing or HEAD sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// The full key in its store.
    pub key: String,
    pub size: u64,
    /// The ETag without quotes; `None` when the store's listing carries none.
    pub etag: Option<String>,
    /// S3's storage class as listed (`STANDARD_IA`, `GLACIER`, ...); `None` for the default
    /// class (STANDARD) and for stores without classes. Kept on server-side copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// The lifecycle of a job. Terminal states are never left.
///
/// ```text
///   running ──(nothing outstanding)──> verified | mismatch
///   running ──(bad request, missing bucket)──> failed
///   running <──pause/resume──> paused
///   running | paused ──cancel──> cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Segments are outstanding.
    Running,
    /// Every source object is in the destination, proven identical; nothing else differs.
    Verified,
    /// The job finished, and something differs, failed or could not be verified: see issues.
    Mismatch,
    /// The job could not run (bad request, missing bucket, no permission): see `message`.
    Failed,
    /// Held by a user: workers take no new page of it until it is resumed; pages in
    /// progress finish and are counted.
    Paused,
    /// Stopped by a user for good, with the counts of the pages done until then. Nothing
    /// was deleted that was not verified (a move deletes only after verifying).
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Running,
        JobState::Verified,
        JobState::Mismatch,
        JobState::Failed,
        JobState::Paused,
        JobState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, JobState::Running | JobState::Paused)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Verified => "verified",
            JobState::Mismatch => "mismatch",
            JobState::Failed => "failed",
            JobState::Paused => "paused",
            JobState::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// What a user can do to a job that has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobControl {
    Pause,
    Resume,
    Cancel,
}

impl JobControl {
    /// The states the action applies to, and the state it leads to.
    pub fn transition(self) -> (&'static [JobState], JobState) {
        match self {
            JobControl::Pause => (&[JobState::Running], JobState::Paused),
            JobControl::Resume => (&[JobState::Paused], JobState::Running),
            JobControl::Cancel => (&[JobState::Running, JobState::Paused], JobState::Cancelled),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobControl::Pause => "pause",
            JobControl::Resume => "resume",
            JobControl::Cancel => "cancel",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [JobControl::Pause, JobControl::Resume, JobControl::Cancel].into_iter().find(|c| c.as_str() == s)
    }
}

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        /// The job's tallies. A segment's completion adds its own [`Counters`] to the job's
        /// exactly once, in the same atomic write that marks the segment done.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Counters { $($(#[$m])* pub $name: i64,)* }

        impl Counters {
            /// Every counter's name, in a fixed order (the adapters' column/attribute names).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];
            /// The values in [`Counters::NAMES`] order.
            pub fn values(&self) -> Vec<i64> { vec![$(self.$name),*] }
            /// Builds counters from values in [`Counters::NAMES`] order (missing ones are 0).
            pub fn from_values(v: &[i64]) -> Self {
                let mut it = v.iter().copied();
                Counters { $($name: it.next().unwrap_or(0),)* }
            }
            /// Adds `other` field by field.
            pub fn add(&mut self, other: &Counters) { $(self.$name += other.$name;)* }
        }
    };
}

counters! {
    /// Segments outstanding (created and not yet done).
    outstanding,
    /// Segments done.
    segments_done,
    /// Source objects and bytes in the job's range.
    source_objects, source_bytes,
    /// Destination objects and bytes in the job's range after the work.
    dest_objects, dest_bytes,
    /// Objects copied by this job.
    copied_objects, copied_bytes,
    /// Objects already identical in the destination, left alone.
    skipped_objects, skipped_bytes,
    /// Objects proven identical after the work (copied or skipped).
    verified_objects,
    /// Objects whose copy failed.
    failed_objects,
    /// Differences found by verification.
    missing, extra, size_differs, content_differs, unverifiable,
    /// Move: source objects deleted after their copy was verified, and ones kept because the
    /// source changed after it was copied.
    deleted_objects, deleted_bytes, kept_changed,
    /// Segments whose range could not be worked at all (its listing failed for good).
    segments_failed,
    /// Source entries that cannot be copied at all (see [`JobOptions::skip_uncopyable`]).
    uncopyable,
    /// Archived source objects not copied because they need a restore first (see
    /// [`JobOptions::skip_archived`]).
    needs_restore,
}

impl Counters {
    /// True when nothing failed, differs or is unproven. Uncopyable source entries and
    /// archived ones that need a restore count against it unless the job asked to skip
    /// them ([`JobOptions::skip_uncopyable`], [`JobOptions::skip_archived`]).
    pub fn all_verified(&self, options: &JobOptions) -> bool {
        (self.uncopyable == 0 || options.skip_uncopyable)
            && (self.needs_restore == 0 || options.skip_archived)
            && self.failed_objects == 0
            && self.missing == 0
            && self.extra == 0
            && self.size_differs == 0
            && self.content_differs == 0
            && self.unverifiable == 0
            && self.kept_changed == 0
            && self.segments_failed == 0
    }
    /// The terminal state these counters earn once nothing is outstanding.
    pub fn final_state(&self, options: &JobOptions) -> JobState {
        if self.all_verified(options) { JobState::Verified } else { JobState::Mismatch }
    }
}

/// A job as the job store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    pub state: JobState,
    pub counters: Counters,
    /// Why the job failed, when it did.
    pub message: Option<String>,
    /// Unix milliseconds.
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl JobRecord {
    /// The terminal state the job's counters earn once nothing is outstanding.
    pub fn final_state(&self) -> JobState {
        self.counters.final_state(&self.spec.options)
    }
}

/// The kind of a difference or failure found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueKind {
    /// In the source, not in the destination.
    Missing,
    /// In the destination, not in the source.
    Extra,
    SizeDiffers,
    ContentDiffers,
    /// Sizes match but the ETags are not comparable (one side uploaded in parts) and no
    /// common checksum exists: not claimed equal, not claimed different.
    Unverifiable,
    /// The copy failed for good (after retries).
    CopyFailed,
    /// Move: the source changed after its copy was verified, so it was not deleted.
    ChangedInSource,
    /// A whole range could not be worked (its listing failed for good).
    SegmentFailed,
    /// A source entry that cannot be an object (a file name that is not UTF-8, a symlinked
    /// directory, a reserved name): not copied. See `detail` for why.
    Uncopyable,
    /// The comparison itself failed for this key (a HEAD or checksum call refused): the key
    /// is not proven either way. See `detail`.
    CheckFailed,
    /// An archived source object that must be restored before it can be copied: not
    /// copied. See `detail` for its class and whether a restore was asked for.
    NeedsRestore,
}

/// One key's difference or failure, reported by key relative to the job's prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectIssue {
    pub key: String,
    pub kind: IssueKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ObjectEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<ObjectEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A segment as the job store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub id: String,
    pub range: KeyRange,
    pub done: bool,
    /// The child ranges handed on: recorded when it was done, or earlier, while it is
    /// still pending, when it was split ([`crate::jobstore::JobStore::split_segment`]).
    /// Empty before either.
    pub children: Vec<KeyRange>,
    /// What it added to the job's counters: once done, its page's tallies and
    /// `outstanding` = children created - 1; while pending, the children its split created
    /// (`outstanding` only), else zero. With the first segments, the outcomes of all the
    /// job's segments add up to its counters.
    pub outcome: Counters,
    /// Which worker did it, and when it started and finished (unix ms), once done.
    pub worker: Option<String>,
    pub started_ms: i64,
    pub finished_ms: i64,
    /// Move: the [`move_mark`]s of the source objects an attempt at this segment was about
    /// to delete (recorded before deleting), so a redone page still counts them.
    #[serde(default)]
    pub moved: Vec<String>,
}

impl SegmentRecord {
    /// Where a split pending segment's page ends: the start of its first child. The
    /// segment answers for `(range.start_after, split_end]` only; its children, already
    /// handed on, for the rest. `None` when it is done or was never split.
    pub fn split_end(&self) -> Option<&str> {
        match self.done {
            false => self.children.first().map(|c| c.start_after.as_str()),
            true => None,
        }
    }
}

/// The mark a move records before deleting a source object whose copy was verified: a
/// digest of its relative key and its destination copy's ETag. A page redone after the
/// delete finds the key only in the destination; the mark says it was moved by this
/// segment (and not an unrelated extra object), with that very content.
pub fn move_mark(rel_key: &str, dest_etag: &str) -> String {
    let mut h = Sha256::new();
    h.update(rel_key.as_bytes());
    h.update([0u8]);
    h.update(dest_etag.as_bytes());
    hex::encode(&h.finalize()[..12])
}

/// Everything one segment's work changes, applied by [`crate::jobstore::JobStore::complete_segment`]
/// atomically and exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCompletion {
    pub job: String,
    pub range: KeyRange,
    /// What the page adds to the job's counters; `outstanding` and `segments_done` are set
    /// by the store (`children - 1`, `+1`) and ignored here.
    pub delta: Counters,
    pub children: Vec<KeyRange>,
    /// Per-key findings; stored idempotently by (job, key, kind).
    pub issues: Vec<ObjectIssue>,
    pub worker: String,
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_ids_depend_on_the_range_only() {
        let a = KeyRange { start_after: "a".into(), end: Some("b".into()) };
        let b = KeyRange { start_after: "a".into(), end: None };
        assert_eq!(a.id(), a.clone().id());
        assert_ne!(a.id(), b.id());
        assert!(a.contains("a0") && !a.contains("a") && a.contains("b") && !a.contains("b0"));
        assert!(b.contains("zzz"));
    }

    #[test]
    fn write_settings_are_checked_before_any_work() {
        let spec = |o: JobOptions, dst: &str| JobSpec {
            id: "j".into(),
            source: Location::parse("s3://src-b").unwrap(),
            destination: Location::parse(dst).unwrap(),
            options: o,
        };
        let ok = JobOptions {
            storage_class: Some("GLACIER_IR".into()),
            sse: Some("aws:kms".into()),
            sse_kms_key_id: Some("alias/backup".into()),
            ..Default::default()
        };
        assert!(spec(ok.clone(), "s3://dst-b").validate().is_ok());
        assert_eq!(ok.write_options().storage_class.as_deref(), Some("GLACIER_IR"));
        let err = |o: JobOptions, dst: &str| spec(o, dst).validate().unwrap_err().to_string();
        assert!(
            err(JobOptions { storage_class: Some("COLD".into()), ..Default::default() }, "s3://dst-b")
                .contains("storage class")
        );
        assert!(err(JobOptions { sse: Some("kms".into()), ..Default::default() }, "s3://dst-b").contains("sse"));
        let key_alone = JobOptions { sse_kms_key_id: Some("k".into()), ..Default::default() };
        assert!(err(key_alone, "s3://dst-b").contains("needs sse"));
        assert!(err(ok, "/tmp/dir").contains("bytes only"));
    }

    #[test]
    fn job_states_and_controls_round_trip_and_only_running_or_paused_jobs_are_live() {
        for st in JobState::ALL {
            assert_eq!(JobState::parse(st.as_str()), Some(st));
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{}\"", st.as_str()));
        }
        let live: Vec<_> = JobState::ALL.into_iter().filter(|s| !s.is_terminal()).collect();
        assert_eq!(live, [JobState::Running, JobState::Paused]);
        for c in [JobControl::Pause, JobControl::Resume, JobControl::Cancel] {
            assert_eq!(JobControl::parse(c.as_str()), Some(c));
            let (from, to) = c.transition();
            assert!(from.iter().all(|s| !s.is_terminal()), "{c:?} never leaves a terminal state");
            assert!(!from.contains(&to));
        }
    }

    #[test]
    fn final_state_needs_every_object_proven() {
        let plain = JobOptions::default();
        let skip_uncopyable = JobOptions { skip_uncopyable: true, ..JobOptions::default() };
        let skip_both = JobOptions { skip_archived: true, ..skip_uncopyable.clone() };
        let mut c = Counters { verified_objects: 5, ..Default::default() };
        assert_eq!(c.final_state(&plain), JobState::Verified);
        c.uncopyable = 2;
        assert_eq!(c.final_state(&plain), JobState::Mismatch, "an uncopyable entry is a difference");
        assert_eq!(c.final_state(&skip_uncopyable), JobState::Verified, "unless the job asked to skip them");
        c.needs_restore = 1;
        assert_eq!(c.final_state(&skip_uncopyable), JobState::Mismatch, "an archived object is a difference");
        assert_eq!(c.final_state(&skip_both), JobState::Verified, "unless the job asked to skip archived ones");
        c.unverifiable = 1;
        assert_eq!(c.final_state(&skip_both), JobState::Mismatch);
        assert_eq!(Counters::from_values(&c.values()), c);
    }
}
