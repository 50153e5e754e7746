//! The archive bucket as operator tools see it: besides writing (the [`ObjectStore`] port the
//! handler uses), listing, reading and deleting, for compaction and replay.
//!
//! A port of its own rather than more methods on [`ObjectStore`], so the handler's port stays
//! as small as what the handler needs.

use std::future::Future;

use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use riffle_aws::AwsError;

use crate::ArchiveError;
use crate::store::{ObjectStore, S3ObjectStore};

/// S3 limit: keys in one DeleteObjects request.
pub const DELETE_OBJECTS_MAX_KEYS: usize = 1_000;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What compaction and replay need from the bucket.
pub trait ArchiveBucket: ObjectStore {
    /// Every object whose key starts with `prefix`, in key order.
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<ObjectInfo>, ArchiveError>> + Send;

    /// The whole object.
    fn get(&self, key: &str) -> impl Future<Output = Result<Vec<u8>, ArchiveError>> + Send;

    /// The last `bytes` bytes of the object (all of it when it is shorter).
    fn get_tail(
        &self,
        key: &str,
        bytes: usize,
    ) -> impl Future<Output = Result<Vec<u8>, ArchiveError>> + Send;

    /// Deletes `keys`; deleting a key that does not exist is not an error.
    fn delete(&self, keys: &[String]) -> impl Future<Output = Result<(), ArchiveError>> + Send;
}

fn store_error<E, R>(
    operation: &'static str,
) -> impl FnOnce(aws_sdk_s3::error::SdkError<E, R>) -> ArchiveError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    move |e| ArchiveError::Store(AwsError::from_sdk(operation, e))
}

impl S3ObjectStore {
    async fn get_range(&self, key: &str, range: Option<String>) -> Result<Vec<u8>, ArchiveError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
            .map_err(store_error("GetObject"))?;
        let body = out.body.collect().await.map_err(|e| {
            ArchiveError::Store(AwsError::Call {
                operation: "GetObject",
                code: "ReadBody".into(),
                message: e.to_string(),
                retryable: true,
            })
        })?;
        Ok(body.into_bytes().to_vec())
    }
}

impl ArchiveBucket for S3ObjectStore {
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ArchiveError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(store_error("ListObjectsV2"))?;
            out.extend(page.contents().iter().filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_owned(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                })
            }));
            match page.next_continuation_token {
                Some(t) if page.is_truncated == Some(true) => token = Some(t),
                _ => break,
            }
        }
        out.sort();
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        self.get_range(key, None).await
    }

    async fn get_tail(&self, key: &str, bytes: usize) -> Result<Vec<u8>, ArchiveError> {
        self.get_range(key, Some(format!("bytes=-{bytes}"))).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), ArchiveError> {
        for chunk in keys.chunks(DELETE_OBJECTS_MAX_KEYS) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ArchiveError::Encode(e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| ArchiveError::Encode(e.to_string()))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(store_error("DeleteObjects"))?;
            if let Some(failed) = out.errors().first() {
                return Err(ArchiveError::Store(AwsError::Call {
                    operation: "DeleteObjects",
                    code: failed.code().unwrap_or("Unknown").to_owned(),
                    message: format!(
                        "{} of {} keys not deleted, first {:?}: {}",
                        out.errors().len(),
                        chunk.len(),
                        failed.key().unwrap_or_default(),
                        failed.message().unwrap_or_default()
                    ),
                    retryable: true,
                }));
            }
        }
        Ok(())
    }
}
