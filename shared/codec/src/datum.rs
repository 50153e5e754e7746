//! A schema-directed reader for payloads of any registered schema.
//!
//! The validator must prove that a payload matches a schema it only learns at run time, and the
//! rules need a handful of top-level fields. Decoding into apache-avro's `Value` tree would
//! allocate for every field of every record; this reader walks the Avro binary once, checks every
//! byte against the schema, and lends out top-level scalars as borrowed slices. The same walk
//! renders a payload as JSON for the archive.
//!
//! Outside bytes cannot make it panic, loop for long or recurse deeply: lengths are checked
//! against what is left, block counts are bounded and nesting is limited to [`MAX_DEPTH`].

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use apache_avro::Schema;
use apache_avro::schema::Name;
use apache_avro::schema::{ArraySchema, InnerDecimalSchema, MapSchema, RecordSchema, UuidSchema};

use crate::{CodecError, CompiledSchema};

/// Deepest nesting accepted (recursive schemas could otherwise recurse once per input byte).
pub const MAX_DEPTH: usize = 64;
/// Values a body may hold, at most, per byte of it (plus [`MIN_STEP_BUDGET`]). Nulls, empty
/// records and zero-size fixeds take no bytes, so without a budget a record of nested
/// records of nulls, each using the next twice, would cost 2^depth steps for a few bytes;
/// real payloads hold at most a few values per byte.
pub const STEPS_PER_BYTE: usize = 64;
/// Values any body may hold, however short.
pub const MIN_STEP_BUDGET: usize = 4_096;
/// Most items accepted in one array or map block whose items may take zero bytes.
pub const MAX_ZERO_SIZE_ITEMS: i64 = 1 << 16;

/// One top-level field value, borrowed from the record bytes or the schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Field<'a> {
    /// `null` (also the null branch of an optional field).
    Null,
    /// `boolean`.
    Bool(bool),
    /// `int` or `long` (and the logical types built on them).
    Int(i64),
    /// `float` or `double`.
    Float(f64),
    /// `string` (and uuid strings).
    Str(&'a str),
    /// `bytes` or `fixed`.
    Bytes(&'a [u8]),
    /// An enum symbol.
    Enum(&'a str),
    /// A record, array or map: checked, but not lent out.
    Nested,
}

impl Field<'_> {
    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            // Precision loss above 2^53 is acceptable for range checks and metrics.
            #[allow(clippy::cast_precision_loss)]
            Field::Int(v) => Some(v as f64),
            Field::Float(v) => Some(v),
            _ => None,
        }
    }

    /// The value as text, if it is a string or an enum symbol.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) | Field::Enum(s) => Some(s),
            _ => None,
        }
    }

    /// Renders the value for templates and attributes; `None` for null and nested values.
    pub fn render(&self) -> Option<String> {
        match *self {
            Field::Null | Field::Nested | Field::Bytes(_) => None,
            Field::Bool(b) => Some(b.to_string()),
            Field::Int(v) => Some(v.to_string()),
            Field::Float(v) => Some(v.to_string()),
            Field::Str(s) | Field::Enum(s) => Some(s.to_string()),
        }
    }
}

/// A record payload checked against its schema, with its top-level fields in schema order.
#[derive(Debug)]
pub struct Record<'a> {
    schema: &'a CompiledSchema,
    fields: Vec<Field<'a>>,
}

impl<'a> Record<'a> {
    /// The value of top-level field `name`, `None` if the schema has no such field.
    pub fn get(&self, name: &str) -> Option<Field<'a>> {
        self.schema
            .field_index(name)
            .and_then(|i| self.fields.get(i).copied())
    }

    /// The value of the top-level field at `position` in schema order (see
    /// [`CompiledSchema::field_index`]), `None` past the last field.
    pub fn field(&self, position: usize) -> Option<Field<'a>> {
        self.fields.get(position).copied()
    }

    /// The writer schema.
    pub fn schema(&self) -> &'a CompiledSchema {
        self.schema
    }
}

/// Checks `body` against `schema` (a record) and lends out its top-level fields.
///
/// # Errors
/// [`CodecError::Malformed`] naming the field where the bytes stop matching the schema.
pub fn read_record<'a>(
    schema: &'a CompiledSchema,
    body: &'a [u8],
) -> Result<Record<'a>, CodecError> {
    let Schema::Record(record) = schema.schema() else {
        return Err(schema.malformed("payload schema is not a record".into()));
    };
    let mut cursor = Cursor::new(body);
    let mut fields = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let value = walk(schema, &field.schema, &mut cursor, 1, &mut None)
            .map_err(|e| schema.malformed(format!("field `{}`: {e}", field.name)))?;
        fields.push(value);
    }
    cursor.finish().map_err(|e| schema.malformed(e))?;
    Ok(Record { schema, fields })
}

/// Renders `body` as JSON text (plain values: unions unwrapped, enums as symbols, bytes as
/// Avro-JSON strings of code points 0-255), appending to `out`.
///
/// # Errors
/// [`CodecError::Malformed`] as for [`read_record`].
pub fn to_json(schema: &CompiledSchema, body: &[u8], out: &mut String) -> Result<(), CodecError> {
    let mut cursor = Cursor::new(body);
    let mut sink = Some(out);
    walk(schema, schema.schema(), &mut cursor, 0, &mut sink).map_err(|e| schema.malformed(e))?;
    cursor.finish().map_err(|e| schema.malformed(e))
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Values still allowed (see [`STEPS_PER_BYTE`]).
    steps_left: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor {
            buf,
            pos: 0,
            steps_left: buf
                .len()
                .saturating_mul(STEPS_PER_BYTE)
                .saturating_add(MIN_STEP_BUDGET),
        }
    }

    /// Counts one value against the budget.
    fn step(&mut self) -> Result<(), String> {
        self.steps_left = self.steps_left.checked_sub(1).ok_or_else(|| {
            format!(
                "more than {STEPS_PER_BYTE} values per byte: the schema nests values that take no bytes"
            )
        })?;
        Ok(())
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn finish(&self) -> Result<(), String> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(format!("{n} trailing bytes")),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "needs {n} bytes at offset {}, {} left",
                    self.pos,
                    self.remaining()
                )
            })?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn long(&mut self) -> Result<i64, String> {
        let mut raw: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("varint runs past the end at offset {}", self.pos))?;
            self.pos += 1;
            raw |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                // Zig-zag: the low bit is the sign.
                #[allow(clippy::cast_possible_wrap)]
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(format!(
            "varint longer than 10 bytes at offset {}",
            self.pos
        ))
    }

    fn int(&mut self) -> Result<i32, String> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| format!("int {v} out of range"))
    }

    fn len(&mut self) -> Result<usize, String> {
        let v = self.long()?;
        usize::try_from(v).map_err(|_| format!("negative length {v}"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| format!("string at offset {at} is not UTF-8"))
    }

    /// Next array/map block's item count (0 ends the collection). A negative count is followed
    /// by the block's byte size, which we read and ignore since we visit every item anyway.
    fn block(&mut self, item_may_be_empty: bool) -> Result<usize, String> {
        let mut count = self.long()?;
        if count < 0 {
            count = count.checked_neg().ok_or("block count overflow")?;
            self.len()?;
        }
        let limit = if item_may_be_empty {
            MAX_ZERO_SIZE_ITEMS
        } else {
            // Every item takes at least one byte, so more items than bytes is a lie.
            i64::try_from(self.remaining()).unwrap_or(i64::MAX)
        };
        if count > limit {
            return Err(format!(
                "block of {count} items exceeds what the record can hold"
            ));
        }
        usize::try_from(count).map_err(|_| "block count overflow".to_string())
    }
}

type Sink<'o> = Option<&'o mut String>;

fn emit(sink: &mut Sink<'_>, text: impl std::fmt::Display) {
    if let Some(out) = sink.as_deref_mut() {
        let _ = write!(out, "{text}");
    }
}

fn emit_str(sink: &mut Sink<'_>, s: &str) {
    if let Some(out) = sink.as_deref_mut() {
        // serde_json escapes exactly as JSON requires; it cannot fail for a &str.
        if let Ok(quoted) = serde_json::to_string(s) {
            out.push_str(&quoted);
        }
    }
}

fn emit_bytes(sink: &mut Sink<'_>, b: &[u8]) {
    if sink.is_some() {
        let text: String = b.iter().map(|&c| char::from(c)).collect();
        emit_str(sink, &text);
    }
}

fn emit_float(sink: &mut Sink<'_>, v: f64) {
    if v.is_finite() {
        // Shortest round-trip form with an exponent where it is shorter. `Display` writes
        // f64::MAX as 309 digits, which JSON readers (serde_json among them) may parse as
        // out of range.
        emit(sink, ryu::Buffer::new().format_finite(v));
    } else {
        // JSON has no NaN or infinity.
        emit(sink, "null");
    }
}

/// Can a value of this schema be encoded in zero bytes? Records are looked up in the set the
/// schema computes once ([`CompiledSchema::record_may_be_empty`]): asked for every array
/// value, a walk of the record each time would let a schema of many zero-byte fields cost
/// far more than the body's step budget.
fn may_be_empty(owner: &CompiledSchema, schema: &Schema) -> bool {
    match schema {
        Schema::Null => true,
        Schema::Record(r) => owner.record_may_be_empty(&r.name),
        Schema::Fixed(f) => f.size == 0,
        Schema::Ref { name } => owner.record_may_be_empty(name),
        _ => false,
    }
}

/// The named records of `schema` a value of which may take no bytes, each counted once.
pub(crate) fn empty_record_names(schema: &CompiledSchema) -> HashSet<Name> {
    let mut memo = HashMap::new();
    let lookup = |name: &Name| schema.lookup(name);
    schema
        .names()
        .iter()
        .filter(|(_, s)| matches!(s, Schema::Record(_)))
        .filter(|(_, s)| empty_values(&lookup, s, &mut memo, 0).is_some())
        .map(|(name, _)| (*name).clone())
        .collect()
}

/// The most values any zero-byte value in `schema` holds: a record of nulls counts its
/// nulls, a record of such records their sum. Readers refuse a body holding more than
/// [`MIN_STEP_BUDGET`] values beyond [`STEPS_PER_BYTE`] per byte, so a registry refuses a
/// schema whose zero-byte values alone would pass that (nested records each using the next
/// twice double it per level).
pub fn largest_empty_value(schema: &CompiledSchema) -> u64 {
    let mut memo = HashMap::new();
    let mut largest = 0;
    let lookup = |name: &Name| schema.lookup(name);
    visit_records(&lookup, schema.schema(), &mut memo, &mut largest, 0);
    largest
}

/// [`largest_empty_value`] of a schema parsed by the caller, without compiling it: a
/// [`CompiledSchema`] keeps its schema for the life of the process (the stages compile one
/// per schema id), which a registry checking every schema it is sent must not do.
///
/// # Errors
/// [`CodecError::InvalidSchema`] when the schema's names do not resolve.
pub fn largest_empty_value_of(schema: &Schema) -> Result<u64, CodecError> {
    let resolved = apache_avro::schema::ResolvedSchema::try_from(schema).map_err(|e| {
        CodecError::InvalidSchema {
            id: 0,
            reason: e.to_string(),
        }
    })?;
    let names = resolved.get_names();
    let lookup = |name: &Name| names.get(name).copied();
    let mut memo = HashMap::new();
    let mut largest = 0;
    visit_records(&lookup, schema, &mut memo, &mut largest, 0);
    Ok(largest)
}

/// Resolves a `Schema::Ref` to the named type it stands for.
type Lookup<'l, 's> = dyn Fn(&Name) -> Option<&'s Schema> + 'l;

/// Every record defined in `schema`, each one's zero-byte size folded into `largest`.
fn visit_records<'s>(
    owner: &Lookup<'_, 's>,
    schema: &'s Schema,
    memo: &mut HashMap<String, Option<u64>>,
    largest: &mut u64,
    depth: usize,
) {
    if depth > MAX_DEPTH {
        return;
    }
    match schema {
        Schema::Record(r) => {
            if let Some(n) = empty_values(owner, schema, memo, depth) {
                *largest = (*largest).max(n);
            }
            for field in &r.fields {
                visit_records(owner, &field.schema, memo, largest, depth + 1);
            }
        }
        Schema::Array(a) => visit_records(owner, &a.items, memo, largest, depth + 1),
        Schema::Map(m) => visit_records(owner, &m.types, memo, largest, depth + 1),
        Schema::Union(u) => {
            for branch in u.variants() {
                visit_records(owner, branch, memo, largest, depth + 1);
            }
        }
        _ => {}
    }
}

/// Values in a zero-byte value of `schema` (walk steps), `None` when it takes bytes.
/// Records are counted once each (`memo`), so the count itself costs one pass.
fn empty_values<'s>(
    owner: &Lookup<'_, 's>,
    schema: &'s Schema,
    memo: &mut HashMap<String, Option<u64>>,
    depth: usize,
) -> Option<u64> {
    if depth > MAX_DEPTH {
        return None;
    }
    match schema {
        Schema::Null => Some(1),
        Schema::Fixed(f) if f.size == 0 => Some(1),
        Schema::Record(r) => {
            let key = r.name.fullname(None);
            if let Some(known) = memo.get(&key) {
                return *known;
            }
            // A record met again below itself cannot be empty (it recurses through a union,
            // whose branch index takes a byte); `None` until counted says so.
            memo.insert(key.clone(), None);
            let mut total: u64 = 1;
            for field in &r.fields {
                total = total.saturating_add(empty_values(owner, &field.schema, memo, depth + 1)?);
            }
            memo.insert(key, Some(total));
            Some(total)
        }
        Schema::Ref { name } => {
            owner(name).and_then(|target| empty_values(owner, target, memo, depth + 1))
        }
        _ => None,
    }
}

fn walk<'a>(
    owner: &'a CompiledSchema,
    schema: &'a Schema,
    cur: &mut Cursor<'a>,
    depth: usize,
    sink: &mut Sink<'_>,
) -> Result<Field<'a>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nesting deeper than {MAX_DEPTH}"));
    }
    cur.step()?;
    match schema {
        Schema::Union(u) => {
            let index = cur.long()?;
            let branch = usize::try_from(index)
                .ok()
                .and_then(|i| u.variants().get(i))
                .ok_or_else(|| format!("union branch {index} out of range"))?;
            walk(owner, branch, cur, depth + 1, sink)
        }
        Schema::Record(r) => record(owner, r, cur, depth, sink),
        Schema::Array(a) => array(owner, a, cur, depth, sink),
        Schema::Map(m) => map(owner, m, cur, depth, sink),
        Schema::Ref { name } => {
            let target = owner
                .lookup(name)
                .ok_or_else(|| format!("unresolved reference {}", name.fullname(None)))?;
            walk(owner, target, cur, depth + 1, sink)
        }
        _ => scalar(schema, cur, sink),
    }
}

/// A record's fields in order; a failing field names itself in the error.
fn record<'a>(
    owner: &'a CompiledSchema,
    r: &'a RecordSchema,
    cur: &mut Cursor<'a>,
    depth: usize,
    sink: &mut Sink<'_>,
) -> Result<Field<'a>, String> {
    emit(sink, "{");
    for (i, field) in r.fields.iter().enumerate() {
        if i > 0 {
            emit(sink, ",");
        }
        emit_str(sink, &field.name);
        emit(sink, ":");
        walk(owner, &field.schema, cur, depth + 1, sink)
            .map_err(|e| format!("{}: {e}", field.name))?;
    }
    emit(sink, "}");
    Ok(Field::Nested)
}

/// An array's blocks of items; items that may take no bytes are bounded by count.
fn array<'a>(
    owner: &'a CompiledSchema,
    a: &'a ArraySchema,
    cur: &mut Cursor<'a>,
    depth: usize,
    sink: &mut Sink<'_>,
) -> Result<Field<'a>, String> {
    let empty = may_be_empty(owner, &a.items);
    emit(sink, "[");
    let mut first = true;
    loop {
        let n = cur.block(empty)?;
        if n == 0 {
            break;
        }
        for _ in 0..n {
            if !first {
                emit(sink, ",");
            }
            first = false;
            walk(owner, &a.items, cur, depth + 1, sink)?;
        }
    }
    emit(sink, "]");
    Ok(Field::Nested)
}

/// A map's blocks of key and value.
fn map<'a>(
    owner: &'a CompiledSchema,
    m: &'a MapSchema,
    cur: &mut Cursor<'a>,
    depth: usize,
    sink: &mut Sink<'_>,
) -> Result<Field<'a>, String> {
    emit(sink, "{");
    let mut first = true;
    loop {
        // A map entry always has a key, so it takes at least one byte.
        let n = cur.block(false)?;
        if n == 0 {
            break;
        }
        for _ in 0..n {
            if !first {
                emit(sink, ",");
            }
            first = false;
            let key = cur.str()?;
            emit_str(sink, key);
            emit(sink, ":");
            walk(owner, &m.types, cur, depth + 1, sink)?;
        }
    }
    emit(sink, "}");
    Ok(Field::Nested)
}

/// A value of a schema that holds no other value: a null, a boolean or a number here,
/// the rest in [`blob`].
#[inline]
fn scalar<'a>(
    schema: &'a Schema,
    cur: &mut Cursor<'a>,
    sink: &mut Sink<'_>,
) -> Result<Field<'a>, String> {
    Ok(match schema {
        Schema::Null => {
            emit(sink, "null");
            Field::Null
        }
        Schema::Boolean => match cur.take(1)? {
            [0] => {
                emit(sink, false);
                Field::Bool(false)
            }
            [1] => {
                emit(sink, true);
                Field::Bool(true)
            }
            other => return Err(format!("boolean byte {other:?} is not 0 or 1")),
        },
        Schema::Int | Schema::Date | Schema::TimeMillis => {
            let v = cur.int()?;
            emit(sink, v);
            Field::Int(i64::from(v))
        }
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => {
            let v = cur.long()?;
            emit(sink, v);
            Field::Int(v)
        }
        Schema::Float => {
            let raw = cur.take(4)?;
            let v = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
            emit_float(sink, f64::from(v));
            Field::Float(f64::from(v))
        }
        Schema::Double => {
            let raw = cur.take(8)?;
            let mut b = [0u8; 8];
            b.copy_from_slice(raw);
            let v = f64::from_le_bytes(b);
            emit_float(sink, v);
            Field::Float(v)
        }
        _ => return blob(schema, cur, sink),
    })
}

/// A string, bytes, a fixed or an enum.
#[inline]
fn blob<'a>(
    schema: &'a Schema,
    cur: &mut Cursor<'a>,
    sink: &mut Sink<'_>,
) -> Result<Field<'a>, String> {
    Ok(match schema {
        Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => {
            let b = cur.bytes()?;
            emit_bytes(sink, b);
            Field::Bytes(b)
        }
        Schema::Decimal(d) => {
            let b = match &d.inner {
                InnerDecimalSchema::Bytes => cur.bytes()?,
                InnerDecimalSchema::Fixed(f) => cur.take(f.size)?,
            };
            emit_bytes(sink, b);
            Field::Bytes(b)
        }
        Schema::String | Schema::Uuid(UuidSchema::String) => {
            let s = cur.str()?;
            emit_str(sink, s);
            Field::Str(s)
        }
        Schema::Uuid(UuidSchema::Fixed(f)) | Schema::Fixed(f) | Schema::Duration(f) => {
            let b = cur.take(f.size)?;
            emit_bytes(sink, b);
            Field::Bytes(b)
        }
        Schema::Enum(e) => {
            let index = cur.int()?;
            let symbol = usize::try_from(index)
                .ok()
                .and_then(|i| e.symbols.get(i))
                .ok_or_else(|| {
                    format!(
                        "enum index {index} out of range for {}",
                        e.name.fullname(None)
                    )
                })?;
            emit_str(sink, symbol);
            Field::Enum(symbol)
        }
        other => return Err(format!("{other:?} is not a scalar schema")),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    const ORDER: &str = include_str!("../../../schemas/events/order_placed.avsc");

    fn order_bytes(quantity: i32, coupon: Option<&str>) -> Vec<u8> {
        let schema = Schema::parse_str(ORDER).unwrap();
        let value = Value::Record(vec![
            ("order_id".into(), Value::String("ord-0123456789ab".into())),
            ("customer_id".into(), Value::String("cus-000001".into())),
            ("product_id".into(), Value::String("sku-0001".into())),
            ("quantity".into(), Value::Int(quantity)),
            ("unit_price".into(), Value::Double(9.5)),
            ("currency".into(), Value::Enum(1, "USD".into())),
            (
                "coupon".into(),
                Value::Union(
                    u32::from(coupon.is_some()),
                    Box::new(coupon.map_or(Value::Null, |c| Value::String(c.into()))),
                ),
            ),
            (
                "placed_at".into(),
                Value::TimestampMillis(1_764_000_000_000),
            ),
            (
                "attributes".into(),
                Value::Map([("channel".to_string(), Value::String("app".into()))].into()),
            ),
        ]);
        // Test-only reference encoder: the slow generic path is fine for building fixtures.
        apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    #[test]
    fn lends_top_level_fields() {
        let schema = CompiledSchema::parse(3, ORDER).unwrap();
        let bytes = order_bytes(4, Some("SPRING24"));
        let record = read_record(&schema, &bytes).unwrap();
        assert_eq!(record.get("quantity"), Some(Field::Int(4)));
        assert_eq!(record.get("currency"), Some(Field::Enum("USD")));
        assert_eq!(record.get("coupon"), Some(Field::Str("SPRING24")));
        assert_eq!(record.get("unit_price").and_then(|f| f.as_f64()), Some(9.5));
        assert_eq!(record.get("attributes"), Some(Field::Nested));
        assert_eq!(record.get("nope"), None);
        let bytes = order_bytes(4, None);
        assert_eq!(
            read_record(&schema, &bytes).unwrap().get("coupon"),
            Some(Field::Null)
        );
    }

    #[test]
    fn renders_json() {
        let schema = CompiledSchema::parse(3, ORDER).unwrap();
        let mut out = String::new();
        to_json(&schema, &order_bytes(2, None), &mut out).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["quantity"], 2);
        assert_eq!(parsed["currency"], "USD");
        assert_eq!(parsed["coupon"], serde_json::Value::Null);
        assert_eq!(parsed["attributes"]["channel"], "app");
    }

    #[test]
    fn extreme_doubles_render_as_json_that_reads_back() {
        let schema = CompiledSchema::parse(3, ORDER).unwrap();
        for price in [f64::MIN, f64::MAX, f64::MIN_POSITIVE, 5e-324, -0.0, 1e21] {
            let mut bytes = order_bytes(2, None);
            // unit_price is the only 8-byte little-endian double in the fixture.
            let at = bytes
                .windows(8)
                .position(|w| w == 9.5f64.to_le_bytes())
                .unwrap();
            bytes[at..at + 8].copy_from_slice(&price.to_le_bytes());
            let mut out = String::new();
            to_json(&schema, &bytes, &mut out).unwrap();
            let parsed: serde_json::Value = serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("{price:e} rendered as unreadable JSON ({e}): {out}"));
            assert_eq!(parsed["unit_price"].as_f64(), Some(price), "{out}");
        }
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let schema = CompiledSchema::parse(3, ORDER).unwrap();
        let bytes = order_bytes(4, Some("SPRING24"));
        for cut in 0..bytes.len() {
            assert!(read_record(&schema, &bytes[..cut]).is_err(), "cut {cut}");
        }
        // Flip every byte to every value class that matters; must never panic.
        for i in 0..bytes.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = read_record(&schema, &b);
                let mut s = String::new();
                let _ = to_json(&schema, &b, &mut s);
            }
        }
    }

    #[test]
    fn hostile_collections_are_bounded() {
        let schema =
            CompiledSchema::parse(1, r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#)
                .unwrap();
        // Block count of ~2^62 null items: must be refused, not looped over.
        let body = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00];
        assert!(read_record(&schema, &body).is_err());
        let recursive = CompiledSchema::parse(
            2,
            r#"{"type":"record","name":"N","fields":[{"name":"next","type":["null","N"]}]}"#,
        )
        .unwrap();
        let deep = vec![2u8; 10_000];
        assert!(read_record(&recursive, &deep).is_err());
    }

    /// A record of records, each using the next twice, down to a record of nulls: a value of
    /// 2^depth nulls that takes zero bytes.
    pub(crate) fn doubling_schema(depth: usize) -> String {
        let mut schema =
            r#"{"type":"record","name":"L0","fields":[{"name":"n","type":"null"}]}"#.to_owned();
        for level in 1..=depth {
            schema = format!(
                r#"{{"type":"record","name":"L{level}","fields":[{{"name":"a","type":{schema}}},{{"name":"b","type":"L{}"}}]}}"#,
                level - 1
            );
        }
        schema
    }

    #[test]
    fn arrays_of_records_with_zero_byte_fields_cost_one_lookup_per_array() {
        // X holds a zero-byte record of about 3,000 values a hundred times, and a string, so
        // X itself takes bytes; a body of empty arrays of X asks, for each array, whether X
        // may be empty. Answered by walking X, that was hours for one body.
        let e = doubling_schema(10);
        let mut fields = format!(r#"{{"name":"f0","type":{e}}}"#);
        for i in 1..100 {
            fields.push_str(&format!(r#",{{"name":"f{i}","type":"L10"}}"#));
        }
        let x = format!(
            r#"{{"type":"record","name":"X","fields":[{fields},{{"name":"s","type":"string"}}]}}"#
        );
        let schema = CompiledSchema::parse(
            9,
            &format!(r#"{{"type":"record","name":"R","fields":[{{"name":"a","type":{{"type":"array","items":{{"type":"array","items":{x}}}}}}}]}}"#),
        )
        .unwrap();
        // One block of 100,000 inner arrays, each empty, then the end of the outer array.
        let n: i64 = 100_000;
        let mut body = Vec::new();
        let mut z = ((n << 1) ^ (n >> 63)) as u64;
        while z >= 0x80 {
            body.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        body.push(z as u8);
        body.extend(std::iter::repeat_n(0u8, n as usize));
        body.push(0);
        let started = std::time::Instant::now();
        assert!(read_record(&schema, &body).is_ok());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn values_that_take_no_bytes_cannot_make_a_short_body_cost_more_than_its_budget() {
        let schema = CompiledSchema::parse(1, &doubling_schema(40)).unwrap();
        let started = std::time::Instant::now();
        let err = read_record(&schema, &[]).unwrap_err().to_string();
        assert!(err.contains("values per byte"), "{err}");
        let mut json = String::new();
        assert!(to_json(&schema, &[], &mut json).is_err());
        assert!(
            started.elapsed() < std::time::Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        // A small one is read whole.
        let small = CompiledSchema::parse(2, &doubling_schema(8)).unwrap();
        assert!(read_record(&small, &[]).is_ok());
        // The count a registry refuses by, computed in one pass: 2^(d+1) - 1 records plus
        // 2^d nulls.
        assert_eq!(largest_empty_value(&small), (1 << 9) - 1 + (1 << 8));
        assert_eq!(largest_empty_value(&schema), (1u64 << 41) - 1 + (1 << 40));
        let plain = CompiledSchema::parse(
            3,
            r#"{"type":"record","name":"P","fields":[{"name":"s","type":"string"}]}"#,
        )
        .unwrap();
        assert_eq!(largest_empty_value(&plain), 0);
        // The same counts without compiling (what the registry uses: nothing kept).
        for (compiled, text) in [(&small, doubling_schema(8)), (&schema, doubling_schema(40))] {
            let parsed = Schema::parse_str(&text).unwrap();
            assert_eq!(
                largest_empty_value_of(&parsed).unwrap(),
                largest_empty_value(compiled)
            );
        }
    }
}
