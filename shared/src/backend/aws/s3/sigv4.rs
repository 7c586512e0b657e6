//! SigV4 for the lean client's requests, with the signing key derived once a day.
//!
//! **Invariant:** [`Signer::sign`] adds exactly the headers `aws-sigv4` (the SDK's signer)
//! adds with the SDK's settings for S3 (the path as sent, never normalised nor encoded
//! again; the query in canonical form, as [`query`] builds it; the payload's SHA-256 in
//! `x-amz-content-sha256`; a session token signed). The property test below checks it
//! against `aws-sigv4` on random keys, query parameters, headers and credentials, and S3's
//! documented examples check both.
//!
//! Why not call `aws-sigv4` per request: it derives the signing key (four HMACs) and builds
//! its canonical request through header maps and formatting on every call; profiled, that
//! was half of a copy's CPU. Here the key is kept per (secret, day, region) and the
//! canonical request is one string.

use std::sync::Mutex;
use std::time::SystemTime;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// What SigV4 leaves unencoded in a query: its unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A query string in SigV4's canonical form, which is also sent as is: names and values
/// percent-encoded (all but the unreserved characters; a space is `%20`), sorted by name.
pub(super) fn query(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (utf8_percent_encode(k, UNRESERVED).to_string(), utf8_percent_encode(v, UNRESERVED).to_string()))
        .collect();
    encoded.sort();
    let pairs: Vec<String> = encoded.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

/// SHA-256 of the empty payload.
pub(super) const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The credentials a request is signed with.
pub(super) struct Keys<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub session_token: Option<&'a str>,
}

/// What is signed of a request.
pub(super) struct Request<'a> {
    pub method: &'a str,
    /// The `Host` header as sent (the port only when not the scheme's default).
    pub host: &'a str,
    /// The path as sent (percent-encoded once).
    pub path: &'a str,
    /// The query as sent, in canonical form ([`query`]); `""` for none.
    pub query: &'a str,
    /// Headers to sign besides `host`, with lowercase names.
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_sha256: &'a str,
}

/// Signs requests for one region and service.
pub(super) struct Signer {
    region: String,
    service: &'static str,
    /// (secret, day `YYYYMMDD`) -> signing key.
    key: Mutex<Option<(String, String, [u8; 32])>>,
}

impl Signer {
    pub fn new(region: &str, service: &'static str) -> Self {
        Signer { region: region.to_string(), service, key: Mutex::new(None) }
    }

    /// The headers to add to `req` (`x-amz-date`, `x-amz-content-sha256`,
    /// `x-amz-security-token` for temporary credentials, `authorization`).
    pub fn sign(&self, req: &Request<'_>, keys: &Keys<'_>, time: SystemTime) -> Vec<(&'static str, String)> {
        let Request { method, host, path, query, headers, payload_sha256 } = *req;
        let amz_date = amz_date(time);
        let day = &amz_date[..8];
        let mut added = vec![("x-amz-date", amz_date.clone()), ("x-amz-content-sha256", payload_sha256.to_string())];
        if let Some(token) = keys.session_token {
            added.push(("x-amz-security-token", token.to_string()));
        }
        let mut all: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + added.len() + 1);
        all.push(("host", host));
        all.extend(headers.iter().copied());
        all.extend(added.iter().map(|(k, v)| (*k, v.as_str())));
        all.sort_by(|a, b| a.0.cmp(b.0));

        let mut canonical = String::with_capacity(512);
        canonical.push_str(method);
        canonical.push('\n');
        canonical.push_str(path);
        canonical.push('\n');
        canonical.push_str(query);
        canonical.push('\n');
        let mut signed_headers = String::with_capacity(160);
        let mut i = 0;
        while i < all.len() {
            // Headers of one name: one line, values in order, comma-separated.
            let name = all[i].0;
            canonical.push_str(name);
            canonical.push(':');
            let mut first = true;
            while i < all.len() && all[i].0 == name {
                if !first {
                    canonical.push(',');
                }
                push_trimmed(&mut canonical, all[i].1);
                first = false;
                i += 1;
            }
            canonical.push('\n');
            if !signed_headers.is_empty() {
                signed_headers.push(';');
            }
            signed_headers.push_str(name);
        }
        canonical.push('\n');
        canonical.push_str(&signed_headers);
        canonical.push('\n');
        canonical.push_str(payload_sha256);

        // Built by pushes rather than `format!`: a request's strings are a good part of its
        // CPU, and formatting costs more than the copies.
        let mut scope = String::with_capacity(64);
        for part in [day, "/", &self.region, "/", self.service, "/aws4_request"] {
            scope.push_str(part);
        }
        let mut hex = [0u8; 64];
        let mut string_to_sign = String::with_capacity(160);
        for part in ["AWS4-HMAC-SHA256\n", &amz_date, "\n", &scope, "\n", hex_of(&Sha256::digest(canonical), &mut hex)]
        {
            string_to_sign.push_str(part);
        }
        let key = self.signing_key(keys.secret, day);
        let signature = hex_of(&hmac(&key, string_to_sign.as_bytes()), &mut hex);
        let mut authorization = String::with_capacity(256);
        for part in [
            "AWS4-HMAC-SHA256 Credential=",
            keys.access_key_id,
            "/",
            &scope,
            ", SignedHeaders=",
            &signed_headers,
            ", Signature=",
            signature,
        ] {
            authorization.push_str(part);
        }
        added.push(("authorization", authorization));
        added
    }

    /// The day's signing key, derived on the first request of the day (or of new credentials).
    fn signing_key(&self, secret: &str, day: &str) -> [u8; 32] {
        let mut cached = self.key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, d, key)) = cached.as_ref()
            && s == secret
            && d == day
        {
            return *key;
        }
        let k = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
        let k = hmac(&k, self.region.as_bytes());
        let k = hmac(&k, self.service.as_bytes());
        let key = hmac(&k, b"aws4_request");
        *cached = Some((secret.to_string(), day.to_string(), key));
        key
    }
}

/// `YYYYMMDDTHHMMSSZ`, in UTC (a time before 1970 is taken as 1970).
fn amz_date(time: SystemTime) -> String {
    let secs = time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, s) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to the civil date (H. Hinnant's `civil_from_days`, days >= 0).
    let z = days + 719_468;
    let (era, doe) = (z / 146_097, z % 146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", s / 3_600, s / 60 % 60, s % 60)
}

/// `bytes` (a digest of 32) in lowercase hex, written into `out`.
fn hex_of<'a>(bytes: &[u8], out: &'a mut [u8; 64]) -> &'a str {
    let out = &mut out[..bytes.len() * 2];
    hex::encode_to_slice(bytes, out).expect("two hex digits a byte fit");
    std::str::from_utf8(out).expect("hex is ASCII")
}

/// A header value as SigV4 canonicalises it: trimmed, inner runs of spaces made one.
fn push_trimmed(out: &mut String, value: &str) {
    let value = value.trim();
    if !value.contains("  ") {
        out.push_str(value);
        return;
    }
    let mut space = false;
    for c in value.chars() {
        if c == ' ' {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    const DOCS: Keys<'static> = Keys {
        access_key_id: "AKIAIOSFODNN7EXAMPLE",
        secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        session_token: None,
    };

    fn may_24_2013() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600)
    }

    fn authorization(added: &[(&str, String)]) -> String {
        added.iter().find(|(k, _)| *k == "authorization").unwrap().1.clone()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        // Test case 6: a key longer than a block is hashed first.
        let mac = hmac(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex::encode(mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    /// S3's documented SigV4 examples: "GET Object" (a range header, empty payload) and
    /// "PUT Object" (a key with `$`, a payload, a header of the caller's).
    #[test]
    fn signs_s3s_documented_examples() {
        let s = Signer::new("us-east-1", "s3");
        let host = "examplebucket.s3.amazonaws.com";
        let req =
            |method, path, headers, payload_sha256| Request { method, host, path, query: "", headers, payload_sha256 };
        let get = s.sign(&req("GET", "/test.txt", &[("range", "bytes=0-9")], EMPTY_SHA256), &DOCS, may_24_2013());
        assert_eq!(
            authorization(&get),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        let payload = hex::encode(Sha256::digest(b"Welcome to Amazon S3."));
        let headers = [("date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")];
        let put = s.sign(&req("PUT", "/test%24file.text", &headers, &payload), &DOCS, may_24_2013());
        assert!(
            authorization(&put).ends_with("Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
            "{put:?}"
        );
        assert!(put.contains(&("x-amz-date", "20130524T000000Z".to_string())));
        // "GET Bucket (List Objects)": a query string.
        let q = query(&[("prefix", "J"), ("max-keys", "2")]);
        assert_eq!(q, "max-keys=2&prefix=J");
        let list = Request { method: "GET", host, path: "/", query: &q, headers: &[], payload_sha256: EMPTY_SHA256 };
        assert!(
            authorization(&s.sign(&list, &DOCS, may_24_2013()))
                .ends_with("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
        );
    }

    #[test]
    fn queries_are_encoded_and_sorted() {
        assert_eq!(
            query(&[("start-after", "a b/c+d~e%"), ("list-type", "2"), ("prefix", "ünï")]),
            "list-type=2&prefix=%C3%BCn%C3%AF&start-after=a%20b%2Fc%2Bd~e%25"
        );
        assert_eq!(query(&[]), "");
    }

    #[test]
    fn the_key_is_derived_again_for_a_new_day_or_secret() {
        let s = Signer::new("us-east-1", "s3");
        let day1 = s.signing_key("secret", "20130524");
        assert_eq!(s.signing_key("secret", "20130524"), day1);
        assert_ne!(s.signing_key("secret", "20130525"), day1);
        assert_ne!(s.signing_key("other", "20130524"), day1);
        assert_eq!(s.signing_key("secret", "20130524"), day1);
    }

    /// What `aws-sigv4` adds to the same request, with the SDK's settings for S3.
    fn reference(
        method: &str,
        path: &str,
        query: &str,
        headers: &[(String, String)],
        keys: &Keys<'_>,
        region: &str,
        time: SystemTime,
    ) -> Vec<(String, String)> {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
            UriPathNormalizationMode, sign,
        };
        let creds = aws_sdk_s3::config::Credentials::new(
            keys.access_key_id,
            keys.secret,
            keys.session_token.map(str::to_string),
            None,
            "test",
        );
        let identity = aws_smithy_runtime_api::client::identity::Identity::from(creds);
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("s3")
            .time(time)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let mut url = format!("https://bkt.s3.{region}.amazonaws.com{path}");
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(b""),
        )
        .unwrap();
        let (instructions, _) = sign(request, &params).unwrap().into_parts();
        let (added, _) = instructions.into_parts();
        added.into_iter().map(|h| (h.name().to_string(), h.value().to_string())).collect()
    }

    fn header_value() -> impl Strategy<Value = String> {
        // Printable ASCII with spaces (leading, trailing, in runs): what canonicalisation trims.
        "[ -~]{0,40}"
    }

    /// `amz_date` by the SDK's own date formatting, as it was computed before.
    fn amz_date_by_the_sdk(time: SystemTime) -> String {
        let t = aws_smithy_types::date_time::DateTime::from(time);
        let s = t.fmt(aws_smithy_types::date_time::Format::DateTime).unwrap();
        let digits: String = s.chars().take(19).filter(|c| c.is_ascii_digit() || *c == 'T').collect();
        format!("{digits}Z")
    }

    #[test]
    fn dates_on_the_edges_of_days_months_years_and_leap_days() {
        // 2000-02-29 23:59:59, 2000-03-01 00:00:00, 2100-03-01 (no leap day), 1970, 2013-05-24.
        for secs in [951_868_799, 951_868_800, 4_107_542_400, 0, 1_369_353_600, 4_102_444_799] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(amz_date(t), amz_date_by_the_sdk(t), "{secs}");
        }
        assert_eq!(amz_date(may_24_2013()), "20130524T000000Z");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn dates_are_the_sdks(secs in 0u64..8_000_000_000, nanos in 0u32..1_000_000_000) {
            let t = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            prop_assert_eq!(amz_date(t), amz_date_by_the_sdk(t));
        }

        /// The invariant: the same headers as `aws-sigv4`, on random keys (percent-encoded
        /// as the lean client sends them), query parameters (a listing's), copy headers,
        /// credentials, regions and times.
        #[test]
        fn signs_exactly_as_the_sdks_signer(
            method in prop_oneof![Just("PUT"), Just("GET")],
            key in "\\PC{1,30}",
            params in proptest::collection::btree_map(prop_oneof![
                Just("list-type"), Just("prefix"), Just("start-after"), Just("max-keys"), Just("continuation-token"),
            ], "\\PC{0,20}", 0..4),
            source in "\\PC{1,30}",
            extra in proptest::collection::vec((prop_oneof![
                Just("x-amz-copy-source-if-match"), Just("x-amz-storage-class"),
                Just("x-amz-server-side-encryption"), Just("x-amz-request-payer"),
            ], header_value()), 0..4),
            token in proptest::option::of("[A-Za-z0-9+/=]{1,60}"),
            region in prop_oneof![Just("us-east-1"), Just("eu-west-1"), Just("ap-southeast-2")],
            secs in 0u64..4_000_000_000,
        ) {
            let path = format!("/{}", percent_encoding::utf8_percent_encode(&key, super::super::multipart::KEY_ENCODE));
            let copy_source = super::super::multipart::copy_source_header("src", &source);
            let mut headers: Vec<(String, String)> = vec![("x-amz-copy-source".into(), copy_source)];
            for (name, value) in extra {
                if !headers.iter().any(|(n, _)| n == name) {
                    headers.push((name.to_string(), value));
                }
            }
            let keys = Keys { access_key_id: "AKID", secret: "the/secret+key", session_token: token.as_deref() };
            let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let signer = Signer::new(region, "s3");
            let borrowed: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let host = format!("bkt.s3.{region}.amazonaws.com");
            let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let q = query(&params);
            let req = Request { method, host: &host, path: &path, query: &q, headers: &borrowed, payload_sha256: EMPTY_SHA256 };
            let mut ours: Vec<(String, String)> = signer
                .sign(&req, &keys, time)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let mut theirs = reference(method, &path, &q, &headers, &keys, region, time);
            ours.sort();
            theirs.sort();
            prop_assert_eq!(ours, theirs);
        }
    }
}
