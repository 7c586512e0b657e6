//! The backends of the three ports: `embedded` (SQLite, local directories: one machine,
//! nothing deployed) and `aws` (SQS, DynamoDB, S3). Choose them once, at start-up.

pub mod aws;
pub mod embedded;

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

use crate::error::Result;
use crate::model::{Connection, Location, Scheme};
use crate::objstore::{ObjectStore, StoreOpener};

type Store = Arc<dyn ObjectStore>;
/// Values made once per key, concurrently for different keys.
type OnceMap<K, V> = Mutex<HashMap<K, Arc<OnceCell<V>>>>;

/// Opens object stores for locations, each S3 location through its own [`Connection`]
/// (profile, region, endpoint) over the process's AWS chain. The chain is loaded only when
/// an S3 location needs it (a local-to-local clone never touches it), each connection once,
/// and each bucket once: its region is looked up when it is opened first.
///
/// A store can also be registered for a location's root ([`StoreFactory::insert`]): tests
/// wrap a real store to count requests or to change an object at a chosen moment.
#[derive(Default)]
pub struct StoreFactory {
    aws: OnceCell<aws::AwsContext>,
    /// Contexts of connections that name a profile (other credentials), loaded once each.
    profiles: OnceMap<Connection, aws::AwsContext>,
    /// S3 buckets opened, per connection and bucket.
    buckets: OnceMap<(Connection, String), Store>,
    registered: Mutex<HashMap<(Scheme, String), Store>>,
}

impl StoreFactory {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's AWS context, loaded from the standard chain on first use.
    pub async fn aws(&self) -> &aws::AwsContext {
        self.aws.get_or_init(aws::AwsContext::load).await
    }

    /// A factory whose AWS context is `ctx` instead of the standard chain's.
    pub fn with_aws(ctx: aws::AwsContext) -> Self {
        StoreFactory { aws: OnceCell::from(ctx), ..Default::default() }
    }

    /// Makes [`StoreOpener::open`] return `store` for every location with `loc`'s root.
    pub fn insert(&self, loc: &Location, store: Arc<dyn ObjectStore>) {
        self.registered.lock().expect("registry lock").insert((loc.scheme, loc.root.clone()), store);
    }

    /// The AWS context of `conn`: the process's with the connection's overrides, or for a
    /// named profile the chain loaded with that profile.
    pub async fn context(&self, conn: &Connection) -> Result<aws::AwsContext> {
        let Some(_) = &conn.profile else {
            return Ok(self.aws().await.with_overrides(conn));
        };
        let cell = self.profiles.lock().expect("profiles lock").entry(conn.clone()).or_default().clone();
        cell.get_or_try_init(|| aws::AwsContext::load_for(conn)).await.cloned()
    }

    async fn open_bucket(&self, loc: &Location) -> Result<Arc<dyn ObjectStore>> {
        let key = (loc.conn.clone(), loc.root.clone());
        let cell = self.buckets.lock().expect("buckets lock").entry(key).or_default().clone();
        cell.get_or_try_init(|| async {
            let ctx = self.context(&loc.conn).await?;
            let store = aws::s3::S3Store::open(&ctx, &loc.root, loc.conn.region.is_some()).await?;
            Ok::<_, crate::Error>(Arc::new(store) as Arc<dyn ObjectStore>)
        })
        .await
        .cloned()
    }
}

#[async_trait]
impl StoreOpener for StoreFactory {
    async fn open(&self, loc: &Location) -> Result<Arc<dyn ObjectStore>> {
        if let Some(s) = self.registered.lock().expect("registry lock").get(&(loc.scheme, loc.root.clone())) {
            return Ok(s.clone());
        }
        match loc.scheme {
            Scheme::S3 => self.open_bucket(loc).await,
            Scheme::Local => Ok(Arc::new(embedded::local_dir::LocalDirStore::new(&loc.root)?)),
        }
    }
}
