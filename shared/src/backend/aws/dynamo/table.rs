//! Creating the job store's table (idempotently) and waiting until it can be used.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::items::{
    CREATED_MS, EXPIRES_AT, JOBS_INDEX, JOBS_INDEX_KEY, PARTITION_KEY, RUNNING_INDEX, RUNNING_INDEX_KEY, SORT_KEY,
};
use crate::backend::aws::sdk_error;
use crate::error::{Error, Result};

/// How long a new table may take to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

fn build_err(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("building a DynamoDB request: {e}"))
}

fn key_element(name: &str, kind: KeyType) -> Result<KeySchemaElement> {
    KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(build_err)
}

fn attribute(name: &str, t: ScalarAttributeType) -> Result<AttributeDefinition> {
    AttributeDefinition::builder().attribute_name(name).attribute_type(t).build().map_err(build_err)
}

/// What [`ensure`] did to an existing table.
#[derive(Debug, PartialEq)]
pub(super) enum Ensured {
    /// The table is (now) as this version needs it.
    Ready,
    /// The table predates the `jobs-running` index, which was just added: running jobs
    /// written before must be entered in it.
    AddedRunningIndex,
}

/// A sparse, keys-only index on `attr`, sorted by `created_ms`. Keys only: counter updates
/// then never write the index (see the module doc).
fn sparse_index(name: &str, attr: &str) -> Result<GlobalSecondaryIndex> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key_element(attr, KeyType::Hash)?)
        .key_schema(key_element(CREATED_MS, KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()
        .map_err(build_err)
}

/// Creates `table` (on-demand billing, `pk`/`sk` keys, the sparse `jobs-by-created` and
/// `jobs-running` indexes) unless it exists, adds `jobs-running` to a table made before it,
/// then waits until the table and its indexes are ACTIVE. An existing table without
/// `jobs-by-created` is refused with `Invalid`: it is not this store's table.
pub(super) async fn ensure(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<Ensured> {
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute(PARTITION_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(SORT_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(JOBS_INDEX_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(RUNNING_INDEX_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(CREATED_MS, ScalarAttributeType::N)?)
        .key_schema(key_element(PARTITION_KEY, KeyType::Hash)?)
        .key_schema(key_element(SORT_KEY, KeyType::Range)?)
        .global_secondary_indexes(sparse_index(JOBS_INDEX, JOBS_INDEX_KEY)?)
        .global_secondary_indexes(sparse_index(RUNNING_INDEX, RUNNING_INDEX_KEY)?)
        .send()
        .await;
    let mut ensured = Ensured::Ready;
    match created {
        Ok(_) => tracing::info!(table = %table, "created the job store table"),
        Err(e) if e.as_service_error().is_some_and(|se| se.is_resource_in_use_exception()) => {
            tracing::debug!(table = %table, "job store table exists");
            wait_active(client, table, false).await?;
            if !has_index(client, table, RUNNING_INDEX).await? {
                add_running_index(client, table).await?;
                ensured = Ensured::AddedRunningIndex;
            }
        }
        Err(e) => return Err(sdk_error(&format!("creating table {table}"), e)),
    }
    wait_active(client, table, true).await?;
    enable_expiry(client, table).await?;
    Ok(ensured)
}

/// Turns on the table's TTL on [`EXPIRES_AT`] unless it is on (or turning on) already. A
/// table whose TTL is on another attribute keeps it, with a warning: settled items then stay
/// until deleted by hand.
async fn enable_expiry(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    let described = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_error(&format!("reading the TTL of table {table}"), e))?;
    let ttl = described.time_to_live_description();
    let status = ttl.and_then(|d| d.time_to_live_status());
    let attribute = ttl.and_then(|d| d.attribute_name());
    match status {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) if attribute == Some(EXPIRES_AT) => Ok(()),
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => {
            tracing::warn!(table = %table, attribute = ?attribute,
                "the table's TTL is on another attribute than {EXPIRES_AT}: settled jobs will not expire");
            Ok(())
        }
        _ => {
            let spec = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(EXPIRES_AT)
                .build()
                .map_err(build_err)?;
            client
                .update_time_to_live()
                .table_name(table)
                .time_to_live_specification(spec)
                .send()
                .await
                .map_err(|e| sdk_error(&format!("turning on the TTL of table {table}"), e))?;
            tracing::info!(table = %table, "settled jobs' items now expire ({EXPIRES_AT})");
            Ok(())
        }
    }
}

async fn describe(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<TableDescription> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| sdk_error(&format!("describing table {table}"), e))?;
    out.table.ok_or_else(|| Error::permanent(format!("table {table}: empty description")))
}

async fn has_index(client: &aws_sdk_dynamodb::Client, table: &str, index: &str) -> Result<bool> {
    let desc = describe(client, table).await?;
    Ok(desc.global_secondary_indexes().iter().any(|i| i.index_name() == Some(index)))
}

async fn add_running_index(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    tracing::info!(table = %table, "adding the {RUNNING_INDEX} index to a table made by an earlier version");
    let create = CreateGlobalSecondaryIndexAction::builder()
        .index_name(RUNNING_INDEX)
        .key_schema(key_element(RUNNING_INDEX_KEY, KeyType::Hash)?)
        .key_schema(key_element(CREATED_MS, KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()
        .map_err(build_err)?;
    client
        .update_table()
        .table_name(table)
        .attribute_definitions(attribute(RUNNING_INDEX_KEY, ScalarAttributeType::S)?)
        .attribute_definitions(attribute(CREATED_MS, ScalarAttributeType::N)?)
        .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(create).build())
        .send()
        .await
        .map_err(|e| sdk_error(&format!("adding the {RUNNING_INDEX} index to {table}"), e))?;
    Ok(())
}

/// Waits until `table` and its `jobs-by-created` index (and, with `running`, its
/// `jobs-running` index) are ACTIVE.
async fn wait_active(client: &aws_sdk_dynamodb::Client, table: &str, running: bool) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        let desc = describe(client, table).await?;
        let index = |name: &str| desc.global_secondary_indexes().iter().find(|i| i.index_name() == Some(name));
        let Some(jobs) = index(JOBS_INDEX) else {
            return Err(Error::invalid(format!(
                "table {table} exists without the {JOBS_INDEX} index: not a bucketclone job table"
            )));
        };
        let table_active = desc.table_status() == Some(&TableStatus::Active);
        // Emulators may omit the index status: absent counts as active.
        let active = |i: &aws_sdk_dynamodb::types::GlobalSecondaryIndexDescription| {
            i.index_status().is_none_or(|s| *s == IndexStatus::Active)
        };
        let running_active = !running || index(RUNNING_INDEX).is_some_and(active);
        if table_active && active(jobs) && running_active {
            return Ok(());
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(Error::transient(format!("table {table} not ACTIVE after {ACTIVE_TIMEOUT:?}")));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
