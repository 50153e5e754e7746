//! Confluent wire framing: byte 0 is 0, bytes 1..5 the big-endian schema id, then the Avro body.
//!
//! Framing every record this way lets any Confluent-aware tool read any Riffle stream.

use crate::CodecError;

/// The Confluent magic byte.
pub const MAGIC: u8 = 0;
/// Magic byte plus the 4-byte schema id.
pub const HEADER_LEN: usize = 5;
/// Kinesis' limit for one record's data blob (1 MiB); nothing bigger can be on a stream.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Splits a framed record into its schema id and Avro body.
///
/// # Errors
/// Empty, oversize, short or wrong-magic input.
pub fn split(record: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    if record.len() > MAX_RECORD_BYTES {
        return Err(CodecError::Oversize {
            size: record.len(),
            limit: MAX_RECORD_BYTES,
        });
    }
    match record {
        [] => Err(CodecError::Empty),
        [magic, ..] if *magic != MAGIC => Err(CodecError::BadMagic(*magic)),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        short => Err(CodecError::Truncated(short.len())),
    }
}

/// Appends the frame header for `schema_id` to `out`.
pub fn write_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_header_and_body() {
        let mut buf = Vec::new();
        write_header(&mut buf, 0x0102_0304);
        buf.extend_from_slice(b"body");
        assert_eq!(split(&buf).ok(), Some((0x0102_0304, &b"body"[..])));
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        assert!(matches!(split(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            split(&[1, 0, 0, 0, 1]),
            Err(CodecError::BadMagic(1))
        ));
        assert!(matches!(split(&[0, 0, 0]), Err(CodecError::Truncated(3))));
        let big = vec![0u8; MAX_RECORD_BYTES + 1];
        assert!(matches!(split(&big), Err(CodecError::Oversize { .. })));
    }

    #[test]
    fn header_only_is_an_empty_body() {
        assert_eq!(split(&[0, 0, 0, 0, 7]).ok(), Some((7, &[][..])));
    }
}
