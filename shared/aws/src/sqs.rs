//! Sending messages to an SQS queue with SendMessageBatch, within SQS' limits, retrying
//! the entries SQS failed on its side.

use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use crate::AwsError;
use crate::backoff::full_jitter;

pub use crate::limits::{
    SQS_BATCH_MAX_ENTRIES as SEND_BATCH_MAX_ENTRIES, SQS_MESSAGE_MAX_BYTES as MESSAGE_MAX_BYTES,
};
/// SendMessageBatch limit: bytes per request, bodies and attributes together.
pub const SEND_BATCH_MAX_BYTES: usize = 256 * 1024;
/// Attempts per message, the first included.
pub const SEND_MAX_ATTEMPTS: u32 = 5;
const BASE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsMessage {
    /// The caller's id for the message, echoed in failures.
    pub id: String,
    /// The body.
    pub body: String,
    /// String message attributes.
    pub attributes: Vec<(String, String)>,
}

const STRING_TYPE: &str = "String";

impl SqsMessage {
    /// The size SQS counts against its limits.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(k, v)| k.len() + v.len() + STRING_TYPE.len())
                .sum::<usize>()
    }
}

/// A message that was not sent.
#[derive(Debug, Clone)]
pub struct FailedMessage {
    /// Index in the input.
    pub index: usize,
    /// The caller's id.
    pub id: String,
    /// Why.
    pub error: AwsError,
}

/// What [`SqsSender::send_all`] did.
#[derive(Debug, Clone, Default)]
pub struct SendOutcome {
    /// Messages sent.
    pub sent: usize,
    /// Messages not sent, sorted by index.
    pub failed: Vec<FailedMessage>,
}

/// Sends messages to SQS queues. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqsSender {
    client: aws_sdk_sqs::Client,
}

impl SqsSender {
    /// A sender over `client`.
    pub fn new(client: aws_sdk_sqs::Client) -> Self {
        Self { client }
    }

    /// Sends `messages` to `queue_url`, reporting each message that finally failed.
    ///
    /// # Errors
    /// A call error that no retry can fix (unknown queue, access denied).
    pub async fn send_all(
        &self,
        queue_url: &str,
        messages: Vec<SqsMessage>,
    ) -> Result<SendOutcome, AwsError> {
        let mut outcome = SendOutcome::default();
        let mut valid = Vec::with_capacity(messages.len());
        for (index, message) in messages.into_iter().enumerate() {
            if message.size() > MESSAGE_MAX_BYTES {
                outcome.failed.push(FailedMessage {
                    index,
                    error: AwsError::TooLarge {
                        bytes: message.size(),
                        limit: MESSAGE_MAX_BYTES,
                    },
                    id: message.id,
                });
            } else {
                valid.push((index, message));
            }
        }
        for batch in plan_batches(valid) {
            self.send_batch(queue_url, batch, &mut outcome).await?;
        }
        outcome.failed.sort_by_key(|f| f.index);
        Ok(outcome)
    }

    async fn send_batch(
        &self,
        queue_url: &str,
        batch: Vec<(usize, SqsMessage)>,
        outcome: &mut SendOutcome,
    ) -> Result<(), AwsError> {
        let mut pending = batch;
        let mut attempt: u32 = 0;
        while !pending.is_empty() {
            if attempt > 0 {
                tokio::time::sleep(full_jitter(attempt - 1, BASE_BACKOFF, MAX_BACKOFF)).await;
            }
            attempt += 1;
            let last_attempt = attempt >= SEND_MAX_ATTEMPTS;
            let mut entries = Vec::with_capacity(pending.len());
            for (index, message) in &pending {
                entries.push(entry(*index, message)?);
            }
            let result = self
                .client
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    let e = AwsError::from_sdk("SendMessageBatch", e);
                    if !e.retryable() {
                        return Err(e);
                    }
                    if last_attempt {
                        for (index, message) in pending.drain(..) {
                            outcome.failed.push(FailedMessage {
                                index,
                                id: message.id,
                                error: e.clone(),
                            });
                        }
                    }
                    continue;
                }
            };
            let mut retry = Vec::new();
            let failures = response.failed();
            for (index, message) in pending.drain(..) {
                let entry_id = entry_id(index);
                match failures.iter().find(|f| f.id() == entry_id) {
                    None => outcome.sent += 1,
                    Some(f) => {
                        let error = AwsError::Entry {
                            code: f.code().to_owned(),
                            message: f.message().unwrap_or_default().to_owned(),
                        };
                        // SQS marks its own faults with sender_fault = false.
                        if !f.sender_fault() && !last_attempt {
                            retry.push((index, message));
                        } else {
                            outcome.failed.push(FailedMessage {
                                index,
                                id: message.id,
                                error,
                            });
                        }
                    }
                }
            }
            pending = retry;
        }
        Ok(())
    }
}

/// Entry ids only need to be unique in a request and match `[A-Za-z0-9_-]{1,80}`; the
/// input index is, and needs no escaping of the caller's id.
fn entry_id(index: usize) -> String {
    format!("m{index}")
}

fn entry(index: usize, message: &SqsMessage) -> Result<SendMessageBatchRequestEntry, AwsError> {
    let build_error = |e: aws_sdk_sqs::error::BuildError| AwsError::Call {
        operation: "SendMessageBatch",
        code: "BuildError".to_owned(),
        message: e.to_string(),
        retryable: false,
    };
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(entry_id(index))
        .message_body(message.body.clone());
    for (name, value) in &message.attributes {
        let attribute = MessageAttributeValue::builder()
            .data_type(STRING_TYPE)
            .string_value(value.clone())
            .build()
            .map_err(build_error)?;
        builder = builder.message_attributes(name.clone(), attribute);
    }
    builder.build().map_err(build_error)
}

/// Cuts messages into SendMessageBatch requests, in order.
fn plan_batches(messages: Vec<(usize, SqsMessage)>) -> Vec<Vec<(usize, SqsMessage)>> {
    let mut batches = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for item in messages {
        let size = item.1.size();
        if !current.is_empty()
            && (current.len() >= SEND_BATCH_MAX_ENTRIES || bytes + size > SEND_BATCH_MAX_BYTES)
        {
            batches.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(item);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn msg(len: usize) -> SqsMessage {
        SqsMessage {
            id: "x".into(),
            body: "b".repeat(len),
            attributes: vec![("reason".into(), "bad".into())],
        }
    }

    #[test]
    fn batches_respect_entry_and_byte_limits() {
        let small: Vec<_> = (0..25).map(|i| (i, msg(10))).collect();
        let sizes: Vec<usize> = plan_batches(small).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 5]);
        let big: Vec<_> = (0..5).map(|i| (i, msg(100 * 1024))).collect();
        let batches = plan_batches(big);
        assert_eq!(batches.len(), 3);
        for b in &batches {
            assert!(b.iter().map(|(_, m)| m.size()).sum::<usize>() <= SEND_BATCH_MAX_BYTES);
        }
    }

    #[test]
    fn size_counts_attributes() {
        assert_eq!(
            msg(10).size(),
            10 + "reason".len() + "bad".len() + "String".len()
        );
    }
}
