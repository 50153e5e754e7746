//! `riffle demo`: the whole pipeline on this machine, fed by the load generator, ending in a
//! summary checked against the generator's ground truth.

use riffle_stage::stages;
use riffle_telemetry::names;
use std::io::Write as _;
use std::time::{Duration, Instant};

use riffle_loadtest::GroundTruth;

use crate::pipeline::{Counters, Pipeline, PipelineError, PipelineOptions, STAGES};
use crate::verify::{self, Outcome};

/// Producer clock tick.
const TICK: Duration = Duration::from_millis(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Events to produce.
    pub events: u64,
    /// Events per second.
    pub rate: u32,
    /// Source mix, e.g. `shop-web=2,web,iot-gateway`.
    pub sources: String,
    /// Share of invalid events.
    pub invalid_ratio: f64,
    /// Generator seed.
    pub seed: u64,
    /// Give up when nothing moves for this long.
    pub idle_timeout: Duration,
    /// Print progress lines.
    pub progress: bool,
    /// Pack events into KPL aggregates per shard, as a high-volume producer would.
    pub aggregate: bool,
    /// Share of events without a trace header the validator starts an X-Ray trace for.
    pub trace_sample_rate: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            events: 20_000,
            rate: 5_000,
            sources: "shop-web,shop-app,web,iot-gateway".into(),
            invalid_ratio: 0.02,
            seed: 42,
            idle_timeout: Duration::from_secs(60),
            progress: true,
            aggregate: true,
            // Every event, so `riffle trace` finds any id the demo produced.
            trace_sample_rate: 1.0,
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// The generator's ground truth.
    pub truth: GroundTruth,
    /// What the pipeline made.
    pub outcome: Outcome,
    /// Stage metric sums.
    pub counters: Counters,
    /// Records the producer could not put.
    pub put_failures: usize,
    /// Time from the first put until the pipeline drained.
    pub elapsed: Duration,
    /// Time spent producing.
    pub produce_elapsed: Duration,
    /// Differences from the ground truth (empty = exact).
    pub differences: Vec<String>,
    /// What the producer (this process) put on Kinesis.
    pub producer_usage: riffle_aws::meter::Usage,
    /// DynamoDB items the local DynamoDB was asked for by the stages (the registry's table
    /// left out), from its request recorder: what the stages' own metrics must equal.
    pub emulator_dynamo: riffle_local::recording::ItemCounts,
    /// An archived event to trace, and where the local X-Ray daemon keeps the documents.
    pub trace_example: Option<(String, std::path::PathBuf)>,
    /// Bytes the producer was handed (records and partition keys).
    pub produced_bytes: u64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn progress_line(c: &Counters, produced: u64, total: u64, rate: f64) -> String {
    format!(
        "produced {produced}/{total} ({rate:.0}/s) | {}",
        c.stage_progress()
    )
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

/// Starts the pipeline, produces, waits for the drain, reads everything back and compares.
///
/// # Errors
/// When a part of the pipeline fails; the pipeline is stopped either way.
pub async fn run(
    options: &DemoOptions,
    pipeline_options: PipelineOptions,
) -> Result<Report, PipelineError> {
    let steps = std::sync::atomic::AtomicUsize::new(0);
    let show = options.progress;
    let stage_env = vec![(
        riffle_trace::SAMPLE_RATE_ENV.to_owned(),
        options.trace_sample_rate.to_string(),
    )];
    let mut pipeline = Pipeline::start_with_env(pipeline_options, stage_env, |step| {
        let n = steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        say(show, &format!("[{n}] {step}"));
    })
    .await?;
    let result = produce_and_check(&mut pipeline, options).await;
    say(show, "stopping services and emulators");
    pipeline.shutdown().await;
    result
}

async fn produce_and_check(
    pipeline: &mut Pipeline,
    options: &DemoOptions,
) -> Result<Report, PipelineError> {
    let show = options.progress;
    let mut generator =
        pipeline.generator(options.seed, &options.sources, options.invalid_ratio)?;
    let mut truth = GroundTruth::new();
    let producer = pipeline.producer(options.aggregate).await?;
    say(
        show,
        &format!(
            "producing {} events at {}/s from {}",
            options.events, options.rate, options.sources
        ),
    );

    // Rejects are consumed while the pipeline runs, as an owning team would: besides being
    // realistic, a long queue makes every send to moto's SQS slower (it scans the queue).
    let rejects = collect_rejects(pipeline.queue_drainer("RejectsQueue")?);

    let started = Instant::now();
    let usage_before = riffle_aws::meter::usage();
    // riffle-producer batches, aggregates per shard and stamps the origins (ADR 0010); the
    // generator's envelopes name none, so each gets its channel's next sequence when put.
    let mut produced: u64 = 0;
    let mut produced_bytes: u64 = 0;
    let mut last_progress = Instant::now();
    let produce_error = |e: riffle_producer::ProducerError| PipelineError::Aws(e.to_string());
    while produced < options.events {
        let due = (started.elapsed().as_secs_f64() * f64::from(options.rate)) as u64;
        let due = due.min(options.events);
        let now = now_ms();
        while produced < due {
            let event = generator.next(now)?;
            truth.record(&event);
            produced_bytes += (event.record.len() + event.partition_key.len()) as u64;
            producer
                .send_framed(event.partition_key, event.record)
                .await
                .map_err(produce_error)?;
            produced += 1;
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            let rate = produced as f64 / started.elapsed().as_secs_f64();
            overwrite(
                show,
                &progress_line(&pipeline.counters(), produced, options.events, rate),
            );
            last_progress = Instant::now();
        }
        tokio::time::sleep(TICK).await;
    }
    let put_failures = producer.close().await.map_err(produce_error)?.len();
    pipeline.record_producer(&producer.stats());
    let produce_elapsed = started.elapsed();
    let producer_usage = riffle_aws::meter::usage().since(&usage_before);
    let accepted = produced - put_failures as u64;

    let mut last_progress = Instant::now();
    pipeline
        .wait_drained(accepted, options.idle_timeout, |c| {
            if last_progress.elapsed() >= Duration::from_millis(500) {
                let rate = produced as f64 / produce_elapsed.as_secs_f64();
                overwrite(show, &progress_line(c, produced, options.events, rate));
                last_progress = Instant::now();
            }
        })
        .await?;
    let elapsed = started.elapsed();
    // The stages stop first, so their last metrics (checkpoints, lease hand-back) are in.
    let schemas_table = pipeline
        .deployment()
        .table_name("SchemasTable")
        .unwrap_or_default()
        .to_owned();
    let mut emulator_dynamo = riffle_local::recording::ItemCounts::default();
    for (table, counts) in pipeline.stop_stages().await? {
        if table != schemas_table {
            emulator_dynamo += counts;
        }
    }
    let counters = pipeline.counters();
    overwrite(
        show,
        &progress_line(
            &counters,
            produced,
            options.events,
            produced as f64 / produce_elapsed.as_secs_f64(),
        ),
    );
    say(show, "");
    say(
        show,
        "pipeline drained; reading the view, the archive and the rejects back",
    );

    let items = pipeline.view_items().await?;
    let (objects, rows) = pipeline.archive_rows().await?;
    let rejects = rejects.finish().await?;
    let outcome = Outcome {
        rows,
        objects,
        rejects,
        ..Outcome::default()
    }
    .with_view_items(&items);
    let differences = verify::differences(&truth, &outcome);
    let trace_example = outcome
        .rows
        .first()
        .map(|r| r.event_id.clone())
        .zip(pipeline.trace_store());
    Ok(Report {
        trace_example,
        produced_bytes,
        truth,
        outcome,
        counters,
        put_failures,
        elapsed,
        produce_elapsed,
        differences,
        producer_usage,
        emulator_dynamo,
    })
}

/// A task that keeps draining a queue until told to finish.
pub(crate) struct RejectsCollector {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<Vec<riffle_stage::RejectMessage>, PipelineError>>,
}

/// How often the rejects queue is drained during a run.
const REJECTS_POLL: Duration = Duration::from_millis(500);

pub(crate) fn collect_rejects(drainer: crate::pipeline::QueueDrainer) -> RejectsCollector {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut all = Vec::new();
        loop {
            all.extend(drainer.drain().await?);
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(REJECTS_POLL) => {}
            }
        }
        all.extend(drainer.drain().await?);
        Ok(all)
    });
    RejectsCollector { stop, task }
}

impl RejectsCollector {
    pub(crate) async fn finish(self) -> Result<Vec<riffle_stage::RejectMessage>, PipelineError> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| PipelineError::Aws(format!("rejects collector: {e}")))?
    }
}

/// What a run put in, for [`figures_of`].
#[derive(Debug, Clone, Default)]
pub struct Produced {
    /// Events produced.
    pub events: u64,
    /// Of which valid.
    pub valid: u64,
    /// Bytes handed to the producer (records and partition keys).
    pub bytes: u64,
    /// Kinesis PUT payload units the producer used.
    pub put_units: u64,
    /// Messages that went to the rejects and dead-letter queues.
    pub queue_messages: u64,
}

/// What the run measured per valid event, for `riffle cost`; `source` says how it was run.
pub fn figures(report: &Report, source: &str) -> riffle_cli::cost::Figures {
    figures_of(
        &report.counters,
        &Produced {
            events: report.truth.total(),
            valid: report.truth.valid(),
            bytes: report.produced_bytes,
            put_units: report.producer_usage.kinesis_put_units,
            queue_messages: report.outcome.rejects.len() as u64,
        },
        source,
    )
}

/// Per valid event, from the stages' metric sums `c` and what was `produced` (the demo's
/// and `riffle-dev load`'s figures alike).
pub fn figures_of(c: &Counters, produced: &Produced, source: &str) -> riffle_cli::cost::Figures {
    let valid = produced.valid.max(1) as f64;
    let per_event = |metric: &str| -> f64 {
        STAGES
            .iter()
            .map(|stage| c.get(c.function(stage), metric))
            .sum::<f64>()
            / valid
    };
    riffle_cli::cost::Figures {
        source: source.to_owned(),
        measured_at: chrono::Utc::now().to_rfc3339(),
        events: produced.events,
        valid_events: produced.valid,
        event_bytes: produced.bytes as f64 / produced.events.max(1) as f64,
        put_units: produced.put_units as f64 / valid + per_event(names::KINESIS_PUT_UNITS),
        dynamo_reads: per_event(names::DYNAMO_ITEMS_READ),
        dynamo_writes: per_event(names::DYNAMO_ITEMS_WRITTEN),
        s3_puts: c.count(stages::ARCHIVER, names::OBJECTS_WRITTEN) as f64 / valid,
        archive_bytes: c.count(stages::ARCHIVER, names::BYTES_WRITTEN) as f64 / valid,
        queue_messages: produced.queue_messages as f64 / valid,
        stages: STAGES
            .iter()
            .map(|stage| riffle_cli::cost::StageFigures {
                stage: (*stage).to_owned(),
                batches: c.count(c.function(stage), names::BATCHES) as f64 / valid,
                handler_ms: c.get(c.function(stage), names::HANDLER_MS) / valid,
            })
            .collect(),
    }
}

/// The summary a person reads at the end of the demo.
pub fn render(report: &Report) -> String {
    let c = &report.counters;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line("== Riffle demo summary ==".into());
    line(format!(
        "events produced     {} ({} valid, {} invalid, {} put failures)",
        report.truth.total(),
        report.truth.valid(),
        report.truth.rejected(),
        report.put_failures
    ));
    line(format!(
        "{:<12} {:>8} {:>8} {:>8} {:>7} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "stage",
        "in",
        "out",
        "rejected",
        "batches",
        "handler-ms",
        "max-age-ms",
        "ddb-reads",
        "ddb-writes",
        "put-units"
    ));
    for stage in STAGES {
        let (out_metric, rejected_metric) = match stage {
            stages::VALIDATOR => (names::RECORDS_OUT, names::REJECTED),
            stages::ENRICHER => (names::RECORDS_OUT, names::DEAD_LETTERED),
            stages::AGGREGATOR => (names::VIEW_ITEMS_WRITTEN, names::RECORDS_PARKED),
            _ => (names::ROWS_ARCHIVED, names::RECORDS_PARKED),
        };
        // The runtime reports under the function's name, the handler under the stage's.
        let function = c.function(stage);
        line(format!(
            "{:<12} {:>8} {:>8} {:>8} {:>7} {:>10.0} {:>9.0} {:>9} {:>9} {:>8}",
            stage,
            c.count(stage, names::RECORDS_IN),
            c.count(stage, out_metric),
            c.count(stage, rejected_metric),
            c.count(function, names::BATCHES),
            c.get(function, names::HANDLER_MS),
            c.max(function, names::ITERATOR_AGE_MS),
            c.count(function, names::DYNAMO_ITEMS_READ),
            c.count(function, names::DYNAMO_ITEMS_WRITTEN),
            c.count(function, names::KINESIS_PUT_UNITS),
        ));
    }
    line("  (aggregator out = view item writes; archiver out = rows archived; max-age = largest iterator age; ddb = DynamoDB items read by key and written, bookkeeping of the local event source mapping included; put-units = Kinesis PUT payload units)".into());
    let view_events: u64 = report.outcome.view.values().map(|t| t.count).sum();
    line(format!(
        "view rows           {} (counting {} events)",
        report.outcome.view.len(),
        view_events
    ));
    line(format!(
        "archive             {} objects, {} rows",
        report.outcome.objects,
        report.outcome.rows.len()
    ));
    line(format!(
        "rejects queue       {} {:?}",
        report.outcome.rejects.len(),
        report.outcome.rejects_by_code()
    ));
    let rows = &report.outcome.rows;
    let e2e = verify::percentiles(rows.iter().map(|r| r.archived_at - r.ingest_time).collect());
    let validate = verify::percentiles(
        rows.iter()
            .filter_map(|r| r.validated_at.map(|v| v - r.ingest_time))
            .collect(),
    );
    let enrich = verify::percentiles(
        rows.iter()
            .filter_map(|r| Some(r.enriched_at? - r.validated_at?))
            .collect(),
    );
    let fmt = |p: Option<(i64, i64, i64)>| {
        p.map_or("n/a".to_string(), |(a, b, c)| {
            format!("p50 {a} ms, p95 {b} ms, p99 {c} ms")
        })
    };
    let valid = report.truth.valid().max(1) as f64;
    let per_event = |metric: &str| -> f64 {
        STAGES
            .iter()
            .map(|stage| c.get(c.function(stage), metric))
            .sum::<f64>()
            / valid
    };
    line(format!(
        "cost per valid event    DynamoDB {:.4} item reads, {:.4} item writes; Kinesis PUT payload units {:.4} (producer) + {:.4} (stages)",
        per_event(names::DYNAMO_ITEMS_READ),
        per_event(names::DYNAMO_ITEMS_WRITTEN),
        report.producer_usage.kinesis_put_units as f64 / valid,
        per_event(names::KINESIS_PUT_UNITS),
    ));
    line(format!(
        "  counted at the local DynamoDB: {} item reads, {} item writes ({:.4} and {:.4} per valid event)",
        report.emulator_dynamo.reads,
        report.emulator_dynamo.writes,
        report.emulator_dynamo.reads as f64 / valid,
        report.emulator_dynamo.writes as f64 / valid,
    ));
    let view = verify::percentiles(
        c.samples(stages::AGGREGATOR, names::INGEST_TO_VIEW_MS)
            .iter()
            .map(|ms| *ms as i64)
            .collect(),
    );
    line(format!(
        "latency ingest->view       {} (per-batch percentiles of the aggregator)",
        fmt(view)
    ));
    line(format!("latency ingest->archived   {}", fmt(e2e)));
    line(format!("  ingest->validated        {}", fmt(validate)));
    line(format!("  validated->enriched      {}", fmt(enrich)));
    let secs = report.elapsed.as_secs_f64();
    let produce_secs = report.produce_elapsed.as_secs_f64();
    line(format!(
        "throughput          {:.0} events/s end to end ({} events, first put to drained in {:.1} s)",
        report.truth.total() as f64 / secs,
        report.truth.total(),
        secs,
    ));
    line(format!(
        "  producer          {:.0} events/s offered for {:.1} s; drained {:.1} s after the last put",
        report.truth.total() as f64 / produce_secs,
        produce_secs,
        secs - produce_secs,
    ));
    if let Some((event_id, store)) = &report.trace_example {
        line(format!(
            "traces              riffle trace {event_id}   (X-Ray documents in {})",
            store.display()
        ));
    }
    if report.differences.is_empty() {
        line("check               OK: view, archive and rejects match the generator's ground truth exactly".into());
    } else {
        line(format!(
            "check               FAILED: {} differences",
            report.differences.len()
        ));
        for d in report.differences.iter().take(20) {
            line(format!("  - {d}"));
        }
    }
    out
}
