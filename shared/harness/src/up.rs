//! `riffle-dev up`: the local twin started and kept running until Ctrl-C: the emulators, the
//! X-Ray daemon, the registry, the view query API and the four stages, provisioned from the templates. It prints
//! what another shell needs to use it (the endpoint variables, names, URLs) and restarts a
//! stage that exits, saying so. Producers, `riffle dlq`, `riffle trace` and any AWS client
//! use it as they would an AWS account.

use std::time::Duration;

use crate::pipeline::{Pipeline, PipelineError, PipelineOptions, STAGES};

/// How often the stages are looked at.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What to start.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Share of events without a trace header the validator starts a trace for.
    pub trace_sample_rate: f64,
}

/// Starts the twin and keeps it up; returns only on a failure (Ctrl-C is the caller's).
///
/// # Errors
/// A part did not start, or a stage could not be restarted.
pub async fn run(
    options: &UpOptions,
    pipeline_options: PipelineOptions,
) -> Result<(), PipelineError> {
    let stage_env = vec![(
        riffle_trace::SAMPLE_RATE_ENV.to_owned(),
        options.trace_sample_rate.to_string(),
    )];
    let mut pipeline = Pipeline::start_with_env(pipeline_options, stage_env, |step| {
        eprintln!("  {step}");
    })
    .await?;
    pipeline.stop_recording().await?;
    // The twin that stays up is read as AWS is: traces through the X-Ray API too.
    pipeline.forward_traces().await?;
    print!("{}", endpoints(&pipeline));
    eprintln!("up; Ctrl-C stops everything");
    let mut last = String::new();
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        for stage in STAGES {
            if !pipeline.is_running(stage) {
                eprintln!(
                    "{stage} exited; restarting it (its log: {})",
                    pipeline.log_file(stage).display()
                );
                pipeline.restart_stage(stage).await?;
            }
        }
        let progress = pipeline.counters().stage_progress();
        if progress != last {
            eprintln!("{progress}");
            last = progress;
        }
    }
}

/// What another shell needs: `export` lines, then the resources and commands to try.
pub fn endpoints(pipeline: &Pipeline) -> String {
    let mut out = String::from("# Riffle's local twin. In another shell:\n");
    for (key, value) in pipeline.env() {
        out.push_str(&format!("export {key}={value}\n"));
    }
    let deployment = pipeline.deployment();
    if let Some(url) = deployment.export(riffle_local::REGISTRY_URL_EXPORT) {
        out.push_str(&format!("export RIFFLE_REGISTRY_URL={url}\n"));
    }
    if let Some((url, token)) = pipeline.query_access() {
        out.push_str(&format!("export RIFFLE_QUERY_URL={url}\n"));
        out.push_str(&format!("export RIFFLE_QUERY_TOKEN={token}\n"));
    }
    if let Some(store) = pipeline.trace_store() {
        out.push_str(&format!("export RIFFLE_TRACE_STORE={}\n", store.display()));
    }
    out.push_str(&format!(
        "export {}={}\n",
        riffle_telemetry::METRICS_STORE_ENV,
        pipeline.metrics_store().display()
    ));
    // Where producers put and what readers read, for scripts in another language (the
    // Python producer example reads these).
    for (variable, name) in [
        ("RIFFLE_RAW_STREAM", deployment.stream_name("RawStream")),
        ("RIFFLE_VIEW_TABLE", deployment.table_name("ViewTable")),
        (
            "RIFFLE_ARCHIVE_BUCKET",
            deployment.bucket_name("ArchiveBucket"),
        ),
        (
            "RIFFLE_REJECTS_QUEUE_URL",
            deployment.queue_url("RejectsQueue"),
        ),
    ] {
        if let Some(name) = name {
            out.push_str(&format!("export {variable}={name}\n"));
        }
    }
    out.push_str("# streams:");
    for s in deployment.streams() {
        out.push_str(&format!(" {}", s.name));
    }
    out.push_str("\n# tables:");
    for t in deployment.tables() {
        out.push_str(&format!(" {}", t.name));
    }
    out.push_str("\n# buckets:");
    for b in deployment.buckets() {
        out.push_str(&format!(" {}", b.name));
    }
    out.push_str("\n# queues:");
    for q in deployment.queues() {
        out.push_str(&format!(" {}", q.name));
    }
    let ingest = deployment
        .stream_name("RawStream")
        .unwrap_or("<the raw stream>");
    out.push_str(&format!(
        "\n# then e.g.: riffle schema list; riffle view query top --view orders; riffle dlq list; \
         riffle trace --slowest 5; riffle alarms; aws kinesis put-record --stream-name {ingest} ...\n",
    ));
    out
}
