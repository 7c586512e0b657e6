//! One segment's work: list one page of the source range and the same keys in the
//! destination, copy what is missing or different, verify the page, and work out the
//! children. It never writes to the job store: it returns what the page changes, and for a
//! move what to delete, which the caller deletes ([`delete_verified`]) once it has recorded
//! their marks, then records the page atomically.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use shared::error::{RetryPolicy, with_retries};
use shared::faults::{AFTER_LISTING, MID_COPY, crash_point};
use shared::filter::KeyFilter;
use shared::keyrange::children_after_page;
use shared::model::{Counters, IssueKind, JobSpec, KeyRange, Mode, ObjectEntry, ObjectIssue, move_mark};
use shared::objstore::{Archive, Deleted, ListPage, ListRequest, ObjectStore, WriteOptions, is_archive_class};
use shared::{Error, Result};

use crate::compare::{Verdict, compare, settle};
use crate::copy::copy_object;
use crate::limit::{CopyLimit, Queued};

/// Destination listing page size (the service maximum).
const DEST_PAGE: usize = 1000;

/// Requests made by this process, for reports and for tests that prove work is not redone.
#[derive(Debug, Default)]
pub struct RunStats {
    pub list_calls: AtomicU64,
    pub head_calls: AtomicU64,
    pub copies: AtomicU64,
    pub pages: AtomicU64,
    /// Pages whose children this process handed on before their copies (splits recorded).
    pub splits: AtomicU64,
    /// Attempts abandoned because their lease was lost.
    pub leases_lost: AtomicU64,
}

impl RunStats {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one page needs: the job, its two stores, the worker's adaptive copy limit.
pub struct PageCtx<'a> {
    pub spec: &'a JobSpec,
    pub src: &'a dyn ObjectStore,
    pub dst: &'a dyn ObjectStore,
    pub copies: &'a CopyLimit,
    pub fanout: usize,
    pub stats: &'a RunStats,
    /// Move: where to read the marks earlier attempts at this segment recorded before
    /// deleting sources (see [`shared::model::move_mark`]). Read after the listing, so an
    /// attempt running at the same time that deleted a key before this one listed has
    /// marked it before: the marks are written before the deletes.
    pub jobs: &'a dyn shared::jobstore::JobStore,
    /// The page may be copied without listing the destination first: no attempt has worked
    /// this range, and the job found its destination empty
    /// ([`shared::wire::SegmentMessage::copy_blind`]). Clones only. The destination is
    /// listed after the copies all the same, and the page verified against that listing.
    pub copy_blind: bool,
}

/// What one page changes: the job's tallies, the children, the findings.
#[derive(Debug, Default)]
pub struct PageResult {
    pub delta: Counters,
    pub children: Vec<KeyRange>,
    pub issues: Vec<ObjectIssue>,
    /// Move: the verified source entries to delete, with their marks. The caller records
    /// the marks, then deletes ([`delete_verified`]), then records the page.
    pub to_delete: Vec<(ObjectEntry, String)>,
}

/// A page listed and planned, nothing copied yet: the point at which the worker may hand
/// its children on ([`Planned::work`]) before [`finish_page`] does the rest.
pub struct Planned {
    /// The source entries the page copies and verifies (relative keys).
    src: Vec<(String, ObjectEntry)>,
    /// The destination as listed before copying (empty for a blind copy).
    dst: BTreeMap<String, ObjectEntry>,
    /// Indices in `src` to copy.
    todo: Vec<usize>,
    /// (key, destination ETag) pairs proven equal by checksums while planning.
    proven: HashSet<(String, Option<String>)>,
    /// The keys this page answers for.
    covered: KeyRange,
    /// Move: marks an earlier attempt recorded before deleting.
    moved: HashSet<String>,
    blind: bool,
    /// A move: each verified source is deleted after the copies.
    deletes: bool,
    out: PageResult,
}

impl Planned {
    /// The ranges after the page's own, to hand on: empty when the page covers its range.
    pub fn children(&self) -> &[KeyRange] {
        &self.out.children
    }
    /// Requests the rest of the page will make, at least: copies, and a move's deletes. A
    /// page with none finishes about as fast as its children could be handed on.
    pub fn work(&self) -> usize {
        self.todo.len() + if self.deletes { self.src.len() } else { 0 }
    }
    /// The copies the page will make.
    pub fn copies(&self) -> usize {
        self.todo.len()
    }
}

/// Lists one page of `range` (with `held`: the whole of `(range.start_after, held]`, the end
/// an earlier split fixed, however many pages), the same keys in the destination, and
/// plans the copies. Errors are listing failures: the page is redone later, or the segment
/// recorded as failed.
pub async fn plan_page(ctx: &PageCtx<'_>, range: &KeyRange, held: Option<&str>) -> Result<Planned> {
    RunStats::bump(&ctx.stats.pages);
    let src_loc = &ctx.spec.source;
    let page = match held {
        Some(end) => list_source_held(ctx, range, end).await?,
        None => list_source(ctx, range).await?,
    };
    let mut out = PageResult::default();
    let rel = |full: &str| src_loc.rel_key(full).map(str::to_string);
    let filter = KeyFilter::new(&ctx.spec.options.filters);
    // The page's own keys, copyable or not, filtered out or not, in key order: they place
    // the split points of a truncated page.
    let mut page_keys: Vec<String> = page
        .entries
        .iter()
        .map(|e| &e.key)
        .chain(page.skipped.iter().map(|u| &u.key))
        .filter_map(|k| rel(k))
        .filter(|k| !k.is_empty())
        .collect();
    page_keys.sort_unstable();
    for u in &page.skipped {
        let key = rel(&u.key).unwrap_or_else(|| u.key.clone());
        if !filter.admits(&key) {
            continue;
        }
        out.delta.uncopyable += 1;
        out.issues.push(issue(&key, IssueKind::Uncopyable, None, None, Some(u.reason.clone())));
    }
    let mut src: Vec<(String, ObjectEntry)> = page
        .entries
        .into_iter()
        .filter_map(|e| rel(&e.key).map(|k| (k, e)))
        .filter(|(k, _)| !k.is_empty() && filter.admits(k))
        .collect();
    // The keys this page answers for: up to its last key when truncated, else the range.
    let last = match page.truncated {
        true => Some(rel(page.last_key.as_deref().unwrap_or_default()).ok_or_else(|| {
            Error::transient(format!("listing returned a key outside {src_loc}: {:?}", page.last_key))
        })?),
        false => None,
    };
    let covered = match (&last, held) {
        (Some(l), _) => KeyRange { start_after: range.start_after.clone(), end: Some(l.clone()) },
        (None, Some(end)) => KeyRange { start_after: range.start_after.clone(), end: Some(end.to_string()) },
        (None, None) => range.clone(),
    };
    // Worked out now, so the page's keys are not held while it copies.
    out.children = match last {
        Some(_) => {
            let keys: Vec<&str> = page_keys.iter().map(String::as_str).collect();
            // Never empty: `last` itself is one of them.
            children_after_page(range, &keys, ctx.fanout)
                .ok_or_else(|| Error::transient("a truncated page with no keys; listing again"))?
        }
        None => Vec::new(),
    };
    drop(page_keys);
    // A blind copy has nothing to skip: the destination is listed once, after the copies.
    let blind = ctx.copy_blind && held.is_none() && ctx.spec.options.mode == Mode::Clone;
    let mut dst = match blind {
        true => BTreeMap::new(),
        false => list_dest(ctx, &covered, &filter).await?,
    };
    crash_point(AFTER_LISTING);
    let moved = match ctx.spec.options.mode {
        Mode::Move => ctx.jobs.segment(&ctx.spec.id, range).await?.map(|r| r.moved).unwrap_or_default(),
        _ => Vec::new(),
    };
    let moved: HashSet<String> = moved.into_iter().collect();

    for (_, e) in &src {
        out.delta.source_objects += 1;
        out.delta.source_bytes += e.size as i64;
    }
    let mut proven = HashSet::new();
    let todo = match ctx.spec.options.mode {
        Mode::VerifyOnly => Vec::new(),
        _ => plan_copies(ctx, &mut src, &mut dst, &mut proven).await,
    };
    let deletes = ctx.spec.options.mode == Mode::Move;
    Ok(Planned { src, dst, todo, proven, covered, moved, blind, deletes, out })
}

/// The rest of a planned page: copies, verification, and for a move what to delete.
/// Per-object failures are findings in the result, and the rest of the page goes on.
///
/// `queued` counts the page's planned copies ([`Planned::copies`]) in the worker's work on
/// hand; each is counted down as it finishes.
pub async fn finish_page(ctx: &PageCtx<'_>, planned: Planned, queued: &Queued<'_>) -> Result<PageResult> {
    let Planned { src, mut dst, todo, proven, covered, moved, blind, deletes: _, mut out } = planned;
    let filter = KeyFilter::new(&ctx.spec.options.filters);
    let mut copied = HashSet::new();
    if ctx.spec.options.mode != Mode::VerifyOnly {
        copied = copy_all(ctx, &src, &todo, &mut out, queued).await;
        if !copied.is_empty() {
            // Durable before anything is recorded or deleted: one flush for the page's
            // writes (a local directory's syncfs; nothing on S3).
            with_retries(|| ctx.dst.sync()).await?;
        }
        if !copied.is_empty() || blind {
            dst = list_dest(ctx, &covered, &filter).await?;
        }
    }
    let verified = classify(ctx, &src, &mut dst, (&copied, &proven), &moved, &mut out).await;
    if ctx.spec.options.mode == Mode::Move {
        out.to_delete = verified;
    }
    Ok(out)
}

/// A source page with the entries' keys in range, as listed, plus its last key.
struct SourcePage {
    entries: Vec<ObjectEntry>,
    skipped: Vec<shared::objstore::Uncopyable>,
    truncated: bool,
    last_key: Option<String>,
}

/// Lists one page of the source range. A page that says "truncated" but holds no key gives
/// no place to continue from: it is listed again (with backoff), never taken as the end.
async fn list_source(ctx: &PageCtx<'_>, range: &KeyRange) -> Result<SourcePage> {
    let loc = &ctx.spec.source;
    let req = ListRequest {
        prefix: loc.prefix.clone(),
        start_after: loc.full_key(&range.start_after),
        end: range.end.as_deref().map(|e| loc.full_key(e)),
        max_keys: ctx.spec.options.page_size as usize,
    };
    let page: ListPage = with_retries(|| async {
        RunStats::bump(&ctx.stats.list_calls);
        let page = ctx.src.list(&req).await?;
        if page.truncated && page.last_key().is_none() {
            return Err(Error::transient(format!(
                "{} returned an empty page marked truncated after {:?}",
                ctx.src.describe(),
                req.start_after
            )));
        }
        Ok(page)
    })
    .await?;
    let last_key = page.last_key().map(str::to_string);
    Ok(SourcePage { entries: page.entries, skipped: page.skipped, truncated: page.truncated, last_key })
}

/// Every source key in `(range.start_after, end]`, however many pages that takes: a split
/// segment's page, held to the end its split recorded (keys written since may make it
/// longer than one page; they are this page's to copy, since its children start after it).
async fn list_source_held(ctx: &PageCtx<'_>, range: &KeyRange, end: &str) -> Result<SourcePage> {
    let held = KeyRange { start_after: range.start_after.clone(), end: Some(end.to_string()) };
    let mut all = SourcePage { entries: Vec::new(), skipped: Vec::new(), truncated: false, last_key: None };
    let mut from = held.clone();
    loop {
        let page = list_source(ctx, &from).await?;
        all.entries.extend(page.entries);
        all.skipped.extend(page.skipped);
        let Some(last) = page.last_key.filter(|_| page.truncated) else { return Ok(all) };
        match ctx.spec.source.rel_key(&last) {
            // Listings run forward: anything else would list the same keys forever.
            Some(l) if l > from.start_after.as_str() => from.start_after = l.to_string(),
            _ => return Err(Error::transient(format!("listing went back or outside the source to {last:?}"))),
        }
    }
}

/// Every destination object in `range` that `filter` keeps (relative keys), however many
/// pages that takes.
async fn list_dest(ctx: &PageCtx<'_>, range: &KeyRange, filter: &KeyFilter) -> Result<BTreeMap<String, ObjectEntry>> {
    let loc = &ctx.spec.destination;
    let mut req = ListRequest {
        prefix: loc.prefix.clone(),
        start_after: loc.full_key(&range.start_after),
        end: range.end.as_deref().map(|e| loc.full_key(e)),
        max_keys: DEST_PAGE,
    };
    let mut out = BTreeMap::new();
    loop {
        RunStats::bump(&ctx.stats.list_calls);
        let page = with_retries(|| ctx.dst.list(&req)).await?;
        // After skipped entries too: a page may end with one (or hold nothing else).
        let last = page.last_key().map(str::to_string);
        for e in page.entries {
            if let Some(k) = loc.rel_key(&e.key).filter(|k| !k.is_empty() && filter.admits(k)) {
                out.insert(k.to_string(), e);
            }
        }
        match (page.truncated, last) {
            (true, Some(l)) => req.start_after = l,
            _ => return Ok(out),
        }
    }
}

/// Compares one pair, resolving missing ETags with HEADs and differing ETags with both
/// sides' checksums (one request per side, counted in `head_calls`). May refresh the
/// entries it HEADs.
async fn verdict(ctx: &PageCtx<'_>, s: &mut ObjectEntry, d: &mut ObjectEntry) -> Result<Verdict> {
    let size_only = ctx.spec.options.size_only;
    let mut v = compare(s, d, size_only);
    if v == Verdict::NeedsHead {
        for (store, e) in [(ctx.src, &mut *s), (ctx.dst, &mut *d)] {
            if e.etag.is_none() {
                RunStats::bump(&ctx.stats.head_calls);
                if let Some(h) = with_retries(|| store.head(&e.key)).await? {
                    *e = h;
                }
            }
        }
        v = match compare(s, d, size_only) {
            Verdict::NeedsHead => Verdict::Unverifiable("no ETag on either side"),
            v => v,
        };
    }
    if v == Verdict::NeedsChecksums {
        let mut sums = Vec::with_capacity(2);
        for (store, e) in [(ctx.src, &*s), (ctx.dst, &*d)] {
            RunStats::bump(&ctx.stats.head_calls);
            sums.push(with_retries(|| store.checksums(&e.key)).await?);
        }
        v = settle(s, d, &sums[0], &sums[1]);
    }
    Ok(v)
}

/// The source entries to copy (their indices in `src`): missing or different in the
/// destination. An unverifiable pair is copied again only server-side, where the copy keeps
/// the source's ETag form and checksum. Source entries keep what a HEAD learnt about them,
/// so they are not asked twice; pairs proven equal by checksums go in `proven` (key,
/// destination ETag), so verification does not ask again. A pair whose comparison fails (a
/// HEAD refused) is left alone here: verification reports it.
async fn plan_copies(
    ctx: &PageCtx<'_>,
    src: &mut [(String, ObjectEntry)],
    dst: &mut BTreeMap<String, ObjectEntry>,
    proven: &mut HashSet<(String, Option<String>)>,
) -> Vec<usize> {
    let server_side =
        matches!((ctx.src.copy_source(), ctx.dst.copy_source()), (Some(a), Some(b)) if a.endpoint == b.endpoint);
    let mut todo = Vec::new();
    for (i, (k, s)) in src.iter_mut().enumerate() {
        let copy = match dst.get_mut(k.as_str()) {
            None => true,
            Some(d) => match verdict(ctx, s, d).await {
                Ok(Verdict::Equal) => {
                    if s.etag != d.etag {
                        proven.insert((k.clone(), d.etag.clone()));
                    }
                    false
                }
                Err(_) => false,
                Ok(Verdict::Unverifiable(_)) => server_side,
                Ok(_) => true,
            },
        };
        if copy {
            todo.push(i);
        }
    }
    todo
}

/// Copies the entries of `src` at the indices `todo`, their attempts within the worker's
/// adaptive copy limit (throttled ones retried). Returns the keys copied.
///
/// A source listed in an archive class is asked first whether it is readable (one HEAD);
/// one that is not, or whose copy is refused as archived (Intelligent-Tiering's archive
/// tiers do not show in listings), is a "needs restore" finding, never a copy failure:
/// with [`JobOptions::restore_days`](shared::model::JobOptions) a restore is asked for.
async fn copy_all<'a>(
    ctx: &PageCtx<'_>,
    src: &'a [(String, ObjectEntry)],
    todo: &[usize],
    out: &mut PageResult,
    queued: &Queued<'_>,
) -> HashSet<&'a str> {
    let w = &ctx.spec.options.write_options();
    // Futures are made as slots free up, at most the worker's copy ceiling per page: the
    // copy limit admits no more at once anyway, and a page's thousand futures made up front
    // (each as large as a copy's whole state) were a quarter of the process's memory.
    let copies = todo.iter().map(|&i| copy_counted(ctx, &src[i].0, &src[i].1, w, queued));
    let results = at_most(ctx.copies.ceiling(), copies).await;
    let mut copied = HashSet::new();
    for (k, e, r) in results {
        match r {
            Ok(_) => {
                copied.insert(k.as_str());
                out.delta.copied_objects += 1;
                out.delta.copied_bytes += e.size as i64;
            }
            Err(Error::Archived(detail)) => {
                out.delta.needs_restore += 1;
                out.issues.push(issue(k, IssueKind::NeedsRestore, Some(e.clone()), None, Some(detail)));
            }
            Err(err) => {
                tracing::warn!(key = %k, error = %err, "copy failed");
                out.delta.failed_objects += 1;
                out.issues.push(issue(k, IssueKind::CopyFailed, Some(e.clone()), None, Some(err.to_string())));
            }
        }
    }
    copied
}

/// [`copy_one`], counted down in the worker's work on hand when it ends.
async fn copy_counted<'a>(
    ctx: &PageCtx<'_>,
    k: &'a String,
    e: &'a ObjectEntry,
    w: &WriteOptions,
    queued: &Queued<'_>,
) -> (&'a String, &'a ObjectEntry, Result<()>) {
    let r = copy_one(ctx, k, e, w).await;
    queued.done();
    r
}

/// One object of [`copy_all`]: its archive state first when its class may hide one, then
/// the copy.
async fn copy_one<'a>(
    ctx: &PageCtx<'_>,
    k: &'a String,
    e: &'a ObjectEntry,
    w: &WriteOptions,
) -> (&'a String, &'a ObjectEntry, Result<()>) {
    if is_archive_class(e.storage_class.as_deref()) {
        match with_retries(|| ctx.src.archive(&e.key)).await {
            Ok(Archive::Readable) => {}
            Ok(Archive::Archived(class)) => return (k, e, Err(needs_restore(ctx, e, &class, false).await)),
            Ok(Archive::Restoring(class)) => return (k, e, Err(needs_restore(ctx, e, &class, true).await)),
            Err(err) => return (k, e, Err(err)),
        }
    }
    RunStats::bump(&ctx.stats.copies);
    let r = match copy_object(ctx.src, ctx.dst, e, &ctx.spec.destination.full_key(k), w, ctx.copies).await {
        Err(Error::Archived(_)) => {
            let class = e.storage_class.as_deref().unwrap_or("an archive tier");
            Err(needs_restore(ctx, e, class, false).await)
        }
        r => r.map(|_| ()),
    };
    if r.is_ok() {
        crash_point(MID_COPY);
    }
    (k, e, r)
}

/// Runs the futures `futs` yields, at most `cap` at once, each made only when a slot is
/// free; their outputs, in no promised order.
///
/// `cap` lanes each take the next future when their last one is done, and run it in place:
/// a page's copies reuse the lanes' memory rather than allocating a task for each (a copy's
/// future is over a kilobyte, and a page makes a thousand).
async fn at_most<F: Future>(cap: usize, futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futs = std::sync::Mutex::new(futs);
    let next = || futs.lock().unwrap_or_else(|p| p.into_inner()).next();
    let lanes: FuturesUnordered<_> = (0..cap.max(1))
        .map(|_| async {
            let mut out = Vec::new();
            while let Some(f) = next() {
                out.push(f.await);
            }
            out
        })
        .collect();
    lanes.concat().await
}

/// The [`Error::Archived`] finding for archived source `e` (in `class`), after asking for
/// its restore when the job says so and none is running. A refused restore is in the
/// finding's detail: the object still needs one.
async fn needs_restore(ctx: &PageCtx<'_>, e: &ObjectEntry, class: &str, restoring: bool) -> Error {
    let detail = match (restoring, ctx.spec.options.restore_days) {
        (true, _) => "a restore is in progress: run the job again once it is done".to_string(),
        (false, None) => "restore it (RestoreObject, or --restore DAYS), or skip it with --skip-archived".to_string(),
        (false, Some(days)) => match with_retries(|| ctx.src.restore(&e.key, days)).await {
            Ok(()) => format!("restore requested for {days} days: run the job again once it is done"),
            Err(err) => format!("its restore was refused: {err}"),
        },
    };
    tracing::info!(key = %e.key, class, detail, "archived source: needs restore");
    Error::Archived(format!("archived ({class}): {detail}"))
}

/// Classifies every key of the page after the work and tallies it: `copied` keys, and
/// `proven` (key, destination ETag) pairs that planning proved equal by checksums and were
/// not written since. Returns the source entries proven identical in the destination, each
/// with its [`move_mark`].
async fn classify(
    ctx: &PageCtx<'_>,
    src: &[(String, ObjectEntry)],
    dst: &mut BTreeMap<String, ObjectEntry>,
    (copied, proven): (&HashSet<&str>, &HashSet<(String, Option<String>)>),
    moved: &HashSet<String>,
    out: &mut PageResult,
) -> Vec<(ObjectEntry, String)> {
    // Keys whose copy was attempted and failed, or not attempted because they need a
    // restore: their finding is already recorded, so they are not missing or different too.
    let copied_failed: HashSet<String> = out
        .issues
        .iter()
        .filter(|i| matches!(i.kind, IssueKind::CopyFailed | IssueKind::NeedsRestore))
        .map(|i| i.key.clone())
        .collect();
    let mut verified = Vec::new();
    for (k, s) in src {
        let Some(mut d) = dst.remove(k) else {
            if !copied_failed.contains(k) {
                out.delta.missing += 1;
                out.issues.push(issue(k, IssueKind::Missing, Some(s.clone()), None, None));
            }
            continue;
        };
        out.delta.dest_objects += 1;
        out.delta.dest_bytes += d.size as i64;
        let mut s = s.clone();
        let mut detail = None;
        let known = proven.contains(&(k.clone(), d.etag.clone())) && !copied.contains(k.as_str());
        let v = if known { Ok(Verdict::Equal) } else { verdict(ctx, &mut s, &mut d).await };
        let kind = match v {
            Err(e) => {
                tracing::warn!(key = %k, error = %e, "comparison failed");
                detail = Some(format!("could not compare: {e}"));
                IssueKind::CheckFailed
            }
            Ok(Verdict::Equal) => {
                out.delta.verified_objects += 1;
                if !copied.contains(k.as_str()) {
                    out.delta.skipped_objects += 1;
                    out.delta.skipped_bytes += s.size as i64;
                }
                let mark = move_mark(k, d.etag.as_deref().unwrap_or_default());
                verified.push((s, mark));
                continue;
            }
            Ok(Verdict::SizeDiffers) => IssueKind::SizeDiffers,
            Ok(Verdict::ContentDiffers) => IssueKind::ContentDiffers,
            Ok(Verdict::Unverifiable(_) | Verdict::NeedsHead | Verdict::NeedsChecksums) => IssueKind::Unverifiable,
        };
        if copied_failed.contains(k) {
            continue;
        }
        match kind {
            IssueKind::SizeDiffers => out.delta.size_differs += 1,
            IssueKind::ContentDiffers => out.delta.content_differs += 1,
            _ => out.delta.unverifiable += 1,
        }
        out.issues.push(issue(k, kind, Some(s), Some(d), detail));
    }
    tally_destination_only(ctx, std::mem::take(dst), moved, out);
    verified
}

/// Keys that exist only in the destination: extra, except in a move, where a key an
/// earlier attempt at this segment marked before deleting its source was moved by this job
/// (the attempt crashed before recording the page) and counts as a source object verified,
/// skipped and deleted, exactly once, as if that attempt had recorded it.
fn tally_destination_only(
    ctx: &PageCtx<'_>,
    dst: BTreeMap<String, ObjectEntry>,
    moved: &HashSet<String>,
    out: &mut PageResult,
) {
    for (k, d) in dst {
        out.delta.dest_objects += 1;
        out.delta.dest_bytes += d.size as i64;
        if ctx.spec.options.mode != Mode::Move {
            out.delta.extra += 1;
            out.issues.push(issue(&k, IssueKind::Extra, None, Some(d), None));
        } else if d.etag.as_deref().is_some_and(|e| moved.contains(&move_mark(&k, e))) {
            let size = d.size as i64;
            let c = &mut out.delta;
            (c.source_objects, c.source_bytes, c.verified_objects) =
                (c.source_objects + 1, c.source_bytes + size, c.verified_objects + 1);
            (c.skipped_objects, c.skipped_bytes) = (c.skipped_objects + 1, c.skipped_bytes + size);
            (c.deleted_objects, c.deleted_bytes) = (c.deleted_objects + 1, c.deleted_bytes + size);
        }
    }
}

/// Move: deletes each verified source object, conditionally on the ETag it was verified
/// with, so a source changed since is kept and reported. The deletes share the copy limit.
pub async fn delete_verified(ctx: &PageCtx<'_>, verified: &[(ObjectEntry, String)], out: &mut PageResult) {
    let policy = RetryPolicy::current();
    // As copies: futures made as slots free up (see `copy_all`).
    let deletes = verified.iter().map(|(e, _)| delete_one(ctx, &policy, e));
    let results = at_most(ctx.copies.ceiling(), deletes).await;
    for (e, r) in results {
        let rel = ctx.spec.source.rel_key(&e.key).unwrap_or(&e.key).to_string();
        match r {
            // Already gone: deleted by this attempt's earlier try whose answer was lost, or
            // by another attempt at this segment (a duplicate delivery) that verified the
            // same copy. Either way the source no longer holds it and the destination holds
            // its verified copy; only one attempt's completion is recorded, so it counts once.
            Ok(Deleted::Yes | Deleted::Absent) => {
                out.delta.deleted_objects += 1;
                out.delta.deleted_bytes += e.size as i64;
            }
            Ok(Deleted::Changed) => {
                out.delta.kept_changed += 1;
                let detail = "the source changed after its copy was verified; it was not deleted";
                out.issues.push(issue(&rel, IssueKind::ChangedInSource, Some(e.clone()), None, Some(detail.into())));
            }
            Err(err) => {
                tracing::warn!(key = %rel, error = %err, "delete after verified copy failed; source kept");
                out.delta.kept_changed += 1;
                out.issues.push(issue(&rel, IssueKind::ChangedInSource, Some(e.clone()), None, Some(err.to_string())));
            }
        }
    }
}

/// One delete of [`delete_verified`], conditional on the ETag the copy was verified with.
async fn delete_one<'a>(
    ctx: &PageCtx<'_>,
    policy: &RetryPolicy,
    e: &'a ObjectEntry,
) -> (&'a ObjectEntry, Result<Deleted>) {
    let Some(etag) = e.etag.as_deref() else {
        // Verified by size alone: never delete what was not proven identical.
        return (e, Err(shared::Error::Invalid("no ETag to delete on; kept".into())));
    };
    (e, ctx.copies.run(policy, || ctx.src.delete(&e.key, Some(etag))).await)
}

fn issue(
    key: &str,
    kind: IssueKind,
    source: Option<ObjectEntry>,
    destination: Option<ObjectEntry>,
    detail: Option<String>,
) -> ObjectIssue {
    ObjectIssue { key: key.to_string(), kind, source, destination, detail }
}

#[cfg(test)]
mod tests {
    use super::at_most;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `at_most` makes a future only when fewer than `cap` are alive, so a page's memory
    /// follows the copy ceiling, not its key count; and it runs every one.
    #[tokio::test]
    async fn at_most_keeps_no_more_than_cap_futures_alive_and_runs_them_all() {
        for (n, cap) in [(1000, 64), (10, 64), (5, 1), (0, 8), (7, 0)] {
            let (alive, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let futs = (0..n).map(|i| {
                let now = alive.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let alive = &alive;
                async move {
                    tokio::task::yield_now().await;
                    alive.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            });
            let mut out = at_most(cap, futs).await;
            out.sort_unstable();
            assert_eq!(out, (0..n).collect::<Vec<_>>(), "n {n} cap {cap}: every future ran once");
            let most = peak.load(Ordering::SeqCst);
            assert!(most <= cap.max(1), "n {n} cap {cap}: {most} alive at once");
            if n >= cap && cap > 1 {
                assert_eq!(most, cap, "n {n} cap {cap}: the cap is used");
            }
        }
    }
}
