//! `riffle dlq list | show | redrive`: the deployment's dead-letter queues from a terminal.
//!
//! Which queues exist, which stage writes each, and which stream feeds each stage come from
//! the templates ([`topology`], pure, over `riffle_plan::plan`): the stages' on-failure
//! destinations and `RIFFLE_DLQ_URL` / `RIFFLE_REJECTS_QUEUE_URL` variables, and their event
//! source mappings. Queue URLs are then looked up by name (GetQueueUrl), so the same command
//! works against AWS and the local twin (endpoints from the standard AWS variables).
//!
//! Two message shapes travel on these queues (docs/CONTRACTS.md, "Queue messages"):
//! `RejectMessage`s (alone or as a `RejectBatch`) and the event source mapping's on-failure
//! messages (`riffle_aws::on_failure`, positions only, as Lambda sends them). [`parse_message`]
//! reads both; [`stream_ranges`] + [`read_ranges`] take back from the streams the records a
//! message names by position only (all of an on-failure message's; rejects too big for SQS).
//!
//! Redrive puts the records a message stands for back on the input stream of the stage that
//! gave up on them, with their original partition keys, and deletes the message only after
//! every one of its records was put: at least once. A crash between the put and the delete
//! puts the records again on the next redrive. Every record put back gets a new origin
//! addressed to the stage that gave up (`riffle_stage::dedup::redrive_origin`, ADR 0010): its
//! old origin is below that stage's marks and would be dropped as a copy, and the other
//! readers of the stream (the aggregator and the archiver share `enriched`) must leave it
//! alone. KPL aggregates are put back as their user records, each re-encoded with the new
//! origin; a record that does not decode goes back as it was (it is parked again).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, QueueAttributeName,
};
use clap::{Args, Subcommand};
use riffle_aws::on_failure::OnFailure;
use riffle_aws::{KinesisPublisher, OutRecord, PublishConfig};
use riffle_codec::EnvelopeCodec;
use riffle_plan::Plan;
use riffle_plan::template::{Attrs, LOCAL_ACCOUNT_ID, Scope};
use riffle_stage::RejectMessage;
use riffle_stage::dedup::redrive_origin;

use crate::OpsError;

pub use riffle_aws::limits::SQS_BATCH_MAX_ENTRIES as SQS_BATCH_MAX;
/// How long `show` hides the messages it reads before making them visible again.
pub const SHOW_VISIBILITY_SECS: i32 = 30;
/// How long `redrive` hides a message while it puts its records.
pub const REDRIVE_VISIBILITY_SECS: i32 = 300;
/// Empty receives in a row that mean "nothing more to read now".
const EMPTY_RECEIVES: u32 = 2;
/// Environment variables through which a stage names a queue it writes.
const QUEUE_VARIABLES: [&str; 2] = ["RIFFLE_DLQ_URL", "RIFFLE_REJECTS_QUEUE_URL"];
/// Region used only to build placeholder ARNs while reading the templates.
const PLAN_REGION: &str = "us-east-1";

/// One dead-letter queue of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQueue {
    /// Logical id in the platform template (`EnricherDlq`).
    pub logical: String,
    /// Queue name (`riffle-enricher-dlq`).
    pub name: String,
    /// The stages writing to it (rejects, parked records, on-failure messages).
    pub stages: Vec<String>,
}

/// The queues, and each stage's input stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Every queue of the platform template, in template order.
    pub queues: Vec<DeadLetterQueue>,
    /// Stage (service template name, as `RejectMessage::stage`) -> its input stream.
    pub stage_streams: BTreeMap<String, String>,
}

impl Topology {
    /// The queue by logical id or name.
    pub fn queue(&self, key: &str) -> Option<&DeadLetterQueue> {
        self.queues
            .iter()
            .find(|q| q.logical == key || q.name == key)
    }

    /// The stage reading `stream`.
    pub fn stage_of_stream(&self, stream: &str) -> Option<&str> {
        self.stage_streams
            .iter()
            .find(|(_, s)| s.as_str() == stream)
            .map(|(stage, _)| stage.as_str())
    }
}

fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:{PLAN_REGION}:{LOCAL_ACCOUNT_ID}:stream/{name}")
}

fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:{PLAN_REGION}:{LOCAL_ACCOUNT_ID}:{name}")
}

fn queue_url(name: &str) -> String {
    format!("https://sqs.{PLAN_REGION}.amazonaws.com/{LOCAL_ACCOUNT_ID}/{name}")
}

/// Reads the queues and the stages' wiring out of the templates (pure): resources get
/// placeholder ARNs and URLs, the platform's exports are evaluated with them, and each
/// service's references are matched back to names.
pub fn topology(plan: &Plan) -> Topology {
    let mut resources: BTreeMap<String, Attrs> = BTreeMap::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for s in &plan.streams {
        let arn = stream_arn(&s.name);
        names.insert(arn.clone(), s.name.clone());
        resources.insert(
            s.logical.clone(),
            Attrs {
                reference: s.name.clone(),
                attrs: BTreeMap::from([("Arn".to_owned(), arn)]),
            },
        );
    }
    for q in &plan.queues {
        let (arn, url) = (queue_arn(&q.name), queue_url(&q.name));
        names.insert(arn.clone(), q.name.clone());
        names.insert(url.clone(), q.name.clone());
        resources.insert(
            q.logical.clone(),
            Attrs {
                reference: url.clone(),
                attrs: BTreeMap::from([
                    ("Arn".to_owned(), arn),
                    ("QueueUrl".to_owned(), url),
                    ("QueueName".to_owned(), q.name.clone()),
                ]),
            },
        );
    }
    for t in &plan.tables {
        resources.insert(
            t.logical.clone(),
            Attrs {
                reference: t.name.clone(),
                attrs: BTreeMap::from([(
                    "Arn".to_owned(),
                    format!(
                        "arn:aws:dynamodb:{PLAN_REGION}:{LOCAL_ACCOUNT_ID}:table/{}",
                        t.name
                    ),
                )]),
            },
        );
    }
    let no_exports = BTreeMap::new();
    let scope = Scope {
        resources: &resources,
        exports: &no_exports,
    };
    let mut exports = BTreeMap::new();
    for (_, output) in plan.platform.outputs() {
        let Some(export) = &output.export_name else {
            continue;
        };
        // Outputs of resources this reading does not model (keys, tables) just do not resolve.
        if let (Ok(name), Ok(value)) = (
            plan.platform.eval(export, scope),
            plan.platform.eval(&output.value, scope),
        ) {
            exports.insert(name, value);
        }
    }
    let no_resources = BTreeMap::new();
    let scope = Scope {
        resources: &no_resources,
        exports: &exports,
    };

    let mut writers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stage_streams = BTreeMap::new();
    for service in &plan.services {
        let t = &service.template;
        let resolve = |v| t.eval(v, scope).ok().and_then(|s| names.get(&s).cloned());
        if let Some(esm) = &service.esm {
            if let Some(stream) = resolve(&esm.event_source_arn) {
                stage_streams.insert(service.name.clone(), stream);
            }
            if let Some(queue) = esm.on_failure_destination.as_ref().and_then(resolve) {
                writers
                    .entry(queue)
                    .or_default()
                    .insert(service.name.clone());
            }
        }
        for (variable, value) in &service.env {
            if QUEUE_VARIABLES.contains(&variable.as_str())
                && let Some(queue) = resolve(value)
            {
                writers
                    .entry(queue)
                    .or_default()
                    .insert(service.name.clone());
            }
        }
    }
    Topology {
        queues: plan
            .queues
            .iter()
            .map(|q| DeadLetterQueue {
                logical: q.logical.clone(),
                name: q.name.clone(),
                stages: writers
                    .get(&q.name)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
            })
            .collect(),
        stage_streams,
    }
}

/// A dead-letter message, read.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadLetter {
    /// Records a stage rejected or parked, with their reasons.
    Rejects(Vec<RejectMessage>),
    /// Records an event source mapping gave up on, by position (Lambda's message).
    Failure(Box<OnFailure>),
    /// Neither shape.
    Unreadable(String),
}

/// Reads a message body in either shape.
pub fn parse_message(body: &str) -> DeadLetter {
    if let Ok(rejects) = riffle_stage::reject::parse_body(body) {
        return DeadLetter::Rejects(rejects);
    }
    match OnFailure::parse(body) {
        Ok(m) => DeadLetter::Failure(Box::new(m)),
        Err(e) if serde_json::from_str::<serde_json::Value>(body).is_ok() => {
            DeadLetter::Unreadable(format!("neither a reject nor an on-failure message ({e})"))
        }
        Err(e) => DeadLetter::Unreadable(format!("not JSON: {e}")),
    }
}

/// Records a message names by position only: read back from the stream before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRange {
    /// The stream's name.
    pub stream: String,
    /// The shard.
    pub shard: String,
    /// First sequence number.
    pub start: String,
    /// Last sequence number.
    pub end: String,
}

/// A record read back from a stream: partition key and bytes.
pub type StreamRecord = (String, Vec<u8>);

/// What of `message` must be read from the streams, in the order [`redrive_plan`] takes it:
/// the whole range of an on-failure message, and every reject whose bytes did not fit SQS.
pub fn stream_ranges(message: &DeadLetter, topology: &Topology) -> Vec<StreamRange> {
    match message {
        DeadLetter::Unreadable(_) => Vec::new(),
        DeadLetter::Failure(f) => {
            let info = &f.kinesis_batch_info;
            vec![StreamRange {
                stream: info.stream_name().to_owned(),
                shard: info.shard_id.clone(),
                start: info.start_sequence_number.clone(),
                end: info.end_sequence_number.clone(),
            }]
        }
        DeadLetter::Rejects(rejects) => rejects
            .iter()
            .filter(|r| r.data().map_or(true, |d| d.is_empty()))
            .filter_map(|r| {
                Some(StreamRange {
                    stream: topology.stage_streams.get(&r.stage)?.clone(),
                    shard: r.shard_id.clone(),
                    start: r.sequence_number.clone(),
                    end: r.sequence_number.clone(),
                })
            })
            .collect(),
    }
}

/// Reads `ranges` from their streams.
///
/// # Errors
/// Why a range could not be read whole (its records aged out of the stream, Kinesis
/// refused), naming the positions.
pub async fn read_ranges(
    kinesis: &aws_sdk_kinesis::Client,
    ranges: &[StreamRange],
) -> Result<Vec<Vec<StreamRecord>>, String> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let records =
            riffle_aws::stream_read::read_range(kinesis, &r.stream, &r.shard, &r.start, &r.end)
                .await
                .map_err(|e| {
                    format!(
                        "records {}..{} of {} {}: {e}",
                        r.start, r.end, r.stream, r.shard
                    )
                })?;
        out.push(
            records
                .into_iter()
                .map(|rec| (rec.partition_key, rec.data.into_inner()))
                .collect(),
        );
    }
    Ok(out)
}

/// What a record's bytes say, one line per event (an aggregate holds several).
pub fn summarize_record(data: &[u8]) -> Vec<String> {
    if riffle_codec::kpl::is_aggregated(data) {
        return match riffle_codec::kpl::deaggregate(data) {
            Ok(subs) => subs
                .iter()
                .flat_map(|s| {
                    summarize_record(s.data)
                        .into_iter()
                        .map(|line| format!("[aggregated] {line}"))
                })
                .collect(),
            Err(e) => vec![format!("corrupt aggregate: {e}")],
        };
    }
    match decode_envelope(data) {
        Ok(e) => vec![format!(
            "event {} subject {} source {}",
            e.event_id, e.subject, e.source
        )],
        Err(reason) => vec![format!("undecodable ({} bytes): {reason}", data.len())],
    }
}

fn decode_envelope(data: &[u8]) -> Result<riffle_codec::Envelope, String> {
    // The frame names the envelope's registry id; the bundled envelope schema reads it (an
    // older envelope version would need the registry and reads as undecodable here).
    let (id, _) = riffle_codec::frame::split(data).map_err(|e| e.to_string())?;
    let codec = EnvelopeCodec::new(id).map_err(|e| e.to_string())?;
    codec.decode(data).map_err(|e| e.to_string())
}

/// The records of a message to put back: target stream -> records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedrivePlan {
    /// Stream -> records, in message order.
    pub puts: BTreeMap<String, Vec<OutRecord>>,
}

impl RedrivePlan {
    /// Records to put.
    pub fn records(&self) -> usize {
        self.puts.values().map(Vec::len).sum()
    }

    /// Adds the user records of `data` for `stage`, each with a new origin addressed to it
    /// (record indexes count on from what the plan holds, so they are unique per message).
    fn add(
        &mut self,
        stage: &str,
        message_id: &str,
        stream: &str,
        partition_key: &str,
        data: Vec<u8>,
    ) {
        let users: Vec<(String, Vec<u8>)> = if riffle_codec::kpl::is_aggregated(&data) {
            match riffle_codec::kpl::deaggregate(&data) {
                Ok(subs) => subs
                    .iter()
                    .map(|s| (s.partition_key.to_owned(), s.data.to_vec()))
                    .collect(),
                Err(_) => vec![(partition_key.to_owned(), data)],
            }
        } else {
            vec![(partition_key.to_owned(), data)]
        };
        let records = self.puts.entry(stream.to_owned()).or_default();
        for (key, bytes) in users {
            let index = records.len();
            let data = restamp(&bytes, stage, message_id, index).unwrap_or(bytes);
            records.push(OutRecord {
                partition_key: key,
                data,
            });
        }
    }
}

/// `data` re-encoded with a redrive origin, or `None` when it does not decode.
fn restamp(data: &[u8], stage: &str, message_id: &str, index: usize) -> Option<Vec<u8>> {
    let (id, _) = riffle_codec::frame::split(data).ok()?;
    let codec = EnvelopeCodec::new(id).ok()?;
    let mut envelope = codec.decode(data).ok()?;
    envelope.origin = Some(redrive_origin(stage, message_id, index));
    codec.encode(&envelope).ok()
}

/// What to put back for `message` (pure), given what [`stream_ranges`] named read back from
/// the streams (`read`, in the same order), or why it cannot be redriven.
///
/// # Errors
/// Records missing from `read`, a read range that does not hold the records the message
/// names, a stage the templates do not know, or an unreadable message.
pub fn redrive_plan(
    message: &DeadLetter,
    message_id: &str,
    topology: &Topology,
    read: &[Vec<StreamRecord>],
) -> Result<RedrivePlan, String> {
    let mut plan = RedrivePlan::default();
    let mut read = read.iter();
    match message {
        DeadLetter::Unreadable(reason) => return Err(reason.clone()),
        DeadLetter::Rejects(rejects) => {
            for r in rejects {
                let stream = topology.stage_streams.get(&r.stage).ok_or_else(|| {
                    format!("stage {:?} has no input stream in the templates", r.stage)
                })?;
                let data = match r.data() {
                    Ok(d) if !d.is_empty() => d,
                    _ => match read.next().and_then(|range| range.first()) {
                        Some((_, data)) => data.clone(),
                        None => {
                            return Err(format!(
                                "record {} of shard {} is neither in the message nor read from {stream}",
                                r.sequence_number, r.shard_id
                            ));
                        }
                    },
                };
                plan.add(&r.stage, message_id, stream, &r.partition_key, data);
            }
        }
        DeadLetter::Failure(f) => {
            let info = &f.kinesis_batch_info;
            let records = read.next().map_or(&[][..], Vec::as_slice);
            if records.len() as u64 != info.batch_size {
                return Err(format!(
                    "{} records read from {} {} between {} and {}, the message names {}",
                    records.len(),
                    info.stream_name(),
                    info.shard_id,
                    info.start_sequence_number,
                    info.end_sequence_number,
                    info.batch_size
                ));
            }
            let stream = info.stream_name();
            let stage = topology
                .stage_of_stream(stream)
                .ok_or_else(|| format!("stream {stream:?} feeds no stage of the templates"))?;
            for (key, data) in records {
                plan.add(stage, message_id, stream, key, data.clone());
            }
        }
    }
    Ok(plan)
}

/// A queue with its approximate depth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The queue.
    pub queue: DeadLetterQueue,
    /// Its URL, when it exists.
    pub url: Option<String>,
    /// Messages available.
    pub visible: u64,
    /// Messages received and not yet deleted.
    pub in_flight: u64,
    /// Why the queue could not be read.
    pub error: Option<String>,
}

fn sqs_error<E: std::fmt::Debug + std::error::Error + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> OpsError {
    move |e| {
        OpsError::Aws(format!(
            "{what}: {}",
            aws_sdk_sqs::error::DisplayErrorContext(&e)
        ))
    }
}

/// An SQS call error as operation and code only, for one table cell.
fn short_error<E, R>(
    operation: &'static str,
) -> impl FnOnce(aws_sdk_sqs::error::SdkError<E, R>) -> String
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    move |e| {
        let e = riffle_aws::AwsError::from_sdk(operation, e);
        format!("{operation}: {}", e.code().unwrap_or("failed"))
    }
}

/// Every queue of `topology` with its approximate counts.
///
/// # Errors
/// None per queue (a queue that cannot be read carries its error); kept for symmetry.
pub async fn list(
    sqs: &aws_sdk_sqs::Client,
    topology: &Topology,
) -> Result<Vec<QueueDepth>, OpsError> {
    let mut out = Vec::with_capacity(topology.queues.len());
    for queue in &topology.queues {
        let mut depth = QueueDepth {
            queue: queue.clone(),
            url: None,
            visible: 0,
            in_flight: 0,
            error: None,
        };
        match counts(sqs, &queue.name).await {
            Ok((url, visible, in_flight)) => {
                depth.url = Some(url);
                depth.visible = visible;
                depth.in_flight = in_flight;
            }
            Err(e) => depth.error = Some(e),
        }
        out.push(depth);
    }
    Ok(out)
}

async fn counts(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<(String, u64, u64), String> {
    let url = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(short_error("GetQueueUrl"))?
        .queue_url
        .ok_or_else(|| "GetQueueUrl: no URL".to_owned())?;
    let out = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(short_error("GetQueueAttributes"))?;
    let attrs = out.attributes();
    let get = |a: QueueAttributeName| {
        attrs
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        url,
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

async fn url_of(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, OpsError> {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(sqs_error("GetQueueUrl"))?
        .queue_url
        .ok_or_else(|| OpsError::Aws(format!("GetQueueUrl {name}: no URL")))
}

/// The URL of `queue`: a URL as it is, else a logical id or name of the templates' queues,
/// else a queue name as it is.
///
/// # Errors
/// The queue does not exist.
pub async fn resolve_queue(
    sqs: &aws_sdk_sqs::Client,
    topology: &Topology,
    queue: &str,
) -> Result<String, OpsError> {
    if queue.starts_with("http://") || queue.starts_with("https://") {
        return Ok(queue.to_owned());
    }
    let name = topology.queue(queue).map_or(queue, |q| q.name.as_str());
    url_of(sqs, name).await.map_err(|e| {
        OpsError::Usage(format!(
            "no queue {queue:?} ({e}); `riffle dlq list` shows the queues"
        ))
    })
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    /// SQS message id.
    pub message_id: String,
    /// Handle to delete it or change its visibility.
    pub receipt_handle: String,
    /// Its body, read.
    pub message: DeadLetter,
}

async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max: usize,
    visibility_secs: i32,
) -> Result<Vec<Received>, OpsError> {
    let mut out: Vec<Received> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut empty = 0;
    while out.len() < max && empty < EMPTY_RECEIVES {
        let want = (max - out.len()).min(SQS_BATCH_MAX);
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(want).unwrap_or(1))
            .visibility_timeout(visibility_secs)
            .send()
            .await
            .map_err(sqs_error("ReceiveMessage"))?;
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in messages {
            let (Some(id), Some(handle)) = (m.message_id, m.receipt_handle) else {
                continue;
            };
            if !seen.insert(id.clone()) {
                continue;
            }
            out.push(Received {
                message_id: id,
                receipt_handle: handle,
                message: parse_message(m.body.as_deref().unwrap_or_default()),
            });
        }
    }
    Ok(out)
}

/// Makes messages visible again (they were only looked at).
async fn release_messages(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    messages: &[&Received],
) -> Result<(), OpsError> {
    for chunk in messages.chunks(SQS_BATCH_MAX) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&m.receipt_handle)
                    .visibility_timeout(0)
                    .build()
                    .map_err(sqs_error("ChangeMessageVisibilityBatch entry"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        sqs.change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(sqs_error("ChangeMessageVisibilityBatch"))?;
    }
    Ok(())
}

/// Reads up to `max` messages without consuming them (they are visible again afterwards).
///
/// # Errors
/// SQS failed.
pub async fn show(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    max: usize,
) -> Result<Vec<Received>, OpsError> {
    let messages = receive(sqs, url, max, SHOW_VISIBILITY_SECS).await?;
    release_messages(sqs, url, &messages.iter().collect::<Vec<_>>()).await?;
    Ok(messages)
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Messages read.
    pub messages: usize,
    /// Messages whose records were all put and which were deleted (dry: would be).
    pub redriven: usize,
    /// Records put (dry: would be), per stream.
    pub records: BTreeMap<String, usize>,
    /// Messages left on the queue, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Puts the records of up to `max` messages back on their stages' input streams and deletes
/// each message once all its records are in; with `dry_run`, only reports what it would do.
/// Messages that cannot be redriven stay on the queue, visible again.
///
/// # Errors
/// SQS or Kinesis failed as a whole; records already put stay put and their message stays.
pub async fn redrive(
    sdk: &aws_config::SdkConfig,
    topology: &Topology,
    url: &str,
    max: usize,
    dry_run: bool,
    mut progress: impl FnMut(&str),
) -> Result<RedriveReport, OpsError> {
    let sqs = riffle_aws::sqs_client(sdk);
    let kinesis = riffle_aws::kinesis_client(sdk);
    let publisher = KinesisPublisher::new(kinesis.clone(), PublishConfig::default());
    let messages = receive(&sqs, url, max, REDRIVE_VISIBILITY_SECS).await?;
    let mut report = RedriveReport {
        messages: messages.len(),
        ..RedriveReport::default()
    };
    let mut keep: Vec<&Received> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let read = read_ranges(&kinesis, &stream_ranges(&m.message, topology)).await;
        let plan =
            match read.and_then(|read| redrive_plan(&m.message, &m.message_id, topology, &read)) {
                Ok(plan) => plan,
                Err(reason) => {
                    progress(&format!(
                        "[{}/{}] {}: skipped: {reason}",
                        i + 1,
                        messages.len(),
                        m.message_id
                    ));
                    report.skipped.push((m.message_id.clone(), reason));
                    keep.push(m);
                    continue;
                }
            };
        if dry_run {
            for (stream, records) in &plan.puts {
                *report.records.entry(stream.clone()).or_default() += records.len();
            }
            report.redriven += 1;
            keep.push(m);
            continue;
        }
        let mut failed = None;
        for (stream, records) in &plan.puts {
            let n = records.len();
            let outcome = publisher
                .put_all(stream, records.clone())
                .await
                .map_err(|e| OpsError::Aws(format!("PutRecords {stream}: {e}")))?;
            if let Some(f) = outcome.failed.first() {
                failed = Some(format!(
                    "{} of {n} records not put on {stream}: {}",
                    outcome.failed.len(),
                    f.error
                ));
                break;
            }
            *report.records.entry(stream.clone()).or_default() += n;
        }
        if let Some(reason) = failed {
            progress(&format!(
                "[{}/{}] {}: kept: {reason}",
                i + 1,
                messages.len(),
                m.message_id
            ));
            report.skipped.push((m.message_id.clone(), reason));
            keep.push(m);
            continue;
        }
        delete(&sqs, url, m).await?;
        report.redriven += 1;
        progress(&format!(
            "[{}/{}] {}: {} records put on {}, message deleted",
            i + 1,
            messages.len(),
            m.message_id,
            plan.records(),
            plan.puts.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    release_messages(&sqs, url, &keep).await?;
    Ok(report)
}

async fn delete(sqs: &aws_sdk_sqs::Client, url: &str, m: &Received) -> Result<(), OpsError> {
    let entry = DeleteMessageBatchRequestEntry::builder()
        .id("0")
        .receipt_handle(&m.receipt_handle)
        .build()
        .map_err(sqs_error("DeleteMessageBatch entry"))?;
    let out = sqs
        .delete_message_batch()
        .queue_url(url)
        .entries(entry)
        .send()
        .await
        .map_err(sqs_error("DeleteMessageBatch"))?;
    if let Some(f) = out.failed.first() {
        return Err(OpsError::Aws(format!(
            "message {} redriven but not deleted ({}: {}); it will be redriven again",
            m.message_id,
            f.code,
            f.message.as_deref().unwrap_or_default()
        )));
    }
    Ok(())
}

/// The `list` table.
pub fn render_list(depths: &[QueueDepth]) -> String {
    let mut out = format!(
        "{:<24} {:<24} {:>9} {:>9}  {}\n",
        "QUEUE", "WRITTEN BY", "MESSAGES", "IN FLIGHT", "NOTE"
    );
    for d in depths {
        let stages = if d.queue.stages.is_empty() {
            "-".to_owned()
        } else {
            d.queue.stages.join(",")
        };
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:>9} {:>9}  {}",
            d.queue.name,
            stages,
            d.visible,
            d.in_flight,
            d.error.as_deref().unwrap_or("")
        );
    }
    out
}

/// One message, readable, with the records [`stream_ranges`] named as read back (or why
/// they could not be).
pub fn render_message(m: &Received, read: &Result<Vec<Vec<StreamRecord>>, String>) -> String {
    let mut out = format!("message {}\n", m.message_id);
    let summarize = |out: &mut String, data: &[u8]| {
        for line in summarize_record(data) {
            let _ = writeln!(out, "      {line}");
        }
    };
    let mut read_back = match read {
        Ok(ranges) => ranges.iter().map(|r| Ok(r.as_slice())).collect(),
        Err(e) => vec![Err(e.as_str())],
    }
    .into_iter();
    match &m.message {
        DeadLetter::Unreadable(reason) => {
            let _ = writeln!(out, "  unreadable: {reason}");
        }
        DeadLetter::Rejects(rejects) => {
            let _ = writeln!(out, "  {} rejected/parked records", rejects.len());
            for r in rejects {
                let _ = writeln!(
                    out,
                    "  - {} by {}: {} | shard {} seq {} key {}",
                    r.code, r.stage, r.detail, r.shard_id, r.sequence_number, r.partition_key
                );
                match r.data() {
                    Ok(d) if !d.is_empty() => summarize(&mut out, &d),
                    _ => match read_back.next() {
                        Some(Ok([(_, data), ..])) => {
                            let _ = writeln!(out, "      (too big for SQS; read from the stream)");
                            summarize(&mut out, data);
                        }
                        Some(Err(e)) => {
                            let _ = writeln!(out, "      (not in the message: {e})");
                        }
                        _ => {
                            let _ = writeln!(out, "      (no bytes in the message)");
                        }
                    },
                }
            }
        }
        DeadLetter::Failure(f) => {
            let info = &f.kinesis_batch_info;
            let _ = writeln!(
                out,
                "  on-failure: {} from {} after {} invocations | stream {} shard {} seq {}..{} | {} records",
                f.request_context.condition.as_str(),
                f.request_context.function_arn,
                f.request_context.approximate_invoke_count,
                info.stream_name(),
                info.shard_id,
                info.start_sequence_number,
                info.end_sequence_number,
                info.batch_size,
            );
            match read_back.next() {
                Some(Ok(records)) => {
                    for (key, data) in records {
                        let _ = writeln!(out, "  - key {key}");
                        summarize(&mut out, data);
                    }
                }
                Some(Err(e)) => {
                    let _ = writeln!(out, "  records not readable from the stream: {e}");
                }
                None => {}
            }
        }
    }
    out
}

/// `riffle dlq`.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    /// The templates folder (default: infra/ of this checkout).
    #[arg(long, global = true)]
    pub infra: Option<PathBuf>,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Clone, Subcommand)]
enum DlqCommand {
    /// Every dead-letter and rejects queue, who writes it, and its approximate message count.
    List,
    /// Print messages readably without consuming them.
    Show {
        /// Queue name (riffle-enricher-dlq), template logical id (EnricherDlq) or URL.
        queue: String,
        /// Most messages to print.
        #[arg(long, default_value_t = 10)]
        max: usize,
    },
    /// Put the records of messages back on their stage's input stream, then delete them.
    Redrive {
        /// Queue name, template logical id or URL.
        queue: String,
        /// Most messages to redrive.
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// Report what would be put; put and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `riffle dlq ...`.
pub async fn main(args: DlqArgs) -> ExitCode {
    match run_command(args).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_command(args: DlqArgs) -> Result<String, OpsError> {
    let infra = match args.infra {
        Some(dir) => dir,
        None => riffle_plan::project_root()?.join("infra"),
    };
    let topology = topology(&riffle_plan::plan(&infra)?);
    let sdk = riffle_aws::sdk_config().await;
    let sqs = riffle_aws::sqs_client(&sdk);
    match args.command {
        DlqCommand::List => {
            let depths = list(&sqs, &topology).await?;
            let failed = depths.iter().filter(|d| d.error.is_some()).count();
            if failed > 0 {
                eprint!("{}", render_list(&depths));
                return Err(OpsError::Aws(format!(
                    "{failed} of {} queues could not be read",
                    depths.len()
                )));
            }
            Ok(render_list(&depths))
        }
        DlqCommand::Show { queue, max } => {
            let url = resolve_queue(&sqs, &topology, &queue).await?;
            let messages = show(&sqs, &url, max).await?;
            let kinesis = riffle_aws::kinesis_client(&sdk);
            let mut out = format!(
                "{} messages read from {url} (left on the queue)\n",
                messages.len()
            );
            for m in &messages {
                let read = read_ranges(&kinesis, &stream_ranges(&m.message, &topology)).await;
                out.push_str(&render_message(m, &read));
            }
            Ok(out)
        }
        DlqCommand::Redrive {
            queue,
            max,
            dry_run,
        } => {
            let url = resolve_queue(&sqs, &topology, &queue).await?;
            let r = redrive(&sdk, &topology, &url, max, dry_run, |l| eprintln!("{l}")).await?;
            let verb = if dry_run { "would redrive" } else { "redrove" };
            let mut out = format!(
                "{verb} {} of {} messages: {:?} records per stream; {} left on the queue\n",
                r.redriven,
                r.messages,
                r.records,
                r.skipped.len()
            );
            for (id, reason) in &r.skipped {
                let _ = writeln!(out, "  kept {id}: {reason}");
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn infra() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../infra")
    }

    #[test]
    fn the_templates_name_every_queue_and_who_writes_it() {
        let t = topology(&riffle_plan::plan(&infra()).unwrap());
        let by_name: BTreeMap<&str, Vec<&str>> = t
            .queues
            .iter()
            .map(|q| {
                (
                    q.name.as_str(),
                    q.stages.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(by_name["riffle-rejects"], vec!["validator"]);
        assert_eq!(by_name["riffle-validator-dlq"], vec!["validator"]);
        assert_eq!(by_name["riffle-enricher-dlq"], vec!["enricher"]);
        assert_eq!(by_name["riffle-aggregator-dlq"], vec!["aggregator"]);
        assert_eq!(by_name["riffle-archiver-dlq"], vec!["archiver"]);
        assert_eq!(t.stage_streams["validator"], "riffle-raw");
        assert_eq!(t.stage_streams["enricher"], "riffle-validated");
        assert_eq!(t.stage_streams["archiver"], "riffle-enriched");
        assert_eq!(t.stage_of_stream("riffle-validated"), Some("enricher"));
        assert_eq!(t.queue("EnricherDlq").unwrap().name, "riffle-enricher-dlq");
    }

    #[test]
    fn both_message_shapes_are_read_and_planned() {
        let t = topology(&riffle_plan::plan(&infra()).unwrap());
        let mut record = riffle_stage::KinesisEventRecord::default();
        record.kinesis.data = vec![9, 9];
        record.kinesis.partition_key = "pk".into();
        record.kinesis.sequence_number = "5".into();
        record.source = riffle_stage::Source::of_shard("shardId-000000000002");
        let reject = RejectMessage::new("aggregator", &record, "no_enrichment", "x".into());
        let body = serde_json::to_string(&reject).unwrap();
        let message = parse_message(&body);
        assert!(
            stream_ranges(&message, &t).is_empty(),
            "the bytes are in the message"
        );
        // Bytes that do not decode go back as they were.
        let plan = redrive_plan(&message, "m-1", &t, &[]).unwrap();
        assert_eq!(
            plan.puts["riffle-enriched"],
            vec![OutRecord {
                partition_key: "pk".into(),
                data: vec![9, 9]
            }]
        );
        // Bytes too big for SQS: read from the stage's input stream at the record's place.
        let mut empty = reject.clone();
        empty.data_base64.clear();
        let empty = parse_message(&serde_json::to_string(&empty).unwrap());
        assert_eq!(
            stream_ranges(&empty, &t),
            vec![StreamRange {
                stream: "riffle-enriched".into(),
                shard: "shardId-000000000002".into(),
                start: "5".into(),
                end: "5".into(),
            }]
        );
        assert!(redrive_plan(&empty, "m-2", &t, &[]).is_err());
        let read = vec![vec![("pk".to_owned(), vec![7u8])]];
        assert_eq!(
            redrive_plan(&empty, "m-2", &t, &read).unwrap().puts["riffle-enriched"][0].data,
            vec![7]
        );

        // Lambda's message names positions only; the records come from the stream.
        let failure = r#"{
            "requestContext": {"requestId": "r", "functionArn": "f",
                "condition": "RecordAgeExceeded", "approximateInvokeCount": 1},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "version": "1.0", "timestamp": "2026-01-01T00:00:00.000Z",
            "KinesisBatchInfo": {"shardId": "shardId-1", "startSequenceNumber": "1",
                "endSequenceNumber": "2", "batchSize": 2,
                "streamArn": "arn:aws:kinesis:us-east-1:1:stream/riffle-validated"}}"#;
        let message = parse_message(failure);
        let DeadLetter::Failure(f) = &message else {
            panic!("not read as a failure");
        };
        assert_eq!(f.kinesis_batch_info.stream_name(), "riffle-validated");
        assert_eq!(
            stream_ranges(&message, &t),
            vec![StreamRange {
                stream: "riffle-validated".into(),
                shard: "shardId-1".into(),
                start: "1".into(),
                end: "2".into(),
            }]
        );
        let one = vec![vec![("a".to_owned(), vec![1u8])]];
        let short = redrive_plan(&message, "m-3", &t, &one).unwrap_err();
        assert!(short.contains("1 records read"), "{short}");
        let two = vec![vec![
            ("a".to_owned(), vec![1u8]),
            ("b".to_owned(), vec![2u8]),
        ]];
        let plan = redrive_plan(&message, "m-3", &t, &two).unwrap();
        assert_eq!(plan.puts["riffle-validated"].len(), 2);
        assert!(matches!(parse_message("{}"), DeadLetter::Unreadable(_)));
        assert!(matches!(parse_message("nope"), DeadLetter::Unreadable(_)));
    }

    #[test]
    fn records_summarize_without_panicking() {
        assert!(
            summarize_record(&[])
                .first()
                .unwrap()
                .starts_with("undecodable")
        );
        assert!(
            summarize_record(&[0, 0, 0, 0, 7, 1, 2])
                .first()
                .unwrap()
                .starts_with("undecodable")
        );
    }
}
