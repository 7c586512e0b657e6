//! Splitting a key range that has not been listed yet.
//!
//! When a segment's page comes back truncated, the rest of its range `(last, end)` is handed
//! on as children that together cover it exactly once. Instead of bisecting the whole key
//! space (which spends dozens of rounds finding where the keys are when they are packed
//! into a corner of it, say `logs/2024/...`), the split points are *extrapolated* from the
//! page just listed: the page spanned `last - first` in key space, so the next boundaries
//! are placed at `last + 1, 2, 4, 8 ...` times that span, and a tail child takes whatever
//! lies beyond. Keys are read as numbers whose digits are Unicode code points (S3 lists in
//! UTF-8 byte order, which is code-point order), and every boundary is a valid UTF-8 string.
//! Empty children cost one list call each; correctness never depends on the guess.

use crate::model::KeyRange;

const BASE: u64 = 0x11_0000;
/// Digits kept for the arithmetic: far more than any useful boundary needs.
const MAX_DIGITS: usize = 1100;

/// The children of `range` after a truncated page whose first and last keys were `first` and
/// `last` (relative keys, `first <= last`, both inside `range`).
///
/// Guarantee: the returned ranges are disjoint, in key order, and their union is exactly
/// `(last, range.end]`. At most `fanout` children are returned (at least one).
pub fn children_after_page(
    range: &KeyRange,
    first: &str,
    last: &str,
    fanout: usize,
) -> Vec<KeyRange> {
    let mut bounds: Vec<String> = Vec::new();
    let mut lower = last.to_string();
    for point in extrapolate(first, last, fanout.saturating_sub(1)) {
        let below_end = range.end.as_deref().is_none_or(|e| point.as_str() < e);
        if point > lower && below_end {
            lower = point.clone();
            bounds.push(point);
        }
    }
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut start = last.to_string();
    for b in bounds {
        out.push(KeyRange {
            start_after: start,
            end: Some(b.clone()),
        });
        start = b;
    }
    out.push(KeyRange {
        start_after: start,
        end: range.end.clone(),
    });
    out
}

/// Up to `n` increasing boundaries above `last`, at `last + span * 2^j` for j = 0..n.
fn extrapolate(first: &str, last: &str, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let len = (first.chars().count().max(last.chars().count()) + 1).min(MAX_DIGITS);
    let a = digits(first, len);
    let b = digits(last, len);
    let Some(span) = sub(&b, &a) else {
        return Vec::new();
    };
    if span.iter().all(|&d| d == 0) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut step = span;
    for _ in 0..n {
        let Some(p) = add(&b, &step) else { break };
        if let Some(s) = from_digits(&p) {
            out.push(s);
        }
        let Some(next) = add(&step, &step) else { break };
        step = next;
    }
    out
}

fn digits(s: &str, len: usize) -> Vec<u64> {
    let mut v: Vec<u64> = s.chars().take(len).map(|c| c as u64).collect();
    v.resize(len, 0);
    v
}

/// `a - b` in base `BASE`, or `None` when negative.
fn sub(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
    let mut out = vec![0; a.len()];
    let mut borrow = 0u64;
    for i in (0..a.len()).rev() {
        let (x, y) = (a[i], b[i] + borrow);
        if x >= y {
            out[i] = x - y;
            borrow = 0;
        } else {
            out[i] = x + BASE - y;
            borrow = 1;
        }
    }
    (borrow == 0).then_some(out)
}

/// `a + b` in base `BASE`, or `None` on overflow past the first digit.
fn add(a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
    let mut out = vec![0; a.len()];
    let mut carry = 0u64;
    for i in (0..a.len()).rev() {
        let s = a[i] + b[i] + carry;
        out[i] = s % BASE;
        carry = s / BASE;
    }
    (carry == 0).then_some(out)
}

/// The string with these code-point digits (trailing zeros dropped); a digit in the
/// surrogate range is raised to U+E000 and everything after it dropped, which only moves
/// the boundary up, keeping the order of the boundaries.
fn from_digits(d: &[u64]) -> Option<String> {
    let end = d.iter().rposition(|&x| x != 0)? + 1;
    let mut s = String::with_capacity(end);
    for &x in &d[..end] {
        match char::from_u32(x as u32) {
            Some(c) => s.push(c),
            None => {
                s.push('\u{E000}');
                break;
            }
        }
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    /// Works a job over `keys` the way workers do: list at most `page` keys of a range, and
    /// when truncated hand on the rest as children. Returns every key listed, in listing
    /// order, and the number of rounds (the longest chain of segments).
    fn simulate(
        keys: &[String],
        page: usize,
        fanout: usize,
        lifo: bool,
    ) -> (Vec<String>, usize, usize) {
        let mut sorted = keys.to_vec();
        sorted.sort();
        sorted.dedup();
        let mut work: VecDeque<(KeyRange, usize)> = VecDeque::from([(KeyRange::all(), 1)]);
        let (mut listed, mut rounds, mut segments) = (Vec::new(), 0, 0);
        while let Some((r, depth)) = if lifo {
            work.pop_back()
        } else {
            work.pop_front()
        } {
            segments += 1;
            rounds = rounds.max(depth);
            let in_range: Vec<&String> = sorted.iter().filter(|k| r.contains(k)).collect();
            let pg: Vec<&String> = in_range.iter().take(page).copied().collect();
            listed.extend(pg.iter().map(|k| k.to_string()));
            if in_range.len() > page {
                let kids = children_after_page(&r, pg[0], pg[pg.len() - 1], fanout);
                assert!(kids.len() <= fanout.max(1));
                work.extend(kids.into_iter().map(|k| (k, depth + 1)));
            }
        }
        (listed, rounds, segments)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn segments_list_every_key_exactly_once(
            keys in proptest::collection::vec("\\PC{0,12}", 0..200),
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
            let kids = children_after_page(&range, &first, &last, fanout);
            for k in probes {
                let n = kids.iter().filter(|c| c.contains(&k)).count();
                let want = usize::from(k > last && end.as_deref().is_none_or(|e| k.as_str() <= e));
                prop_assert_eq!(n, want, "key {:?} in {} children of {:?}", k, n, kids);
            }
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
    fn boundaries_are_valid_and_ordered_even_near_surrogates_and_the_top() {
        let r = KeyRange::all();
        for (first, last) in [
            ("\u{D7FE}", "\u{D7FF}"),
            ("\u{10FFFE}", "\u{10FFFF}"),
            ("a", "a\u{0}"),
            ("", "z"),
        ] {
            let kids = children_after_page(&r, first, last, 5);
            assert_eq!(kids[0].start_after, last);
            assert!(
                kids.windows(2)
                    .all(|w| w[0].end.as_deref() == Some(w[1].start_after.as_str()))
            );
            assert!(kids.windows(2).all(|w| w[0].start_after < w[1].start_after));
            assert_eq!(kids.last().unwrap().end, None);
        }
    }
}
