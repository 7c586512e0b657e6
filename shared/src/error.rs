//! The one error type of bucketclone. Each variant says what happened *and* what the caller
//! should do about it ([`Error::disposition`]), so retry, record-and-continue, dead-letter
//! and refuse decisions are made by matching, never by parsing messages. Transient errors
//! are retried in one layer, the engine's, by [`RetryPolicy`] (which says why there).

mod retries;

pub use retries::{RetryMode, RetryPolicy, retry, with_retries};

use std::fmt;

/// What went wrong, classified by what to do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A passing fault (network, throttling, 5xx, a lease race): retry with jittered backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// The service asked us to slow down (503 SlowDown, 429, throttling): transient, and a
    /// signal to lower concurrency.
    #[error("throttled: {0}")]
    Throttled(String),
    /// This object (or this one operation) cannot succeed: record it, go on with the rest.
    #[error("{0}")]
    Permanent(String),
    /// The thing asked for does not exist (a bucket, a key, a job).
    #[error("not found: {0}")]
    NotFound(String),
    /// The credentials in use may not do this.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Someone else already did it (a condition failed): treat as success.
    #[error("already done: {0}")]
    Conflict(String),
    /// Bad input or configuration: stop with this message; retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// The object's content is archived (Glacier Flexible Retrieval, Deep Archive, an
    /// Intelligent-Tiering archive tier): it cannot be read until it is restored.
    #[error("needs restore: {0}")]
    Archived(String),
}

/// What happens to the work an error interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again later: with backoff in place, or by letting the message come back.
    Retry,
    /// Someone else already did it: carry on as if this call had succeeded.
    Done,
    /// This one object (or key range) cannot be done: record a finding naming it, then go on
    /// with the rest of the page. The job ends `mismatch`, never `verified`.
    Finding,
    /// The unit of work itself is broken (a malformed message, an invariant refused by the
    /// job store): leave it unacknowledged, so the queue's redrive moves it to the
    /// dead-letter queue after its receive limit, where status shows it.
    DeadLetter,
    /// The request is unusable as given: refuse it with this message (a failed job).
    Refuse,
    /// This object cannot be read until it is restored from an archive: record a
    /// "needs restore" finding (a job may skip those, or ask for restores), go on.
    Restore,
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::Transient`] from anything printable.
    pub fn transient(e: impl fmt::Display) -> Self {
        Error::Transient(e.to_string())
    }
    /// Builds an [`Error::Permanent`] from anything printable.
    pub fn permanent(e: impl fmt::Display) -> Self {
        Error::Permanent(e.to_string())
    }
    /// Builds an [`Error::Invalid`] from anything printable.
    pub fn invalid(e: impl fmt::Display) -> Self {
        Error::Invalid(e.to_string())
    }
    /// True when retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient(_) | Error::Throttled(_))
    }
    /// What to do with the work this error interrupted, for an error about one object or
    /// one range (a listing, a HEAD, a copy). Errors about a queue message or the job store
    /// are decided by their caller: there, anything but `Retry` and `Done` is `DeadLetter`.
    pub fn disposition(&self) -> Disposition {
        match self {
            Error::Transient(_) | Error::Throttled(_) => Disposition::Retry,
            Error::Conflict(_) => Disposition::Done,
            Error::Permanent(_) | Error::NotFound(_) | Error::AccessDenied(_) => Disposition::Finding,
            Error::Invalid(_) => Disposition::Refuse,
            Error::Archived(_) => Disposition::Restore,
        }
    }
    /// Adds context in front of the message, keeping the classification.
    pub fn context(self, what: impl fmt::Display) -> Self {
        match self {
            Error::Transient(m) => Error::Transient(format!("{what}: {m}")),
            Error::Throttled(m) => Error::Throttled(format!("{what}: {m}")),
            Error::Permanent(m) => Error::Permanent(format!("{what}: {m}")),
            Error::NotFound(m) => Error::NotFound(format!("{what}: {m}")),
            Error::AccessDenied(m) => Error::AccessDenied(format!("{what}: {m}")),
            Error::Conflict(m) => Error::Conflict(format!("{what}: {m}")),
            Error::Invalid(m) => Error::Invalid(format!("{what}: {m}")),
            Error::Archived(m) => Error::Archived(format!("{what}: {m}")),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Invalid(format!("malformed JSON: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound => Error::NotFound(e.to_string()),
            PermissionDenied => Error::AccessDenied(e.to_string()),
            Interrupted | TimedOut | WouldBlock => Error::Transient(e.to_string()),
            _ => Error::Permanent(e.to_string()),
        }
    }
}
