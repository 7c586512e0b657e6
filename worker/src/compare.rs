//! Deciding whether a destination object equals its source, from what listings and HEADs
//! tell, without reading content.
//!
//! "Equal" needs a matching content digest: equal ETags, or a common full-object checksum
//! (same algorithm) that matches, or equal composite checksums. "Content differs" needs
//! proof too: two ETags that are both MD5s of their content, or a common full-object
//! checksum that differs. Everything else is "unverifiable": ETags of different upload
//! forms (one side uploaded in parts), or not MD5s (SSE-KMS, SSE-C: every copy gets a new
//! one), with no common checksum. Listings cannot tell an MD5 ETag from an SSE-KMS one, so
//! differing ETags always ask both sides for their checksums first.

use shared::model::ObjectEntry;
use shared::objstore::{Checksums, is_multipart_etag};

/// The outcome of comparing one source object with its destination copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Equal,
    SizeDiffers,
    ContentDiffers,
    /// Neither equal nor different could be proven: reported, never counted as verified.
    Unverifiable(&'static str),
    /// A side's listing carried no ETag: HEAD it, then compare again.
    NeedsHead,
    /// Sizes match, ETags differ: ask both sides for their checksums (see [`settle`]).
    NeedsChecksums,
}

/// Compares by size, then ETag. With `size_only`, a missing ETag counts as equal when the
/// sizes are.
pub fn compare(src: &ObjectEntry, dst: &ObjectEntry, size_only: bool) -> Verdict {
    if src.size != dst.size {
        return Verdict::SizeDiffers;
    }
    match (&src.etag, &dst.etag) {
        (Some(a), Some(b)) if a == b => Verdict::Equal,
        (Some(_), Some(_)) => Verdict::NeedsChecksums,
        _ if size_only => Verdict::Equal,
        _ => Verdict::NeedsHead,
    }
}

/// Settles a pair of equal sizes and different ETags with both sides' checksums (`a` of
/// `src`, `b` of `dst`).
pub fn settle(src: &ObjectEntry, dst: &ObjectEntry, a: &Checksums, b: &Checksums) -> Verdict {
    let stale = |e: &ObjectEntry, c: &Checksums| c.etag.is_some() && c.etag != e.etag;
    if stale(src, a) || stale(dst, b) {
        return Verdict::Unverifiable("the object changed while it was being compared");
    }
    let mut matched = false;
    for (alg, x) in &a.values {
        match b.full(alg) {
            Some(y) if y != x => return Verdict::ContentDiffers,
            Some(_) => matched = true,
            None => {}
        }
    }
    let md5 =
        |e: &ObjectEntry, c: &Checksums| c.etag_is_md5 && e.etag.as_deref().is_some_and(|t| !is_multipart_etag(t));
    if md5(src, a) && md5(dst, b) {
        return Verdict::ContentDiffers;
    }
    let composite_match = a.composite.iter().any(|(alg, x)| b.composite.iter().any(|(g, y)| g == alg && y == x));
    if matched || composite_match {
        return Verdict::Equal;
    }
    if is_multipart_etag(src.etag.as_deref().unwrap_or_default())
        != is_multipart_etag(dst.etag.as_deref().unwrap_or_default())
    {
        Verdict::Unverifiable("ETags of different upload forms (multipart) and no common checksum")
    } else {
        Verdict::Unverifiable("ETags that are not MD5s of the content (SSE-KMS, SSE-C, parts) and no common checksum")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(size: u64, etag: Option<&str>) -> ObjectEntry {
        ObjectEntry { key: "k".into(), size, etag: etag.map(str::to_string), storage_class: None }
    }
    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    fn sums(md5: bool, full: &[(&str, &str)], composite: &[(&str, &str)]) -> Checksums {
        let own = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        Checksums { values: own(full), composite: own(composite), etag_is_md5: md5, etag: None }
    }

    #[test]
    fn sizes_then_etags_decide_or_ask_for_checksums() {
        assert_eq!(compare(&e(1, Some(A)), &e(1, Some(A)), false), Verdict::Equal);
        assert_eq!(compare(&e(1, Some(A)), &e(2, Some(A)), false), Verdict::SizeDiffers);
        // A listing cannot say whether an ETag is an MD5 (SSE-KMS ETags look the same).
        assert_eq!(compare(&e(1, Some(A)), &e(1, Some(B)), false), Verdict::NeedsChecksums);
    }

    #[test]
    fn differing_etags_prove_a_difference_only_when_both_are_md5s() {
        let (s, d) = (e(1, Some(A)), e(1, Some(B)));
        assert_eq!(settle(&s, &d, &sums(true, &[], &[]), &sums(true, &[], &[])), Verdict::ContentDiffers);
        assert!(matches!(settle(&s, &d, &sums(false, &[], &[]), &sums(true, &[], &[])), Verdict::Unverifiable(_)));
        assert!(matches!(settle(&s, &d, &sums(true, &[], &[]), &sums(false, &[], &[])), Verdict::Unverifiable(_)));
        // A multipart ETag is never an MD5 of the content, whatever a store says.
        let mp = e(1, Some("0123456789abcdef0123456789abcdef-2"));
        assert!(matches!(settle(&mp, &d, &sums(true, &[], &[]), &sums(true, &[], &[])), Verdict::Unverifiable(_)));
    }

    #[test]
    fn a_common_full_object_checksum_decides() {
        let (s, d) = (e(1, Some(A)), e(1, Some(B)));
        let kms = |v: &str| sums(false, &[("SHA256", "s"), ("CRC64NVME", v)], &[]);
        assert_eq!(settle(&s, &d, &kms("x"), &sums(false, &[("CRC64NVME", "x")], &[])), Verdict::Equal);
        assert_eq!(settle(&s, &d, &kms("x"), &sums(false, &[("CRC64NVME", "y")], &[])), Verdict::ContentDiffers);
        // Any common algorithm that differs is a difference, even if another matches.
        assert_eq!(settle(&s, &d, &kms("x"), &kms("y")), Verdict::ContentDiffers);
        // Different algorithms prove nothing.
        let other = sums(false, &[("CRC32", "x")], &[]);
        assert!(matches!(settle(&s, &d, &kms("x"), &other), Verdict::Unverifiable(_)));
        // MD5 ETags that differ win over a (colliding) checksum match: never a false "equal".
        let md5 = sums(true, &[("CRC32", "x")], &[]);
        assert_eq!(settle(&s, &d, &md5, &md5), Verdict::ContentDiffers);
    }

    #[test]
    fn composite_checksums_prove_only_equality() {
        let mp = e(9, Some(&format!("{A}-3")));
        let d = e(9, Some(B));
        let c = |v: &str| sums(false, &[], &[("CRC32", v)]);
        assert_eq!(settle(&mp, &d, &c("x-3"), &c("x-3")), Verdict::Equal);
        assert!(matches!(settle(&mp, &d, &c("x-3"), &c("y-3")), Verdict::Unverifiable(_)));
        assert!(matches!(settle(&mp, &d, &c("x-3"), &sums(false, &[("CRC32", "x-3")], &[])), Verdict::Unverifiable(_)));
    }

    #[test]
    fn checksums_of_another_version_say_nothing() {
        let (s, d) = (e(1, Some(A)), e(1, Some(B)));
        let mut a = sums(false, &[("CRC64NVME", "x")], &[]);
        let b = a.clone();
        a.etag = Some("something else".into());
        assert!(matches!(settle(&s, &d, &a, &b), Verdict::Unverifiable(_)));
        a.etag = Some(A.into());
        assert_eq!(settle(&s, &d, &a, &b), Verdict::Equal);
    }

    #[test]
    fn missing_etags_need_a_head_unless_size_only() {
        assert_eq!(compare(&e(1, None), &e(1, Some(A)), false), Verdict::NeedsHead);
        assert_eq!(compare(&e(1, None), &e(1, Some(A)), true), Verdict::Equal);
        assert_eq!(compare(&e(1, None), &e(2, None), true), Verdict::SizeDiffers);
    }
}
