//! AWS backends: SQS ([`sqs::SqsQueue`]), DynamoDB ([`dynamo::DynamoJobStore`]) and S3
//! ([`s3::S3Store`]). The only place in the code base that names `aws_sdk_*` types.
//!
//! Region, credentials and endpoint come from the standard AWS chain (`AWS_PROFILE`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, and per service `AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_DYNAMODB`), so pointing at an emulator needs no
//! code path of its own, and S3 can sit on one endpoint while SQS and DynamoDB sit on
//! another. S3 uses path-style addressing on a custom S3 endpoint unless
//! `BUCKETCLONE_S3_PATH_STYLE=false` (and on AWS itself only with `=true`).
//!
//! A location can override the chain with its own [`Connection`] (profile, region,
//! endpoint, path style, requester pays): [`AwsContext::load_for`]. A bucket without a
//! configured region gets a client for the region it reports (see [`s3::S3Store::open`]).
//!
//! Every SDK client makes ONE attempt per call: retries are the engine's alone
//! ([`crate::error::RetryPolicy`], which reads `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE`), so
//! an attempt budget is never multiplied by the SDK's. Each adapter call is therefore
//! retried by its caller or inside the adapter, never both: the engine wraps object-store
//! calls; the DynamoDB and SQS adapters wrap their reads and single writes themselves.

pub mod dynamo;
pub mod s3;
pub mod sqs;
pub mod tls;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig};
use aws_sdk_s3::error::DisplayErrorContext;

use crate::error::Error;
use crate::model::{Connection, configured_s3_endpoint};

/// The SDK's own retries: none (one attempt per call; see the module docs). Set explicitly,
/// this also keeps the SDK from reading `AWS_MAX_ATTEMPTS` itself and multiplying it.
fn sdk_retries() -> RetryConfig {
    RetryConfig::disabled()
}

/// `loader` with an HTTPS client that also trusts `AWS_CA_BUNDLE`'s certificates, when it
/// is set ([`tls`]). A bundle that cannot be read was refused at start-up ([`check_env`]);
/// here it is logged and the SDK's default client kept.
fn with_ca_bundle(loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
    match tls::ca_bundle() {
        Ok(Some(b)) => loader.http_client(b.sdk_http_client()),
        Ok(None) => loader,
        Err(e) => {
            tracing::warn!(error = %e, "AWS_CA_BUNDLE ignored");
            loader
        }
    }
}

/// A loaded AWS configuration: the process's standard chain, or one location's
/// [`Connection`] over it.
#[derive(Clone, Debug)]
pub struct AwsContext {
    pub sdk: SdkConfig,
    /// S3's custom endpoint: the connection's, else `AWS_ENDPOINT_URL_S3`, else the global one.
    s3_endpoint: Option<String>,
    /// Path-style S3 addressing (`bucket` in the path, not the host name).
    path_style: bool,
    /// The profile the credentials come from, when one was named (part of the identity
    /// that decides whether two stores can copy server-side).
    profile: Option<String>,
    /// Send `x-amz-request-payer: requester` (Requester Pays buckets).
    pub request_payer: bool,
}

/// Path-style S3 addressing: `BUCKETCLONE_S3_PATH_STYLE` (`true` or `false`), by default on
/// exactly when S3 has a custom endpoint (emulators and most S3-compatible servers need it).
fn path_style(var: &impl Fn(&str) -> Option<String>, custom_endpoint: bool) -> crate::error::Result<bool> {
    match var("BUCKETCLONE_S3_PATH_STYLE").as_deref() {
        None | Some("") => Ok(custom_endpoint),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Error::invalid(format!("BUCKETCLONE_S3_PATH_STYLE={v}: expected true or false"))),
    }
}

/// Checks the S3 settings of the environment, so a typo stops a command before any work.
pub fn check_env() -> crate::error::Result<()> {
    let var = |k: &str| std::env::var(k).ok();
    path_style(&var, false)?;
    tls::ca_bundle()?;
    s3::lean::SETTINGS.iter().try_for_each(|name| s3::lean::enabled(&var, name).map(|_| ()))
}

impl AwsContext {
    /// Loads the standard chain. Never fails: missing credentials surface on first use (an
    /// invalid path-style setting is refused at start-up by [`check_env`]).
    pub async fn load() -> Self {
        let sdk =
            with_ca_bundle(aws_config::defaults(BehaviorVersion::latest()).retry_config(sdk_retries())).load().await;
        Self::from_sdk(sdk, &Connection::default())
    }

    /// Loads the standard chain with `conn`'s profile, region and endpoint over it. A named
    /// profile must yield credentials now: a typo is `Invalid` here, not a retried failure
    /// on every request later.
    pub async fn load_for(conn: &Connection) -> crate::error::Result<Self> {
        let mut loader = with_ca_bundle(aws_config::defaults(BehaviorVersion::latest()).retry_config(sdk_retries()));
        if let Some(p) = &conn.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &conn.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        if let Some(p) = &conn.profile {
            use aws_sdk_s3::config::ProvideCredentials;
            let provider =
                sdk.credentials_provider().ok_or_else(|| Error::invalid(format!("profile {p}: no credentials")))?;
            provider.provide_credentials().await.map_err(|e| {
                Error::invalid(format!("profile {p}: no usable credentials ({})", DisplayErrorContext(&e)))
            })?;
        }
        Ok(Self::from_sdk(sdk, conn))
    }

    fn from_sdk(sdk: SdkConfig, conn: &Connection) -> Self {
        let var = |k: &str| std::env::var(k).ok();
        let ignore = var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let global = sdk.endpoint_url().filter(|_| !ignore).map(str::to_string);
        let s3_endpoint = conn.endpoint_url.clone().or_else(|| configured_s3_endpoint(&var).or(global));
        let path_style =
            conn.path_style.unwrap_or_else(|| path_style(&var, s3_endpoint.is_some()).unwrap_or(s3_endpoint.is_some()));
        AwsContext { sdk, s3_endpoint, path_style, profile: conn.profile.clone(), request_payer: conn.request_payer }
    }

    /// A context for an emulator at `url` (moto, s3s-fs) with fixed test credentials and
    /// region us-east-1, ignoring the environment. For tests and benchmarks.
    pub async fn for_emulator(url: &str) -> Self {
        let creds = aws_sdk_s3::config::Credentials::new("test", "test", None, None, "emulator");
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(sdk_retries())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(url)
            .credentials_provider(creds)
            .load()
            .await;
        AwsContext { sdk, s3_endpoint: Some(url.to_string()), path_style: true, profile: None, request_payer: false }
    }

    /// This context with `conn`'s region, endpoint, path style and requester-pays setting
    /// over it. A named profile means other credentials: that is [`AwsContext::load_for`].
    pub fn with_overrides(&self, conn: &Connection) -> Self {
        let mut c = match &conn.region {
            Some(r) => self.in_region(r),
            None => self.clone(),
        };
        if let Some(url) = &conn.endpoint_url {
            c.s3_endpoint = Some(url.clone());
            c.path_style = path_style(&|k: &str| std::env::var(k).ok(), true).unwrap_or(true);
        }
        c.path_style = conn.path_style.unwrap_or(c.path_style);
        c.request_payer |= conn.request_payer;
        c
    }

    /// This context in another region (a bucket's own, once discovered).
    pub fn in_region(&self, region: &str) -> Self {
        let sdk = self.sdk.to_builder().region(aws_config::Region::new(region.to_string())).build();
        AwsContext { sdk, ..self.clone() }
    }

    /// The region requests are signed for.
    pub fn region(&self) -> Option<&str> {
        self.sdk.region().map(|r| r.as_ref())
    }

    /// S3's custom endpoint, if one is configured (an emulator, a private S3).
    pub fn endpoint_url(&self) -> Option<&str> {
        self.s3_endpoint.as_deref()
    }

    /// Identifies the service and the credentials: two stores with the same value can copy
    /// server-side (the destination's client can read the source). Regions are not part of
    /// it: S3 copies across regions.
    pub fn endpoint_id(&self) -> String {
        let service = match self.endpoint_url() {
            Some(u) => u.trim_end_matches('/').to_ascii_lowercase(),
            None => "aws".to_string(),
        };
        match &self.profile {
            Some(p) => format!("{service} profile {p}"),
            None => service,
        }
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let mut b = aws_sdk_s3::config::Builder::from(&self.sdk).force_path_style(self.path_style);
        if let Some(url) = &self.s3_endpoint {
            b = b.endpoint_url(url);
            if plain_http(url, &|k: &str| std::env::var(k).ok()) {
                b = b.http_client(plain_http_client());
            }
        }
        if self.request_payer {
            b = b.interceptor(RequesterPays);
        }
        aws_sdk_s3::Client::from_conf(b.build())
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk)
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }
}

/// Whether S3's custom `endpoint` is plain `http://` with no proxy configured: its SDK client
/// then needs no TLS. The default client loads the machine's root certificates (some 150
/// files read and parsed, about 6 ms of CPU) on its first request, before a clone's first
/// page; for an emulator, or a MinIO on the local network, for nothing.
fn plain_http(endpoint: &str, var: &impl Fn(&str) -> Option<String>) -> bool {
    endpoint.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        && !s3::lean::PROXY_VARS.iter().any(|v| var(v).is_some_and(|s| !s.is_empty()))
}

/// The SDK's HTTP client without TLS (its connector settings and timeouts as the default
/// one's), one per process.
fn plain_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    static CLIENT: std::sync::OnceLock<aws_smithy_runtime_api::client::http::SharedHttpClient> =
        std::sync::OnceLock::new();
    CLIENT.get_or_init(|| aws_smithy_http_client::Builder::new().build_http()).clone()
}

/// Adds `x-amz-request-payer: requester` to every S3 request of a client, before it is
/// signed: one place for every operation, present and future, instead of a setter on each.
#[derive(Debug)]
struct RequesterPays;

impl aws_sdk_s3::config::Intercept for RequesterPays {
    fn name(&self) -> &'static str {
        "RequesterPays"
    }

    fn modify_before_signing(
        &self,
        ctx: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        ctx.request_mut().headers_mut().insert("x-amz-request-payer", "requester");
        Ok(())
    }
}

/// Classifies an SDK error by its HTTP status and service error code.
///
/// 404/NoSuchBucket/NoSuchKey -> `NotFound`; 403/AccessDenied -> `AccessDenied`; 409 and
/// conditional-check failures -> `Conflict`; 429, 503, SlowDown and throttling ->
/// `Throttled`; other 5xx, transaction conflicts, timeouts and I/O -> `Transient`; other
/// 4xx -> `Permanent`.
pub fn classify(status: Option<u16>, code: Option<&str>, message: String) -> Error {
    let code = code.unwrap_or("");
    match (status, code) {
        (
            _,
            "NoSuchBucket"
            | "NoSuchKey"
            | "NotFound"
            | "ResourceNotFoundException"
            | "AWS.SimpleQueueService.NonExistentQueue"
            | "QueueDoesNotExist",
        ) => Error::NotFound(message),
        // S3's answer to reading an archived object (403 InvalidObjectState; the older
        // ObjectNotInActiveTierError): checked before the 403 it comes with.
        (_, "InvalidObjectState" | "ObjectNotInActiveTierError") => Error::Archived(message),
        (_, "AccessDenied" | "AccessDeniedException" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
            Error::AccessDenied(message)
        }
        (_, "ConditionalCheckFailedException" | "TransactionCanceledException" | "PreconditionFailed") => {
            Error::Conflict(message)
        }
        (
            _,
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "TooManyRequestsException",
        ) => Error::Throttled(message),
        (
            _,
            "InternalError"
            | "ServiceUnavailable"
            // A clock off by minutes: the next attempt is signed with the service's time.
            | "RequestTimeTooSkewed"
            // Temporary credentials that ran out in flight: the next attempt fetches new ones.
            | "ExpiredToken"
            | "TransactionInProgressException"
            | "TransactionConflictException"
            | "TransactionConflict",
        ) => Error::Transient(message),
        (Some(404), _) => Error::NotFound(message),
        (Some(403), _) => Error::AccessDenied(message),
        (Some(409 | 412), _) => Error::Conflict(message),
        (Some(429 | 503), _) => Error::Throttled(message),
        (Some(s), _) if s >= 500 => Error::Transient(message),
        (Some(_), _) => Error::Permanent(message),
        // No response at all: dispatch failure, timeout, connection reset.
        (None, _) => Error::Transient(message),
    }
}

/// Converts any SDK error (S3, SQS or DynamoDB: they share the smithy error type) into an
/// [`Error`] (see [`classify`]), prefixed with `what`.
pub fn sdk_error<E>(what: &str, e: aws_smithy_runtime_api::client::result::SdkError<E, HttpResponse>) -> Error
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_string);
    let mut msg = format!("{what}: {}", DisplayErrorContext(&e));
    if msg.contains("invalid peer certificate") {
        msg.push_str(" [the endpoint's certificate is not trusted: if a private CA signed it, set AWS_CA_BUNDLE to that CA's PEM file]");
    }
    classify(status, code.as_deref(), msg)
}

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

#[cfg(test)]
pub(crate) mod tests {
    use super::{classify, path_style, plain_http};
    use crate::error::Error;

    #[test]
    fn only_a_plain_http_endpoint_without_a_proxy_goes_without_tls() {
        let none = |_: &str| None;
        assert!(plain_http("http://127.0.0.1:9000", &none));
        assert!(plain_http("HTTP://minio:9000/", &none));
        assert!(!plain_http("https://minio:9000", &none));
        assert!(!plain_http("s3.amazonaws.com", &none));
        let proxied = |k: &str| (k == "HTTP_PROXY").then(|| "http://proxy:3128".to_string());
        assert!(!plain_http("http://127.0.0.1:9000", &proxied));
    }

    #[test]
    fn path_style_is_a_setting_of_its_own() {
        fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        }
        assert!(path_style(&env(&[]), true).unwrap(), "custom endpoint: path style by default");
        assert!(!path_style(&env(&[]), false).unwrap(), "AWS itself: virtual hosts by default");
        assert!(!path_style(&env(&[("BUCKETCLONE_S3_PATH_STYLE", "false")]), true).unwrap());
        assert!(path_style(&env(&[("BUCKETCLONE_S3_PATH_STYLE", "TRUE")]), false).unwrap());
        assert!(matches!(path_style(&env(&[("BUCKETCLONE_S3_PATH_STYLE", "yes")]), true), Err(Error::Invalid(_))));
    }

    /// A one-shot server: its URL, and the head (lowercased) of the one request it serves,
    /// which it answers 200 with `body`.
    pub(crate) async fn serve_one(body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        let (url, server) = serve(vec![answer]).await;
        (url, tokio::spawn(async move { server.await.unwrap().remove(0) }))
    }

    /// A server answering its requests, on any connections (kept alive), with `answers`
    /// (whole HTTP responses) in turn: its URL, and the heads (lowercased) of the requests in
    /// the order they came.
    pub(crate) async fn serve(answers: Vec<String>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        use std::sync::{Arc, Mutex};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let total = answers.len();
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done) = tokio::sync::mpsc::channel::<()>(total.max(1));
        let server = tokio::spawn(async move {
            let mut answered = 0;
            while answered < total {
                tokio::select! {
                    Some(()) = done.recv() => answered += 1,
                    Ok((mut sock, _)) = listener.accept() => {
                        let (answers, heads, done_tx) = (answers.clone(), heads.clone(), done_tx.clone());
                        tokio::spawn(async move {
                            loop {
                                let mut head = Vec::new();
                                let mut buf = [0u8; 1];
                                while !head.ends_with(b"\r\n\r\n") {
                                    match sock.read(&mut buf).await {
                                        Ok(n) if n > 0 => head.push(buf[0]),
                                        _ => return,
                                    }
                                }
                                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                                let Some(answer) = answers.lock().unwrap().next() else { return };
                                heads.lock().unwrap().push(head);
                                sock.write_all(answer.as_bytes()).await.unwrap();
                                let _ = done_tx.send(()).await;
                            }
                        });
                    }
                }
            }
            std::mem::take(&mut *heads.lock().unwrap())
        });
        (url, server)
    }

    /// The request head of the first request a client sends to a one-shot server that
    /// answers 200 with an empty body.
    async fn first_request_head(send: impl AsyncFnOnce(String)) -> String {
        let (url, server) = serve_one("").await;
        send(url).await;
        server.await.unwrap()
    }

    #[tokio::test]
    async fn requester_pays_is_on_every_request_of_its_connection_only() {
        use crate::model::Connection;
        let payer = Connection { request_payer: true, ..Default::default() };
        let head = first_request_head(async |url: String| {
            let ctx = super::AwsContext::for_emulator(&url).await.with_overrides(&payer);
            let _ = ctx.s3().head_object().bucket("b").key("k").send().await;
        })
        .await;
        assert!(head.contains("x-amz-request-payer: requester"), "{head}");
        assert!(head.contains("x-amz-request-payer;") || head.contains("x-amz-request-payer,"), "signed: {head}");
        let plain = first_request_head(async |url: String| {
            let ctx = super::AwsContext::for_emulator(&url).await;
            let _ = ctx.s3().list_objects_v2().bucket("b").send().await;
        })
        .await;
        assert!(!plain.contains("x-amz-request-payer"), "{plain}");
    }

    #[tokio::test]
    async fn a_connection_overrides_region_endpoint_and_path_style() {
        use crate::model::Connection;
        let base = super::AwsContext::for_emulator("http://127.0.0.1:9").await;
        let conn = Connection {
            region: Some("eu-west-1".into()),
            endpoint_url: Some("https://minio.example:9000".into()),
            ..Default::default()
        };
        let c = base.with_overrides(&conn);
        assert_eq!((c.region(), c.endpoint_url()), (Some("eu-west-1"), Some("https://minio.example:9000")));
        assert!(c.path_style, "a custom endpoint is addressed path-style by default");
        let vhost = base.with_overrides(&Connection { path_style: Some(false), ..conn });
        assert!(!vhost.path_style);
        assert_ne!(c.endpoint_id(), base.endpoint_id(), "another service: no server-side copy between them");
        assert_eq!(base.with_overrides(&Connection::default()).endpoint_id(), base.endpoint_id());
    }

    /// The kind each AWS answer maps to, which decides what happens to the work.
    #[test]
    fn answers_classify_by_code_then_status() {
        let kind = |status: Option<u16>, code: Option<&str>| match classify(status, code, "x".into()) {
            Error::Throttled(_) => "throttled",
            Error::Transient(_) => "transient",
            Error::NotFound(_) => "not-found",
            Error::AccessDenied(_) => "denied",
            Error::Conflict(_) => "conflict",
            Error::Permanent(_) => "permanent",
            Error::Archived(_) => "archived",
            other => panic!("unexpected {other:?}"),
        };
        let cases: &[(Option<u16>, Option<&str>, &str)] = &[
            (Some(503), Some("SlowDown"), "throttled"),
            (Some(503), None, "throttled"),
            (Some(429), None, "throttled"),
            (Some(400), Some("ThrottlingException"), "throttled"),
            (Some(400), Some("ProvisionedThroughputExceededException"), "throttled"),
            (Some(400), Some("TransactionConflict"), "transient"),
            (Some(500), Some("InternalError"), "transient"),
            (Some(403), Some("RequestTimeTooSkewed"), "transient"),
            (Some(400), Some("ExpiredToken"), "transient"),
            (Some(502), None, "transient"),
            (None, None, "transient"),
            (Some(404), Some("NoSuchBucket"), "not-found"),
            (Some(400), Some("ResourceNotFoundException"), "not-found"),
            (Some(403), Some("AccessDenied"), "denied"),
            (Some(403), None, "denied"),
            (Some(412), Some("PreconditionFailed"), "conflict"),
            (Some(400), Some("ConditionalCheckFailedException"), "conflict"),
            (Some(400), Some("ValidationException"), "permanent"),
            (Some(301), Some("PermanentRedirect"), "permanent"),
            (Some(403), Some("InvalidObjectState"), "archived"),
            (Some(403), Some("ObjectNotInActiveTierError"), "archived"),
        ];
        for (status, code, want) in cases {
            assert_eq!(kind(*status, *code), *want, "status {status:?}, code {code:?}");
        }
    }
}
