//! The SQS side: queue depths, reading messages without consuming them, redriving and
//! deleting them.

use super::message::{DeadLetter, parse_message, read_ranges, stream_ranges};
use super::plan::redrive_plan;
use super::topology::{DeadLetterQueue, Topology};
use crate::OpsError;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, QueueAttributeName,
};
pub use riffle_aws::limits::SQS_BATCH_MAX_ENTRIES as SQS_BATCH_MAX;
use riffle_aws::{KinesisPublisher, PublishConfig};
use std::collections::{BTreeMap, BTreeSet};

/// How long `show` hides the messages it reads before making them visible again.
pub const SHOW_VISIBILITY_SECS: i32 = 30;

/// How long `redrive` hides a message while it puts its records.
pub const REDRIVE_VISIBILITY_SECS: i32 = 300;

/// Empty receives in a row that mean "nothing more to read now".
pub(super) const EMPTY_RECEIVES: u32 = 2;

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

pub(super) fn sqs_error<E: std::fmt::Debug + std::error::Error + 'static>(
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
pub(super) fn short_error<E, R>(
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

/// The queue named `name`: its URL, its approximate visible and in-flight message counts
/// (also read by `riffle alarms` for the queue-depth alarms).
///
/// # Errors
/// The queue cannot be found or read: the failed call and its error code, for one cell.
pub async fn counts(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<(String, u64, u64), String> {
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

pub(super) async fn url_of(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, OpsError> {
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

pub(super) async fn receive(
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
pub(super) async fn release_messages(
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

pub(super) async fn delete(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    m: &Received,
) -> Result<(), OpsError> {
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
