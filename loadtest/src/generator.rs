//! The seeded event generator: valid events of several sources, a configurable share of
//! invalid ones that each break exactly one rule, and what each must become.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use riffle_codec::{CompiledSchema, Envelope, EnvelopeCodec, frame};

use crate::LoadError;
use crate::events::{
    Currency, Device, NumberKind, OrderPlaced, PageView, Payload, SensorKind, SensorReading,
};
use crate::reference::{
    DEVICE_COUNT, FIRST_MISSING_ID, PRODUCT_COUNT, catalogue, device_id, list_price_cents,
    product_id,
};
use crate::rules::{SubjectRules, fill_template};

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

/// A schema id no registry hands out in the demo or the tests: `unknown_schema` events use it.
pub const UNREGISTERED_SCHEMA_ID: u32 = 999_999;
/// Envelope subjects without a contract, for `unknown_subject` events.
pub const UNKNOWN_SUBJECTS: [&str; 2] = ["com.riffle.nope.Unknown", "com.riffle.shop.OrderVoided"];
/// Default largest delay between an event happening and its ingestion.
pub const DEFAULT_MAX_EVENT_DELAY_MS: i64 = 2_000;

/// A producing system; each produces one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The web shop: `com.riffle.shop.OrderPlaced`.
    ShopWeb,
    /// The app shop: `com.riffle.shop.OrderPlaced`.
    ShopApp,
    /// The web site: `com.riffle.web.PageView`.
    Web,
    /// The IoT gateway: `com.riffle.iot.SensorReading`.
    IotGateway,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubjectKind {
    Order = 0,
    PageView = 1,
    Sensor = 2,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 4] = [
        Source::ShopWeb,
        Source::ShopApp,
        Source::Web,
        Source::IotGateway,
    ];

    /// The name written into the envelope's `source`.
    pub fn name(self) -> &'static str {
        match self {
            Source::ShopWeb => "shop-web",
            Source::ShopApp => "shop-app",
            Source::Web => "web",
            Source::IotGateway => "iot-gateway",
        }
    }

    /// The registry subject of the payloads this source produces.
    pub fn subject(self) -> &'static str {
        match self.kind() {
            SubjectKind::Order => "com.riffle.shop.OrderPlaced",
            SubjectKind::PageView => "com.riffle.web.PageView",
            SubjectKind::Sensor => "com.riffle.iot.SensorReading",
        }
    }

    fn kind(self) -> SubjectKind {
        match self {
            Source::ShopWeb | Source::ShopApp => SubjectKind::Order,
            Source::Web => SubjectKind::PageView,
            Source::IotGateway => SubjectKind::Sensor,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Source {
    type Err = LoadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|src| src.name() == s)
            .ok_or_else(|| LoadError::Config(format!("unknown source `{s}`")))
    }
}

/// Parses a source mix such as `shop-web=3,shop-app=1,web=4,iot-gateway` (weight 1 if left
/// out), for command lines.
///
/// # Errors
/// [`LoadError::Config`] for an unknown source, a bad weight, or an empty mix.
pub fn parse_mix(spec: &str) -> Result<Vec<(Source, u32)>, LoadError> {
    let mix = spec
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let weight = weight
                .trim()
                .parse::<u32>()
                .map_err(|e| LoadError::Config(format!("weight of `{name}`: {e}")))?;
            Ok((name.trim().parse::<Source>()?, weight))
        })
        .collect::<Result<Vec<_>, LoadError>>()?;
    if mix.iter().all(|(_, w)| *w == 0) {
        return Err(LoadError::Config(format!("empty source mix `{spec}`")));
    }
    Ok(mix)
}

/// A way an invalid event is broken; each maps to the reject code the validator must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidKind {
    /// Byte 0 of the record is not 0.
    BadMagic,
    /// The record is 1 to 4 bytes long.
    Truncated,
    /// The frame's or the payload's schema id is not registered.
    UnknownSchema,
    /// The envelope or the payload bytes do not match their schema.
    Malformed,
    /// A string field does not match its `pattern`.
    PatternMismatch,
    /// A number below its `min` (or NaN).
    BelowMin,
    /// A number above its `max`.
    AboveMax,
    /// A `required` field is empty or null.
    MissingField,
    /// |ingest_time - event_time| beyond the subject's `max_event_time_skew_secs`.
    EventTimeSkew,
    /// The envelope's subject has no contract.
    UnknownSubject,
}

impl InvalidKind {
    /// Every kind.
    pub const ALL: [InvalidKind; 10] = [
        InvalidKind::BadMagic,
        InvalidKind::Truncated,
        InvalidKind::UnknownSchema,
        InvalidKind::Malformed,
        InvalidKind::PatternMismatch,
        InvalidKind::BelowMin,
        InvalidKind::AboveMax,
        InvalidKind::MissingField,
        InvalidKind::EventTimeSkew,
        InvalidKind::UnknownSubject,
    ];

    /// The validator's reject code for this kind.
    pub fn code(self) -> &'static str {
        match self {
            InvalidKind::BadMagic => "bad_magic",
            InvalidKind::Truncated => "truncated",
            InvalidKind::UnknownSchema => "unknown_schema",
            InvalidKind::Malformed => "malformed",
            InvalidKind::PatternMismatch => "pattern_mismatch",
            InvalidKind::BelowMin => "below_min",
            InvalidKind::AboveMax => "above_max",
            InvalidKind::MissingField => "missing_field",
            InvalidKind::EventTimeSkew => "event_time_skew",
            InvalidKind::UnknownSubject => "unknown_subject",
        }
    }
}

/// Registry ids under which the demo or test registered the schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaIds {
    /// `com.riffle.pipeline.Envelope`.
    pub envelope: u32,
    /// `com.riffle.shop.OrderPlaced`.
    pub order: u32,
    /// `com.riffle.web.PageView`.
    pub page_view: u32,
    /// `com.riffle.iot.SensorReading`.
    pub sensor: u32,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// The same seed (and the same clock readings) gives the same events, byte for byte.
    pub seed: u64,
    /// Sources and their relative weights.
    pub sources: Vec<(Source, u32)>,
    /// Share of events that are invalid, 0..=1.
    pub invalid_ratio: f64,
    /// The kinds of invalid events, chosen uniformly.
    pub invalid_kinds: Vec<InvalidKind>,
    /// Share of valid orders and sensor readings naming a product or device that is not in the
    /// reference catalogue, 0..=1.
    pub missing_reference_ratio: f64,
    /// Start of the simulated clock of [`Generator::next_simulated`], epoch millis.
    pub start_time_ms: i64,
    /// Events per second of simulated time.
    pub events_per_sec: u32,
    /// Events happen up to this long before they are ingested.
    pub max_event_delay_ms: i64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            sources: vec![
                (Source::ShopWeb, 3),
                (Source::ShopApp, 2),
                (Source::Web, 4),
                (Source::IotGateway, 3),
            ],
            invalid_ratio: 0.02,
            invalid_kinds: InvalidKind::ALL.to_vec(),
            missing_reference_ratio: 0.01,
            // 2026-01-01T00:00:00Z
            start_time_ms: 1_767_225_600_000,
            events_per_sec: 100,
            max_event_delay_ms: DEFAULT_MAX_EVENT_DELAY_MS,
        }
    }
}

impl GeneratorConfig {
    fn validate(&self) -> Result<(), LoadError> {
        let bad = |why: &str| Err(LoadError::Config(why.to_string()));
        if self.sources.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
            return bad("the source mix has no positive weight");
        }
        if !(0.0..=1.0).contains(&self.invalid_ratio) {
            return bad("invalid_ratio must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.missing_reference_ratio) {
            return bad("missing_reference_ratio must be within 0..=1");
        }
        if self.invalid_ratio > 0.0 && self.invalid_kinds.is_empty() {
            return bad("invalid_ratio > 0 needs at least one invalid kind");
        }
        if self.events_per_sec == 0 {
            return bad("events_per_sec must be positive");
        }
        if self.max_event_delay_ms < 0 {
            return bad("max_event_delay_ms must not be negative");
        }
        Ok(())
    }
}

/// What the pipeline must make of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// It passes validation and counts `metric` towards `(agg_key, window_start)` in the view.
    Valid {
        /// Payload subject.
        subject: String,
        /// The view key, e.g. `orders:category=books`.
        agg_key: String,
        /// Start of the event's tumbling window, epoch millis.
        window_start: i64,
        /// The value aggregated under the key.
        metric: f64,
        /// Whether the reference data exists; `None` for subjects that join none.
        reference_found: Option<bool>,
    },
    /// The validator rejects it with `code`.
    Rejected {
        /// The reject code (see [`InvalidKind::code`]).
        code: &'static str,
        /// Whether the envelope still decodes, so the reject can name the event id.
        envelope_readable: bool,
    },
}

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
        let invalid = (self.config.invalid_ratio > 0.0
            && self.rng.random_bool(self.config.invalid_ratio))
        .then(|| self.pick_invalid_kind())
        .flatten();
        let ingest_time = now_ms;
        let mut event_time = now_ms - self.rng.random_range(0..=self.config.max_event_delay_ms);
        let mut invalid = invalid;
        if invalid == Some(InvalidKind::EventTimeSkew) {
            match self.subjects[kind as usize].rules.max_skew_ms {
                Some(max) => {
                    let beyond = max + 1_000 + self.rng.random_range(0..=3_600_000);
                    // Clocks go wrong both ways; a quarter of the skewed events are from the future.
                    event_time = if self.rng.random_bool(0.25) {
                        ingest_time + beyond
                    } else {
                        ingest_time - beyond
                    };
                }
                None => invalid = Some(InvalidKind::Malformed),
            }
        }
        let missing_reference = invalid.is_none()
            && self.subjects[kind as usize].rules.lookup.is_some()
            && self.rng.random_bool(self.config.missing_reference_ratio);
        let mut payload = self.payload(kind, event_time, missing_reference);
        if let Some(k) = invalid
            && matches!(
                k,
                InvalidKind::PatternMismatch
                    | InvalidKind::BelowMin
                    | InvalidKind::AboveMax
                    | InvalidKind::MissingField
            )
            && !self.break_field(kind, k, &mut payload)
        {
            // The rules give this subject no field to break this way: break the bytes instead.
            invalid = Some(InvalidKind::Malformed);
        }

        let event_id = self.event_id(ingest_time);
        let state = &self.subjects[kind as usize];
        let mut body = payload.encode(&state.schema)?;
        let mut envelope = Envelope {
            origin: self.origin.as_mut().map(|(id, seq)| {
                *seq += 1;
                riffle_codec::Origin {
                    id: id.clone(),
                    seq: seq.to_string(),
                    sub: 0,
                }
            }),
            event_id: event_id.clone(),
            source: source.name().to_string(),
            subject: source.subject().to_string(),
            schema_id: state.schema.id() as i32,
            event_time,
            ingest_time,
            stage_times: HashMap::new(),
            trace_header: None,
            payload: Vec::new(),
            enrichment: None,
        };
        if self.rng.random_bool(0.5) {
            envelope.trace_header = Some(self.trace_header(ingest_time));
        }
        let mut envelope_readable = true;
        let mut frame_id = None;
        let mut cut_envelope = false;
        match invalid {
            Some(InvalidKind::UnknownSubject) => {
                let i = self.rng.random_range(0..UNKNOWN_SUBJECTS.len());
                envelope.subject = UNKNOWN_SUBJECTS[i].to_string();
            }
            Some(InvalidKind::UnknownSchema) => {
                if self.rng.random_bool(0.5) {
                    frame_id = Some(UNREGISTERED_SCHEMA_ID);
                    envelope_readable = false;
                } else {
                    envelope.schema_id = UNREGISTERED_SCHEMA_ID as i32;
                }
            }
            Some(InvalidKind::Malformed) => match self.rng.random_range(0..3) {
                0 => {
                    let cut = self.rng.random_range(1..=body.len().clamp(1, 3));
                    body.truncate(body.len().saturating_sub(cut));
                }
                1 => {
                    let extra = self.rng.random_range(1..=3);
                    body.extend((0..extra).map(|_| self.rng.random::<u8>()));
                }
                _ => {
                    cut_envelope = true;
                    envelope_readable = false;
                }
            },
            Some(InvalidKind::BadMagic | InvalidKind::Truncated) => envelope_readable = false,
            _ => {}
        }
        envelope.payload = body;
        let mut record = self.envelope.encode(&envelope)?;
        if let Some(id) = frame_id {
            record.splice(1..frame::HEADER_LEN, id.to_be_bytes());
        }
        if cut_envelope {
            // Keep the header and at least one body byte, so it is the body that is wrong.
            let room = record
                .len()
                .saturating_sub(frame::HEADER_LEN + 1)
                .clamp(1, 8);
            let cut = self.rng.random_range(1..=room);
            record.truncate(record.len().saturating_sub(cut).max(frame::HEADER_LEN + 1));
        }
        match invalid {
            Some(InvalidKind::BadMagic) => {
                if let Some(b) = record.first_mut() {
                    *b = self.rng.random_range(1..=u8::MAX);
                }
            }
            Some(InvalidKind::Truncated) => {
                let keep = self.rng.random_range(1..frame::HEADER_LEN);
                record.truncate(keep);
            }
            _ => {}
        }

        let expected = match invalid {
            Some(k) => Expected::Rejected {
                code: k.code(),
                envelope_readable,
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

    fn pick_invalid_kind(&mut self) -> Option<InvalidKind> {
        let kinds = &self.config.invalid_kinds;
        if kinds.is_empty() {
            return None;
        }
        kinds.get(self.rng.random_range(0..kinds.len())).copied()
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

    fn payload(&mut self, kind: SubjectKind, event_time: i64, missing_ref: bool) -> Payload {
        let rng = &mut self.rng;
        match kind {
            SubjectKind::Order => {
                let product = if missing_ref {
                    rng.random_range(FIRST_MISSING_ID..=9999)
                } else {
                    rng.random_range(1..=PRODUCT_COUNT)
                };
                let coupon = rng.random_bool(0.15).then(|| {
                    ["SPRING24", "WELCOME10", "VIP2025", "FREESHIP"][rng.random_range(0..4)]
                        .to_string()
                });
                let mut cents = if missing_ref {
                    rng.random_range(100..=20_000)
                } else {
                    list_price_cents(product)
                };
                if coupon.is_some() {
                    cents = (cents * 9).div_ceil(10);
                }
                let quantity = if rng.random_bool(0.9) {
                    rng.random_range(1..=5)
                } else {
                    rng.random_range(6..=20)
                };
                let currency = if rng.random_bool(0.6) {
                    Currency::Eur
                } else {
                    Currency::ALL[rng.random_range(0..Currency::ALL.len())]
                };
                let mut attributes = BTreeMap::new();
                attributes.insert(
                    "channel".to_string(),
                    if rng.random_bool(0.5) { "web" } else { "app" }.to_string(),
                );
                if rng.random_bool(0.3) {
                    attributes.insert("campaign".to_string(), "spring".to_string());
                }
                Payload::Order(OrderPlaced {
                    order_id: format!("ord-{:012x}", rng.random::<u64>() & 0xffff_ffff_ffff),
                    customer_id: format!("cus-{:06}", rng.random_range(1..=5_000)),
                    product_id: product_id(product),
                    quantity,
                    unit_price: f64::from(cents) / 100.0,
                    currency,
                    coupon,
                    placed_at: event_time,
                    attributes,
                })
            }
            SubjectKind::PageView => {
                const PATHS: [&str; 7] = [
                    "/",
                    "/cart",
                    "/checkout",
                    "/search",
                    "/account/orders",
                    "/blog/how_to-pick-a-gift",
                    "/help/returns",
                ];
                let path = if rng.random_bool(0.4) {
                    format!(
                        "/products/{}",
                        product_id(rng.random_range(1..=PRODUCT_COUNT))
                    )
                } else {
                    PATHS[rng.random_range(0..PATHS.len())].to_string()
                };
                let session = rng.random_range(0u32..2_000).wrapping_mul(2_654_435_761);
                let mut utm = BTreeMap::new();
                if rng.random_bool(0.25) {
                    utm.insert("utm_source".to_string(), "newsletter".to_string());
                    utm.insert("utm_medium".to_string(), "email".to_string());
                }
                Payload::PageView(PageView {
                    session_id: format!("ses-{session:08x}"),
                    user_id: rng
                        .random_bool(0.4)
                        .then(|| format!("usr-{:05}", rng.random_range(1..=20_000))),
                    path,
                    referrer: rng.random_bool(0.3).then(|| {
                        [
                            "https://news.riffle.test/",
                            "https://search.riffle.test/?q=gift",
                        ][rng.random_range(0..2)]
                        .to_string()
                    }),
                    device: Device::ALL[rng.random_range(0..Device::ALL.len())],
                    dwell_ms: if rng.random_bool(0.05) {
                        0
                    } else {
                        rng.random_range(1..=120_000)
                    },
                    viewed_at: event_time,
                    utm,
                })
            }
            SubjectKind::Sensor => {
                let device = if missing_ref {
                    rng.random_range(FIRST_MISSING_ID..=9999)
                } else {
                    rng.random_range(1..=DEVICE_COUNT)
                };
                let kind = SensorKind::ALL[rng.random_range(0..SensorKind::ALL.len())];
                let (lo, hi) = match kind {
                    SensorKind::Temperature => (-2_000, 4_500),
                    SensorKind::Humidity => (0, 10_000),
                    SensorKind::Pressure => (95_000, 105_000),
                };
                let mut tags = BTreeMap::new();
                if rng.random_bool(0.3) {
                    tags.insert("fw".to_string(), "2.4.1".to_string());
                }
                Payload::Sensor(SensorReading {
                    device_id: device_id(device),
                    kind,
                    value: f64::from(rng.random_range(lo..=hi)) / 100.0,
                    battery: rng
                        .random_bool(0.6)
                        .then(|| rng.random_range(5u16..=100) as f32 / 100.0),
                    read_at: event_time,
                    tags,
                })
            }
        }
    }

    /// Breaks one field so that exactly one rule of the subject fails with `kind`'s code.
    /// False if the rules give no field that can be broken that way.
    fn break_field(
        &mut self,
        subject: SubjectKind,
        kind: InvalidKind,
        payload: &mut Payload,
    ) -> bool {
        let rules = &self.subjects[subject as usize].rules;
        let candidates: Vec<_> = rules
            .fields
            .iter()
            .filter(|f| match kind {
                InvalidKind::PatternMismatch => f.pattern.is_some(),
                InvalidKind::BelowMin => f.min.is_some() && payload.number_kind(&f.name).is_some(),
                InvalidKind::AboveMax => f.max.is_some() && payload.number_kind(&f.name).is_some(),
                InvalidKind::MissingField => f.required,
                _ => false,
            })
            .collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        // Try candidates from a random start so every breakable field gets broken sometimes.
        let start = if order.is_empty() {
            0
        } else {
            self.rng.random_range(0..order.len())
        };
        order.rotate_left(start);
        for i in order {
            let Some(field) = candidates.get(i) else {
                continue;
            };
            let done = match kind {
                InvalidKind::PatternMismatch => {
                    let base = payload.text(&field.name).unwrap_or_else(|| "SAVE10".into());
                    let attempt = self.rng.random_range(0..4usize);
                    let bad = (0..5)
                        .map(|k| mangle(&base, (attempt + k) % 5))
                        .find(|v| !v.is_empty() && !rules.pattern_accepts(&field.name, v));
                    bad.is_some_and(|v| payload.set_text(&field.name, v))
                }
                InvalidKind::BelowMin | InvalidKind::AboveMax => {
                    let integer = payload.number_kind(&field.name) == Some(NumberKind::Integer);
                    let step = f64::from(self.rng.random_range(0u8..10));
                    let value = match (kind, field.min, field.max) {
                        (InvalidKind::BelowMin, Some(_), _)
                            if !integer && self.rng.random_bool(0.2) =>
                        {
                            // NaN compares below nothing, yet the rules count it as below min.
                            f64::NAN
                        }
                        (InvalidKind::BelowMin, Some(min), _) if integer => min.ceil() - 1.0 - step,
                        (InvalidKind::BelowMin, Some(min), _) => min - 1.0 - step * 3.7,
                        (_, _, Some(max)) if integer => max.floor() + 1.0 + step,
                        (_, _, Some(max)) => max + 1.0 + step * max.abs() * 0.05,
                        _ => continue,
                    };
                    payload.set_number(&field.name, value)
                }
                InvalidKind::MissingField => payload.clear(&field.name),
                _ => false,
            };
            if done {
                return true;
            }
        }
        false
    }

    fn expected_valid(&self, subject: SubjectKind, payload: &Payload, event_time: i64) -> Expected {
        let rules = &self.subjects[subject as usize].rules;
        let attributes = rules.lookup.as_ref().map(|(field, prefix)| {
            payload
                .text(field)
                .and_then(|id| self.catalogue.get(&format!("{prefix}{id}")))
        });
        let found = attributes.flatten();
        let agg_key = fill_template(&rules.agg_key, found, |name| payload.text(name));
        // Same left-to-right product as the rules file lists; `new` checked every factor exists.
        let metric = rules
            .metric_product
            .iter()
            .fold(1.0, |acc, f| acc * payload.number(f).unwrap_or(f64::NAN));
        Expected::Valid {
            subject: rules.subject.clone(),
            agg_key,
            window_start: rules.window_start(event_time),
            metric,
            reference_found: attributes.map(|a| a.is_some()),
        }
    }
}

/// A few ways to spoil a string so that a pattern no longer matches.
fn mangle(value: &str, how: usize) -> String {
    match how {
        0 => format!("{value}!"),
        1 if value.chars().any(|c| c.is_ascii_lowercase()) => value.to_ascii_uppercase(),
        1 => value.to_ascii_lowercase(),
        2 => value.chars().skip(1).collect(),
        3 => format!("x {value}"),
        _ => "BAD value!".to_string(),
    }
}
