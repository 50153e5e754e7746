//! The seeded event generator: valid events of several sources, a configurable share of
//! invalid ones that each break exactly one rule, and what each must become.
//!
//! Layout, one job per file:
//! - this file: [`Generator`] itself: built from a config and the registry ids, then each
//!   event drawn in a fixed order (source, validity, times, payload, envelope, record);
//! - `source`: the [`Source`]s, the subject each produces, and [`parse_mix`];
//! - `config`: [`GeneratorConfig`], its defaults and checks, and the [`SchemaIds`];
//! - `payload`: a random valid payload of each subject;
//! - `invalid`: the [`InvalidKind`]s and how an event is broken to be each one;
//! - `expected`: [`Expected`], what the pipeline must make of an event.
//!
//! Every draw comes from one seeded RNG, so the order of the draws is part of the output: the
//! same seed gives the same events only as long as that order stays.

mod config;
mod expected;
mod invalid;
mod payload;
mod source;

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use riffle_codec::{CompiledSchema, Envelope, EnvelopeCodec};

pub use config::{DEFAULT_MAX_EVENT_DELAY_MS, GeneratorConfig, SchemaIds};
pub use expected::Expected;
pub use invalid::{FOREIGN_SUBJECTS, InvalidKind, UNREGISTERED_SCHEMA_ID};
pub use source::{Source, parse_mix};

use crate::LoadError;
use crate::reference::catalogue;
use crate::rules::SubjectRules;
use source::SubjectKind;

const ORDER_SCHEMA: &str = include_str!("../../schemas/events/order_placed.avsc");
const PAGE_VIEW_SCHEMA: &str = include_str!("../../schemas/events/page_view.avsc");
const SENSOR_SCHEMA: &str = include_str!("../../schemas/events/sensor_reading.avsc");
const ORDER_RULES: (&str, &str) = (
    "com.riffle.shop.OrderPlaced.json",
    include_str!("../../schemas/rules/com.riffle.shop.OrderPlaced.json"),
);
const PAGE_VIEW_RULES: (&str, &str) = (
    "com.riffle.web.PageView.json",
    include_str!("../../schemas/rules/com.riffle.web.PageView.json"),
);
const SENSOR_RULES: (&str, &str) = (
    "com.riffle.iot.SensorReading.json",
    include_str!("../../schemas/rules/com.riffle.iot.SensorReading.json"),
);

/// One generated record and its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedEvent {
    /// The framed record to put on the raw stream.
    pub record: Vec<u8>,
    /// Its Kinesis partition key: the customer, session or device id (the event id if that is
    /// empty, since Kinesis needs a non-empty key).
    pub partition_key: String,
    /// The event id in the envelope (UUID v7).
    pub event_id: String,
    /// Who produced it.
    pub source: Source,
    /// The envelope's event time, epoch millis.
    pub event_time: i64,
    /// The envelope's ingest time, epoch millis.
    pub ingest_time: i64,
    /// What it must become.
    pub expected: Expected,
}

struct SubjectState {
    rules: SubjectRules,
    schema: CompiledSchema,
}

/// The deterministic generator.
pub struct Generator {
    config: GeneratorConfig,
    rng: StdRng,
    envelope: EnvelopeCodec,
    subjects: [SubjectState; 3],
    catalogue: HashMap<String, HashMap<String, String>>,
    simulated: u64,
    /// The origin stamped on the next events and its next sequence (see
    /// [`Generator::stamp_origins`]).
    origin: Option<(String, u64)>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("seed", &self.config.seed)
            .field("simulated", &self.simulated)
            .finish_non_exhaustive()
    }
}

fn subject_state(
    id: u32,
    schema: &str,
    (file, rules): (&str, &str),
) -> Result<SubjectState, LoadError> {
    if id == UNREGISTERED_SCHEMA_ID {
        return Err(LoadError::Config(format!(
            "schema id {id} is reserved for unknown_schema events"
        )));
    }
    let schema = CompiledSchema::parse(id, schema)?;
    let rules = SubjectRules::parse(file, rules)?;
    if schema.full_name() != Some(rules.subject.as_str()) {
        return Err(LoadError::Rules {
            file: file.to_string(),
            reason: format!(
                "subject {} does not name schema {:?}",
                rules.subject, schema
            ),
        });
    }
    Ok(SubjectState { rules, schema })
}

impl Generator {
    /// Stamps the events generated from now on with origin `id` and the sequences after
    /// `last` (`schemas/envelope.avsc`: `last + 1`, `last + 2`, ...), as a producer does for
    /// one channel whose records it puts in order per shard; `None` stamps nothing, as a
    /// producer that does not say.
    pub fn stamp_origins(&mut self, origin: Option<(String, u64)>) {
        self.origin = origin;
    }

    /// The last sequence stamped (see [`Generator::stamp_origins`]), to go on from later.
    pub fn last_origin_seq(&self) -> Option<u64> {
        self.origin.as_ref().map(|(_, seq)| *seq)
    }

    /// A generator writing with the given registry ids.
    ///
    /// # Errors
    /// A bad config, a rules file the generator cannot follow, or a schema that does not parse.
    pub fn new(config: GeneratorConfig, ids: SchemaIds) -> Result<Self, LoadError> {
        config.validate()?;
        let subjects = [
            subject_state(ids.order, ORDER_SCHEMA, ORDER_RULES)?,
            subject_state(ids.page_view, PAGE_VIEW_SCHEMA, PAGE_VIEW_RULES)?,
            subject_state(ids.sensor, SENSOR_SCHEMA, SENSOR_RULES)?,
        ];
        let mut generator = Generator {
            rng: StdRng::seed_from_u64(config.seed),
            config,
            envelope: EnvelopeCodec::new(ids.envelope)?,
            subjects,
            catalogue: catalogue(),
            simulated: 0,
            origin: None,
        };
        generator.check_rules_are_followable()?;
        // Checking consumed randomness; start every run from the seed alone.
        generator.rng = StdRng::seed_from_u64(generator.config.seed);
        Ok(generator)
    }

    /// Fails early if a rules file names metric or lookup fields this generator cannot fill,
    /// rather than producing a ground truth that is silently wrong.
    fn check_rules_are_followable(&mut self) -> Result<(), LoadError> {
        for kind in [
            SubjectKind::Order,
            SubjectKind::PageView,
            SubjectKind::Sensor,
        ] {
            let mut sample = self.payload(kind, 0, false);
            for opt in ["coupon", "user_id", "referrer", "battery"] {
                sample.clear(opt);
            }
            let rules = &self.subjects[kind as usize].rules;
            let bad = |reason: String| LoadError::Rules {
                file: format!("{}.json", rules.subject),
                reason,
            };
            for field in &rules.metric_product {
                if sample.number(field).is_none() {
                    return Err(bad(format!(
                        "metric field `{field}` is not a required number"
                    )));
                }
            }
            if let Some((field, _)) = &rules.lookup
                && sample.text(field).is_none()
            {
                return Err(bad(format!(
                    "lookup field `{field}` is not a required string"
                )));
            }
            sample.encode(&self.subjects[kind as usize].schema)?;
        }
        Ok(())
    }

    /// The next event, ingested at `now_ms` (epoch millis) by the caller's clock.
    ///
    /// # Errors
    /// Only if a payload did not fit its schema, which [`Generator::new`] rules out.
    pub fn next(&mut self, now_ms: i64) -> Result<GeneratedEvent, LoadError> {
        let source = self.pick_source();
        let kind = source.kind();
        let mut invalid = self.pick_invalid();
        let ingest_time = now_ms;
        let mut event_time = now_ms - self.rng.random_range(0..=self.config.max_event_delay_ms);
        if invalid == Some(InvalidKind::EventTimeSkew) {
            match self.skewed_event_time(kind, ingest_time) {
                Some(skewed) => event_time = skewed,
                None => invalid = Some(InvalidKind::Malformed),
            }
        }
        let missing_reference = invalid.is_none()
            && self.subjects[kind as usize].rules.lookup.is_some()
            && self.rng.random_bool(self.config.missing_reference_ratio);
        let mut payload = self.payload(kind, event_time, missing_reference);
        if let Some(k) = invalid
            && k.breaks_a_field()
            && !self.break_field(kind, k, &mut payload)
        {
            // The rules give this subject no field to break this way: break the bytes instead.
            invalid = Some(InvalidKind::Malformed);
        }

        let event_id = self.event_id(ingest_time);
        let mut body = payload.encode(&self.subjects[kind as usize].schema)?;
        let mut envelope = self.envelope(source, kind, &event_id, event_time, ingest_time);
        let spoiled = self.spoil_envelope(invalid, &mut envelope, &mut body);
        envelope.payload = body;
        let mut record = self.envelope.encode(&envelope)?;
        self.spoil_record(invalid, &spoiled, &mut record);

        let expected = match invalid {
            Some(k) => Expected::Rejected {
                code: k.code(),
                envelope_readable: spoiled.envelope_readable,
            },
            None => self.expected_valid(kind, &payload, event_time),
        };
        let natural = payload.natural_key();
        let partition_key = if natural.is_empty() {
            event_id.clone()
        } else {
            natural.to_string()
        };
        Ok(GeneratedEvent {
            record,
            partition_key,
            event_id,
            source,
            event_time,
            ingest_time,
            expected,
        })
    }

    /// The envelope of an event, its payload still empty: stamped with the next origin
    /// sequence when origins are stamped, and carrying a sampled trace header at the config's
    /// `trace_header_ratio`.
    fn envelope(
        &mut self,
        source: Source,
        kind: SubjectKind,
        event_id: &str,
        event_time: i64,
        ingest_time: i64,
    ) -> Envelope {
        let schema_id = self.subjects[kind as usize].schema.id() as i32;
        let mut envelope = Envelope {
            origin: self.origin.as_mut().map(|(id, seq)| {
                *seq += 1;
                riffle_codec::Origin {
                    id: id.clone(),
                    seq: seq.to_string(),
                    sub: 0,
                }
            }),
            event_id: event_id.to_owned(),
            source: source.name().to_string(),
            subject: source.subject().to_string(),
            schema_id,
            event_time,
            ingest_time,
            stage_times: HashMap::new(),
            trace_header: None,
            payload: Vec::new(),
            enrichment: None,
        };
        if self.rng.random_bool(self.config.trace_header_ratio) {
            envelope.trace_header = Some(self.trace_header(ingest_time));
        }
        envelope
    }

    /// The next event on the simulated clock: it starts at `start_time_ms` and advances by
    /// `1000 / events_per_sec` ms per event, so a run's times do not depend on the wall clock.
    ///
    /// # Errors
    /// As [`Generator::next`].
    pub fn next_simulated(&mut self) -> Result<GeneratedEvent, LoadError> {
        let offset = self.simulated.saturating_mul(1000) / u64::from(self.config.events_per_sec);
        let now = self
            .config
            .start_time_ms
            .saturating_add(i64::try_from(offset).unwrap_or(i64::MAX));
        self.simulated += 1;
        self.next(now)
    }

    /// `n` events on the simulated clock.
    ///
    /// # Errors
    /// As [`Generator::next`].
    pub fn batch(&mut self, n: usize) -> Result<Vec<GeneratedEvent>, LoadError> {
        (0..n).map(|_| self.next_simulated()).collect()
    }

    fn pick_source(&mut self) -> Source {
        let total: u64 = self.config.sources.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut ticket = self.rng.random_range(0..total.max(1));
        for (source, weight) in &self.config.sources {
            if ticket < u64::from(*weight) {
                return *source;
            }
            ticket -= u64::from(*weight);
        }
        Source::Web
    }

    fn event_id(&mut self, ingest_time: i64) -> String {
        let random: [u8; 10] = self.rng.random();
        let millis = u64::try_from(ingest_time).unwrap_or(0);
        uuid::Builder::from_unix_timestamp_millis(millis, &random)
            .into_uuid()
            .to_string()
    }

    fn trace_header(&mut self, ingest_time: i64) -> String {
        let secs = ingest_time.div_euclid(1000) as u32;
        let root: u128 = self.rng.random::<u128>() >> 32;
        let parent: u64 = self.rng.random();
        format!("Root=1-{secs:08x}-{root:024x};Parent={parent:016x};Sampled=1")
    }
}
