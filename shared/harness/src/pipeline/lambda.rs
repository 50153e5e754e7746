//! A service binary run in Lambda mode: the same executable the package ships as
//! `bootstrap`, started with the variables Lambda sets and pointed at a local Runtime API
//! ([`riffle_local::lambda_api`]), against this twin's emulators and registry. Used by the
//! Lambda-mode tests and by `riffle-dev coldstart`.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use riffle_local::lambda_api::{Answer, LambdaApiError, RuntimeApi};
use riffle_runtime::{KinesisEvent, Source};
use tokio::process::{Child, Command};

use super::{Pipeline, PipelineError, aws};

/// One function instance in Lambda mode, as a Lambda sandbox holds it.
#[derive(Debug)]
pub struct LambdaInstance {
    service: String,
    api: RuntimeApi,
    child: Child,
    /// When the process was spawned: the start of its cold start.
    spawned_at: Instant,
    /// The answer to the first invocation, kept for the cold start.
    first_answered_at: Option<Instant>,
}

/// What a cold start cost: process start to first poll (the init phase), to the first
/// invocation answered, and the process's resident memory.
#[derive(Debug, Clone, Copy)]
pub struct ColdStart {
    /// Process spawned to its first `GET .../invocation/next`.
    pub init: Duration,
    /// Process spawned to its first invocation answered (the invocation was queued before
    /// the process started, so it was taken at once).
    pub first_answer: Duration,
    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub peak_rss_kib: u64,
    /// Of the resident set now: anonymous memory (heap, stacks) and file pages (the mapped
    /// binary and libraries), KiB. Lambda's "Max Memory Used" counts both.
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
}

impl Pipeline {
    /// Starts `service`'s binary in Lambda mode against a local Runtime API of its own, with
    /// the function's environment from its template (imports resolved to this twin), the
    /// emulators' endpoints, and the variables Lambda sets in a sandbox.
    ///
    /// # Errors
    /// The service is unknown, or the API or the process could not be started.
    pub async fn start_lambda(&self, service: &str) -> Result<LambdaInstance, PipelineError> {
        let fail = |reason: String| PipelineError::Process {
            service: service.to_owned(),
            reason,
        };
        let function = self
            .deployment
            .function_name(service)
            .ok_or_else(|| fail("no function in its template".into()))?
            .to_owned();
        let (memory_mb, timeout_s) = self
            .deployment
            .function_limits(service)
            .ok_or_else(|| fail("no function in its template".into()))?;
        let api = RuntimeApi::start(&function, Duration::from_secs(timeout_s.into()))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let log_path = self
            .options
            .state_dir
            .join("logs")
            .join(format!("{service}-lambda.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| fail(format!("log file {}: {e}", log_path.display())))?;
        let out = log
            .try_clone()
            .map_err(|e| fail(format!("log file {}: {e}", log_path.display())))?;

        let mut command = Command::new(self.options.bin_dir.join(service));
        command
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME"))
            .envs(self.env())
            .envs(self.deployment.service_env(service)?)
            .envs(self.stage_env.iter().cloned())
            // Lambda's own: the runtime reads these at start (lambda_runtime::Config).
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", &function)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{function}"),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local/[$LATEST]0")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("_HANDLER", "bootstrap")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // The local mapping's variable would be ignored in Lambda mode; leave it out so
            // nothing can depend on it there.
            .env_remove("RIFFLE_ESM")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let spawned_at = Instant::now();
        let child = command.spawn().map_err(|e| fail(format!("spawn: {e}")))?;
        Ok(LambdaInstance {
            service: service.to_owned(),
            api,
            child,
            spawned_at,
            first_answered_at: None,
        })
    }
}

impl Pipeline {
    /// The Kinesis events Lambda would invoke `service` with for what is on its input stream
    /// now: every record from the start of each shard (`skip`ped sequence numbers left out),
    /// in batches of the mapping's batch size, as Lambda's JSON would carry them.
    ///
    /// # Errors
    /// The service has no event source mapping, or a Kinesis call failed.
    pub async fn lambda_events(
        &self,
        service: &str,
        skip: &HashSet<String>,
    ) -> Result<Vec<KinesisEvent>, PipelineError> {
        let esm = self.deployment.esm(service).ok_or_else(|| {
            PipelineError::Usage(format!("{service} has no event source mapping"))
        })?;
        let stream = esm.stream_name.as_str();
        let arn = self
            .deployment
            .stream_arn(stream)
            .ok_or_else(|| PipelineError::Usage(format!("no stream {stream}")))?;
        let batch_size = usize::try_from(esm.batch_size).unwrap_or(100).max(1);
        let kinesis = riffle_aws::kinesis_client(&self.sdk);
        let shards = kinesis
            .list_shards()
            .stream_name(stream)
            .send()
            .await
            .map_err(aws("ListShards"))?;
        let role = format!(
            "arn:aws:iam::000000000000:role/{}",
            self.deployment.function_name(service).unwrap_or(service)
        );
        let mut events = Vec::new();
        for shard in shards.shards() {
            let source = Arc::new(Source {
                aws_region: riffle_plan::template::LOCAL_REGION.to_owned(),
                event_source_arn: arn.to_owned(),
                invoke_identity_arn: role.clone(),
                shard_id: shard.shard_id().to_owned(),
            });
            let records: Vec<_> = shard_records(&kinesis, stream, shard.shard_id())
                .await?
                .iter()
                .filter(|r| !skip.contains(r.sequence_number()))
                .map(|r| source.record(r))
                .collect();
            for batch in records.chunks(batch_size) {
                events.push(KinesisEvent {
                    records: batch.to_vec(),
                });
            }
        }
        Ok(events)
    }
}

/// Every record of one shard, from its start to its tip.
async fn shard_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
) -> Result<Vec<aws_sdk_kinesis::types::Record>, PipelineError> {
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .map_err(aws("GetShardIterator"))?
        .shard_iterator;
    let mut records = Vec::new();
    while let Some(it) = iterator {
        let page = kinesis
            .get_records()
            .shard_iterator(it)
            .send()
            .await
            .map_err(aws("GetRecords"))?;
        let at_tip = page.records().is_empty() && page.millis_behind_latest() == Some(0);
        records.extend(page.records().iter().cloned());
        if at_tip {
            break;
        }
        iterator = page.next_shard_iterator;
    }
    Ok(records)
}

impl LambdaInstance {
    /// Invokes the function with `payload` (the event's JSON) and waits for its answer.
    ///
    /// # Errors
    /// As [`RuntimeApi::invoke`]; a process that exited is reported with its status.
    pub async fn invoke(&mut self, payload: Vec<u8>) -> Result<Answer, PipelineError> {
        self.invoke_traced(payload, None).await
    }

    /// [`LambdaInstance::invoke`] with `trace_header` as the invocation's trace header, as
    /// Lambda passes it to a function with active tracing (`Root=...;Parent=<the function
    /// segment>;Sampled=1`).
    ///
    /// # Errors
    /// As [`LambdaInstance::invoke`].
    pub async fn invoke_traced(
        &mut self,
        payload: Vec<u8>,
        trace_header: Option<String>,
    ) -> Result<Answer, PipelineError> {
        let answer = tokio::select! {
            answer = self.api.invoke(payload, trace_header) => answer,
            status = self.child.wait() => {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                return Err(self.error(format!("the process exited ({status}) before answering")));
            }
        };
        let answer = answer.map_err(|e: LambdaApiError| self.error(e.to_string()))?;
        self.first_answered_at.get_or_insert(answer.answered_at);
        Ok(answer)
    }

    /// The cold start, once the first invocation is answered.
    pub fn cold_start(&self) -> Option<ColdStart> {
        let first_answer = self.first_answered_at?.duration_since(self.spawned_at);
        let init = self.api.first_poll()?.duration_since(self.spawned_at);
        Some(ColdStart {
            init,
            first_answer,
            peak_rss_kib: self.status_kib("VmHWM:").unwrap_or(0),
            rss_anon_kib: self.status_kib("RssAnon:").unwrap_or(0),
            rss_file_kib: self.status_kib("RssFile:").unwrap_or(0),
        })
    }

    /// The process's peak resident set size in KiB (`VmHWM` in `/proc/<pid>/status`).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// A `kB` field of `/proc/<pid>/status`.
    fn status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Stops the process (Lambda freezes and later kills a sandbox; nothing is owed to it).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    fn error(&self, reason: String) -> PipelineError {
        PipelineError::Process {
            service: format!("{} (Lambda mode)", self.service),
            reason,
        }
    }
}
