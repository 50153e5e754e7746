//! The fixed reference catalogue that the demo seeds into the DynamoDB reference table.
//!
//! It is a pure function of nothing: every run, every seed and every test sees the same
//! catalogue, so the ground truth of a run never depends on what happens to be in the table.

use std::collections::HashMap;

/// Products in the catalogue: `sku-0001` ..= `sku-0200`.
pub const PRODUCT_COUNT: u32 = 200;
/// Devices in the catalogue: `dev-0001` ..= `dev-0100`.
pub const DEVICE_COUNT: u32 = 100;
/// Product and device numbers from here on are never in the catalogue, yet match the id
/// patterns of the rules files: events naming them are valid but find no reference data.
pub const FIRST_MISSING_ID: u32 = 9000;

/// Product categories, the `{category}` of `orders:category={category}`.
pub const CATEGORIES: [&str; 8] = [
    "books",
    "electronics",
    "garden",
    "grocery",
    "home",
    "music",
    "sports",
    "toys",
];
/// Device sites, the `{site}` of `sensors:site={site}:kind={kind}`.
pub const SITES: [&str; 5] = ["berlin", "lisbon", "madrid", "oslo", "vienna"];
const MODELS: [&str; 3] = ["rf-100", "rf-200", "rf-300x"];
const ADJECTIVES: [&str; 6] = ["Classic", "Compact", "Deluxe", "Eco", "Pro", "Smart"];
const NOUNS: [&str; 5] = ["Bundle", "Kit", "Pack", "Set", "Edition"];

/// One item of the reference table: its key and its attributes (all strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceItem {
    /// The table's partition key, e.g. `product#sku-0042` or `device#dev-0007`.
    pub pk: String,
    /// Attribute name -> value, e.g. `category` -> `books`.
    pub attributes: Vec<(String, String)>,
}

/// The product id (`sku-NNNN`) of product number `n`.
pub fn product_id(n: u32) -> String {
    format!("sku-{n:04}")
}

/// The device id (`dev-NNNN`) of device number `n`.
pub fn device_id(n: u32) -> String {
    format!("dev-{n:04}")
}

/// List price of product `n` in cents; also what orders of it are charged.
pub(crate) fn list_price_cents(n: u32) -> u32 {
    // Spread over 1.99 .. ~500 without a random source, so the catalogue is fixed.
    199 + (n * 7919) % 49_800
}

fn product(n: u32) -> ReferenceItem {
    let idx = n as usize;
    let category = CATEGORIES[idx % CATEGORIES.len()];
    let name = format!(
        "{} {} {}",
        ADJECTIVES[idx % ADJECTIVES.len()],
        category,
        NOUNS[(idx / ADJECTIVES.len()) % NOUNS.len()]
    );
    let cents = list_price_cents(n);
    ReferenceItem {
        pk: format!("product#{}", product_id(n)),
        attributes: vec![
            ("category".into(), category.into()),
            ("name".into(), name),
            (
                "list_price".into(),
                format!("{}.{:02}", cents / 100, cents % 100),
            ),
        ],
    }
}

fn device(n: u32) -> ReferenceItem {
    let idx = n as usize;
    ReferenceItem {
        pk: format!("device#{}", device_id(n)),
        attributes: vec![
            ("site".into(), SITES[idx % SITES.len()].into()),
            (
                "model".into(),
                MODELS[(idx / SITES.len()) % MODELS.len()].into(),
            ),
        ],
    }
}

/// Every item the demo seeds into the reference table: products, then devices.
pub fn reference_items() -> Vec<ReferenceItem> {
    (1..=PRODUCT_COUNT)
        .map(product)
        .chain((1..=DEVICE_COUNT).map(device))
        .collect()
}

/// The catalogue by key, for computing the ground truth.
pub(crate) fn catalogue() -> HashMap<String, HashMap<String, String>> {
    reference_items()
        .into_iter()
        .map(|item| (item.pk, item.attributes.into_iter().collect()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn catalogue_is_fixed_sized_and_unique() {
        let items = reference_items();
        assert_eq!(items.len(), (PRODUCT_COUNT + DEVICE_COUNT) as usize);
        let keys: HashSet<_> = items.iter().map(|i| i.pk.as_str()).collect();
        assert_eq!(keys.len(), items.len());
        assert_eq!(items, reference_items());
        assert_eq!(items[0].pk, "product#sku-0001");
        assert_eq!(items[PRODUCT_COUNT as usize].pk, "device#dev-0001");
    }

    #[test]
    fn every_category_and_site_is_used_and_prices_parse() {
        let items = reference_items();
        let attr = |item: &ReferenceItem, name: &str| {
            item.attributes
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let categories: HashSet<_> = items.iter().filter_map(|i| attr(i, "category")).collect();
        let sites: HashSet<_> = items.iter().filter_map(|i| attr(i, "site")).collect();
        assert_eq!(categories.len(), CATEGORIES.len());
        assert_eq!(sites.len(), SITES.len());
        for item in items.iter().filter(|i| i.pk.starts_with("product#")) {
            let price: f64 = attr(item, "list_price").unwrap().parse().unwrap();
            assert!((1.0..=500.0).contains(&price), "{price}");
            assert!(attr(item, "name").is_some());
        }
        for item in items.iter().filter(|i| i.pk.starts_with("device#")) {
            assert!(attr(item, "model").is_some());
        }
    }
}
