//! Retrying transient failures, in one layer: the engine's. The AWS SDK clients make one
//! attempt per call (`backend::aws`), so an attempt budget is never multiplied by another.
//!
//! Invariants: an operation runs at most `max_attempts` times in all; only transient errors
//! ([`Error::is_transient`]: `Transient`, `Throttled`) are retried; between attempts the
//! loop sleeps holding nothing the operation acquired (a caller that limits concurrency
//! takes its permit inside the operation, so a backing-off attempt frees its slot).

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use super::{Error, Result};

/// How a process retries transient failures: the attempt budget and the backoff, read once
/// from the standard AWS variables.
///
/// - `AWS_MAX_ATTEMPTS`: attempts in all, the first included (default 5, at least 1).
/// - `AWS_RETRY_MODE`: `standard` (the default) or `legacy`: full-jitter exponential
///   backoff, a random pause of up to 100 ms x 2^attempt, at most 5 s. `adaptive` is
///   accepted and backs off the same way: what the SDK's adaptive mode adds, slowing down
///   on throttling, the worker always does for copies and deletes with its adaptive copy
///   limit (AIMD), whatever the mode.
///
/// Why the engine's loop and not the SDK's: it also covers what the SDK cannot replay (a
/// streamed copy is a GET feeding a PUT; a failed PUT needs a new GET) and stores that are
/// not AWS (local directories), and it sees each `Throttled` attempt, which the copy limit
/// needs. With both layers, 5 SDK attempts inside 5 engine attempts made 25 tries of one
/// request, with two backoffs stacked, and the variables above were ignored.
///
/// Loops with their own fixed budget remain where the failure is not the request's own
/// (they still never run inside SDK retries): DynamoDB transactions meeting conflicts on a
/// hot job item, SQS batch entries failing one by one, and unprocessed batch items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    pub mode: RetryMode,
}

/// `AWS_RETRY_MODE`: which backoff a [`RetryPolicy`] uses (see there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMode {
    Standard,
    Legacy,
    Adaptive,
}

/// The process's policy, fixed at its first use (or by [`RetryPolicy::init`]).
static POLICY: OnceLock<RetryPolicy> = OnceLock::new();

const BASE_MS: u64 = 100;
const CAP_MS: u64 = 5_000;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: RetryPolicy::DEFAULT_ATTEMPTS, mode: RetryMode::Standard }
    }
}

impl RetryPolicy {
    /// Attempts when `AWS_MAX_ATTEMPTS` is not set.
    pub const DEFAULT_ATTEMPTS: u32 = 5;

    /// The policy the two variables' values ask for (`None` or empty: unset). `Invalid`,
    /// naming the variable, for anything but a whole number >= 1 and the three modes.
    pub fn from_values(max_attempts: Option<&str>, mode: Option<&str>) -> Result<Self> {
        let mut p = RetryPolicy::default();
        if let Some(v) = max_attempts.map(str::trim).filter(|v| !v.is_empty()) {
            p.max_attempts = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::invalid(format!(
                    "AWS_MAX_ATTEMPTS={v:?}: expected a whole number of at least 1 (attempts in all)"
                ))
            })?;
        }
        if let Some(v) = mode.map(str::trim).filter(|v| !v.is_empty()) {
            p.mode = match v.to_ascii_lowercase().as_str() {
                "standard" => RetryMode::Standard,
                "legacy" => RetryMode::Legacy,
                "adaptive" => RetryMode::Adaptive,
                _ => {
                    return Err(Error::invalid(format!("AWS_RETRY_MODE={v:?}: expected standard, legacy or adaptive")));
                }
            };
        }
        Ok(p)
    }

    /// The policy `AWS_MAX_ATTEMPTS` and `AWS_RETRY_MODE` ask for, read now.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| match std::env::var(name) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::invalid(format!("{name} is not valid UTF-8"))),
        };
        RetryPolicy::from_values(var("AWS_MAX_ATTEMPTS")?.as_deref(), var("AWS_RETRY_MODE")?.as_deref())
    }

    /// Reads the environment and fixes the process's policy; call once at start-up, where
    /// an invalid value stops the program with its message. Once fixed (by this or by
    /// [`RetryPolicy::current`]), the policy never changes: later calls return it.
    pub fn init() -> Result<Self> {
        if let Some(p) = POLICY.get() {
            return Ok(*p);
        }
        let p = RetryPolicy::from_env()?;
        tracing::debug!(max_attempts = p.max_attempts, mode = ?p.mode, "retry policy");
        Ok(*POLICY.get_or_init(|| p))
    }

    /// The process's policy. Without [`RetryPolicy::init`] it is read from the environment
    /// at the first call; an invalid value is then logged and the defaults used.
    pub fn current() -> Self {
        *POLICY.get_or_init(|| {
            RetryPolicy::from_env().unwrap_or_else(|e| {
                tracing::error!(error = %e, "invalid retry settings; using the defaults");
                RetryPolicy::default()
            })
        })
    }

    /// The pause after failed attempt number `attempt` (1-based): uniform in
    /// [0, min(100 ms x 2^attempt, 5 s)] (full jitter, in every mode).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = (BASE_MS << attempt.min(6)).min(CAP_MS);
        Duration::from_millis(rand::random_range(0..=cap))
    }

    /// Runs `op` until it succeeds, fails with an error that is not transient, or has run
    /// `max_attempts` times; returns its last result.
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut n = 0;
        loop {
            n += 1;
            match op().await {
                Err(e) if e.is_transient() && n < self.max_attempts => {
                    let pause = self.backoff(n);
                    tracing::debug!(attempt = n, error = %e, backoff_ms = pause.as_millis() as u64, "transient error, retrying");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }
}

/// Runs `op` under the process's policy ([`RetryPolicy::current`]).
pub async fn with_retries<T, F, Fut>(op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    RetryPolicy::current().run(op).await
}

/// Runs `op` with a fixed budget of `attempts` (and the standard backoff), for loops whose
/// failures are not the request's own (see [`RetryPolicy`]).
pub async fn retry<T, F, Fut>(attempts: u32, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    RetryPolicy { max_attempts: attempts, mode: RetryMode::Standard }.run(op).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Runs `policy` over an operation that always fails with `e`; returns the calls made.
    async fn calls_until_given_up(policy: RetryPolicy, e: Error) -> u32 {
        let calls = AtomicU32::new(0);
        let r: Result<()> = policy
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(e.clone())
            })
            .await;
        assert_eq!(r, Err(e));
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_on_success_and_on_permanent_errors() {
        let calls = AtomicU32::new(0);
        let r: Result<u32> = retry(5, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 2 { Err(Error::transient("busy")) } else { Ok(n) }
        })
        .await;
        assert_eq!(r, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(calls_until_given_up(RetryPolicy::default(), Error::permanent("no")).await, 1);
        assert_eq!(calls_until_given_up(RetryPolicy::default(), Error::Conflict("done".into())).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_after_the_attempt_budget() {
        assert_eq!(calls_until_given_up(RetryPolicy::default(), Error::transient("busy")).await, 5);
        let p = RetryPolicy { max_attempts: 3, mode: RetryMode::Standard };
        assert_eq!(calls_until_given_up(p, Error::Throttled("slow down".into())).await, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn aws_max_attempts_2_means_two_attempts_in_all() {
        let p = RetryPolicy::from_values(Some("2"), None).unwrap();
        assert_eq!(calls_until_given_up(p, Error::transient("reset")).await, 2);
        assert_eq!(calls_until_given_up(p, Error::Throttled("503 SlowDown".into())).await, 2);
        let once = RetryPolicy::from_values(Some("1"), Some("adaptive")).unwrap();
        assert_eq!(calls_until_given_up(once, Error::transient("reset")).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_full_jitter_doubling_up_to_five_seconds() {
        let p = RetryPolicy::default();
        for (attempt, cap) in [(1, 200), (2, 400), (5, 3_200), (6, 5_000), (40, 5_000)] {
            let pauses: Vec<u64> = (0..200).map(|_| p.backoff(attempt).as_millis() as u64).collect();
            assert!(pauses.iter().all(|&ms| ms <= cap), "attempt {attempt}: {pauses:?}");
            // Spread over the range, not a fixed delay.
            assert!(pauses.iter().any(|&ms| ms < cap / 3) && pauses.iter().any(|&ms| ms > cap * 2 / 3));
        }
        // Five attempts pause four times: at most 200 + 400 + 800 + 1600 ms in all.
        let started = tokio::time::Instant::now();
        calls_until_given_up(p, Error::transient("busy")).await;
        assert!(started.elapsed() <= Duration::from_millis(3_000), "{:?}", started.elapsed());
    }

    #[test]
    fn settings_are_read_or_refused_naming_the_variable() {
        assert_eq!(RetryPolicy::from_values(None, None).unwrap(), RetryPolicy::default());
        assert_eq!(RetryPolicy::from_values(Some(""), Some(" ")).unwrap(), RetryPolicy::default());
        let p = RetryPolicy::from_values(Some(" 7 "), Some("Legacy")).unwrap();
        assert_eq!((p.max_attempts, p.mode), (7, RetryMode::Legacy));
        assert_eq!(RetryPolicy::from_values(None, Some("adaptive")).unwrap().mode, RetryMode::Adaptive);
        for bad in ["0", "-1", "2.5", "many", "99999999999"] {
            let e = RetryPolicy::from_values(Some(bad), None).unwrap_err();
            assert!(matches!(&e, Error::Invalid(m) if m.starts_with("AWS_MAX_ATTEMPTS=")), "{bad}: {e}");
        }
        let e = RetryPolicy::from_values(Some("3"), Some("fast")).unwrap_err();
        assert!(matches!(&e, Error::Invalid(m) if m.starts_with("AWS_RETRY_MODE=\"fast\"")), "{e}");
    }
}
