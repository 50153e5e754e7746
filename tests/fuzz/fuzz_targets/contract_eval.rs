//! Fuzz target: every bundled contract (`schemas/rules/`) evaluated on arbitrary input, as
//! the validator, enricher and aggregator evaluate it on what producers send.
//!
//! The first 16 bytes are the envelope's event and ingest times, the rest the payload under
//! the contract's schema. Evaluation must never panic, for any times (the envelope's come
//! from producers); the planned check (resolved once per schema, the validator's hot path)
//! must give the same verdict as the check by field name; and a window must hold its event.
//! The same bytes, as text, are also parsed as a contract file, which must fail cleanly or
//! give a contract that evaluates without panicking.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use riffle_codec::rules::{Contract, bundled};
use riffle_codec::{CompiledSchema, datum};
use riffle_fuzz::EVENT_SCHEMAS;

struct Target {
    contract: Contract,
    schema: CompiledSchema,
    plan: riffle_codec::rules::CheckPlan,
}

static TARGETS: LazyLock<Vec<Target>> = LazyLock::new(|| {
    let contracts = match bundled() {
        Ok(c) => c,
        Err(e) => panic!("bundled contracts: {e}"),
    };
    let mut targets: Vec<Target> = contracts
        .into_values()
        .zip(1u32..)
        .map(|(contract, id)| {
            let file = contract.schema_file.trim_start_matches("events/");
            let Some((_, text)) = EVENT_SCHEMAS.iter().find(|(name, _)| *name == file) else {
                panic!("{}: no schema {file} in schemas/events", contract.subject);
            };
            let schema = match CompiledSchema::parse(id, text) {
                Ok(s) => s,
                Err(e) => panic!("{file}: {e}"),
            };
            let plan = contract.plan(&schema);
            Target {
                contract,
                schema,
                plan,
            }
        })
        .collect();
    targets.sort_by(|a, b| a.contract.subject.cmp(&b.contract.subject));
    targets
});

fuzz_target!(|data: &[u8]| {
    let (times, payload) = data.split_at(data.len().min(16));
    let mut t = [0u8; 16];
    t[..times.len()].copy_from_slice(times);
    let event_time = i64::from_le_bytes([t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]]);
    let ingest_time = i64::from_le_bytes([t[8], t[9], t[10], t[11], t[12], t[13], t[14], t[15]]);

    for target in TARGETS.iter() {
        // Whatever the envelope says, the window is computed (the aggregator does it for
        // every event the validator let through, and the times are the producer's).
        if let Some(enrich) = &target.contract.enrich {
            let start = enrich.window_start(event_time);
            assert!(start <= event_time, "window starts after its event");
        }
        let Ok(record) = datum::read_record(&target.schema, payload) else {
            continue;
        };
        let by_name = target.contract.check(&record, event_time, ingest_time);
        let planned = target
            .contract
            .check_planned(&target.plan, &record, event_time, ingest_time);
        assert_eq!(
            by_name.as_ref().map_err(|v| (v.kind, v.field.clone())),
            planned.as_ref().map_err(|v| (v.kind, v.field.clone())),
            "{}: planned check disagrees",
            target.contract.subject
        );
        if let Some(enrich) = &target.contract.enrich {
            let _ = enrich.lookup_key(&record);
            let _ = enrich.metric(&record);
            let _ = enrich.agg_key(&record, &std::collections::HashMap::new());
        }
    }

    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(contract) = Contract::parse("fuzz.json", text)
    {
        for target in TARGETS.iter() {
            if let Ok(record) = datum::read_record(&target.schema, payload) {
                let _ = contract.check(&record, event_time, ingest_time);
                let plan = contract.plan(&target.schema);
                let _ = contract.check_planned(&plan, &record, event_time, ingest_time);
                if let Some(enrich) = &contract.enrich {
                    let _ = enrich.window_start(event_time);
                    let _ = enrich.lookup_key(&record);
                    let _ = enrich.metric(&record);
                    let _ = enrich.agg_key(&record, &std::collections::HashMap::new());
                }
            }
        }
    }
});
