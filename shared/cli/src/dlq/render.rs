//! Queues and messages as text for a terminal.

use super::message::{DeadLetter, StreamRecord, summarize_record};
use super::queue::{QueueDepth, Received};
use std::fmt::Write as _;

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
