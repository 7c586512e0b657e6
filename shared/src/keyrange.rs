//! Splitting a key range that has not been listed yet.
//!
//! When a segment's page comes back truncated, the rest of its range `(last, end]` is handed
//! on as children that together cover it exactly once. Bisecting the whole key space (the
//! classic approach) spends dozens of rounds finding where the keys are when they are packed
//! into a corner of it (`logs/2024/...`), one sequential page per round. Instead the split
//! points are *extrapolated* from the page just listed:
//!
//! - each key of the page is read as a mixed-radix number: position `i` counts in the
//!   characters the page's keys have at `i` (all ten digits where it saw only digits, all
//!   sixteen lowercase hex digits where it saw only those), so arithmetic on keys behaves like
//!   counting in the keys' own notation: `d000399/...` plus a page of 200 names is
//!   `d000599/...`;
//! - the page spanned `span = last - first`; the next boundaries are placed at
//!   `last + 2 * span * 4^j` (j = 0, 1, ...), and a tail child takes whatever lies beyond;
//!   the first child spans two pages' widths, not one, so that pages come back full;
//! - the rest of a bounded range that as many children a page wide (`last + span * k`) can
//!   cover is cut so: its pages are listed at once by as many workers, not one after
//!   another as a chain (at the end of a job, such chains held its last second).
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

/// The first child spans this many pages' widths. A range's last page is partial (S3
/// cannot tell a range's last full page from a truncated one, so a range of exactly four
/// pages' keys takes a fifth call), so wider children mean fewer partial pages but more
/// rounds before the work has fanned out. With keys counted in their own notation (the
/// numbering below) the benchmark's shapes take 1.01-1.11 pages per 1,000 keys at 1, 2, 4,
/// 6 or 8 pages (simulated with the test's job model), and the fewest rounds at 1 or 2; 2
/// takes 6 fewer rounds than 1 on the million-object shape. Before, with one alphabet for
/// every position, a child's boundary fell between blocks of a thousand decimal names
/// (`d000bf9` sorts between `d000999` and `d001000`): ranges held whole blocks, and the
/// million took 1.25 pages per 1,000 keys at 6 pages, 1.5-1.75 at 1.
const FIRST_CHILD_PAGES: u64 = 2;

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
    let n = fanout.saturating_sub(1) as u32;
    let wide: Vec<u64> = (0..n).map_while(|j| 4u64.checked_pow(j)?.checked_mul(FIRST_CHILD_PAGES)).collect();
    // The rest of a bounded range that `fanout` children a page wide cover: cut so, and
    // it is listed at once by as many workers, not as a chain of pages one after another.
    let num = Numbering::new(page, first, last);
    let mut points = extrapolate(&num, first, last, &(1..=u64::from(n) + 1).collect::<Vec<_>>());
    let short = range.end.as_deref().is_some_and(|end| points.len() > n as usize && points[n as usize].as_str() >= end);
    points.truncate(n as usize);
    if !short {
        points = extrapolate(&num, first, last, &wide);
    }
    let mut bounds: Vec<String> = Vec::new();
    let mut lower = last.to_string();
    for point in points {
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

/// The page's keys read as mixed-radix numbers, one radix per character position: the
/// characters the page's keys have there (widened to every decimal or lowercase hex digit
/// when those are all it has), plus the value 0, "the key ended here", below every
/// character where some page key is that short. The order of the numbers is the keys' order.
struct Numbering {
    alphabets: Vec<Vec<char>>,
    /// Whether position `i` has the value 0, "ended".
    ended: Vec<bool>,
}

impl Numbering {
    fn new(page: &[&str], first: &str, last: &str) -> Self {
        let len = (first.chars().count().max(last.chars().count()) + 1).min(MAX_DIGITS);
        let mut seen = vec![BTreeSet::new(); len];
        let mut shortest = len;
        for key in page {
            let mut n = 0;
            for (i, c) in key.chars().take(len).enumerate() {
                seen[i].insert(c);
                n = i + 1;
            }
            shortest = shortest.min(n);
        }
        let alphabet = |set: BTreeSet<char>| -> Vec<char> {
            let class = |digits: &str| {
                (!set.is_empty() && set.iter().all(|c| digits.contains(*c))).then(|| digits.chars().collect())
            };
            class("0123456789").or_else(|| class("0123456789abcdef")).unwrap_or_else(|| set.into_iter().collect())
        };
        Numbering {
            alphabets: seen.into_iter().map(alphabet).collect(),
            ended: (0..len).map(|i| i >= shortest).collect(),
        }
    }
    fn radix(&self) -> Vec<u64> {
        self.alphabets.iter().zip(&self.ended).map(|(a, &e)| a.len() as u64 + u64::from(e)).collect()
    }
    /// The digits of one of the page's keys.
    fn digits(&self, key: &str) -> Vec<u64> {
        let mut chars = key.chars();
        (self.alphabets.iter().zip(&self.ended))
            .map(|(alphabet, &ended)| {
                chars.next().map_or(0, |c| alphabet.binary_search(&c).map_or(0, |r| r as u64 + u64::from(ended)))
            })
            .collect()
    }
    /// The key these digits spell, up to the first "ended".
    fn key(&self, d: &[u64]) -> Option<String> {
        let mut s = String::new();
        for ((&x, alphabet), &ended) in d.iter().zip(&self.alphabets).zip(&self.ended) {
            let Some(&c) = x.checked_sub(u64::from(ended)).and_then(|i| alphabet.get(i as usize)) else { break };
            s.push(c);
        }
        (!s.is_empty()).then_some(s)
    }
}

/// The boundaries `last + span * m` for each of `multiples` (increasing), where `span =
/// last - first`: as many as can be spelled, in order.
fn extrapolate(num: &Numbering, first: &str, last: &str, multiples: &[u64]) -> Vec<String> {
    if multiples.is_empty() || first >= last {
        return Vec::new();
    }
    let base = num.radix();
    let b = num.digits(last);
    let Some(span) = sub(&b, &num.digits(first), &base) else {
        return Vec::new();
    };
    if span.iter().all(|&d| d == 0) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for &m in multiples {
        let Some(p) = mul(&span, m, &base).and_then(|step| add(&b, &step, &base)) else { break };
        out.extend(num.key(&p));
    }
    out
}

/// `a - b` in the mixed radix `base`, or `None` when negative.
fn sub(a: &[u64], b: &[u64], base: &[u64]) -> Option<Vec<u64>> {
    let mut out = vec![0; a.len()];
    let mut borrow = 0u64;
    for i in (0..a.len()).rev() {
        let (x, y) = (a[i], b[i] + borrow);
        if x >= y {
            out[i] = x - y;
            borrow = 0;
        } else {
            out[i] = x + base[i] - y;
            borrow = 1;
        }
    }
    (borrow == 0).then_some(out)
}

/// `a * m` in the mixed radix `base`, or `None` on overflow past the first digit.
fn mul(a: &[u64], m: u64, base: &[u64]) -> Option<Vec<u64>> {
    let mut out = vec![0; a.len()];
    let mut carry = 0u64;
    for i in (0..a.len()).rev() {
        let s = a[i].checked_mul(m)?.checked_add(carry)?;
        out[i] = s % base[i];
        carry = s / base[i];
    }
    (carry == 0).then_some(out)
}

/// `a + b` in the mixed radix `base`, or `None` on overflow past the first digit.
fn add(a: &[u64], b: &[u64], base: &[u64]) -> Option<Vec<u64>> {
    let mut out = vec![0; a.len()];
    let mut carry = 0u64;
    for i in (0..a.len()).rev() {
        let s = a[i] + b[i] + carry;
        out[i] = s % base[i];
        carry = s / base[i];
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
        simulate_from(KeyRange::all(), keys, page, fanout, lifo)
    }

    /// [`simulate`] from one segment of `range`.
    fn simulate_from(
        range: KeyRange,
        keys: &[String],
        page: usize,
        fanout: usize,
        lifo: bool,
    ) -> (Vec<String>, usize, usize) {
        let mut sorted = keys.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut work: VecDeque<(KeyRange, usize)> = VecDeque::from([(range, 1)]);
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
    /// shapes (many prefixes of five names, as the million-object set; one flat prefix beside
    /// many small ones) take at most 15% more pages than the keys strictly need (1.03 and
    /// 1.11 per 1,000 keys). With one alphabet for every position (before `numbering`'s
    /// radix per position) the many-prefix shape took 1.26, as the million did in the
    /// benchmark: ranges held whole blocks of a thousand names, one call more each.
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
            assert!(per_1000 <= 1.15, "{shape}: {pages} pages for {} keys ({per_1000:.3} per 1,000)", keys.len());
            assert!(rounds <= 20, "{shape}: took {rounds} rounds");
        }
    }

    /// Boundaries count in the keys' own notation: decimal where the page had only digits,
    /// so the first child of a page of `flat/000001`-`flat/001000` spans two pages' widths
    /// exactly (999 names each), and the second ends four times as far from the page.
    #[test]
    fn numbering_counts_in_decimal_where_keys_have_digits() {
        let keys: Vec<String> = (1..=1000).map(|i| format!("flat/{i:06}")).collect();
        let page: Vec<&str> = keys.iter().map(String::as_str).collect();
        let kids = children_after_page(&KeyRange::all(), &page, 3).unwrap();
        let bounds: Vec<_> = kids.iter().map(|k| k.end.as_deref()).collect();
        assert_eq!(bounds, [Some("flat/002998"), Some("flat/008992"), None]);
        // Hex names count in hex, even where a page happened to show only some letters.
        let kids = children_after_page(&KeyRange::all(), &["h/0a0", "h/0af"], 2).unwrap();
        assert_eq!(kids[0].end.as_deref(), Some("h/0cd"), "0af + 2 * (0af - 0a0) in hex");
    }

    /// The rest of a bounded range that `fanout` pages cover is cut into children a page
    /// wide: listed at once by as many workers, not as a chain of pages one after another
    /// (at a job's end, such chains were its last seconds).
    #[test]
    fn a_short_rest_is_cut_into_pages_not_listed_as_a_chain() {
        let keys: Vec<String> = (1..=4000).map(|i| format!("flat/{i:06}")).collect();
        let range = KeyRange { start_after: "flat/".into(), end: Some("flat/003500".into()) };
        let page: Vec<&str> = keys[..1000].iter().map(String::as_str).collect();
        let kids = children_after_page(&range, &page, 5).unwrap();
        let bounds: Vec<_> = kids.iter().map(|k| k.end.as_deref()).collect();
        assert_eq!(bounds, [Some("flat/001999"), Some("flat/002998"), Some("flat/003500")]);
        for n in 2..=4usize {
            let end = format!("flat/{:06}", n * 999 - 10);
            let range = KeyRange { start_after: "flat/".into(), end: Some(end) };
            let (listed, rounds, pages) = simulate_from(range, &keys, 1000, 5, false);
            assert_eq!(listed.len(), n * 999 - 10);
            assert_eq!(rounds, 2, "{n} pages' keys: the first page, then the rest at once");
            assert!(pages <= n + 1, "{n} pages' keys in {pages} pages");
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
