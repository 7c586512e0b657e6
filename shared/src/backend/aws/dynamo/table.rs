//! Creating the job store's table (idempotently) and waiting until it can be used.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus,
};

use super::items::JOBS_INDEX;
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

/// Creates `table` (on-demand billing, `pk`/`sk` keys, the sparse `jobs-by-created` index)
/// unless it exists, then waits until it and its index are ACTIVE. An existing table
/// without the index is refused with `Invalid`: it is not this store's table.
pub(super) async fn ensure(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    let index = GlobalSecondaryIndex::builder()
        .index_name(JOBS_INDEX)
        .key_schema(key_element("gsi1pk", KeyType::Hash)?)
        .key_schema(key_element("created_ms", KeyType::Range)?)
        // Keys only: counter updates then never write the index (see the module doc).
        .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
        .build()
        .map_err(build_err)?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("sk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("gsi1pk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("created_ms", ScalarAttributeType::N)?)
        .key_schema(key_element("pk", KeyType::Hash)?)
        .key_schema(key_element("sk", KeyType::Range)?)
        .global_secondary_indexes(index)
        .send()
        .await;
    match created {
        Ok(_) => tracing::info!(table = %table, "created the job store table"),
        Err(e) if e.as_service_error().is_some_and(|se| se.is_resource_in_use_exception()) => {
            tracing::debug!(table = %table, "job store table exists");
        }
        Err(e) => return Err(sdk_error(&format!("creating table {table}"), e)),
    }
    wait_active(client, table).await
}

async fn wait_active(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("describing table {table}"), e))?;
        let desc = out.table.ok_or_else(|| Error::permanent(format!("table {table}: empty description")))?;
        let index = desc.global_secondary_indexes().iter().find(|i| i.index_name() == Some(JOBS_INDEX));
        let Some(index) = index else {
            return Err(Error::invalid(format!(
                "table {table} exists without the {JOBS_INDEX} index: not a bucketclone job table"
            )));
        };
        let table_active = desc.table_status() == Some(&TableStatus::Active);
        // Emulators may omit the index status: absent counts as active.
        let index_active = index.index_status().is_none_or(|s| *s == IndexStatus::Active);
        if table_active && index_active {
            return Ok(());
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(Error::transient(format!("table {table} not ACTIVE after {ACTIVE_TIMEOUT:?}")));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
