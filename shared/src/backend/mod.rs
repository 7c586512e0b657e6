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
///
/// A store can also be registered for a location's root ([`StoreFactory::insert`]): tests
/// wrap a real store to count requests or to change an object at a chosen moment.
#[derive(Default)]
pub struct StoreFactory {
    aws: OnceCell<aws::AwsContext>,
    registered: std::sync::Mutex<std::collections::HashMap<(Scheme, String), Arc<dyn ObjectStore>>>,
}

impl StoreFactory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The AWS context, loaded from the standard chain on first use.
    pub async fn aws(&self) -> &aws::AwsContext {
        self.aws.get_or_init(aws::AwsContext::load).await
    }

    /// A factory whose AWS context is `ctx` instead of the standard chain's.
    pub fn with_aws(ctx: aws::AwsContext) -> Self {
        StoreFactory { aws: OnceCell::from(ctx), ..Default::default() }
    }

    /// Makes [`StoreFactory::open`] return `store` for every location with `loc`'s root.
    pub fn insert(&self, loc: &Location, store: Arc<dyn ObjectStore>) {
        self.registered.lock().expect("registry lock").insert((loc.scheme, loc.root.clone()), store);
    }

    /// The store holding `loc` (its bucket or directory; the prefix is the caller's).
    pub async fn open(&self, loc: &Location) -> Result<Arc<dyn ObjectStore>> {
        if let Some(s) = self.registered.lock().expect("registry lock").get(&(loc.scheme, loc.root.clone())) {
            return Ok(s.clone());
        }
        Ok(match loc.scheme {
            Scheme::S3 => Arc::new(aws::s3::S3Store::new(self.aws().await, &loc.root)),
            Scheme::Local => Arc::new(embedded::local_dir::LocalDirStore::new(&loc.root)?),
        })
    }
}
