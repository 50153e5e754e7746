//! The fuzz targets' seed corpus (`tests/fuzz/seeds/<target>/`), kept valid by this test, and
//! any input a fuzz run ever crashed on, pinned here as a plain test.
//!
//! Seeds are valid encodings made by the codec itself, so the fuzzer starts from records that
//! get past framing and checksums instead of rediscovering them. When an encoding changes, run
//! `RIFFLE_WRITE_FUZZ_SEEDS=1 cargo test -p riffle-codec --test fuzz_regressions` to rewrite them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apache_avro::Schema;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use riffle_codec::envelope::ENVELOPE_SCHEMA;
use riffle_codec::kpl::{self, Aggregator};
use riffle_codec::{CompiledSchema, Enrichment, Envelope, EnvelopeCodec, datum};

/// The ids the `frame_envelope` target uses (see `tests/fuzz/src/lib.rs`).
const ENVELOPE_ID: u32 = 7;
const LEARNED_ENVELOPE_ID: u32 = 9;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn codec() -> EnvelopeCodec {
    let codec = EnvelopeCodec::new(ENVELOPE_ID).unwrap();
    codec.learn(Arc::new(
        CompiledSchema::parse(LEARNED_ENVELOPE_ID, ENVELOPE_SCHEMA).unwrap(),
    ));
    codec
}

fn event_schemas() -> Vec<(String, CompiledSchema)> {
    let mut paths: Vec<_> = std::fs::read_dir(repo().join("schemas/events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
        .collect();
    paths.sort();
    paths
        .iter()
        .zip(1u32..)
        .map(|(p, id)| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(p).unwrap();
            (stem, CompiledSchema::parse(id, &text).unwrap())
        })
        .collect()
}

fn envelope(payload: Vec<u8>) -> Envelope {
    Envelope {
        origin: None,
        event_id: "0190a3c2-7d2e-7000-8000-000000000001".into(),
        source: "shop-web".into(),
        subject: "com.riffle.shop.OrderPlaced".into(),
        schema_id: 3,
        event_time: 1_764_000_000_000,
        ingest_time: 1_764_000_000_120,
        // One entry per map keeps the encoding, and so the seed files, deterministic.
        stage_times: HashMap::from([("validator".to_string(), 1_764_000_000_300)]),
        trace_header: Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into()),
        payload,
        enrichment: None,
    }
}

/// A value of `schema` that uses every part of it: the last union branch, one map entry and
/// one array item, the second enum symbol.
fn sample_value(owner: &CompiledSchema, schema: &Schema) -> Value {
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(true),
        Schema::Int => Value::Int(42),
        Schema::Long => Value::Long(4242),
        Schema::Float => Value::Float(1.5),
        Schema::Double => Value::Double(9.5),
        Schema::Bytes => Value::Bytes(vec![1, 2, 3]),
        Schema::String => Value::String("text-1".into()),
        Schema::Date => Value::Date(20_000),
        Schema::TimestampMillis => Value::TimestampMillis(1_764_000_000_000),
        Schema::TimestampMicros => Value::TimestampMicros(1_764_000_000_000_000),
        Schema::Fixed(f) => Value::Fixed(f.size, vec![7; f.size]),
        Schema::Enum(e) => {
            let i = 1.min(e.symbols.len() - 1);
            Value::Enum(u32::try_from(i).unwrap(), e.symbols[i].clone())
        }
        Schema::Union(u) => {
            let i = u.variants().len() - 1;
            Value::Union(
                u32::try_from(i).unwrap(),
                Box::new(sample_value(owner, &u.variants()[i])),
            )
        }
        Schema::Array(a) => Value::Array(vec![sample_value(owner, &a.items)]),
        Schema::Map(m) => Value::Map(HashMap::from([(
            "key-1".to_string(),
            sample_value(owner, &m.types),
        )])),
        Schema::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), sample_value(owner, &f.schema)))
                .collect(),
        ),
        Schema::Ref { name } => sample_value(owner, owner.lookup(name).unwrap()),
        other => panic!("add a sample value for {other:?} to make a fuzz seed"),
    }
}

/// Every seed, as (target, file name, bytes).
fn generated_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let codec = codec();
    let learned = EnvelopeCodec::new(LEARNED_ENVELOPE_ID).unwrap();
    let mut seeds = Vec::new();

    let plain = envelope(vec![1, 2, 3, 4]);
    let mut bare = envelope(Vec::new());
    bare.stage_times.clear();
    bare.trace_header = None;
    let mut enriched = plain.clone();
    enriched.enrichment = Some(Enrichment {
        agg_key: "orders:category=books".into(),
        metric: 12.5,
        window_start: 1_764_000_000_000,
        reference_found: true,
        attributes: HashMap::from([("category".to_string(), "books".to_string())]),
        late: false,
    });
    let mut agg = Aggregator::new();
    agg.add("k", None, &codec.encode(&plain).unwrap());
    for (name, bytes) in [
        ("plain.bin", codec.encode(&plain).unwrap()),
        ("bare.bin", codec.encode(&bare).unwrap()),
        ("enriched.bin", codec.encode(&enriched).unwrap()),
        ("learned-version.bin", learned.encode(&enriched).unwrap()),
        ("aggregated.bin", agg.finish()),
    ] {
        seeds.push(("frame_envelope", name.to_string(), bytes));
    }

    agg.add("order-1", None, &codec.encode(&plain).unwrap());
    agg.add(
        "order-2",
        Some("340282366920938463463374607431768211455"),
        b"",
    );
    agg.add("order-1", None, &[0xff; 40]);
    seeds.push(("kpl_deaggregate", "three-records.bin".into(), agg.finish()));
    seeds.push(("kpl_deaggregate", "empty.bin".into(), agg.finish()));

    for (stem, schema) in event_schemas() {
        let value = sample_value(&schema, schema.schema());
        let bytes = GenericDatumWriter::builder(schema.schema())
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap();
        seeds.push(("payload_walk", format!("{stem}.bin"), bytes));
    }
    seeds
}

/// Whether `bytes` is what a seed of `target` named `name` must be: a valid encoding.
fn check_seed(target: &str, name: &str, bytes: &[u8]) {
    match target {
        "frame_envelope" if name.starts_with("aggregated") => {
            let err = codec().decode(bytes).unwrap_err();
            assert_eq!(err.code(), "kpl_nested", "{name}");
            assert_eq!(kpl::deaggregate(bytes).unwrap().len(), 1, "{name}");
        }
        "frame_envelope" => {
            codec()
                .decode(bytes)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        "kpl_deaggregate" => {
            kpl::deaggregate(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        "payload_walk" => {
            let stem = name.trim_end_matches(".bin");
            let (_, schema) = event_schemas()
                .into_iter()
                .find(|(s, _)| s == stem)
                .unwrap_or_else(|| panic!("{name}: no schemas/events/{stem}.avsc"));
            datum::read_record(&schema, bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        other => panic!("seeds for unknown target {other}"),
    }
}

#[test]
fn checked_in_seeds_are_valid_and_complete() {
    let root = repo().join("tests/fuzz/seeds");
    let generated = generated_seeds();
    if std::env::var_os("RIFFLE_WRITE_FUZZ_SEEDS").is_some() {
        for (target, name, bytes) in &generated {
            std::fs::create_dir_all(root.join(target)).unwrap();
            std::fs::write(root.join(target).join(name), bytes).unwrap();
        }
    }
    for (target, name, bytes) in &generated {
        // The generator's own output must pass the same check as the files.
        check_seed(target, name, bytes);
        assert!(
            root.join(target).join(name).is_file(),
            "seed {target}/{name} is missing: rerun with RIFFLE_WRITE_FUZZ_SEEDS=1"
        );
    }
    let mut checked = 0;
    for target in ["frame_envelope", "kpl_deaggregate", "payload_walk"] {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            check_seed(target, &name, &std::fs::read(&path).unwrap());
            checked += 1;
        }
    }
    assert_eq!(checked, generated.len(), "stray files among the seeds");
}

/// `payload_walk` crashed on this (CI, 2026-12-06): a `double` of f64::MIN was written by
/// `Display` as 309 digits, which serde_json reads as out of range.
#[test]
fn payload_walk_double_min_renders_as_readable_json() {
    let input = [
        12, 116, 0, 13, 45, 0, 0, 0, 0, 4, 255, 255, 255, 255, 255, 255, 239, 255, 0, 0, 2, 0,
    ];
    for (stem, schema) in event_schemas() {
        let mut json = String::new();
        if datum::to_json(&schema, &input, &mut json).is_ok() {
            serde_json::from_str::<serde_json::Value>(&json)
                .unwrap_or_else(|e| panic!("{stem}: invalid JSON ({e}): {json}"));
        }
    }
}
