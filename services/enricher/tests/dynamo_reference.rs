//! `DynamoReference` behind `ReferenceCache` against the local DynamoDB emulator (moto),
//! through the real SDK: more keys than one BatchGetItem takes, present and absent items,
//! number and boolean attributes, and a batch served from the cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, WriteRequest,
};
use riffle_aws::AwsError;
use riffle_aws::limits::DYNAMODB_BATCH_GET_MAX_KEYS;
use riffle_enricher::reference::{Attributes, DynamoReference, ReferenceCache, ReferenceSource};
use riffle_loadtest::{ReferenceItem, reference_items};
use riffle_local::Emulators;

/// Seeded catalogue items: more than two BatchGetItem requests' worth.
const SEEDED: usize = 250;
const TABLE: &str = "riffle-reference";

/// Counts the calls that reach the real source, to see what the cache saves.
struct Counted {
    inner: DynamoReference,
    calls: AtomicUsize,
}

impl ReferenceSource for &Counted {
    async fn fetch(&self, keys: Vec<String>) -> Result<HashMap<String, Attributes>, AwsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch(keys).await
    }
}

async fn create_table(client: &Client) {
    client
        .create_table()
        .table_name(TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

fn put(item: HashMap<String, AttributeValue>) -> WriteRequest {
    WriteRequest::builder()
        .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
        .build()
}

fn as_item(item: &ReferenceItem) -> HashMap<String, AttributeValue> {
    let mut out: HashMap<_, _> = item
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), AttributeValue::S(v.clone())))
        .collect();
    out.insert("pk".into(), AttributeValue::S(item.pk.clone()));
    out
}

async fn seed(client: &Client, requests: Vec<WriteRequest>) {
    riffle_aws::dynamo_batch::batch_write(client, TABLE, requests)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_reference_behind_the_cache() {
    let state = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("enricher-reference");
    let emulators = Emulators::start(&state).await.unwrap();
    let client = Client::new(&emulators.sdk_config().await);
    create_table(&client).await;

    let catalogue = reference_items();
    assert!(catalogue.len() > SEEDED && SEEDED > 2 * DYNAMODB_BATCH_GET_MAX_KEYS);
    let (seeded, unseeded) = catalogue.split_at(SEEDED);
    let mut requests: Vec<WriteRequest> = seeded.iter().map(|i| put(as_item(i))).collect();
    // Attributes written by hand may be numbers or flags; they arrive as strings.
    requests.push(put(HashMap::from([
        (
            "pk".to_string(),
            AttributeValue::S("device#dev-7777".into()),
        ),
        ("site".to_string(), AttributeValue::S("oslo".into())),
        ("floor".to_string(), AttributeValue::N("3".into())),
        ("active".to_string(), AttributeValue::Bool(true)),
        ("tags".to_string(), AttributeValue::Ss(vec!["x".into()])),
    ])));
    seed(&client, requests).await;

    let source = Counted {
        inner: DynamoReference::new(client.clone(), TABLE),
        calls: AtomicUsize::new(0),
    };
    let cache = ReferenceCache::new(&source, Duration::from_secs(300));
    let absent: Vec<String> = (9001..9021).map(|n| format!("product#sku-{n}")).collect();
    let mut keys: Vec<String> = catalogue.iter().map(|i| i.pk.clone()).collect();
    keys.extend(absent.iter().cloned());
    keys.push("device#dev-7777".into());
    // A batch names popular items many times; they are fetched once.
    keys.extend(seeded.iter().take(40).map(|i| i.pk.clone()));

    let found = cache.get_many(&keys).await.unwrap();
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);
    assert_eq!(found.len(), catalogue.len() + absent.len() + 1);
    for item in seeded {
        let expected: HashMap<String, String> = item.attributes.iter().cloned().collect();
        let got = found[&item.pk].as_deref();
        assert_eq!(got, Some(&expected), "{}", item.pk);
    }
    for key in unseeded.iter().map(|i| &i.pk).chain(&absent) {
        assert!(found[key].is_none(), "{key} found");
    }
    let by_hand = found["device#dev-7777"].as_deref().unwrap();
    assert_eq!(
        by_hand,
        &HashMap::from([
            ("site".to_string(), "oslo".to_string()),
            ("floor".to_string(), "3".to_string()),
            ("active".to_string(), "true".to_string()),
        ])
    );

    // The same keys again: hits and misses both come from the cache.
    let again = cache.get_many(&keys).await.unwrap();
    assert_eq!(again, found);
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);

    // A table that is not there is an error, never an empty answer.
    let missing = DynamoReference::new(client.clone(), "riffle-no-such-table");
    assert!(missing.fetch(keys[..3].to_vec()).await.is_err());

    emulators.shutdown().await;
}
