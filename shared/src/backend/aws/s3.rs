//! S3 as an object store. (To be written.)

use super::AwsContext;

/// One bucket on the configured S3 endpoint.
pub struct S3Store {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    pub endpoint: String,
}

impl S3Store {
    pub fn new(ctx: &AwsContext, bucket: &str) -> Self {
        S3Store {
            client: ctx.s3(),
            bucket: bucket.to_string(),
            endpoint: ctx.endpoint_id(),
        }
    }
}

// Placeholder until the adapter is written: every call fails clearly.
#[async_trait::async_trait]
impl crate::objstore::ObjectStore for S3Store {
    fn describe(&self) -> String {
        "S3Store".into()
    }
    fn copy_source(&self) -> Option<crate::objstore::CopySource> {
        None
    }
    async fn check(&self) -> crate::Result<()> {
        Err(todo_err())
    }
    async fn list(
        &self,
        _: &crate::objstore::ListRequest,
    ) -> crate::Result<crate::objstore::ListPage> {
        Err(todo_err())
    }
    async fn head(&self, _: &str) -> crate::Result<Option<crate::model::ObjectEntry>> {
        Err(todo_err())
    }
    async fn checksums(&self, _: &str) -> crate::Result<crate::objstore::Checksums> {
        Err(todo_err())
    }
    async fn copy_from(
        &self,
        _: &crate::objstore::CopySource,
        _: &crate::model::ObjectEntry,
        _: &str,
    ) -> crate::Result<crate::model::ObjectEntry> {
        Err(todo_err())
    }
    async fn get(&self, _: &str) -> crate::Result<crate::objstore::Body> {
        Err(todo_err())
    }
    async fn put(
        &self,
        _: &str,
        _: crate::objstore::Body,
        _: u64,
    ) -> crate::Result<crate::model::ObjectEntry> {
        Err(todo_err())
    }
    async fn delete(&self, _: &str, _: Option<&str>) -> crate::Result<crate::objstore::Deleted> {
        Err(todo_err())
    }
}

fn todo_err() -> crate::Error {
    crate::Error::Permanent("S3Store is not written yet".into())
}
