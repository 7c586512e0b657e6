//! AWS backends: SQS ([`sqs::SqsQueue`]), DynamoDB ([`dynamo::DynamoJobStore`]) and S3
//! ([`s3::S3Store`]). The only place in the code base that names `aws_sdk_*` types.
//!
//! Region, credentials and endpoint come from the standard AWS chain (`AWS_PROFILE`,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`, ...), so pointing at an emulator needs no code path of
//! its own; with a custom endpoint S3 uses path-style addressing.
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
}

impl AwsContext {
    /// Loads the standard chain. Never fails: missing credentials surface on first use.
    pub async fn load() -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).retry_config(sdk_retries()).load().await;
        AwsContext { sdk }
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
        AwsContext { sdk }
    }

    /// The custom endpoint, if one is configured (an emulator, a private S3).
    pub fn endpoint_url(&self) -> Option<&str> {
        self.sdk.endpoint_url()
    }

    /// Identifies the service: two stores with the same value can copy server-side.
    pub fn endpoint_id(&self) -> String {
        match self.endpoint_url() {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("aws:{}", self.sdk.region().map(|r| r.as_ref()).unwrap_or("us-east-1")),
        }
    }

    pub fn s3(&self) -> aws_sdk_s3::Client {
        let mut b = aws_sdk_s3::config::Builder::from(&self.sdk);
        if self.endpoint_url().is_some() {
            b = b.force_path_style(true);
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
    use super::classify;
    use crate::error::Error;

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
