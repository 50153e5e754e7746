//! KPL-compatible record aggregation: many user records in one Kinesis record.
//!
//! The format is the Kinesis Producer Library's: the magic bytes `F3 89 9A C2`, a protobuf
//! `AggregatedRecord` (a table of partition keys, a table of explicit hash keys, and records
//! pointing into them), and the MD5 of the protobuf bytes. Kinesis charges and throttles per
//! record and per 1 KiB payload unit, so packing small events cuts both; Lambda does not unpack
//! aggregates, so every stage deaggregates what it reads, and plain and aggregated records may
//! be mixed on one stream.
//!
//! The protobuf messages are small and fixed, so they are encoded and decoded by hand here,
//! with every length checked against the input: a corrupt aggregate is a typed error.
//!
//! Between stages an aggregate may travel compressed (ADR 0022): [`COMPRESSED_MAGIC`], then the
//! whole aggregate (magic, message, digest) as one zstd frame. [`open`] gives the plain
//! aggregate back, bounded by [`UNPACKED_MAX_BYTES`], for [`deaggregate`].

use std::borrow::Cow;

use indexmap::IndexSet;
use md5::{Digest, Md5};

/// The four bytes that start every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Length of the MD5 trailer.
pub const DIGEST_LEN: usize = 16;
/// The four bytes that start a compressed aggregate. One above KPL's last byte: a KPL
/// library that meets it takes the record for a plain one and hands it on whole, so nothing
/// reads it as an aggregate by mistake.
pub const COMPRESSED_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC3];
/// The most a compressed aggregate may unpack to: the aggregates the stages build are under
/// 1 MiB, so a frame that claims more is corrupt or hostile, refused before any allocation.
pub const UNPACKED_MAX_BYTES: usize = 4 * 1024 * 1024;
/// zstd's fastest level of the usual range: the stages' envelopes shrink about 3.7x at it
/// (measured on the demo's validated and enriched aggregates, see ADR 0022), and higher
/// levels cost the stage CPU for a few per cent more.
const LEVEL: i32 = 1;

/// Why bytes that start with [`MAGIC`] are not a valid aggregate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    /// Too short to hold magic, message and digest.
    #[error("aggregate of {0} bytes is too short")]
    Short(usize),
    /// The MD5 trailer does not match the message.
    #[error("aggregate checksum mismatch")]
    Checksum,
    /// The protobuf message is malformed.
    #[error("aggregate protobuf: {0}")]
    Protobuf(String),
    /// A valid aggregate where a single record was expected (aggregates are not nested).
    #[error("aggregate inside an aggregate")]
    Nested,
    /// A compressed aggregate that does not unpack: not a zstd frame, its size not stated,
    /// above [`UNPACKED_MAX_BYTES`], or not an aggregate inside.
    #[error("compressed aggregate: {0}")]
    Unpack(String),
}

impl KplError {
    /// A short machine-readable code for rejects.
    pub fn code(&self) -> &'static str {
        match self {
            KplError::Short(_) => "kpl_truncated",
            KplError::Checksum => "kpl_checksum",
            KplError::Protobuf(_) => "kpl_protobuf",
            KplError::Nested => "kpl_nested",
            KplError::Unpack(_) => "kpl_unpack",
        }
    }
}

/// One user record inside an aggregate, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRecord<'a> {
    /// The user record's partition key.
    pub partition_key: &'a str,
    /// Its explicit hash key, if the producer set one.
    pub explicit_hash_key: Option<&'a str>,
    /// Its data.
    pub data: &'a [u8],
}

/// Whether `data` is an aggregate, plain or compressed (by its magic bytes).
pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC) || is_compressed(data)
}

/// Whether `data` is a compressed aggregate (by its magic bytes).
pub fn is_compressed(data: &[u8]) -> bool {
    data.starts_with(&COMPRESSED_MAGIC)
}

/// `aggregate` (from [`Aggregator::finish`]) compressed, or as it is when compressing does
/// not make it smaller.
pub fn compress(aggregate: Vec<u8>) -> Vec<u8> {
    // One-shot compression states the content size in the frame, which `open` checks
    // before it allocates anything.
    match zstd::bulk::compress(&aggregate, LEVEL) {
        Ok(frame) if COMPRESSED_MAGIC.len() + frame.len() < aggregate.len() => {
            let mut out = Vec::with_capacity(COMPRESSED_MAGIC.len() + frame.len());
            out.extend_from_slice(&COMPRESSED_MAGIC);
            out.extend_from_slice(&frame);
            out
        }
        _ => aggregate,
    }
}

/// The plain aggregate in `data`: `data` itself when it is not compressed, else unpacked.
///
/// # Errors
/// [`KplError::Unpack`] when a compressed aggregate does not unpack to a plain one within
/// [`UNPACKED_MAX_BYTES`].
pub fn open(data: &[u8]) -> Result<Cow<'_, [u8]>, KplError> {
    let Some(frame) = data.strip_prefix(&COMPRESSED_MAGIC) else {
        return Ok(Cow::Borrowed(data));
    };
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(KplError::Unpack("frame without its content size".into())),
        Err(_) => return Err(KplError::Unpack("not a zstd frame".into())),
    };
    if size > UNPACKED_MAX_BYTES as u64 {
        return Err(KplError::Unpack(format!(
            "unpacks to {size} bytes, above {UNPACKED_MAX_BYTES}"
        )));
    }
    let plain = zstd::bulk::decompress(frame, size as usize)
        .map_err(|e| KplError::Unpack(e.to_string()))?;
    if !plain.starts_with(&MAGIC) {
        return Err(KplError::Unpack("no aggregate inside".into()));
    }
    Ok(Cow::Owned(plain))
}

/// Builds aggregates: add user records, then [`Aggregator::finish`].
#[derive(Debug, Default)]
pub struct Aggregator {
    keys: KeyTable,
    hash_keys: KeyTable,
    records: Vec<u8>,
    count: usize,
}

/// One of an aggregate's key tables: keys in the order they arrived, found by hash, and the
/// bytes the table takes in the message kept as keys arrive. Producers size every record
/// before adding it, and aggregates of about 1 MiB hold thousands of distinct keys, so a
/// scan of the table per record made building one quadratic.
#[derive(Debug, Default)]
struct KeyTable {
    keys: IndexSet<String>,
    encoded_len: usize,
}

impl KeyTable {
    fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    fn index_of(&mut self, key: &str) -> usize {
        if let Some(i) = self.keys.get_index_of(key) {
            return i;
        }
        self.encoded_len += 1 + varint_len(key.len() as u64) + key.len();
        self.keys.insert_full(key.to_owned()).0
    }

    /// Writes the table as repeated `field` and empties it.
    fn drain_into(&mut self, out: &mut Vec<u8>, field: u64) {
        for key in self.keys.drain(..) {
            put_bytes_field(out, field, key.as_bytes());
        }
        self.encoded_len = 0;
    }
}

impl Aggregator {
    /// An empty aggregate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of user records added.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True before the first record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The size [`Aggregator::finish`] would return, plus what adding a record of
    /// `key`/`data` would add (an upper bound), so callers can stay under Kinesis' limits.
    pub fn size_with(&self, key: &str, data: &[u8]) -> usize {
        let table_entry = if self.keys.contains(key) {
            0
        } else {
            1 + 10 + key.len()
        };
        let record = 1 + 10 + (1 + 10) + (1 + 10 + data.len());
        self.encoded_len() + table_entry + record
    }

    fn encoded_len(&self) -> usize {
        MAGIC.len()
            + self.keys.encoded_len
            + self.hash_keys.encoded_len
            + self.records.len()
            + DIGEST_LEN
    }

    /// Adds a user record.
    pub fn add(&mut self, partition_key: &str, explicit_hash_key: Option<&str>, data: &[u8]) {
        let key_index = self.keys.index_of(partition_key) as u64;
        let hash_index = explicit_hash_key.map(|h| self.hash_keys.index_of(h) as u64);
        // The record message is written straight into the aggregate: its length is known
        // up front, so no buffer per record is needed.
        let len = 1
            + varint_len(key_index)
            + hash_index.map_or(0, |i| 1 + varint_len(i))
            + 1
            + varint_len(data.len() as u64)
            + data.len();
        put_varint(&mut self.records, (3 << 3) | 2);
        put_varint(&mut self.records, len as u64);
        put_varint_field(&mut self.records, 1, key_index);
        if let Some(i) = hash_index {
            put_varint_field(&mut self.records, 2, i);
        }
        put_bytes_field(&mut self.records, 3, data);
        self.count += 1;
    }

    /// The aggregate's bytes; the aggregator is empty again afterwards.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut message = Vec::with_capacity(self.encoded_len());
        self.keys.drain_into(&mut message, 1);
        self.hash_keys.drain_into(&mut message, 2);
        message.append(&mut self.records);
        self.count = 0;
        let digest = Md5::digest(&message);
        let mut out = Vec::with_capacity(MAGIC.len() + message.len() + DIGEST_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&message);
        out.extend_from_slice(&digest);
        out
    }
}

/// The user records of what [`open`] gave: `let opened = open(data); records_of(&opened)`
/// reads a plain or a compressed aggregate alike.
///
/// # Errors
/// The error of [`open`] or of [`deaggregate`].
pub fn records_of<'a>(
    opened: &'a Result<Cow<'_, [u8]>, KplError>,
) -> Result<Vec<SubRecord<'a>>, KplError> {
    opened
        .as_deref()
        .map_err(Clone::clone)
        .and_then(deaggregate)
}

/// Unpacks an aggregate into its user records, in order.
///
/// # Errors
/// Short input, a checksum mismatch, or malformed protobuf (including indexes that point
/// outside the key tables and invalid UTF-8 keys).
pub fn deaggregate(data: &[u8]) -> Result<Vec<SubRecord<'_>>, KplError> {
    if is_compressed(data) {
        return Err(KplError::Unpack("compressed: open it first".into()));
    }
    if data.len() < MAGIC.len() + DIGEST_LEN || !data.starts_with(&MAGIC) {
        return Err(KplError::Short(data.len()));
    }
    let message = &data[MAGIC.len()..data.len() - DIGEST_LEN];
    let digest = &data[data.len() - DIGEST_LEN..];
    if Md5::digest(message).as_slice() != digest {
        return Err(KplError::Checksum);
    }
    let mut keys = Vec::new();
    let mut hash_keys = Vec::new();
    let mut raw_records = Vec::new();
    let mut reader = Reader {
        buf: message,
        pos: 0,
    };
    while let Some((field, value)) = reader.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => keys.push(utf8(b)?),
            (2, Value::Bytes(b)) => hash_keys.push(utf8(b)?),
            (3, Value::Bytes(b)) => raw_records.push(b),
            (1..=3, _) => {
                return Err(KplError::Protobuf(format!(
                    "field {field} has the wrong wire type"
                )));
            }
            _ => {}
        }
    }
    raw_records
        .into_iter()
        .map(|raw| {
            let mut r = Reader { buf: raw, pos: 0 };
            let (mut key, mut hash, mut data) = (None, None, None);
            while let Some((field, value)) = r.field()? {
                match (field, value) {
                    (1, Value::Varint(i)) => key = Some(i),
                    (2, Value::Varint(i)) => hash = Some(i),
                    (3, Value::Bytes(b)) => data = Some(b),
                    (1..=3, _) => {
                        return Err(KplError::Protobuf(format!(
                            "record field {field} has the wrong wire type"
                        )));
                    }
                    _ => {}
                }
            }
            Ok(SubRecord {
                partition_key: lookup(
                    &keys,
                    key.ok_or_else(|| KplError::Protobuf("record without partition key".into()))?,
                    "partition key",
                )?,
                explicit_hash_key: hash
                    .map(|i| lookup(&hash_keys, i, "explicit hash key"))
                    .transpose()?,
                data: data.ok_or_else(|| KplError::Protobuf("record without data".into()))?,
            })
        })
        .collect()
}

fn lookup<'a>(table: &[&'a str], i: u64, what: &str) -> Result<&'a str, KplError> {
    usize::try_from(i)
        .ok()
        .and_then(|i| table.get(i).copied())
        .ok_or_else(|| KplError::Protobuf(format!("{what} index {i} outside its table")))
}

fn utf8(b: &[u8]) -> Result<&str, KplError> {
    std::str::from_utf8(b).map_err(|_| KplError::Protobuf("key is not UTF-8".into()))
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, KplError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| KplError::Protobuf("varint runs past the end".into()))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(KplError::Protobuf("varint longer than 10 bytes".into()))
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], KplError> {
        let n = usize::try_from(n).map_err(|_| KplError::Protobuf("length overflow".into()))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| KplError::Protobuf("length runs past the end".into()))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next (field number, value), skipping what this format does not use.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, KplError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            other => return Err(KplError::Protobuf(format!("unsupported wire type {other}"))),
        };
        Ok(Some((tag >> 3, value)))
    }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_varint(out, field << 3);
    put_varint(out, v);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_records_and_shared_keys() {
        let mut agg = Aggregator::new();
        agg.add("a", None, b"one");
        agg.add("b", Some("340282366920938463463374607431768211455"), b"");
        agg.add("a", None, &[0xff; 300]);
        assert_eq!(agg.len(), 3);
        let bound = agg.size_with("c", b"x");
        let bytes = agg.finish();
        assert!(agg.is_empty());
        assert!(bytes.len() < bound);
        assert!(is_aggregated(&bytes));
        let subs = deaggregate(&bytes).unwrap();
        assert_eq!(subs.len(), 3);
        assert_eq!(
            subs[0],
            SubRecord {
                partition_key: "a",
                explicit_hash_key: None,
                data: b"one"
            }
        );
        assert_eq!(
            subs[1].explicit_hash_key,
            Some("340282366920938463463374607431768211455")
        );
        assert_eq!(subs[1].data, b"");
        assert_eq!(subs[2].partition_key, "a");
        assert_eq!(subs[2].data.len(), 300);
    }

    #[test]
    fn corrupt_aggregates_are_typed_errors() {
        let mut agg = Aggregator::new();
        agg.add("k", None, b"payload");
        let good = agg.finish();
        assert!(matches!(deaggregate(&good[..10]), Err(KplError::Short(_))));
        let mut flipped = good.clone();
        flipped[6] ^= 1;
        assert_eq!(deaggregate(&flipped), Err(KplError::Checksum));
        // Valid checksum over garbage protobuf.
        let garbage = [0x1a, 0xff, 0xff];
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&garbage);
        forged.extend_from_slice(&Md5::digest(garbage));
        assert!(matches!(deaggregate(&forged), Err(KplError::Protobuf(_))));
        // A record pointing outside the key table.
        let mut record = Vec::new();
        put_varint_field(&mut record, 1, 5);
        put_bytes_field(&mut record, 3, b"x");
        let mut message = Vec::new();
        put_bytes_field(&mut message, 3, &record);
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&message);
        forged.extend_from_slice(&Md5::digest(&message));
        assert!(matches!(deaggregate(&forged), Err(KplError::Protobuf(_))));
    }

    #[test]
    fn every_cut_and_byte_flip_is_handled() {
        let mut agg = Aggregator::new();
        for i in 0..5u8 {
            agg.add(&format!("key-{i}"), None, &[i; 7]);
        }
        let good = agg.finish();
        for cut in 0..good.len() {
            let _ = deaggregate(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] = b[i].wrapping_add(0x41);
            assert!(deaggregate(&b).is_err(), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn sizes_follow_the_tables_as_keys_arrive_and_repeat() {
        // The size is kept as records arrive; it must equal what finish writes, with
        // repeated keys, hash keys, long keys (two-byte varints) and large records, and
        // again for the next aggregate after finish emptied the tables.
        let mut agg = Aggregator::new();
        for round in 0..2 {
            for i in 0..600u32 {
                let key = if i % 3 == 0 {
                    "shared".to_owned()
                } else {
                    format!("{round}-{i}-{}", "k".repeat((i % 200) as usize))
                };
                let hash = (i % 5 == 0).then(|| format!("{}", u128::from(i) * 7));
                let data = vec![i as u8; (i as usize * 37) % 700];
                let bound = agg.size_with(&key, &data);
                agg.add(&key, hash.as_deref(), &data);
                assert!(agg.encoded_len() <= bound, "bound broken at {i}");
            }
            let expected = agg.encoded_len();
            let bytes = agg.finish();
            assert_eq!(bytes.len(), expected);
            let subs = deaggregate(&bytes).unwrap();
            assert_eq!(subs.len(), 600);
            assert_eq!(subs[3].partition_key, "shared");
            assert_eq!(subs[5].explicit_hash_key, Some("35"));
            assert_eq!(subs[599].data.len(), (599 * 37) % 700);
        }
    }

    fn aggregate_of(records: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut agg = Aggregator::new();
        for (key, data) in records {
            agg.add(key, None, data);
        }
        agg.finish()
    }

    #[test]
    fn compressed_aggregates_open_to_the_same_records() {
        let records: Vec<(&str, Vec<u8>)> = (0..500u32)
            .map(|i| {
                (
                    "key",
                    format!("event {i} of the shop-web source").into_bytes(),
                )
            })
            .collect();
        let plain = aggregate_of(&records);
        let compressed = compress(plain.clone());
        assert!(is_compressed(&compressed) && is_aggregated(&compressed));
        assert!(
            compressed.len() * 4 < plain.len(),
            "{} of {}",
            compressed.len(),
            plain.len()
        );
        // Not read as a plain aggregate by mistake.
        assert!(matches!(deaggregate(&compressed), Err(KplError::Unpack(_))));
        let opened = open(&compressed);
        assert_eq!(opened.as_deref().unwrap(), plain.as_slice());
        let subs = records_of(&opened).unwrap();
        assert_eq!(subs.len(), 500);
        assert_eq!(subs[499].data, records[499].1.as_slice());
        // A plain aggregate opens as itself, borrowed.
        assert!(matches!(open(&plain), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn what_does_not_shrink_stays_plain() {
        // Bytes without repetition (xorshift): the compressed frame would be larger.
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let plain = aggregate_of(&[("k", noise)]);
        assert_eq!(compress(plain.clone()), plain);
    }

    #[test]
    fn bad_compressed_aggregates_are_typed_errors_without_big_allocations() {
        let framed = |frame: &[u8]| [COMPRESSED_MAGIC.as_slice(), frame].concat();
        let unpack = |data: &[u8]| match open(data) {
            Err(KplError::Unpack(why)) => why,
            other => panic!("expected an unpack error, got {other:?}"),
        };
        assert!(unpack(&framed(b"not zstd at all")).contains("not a zstd frame"));
        assert!(unpack(&framed(&[])).contains("not a zstd frame"));
        // A frame that would unpack to more than the bound: refused by its header alone.
        let big = zstd::bulk::compress(&vec![0u8; UNPACKED_MAX_BYTES + 1], 1).unwrap();
        assert!(unpack(&framed(&big)).contains("above"));
        // A frame whose size is not stated (streamed): refused.
        let mut streamed = Vec::new();
        let mut encoder = zstd::stream::Encoder::new(&mut streamed, 1).unwrap();
        std::io::Write::write_all(&mut encoder, &aggregate_of(&[("k", vec![1; 100])])).unwrap();
        encoder.finish().unwrap();
        assert!(unpack(&framed(&streamed)).contains("content size"));
        // A good frame of something that is not an aggregate.
        let other = zstd::bulk::compress(b"just some bytes, no aggregate", 1).unwrap();
        assert!(unpack(&framed(&other)).contains("no aggregate"));
        // Cut short anywhere: an error, never a panic.
        let good = compress(aggregate_of(&[("k", vec![3; 5000])]));
        for cut in 0..good.len() {
            assert!(records_of(&open(&good[..cut])).is_err(), "cut at {cut}");
        }
        assert_eq!(KplError::Unpack(String::new()).code(), "kpl_unpack");
    }
}
