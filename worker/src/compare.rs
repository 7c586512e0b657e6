//! Deciding whether a destination object equals its source, from what listings and HEADs
//! tell, without reading content. Never claims "differs" when the ETags are merely of
//! different forms (one side uploaded in parts): that is "unverifiable" unless a common
//! stored checksum settles it.

use shared::model::ObjectEntry;
use shared::objstore::{Checksums, is_multipart_etag};

/// The outcome of comparing one source object with its destination copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Equal,
    SizeDiffers,
    ContentDiffers,
    /// Sizes match, ETags are not comparable: ask for checksums, else report it.
    Unverifiable(&'static str),
    /// A side's listing carried no ETag: HEAD it, then compare again.
    NeedsHead,
}

/// Compares by size, then ETag. With `size_only`, a missing ETag counts as equal when the
/// sizes are.
pub fn compare(src: &ObjectEntry, dst: &ObjectEntry, size_only: bool) -> Verdict {
    if src.size != dst.size {
        return Verdict::SizeDiffers;
    }
    match (&src.etag, &dst.etag) {
        (Some(a), Some(b)) if a == b => Verdict::Equal,
        (Some(a), Some(b)) if !is_multipart_etag(a) && !is_multipart_etag(b) => Verdict::ContentDiffers,
        (Some(_), Some(_)) => {
            Verdict::Unverifiable("ETags of different upload forms (multipart) and no common checksum")
        }
        _ if size_only => Verdict::Equal,
        _ => Verdict::NeedsHead,
    }
}

/// Settles an unverifiable comparison with stored checksums of the same algorithm, if any.
/// Composite (per-part, `-N`) checksums that differ prove nothing and stay unverifiable.
pub fn compare_checksums(src: &Checksums, dst: &Checksums) -> Option<Verdict> {
    for (alg, a) in &src.values {
        if let Some((_, b)) = dst.values.iter().find(|(x, _)| x == alg) {
            if a == b {
                return Some(Verdict::Equal);
            }
            if !a.contains('-') && !b.contains('-') {
                return Some(Verdict::ContentDiffers);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(size: u64, etag: Option<&str>) -> ObjectEntry {
        ObjectEntry { key: "k".into(), size, etag: etag.map(str::to_string), storage_class: None }
    }
    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn sizes_then_etags_decide() {
        assert_eq!(compare(&e(1, Some(A)), &e(1, Some(A)), false), Verdict::Equal);
        assert_eq!(compare(&e(1, Some(A)), &e(2, Some(A)), false), Verdict::SizeDiffers);
        assert_eq!(compare(&e(1, Some(A)), &e(1, Some(B)), false), Verdict::ContentDiffers);
    }

    #[test]
    fn multipart_etags_are_never_a_false_difference() {
        let mp = format!("{A}-3");
        assert!(matches!(compare(&e(9, Some(&mp)), &e(9, Some(B)), false), Verdict::Unverifiable(_)));
        assert_eq!(compare(&e(9, Some(&mp)), &e(9, Some(&mp)), false), Verdict::Equal);
    }

    #[test]
    fn missing_etags_need_a_head_unless_size_only() {
        assert_eq!(compare(&e(1, None), &e(1, Some(A)), false), Verdict::NeedsHead);
        assert_eq!(compare(&e(1, None), &e(1, Some(A)), true), Verdict::Equal);
        assert_eq!(compare(&e(1, None), &e(2, None), true), Verdict::SizeDiffers);
    }

    #[test]
    fn checksums_settle_what_they_can() {
        let c = |v: &str| Checksums { values: vec![("SHA256".into(), v.into())] };
        assert_eq!(compare_checksums(&c("x"), &c("x")), Some(Verdict::Equal));
        assert_eq!(compare_checksums(&c("x"), &c("y")), Some(Verdict::ContentDiffers));
        assert_eq!(compare_checksums(&c("x-2"), &c("y")), None);
        assert_eq!(compare_checksums(&c("x"), &Checksums::default()), None);
    }
}
