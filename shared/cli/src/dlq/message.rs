//! The two message shapes on the queues, read ([`parse_message`]), and the records a
//! message names by position only, read back from the streams ([`stream_ranges`],
//! [`read_ranges`]).

use super::topology::Topology;
use riffle_aws::on_failure::OnFailure;
use riffle_codec::EnvelopeCodec;
use riffle_stage::RejectMessage;

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
        let opened = riffle_codec::kpl::open(data);
        return match riffle_codec::kpl::records_of(&opened) {
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

pub(super) fn decode_envelope(data: &[u8]) -> Result<riffle_codec::Envelope, String> {
    // The frame names the envelope's registry id; the bundled envelope schema reads it (an
    // older envelope version would need the registry and reads as undecodable here).
    let (id, _) = riffle_codec::frame::split(data).map_err(|e| e.to_string())?;
    let codec = EnvelopeCodec::new(id).map_err(|e| e.to_string())?;
    codec.decode(data).map_err(|e| e.to_string())
}
