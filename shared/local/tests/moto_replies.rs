//! The local DynamoDB's shortcuts (`infra/local/moto_server.py` writes item-operation replies
//! straight to JSON and keeps moto's per-request lookups) answer what moto itself answers:
//! the same calls through the real SDK against the twin's moto and against one started with
//! `RIFFLE_MOTO_PLAIN=1` (moto's own request path and reply writer) read back equal. A moto
//! upgrade that changes an item reply's shape fails here rather than in a stage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::process::Stdio;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Get, KeySchemaElement,
    KeyType, KeysAndAttributes, Put, PutRequest, ReturnConsumedCapacity, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TransactGetItem, TransactWriteItem,
    Update, WriteRequest,
};
use riffle_local::Emulators;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A fresh state dir per test run under the git-ignored `.riffle/`.
fn state_dir(name: &str) -> std::path::PathBuf {
    let dir = riffle_local::project_root()
        .unwrap()
        .join(".riffle/test-state")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// moto with its own request path and reply writer, on a free port; killed when dropped.
async fn plain_moto() -> (Child, String) {
    let root = riffle_local::project_root().unwrap();
    let python = riffle_local::tools_dir().join("venv/bin/python");
    let mut child = Command::new(python)
        .arg(root.join("infra/local/moto_server.py"))
        .arg("0")
        .env("RIFFLE_MOTO_PLAIN", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next_line().await.unwrap().expect("moto exited");
        if let Some(port) = line.strip_prefix("READY ") {
            break port.trim().to_owned();
        }
    };
    (child, format!("http://127.0.0.1:{port}"))
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn key(pk: &str, sk: i64) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), n(sk))])
}

/// Every item operation the stages and tools use, in the shapes they use, as text to
/// compare: what the SDK read from each reply (request ids left out), or the error's code
/// and the item a failed condition returned.
async fn exercise(db: &Client) -> Vec<String> {
    let mut seen = Vec::new();
    db.create_table()
        .table_name("t")
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(KeyType::Range)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(ScalarAttributeType::N)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut item = key("a", 1);
    item.extend([
        (
            "b".to_owned(),
            AttributeValue::B(Blob::new(vec![0, 1, 255])),
        ),
        (
            "bs".to_owned(),
            AttributeValue::Bs(vec![Blob::new(b"x".to_vec()), Blob::new(b"y".to_vec())]),
        ),
        (
            "m".to_owned(),
            AttributeValue::M(HashMap::from([(
                "l".to_owned(),
                AttributeValue::L(vec![
                    AttributeValue::N("1.5".to_owned()),
                    s("s"),
                    AttributeValue::Null(true),
                    AttributeValue::Bool(false),
                    AttributeValue::B(Blob::new(b"zz".to_vec())),
                ]),
            )])),
        ),
        (
            "ns".to_owned(),
            AttributeValue::Ns(vec!["1".to_owned(), "2".to_owned()]),
        ),
        (
            "ss".to_owned(),
            AttributeValue::Ss(vec!["p".to_owned(), "q".to_owned()]),
        ),
    ]);
    let out = db
        .put_item()
        .table_name("t")
        .set_item(Some(item.clone()))
        .send()
        .await
        .unwrap();
    seen.push(format!("put {:?}", out.attributes()));
    let out = db
        .put_item()
        .table_name("t")
        .set_item(Some(item))
        .return_values(ReturnValue::AllOld)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .unwrap();
    seen.push(format!(
        "put old {:?} {:?}",
        sorted(out.attributes()),
        out.consumed_capacity()
    ));
    for sk in 2..30 {
        let mut row = key("a", sk);
        row.insert("v".to_owned(), s("0123456789"));
        db.put_item()
            .table_name("t")
            .set_item(Some(row))
            .send()
            .await
            .unwrap();
    }
    let out = db
        .get_item()
        .table_name("t")
        .set_key(Some(key("a", 1)))
        .send()
        .await
        .unwrap();
    seen.push(format!("get {:?}", sorted(out.item())));
    let out = db
        .get_item()
        .table_name("t")
        .set_key(Some(key("a", 999)))
        .send()
        .await
        .unwrap();
    seen.push(format!("get missing {:?}", out.item()));
    let out = db
        .get_item()
        .table_name("t")
        .set_key(Some(key("a", 1)))
        .projection_expression("m.l[0], b")
        .return_consumed_capacity(ReturnConsumedCapacity::Indexes)
        .send()
        .await
        .unwrap();
    seen.push(format!(
        "get projected {:?} {:?}",
        sorted(out.item()),
        out.consumed_capacity()
    ));
    let out = db
        .update_item()
        .table_name("t")
        .set_key(Some(key("a", 2)))
        .update_expression("SET v = :v ADD c :one")
        .expression_attribute_values(":v", AttributeValue::B(Blob::new(b"q".to_vec())))
        .expression_attribute_values(":one", n(1))
        .return_values(ReturnValue::AllNew)
        .send()
        .await
        .unwrap();
    seen.push(format!("update {:?}", sorted(out.attributes())));
    let failed = db
        .update_item()
        .table_name("t")
        .set_key(Some(key("a", 2)))
        .update_expression("SET v = :v")
        .condition_expression("attribute_not_exists(pk)")
        .expression_attribute_values(":v", s("n"))
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    seen.push(format!(
        "update refused {:?} {:?}",
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&failed),
        match &failed {
            aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(e) =>
                sorted(e.item()),
            _ => Vec::new(),
        }
    ));
    let out = db
        .delete_item()
        .table_name("t")
        .set_key(Some(key("a", 3)))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .unwrap();
    seen.push(format!("delete {:?}", sorted(out.attributes())));
    let keys: Vec<_> = (1..40).map(|sk| key("a", sk)).collect();
    let out = db
        .batch_get_item()
        .request_items(
            "t",
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .unwrap(),
        )
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .unwrap();
    let mut got: Vec<_> = out
        .responses()
        .and_then(|r| r.get("t"))
        .map(|items| items.iter().map(|i| sorted(Some(i))).collect())
        .unwrap_or_default();
    got.sort_by_key(|i| format!("{i:?}"));
    seen.push(format!(
        "batch get {got:?} unprocessed {:?} {:?}",
        out.unprocessed_keys(),
        out.consumed_capacity()
    ));
    let writes: Vec<_> = (0..10)
        .map(|sk| {
            WriteRequest::builder()
                .put_request(
                    PutRequest::builder()
                        .set_item(Some(key("b", sk)))
                        .build()
                        .unwrap(),
                )
                .build()
        })
        .collect();
    let out = db
        .batch_write_item()
        .request_items("t", writes)
        .send()
        .await
        .unwrap();
    seen.push(format!("batch write {:?}", out.unprocessed_items()));
    let out = db
        .query()
        .table_name("t")
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", s("a"))
        .limit(5)
        .send()
        .await
        .unwrap();
    seen.push(format!(
        "query {:?} {} {} {:?}",
        out.items()
            .iter()
            .map(|i| sorted(Some(i)))
            .collect::<Vec<_>>(),
        out.count(),
        out.scanned_count(),
        sorted(out.last_evaluated_key())
    ));
    let out = db.scan().table_name("t").limit(7).send().await.unwrap();
    seen.push(format!(
        "scan {:?} {} {:?}",
        out.items()
            .iter()
            .map(|i| sorted(Some(i)))
            .collect::<Vec<_>>(),
        out.count(),
        sorted(out.last_evaluated_key())
    ));
    let out = db
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name("t")
                        .set_item(Some(key("c", 1)))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name("t")
                        .set_key(Some(key("a", 4)))
                        .update_expression("SET w = :w")
                        .expression_attribute_values(":w", n(5))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    seen.push(format!("transact write {:?}", out.consumed_capacity()));
    let refused = db
        .transact_write_items()
        .transact_items(
            TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name("t")
                        .set_key(Some(key("a", 4)))
                        .condition_expression("attribute_not_exists(pk)")
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    seen.push(format!(
        "transact refused {:?}",
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&refused)
    ));
    let out = db
        .transact_get_items()
        .transact_items(
            TransactGetItem::builder()
                .get(
                    Get::builder()
                        .table_name("t")
                        .set_key(Some(key("a", 1)))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .transact_items(
            TransactGetItem::builder()
                .get(
                    Get::builder()
                        .table_name("t")
                        .set_key(Some(key("zz", 1)))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    seen.push(format!(
        "transact get {:?}",
        out.responses()
            .iter()
            .map(|r| sorted(r.item()))
            .collect::<Vec<_>>()
    ));
    seen
}

/// An item's attributes in name order (a map's order is not the reply's).
fn sorted(item: Option<&HashMap<String, AttributeValue>>) -> Vec<(String, AttributeValue)> {
    let mut pairs: Vec<_> = item
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

#[tokio::test]
async fn item_replies_equal_motos_own() {
    let emulators = Emulators::start(&state_dir("moto-replies")).await.unwrap();
    let sdk = emulators.sdk_config().await;
    let (_plain_child, plain_endpoint) = plain_moto().await;
    let fast = Client::new(&sdk);
    let plain = Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(plain_endpoint)
            .build(),
    );
    let fast_seen = exercise(&fast).await;
    let plain_seen = exercise(&plain).await;
    assert_eq!(fast_seen.len(), plain_seen.len());
    for (f, p) in fast_seen.iter().zip(&plain_seen) {
        assert_eq!(f, p, "the twin's reply differs from moto's own");
    }
    // The comparison saw the data, not empty or failed replies on both sides: the binary
    // attribute read back, and the refused update returned the old item.
    assert!(fast_seen[2].contains("B(Blob"), "{fast_seen:#?}");
    let refused = fast_seen
        .iter()
        .find(|l| l.starts_with("update refused"))
        .unwrap();
    assert!(
        refused.contains("ConditionalCheckFailedException") && refused.contains("B(Blob"),
        "{refused}"
    );
    emulators.shutdown().await;
}
