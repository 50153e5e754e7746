//! Ports where a stage crosses into the world, with their AWS implementations.
//!
//! Handlers take these as generic parameters so that their logic is tested with the same code
//! paths as in production: the AWS implementations are tested against the local emulators.

use std::future::Future;

use riffle_aws::{AwsError, KinesisPublisher, OutRecord, SqsMessage, SqsSender};

/// A port call that failed as a whole (not per record).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct OutputError(#[from] pub AwsError);

impl OutputError {
    /// Whether retrying the batch may help.
    pub fn retryable(&self) -> bool {
        self.0.retryable()
    }
}

/// The next stage's stream.
pub trait Output: Send + Sync {
    /// Writes `records`; returns the indexes of records that finally failed.
    fn publish(
        &self,
        records: Vec<OutRecord>,
    ) -> impl Future<Output = Result<Vec<usize>, OutputError>> + Send;
}

/// Where rejected records go.
pub trait Rejects: Send + Sync {
    /// Sends `messages`; returns the indexes of messages that finally failed.
    fn reject(
        &self,
        messages: Vec<SqsMessage>,
    ) -> impl Future<Output = Result<Vec<usize>, OutputError>> + Send;
}

/// [`Output`] on a Kinesis stream.
#[derive(Debug)]
pub struct KinesisOutput {
    publisher: KinesisPublisher,
    stream: String,
}

impl KinesisOutput {
    /// Publishes to `stream` through `publisher`.
    pub fn new(publisher: KinesisPublisher, stream: impl Into<String>) -> Self {
        KinesisOutput {
            publisher,
            stream: stream.into(),
        }
    }
}

impl Output for KinesisOutput {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<Vec<usize>, OutputError> {
        let outcome = self.publisher.put_all(&self.stream, records).await?;
        for failed in outcome.failed.iter().take(3) {
            tracing::warn!(index = failed.index, error = %failed.error, "record not written");
        }
        Ok(outcome.failed.into_iter().map(|f| f.index).collect())
    }
}

/// [`Rejects`] on an SQS queue.
#[derive(Debug)]
pub struct SqsRejects {
    sender: SqsSender,
    queue_url: String,
}

impl SqsRejects {
    /// Sends to `queue_url` through `sender`.
    pub fn new(sender: SqsSender, queue_url: impl Into<String>) -> Self {
        SqsRejects {
            sender,
            queue_url: queue_url.into(),
        }
    }
}

impl Rejects for SqsRejects {
    async fn reject(&self, messages: Vec<SqsMessage>) -> Result<Vec<usize>, OutputError> {
        let (packed, members) = pack_rejects(messages);
        let outcome = self.sender.send_all(&self.queue_url, packed).await?;
        for failed in outcome.failed.iter().take(3) {
            tracing::warn!(index = failed.index, error = %failed.error, "rejects not sent");
        }
        let mut failed: Vec<usize> = outcome
            .failed
            .iter()
            .filter_map(|f| members.get(f.index))
            .flatten()
            .copied()
            .collect();
        failed.sort_unstable();
        Ok(failed)
    }
}

/// Room left in an SQS message for the batch wrapper and attributes.
const PACK_HEADROOM: usize = 1024;

/// Packs reject messages (each body one [`crate::RejectMessage`] as JSON) into as few SQS
/// messages as fit the size limit, each body a [`crate::reject::RejectBatch`]. Returns the
/// packed messages and, for each, the input indexes inside it. A message too big to share
/// is sent alone, as it is, and fails (or not) on its own.
pub fn pack_rejects(messages: Vec<SqsMessage>) -> (Vec<SqsMessage>, Vec<Vec<usize>>) {
    const HEAD: &str = "{\"rejects\":[";
    let limit = riffle_aws::sqs::MESSAGE_MAX_BYTES - PACK_HEADROOM;
    let mut packed = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    let mut body = String::new();
    let mut inside = Vec::new();
    let mut stage = String::new();
    let flush = |body: &mut String,
                 inside: &mut Vec<usize>,
                 stage: &str,
                 packed: &mut Vec<SqsMessage>,
                 members: &mut Vec<Vec<usize>>| {
        if inside.is_empty() {
            return;
        }
        body.push_str("]}");
        packed.push(SqsMessage {
            id: packed.len().to_string(),
            body: std::mem::take(body),
            attributes: vec![
                ("stage".to_string(), stage.to_string()),
                ("count".to_string(), inside.len().to_string()),
            ],
        });
        members.push(std::mem::take(inside));
    };
    for (i, m) in messages.into_iter().enumerate() {
        if m.body.len() + HEAD.len() + 2 > limit {
            flush(&mut body, &mut inside, &stage, &mut packed, &mut members);
            packed.push(SqsMessage {
                id: packed.len().to_string(),
                ..m
            });
            members.push(vec![i]);
            continue;
        }
        if !inside.is_empty() && body.len() + 1 + m.body.len() + 2 > limit {
            flush(&mut body, &mut inside, &stage, &mut packed, &mut members);
        }
        if inside.is_empty() {
            body.push_str(HEAD);
            stage = m
                .attributes
                .iter()
                .find(|(k, _)| k == "stage")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
        } else {
            body.push(',');
        }
        body.push_str(&m.body);
        inside.push(i);
    }
    flush(&mut body, &mut inside, &stage, &mut packed, &mut members);
    (packed, members)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::RejectMessage;
    use crate::reject::parse_body;

    fn reject(i: usize, size: usize) -> SqsMessage {
        let mut record = riffle_runtime::KinesisEventRecord::default();
        record.kinesis.sequence_number = i.to_string();
        record.kinesis.data = vec![7; size];
        RejectMessage::new("validator", &record, "bad_magic", format!("#{i}")).to_sqs(i.to_string())
    }

    #[test]
    fn packs_rejects_into_few_messages_and_keeps_every_one() {
        let input: Vec<_> = (0..300).map(|i| reject(i, 2_000)).collect();
        let (packed, members) = pack_rejects(input);
        assert!(packed.len() < 10, "{} messages", packed.len());
        let mut seen = Vec::new();
        for (m, inside) in packed.iter().zip(&members) {
            assert!(m.size() <= riffle_aws::sqs::MESSAGE_MAX_BYTES);
            let rejects = parse_body(&m.body).unwrap();
            assert_eq!(rejects.len(), inside.len());
            for (r, i) in rejects.iter().zip(inside) {
                assert_eq!(r.sequence_number, i.to_string());
            }
            seen.extend(inside.iter().copied());
        }
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
    }

    #[test]
    fn an_oversize_reject_goes_alone() {
        let (packed, members) =
            pack_rejects(vec![reject(0, 10), reject(1, 300_000), reject(2, 10)]);
        assert_eq!(members, vec![vec![0], vec![1], vec![2]]);
        assert_eq!(packed.len(), 3);
    }
}
