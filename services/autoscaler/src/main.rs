//! The `autoscaler` binary: a Lambda function run every minute by a schedule, deciding for
//! each stream of `RIFFLE_AUTOSCALE_STREAMS` (comma-separated names) whether to reshard it,
//! between `RIFFLE_AUTOSCALE_MIN_SHARDS` and `RIFFLE_AUTOSCALE_MAX_SHARDS`.

use lambda_runtime::{LambdaEvent, service_fn};
use riffle_autoscaler::Policy;
use riffle_autoscaler::aws::{Autoscaler, CloudWatchMetrics, Outcome};
use riffle_telemetry::Metrics;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn setting(name: &str, default: u32) -> Result<u32, BoxError> {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text}: expected a whole number").into()),
        _ => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    riffle_telemetry::init("autoscaler");
    let streams: Vec<String> = std::env::var("RIFFLE_AUTOSCALE_STREAMS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if streams.is_empty() {
        return Err("RIFFLE_AUTOSCALE_STREAMS names no stream".into());
    }
    let policy = Policy {
        min_shards: setting("RIFFLE_AUTOSCALE_MIN_SHARDS", 1)?,
        max_shards: setting("RIFFLE_AUTOSCALE_MAX_SHARDS", 64)?,
        ..Policy::default()
    };
    if policy.min_shards == 0 || policy.min_shards > policy.max_shards {
        return Err("RIFFLE_AUTOSCALE_MIN_SHARDS must be at least 1 and at most the max".into());
    }
    let sdk = aws_config::load_from_env().await;
    let autoscaler = Autoscaler {
        kinesis: aws_sdk_kinesis::Client::new(&sdk),
        metrics: CloudWatchMetrics(aws_sdk_cloudwatch::Client::new(&sdk)),
        policy,
    };
    let autoscaler = &autoscaler;
    let streams = &streams;
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            let mut metrics = Metrics::new("autoscaler");
            let mut failed = Vec::new();
            let mut answer = serde_json::Map::new();
            for stream in streams {
                match autoscaler.run_stream(stream).await {
                    Ok(outcome) => {
                        if let Outcome::Resharded {
                            from,
                            to,
                            utilization,
                        } = &outcome
                        {
                            metrics.count("Reshards", 1);
                            tracing::info!(stream, from, to, utilization, "resharding");
                        } else {
                            tracing::info!(stream, ?outcome, "no reshard");
                        }
                        answer.insert(stream.clone(), format!("{outcome:?}").into());
                    }
                    Err(e) => {
                        tracing::error!(stream, error = %e, "could not decide");
                        failed.push(format!("{stream}: {e}"));
                    }
                }
            }
            metrics.flush();
            // A failed stream fails the invocation, so the Errors alarm sees it.
            if failed.is_empty() {
                Ok::<_, BoxError>(serde_json::Value::Object(answer))
            } else {
                Err(failed.join("; ").into())
            }
        },
    ))
    .await
}
