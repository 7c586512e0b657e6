//! Setting up SQS queues: [`QueueSettings`], and [`SqsQueue::open`], [`SqsQueue::ensure`]
//! (the queue, its dead-letter queue and the redrive policy, idempotently) and
//! [`SqsQueue::attributes`].

use std::collections::HashMap;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::QueueAttributeName;

use super::{MAX_VISIBILITY_SECS, MAX_WAIT_SECS, SqsQueue};
use crate::backend::aws::{AwsContext, sdk_error};
use crate::error::{Error, Result, with_retries};

/// The dead-letter queue keeps messages as long as SQS allows, for a human to look at.
pub const DLQ_RETENTION_SECS: u32 = 14 * 24 * 3600;

/// The dead-letter queue of queue `q` is `q` followed by this.
pub const DLQ_SUFFIX: &str = "-dlq";

/// How [`SqsQueue::ensure`] sets up a queue and its dead-letter queue `<name>-dlq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    /// The visibility timeout of receives that do not name one (ours always do). Default 60,
    /// the configuration's `queue.visibility_secs`.
    pub visibility_secs: u32,
    /// Receives after which a message moves to the dead-letter queue. Default 10, like
    /// the embedded queue's `DEFAULT_MAX_DELIVERIES`.
    pub max_receives: u32,
    /// How long the main queue keeps a message. Default 4 days (SQS's own default).
    pub retention_secs: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings { visibility_secs: 60, max_receives: 10, retention_secs: 4 * 24 * 3600 }
    }
}

impl QueueSettings {
    fn validate(&self) -> Result<()> {
        let ok = u64::from(self.visibility_secs) <= MAX_VISIBILITY_SECS
            && (1..=1000).contains(&self.max_receives)
            && (60..=DLQ_RETENTION_SECS).contains(&self.retention_secs);
        match ok {
            true => Ok(()),
            false => Err(Error::invalid(format!(
                "queue settings out of SQS's range (visibility 0..=43200 s, max receives \
                 1..=1000, retention 60..=1209600 s): {self:?}"
            ))),
        }
    }
}

impl SqsQueue {
    /// The existing queue named `name`; `NotFound` when there is none.
    pub async fn open(ctx: &AwsContext, name: &str) -> Result<Self> {
        let client = ctx.sqs();
        let url = queue_url(&client, name).await?;
        Ok(SqsQueue::from_parts(client, url))
    }

    /// Creates or updates the queue `name` and its dead-letter queue `name-dlq` so that they
    /// match `settings`: idempotent, and safe to run on every start-up. The main queue long-
    /// polls for 20 s and redrives to the DLQ after `max_receives`; the DLQ keeps 14 days.
    pub async fn ensure(ctx: &AwsContext, name: &str, settings: &QueueSettings) -> Result<Self> {
        settings.validate()?;
        let valid = name.len() <= 76
            && !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(Error::invalid(format!(
                "queue name {name:?}: use 1-76 letters, digits, '-' or '_' (standard queues)"
            )));
        }
        let client = ctx.sqs();
        let dlq_name = format!("{name}{DLQ_SUFFIX}");
        let dlq_attrs = [(QueueAttributeName::MessageRetentionPeriod, DLQ_RETENTION_SECS.to_string())];
        let dlq_url = create_or_update(&client, &dlq_name, &dlq_attrs).await?;
        let dlq = SqsQueue::from_parts(client.clone(), dlq_url);
        let dlq_arn = dlq
            .attributes()
            .await?
            .remove("QueueArn")
            .ok_or_else(|| Error::permanent(format!("queue {dlq_name} has no QueueArn attribute")))?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": settings.max_receives.to_string(),
        });
        let attrs = [
            (QueueAttributeName::VisibilityTimeout, settings.visibility_secs.to_string()),
            (QueueAttributeName::MessageRetentionPeriod, settings.retention_secs.to_string()),
            (QueueAttributeName::ReceiveMessageWaitTimeSeconds, MAX_WAIT_SECS.to_string()),
            (QueueAttributeName::RedrivePolicy, redrive.to_string()),
        ];
        let url = create_or_update(&client, name, &attrs).await?;
        tracing::info!(queue = %name, url = %url, dlq = %dlq_name, "queue ensured");
        Ok(SqsQueue::from_parts(client, url))
    }

    /// Every attribute of the queue, by its SQS name (`QueueArn`, `RedrivePolicy`, ...).
    pub async fn attributes(&self) -> Result<HashMap<String, String>> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("reading attributes of {}", self.url), e))?;
        let attrs = out.attributes().cloned().unwrap_or_default();
        Ok(attrs.into_iter().map(|(k, v)| (k.as_str().to_string(), v)).collect())
    }
}

pub(super) async fn queue_url(client: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    let get = client.get_queue_url().queue_name(name);
    let out = with_retries(|| async {
        get.clone().send().await.map_err(|e| sdk_error(&format!("looking up queue {name}"), e))
    })
    .await?;
    out.queue_url().map(str::to_string).ok_or_else(|| Error::NotFound(format!("queue {name}: no URL returned")))
}

/// Creates the queue with `attrs`; if it exists with other attributes, sets them.
async fn create_or_update(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attrs: &[(QueueAttributeName, String)],
) -> Result<String> {
    let map: HashMap<_, _> = attrs.iter().cloned().collect();
    let created = client.create_queue().queue_name(name).set_attributes(Some(map.clone())).send().await;
    match created {
        Ok(out) => out
            .queue_url()
            .map(str::to_string)
            .ok_or_else(|| Error::permanent(format!("creating queue {name}: no URL returned"))),
        Err(e)
            if e.as_service_error().is_some_and(|s| s.is_queue_name_exists())
                || matches!(e.code(), Some("QueueAlreadyExists" | "QueueNameExists")) =>
        {
            let url = queue_url(client, name).await?;
            client
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(map))
                .send()
                .await
                .map_err(|e| sdk_error(&format!("updating queue {name}"), e))?;
            tracing::info!(queue = %name, "queue existed with other settings: updated");
            Ok(url)
        }
        Err(e) => Err(sdk_error(&format!("creating queue {name}"), e)),
    }
}
