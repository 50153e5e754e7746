//! Shared pieces of the codec fuzz targets in `fuzz_targets/` (one binary per target, run by
//! cargo-fuzz): the bundled event schemas and comparisons that treat NaN metrics as equal.
//!
//! The targets only use riffle-codec's public API, the same entry points the stages call on
//! bytes read from Kinesis, SQS or S3.

use riffle_codec::Envelope;
use riffle_codec::kpl::SubRecord;

include!(concat!(env!("OUT_DIR"), "/schemas.rs"));

/// Registry id the fuzzed codec writes and reads by hand.
pub const ENVELOPE_ID: u32 = 7;
/// Registry id of a learned envelope version, which the codec reads through serde.
pub const LEARNED_ENVELOPE_ID: u32 = 9;

/// Envelope equality with the metric compared bit for bit: a NaN read from the wire must
/// compare equal to itself, or every NaN input would look like a disagreement.
pub fn same_envelope(a: &Envelope, b: &Envelope) -> bool {
    fn split(e: &Envelope) -> (Envelope, Option<u64>) {
        let mut e = e.clone();
        let bits = e.enrichment.as_mut().map(|x| {
            let bits = x.metric.to_bits();
            x.metric = 0.0;
            bits
        });
        (e, bits)
    }
    split(a) == split(b)
}

/// An owned copy of a sub-record, for comparing across aggregates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Partition key.
    pub partition_key: String,
    /// Explicit hash key, if any.
    pub explicit_hash_key: Option<String>,
    /// Data blob.
    pub data: Vec<u8>,
}

impl From<&SubRecord<'_>> for OwnedRecord {
    fn from(s: &SubRecord<'_>) -> Self {
        OwnedRecord {
            partition_key: s.partition_key.to_owned(),
            explicit_hash_key: s.explicit_hash_key.map(str::to_owned),
            data: s.data.to_vec(),
        }
    }
}
