//! The Lambda Kinesis event as Riffle's stages read it: the four fields a stage uses per
//! record (data, partition key, sequence number, arrival time) and, shared by all records of
//! one shard, where they come from.
//!
//! Why not `aws_lambda_events`' own types: they hold eleven owned strings per record and
//! parse the arrival time through an untagged enum and a float printed and parsed again, so
//! parsing a batch cost about as much as validating it. Here a record owns three buffers;
//! the fields that are the same for every record of a shard (region, stream, role, shard)
//! are parsed borrowed and shared through one [`Arc`]. On the wire the event is exactly
//! Lambda's: [`Serialize`] writes every field Lambda writes, and a test reads Lambda's own
//! sample and compares field by field.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Lambda's constant fields of every Kinesis event record.
mod fast;

const EVENT_NAME: &str = "aws:kinesis:record";
const EVENT_SOURCE: &str = "aws:kinesis";
const EVENT_VERSION: &str = "1.0";
const SCHEMA_VERSION: &str = "1.0";

/// A batch of records from one shard, as Lambda invokes a function with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KinesisEvent {
    /// The records, in shard order.
    #[serde(rename = "Records")]
    pub records: Vec<KinesisEventRecord>,
}

/// Where the records of one shard come from: the same for every record of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The stream's region.
    pub aws_region: String,
    /// The stream's ARN.
    pub event_source_arn: String,
    /// The function's role ARN.
    pub invoke_identity_arn: String,
    /// The shard read.
    pub shard_id: String,
}

impl Source {
    /// A source known by its shard alone (tests and tools that build events by hand).
    pub fn of_shard(shard_id: &str) -> Arc<Self> {
        Arc::new(Source {
            shard_id: shard_id.to_owned(),
            ..Source::default()
        })
    }
}

/// One record of the event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KinesisEventRecord {
    /// Region, stream, role and shard, shared with the other records of the shard.
    pub source: Arc<Source>,
    /// The Kinesis record itself.
    pub kinesis: KinesisRecord,
}

/// The Kinesis part of an event record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KinesisRecord {
    /// The record's bytes (base64 on the wire).
    pub data: Vec<u8>,
    /// Its partition key.
    pub partition_key: String,
    /// Its sequence number in the shard.
    pub sequence_number: String,
    /// When Kinesis received it (seconds with milliseconds on the wire).
    pub approximate_arrival_timestamp: DateTime<Utc>,
}

impl KinesisEventRecord {
    /// Lambda's `eventID`: `<shard>:<sequence number>`.
    pub fn event_id(&self) -> String {
        format!("{}:{}", self.source.shard_id, self.kinesis.sequence_number)
    }
}

impl Serialize for KinesisEventRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("KinesisEventRecord", 9)?;
        s.serialize_field("kinesis", &self.kinesis)?;
        s.serialize_field("eventSource", EVENT_SOURCE)?;
        s.serialize_field("eventVersion", EVENT_VERSION)?;
        s.serialize_field("eventID", &self.event_id())?;
        s.serialize_field("eventName", EVENT_NAME)?;
        s.serialize_field("invokeIdentityArn", &self.source.invoke_identity_arn)?;
        s.serialize_field("awsRegion", &self.source.aws_region)?;
        s.serialize_field("eventSourceARN", &self.source.event_source_arn)?;
        s.end()
    }
}

impl Serialize for KinesisRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("KinesisRecord", 5)?;
        s.serialize_field("kinesisSchemaVersion", SCHEMA_VERSION)?;
        s.serialize_field("partitionKey", &self.partition_key)?;
        s.serialize_field("sequenceNumber", &self.sequence_number)?;
        s.serialize_field(
            "data",
            &base64::engine::general_purpose::STANDARD.encode(&self.data),
        )?;
        s.serialize_field(
            "approximateArrivalTimestamp",
            &(self.approximate_arrival_timestamp.timestamp_millis() as f64 / 1000.0),
        )?;
        s.end()
    }
}

/// The record as it arrives, strings borrowed from the payload where it has no escapes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRecord<'a> {
    #[serde(rename = "eventID", borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    aws_region: Option<Cow<'a, str>>,
    #[serde(rename = "eventSourceARN", borrow, default)]
    event_source_arn: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    invoke_identity_arn: Option<Cow<'a, str>>,
    kinesis: WireKinesis,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireKinesis {
    #[serde(deserialize_with = "base64_bytes")]
    data: Vec<u8>,
    #[serde(default)]
    partition_key: String,
    #[serde(default)]
    sequence_number: String,
    #[serde(deserialize_with = "seconds")]
    approximate_arrival_timestamp: DateTime<Utc>,
}

impl<'de> Deserialize<'de> for KinesisEventRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireRecord::deserialize(deserializer)?;
        let shard = wire
            .event_id
            .as_deref()
            .and_then(|id| id.split_once(':'))
            .map_or("", |(shard, _)| shard);
        let source = source_of(
            shard,
            wire.aws_region.as_deref().unwrap_or_default(),
            wire.event_source_arn.as_deref().unwrap_or_default(),
            wire.invoke_identity_arn.as_deref().unwrap_or_default(),
        );
        Ok(KinesisEventRecord {
            source,
            kinesis: KinesisRecord {
                data: wire.kinesis.data,
                partition_key: wire.kinesis.partition_key,
                sequence_number: wire.kinesis.sequence_number,
                approximate_arrival_timestamp: wire.kinesis.approximate_arrival_timestamp,
            },
        })
    }
}

impl KinesisEvent {
    /// The event from Lambda's JSON: read by a scanner made for Lambda's shape when it is
    /// in it (about three times faster), by serde otherwise, which also gives the errors.
    ///
    /// # Errors
    /// The text is not a Kinesis event.
    pub fn from_json(json: &str) -> Result<KinesisEvent, serde_json::Error> {
        match fast::parse(json) {
            Some(event) => Ok(event),
            None => serde_json::from_str(json),
        }
    }
}

/// The source of a record of `shard`: the one the previous record had when it is the same
/// (every record of a batch), else a new one.
fn source_of(shard: &str, region: &str, arn: &str, role: &str) -> Arc<Source> {
    let source = interned(shard, |s| {
        s.aws_region == region && s.event_source_arn == arn && s.invoke_identity_arn == role
    })
    .unwrap_or_else(|| {
        Arc::new(Source {
            aws_region: region.to_owned(),
            event_source_arn: arn.to_owned(),
            invoke_identity_arn: role.to_owned(),
            shard_id: shard.to_owned(),
        })
    });
    remember(&source);
    source
}

thread_local! {
    /// The source of the record parsed last on this thread: every record of a batch has the
    /// same one, so all but the first share it instead of allocating four strings each.
    static LAST_SOURCE: RefCell<Option<Arc<Source>>> = const { RefCell::new(None) };
}

fn interned(shard: &str, same: impl Fn(&Source) -> bool) -> Option<Arc<Source>> {
    LAST_SOURCE.with_borrow(|last| {
        last.as_ref()
            .filter(|s| s.shard_id == shard && same(s))
            .cloned()
    })
}

fn remember(source: &Arc<Source>) {
    LAST_SOURCE.with_borrow_mut(|last| {
        if !last.as_ref().is_some_and(|l| Arc::ptr_eq(l, source)) {
            *last = Some(source.clone());
        }
    });
}

/// Base64 text decoded straight from the payload, without an owned copy of the text, by a
/// SIMD decoder (the scalar one cost about a third of the event's parse).
fn base64_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("base64 text")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            base64_simd::STANDARD
                .decode_to_vec(v)
                .map_err(|e| E::custom(format!("data is not base64: {e}")))
        }
    }
    deserializer.deserialize_str(Visitor)
}

/// Lambda writes the arrival time as seconds with three decimals; the nearest millisecond
/// is exact for every value it writes.
fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    arrival(f64::deserialize(deserializer)?).map_err(D::Error::custom)
}

/// The arrival time of `secs` seconds since the epoch, to the nearest millisecond.
fn arrival(secs: f64) -> Result<DateTime<Utc>, String> {
    let millis = (secs * 1000.0).round();
    if !millis.is_finite() || millis.abs() > i64::MAX as f64 {
        return Err(format!("arrival time {secs} out of range"));
    }
    DateTime::from_timestamp_millis(millis as i64)
        .ok_or_else(|| format!("arrival time {secs} out of range"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../../tests/fixtures/kinesis_event.json");

    #[test]
    fn reads_lambdas_sample_and_writes_it_back_field_by_field() {
        let ours: KinesisEvent = serde_json::from_str(FIXTURE).unwrap();
        let theirs: aws_lambda_events::event::kinesis::KinesisEvent =
            serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(ours.records.len(), 2);
        for (o, t) in ours.records.iter().zip(&theirs.records) {
            assert_eq!(o.kinesis.data, *t.kinesis.data);
            assert_eq!(o.kinesis.partition_key, t.kinesis.partition_key);
            assert_eq!(o.kinesis.sequence_number, t.kinesis.sequence_number);
            assert_eq!(Some(o.event_id()), t.event_id);
            assert_eq!(Some(&o.source.aws_region), t.aws_region.as_ref());
            assert_eq!(
                Some(&o.source.event_source_arn),
                t.event_source_arn.as_ref()
            );
        }
        // `aws_lambda_events` reads `1700000001.5` as 5 ms past the second (it parses the
        // digits after the point as milliseconds); the arrival time is checked by value.
        let millis: Vec<i64> = ours
            .records
            .iter()
            .map(|r| r.kinesis.approximate_arrival_timestamp.timestamp_millis())
            .collect();
        assert_eq!(millis, [1_700_000_000_123, 1_700_000_001_500]);
        assert!(
            Arc::ptr_eq(&ours.records[0].source, &ours.records[1].source),
            "one shard, one source"
        );
        let fixture: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(serde_json::to_value(&ours).unwrap(), fixture);
    }

    #[test]
    fn bad_fields_are_errors_not_panics() {
        let record = |data: &str, at: &str| {
            format!(
                r#"{{"Records":[{{"eventID":"s:1","kinesis":{{"data":{data},"partitionKey":"k","sequenceNumber":"1","approximateArrivalTimestamp":{at}}}}}]}}"#
            )
        };
        assert!(serde_json::from_str::<KinesisEvent>(&record("\"AAE=\"", "1.5")).is_ok());
        for (data, at) in [("\"!!\"", "1.5"), ("7", "1.5"), ("\"AAE=\"", "1e300")] {
            let json = record(data, at);
            assert!(
                serde_json::from_str::<KinesisEvent>(&json).is_err(),
                "{json}"
            );
        }
    }

    #[test]
    fn records_of_other_shards_get_their_own_source() {
        let json = r#"{"Records":[
            {"eventID":"a:1","kinesis":{"data":"","partitionKey":"k","sequenceNumber":"1","approximateArrivalTimestamp":1}},
            {"eventID":"b:2","kinesis":{"data":"","partitionKey":"k","sequenceNumber":"2","approximateArrivalTimestamp":1}}]}"#;
        let event: KinesisEvent = serde_json::from_str(json).unwrap();
        assert_eq!(event.records[0].source.shard_id, "a");
        assert_eq!(event.records[1].source.shard_id, "b");
    }
}
