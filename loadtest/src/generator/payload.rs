//! A random valid payload of each subject: realistic spreads of products, prices, pages and
//! readings, with a reference id outside the catalogue when asked for one.

use std::collections::BTreeMap;

use rand::Rng;
use rand::rngs::StdRng;

use super::Generator;
use super::source::SubjectKind;
use crate::events::{Currency, Device, OrderPlaced, PageView, Payload, SensorKind, SensorReading};
use crate::reference::{
    DEVICE_COUNT, FIRST_MISSING_ID, PRODUCT_COUNT, device_id, list_price_cents, product_id,
};

impl Generator {
    /// A valid payload of `kind` that happened at `event_time`; `missing_ref` names a product
    /// or device the reference catalogue does not hold.
    pub(super) fn payload(
        &mut self,
        kind: SubjectKind,
        event_time: i64,
        missing_ref: bool,
    ) -> Payload {
        let rng = &mut self.rng;
        match kind {
            SubjectKind::Order => order(rng, event_time, missing_ref),
            SubjectKind::PageView => page_view(rng, event_time),
            SubjectKind::Sensor => sensor(rng, event_time, missing_ref),
        }
    }
}

/// An order of a catalogue product at its list price (less 10% with a coupon).
fn order(rng: &mut StdRng, event_time: i64, missing_ref: bool) -> Payload {
    let product = if missing_ref {
        rng.random_range(FIRST_MISSING_ID..=9999)
    } else {
        rng.random_range(1..=PRODUCT_COUNT)
    };
    let coupon = rng.random_bool(0.15).then(|| {
        ["SPRING24", "WELCOME10", "VIP2025", "FREESHIP"][rng.random_range(0..4)].to_string()
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

/// A page view: product pages and a few fixed ones, some with a user and a campaign.
fn page_view(rng: &mut StdRng, event_time: i64) -> Payload {
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

/// A sensor reading of a catalogue device, within the range of its kind.
fn sensor(rng: &mut StdRng, event_time: i64, missing_ref: bool) -> Payload {
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
