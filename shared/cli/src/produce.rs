//! `riffle produce`: events into a running stack's raw stream, through `riffle-producer`
//! (envelope, KPL aggregation, origins, retries), from JSON lines or from the load
//! generator.
//!
//! JSON lines are payloads of one subject, encoded with the schema the registry holds as
//! the subject's latest version, so what a producer team registered is what gets checked.
//! Each line is converted with apache-avro's `Value` + `resolve`: slower than the stages'
//! decoders, but this is a producer for people and scripts, not a stage's hot path, and it
//! gives field-precise errors for a line that does not fit. A line that does not fit is
//! reported with its number and skipped; the command then exits non-zero, so nothing is
//! lost silently. Generated events are the demo's mix (three subjects, some invalid on
//! purpose), framed with the ids the registry gives the bundled schemas.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use apache_avro::writer::datum::GenericDatumWriter;
use riffle_codec::envelope::{ENVELOPE_SCHEMA, ENVELOPE_SUBJECT};
use riffle_loadtest::bench::{ORDER_SCHEMA, PAGE_VIEW_SCHEMA, SENSOR_SCHEMA};
use riffle_loadtest::{Generator, GeneratorConfig, SchemaIds};
use riffle_producer::{Producer, ProducerEvent};
use riffle_registry_client::RegistryClient;

use crate::error::OpsError;

/// The generator's subjects.
const ORDER_SUBJECT: &str = "com.riffle.shop.OrderPlaced";
const PAGE_VIEW_SUBJECT: &str = "com.riffle.web.PageView";
const SENSOR_SUBJECT: &str = "com.riffle.iot.SensorReading";

/// How long to wait for the registry to answer at start.
const REGISTRY_PATIENCE: Duration = Duration::from_secs(10);

/// `riffle produce` arguments.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "With `riffle-dev up` running, its printed variables (`eval \"$(riffle-dev up ...)\"` \
or copy them) give the stream, the registry and the endpoints:\n  \
riffle produce --subject com.riffle.web.PageView --file views.jsonl --key-field session_id\n  \
riffle produce --generate 10000 --rate 2000"
)]
pub struct ProduceArgs {
    /// JSON lines to send, one payload object per line (`-`: standard input), encoded with
    /// the latest schema registered under --subject.
    #[arg(
        long,
        value_name = "FILE",
        requires = "subject",
        conflicts_with = "generate"
    )]
    pub file: Option<PathBuf>,
    /// The payloads' registry subject (with --file).
    #[arg(long)]
    pub subject: Option<String>,
    /// The payload field whose value is the partition key (the unit of order) [default: the
    /// event id, which spreads events over the shards].
    #[arg(long, value_name = "FIELD")]
    pub key_field: Option<String>,
    /// The payload field holding the event time in epoch milliseconds [default: now].
    #[arg(long, value_name = "FIELD")]
    pub time_field: Option<String>,
    /// Instead of a file: this many generated events of the demo's mix.
    #[arg(long, value_name = "N", required_unless_present = "file")]
    pub generate: Option<u64>,
    /// With --generate: events per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// With --generate: the generator's seed (the same seed, the same events).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// With --generate: the share of events made invalid on purpose (they go to the rejects
    /// queue with their reason).
    #[arg(long, default_value_t = 0.02)]
    pub invalid_ratio: f64,
    /// The envelope's `source` for JSON lines.
    #[arg(long, default_value = "riffle-produce")]
    pub source: String,
    /// The raw stream.
    #[arg(long, env = "RIFFLE_RAW_STREAM")]
    pub stream: String,
    /// The schema registry's URL.
    #[arg(long, env = "RIFFLE_REGISTRY_URL")]
    pub registry: String,
}

/// What a run sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Produced {
    /// Events Kinesis accepted.
    pub put: u64,
    /// Events the producer gave up on (after its retries).
    pub failed: u64,
    /// JSON lines that could not be encoded (skipped, each reported).
    pub bad_lines: u64,
}

/// Runs `riffle produce`.
pub async fn main(args: ProduceArgs) -> ExitCode {
    crate::report(run(args).await)
}

async fn run(args: ProduceArgs) -> Result<String, OpsError> {
    let registry = RegistryClient::from_env_credentials(&args.registry)?;
    let codec = registry.envelope_codec(REGISTRY_PATIENCE).await?;
    let sdk = riffle_aws::sdk_config().await;
    let producer = Producer::builder(riffle_aws::kinesis_client(&sdk), &args.stream, codec)
        .aggregation(true)
        // The raw stream's reader is Riffle's validator, which opens compressed aggregates.
        .compression(true)
        .origins("riffle-produce")
        .build()
        .await
        .map_err(|e| OpsError::Aws(format!("stream {}: {e}", args.stream)))?;
    let mut produced = match (&args.file, args.generate) {
        (Some(file), _) => send_lines(&args, &registry, &producer, file).await?,
        (None, Some(n)) => send_generated(&args, &registry, &producer, n).await?,
        (None, None) => return Err(OpsError::Usage("give --file or --generate".into())),
    };
    let failed = producer
        .close()
        .await
        .map_err(|e| OpsError::Aws(e.to_string()))?;
    for f in failed.iter().take(10) {
        eprintln!(
            "produce: not put: event {}: {}",
            f.event_id.as_deref().unwrap_or("?"),
            f.error
        );
    }
    produced.failed = failed.len() as u64;
    produced.put = producer.stats().records;
    let summary = format!(
        "produced {} events to {} ({} not put, {} lines skipped)\n",
        produced.put, args.stream, produced.failed, produced.bad_lines
    );
    if produced.failed > 0 || produced.bad_lines > 0 {
        eprint!("{summary}");
        return Err(OpsError::Aws(format!(
            "{} events not put, {} lines skipped",
            produced.failed, produced.bad_lines
        )));
    }
    Ok(summary)
}

/// Sends every line of `file` as a payload of `--subject`.
async fn send_lines(
    args: &ProduceArgs,
    registry: &RegistryClient,
    producer: &Producer,
    file: &Path,
) -> Result<Produced, OpsError> {
    let subject = args.subject.as_deref().unwrap_or_default();
    let latest = registry.latest(subject).await?;
    let unusable = |e: apache_avro::Error| {
        OpsError::Usage(format!(
            "subject {subject} (id {}): schema unusable here: {e}",
            latest.id
        ))
    };
    let schema = apache_avro::Schema::parse_str(&latest.schema).map_err(unusable)?;
    // Built once: it resolves the schema's named types for every line.
    let writer = GenericDatumWriter::builder(&schema)
        .build()
        .map_err(unusable)?;
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|e| OpsError::Usage(format!("{}: {e}", file.display())))?;
        Box::new(std::io::BufReader::new(opened))
    };
    let mut produced = Produced::default();
    let mut progress = Progress::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| OpsError::Usage(format!("{}: {e}", file.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let event = match payload_event(args, subject, latest.id, (&schema, &writer), &line) {
            Ok(event) => event,
            Err(why) => {
                eprintln!("produce: line {}: {why}; skipped", n + 1);
                produced.bad_lines += 1;
                continue;
            }
        };
        producer
            .send(event)
            .await
            .map_err(|e| OpsError::Aws(format!("line {}: {e}", n + 1)))?;
        progress.tick(producer);
    }
    Ok(produced)
}

/// One JSON line as an event of `subject`, or why it cannot be one.
fn payload_event(
    args: &ProduceArgs,
    subject: &str,
    schema_id: u32,
    (schema, writer): (&apache_avro::Schema, &GenericDatumWriter<'_>),
    line: &str,
) -> Result<ProducerEvent, String> {
    let json: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let field = |name: &str| json.get(name).filter(|v| !v.is_null());
    let key = match &args.key_field {
        Some(name) => Some(match field(name) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => return Err(format!("no key field {name:?}")),
        }),
        None => None,
    };
    let event_time = match &args.time_field {
        Some(name) => Some(
            field(name)
                .and_then(serde_json::Value::as_i64)
                .ok_or_else(|| format!("time field {name:?} is not epoch milliseconds"))?,
        ),
        None => None,
    };
    let value = apache_avro::types::Value::try_from(json)
        .and_then(|v| v.resolve(schema))
        .map_err(|e| format!("does not fit the schema of {subject} (id {schema_id}): {e}"))?;
    let payload = writer
        .write_value_to_vec(value)
        .map_err(|e| format!("cannot be encoded: {e}"))?;
    let id = uuid::Uuid::now_v7().to_string();
    let mut event = ProducerEvent::new(
        args.source.clone(),
        subject,
        schema_id,
        key.unwrap_or_else(|| id.clone()),
        payload,
    )
    .with_event_id(id);
    if let Some(t) = event_time {
        event = event.with_event_time(t);
    }
    Ok(event)
}

/// Sends `n` events of the load generator at `--rate`.
async fn send_generated(
    args: &ProduceArgs,
    registry: &RegistryClient,
    producer: &Producer,
    n: u64,
) -> Result<Produced, OpsError> {
    // Registering a schema the registry holds already returns its id: the bundled schemas'
    // ids, whatever else the subjects have since.
    let ids = SchemaIds {
        envelope: registry.register(ENVELOPE_SUBJECT, ENVELOPE_SCHEMA).await?,
        order: registry.register(ORDER_SUBJECT, ORDER_SCHEMA).await?,
        page_view: registry
            .register(PAGE_VIEW_SUBJECT, PAGE_VIEW_SCHEMA)
            .await?,
        sensor: registry.register(SENSOR_SUBJECT, SENSOR_SCHEMA).await?,
    };
    let config = GeneratorConfig {
        seed: args.seed,
        invalid_ratio: args.invalid_ratio,
        events_per_sec: args.rate.max(1),
        start_time_ms: now_ms(),
        ..GeneratorConfig::default()
    };
    let mut generator =
        Generator::new(config, ids).map_err(|e| OpsError::Usage(format!("generator: {e}")))?;
    let started = Instant::now();
    let mut progress = Progress::new();
    for i in 0..n {
        // Paced against the start, so a slow moment is caught up rather than carried on.
        let due = Duration::from_secs_f64(i as f64 / f64::from(args.rate.max(1)));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let event = generator
            .next(now_ms())
            .map_err(|e| OpsError::Usage(format!("generator: {e}")))?;
        producer
            .send_framed(event.partition_key, event.record)
            .await
            .map_err(|e| OpsError::Aws(e.to_string()))?;
        progress.tick(producer);
    }
    Ok(Produced::default())
}

/// A line on stderr about once a second while sending.
struct Progress {
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Progress {
            last: Instant::now(),
        }
    }

    fn tick(&mut self, producer: &Producer) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            let stats = producer.stats();
            eprintln!(
                "produce: {} put, {} buffered, {} retried",
                stats.records, stats.buffered_records, stats.retries
            );
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
