//! `riffle chaos`: the pipeline's guarantees checked under faults.
//!
//! The whole local pipeline runs as `riffle demo` runs it, fed with generated events from
//! several sources (a share of them poison: invalid records with known reject codes), while:
//! - stage processes are killed with SIGKILL at random times and started again after a short
//!   random delay (no batch finished, no checkpoint written, no lease handed back);
//! - every stage's invocations fail transiently at random, before the handler ran or after
//!   its effects were made (`RIFFLE_FAULT_HANDLER_ERROR_RATE`, see `riffle_runtime::fault`);
//! - PutRecords entries are answered as throttled at random, in the stages and in the
//!   producer (`RIFFLE_FAULT_THROTTLE_RATE`, see `riffle_aws::kinesis`);
//! - kinesalite is restarted once mid-run on its LevelDB state.
//!
//! Once every stage's checkpoint has reached the end of its input stream, the view, the
//! archive, the rejects queue and the four dead-letter queues are read back and held against
//! the generator's ground truth:
//! - **lost**: view counts short of the truth (per view item) plus valid events missing from
//!   the archive, not counting events a dead-letter queue holds (those are accounted for,
//!   but still fail the run: only poison records may end up in a queue);
//! - **doubled**: view counts above the truth plus archive rows beyond one per event;
//! - the view against the truth item by item (count exact, sums within tolerance);
//! - archive rows against the valid events;
//! - the distinct records on the rejects and dead-letter queues against the poison records.
//!
//! Every record is told apart by its own bytes (the producer puts one record per event, so
//! a raw record's bytes name its event) or, past the validator, by its envelope's event id.
//! A view item's count can hide a lost event behind a doubled one of the same item; its sum
//! and extremes then differ from the truth, which the item comparison reports.

mod assess;
mod drive;
pub(crate) mod port;
mod schedule;

#[allow(unused_imports)]
pub use assess::*;
#[allow(unused_imports)]
pub use drive::*;
#[allow(unused_imports)]
pub use schedule::*;

use crate::pipeline::{Counters, Pipeline, PipelineError, PipelineOptions, STAGES};
use riffle_loadtest::GroundTruth;
use riffle_telemetry::names;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Shard lease timing for the stages: a killed instance's shards are taken over this soon.
const LEASE_DURATION_MS: u64 = 3_000;

const LEASE_RENEWAL_MS: u64 = 1_000;

/// The dead-letter queues (template logical ids) and the stage whose failures they take.
pub const DEAD_LETTER_QUEUES: [(&str, &str); 4] = [
    ("ValidatorDlq", "validator"),
    ("EnricherDlq", "enricher"),
    ("AggregatorDlq", "aggregator"),
    ("ArchiverDlq", "archiver"),
];

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Events to produce.
    pub events: u64,
    /// Stage processes to kill over the run.
    pub kills: u32,
    /// Seed of the generator, of the kill schedule and of the injected faults.
    pub seed: u64,
    /// Events per second offered.
    pub rate: u32,
    /// Source mix, e.g. `shop-web=2,web,iot-gateway`.
    pub sources: String,
    /// Share of poison (invalid) events.
    pub invalid_ratio: f64,
    /// Probability a PutRecords entry is answered as throttled (stages and producer).
    pub throttle_rate: f64,
    /// Probability a batch invocation fails transiently.
    pub handler_error_rate: f64,
    /// Share of the producer's put calls sent again whole after they succeeded.
    pub resend_rate: f64,
    /// Restart kinesalite once, half way through the chaos.
    pub restart_kinesis: bool,
    /// A killed stage is started again after a random delay up to this.
    pub max_restart_delay: Duration,
    /// Give up waiting for the drain when nothing moves for this long.
    pub idle_timeout: Duration,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            events: 100_000,
            kills: 20,
            seed: 42,
            rate: 2_000,
            sources: "shop-web,shop-app,web,iot-gateway".into(),
            invalid_ratio: 0.01,
            throttle_rate: 0.05,
            handler_error_rate: 0.02,
            resend_rate: 0.05,
            restart_kinesis: true,
            max_restart_delay: Duration::from_secs(2),
            // The aggregator's and the archiver's batches (1,000 and 5,000 records, each
            // record claimed in DynamoDB) take tens of seconds on moto: nothing is counted
            // until a batch ends.
            idle_timeout: Duration::from_secs(300),
            progress: true,
        }
    }
}

impl ChaosOptions {
    /// Checks the numbers a person may mistype.
    ///
    /// # Errors
    /// A rate or ratio out of range.
    pub fn validate(&self) -> Result<(), PipelineError> {
        for (name, value) in [
            ("invalid ratio", self.invalid_ratio),
            ("throttle rate", self.throttle_rate),
            ("handler error rate", self.handler_error_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(PipelineError::Usage(format!(
                    "the {name} must be within 0..=1, got {value}"
                )));
            }
        }
        // A certain fault would never let a record through.
        if self.throttle_rate >= 1.0 || self.handler_error_rate >= 1.0 {
            return Err(PipelineError::Usage(
                "fault rates must be below 1, or nothing ever gets through".into(),
            ));
        }
        if self.rate == 0 {
            return Err(PipelineError::Usage("the rate must be at least 1".into()));
        }
        Ok(())
    }

    /// The fault and lease settings every stage process gets.
    pub fn stage_env(&self) -> Vec<(String, String)> {
        vec![
            (
                riffle_runtime::fault::HANDLER_ERROR_RATE_ENV.into(),
                self.handler_error_rate.to_string(),
            ),
            (
                riffle_aws::kinesis::FAULT_THROTTLE_RATE_ENV.into(),
                self.throttle_rate.to_string(),
            ),
            (
                riffle_runtime::fault::FAULT_SEED_ENV.into(),
                self.seed.to_string(),
            ),
            (
                riffle_runtime::config::LEASE_DURATION_ENV.into(),
                LEASE_DURATION_MS.to_string(),
            ),
            (
                riffle_runtime::config::LEASE_RENEWAL_ENV.into(),
                LEASE_RENEWAL_MS.to_string(),
            ),
        ]
    }
}

/// What a chaos run measured.
#[derive(Debug)]
pub struct ChaosReport {
    /// The generator's ground truth.
    pub truth: GroundTruth,
    /// The headline numbers.
    pub figures: Figures,
    /// Everything that differs from what the guarantees promise; empty means the run held.
    pub failures: Vec<String>,
    /// The faults the run made happen.
    pub faults: Vec<Fault>,
    /// Stage metric sums (injected handler faults: `FaultsInjected` per function).
    pub counters: Counters,
    /// Producer entries answered as throttled, over all attempts.
    pub producer_throttled: u64,
    /// Producer entries sent again.
    pub producer_retries: u64,
    /// Records the producer put twice: whole put calls sent again as if their answer had
    /// been lost (the validator must drop every copy).
    pub producer_resent: u64,
    /// Whether every stage's checkpoint reached the end of its input.
    pub drained: bool,
    /// From the first put to the drain.
    pub elapsed: Duration,
    /// Where the processes' logs are.
    pub logs: std::path::PathBuf,
}

impl ChaosReport {
    /// Whether every guarantee held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs the whole chaos test and stops everything afterwards.
///
/// # Errors
/// A part of the pipeline that cannot start, a producer that cannot put, or a read-back
/// that fails; a pipeline that does not drain is a failure in the report, not an error.
pub async fn run(
    options: &ChaosOptions,
    pipeline_options: PipelineOptions,
) -> Result<ChaosReport, PipelineError> {
    options.validate()?;
    let show = options.progress;
    let steps = AtomicU64::new(0);
    let mut pipeline = Pipeline::start_with_env(pipeline_options, options.stage_env(), |step| {
        let n = steps.fetch_add(1, Ordering::Relaxed) + 1;
        say(show, &format!("[{n}] {step}"));
    })
    .await?;
    let result = chaos(&mut pipeline, options).await;
    say(show, "stopping services and emulators");
    pipeline.shutdown().await;
    result
}

/// The summary a person reads at the end of a chaos run.
pub fn render(report: &ChaosReport) -> String {
    let f = &report.figures;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line("== Riffle chaos summary ==".into());
    line(format!(
        "events              {} ({} valid, {} poison)",
        report.truth.total(),
        f.valid,
        f.poison
    ));
    let kills: Vec<String> = report
        .faults
        .iter()
        .filter_map(|fault| match fault {
            Fault::Kill {
                stage,
                at_secs,
                down,
            } => Some(format!("{stage}@{at_secs:.1}s/{}ms", down.as_millis())),
            _ => None,
        })
        .collect();
    line(format!(
        "kills               {} [{}]",
        kills.len(),
        kills.join(", ")
    ));
    for fault in &report.faults {
        match fault {
            Fault::KinesisRestart { at_secs, took } => line(format!(
                "kinesalite restart  at {at_secs:.1}s, back in {} ms",
                took.as_millis()
            )),
            Fault::Exited { stage, status } => line(format!(
                "stage exited        {stage} by itself ({status}); started again (see its log)"
            )),
            Fault::Kill { .. } => {}
        }
    }
    let c = &report.counters;
    let per_stage: Vec<String> = STAGES
        .iter()
        .map(|s| {
            let function = c.function(s);
            format!(
                "{s} {} faults/{} retries",
                c.count(function, names::FAULTS_INJECTED),
                c.count(function, names::RETRIES)
            )
        })
        .collect();
    line(format!("handler faults      {}", per_stage.join(", ")));
    line(format!(
        "producer            {} entries throttled, {} retried; {} records put twice by whole-call re-sends",
        report.producer_throttled, report.producer_retries, report.producer_resent
    ));
    line(format!(
        "drained             {} ({:.1} s from the first put)",
        if report.drained { "yes" } else { "NO" },
        report.elapsed.as_secs_f64()
    ));
    line(format!(
        "lost                {} (view {}, archive {})",
        f.lost(),
        f.lost_view,
        f.lost_archive
    ));
    line(format!(
        "doubled             {} (view {}, archive {} extra rows over {} events)",
        f.doubled(),
        f.doubled_view,
        f.doubled_archive_rows,
        f.doubled_archive_events
    ));
    line(format!(
        "view                {} items differ from the ground truth",
        f.view_differences
    ));
    line(format!(
        "archive rows        {} (valid events {}, stray rows {})",
        f.archive_rows, f.valid, f.stray_archive_rows
    ));
    line(format!(
        "rejects + DLQ       {} poison + {} valid + {} unidentified = {} distinct records (poison records {}); \
         {} reject messages, {} records on DLQs, {} wrong codes",
        f.poison_accounted,
        f.valid_on_queues,
        f.unidentified_on_queues,
        f.poison_accounted + f.valid_on_queues + f.unidentified_on_queues,
        f.poison,
        f.reject_messages,
        f.dead_lettered,
        f.wrong_codes
    ));
    if report.passed() {
        line(
            "check               OK: nothing lost, nothing doubled, view, archive and queues exact"
                .into(),
        );
    } else {
        line(format!(
            "check               FAILED ({} findings; logs in {})",
            report.failures.len(),
            report.logs.display()
        ));
        for failure in report.failures.iter().take(25) {
            line(format!("  - {failure}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_seeded_sorted_and_inside_the_window() {
        let options = ChaosOptions {
            events: 10_000,
            kills: 7,
            rate: 1_000,
            ..ChaosOptions::default()
        };
        let plan = schedule(&options);
        assert_eq!(plan, schedule(&options), "same seed, same schedule");
        assert_eq!(plan.len(), 8);
        assert!(plan.windows(2).all(|w| w[0].at_secs() <= w[1].at_secs()));
        let window = 14.0; // 7 kills x 2 s down time is longer than 10 s of production
        for p in &plan {
            assert!((0.0..window).contains(&p.at_secs()), "{p:?}");
            if let Planned::Kill { stage, delay, .. } = p {
                assert!(*stage < STAGES.len());
                assert!(*delay >= MIN_RESTART_DELAY && *delay <= options.max_restart_delay);
            }
        }
        let restarts = plan
            .iter()
            .filter(|p| matches!(p, Planned::RestartKinesis { .. }))
            .count();
        assert_eq!(restarts, 1);
        let other = schedule(&ChaosOptions {
            seed: 43,
            restart_kinesis: false,
            ..options
        });
        assert_eq!(other.len(), 7);
        assert_ne!(other, plan);
    }

    #[test]
    fn splitmix_is_uniform_enough() {
        let mut rng = SplitMix::new(1);
        let mut buckets = [0u32; 4];
        for _ in 0..4000 {
            buckets[rng.below(4)] += 1;
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(
            buckets.iter().all(|b| (850..1150).contains(b)),
            "{buckets:?}"
        );
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let ok = ChaosOptions::default();
        assert!(ok.validate().is_ok());
        for bad in [
            ChaosOptions {
                throttle_rate: 1.0,
                ..ok.clone()
            },
            ChaosOptions {
                handler_error_rate: -0.5,
                ..ok.clone()
            },
            ChaosOptions {
                invalid_ratio: 2.0,
                ..ok.clone()
            },
            ChaosOptions {
                rate: 0,
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let env = ok.stage_env();
        assert!(
            env.iter()
                .any(|(k, v)| k == "RIFFLE_FAULT_HANDLER_ERROR_RATE" && v == "0.02")
        );
    }
}
