//! What to generate ([`GeneratorConfig`]), its defaults and the checks that refuse an unusable
//! one, and the registry ids the events are written with ([`SchemaIds`]).

use super::{InvalidKind, Source};
use crate::LoadError;

/// Default largest delay between an event happening and its ingestion.
pub const DEFAULT_MAX_EVENT_DELAY_MS: i64 = 2_000;

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
    /// Start of the simulated clock of
    /// [`Generator::next_simulated`](super::Generator::next_simulated), epoch millis.
    pub start_time_ms: i64,
    /// Events per second of simulated time.
    pub events_per_sec: u32,
    /// Events happen up to this long before they are ingested.
    pub max_event_delay_ms: i64,
    /// Share of events whose producer starts an X-Ray trace (a header with `Sampled=1`);
    /// the others carry none, and the validator decides.
    pub trace_header_ratio: f64,
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
            trace_header_ratio: 0.5,
        }
    }
}

impl GeneratorConfig {
    pub(super) fn validate(&self) -> Result<(), LoadError> {
        let bad = |why: &str| Err(LoadError::Config(why.to_string()));
        if self.sources.iter().map(|(_, w)| u64::from(*w)).sum::<u64>() == 0 {
            return bad("the source mix has no positive weight");
        }
        if !(0.0..=1.0).contains(&self.trace_header_ratio) {
            return bad("trace_header_ratio must be within 0..=1");
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
