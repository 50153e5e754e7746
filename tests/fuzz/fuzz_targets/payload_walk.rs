//! Fuzz target: arbitrary bytes as the payload of every event schema in `schemas/events/`.
//!
//! The datum walker must never panic; its two uses (checking a record and rendering it as
//! JSON) must accept the same bytes; the JSON must parse; and whatever the walker accepts must
//! also be accepted, to the last byte, by apache-avro's generic reader, because the validator's
//! acceptance is what lets a payload into the pipeline.

#![no_main]

use std::sync::LazyLock;

use apache_avro::reader::datum::GenericDatumReader;
use libfuzzer_sys::fuzz_target;
use riffle_codec::{CompiledSchema, datum};
use riffle_fuzz::EVENT_SCHEMAS;

struct Target {
    name: &'static str,
    schema: CompiledSchema,
    reference: GenericDatumReader<'static>,
}

static TARGETS: LazyLock<Vec<Target>> = LazyLock::new(|| {
    EVENT_SCHEMAS
        .iter()
        .zip(1u32..)
        .map(|((name, text), id)| {
            let schema = match CompiledSchema::parse(id, text) {
                Ok(s) => s,
                Err(e) => panic!("{name}: {e}"),
            };
            let reference = match GenericDatumReader::builder(schema.schema()).build() {
                Ok(r) => r,
                Err(e) => panic!("{name}: {e}"),
            };
            Target {
                name,
                schema,
                reference,
            }
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    for t in TARGETS.iter() {
        let record = datum::read_record(&t.schema, data);
        let mut json = String::new();
        let rendered = datum::to_json(&t.schema, data, &mut json);
        assert_eq!(
            record.is_ok(),
            rendered.is_ok(),
            "{}: read_record {:?} but to_json {:?}",
            t.name,
            record.as_ref().err(),
            rendered.as_ref().err()
        );
        let Ok(record) = record else {
            continue;
        };
        for position in 0.. {
            let Some(field) = record.field(position) else {
                break;
            };
            let _ = (field.render(), field.as_f64(), field.as_str());
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
            panic!("{}: to_json wrote invalid JSON ({e}): {json}", t.name);
        }
        let mut rest = data;
        match t.reference.read_value(&mut rest) {
            Ok(_) => assert!(
                rest.is_empty(),
                "{}: walker accepted {} bytes the reference reader left over",
                t.name,
                rest.len()
            ),
            Err(e) => panic!("{}: walker accepted what apache-avro rejects: {e}", t.name),
        }
    }
});
