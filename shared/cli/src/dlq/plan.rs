//! What a redrive puts back for one message (pure): each record re-encoded with a new origin
//! addressed to the stage that gave up (ADR 0010).

use super::message::{DeadLetter, StreamRecord};
use super::topology::Topology;
use riffle_aws::OutRecord;
use riffle_codec::EnvelopeCodec;
use riffle_stage::dedup::redrive_origin;
use std::collections::BTreeMap;

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
            let opened = riffle_codec::kpl::open(&data);
            match riffle_codec::kpl::records_of(&opened) {
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
pub(super) fn restamp(data: &[u8], stage: &str, message_id: &str, index: usize) -> Option<Vec<u8>> {
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
