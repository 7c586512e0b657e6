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
//! Every SDK client makes ONE attempt per call: retries are the engine's alone
//! ([`crate::error::RetryPolicy`], which reads `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE`), so
//! an attempt budget is never multiplied by the SDK's. Each adapter call is therefore
//! retried by its caller or inside the adapter, never both: the engine wraps object-store
//! calls; the DynamoDB and SQS adapters wrap their reads and single writes themselves.

pub mod dynamo;
pub mod s3;
pub mod sqs;

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig};

use crate::error::Error;

/// The SDK's own retries: none (one attempt per call; see the module docs). Set explicitly,
/// this also keeps the SDK from reading `AWS_MAX_ATTEMPTS` itself and multiplying it.
fn sdk_retries() -> RetryConfig {
    RetryConfig::disabled()
}

/// The loaded AWS configuration, shared by every client.
#[derive(Clone, Debug)]
pub struct AwsContext {
    pub sdk: SdkConfig,
    /// S3's custom endpoint: `AWS_ENDPOINT_URL_S3`, else the global one.
    s3_endpoint: Option<String>,
    /// Path-style S3 addressing (`bucket` in the path, not the host name).
    path_style: bool,
}

/// S3's custom endpoint from the environment (`var` looks a variable up) and the global
/// endpoint the SDK loaded: `AWS_ENDPOINT_URL_S3` wins, and
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` drops both, as in the SDK.
fn s3_endpoint(var: &impl Fn(&str) -> Option<String>, global: Option<&str>) -> Option<String> {
    if var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    var("AWS_ENDPOINT_URL_S3").filter(|v| !v.is_empty()).or_else(|| global.map(str::to_string))
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
    path_style(&|k: &str| std::env::var(k).ok(), false).map(|_| ())
}

impl AwsContext {
    /// Loads the standard chain. Never fails: missing credentials surface on first use (an
    /// invalid path-style setting is refused at start-up by [`check_env`]).
    pub async fn load() -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).retry_config(sdk_retries()).load().await;
        let var = |k: &str| std::env::var(k).ok();
        let s3_endpoint = s3_endpoint(&var, sdk.endpoint_url());
        let path_style = path_style(&var, s3_endpoint.is_some()).unwrap_or(s3_endpoint.is_some());
        AwsContext { sdk, s3_endpoint, path_style }
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
        AwsContext { sdk, s3_endpoint: Some(url.to_string()), path_style: true }
    }

    /// S3's custom endpoint, if one is configured (an emulator, a private S3).
    pub fn endpoint_url(&self) -> Option<&str> {
        self.s3_endpoint.as_deref()
    }

    /// Identifies the service: two stores with the same value can copy server-side.
    pub fn endpoint_id(&self) -> String {
        match self.endpoint_url() {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("aws:{}", self.sdk.region().map(|r| r.as_ref()).unwrap_or("us-east-1")),
        }
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let mut b = aws_sdk_s3::config::Builder::from(&self.sdk).force_path_style(self.path_style);
        if let Some(url) = &self.s3_endpoint {
            b = b.endpoint_url(url);
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
    use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_string);
    classify(status, code.as_deref(), format!("{what}: {}", DisplayErrorContext(&e)))
}

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

#[cfg(test)]
mod tests {
    use super::{classify, path_style, s3_endpoint};
    use crate::error::Error;

    #[test]
    fn s3_endpoint_and_path_style_are_settings_of_their_own() {
        fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        }
        let s3 = Some("http://s3.local:9000".to_string());
        let own = env(&[("AWS_ENDPOINT_URL_S3", "http://s3.local:9000")]);
        assert_eq!(s3_endpoint(&own, None), s3, "the per-service variable alone is enough");
        assert_eq!(s3_endpoint(&own, Some("http://other:1")), s3, "and wins over the global one");
        assert_eq!(s3_endpoint(&env(&[]), Some("http://g:1")).as_deref(), Some("http://g:1"));
        let ignored = env(&[("AWS_ENDPOINT_URL_S3", "http://x:1"), ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")]);
        assert_eq!(s3_endpoint(&ignored, Some("http://g:1")), None);

        assert!(path_style(&env(&[]), true).unwrap(), "custom endpoint: path style by default");
        assert!(!path_style(&env(&[]), false).unwrap(), "AWS itself: virtual hosts by default");
        assert!(!path_style(&env(&[("BUCKETCLONE_S3_PATH_STYLE", "false")]), true).unwrap());
        assert!(path_style(&env(&[("BUCKETCLONE_S3_PATH_STYLE", "TRUE")]), false).unwrap());
        assert!(matches!(path_style(&env(&[("BUCKETCLONE_S3_PATH_STYLE", "yes")]), true), Err(Error::Invalid(_))));
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
        ];
        for (status, code, want) in cases {
            assert_eq!(kind(*status, *code), *want, "status {status:?}, code {code:?}");
        }
    }
}
