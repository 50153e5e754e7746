//! The codec's one error type.

/// Why bytes could not become an event (or an event could not become bytes).
///
/// Every variant caused by outside data is a reject, never a panic; only
/// [`CodecError::RegistryUnavailable`] is worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record is empty.
    #[error("empty record")]
    Empty,
    /// Byte 0 is not the Confluent magic byte.
    #[error("bad magic byte {0:#04x}, expected 0x00")]
    BadMagic(u8),
    /// Fewer bytes than the 5-byte frame header.
    #[error("record of {0} bytes is shorter than the 5-byte frame header")]
    Truncated(usize),
    /// Larger than a Kinesis record may be.
    #[error("record of {size} bytes exceeds the limit of {limit} bytes")]
    Oversize {
        /// Size of the offending record.
        size: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// No schema is registered under this id.
    #[error("schema id {0} is not registered")]
    UnknownSchema(u32),
    /// The registry could not be reached; the record is fine, try later.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    /// Schema text that Avro does not accept.
    #[error("invalid schema {id}: {reason}")]
    InvalidSchema {
        /// Registry id of the schema.
        id: u32,
        /// What Avro said.
        reason: String,
    },
    /// The body does not match its writer schema.
    #[error("body does not match schema {id}: {reason}")]
    Malformed {
        /// The writer schema id from the frame.
        id: u32,
        /// Where and why decoding stopped.
        reason: String,
    },
    /// A KPL aggregate that could not be unpacked (or was not unpacked).
    #[error("{0}")]
    Aggregate(#[from] crate::kpl::KplError),
    /// A value could not be encoded in its schema.
    #[error("cannot encode with schema {id}: {reason}")]
    Encode {
        /// The schema id used.
        id: u32,
        /// What went wrong.
        reason: String,
    },
}

impl CodecError {
    /// Only a registry outage heals by itself; everything else is about the bytes.
    pub fn retryable(&self) -> bool {
        matches!(self, CodecError::RegistryUnavailable(_))
    }

    /// A short machine-readable code for reject messages and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            CodecError::Empty => "empty",
            CodecError::BadMagic(_) => "bad_magic",
            CodecError::Truncated(_) => "truncated",
            CodecError::Oversize { .. } => "oversize",
            CodecError::UnknownSchema(_) => "unknown_schema",
            CodecError::RegistryUnavailable(_) => "registry_unavailable",
            CodecError::InvalidSchema { .. } => "invalid_schema",
            CodecError::Malformed { .. } => "malformed",
            CodecError::Encode { .. } => "encode",
            CodecError::Aggregate(e) => e.code(),
        }
    }
}
