//! The local event source mapping against the emulators, through the real AWS SDK, one
//! test per behaviour of Lambda's Kinesis event source mapping: every record exactly once
//! and in order, batch size, batching window, the 6 MB payload cut, starting positions,
//! restarts resuming after the checkpoint, partial batch failures, bisection, retry
//! budgets, record age, the on-failure queue, parallelization factor lanes, shard leases
//! shared and taken over by instances, and resharding (split, merge).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType};
use riffle_aws::{AwsError, KinesisPublisher, OutRecord, PublishConfig};
use riffle_local::Emulators;
use riffle_runtime::checkpoint::{Checkpoint, CheckpointStore};
use riffle_runtime::lease::{LeaseStore, LeaseView};
use riffle_runtime::{
    EsmConfig, HandlerError, KinesisEvent, KinesisEventRecord, KinesisEventResponse,
    KinesisHandler, LocalOptions, StartingPosition, run_local_with,
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
        self.checkpoints_of(FUNCTION, stream)
    }

    fn checkpoints_of(&self, function: &str, stream: &str) -> CheckpointStore {
        CheckpointStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            TABLE,
            function,
            stream,
        )
    }

    /// The lease table of [`FUNCTION`] on `stream`, read as an onlooker.
    async fn leases(&self, stream: &str) -> LeaseView {
        LeaseStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            TABLE,
            FUNCTION,
            stream,
            "onlooker",
            Duration::from_secs(1),
        )
        .read(riffle_runtime::lease::now_ms())
        .await
        .unwrap()
    }

    async fn queue(&self, name: &str) -> (aws_sdk_sqs::Client, String) {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let url = riffle_tests::test_support::create_queue(&sqs, name).await;
        (sqs, url)
    }

    /// The shard ids of `stream`, in listing order.
    async fn shard_ids(&self, stream: &str) -> Vec<String> {
        self.kinesis
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .unwrap()
            .shards()
            .iter()
            .map(|s| s.shard_id().to_owned())
            .collect()
    }
}

/// Reads on-failure messages off `queue_url` until they name `want` records or the deadline.
async fn failure_messages(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    want: usize,
) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut out: Vec<serde_json::Value> = Vec::new();
    let count = |out: &[serde_json::Value]| {
        out.iter()
            .map(|m| m["KinesisBatchInfo"]["batchSize"].as_u64().unwrap_or(0) as usize)
            .sum::<usize>()
    };
    while count(&out) < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {want} records on the on-failure queue"
        );
        let got = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            out.push(serde_json::from_str(m.body().unwrap()).unwrap());
        }
    }
    out
}

/// The records an on-failure message names, read back from the stream by position (the
/// message holds positions only, as Lambda's does).
async fn given_up(env: &Env, message: &serde_json::Value) -> Vec<KinesisEventRecord> {
    let info = &message["KinesisBatchInfo"];
    let text = |name: &str| info[name].as_str().unwrap().to_owned();
    let stream = riffle_aws::on_failure::stream_name(info["streamArn"].as_str().unwrap());
    let shard = text("shardId");
    let records = riffle_aws::stream_read::read_range(
        &env.kinesis,
        stream,
        &shard,
        &text("startSequenceNumber"),
        &text("endSequenceNumber"),
    )
    .await
    .unwrap();
    assert_eq!(records.len() as u64, info["batchSize"].as_u64().unwrap());
    let source = riffle_runtime::Source::of_shard(&shard);
    records
        .iter()
        .map(|r| {
            source.event_record(
                r.data().as_ref().to_vec(),
                r.partition_key(),
                r.sequence_number(),
                chrono::Utc::now(),
            )
        })
        .collect()
}

/// One record as a handler saw it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    shard: String,
    seq: String,
    data: String,
}

fn seen(r: &KinesisEventRecord) -> Seen {
    Seen {
        shard: r.source.shard_id.clone(),
        seq: r.kinesis.sequence_number.clone(),
        data: String::from_utf8(r.kinesis.data.clone()).unwrap(),
    }
}

/// One invocation: its shard, when it ran, how big its event was.
#[derive(Debug, Clone)]
struct Span {
    shard: String,
    started: Instant,
    ended: Instant,
    records: usize,
    payload_bytes: usize,
}

/// Records every invocation; fails as told.
#[derive(Default)]
struct Recorder {
    /// Every invocation's records, in invocation order.
    invocations: Mutex<Vec<Vec<Seen>>>,
    /// Every invocation's shard and time span, in order of ending.
    spans: Mutex<Vec<Span>>,
    /// Records handled successfully, in order.
    done: Mutex<Vec<Seen>>,
    /// Data that fails the whole batch, every time.
    poison: Option<String>,
    /// Data reported as a batch item failure the first time it is seen.
    fail_once: Option<String>,
    failed_already: Mutex<bool>,
    /// Data reported as a batch item failure every time.
    fail_always: Option<String>,
    /// Data that fails the whole batch its first N times.
    fail_times: Option<(String, usize)>,
    failures_so_far: AtomicUsize,
    /// How long each invocation takes, so batches can overlap.
    delay: Option<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl KinesisHandler for Recorder {
    async fn handle(&self, event: KinesisEvent) -> Result<KinesisEventResponse, HandlerError> {
        let started = Instant::now();
        let payload_bytes = serde_json::to_vec(&event).unwrap().len();
        let records: Vec<Seen> = event.records.iter().map(seen).collect();
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(delay) = self.delay {
            // The handler's own work, not a wait for the test's sake.
            tokio::time::sleep(delay).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.invocations.lock().unwrap().push(records.clone());
        self.spans.lock().unwrap().push(Span {
            shard: records.first().map(|r| r.shard.clone()).unwrap_or_default(),
            started,
            ended: Instant::now(),
            records: records.len(),
            payload_bytes,
        });
        if let Some(poison) = &self.poison
            && records.iter().any(|r| &r.data == poison)
        {
            return Err("poison record".into());
        }
        if let Some((target, times)) = &self.fail_times
            && records.iter().any(|r| &r.data == target)
            && self.failures_so_far.fetch_add(1, Ordering::SeqCst) < *times
        {
            return Err("failing for a while".into());
        }
        let mut response = KinesisEventResponse::default();
        if let Some(target) = &self.fail_always
            && let Some(pos) = records.iter().position(|r| &r.data == target)
        {
            response.add_failure(records[pos].seq.clone());
            self.done
                .lock()
                .unwrap()
                .extend(records[..pos].iter().cloned());
            return Ok(response);
        }
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
    start_with(env, handler, config, LocalOptions::default())
}

fn start_with(
    env: &Env,
    handler: Arc<Recorder>,
    config: EsmConfig,
    options: LocalOptions,
) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    let sdk = env.sdk.clone();
    let task = tokio::spawn(async move {
        run_local_with(
            handler,
            config,
            &sdk,
            async move {
                let _ = stopped.await;
            },
            options,
        )
        .await
    });
    Running { stop, task }
}

/// An instance with its own lease owner id.
fn instance(id: &str) -> LocalOptions {
    LocalOptions {
        instance_id: Some(id.to_owned()),
        ..LocalOptions::default()
    }
}

impl Running {
    /// Dies without a word: no batch finished, no lease released.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

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
    let mut c = EsmConfig::new(stream, FUNCTION, TABLE);
    // Short leases, so a takeover happens within a test's patience.
    c.lease_duration_ms = 3_000;
    c.lease_renewal_ms = 300;
    c
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
    let sizes: Vec<usize> = recorder
        .invocations
        .lock()
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect();
    assert!(sizes.iter().all(|n| *n <= 40), "batch size respected");
    assert!(
        sizes.contains(&40),
        "records waiting fill a batch: {sizes:?}"
    );
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
    assert!(
        message.get("records").is_none(),
        "positions only, as Lambda sends"
    );
    let records = given_up(&env, &message).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kinesis.data, poison.as_bytes());
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
        .chain(&[crate::runtime::seen(&records[0])])
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

/// The put index of a record's data `k<key>:<index>`.
fn index_of(data: &str) -> usize {
    data.split_once(':').unwrap().1.parse().unwrap()
}

/// Each key's records were handled in the order they were put.
fn assert_key_order(done: &[Seen]) {
    let mut last_index: HashMap<String, usize> = HashMap::new();
    for s in done {
        let (key, _) = s.data.split_once(':').unwrap();
        let i = index_of(&s.data);
        if let Some(prev) = last_index.insert(key.to_owned(), i) {
            assert!(prev < i, "key {key}: {i} handled after {prev}");
        }
    }
}

/// Every record of `range` (keys cycling over `keys`) handled exactly once.
fn assert_exactly_once(done: &[Seen], range: std::ops::Range<usize>, keys: usize) {
    let data = data_of(done);
    let unique: HashSet<&String> = data.iter().collect();
    assert_eq!(unique.len(), data.len(), "no record twice");
    let expected: HashSet<String> = range.map(|i| format!("k{}:{i}", i % keys)).collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<HashSet<_>>(),
        expected
    );
}

async fn wait_async<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

use std::future::Future;

#[tokio::test]
async fn parallelization_factor_runs_lanes_concurrently_in_key_order() {
    let env = Env::start("lanes").await;
    env.stream("raw", 1).await;
    env.put("raw", 0..400, 40).await;

    let recorder = Arc::new(Recorder {
        delay: Some(Duration::from_millis(30)),
        ..Recorder::default()
    });
    let mut cfg = config("raw");
    cfg.batch_size = 10;
    cfg.parallelization_factor = 4;
    let running = start(&env, recorder.clone(), cfg);
    wait_for("400 records", || recorder.done().len() >= 400).await;
    running.stop().await;

    let done = recorder.done();
    assert_exactly_once(&done, 0..400, 40);
    assert_key_order(&done);
    let most = recorder.max_in_flight.load(Ordering::SeqCst);
    assert!(most > 1, "batches of one shard ran concurrently");
    assert!(most <= 4, "at most one batch per lane: {most}");
    // Each batch holds the keys of one lane only.
    for invocation in recorder.invocations.lock().unwrap().iter() {
        let lanes: HashSet<usize> = invocation
            .iter()
            .map(|r| riffle_runtime::local::lane_of(r.data.split_once(':').unwrap().0, 4))
            .collect();
        assert_eq!(lanes.len(), 1, "one lane per batch");
    }
    let last = done
        .iter()
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

#[tokio::test]
async fn a_failing_lane_holds_only_itself() {
    let env = Env::start("lane-fail").await;
    env.stream("raw", 1).await;
    env.put("raw", 0..200, 20).await;

    // The batch with k3:3 fails its first 4 tries; the other lanes go on meanwhile.
    let recorder = Arc::new(Recorder {
        fail_times: Some(("k3:3".to_owned(), 4)),
        delay: Some(Duration::from_millis(30)),
        ..Recorder::default()
    });
    let mut cfg = config("raw");
    cfg.batch_size = 5;
    cfg.parallelization_factor = 4;
    let running = start(&env, recorder.clone(), cfg);
    wait_for("200 records", || recorder.done().len() >= 200).await;
    running.stop().await;

    let done = recorder.done();
    assert_exactly_once(&done, 0..200, 20);
    assert_key_order(&done);
    let invocations = recorder.invocations.lock().unwrap().clone();
    let with_target: Vec<usize> = invocations
        .iter()
        .enumerate()
        .filter(|(_, inv)| inv.iter().any(|r| r.data == "k3:3"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(with_target.len(), 5, "4 failures, then success");
    let (first, last) = (with_target[0], with_target[4]);
    let failing_lane = riffle_runtime::local::lane_of("k3", 4);
    let lane =
        |inv: &Vec<Seen>| riffle_runtime::local::lane_of(inv[0].data.split_once(':').unwrap().0, 4);
    assert!(
        invocations[first..last]
            .iter()
            .all(|inv| lane(inv) != failing_lane || inv.iter().any(|r| r.data == "k3:3")),
        "the failing lane took nothing else while retrying"
    );
    let others = invocations[first..last]
        .iter()
        .filter(|inv| lane(inv) != failing_lane)
        .count();
    assert!(
        others >= 3,
        "other lanes went on meanwhile ({others} batches)"
    );
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn two_instances_share_the_shards_never_at_once() {
    let env = Env::start("share").await;
    env.stream("raw", 4).await;
    let shards = env.shard_ids("raw").await;
    env.put("raw", 0..200, 40).await;

    let a = Arc::new(Recorder::default());
    let b = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.batch_size = 10;
    let run_a = start_with(&env, a.clone(), cfg.clone(), instance("a"));
    let run_b = start_with(&env, b.clone(), cfg, instance("b"));
    // The fair share: two shards each.
    wait_async("two leases each", || async {
        let view = env.leases("raw").await;
        let owners: Vec<Option<String>> = shards
            .iter()
            .map(|s| view.shards.get(s).and_then(|r| r.owner.clone()))
            .collect();
        ["a", "b"]
            .iter()
            .all(|who| owners.iter().filter(|o| o.as_deref() == Some(*who)).count() == 2)
    })
    .await;
    env.put("raw", 200..400, 40).await;
    wait_for("400 records", || a.done().len() + b.done().len() >= 400).await;
    run_a.stop().await;
    run_b.stop().await;

    let mut all = a.done();
    all.extend(b.done());
    assert_exactly_once(&all, 0..400, 40);
    assert_key_order(&a.done());
    assert_key_order(&b.done());
    let covered: HashSet<String> = all.iter().map(|r| r.shard.clone()).collect();
    assert_eq!(covered.len(), 4, "together they read every shard");
    assert!(!a.done().is_empty() && !b.done().is_empty(), "both worked");
    // A shard is read by one instance at a time.
    let spans_a = a.spans.lock().unwrap().clone();
    let spans_b = b.spans.lock().unwrap().clone();
    for x in &spans_a {
        for y in spans_b.iter().filter(|y| y.shard == x.shard) {
            assert!(
                x.ended <= y.started || y.ended <= x.started,
                "{} read by both at once",
                x.shard
            );
        }
    }
    // Stopped instances hand their leases back.
    let view = env.leases("raw").await;
    assert!(view.live.is_empty(), "heartbeats removed");
    for s in &shards {
        assert_eq!(view.shards[s].owner, None, "{s} released");
    }
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn a_dead_instances_shards_are_taken_over_from_the_checkpoint() {
    let env = Env::start("takeover").await;
    env.stream("raw", 4).await;
    let shards = env.shard_ids("raw").await;

    let a = Arc::new(Recorder::default());
    let b = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.batch_size = 10;
    let run_a = start_with(&env, a.clone(), cfg.clone(), instance("a"));
    let run_b = start_with(&env, b.clone(), cfg.clone(), instance("b"));
    let owners = |view: &LeaseView, who: &str| -> Vec<String> {
        shards
            .iter()
            .filter(|s| view.shards.get(*s).and_then(|r| r.owner.as_deref()) == Some(who))
            .cloned()
            .collect()
    };
    wait_async("two leases each", || async {
        let view = env.leases("raw").await;
        owners(&view, "a").len() == 2 && owners(&view, "b").len() == 2
    })
    .await;
    env.put("raw", 0..200, 40).await;
    wait_for("200 records", || a.done().len() + b.done().len() >= 200).await;
    let a_shards = owners(&env.leases("raw").await, "a");
    run_a.kill().await;
    let killed = Instant::now();
    let mut checkpoints = HashMap::new();
    for s in &a_shards {
        checkpoints.insert(s.clone(), env.checkpoints("raw").load(s).await.unwrap());
    }

    env.put("raw", 200..400, 40).await;
    wait_async("b holds every lease", || async {
        owners(&env.leases("raw").await, "b").len() == 4
    })
    .await;
    let expected: HashSet<String> = (0..400).map(|i| format!("k{}:{i}", i % 40)).collect();
    wait_for("every record", || {
        let mut all: HashSet<String> = data_of(&a.done()).into_iter().collect();
        all.extend(data_of(&b.done()));
        all == expected
    })
    .await;
    run_b.stop().await;

    for s in &a_shards {
        let Checkpoint::After(cp) = &checkpoints[s] else {
            panic!("{s} had a checkpoint");
        };
        let b_done = b.done();
        let of_shard: Vec<&Seen> = b_done.iter().filter(|r| &r.shard == s).collect();
        assert!(!of_shard.is_empty(), "b read {s}");
        assert!(
            of_shard.iter().all(|r| seq_key(&r.seq) > seq_key(cp)),
            "b resumed {s} after a's checkpoint"
        );
        let first = b
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|x| &x.shard == s)
            .map(|x| x.started)
            .min()
            .unwrap();
        assert!(
            first >= killed + Duration::from_millis(cfg.lease_duration_ms - 1_500),
            "taken over only once the lease expired"
        );
    }
    assert_key_order(&b.done());
    env.emulators.shutdown().await;
}

/// Checks a resharded run: every record once, each key in put order across parents and
/// children, parents checkpointed `SHARD_END`, and no child read before its parents ended.
async fn assert_children_after_parents(
    env: &Env,
    recorder: &Recorder,
    parents: &[String],
    children: &[String],
    records: usize,
    keys: usize,
) {
    let done = recorder.done();
    assert_exactly_once(&done, 0..records, keys);
    assert_key_order(&done);
    let spans = recorder.spans.lock().unwrap().clone();
    let parents_ended = spans
        .iter()
        .filter(|s| parents.contains(&s.shard))
        .map(|s| s.ended)
        .max()
        .expect("parents read");
    let children_started = spans
        .iter()
        .filter(|s| children.contains(&s.shard))
        .map(|s| s.started)
        .min()
        .expect("children read");
    assert!(
        parents_ended <= children_started,
        "a child was read before its parents were done"
    );
    let checkpoints = env.checkpoints("raw");
    for p in parents {
        assert_eq!(
            checkpoints.load(p).await.unwrap(),
            Checkpoint::ShardEnd,
            "{p}"
        );
    }
    for c in children {
        assert!(
            matches!(checkpoints.load(c).await.unwrap(), Checkpoint::After(_)),
            "{c} checkpointed"
        );
    }
}

#[tokio::test]
async fn split_shard_children_are_read_after_the_parent() {
    let env = Env::start("split").await;
    env.stream("raw", 1).await;
    let recorder = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.batch_size = 10;
    cfg.parallelization_factor = 2;
    let running = start(&env, recorder.clone(), cfg);
    env.put("raw", 0..150, 10).await;
    env.kinesis
        .split_shard()
        .stream_name("raw")
        .shard_to_split("shardId-000000000000")
        // Half of the 128-bit hash key space.
        .new_starting_hash_key("170141183460469231731687303715884105728")
        .send()
        .await
        .unwrap();
    wait_active(&env.kinesis, "raw", DEADLINE).await;
    env.put("raw", 150..300, 10).await;
    wait_for("300 records", || recorder.done().len() >= 300).await;
    running.stop().await;

    let shards = env.shard_ids("raw").await;
    assert_eq!(shards.len(), 3);
    let parents = vec![shards[0].clone()];
    let children = shards[1..].to_vec();
    let used: HashSet<String> = recorder.done().iter().map(|r| r.shard.clone()).collect();
    assert!(
        children.iter().all(|c| used.contains(c)),
        "both children read"
    );
    assert_children_after_parents(&env, &recorder, &parents, &children, 300, 10).await;
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn merged_shard_is_read_after_both_parents() {
    let env = Env::start("merge").await;
    env.stream("raw", 2).await;
    let recorder = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.batch_size = 10;
    let running = start(&env, recorder.clone(), cfg);
    env.put("raw", 0..150, 10).await;
    env.kinesis
        .merge_shards()
        .stream_name("raw")
        .shard_to_merge("shardId-000000000000")
        .adjacent_shard_to_merge("shardId-000000000001")
        .send()
        .await
        .unwrap();
    wait_active(&env.kinesis, "raw", DEADLINE).await;
    env.put("raw", 150..300, 10).await;
    wait_for("300 records", || recorder.done().len() >= 300).await;
    running.stop().await;

    let shards = env.shard_ids("raw").await;
    assert_eq!(shards.len(), 3);
    assert_children_after_parents(&env, &recorder, &shards[..2], &shards[2..], 300, 10).await;
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn batching_window_waits_for_records_unless_the_batch_is_full() {
    let env = Env::start("window").await;
    env.stream("raw", 1).await;
    let recorder = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.batch_size = 10;
    cfg.maximum_batching_window_secs = 2;
    let running = start(&env, recorder.clone(), cfg);

    let put = Instant::now();
    env.put("raw", 0..3, 1).await;
    wait_for("3 records", || recorder.done().len() >= 3).await;
    let spans = recorder.spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "one batch for the window");
    assert_eq!(spans[0].records, 3);
    assert!(
        spans[0].started >= put + Duration::from_secs(2),
        "the batch waited for the window"
    );

    let put = Instant::now();
    env.put("raw", 3..13, 1).await;
    wait_for("13 records", || recorder.done().len() >= 13).await;
    running.stop().await;
    let spans = recorder.spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1].records, 10);
    assert!(
        spans[1].started < put + Duration::from_secs(2),
        "a full batch does not wait for the window"
    );
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn starting_positions_trim_horizon_latest_and_at_timestamp() {
    let env = Env::start("positions").await;
    env.stream("raw", 1).await;
    env.put("raw", 0..10, 2).await;
    // Past every arrival time of the first records, strictly.
    let boundary = chrono::Utc::now();
    while chrono::Utc::now().timestamp_millis() <= boundary.timestamp_millis() + 1 {
        tokio::task::yield_now().await;
    }
    env.put("raw", 10..20, 2).await;

    let mapping = |function: &str, position: StartingPosition| {
        let mut c = config("raw");
        c.function_name = function.to_owned();
        c.starting_position = position;
        c
    };
    let trim = Arc::new(Recorder::default());
    let at = Arc::new(Recorder::default());
    let latest = Arc::new(Recorder::default());
    let mut at_cfg = mapping("at", StartingPosition::AtTimestamp);
    at_cfg.starting_position_timestamp = Some(boundary.timestamp_millis() as f64 / 1000.0);
    let runs = vec![
        start(
            &env,
            trim.clone(),
            mapping("trim", StartingPosition::TrimHorizon),
        ),
        start(&env, at.clone(), at_cfg),
        start(
            &env,
            latest.clone(),
            mapping("latest", StartingPosition::Latest),
        ),
    ];
    wait_for("trim horizon reads all", || trim.done().len() >= 20).await;
    wait_for("at timestamp reads the later half", || {
        at.done().len() >= 10
    })
    .await;
    // LATEST sees only what is put after it started reading: put until it sees something.
    let mut i = 20;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while latest.done().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "LATEST saw nothing");
        env.put("raw", i..i + 1, 2).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for run in runs {
        run.stop().await;
    }
    let firsts: Vec<usize> = [&trim, &at, &latest]
        .iter()
        .map(|r| r.done().iter().map(|s| index_of(&s.data)).min().unwrap())
        .collect();
    assert_eq!(firsts[0], 0, "TRIM_HORIZON starts at the oldest record");
    assert_eq!(
        firsts[1], 10,
        "AT_TIMESTAMP starts at the first record put after it"
    );
    assert_eq!(
        at.done().iter().filter(|s| index_of(&s.data) < 20).count(),
        10
    );
    assert!(firsts[2] >= 20, "LATEST skips what was there before");
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn retry_attempts_minus_one_retries_until_the_batch_succeeds() {
    let env = Env::start("retry-forever").await;
    env.stream("raw", 1).await;
    let (sqs, queue_url) = env.queue("test-fn-dlq").await;
    env.put("raw", 0..10, 2).await;

    let recorder = Arc::new(Recorder {
        fail_times: Some(("k1:5".to_owned(), 5)),
        ..Recorder::default()
    });
    let mut cfg = config("raw");
    cfg.batch_size = 10;
    cfg.maximum_retry_attempts = -1;
    cfg.on_failure_queue_url = Some(queue_url.clone());
    let running = start(&env, recorder.clone(), cfg);
    wait_for("10 records", || recorder.done().len() >= 10).await;
    running.stop().await;

    assert_exactly_once(&recorder.done(), 0..10, 2);
    let invocations = recorder.invocations.lock().unwrap().clone();
    assert_eq!(invocations.len(), 6, "5 failures, then success");
    assert!(
        invocations.iter().all(|inv| inv.len() == 10),
        "the whole batch retried"
    );
    let left = sqs
        .receive_message()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap();
    assert!(left.messages().is_empty(), "nothing given up on");
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn records_older_than_the_maximum_age_go_to_the_destination() {
    let env = Env::start("age").await;
    env.stream("raw", 1).await;
    let (sqs, queue_url) = env.queue("test-fn-dlq").await;
    env.put("raw", 0..5, 1).await;

    let recorder = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.maximum_record_age_secs = 60;
    cfg.on_failure_queue_url = Some(queue_url.clone());
    // Two minutes on: every record is past the 60 s limit when read.
    let options = LocalOptions {
        clock: Arc::new(|| chrono::Utc::now() + chrono::Duration::seconds(120)),
        ..LocalOptions::default()
    };
    let running = start_with(&env, recorder.clone(), cfg, options);
    let messages = failure_messages(&sqs, &queue_url, 5).await;
    let mut records: Vec<KinesisEventRecord> = Vec::new();
    for m in &messages {
        assert_eq!(m["requestContext"]["condition"], "RecordAgeExceeded");
        records.extend(given_up(&env, m).await);
    }
    let data: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.kinesis.data.clone()).unwrap())
        .collect();
    assert_eq!(data, (0..5).map(|i| format!("k0:{i}")).collect::<Vec<_>>());
    let last = records.last().unwrap().kinesis.sequence_number.clone();
    wait_async("checkpoint past the old records", || async {
        env.checkpoints("raw")
            .load("shardId-000000000000")
            .await
            .unwrap()
            == Checkpoint::After(last.clone())
    })
    .await;
    running.stop().await;
    assert!(
        recorder.invocations.lock().unwrap().is_empty(),
        "old records are not processed"
    );
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn partial_failure_checkpoints_before_the_lowest_failed_record() {
    let env = Env::start("partial-cp").await;
    env.stream("raw", 1).await;
    env.put("raw", 0..10, 1).await;

    let failing = Arc::new(Recorder {
        fail_always: Some("k0:5".to_owned()),
        ..Recorder::default()
    });
    let mut cfg = config("raw");
    cfg.report_batch_item_failures = true;
    let running = start(&env, failing.clone(), cfg.clone());
    wait_for("a retry of k0:5", || {
        failing
            .invocations
            .lock()
            .unwrap()
            .iter()
            .filter(|inv| inv.first().is_some_and(|r| r.data == "k0:5"))
            .count()
            >= 2
    })
    .await;
    let before = failing.done().last().unwrap().clone();
    assert_eq!(before.data, "k0:4");
    let checkpoints = env.checkpoints("raw");
    wait_async("checkpoint at k0:4", || async {
        checkpoints.load(&before.shard).await.unwrap() == Checkpoint::After(before.seq.clone())
    })
    .await;
    running.stop().await;
    assert_eq!(
        checkpoints.load(&before.shard).await.unwrap(),
        Checkpoint::After(before.seq.clone()),
        "stopped while retrying: the checkpoint stays before the failed record"
    );

    let healthy = Arc::new(Recorder::default());
    let running = start(&env, healthy.clone(), cfg);
    wait_for("the rest", || healthy.done().len() >= 5).await;
    running.stop().await;
    let expected: Vec<String> = (5..10).map(|i| format!("k0:{i}")).collect();
    assert_eq!(
        data_of(&healthy.done()),
        expected,
        "resumed at the failed record"
    );
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn batches_are_cut_at_the_6_mb_invocation_payload() {
    let env = Env::start("payload").await;
    env.stream("raw", 1).await;
    let publisher = KinesisPublisher::new(env.kinesis.clone(), PublishConfig::default());
    let records: Vec<OutRecord> = (0..8)
        .map(|i| {
            let mut data = format!("k0:{i}:").into_bytes();
            data.resize(900_000, b'x');
            OutRecord {
                partition_key: "k0".into(),
                data,
            }
        })
        .collect();
    let outcome = publisher.put_all("raw", records).await.unwrap();
    assert_eq!(outcome.written, 8);

    let recorder = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.batch_size = 100;
    let running = start(&env, recorder.clone(), cfg);
    wait_for("8 records", || {
        recorder
            .spans
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.records)
            .sum::<usize>()
            >= 8
    })
    .await;
    running.stop().await;
    let spans = recorder.spans.lock().unwrap().clone();
    assert!(spans.len() >= 2, "cut into several batches");
    for s in &spans {
        assert!(
            s.payload_bytes <= riffle_runtime::event::INVOCATION_PAYLOAD_MAX_BYTES,
            "{} bytes",
            s.payload_bytes
        );
    }
    assert!(
        spans[0].records > 1,
        "as many records as fit: {}",
        spans[0].records
    );
    assert!(
        spans[0].payload_bytes + 1_300_000 > riffle_runtime::event::INVOCATION_PAYLOAD_MAX_BYTES,
        "the first batch is as full as one more record allows"
    );
    env.emulators.shutdown().await;
}

#[tokio::test]
async fn reading_goes_on_after_kinesalite_restarts() {
    let mut env = Env::start("kinesis-restart").await;
    env.stream("raw", 2).await;
    env.put("raw", 0..100, 7).await;
    let handler = Arc::new(Recorder::default());
    let mut cfg = config("raw");
    cfg.batch_size = 20;
    let running = start(&env, handler.clone(), cfg);
    let distinct = |h: &Recorder| {
        h.done()
            .into_iter()
            .map(|s| s.data)
            .collect::<HashSet<_>>()
            .len()
    };
    wait_for("records before the restart", || distinct(&handler) >= 100).await;

    // Twice: once while the readers poll an idle stream, once while they are busy.
    let mut total = 100;
    for round in 0..2 {
        if round == 1 {
            env.put("raw", total..total + 100, 7).await;
            total += 100;
        }
        env.emulators.restart_kinesis().await.unwrap();
        env.put("raw", total..total + 100, 7).await;
        total += 100;
        wait_for("every record after the restart", || {
            distinct(&handler) >= total
        })
        .await;
    }
    let expected: HashSet<String> = (0..total).map(|i| format!("k{}:{i}", i % 7)).collect();
    let got: HashSet<String> = data_of(&handler.done()).into_iter().collect();
    assert_eq!(got, expected);
    running.stop().await;
    env.emulators.shutdown().await;
}
