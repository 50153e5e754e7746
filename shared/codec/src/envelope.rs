//! The envelope that carries every event through every stage, and its codec.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::schema::CompiledSchema;
use crate::{CodecError, frame};

mod view;

pub use view::{EnrichmentRef, EnvelopeHead, EnvelopeRef, OriginRef};

/// `schemas/envelope.avsc`, the source of truth, compiled into every binary that speaks it.
pub const ENVELOPE_SCHEMA: &str = include_str!("../../../schemas/envelope.avsc");

/// The envelope's registry subject.
pub const ENVELOPE_SUBJECT: &str = "com.riffle.pipeline.Envelope";

/// One event in flight (see `schemas/envelope.avsc` for the meaning of each field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Producer-assigned unique id.
    pub event_id: String,
    /// The producing system.
    pub source: String,
    /// Registry subject of the payload schema.
    pub subject: String,
    /// Registry id of the payload's writer schema.
    pub schema_id: i32,
    /// When the event happened, epoch millis.
    pub event_time: i64,
    /// When the producer handed it to Kinesis, epoch millis.
    pub ingest_time: i64,
    /// Stage name -> emit time, epoch millis.
    #[serde(default)]
    pub stage_times: HashMap<String, i64>,
    /// X-Ray trace header.
    #[serde(default)]
    pub trace_header: Option<String>,
    /// Avro body of the payload in schema `schema_id`.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Set by the enricher.
    #[serde(default)]
    pub enrichment: Option<Enrichment>,
    /// Where the record comes from (ADR 0010); `None` from producers that do not say.
    #[serde(default)]
    pub origin: Option<Origin>,
}

/// A record's origin (see `schemas/envelope.avsc`): an id whose records reach each shard in
/// order, and the record's place in that order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `<producer id>/<channel>`, or `<stage>/<input shard id>` for a stage's re-publish.
    pub id: String,
    /// Decimal sequence number within `id`.
    pub seq: String,
    /// User record index inside a KPL aggregate at `seq`; 0 otherwise.
    #[serde(default)]
    pub sub: i32,
}

/// What the enricher derived (see `schemas/envelope.avsc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrichment {
    /// The view key this event counts towards.
    pub agg_key: String,
    /// The value aggregated under `agg_key`.
    pub metric: f64,
    /// Start of the event's tumbling window, epoch millis.
    pub window_start: i64,
    /// False when reference data was missing.
    pub reference_found: bool,
    /// Joined reference data and derived fields.
    #[serde(default)]
    pub attributes: HashMap<String, String>,
    /// The event came after its window was final (ADR 0021): archived with this flag, left
    /// out of the view.
    #[serde(default)]
    pub late: bool,
}

/// Encodes and decodes framed envelopes.
///
/// Writes always use the envelope version this binary was built with (`current`). Reads accept
/// any envelope version the process has learned, because serde maps fields by name: a newer
/// writer's extra fields are skipped and missing ones take their defaults.
pub struct EnvelopeCodec {
    current: Arc<CompiledSchema>,
    others: RwLock<HashMap<u32, Arc<CompiledSchema>>>,
}

impl std::fmt::Debug for EnvelopeCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvelopeCodec")
            .field("id", &self.current.id())
            .finish_non_exhaustive()
    }
}

impl EnvelopeCodec {
    /// A codec writing the bundled envelope schema, registered under `envelope_id`.
    ///
    /// # Errors
    /// Only if the bundled schema were invalid.
    pub fn new(envelope_id: u32) -> Result<Self, CodecError> {
        Ok(EnvelopeCodec {
            current: Arc::new(CompiledSchema::parse(envelope_id, ENVELOPE_SCHEMA)?),
            others: RwLock::new(HashMap::new()),
        })
    }

    /// Registry id of the envelope version this codec writes.
    pub fn id(&self) -> u32 {
        self.current.id()
    }

    /// Teaches the codec another envelope version (fetched from the registry by id).
    pub fn learn(&self, writer: Arc<CompiledSchema>) {
        if let Ok(mut map) = self.others.write() {
            map.insert(writer.id(), writer);
        }
    }

    /// Whether records framed with envelope version `id` can be decoded without learning it.
    pub fn knows(&self, id: u32) -> bool {
        id == self.current.id() || self.others.read().is_ok_and(|map| map.contains_key(&id))
    }

    /// Frames and encodes `envelope`, appending to `out`.
    ///
    /// # Errors
    /// [`CodecError::Encode`] if the envelope does not fit (it always does unless the schema changed).
    pub fn encode_into(&self, envelope: &Envelope, out: &mut Vec<u8>) -> Result<(), CodecError> {
        frame::write_header(out, self.current.id());
        // `current` is always the bundled schema, whose layout `write_envelope` spells out by
        // hand: the generic serde writer cost more than the rest of a stage's work per record.
        out.reserve(encoded_len_hint(envelope));
        write_envelope(envelope, out);
        Ok(())
    }

    /// Frames and encodes `envelope` into a new buffer.
    ///
    /// # Errors
    /// See [`EnvelopeCodec::encode_into`].
    pub fn encode(&self, envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(frame::HEADER_LEN + encoded_len_hint(envelope));
        self.encode_into(envelope, &mut out)?;
        Ok(out)
    }

    /// Whether `record` is an envelope this codec writes (its current version) that names no
    /// origin, so that [`stamp_origin`] may give it one. Anything else (another version, an
    /// envelope with an origin, bytes that are not an envelope) is not.
    pub fn names_no_origin(&self, record: &[u8]) -> bool {
        self.origin_id(record) == Some(None)
    }

    /// The origin id `record` names, if it is an envelope this codec writes (its current
    /// version): `Some(None)` for one naming no origin; `None` for anything else.
    pub fn origin_id(&self, record: &[u8]) -> Option<Option<String>> {
        if !frame::split(record).is_ok_and(|(id, _)| id == self.current.id()) {
            return None;
        }
        self.decode(record).ok().map(|e| e.origin.map(|o| o.id))
    }

    /// Decodes a framed envelope.
    ///
    /// # Errors
    /// Framing errors, [`CodecError::UnknownSchema`] for an envelope version not learned yet
    /// (fetch it and [`EnvelopeCodec::learn`] it), [`CodecError::Malformed`] for a bad body.
    pub fn decode(&self, record: &[u8]) -> Result<Envelope, CodecError> {
        self.decode_ref(record).map(EnvelopeRef::into_owned)
    }

    /// Decodes a framed envelope in place: strings and payload borrow from `record` when it
    /// is in this codec's own version (see [`EnvelopeRef`]).
    ///
    /// # Errors
    /// As [`EnvelopeCodec::decode`].
    pub fn decode_ref<'a>(&self, record: &'a [u8]) -> Result<EnvelopeRef<'a>, CodecError> {
        if crate::kpl::is_aggregated(record) {
            // Valid aggregates are unpacked before decoding; this one could not be, so say why.
            let opened = crate::kpl::open(record);
            return Err(crate::kpl::records_of(&opened)
                .err()
                .unwrap_or(crate::kpl::KplError::Nested)
                .into());
        }
        let (id, body) = frame::split(record)?;
        if id == self.current.id() {
            // Our own version, read by hand like it is written (see `read_envelope`).
            return read_envelope(body).map_err(|reason| self.current.malformed(reason));
        }
        let writer = self
            .others
            .read()
            .ok()
            .and_then(|map| map.get(&id).cloned())
            .ok_or(CodecError::UnknownSchema(id))?;
        writer.decode::<Envelope>(body).map(EnvelopeRef::from)
    }
}

/// At least the Avro body length of `envelope`, so one allocation holds it.
fn encoded_len_hint(e: &Envelope) -> usize {
    // Each string, bytes and number costs at most its length plus a 10-byte varint.
    const VARINT: usize = 10;
    let strings = e.event_id.len() + e.source.len() + e.subject.len() + e.payload.len();
    let stages: usize = e.stage_times.keys().map(|k| k.len() + 2 * VARINT).sum();
    let trace = e.trace_header.as_ref().map_or(0, String::len);
    let origin = e.origin.as_ref().map_or(0, |o| o.id.len() + o.seq.len());
    let enrichment = e.enrichment.as_ref().map_or(0, |x| {
        let attributes: usize = x.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
        x.agg_key.len() + attributes + (2 * x.attributes.len() + 7) * VARINT
    });
    strings + stages + trace + enrichment + origin + 15 * VARINT
}

fn write_long(out: &mut Vec<u8>, v: i64) {
    // Zig-zag, then base-128 little-endian groups.
    #[allow(clippy::cast_sign_loss)]
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        #[allow(clippy::cast_possible_truncation)]
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(z as u8);
}

fn write_len(out: &mut Vec<u8>, n: usize) {
    write_long(out, i64::try_from(n).unwrap_or(i64::MAX));
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_len(out, b.len());
    out.extend_from_slice(b);
}

/// `e` as an Avro body in the bundled envelope schema (field order of `envelope.avsc`; maps as
/// one block then the end marker, unions as branch index then value).
fn write_envelope(e: &Envelope, out: &mut Vec<u8>) {
    write_bytes(out, e.event_id.as_bytes());
    write_bytes(out, e.source.as_bytes());
    write_bytes(out, e.subject.as_bytes());
    write_long(out, i64::from(e.schema_id));
    write_long(out, e.event_time);
    write_long(out, e.ingest_time);
    if !e.stage_times.is_empty() {
        write_len(out, e.stage_times.len());
        for (stage, time) in &e.stage_times {
            write_bytes(out, stage.as_bytes());
            write_long(out, *time);
        }
    }
    out.push(0);
    match &e.trace_header {
        None => out.push(0),
        Some(t) => {
            out.push(2);
            write_bytes(out, t.as_bytes());
        }
    }
    write_bytes(out, &e.payload);
    match &e.enrichment {
        None => out.push(0),
        Some(x) => {
            out.push(2);
            write_bytes(out, x.agg_key.as_bytes());
            out.extend_from_slice(&x.metric.to_le_bytes());
            write_long(out, x.window_start);
            out.push(u8::from(x.reference_found));
            if !x.attributes.is_empty() {
                write_len(out, x.attributes.len());
                for (k, v) in &x.attributes {
                    write_bytes(out, k.as_bytes());
                    write_bytes(out, v.as_bytes());
                }
            }
            out.push(0);
            out.push(u8::from(x.late));
        }
    }
    match &e.origin {
        None => out.push(0),
        Some(o) => {
            out.push(2);
            write_bytes(out, o.id.as_bytes());
            write_bytes(out, o.seq.as_bytes());
            write_long(out, i64::from(o.sub));
        }
    }
}

/// Gives `origin` to an encoded envelope of the current version that names none (see
/// [`EnvelopeCodec::names_no_origin`]). The origin is the envelope's last field, so its null
/// branch is the record's last byte: that byte becomes the origin's branch and fields, and no
/// other byte moves. A producer stamps when it puts a record, not when it encodes it, because
/// the sequence is only known then.
///
/// # Panics
/// Never; a record whose last byte is not a null branch is left as it is (debug builds assert).
pub fn stamp_origin(record: &mut Vec<u8>, origin: &Origin) {
    debug_assert_eq!(record.last(), Some(&0), "envelope already names an origin");
    if record.last() != Some(&0) {
        return;
    }
    record.pop();
    record.reserve(stamped_growth(origin));
    record.push(2);
    write_bytes(record, origin.id.as_bytes());
    write_bytes(record, origin.seq.as_bytes());
    write_long(record, i64::from(origin.sub));
}

/// How many bytes [`stamp_origin`] adds to a record for `origin`.
pub fn stamped_growth(origin: &Origin) -> usize {
    let long_len = |v: i64| {
        #[allow(clippy::cast_sign_loss)]
        let z = ((v << 1) ^ (v >> 63)) as u64;
        (64 - z.max(1).leading_zeros() as usize).div_ceil(7)
    };
    let len = |n: usize| long_len(i64::try_from(n).unwrap_or(i64::MAX));
    // The branch byte replaces the null byte, so only the fields count.
    len(origin.id.len())
        + origin.id.len()
        + len(origin.seq.len())
        + origin.seq.len()
        + long_len(i64::from(origin.sub))
}

/// Undoes [`stamp_origin`] on a record stamped with `origin`.
pub fn unstamp_origin(record: &mut Vec<u8>, origin: &Origin) {
    let keep = record.len().saturating_sub(stamped_growth(origin) + 1);
    record.truncate(keep);
    record.push(0);
}

/// Reads what [`write_envelope`] writes: the bundled envelope version, field by field. The
/// schema-aware serde reader copies through a generic visitor and was a third of a stage's
/// per-record work; this reader checks every length against what is left and rejects trailing
/// bytes, and a test holds it to the serde reader's results on valid and corrupt input.
fn read_envelope(body: &[u8]) -> Result<EnvelopeRef<'_>, String> {
    let mut r = Reader { buf: body, pos: 0 };
    let event_id = r.string("event_id")?;
    let source = r.string("source")?;
    let subject = r.string("subject")?;
    let schema_id = i32::try_from(r.long("schema_id")?)
        .map_err(|_| "schema_id: int out of range".to_string())?;
    let event_time = r.long("event_time")?;
    let ingest_time = r.long("ingest_time")?;
    let stage_times = r.map("stage_times", |r| {
        Ok((r.string("stage_times key")?, r.long("stage_times value")?))
    })?;
    let trace_header = match r.long("trace_header branch")? {
        0 => None,
        1 => Some(r.string("trace_header")?),
        b => return Err(format!("trace_header: union branch {b} out of range")),
    };
    let payload = Cow::Borrowed(r.bytes("payload")?);
    let enrichment = match r.long("enrichment branch")? {
        0 => None,
        1 => {
            let agg_key = r.string("agg_key")?;
            let raw = r.take(8, "metric")?;
            let mut b = [0u8; 8];
            b.copy_from_slice(raw);
            let metric = f64::from_le_bytes(b);
            let window_start = r.long("window_start")?;
            let reference_found = match r.take(1, "reference_found")? {
                [0] => false,
                [1] => true,
                other => return Err(format!("reference_found: boolean byte {other:?}")),
            };
            let attributes = r.map("attributes", |r| {
                Ok((r.string("attributes key")?, r.string("attributes value")?))
            })?;
            let late = match r.take(1, "late")? {
                [0] => false,
                [1] => true,
                other => return Err(format!("late: boolean byte {other:?}")),
            };
            Some(EnrichmentRef {
                agg_key,
                metric,
                window_start,
                reference_found,
                attributes,
                late,
            })
        }
        b => return Err(format!("enrichment: union branch {b} out of range")),
    };
    let origin = match r.long("origin branch")? {
        0 => None,
        1 => Some(OriginRef {
            id: r.string("origin id")?,
            seq: r.string("origin seq")?,
            sub: i32::try_from(r.long("origin sub")?)
                .map_err(|_| "origin sub: int out of range".to_string())?,
        }),
        b => return Err(format!("origin: union branch {b} out of range")),
    };
    if r.pos != body.len() {
        return Err(format!("{} trailing bytes", body.len() - r.pos));
    }
    Ok(EnvelopeRef {
        event_id,
        source,
        subject,
        schema_id,
        event_time,
        ingest_time,
        stage_times,
        trace_header,
        payload,
        enrichment,
        origin,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn long(&mut self, what: &str) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("{what}: varint runs past the end"))?;
            self.pos += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                #[allow(clippy::cast_possible_wrap)]
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(format!("{what}: varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "{what}: needs {n} bytes, {} left",
                    self.buf.len() - self.pos
                )
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.long(what)?;
        let n = usize::try_from(n).map_err(|_| format!("{what}: negative length {n}"))?;
        self.take(n, what)
    }

    fn string(&mut self, what: &str) -> Result<Cow<'a, str>, String> {
        let b = self.bytes(what)?;
        std::str::from_utf8(b)
            .map(Cow::Borrowed)
            .map_err(|_| format!("{what}: not UTF-8"))
    }

    /// An Avro map: blocks until the end marker, `entry` reading each entry. A negative count
    /// is followed by the block's byte size, which is read and ignored. Each block's count
    /// sizes the list before its entries, so it never grows entry by entry.
    fn map<K, V>(
        &mut self,
        what: &str,
        mut entry: impl FnMut(&mut Self) -> Result<(K, V), String>,
    ) -> Result<Vec<(K, V)>, String> {
        let mut map = Vec::new();
        loop {
            let mut count = self.long(what)?;
            if count == 0 {
                return Ok(map);
            }
            if count < 0 {
                count = count
                    .checked_neg()
                    .ok_or_else(|| format!("{what}: block count overflow"))?;
                self.long(what)?;
            }
            // Every entry has a key, so it takes at least one byte.
            let entries = usize::try_from(count)
                .ok()
                .filter(|c| *c <= self.buf.len() - self.pos)
                .ok_or_else(|| format!("{what}: block of {count} entries exceeds the record"))?;
            map.reserve(entries);
            for _ in 0..entries {
                map.push(entry(self)?);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Envelope {
        Envelope {
            event_id: "0190a3c2-7d2e-7000-8000-000000000001".into(),
            source: "shop-web".into(),
            subject: "com.riffle.shop.OrderPlaced".into(),
            schema_id: 3,
            event_time: 1_764_000_000_000,
            ingest_time: 1_764_000_000_120,
            stage_times: HashMap::from([("validator".to_string(), 1_764_000_000_300)]),
            trace_header: Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into()),
            payload: vec![1, 2, 3, 4],
            enrichment: None,
            origin: Some(Origin {
                id: "p-1/0".into(),
                seq: "42".into(),
                sub: 0,
            }),
        }
    }

    #[test]
    fn stamping_an_origin_equals_encoding_it() {
        let codec = EnvelopeCodec::new(7).unwrap();
        for (id, seq, sub) in [
            ("p-1/0.0", "1", 0),
            ("demo-0190a3c27d2e7000/12.3", "18446744073709551615", 0),
            (&*"x".repeat(300), "63", 64),
        ] {
            let origin = Origin {
                id: id.into(),
                seq: seq.into(),
                sub,
            };
            let mut bare = sample();
            bare.origin = None;
            let mut record = codec.encode(&bare).unwrap();
            let plain = record.clone();
            assert!(codec.names_no_origin(&record));
            stamp_origin(&mut record, &origin);
            assert_eq!(record.len(), plain.len() + stamped_growth(&origin));
            let mut full = bare.clone();
            full.origin = Some(origin.clone());
            assert_eq!(record, codec.encode(&full).unwrap());
            assert!(!codec.names_no_origin(&record));
            unstamp_origin(&mut record, &origin);
            assert_eq!(record, plain);
        }
        assert!(!codec.names_no_origin(b"not an envelope"));
        let mut bare = sample();
        bare.origin = None;
        let other_version = EnvelopeCodec::new(8).unwrap();
        assert!(!other_version.names_no_origin(&codec.encode(&bare).unwrap()));
    }

    #[test]
    fn hand_written_encoding_matches_the_schema_writer() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut envs = vec![sample()];
        let mut e = sample();
        e.stage_times.clear();
        e.trace_header = None;
        e.payload.clear();
        e.schema_id = -70_000;
        e.event_time = i64::MIN;
        e.ingest_time = i64::MAX;
        envs.push(e.clone());
        e.stage_times.insert("enricher".into(), -1);
        e.stage_times.insert("validator".into(), 1 << 40);
        e.payload = vec![7; 300];
        e.enrichment = Some(Enrichment {
            agg_key: "orders:category=books".into(),
            metric: -0.25,
            window_start: 1_764_000_000_000,
            reference_found: false,
            attributes: HashMap::from([
                ("category".to_string(), "books".to_string()),
                ("region".to_string(), "eu".to_string()),
            ]),
            late: false,
        });
        envs.push(e.clone());
        e.enrichment.as_mut().unwrap().attributes.clear();
        e.enrichment.as_mut().unwrap().reference_found = true;
        envs.push(e);
        for env in envs {
            let mut by_schema = Vec::new();
            codec.current.encode(&env, &mut by_schema).unwrap();
            // The hand reader and the schema-driven serde reader agree on every byte string:
            // the valid one, each truncation and each single-byte corruption.
            let serde_read = |b: &[u8]| codec.current.decode::<Envelope>(b).ok();
            fn read_envelope(b: &[u8]) -> Result<Envelope, String> {
                super::read_envelope(b).map(EnvelopeRef::into_owned)
            }
            assert_eq!(read_envelope(&by_schema).ok(), Some(env.clone()));
            for cut in 0..by_schema.len() {
                assert_eq!(
                    read_envelope(&by_schema[..cut]).ok(),
                    serde_read(&by_schema[..cut]),
                    "cut {cut}"
                );
            }
            for i in 0..by_schema.len() {
                for v in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff] {
                    let mut b = by_schema.clone();
                    b[i] = v;
                    assert_eq!(read_envelope(&b).ok(), serde_read(&b), "byte {i} = {v:#x}");
                }
            }
            let framed = codec.encode(&env).unwrap();
            assert_eq!(&framed[5..], &by_schema[..], "{env:?}");
            assert!(frame::HEADER_LEN + encoded_len_hint(&env) >= framed.len());
            assert_eq!(codec.decode(&framed).unwrap(), env);
        }
    }

    #[test]
    fn round_trips_plain_and_enriched() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut env = sample();
        let bytes = codec.encode(&env).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(codec.decode(&bytes).unwrap(), env);

        env.enrichment = Some(Enrichment {
            agg_key: "orders:category=books".into(),
            metric: 12.5,
            window_start: 1_764_000_000_000,
            reference_found: true,
            attributes: HashMap::from([("category".to_string(), "books".to_string())]),
            late: false,
        });
        env.trace_header = None;
        let bytes = codec.encode(&env).unwrap();
        assert_eq!(codec.decode(&bytes).unwrap(), env);
    }

    #[test]
    fn unknown_version_and_garbage_are_typed_errors() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut bytes = codec.encode(&sample()).unwrap();
        bytes[4] = 8;
        assert!(matches!(
            codec.decode(&bytes),
            Err(CodecError::UnknownSchema(8))
        ));

        let good = codec.encode(&sample()).unwrap();
        for cut in 5..good.len() {
            assert!(codec.decode(&good[..cut]).is_err(), "cut at {cut} decoded");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            codec.decode(&trailing),
            Err(CodecError::Malformed { .. })
        ));
        let mut huge_len = vec![0, 0, 0, 0, 7];
        huge_len.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert!(codec.decode(&huge_len).is_err());
    }

    #[test]
    fn corrupt_aggregates_say_why() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut agg = crate::kpl::Aggregator::new();
        agg.add("k", None, &codec.encode(&sample()).unwrap());
        let mut bytes = agg.finish();
        let code = |b: &[u8]| codec.decode(b).unwrap_err().code();
        assert_eq!(code(&bytes), "kpl_nested");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(code(&bytes), "kpl_checksum");
    }

    #[test]
    fn learned_versions_decode() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let other = EnvelopeCodec::new(9).unwrap();
        let bytes = other.encode(&sample()).unwrap();
        codec.learn(Arc::new(CompiledSchema::parse(9, ENVELOPE_SCHEMA).unwrap()));
        assert_eq!(codec.decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn read_in_place_borrows_own_version_and_owns_others() {
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut env = sample();
        env.stage_times.insert("enricher".into(), 5);
        env.enrichment = Some(Enrichment {
            agg_key: "orders:category=books".into(),
            metric: 1.5,
            window_start: 60_000,
            reference_found: true,
            attributes: HashMap::from([("category".to_string(), "books".to_string())]),
            late: false,
        });
        let own = codec.encode(&env).unwrap();
        let view = codec.decode_ref(&own).unwrap();
        assert!(matches!(view.event_id, Cow::Borrowed(_)));
        assert!(matches!(view.payload, Cow::Borrowed(_)));
        assert_eq!(view.stage_time("enricher"), Some(5));
        assert_eq!(view.stage_time("validator"), Some(1_764_000_000_300));
        assert_eq!(view.stage_time("archiver"), None);
        assert_eq!(EnvelopeHead::origin_parts(&view), Some(("p-1/0", "42", 0)));
        assert_eq!(view.into_owned(), env);

        codec.learn(Arc::new(CompiledSchema::parse(9, ENVELOPE_SCHEMA).unwrap()));
        let other = EnvelopeCodec::new(9).unwrap().encode(&env).unwrap();
        let view = codec.decode_ref(&other).unwrap();
        assert!(matches!(view.event_id, Cow::Owned(_)));
        assert_eq!(view.into_owned(), env);
        assert!(matches!(
            codec.decode_ref(&own[..own.len() - 1]),
            Err(CodecError::Malformed { .. })
        ));
    }

    #[test]
    fn a_repeated_map_key_reads_as_its_last_value_either_way() {
        // Avro allows it; the owned map keeps the last insert, and so does the list's lookup.
        let mut e = sample();
        e.stage_times.clear();
        let (mut empty, mut one) = (Vec::new(), Vec::new());
        write_envelope(&e, &mut empty);
        e.stage_times.insert("validator".into(), 1);
        write_envelope(&e, &mut one);
        // Where the map starts: the first byte the two bodies differ at.
        let at = empty.iter().zip(&one).position(|(a, b)| a != b).unwrap();
        let mut repeated = empty[..at].to_vec();
        // One block of two entries, both "validator" (times 1 then 2), then the end marker.
        repeated.push(4);
        for time in [2u8, 4] {
            repeated.push(18);
            repeated.extend_from_slice(b"validator");
            repeated.push(time);
        }
        repeated.push(0);
        repeated.extend_from_slice(&empty[at + 1..]);
        let view = read_envelope(&repeated).unwrap();
        assert_eq!(view.stage_times.len(), 2);
        assert_eq!(view.stage_time("validator"), Some(2));
        assert_eq!(view.into_owned().stage_times["validator"], 2);
    }
}
