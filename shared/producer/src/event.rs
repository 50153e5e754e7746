//! What a caller sends, and the envelope it becomes.

use std::collections::HashMap;

use riffle_codec::{Envelope, EnvelopeCodec};

use crate::ProducerError;

/// One event to produce. The payload is Avro binary (unframed) in the writer schema the producer
/// registered under `schema_id`; the producer does not look inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerEvent {
    /// Unique id; a UUID v7 is generated when `None`. Consumers deduplicate by it, so a caller
    /// that may send the same event twice should set it.
    pub event_id: Option<String>,
    /// The producing system.
    pub source: String,
    /// Registry subject of the payload schema.
    pub subject: String,
    /// Registry id of the payload's writer schema.
    pub schema_id: u32,
    /// Avro body of the payload.
    pub payload: Vec<u8>,
    /// Decides the shard; the unit of ordering.
    pub partition_key: String,
    /// When the event happened, epoch millis.
    pub event_time: i64,
    /// X-Ray trace header to carry along.
    pub trace_header: Option<String>,
}

impl ProducerEvent {
    /// An event happening now, with a generated id and no trace header.
    pub fn new(
        source: impl Into<String>,
        subject: impl Into<String>,
        schema_id: u32,
        partition_key: impl Into<String>,
        payload: Vec<u8>,
    ) -> Self {
        ProducerEvent {
            event_id: None,
            source: source.into(),
            subject: subject.into(),
            schema_id,
            payload,
            partition_key: partition_key.into(),
            event_time: now_ms(),
            trace_header: None,
        }
    }

    /// Sets the event id.
    #[must_use]
    pub fn with_event_id(mut self, id: impl Into<String>) -> Self {
        self.event_id = Some(id.into());
        self
    }

    /// Sets the event time, epoch millis.
    #[must_use]
    pub fn with_event_time(mut self, event_time_ms: i64) -> Self {
        self.event_time = event_time_ms;
        self
    }

    /// Sets the trace header.
    #[must_use]
    pub fn with_trace_header(mut self, header: impl Into<String>) -> Self {
        self.trace_header = Some(header.into());
        self
    }

    /// The framed envelope for this event, ingested at `ingest_time` (epoch millis); returns the
    /// partition key, the event id and the record bytes.
    pub(crate) fn encode(
        self,
        codec: &EnvelopeCodec,
        ingest_time: i64,
    ) -> Result<(String, String, Vec<u8>), ProducerError> {
        let schema_id = i32::try_from(self.schema_id).map_err(|_| {
            ProducerError::Unencodable(format!(
                "schema id {} does not fit the envelope's int",
                self.schema_id
            ))
        })?;
        let event_id = match self.event_id {
            Some(id) if id.is_empty() => {
                return Err(ProducerError::Unencodable("empty event id".into()));
            }
            Some(id) => id,
            None => uuid::Uuid::now_v7().to_string(),
        };
        let envelope = Envelope {
            origin: None,
            event_id,
            source: self.source,
            subject: self.subject,
            schema_id,
            event_time: self.event_time,
            ingest_time,
            stage_times: HashMap::new(),
            trace_header: self.trace_header,
            payload: self.payload,
            enrichment: None,
        };
        let data = codec
            .encode(&envelope)
            .map_err(|e| ProducerError::Unencodable(e.to_string()))?;
        Ok((self.partition_key, envelope.event_id, data))
    }
}

/// Wall-clock epoch millis.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_framed_envelope_that_decodes_back() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let event = ProducerEvent::new("shop-web", "com.riffle.shop.OrderPlaced", 3, "cus-1", {
            vec![1, 2, 3]
        })
        .with_event_time(1_000)
        .with_trace_header("Root=1-abc");
        let (key, id, data) = event.encode(&codec, 2_000).unwrap();
        assert_eq!(key, "cus-1");
        assert_eq!(&data[..5], &[0, 0, 0, 0, 7]);
        let back = codec.decode(&data).unwrap();
        assert_eq!(back.event_id, id);
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert_eq!(back.schema_id, 3);
        assert_eq!(back.event_time, 1_000);
        assert_eq!(back.ingest_time, 2_000);
        assert_eq!(back.trace_header.as_deref(), Some("Root=1-abc"));
        assert_eq!(back.payload, vec![1, 2, 3]);
    }

    #[test]
    fn unencodable_events_are_errors() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let big_id = ProducerEvent::new("s", "x", u32::MAX, "k", vec![]);
        assert!(matches!(
            big_id.encode(&codec, 0),
            Err(ProducerError::Unencodable(_))
        ));
        let empty_id = ProducerEvent::new("s", "x", 1, "k", vec![]).with_event_id("");
        assert!(matches!(
            empty_id.encode(&codec, 0),
            Err(ProducerError::Unencodable(_))
        ));
    }
}
