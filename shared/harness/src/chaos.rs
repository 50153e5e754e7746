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

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use riffle_aws::OutRecord;
use riffle_codec::EnvelopeCodec;
use riffle_loadtest::{Expected, Generator, GeneratorConfig, GroundTruth};
use riffle_runtime::checkpoint::{Checkpoint, CheckpointStore};

use crate::demo::collect_rejects;
use crate::pipeline::{Counters, Pipeline, PipelineError, PipelineOptions, STAGES};
use crate::verify::{self, Outcome};

use riffle_aws::limits::KINESIS_PUT_RECORDS_MAX_RECORDS as PUT_CHUNK;
/// How long the producer keeps retrying one chunk (across a kinesalite restart) before the
/// run is declared broken.
const PUT_DEADLINE: Duration = Duration::from_secs(120);
/// Pause before the producer sends again what was not accepted.
const PUT_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Shard lease timing for the stages: a killed instance's shards are taken over this soon.
const LEASE_DURATION_MS: u64 = 3_000;
const LEASE_RENEWAL_MS: u64 = 1_000;
/// How often the drain is checked.
const DRAIN_POLL: Duration = Duration::from_secs(1);
/// A stage that exits by itself this often is broken, not faulted: the run stops.
const MAX_SELF_EXITS: usize = 5;
/// The shortest pause before a killed stage is started again.
const MIN_RESTART_DELAY: Duration = Duration::from_millis(100);
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

/// One fault the run made happen.
#[derive(Debug, Clone)]
pub enum Fault {
    /// A stage process killed with SIGKILL and started again.
    Kill {
        /// The stage.
        stage: &'static str,
        /// Seconds since the first put.
        at_secs: f64,
        /// How long it was down.
        down: Duration,
    },
    /// kinesalite stopped and started again on its state.
    KinesisRestart {
        /// Seconds since the first put.
        at_secs: f64,
        /// How long it took.
        took: Duration,
    },
    /// A stage process exited by itself and was started again.
    Exited {
        /// The stage.
        stage: String,
        /// Its exit status.
        status: String,
    },
}

/// The headline numbers of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Valid events put.
    pub valid: u64,
    /// Poison events put.
    pub poison: u64,
    /// View counts short of the truth, summed over items (dead-lettered events excused).
    pub lost_view: u64,
    /// Valid events in neither the archive nor a queue that could excuse them.
    pub lost_archive: u64,
    /// View counts above the truth, summed over items.
    pub doubled_view: u64,
    /// Archive rows beyond one per event.
    pub doubled_archive_rows: u64,
    /// Events with more than one archive row.
    pub doubled_archive_events: u64,
    /// View items missing, unexpected or different from the truth.
    pub view_differences: u64,
    /// Archive rows.
    pub archive_rows: u64,
    /// Archive rows of events that are not valid events of this run.
    pub stray_archive_rows: u64,
    /// Messages read off the rejects queue (records, redeliveries included).
    pub reject_messages: u64,
    /// Distinct records on the rejects queue.
    pub rejects_distinct: u64,
    /// Distinct records on the dead-letter queues.
    pub dead_lettered: u64,
    /// Poison records on the rejects or a dead-letter queue (distinct).
    pub poison_accounted: u64,
    /// Poison records on no queue.
    pub poison_missing: u64,
    /// Valid events on the rejects or a dead-letter queue.
    pub valid_on_queues: u64,
    /// Queue records that name no event of this run.
    pub unidentified_on_queues: u64,
    /// Rejects whose code is not the one the generator expects.
    pub wrong_codes: u64,
}

impl Figures {
    /// Events lost, over view and archive.
    pub fn lost(&self) -> u64 {
        self.lost_view + self.lost_archive
    }

    /// Events counted or stored twice, over view and archive.
    pub fn doubled(&self) -> u64 {
        self.doubled_view + self.doubled_archive_rows
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

/// A small seeded generator (SplitMix64) for the kill schedule: the same seed, the same
/// schedule, with no dependency for something this simple.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..1.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        usize::try_from(self.next_u64() % n as u64).unwrap_or(0)
    }
}

/// A scheduled fault, in seconds from the first put.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Planned {
    /// Kill this stage, start it again after `delay`.
    Kill {
        /// Seconds from the first put.
        at_secs: f64,
        /// Index into [`STAGES`].
        stage: usize,
        /// Down time.
        delay: Duration,
    },
    /// Restart kinesalite.
    RestartKinesis {
        /// Seconds from the first put.
        at_secs: f64,
    },
}

impl Planned {
    fn at_secs(&self) -> f64 {
        match self {
            Planned::Kill { at_secs, .. } | Planned::RestartKinesis { at_secs } => *at_secs,
        }
    }
}

/// The faults of a run, in time order: `kills` kills spread over the chaos window (the
/// production time, stretched so each kill has room for its down time), and the kinesalite
/// restart in its middle.
pub fn schedule(options: &ChaosOptions) -> Vec<Planned> {
    let mut rng = SplitMix::new(options.seed ^ 0x00c4_a05e);
    let produce_secs = options.events as f64 / f64::from(options.rate.max(1));
    let window =
        produce_secs.max(f64::from(options.kills) * options.max_restart_delay.as_secs_f64());
    let span = options
        .max_restart_delay
        .saturating_sub(MIN_RESTART_DELAY)
        .as_secs_f64();
    let mut plan: Vec<Planned> = (0..options.kills)
        .map(|_| Planned::Kill {
            at_secs: window * (0.05 + 0.9 * rng.unit()),
            stage: rng.below(STAGES.len()),
            delay: MIN_RESTART_DELAY + Duration::from_secs_f64(span * rng.unit()),
        })
        .collect();
    if options.restart_kinesis {
        plan.push(Planned::RestartKinesis {
            at_secs: window / 2.0,
        });
    }
    plan.sort_by(|a, b| a.at_secs().total_cmp(&b.at_secs()));
    plan
}

/// What the run knows of every event it put.
#[derive(Debug, Default)]
struct Ledger {
    truth: GroundTruth,
    /// Per event: its id and, for a valid one, its view item.
    events: Vec<(String, Option<(String, i64)>)>,
    by_id: HashMap<String, usize>,
    /// Events by the hash of their bytes: several where records are byte-identical (a record
    /// truncated to its first bytes carries nothing of its event).
    by_bytes: HashMap<u64, Vec<usize>>,
    /// Per event: its partition key, which tells byte-identical records apart.
    keys: Vec<String>,
    throttled: u64,
    retries: u64,
    /// Records put a second time by whole-call re-sends.
    resent: u64,
}

fn bytes_key(data: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

impl Ledger {
    fn record(&mut self, event: &riffle_loadtest::GeneratedEvent) {
        self.truth.record(event);
        let index = self.events.len();
        let item = match &event.expected {
            Expected::Valid {
                agg_key,
                window_start,
                ..
            } => Some((agg_key.clone(), *window_start)),
            Expected::Rejected { .. } => None,
        };
        self.events.push((event.event_id.clone(), item));
        self.by_id.insert(event.event_id.clone(), index);
        self.by_bytes
            .entry(bytes_key(&event.record))
            .or_default()
            .push(index);
        self.keys.push(event.partition_key.clone());
    }

    fn is_valid(&self, index: usize) -> bool {
        self.events
            .get(index)
            .is_some_and(|(_, item)| item.is_some())
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

fn say(enabled: bool, text: &str) {
    if enabled {
        eprintln!("{text}");
    }
}

fn overwrite(enabled: bool, text: &str) {
    if enabled {
        eprint!("\r\x1b[2K{text}");
        let _ = std::io::stderr().flush();
    }
}

fn progress_line(c: &Counters, produced: u64, total: u64, kills: usize, faults: u64) -> String {
    format!(
        "produced {produced}/{total} | kills {kills} | faults {faults} | validated {} rejected {} | enriched {} | aggregated {} | archived {}",
        c.count("validator", "RecordsOut"),
        c.count("validator", "Rejected"),
        c.count("enricher", "RecordsOut"),
        c.count("aggregator", "RecordsIn"),
        c.count("archiver", "RecordsIn"),
    )
}

fn injected(c: &Counters) -> u64 {
    STAGES
        .iter()
        .map(|s| c.count(&format!("riffle-{s}"), "FaultsInjected"))
        .sum()
}

async fn chaos(
    pipeline: &mut Pipeline,
    options: &ChaosOptions,
) -> Result<ChaosReport, PipelineError> {
    let show = options.progress;
    let config = GeneratorConfig {
        seed: options.seed,
        sources: riffle_loadtest::parse_mix(&options.sources)?,
        invalid_ratio: options.invalid_ratio,
        ..GeneratorConfig::default()
    };
    let generator = Generator::new(config, pipeline.schema_ids())?;
    let stream = pipeline
        .deployment()
        .stream_name("RawStream")
        .ok_or_else(|| PipelineError::Aws("no RawStream in the templates".into()))?
        .to_string();
    // KPL aggregates per shard in strict order, each put call with an origin of its own, as
    // ADR 0010 asks of producers: so its retries and re-sends are copies the validator drops.
    let producer_output = riffle_stage::AggregatingOutput::new(
        riffle_aws::kinesis_client(pipeline.sdk()),
        pipeline
            .publisher()
            .with_throttle_faults(options.throttle_rate, options.seed),
        &stream,
    );
    let rejects = collect_rejects(pipeline.queue_drainer("RejectsQueue")?);
    let plan = schedule(options);
    say(
        show,
        &format!(
            "chaos: {} events at {}/s from {} ({:.1}% poison); {} kills; kinesalite restart: {}; \
             throttle rate {}, handler error rate {}",
            options.events,
            options.rate,
            options.sources,
            options.invalid_ratio * 100.0,
            options.kills,
            if options.restart_kinesis {
                "once"
            } else {
                "no"
            },
            options.throttle_rate,
            options.handler_error_rate,
        ),
    );

    let started = Instant::now();
    let produced = Arc::new(AtomicU64::new(0));
    let producer = tokio::spawn(produce(
        generator,
        producer_output,
        Production {
            total: options.events,
            rate: options.rate,
            resend_rate: options.resend_rate,
            seed: options.seed,
        },
        Arc::clone(&produced),
    ));

    let mut faults = Vec::new();
    let mut kills = 0usize;
    let mut last_progress = Instant::now();
    for planned in plan {
        let due = started + Duration::from_secs_f64(planned.at_secs());
        while Instant::now() < due {
            restart_exited(pipeline, &mut faults).await?;
            if last_progress.elapsed() >= Duration::from_secs(1) {
                let c = pipeline.counters();
                overwrite(
                    show,
                    &progress_line(
                        &c,
                        produced.load(Ordering::Relaxed),
                        options.events,
                        kills,
                        injected(&c),
                    ),
                );
                last_progress = Instant::now();
            }
            tokio::time::sleep(
                due.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200)),
            )
            .await;
        }
        match planned {
            Planned::Kill { stage, delay, .. } => {
                let Some(stage) = STAGES.get(stage).copied() else {
                    continue;
                };
                restart_exited(pipeline, &mut faults).await?;
                let at_secs = started.elapsed().as_secs_f64();
                pipeline.kill_stage(stage).await?;
                tokio::time::sleep(delay).await;
                pipeline.restart_stage(stage).await?;
                kills += 1;
                faults.push(Fault::Kill {
                    stage,
                    at_secs,
                    down: delay,
                });
            }
            Planned::RestartKinesis { .. } => {
                let at_secs = started.elapsed().as_secs_f64();
                let t = Instant::now();
                pipeline.restart_kinesis().await?;
                faults.push(Fault::KinesisRestart {
                    at_secs,
                    took: t.elapsed(),
                });
            }
        }
    }
    let ledger = loop {
        if producer.is_finished() {
            break producer
                .await
                .map_err(|e| PipelineError::Aws(format!("producer task: {e}")))??;
        }
        restart_exited(pipeline, &mut faults).await?;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            let c = pipeline.counters();
            let n = produced.load(Ordering::Relaxed);
            overwrite(
                show,
                &progress_line(&c, n, options.events, kills, injected(&c)),
            );
            last_progress = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The drain: every stage's checkpoint at the end of its input, twice in a row with no
    // counter moving in between (a batch in flight moves one).
    let mut quiet_since: Option<(u64, Instant)> = None;
    let mut last_move = (0u64, Instant::now());
    let drained = loop {
        restart_exited(pipeline, &mut faults).await?;
        let c = pipeline.counters();
        let moved: u64 = STAGES.iter().map(|s| c.count(s, "RecordsIn")).sum::<u64>() + injected(&c);
        overwrite(
            show,
            &progress_line(
                &c,
                ledger.events.len() as u64,
                options.events,
                kills,
                injected(&c),
            ),
        );
        if moved != last_move.0 {
            last_move = (moved, Instant::now());
        }
        let caught = caught_up(pipeline).await;
        quiet_since = match (caught, quiet_since) {
            (true, Some((m, since))) if m == moved => {
                if since.elapsed() >= DRAIN_POLL {
                    break true;
                }
                Some((m, since))
            }
            (true, _) => Some((moved, Instant::now())),
            (false, _) => None,
        };
        if last_move.1.elapsed() > options.idle_timeout {
            break false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    };
    let elapsed = started.elapsed();
    let counters = pipeline.counters();
    say(show, "");
    say(
        show,
        if drained {
            "pipeline drained; reading the view, the archive and the queues back"
        } else {
            "pipeline did NOT drain; reading back what is there"
        },
    );

    let items = pipeline.view_items().await?;
    let (_, rows) = pipeline.archive_rows().await?;
    let rejects = rejects.finish().await?;
    let mut dead_letters = Vec::new();
    let kinesis = riffle_aws::kinesis_client(pipeline.sdk());
    for (queue, stage) in DEAD_LETTER_QUEUES {
        for body in pipeline.queue_drainer(queue)?.drain_bodies().await? {
            dead_letters.push((stage, dead_letter_records(&kinesis, &body).await));
        }
    }
    let codec = EnvelopeCodec::new(pipeline.schema_ids().envelope)
        .map_err(|e| PipelineError::Aws(format!("envelope codec: {e}")))?;
    let outcome = Outcome {
        rows,
        ..Outcome::default()
    }
    .with_view_items(&items);
    let (figures, mut failures) = assess(&ledger, &outcome, &rejects, &dead_letters, &codec);
    if !drained {
        failures.insert(
            0,
            format!(
                "the pipeline did not drain: nothing moved for {:?}",
                options.idle_timeout
            ),
        );
    }
    Ok(ChaosReport {
        figures,
        failures,
        faults,
        counters,
        producer_throttled: ledger.throttled,
        producer_retries: ledger.retries,
        producer_resent: ledger.resent,
        truth: ledger.truth,
        drained,
        elapsed,
        logs: pipeline
            .log_file("validator")
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
    })
}

/// Starts again any stage that exited by itself (as Lambda would start a new instance).
async fn restart_exited(
    pipeline: &mut Pipeline,
    faults: &mut Vec<Fault>,
) -> Result<(), PipelineError> {
    for (stage, status) in pipeline.take_exited() {
        let before = faults
            .iter()
            .filter(|f| matches!(f, Fault::Exited { stage: s, .. } if *s == stage))
            .count();
        if before + 1 >= MAX_SELF_EXITS {
            return Err(PipelineError::Process {
                reason: format!(
                    "exited by itself {} times (last: {status}); see {}",
                    before + 1,
                    pipeline.log_file(&stage).display()
                ),
                service: stage,
            });
        }
        tracing::warn!(%stage, %status, "stage exited by itself; starting it again");
        pipeline.restart_stage(&stage).await?;
        faults.push(Fault::Exited { stage, status });
    }
    Ok(())
}

/// Puts `total` events at `rate`, each chunk retried until Kinesis has taken all of it;
/// an event enters the ground truth once accepted.
/// Mixed into the seed for the producer's re-send draws.
const RESEND_SEED: u64 = 0x5e5e_4d00_0000_0001;

/// How [`produce`] offers the events.
struct Production {
    total: u64,
    rate: u32,
    /// Share of put calls sent again whole after they succeeded (a lost answer).
    resend_rate: f64,
    seed: u64,
}

async fn produce(
    mut generator: Generator,
    output: riffle_stage::AggregatingOutput,
    production: Production,
    produced: Arc<AtomicU64>,
) -> Result<Ledger, PipelineError> {
    let Production {
        total,
        rate,
        resend_rate,
        seed,
    } = production;
    let mut ledger = Ledger::default();
    // Its own stream of draws, apart from the kill schedule's.
    let mut rng = SplitMix::new(seed ^ RESEND_SEED);
    let started = Instant::now();
    let mut done: u64 = 0;
    // One origin for the run: calls go one after the other, and a call's refused records are
    // put again before the next call starts, so every shard sees the sequence in order.
    generator.stamp_origins(Some((format!("chaos-{seed}"), 0)));
    while done < total {
        let due = ((started.elapsed().as_secs_f64() * f64::from(rate)) as u64).min(total);
        if due <= done {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let n = usize::try_from((due - done).min(PUT_CHUNK as u64)).unwrap_or(PUT_CHUNK);
        let now = now_ms();
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(generator.next(now)?);
        }
        let records: Vec<OutRecord> = events
            .iter()
            .map(|e| OutRecord {
                partition_key: e.partition_key.clone(),
                data: e.record.clone(),
            })
            .collect();
        put_until_accepted(&output, records.clone(), &mut ledger).await?;
        if rng.unit() < resend_rate {
            // The answer "got lost": the whole call goes again, every record a copy.
            put_until_accepted(&output, records, &mut ledger).await?;
            ledger.resent += n as u64;
        }
        for event in &events {
            ledger.record(event);
        }
        done += n as u64;
        produced.store(done, Ordering::Relaxed);
    }
    Ok(ledger)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

async fn put_until_accepted(
    output: &riffle_stage::AggregatingOutput,
    mut pending: Vec<OutRecord>,
    ledger: &mut Ledger,
) -> Result<(), PipelineError> {
    let deadline = Instant::now() + PUT_DEADLINE;
    loop {
        let (failed, outcome) = output
            .publish_counted(pending.clone())
            .await
            .map_err(|e| PipelineError::Aws(format!("PutRecords: {e}")))?;
        ledger.throttled += outcome.throttled as u64;
        ledger.retries += outcome.retries as u64;
        if failed.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PipelineError::Aws(format!(
                "PutRecords: {} records still refused after {PUT_DEADLINE:?}: {:?}",
                failed.len(),
                riffle_aws::kinesis::failure_codes(&outcome)
            )));
        }
        ledger.retries += failed.len() as u64;
        // In order, from the first refused: the publisher sent nothing after a refused
        // aggregate of the same shard, so the shard sees the origin's records in order.
        pending = failed
            .iter()
            .filter_map(|i| pending.get(*i).cloned())
            .collect();
        tokio::time::sleep(PUT_RETRY_PAUSE).await;
    }
}

/// Whether every stage has read its input stream to the end: for each shard, nothing is
/// readable after the stage's checkpoint. Any error counts as "not yet".
pub async fn caught_up(pipeline: &Pipeline) -> bool {
    let kinesis = riffle_aws::kinesis_client(pipeline.sdk());
    let dynamo = riffle_aws::dynamodb_client(pipeline.sdk());
    // In data-flow order: a stage checked after the one feeding it sees all it was fed.
    for stage in STAGES {
        if !pipeline.is_running(stage) {
            return false;
        }
        let Some(esm) = pipeline.deployment().esm(stage) else {
            return false;
        };
        let store = CheckpointStore::new(
            dynamo.clone(),
            esm.checkpoint_table.clone(),
            &esm.function_name,
            &esm.stream_name,
        );
        let Ok(shards) = kinesis
            .list_shards()
            .stream_name(&esm.stream_name)
            .send()
            .await
        else {
            return false;
        };
        for shard in shards.shards() {
            let request = kinesis
                .get_shard_iterator()
                .stream_name(&esm.stream_name)
                .shard_id(shard.shard_id());
            let request = match store.load(shard.shard_id()).await {
                Ok(Checkpoint::ShardEnd) => continue,
                Ok(Checkpoint::After(seq)) => request
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(seq),
                Ok(Checkpoint::None) => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
                Err(_) => return false,
            };
            let Ok(iterator) = request.send().await else {
                return false;
            };
            let Some(iterator) = iterator.shard_iterator() else {
                continue;
            };
            match kinesis
                .get_records()
                .shard_iterator(iterator)
                .limit(1)
                .send()
                .await
            {
                Ok(out) if out.records().is_empty() => {}
                _ => return false,
            }
        }
    }
    true
}

/// Which event a queued record is: by its raw bytes (a record as produced), else by the
/// event id of its envelope.
fn identify(ledger: &Ledger, codec: &EnvelopeCodec, data: &[u8]) -> Vec<Option<usize>> {
    if riffle_codec::kpl::is_aggregated(data)
        && let Ok(subs) = riffle_codec::kpl::deaggregate(data)
    {
        return subs
            .iter()
            .flat_map(|sub| identify(ledger, codec, sub.data))
            .collect();
    }
    if let Some(index) = ledger
        .by_bytes
        .get(&bytes_key(data))
        .and_then(|all| all.first())
    {
        return vec![Some(*index)];
    }
    vec![
        codec
            .decode(data)
            .ok()
            .and_then(|envelope| ledger.by_id.get(&envelope.event_id).copied()),
    ]
}

/// The records of one dead-letter message, or why they could not be had.
type DeadLetterRecords = Result<Vec<Vec<u8>>, String>;

/// The records a dead-letter message stands for: its own bytes (rejects, parked records) or,
/// for an on-failure message (positions only, as Lambda sends), the records read back from
/// the stream.
async fn dead_letter_records(kinesis: &aws_sdk_kinesis::Client, body: &str) -> DeadLetterRecords {
    let message = riffle_cli::dlq::parse_message(body);
    match &message {
        riffle_cli::dlq::DeadLetter::Unreadable(reason) => Err(reason.clone()),
        riffle_cli::dlq::DeadLetter::Rejects(rejects) => Ok(rejects
            .iter()
            .map(|r| r.data().unwrap_or_default())
            .collect()),
        riffle_cli::dlq::DeadLetter::Failure(_) => {
            let ranges =
                riffle_cli::dlq::stream_ranges(&message, &riffle_cli::dlq::Topology::default());
            let read = riffle_cli::dlq::read_ranges(kinesis, &ranges).await?;
            Ok(read.into_iter().flatten().map(|(_, data)| data).collect())
        }
    }
}

/// The figures and the failures of a run, from what was read back.
fn assess(
    ledger: &Ledger,
    outcome: &Outcome,
    rejects: &[riffle_stage::RejectMessage],
    dead_letters: &[(&str, DeadLetterRecords)],
    codec: &EnvelopeCodec,
) -> (Figures, Vec<String>) {
    let truth = &ledger.truth;
    let mut failures = Vec::new();
    let mut f = Figures {
        valid: truth.valid(),
        poison: truth.rejected(),
        archive_rows: outcome.rows.len() as u64,
        reject_messages: rejects.len() as u64,
        ..Figures::default()
    };

    // Queues: which events they hold.
    let mut on_rejects: BTreeSet<usize> = BTreeSet::new();
    let mut on_dlq: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    let mut unidentified = 0u64;
    // Byte-identical records of one partition key, told apart by where they were on the
    // stream: the n-th distinct (shard, sequence) seen is the n-th such event. A record
    // rejected twice (a retried batch) comes back at the same place and counts once.
    let mut places: HashMap<(u64, &str), Vec<(&str, &str)>> = HashMap::new();
    for r in rejects {
        let data = r.data().unwrap_or_default();
        let twins: Vec<usize> = ledger
            .by_bytes
            .get(&bytes_key(&data))
            .map(|all| {
                all.iter()
                    .copied()
                    .filter(|i| ledger.keys.get(*i).is_some_and(|k| *k == r.partition_key))
                    .collect()
            })
            .unwrap_or_default();
        let found = if let [only] = twins.as_slice() {
            vec![Some(*only)]
        } else if twins.len() > 1 {
            let seen = places
                .entry((bytes_key(&data), r.partition_key.as_str()))
                .or_default();
            let place = (r.shard_id.as_str(), r.sequence_number.as_str());
            let nth = seen.iter().position(|p| *p == place).unwrap_or_else(|| {
                seen.push(place);
                seen.len() - 1
            });
            vec![twins.get(nth).copied()]
        } else {
            identify(ledger, codec, &data)
        };
        match found.as_slice() {
            [Some(index)] => {
                on_rejects.insert(*index);
                if let Some((id, _)) = ledger.events.get(*index)
                    && let Some(code) = truth.rejected_event_ids().get(id)
                    && *code != r.code
                {
                    f.wrong_codes += 1;
                    failures.push(format!(
                        "event {id} rejected as {}, expected {code}",
                        r.code
                    ));
                }
            }
            _ => unidentified += 1,
        }
    }
    for (stage, records) in dead_letters {
        match records {
            Ok(records) => {
                for data in records {
                    for found in identify(ledger, codec, data) {
                        match found {
                            Some(index) => {
                                on_dlq.entry(index).or_default().insert(*stage);
                            }
                            None => unidentified += 1,
                        }
                    }
                }
            }
            Err(e) => {
                unidentified += 1;
                failures.push(format!("{stage} dead-letter message not understood: {e}"));
            }
        }
    }
    f.rejects_distinct = on_rejects.len() as u64;
    f.dead_lettered = on_dlq.len() as u64;
    f.unidentified_on_queues = unidentified;
    let on_queues: BTreeSet<usize> = on_rejects.iter().chain(on_dlq.keys()).copied().collect();
    f.valid_on_queues = on_queues.iter().filter(|i| ledger.is_valid(**i)).count() as u64;
    f.poison_accounted = on_queues.iter().filter(|i| !ledger.is_valid(**i)).count() as u64;
    f.poison_missing = f.poison.saturating_sub(f.poison_accounted);

    // Excuses: a dead-lettered event is accounted for where its stage's queue sits.
    let excused = |index: usize, stage_after: &str| {
        on_dlq.get(&index).is_some_and(|stages| {
            stages
                .iter()
                .any(|s| ["validator", "enricher", stage_after].contains(s))
        })
    };

    // View, per item.
    let mut excused_view: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for (index, (_, item)) in ledger.events.iter().enumerate() {
        if let Some(item) = item
            && excused(index, "aggregator")
        {
            *excused_view.entry(item.clone()).or_default() += 1;
        }
    }
    for (key, want) in truth.view() {
        let expected = want
            .count
            .saturating_sub(excused_view.get(key).copied().unwrap_or(0));
        let got = outcome.view.get(key).map_or(0, |t| t.count);
        f.lost_view += expected.saturating_sub(got);
        f.doubled_view += got.saturating_sub(expected);
    }
    for (key, got) in &outcome.view {
        if !truth.view().contains_key(key) {
            f.doubled_view += got.count;
        }
    }
    let view_diffs = verify::view_differences(truth, outcome);
    f.view_differences = view_diffs.len() as u64;

    // Archive, per event.
    let archived = verify::archived_per_event(&outcome.rows);
    for (id, n) in &archived {
        match ledger.by_id.get(*id) {
            Some(index) if ledger.is_valid(*index) => {
                if *n > 1 {
                    f.doubled_archive_events += 1;
                    f.doubled_archive_rows += u64::from(n - 1);
                }
            }
            _ => f.stray_archive_rows += u64::from(*n),
        }
    }
    f.lost_archive = ledger
        .events
        .iter()
        .enumerate()
        .filter(|(index, (id, item))| {
            item.is_some() && !archived.contains_key(id.as_str()) && !excused(*index, "archiver")
        })
        .count() as u64;

    if f.lost() > 0 {
        failures.push(format!(
            "lost {}: view counts short by {}, {} valid events missing from the archive",
            f.lost(),
            f.lost_view,
            f.lost_archive
        ));
    }
    if f.doubled() > 0 {
        failures.push(format!(
            "doubled {}: view counts over by {}, {} extra archive rows ({} events archived more than once)",
            f.doubled(),
            f.doubled_view,
            f.doubled_archive_rows,
            f.doubled_archive_events
        ));
    }
    let distinct_archived = archived.len() as u64 - stray_ids(&archived, ledger);
    if f.archive_rows != f.valid || distinct_archived != f.valid {
        failures.push(format!(
            "archive rows {} (distinct valid events {distinct_archived}, stray rows {}) != valid events {}",
            f.archive_rows, f.stray_archive_rows, f.valid
        ));
    }
    if f.poison_accounted != f.poison || f.valid_on_queues > 0 || f.unidentified_on_queues > 0 {
        failures.push(format!(
            "rejects + DLQ {} (poison {}, valid events {}, unidentified {}) != poison records {}",
            f.poison_accounted + f.valid_on_queues + f.unidentified_on_queues,
            f.poison_accounted,
            f.valid_on_queues,
            f.unidentified_on_queues,
            f.poison
        ));
    }
    if !view_diffs.is_empty() {
        failures.push(format!(
            "view != ground truth: {} items differ",
            view_diffs.len()
        ));
        failures.extend(view_diffs.into_iter().take(10).map(|d| format!("  {d}")));
    }
    (f, failures)
}

fn stray_ids(archived: &BTreeMap<&str, u32>, ledger: &Ledger) -> u64 {
    archived
        .keys()
        .filter(|id| !ledger.by_id.get(**id).is_some_and(|i| ledger.is_valid(*i)))
        .count() as u64
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
            let function = format!("riffle-{s}");
            format!(
                "{s} {} faults/{} retries",
                c.count(&function, "FaultsInjected"),
                c.count(&function, "Retries")
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
