//! The producer against kinesalite through the real AWS SDK: every record arrives, in order per
//! partition key, plain and aggregated; throttled entries are retried without loss or
//! reordering; what is given up on is reported; a full buffer pushes back; bad records are
//! refused at `send`.
//!
//! Throttling is injected through the producer's port: kinesalite does not enforce shard write
//! limits, so a wrapper around the real port answers chosen entries the way Kinesis does
//! (`ProvisionedThroughputExceededException` per entry) and forwards the rest to kinesalite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_kinesis::types::{ShardIteratorType, StreamStatus};
use riffle_codec::EnvelopeCodec;
use riffle_codec::kpl;
use riffle_producer::port::EntryResults;
use riffle_producer::{
    AwsError, KinesisPort, Producer, ProducerBuilder, ProducerError, ProducerEvent, PutEntry,
    PutRecordsPort,
};

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);
const ENVELOPE_ID: u32 = 1;
const PAYLOAD_ID: u32 = 2;
const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// kinesalite's endpoint. The emulators run on a thread of their own with its own runtime, so
/// they outlive each test's runtime and start once per test binary; they exit with the process
/// (their stdin closes).
fn endpoint() -> String {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(async move {
                    let dir = riffle_local::project_root()
                        .unwrap()
                        .join(".riffle/test-state")
                        .join(format!("producer-{}", std::process::id()));
                    let _ = std::fs::remove_dir_all(&dir);
                    let emulators = riffle_local::Emulators::start(&dir).await.unwrap();
                    tx.send(emulators.kinesis_endpoint().to_owned()).unwrap();
                    std::future::pending::<()>().await;
                });
            });
            rx.recv().unwrap()
        })
        .clone()
}

async fn kinesis() -> aws_sdk_kinesis::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(endpoint())
        .load()
        .await;
    aws_sdk_kinesis::Client::new(&config)
}

async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let d = client
            .describe_stream_summary()
            .stream_name(name)
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
        tokio::time::sleep(POLL).await;
    }
}

/// Every user record on the stream, shard by shard in sequence order, aggregates unpacked:
/// `(partition key, data)`, and the number of Kinesis records read.
async fn read_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> (Vec<(String, Vec<u8>)>, usize) {
    let (records, kinesis_records) = read_by_shard(client, stream).await;
    (
        records.into_iter().map(|(_, k, d)| (k, d)).collect(),
        kinesis_records,
    )
}

/// As [`read_all`], with each record's shard id: `(shard, partition key, data)`.
async fn read_by_shard(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> (Vec<(String, String, Vec<u8>)>, usize) {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut kinesis_records = 0;
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator()
            .map(str::to_owned);
        while let Some(it) = iterator {
            let got = client
                .get_records()
                .shard_iterator(it)
                .send()
                .await
                .unwrap();
            if got.records().is_empty() {
                break;
            }
            for r in got.records() {
                kinesis_records += 1;
                let data = r.data().as_ref();
                if kpl::is_aggregated(data) {
                    for sub in kpl::deaggregate(data).unwrap() {
                        out.push((
                            shard.shard_id().to_owned(),
                            sub.partition_key.to_owned(),
                            sub.data.to_vec(),
                        ));
                    }
                } else {
                    out.push((
                        shard.shard_id().to_owned(),
                        r.partition_key().to_owned(),
                        data.to_vec(),
                    ));
                }
            }
            iterator = got.next_shard_iterator().map(str::to_owned);
        }
    }
    (out, kinesis_records)
}

fn codec() -> EnvelopeCodec {
    EnvelopeCodec::new(ENVELOPE_ID).unwrap()
}

/// Event `i` of key `key`: the event id and the payload say which it is.
fn event(key: &str, i: usize) -> ProducerEvent {
    ProducerEvent::new(
        "producer-test",
        "com.riffle.test.Event",
        PAYLOAD_ID,
        key,
        format!("{key}:{i}").into_bytes(),
    )
    .with_event_id(format!("{key}:{i}"))
}

/// Sends `per_key` events for each of `keys` keys, interleaved.
async fn send_all(producer: &Producer, keys: usize, per_key: usize) {
    for i in 0..per_key {
        for k in 0..keys {
            producer.send(event(&format!("key-{k}"), i)).await.unwrap();
        }
    }
}

/// Checks that the stream holds exactly `per_key` events per key, each once, in order.
fn check_order(records: &[(String, Vec<u8>)], keys: usize, per_key: usize) {
    let codec = codec();
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    for (key, data) in records {
        let envelope = codec.decode(data).unwrap();
        assert_eq!(
            &envelope.event_id,
            &String::from_utf8(envelope.payload.clone()).unwrap()
        );
        let (k, i) = envelope.event_id.rsplit_once(':').unwrap();
        assert_eq!(k, key, "user record under another key");
        seen.entry(k.to_owned())
            .or_default()
            .push(i.parse().unwrap());
    }
    assert_eq!(seen.len(), keys);
    for (key, indexes) in seen {
        assert_eq!(indexes, (0..per_key).collect::<Vec<_>>(), "order of {key}");
    }
}

#[tokio::test]
async fn plain_records_all_arrive_in_order_per_key() {
    let client = kinesis().await;
    create_stream(&client, "producer-plain", 4).await;
    let producer = Producer::builder(client.clone(), "producer-plain", codec())
        .linger(Duration::from_millis(10))
        .build()
        .await
        .unwrap();
    send_all(&producer, 40, 50).await;
    assert!(producer.flush().await.unwrap().is_empty());
    let stats = producer.stats();
    assert_eq!(stats.records, 2000);
    assert_eq!(stats.kinesis_records, 2000);
    assert_eq!(stats.aggregates, 0);
    assert_eq!(stats.payload_units, 2000);
    assert_eq!((stats.buffered_records, stats.buffered_bytes), (0, 0));
    assert!(stats.put_requests >= 50, "one record per key per request");
    assert!(producer.close().await.unwrap().is_empty());
    let (records, kinesis_records) = read_all(&client, "producer-plain").await;
    assert_eq!(kinesis_records, 2000);
    check_order(&records, 40, 50);
}

#[tokio::test]
async fn aggregated_records_all_arrive_in_order_per_key() {
    let client = kinesis().await;
    create_stream(&client, "producer-agg", 4).await;
    let producer = Producer::builder(client.clone(), "producer-agg", codec())
        .aggregation(true)
        .linger(Duration::from_millis(10))
        .build()
        .await
        .unwrap();
    send_all(&producer, 40, 50).await;
    assert!(producer.flush().await.unwrap().is_empty());
    let stats = producer.stats();
    assert_eq!(stats.records, 2000);
    assert!(stats.aggregates > 0);
    assert!(stats.kinesis_records < 200, "{stats:?}");
    assert!(producer.close().await.unwrap().is_empty());
    let (records, kinesis_records) = read_all(&client, "producer-agg").await;
    assert_eq!(kinesis_records as u64, stats.kinesis_records);
    check_order(&records, 40, 50);
}

/// Refuses entries as a throttled Kinesis would, forwarding the others to the real port.
/// `fails(entry, attempts so far)` decides; attempts are counted per entry data.
struct Throttling<F> {
    inner: KinesisPort,
    fails: F,
    attempts: Mutex<HashMap<u64, u32>>,
}

fn digest(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

impl<F: Fn(&PutEntry, u32) -> bool + Send + Sync + 'static> PutRecordsPort for Throttling<F> {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<EntryResults, AwsError> {
        let mut refused = Vec::with_capacity(entries.len());
        {
            let mut attempts = self.attempts.lock().unwrap();
            for entry in &entries {
                let n = attempts.entry(digest(&entry.data)).or_insert(0);
                refused.push((self.fails)(entry, *n));
                *n += 1;
            }
        }
        let forward: Vec<PutEntry> = entries
            .into_iter()
            .zip(&refused)
            .filter(|(_, r)| !**r)
            .map(|(e, _)| e)
            .collect();
        let mut forwarded = if forward.is_empty() {
            Vec::new()
        } else {
            self.inner.put_records(stream, forward).await?
        }
        .into_iter();
        Ok(refused
            .into_iter()
            .map(|r| {
                if r {
                    Some(AwsError::Entry {
                        code: THROTTLED.to_owned(),
                        message: "Rate exceeded for shard".to_owned(),
                    })
                } else {
                    forwarded.next().flatten()
                }
            })
            .collect())
    }

    async fn shard_starts(&self, stream: &str) -> Result<Vec<u128>, AwsError> {
        self.inner.shard_starts(stream).await
    }
}

#[tokio::test]
async fn throttled_entries_are_retried_without_loss_or_reordering() {
    let client = kinesis().await;
    for aggregation in [false, true] {
        let stream = format!("producer-throttled-{aggregation}");
        create_stream(&client, &stream, 4).await;
        // A third of the entries are refused once, a ninth twice.
        let port = Throttling {
            inner: KinesisPort::new(client.clone()),
            fails: |entry: &PutEntry, attempts: u32| u64::from(attempts) < digest(&entry.data) % 3,
            attempts: Mutex::new(HashMap::new()),
        };
        let producer = ProducerBuilder::with_port(port, &stream, codec())
            .aggregation(aggregation)
            .aggregate_max_bytes(4096)
            .linger(Duration::from_millis(5))
            .backoff(Duration::from_millis(5), Duration::from_millis(40))
            .max_retries(5)
            .build()
            .await
            .unwrap();
        send_all(&producer, 20, 40).await;
        assert!(producer.flush().await.unwrap().is_empty());
        let stats = producer.stats();
        assert_eq!(stats.records, 800);
        assert_eq!(stats.failed, 0);
        assert!(stats.throttled > 0, "{stats:?}");
        assert_eq!(stats.retries, stats.throttled);
        assert!(producer.close().await.unwrap().is_empty());
        let (records, _) = read_all(&client, &stream).await;
        check_order(&records, 20, 40);
    }
}

#[tokio::test]
async fn records_given_up_on_are_reported_by_flush() {
    let client = kinesis().await;
    create_stream(&client, "producer-doomed", 2).await;
    let port = Throttling {
        inner: KinesisPort::new(client.clone()),
        fails: |entry: &PutEntry, _| entry.partition_key == "doomed",
        attempts: Mutex::new(HashMap::new()),
    };
    let producer = ProducerBuilder::with_port(port, "producer-doomed", codec())
        .linger(Duration::from_millis(5))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .max_retries(2)
        .build()
        .await
        .unwrap();
    for i in 0..5 {
        producer.send(event("doomed", i)).await.unwrap();
        producer.send(event("fine", i)).await.unwrap();
    }
    let failed = producer.flush().await.unwrap();
    let ids: Vec<_> = failed.iter().map(|f| f.event_id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        (0..5).map(|i| format!("doomed:{i}")).collect::<Vec<_>>(),
        "every doomed record, in order"
    );
    for f in &failed {
        assert_eq!(f.partition_key, "doomed");
        assert_eq!(f.error.code(), Some(THROTTLED));
        assert_eq!(
            codec().decode(&f.data).unwrap().event_id,
            f.event_id.clone().unwrap(),
            "the failure carries the record to replay"
        );
    }
    let stats = producer.stats();
    assert_eq!((stats.records, stats.failed), (5, 5));
    assert_eq!(stats.throttled, 15, "3 attempts each");
    // Handed out once.
    assert!(producer.flush().await.unwrap().is_empty());
    assert!(producer.close().await.unwrap().is_empty());
    let (records, _) = read_all(&client, "producer-doomed").await;
    assert!(records.iter().all(|(k, _)| k == "fine"));
    assert_eq!(records.len(), 5);
}

/// Puts every request, then loses the answer of some: the call fails as a timeout would, so
/// the producer puts the same entries again, at new positions. Some calls fail the same way
/// without landing at all. The closure says, per call, whether it lands and whether it is
/// answered.
struct LostAnswers<F> {
    inner: KinesisPort,
    loses: F,
    calls: Mutex<u32>,
}

impl<F: Fn(&[PutEntry], u32) -> (bool, bool) + Send + Sync + 'static> PutRecordsPort
    for LostAnswers<F>
{
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<EntryResults, AwsError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        let (lands, answered) = (self.loses)(&entries, call);
        let results = if lands {
            self.inner.put_records(stream, entries).await?
        } else {
            Vec::new()
        };
        if !answered {
            return Err(AwsError::Call {
                operation: "PutRecords",
                code: "TimeoutError".to_owned(),
                message: "answer lost after the records landed".to_owned(),
                retryable: true,
            });
        }
        Ok(results)
    }

    async fn shard_starts(&self, stream: &str) -> Result<Vec<u128>, AwsError> {
        self.inner.shard_starts(stream).await
    }
}

#[tokio::test]
async fn stamped_origins_let_the_stages_drop_every_copy_a_retry_or_a_re_send_puts() {
    let client = kinesis().await;
    let stream = "producer-origins";
    create_stream(&client, stream, 3).await;
    let doomed = |entries: &[PutEntry]| {
        entries.iter().any(|e| {
            codec()
                .decode(&e.data)
                .ok()
                .or_else(|| {
                    let subs = kpl::deaggregate(&e.data).ok()?;
                    subs.iter().find_map(|s| {
                        codec()
                            .decode(s.data)
                            .ok()
                            .filter(|env| env.event_id == "key-4:7")
                    })
                })
                .is_some_and(|env| env.event_id == "key-4:7")
        })
    };
    // Every third call's answer is lost; the unit holding key-4:7 does not land on its three
    // attempts, so it is given up on and handed back to re-send, after later records of its
    // shard went on under a new channel.
    let doomed_calls = std::sync::atomic::AtomicU32::new(0);
    let port = LostAnswers {
        inner: KinesisPort::new(client.clone()),
        loses: move |entries: &[PutEntry], call: u32| {
            let doomed = doomed(entries)
                && doomed_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3;
            (!doomed, !call.is_multiple_of(3) && !doomed)
        },
        calls: Mutex::new(0),
    };
    let producer = ProducerBuilder::with_port(port, stream, codec())
        .aggregation(true)
        .aggregate_max_bytes(2048)
        .origins("origins-test")
        .linger(Duration::from_millis(5))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .max_retries(2)
        .build()
        .await
        .unwrap();
    send_all(&producer, 12, 30).await;
    let failed = producer.flush().await.unwrap();
    assert!(
        failed
            .iter()
            .any(|f| f.event_id.as_deref() == Some("key-4:7")),
        "{} failed",
        failed.len()
    );
    // Re-sent as handed back: they keep their origins and land above their channel's mark.
    for f in failed {
        producer.send_framed(f.partition_key, f.data).await.unwrap();
    }
    assert!(producer.flush().await.unwrap().is_empty());
    assert!(producer.stats().retries > 0);
    assert!(producer.close().await.unwrap().is_empty());

    // Read as a stage does: shard by shard in order, each record admitted by its origin.
    let (records, _) = read_by_shard(&client, stream).await;
    let mut gate = riffle_stage::marks::Gate::default();
    let mut admitted: HashMap<String, usize> = HashMap::new();
    let mut copies = 0;
    for (shard, _, data) in &records {
        let envelope = codec().decode(data).unwrap();
        let origin = envelope.origin.expect("every record stamped");
        assert!(origin.id.starts_with("origins-test-"), "{}", origin.id);
        let seq = riffle_codec::Position::new(&origin.seq, 0).unwrap();
        match gate.admit(shard, &origin.id, seq) {
            Some(_) => *admitted.entry(envelope.event_id).or_default() += 1,
            None => copies += 1,
        }
    }
    assert!(copies > 0, "the lost answers put copies");
    assert_eq!(admitted.len(), 12 * 30, "every event admitted");
    assert!(admitted.values().all(|&n| n == 1), "and only once");
}

/// Holds every request until opened, so the buffer stays full.
struct Gate {
    inner: KinesisPort,
    open: Arc<tokio::sync::Semaphore>,
}

impl PutRecordsPort for Gate {
    async fn put_records(
        &self,
        stream: &str,
        entries: Vec<PutEntry>,
    ) -> Result<EntryResults, AwsError> {
        drop(self.open.acquire().await);
        self.inner.put_records(stream, entries).await
    }

    async fn shard_starts(&self, stream: &str) -> Result<Vec<u128>, AwsError> {
        self.inner.shard_starts(stream).await
    }
}

#[tokio::test]
async fn a_full_buffer_fails_try_send_and_makes_send_wait() {
    let client = kinesis().await;
    create_stream(&client, "producer-full", 1).await;
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let port = Gate {
        inner: KinesisPort::new(client.clone()),
        open: Arc::clone(&open),
    };
    let producer = Arc::new(
        ProducerBuilder::with_port(port, "producer-full", codec())
            .max_buffered_records(3)
            .linger(Duration::ZERO)
            .build()
            .await
            .unwrap(),
    );
    for i in 0..3 {
        producer.try_send(event(&format!("k{i}"), 0)).unwrap();
    }
    assert!(matches!(
        producer.try_send(event("k3", 0)),
        Err(ProducerError::Full)
    ));
    assert_eq!(producer.stats().buffered_records, 3);
    let waiting = {
        let producer = Arc::clone(&producer);
        tokio::spawn(async move { producer.send(event("k3", 0)).await })
    };
    // Still waiting while the requests are held at the gate.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), async {
            while !waiting.is_finished() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .is_err(),
        "send returned while the buffer was full"
    );
    open.add_permits(tokio::sync::Semaphore::MAX_PERMITS >> 1);
    tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(producer.flush().await.unwrap().is_empty());
    assert_eq!(producer.stats().records, 4);
    assert_eq!(producer.stats().buffered_records, 0);

    // A byte limit pushes back the same way (one record here is about 70 bytes).
    let bytes_open = Arc::new(tokio::sync::Semaphore::new(0));
    let bytes_producer = ProducerBuilder::with_port(
        Gate {
            inner: KinesisPort::new(client.clone()),
            open: Arc::clone(&bytes_open),
        },
        "producer-full",
        codec(),
    )
    .max_buffered_bytes(100)
    .linger(Duration::ZERO)
    .build()
    .await
    .unwrap();
    bytes_producer.try_send(event("b", 0)).unwrap();
    assert!(matches!(
        bytes_producer.try_send(event("b", 1)),
        Err(ProducerError::Full)
    ));
    bytes_open.add_permits(tokio::sync::Semaphore::MAX_PERMITS >> 1);
    assert!(bytes_producer.close().await.unwrap().is_empty());
    assert_eq!(bytes_producer.stats().records, 1);

    assert!(producer.close().await.unwrap().is_empty());
    let (records, _) = read_all(&client, "producer-full").await;
    assert_eq!(records.len(), 5);
}

#[tokio::test]
async fn oversize_records_and_bad_keys_are_refused_at_send() {
    let client = kinesis().await;
    create_stream(&client, "producer-refused", 1).await;
    let producer = Producer::builder(client.clone(), "producer-refused", codec())
        .build()
        .await
        .unwrap();
    let big = ProducerEvent::new(
        "s",
        "x",
        PAYLOAD_ID,
        "k",
        vec![0; riffle_producer::RECORD_MAX_BYTES],
    );
    assert!(matches!(
        producer.send(big.clone()).await,
        Err(ProducerError::Oversize { .. })
    ));
    assert!(matches!(
        producer.try_send(big),
        Err(ProducerError::Oversize { .. })
    ));
    // The limit counts the partition key too.
    let exactly = vec![0; riffle_producer::RECORD_MAX_BYTES - 1];
    assert!(matches!(
        producer.send_framed("kk", exactly.clone()).await,
        Err(ProducerError::Oversize { .. })
    ));
    producer.send_framed("k", exactly).await.unwrap();
    assert!(matches!(
        producer
            .send(ProducerEvent::new("s", "x", PAYLOAD_ID, "", vec![]))
            .await,
        Err(ProducerError::InvalidPartitionKey { chars: 0, .. })
    ));
    let long = "k".repeat(riffle_producer::PARTITION_KEY_MAX_CHARS + 1);
    assert!(matches!(
        producer
            .send(ProducerEvent::new("s", "x", PAYLOAD_ID, long, vec![]))
            .await,
        Err(ProducerError::InvalidPartitionKey { .. })
    ));
    assert!(matches!(
        producer
            .send(ProducerEvent::new("s", "x", u32::MAX, "k", vec![]))
            .await,
        Err(ProducerError::Unencodable(_))
    ));
    assert!(producer.flush().await.unwrap().is_empty());
    assert_eq!(producer.stats().records, 1);
    assert!(producer.close().await.unwrap().is_empty());
    assert!(matches!(
        producer.send(event("k", 0)).await,
        Err(ProducerError::Closed)
    ));
    assert!(matches!(producer.flush().await, Err(ProducerError::Closed)));
    assert!(matches!(producer.close().await, Err(ProducerError::Closed)));
    let (records, _) = read_all(&client, "producer-refused").await;
    assert_eq!(records.len(), 1, "only the record at the limit");
}
