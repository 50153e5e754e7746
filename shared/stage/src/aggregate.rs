//! An [`Output`] that packs records into KPL aggregates, one stream of aggregates per shard.
//!
//! Every hop between stages would otherwise cost one Kinesis record per event: the stream's
//! per-record limits (1,000 records/s per shard) and cost, and the emulator's per-record work,
//! all scale with it. Aggregating by target shard keeps Kinesis' ordering promise: a user
//! record lands in the shard its own partition key hashes to (the aggregate carries the key of
//! its first user record, which hashes to the same shard), and all aggregates for one shard in
//! one call share that key, so the publisher sends them in order, one after the other.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use riffle_aws::{AwsError, KinesisPublisher, OutRecord, PutOutcome};
use riffle_codec::kpl::{self, Aggregator};

use crate::env::{Env, EnvError};
use crate::ports::{Output, OutputError};

/// The variable that turns compressed aggregates off (`false`) for a stage's output stream,
/// for when something other than Riffle's stages reads that stream with a plain KPL library
/// (ADR 0022). On by default.
pub const COMPRESS_VAR: &str = "RIFFLE_COMPRESS_AGGREGATES";

/// Whether the stage compresses its aggregates, from [`COMPRESS_VAR`].
///
/// # Errors
/// The variable is set to something other than `true` or `false`.
pub fn compression_from<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<bool, EnvError> {
    env.parsed_or(COMPRESS_VAR, true, |_| true, "true or false")
}

/// Largest aggregate we build: close to Kinesis' 1 MiB record limit (room left for the
/// partition key and the KPL framing). Publishers keep strict order, one aggregate per shard
/// in a request (ADR 0010), so the aggregates of one shard go out one request after the
/// other: with 64 KiB aggregates a 2,000-event batch took about eight sequential PutRecords
/// calls, with these it takes one per shard. A lost aggregate is a bigger retry, which only
/// throttling causes, and a shard takes 1 MiB/s anyway.
pub const AGGREGATE_MAX_BYTES: usize = riffle_aws::kinesis::RECORD_MAX_BYTES - 8 * 1024;
/// How long a shard map is trusted; resharding shows up within this.
pub const SHARD_MAP_TTL: Duration = Duration::from_secs(60);

/// Hash key ranges of a stream's open shards, in ascending order of their start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMap {
    starts: Vec<u128>,
}

impl ShardMap {
    /// A map from the shards' starting hash keys (any order).
    pub fn new(mut starts: Vec<u128>) -> Self {
        starts.sort_unstable();
        starts.dedup();
        ShardMap { starts }
    }

    /// The index of the shard `partition_key` hashes to (Kinesis: MD5 as a 128-bit number).
    pub fn shard_of(&self, partition_key: &str) -> usize {
        let hash = u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into());
        self.starts
            .partition_point(|start| *start <= hash)
            .saturating_sub(1)
    }
}

/// Groups `records` by shard and packs each group into aggregates of at most
/// [`AGGREGATE_MAX_BYTES`], each compressed when `compress` (ADR 0022; the limit holds before
/// compressing, so a compressed aggregate carries as many events as a plain one, in about a
/// third of the bytes). Returns the aggregates and, for each, the input indexes inside it.
pub fn pack(map: &ShardMap, records: &[OutRecord], compress: bool) -> Vec<(OutRecord, Vec<usize>)> {
    let finish = |agg: &mut Aggregator| {
        let plain = agg.finish();
        if compress {
            kpl::compress(plain)
        } else {
            plain
        }
    };
    let mut by_shard: Vec<Vec<usize>> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let shard = map.shard_of(&r.partition_key);
        if by_shard.len() <= shard {
            by_shard.resize_with(shard + 1, Vec::new);
        }
        by_shard[shard].push(i);
    }
    let mut out = Vec::new();
    for members in by_shard.into_iter().filter(|m| !m.is_empty()) {
        let key = records[members[0]].partition_key.clone();
        let mut agg = Aggregator::new();
        let mut inside = Vec::new();
        for i in members {
            let r = &records[i];
            if !agg.is_empty() && agg.size_with(&r.partition_key, &r.data) > AGGREGATE_MAX_BYTES {
                out.push((
                    OutRecord {
                        partition_key: key.clone(),
                        data: finish(&mut agg),
                    },
                    std::mem::take(&mut inside),
                ));
            }
            agg.add(&r.partition_key, None, &r.data);
            inside.push(i);
        }
        out.push((
            OutRecord {
                partition_key: key,
                data: finish(&mut agg),
            },
            inside,
        ));
    }
    out
}

/// [`Output`] on a Kinesis stream, aggregated per shard.
#[derive(Debug)]
pub struct AggregatingOutput {
    client: aws_sdk_kinesis::Client,
    publisher: KinesisPublisher,
    stream: String,
    map: Mutex<Option<(Instant, ShardMap)>>,
    compress: bool,
}

impl AggregatingOutput {
    /// Publishes aggregates to `stream`; `client` reads its shard map.
    pub fn new(
        client: aws_sdk_kinesis::Client,
        publisher: KinesisPublisher,
        stream: impl Into<String>,
    ) -> Self {
        AggregatingOutput {
            client,
            publisher,
            stream: stream.into(),
            map: Mutex::new(None),
            compress: true,
        }
    }

    /// Whether aggregates go out compressed (the default; see [`compression_from`]).
    #[must_use]
    pub fn compressed(mut self, compress: bool) -> Self {
        self.compress = compress;
        self
    }

    async fn shard_map(&self) -> Result<ShardMap, AwsError> {
        if let Some((at, map)) = self.map.lock().ok().and_then(|m| m.clone())
            && at.elapsed() < SHARD_MAP_TTL
        {
            return Ok(map);
        }
        let starts = open_shard_starts(&self.client, &self.stream).await?;
        let map = ShardMap::new(starts);
        if let Ok(mut slot) = self.map.lock() {
            *slot = Some((Instant::now(), map.clone()));
        }
        Ok(map)
    }
}

impl AggregatingOutput {
    /// [`Output::publish`], with the publisher's account of the aggregates (throttles,
    /// retries, requests).
    ///
    /// # Errors
    /// As [`Output::publish`].
    pub async fn publish_counted(
        &self,
        records: Vec<OutRecord>,
    ) -> Result<(Vec<usize>, PutOutcome), OutputError> {
        if records.is_empty() {
            return Ok((Vec::new(), PutOutcome::default()));
        }
        let map = self.shard_map().await?;
        let packed = pack(&map, &records, self.compress);
        let (aggregates, members): (Vec<_>, Vec<_>) = packed.into_iter().unzip();
        let outcome = self.publisher.put_all(&self.stream, aggregates).await?;
        let mut failed: Vec<usize> = outcome
            .failed
            .iter()
            .filter_map(|f| members.get(f.index))
            .flatten()
            .copied()
            .collect();
        failed.sort_unstable();
        Ok((failed, outcome))
    }
}

impl Output for AggregatingOutput {
    async fn publish(&self, records: Vec<OutRecord>) -> Result<Vec<usize>, OutputError> {
        Ok(self.publish_counted(records).await?.0)
    }
}

/// The starting hash keys of `stream`'s open shards (closed shards take no writes), from
/// ListShards followed through its pages.
///
/// # Errors
/// A failed ListShards call.
pub async fn open_shard_starts(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<u128>, AwsError> {
    let mut starts = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let out = request
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ListShards", e))?;
        for shard in out.shards() {
            let open = shard
                .sequence_number_range()
                .is_some_and(|r| r.ending_sequence_number().is_none());
            if let (true, Some(range)) = (open, shard.hash_key_range())
                && let Ok(start) = range.starting_hash_key().parse::<u128>()
            {
                starts.push(start);
            }
        }
        match out.next_token() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    Ok(starts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(key: &str, size: usize) -> OutRecord {
        OutRecord {
            partition_key: key.into(),
            data: vec![7; size],
        }
    }

    #[test]
    fn compression_is_on_unless_turned_off() {
        let env = |value: Option<&'static str>| {
            Env::new(move |name: &str| {
                (name == COMPRESS_VAR)
                    .then_some(value)
                    .flatten()
                    .map(str::to_owned)
            })
        };
        assert!(compression_from(&env(None)).unwrap());
        assert!(compression_from(&env(Some(" "))).unwrap());
        assert!(compression_from(&env(Some("true"))).unwrap());
        assert!(!compression_from(&env(Some("false"))).unwrap());
        let err = compression_from(&env(Some("off"))).unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
    }

    #[test]
    fn routes_keys_like_kinesis() {
        // Two shards split at 2^127, as CreateStream with 2 shards makes them.
        let map = ShardMap::new(vec![1 << 127, 0]);
        // MD5("a") = 0c..., below 2^127; MD5("b") = 92..., above.
        assert_eq!(map.shard_of("a"), 0);
        assert_eq!(map.shard_of("b"), 1);
        assert_eq!(ShardMap::new(vec![0]).shard_of("anything"), 0);
    }

    #[test]
    fn packs_per_shard_in_order_within_the_size_limit() {
        for compress in [false, true] {
            packs_per_shard(compress);
        }
    }

    fn packs_per_shard(compress: bool) {
        let map = ShardMap::new(vec![0, 1 << 127]);
        // 3 MB of 10 KB records (more than one aggregate per shard) and one near the limit.
        let mut records: Vec<_> = (0..300)
            .map(|i| rec(&format!("key-{}", i % 17), 10_000))
            .collect();
        records.push(rec("big", AGGREGATE_MAX_BYTES - 1024));
        let packed = pack(&map, &records, compress);
        let mut seen = Vec::new();
        for (aggregate, members) in &packed {
            assert!(
                aggregate.data.len() <= AGGREGATE_MAX_BYTES
                    && aggregate.size() <= riffle_aws::kinesis::RECORD_MAX_BYTES,
                "{}",
                aggregate.data.len()
            );
            // Repeated bytes shrink to next to nothing when compressed; plain they are as big
            // as the records.
            assert_eq!(kpl::is_compressed(&aggregate.data), compress);
            let opened = kpl::open(&aggregate.data);
            let subs = kpl::records_of(&opened).unwrap();
            assert_eq!(subs.len(), members.len());
            let shard = map.shard_of(&aggregate.partition_key);
            for (sub, i) in subs.iter().zip(members) {
                assert_eq!(sub.partition_key, records[*i].partition_key);
                assert_eq!(sub.data, records[*i].data.as_slice());
                assert_eq!(
                    map.shard_of(sub.partition_key),
                    shard,
                    "user record in the wrong shard"
                );
            }
            seen.extend(members.iter().copied());
        }
        // Every record exactly once, and in input order within each shard.
        let mut all = seen.clone();
        all.sort_unstable();
        assert_eq!(all, (0..records.len()).collect::<Vec<_>>());
        for shard in 0..2 {
            let order: Vec<_> = seen
                .iter()
                .filter(|i| map.shard_of(&records[**i].partition_key) == shard)
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]));
        }
        assert!(
            (4..10).contains(&packed.len()),
            "4 MB of records pack into a few aggregates: {}",
            packed.len()
        );
        let bytes: usize = packed.iter().map(|(a, _)| a.data.len()).sum();
        assert_eq!(bytes < 100_000, compress, "{bytes} bytes");
    }
}
