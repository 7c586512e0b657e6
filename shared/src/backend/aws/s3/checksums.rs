//! What a HEAD with `ChecksumMode=ENABLED` says about an object's content, and which
//! checksum a copy or an upload asks S3 for, so the destination carries one comparable
//! with the source's.
//!
//! A checksum is full-object when the object is single-part (its checksum covers the
//! whole content whatever the type header says) or S3 says `FULL_OBJECT`; otherwise it is
//! composite (a checksum of the parts' checksums, sometimes suffixed `-N`). An ETag is an
//! MD5 of the content only for single-part objects not encrypted with SSE-KMS (or DSSE-KMS)
//! or SSE-C.

use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType};

use crate::objstore::{Checksums, is_multipart_etag, unquote_etag};

/// The algorithm uploads ask for when nothing else decides: S3's own default for new
/// objects since 2024, and the only 64-bit full-object checksum it offers.
pub(super) const DEFAULT_ALGORITHM: &str = "CRC64NVME";

/// The checksums and ETag form a HEAD (with checksum mode) reports.
pub(super) fn from_head(h: &HeadObjectOutput) -> Checksums {
    let etag = h.e_tag().map(unquote_etag);
    let multipart = etag.as_deref().is_some_and(is_multipart_etag) || h.parts_count().is_some_and(|n| n > 1);
    let full_type = h.checksum_type().is_some_and(|t| *t == ChecksumType::FullObject);
    let all = [
        ("CRC32", h.checksum_crc32()),
        ("CRC32C", h.checksum_crc32_c()),
        ("CRC64NVME", h.checksum_crc64_nvme()),
        ("SHA1", h.checksum_sha1()),
        ("SHA256", h.checksum_sha256()),
        ("SHA512", h.checksum_sha512()),
        ("MD5", h.checksum_md5()),
        ("XXHASH64", h.checksum_xxhash64()),
        ("XXHASH3", h.checksum_xxhash3()),
        ("XXHASH128", h.checksum_xxhash128()),
    ];
    let mut out = Checksums { etag_is_md5: !multipart && !encrypted_with_a_key(h), etag, ..Default::default() };
    for (alg, v) in all {
        let Some(v) = v else { continue };
        let pair = (alg.to_string(), v.to_string());
        if v.contains('-') || (multipart && !full_type) {
            out.composite.push(pair);
        } else {
            out.values.push(pair);
        }
    }
    out
}

/// True for SSE-KMS, DSSE-KMS and SSE-C objects, whose ETags are not MD5s of the content.
fn encrypted_with_a_key(h: &HeadObjectOutput) -> bool {
    let kms = h.server_side_encryption().is_some_and(|s| s.as_str().starts_with("aws:kms"));
    kms || h.sse_customer_algorithm().is_some()
}

/// The checksum a multipart copy of an object with these checksums asks for: the source's
/// own algorithm and type (so both sides carry the same one), else the default as a
/// full-object checksum.
pub(super) fn for_copy_of(src: &Checksums) -> (ChecksumAlgorithm, ChecksumType) {
    if let Some((alg, _)) = src.values.first() {
        return (ChecksumAlgorithm::from(alg.as_str()), ChecksumType::FullObject);
    }
    if let Some((alg, _)) = src.composite.first() {
        return (ChecksumAlgorithm::from(alg.as_str()), ChecksumType::Composite);
    }
    (ChecksumAlgorithm::from(DEFAULT_ALGORITHM), ChecksumType::FullObject)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::types::ServerSideEncryption;

    fn head() -> aws_sdk_s3::operation::head_object::builders::HeadObjectOutputBuilder {
        HeadObjectOutput::builder().e_tag("\"5d41402abc4b2a76b9719d911017c592\"").checksum_crc64_nvme("abc=")
    }

    #[test]
    fn the_etag_is_an_md5_only_for_single_part_objects_without_a_key() {
        let plain = from_head(&head().build());
        assert!(plain.etag_is_md5);
        assert_eq!(plain.values, vec![("CRC64NVME".to_string(), "abc=".to_string())]);
        assert_eq!(plain.etag.as_deref(), Some("5d41402abc4b2a76b9719d911017c592"));
        assert!(from_head(&head().server_side_encryption(ServerSideEncryption::Aes256).build()).etag_is_md5);
        assert!(!from_head(&head().server_side_encryption(ServerSideEncryption::AwsKms).build()).etag_is_md5);
        assert!(!from_head(&head().server_side_encryption(ServerSideEncryption::AwsKmsDsse).build()).etag_is_md5);
        assert!(!from_head(&head().sse_customer_algorithm("AES256").build()).etag_is_md5);
    }

    #[test]
    fn multipart_checksums_are_full_object_only_when_s3_says_so() {
        let mp = || head().e_tag("\"5d41402abc4b2a76b9719d911017c592-3\"");
        let composite = from_head(&mp().build());
        assert!(!composite.etag_is_md5);
        assert!(composite.values.is_empty() && composite.composite.len() == 1);
        let full = from_head(&mp().checksum_type(ChecksumType::FullObject).build());
        assert_eq!(full.full("CRC64NVME"), Some("abc="));
        let suffixed = from_head(&head().checksum_crc64_nvme("abc=-3").build());
        assert!(suffixed.values.is_empty(), "a -N value is composite");
        assert_eq!(for_copy_of(&full), (ChecksumAlgorithm::Crc64Nvme, ChecksumType::FullObject));
        assert_eq!(for_copy_of(&composite), (ChecksumAlgorithm::Crc64Nvme, ChecksumType::Composite));
        assert_eq!(for_copy_of(&Checksums::default()).1, ChecksumType::FullObject);
    }
}
