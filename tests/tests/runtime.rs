//! The local event source mapping against the emulators, through the real AWS SDK: every
//! record exactly once and in order, restarts resume after the checkpoint, partial batch
//! failures redeliver from the failed record, poison records end in the on-failure queue.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType};
use riffle_aws::{AwsError, KinesisPublisher, OutRecord, PublishConfig};
use riffle_local::Emulators;
use riffle_runtime::checkpoint::{Checkpoint, CheckpointStore};
use riffle_runtime::{
    EsmConfig, HandlerError, KinesisEvent, KinesisEventRecord, KinesisEventResponse,
    KinesisHandler, run_local,
};
use riffle_tests::test_support::{create_table, state_dir, wait_active};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(60);
const FUNCTION: &str = "test-fn";
const TABLE: &str = "checkpoints";

struct Env {
    emulators: Emulators,
    sdk: aws_config::SdkConfig,
    kinesis: aws_sdk_kinesis::Client,
}

impl Env {
    async fn start(name: &str) -> Env {
        let emulators = Emulators::start(&state_dir(&format!("runtime-{name}")))
            .await
            .unwrap();
        let sdk = emulators.sdk_config().await;
        let kinesis = aws_sdk_kinesis::Client::new(&sdk);
        create_table(
            &aws_sdk_dynamodb::Client::new(&sdk),
            TABLE,
            &[("pk", ScalarAttributeType::S, KeyType::Hash)],
        )
        .await;
        Env {
            emulators,
            sdk,
            kinesis,
        }
    }

    async fn stream(&self, name: &str, shards: i32) {
        self.kinesis
            .create_stream()
            .stream_name(name)
            .shard_count(shards)
            .send()
            .await
            .unwrap();
        wait_active(&self.kinesis, name, DEADLINE).await;
    }

    /// Puts `key:index` records through the publisher, keys cycling over `keys`.
    async fn put(&self, stream: &str, range: std::ops::Range<usize>, keys: usize) {
        let publisher = KinesisPublisher::new(self.kinesis.clone(), PublishConfig::default());
        let records: Vec<OutRecord> = range
            .map(|i| OutRecord {
                partition_key: format!("k{}", i % keys),
                data: format!("k{}:{i}", i % keys).into_bytes(),
            })
            .collect();
        let n = records.len();
        let outcome = publisher.put_all(stream, records).await.unwrap();
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        assert_eq!(outcome.written, n);
    }

    fn checkpoints(&self, stream: &str) -> CheckpointStore {
        CheckpointStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            TABLE,
            FUNCTION,
            stream,
        )
    }
}

/// One record as a handler saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    shard: String,
    seq: String,
    data: String,
}

fn seen(r: &KinesisEventRecord) -> Seen {
    let event_id = r.event_id.clone().unwrap_or_default();
    Seen {
        shard: event_id.split(':').next().unwrap_or_default().to_owned(),
        seq: r.kinesis.sequence_number.clone(),
        data: String::from_utf8(r.kinesis.data.0.clone()).unwrap(),
    }
}

/// Records every invocation; fails as told.
#[derive(Default)]
struct Recorder {
    /// Every invocation's records, in invocation order.
    invocations: Mutex<Vec<Vec<Seen>>>,
    /// Records handled successfully, in order.
    done: Mutex<Vec<Seen>>,
    /// Data that fails the whole batch, every time.
    poison: Option<String>,
    /// Data reported as a batch item failure the first time it is seen.
    fail_once: Option<String>,
    failed_already: Mutex<bool>,
}

impl KinesisHandler for Recorder {
    async fn handle(&self, event: KinesisEvent) -> Result<KinesisEventResponse, HandlerError> {
        let records: Vec<Seen> = event.records.iter().map(seen).collect();
        self.invocations.lock().unwrap().push(records.clone());
        if let Some(poison) = &self.poison
            && records.iter().any(|r| &r.data == poison)
        {
            return Err("poison record".into());
        }
        let mut response = KinesisEventResponse::default();
        let mut ok = records.clone();
        if let Some(target) = &self.fail_once
            && let Some(pos) = records.iter().position(|r| &r.data == target)
        {
            let mut failed = self.failed_already.lock().unwrap();
            if !*failed {
                *failed = true;
                response.add_failure(records[pos].seq.clone());
                ok.truncate(pos);
            }
        }
        self.done.lock().unwrap().extend(ok);
        Ok(response)
    }
}

impl Recorder {
    fn done(&self) -> Vec<Seen> {
        self.done.lock().unwrap().clone()
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), riffle_runtime::RuntimeError>>,
}

fn start(env: &Env, handler: Arc<Recorder>, config: EsmConfig) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let sdk = env.sdk.clone();
    let task = tokio::spawn(async move {
        run_local(handler, config, &sdk, async move {
            let _ = stopped.await;
        })
        .await
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("runtime did not stop")
            .unwrap()
            .unwrap();
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(stream: &str) -> EsmConfig {
    EsmConfig::new(stream, FUNCTION, TABLE)
}

/// Sequence numbers are decimal strings of up to 128 digits (kinesalite's have 56), too big for
/// any integer type: order them by length, then digit by digit.
fn seq_key(seq: &str) -> (usize, &str) {
    (seq.len(), seq)
}

fn data_of(records: &[Seen]) -> Vec<String> {
    records.iter().map(|r| r.data.clone()).collect()
}

#[tokio::test]
async fn every_record_once_in_order_per_shard_and_checkpointed() {
    let env = Env::start("once").await;
    env.stream("raw", 2).await;
    env.put("raw", 0..300, 17).await;

    // The publisher's per-record limits, on the way.
    let publisher = KinesisPublisher::new(env.kinesis.clone(), PublishConfig::default());
    let outcome = publisher
        .put_all(
            "raw",
            vec![
                OutRecord {
                    partition_key: "big".into(),
                    data: vec![0; riffle_aws::kinesis::RECORD_MAX_BYTES + 1],
                },
                OutRecord {
                    partition_key: String::new(),
                    data: b"x".to_vec(),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(outcome.written, 0);
    assert!(matches!(outcome.failed[0].error, AwsError::TooLarge { .. }));
    assert!(matches!(
        outcome.failed[1].error,
        AwsError::InvalidPartitionKey { .. }
    ));

    let recorder = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.batch_size = 40;
    let running = start(&env, recorder.clone(), cfg);
    wait_for("300 records", || recorder.done().len() >= 300).await;
    running.stop().await;

    let done = recorder.done();
    assert_eq!(done.len(), 300, "no record twice");
    let unique: HashSet<String> = data_of(&done).into_iter().collect();
    let expected: HashSet<String> = (0..300).map(|i| format!("k{}:{i}", i % 17)).collect();
    assert_eq!(unique, expected);
    for invocation in recorder.invocations.lock().unwrap().iter() {
        assert!(invocation.len() <= 40, "batch size respected");
    }
    // Per shard, sequence numbers strictly grow; per key, the put order is kept.
    let mut by_shard: HashMap<String, Vec<&Seen>> = HashMap::new();
    for s in &done {
        by_shard.entry(s.shard.clone()).or_default().push(s);
    }
    assert_eq!(by_shard.len(), 2, "both shards read");
    let checkpoints = env.checkpoints("raw");
    for (shard, records) in &by_shard {
        for w in records.windows(2) {
            assert!(
                seq_key(&w[0].seq) < seq_key(&w[1].seq),
                "order within {shard}"
            );
        }
        let last = records.last().unwrap().seq.clone();
        assert_eq!(
            checkpoints.load(shard).await.unwrap(),
            Checkpoint::After(last)
        );
    }
    let mut last_index: HashMap<String, usize> = HashMap::new();
    for s in &done {
        let (key, i) = s.data.split_once(':').unwrap();
        let i: usize = i.parse().unwrap();
        if let Some(prev) = last_index.insert(key.to_owned(), i) {
            assert!(prev < i, "order of key {key}");
        }
    }
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn restart_resumes_after_the_checkpoint() {
    let env = Env::start("restart").await;
    env.stream("raw", 1).await;
    env.put("raw", 0..100, 5).await;

    let first = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.batch_size = 25;
    let running = start(&env, first.clone(), cfg.clone());
    wait_for("first 100", || first.done().len() >= 100).await;
    running.stop().await;
    assert_eq!(first.done().len(), 100);

    env.put("raw", 100..150, 5).await;
    let second = Arc::new(Recorder::default());
    let running = start(&env, second.clone(), cfg);
    wait_for("next 50", || second.done().len() >= 50).await;
    running.stop().await;
    let expected: Vec<String> = (100..150).map(|i| format!("k{}:{i}", i % 5)).collect();
    let mut got = data_of(&second.done());
    got.sort_by_key(|d| d.split_once(':').unwrap().1.parse::<usize>().unwrap());
    assert_eq!(got, expected, "only records after the checkpoint");
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn partial_failure_redelivers_from_the_failed_record() {
    let env = Env::start("partial").await;
    env.stream("raw", 1).await;
    env.put("raw", 0..20, 1).await;

    let recorder = Arc::new(Recorder {
        fail_once: Some("k0:5".into()),
        ..Recorder::default()
    });
    let mut cfg = config("raw");
    cfg.batch_size = 100;
    cfg.report_batch_item_failures = true;
    let running = start(&env, recorder.clone(), cfg);
    wait_for("20 records", || recorder.done().len() >= 20).await;
    running.stop().await;

    let expected: Vec<String> = (0..20).map(|i| format!("k0:{i}")).collect();
    assert_eq!(data_of(&recorder.done()), expected, "each once, in order");
    let invocations = recorder.invocations.lock().unwrap().clone();
    let delivered: Vec<String> = invocations.iter().flat_map(|i| data_of(i)).collect();
    for i in 0..5 {
        let d = format!("k0:{i}");
        assert_eq!(
            delivered.iter().filter(|x| **x == d).count(),
            1,
            "{d} not redelivered"
        );
    }
    let retry = invocations
        .iter()
        .position(|inv| inv.iter().any(|r| r.data == "k0:5"))
        .unwrap();
    let redelivery = invocations[retry + 1..]
        .iter()
        .find(|inv| inv.iter().any(|r| r.data == "k0:5"))
        .expect("k0:5 delivered again");
    assert_eq!(
        redelivery[0].data, "k0:5",
        "retry starts at the failed record"
    );
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn poison_record_goes_to_the_on_failure_queue() {
    let env = Env::start("poison").await;
    env.stream("raw", 1).await;
    let sqs = aws_sdk_sqs::Client::new(&env.sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name("test-fn-dlq")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    env.put("raw", 0..30, 3).await;

    let poison = "k2:17".to_owned();
    let recorder = Arc::new(Recorder {
        poison: Some(poison.clone()),
        ..Recorder::default()
    });
    let mut cfg = config("raw");
    cfg.batch_size = 30;
    cfg.bisect_batch_on_function_error = true;
    cfg.maximum_retry_attempts = 2;
    cfg.on_failure_queue_url = Some(queue_url.clone());
    let running = start(&env, recorder.clone(), cfg);
    wait_for("29 good records", || recorder.done().len() >= 29).await;

    let deadline = tokio::time::Instant::now() + DEADLINE;
    let message = loop {
        let out = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        if let Some(m) = out.messages().first() {
            break serde_json::from_str::<serde_json::Value>(m.body().unwrap()).unwrap();
        }
        assert!(tokio::time::Instant::now() < deadline, "no failure message");
    };
    running.stop().await;

    let done = data_of(&recorder.done());
    assert_eq!(done.len(), 29);
    assert!(!done.contains(&poison));
    let info = &message["KinesisBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert_eq!(
        message["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(message["requestContext"]["approximateInvokeCount"], 3);
    assert!(info["streamArn"].as_str().unwrap().ends_with(":stream/raw"));
    let records: Vec<KinesisEventRecord> =
        serde_json::from_value(message["records"].clone()).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kinesis.data.0, poison.as_bytes());
    assert_eq!(
        info["startSequenceNumber"].as_str().unwrap(),
        records[0].kinesis.sequence_number
    );
    // The poison record was tried 1 + 2 times on its own.
    let alone = recorder
        .invocations
        .lock()
        .unwrap()
        .iter()
        .filter(|inv| inv.len() == 1 && inv[0].data == poison)
        .count();
    assert_eq!(alone, 3);
    // Past the poison record: the checkpoint is the last record of the shard.
    let last = recorder
        .done()
        .iter()
        .chain(&[crate::seen(&records[0])])
        .map(|r| r.seq.clone())
        .max_by(|a, b| seq_key(a).cmp(&seq_key(b)))
        .unwrap();
    assert_eq!(
        env.checkpoints("raw")
            .load("shardId-000000000000")
            .await
            .unwrap(),
        Checkpoint::After(last)
    );
    env.emulators.shutdown().await;
}
