//! An envelope read in place: its strings and payload borrowed from the record's bytes.
//!
//! The aggregator and the archiver only read envelopes, yet an owned [`Envelope`] costs an
//! allocation per string and two hash maps (stage times, enrichment attributes): about four
//! times the validator's decode of a raw envelope, for a record they mostly look at three
//! fields of. [`EnvelopeRef`] holds the same fields as [`Cow`]s, borrowed when the record is
//! in this binary's envelope version (nearly always) and owned when another version had to be
//! decoded by its writer schema; the maps are lists in wire order, which their few entries
//! make cheaper to search than to hash.

use std::borrow::Cow;

use super::{Enrichment, Envelope, Origin};

/// An envelope whose fields borrow from the record where they can (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct EnvelopeRef<'a> {
    /// Producer-assigned unique id.
    pub event_id: Cow<'a, str>,
    /// The producing system.
    pub source: Cow<'a, str>,
    /// Registry subject of the payload schema.
    pub subject: Cow<'a, str>,
    /// Registry id of the payload's writer schema.
    pub schema_id: i32,
    /// When the event happened, epoch millis.
    pub event_time: i64,
    /// When the producer handed it to Kinesis, epoch millis.
    pub ingest_time: i64,
    /// Stage name and emit time, in wire order.
    pub stage_times: Vec<(Cow<'a, str>, i64)>,
    /// X-Ray trace header.
    pub trace_header: Option<Cow<'a, str>>,
    /// Avro body of the payload in schema `schema_id`.
    pub payload: Cow<'a, [u8]>,
    /// Set by the enricher.
    pub enrichment: Option<EnrichmentRef<'a>>,
    /// Where the record comes from.
    pub origin: Option<OriginRef<'a>>,
}

/// [`Enrichment`], borrowed.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichmentRef<'a> {
    /// The view key this event counts towards.
    pub agg_key: Cow<'a, str>,
    /// The value aggregated under `agg_key`.
    pub metric: f64,
    /// Start of the event's tumbling window, epoch millis.
    pub window_start: i64,
    /// False when reference data was missing.
    pub reference_found: bool,
    /// Joined reference data and derived fields, in wire order (a later duplicate key wins,
    /// as it does in the owned map).
    pub attributes: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The event came after its window was final.
    pub late: bool,
}

/// [`Origin`], borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRef<'a> {
    /// `<producer id>/<channel>`, or `<stage>/<input shard id>` for a stage's re-publish.
    pub id: Cow<'a, str>,
    /// Decimal sequence number within `id`.
    pub seq: Cow<'a, str>,
    /// User record index inside a KPL aggregate at `seq`; 0 otherwise.
    pub sub: i32,
}

impl EnvelopeRef<'_> {
    /// When `stage` emitted the event, if it says (the last entry wins, as in a map).
    pub fn stage_time(&self, stage: &str) -> Option<i64> {
        self.stage_times
            .iter()
            .rev()
            .find(|(s, _)| s == stage)
            .map(|(_, t)| *t)
    }

    /// The owned envelope, with the same fields.
    pub fn into_owned(self) -> Envelope {
        Envelope {
            event_id: self.event_id.into_owned(),
            source: self.source.into_owned(),
            subject: self.subject.into_owned(),
            schema_id: self.schema_id,
            event_time: self.event_time,
            ingest_time: self.ingest_time,
            stage_times: self
                .stage_times
                .into_iter()
                .map(|(s, t)| (s.into_owned(), t))
                .collect(),
            trace_header: self.trace_header.map(Cow::into_owned),
            payload: self.payload.into_owned(),
            enrichment: self.enrichment.map(|e| Enrichment {
                agg_key: e.agg_key.into_owned(),
                metric: e.metric,
                window_start: e.window_start,
                reference_found: e.reference_found,
                attributes: e
                    .attributes
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
                late: e.late,
            }),
            origin: self.origin.map(|o| Origin {
                id: o.id.into_owned(),
                seq: o.seq.into_owned(),
                sub: o.sub,
            }),
        }
    }
}

impl From<Envelope> for EnvelopeRef<'static> {
    fn from(e: Envelope) -> Self {
        EnvelopeRef {
            event_id: Cow::Owned(e.event_id),
            source: Cow::Owned(e.source),
            subject: Cow::Owned(e.subject),
            schema_id: e.schema_id,
            event_time: e.event_time,
            ingest_time: e.ingest_time,
            stage_times: e
                .stage_times
                .into_iter()
                .map(|(s, t)| (Cow::Owned(s), t))
                .collect(),
            trace_header: e.trace_header.map(Cow::Owned),
            payload: Cow::Owned(e.payload),
            enrichment: e.enrichment.map(|x| EnrichmentRef {
                agg_key: Cow::Owned(x.agg_key),
                metric: x.metric,
                window_start: x.window_start,
                reference_found: x.reference_found,
                attributes: x
                    .attributes
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v)))
                    .collect(),
                late: x.late,
            }),
            origin: e.origin.map(|o| OriginRef {
                id: Cow::Owned(o.id),
                seq: Cow::Owned(o.seq),
                sub: o.sub,
            }),
        }
    }
}

/// The fields stages name and key a record by, whichever way its envelope was read.
pub trait EnvelopeHead {
    /// Producer-assigned unique id.
    fn event_id(&self) -> &str;
    /// The producing system.
    fn source(&self) -> &str;
    /// Registry subject of the payload schema.
    fn subject(&self) -> &str;
    /// Registry id of the payload's writer schema.
    fn schema_id(&self) -> i32;
    /// The origin's id, sequence and sub-index, if the envelope names one.
    fn origin_parts(&self) -> Option<(&str, &str, i32)>;
}

/// Both envelope types name these fields alike; only the origin's shape differs.
macro_rules! head_fields {
    () => {
        fn event_id(&self) -> &str {
            &self.event_id
        }
        fn source(&self) -> &str {
            &self.source
        }
        fn subject(&self) -> &str {
            &self.subject
        }
        fn schema_id(&self) -> i32 {
            self.schema_id
        }
    };
}

impl EnvelopeHead for Envelope {
    head_fields!();
    fn origin_parts(&self) -> Option<(&str, &str, i32)> {
        self.origin
            .as_ref()
            .map(|o| (o.id.as_str(), o.seq.as_str(), o.sub))
    }
}

impl EnvelopeHead for EnvelopeRef<'_> {
    head_fields!();
    fn origin_parts(&self) -> Option<(&str, &str, i32)> {
        self.origin.as_ref().map(|o| (&*o.id, &*o.seq, o.sub))
    }
}
