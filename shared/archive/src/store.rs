//! The archive bucket behind a port.

use std::future::Future;

use aws_sdk_s3::primitives::ByteStream;
use riffle_aws::AwsError;

use crate::ArchiveError;

pub use riffle_aws::limits::S3_PUT_OBJECT_MAX_BYTES as PUT_OBJECT_MAX_BYTES;
/// The media type of Parquet files.
pub const PARQUET_CONTENT_TYPE: &str = "application/vnd.apache.parquet";

/// Where archive objects are written.
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes (or overwrites) the object `key`.
    fn put(
        &self,
        key: &str,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<(), ArchiveError>> + Send;
}

/// The archive in an S3 bucket (use a path-style client, `riffle_aws::s3_client`).
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    pub(crate) client: aws_sdk_s3::Client,
    pub(crate) bucket: String,
}

impl S3ObjectStore {
    /// Objects in `bucket`.
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

impl ObjectStore for S3ObjectStore {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), ArchiveError> {
        if body.len() > PUT_OBJECT_MAX_BYTES {
            return Err(ArchiveError::TooLarge {
                key: key.to_owned(),
                bytes: body.len(),
                limit: PUT_OBJECT_MAX_BYTES,
            });
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(PARQUET_CONTENT_TYPE)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| ArchiveError::Store(AwsError::from_sdk("PutObject", e)))?;
        Ok(())
    }
}
