//! Every metric name Riffle emits, one definition each: the services and the runtime emit
//! them, the local harness reads them back, and the templates' alarms name them (a test
//! holds the templates to this list).

/// Records handed to a stage's handler (per stage).
pub const RECORDS_IN: &str = "RecordsIn";
/// Records a stage passed on to its output stream.
pub const RECORDS_OUT: &str = "RecordsOut";
/// Records the validator rejected (to the rejects queue).
pub const REJECTED: &str = "Rejected";
/// Records reported as batch item failures for Lambda to retry.
pub const RECORDS_RETRIED: &str = "RecordsRetried";
/// Records a stage could not handle at all this batch.
pub const RECORDS_FAILED: &str = "RecordsFailed";
/// Copies dropped: not above their origin's mark (ADR 0010).
pub const DUPLICATES_DROPPED: &str = "DuplicatesDropped";
/// Origin marks items written (one per input shard whose marks moved).
pub const MARK_WRITES: &str = "MarkWrites";
/// Records the enricher sent to its dead-letter queue.
pub const DEAD_LETTERED: &str = "DeadLettered";
/// Events enriched without their reference item.
pub const REFERENCE_MISSING: &str = "ReferenceMissing";
/// Records the aggregator or the archiver parked on its dead-letter queue.
pub const RECORDS_PARKED: &str = "RecordsParked";
/// Records a view item already held (a redelivery).
pub const RECORDS_REPLAYED: &str = "RecordsReplayed";
/// View items written.
pub const VIEW_ITEMS_WRITTEN: &str = "ViewItemsWritten";
/// View item writes that lost a race and were redone.
pub const VIEW_WRITE_CONFLICTS: &str = "ViewWriteConflicts";
/// Time from ingest to the view, per-batch percentiles.
pub const INGEST_TO_VIEW_MS: &str = "IngestToViewMs";
/// Rows the archiver wrote.
pub const ROWS_ARCHIVED: &str = "RowsArchived";
/// Archive objects written.
pub const OBJECTS_WRITTEN: &str = "ObjectsWritten";
/// Archive bytes written.
pub const BYTES_WRITTEN: &str = "BytesWritten";
/// Rows an archiver attempt found already written by an earlier one.
pub const RECORDS_RECOVERED: &str = "RecordsRecovered";

/// Batches handed to a handler (local event source mapping).
pub const BATCHES: &str = "Batches";
/// Records in those batches.
pub const RECORDS: &str = "Records";
/// Time the handler took per batch.
pub const HANDLER_MS: &str = "HandlerMs";
/// Age of the newest record read, as Lambda's IteratorAge.
pub const ITERATOR_AGE_MS: &str = "IteratorAgeMs";
/// Batches that failed as a whole.
pub const BATCH_ERRORS: &str = "BatchErrors";
/// Failed batches split in two.
pub const BISECTIONS: &str = "Bisections";
/// Batch retries.
pub const RETRIES: &str = "Retries";
/// Records sent to the on-failure destination.
pub const RECORDS_TO_DESTINATION: &str = "RecordsToDestination";
/// Handler errors injected for fault tests.
pub const FAULTS_INJECTED: &str = "FaultsInjected";
/// Shard leases held by this instance.
pub const LEASES_HELD: &str = "LeasesHeld";
/// Shard leases taken over from an instance that stopped renewing.
pub const LEASE_TAKEOVERS: &str = "LeaseTakeovers";

/// DynamoDB items read (metered, `riffle_aws::meter`).
pub const DYNAMO_ITEMS_READ: &str = "DynamoItemsRead";
/// DynamoDB items written.
pub const DYNAMO_ITEMS_WRITTEN: &str = "DynamoItemsWritten";
/// DynamoDB items scanned.
pub const DYNAMO_ITEMS_SCANNED: &str = "DynamoItemsScanned";
/// Kinesis PUT payload units.
pub const KINESIS_PUT_UNITS: &str = "KinesisPutUnits";
/// Kinesis records put.
pub const KINESIS_RECORDS_PUT: &str = "KinesisRecordsPut";

/// Batches a stage failed as a whole (aggregator, archiver).
pub const BATCHES_FAILED: &str = "BatchesFailed";
/// Time a stage's batch took (aggregator, archiver).
pub const BATCH_MS: &str = "BatchMs";

/// Producer library: user records put.
pub const RECORDS_PUT: &str = "RecordsPut";
/// Producer library: bytes put.
pub const BYTES_PUT: &str = "BytesPut";
/// Producer library: PUT payload units.
pub const PUT_PAYLOAD_UNITS: &str = "PutPayloadUnits";
/// Producer library: PutRecords calls.
pub const PUT_REQUESTS: &str = "PutRequests";
/// Producer library: entries answered as throttled.
pub const THROTTLED: &str = "Throttled";

/// Lambda's own metrics the templates alarm on (emitted by AWS, not by Riffle).
pub const LAMBDA_METRICS: [&str; 2] = ["Errors", "IteratorAge"];

/// Every name Riffle emits.
pub const ALL: &[&str] = &[
    RECORDS_IN,
    RECORDS_OUT,
    REJECTED,
    RECORDS_RETRIED,
    RECORDS_FAILED,
    DUPLICATES_DROPPED,
    MARK_WRITES,
    DEAD_LETTERED,
    REFERENCE_MISSING,
    RECORDS_PARKED,
    RECORDS_REPLAYED,
    VIEW_ITEMS_WRITTEN,
    VIEW_WRITE_CONFLICTS,
    INGEST_TO_VIEW_MS,
    ROWS_ARCHIVED,
    OBJECTS_WRITTEN,
    BYTES_WRITTEN,
    RECORDS_RECOVERED,
    BATCHES,
    RECORDS,
    HANDLER_MS,
    ITERATOR_AGE_MS,
    BATCH_ERRORS,
    BISECTIONS,
    RETRIES,
    RECORDS_TO_DESTINATION,
    FAULTS_INJECTED,
    LEASES_HELD,
    LEASE_TAKEOVERS,
    DYNAMO_ITEMS_READ,
    DYNAMO_ITEMS_WRITTEN,
    DYNAMO_ITEMS_SCANNED,
    KINESIS_PUT_UNITS,
    KINESIS_RECORDS_PUT,
    BATCHES_FAILED,
    BATCH_MS,
    RECORDS_PUT,
    BYTES_PUT,
    PUT_PAYLOAD_UNITS,
    PUT_REQUESTS,
    THROTTLED,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct() {
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len());
    }

    /// Every metric an alarm of the templates watches is one Riffle emits, or Lambda's own.
    #[test]
    fn the_templates_alarm_on_emitted_metrics() {
        let infra = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra");
        let mut files = vec![infra.join("platform.yaml")];
        for entry in std::fs::read_dir(infra.join("services"))
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(entry.path());
        }
        let mut seen = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for line in text.lines() {
                let Some(name) = line.trim().strip_prefix("MetricName:") else {
                    continue;
                };
                let name = name.trim().trim_matches('"');
                seen += 1;
                assert!(
                    ALL.contains(&name) || LAMBDA_METRICS.contains(&name),
                    "{}: alarm on {name}, which nothing emits",
                    file.display()
                );
            }
        }
        assert!(seen > 0, "no alarms found under {}", infra.display());
    }
}
