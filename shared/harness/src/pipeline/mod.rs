//! The whole pipeline on one machine: emulators, provisioning from the templates, the schema
//! registry and the four stage processes, each started as it would run as its own function.
//!
//! Children are started with `RIFFLE_EXIT_ON_STDIN_EOF=1` and a piped stdin, so they exit when
//! the pipeline is dropped, even if the orchestrator dies without cleaning up. Their stdout
//! carries EMF metric lines, which the pipeline sums per service for progress and summaries;
//! their stderr goes to a log file per process under the state directory.
//!
//! For fault tests a stage can be killed (SIGKILL, no clean shutdown) and started again,
//! and kinesalite restarted on its LevelDB state; the counters keep summing across
//! restarts, and a restarted process appends to its log.

mod lambda;
mod process;
mod readback;
mod setup;

pub use lambda::{ColdStart, LambdaInstance};
pub use process::bin_dir;
pub use readback::QueueDrainer;

use riffle_loadtest::SchemaIds;
use riffle_local::{Deployment, Emulators, QUERY_URL_EXPORT, REGISTRY_URL_EXPORT};
use riffle_registry_client::RegistryClient;
use riffle_stage::stages;
use riffle_telemetry::names;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Child;

/// The stage services, in data-flow order.
pub use riffle_stage::stages::ALL as STAGES;

/// The AWS SDK's service id of DynamoDB, whose local emulator records requests.
const DYNAMODB_SERVICE_ID: &str = "DynamoDB";
/// The metrics store's directory under the state directory.
pub const METRICS_DIR: &str = "metrics";

/// The registry's service name (its template and binary).
pub const REGISTRY: &str = "schema-registry";

/// The view query API's service name (its template and binary).
pub const VIEW_QUERY: &str = "view-query";

/// The processes that serve HTTP and announce their address (`LISTENING <url>`).
const SERVERS: [&str; 2] = [REGISTRY, VIEW_QUERY];

/// How long to wait for a child to announce itself.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a child gets to exit after its stdin closes before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why the pipeline could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Emulators or provisioning failed.
    #[error(transparent)]
    Local(#[from] riffle_local::LocalError),
    /// A child process could not be started or did not come up.
    #[error("{service}: {reason}")]
    Process {
        /// The service.
        service: String,
        /// What went wrong, with the log file to read.
        reason: String,
    },
    /// The registry refused or could not be reached.
    #[error("schema registry: {0}")]
    Registry(#[from] riffle_registry_client::ClientError),
    /// An AWS call against the emulators failed.
    #[error("{0}")]
    Aws(String),
    /// Reading the archive back failed.
    #[error("archive: {0}")]
    Archive(String),
    /// The generator could not be built.
    #[error("load generator: {0}")]
    Load(#[from] riffle_loadtest::LoadError),
    /// An operator command's archive work failed (compaction, replay).
    #[error("archive bucket: {0}")]
    Bucket(#[from] riffle_archive::ArchiveError),
    /// An operator command was asked for something it cannot do as asked.
    #[error("{0}")]
    Usage(String),
}

fn aws<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> PipelineError + '_ {
    move |e| PipelineError::Aws(format!("{what}: {e}"))
}

/// Metric sums per service, fed by the children's EMF lines.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Stage -> the function name it runs as (the deployment's, `riffle-local-validator`):
    /// the local runtime reports under that name, the handler under the stage's.
    functions: HashMap<String, String>,
    sums: HashMap<String, HashMap<String, f64>>,
    maxima: HashMap<String, HashMap<String, f64>>,
    samples: HashMap<String, HashMap<String, Vec<f64>>>,
}

/// Metrics whose every value is kept (for percentiles), not only summed.
const SAMPLED_METRICS: [&str; 2] = [names::INGEST_TO_VIEW_MS, names::ITERATOR_AGE_MS];

impl Counters {
    /// Empty counters that know each stage's function name from `deployment`.
    pub fn for_deployment(deployment: &Deployment) -> Counters {
        let functions = deployment
            .services()
            .filter_map(|s| Some((s.to_owned(), deployment.function_name(s)?.to_owned())))
            .collect();
        Counters {
            functions,
            ..Counters::default()
        }
    }

    /// The name the runtime of `stage` reports under: its function's name. A stage the
    /// deployment does not know has no function, and so no runtime lines: "" matches none.
    pub fn function(&self, stage: &str) -> &str {
        self.functions.get(stage).map_or("", String::as_str)
    }

    /// How far each stage got, for one-line progress output: "validated N rejected N |
    /// enriched N | aggregated N | archived N".
    pub fn stage_progress(&self) -> String {
        format!(
            "validated {} rejected {} | enriched {} | aggregated {} | archived {}",
            self.count(stages::VALIDATOR, names::RECORDS_OUT),
            self.count(stages::VALIDATOR, names::REJECTED),
            self.count(stages::ENRICHER, names::RECORDS_OUT),
            self.count(stages::AGGREGATOR, names::RECORDS_IN),
            self.count(stages::ARCHIVER, names::RECORDS_IN),
        )
    }

    /// Every value of a [`SAMPLED_METRICS`] metric reported by `service`.
    pub fn samples(&self, service: &str, metric: &str) -> &[f64] {
        self.samples
            .get(service)
            .and_then(|m| m.get(metric))
            .map_or(&[], Vec::as_slice)
    }

    /// Sum of `metric` reported by `service` so far.
    pub fn get(&self, service: &str, metric: &str) -> f64 {
        self.sums
            .get(service)
            .and_then(|m| m.get(metric))
            .copied()
            .unwrap_or(0.0)
    }

    /// Largest single value of `metric` reported by `service` (e.g. iterator age).
    pub fn max(&self, service: &str, metric: &str) -> f64 {
        self.maxima
            .get(service)
            .and_then(|m| m.get(metric))
            .copied()
            .unwrap_or(0.0)
    }

    /// As a whole count.
    pub fn count(&self, service: &str, metric: &str) -> u64 {
        // Counts are sums of whole numbers reported as f64; truncation cannot lose anything.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = self.get(service, metric).max(0.0) as u64;
        n
    }
}

/// Where the pipeline keeps its state and finds its binaries.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Emulator state and process logs; wiped at start.
    pub state_dir: PathBuf,
    /// Directory holding the service binaries.
    pub bin_dir: PathBuf,
    /// Directory holding the templates.
    pub infra_dir: PathBuf,
    /// Directory holding the schemas.
    pub schemas_dir: PathBuf,
}

impl PipelineOptions {
    /// Defaults for this checkout: state under `.riffle/<name>`, binaries beside the running
    /// executable (or the `RIFFLE_BIN_DIR` directory).
    ///
    /// # Errors
    /// When the project root cannot be found.
    pub fn for_checkout(name: &str) -> Result<Self, PipelineError> {
        let root = riffle_local::project_root().map_err(riffle_local::LocalError::from)?;
        Ok(PipelineOptions {
            state_dir: root.join(".riffle").join(name),
            bin_dir: bin_dir(),
            infra_dir: root.join("infra"),
            schemas_dir: root.join("schemas"),
        })
    }
}

struct Proc {
    service: String,
    child: Child,
    /// The task reading its stdout into the counters; ends at the child's EOF.
    reader: tokio::task::JoinHandle<()>,
}

/// A running local pipeline.
pub struct Pipeline {
    emulators: Option<Emulators>,
    deployment: Deployment,
    sdk: aws_config::SdkConfig,
    registry: Option<RegistryClient>,
    /// The query API's bearer token, new for every twin.
    query_token: String,
    schema_ids: SchemaIds,
    procs: Vec<Proc>,
    counters: Arc<Mutex<Counters>>,
    options: PipelineOptions,
    /// Added to every stage's environment, at start and at each restart.
    stage_env: Vec<(String, String)>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("state_dir", &self.options.state_dir)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Starts everything; `step` is told what is happening, for progress output.
    ///
    /// # Errors
    /// Whatever stops a part from coming up; the parts already started are stopped.
    pub async fn start(
        options: PipelineOptions,
        step: impl Fn(&str),
    ) -> Result<Pipeline, PipelineError> {
        Self::start_with_env(options, Vec::new(), step).await
    }

    /// [`Pipeline::start`] with `stage_env` added to the environment of every stage process
    /// (fault injection settings, lease timing), at start and at every restart.
    ///
    /// # Errors
    /// As [`Pipeline::start`].
    pub async fn start_with_env(
        options: PipelineOptions,
        stage_env: Vec<(String, String)>,
        step: impl Fn(&str),
    ) -> Result<Pipeline, PipelineError> {
        for service in STAGES.iter().chain(&SERVERS) {
            let path = options.bin_dir.join(service);
            if !path.is_file() {
                return Err(PipelineError::Process {
                    service: (*service).to_string(),
                    reason: format!(
                        "binary {} not found; build the workspace first (`cargo build --workspace --bins`, \
                         or set RIFFLE_BIN_DIR)",
                        path.display()
                    ),
                });
            }
        }
        let _ = std::fs::remove_dir_all(&options.state_dir);
        std::fs::create_dir_all(options.state_dir.join("logs")).map_err(|e| {
            PipelineError::Process {
                service: "orchestrator".into(),
                reason: format!("cannot create {}: {e}", options.state_dir.display()),
            }
        })?;

        step("starting local AWS (kinesalite for Kinesis, moto for DynamoDB, S3, SQS)");
        // moto per service: the whole pipeline runs on it (see `Emulators::start_split`).
        let emulators = Emulators::start_split(&options.state_dir.join("aws")).await?;
        let sdk = emulators.sdk_config().await;
        step("provisioning from infra/ templates");
        let deployment = riffle_local::provision(&sdk, &options.infra_dir).await?;
        let counters = Counters::for_deployment(&deployment);
        let mut pipeline = Pipeline {
            emulators: Some(emulators),
            deployment,
            sdk,
            registry: None,
            query_token: new_token(),
            schema_ids: SchemaIds {
                envelope: 0,
                order: 0,
                page_view: 0,
                sensor: 0,
            },
            procs: Vec::new(),
            counters: Arc::new(Mutex::new(counters)),
            options,
            stage_env,
        };

        step("starting the schema registry");
        let env = riffle_local::local_registry_env(pipeline.deployment.service_env(REGISTRY)?);
        let url = pipeline
            .spawn(REGISTRY, env)
            .await?
            .ok_or_else(|| PipelineError::Process {
                service: REGISTRY.into(),
                reason: "did not announce its address".into(),
            })?;
        pipeline.deployment.set_export(REGISTRY_URL_EXPORT, &url);
        pipeline.registry = Some(RegistryClient::new(&url)?);

        step("starting the view query API");
        let env = riffle_local::local_query_env(
            pipeline.deployment.service_env(VIEW_QUERY)?,
            &pipeline.query_token,
        );
        let url = pipeline
            .spawn(VIEW_QUERY, env)
            .await?
            .ok_or_else(|| PipelineError::Process {
                service: VIEW_QUERY.into(),
                reason: "did not announce its address".into(),
            })?;
        pipeline.deployment.set_export(QUERY_URL_EXPORT, &url);

        step("registering schemas");
        pipeline.schema_ids = pipeline.register_schemas().await?;
        step("seeding reference data");
        pipeline.seed_reference().await?;
        // From here on the local DynamoDB keeps every request, so what the stages say they
        // asked of it can be checked against what it got (`Pipeline::stop_stages`).
        pipeline
            .emulators()?
            .start_recording(DYNAMODB_SERVICE_ID)
            .await?;

        for service in STAGES {
            step(&format!("starting {service}"));
            pipeline.spawn_stage(service).await?;
        }
        Ok(pipeline)
    }

    /// Stops the four stages (each finishes its batch, writes its checkpoints and reports its
    /// last metrics), waits until their metrics are read, and returns the DynamoDB items the
    /// local DynamoDB was asked for since the stages started, per table. The registry keeps
    /// running; its own table is in the answer too.
    ///
    /// # Errors
    /// The recorder could not be stopped or read.
    pub async fn stop_stages(
        &mut self,
    ) -> Result<BTreeMap<String, riffle_local::recording::ItemCounts>, PipelineError> {
        let (stages, others): (Vec<Proc>, Vec<Proc>) = std::mem::take(&mut self.procs)
            .into_iter()
            .partition(|p| STAGES.contains(&p.service.as_str()));
        self.procs = others;
        for mut p in stages {
            drop(p.child.stdin.take());
            if tokio::time::timeout(STOP_GRACE, p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
            let _ = p.reader.await;
        }
        let recording = self
            .emulators()?
            .stop_recording(DYNAMODB_SERVICE_ID)
            .await?;
        Ok(riffle_local::recording::dynamo_items(&recording)?)
    }

    /// Stops the local DynamoDB's request recording (which `start` begins so that a run's
    /// cost can be checked against it): a twin that stays up would keep every request.
    ///
    /// # Errors
    /// The recorder could not be stopped.
    pub async fn stop_recording(&self) -> Result<(), PipelineError> {
        self.emulators()?
            .stop_recording(DYNAMODB_SERVICE_ID)
            .await?;
        Ok(())
    }

    /// The query API's URL and bearer token.
    pub fn query_access(&self) -> Option<(&str, &str)> {
        let url = self.deployment.export(QUERY_URL_EXPORT)?;
        Some((url, &self.query_token))
    }

    /// The environment that points a process at this twin: the SDK's endpoint, region and
    /// credential variables, and the X-Ray daemon.
    pub fn env(&self) -> Vec<(String, String)> {
        self.emulators
            .as_ref()
            .map(Emulators::env)
            .unwrap_or_default()
    }

    /// The directory keeping every metric line the twin's processes printed, one
    /// `<service>.jsonl` each (`RIFFLE_METRICS_STORE` for `riffle alarms`).
    pub fn metrics_store(&self) -> PathBuf {
        self.options.state_dir.join(METRICS_DIR)
    }

    /// Adds `metrics` to the metrics store as `service`'s: what the harness's own producers
    /// measured (Kinesis reports a producer's throttling on AWS; here nobody else would).
    pub fn record_metrics(&self, service: &str, metrics: &riffle_telemetry::Metrics) {
        let Some(line) = metrics.to_line(chrono::Utc::now().timestamp_millis().max(0) as u64)
        else {
            return;
        };
        if let Some(mut file) = self.metrics_file(service) {
            use std::io::Write as _;
            let _ = writeln!(file, "{line}");
        }
    }

    /// Forwards the stages' segment documents to the local X-Ray (moto) as well, so that
    /// `riffle trace --source xray` reads them as it would on AWS. Off by default: moto
    /// serves every service from one process, and a fully traced run would slow the rest.
    ///
    /// # Errors
    /// The forwarder cannot be started.
    pub async fn forward_traces(&mut self) -> Result<(), PipelineError> {
        match self.emulators.as_mut() {
            Some(emulators) => Ok(emulators.forward_traces().await?),
            None => Ok(()),
        }
    }

    /// The file the local X-Ray daemon keeps the stages' segment documents in.
    pub fn trace_store(&self) -> Option<PathBuf> {
        self.emulators
            .as_ref()
            .map(|e| e.trace_store().to_path_buf())
    }

    /// Registry ids of the envelope and the sample event schemas.
    pub fn schema_ids(&self) -> SchemaIds {
        self.schema_ids
    }

    /// The SDK configuration pointing at the emulators.
    pub fn sdk(&self) -> &aws_config::SdkConfig {
        &self.sdk
    }

    /// The provisioned resources.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// A snapshot of the children's metric sums.
    pub fn counters(&self) -> Counters {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Stops every child (closing stdin, then killing stragglers) and the emulators.
    pub async fn shutdown(mut self) {
        for p in &mut self.procs {
            // Dropping stdin is the signal: each child exits when it reads EOF.
            drop(p.child.stdin.take());
        }
        for p in &mut self.procs {
            if tokio::time::timeout(STOP_GRACE, p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
        }
        if let Some(emulators) = self.emulators.take() {
            emulators.shutdown().await;
        }
    }
}

/// 128 random bits as hex: a bearer token nobody else on the machine can guess.
fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
