//! What a process asked of the billed AWS APIs, counted where the requests leave it: DynamoDB
//! item reads and writes (an interceptor on every client [`crate::dynamodb_client`] builds)
//! and Kinesis PUT payload units (in [`crate::KinesisPublisher`]). The runtime reports the
//! increase after each batch as metrics, so the demo can say what an event cost, and a test
//! holds the counts to what the emulator saw.
//!
//! Counted per attempt, as the service bills and as the emulator records them: a call the SDK
//! retries counts again, and so do the unprocessed items a batch call sends again.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextRef,
    BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

/// Bytes per Kinesis PUT payload unit: every record put costs one unit per started 25 KB.
pub const PUT_PAYLOAD_UNIT_BYTES: usize = 25 * 1024;

static DYNAMO_READS: AtomicU64 = AtomicU64::new(0);
static DYNAMO_WRITES: AtomicU64 = AtomicU64::new(0);
static DYNAMO_SCANNED: AtomicU64 = AtomicU64::new(0);
static KINESIS_PUT_UNITS: AtomicU64 = AtomicU64::new(0);
static KINESIS_RECORDS: AtomicU64 = AtomicU64::new(0);
static KINESIS_THROTTLED: AtomicU64 = AtomicU64::new(0);

/// The process's counts so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// DynamoDB items asked for by key (GetItem, BatchGetItem keys).
    pub dynamo_reads: u64,
    /// DynamoDB items written (PutItem, UpdateItem, DeleteItem, BatchWriteItem and
    /// TransactWriteItems entries).
    pub dynamo_writes: u64,
    /// DynamoDB items returned by Query and Scan.
    pub dynamo_scanned: u64,
    /// Kinesis PUT payload units of the records put (each attempt).
    pub kinesis_put_units: u64,
    /// Kinesis records put (each attempt).
    pub kinesis_records: u64,
    /// Kinesis entries answered as throttled (each attempt; injected faults included).
    pub kinesis_throttled: u64,
}

impl Usage {
    /// What was counted since `earlier`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            dynamo_reads: self.dynamo_reads.saturating_sub(earlier.dynamo_reads),
            dynamo_writes: self.dynamo_writes.saturating_sub(earlier.dynamo_writes),
            dynamo_scanned: self.dynamo_scanned.saturating_sub(earlier.dynamo_scanned),
            kinesis_put_units: self
                .kinesis_put_units
                .saturating_sub(earlier.kinesis_put_units),
            kinesis_records: self.kinesis_records.saturating_sub(earlier.kinesis_records),
            kinesis_throttled: self
                .kinesis_throttled
                .saturating_sub(earlier.kinesis_throttled),
        }
    }
}

/// The counts of this process so far.
pub fn usage() -> Usage {
    Usage {
        dynamo_reads: DYNAMO_READS.load(Ordering::Relaxed),
        dynamo_writes: DYNAMO_WRITES.load(Ordering::Relaxed),
        dynamo_scanned: DYNAMO_SCANNED.load(Ordering::Relaxed),
        kinesis_put_units: KINESIS_PUT_UNITS.load(Ordering::Relaxed),
        kinesis_records: KINESIS_RECORDS.load(Ordering::Relaxed),
        kinesis_throttled: KINESIS_THROTTLED.load(Ordering::Relaxed),
    }
}

/// Counts `n` Kinesis entries answered as throttled.
pub fn kinesis_throttled(n: usize) {
    KINESIS_THROTTLED.fetch_add(n as u64, Ordering::Relaxed);
}

/// Counts one Kinesis record of `bytes` (data plus partition key) put.
pub fn kinesis_put(bytes: usize) {
    KINESIS_RECORDS.fetch_add(1, Ordering::Relaxed);
    let units = bytes.div_ceil(PUT_PAYLOAD_UNIT_BYTES).max(1);
    KINESIS_PUT_UNITS.fetch_add(units as u64, Ordering::Relaxed);
}

/// Items of one DynamoDB call, read from its input before it is serialized.
#[derive(Debug, Clone, Copy, Default)]
struct Items {
    reads: u64,
    writes: u64,
}

impl aws_smithy_types::config_bag::Storable for Items {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// The interceptor behind [`crate::dynamodb_client`].
#[derive(Debug, Default)]
pub(crate) struct DynamoMeter;

impl Intercept for DynamoMeter {
    fn name(&self) -> &'static str {
        "RiffleDynamoMeter"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation as op;
        let input = context.input();
        let items = if input.downcast_ref::<op::get_item::GetItemInput>().is_some() {
            Items {
                reads: 1,
                writes: 0,
            }
        } else if let Some(i) = input.downcast_ref::<op::batch_get_item::BatchGetItemInput>() {
            let keys = i
                .request_items()
                .map_or(0, |m| m.values().map(|k| k.keys().len()).sum::<usize>());
            Items {
                reads: keys as u64,
                writes: 0,
            }
        } else if input.downcast_ref::<op::put_item::PutItemInput>().is_some()
            || input
                .downcast_ref::<op::update_item::UpdateItemInput>()
                .is_some()
            || input
                .downcast_ref::<op::delete_item::DeleteItemInput>()
                .is_some()
        {
            Items {
                reads: 0,
                writes: 1,
            }
        } else if let Some(i) = input.downcast_ref::<op::batch_write_item::BatchWriteItemInput>() {
            let requests = i
                .request_items()
                .map_or(0, |m| m.values().map(Vec::len).sum::<usize>());
            Items {
                reads: 0,
                writes: requests as u64,
            }
        } else if let Some(i) =
            input.downcast_ref::<op::transact_write_items::TransactWriteItemsInput>()
        {
            Items {
                reads: 0,
                writes: i.transact_items().len() as u64,
            }
        } else {
            Items::default()
        };
        cfg.interceptor_state().store_put(items);
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(items) = cfg.load::<Items>() {
            DYNAMO_READS.fetch_add(items.reads, Ordering::Relaxed);
            DYNAMO_WRITES.fetch_add(items.writes, Ordering::Relaxed);
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation as op;
        let Ok(output) = context.output_or_error() else {
            return Ok(());
        };
        let count = if let Some(o) = output.downcast_ref::<op::scan::ScanOutput>() {
            o.count()
        } else if let Some(o) = output.downcast_ref::<op::query::QueryOutput>() {
            o.count()
        } else {
            0
        };
        DYNAMO_SCANNED.fetch_add(u64::try_from(count).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_units_round_up_per_started_25_kb() {
        let before = usage();
        kinesis_put(1);
        kinesis_put(PUT_PAYLOAD_UNIT_BYTES);
        kinesis_put(PUT_PAYLOAD_UNIT_BYTES + 1);
        let got = usage().since(&before);
        // No other test of this crate puts records.
        assert_eq!((got.kinesis_put_units, got.kinesis_records), (4, 3));
    }
}
