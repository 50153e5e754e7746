//! The payloads of the sample subjects, as serde structs encoded straight into their schemas.
//!
//! Field names and types mirror `schemas/events/*.avsc` (the schemas themselves are loaded from
//! those files, never restated); the generator reaches fields by name so that it can follow the
//! rules files, which name fields too.

use std::collections::BTreeMap;

use riffle_codec::{CodecError, CompiledSchema};
use serde::Serialize;

/// `com.riffle.shop.Currency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Currency {
    Eur,
    Usd,
    Gbp,
}

/// `com.riffle.web.Device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Device {
    Desktop,
    Mobile,
    Tablet,
}

/// `com.riffle.iot.SensorKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum SensorKind {
    Temperature,
    Humidity,
    Pressure,
}

impl Currency {
    pub const ALL: [Currency; 3] = [Currency::Eur, Currency::Usd, Currency::Gbp];
    fn symbol(self) -> &'static str {
        match self {
            Currency::Eur => "EUR",
            Currency::Usd => "USD",
            Currency::Gbp => "GBP",
        }
    }
}

impl Device {
    pub const ALL: [Device; 3] = [Device::Desktop, Device::Mobile, Device::Tablet];
    fn symbol(self) -> &'static str {
        match self {
            Device::Desktop => "DESKTOP",
            Device::Mobile => "MOBILE",
            Device::Tablet => "TABLET",
        }
    }
}

impl SensorKind {
    pub const ALL: [SensorKind; 3] = [
        SensorKind::Temperature,
        SensorKind::Humidity,
        SensorKind::Pressure,
    ];
    fn symbol(self) -> &'static str {
        match self {
            SensorKind::Temperature => "TEMPERATURE",
            SensorKind::Humidity => "HUMIDITY",
            SensorKind::Pressure => "PRESSURE",
        }
    }
}

/// `com.riffle.shop.OrderPlaced`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OrderPlaced {
    pub order_id: String,
    pub customer_id: String,
    pub product_id: String,
    pub quantity: i32,
    pub unit_price: f64,
    pub currency: Currency,
    pub coupon: Option<String>,
    pub placed_at: i64,
    // BTreeMap, not HashMap: map entries are encoded in iteration order, and the same seed
    // must give the same bytes.
    pub attributes: BTreeMap<String, String>,
}

/// `com.riffle.web.PageView`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PageView {
    pub session_id: String,
    pub user_id: Option<String>,
    pub path: String,
    pub referrer: Option<String>,
    pub device: Device,
    pub dwell_ms: i64,
    pub viewed_at: i64,
    pub utm: BTreeMap<String, String>,
}

/// `com.riffle.iot.SensorReading`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct SensorReading {
    pub device_id: String,
    pub kind: SensorKind,
    pub value: f64,
    pub battery: Option<f32>,
    pub read_at: i64,
    pub tags: BTreeMap<String, String>,
}

/// Whether a numeric field holds whole numbers (Avro int/long) or not (float/double).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumberKind {
    Integer,
    Real,
}

/// A payload of any of the sample subjects.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    Order(OrderPlaced),
    PageView(PageView),
    Sensor(SensorReading),
}

impl Payload {
    /// Encodes the payload as an unframed Avro body in `schema`.
    pub fn encode(&self, schema: &CompiledSchema) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(96);
        match self {
            Payload::Order(p) => schema.encode(p, &mut out)?,
            Payload::PageView(p) => schema.encode(p, &mut out)?,
            Payload::Sensor(p) => schema.encode(p, &mut out)?,
        }
        Ok(out)
    }

    /// The Kinesis partition key: events of one customer, session or device stay in order.
    pub fn natural_key(&self) -> &str {
        match self {
            Payload::Order(p) => &p.customer_id,
            Payload::PageView(p) => &p.session_id,
            Payload::Sensor(p) => &p.device_id,
        }
    }

    /// A field rendered as text (strings and enum symbols as they are, numbers in Rust's
    /// shortest round-trip form); `None` for null, maps and unknown names.
    pub fn text(&self, name: &str) -> Option<String> {
        let s = |v: &str| Some(v.to_string());
        match (self, name) {
            (Payload::Order(p), "order_id") => s(&p.order_id),
            (Payload::Order(p), "customer_id") => s(&p.customer_id),
            (Payload::Order(p), "product_id") => s(&p.product_id),
            (Payload::Order(p), "currency") => s(p.currency.symbol()),
            (Payload::Order(p), "coupon") => p.coupon.clone(),
            (Payload::PageView(p), "session_id") => s(&p.session_id),
            (Payload::PageView(p), "user_id") => p.user_id.clone(),
            (Payload::PageView(p), "path") => s(&p.path),
            (Payload::PageView(p), "referrer") => p.referrer.clone(),
            (Payload::PageView(p), "device") => s(p.device.symbol()),
            (Payload::Sensor(p), "device_id") => s(&p.device_id),
            (Payload::Sensor(p), "kind") => s(p.kind.symbol()),
            _ => self.number(name).map(|n| n.to_string()),
        }
    }

    /// A numeric field as `f64` (as Avro readers widen int, long and float); `None` otherwise.
    pub fn number(&self, name: &str) -> Option<f64> {
        match (self, name) {
            (Payload::Order(p), "quantity") => Some(f64::from(p.quantity)),
            (Payload::Order(p), "unit_price") => Some(p.unit_price),
            (Payload::Order(p), "placed_at") => Some(p.placed_at as f64),
            (Payload::PageView(p), "dwell_ms") => Some(p.dwell_ms as f64),
            (Payload::PageView(p), "viewed_at") => Some(p.viewed_at as f64),
            (Payload::Sensor(p), "value") => Some(p.value),
            (Payload::Sensor(p), "battery") => p.battery.map(f64::from),
            (Payload::Sensor(p), "read_at") => Some(p.read_at as f64),
            _ => None,
        }
    }

    /// What kind of number a field holds, `None` if it is not numeric.
    pub fn number_kind(&self, name: &str) -> Option<NumberKind> {
        match (self, name) {
            (Payload::Order(_), "quantity" | "placed_at")
            | (Payload::PageView(_), "dwell_ms" | "viewed_at")
            | (Payload::Sensor(_), "read_at") => Some(NumberKind::Integer),
            (Payload::Order(_), "unit_price") | (Payload::Sensor(_), "value" | "battery") => {
                Some(NumberKind::Real)
            }
            _ => None,
        }
    }

    /// Sets a numeric field; false if `name` is not a numeric field of this payload.
    /// Integer fields take `value` truncated, so callers pass whole numbers.
    #[allow(clippy::cast_possible_truncation)]
    pub fn set_number(&mut self, name: &str, value: f64) -> bool {
        match (self, name) {
            (Payload::Order(p), "quantity") => p.quantity = value as i32,
            (Payload::Order(p), "unit_price") => p.unit_price = value,
            (Payload::Order(p), "placed_at") => p.placed_at = value as i64,
            (Payload::PageView(p), "dwell_ms") => p.dwell_ms = value as i64,
            (Payload::PageView(p), "viewed_at") => p.viewed_at = value as i64,
            (Payload::Sensor(p), "value") => p.value = value,
            (Payload::Sensor(p), "battery") => p.battery = Some(value as f32),
            (Payload::Sensor(p), "read_at") => p.read_at = value as i64,
            _ => return false,
        }
        true
    }

    /// Sets a string field (or an optional one to `Some`); false if `name` is not a string
    /// field of this payload (enums are not: every symbol is allowed by their rules).
    pub fn set_text(&mut self, name: &str, value: String) -> bool {
        match (self, name) {
            (Payload::Order(p), "order_id") => p.order_id = value,
            (Payload::Order(p), "customer_id") => p.customer_id = value,
            (Payload::Order(p), "product_id") => p.product_id = value,
            (Payload::Order(p), "coupon") => p.coupon = Some(value),
            (Payload::PageView(p), "session_id") => p.session_id = value,
            (Payload::PageView(p), "user_id") => p.user_id = Some(value),
            (Payload::PageView(p), "path") => p.path = value,
            (Payload::PageView(p), "referrer") => p.referrer = Some(value),
            (Payload::Sensor(p), "device_id") => p.device_id = value,
            _ => return false,
        }
        true
    }

    /// Makes a field count as missing for a `required` rule: null if it is optional, else the
    /// empty string; false if the field can be neither (a non-optional number or enum).
    pub fn clear(&mut self, name: &str) -> bool {
        match (self, name) {
            (Payload::Order(p), "coupon") => p.coupon = None,
            (Payload::PageView(p), "user_id") => p.user_id = None,
            (Payload::PageView(p), "referrer") => p.referrer = None,
            (Payload::Sensor(p), "battery") => p.battery = None,
            (payload, name) => return payload.set_text(name, String::new()),
        }
        true
    }
}
