//! A local directory as an object store: keys are relative paths. (To be written.)

use crate::error::Result;

/// A directory seen as a bucket.
pub struct LocalDirStore {
    pub root: std::path::PathBuf,
}

impl LocalDirStore {
    pub fn new(root: &str) -> Result<Self> {
        Ok(LocalDirStore { root: root.into() })
    }
}

// Placeholder until the adapter is written: every call fails clearly.
#[async_trait::async_trait]
impl crate::objstore::ObjectStore for LocalDirStore {
    fn describe(&self) -> String {
        "LocalDirStore".into()
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
    crate::Error::Permanent("LocalDirStore is not written yet".into())
}
