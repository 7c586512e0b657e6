//! A lean client for the requests a clone makes per object and per page: CopyObject and
//! ListObjectsV2.
//!
//! Profiled on the seed set (`bench/RESULTS.notes.md`), most of bucketclone's CPU was the
//! SDK's generic request pipeline, paid on every request: runtime components merged,
//! interceptors run, the endpoint resolved, retry classifiers consulted, the answer
//! deserialised through layers of type-erased boxes. A copy is a `PUT` with an empty body and
//! a few headers, whose answer is a few hundred bytes; a listing is a `GET` whose answer is
//! read for each object's key, size, ETag and class ([`super::listing`]). Here both are
//! signed by [`super::sigv4`] (SigV4 with the day's signing key kept; a property test holds
//! it to the SDK's signer) and sent by [`super::wire`]: HTTP/1.1 written and read by the
//! request's own future, over rustls for `https` (the SDK's TLS stack).
//!
//! It is used only where it sends the request the SDK would send; everything else goes
//! through the SDK as before ([`Lean::for_bucket`] says `None`):
//! - the bucket's endpoint is resolved once, by the SDK's own S3 endpoint rules, and taken
//!   only when those rules sign it with plain SigV4 for `s3` and add no header (S3 Express,
//!   multi-region access points, Outposts and the like stay with the SDK);
//! - credentials come from the context's provider, cached until a minute before they
//!   expire;
//! - no proxy is configured in the environment (`HTTPS_PROXY` and friends);
//! - `BUCKETCLONE_S3_LEAN_COPY=false` sends copies through the SDK,
//!   `BUCKETCLONE_S3_LEAN_LIST=false` listings.
//!
//! A listing answer the reader does not vouch for is read by the SDK ([`Listing::Unsure`]).
//! Answers are classified like the SDK's ([`classify`]: status, then S3's error code), and
//! an error S3 sends inside a `200` answer to a copy (it can fail a copy after sending the
//! status) is an error, retried like a 500, as the SDK does.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::config::ProvideCredentials;
use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_smithy_types::Document;
use aws_smithy_types::date_time::{DateTime, Format};
use bytes::Bytes;
use futures::FutureExt;
use percent_encoding::utf8_percent_encode;

use super::multipart::KEY_ENCODE;
use super::sigv4::{EMPTY_SHA256, Keys, Request, Signer};
use super::wire::{Origin, Pool};
use crate::backend::aws::{AwsContext, classify};
use crate::error::Error;

/// Credentials are fetched again this long before they expire (the SDK's own cache waits
/// until 10 s before). Credentials fetched in the last [`REFETCH_GAP`] are used until they
/// expire, so a provider handing out ones already inside this margin is not asked again
/// for every copy.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);
const REFETCH_GAP: Duration = Duration::from_secs(10);

/// Proxy settings the lean client does not follow: with any of them set, copies go through
/// the SDK.
pub(in crate::backend::aws) const PROXY_VARS: [&str; 6] =
    ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

/// The settings that turn the lean client off, for copies and for listings.
pub(in crate::backend::aws) const SETTINGS: [&str; 2] = ["BUCKETCLONE_S3_LEAN_COPY", "BUCKETCLONE_S3_LEAN_LIST"];

/// The setting `name` (one of [`SETTINGS`]): `true` (the default) or `false`.
pub(in crate::backend::aws) fn enabled(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
) -> crate::error::Result<bool> {
    match var(name).as_deref() {
        None | Some("") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Error::invalid(format!("{name}={v}: expected true or false"))),
    }
}

/// CopyObject into one bucket, and ListObjectsV2 of it.
pub(super) struct Lean {
    /// The connections copies and listings go over; `None`: that request goes through the
    /// SDK.
    copies: Option<Arc<Origin>>,
    listings: Option<Arc<Origin>>,
    /// Set once a listing answer was not one [`super::listing`] vouches for: the bucket's
    /// server answers in a form it does not know, so its listings go through the SDK.
    listings_unsure: std::sync::atomic::AtomicBool,
    provider: aws_sdk_s3::config::SharedCredentialsProvider,
    /// The credentials and when they were fetched. In an `Arc`: cloning `Credentials` itself
    /// allocates (a map of properties), and they are taken for every request.
    cached: RwLock<Option<(Arc<Credentials>, std::time::Instant)>>,
    refresh: tokio::sync::Mutex<()>,
    /// Signs for the endpoint rules' `signingRegion`.
    signer: Signer,
    /// Seconds the service's clock is ahead of ours, learnt from a `RequestTimeTooSkewed`
    /// answer (the SDK corrects its signing time the same way).
    skew: AtomicI64,
    /// The bucket's URL without a trailing `/`: `https://bucket.s3.us-east-1.amazonaws.com`,
    /// or `http://127.0.0.1:9000/bucket` path-style.
    base: String,
    /// `base`'s path (`""` or `/bucket`) and the `Host` header sent to it (the port only when
    /// not the scheme's default, as hyper sends it).
    base_path: String,
    host: String,
    request_payer: bool,
}

/// What to copy: the headers of one CopyObject.
pub(super) struct Copy<'a> {
    pub dst_key: &'a str,
    /// `x-amz-copy-source`, percent-encoded.
    pub source: &'a str,
    /// `x-amz-copy-source-if-match`, quoted.
    pub if_match: Option<&'a str>,
    pub storage_class: Option<&'a str>,
    pub sse: Option<&'a str>,
    pub sse_kms_key_id: Option<&'a str>,
}

/// A copy that did not happen: what the service answered (`status: None` when it did not).
#[derive(Debug, PartialEq)]
pub(super) struct Failure {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
}

impl Failure {
    /// No answer (connection refused or reset, timeout, no credentials): retried.
    fn no_answer(message: String) -> Self {
        Failure { status: None, code: None, message }
    }

    /// A request that cannot be made (a header value HTTP cannot carry): not retried.
    fn unsendable(message: String) -> Self {
        Failure { status: Some(400), code: None, message }
    }

    /// The engine's error for this failure (see [`classify`]), prefixed with `what`.
    pub fn into_error(self, what: &str) -> Error {
        classify(self.status, self.code.as_deref(), format!("{what}: {}", self.message))
    }
}

/// A listing page as the lean client read it.
pub(super) enum Listing {
    Page(super::listing::Listed),
    /// The answer was not one the reader vouches for, or an earlier one was not: list the
    /// page through the SDK.
    Unsure,
}

impl Lean {
    /// The lean client for `bucket` on `ctx`'s service, or `None` where both copies and
    /// listings must go through the SDK (see the module docs).
    pub fn for_bucket(ctx: &AwsContext, bucket: &str) -> Option<Self> {
        Self::for_bucket_in(ctx, bucket, &|k: &str| std::env::var(k).ok())
    }

    /// [`Lean::for_bucket`] with the environment's variables given by `var`.
    fn for_bucket_in(ctx: &AwsContext, bucket: &str, var: &impl Fn(&str) -> Option<String>) -> Option<Self> {
        let declined = |why: &str| {
            tracing::debug!(bucket, why, "copies into this bucket and its listings go through the SDK");
            None
        };
        let [copies, listings] = SETTINGS.map(|name| enabled(var, name).unwrap_or(true));
        if !copies && !listings {
            return declined("BUCKETCLONE_S3_LEAN_COPY=false and BUCKETCLONE_S3_LEAN_LIST=false");
        }
        if PROXY_VARS.iter().any(|v| var(v).is_some_and(|s| !s.is_empty())) {
            return declined("a proxy is configured");
        }
        let Some(provider) = ctx.sdk.credentials_provider() else {
            return declined("no credentials provider");
        };
        let Some((base, region)) = endpoint(ctx, bucket) else {
            return declined("the endpoint is not plain SigV4 for s3");
        };
        let Some((https, connect, port, host, base_path)) = origin_of(&base) else {
            return declined("the endpoint is not a URL");
        };
        let (copies, listings) = (
            copies.then(|| Origin::shared(https, &connect, port, Pool::Copies)).flatten(),
            listings.then(|| Origin::shared(https, &connect, port, Pool::Listings)).flatten(),
        );
        if copies.is_none() && listings.is_none() {
            return declined("no root certificates");
        }
        tracing::debug!(bucket, %base, %region, copies = copies.is_some(), listings = listings.is_some(), "the lean client");
        Some(Lean {
            copies,
            listings,
            listings_unsure: std::sync::atomic::AtomicBool::new(false),
            provider,
            cached: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            signer: Signer::new(&region, "s3"),
            skew: AtomicI64::new(0),
            base,
            base_path,
            host,
            request_payer: ctx.request_payer,
        })
    }

    /// Whether copies go through this client.
    pub fn copies(&self) -> bool {
        self.copies.is_some()
    }

    /// Sends one CopyObject; the copy's ETag as S3 answered it (quoted, as in S3's XML).
    /// Only when [`Lean::copies`].
    pub async fn copy(&self, c: &Copy<'_>) -> Result<Option<String>, Failure> {
        let Some(origin) = &self.copies else {
            return Err(Failure::unsendable("copies go through the SDK".into()));
        };
        let mut path = String::with_capacity(self.base_path.len() + 1 + c.dst_key.len() * 3 / 2);
        path.push_str(&self.base_path);
        path.push('/');
        path.extend(utf8_percent_encode(c.dst_key, KEY_ENCODE));
        let mut headers = vec![("x-amz-copy-source", c.source)];
        let optional = [
            ("x-amz-copy-source-if-match", c.if_match),
            ("x-amz-storage-class", c.storage_class),
            ("x-amz-server-side-encryption", c.sse),
            ("x-amz-server-side-encryption-aws-kms-key-id", c.sse_kms_key_id),
        ];
        headers.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
        let (status, body) = self.send(origin, "PUT", &path, "", headers).await?;
        answer(status, &body)
    }

    /// Lists up to `max_keys` keys under `prefix` after `start_after`, as the SDK's
    /// ListObjectsV2 with those parameters does. [`Listing::Unsure`] when listings go through
    /// the SDK: turned off, or an answer of this server's was not one the reader vouches for.
    pub async fn list(&self, prefix: &str, start_after: &str, max_keys: usize) -> Result<Listing, Failure> {
        let Some(origin) = self.listings.as_ref().filter(|_| !self.listings_unsure.load(Ordering::Relaxed)) else {
            return Ok(Listing::Unsure);
        };
        let max_keys = max_keys.to_string();
        let mut params = vec![("list-type", "2"), ("max-keys", max_keys.as_str())];
        params.extend([("prefix", prefix), ("start-after", start_after)].into_iter().filter(|(_, v)| !v.is_empty()));
        let query = super::sigv4::query(&params);
        // The bucket's root, with its `/` as the SDK sends it: `/bkt/` path-style, `/` else.
        let path = format!("{}/", self.base_path);
        let (status, body) = self.send(origin, "GET", &path, &query, Vec::new()).await?;
        if !(200..300).contains(&status) {
            return Err(answer(status, &body).err().unwrap_or_else(|| Failure::unsendable(format!("HTTP {status}"))));
        }
        let read = std::str::from_utf8(&body)
            .map_err(|_| super::listing::Unsure("not UTF-8".into()))
            .and_then(|xml| super::listing::read(xml, prefix, start_after));
        match read {
            Ok(page) => Ok(Listing::Page(page)),
            Err(super::listing::Unsure(why)) => {
                if !self.listings_unsure.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        base = %self.base,
                        why,
                        "a listing answer in a form bucketclone's reader does not know: this bucket's listings go through the SDK"
                    );
                }
                Ok(Listing::Unsure)
            }
        }
    }

    /// Signs and sends a request with an empty body (`path` as sent, `query` canonical, as
    /// [`super::sigv4::query`] builds it) to `origin`: the answer's status and body. A
    /// `RequestTimeTooSkewed` answer sets the clock skew later requests are signed with.
    async fn send(
        &self,
        origin: &Origin,
        method: &'static str,
        path: &str,
        query: &str,
        mut headers: Vec<(&'static str, &str)>,
    ) -> Result<(u16, Bytes), Failure> {
        let creds = self.credentials().await?;
        if self.request_payer {
            headers.push(("x-amz-request-payer", "requester"));
        }
        let now = SystemTime::now();
        let skew = self.skew.load(Ordering::Relaxed);
        let at =
            if skew >= 0 { now + Duration::from_secs(skew as u64) } else { now - Duration::from_secs(-skew as u64) };
        let keys = Keys {
            access_key_id: creds.access_key_id(),
            secret: creds.secret_access_key(),
            session_token: creds.session_token(),
        };
        let req = Request { method, host: &self.host, path, query, headers: &headers, payload_sha256: EMPTY_SHA256 };
        let signed = self.signer.sign(&req, &keys, at);
        let request = request(&req, &signed)?;
        let answer = origin
            .exchange(&request)
            .await
            .map_err(|super::wire::Failed(why)| Failure::no_answer(format!("no answer: {why}")))?;
        let (status, body) = (answer.status, answer.body);
        // The service's clock, kept only from an answer that may say ours is off (an error).
        if let Some(server) = answer.date.and_then(|d| DateTime::from_str(&d, Format::HttpDate).ok())
            && contains_bytes(&body, "<Code>RequestTimeTooSkewed</Code>")
        {
            let ours = DateTime::from(now).secs();
            tracing::warn!(
                skew_secs = server.secs() - ours,
                "this machine's clock is off; requests are signed with the service's time"
            );
            self.skew.store(server.secs() - ours, Ordering::Relaxed);
        }
        Ok((status, body))
    }

    /// The current credentials, fetched when missing or about to expire (one fetch at a
    /// time; the others wait for it).
    async fn credentials(&self) -> Result<Arc<Credentials>, Failure> {
        let fresh = || {
            let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
            let (creds, fetched) = cached.as_ref()?;
            let now = SystemTime::now();
            let margin = if fetched.elapsed() < REFETCH_GAP { Duration::ZERO } else { REFRESH_BEFORE };
            creds.expiry().is_none_or(|t| t > now + margin).then(|| creds.clone())
        };
        if let Some(c) = fresh() {
            return Ok(c);
        }
        let _one = self.refresh.lock().await;
        if let Some(c) = fresh() {
            return Ok(c);
        }
        let creds = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| Failure::no_answer(format!("no credentials: {}", DisplayErrorContext(&e))))?;
        let creds = Arc::new(creds);
        *self.cached.write().unwrap_or_else(|p| p.into_inner()) = Some((creds.clone(), std::time::Instant::now()));
        Ok(creds)
    }
}

/// The bytes of the HTTP/1.1 request `req` with its headers and the signer's `signed` ones
/// (names are lowercase constants), `Content-Length: 0` on a `PUT`. A value HTTP cannot
/// carry (a control character: a line break would end the header) is
/// [`Failure::unsendable`].
fn request(req: &Request<'_>, signed: &[(&'static str, String)]) -> Result<Vec<u8>, Failure> {
    let put = req.method == "PUT";
    let fields = req.headers.iter().map(|(k, v)| (*k, *v)).chain(signed.iter().map(|(k, v)| (*k, v.as_str())));
    let mut out = Vec::with_capacity(
        64 + req.path.len()
            + req.query.len()
            + req.host.len()
            + fields.clone().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>(),
    );
    let target_ok = req.path.bytes().chain(req.query.bytes()).all(|b| b.is_ascii_graphic());
    if !target_ok || !req.path.starts_with('/') {
        return Err(Failure::unsendable(format!("build the request: a path HTTP cannot carry: {:?}", req.path)));
    }
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.as_bytes());
    if !req.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(req.query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(req.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (k, v) in fields {
        // What `http::HeaderValue` accepts: visible characters, spaces, tabs, and bytes
        // past ASCII; no other control character.
        if v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Failure::unsendable(format!("build the request: a value HTTP cannot carry in {k}: {v:?}")));
        }
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if put {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// The parts of a bucket's base URL: `https`, the host to connect to (as in the URL), the
/// port, the `Host` header (the port only when not the scheme's default) and the path.
fn origin_of(url: &str) -> Option<(bool, String, u16, String, String)> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    let (https, default) = match uri.scheme_str() {
        Some("https") => (true, 443),
        Some("http") => (false, 80),
        _ => return None,
    };
    let port = uri.port_u16().unwrap_or(default);
    let header = if port == default { host.to_string() } else { format!("{host}:{port}") };
    Some((https, host.to_string(), port, header, uri.path().trim_end_matches('/').to_string()))
}

/// The bucket's base URL and signing region by the SDK's S3 endpoint rules, if those sign it
/// with plain SigV4 for `s3` and ask for no header of their own.
fn endpoint(ctx: &AwsContext, bucket: &str) -> Option<(String, String)> {
    let region = ctx.region()?.to_string();
    let params = Params::builder()
        .bucket(bucket)
        .region(region.clone())
        .use_fips(ctx.sdk.use_fips().unwrap_or(false))
        .use_dual_stack(ctx.sdk.use_dual_stack().unwrap_or(false))
        .set_endpoint(ctx.endpoint_url().map(str::to_string))
        .force_path_style(ctx.path_style)
        .build()
        .ok()?;
    let resolved = DefaultResolver::new().resolve_endpoint(&params).now_or_never()?.ok()?;
    if resolved.headers().next().is_some() {
        return None;
    }
    // The first scheme is the one the SDK signs with (newer SDKs list them apart, older ones
    // in the `authSchemes` property).
    let text = |v: Option<&Document>| match v {
        Some(Document::String(s)) => Some(s.clone()),
        _ => None,
    };
    let (name, signing_name, signing_region) =
        match (resolved.auth_schemes().first(), resolved.properties().get("authSchemes")) {
            (Some(s), _) => (Some(s.name().to_string()), text(s.get("signingName")), text(s.get("signingRegion"))),
            (None, Some(Document::Array(list))) => match list.first() {
                Some(Document::Object(s)) => {
                    (text(s.get("name")), text(s.get("signingName")), text(s.get("signingRegion")))
                }
                _ => return None,
            },
            _ => return None,
        };
    if name.as_deref() != Some("sigv4") || signing_name.as_deref() != Some("s3") {
        return None;
    }
    let region = signing_region.unwrap_or(region);
    Some((resolved.url().trim_end_matches('/').to_string(), region))
}

/// Whether `body` holds `needle`.
fn contains_bytes(body: &[u8], needle: &str) -> bool {
    body.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Reads CopyObject's answer (or an error answer to any request): the copy's ETag, or what
/// failed.
fn answer(status: u16, body: &[u8]) -> Result<Option<String>, Failure> {
    let xml = match std::str::from_utf8(body) {
        Ok(xml) => std::borrow::Cow::Borrowed(xml),
        Err(_) => String::from_utf8_lossy(body),
    };
    let ok = (200..300).contains(&status);
    // `<Error>` in a 200: S3 sent the status, then failed the copy.
    if ok && !xml.contains("<Error>") {
        return Ok(element(&xml, "ETag"));
    }
    let code = element(&xml, "Code");
    let message = element(&xml, "Message").unwrap_or_default();
    // A failure inside a 200 is an internal error, retried.
    let status = if ok { 500 } else { status };
    Err(Failure {
        status: Some(status),
        message: format!("{} (HTTP {status}): {message}", code.as_deref().unwrap_or("no error code")),
        code,
    })
}

/// The text of the first `<name>` element, entities decoded. S3's answers are flat and never
/// nest an element in one of the same name, so this is enough for the fields read here.
fn element(xml: &str, name: &str) -> Option<String> {
    let start = tag_at(xml, "<", name)? + name.len() + 2;
    let len = tag_at(&xml[start..], "</", name)?;
    Some(unescape(&xml[start..start + len]))
}

/// Where the first tag `{lead}{name}>` (`<ETag>`, `</ETag>`; `lead` is `<` or `</`) starts
/// in `xml`.
pub(super) fn tag_at(xml: &str, lead: &str, name: &str) -> Option<usize> {
    let after_lt = &lead[1..];
    memchr::memchr_iter(b'<', xml.as_bytes()).find(|&at| {
        xml.as_bytes()[at + 1..]
            .strip_prefix(after_lt.as_bytes())
            .and_then(|r| r.strip_prefix(name.as_bytes()))
            .is_some_and(|r| r.first() == Some(&b'>'))
    })
}

/// Decodes XML's predefined entities and character references; anything else is kept as is.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "quot" => Some('"'),
            "amp" => Some('&'),
            "apos" => Some('\''),
            "lt" => Some('<'),
            "gt" => Some('>'),
            _ => match entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                Some(hex) => u32::from_str_radix(hex, 16).ok().and_then(char::from_u32),
                None => entity.strip_prefix('#').and_then(|d| d.parse().ok()).and_then(char::from_u32),
            },
        };
        match ch {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request is written as HTTP/1.1 with its headers and the signer's, and a value that
    /// would break the request's lines (a control character) is refused, not sent.
    #[test]
    fn requests_are_written_whole_or_refused() {
        let headers = [("x-amz-copy-source", "/src/a%20b"), ("x-amz-copy-source-if-match", "\"e\"")];
        let req =
            Request { method: "PUT", host: "h:9", path: "/b/k", query: "", headers: &headers, payload_sha256: "" };
        let signed = [("authorization", "AWS4 x".to_string())];
        let bytes = request(&req, &signed).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "PUT /b/k HTTP/1.1\r\nhost: h:9\r\nx-amz-copy-source: /src/a%20b\r\n\
             x-amz-copy-source-if-match: \"e\"\r\nauthorization: AWS4 x\r\ncontent-length: 0\r\n\r\n"
        );
        let get = Request { method: "GET", query: "list-type=2", headers: &[], ..req };
        assert_eq!(request(&get, &[]).unwrap(), b"GET /b/k?list-type=2 HTTP/1.1\r\nhost: h:9\r\n\r\n");
        for bad in ["a\r\nx-evil: 1", "a\nb", "\x7f", "\0"] {
            let headers = [("x-amz-copy-source-if-match", bad)];
            let f = request(&Request { headers: &headers, ..req }, &[]).unwrap_err();
            assert_eq!(f.status, Some(400), "{bad:?}");
        }
        assert!(request(&Request { path: "/b/a b", ..req }, &[]).is_err(), "a space in the path");
        let tab = [("x-amz-meta", "a\tb é")];
        assert!(request(&Request { headers: &tab, ..req }, &[]).is_ok(), "tabs and non-ASCII are allowed");
    }

    #[test]
    fn hosts_carry_a_port_only_when_not_the_default() {
        let hp = |u: &str| origin_of(u).map(|(s, c, port, h, p)| format!("{s} {c}:{port} {h} {p}"));
        assert_eq!(hp("http://127.0.0.1:9000/bkt").as_deref(), Some("false 127.0.0.1:9000 127.0.0.1:9000 /bkt"));
        assert_eq!(
            hp("https://bkt.s3.eu-west-1.amazonaws.com").as_deref(),
            Some("true bkt.s3.eu-west-1.amazonaws.com:443 bkt.s3.eu-west-1.amazonaws.com ")
        );
        assert_eq!(hp("https://minio:443/b/").as_deref(), Some("true minio:443 minio /b"));
        assert_eq!(hp("http://minio:80/b").as_deref(), Some("false minio:80 minio /b"));
        assert_eq!(hp("http://minio/b").as_deref(), Some("false minio:80 minio /b"));
        assert_eq!(hp("ftp://x/b"), None);
    }

    #[test]
    fn reads_the_etag_or_the_failure() {
        let ok = br#"<?xml version="1.0" encoding="UTF-8"?>
<CopyObjectResult><LastModified>2026-12-03T00:00:00.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyObjectResult>"#;
        assert_eq!(answer(200, ok), Ok(Some("\"9b2cf535f27731c974343645a3985328\"".into())));
        let plain = b"<CopyObjectResult><ETag>\"abc\"</ETag></CopyObjectResult>";
        assert_eq!(answer(200, plain), Ok(Some("\"abc\"".into())));

        let kind = |status: u16, body: &[u8]| match answer(status, body).unwrap_err().into_error("copy") {
            Error::NotFound(_) => "not-found",
            Error::Conflict(_) => "conflict",
            Error::Transient(_) => "transient",
            Error::Throttled(_) => "throttled",
            Error::AccessDenied(_) => "denied",
            Error::Archived(_) => "archived",
            Error::Permanent(_) => "permanent",
            other => panic!("{other:?}"),
        };
        let error = |code: &str| format!("<Error><Code>{code}</Code><Message>m &amp; n</Message></Error>").into_bytes();
        assert_eq!(kind(404, &error("NoSuchKey")), "not-found");
        assert_eq!(kind(412, &error("PreconditionFailed")), "conflict");
        assert_eq!(kind(503, &error("SlowDown")), "throttled");
        assert_eq!(kind(403, &error("InvalidObjectState")), "archived");
        assert_eq!(kind(403, b""), "denied");
        assert_eq!(kind(400, &error("InvalidArgument")), "permanent");
        // An error after a 200 is an error, and retried.
        assert_eq!(kind(200, &error("InternalError")), "transient");
        assert_eq!(kind(200, &error("SomethingNew")), "transient");
        let f = answer(404, &error("NoSuchKey")).unwrap_err();
        assert_eq!(f.code.as_deref(), Some("NoSuchKey"));
        assert!(f.message.contains("m & n") && f.message.contains("HTTP 404"), "{}", f.message);
    }

    #[test]
    fn xml_entities_decode() {
        assert_eq!(unescape("&quot;a&quot; &lt;b&gt; &amp;amp; &#34;&#x22;&apos;"), "\"a\" <b> &amp; \"\"'");
        assert_eq!(unescape("a & b &unknown; &#xZZ; end&"), "a & b &unknown; &#xZZ; end&");
        assert_eq!(element("<A><B>x</B></A>", "B").as_deref(), Some("x"));
        assert_eq!(element("<A><B>x</A>", "B"), None);
    }

    #[tokio::test]
    async fn endpoints_follow_the_sdks_rules() {
        let emu = AwsContext::for_emulator("http://127.0.0.1:9100").await;
        assert_eq!(endpoint(&emu, "bkt"), Some(("http://127.0.0.1:9100/bkt".into(), "us-east-1".into())));
        let mut aws = emu.clone();
        aws.s3_endpoint = None;
        aws.path_style = false;
        let aws = aws.in_region("eu-west-1");
        assert_eq!(endpoint(&aws, "bkt"), Some(("https://bkt.s3.eu-west-1.amazonaws.com".into(), "eu-west-1".into())));
        // A name that cannot be a host name is addressed path-style, as the SDK does.
        assert_eq!(
            endpoint(&aws, "my.dotted.bucket"),
            Some(("https://s3.eu-west-1.amazonaws.com/my.dotted.bucket".into(), "eu-west-1".into()))
        );
        // S3 Express directory buckets sign otherwise: the SDK's.
        assert_eq!(endpoint(&aws, "bkt--euw1-az1--x-s3"), None);
    }

    #[tokio::test]
    async fn copies_and_listings_go_through_the_sdk_when_turned_off_or_behind_a_proxy() {
        let ctx = AwsContext::for_emulator("http://127.0.0.1:9100").await;
        let env = |name: &'static str, value: &'static str| move |k: &str| (k == name).then(|| value.to_string());
        let lean = |var: &dyn Fn(&str) -> Option<String>| Lean::for_bucket_in(&ctx, "b", &var);
        let both = lean(&|_: &str| None).unwrap();
        assert!(both.copies() && both.listings.is_some());
        assert!(lean(&env("HTTPS_PROXY", "")).is_some(), "empty: no proxy");
        let lists = lean(&env("BUCKETCLONE_S3_LEAN_COPY", "false")).unwrap();
        assert!(!lists.copies() && lists.listings.is_some());
        let copies = lean(&env("BUCKETCLONE_S3_LEAN_LIST", "false")).unwrap();
        assert!(copies.copies() && copies.listings.is_none());
        assert!(matches!(copies.list("", "", 10).await, Ok(Listing::Unsure)));
        let neither = |k: &str| SETTINGS.contains(&k).then(|| "false".to_string());
        assert!(lean(&neither).is_none());
        for proxy in PROXY_VARS {
            assert!(lean(&env(proxy, "http://proxy:3128")).is_none(), "{proxy}");
        }
    }

    /// Credentials are fetched once, again when they near their expiry, and a provider whose
    /// credentials are already near it is not asked again for every copy.
    #[tokio::test]
    async fn credentials_are_fetched_once_and_again_near_their_expiry() {
        use aws_credential_types::provider::future;
        use std::sync::atomic::AtomicUsize;
        #[derive(Debug)]
        struct Counting(std::sync::Arc<AtomicUsize>, Duration);
        impl ProvideCredentials for Counting {
            fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                self.0.fetch_add(1, Ordering::SeqCst);
                let expiry = SystemTime::now() + self.1;
                future::ProvideCredentials::ready(Ok(Credentials::new("AKID", "secret", None, Some(expiry), "test")))
            }
        }
        let ctx = AwsContext::for_emulator("http://127.0.0.1:9100").await;
        for (lifetime, calls) in [(Duration::from_secs(3600), 1), (Duration::from_secs(30), 1)] {
            let n = std::sync::Arc::new(AtomicUsize::new(0));
            let mut lean = Lean::for_bucket_in(&ctx, "b", &|_: &str| None).unwrap();
            lean.provider = aws_sdk_s3::config::SharedCredentialsProvider::new(Counting(n.clone(), lifetime));
            for _ in 0..5 {
                lean.credentials().await.unwrap();
            }
            assert_eq!(n.load(Ordering::SeqCst), calls, "credentials living {lifetime:?}");
            // Fetched more than REFETCH_GAP ago: long-lived ones are kept, short-lived
            // ones (inside the margin) are fetched again.
            if let Some((_, fetched)) = lean.cached.write().unwrap().as_mut() {
                *fetched -= REFETCH_GAP;
            }
            lean.credentials().await.unwrap();
            let again = if lifetime > REFRESH_BEFORE { 1 } else { 2 };
            assert_eq!(n.load(Ordering::SeqCst), again, "credentials living {lifetime:?}");
        }
    }

    /// A listing is sent as the SDK sends it (path-style, the query canonical) and read; an
    /// answer the reader does not vouch for turns the bucket's lean listings off, and the
    /// store lists that page through the SDK.
    #[tokio::test]
    async fn listings_are_read_or_left_to_the_sdk() {
        use crate::backend::aws::tests::serve;
        use crate::objstore::{ListRequest, ObjectStore};
        let ok = |body: &str| format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        let listing = |count: &str| {
            format!(
                "<ListBucketResult>{count}<IsTruncated>false</IsTruncated><Contents><Key>p/b</Key><Size>3</Size></Contents></ListBucketResult>"
            )
        };
        let (url, server) = serve(vec![ok(&listing("<KeyCount>1</KeyCount>"))]).await;
        let ctx = AwsContext::for_emulator(&url).await;
        let lean = Lean::for_bucket_in(&ctx, "bkt", &|_: &str| None).unwrap();
        let Ok(Listing::Page(page)) = lean.list("p/", "p/a b", 999).await else { panic!("not read") };
        assert_eq!(page.entries.iter().map(|e| (e.key.as_str(), e.size)).collect::<Vec<_>>(), [("p/b", 3)]);
        let head = server.await.unwrap().remove(0);
        assert!(
            head.starts_with("get /bkt/?list-type=2&max-keys=999&prefix=p%2f&start-after=p%2fa%20b http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("authorization: aws4-hmac-sha256"), "{head}");

        // No KeyCount: unsure, the page is listed through the SDK (the second request), and
        // later pages go straight to the SDK (the third).
        let sdk = ok(&listing(""));
        let (url, server) = serve(vec![ok(&listing("")), sdk.clone(), sdk]).await;
        let ctx = AwsContext::for_emulator(&url).await;
        let store = super::super::S3Store::new(&ctx, "bkt");
        let req = ListRequest { prefix: "p/".into(), start_after: String::new(), end: None, max_keys: 1000 };
        for _ in 0..2 {
            let page = store.list(&req).await.unwrap();
            assert_eq!(page.entries.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["p/b"]);
        }
        let heads = server.await.unwrap();
        assert_eq!(heads.len(), 3);
        assert!(heads.iter().all(|h| h.starts_with("get /bkt/?list-type=2&max-keys=1000&prefix=p%2f ")), "{heads:?}");
        assert!(heads[1].contains("x-amz-user-agent") && heads[2].contains("x-amz-user-agent"), "the SDK's: {heads:?}");
        assert!(!heads[0].contains("x-amz-user-agent"), "{heads:?}");

        // An error answer is the store's error.
        let missing =
            "HTTP/1.1 404 Not Found\r\ncontent-length: 53\r\n\r\n<Error><Code>NoSuchBucket</Code><Message/></Error>   ";
        let (url, _server) = serve(vec![missing.to_string()]).await;
        let store = super::super::S3Store::new(&AwsContext::for_emulator(&url).await, "bkt");
        assert!(matches!(store.list(&req).await, Err(Error::NotFound(_))));
    }

    #[test]
    fn the_setting_is_true_or_false() {
        for name in SETTINGS {
            let env = |v: &'static str| move |k: &str| (k == name).then(|| v.to_string());
            assert!(enabled(&|_: &str| None, name).unwrap());
            assert!(enabled(&env("TRUE"), name).unwrap());
            assert!(!enabled(&env("false"), name).unwrap());
            assert!(matches!(enabled(&env("off"), name), Err(Error::Invalid(e)) if e.contains(name)));
        }
    }
}
