//! SQS as a [`WorkQueue`]: a standard queue (at-least-once, roughly ordered) with a
//! dead-letter queue behind a redrive policy.
//!
//! The [`LeaseId`] is the receipt handle. Leases are SQS visibility timeouts, rounded up to
//! whole seconds (at most 12 h); `deliveries` is `ApproximateReceiveCount`; `depth` is
//! SQS's approximate counts. Sends go in batches of at most 10 entries and 256 KiB, and
//! entries that fail inside a batch are retried, then reported. Creating a queue, its
//! dead-letter queue and redrive policy ([`SqsQueue::ensure`]) is in `setup`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};

mod setup;

pub use setup::{DLQ_RETENTION_SECS, DLQ_SUFFIX, QueueSettings};

use super::{AwsContext, sdk_error};
use crate::error::{Error, Result, with_retries};
use crate::queue::{Delivery, LeaseId, QueueDepth, WorkQueue};

/// SQS's limits: entries per batch call, bytes per batch, seconds per long poll, lease.
const BATCH: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;
/// The longest long poll SQS allows; the queues `init` makes wait this long by default.
pub const MAX_WAIT_SECS: u64 = 20;
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// Attempts at sending the entries of a batch that failed on their own.
const SEND_ATTEMPTS: u32 = 4;

/// One SQS queue, by URL.
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    /// The dead-letter queue's URL, from the redrive policy, once looked up (`None`: none).
    dlq: std::sync::Arc<tokio::sync::OnceCell<Option<String>>>,
}

impl SqsQueue {
    /// The queue at `queue_url`; nothing is checked until the first call.
    pub fn new(ctx: &AwsContext, queue_url: String) -> Self {
        SqsQueue::from_parts(ctx.sqs(), queue_url)
    }

    fn from_parts(client: aws_sdk_sqs::Client, url: String) -> Self {
        SqsQueue { client, url, dlq: Default::default() }
    }

    /// The URL of the queue's dead-letter queue, read from its redrive policy once.
    async fn dlq_url(&self) -> Result<Option<&str>> {
        let url = self
            .dlq
            .get_or_try_init(|| async {
                let get = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::RedrivePolicy);
                let out = with_retries(|| async {
                    get.clone()
                        .send()
                        .await
                        .map_err(|e| sdk_error(&format!("reading the redrive policy of {}", self.url), e))
                })
                .await?;
                let Some(policy) = out.attributes().and_then(|a| a.get(&QueueAttributeName::RedrivePolicy)) else {
                    return Ok(None);
                };
                let v: serde_json::Value = serde_json::from_str(policy)?;
                let Some(name) = v["deadLetterTargetArn"].as_str().and_then(|arn| arn.rsplit(':').next()) else {
                    return Ok(None);
                };
                setup::queue_url(&self.client, name).await.map(Some)
            })
            .await?;
        Ok(url.as_deref())
    }

    /// Approximate (visible, in flight) counts of the queue at `url`.
    async fn counts(&self, url: &str) -> Result<(u64, u64)> {
        let get = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible);
        let out =
            with_retries(|| async { get.clone().send().await.map_err(|e| sdk_error(&format!("counting {url}"), e)) })
                .await?;
        let count = |k: QueueAttributeName| -> u64 {
            out.attributes().and_then(|a| a.get(&k)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        Ok((
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one batch, retrying the entries that fail on their own (not the sender's fault).
    async fn send_batch(&self, bodies: &[String]) -> Result<()> {
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        for attempt in 1..=SEND_ATTEMPTS {
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(bodies[i].as_str())
                        .build()
                        .map_err(Error::invalid)
                })
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sdk_error(&format!("sending to {}", self.url), e))?;
            let failed = out.failed();
            if let Some(f) = failed.iter().find(|f| f.sender_fault()) {
                return Err(Error::permanent(format!(
                    "sending to {}: entry refused: {} {}",
                    self.url,
                    f.code(),
                    f.message().unwrap_or_default()
                )));
            }
            pending = failed.iter().filter_map(|f| f.id().parse().ok()).collect();
            if pending.is_empty() {
                return Ok(());
            }
            tracing::warn!(queue = %self.url, failed = pending.len(), attempt, "batch entries failed, retrying");
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        Err(Error::Transient(format!(
            "sending to {}: {} entries still failing after {SEND_ATTEMPTS} attempts",
            self.url,
            pending.len()
        )))
    }

    /// One ReceiveMessage call.
    async fn receive(&self, max: usize, visibility: i32, wait_secs: u64) -> Result<Vec<Delivery>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.min(BATCH) as i32)
            .visibility_timeout(visibility)
            .wait_time_seconds(wait_secs as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("receiving from {}", self.url), e))?;
        out.messages()
            .iter()
            .map(|m| {
                let receipt = m.receipt_handle().ok_or_else(|| {
                    Error::permanent(format!("receiving from {}: a message without a receipt handle", self.url))
                })?;
                let deliveries = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Ok(Delivery {
                    lease: LeaseId(receipt.to_string()),
                    body: m.body().unwrap_or_default().to_string(),
                    deliveries,
                })
            })
            .collect()
    }

    async fn set_visibility(&self, lease: &LeaseId, secs: i32) -> Result<()> {
        let change = self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&lease.0)
            .visibility_timeout(secs);
        with_retries(|| async {
            change.clone().send().await.map(|_| ()).map_err(|e| match lease_lost(&e) {
                true => Error::Conflict(format!(
                    "lease on {} was lost: {}",
                    self.url,
                    e.message().unwrap_or("receipt handle invalid")
                )),
                false => sdk_error(&format!("changing visibility on {}", self.url), e),
            })
        })
        .await
    }
}

#[async_trait]
impl WorkQueue for SqsQueue {
    async fn push(&self, bodies: &[String]) -> Result<()> {
        for batch in batches(bodies) {
            self.send_batch(batch).await?;
        }
        tracing::debug!(queue = %self.url, count = bodies.len(), "pushed");
        Ok(())
    }

    /// Long-polls (up to 20 s a call, the first call's wait rounded up to a whole second)
    /// until something arrives or `wait` is over, then gathers up to `max` without waiting.
    async fn pull(&self, max: usize, lease: Duration, wait: Duration) -> Result<Vec<Delivery>> {
        let visibility = whole_secs(lease).min(MAX_VISIBILITY_SECS) as i32;
        let deadline = Instant::now() + wait;
        let mut out: Vec<Delivery> = Vec::new();
        let mut first = true;
        while out.len() < max {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // After an empty long poll, poll again only while a whole second is left.
            if out.is_empty() && !first && remaining < Duration::from_secs(1) {
                break;
            }
            let wait_secs = match out.is_empty() {
                true => whole_secs(remaining).min(MAX_WAIT_SECS),
                false => 0,
            };
            first = false;
            let got = self.receive(max - out.len(), visibility, wait_secs).await?;
            if got.is_empty() && !out.is_empty() {
                break;
            }
            out.extend(got);
        }
        Ok(out)
    }

    async fn renew(&self, lease: &LeaseId, lease_for: Duration) -> Result<()> {
        let secs = whole_secs(lease_for).min(MAX_VISIBILITY_SECS) as i32;
        self.set_visibility(lease, secs).await
    }

    /// Deletes the message; an unknown or expired receipt handle is Ok.
    async fn ack(&self, lease: &LeaseId) -> Result<()> {
        let delete = self.client.delete_message().queue_url(&self.url).receipt_handle(&lease.0);
        with_retries(|| async {
            match delete.clone().send().await {
                Ok(_) => Ok(()),
                Err(e) if lease_lost(&e) => Ok(()),
                Err(e) => Err(sdk_error(&format!("deleting from {}", self.url), e)),
            }
        })
        .await
    }

    /// Visibility 0; a lost lease has nothing to give back, so that is Ok too.
    async fn release(&self, lease: &LeaseId) -> Result<()> {
        match self.set_visibility(lease, 0).await {
            Err(Error::Conflict(_)) => Ok(()),
            other => other,
        }
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let (visible, in_flight) = self.counts(&self.url).await?;
        let dead_letters = match self.dlq_url().await? {
            Some(dlq) => {
                let (v, f) = self.counts(dlq).await?;
                v + f
            }
            None => 0,
        };
        Ok(QueueDepth { visible, in_flight, dead_letters })
    }

    /// Receives from the dead-letter queue with a visibility timeout of 0, so the messages
    /// stay there, visible; stops at `max` distinct messages or when a receive brings none new.
    async fn dead_letters(&self, max: usize) -> Result<Vec<String>> {
        let Some(dlq) = self.dlq_url().await? else { return Ok(Vec::new()) };
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        while out.len() < max {
            let peek = self
                .client
                .receive_message()
                .queue_url(dlq)
                .max_number_of_messages(max.saturating_sub(out.len()).clamp(1, BATCH) as i32)
                .visibility_timeout(0)
                .wait_time_seconds(0);
            let got = with_retries(|| async {
                peek.clone().send().await.map_err(|e| sdk_error(&format!("peeking at {dlq}"), e))
            })
            .await?;
            let mut new = 0;
            for m in got.messages() {
                if seen.insert(m.message_id().unwrap_or_default().to_string()) {
                    out.push(m.body().unwrap_or_default().to_string());
                    new += 1;
                }
            }
            if new == 0 {
                break;
            }
        }
        Ok(out)
    }
}

/// Splits `bodies` into consecutive batches of at most [`BATCH`] entries and
/// [`BATCH_BYTES`] bytes; a body larger than that alone goes alone (and SQS refuses it).
fn batches(bodies: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, body) in bodies.iter().enumerate() {
        if i > start && (i - start == BATCH || bytes + body.len() > BATCH_BYTES) {
            out.push(&bodies[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    out
}

/// True when SQS says the receipt handle no longer holds the message (deleted, expired,
/// superseded, or not in flight): for `renew` a lost lease, for `ack` nothing left to do.
fn lease_lost<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    let message = e.message().unwrap_or_default().to_ascii_lowercase();
    match e.code().unwrap_or_default() {
        "ReceiptHandleIsInvalid" | "MessageNotInflight" | "AWS.SimpleQueueService.MessageNotInflight" => true,
        "InvalidParameterValue" => message.contains("receipt handle"),
        _ => false,
    }
}

/// `d` in whole seconds, rounded up (SQS counts visibility and waits in seconds).
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(bodies: &[String]) -> Vec<usize> {
        batches(bodies).iter().map(|b| b.len()).collect()
    }

    #[test]
    fn batches_respect_both_sqs_limits_and_keep_order() {
        let small: Vec<String> = (0..25).map(|i| i.to_string()).collect();
        assert_eq!(sizes(&small), [10, 10, 5]);
        assert_eq!(batches(&small).concat(), small);
        // Ten 100 KB bodies: two fit in 256 KiB, a third does not.
        let big: Vec<String> = (0..10).map(|_| "x".repeat(100_000)).collect();
        assert_eq!(sizes(&big), [2, 2, 2, 2, 2]);
        // A body over the limit goes alone; an empty input sends nothing.
        let huge = vec!["a".into(), "y".repeat(300_000), "b".into()];
        assert_eq!(sizes(&huge), [1, 1, 1]);
        assert!(batches(&[]).is_empty());
        // Exactly at the limit still fits.
        let exact = vec!["z".repeat(BATCH_BYTES / 2), "z".repeat(BATCH_BYTES / 2)];
        assert_eq!(sizes(&exact), [2]);
    }

    #[test]
    fn leases_and_waits_round_up_to_whole_seconds() {
        assert_eq!(whole_secs(Duration::ZERO), 0);
        assert_eq!(whole_secs(Duration::from_millis(1)), 1);
        assert_eq!(whole_secs(Duration::from_secs(2)), 2);
        assert_eq!(whole_secs(Duration::from_millis(2_001)), 3);
    }
}
