//! The AWS service limits Riffle works within, one definition each (the AWS documentation's
//! numbers; a test of each caller shows it stays inside).

/// Kinesis: records in one PutRecords call.
pub const KINESIS_PUT_RECORDS_MAX_RECORDS: usize = 500;
/// Kinesis: bytes (data and partition keys) in one PutRecords call.
pub const KINESIS_PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;
/// Kinesis: bytes of one record (data and partition key).
pub const KINESIS_RECORD_MAX_BYTES: usize = 1024 * 1024;
/// Kinesis: characters of a partition key.
pub const KINESIS_PARTITION_KEY_MAX_CHARS: usize = 256;
/// Kinesis: records one GetRecords call returns at most.
pub const KINESIS_GET_RECORDS_MAX: usize = 10_000;

/// DynamoDB: items in one BatchWriteItem call.
pub const DYNAMODB_BATCH_WRITE_MAX_ITEMS: usize = 25;
/// DynamoDB: keys in one BatchGetItem call.
pub const DYNAMODB_BATCH_GET_MAX_KEYS: usize = 100;

/// SQS: entries in one SendMessageBatch, DeleteMessageBatch or
/// ChangeMessageVisibilityBatch call, and messages one ReceiveMessage returns.
pub const SQS_BATCH_MAX_ENTRIES: usize = 10;
/// SQS: bytes of one message, and of one SendMessageBatch call (256 KiB).
pub const SQS_MESSAGE_MAX_BYTES: usize = 256 * 1024;

/// S3: bytes of one PutObject.
pub const S3_PUT_OBJECT_MAX_BYTES: usize = 5 * 1024 * 1024 * 1024;

/// Lambda: bytes of one synchronous invocation payload.
pub const LAMBDA_INVOCATION_PAYLOAD_MAX_BYTES: usize = 6 * 1024 * 1024;
