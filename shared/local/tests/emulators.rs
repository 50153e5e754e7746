//! The emulators through the real AWS SDK: every service Riffle uses answers, Kinesis data
//! survives a kinesalite restart, and shutdown leaves no process behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use riffle_local::Emulators;

/// A fresh state dir per test run under the git-ignored `.riffle/`.
pub fn state_dir(name: &str) -> PathBuf {
    let dir = riffle_local::project_root()
        .unwrap()
        .join(".riffle/test-state")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn wait_active(kinesis: &aws_sdk_kinesis::Client, stream: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream never ACTIVE"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_all(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Vec<u8>> {
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    for shard in shards.shards() {
        let it = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let got = kinesis
            .get_records()
            .shard_iterator(it.shard_iterator().unwrap())
            .send()
            .await
            .unwrap();
        out.extend(got.records().iter().map(|r| r.data().as_ref().to_vec()));
    }
    out
}

/// Running, not merely in /proc: a killed child nobody has reaped yet is a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(Path::new(&format!("/proc/{pid}/status")))
        .map(|status| !status.contains("State:\tZ"))
        .unwrap_or(false)
}

#[tokio::test]
async fn emulators_serve_every_service_and_keep_kinesis_data_across_restart() {
    let dir = state_dir("emulators");
    let mut emulators = Emulators::start(&dir).await.unwrap();
    assert!(
        emulators
            .kinesis_endpoint()
            .starts_with("http://127.0.0.1:")
    );
    assert!(emulators.moto_endpoint().starts_with("http://127.0.0.1:"));
    let env = emulators.env();
    assert!(env.contains(&(
        "AWS_ENDPOINT_URL_KINESIS".to_owned(),
        emulators.kinesis_endpoint().to_owned()
    )));
    let sdk = emulators.sdk_config().await;

    // Kinesis (kinesalite, through the per-service endpoint).
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    kinesis
        .create_stream()
        .stream_name("probe")
        .shard_count(2)
        .send()
        .await
        .unwrap();
    wait_active(&kinesis, "probe").await;
    kinesis
        .put_record()
        .stream_name("probe")
        .partition_key("k")
        .data(Blob::new(b"hello".to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(read_all(&kinesis, "probe").await, vec![b"hello".to_vec()]);
    // The stream must live in kinesalite, not in moto (which also speaks Kinesis): a client
    // pointed at kinesalite alone sees it, one pointed at moto alone does not.
    let only = |endpoint: &str| {
        aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(&sdk)
                .endpoint_url(endpoint)
                .build(),
        )
    };
    let names = |client: aws_sdk_kinesis::Client| async move {
        client
            .list_streams()
            .send()
            .await
            .map(|o| o.stream_names().to_vec())
            .unwrap_or_default()
    };
    assert_eq!(
        names(only(emulators.kinesis_endpoint())).await,
        vec!["probe".to_owned()]
    );
    assert!(names(only(emulators.moto_endpoint())).await.is_empty());

    // DynamoDB (moto).
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    dynamo
        .create_table()
        .table_name("probe")
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
    let tables = dynamo.list_tables().send().await.unwrap();
    assert_eq!(tables.table_names(), ["probe"]);

    // S3 (moto, path style).
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket("probe").send().await.unwrap();
    s3.put_object()
        .bucket("probe")
        .key("a/b")
        .body(b"x".to_vec().into())
        .send()
        .await
        .unwrap();
    let listed = s3.list_objects_v2().bucket("probe").send().await.unwrap();
    assert_eq!(listed.contents().len(), 1);

    // SQS (moto).
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs
        .create_queue()
        .queue_name("probe")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    sqs.send_message()
        .queue_url(&url)
        .message_body("m")
        .send()
        .await
        .unwrap();
    let got = sqs.receive_message().queue_url(&url).send().await.unwrap();
    assert_eq!(got.messages().len(), 1);

    // A kinesalite restart keeps the port and the acknowledged record.
    let before = emulators.kinesis_endpoint().to_owned();
    let (old_pid, _) = emulators.pids();
    emulators.restart_kinesis().await.unwrap();
    assert_eq!(emulators.kinesis_endpoint(), before);
    assert_ne!(emulators.pids().0, old_pid);
    assert!(!alive(old_pid.unwrap()));
    assert_eq!(read_all(&kinesis, "probe").await, vec![b"hello".to_vec()]);

    let (k, m) = emulators.pids();
    let (k, m) = (k.unwrap(), m.unwrap());
    assert!(alive(k) && alive(m));
    emulators.shutdown().await;
    assert!(!alive(k), "kinesalite {k} outlived shutdown");
    assert!(!alive(m), "moto {m} outlived shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn dropping_emulators_kills_the_children() {
    let dir = state_dir("drop");
    let emulators = Emulators::start(&dir).await.unwrap();
    let (k, m) = emulators.pids();
    let (k, m) = (k.unwrap(), m.unwrap());
    drop(emulators);
    // Drop only sends the kill; the children die a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (alive(k) || alive(m)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(k), "kinesalite {k} still running after drop");
    assert!(!alive(m), "moto {m} still running after drop");
    let _ = std::fs::remove_dir_all(&dir);
}
