//! The autoscaler's decisions run against the local twin's raw stream, with a second standing
//! for a minute (the policy's 5-minute and 1-hour windows become 5 and 60 seconds), carried
//! out as SplitShard and MergeShards: the local Kinesis has no UpdateShardCount. The incoming
//! records and bytes are what the producer put in each second, as CloudWatch would count
//! them per minute on AWS.

use aws_sdk_kinesis::Client;
use riffle_autoscaler::reshard::{OpenShard, Step, plan};
use riffle_autoscaler::{Decision, Direction, Minute, Observation, Policy, decide};
use serde::Serialize;

use crate::pipeline::PipelineError;

/// A reshard the autoscaler made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reshard {
    /// The second of the run it was decided at.
    pub t: u64,
    /// Up or down.
    pub direction: &'static str,
    /// Open shards before.
    pub from: u32,
    /// Open shards after.
    pub to: u32,
    /// The utilization that decided it.
    pub utilization: f64,
}

/// One stream, scaled locally.
#[derive(Debug)]
pub struct LocalAutoscaler {
    kinesis: Client,
    stream: String,
    policy: Policy,
    minutes: Vec<Minute>,
    updates: Vec<i64>,
    /// A shard's capacity here against AWS's (records/s): the twin's load is scaled by it,
    /// so a machine that cannot offer 1,000 records/s a shard still drives the decisions.
    scale: f64,
    /// What it did.
    pub reshards: Vec<Reshard>,
}

fn kinesis_error<E>(
    what: &'static str,
) -> impl FnOnce(aws_sdk_kinesis::error::SdkError<E>) -> PipelineError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| {
        PipelineError::Aws(format!(
            "{what}: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(&e)
        ))
    }
}

impl LocalAutoscaler {
    /// Scales `stream` between `min_shards` and `max_shards` by `Policy`'s rules, counting a
    /// shard as full at `shard_records_per_sec` (AWS's is 1,000).
    pub fn new(
        kinesis: Client,
        stream: &str,
        min_shards: u32,
        max_shards: u32,
        shard_records_per_sec: f64,
    ) -> Self {
        LocalAutoscaler {
            kinesis,
            stream: stream.to_owned(),
            policy: Policy {
                min_shards,
                max_shards,
                ..Policy::default()
            },
            minutes: Vec::new(),
            updates: Vec::new(),
            scale: riffle_autoscaler::SHARD_RECORDS_PER_SEC / shard_records_per_sec.max(1.0),
            reshards: Vec::new(),
        }
    }

    /// The stream's open shards with their hash ranges.
    pub async fn open_shards(&self) -> Result<Vec<OpenShard>, PipelineError> {
        let mut shards = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let request = match &next {
                Some(token) => self.kinesis.list_shards().next_token(token),
                None => self.kinesis.list_shards().stream_name(&self.stream),
            };
            let out = request.send().await.map_err(kinesis_error("ListShards"))?;
            for shard in out.shards() {
                let closed = shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some();
                let range = shard.hash_key_range();
                let parse = |text: Option<&str>| text.and_then(|t| t.parse::<u128>().ok());
                if let (false, Some(start), Some(end)) = (
                    closed,
                    parse(range.map(|r| r.starting_hash_key())),
                    parse(range.map(|r| r.ending_hash_key())),
                ) {
                    shards.push(OpenShard {
                        id: shard.shard_id().to_owned(),
                        start,
                        end,
                    });
                }
            }
            next = out.next_token().map(str::to_owned);
            if next.is_none() {
                return Ok(shards);
            }
        }
    }

    /// The second `t` of the run ended with `records` Kinesis records and `bytes` bytes put:
    /// decides, and reshards if the decision says so.
    ///
    /// # Errors
    /// A Kinesis call failed.
    pub async fn tick(
        &mut self,
        t: u64,
        records: f64,
        bytes: f64,
    ) -> Result<Option<Reshard>, PipelineError> {
        // Second t-1..t stands for minute t-1: sums scaled to a minute's worth.
        let start = (t as i64 - 1) * 60;
        self.minutes.push(Minute {
            start,
            incoming_bytes: Some(bytes * 60.0 * self.scale),
            incoming_records: Some(records * 60.0 * self.scale),
            iterator_age_ms: None,
        });
        let keep = self.policy.down_minutes.max(self.policy.up_minutes) as usize + 1;
        if self.minutes.len() > keep {
            self.minutes.drain(..self.minutes.len() - keep);
        }
        let open = self.open_shards().await?;
        let decision = decide(
            &self.policy,
            &Observation {
                now: t as i64 * 60,
                shards: open.len() as u32,
                active: true,
                created: 0,
                minutes: &self.minutes,
                updates: &self.updates,
            },
        );
        let Decision::Scale {
            direction,
            from,
            to,
            utilization,
        } = decision
        else {
            return Ok(None);
        };
        for step in plan(&open, to as usize) {
            match step {
                Step::Split { shard, at } => {
                    self.kinesis
                        .split_shard()
                        .stream_name(&self.stream)
                        .shard_to_split(shard)
                        .new_starting_hash_key(at.to_string())
                        .send()
                        .await
                        .map_err(kinesis_error("SplitShard"))?;
                }
                Step::Merge { shard, adjacent } => {
                    self.kinesis
                        .merge_shards()
                        .stream_name(&self.stream)
                        .shard_to_merge(shard)
                        .adjacent_shard_to_merge(adjacent)
                        .send()
                        .await
                        .map_err(kinesis_error("MergeShards"))?;
                }
            }
            self.wait_active().await?;
        }
        self.updates.push(t as i64 * 60);
        let reshard = Reshard {
            t,
            direction: match direction {
                Direction::Up => "up",
                Direction::Down => "down",
            },
            from,
            to: self.open_shards().await?.len() as u32,
            utilization,
        };
        self.reshards.push(reshard.clone());
        Ok(Some(reshard))
    }

    /// Kinesis takes one reshard of a stream at a time: each waits for ACTIVE.
    async fn wait_active(&self) -> Result<(), PipelineError> {
        use aws_sdk_kinesis::types::StreamStatus;
        for _ in 0..600 {
            let out = self
                .kinesis
                .describe_stream_summary()
                .stream_name(&self.stream)
                .send()
                .await
                .map_err(kinesis_error("DescribeStreamSummary"))?;
            if out
                .stream_description_summary()
                .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
            {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(PipelineError::Aws(format!(
            "{} did not become ACTIVE within a minute of a reshard",
            self.stream
        )))
    }
}
