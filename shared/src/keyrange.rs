//! Splitting a key range that has not been listed yet.
//!
//! When a segment's page comes back truncated, the rest of its range `(last, end]` is handed
//! on as children that together cover it exactly once. Bisecting the whole key space (the
//! classic approach) spends dozens of rounds finding where the keys are when they are packed
//! into a corner of it (`logs/2024/...`), one sequential page per round. Instead the split
//! points are *extrapolated* from the page just listed:
//!
//! - the page's characters form an alphabet (for `flat/000123` keys: `/`, `0`-`9`, `a`, `f`,
//!   `l`, `t`), and each key is read as a number whose digits are ranks in that alphabet, so
//!   arithmetic on keys behaves like counting in the keys' own notation;
//! - the page spanned `span = last - first`; the next boundaries are placed at
//!   `last + 6 * span * 4^j` (j = 0, 1, ...), and a tail child takes whatever lies beyond;
//!   the first child spans six pages' widths, not one, so that pages come back full.
//!
//! So a flat prefix of a million keys fans out to every worker within a few rounds, and a
//! sparse one costs a few empty children (one list call each). Correctness never depends on
//! the guess: the children always tile `(last, end]` exactly, which the property tests check
//! for arbitrary UTF-8 keys and split decisions. Every boundary is made of characters seen in
//! real keys, so it is valid UTF-8.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::model::KeyRange;

/// Digits kept for the arithmetic: far more than any useful boundary needs.
const MAX_DIGITS: usize = 1100;

/// The first child spans this many pages' widths. A child one page wide holds about a
/// page of keys, give or take: often a full page and a page of a handful, two list calls
/// (four with the destination's) for little more than one page of work. Wider children
/// are listed as several full pages and one partial. How wide is a trade: the benchmark's
/// shapes take 1.5-1.75 pages per 1,000 keys at 1 page and 1.2-1.6 at 6 (4 was worse on
/// the many-prefix shape, whose ranges then held exactly 3 or 4 pages' keys: S3 cannot
/// tell a range's last full page from a truncated one, so one more call follows), while
/// a flat prefix takes one more round to fan out (the tests below).
const FIRST_CHILD_PAGES: usize = 6;

/// The children of `range` after a truncated page whose keys (relative, in key order,
/// at least one, all inside `range`) were `page`.
///
/// Guarantee: the returned ranges are disjoint, in key order, and their union is exactly
/// `(last, range.end]` where `last` is the page's last key. At most `fanout` children are
/// returned (at least one). They always pass [`check_children`].
///
/// `None` for an empty page: a truncated page with no key says nothing about where the rest
/// of the range starts, so the caller must list again, never complete the segment.
pub fn children_after_page(range: &KeyRange, page: &[&str], fanout: usize) -> Option<Vec<KeyRange>> {
    let (first, last) = (page.first()?, page.last()?);
    let mut bounds: Vec<String> = Vec::new();
    let mut lower = last.to_string();
    for point in extrapolate(page, first, last, fanout.saturating_sub(1)) {
        let below_end = range.end.as_deref().is_none_or(|e| point.as_str() < e);
        if point > lower && below_end {
            lower = point.clone();
            bounds.push(point);
        }
    }
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut start = last.to_string();
    for b in bounds {
        out.push(KeyRange { start_after: start, end: Some(b.clone()) });
        start = b;
    }
    out.push(KeyRange { start_after: start, end: range.end.clone() });
    Some(out)
}

/// The completion invariant, checked by every job store before it records a segment done:
/// the children tile `(x, range.end]` exactly, for some `x` strictly inside the range (the
/// page's last key), in key order with no gap, overlap or empty child. So the rest of a
/// range is never dropped (no children while keys remain is a different, explicit
/// completion: none at all), and a segment never hands on itself (a child equal to its
/// parent would be "already recorded" and the rest of its range lost).
///
/// No children is valid: the page covered the whole range.
pub fn check_children(range: &KeyRange, children: &[KeyRange]) -> Result<()> {
    let (Some(first), Some(last)) = (children.first(), children.last()) else {
        return Ok(());
    };
    let bad = |why: &str| {
        Err(Error::invalid(format!("children of segment ({:?}, {:?}] refused: {why}", range.start_after, range.end)))
    };
    if !range.contains(&first.start_after) {
        return bad("the first child must start strictly inside the parent (after the page's last key)");
    }
    if last.end != range.end {
        return bad("the last child must end where the parent ends");
    }
    if children.windows(2).any(|w| w[0].end.as_deref() != Some(w[1].start_after.as_str())) {
        return bad("children must be adjacent, in key order");
    }
    if children.iter().any(|c| c.end.as_deref().is_some_and(|e| e <= c.start_after.as_str())) {
        return bad("a child is empty");
    }
    Ok(())
}

/// The split invariant ([`crate::jobstore::JobStore::split_segment`]): the completion
/// invariant ([`check_children`]), and at least one child, since a split hands the rest
/// of its range on.
pub fn check_split(range: &KeyRange, children: &[KeyRange]) -> Result<()> {
    if children.is_empty() {
        return Err(Error::invalid(format!(
            "split of segment ({:?}, {:?}] refused: no children",
            range.start_after, range.end
        )));
    }
    check_children(range, children)
}

/// The page's keys read as numbers over the page's own alphabet.
struct Numbering {
    alphabet: Vec<char>,
    len: usize,
}

impl Numbering {
    fn new(page: &[&str], first: &str, last: &str) -> Self {
        let set: BTreeSet<char> = page.iter().flat_map(|k| k.chars()).collect();
        let len = (first.chars().count().max(last.chars().count()) + 1).min(MAX_DIGITS);
        Numbering { alphabet: set.into_iter().collect(), len }
    }
    /// Base of the digits: one per character, plus 0 for "the key ended here".
    fn base(&self) -> u64 {
        self.alphabet.len() as u64 + 1
    }
    fn digits(&self, key: &str) -> Vec<u64> {
        let mut v: Vec<u64> =
            key.chars().take(self.len).map(|c| self.alphabet.binary_search(&c).map_or(0, |i| i as u64 + 1)).collect();
        v.resize(self.len, 0);
        v
    }
    /// The key these digits spell, up to the first 0 digit ("ended here").
    fn key(&self, d: &[u64]) -> Option<String> {
        let s: String = d.iter().take_while(|&&x| x != 0).map(|&x| self.alphabet[x as usize - 1]).collect();
        (!s.is_empty()).then_some(s)
    }
}

/// Up to `n` increasing boundaries above `last`, at `last + span * FIRST_CHILD_PAGES * 4^j`
/// for j = 0..n.
fn extrapolate(page: &[&str], first: &str, last: &str, n: usize) -> Vec<String> {
    if n == 0 || first >= last {
        return Vec::new();
    }
    let num = Numbering::new(page, first, last);
    let base = num.base();
    let b = num.digits(last);
    let Some(span) = sub(&b, &num.digits(first), base) else {
        return Vec::new();
    };
    if span.iter().all(|&d| d == 0) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut step = span.clone();
    for _ in 1..FIRST_CHILD_PAGES {
        match add(&step, &span, base) {
            Some(s) => step = s,
            None => break,
        }
    }
    for _ in 0..n {
        let Some(p) = add(&b, &step, base) else { break };
        out.extend(num.key(&p));
        let Some(twice) = add(&step, &step, base) else {
            break;
        };
        let Some(four) = add(&twice, &twice, base) else {
            break;
        };
        step = four;
    }
    out
}

/// `a - b` in `base`, or `None` when negative.
fn sub(a: &[u64], b: &[u64], base: u64) -> Option<Vec<u64>> {
    let mut out = vec![0; a.len()];
    let mut borrow = 0u64;
    for i in (0..a.len()).rev() {
        let (x, y) = (a[i], b[i] + borrow);
        if x >= y {
            out[i] = x - y;
            borrow = 0;
        } else {
            out[i] = x + base - y;
            borrow = 1;
        }
    }
    (borrow == 0).then_some(out)
}

/// `a + b` in `base`, or `None` on overflow past the first digit.
fn add(a: &[u64], b: &[u64], base: u64) -> Option<Vec<u64>> {
    let mut out = vec![0; a.len()];
    let mut carry = 0u64;
    for i in (0..a.len()).rev() {
        let s = a[i] + b[i] + carry;
        out[i] = s % base;
        carry = s / base;
    }
    (carry == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// Works a job over `keys` the way workers do: list at most `page` keys of a range, and
    /// when truncated hand on the rest as children. Returns every key listed, in listing
    /// order, and the number of rounds (the longest chain of segments).
    fn simulate(keys: &[String], page: usize, fanout: usize, lifo: bool) -> (Vec<String>, usize, usize) {
        let mut sorted = keys.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut work: VecDeque<(KeyRange, usize)> = VecDeque::from([(KeyRange::all(), 1)]);
        let (mut listed, mut rounds, mut segments) = (Vec::new(), 0, 0);
        while let Some((r, depth)) = if lifo { work.pop_back() } else { work.pop_front() } {
            segments += 1;
            rounds = rounds.max(depth);
            let lo = sorted.partition_point(|k| k.as_str() <= r.start_after.as_str());
            let hi = r.end.as_deref().map_or(sorted.len(), |e| sorted.partition_point(|k| k.as_str() <= e));
            let in_range = &sorted[lo..hi.max(lo)];
            // As S3Store: a page of a bounded range at S3's cap keeps one key back, to
            // learn whether the range goes on.
            let page = if r.end.is_some() && page == 1000 { 999 } else { page };
            let pg = &in_range[..in_range.len().min(page)];
            listed.extend(pg.iter().cloned());
            if in_range.len() > page {
                let page_keys: Vec<&str> = pg.iter().map(|k| k.as_str()).collect();
                let kids = children_after_page(&r, &page_keys, fanout).expect("a page with keys");
                assert!(kids.len() <= fanout.max(1));
                check_children(&r, &kids).expect("children pass the completion invariant");
                work.extend(kids.into_iter().map(|k| (k, depth + 1)));
            }
        }
        (listed, rounds, segments)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn segments_list_every_key_exactly_once(
            keys in proptest::collection::vec("\\PC{1,12}", 0..200),
            page in 1usize..40,
            fanout in 1usize..7,
            lifo in any::<bool>(),
        ) {
            let (mut listed, _, _) = simulate(&keys, page, fanout, lifo);
            let mut want = keys.clone();
            want.sort();
            want.dedup();
            listed.sort();
            prop_assert_eq!(listed, want);
        }

        #[test]
        fn children_tile_the_rest_of_the_range(
            a in "\\PC{0,10}", b in "\\PC{0,10}", end in proptest::option::of("\\PC{0,10}"),
            probes in proptest::collection::vec("\\PC{0,12}", 1..50),
            fanout in 1usize..8,
        ) {
            let (first, last) = if a <= b { (a, b) } else { (b, a) };
            let range = KeyRange { start_after: String::new(), end: end.clone() };
            prop_assume!(end.as_deref().is_none_or(|e| last.as_str() <= e));
            let kids = children_after_page(&range, &[first.as_str(), last.as_str()], fanout).unwrap();
            if range.contains(&last) {
                prop_assert!(check_children(&range, &kids).is_ok(), "{:?}", kids);
            }
            for k in probes {
                let n = kids.iter().filter(|c| c.contains(&k)).count();
                let want = usize::from(k > last && end.as_deref().is_none_or(|e| k.as_str() <= e));
                prop_assert_eq!(n, want, "key {:?} in {} children of {:?}", k, n, kids);
            }
        }
    }

    #[test]
    fn an_empty_page_has_no_children_and_bad_tilings_are_refused() {
        let r = KeyRange { start_after: "a".into(), end: Some("m".into()) };
        assert_eq!(children_after_page(&r, &[], 5), None, "an empty page must be listed again");
        let k = |s: &str, e: Option<&str>| KeyRange { start_after: s.into(), end: e.map(Into::into) };
        assert!(check_children(&r, &[]).is_ok(), "the page covered the range");
        assert!(check_children(&r, &[k("c", Some("f")), k("f", Some("m"))]).is_ok());
        for bad in [
            vec![r.clone()],                            // the parent itself: the rest would be lost
            vec![k("c", Some("f"))],                    // stops short of the end
            vec![k("c", Some("f")), k("g", Some("m"))], // a gap
            vec![k("c", Some("h")), k("f", Some("m"))], // an overlap
            vec![k("c", Some("c")), k("c", Some("m"))], // an empty child
            vec![k("n", Some("m"))],                    // starts outside the parent
            vec![k("c", None)],                         // runs past the parent
        ] {
            assert!(matches!(check_children(&r, &bad), Err(Error::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn a_flat_prefix_fans_out_within_a_few_rounds() {
        let keys: Vec<String> = (1..=50_000).map(|i| format!("flat/{i:06}")).collect();
        let (listed, rounds, segments) = simulate(&keys, 1000, 5, false);
        assert_eq!(listed.len(), 50_000);
        // A single chain would need 50 rounds; extrapolated splits need far fewer, and do not
        // waste many calls on empty ranges.
        assert!(rounds <= 10, "took {rounds} rounds");
        assert!(segments <= 150, "took {segments} segments for 50 pages");
    }

    #[test]
    fn many_prefixes_of_hex_names_fan_out_too() {
        let keys: Vec<String> = (0..40_000u64)
            .map(|i| format!("tenant-{:03}/{:016x}.bin", i % 195, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        let (listed, rounds, segments) = simulate(&keys, 1000, 5, false);
        assert_eq!(listed.len(), 40_000);
        assert!(rounds <= 10, "took {rounds} rounds");
        assert!(segments <= 200, "took {segments} segments for 40 pages");
    }

    /// Pages come back nearly full, so list calls follow the key count: the benchmark's
    /// shapes (many small prefixes; one flat prefix beside many small ones) take at most 30%
    /// more pages than the keys strictly need. With the first child one page wide, the
    /// many-prefix shape took 52% more; four pages wide, 48% (ranges of exactly three or
    /// four pages' keys, whose last page S3 cannot tell from a truncated one).
    #[test]
    fn pages_come_back_nearly_full() {
        let many: Vec<String> = (0..200_000usize).map(|i| format!("d{:06}/f{i:08}.bin", i % 40_000)).collect();
        let skewed: Vec<String> = (0..100_000usize)
            .map(|i| match i < 80_000 {
                true => format!("flat/f{i:08}.bin"),
                false => format!("d{:06}/f{i:08}.bin", (i - 80_000) % 5000),
            })
            .collect();
        for (shape, keys) in [("many prefixes", many), ("skewed", skewed)] {
            let (listed, rounds, pages) = simulate(&keys, 1000, 5, false);
            assert_eq!(listed.len(), keys.len(), "{shape}");
            let per_1000 = pages as f64 * 1000.0 / keys.len() as f64;
            assert!(per_1000 <= 1.3, "{shape}: {pages} pages for {} keys ({per_1000:.3} per 1,000)", keys.len());
            assert!(rounds <= 25, "{shape}: took {rounds} rounds");
        }
    }

    #[test]
    fn boundaries_are_valid_and_ordered_even_near_surrogates_and_the_top() {
        let r = KeyRange::all();
        for (first, last) in [("\u{D7FE}", "\u{E000}"), ("\u{10FFFE}", "\u{10FFFF}"), ("a", "a\u{0}"), ("a", "z")] {
            let kids = children_after_page(&r, &[first, last], 5).unwrap();
            check_children(&r, &kids).unwrap();
            assert_eq!(kids[0].start_after, last);
            assert!(kids.windows(2).all(|w| w[0].end.as_deref() == Some(w[1].start_after.as_str())));
            assert!(kids.windows(2).all(|w| w[0].start_after < w[1].start_after));
            assert_eq!(kids.last().unwrap().end, None);
        }
    }
}
