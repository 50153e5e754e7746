//! `riffle-dev load` (`riffle load`): a load profile (constant, ramp, step, spike, soak) offered
//! to the local twin by the seeded generator through `riffle-producer`, measured second by
//! second (offered and accepted events, throttles, per-stage throughput and iterator age,
//! ingest-to-view latency, Kinesis PUT units, DynamoDB and S3 requests, Lambda-equivalent
//! compute), then written as JSON, CSV and a self-contained HTML report.
//!
//! With `--autoscale` the autoscaler's decisions reshard the raw stream as the load runs
//! ([`autoscale`], a second standing for a minute); with `--check` the run ends as the demo
//! does, the view, archive and rejects read back against the generator's ground truth, and
//! per partition key the archive's order against the order the events were produced in.
//!
//! Layout: this file runs the load and samples it; [`profile`] is the offered rate over
//! time (pure); [`autoscale`] the local autoscaler; [`report`] the three outputs.

pub mod autoscale;
pub mod profile;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use riffle_loadtest::GroundTruth;
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
    /// Reshard the raw stream by the autoscaler's rules, between (min, max) shards, a shard
    /// full at this many records/s.
    pub autoscale: Option<(u32, u32, f64)>,
    /// Read everything back at the end and compare with the ground truth.
    pub check: bool,
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
            raw_records: now.stats.kinesis_records - self.last.stats.kinesis_records,
            raw_bytes: now.stats.bytes - self.last.stats.bytes,
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
        reshards: Vec::new(),
        check: None,
    }
}

async fn offer_and_measure(
    pipeline: &mut Pipeline,
    options: &LoadOptions,
) -> Result<LoadReport, PipelineError> {
    let show = options.progress;
    let mut report = empty_report(options);
    let mut generator =
        pipeline.generator(options.seed, &options.sources, options.invalid_ratio)?;
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
    let mut autoscaler = match options.autoscale {
        Some((min, max, capacity)) => {
            let stream = pipeline
                .deployment()
                .stream_name("RawStream")
                .ok_or_else(|| PipelineError::Usage("no RawStream in the templates".into()))?
                .to_owned();
            Some(autoscale::LocalAutoscaler::new(
                riffle_aws::kinesis_client(pipeline.sdk()),
                &stream,
                min,
                max,
                capacity,
            ))
        }
        None => None,
    };
    // Rejects are drained while the run goes (as the demo does), when they are checked.
    let rejects = if options.check {
        Some(crate::demo::collect_rejects(
            pipeline.queue_drainer("RejectsQueue")?,
        ))
    } else {
        None
    };
    // Per partition key, the event ids in the order they were produced.
    let mut produced_order: HashMap<String, Vec<String>> = HashMap::new();
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
            if options.check {
                produced_order
                    .entry(event.partition_key.clone())
                    .or_default()
                    .push(event.event_id.clone());
            }
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
            if let Some(scaler) = autoscaler.as_mut()
                && let Some(second) = sampler.seconds.last_mut()
            {
                if let Some(r) = scaler
                    .tick(second.t, second.raw_records as f64, second.raw_bytes as f64)
                    .await?
                {
                    say(
                        show,
                        &format!(
                            "autoscaler: {} {} -> {} shards at {:.0}% utilization",
                            r.direction,
                            r.from,
                            r.to,
                            r.utilization * 100.0
                        ),
                    );
                }
                second.raw_shards = Some(scaler.open_shards().await?.len() as u32);
            }
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
    report.reshards = autoscaler.map(|a| a.reshards).unwrap_or_default();
    if let Some(rejects) = rejects {
        say(show, "reading the view, the archive and the rejects back");
        let items = pipeline.view_items().await?;
        let (objects, rows) = pipeline.archive_rows().await?;
        let (reordered, compared_pairs) = reordered_keys(&produced_order, &rows);
        let outcome = crate::verify::Outcome {
            rows,
            objects,
            rejects: rejects.finish().await?,
            ..crate::verify::Outcome::default()
        }
        .with_view_items(&items);
        let differences = crate::verify::differences(&truth, &outcome);
        report.check = Some(report::Check {
            ok: differences.is_empty() && reordered.is_empty(),
            differences,
            checked_keys: produced_order.len(),
            compared_pairs,
            reordered_keys: reordered,
        });
    }
    Ok(report)
}

/// Partition keys whose archived events are not in the order they were produced: each
/// event's place on the enriched stream (shard and sequence number; events of one KPL
/// aggregate share one, and are in order inside it) must not go back along the key's
/// production order. A stage that read a child shard before its parent was done would
/// put a later event of a key before an earlier one.
fn reordered_keys(
    produced: &HashMap<String, Vec<String>>,
    rows: &[riffle_archive::ArchivedRow],
) -> (Vec<String>, usize) {
    let place: HashMap<&str, (&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.event_id.as_str(),
                (
                    r.kinesis_shard_id.as_str(),
                    r.kinesis_sequence_number.as_str(),
                ),
            )
        })
        .collect();
    // Sequence numbers are decimal strings of any length: shorter is smaller.
    let before = |a: &str, b: &str| (a.len(), a) <= (b.len(), b);
    let mut compared = 0;
    let mut out: Vec<String> = produced
        .iter()
        .filter(|(_, ids)| {
            let places: Vec<(&str, &str)> = ids
                .iter()
                .filter_map(|id| place.get(id.as_str()).copied())
                .collect();
            let same_shard: Vec<&[(&str, &str)]> =
                places.windows(2).filter(|w| w[0].0 == w[1].0).collect();
            compared += same_shard.len();
            same_shard.iter().any(|w| !before(w[0].1, w[1].1))
        })
        .map(|(key, _)| key.clone())
        .collect();
    out.sort();
    (out, compared)
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
    for r in &written.report.reshards {
        out.push_str(&format!(
            "autoscaler at {} s: {} {} -> {} shards ({:.0}% utilization)\n",
            r.t,
            r.direction,
            r.from,
            r.to,
            r.utilization * 100.0
        ));
    }
    if let Some(check) = &written.report.check {
        out.push_str(&format!(
            "check: {} ({} differences from the ground truth; {} of {} partition keys out of order, {} consecutive pairs compared)\n",
            if check.ok { "OK" } else { "FAILED" },
            check.differences.len(),
            check.reordered_keys.len(),
            check.checked_keys,
            check.compared_pairs
        ));
        for d in check.differences.iter().take(20) {
            out.push_str(&format!("  {d}\n"));
        }
    }
    for file in &written.files {
        out.push_str(&format!("wrote {}\n", file.display()));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_key_whose_events_went_back_on_their_shard_is_reordered() {
        let row = |i: i64, shard: &str, seq: &str| riffle_archive::ArchivedRow {
            kinesis_shard_id: shard.to_owned(),
            late: false,
            kinesis_sequence_number: seq.to_owned(),
            ..riffle_archive::testing::sample_row(i)
        };
        let rows = vec![
            row(1, "shardId-0", "95"),
            row(2, "shardId-0", "100"),
            row(3, "shardId-0", "100"),
            row(4, "shardId-1", "7"),
            row(5, "shardId-0", "99"),
        ];
        let id = |i: i64| riffle_archive::testing::sample_row(i).event_id;
        let produced = HashMap::from([
            // In order: 95 < 100, and two events of one aggregate share 100.
            ("in-order".to_owned(), vec![id(1), id(2), id(3)]),
            // 100 then 99 on one shard: a later event came first.
            ("reordered".to_owned(), vec![id(2), id(5)]),
            // Different shards cannot be compared; a missing event is skipped.
            (
                "apart".to_owned(),
                vec![id(4), id(5), "not-archived".to_owned()],
            ),
        ]);
        let (reordered, compared) = reordered_keys(&produced, &rows);
        assert_eq!(reordered, ["reordered"]);
        assert_eq!(compared, 3);
    }
}
