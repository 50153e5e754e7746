//! Grouping: the rows a batch writes, one Parquet object per (partition, shard), each named
//! by its shard and first and last sequence numbers and encoded with the footer recovery
//! reads back.

use std::collections::HashSet;

use md5::{Digest, Md5};
use riffle_stage::marks::Ticket;

use crate::ArchiverError;
use crate::intent::Intent;
use crate::rows::Fresh;
use riffle_archive::key::{Partition, cmp_sequence, object_key, tagged_key};
use riffle_archive::table::write_rows_with_metadata;

/// Footer key of an archived object: the sub-record index of each row (its index among the
/// user records of its Kinesis record), comma-separated in row order. With the row's shard
/// and sequence number it gives the row's exact position, so recovery can tell every row of
/// an object that a crashed attempt wrote.
pub const SUB_INDEXES_KEY: &str = "riffle.sub_indexes";

/// One object to write and the records it holds.
pub(crate) struct Group {
    pub(crate) shard: String,
    pub(crate) intent: Intent,
    pub(crate) body: Vec<u8>,
    pub(crate) rows: usize,
    pub(crate) tickets: Vec<Ticket>,
}

/// One object per (partition, shard) of `fresh`, encoded, in (partition, shard) order. A
/// name in `existing` (an earlier attempt's object) is never reused.
///
/// # Errors
/// A group could not be encoded.
pub(crate) fn groups(
    prefix: &str,
    fresh: Vec<Fresh>,
    existing: &HashSet<String>,
) -> Result<Vec<Group>, ArchiverError> {
    let keys = members_by_object(&fresh);
    let mut slots: Vec<Option<Fresh>> = fresh.into_iter().map(Some).collect();
    let mut groups = Vec::with_capacity(keys.len());
    for ((partition, shard), indexes) in keys {
        let members: Vec<Fresh> = indexes
            .iter()
            .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
            .collect();
        let Some((first, last)) = sequence_range(&members) else {
            continue;
        };
        let key = object_key(prefix, &partition, &shard, first, last);
        let intent = Intent {
            first_sequence: first.to_owned(),
            last_sequence: last.to_owned(),
            key: untaken(key, &members, existing),
        };
        groups.push(encode(shard, intent, members)?);
    }
    Ok(groups)
}

/// The indexes into `fresh` of each (partition, shard), sorted by it.
fn members_by_object(fresh: &[Fresh]) -> Vec<((Partition, String), Vec<usize>)> {
    // The (partition, shard) keys are few: one clone per group, not per record.
    let mut keys: Vec<((Partition, String), Vec<usize>)> = Vec::new();
    for (i, c) in fresh.iter().enumerate() {
        let found = keys
            .iter_mut()
            .find(|((p, s), _)| *p == *c.partition && *s == c.row.kinesis_shard_id);
        match found {
            Some((_, members)) => members.push(i),
            None => keys.push((
                (
                    Partition::clone(&c.partition),
                    c.row.kinesis_shard_id.clone(),
                ),
                vec![i],
            )),
        }
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys
}

/// The first and last sequence numbers among `members` (compared as numbers, not text);
/// `None` for no members.
fn sequence_range(members: &[Fresh]) -> Option<(&str, &str)> {
    let sequences = || {
        members
            .iter()
            .map(|c| c.row.kinesis_sequence_number.as_str())
    };
    let first = sequences().min_by(|a, b| cmp_sequence(a, b))?;
    let last = sequences().max_by(|a, b| cmp_sequence(a, b))?;
    Some((first, last))
}

/// `key`, or when an object already has it, `key` tagged by `members`' positions.
fn untaken(key: String, members: &[Fresh], existing: &HashSet<String>) -> String {
    if !existing.contains(&key) {
        return key;
    }
    // An earlier attempt's object under this name holds rows this group does not (they are
    // skipped as durable): a new name keeps them. Made of the rows' positions, so another
    // attempt at the same rows comes to the same name.
    let mut hasher = Md5::new();
    for c in members {
        hasher.update(c.row.kinesis_sequence_number.as_bytes());
        hasher.update(b":");
        hasher.update(c.sub.to_string().as_bytes());
        hasher.update(b"\n");
    }
    let tag: String = hasher.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tagged_key(&key, &tag)
}

/// `members` as the Parquet object of `intent`, its footer listing the rows' sub-record
/// indexes ([`SUB_INDEXES_KEY`]), with the tickets that mark them done once it is written.
fn encode(shard: String, intent: Intent, members: Vec<Fresh>) -> Result<Group, ArchiverError> {
    let subs: Vec<String> = members.iter().map(|c| c.sub.to_string()).collect();
    let mut rows = Vec::with_capacity(members.len());
    let mut tickets = Vec::with_capacity(members.len());
    for c in members {
        tickets.push(c.ticket);
        rows.push(c.row);
    }
    let body = write_rows_with_metadata(&rows, vec![(SUB_INDEXES_KEY.to_owned(), subs.join(","))])?;
    Ok(Group {
        shard,
        intent,
        body,
        rows: rows.len(),
        tickets,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use riffle_codec::EnvelopeCodec;
    use riffle_stage::testing::kinesis_event as event;

    use super::*;
    use crate::fixtures::{H16, H17, NOW, ORDER_ID, archiver, order, order_payload};
    use crate::intent::Intents;
    use riffle_archive::store::ObjectStore;
    use riffle_archive::table::read_rows;
    use riffle_archive::testing::MemoryBucket;

    /// The sub-record indexes in an object's footer, when it has one entry per row (what
    /// recovery could match rows by).
    fn sub_indexes(bytes: &[u8], rows: usize) -> Option<Vec<u32>> {
        use riffle_archive::table::{Footer, footer_key_values};
        let Ok(Footer::KeyValues(pairs)) = footer_key_values(bytes) else {
            return None;
        };
        let (_, value) = pairs.into_iter().find(|(k, _)| k == SUB_INDEXES_KEY)?;
        if rows == 0 {
            return Some(Vec::new());
        }
        let subs: Vec<u32> = value
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        (subs.len() == rows).then_some(subs)
    }

    #[tokio::test]
    async fn groups_land_under_their_partitions() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let mut page = order(H16 + 1, 1);
        page.subject = "com.riffle.web.PageView".into();
        page.event_id = "page-1".into();
        let ev = event(&[
            codec.encode(&order(H16 + 10, 1)).unwrap(),
            codec.encode(&order(H17 + 10, 2)).unwrap(),
            codec.encode(&order(H16 + 20, 3)).unwrap(),
            codec.encode(&page).unwrap(),
        ]);
        let report = arch.process(&ev, 42).await.unwrap();
        assert_eq!(report.rows, 4);
        assert_eq!(
            report.objects,
            vec![
                "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=16/shardId-000000000000-49590000-49590002.parquet",
                "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=17/shardId-000000000000-49590001-49590001.parquet",
                "events/subject=com.riffle.web.PageView/dt=2025-11-24/hour=16/shardId-000000000000-49590003-49590003.parquet",
            ]
        );
        let objects = arch.store.objects.lock().unwrap();
        let bytes = &objects[&report.objects[0]];
        let rows = read_rows(bytes).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(sub_indexes(bytes, 2), Some(vec![0, 0]));
        let first = &rows[0];
        assert_eq!(first.event_time, H16 + 10);
        assert_eq!(first.validated_at, Some(H16 + 15));
        assert_eq!(first.enriched_at, Some(H16 + 19));
        assert_eq!(first.archived_at, 42);
        assert_eq!(first.kinesis_sequence_number, "49590000");
        assert_eq!(first.kinesis_partition_key, "pk-0");
        assert_eq!(first.kinesis_shard_id, "shardId-000000000000");
        assert_eq!(first.attributes_json, r#"{"category":"books"}"#);
        assert_eq!(first.payload, order_payload(1));
        let payload: serde_json::Value = serde_json::from_str(&first.payload_json).unwrap();
        assert_eq!(payload["quantity"], 1);
        assert_eq!(payload["currency"], "USD");
        assert_eq!(rows[1].kinesis_sequence_number, "49590002");
        // One registry fetch for the one payload schema id of the batch.
        assert_eq!(arch.schemas.source().fetched(), vec![ORDER_ID as u32]);
        // Every object's intent is gone once the marks cover its rows.
        assert!(arch.intents.is_empty());
    }

    #[tokio::test]
    async fn a_taken_key_is_never_overwritten() {
        let arch = archiver(MemoryBucket::default(), false);
        let codec = EnvelopeCodec::new(7).unwrap();
        let ev = event(&[
            codec.encode(&order(H16, 1)).unwrap(),
            codec.encode(&order(H16, 2)).unwrap(),
        ]);
        // An earlier attempt's object under the very key this batch computes, holding a row
        // this batch does not have (only a released claim or an expired one gets here).
        let key = "events/subject=com.riffle.shop.OrderPlaced/dt=2025-11-24/hour=16/shardId-000000000000-49590000-49590001.parquet";
        let mut ghost = riffle_archive::testing::sample_row(1);
        ghost.event_id = "ghost".into();
        ghost.kinesis_shard_id = "shardId-000000000000".into();
        ghost.kinesis_sequence_number = "49590000".into();
        let body =
            write_rows_with_metadata(&[ghost], vec![(SUB_INDEXES_KEY.to_owned(), "7".to_owned())])
                .unwrap();
        arch.store.put(key, body).await.unwrap();
        let intent = Intent {
            first_sequence: "49590000".into(),
            last_sequence: "49590001".into(),
            key: key.into(),
        };
        arch.intents
            .add("shardId-000000000000", &[intent], 0)
            .await
            .unwrap();
        let report = arch.process(&ev, NOW).await.unwrap();
        assert_eq!((report.rows, report.recovered), (2, 0));
        assert_ne!(report.objects, vec![key.to_owned()]);
        assert!(report.objects[0].ends_with(".parquet"));
        let counts = arch.store.rows_per_event();
        assert_eq!(counts.values().sum::<usize>(), 3);
        assert_eq!(counts["ghost"], 1);
    }
}
