//! The backends of the three ports: `embedded` (SQLite, local directories: one machine,
//! nothing deployed) and `aws` (SQS, DynamoDB, S3). Choose them once, at start-up.

pub mod aws;
pub mod embedded;

use std::sync::Arc;
use tokio::sync::OnceCell;

use crate::error::Result;
use crate::model::{Location, Scheme};
use crate::objstore::ObjectStore;

/// Opens object stores for locations, loading the AWS configuration only when an S3
/// location needs it (a local-to-local clone never touches the AWS chain).
#[derive(Default)]
pub struct StoreFactory {
    aws: OnceCell<aws::AwsContext>,
}

impl StoreFactory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The AWS context, loaded from the standard chain on first use.
    pub async fn aws(&self) -> &aws::AwsContext {
        self.aws.get_or_init(aws::AwsContext::load).await
    }

    /// The store holding `loc` (its bucket or directory; the prefix is the caller's).
    pub async fn open(&self, loc: &Location) -> Result<Arc<dyn ObjectStore>> {
        Ok(match loc.scheme {
            Scheme::S3 => Arc::new(aws::s3::S3Store::new(self.aws().await, &loc.root)),
            Scheme::Local => Arc::new(embedded::local_dir::LocalDirStore::new(&loc.root)?),
        })
    }
}
