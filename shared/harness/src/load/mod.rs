//! `riffle-dev load` (`riffle load`): a load profile (constant, ramp, step, spike, soak) offered
//! to the local twin by the seeded generator through `riffle-producer`, measured second by
//! second (offered and accepted events, throttles, per-stage throughput and iterator age,
//! ingest-to-view latency, Kinesis PUT units, DynamoDB and S3 requests, Lambda-equivalent
//! compute), then written as JSON, CSV and a self-contained HTML report.
//!
//! Layout: this file runs the load and samples it; [`profile`] is the offered rate over
//! time (pure); [`report`] the three outputs.

pub mod profile;
pub mod report;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use riffle_loadtest::{Generator, GeneratorConfig, GroundTruth};
use riffle_stage::stages;
use riffle_telemetry::names;

use crate::pipeline::{Counters, Pipeline, PipelineError, PipelineOptions, STAGES};
use profile::{Offered, Profile};
use report::{LoadReport, Second, StageSecond, Summary, latency_of};

/// Producer clock tick.
const TICK: Duration = Duration::from_millis(20);

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The offered load over time.
    pub profile: Profile,
    /// Seconds of offered load.
    pub duration: Duration,
    /// Source mix, e.g. `shop-web=2,web,iot-gateway`.
    pub sources: String,
    /// Share of invalid events.
    pub invalid_ratio: f64,
    /// Generator seed.
    pub seed: u64,
    /// Pack events into KPL aggregates per shard.
    pub aggregate: bool,
    /// Share of events the validator starts a trace for.
    pub trace_sample_rate: f64,
    /// How long to wait for the pipeline to drain after the last event.
    pub drain_timeout: Duration,
    /// Where the three files go.
    pub out_dir: PathBuf,
    /// The command line, for the report.
    pub command: String,
    /// Print a line a second.
    pub progress: bool,
}

/// The files a run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The report.
    pub report: LoadReport,
    /// report.json, report.csv, report.html.
    pub files: [PathBuf; 3],
}

/// Metric sums of the twin at one instant, with how many latency and iterator-age samples
/// had arrived.
struct Snapshot {
    counters: Counters,
    stats: riffle_producer::Stats,
}

/// Turns counter snapshots into seconds.
struct Sampler {
    /// Stage -> (function name, memory MB).
    functions: Vec<(&'static str, String, f64)>,
    last: Snapshot,
    /// Latency samples already attributed to a second.
    latency_seen: usize,
    /// Per function, iterator-age samples already attributed.
    age_seen: BTreeMap<String, usize>,
    seconds: Vec<Second>,
    offered_before: u64,
}

impl Sampler {
    fn new(pipeline: &Pipeline, stats: riffle_producer::Stats) -> Self {
        let counters = pipeline.counters();
        let functions = STAGES
            .iter()
            .map(|stage| {
                let memory = pipeline
                    .deployment()
                    .function_limits(stage)
                    .map_or(128.0, |(mb, _)| f64::from(mb));
                (*stage, counters.function(stage).to_owned(), memory)
            })
            .collect();
        Sampler {
            functions,
            latency_seen: counters
                .samples(stages::AGGREGATOR, names::INGEST_TO_VIEW_MS)
                .len(),
            age_seen: BTreeMap::new(),
            last: Snapshot { counters, stats },
            seconds: Vec::new(),
            offered_before: 0,
        }
    }

    /// The second ending now: what changed since the last one.
    fn sample(&mut self, target_rate: f64, offered: u64, now: Snapshot) {
        let (c, p) = (&now.counters, &self.last.counters);
        let delta = |service: &str, metric: &str| c.get(service, metric) - p.get(service, metric);
        let mut second = Second {
            t: self.seconds.len() as u64 + 1,
            target_rate,
            offered: offered - self.offered_before,
            accepted: now.stats.records - self.last.stats.records,
            throttled: now.stats.throttled - self.last.stats.throttled,
            kinesis_put_units: (now.stats.payload_units - self.last.stats.payload_units) as f64,
            s3_puts: delta(stages::ARCHIVER, names::OBJECTS_WRITTEN),
            ..Second::default()
        };
        for (stage, function, memory_mb) in &self.functions {
            let handler_ms = delta(function, names::HANDLER_MS);
            let ages = c.samples(function, names::ITERATOR_AGE_MS);
            let seen = self.age_seen.entry(function.clone()).or_default();
            let iterator_age_ms = ages[(*seen).min(ages.len())..]
                .iter()
                .copied()
                .reduce(f64::max);
            *seen = ages.len();
            second.stages.insert(
                (*stage).to_owned(),
                StageSecond {
                    records: delta(stage, names::RECORDS_IN).max(0.0) as u64,
                    iterator_age_ms,
                    handler_ms,
                },
            );
            second.kinesis_put_units += delta(function, names::KINESIS_PUT_UNITS);
            second.dynamo_reads += delta(function, names::DYNAMO_ITEMS_READ);
            second.dynamo_writes += delta(function, names::DYNAMO_ITEMS_WRITTEN);
            second.lambda_gb_s += handler_ms / 1000.0 * memory_mb / 1024.0;
        }
        let latencies = c.samples(stages::AGGREGATOR, names::INGEST_TO_VIEW_MS);
        second.latency_ms = latency_of(&latencies[self.latency_seen.min(latencies.len())..]);
        self.latency_seen = latencies.len();
        self.offered_before = offered;
        self.last = now;
        self.seconds.push(second);
    }
}

fn say(enabled: bool, text: &str) {
    if enabled {
        eprintln!("{text}");
    }
}

/// Starts the twin, offers the profile, samples every second through the drain, stops the
/// twin and writes the report.
///
/// # Errors
/// A part of the twin failed, or the report could not be written.
pub async fn run(
    options: &LoadOptions,
    pipeline_options: PipelineOptions,
) -> Result<Written, PipelineError> {
    let show = options.progress;
    let stage_env = vec![(
        riffle_trace::SAMPLE_RATE_ENV.to_owned(),
        options.trace_sample_rate.to_string(),
    )];
    // Checked before the twin starts: a missing plotting library is said in a second, not
    // after the run.
    report::html(&empty_report(options), &report::uplot_dir()).map_err(PipelineError::Usage)?;
    let mut pipeline =
        Pipeline::start_with_env(pipeline_options, stage_env, |step| say(show, step)).await?;
    let result = offer_and_measure(&mut pipeline, options).await;
    say(show, "stopping services and emulators");
    pipeline.shutdown().await;
    let report = result?;
    write(options, report)
}

fn empty_report(options: &LoadOptions) -> LoadReport {
    LoadReport {
        command: options.command.clone(),
        started_at: chrono::Utc::now().to_rfc3339(),
        profile: options.profile,
        duration_s: options.duration.as_secs_f64(),
        seed: options.seed,
        summary: Summary::default(),
        figures: crate::demo::figures_of(
            &Counters::default(),
            &crate::demo::Produced::default(),
            &options.command,
        ),
        seconds: Vec::new(),
    }
}

async fn offer_and_measure(
    pipeline: &mut Pipeline,
    options: &LoadOptions,
) -> Result<LoadReport, PipelineError> {
    let show = options.progress;
    let mut report = empty_report(options);
    let config = GeneratorConfig {
        seed: options.seed,
        sources: riffle_loadtest::parse_mix(&options.sources)?,
        invalid_ratio: options.invalid_ratio,
        ..GeneratorConfig::default()
    };
    let mut generator = Generator::new(config, pipeline.schema_ids())?;
    let mut truth = GroundTruth::new();
    let producer = pipeline.producer(options.aggregate).await?;
    let produce_error = |e: riffle_producer::ProducerError| PipelineError::Aws(e.to_string());
    let duration = options.duration.as_secs_f64();
    say(
        show,
        &format!(
            "offering a {} load for {duration} s from {}",
            options.profile.name(),
            options.sources
        ),
    );
    let usage_before = riffle_aws::meter::usage();
    let mut sampler = Sampler::new(pipeline, producer.stats());
    let mut offered = Offered::new(options.profile, duration);
    let mut produced: u64 = 0;
    let mut produced_bytes: u64 = 0;
    let started = Instant::now();
    let mut next_second = Duration::from_secs(1);
    loop {
        let elapsed = started.elapsed();
        let due = offered.until(elapsed.as_secs_f64());
        let now = chrono::Utc::now().timestamp_millis();
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
        if elapsed >= next_second {
            let t = next_second.as_secs_f64();
            sampler.sample(
                options.profile.rate_at(t - 0.5, duration),
                produced,
                Snapshot {
                    counters: pipeline.counters(),
                    stats: producer.stats(),
                },
            );
            if let Some(s) = sampler.seconds.last() {
                say(show, &second_line(s));
            }
            next_second += Duration::from_secs(1);
        }
        if elapsed.as_secs_f64() >= duration {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    let put_failures = producer.close().await.map_err(produce_error)?.len() as u64;
    let stats = producer.stats();
    pipeline.record_producer(&stats);
    let producer_usage = riffle_aws::meter::usage().since(&usage_before);
    let accepted = produced - put_failures;

    // The drain, still second by second: how long the stages take to catch up is part of
    // what a load test shows.
    let drain_started = Instant::now();
    let mut next_second = started.elapsed() + Duration::from_secs(1);
    let drained = pipeline
        .wait_drained(accepted, options.drain_timeout, |c| {
            if started.elapsed() >= next_second {
                sampler.sample(
                    0.0,
                    produced,
                    Snapshot {
                        counters: c.clone(),
                        stats,
                    },
                );
                if let Some(s) = sampler.seconds.last() {
                    say(show, &second_line(s));
                }
                next_second += Duration::from_secs(1);
            }
        })
        .await;
    let drain_s = drain_started.elapsed().as_secs_f64();
    if let Err(e) = &drained {
        say(show, &format!("not drained: {e}"));
    }
    let counters = pipeline.counters();
    let seconds = std::mem::take(&mut sampler.seconds);
    let mut summary = Summary {
        offered: produced,
        accepted,
        put_failures,
        throttled: stats.throttled,
        valid: truth.valid(),
        drained: drained.is_ok(),
        drain_s,
        peak_offered: seconds.iter().map(|s| s.offered).max().unwrap_or(0),
        latency_ms: latency_of(counters.samples(stages::AGGREGATOR, names::INGEST_TO_VIEW_MS)),
        lambda_gb_s: seconds.iter().map(|s| s.lambda_gb_s).sum(),
        ..Summary::default()
    };
    for s in &seconds {
        for (stage, st) in &s.stages {
            let peak = summary.peak_stage_records.entry(stage.clone()).or_default();
            *peak = (*peak).max(st.records);
            if let Some(age) = st.iterator_age_ms {
                let max = summary
                    .max_iterator_age_ms
                    .entry(stage.clone())
                    .or_default();
                *max = max.max(age);
            }
        }
    }
    report.figures = crate::demo::figures_of(
        &counters,
        &crate::demo::Produced {
            events: truth.total(),
            valid: truth.valid(),
            bytes: produced_bytes,
            put_units: producer_usage.kinesis_put_units,
            queue_messages: queue_messages(&counters),
        },
        &options.command,
    );
    report.summary = summary;
    report.seconds = seconds;
    Ok(report)
}

/// Messages the stages sent to the rejects and dead-letter queues.
fn queue_messages(c: &Counters) -> u64 {
    c.count(stages::VALIDATOR, names::REJECTED)
        + c.count(stages::ENRICHER, names::DEAD_LETTERED)
        + c.count(stages::AGGREGATOR, names::RECORDS_PARKED)
        + c.count(stages::ARCHIVER, names::RECORDS_PARKED)
}

fn second_line(s: &Second) -> String {
    let stages: Vec<String> = STAGES
        .iter()
        .map(|stage| {
            let st = s.stages.get(*stage).cloned().unwrap_or_default();
            format!("{stage} {}", st.records)
        })
        .collect();
    format!(
        "t={:>4}s target {:>6.0}/s offered {:>6} accepted {:>6} throttled {:>4} | {} | p99 {}",
        s.t,
        s.target_rate,
        s.offered,
        s.accepted,
        s.throttled,
        stages.join(", "),
        s.latency_ms
            .map_or_else(|| "-".to_owned(), |l| format!("{:.0} ms", l.p99)),
    )
}

fn write(options: &LoadOptions, report: LoadReport) -> Result<Written, PipelineError> {
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| PipelineError::Usage(format!("writing {path}: {e}"))
    };
    std::fs::create_dir_all(&options.out_dir).map_err(io(&options.out_dir))?;
    let files = [
        options.out_dir.join("report.json"),
        options.out_dir.join("report.csv"),
        options.out_dir.join("report.html"),
    ];
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| PipelineError::Usage(format!("report: {e}")))?;
    std::fs::write(&files[0], json).map_err(io(&files[0]))?;
    std::fs::write(&files[1], report::csv(&report)).map_err(io(&files[1]))?;
    let page = report::html(&report, &report::uplot_dir()).map_err(PipelineError::Usage)?;
    let mut file = std::fs::File::create(&files[2]).map_err(io(&files[2]))?;
    file.write_all(page.as_bytes()).map_err(io(&files[2]))?;
    Ok(Written { report, files })
}

/// The summary a person reads at the end.
pub fn render(written: &Written) -> String {
    let s = &written.report.summary;
    let mut out = format!(
        "== Riffle load summary ({} over {} s) ==\n\
         offered {} accepted {} put failures {} throttled entries {} valid {}\n\
         drained {} ({:.1} s after the last event); peak offered {}/s\n",
        written.report.profile.name(),
        written.report.duration_s,
        s.offered,
        s.accepted,
        s.put_failures,
        s.throttled,
        s.valid,
        if s.drained { "yes" } else { "NO" },
        s.drain_s,
        s.peak_offered,
    );
    for stage in STAGES {
        out.push_str(&format!(
            "{stage:<11} peak {:>6} records/s, max iterator age {:>7.0} ms\n",
            s.peak_stage_records.get(stage).copied().unwrap_or(0),
            s.max_iterator_age_ms.get(stage).copied().unwrap_or(0.0),
        ));
    }
    if let Some(l) = s.latency_ms {
        out.push_str(&format!(
            "ingest -> view p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms\n",
            l.p50, l.p95, l.p99
        ));
    }
    out.push_str(&format!(
        "Lambda-equivalent compute {:.3} GB-s\n",
        s.lambda_gb_s
    ));
    for file in &written.files {
        out.push_str(&format!("wrote {}\n", file.display()));
    }
    out
}
