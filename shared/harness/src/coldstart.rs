//! `riffle-dev coldstart`: the four stage binaries' cold starts in Lambda mode, measured
//! behind the local Runtime API against the local twin. Each run starts a fresh process (a
//! new sandbox), queues a real batch from the stage's input stream before the process
//! exists, and times process start -> first poll (init) and -> first answer; then it
//! answers the rest of the batches warm. Peak RSS is read from `/proc` after the run.
//!
//! The stages run in data-flow order, each on what the one before published, so every
//! first invocation does its real work (schema fetches, high-water marks, writes).

use std::collections::HashSet;
use std::time::Duration;

use riffle_loadtest::{Generator, GeneratorConfig};

use crate::pipeline::{Pipeline, PipelineError, PipelineOptions, STAGES};

/// What to measure.
#[derive(Debug, Clone)]
pub struct ColdStartOptions {
    /// Fresh processes per stage.
    pub runs: u32,
    /// Events produced onto the raw stream first.
    pub events: usize,
    /// The stages to measure (all four when empty).
    pub stages: Vec<String>,
    /// Extra environment for the function processes (allocator or log settings to compare).
    pub env: Vec<(String, String)>,
    /// Print progress to stderr.
    pub progress: bool,
}

/// One stage's figures over its runs.
#[derive(Debug, Clone)]
pub struct StageColdStart {
    pub stage: String,
    /// Process start -> first `GET .../invocation/next`, one per run.
    pub init: Vec<Duration>,
    /// Process start -> first invocation answered, one per run.
    pub first_answer: Vec<Duration>,
    /// Later invocations of the same process (warm), all runs.
    pub warm: Vec<Duration>,
    /// Peak RSS per run, KiB.
    pub peak_rss_kib: Vec<u64>,
    /// Anonymous and file-backed resident memory at the end of each run, KiB.
    pub rss_anon_kib: Vec<u64>,
    pub rss_file_kib: Vec<u64>,
    /// User records in the first batch (KPL aggregates unpacked).
    pub first_batch_records: usize,
}

/// Measures cold starts as `options` asks.
///
/// # Errors
/// The twin could not start, a stage failed an invocation, or an AWS call failed.
pub async fn run(
    options: &ColdStartOptions,
    pipeline_options: PipelineOptions,
) -> Result<Vec<StageColdStart>, PipelineError> {
    let say = |s: &str| {
        if options.progress {
            eprintln!("coldstart: {s}");
        }
    };
    for stage in &options.stages {
        if !STAGES.contains(&stage.as_str()) {
            return Err(PipelineError::Usage(format!(
                "unknown stage `{stage}` (one of {})",
                STAGES.join(", ")
            )));
        }
    }
    let mut pipeline =
        Pipeline::start_with_env(pipeline_options, options.env.clone(), |s| say(s)).await?;
    // Only the Lambda-mode processes may take records off the streams.
    pipeline.stop_stages().await?;
    let events = Generator::new(
        GeneratorConfig {
            seed: 42,
            ..GeneratorConfig::default()
        },
        pipeline.schema_ids(),
    )?
    .batch(options.events)?;
    say(&format!("producing {} events", events.len()));
    let failed = pipeline.produce(&events).await?;
    if !failed.is_empty() {
        return Err(PipelineError::Aws(format!(
            "{} events could not be put",
            failed.len()
        )));
    }

    let mut results = Vec::new();
    for stage in STAGES {
        let measured = options.stages.is_empty() || options.stages.iter().any(|s| s == stage);
        let batches = pipeline.lambda_events(stage, &HashSet::new()).await?;
        let Some(first) = batches.first() else {
            return Err(PipelineError::Usage(format!(
                "{stage}: nothing on its input stream to invoke it with"
            )));
        };
        let mut figures = StageColdStart {
            stage: (*stage).to_owned(),
            init: Vec::new(),
            first_answer: Vec::new(),
            warm: Vec::new(),
            peak_rss_kib: Vec::new(),
            rss_anon_kib: Vec::new(),
            rss_file_kib: Vec::new(),
            first_batch_records: riffle_runtime::deaggregate::expand(first.clone())
                .records
                .len(),
        };
        // A stage that is not measured still runs once, so the next has its input.
        let runs = if measured { options.runs.max(1) } else { 1 };
        for run in 0..runs {
            say(&format!("{stage}: run {} of {runs}", run + 1));
            let mut instance = pipeline.start_lambda(stage).await?;
            for (i, batch) in batches.iter().enumerate() {
                let payload = serde_json::to_vec(batch)
                    .map_err(|e| PipelineError::Usage(format!("event JSON: {e}")))?;
                let answer = instance.invoke(payload).await?;
                if let riffle_local::lambda_api::Outcome::FunctionError { body, .. } =
                    &answer.outcome
                {
                    return Err(PipelineError::Process {
                        service: (*stage).to_owned(),
                        reason: format!("invocation failed: {}", String::from_utf8_lossy(body)),
                    });
                }
                if i > 0 {
                    figures.warm.push(answer.duration());
                }
            }
            if let Some(cold) = instance.cold_start() {
                figures.init.push(cold.init);
                figures.first_answer.push(cold.first_answer);
                figures.peak_rss_kib.push(cold.peak_rss_kib);
                figures.rss_anon_kib.push(cold.rss_anon_kib);
                figures.rss_file_kib.push(cold.rss_file_kib);
            }
            instance.stop().await;
        }
        if measured {
            results.push(figures);
        }
    }
    pipeline.shutdown().await;
    Ok(results)
}

/// The figures as a table, medians and maxima.
pub fn render(results: &[StageColdStart], release: bool) -> String {
    let mut out = format!(
        "Lambda-mode cold starts ({} build; process start -> first poll / first answer):\n",
        if release { "release" } else { "debug" }
    );
    out.push_str(&format!(
        "{:<11} {:>5} {:>8} {:>11} {:>11} {:>11} {:>10} {:>10} {:>10} {:>10}\n",
        "stage",
        "runs",
        "records",
        "init p50",
        "first p50",
        "first max",
        "warm p50",
        "peak RSS",
        "anon",
        "file"
    ));
    for r in results {
        let ms = |d: Option<Duration>| {
            d.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
            )
        };
        out.push_str(&format!(
            "{:<11} {:>5} {:>8} {:>11} {:>11} {:>11} {:>10} {:>10} {:>10} {:>10}\n",
            r.stage,
            r.init.len(),
            r.first_batch_records,
            ms(median(&r.init)),
            ms(median(&r.first_answer)),
            ms(r.first_answer.iter().max().copied()),
            ms(median(&r.warm)),
            mib(&r.peak_rss_kib),
            mib(&r.rss_anon_kib),
            mib(&r.rss_file_kib),
        ));
    }
    out
}

/// The largest of `kib`, in MiB.
fn mib(kib: &[u64]) -> String {
    kib.iter().max().map_or_else(
        || "-".to_owned(),
        |k| format!("{:.1} MiB", *k as f64 / 1024.0),
    )
}

fn median(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_lower_middle() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[ms(3), ms(1), ms(2)]), Some(ms(2)));
        assert_eq!(median(&[ms(4), ms(1), ms(2), ms(3)]), Some(ms(2)));
    }
}
