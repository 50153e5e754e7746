//! Lambda's on-failure record for a Kinesis event source, the one definition that the local
//! runtime writes and the operator tools read.
//!
//! Lambda sends metadata only: which shard, which sequence numbers (first and last), how
//! many records, why, and when. The records themselves stay on the stream for its retention
//! period and are read back by position ([`crate::stream_read`]), so `riffle dlq redrive`
//! works the same on AWS and locally.

use serde::{Deserialize, Serialize};

/// The message as Lambda writes it (field names are Lambda's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnFailure {
    /// The invocation's request.
    pub request_context: RequestContext,
    /// What the function answered last.
    pub response_context: ResponseContext,
    /// Format version, `1.0`.
    pub version: String,
    /// When the records were given up on (RFC 3339, milliseconds).
    pub timestamp: String,
    /// The records given up on, by position.
    #[serde(rename = "KinesisBatchInfo")]
    pub kinesis_batch_info: KinesisBatchInfo,
}

/// Why and by whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// The request's id.
    pub request_id: String,
    /// The function that gave up.
    pub function_arn: String,
    /// Why it gave up.
    pub condition: Condition,
    /// How often the records were handed to the function.
    pub approximate_invoke_count: u32,
}

/// The function's last answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseContext {
    /// HTTP status of the invocation.
    pub status_code: u16,
    /// The version that ran.
    pub executed_version: String,
    /// `Unhandled` or `Handled` when the function failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_error: Option<String>,
}

/// Which records, by position on the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisBatchInfo {
    /// The shard.
    pub shard_id: String,
    /// Sequence number of the first record.
    pub start_sequence_number: String,
    /// Sequence number of the last record.
    pub end_sequence_number: String,
    /// When the first record reached the stream.
    #[serde(default)]
    pub approximate_arrival_of_first_record: Option<String>,
    /// When the last one did.
    #[serde(default)]
    pub approximate_arrival_of_last_record: Option<String>,
    /// How many Kinesis records (an aggregate counts once).
    pub batch_size: u64,
    /// The stream.
    pub stream_arn: String,
}

/// Why Lambda gave up on records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The batch failed more often than `MaximumRetryAttempts` allows.
    RetryAttemptsExhausted,
    /// The records became older than `MaximumRecordAgeInSeconds`.
    RecordAgeExceeded,
    /// A condition this version does not know; the message is still read.
    #[serde(other)]
    Other,
}

impl Condition {
    /// The name Lambda uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Condition::RecordAgeExceeded => "RecordAgeExceeded",
            Condition::Other => "Other",
        }
    }
}

impl OnFailure {
    /// Reads a message body.
    ///
    /// # Errors
    /// The body is not an on-failure message.
    pub fn parse(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }

    /// The message body.
    pub fn to_body(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl KinesisBatchInfo {
    /// The stream's name, from its ARN.
    pub fn stream_name(&self) -> &str {
        stream_name(&self.stream_arn)
    }
}

/// A stream's name from its ARN (`arn:aws:kinesis:<region>:<account>:stream/<name>`), or
/// the text itself when it is no ARN.
pub fn stream_name(arn: &str) -> &str {
    arn.rsplit_once(":stream/").map_or(arn, |(_, name)| name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Lambda's documented example of an on-failure record for a Kinesis source.
    const LAMBDA_EXAMPLE: &str = r#"{
        "requestContext": {
            "requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
            "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 1
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled"
        },
        "version": "1.0",
        "timestamp": "2019-11-14T00:38:06.021Z",
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000001",
            "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
            "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
            "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
            "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
            "batchSize": 500,
            "streamArn": "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"
        }
    }"#;

    #[test]
    fn reads_and_writes_lambdas_own_example() {
        let m = OnFailure::parse(LAMBDA_EXAMPLE).unwrap();
        assert_eq!(
            m.request_context.condition,
            Condition::RetryAttemptsExhausted
        );
        assert_eq!(m.kinesis_batch_info.batch_size, 500);
        assert_eq!(m.kinesis_batch_info.stream_name(), "mystream");
        let back: serde_json::Value = serde_json::from_str(&m.to_body()).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(LAMBDA_EXAMPLE).unwrap();
        assert_eq!(back, theirs);
    }

    #[test]
    fn unknown_conditions_and_other_shapes() {
        let odd = LAMBDA_EXAMPLE.replace("RetryAttemptsExhausted", "SomethingNew");
        assert_eq!(
            OnFailure::parse(&odd).unwrap().request_context.condition,
            Condition::Other
        );
        assert!(OnFailure::parse(r#"{"records": []}"#).is_err());
        assert!(OnFailure::parse("not json").is_err());
        assert_eq!(stream_name("plain"), "plain");
    }
}
