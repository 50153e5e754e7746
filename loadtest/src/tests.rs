//! Checks the generator against the codec: the codec plays the validator and the enricher here,
//! so that the generator's independently computed ground truth is proven to match them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

use riffle_codec::datum::{Field, read_record};
use riffle_codec::rules::{Contract, bundled};
use riffle_codec::{CompiledSchema, Envelope, EnvelopeCodec};

use crate::generator::FOREIGN_SUBJECTS;
use crate::*;

const IDS: SchemaIds = SchemaIds {
    envelope: 1,
    order: 2,
    page_view: 3,
    sensor: 4,
};

/// The validator's checks in the validator's order, built from the codec.
struct Checker {
    envelope: EnvelopeCodec,
    schemas: HashMap<u32, CompiledSchema>,
    contracts: HashMap<String, Contract>,
    reference: HashMap<String, HashMap<String, String>>,
}

impl Checker {
    fn new() -> Self {
        let schema = |id, text| (id, CompiledSchema::parse(id, text).unwrap());
        Checker {
            envelope: EnvelopeCodec::new(IDS.envelope).unwrap(),
            schemas: HashMap::from([
                schema(
                    IDS.order,
                    include_str!("../../schemas/events/order_placed.avsc"),
                ),
                schema(
                    IDS.page_view,
                    include_str!("../../schemas/events/page_view.avsc"),
                ),
                schema(
                    IDS.sensor,
                    include_str!("../../schemas/events/sensor_reading.avsc"),
                ),
            ]),
            contracts: bundled().unwrap(),
            reference: reference_items()
                .into_iter()
                .map(|i| (i.pk, i.attributes.into_iter().collect()))
                .collect(),
        }
    }

    /// The reject code, or the decoded envelope of a valid record.
    fn validate(&self, record: &[u8]) -> Result<Envelope, &'static str> {
        let env = self.envelope.decode(record).map_err(|e| e.code())?;
        let schema = u32::try_from(env.schema_id)
            .ok()
            .and_then(|id| self.schemas.get(&id))
            .ok_or("unknown_schema")?;
        if schema.full_name() != Some(env.subject.as_str()) {
            return Err("subject_mismatch");
        }
        let contract = self.contracts.get(&env.subject).ok_or("unknown_subject")?;
        let payload = read_record(schema, &env.payload).map_err(|e| e.code())?;
        contract
            .check(&payload, env.event_time, env.ingest_time)
            .map_err(|v| v.kind.code())?;
        Ok(env)
    }

    /// What the enricher would derive: (agg_key, window_start, metric, reference_found).
    fn enrich(&self, env: &Envelope) -> (String, i64, f64, Option<bool>) {
        let schema = &self.schemas[&(env.schema_id as u32)];
        let record = read_record(schema, &env.payload).unwrap();
        let spec = self.contracts[&env.subject].enrich.clone().unwrap();
        let attrs = spec
            .lookup_key(&record)
            .map(|key| self.reference.get(&key).cloned());
        let found = attrs.clone().flatten().unwrap_or_default();
        (
            spec.agg_key(&record, &found),
            spec.window_start(env.event_time),
            spec.metric(&record).unwrap(),
            attrs.map(|a| a.is_some()),
        )
    }
}

/// One contract per field rule of `subject`'s rules file, to count how many rules a record breaks.
fn single_field_contracts(subject: &str) -> Vec<Contract> {
    let (file, text) = riffle_codec::rules::BUNDLED_CONTRACTS
        .iter()
        .find(|(file, _)| file.starts_with(subject))
        .unwrap();
    let rules: serde_json::Value = serde_json::from_str(text).unwrap();
    rules["fields"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, rule)| {
            let one = serde_json::json!({
                "subject": subject,
                "schema": rules["schema"],
                "fields": { name.as_str(): rule },
            });
            Contract::parse(file, &one.to_string()).unwrap()
        })
        .collect()
}

fn generator(config: GeneratorConfig) -> Generator {
    Generator::new(config, IDS).unwrap()
}

#[test]
fn same_seed_same_events_other_seed_other_events() {
    let config = GeneratorConfig {
        invalid_ratio: 0.2,
        ..GeneratorConfig::default()
    };
    let a = generator(config.clone()).batch(2_000).unwrap();
    let b = generator(config.clone()).batch(2_000).unwrap();
    assert_eq!(a, b);
    let mut live = generator(config.clone());
    let mut live_again = generator(config.clone());
    for now in [5_000, 5_000, 6_000, 1_767_225_600_000] {
        assert_eq!(live.next(now).unwrap(), live_again.next(now).unwrap());
    }
    let c = generator(GeneratorConfig { seed: 7, ..config })
        .batch(2_000)
        .unwrap();
    assert_ne!(a, c);
}

#[test]
fn valid_events_pass_the_codec_and_match_the_enrichment() {
    let checker = Checker::new();
    let mut generator = generator(GeneratorConfig {
        invalid_ratio: 0.0,
        missing_reference_ratio: 0.05,
        ..GeneratorConfig::default()
    });
    let mut subjects = BTreeMap::<String, u64>::new();
    let mut sources = BTreeSet::new();
    let mut event_ids = BTreeSet::new();
    let mut optional_set = BTreeMap::<&str, (u64, u64)>::new();
    let mut missing_reference = 0;
    for _ in 0..5_000 {
        let ev = generator.next_simulated().unwrap();
        let env = checker
            .validate(&ev.record)
            .unwrap_or_else(|code| panic!("{code}: {ev:?}"));
        let Expected::Valid {
            subject,
            agg_key,
            window_start,
            metric,
            reference_found,
        } = &ev.expected
        else {
            panic!("rejected with invalid_ratio 0: {ev:?}");
        };
        assert_eq!(&env.subject, subject);
        assert_eq!(env.subject, ev.source.subject());
        assert_eq!(env.source, ev.source.name());
        assert_eq!(env.event_id, ev.event_id);
        assert!(event_ids.insert(ev.event_id.clone()), "duplicate id");
        assert_eq!(
            uuid::Uuid::parse_str(&ev.event_id)
                .unwrap()
                .get_version_num(),
            7
        );
        assert_eq!(
            (env.event_time, env.ingest_time),
            (ev.event_time, ev.ingest_time)
        );
        assert!((0..=2_000).contains(&(ev.ingest_time - ev.event_time)));
        assert!(!ev.partition_key.is_empty() && ev.partition_key.len() <= 256);
        let (key, window, value, found) = checker.enrich(&env);
        assert_eq!(&key, agg_key);
        assert_eq!(window, *window_start);
        assert!(approx_eq(value, *metric), "{value} vs {metric}");
        assert_eq!(found, *reference_found);
        if found == Some(false) {
            missing_reference += 1;
            assert!(key.contains("=unknown"), "{key}");
        }
        *subjects.entry(env.subject.clone()).or_default() += 1;
        sources.insert(ev.source);

        let schema = &checker.schemas[&(env.schema_id as u32)];
        let record = read_record(schema, &env.payload).unwrap();
        for name in ["coupon", "user_id", "referrer", "battery"] {
            if let Some(field) = record.get(name) {
                let seen = optional_set.entry(name).or_default();
                if field == Field::Null {
                    seen.0 += 1;
                } else {
                    seen.1 += 1;
                }
            }
        }
    }
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert_eq!(sources.len(), Source::ALL.len());
    assert_eq!(optional_set.len(), 4);
    for (name, (null, set)) in optional_set {
        assert!(null > 0 && set > 0, "{name}: {null} null, {set} set");
    }
    // ~5% of the ~3/4 of events that join reference data.
    assert!(
        (100..=300).contains(&missing_reference),
        "{missing_reference}"
    );
}

#[test]
fn invalid_events_fail_with_their_code_and_only_that() {
    let checker = Checker::new();
    let mut generator = generator(GeneratorConfig {
        invalid_ratio: 1.0,
        ..GeneratorConfig::default()
    });
    let mut codes = BTreeMap::<&str, u64>::new();
    for _ in 0..3_000 {
        let ev = generator.next_simulated().unwrap();
        let Expected::Rejected {
            code,
            envelope_readable,
        } = ev.expected
        else {
            panic!("valid with invalid_ratio 1: {ev:?}");
        };
        let got = checker.validate(&ev.record).err();
        assert_eq!(got, Some(code), "{ev:?}");
        *codes.entry(code).or_default() += 1;

        let env = checker.envelope.decode(&ev.record);
        assert_eq!(env.is_ok(), envelope_readable, "{code}");
        let Ok(env) = env else { continue };
        assert_eq!(env.event_id, ev.event_id);
        // The one fault must be the only one: repair it and the event must pass.
        match code {
            "subject_mismatch" => {
                assert!(FOREIGN_SUBJECTS.contains(&env.subject.as_str()));
                let mut fixed = env.clone();
                fixed.subject = ev.source.subject().to_string();
                assert!(
                    checker
                        .validate(&checker.envelope.encode(&fixed).unwrap())
                        .is_ok()
                );
            }
            "event_time_skew" => {
                let mut fixed = env.clone();
                fixed.event_time = fixed.ingest_time;
                assert!(
                    checker
                        .validate(&checker.envelope.encode(&fixed).unwrap())
                        .is_ok()
                );
            }
            "unknown_schema" => {
                assert_eq!(env.schema_id as u32, UNREGISTERED_SCHEMA_ID);
                let mut fixed = env.clone();
                fixed.schema_id = match ev.source.subject() {
                    "com.riffle.shop.OrderPlaced" => IDS.order,
                    "com.riffle.web.PageView" => IDS.page_view,
                    _ => IDS.sensor,
                } as i32;
                assert!(
                    checker
                        .validate(&checker.envelope.encode(&fixed).unwrap())
                        .is_ok()
                );
            }
            "pattern_mismatch" | "below_min" | "above_max" | "missing_field" => {
                // Decodes, times fine, and exactly one field's rules fail.
                let schema = &checker.schemas[&(env.schema_id as u32)];
                let record = read_record(schema, &env.payload).unwrap();
                assert!((env.ingest_time - env.event_time).abs() <= 2_000);
                let failing: Vec<_> = single_field_contracts(&env.subject)
                    .iter()
                    .filter_map(|c| c.check(&record, 0, 0).err())
                    .collect();
                assert_eq!(failing.len(), 1, "{failing:?}");
                assert_eq!(failing[0].kind.code(), code);
            }
            _ => {}
        }
    }
    let all: BTreeSet<_> = InvalidKind::ALL.iter().map(|k| k.code()).collect();
    assert_eq!(
        codes.keys().copied().collect::<BTreeSet<_>>(),
        all,
        "{codes:?}"
    );
    for (code, n) in &codes {
        assert!(*n > 150, "{code}: {n}");
    }
}

#[test]
fn invalid_share_is_close_to_the_configured_ratio() {
    let mut generator = generator(GeneratorConfig::default());
    let events = generator.batch(10_000).unwrap();
    let invalid = events
        .iter()
        .filter(|e| matches!(e.expected, Expected::Rejected { .. }))
        .count();
    // Binomial(10000, 0.02): mean 200, sd ~14.
    assert!((140..=260).contains(&invalid), "{invalid}");
    let missing = events
        .iter()
        .filter(|e| {
            matches!(
                e.expected,
                Expected::Valid {
                    reference_found: Some(false),
                    ..
                }
            )
        })
        .count();
    // 1% of the ~7,300 valid events that join reference data.
    assert!((35..=115).contains(&missing), "{missing}");
}

#[test]
fn ground_truth_equals_the_sums_over_the_records() {
    let checker = Checker::new();
    let mut generator = generator(GeneratorConfig {
        invalid_ratio: 0.1,
        ..GeneratorConfig::default()
    });
    let mut truth = GroundTruth::new();
    let mut from_records = BTreeMap::<(String, i64), Totals>::new();
    let mut codes = BTreeMap::<String, u64>::new();
    let events = generator.batch(6_000).unwrap();
    for ev in &events {
        truth.record(ev);
        match checker.validate(&ev.record) {
            Ok(env) => {
                let (key, window, metric, _) = checker.enrich(&env);
                from_records
                    .entry((key, window))
                    .and_modify(|t| t.add(metric))
                    .or_insert_with(|| Totals::of(metric));
            }
            Err(code) => *codes.entry(code.to_string()).or_default() += 1,
        }
    }
    assert_eq!(truth.total(), 6_000);
    assert_eq!(truth.rejects_by_code(), &codes);
    assert_eq!(
        truth.view().keys().collect::<Vec<_>>(),
        from_records.keys().collect::<Vec<_>>()
    );
    for (key, expected) in truth.view() {
        assert!(expected.approx_eq(&from_records[key]), "{key:?}");
    }
    assert_eq!(
        truth.view().values().map(|t| t.count).sum::<u64>(),
        truth.valid()
    );
    assert_eq!(
        truth.rejected_event_ids().len() as u64 + truth.unreadable_rejects(),
        truth.rejected()
    );
    assert!(truth.missing_reference() > 0);
    // The view keys are the rules files' templates filled in.
    for (key, _) in truth.view().keys() {
        assert!(
            key.starts_with("orders:category=")
                || key.starts_with("pageviews:device=")
                || key.starts_with("sensors:site="),
            "{key}"
        );
    }
    assert!(truth.view().keys().all(|(_, w)| w % 60_000 == 0));
}

#[test]
fn source_mix_is_followed_and_parsed() {
    let mix = parse_mix("iot-gateway=3, web").unwrap();
    assert_eq!(mix, vec![(Source::IotGateway, 3), (Source::Web, 1)]);
    assert!(parse_mix("web=x").is_err());
    assert!(parse_mix("nope").is_err());
    assert!(parse_mix("web=0").is_err());
    let events = generator(GeneratorConfig {
        sources: mix,
        ..GeneratorConfig::default()
    })
    .batch(4_000)
    .unwrap();
    let iot = events
        .iter()
        .filter(|e| e.source == Source::IotGateway)
        .count();
    assert!(events.iter().all(|e| e.source != Source::ShopWeb));
    assert!((2_800..=3_200).contains(&iot), "{iot}");
}

#[test]
fn bad_configs_are_refused() {
    let bad = [
        GeneratorConfig {
            sources: vec![],
            ..GeneratorConfig::default()
        },
        GeneratorConfig {
            invalid_ratio: 1.5,
            ..GeneratorConfig::default()
        },
        GeneratorConfig {
            invalid_kinds: vec![],
            ..GeneratorConfig::default()
        },
        GeneratorConfig {
            events_per_sec: 0,
            ..GeneratorConfig::default()
        },
    ];
    for config in bad {
        assert!(matches!(
            Generator::new(config, IDS),
            Err(LoadError::Config(_))
        ));
    }
    let reserved = SchemaIds {
        sensor: UNREGISTERED_SCHEMA_ID,
        ..IDS
    };
    assert!(Generator::new(GeneratorConfig::default(), reserved).is_err());
}

#[test]
fn simulated_clock_advances_at_the_configured_rate() {
    let mut generator = generator(GeneratorConfig {
        events_per_sec: 4,
        ..GeneratorConfig::default()
    });
    let start = GeneratorConfig::default().start_time_ms;
    let times: Vec<_> = generator
        .batch(9)
        .unwrap()
        .iter()
        .map(|e| e.ingest_time - start)
        .collect();
    assert_eq!(
        times,
        vec![0, 250, 500, 750, 1_000, 1_250, 1_500, 1_750, 2_000]
    );
}

#[test]
fn totals_compare_with_tolerance() {
    let mut a = Totals::of(0.1);
    a.add(0.2);
    let b = Totals {
        count: 2,
        sum: 0.3,
        min: 0.1,
        max: 0.2,
    };
    assert_ne!(a.sum, b.sum);
    assert!(a.approx_eq(&b));
    assert!(!a.approx_eq(&Totals { count: 3, ..b }));
    assert!(!approx_eq(1_000.0, 1_000.01));
}
