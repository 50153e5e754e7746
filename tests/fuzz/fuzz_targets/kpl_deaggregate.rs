//! Fuzz target: KPL aggregates.
//!
//! The same input is used four ways: as a Kinesis record (opening and deaggregating it must
//! never panic), as the protobuf message of an aggregate with a correct MD5 trailer (so the
//! fuzzer gets past the checksum into the parser), as the frame of a compressed aggregate
//! (any bytes after the compressed magic: a typed error or an aggregate, never a panic or an
//! allocation above the bound), and through `arbitrary` as a list of user records that must
//! come back unchanged from aggregate-then-deaggregate, compressed or not, within the size
//! bound callers rely on.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};
use riffle_codec::kpl::{self, Aggregator, KplError};
use riffle_fuzz::OwnedRecord;

#[derive(Debug, Arbitrary)]
struct UserRecord {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(
        kpl::is_aggregated(data),
        data.starts_with(&kpl::MAGIC) || data.starts_with(&kpl::COMPRESSED_MAGIC)
    );
    let opened = kpl::open(data);
    if let Ok(plain) = &opened {
        assert!(plain.len() <= data.len().max(kpl::UNPACKED_MAX_BYTES));
    }
    if let Ok(subs) = kpl::records_of(&opened) {
        assert_reaggregates(&subs.iter().map(OwnedRecord::from).collect::<Vec<_>>());
    }
    let mut framed = kpl::COMPRESSED_MAGIC.to_vec();
    framed.extend_from_slice(data);
    match kpl::open(&framed) {
        Ok(plain) => assert!(plain.starts_with(&kpl::MAGIC)),
        Err(KplError::Unpack(_)) => {}
        Err(e) => panic!("a compressed frame fails only to unpack: {e}"),
    }

    let mut forged = kpl::MAGIC.to_vec();
    forged.extend_from_slice(data);
    forged.extend_from_slice(&Md5::digest(data));
    match kpl::deaggregate(&forged) {
        Ok(subs) => assert_reaggregates(&subs.iter().map(OwnedRecord::from).collect::<Vec<_>>()),
        Err(KplError::Protobuf(_)) => {}
        Err(e) => panic!("a well-formed frame around any message is only a protobuf error: {e}"),
    }

    if let Ok(records) = Vec::<UserRecord>::arbitrary_take_rest(Unstructured::new(data)) {
        let owned: Vec<OwnedRecord> = records
            .into_iter()
            .map(|r| OwnedRecord {
                partition_key: r.partition_key,
                explicit_hash_key: r.explicit_hash_key,
                data: r.data,
            })
            .collect();
        assert_reaggregates(&owned);
    }
});

/// Aggregates `records`, checks the size bound of every step, and reads them back.
fn assert_reaggregates(records: &[OwnedRecord]) {
    let mut agg = Aggregator::new();
    let mut bound = None;
    for r in records {
        // `size_with` ignores a new explicit hash key's table entry; callers only use it for
        // records without one, so only those are held to it.
        bound = r
            .explicit_hash_key
            .is_none()
            .then(|| agg.size_with(&r.partition_key, &r.data));
        agg.add(&r.partition_key, r.explicit_hash_key.as_deref(), &r.data);
    }
    assert_eq!(agg.len(), records.len());
    let bytes = agg.finish();
    assert!(agg.is_empty());
    if let Some(bound) = bound {
        assert!(
            bytes.len() <= bound,
            "{} bytes over the bound {bound}",
            bytes.len()
        );
    }
    assert!(kpl::is_aggregated(&bytes));
    let compressed = kpl::compress(bytes.clone());
    assert!(compressed.len() <= bytes.len());
    for bytes in [&bytes, &compressed] {
        let opened = kpl::open(bytes);
        match kpl::records_of(&opened) {
            Ok(subs) => {
                let back: Vec<OwnedRecord> = subs.iter().map(OwnedRecord::from).collect();
                assert_eq!(back, records);
            }
            Err(e) => panic!("our own aggregate does not deaggregate: {e}"),
        }
    }
}
