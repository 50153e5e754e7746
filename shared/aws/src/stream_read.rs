//! Reading records back from a shard by position: what an on-failure message names
//! (shard, first and last sequence number) read from the stream while it still holds them.

use std::cmp::Ordering;

use aws_sdk_kinesis::types::{Record, ShardIteratorType};

use crate::AwsError;

/// GetRecords calls one read may make before it stops: far more than a range of one failed
/// batch needs, so only a stream that keeps answering empty pages ends here.
const MAX_CALLS: usize = 1_000;

/// Why a range could not be read whole.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RangeError {
    /// The first record is no longer on the stream (past its retention period).
    #[error(
        "records from {start} on shard {shard} are no longer on the stream (past its retention){}",
        first_readable.as_deref().map(|s| format!("; the first still there is {s}")).unwrap_or_default()
    )]
    AgedOut {
        /// The shard.
        shard: String,
        /// The first sequence number asked for.
        start: String,
        /// The oldest record the shard still holds, if any.
        first_readable: Option<String>,
    },
    /// The shard ended, or stopped answering, before the last record.
    #[error("shard {shard} gave records up to {last_read:?} only, not up to {end}")]
    Incomplete {
        /// The shard.
        shard: String,
        /// The last sequence number asked for.
        end: String,
        /// The last one read.
        last_read: Option<String>,
    },
    /// Kinesis refused a call.
    #[error(transparent)]
    Aws(#[from] AwsError),
}

/// Compares two Kinesis sequence numbers (decimal strings of any length) as numbers.
pub fn sequence_cmp(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The records of `shard` of `stream` from sequence number `start` to `end`, both included,
/// in order.
///
/// # Errors
/// [`RangeError::AgedOut`] when `start` is gone, [`RangeError::Incomplete`] when `end` was
/// not reached, or a Kinesis error.
pub async fn read_range(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    start: &str,
    end: &str,
) -> Result<Vec<Record>, RangeError> {
    let aged_out = |first_readable: Option<String>| RangeError::AgedOut {
        shard: shard.to_owned(),
        start: start.to_owned(),
        first_readable,
    };
    let iterator = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(start)
        .send()
        .await;
    let mut iterator = match iterator {
        Ok(out) => out.shard_iterator,
        // Kinesis refuses a position it no longer holds.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_invalid_argument_exception()) =>
        {
            return Err(aged_out(None));
        }
        Err(e) => return Err(AwsError::from_sdk("GetShardIterator", e).into()),
    };
    let mut records: Vec<Record> = Vec::new();
    for _ in 0..MAX_CALLS {
        let Some(it) = iterator.take() else { break };
        let out = kinesis
            .get_records()
            .shard_iterator(it)
            .limit(i32::try_from(crate::limits::KINESIS_GET_RECORDS_MAX).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetRecords", e))?;
        let caught_up = out.millis_behind_latest() == Some(0);
        let page = out.records;
        if records.is_empty()
            && let Some(first) = page.first()
            && sequence_cmp(first.sequence_number(), start) != Ordering::Equal
        {
            // The iterator moved past a trimmed position to the oldest record left.
            return Err(aged_out(Some(first.sequence_number().to_owned())));
        }
        let empty = page.is_empty();
        for record in page {
            if sequence_cmp(record.sequence_number(), end) == Ordering::Greater {
                return Ok(records);
            }
            let last = sequence_cmp(record.sequence_number(), end) == Ordering::Equal;
            records.push(record);
            if last {
                return Ok(records);
            }
        }
        if empty && caught_up {
            break;
        }
        iterator = out.next_shard_iterator;
    }
    if records.is_empty() {
        return Err(aged_out(None));
    }
    Err(RangeError::Incomplete {
        shard: shard.to_owned(),
        end: end.to_owned(),
        last_read: records.last().map(|r| r.sequence_number().to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert_eq!(sequence_cmp("9", "10"), Ordering::Less);
        assert_eq!(sequence_cmp("010", "10"), Ordering::Equal);
        assert_eq!(
            sequence_cmp(
                "49590338271490256608559692538361571095921575989136588898",
                "49590338271490256608559692540925702759324208523137515618"
            ),
            Ordering::Less
        );
        assert_eq!(sequence_cmp("", "0"), Ordering::Equal);
    }
}
