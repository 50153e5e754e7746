//! Driving a chaos run: producing through the faults (with re-sent requests), killing and
//! restarting stage processes, restarting kinesalite, waiting until the pipeline caught up.

use crate::demo::{RejectsCollector, collect_rejects};
use crate::pipeline::{Counters, Pipeline, PipelineError, STAGES};
use crate::verify::Outcome;
use aws_sdk_kinesis::types::ShardIteratorType;
use riffle_codec::EnvelopeCodec;
use riffle_loadtest::{Generator, GeneratorConfig};
use riffle_producer::ProducerBuilder;
use riffle_runtime::checkpoint::{Checkpoint, CheckpointStore};
use riffle_telemetry::names;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::port::ChaosPort;
use super::*;

/// Retries per Kinesis entry before the producer gives up on it and the run is declared
/// broken: with backoff capped at 2 s, enough to ride out a kinesalite restart.
pub(super) const PUT_RETRIES: u32 = 90;

/// How often the drain is checked.
pub(super) const DRAIN_POLL: Duration = Duration::from_secs(1);

pub(super) fn say(enabled: bool, text: &str) {
    if enabled {
        eprintln!("{text}");
    }
}

pub(super) fn overwrite(enabled: bool, text: &str) {
    if enabled {
        eprint!("\r\x1b[2K{text}");
        let _ = std::io::stderr().flush();
    }
}

pub(super) fn progress_line(
    c: &Counters,
    produced: u64,
    total: u64,
    kills: usize,
    faults: u64,
) -> String {
    format!(
        "produced {produced}/{total} | kills {kills} | faults {faults} | {}",
        c.stage_progress()
    )
}

pub(super) fn injected(c: &Counters) -> u64 {
    STAGES
        .iter()
        .map(|s| c.count(c.function(s), names::FAULTS_INJECTED))
        .sum()
}

pub(super) async fn chaos(
    pipeline: &mut Pipeline,
    options: &ChaosOptions,
) -> Result<ChaosReport, PipelineError> {
    let (producer, rejects) = start(pipeline, options)?;
    let mut run = Run {
        pipeline,
        options,
        started: Instant::now(),
        faults: Vec::new(),
        kills: 0,
        last_progress: Instant::now(),
        produced: producer.1,
    };
    let producer = producer.0;
    for planned in schedule(options) {
        run.inject(planned).await?;
    }
    let ledger = run.finish_production(producer).await?;
    let drained = run.drain(&ledger).await?;
    let elapsed = run.started.elapsed();
    let counters = run.pipeline.counters();
    let show = options.progress;
    say(show, "");
    say(
        show,
        if drained {
            "pipeline drained; reading the view, the archive and the queues back"
        } else {
            "pipeline did NOT drain; reading back what is there"
        },
    );
    let (figures, mut failures) = read_back(run.pipeline, rejects, &ledger).await?;
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
        faults: run.faults,
        counters,
        producer_throttled: ledger.throttled,
        producer_retries: ledger.retries,
        producer_resent: ledger.resent,
        truth: ledger.truth,
        drained,
        elapsed,
        logs: run
            .pipeline
            .log_file("validator")
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
    })
}

/// The producer task (and how many events it has put so far) and the rejects collector.
type Started = (
    (
        tokio::task::JoinHandle<Result<Ledger, PipelineError>>,
        Arc<AtomicU64>,
    ),
    RejectsCollector,
);

/// Starts producing (in a task) and collecting rejects, and says what the run will do.
fn start(pipeline: &Pipeline, options: &ChaosOptions) -> Result<Started, PipelineError> {
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
    // riffle-producer: KPL aggregates per shard, origins stamped per shard channel (ADR
    // 0010), so its retries and the re-sends of calls whose answer was lost are copies the
    // validator drops.
    let resent = Arc::new(AtomicU64::new(0));
    let port = ChaosPort::new(
        riffle_producer::KinesisPort::new(riffle_aws::kinesis_client(pipeline.sdk())),
        options.throttle_rate,
        options.resend_rate,
        options.seed ^ RESEND_SEED,
        Arc::clone(&resent),
    );
    let codec = EnvelopeCodec::new(pipeline.schema_ids().envelope)
        .map_err(|e| PipelineError::Aws(e.to_string()))?;
    let producer_output = ProducerBuilder::with_port(port, &stream, codec)
        .aggregation(true)
        .compression(true)
        .origins(format!("chaos-{}", options.seed))
        // Rides out a kinesalite restart: about a minute and a half of backoff.
        .max_retries(PUT_RETRIES)
        .backoff(Duration::from_millis(50), Duration::from_secs(2));
    let rejects = collect_rejects(pipeline.queue_drainer("RejectsQueue")?);
    say(
        options.progress,
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
    let produced = Arc::new(AtomicU64::new(0));
    let producer = tokio::spawn(produce(
        generator,
        producer_output,
        Production {
            total: options.events,
            rate: options.rate,
            resent,
        },
        Arc::clone(&produced),
    ));
    Ok(((producer, produced), rejects))
}

/// A run in progress: the pipeline, the faults done so far, progress output.
struct Run<'a> {
    pipeline: &'a mut Pipeline,
    options: &'a ChaosOptions,
    started: Instant,
    faults: Vec<Fault>,
    kills: usize,
    last_progress: Instant,
    produced: Arc<AtomicU64>,
}

impl Run<'_> {
    /// Prints the progress line (at most once a second unless `always`); `events` put so far.
    fn progress(&mut self, events: u64, always: bool) {
        if !always && self.last_progress.elapsed() < Duration::from_secs(1) {
            return;
        }
        let c = self.pipeline.counters();
        overwrite(
            self.options.progress,
            &progress_line(&c, events, self.options.events, self.kills, injected(&c)),
        );
        self.last_progress = Instant::now();
    }

    /// Waits for the planned fault's time (restarting stages that exit meanwhile), then
    /// does it.
    async fn inject(&mut self, planned: Planned) -> Result<(), PipelineError> {
        let due = self.started + Duration::from_secs_f64(planned.at_secs());
        while Instant::now() < due {
            restart_exited(self.pipeline, &mut self.faults).await?;
            self.progress(self.produced.load(Ordering::Relaxed), false);
            tokio::time::sleep(
                due.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200)),
            )
            .await;
        }
        match planned {
            Planned::Kill { stage, delay, .. } => {
                let Some(stage) = STAGES.get(stage).copied() else {
                    return Ok(());
                };
                restart_exited(self.pipeline, &mut self.faults).await?;
                let at_secs = self.started.elapsed().as_secs_f64();
                self.pipeline.kill_stage(stage).await?;
                tokio::time::sleep(delay).await;
                self.pipeline.restart_stage(stage).await?;
                self.kills += 1;
                self.faults.push(Fault::Kill {
                    stage,
                    at_secs,
                    down: delay,
                });
            }
            Planned::RestartKinesis { .. } => {
                let at_secs = self.started.elapsed().as_secs_f64();
                let t = Instant::now();
                self.pipeline.restart_kinesis().await?;
                self.faults.push(Fault::KinesisRestart {
                    at_secs,
                    took: t.elapsed(),
                });
            }
        }
        Ok(())
    }

    /// Waits for the producer task to finish and takes its ledger.
    async fn finish_production(
        &mut self,
        producer: tokio::task::JoinHandle<Result<Ledger, PipelineError>>,
    ) -> Result<Ledger, PipelineError> {
        loop {
            if producer.is_finished() {
                return producer
                    .await
                    .map_err(|e| PipelineError::Aws(format!("producer task: {e}")))?;
            }
            restart_exited(self.pipeline, &mut self.faults).await?;
            self.progress(self.produced.load(Ordering::Relaxed), false);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every stage's checkpoint is at the end of its input twice in a row with no
    /// counter moving in between (a batch in flight moves one); false when nothing moved for
    /// the idle timeout.
    async fn drain(&mut self, ledger: &Ledger) -> Result<bool, PipelineError> {
        let mut quiet_since: Option<(u64, Instant)> = None;
        let mut last_move = (0u64, Instant::now());
        loop {
            restart_exited(self.pipeline, &mut self.faults).await?;
            let c = self.pipeline.counters();
            let moved: u64 = STAGES
                .iter()
                .map(|s| c.count(s, names::RECORDS_IN))
                .sum::<u64>()
                + injected(&c);
            self.progress(ledger.events.len() as u64, true);
            if moved != last_move.0 {
                last_move = (moved, Instant::now());
            }
            let caught = caught_up(self.pipeline).await;
            quiet_since = match (caught, quiet_since) {
                (true, Some((m, since))) if m == moved => {
                    if since.elapsed() >= DRAIN_POLL {
                        return Ok(true);
                    }
                    Some((m, since))
                }
                (true, _) => Some((moved, Instant::now())),
                (false, _) => None,
            };
            if last_move.1.elapsed() > self.options.idle_timeout {
                return Ok(false);
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

/// The view, the archive and the queues read back and assessed against the ledger.
async fn read_back(
    pipeline: &mut Pipeline,
    rejects: RejectsCollector,
    ledger: &Ledger,
) -> Result<(Figures, Vec<String>), PipelineError> {
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
    Ok(assess(ledger, &outcome, &rejects, &dead_letters, &codec))
}

/// Starts again any stage that exited by itself (as Lambda would start a new instance).
pub(super) async fn restart_exited(
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
pub(super) const RESEND_SEED: u64 = 0x5e5e_4d00_0000_0001;

/// How [`produce`] offers the events.
pub(super) struct Production {
    total: u64,
    rate: u32,
    /// User records the port made the producer put again (lost answers).
    resent: Arc<AtomicU64>,
}

pub(super) async fn produce(
    mut generator: Generator,
    producer: ProducerBuilder<ChaosPort>,
    production: Production,
    produced: Arc<AtomicU64>,
) -> Result<Ledger, PipelineError> {
    let Production {
        total,
        rate,
        resent,
    } = production;
    let error = |e: riffle_producer::ProducerError| PipelineError::Aws(format!("producer: {e}"));
    let producer = producer.build().await.map_err(error)?;
    let mut ledger = Ledger::default();
    let started = Instant::now();
    let mut done: u64 = 0;
    while done < total {
        let due = ((started.elapsed().as_secs_f64() * f64::from(rate)) as u64).min(total);
        if due <= done {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let now = now_ms();
        for _ in done..due {
            let event = generator.next(now)?;
            ledger.record(&event);
            producer
                .send_framed(event.partition_key, event.record)
                .await
                .map_err(error)?;
        }
        done = due;
        produced.store(done, Ordering::Relaxed);
    }
    let failed = producer.close().await.map_err(error)?;
    if let Some(first) = failed.first() {
        return Err(PipelineError::Aws(format!(
            "PutRecords: {} records still refused after {PUT_RETRIES} retries, e.g. {}",
            failed.len(),
            first.error
        )));
    }
    let stats = producer.stats();
    ledger.throttled = stats.throttled;
    ledger.retries = stats.retries;
    ledger.resent = resent.load(Ordering::Relaxed);
    Ok(ledger)
}

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
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
