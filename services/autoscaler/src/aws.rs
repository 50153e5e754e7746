//! The autoscaler on AWS: for each stream, the last hour of CloudWatch's per-minute metrics
//! and the stream's state, [`decide`], and UpdateShardCount (uniform scaling) when it says so.
//!
//! The minutes come through [`MetricSource`]: [`CloudWatchMetrics`] on AWS. The local
//! emulator (moto 5.2) does not speak the protocol the SDK's CloudWatch client uses
//! (rpcv2 CBOR), so the Kinesis half is tested against the emulator with recorded minutes,
//! and CloudWatch's answer is turned into minutes by [`minutes_from`], tested on its own.
//!
//! Kinesis keeps no history of reshards an autoscaler can read, and UpdateShardCount's limit
//! is per rolling day, so each reshard's time is kept on the stream itself, in the tag
//! [`UPDATES_TAG`] (epoch seconds, space-separated, the last day's only): no table to run,
//! and a stream resharded by hand in the console simply has fewer entries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricDataResult, MetricStat};
use aws_sdk_kinesis::types::{ScalingType, StreamMode, StreamStatus};
use aws_smithy_types::DateTime;

use crate::{DAY_SECS, Decision, Minute, Observation, Policy, decide};

/// The stream tag holding the times of the autoscaler's reshards.
pub const UPDATES_TAG: &str = "riffle:autoscaler-updates";

/// Minutes of metrics read: the scale-down window and a little more.
pub const LOOKBACK_MINUTES: i64 = 65;

/// What happened to one stream in one run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The decision was to leave it.
    Held(Decision),
    /// UpdateShardCount was called.
    Resharded {
        /// Open shards before.
        from: u32,
        /// The target.
        to: u32,
        /// The utilization that decided it.
        utilization: f64,
    },
    /// The stream is on-demand: Kinesis scales it.
    OnDemand,
}

/// Where a stream's recent minutes come from.
pub trait MetricSource: Send + Sync {
    /// The complete minutes of `stream` in the last [`LOOKBACK_MINUTES`] before `now`.
    fn minutes(
        &self,
        stream: &str,
        now: i64,
    ) -> impl std::future::Future<Output = Result<Vec<Minute>, BoxError>> + Send;
}

/// CloudWatch's AWS/Kinesis metrics.
#[derive(Debug, Clone)]
pub struct CloudWatchMetrics(pub aws_sdk_cloudwatch::Client);

/// The clients and the rules.
#[derive(Debug, Clone)]
pub struct Autoscaler<M> {
    /// Kinesis.
    pub kinesis: aws_sdk_kinesis::Client,
    /// The streams' metrics.
    pub metrics: M,
    /// The rules and bounds.
    pub policy: Policy,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn sdk<E, R>(what: &'static str) -> impl FnOnce(aws_sdk_kinesis::error::SdkError<E, R>) -> BoxError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| {
        format!(
            "{what}: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(&e)
        )
        .into()
    }
}

/// The reshard times kept in the tag's value.
pub fn parse_updates(value: &str) -> Vec<i64> {
    value
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// The tag's value after a reshard at `now`: the last day's times and `now`.
pub fn updates_value(previous: &[i64], now: i64) -> String {
    let mut kept: Vec<i64> = previous
        .iter()
        .copied()
        .filter(|t| now - t < DAY_SECS)
        .collect();
    kept.push(now);
    kept.sort_unstable();
    kept.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

impl<M: MetricSource> Autoscaler<M> {
    /// Decides for `stream` now and reshards it if the decision says so.
    ///
    /// # Errors
    /// A Kinesis or CloudWatch call failed.
    pub async fn run_stream(&self, stream: &str) -> Result<Outcome, BoxError> {
        self.run_stream_at(stream, now_secs()).await
    }

    /// [`Autoscaler::run_stream`] as at `now` (epoch seconds).
    ///
    /// # Errors
    /// A Kinesis or CloudWatch call failed.
    pub async fn run_stream_at(&self, stream: &str, now: i64) -> Result<Outcome, BoxError> {
        // Decided as at the start of this minute: the windows are whole minutes, and a
        // window ending mid-minute would hold one minute fewer than it asks for.
        let now = now - now.rem_euclid(60);
        let summary = self
            .kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(sdk("DescribeStreamSummary"))?;
        let summary = summary
            .stream_description_summary()
            .ok_or_else(|| format!("{stream}: DescribeStreamSummary said nothing"))?;
        if summary
            .stream_mode_details()
            .is_some_and(|m| m.stream_mode() == &StreamMode::OnDemand)
        {
            return Ok(Outcome::OnDemand);
        }
        let shards = u32::try_from(summary.open_shard_count()).unwrap_or(0);
        let active = summary.stream_status() == &StreamStatus::Active;
        let created = summary.stream_creation_timestamp().secs();
        let tags = self
            .kinesis
            .list_tags_for_stream()
            .stream_name(stream)
            .send()
            .await
            .map_err(sdk("ListTagsForStream"))?;
        let updates = tags
            .tags()
            .iter()
            .find(|t| t.key() == UPDATES_TAG)
            .and_then(|t| t.value())
            .map(parse_updates)
            .unwrap_or_default();
        let minutes = self.metrics.minutes(stream, now).await?;
        let decision = decide(
            &self.policy,
            &Observation {
                now,
                shards,
                active,
                created,
                minutes: &minutes,
                updates: &updates,
            },
        );
        let Decision::Scale {
            from,
            to,
            utilization,
            ..
        } = decision
        else {
            return Ok(Outcome::Held(decision));
        };
        self.kinesis
            .update_shard_count()
            .stream_name(stream)
            .target_shard_count(i32::try_from(to).unwrap_or(i32::MAX))
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
            .map_err(sdk("UpdateShardCount"))?;
        self.kinesis
            .add_tags_to_stream()
            .stream_name(stream)
            .tags(UPDATES_TAG, updates_value(&updates, now))
            .send()
            .await
            .map_err(sdk("AddTagsToStream"))?;
        Ok(Outcome::Resharded {
            from,
            to,
            utilization,
        })
    }
}

impl MetricSource for CloudWatchMetrics {
    /// The last [`LOOKBACK_MINUTES`] complete minutes of `stream`: IncomingBytes and
    /// IncomingRecords (Sum), GetRecords.IteratorAgeMilliseconds (Maximum).
    async fn minutes(&self, stream: &str, now: i64) -> Result<Vec<Minute>, BoxError> {
        let end = now - now.rem_euclid(60);
        let start = end - LOOKBACK_MINUTES * 60;
        let query = |id: &str, metric: &str, stat: &str| -> Result<MetricDataQuery, BoxError> {
            let metric = Metric::builder()
                .namespace("AWS/Kinesis")
                .metric_name(metric)
                .dimensions(
                    Dimension::builder()
                        .name("StreamName")
                        .value(stream)
                        .build(),
                )
                .build();
            Ok(MetricDataQuery::builder()
                .id(id)
                .metric_stat(
                    MetricStat::builder()
                        .metric(metric)
                        .period(60)
                        .stat(stat)
                        .build(),
                )
                .return_data(true)
                .build())
        };
        let out = self
            .0
            .get_metric_data()
            .metric_data_queries(query("bytes", "IncomingBytes", "Sum")?)
            .metric_data_queries(query("records", "IncomingRecords", "Sum")?)
            .metric_data_queries(query(
                "age",
                "GetRecords.IteratorAgeMilliseconds",
                "Maximum",
            )?)
            .start_time(DateTime::from_secs(start))
            .end_time(DateTime::from_secs(end))
            .send()
            .await
            .map_err(|e| -> BoxError {
                format!(
                    "GetMetricData: {}",
                    aws_sdk_cloudwatch::error::DisplayErrorContext(&e)
                )
                .into()
            })?;
        Ok(minutes_from(start, out.metric_data_results()))
    }
}

/// GetMetricData's results (ids `bytes`, `records`, `age`) as the [`LOOKBACK_MINUTES`]
/// minutes from `start`; a minute CloudWatch has no datapoint for stays `None`.
pub fn minutes_from(start: i64, results: &[MetricDataResult]) -> Vec<Minute> {
    let mut minutes: Vec<Minute> = (0..LOOKBACK_MINUTES)
        .map(|i| Minute {
            start: start + i * 60,
            incoming_bytes: None,
            incoming_records: None,
            iterator_age_ms: None,
        })
        .collect();
    for result in results {
        for (t, v) in result.timestamps().iter().zip(result.values()) {
            let Some(minute) = minutes.iter_mut().find(|m| m.start == t.secs()) else {
                continue;
            };
            match result.id() {
                Some("bytes") => minute.incoming_bytes = Some(*v),
                Some("records") => minute.incoming_records = Some(*v),
                Some("age") => minute.iterator_age_ms = Some(*v),
                _ => {}
            }
        }
    }
    minutes
}

/// How long one scheduled run may take before the next one is due.
pub const RUN_BUDGET: Duration = Duration::from_secs(50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudwatch_results_become_minutes() {
        // A minute boundary.
        let start = 1_765_000_020 - LOOKBACK_MINUTES * 60;
        let result = |id: &str, points: &[(i64, f64)]| {
            MetricDataResult::builder()
                .id(id)
                .set_timestamps(Some(
                    points
                        .iter()
                        .map(|(t, _)| DateTime::from_secs(*t))
                        .collect(),
                ))
                .set_values(Some(points.iter().map(|(_, v)| *v).collect()))
                .build()
        };
        let minutes = minutes_from(
            start,
            &[
                result("records", &[(start + 60, 5.0), (start + 120, 7.0)]),
                result("bytes", &[(start + 60, 500.0)]),
                result("age", &[(start + 120, 42.0)]),
                // Off the minute grid, or another id: ignored.
                result("records", &[(start + 61, 1.0)]),
                result("other", &[(start, 1.0)]),
            ],
        );
        assert_eq!(minutes.len() as i64, LOOKBACK_MINUTES);
        assert_eq!(minutes[0].incoming_records, None);
        assert_eq!(
            (
                minutes[1].incoming_records,
                minutes[1].incoming_bytes,
                minutes[1].iterator_age_ms
            ),
            (Some(5.0), Some(500.0), None)
        );
        assert_eq!(
            (minutes[2].incoming_records, minutes[2].iterator_age_ms),
            (Some(7.0), Some(42.0))
        );
    }

    #[test]
    fn the_tag_keeps_the_last_day() {
        let now = 1_765_000_000;
        assert_eq!(parse_updates("12 x 40"), [12, 40]);
        assert_eq!(parse_updates(""), Vec::<i64>::new());
        let value = updates_value(&[now - DAY_SECS - 1, now - 3600, now - 60], now);
        assert_eq!(
            parse_updates(&value),
            [now - 3600, now - 60, now],
            "older than a day dropped"
        );
    }
}
