//! The archive's Parquet layout: one row per event, written with parquet's column writers
//! (no Arrow) and read back with its row reader.
//!
//! Columns use standard logical types only (UTF8 strings, `TIMESTAMP(MILLIS, UTC)`, plain
//! numbers and booleans) so that DuckDB, Athena and Spark read the files with no extension.
//! Snappy compresses every column; one row group per object (an object holds at most one
//! Lambda batch, a few MiB).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{Compression, ConvertedType};
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, DataType, DoubleType, Int32Type, Int64Type,
};
use parquet::file::metadata::{FooterTail, KeyValue, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::record::Field;
use parquet::schema::parser::parse_message_type;

use crate::ArchiveError;

/// The archive schema. Column order is the order [`write_rows`] writes in.
pub const SCHEMA: &str = "
message archived_event {
  required binary event_id (STRING);
  required binary source (STRING);
  required binary subject (STRING);
  required int32 schema_id;
  required int64 event_time (TIMESTAMP(MILLIS,true));
  required int64 ingest_time (TIMESTAMP(MILLIS,true));
  optional int64 validated_at (TIMESTAMP(MILLIS,true));
  optional int64 enriched_at (TIMESTAMP(MILLIS,true));
  required int64 archived_at (TIMESTAMP(MILLIS,true));
  optional binary trace_header (STRING);
  required binary agg_key (STRING);
  required double metric;
  required int64 window_start (TIMESTAMP(MILLIS,true));
  required boolean reference_found;
  required binary attributes_json (STRING);
  required binary payload_json (STRING);
  required binary payload;
  required binary kinesis_partition_key (STRING);
  required binary kinesis_sequence_number (STRING);
  required binary kinesis_shard_id (STRING);
  required boolean late;
}
";

/// What the archive records as the writer of its files.
pub const CREATED_BY: &str = concat!("riffle-archiver ", env!("CARGO_PKG_VERSION"));

/// One archived event.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedRow {
    /// Producer-assigned event id.
    pub event_id: String,
    /// The producing system.
    pub source: String,
    /// Payload subject.
    pub subject: String,
    /// Payload writer schema id.
    pub schema_id: i32,
    /// Event time, epoch millis.
    pub event_time: i64,
    /// Ingest time, epoch millis.
    pub ingest_time: i64,
    /// When the validator emitted it, epoch millis.
    pub validated_at: Option<i64>,
    /// When the enricher emitted it, epoch millis.
    pub enriched_at: Option<i64>,
    /// When the archiver wrote it, epoch millis.
    pub archived_at: i64,
    /// X-Ray trace header.
    pub trace_header: Option<String>,
    /// View key.
    pub agg_key: String,
    /// Aggregated value.
    pub metric: f64,
    /// Window start, epoch millis.
    pub window_start: i64,
    /// Whether reference data was found.
    pub reference_found: bool,
    /// Enrichment attributes as a JSON object (keys sorted).
    pub attributes_json: String,
    /// The payload rendered as JSON.
    pub payload_json: String,
    /// The payload's Avro bytes in writer schema `schema_id`.
    pub payload: Vec<u8>,
    /// Kinesis partition key.
    pub kinesis_partition_key: String,
    /// Kinesis sequence number.
    pub kinesis_sequence_number: String,
    /// Kinesis shard id.
    pub kinesis_shard_id: String,
    /// The event came after its window was final, so the view left it out (ADR 0021). Last
    /// in the file so that files written before it existed read the same by position.
    pub late: bool,
}

/// Enrichment attributes as JSON text with sorted keys, so equal maps give equal text (a
/// repeated key keeps its last value, as a map would).
///
/// Written straight into the string: this runs for every archived row, and a `BTreeMap`
/// plus `serde_json::to_string` was a tenth of building a batch's rows (perf).
pub fn attributes_json<'a, K, V>(attributes: impl IntoIterator<Item = (&'a K, &'a V)>) -> String
where
    K: AsRef<str> + ?Sized + 'a,
    V: AsRef<str> + ?Sized + 'a,
{
    let mut pairs: Vec<(&str, &str)> = attributes
        .into_iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    // Stable: of a repeated key, the last one given stays last, and is the one kept.
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(
        2 + pairs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>(),
    );
    out.push(b'{');
    let mut first = true;
    for (i, (key, value)) in pairs.iter().enumerate() {
        if pairs.get(i + 1).is_some_and(|next| next.0 == *key) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        // Writing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, key);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, value);
    }
    out.push(b'}');
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_else(|_| "{}".to_owned())
}

type RowGroup<'a> = SerializedRowGroupWriter<'a, Vec<u8>>;

fn column<T: DataType>(
    group: &mut RowGroup<'_>,
    values: &[T::T],
    definition_levels: Option<&[i16]>,
) -> Result<(), ArchiveError> {
    let mut writer = group
        .next_column()?
        .ok_or_else(|| ArchiveError::Encode("schema has fewer columns than written".into()))?;
    writer
        .typed::<T>()
        .write_batch(values, definition_levels, None)?;
    writer.close()?;
    Ok(())
}

fn strings<'r>(
    rows: &'r [ArchivedRow],
    get: impl Fn(&'r ArchivedRow) -> &'r str,
) -> Vec<ByteArray> {
    rows.iter().map(|r| ByteArray::from(get(r))).collect()
}

fn longs(rows: &[ArchivedRow], get: impl Fn(&ArchivedRow) -> i64) -> Vec<i64> {
    rows.iter().map(get).collect()
}

/// Values and definition levels (1 present, 0 null) of an optional column.
fn optional<T>(
    rows: &[ArchivedRow],
    get: impl Fn(&ArchivedRow) -> Option<T>,
) -> (Vec<T>, Vec<i16>) {
    let mut values = Vec::with_capacity(rows.len());
    let mut levels = Vec::with_capacity(rows.len());
    for row in rows {
        match get(row) {
            Some(v) => {
                values.push(v);
                levels.push(1);
            }
            None => levels.push(0),
        }
    }
    (values, levels)
}

/// Encodes `rows` as one Parquet file.
///
/// # Errors
/// [`ArchiveError::Encode`] if parquet refuses the data (a bug, not a data problem).
pub fn write_rows(rows: &[ArchivedRow]) -> Result<Vec<u8>, ArchiveError> {
    write_rows_with_metadata(rows, Vec::new())
}

/// [`write_rows`] with key-value pairs in the file's footer (compaction records there which
/// objects a compacted object replaces; see [`crate::compact`]).
///
/// # Errors
/// As [`write_rows`].
pub fn write_rows_with_metadata(
    rows: &[ArchivedRow],
    metadata: Vec<(String, String)>,
) -> Result<Vec<u8>, ArchiveError> {
    let schema = Arc::new(parse_message_type(SCHEMA)?);
    let key_values: Vec<KeyValue> = metadata
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let properties = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(CREATED_BY.to_owned())
            .set_key_value_metadata((!key_values.is_empty()).then_some(key_values))
            .build(),
    );
    let mut writer = SerializedFileWriter::new(Vec::new(), schema, properties)?;
    let mut group = writer.next_row_group()?;
    let g = &mut group;
    column::<ByteArrayType>(g, &strings(rows, |r| &r.event_id), None)?;
    column::<ByteArrayType>(g, &strings(rows, |r| &r.source), None)?;
    column::<ByteArrayType>(g, &strings(rows, |r| &r.subject), None)?;
    let schema_ids: Vec<i32> = rows.iter().map(|r| r.schema_id).collect();
    column::<Int32Type>(g, &schema_ids, None)?;
    column::<Int64Type>(g, &longs(rows, |r| r.event_time), None)?;
    column::<Int64Type>(g, &longs(rows, |r| r.ingest_time), None)?;
    let (values, levels) = optional(rows, |r| r.validated_at);
    column::<Int64Type>(g, &values, Some(&levels))?;
    let (values, levels) = optional(rows, |r| r.enriched_at);
    column::<Int64Type>(g, &values, Some(&levels))?;
    column::<Int64Type>(g, &longs(rows, |r| r.archived_at), None)?;
    let (values, levels) = optional(rows, |r| r.trace_header.as_deref().map(ByteArray::from));
    column::<ByteArrayType>(g, &values, Some(&levels))?;
    column::<ByteArrayType>(g, &strings(rows, |r| &r.agg_key), None)?;
    let metrics: Vec<f64> = rows.iter().map(|r| r.metric).collect();
    column::<DoubleType>(g, &metrics, None)?;
    column::<Int64Type>(g, &longs(rows, |r| r.window_start), None)?;
    let found: Vec<bool> = rows.iter().map(|r| r.reference_found).collect();
    column::<BoolType>(g, &found, None)?;
    column::<ByteArrayType>(g, &strings(rows, |r| &r.attributes_json), None)?;
    column::<ByteArrayType>(g, &strings(rows, |r| &r.payload_json), None)?;
    let payloads: Vec<ByteArray> = rows
        .iter()
        .map(|r| ByteArray::from(r.payload.as_slice()))
        .collect();
    column::<ByteArrayType>(g, &payloads, None)?;
    column::<ByteArrayType>(g, &strings(rows, |r| &r.kinesis_partition_key), None)?;
    column::<ByteArrayType>(g, &strings(rows, |r| &r.kinesis_sequence_number), None)?;
    column::<ByteArrayType>(g, &strings(rows, |r| &r.kinesis_shard_id), None)?;
    let late: Vec<bool> = rows.iter().map(|r| r.late).collect();
    column::<BoolType>(g, &late, None)?;
    if group.next_column()?.is_some() {
        return Err(ArchiveError::Encode(
            "schema has more columns than written".into(),
        ));
    }
    group.close()?;
    Ok(writer.into_inner()?)
}

/// One row's fields by column name.
struct Fields<'a>(HashMap<&'a str, &'a Field>);

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Result<&'a Field, ArchiveError> {
        self.0
            .get(name)
            .copied()
            .ok_or_else(|| ArchiveError::BadArchive(format!("no column `{name}`")))
    }

    fn wrong(name: &str, field: &Field) -> ArchiveError {
        ArchiveError::BadArchive(format!("column `{name}` holds {field:?}"))
    }

    fn string(&self, name: &str) -> Result<String, ArchiveError> {
        match self.get(name)? {
            Field::Str(s) => Ok(s.clone()),
            other => Err(Self::wrong(name, other)),
        }
    }

    fn opt_string(&self, name: &str) -> Result<Option<String>, ArchiveError> {
        match self.get(name)? {
            Field::Null => Ok(None),
            Field::Str(s) => Ok(Some(s.clone())),
            other => Err(Self::wrong(name, other)),
        }
    }

    fn millis(&self, name: &str) -> Result<i64, ArchiveError> {
        match self.get(name)? {
            Field::TimestampMillis(v) | Field::Long(v) => Ok(*v),
            other => Err(Self::wrong(name, other)),
        }
    }

    fn opt_millis(&self, name: &str) -> Result<Option<i64>, ArchiveError> {
        match self.get(name)? {
            Field::Null => Ok(None),
            Field::TimestampMillis(v) | Field::Long(v) => Ok(Some(*v)),
            other => Err(Self::wrong(name, other)),
        }
    }
}

/// Reads an archive object back into rows (for tests and replay).
///
/// # Errors
/// [`ArchiveError::BadArchive`] when the bytes are not Parquet or lack a column of
/// [`SCHEMA`].
pub fn read_rows(bytes: &[u8]) -> Result<Vec<ArchivedRow>, ArchiveError> {
    let bad = |e: parquet::errors::ParquetError| ArchiveError::BadArchive(e.to_string());
    let reader = SerializedFileReader::new(Bytes::copy_from_slice(bytes)).map_err(bad)?;
    let expected_rows = usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
    let mut out = Vec::with_capacity(expected_rows);
    for row in reader.get_row_iter(None).map_err(bad)? {
        let row = row.map_err(bad)?;
        let f = Fields(
            row.get_column_iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect(),
        );
        out.push(ArchivedRow {
            event_id: f.string("event_id")?,
            source: f.string("source")?,
            subject: f.string("subject")?,
            schema_id: match f.get("schema_id")? {
                Field::Int(v) => *v,
                other => return Err(Fields::wrong("schema_id", other)),
            },
            event_time: f.millis("event_time")?,
            ingest_time: f.millis("ingest_time")?,
            validated_at: f.opt_millis("validated_at")?,
            enriched_at: f.opt_millis("enriched_at")?,
            archived_at: f.millis("archived_at")?,
            trace_header: f.opt_string("trace_header")?,
            agg_key: f.string("agg_key")?,
            metric: match f.get("metric")? {
                Field::Double(v) => *v,
                other => return Err(Fields::wrong("metric", other)),
            },
            window_start: f.millis("window_start")?,
            reference_found: match f.get("reference_found")? {
                Field::Bool(v) => *v,
                other => return Err(Fields::wrong("reference_found", other)),
            },
            attributes_json: f.string("attributes_json")?,
            payload_json: f.string("payload_json")?,
            payload: match f.get("payload")? {
                Field::Bytes(b) => b.data().to_vec(),
                other => return Err(Fields::wrong("payload", other)),
            },
            kinesis_partition_key: f.string("kinesis_partition_key")?,
            kinesis_sequence_number: f.string("kinesis_sequence_number")?,
            kinesis_shard_id: f.string("kinesis_shard_id")?,
            // Files written before the column existed hold no late events.
            late: match f.0.get("late") {
                None => false,
                Some(Field::Bool(v)) => *v,
                Some(other) => return Err(Fields::wrong("late", other)),
            },
        });
    }
    Ok(out)
}

/// Bytes at the end of every Parquet file: the footer's length and the magic `PAR1`.
pub const FOOTER_TAIL_BYTES: usize = 8;

/// What the last bytes of a Parquet file say about its footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Footer {
    /// The footer's key-value pairs (values absent in the file read as empty).
    KeyValues(Vec<(String, String)>),
    /// The footer is longer than the bytes given: read this many bytes from the end.
    NeedTail(usize),
}

/// Reads the key-value metadata from the last bytes of a Parquet file, so a reader can learn
/// what a large object replaces without fetching all of it.
///
/// # Errors
/// [`ArchiveError::BadArchive`] when the bytes do not end like a Parquet file.
pub fn footer_key_values(tail: &[u8]) -> Result<Footer, ArchiveError> {
    let bad = |e: String| ArchiveError::BadArchive(e);
    let Some(start) = tail.len().checked_sub(FOOTER_TAIL_BYTES) else {
        return Err(bad(format!("{} bytes are no Parquet file", tail.len())));
    };
    let last: [u8; FOOTER_TAIL_BYTES] = tail[start..]
        .try_into()
        .map_err(|_| bad("short footer".into()))?;
    let footer = FooterTail::try_new(&last).map_err(|e| bad(e.to_string()))?;
    let length = footer.metadata_length();
    let Some(from) = start.checked_sub(length) else {
        return Ok(Footer::NeedTail(length + FOOTER_TAIL_BYTES));
    };
    let metadata = ParquetMetaDataReader::decode_metadata(&tail[from..start])
        .map_err(|e| bad(e.to_string()))?;
    Ok(Footer::KeyValues(
        metadata
            .file_metadata()
            .key_value_metadata()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default(),
    ))
}

/// The converted type of each column, as a reader without logical-type support sees it
/// (for checking that the archive stays readable by older engines).
pub fn converted_types(bytes: &[u8]) -> Result<Vec<(String, ConvertedType)>, ArchiveError> {
    let reader = SerializedFileReader::new(Bytes::copy_from_slice(bytes))
        .map_err(|e| ArchiveError::BadArchive(e.to_string()))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    Ok(schema
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.converted_type()))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use crate::testing::sample_row as row;

    #[test]
    fn rows_round_trip() {
        let rows: Vec<ArchivedRow> = (0..7).map(row).collect();
        let bytes = write_rows(&rows).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        assert_eq!(read_rows(&bytes).unwrap(), rows);
    }

    #[test]
    fn an_empty_file_is_valid() {
        let bytes = write_rows(&[]).unwrap();
        assert!(read_rows(&bytes).unwrap().is_empty());
    }

    #[test]
    fn columns_carry_standard_types() {
        let bytes = write_rows(&[row(1)]).unwrap();
        let types: HashMap<String, ConvertedType> =
            converted_types(&bytes).unwrap().into_iter().collect();
        for ts in [
            "event_time",
            "ingest_time",
            "validated_at",
            "enriched_at",
            "archived_at",
            "window_start",
        ] {
            assert_eq!(types[ts], ConvertedType::TIMESTAMP_MILLIS, "{ts}");
        }
        for s in [
            "event_id",
            "payload_json",
            "attributes_json",
            "kinesis_shard_id",
            "trace_header",
        ] {
            assert_eq!(types[s], ConvertedType::UTF8, "{s}");
        }
        assert_eq!(types["payload"], ConvertedType::NONE);
        assert_eq!(types.len(), 21);
    }

    #[test]
    fn attributes_are_sorted_json() {
        let json = attributes_json(&HashMap::from([
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ]));
        assert_eq!(json, r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn attributes_json_is_what_a_sorted_map_serializes_to() {
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("only", "one")],
            vec![("z", "1"), ("a", "2"), ("m", "3")],
            // A repeated key keeps its last value, wherever the repeats stand.
            vec![
                ("k", "first"),
                ("a", "x"),
                ("k", "second"),
                ("b", "y"),
                ("k", "last"),
            ],
            vec![("dup", "1"), ("dup", "2")],
            // Text that needs escaping, and keys that sort by bytes.
            vec![
                ("quote\"", "back\\slash"),
                ("ctl\u{1}", "new\nline"),
                ("é", "ü"),
                ("E", "e"),
            ],
        ];
        for pairs in cases {
            let expected = serde_json::to_string(
                &pairs
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect::<std::collections::BTreeMap<&str, &str>>(),
            )
            .unwrap();
            let given = pairs.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>();
            let json = attributes_json(given.iter().map(|(k, v)| (*k, *v)));
            assert_eq!(json, expected, "{pairs:?}");
        }
    }

    #[test]
    fn footer_key_values_are_read_from_the_tail() {
        let rows: Vec<ArchivedRow> = (0..3).map(row).collect();
        let meta = vec![("riffle.x".to_owned(), "a\nb".to_owned())];
        let bytes = write_rows_with_metadata(&rows, meta.clone()).unwrap();
        assert_eq!(read_rows(&bytes).unwrap(), rows);
        assert_eq!(footer_key_values(&bytes).unwrap(), Footer::KeyValues(meta));
        // A tail too short for the footer says how much to read.
        let Footer::NeedTail(n) = footer_key_values(&bytes[bytes.len() - 8..]).unwrap() else {
            panic!("expected NeedTail");
        };
        assert!(n > 8 && n < bytes.len());
        assert!(matches!(
            footer_key_values(&bytes[bytes.len() - n..]).unwrap(),
            Footer::KeyValues(_)
        ));
        let plain = write_rows(&rows).unwrap();
        assert_eq!(
            footer_key_values(&plain).unwrap(),
            Footer::KeyValues(Vec::new())
        );
        assert!(footer_key_values(b"PAR").is_err());
        assert!(footer_key_values(b"not parquet at all").is_err());
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(
            read_rows(b"not parquet"),
            Err(ArchiveError::BadArchive(_))
        ));
        let mut bytes = write_rows(&[row(1)]).unwrap();
        let mid = bytes.len() / 2;
        bytes.truncate(mid);
        assert!(read_rows(&bytes).is_err());
    }
}
