//! The calls a batch's trace shows, as the clients riffle-aws builds record them, against the
//! local DynamoDB (moto) through the real SDK: a conditional write that loses its condition
//! is an outcome the trace counts, not a failed call; a call that really fails is one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use riffle_aws::calls::{CallLog, recorded};
use riffle_local::Emulators;

const TABLE: &str = "calls-conditions";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_not_met_is_counted_and_a_missing_table_is_a_failure() {
    let state = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("aws-calls");
    let emulators = Emulators::start(&state).await.unwrap();
    let dynamo = riffle_aws::dynamodb_client(&emulators.sdk_config().await);
    dynamo
        .create_table()
        .table_name(TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("k")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("k")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let put_new = |table: &str| {
        dynamo
            .put_item()
            .table_name(table)
            .item("k", AttributeValue::S("a".into()))
            .condition_expression("attribute_not_exists(k)")
    };
    let log = CallLog::new();
    let answers = recorded(Some(log.clone()), async {
        (
            put_new(TABLE).send().await.is_ok(),
            // The item exists now: DynamoDB refuses the same write, as asked.
            put_new(TABLE).send().await.is_ok(),
            put_new("no-such-table").send().await.is_ok(),
        )
    })
    .await;
    assert_eq!(answers, (true, false, false));

    let calls = log.take();
    let seen: Vec<_> = calls
        .iter()
        .map(|c| {
            (
                c.operation.as_str(),
                c.error.as_deref(),
                c.conditions_not_met,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("PutItem", None, 0),
            ("PutItem", None, 1),
            ("PutItem", Some("service error"), 0),
        ]
    );
    emulators.shutdown().await;
}
