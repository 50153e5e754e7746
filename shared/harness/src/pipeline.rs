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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use riffle_archive::ArchivedRow;
use riffle_aws::{KinesisPublisher, OutRecord, PublishConfig, PutOutcome};
use riffle_loadtest::{GeneratedEvent, SchemaIds};
use riffle_local::{Deployment, Emulators, REGISTRY_URL_EXPORT};
use riffle_registry_client::RegistryClient;
use riffle_stage::RejectMessage;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The stage services, in data-flow order.
pub const STAGES: [&str; 4] = ["validator", "enricher", "aggregator", "archiver"];
/// The AWS SDK's service id of DynamoDB, whose local emulator records requests.
const DYNAMODB_SERVICE_ID: &str = "DynamoDB";
/// The registry's service name (its template and binary).
pub const REGISTRY: &str = "schema-registry";
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
    sums: HashMap<String, HashMap<String, f64>>,
    maxima: HashMap<String, HashMap<String, f64>>,
    samples: HashMap<String, HashMap<String, Vec<f64>>>,
}

/// Metrics whose every value is kept (for percentiles), not only summed.
const SAMPLED_METRICS: [&str; 1] = ["IngestToViewMs"];

impl Counters {
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

/// The directory of the service binaries: `RIFFLE_BIN_DIR`, else the directory of the running
/// executable (or its parent, for test executables under `target/<profile>/deps`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RIFFLE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        return dir.parent().map(Path::to_path_buf).unwrap_or(dir);
    }
    dir
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
        for service in STAGES.iter().chain([&REGISTRY]) {
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
        let mut pipeline = Pipeline {
            emulators: Some(emulators),
            deployment: riffle_local::provision(&sdk, &options.infra_dir).await?,
            sdk,
            registry: None,
            schema_ids: SchemaIds {
                envelope: 0,
                order: 0,
                page_view: 0,
                sensor: 0,
            },
            procs: Vec::new(),
            counters: Arc::new(Mutex::new(Counters::default())),
            options,
            stage_env,
        };

        step("starting the schema registry");
        let env = pipeline.deployment.service_env(REGISTRY)?;
        let url = pipeline
            .spawn(REGISTRY, env)
            .await?
            .ok_or_else(|| PipelineError::Process {
                service: REGISTRY.into(),
                reason: "did not announce its address".into(),
            })?;
        pipeline.deployment.set_export(REGISTRY_URL_EXPORT, &url);
        pipeline.registry = Some(RegistryClient::new(&url)?);

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

    async fn spawn_stage(&mut self, service: &str) -> Result<(), PipelineError> {
        let mut env = self.deployment.service_env(service)?;
        env.extend(self.stage_env.iter().cloned());
        self.spawn(service, env).await?;
        Ok(())
    }

    fn emulators(&self) -> Result<&Emulators, PipelineError> {
        self.emulators
            .as_ref()
            .ok_or_else(|| PipelineError::Process {
                service: "emulators".into(),
                reason: "already stopped".into(),
            })
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

    /// Kills the running process of stage `service` with SIGKILL, as a crash would: no
    /// batch is finished, no checkpoint written, no lease handed back. Waits until it is gone.
    ///
    /// # Errors
    /// When no process of `service` runs.
    pub async fn kill_stage(&mut self, service: &str) -> Result<(), PipelineError> {
        let index = self
            .procs
            .iter()
            .position(|p| p.service == service)
            .ok_or_else(|| PipelineError::Process {
                service: service.to_string(),
                reason: "not running, cannot kill it".into(),
            })?;
        let mut proc = self.procs.remove(index);
        // `kill` sends SIGKILL on Unix and reaps the process.
        proc.child.kill().await.map_err(|e| PipelineError::Process {
            service: service.to_string(),
            reason: format!("kill: {e}"),
        })
    }

    /// Starts stage `service` again (after [`Pipeline::kill_stage`]) with the environment it
    /// had; its metrics keep adding to the same counters.
    ///
    /// # Errors
    /// When it runs already or cannot be started.
    pub async fn restart_stage(&mut self, service: &str) -> Result<(), PipelineError> {
        if self.is_running(service) {
            return Err(PipelineError::Process {
                service: service.to_string(),
                reason: "already running".into(),
            });
        }
        self.spawn_stage(service).await
    }

    /// Whether a process of `service` was started and not killed (it may have exited: see
    /// [`Pipeline::exited`]).
    pub fn is_running(&self, service: &str) -> bool {
        self.procs.iter().any(|p| p.service == service)
    }

    /// Stops kinesalite and starts it again on the same port and LevelDB state: every
    /// client keeps its endpoint, acknowledged records are still there.
    ///
    /// # Errors
    /// When it does not come back.
    pub async fn restart_kinesis(&mut self) -> Result<(), PipelineError> {
        match self.emulators.as_mut() {
            Some(emulators) => Ok(emulators.restart_kinesis().await?),
            None => Err(PipelineError::Process {
                service: "kinesalite".into(),
                reason: "the emulators are not running".into(),
            }),
        }
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

    /// Log file of `service`.
    pub fn log_file(&self, service: &str) -> PathBuf {
        self.options
            .state_dir
            .join("logs")
            .join(format!("{service}.log"))
    }

    /// Starts `service` with the emulators' environment plus `env`. Returns the URL the
    /// process announced on stdout (`LISTENING <url>`), if it is a server.
    async fn spawn(
        &mut self,
        service: &str,
        env: Vec<(String, String)>,
    ) -> Result<Option<String>, PipelineError> {
        let fail = |reason: String| PipelineError::Process {
            service: service.to_string(),
            reason,
        };
        let log_path = self.log_file(service);
        // Appending: a restarted process continues the log of the one it replaces.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| fail(format!("log file: {e}")))?;
        let mut command = Command::new(self.options.bin_dir.join(service));
        if let Some(emulators) = &self.emulators {
            command.envs(emulators.env());
        }
        command
            .envs(env)
            .env("RIFFLE_EXIT_ON_STDIN_EOF", "1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| fail(format!("spawn: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| fail("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();

        let announced = if service == REGISTRY {
            let wait = async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(url) = line.strip_prefix("LISTENING ") {
                        return Some(url.trim().to_string());
                    }
                }
                None
            };
            match tokio::time::timeout(START_TIMEOUT, wait).await {
                Ok(Some(url)) => Some(url),
                _ => {
                    return Err(fail(format!(
                        "did not come up within {START_TIMEOUT:?}; see {}",
                        log_path.display()
                    )));
                }
            }
        } else {
            None
        };

        let counters = Arc::clone(&self.counters);
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(record) = riffle_telemetry::parse_emf_line(&line) else {
                    continue;
                };
                if let Ok(mut c) = counters.lock() {
                    let per = c.sums.entry(record.service.clone()).or_default();
                    for (name, value) in &record.values {
                        *per.entry(name.clone()).or_default() += value;
                    }
                    let top = c.maxima.entry(record.service.clone()).or_default();
                    for (name, value) in &record.values {
                        let slot = top.entry(name.clone()).or_insert(*value);
                        *slot = slot.max(*value);
                    }
                    let kept = c.samples.entry(record.service.clone()).or_default();
                    for (name, value) in &record.values {
                        if SAMPLED_METRICS.contains(&name.as_str()) {
                            kept.entry(name.clone()).or_default().push(*value);
                        }
                    }
                }
            }
        });
        self.procs.push(Proc {
            service: service.to_string(),
            child,
            reader,
        });
        Ok(announced)
    }

    /// The processes that have exited, with their status (a stage must never exit by itself).
    pub fn exited(&mut self) -> Vec<(String, String)> {
        self.procs
            .iter_mut()
            .filter_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some((p.service.clone(), status.to_string())),
                _ => None,
            })
            .collect()
    }

    /// Like [`Pipeline::exited`], and forgets those processes, so the stage can be started
    /// again with [`Pipeline::restart_stage`].
    pub fn take_exited(&mut self) -> Vec<(String, String)> {
        let gone = self.exited();
        self.procs
            .retain(|p| !gone.iter().any(|(service, _)| *service == p.service));
        gone
    }

    /// The registry client (the registry runs once [`Pipeline::start`] returned).
    ///
    /// # Errors
    /// Before the registry is up.
    pub fn registry(&self) -> Result<&RegistryClient, PipelineError> {
        self.registry
            .as_ref()
            .ok_or_else(|| PipelineError::Process {
                service: REGISTRY.into(),
                reason: "not started".into(),
            })
    }

    async fn register_schemas(&self) -> Result<SchemaIds, PipelineError> {
        let registry = self.registry()?;
        let envelope = registry
            .register(
                riffle_codec::envelope::ENVELOPE_SUBJECT,
                riffle_codec::envelope::ENVELOPE_SCHEMA,
            )
            .await?;
        let contracts =
            riffle_codec::rules::bundled().map_err(|e| PipelineError::Aws(e.to_string()))?;
        let mut ids = HashMap::new();
        for contract in contracts.values() {
            let path = self.options.schemas_dir.join(&contract.schema_file);
            let text = std::fs::read_to_string(&path).map_err(|e| PipelineError::Process {
                service: REGISTRY.into(),
                reason: format!("reading {}: {e}", path.display()),
            })?;
            ids.insert(
                contract.subject.clone(),
                registry.register(&contract.subject, &text).await?,
            );
        }
        let id = |subject: &str| {
            ids.get(subject)
                .copied()
                .ok_or_else(|| PipelineError::Process {
                    service: REGISTRY.into(),
                    reason: format!("no contract in schemas/rules for {subject}"),
                })
        };
        Ok(SchemaIds {
            envelope,
            order: id("com.riffle.shop.OrderPlaced")?,
            page_view: id("com.riffle.web.PageView")?,
            sensor: id("com.riffle.iot.SensorReading")?,
        })
    }

    async fn seed_reference(&self) -> Result<(), PipelineError> {
        let table = self
            .deployment
            .table_name("ReferenceTable")
            .ok_or_else(|| PipelineError::Aws("no ReferenceTable in the templates".into()))?
            .to_string();
        let client = riffle_aws::dynamodb_client(&self.sdk);
        let items = riffle_loadtest::reference_items();
        let requests = items
            .iter()
            .map(|item| {
                let mut attrs: HashMap<String, AttributeValue> = item
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), AttributeValue::S(v.clone())))
                    .collect();
                attrs.insert("pk".into(), AttributeValue::S(item.pk.clone()));
                riffle_aws::dynamo_batch::put(attrs)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(aws("reference item"))?;
        riffle_aws::dynamo_batch::batch_write(&client, &table, requests)
            .await
            .map_err(aws("seeding reference data"))?;
        Ok(())
    }

    /// Puts `events` on the raw stream, as a producer would.
    ///
    /// # Errors
    /// A call error no retry can fix.
    pub async fn produce(
        &self,
        publisher: &KinesisPublisher,
        events: &[GeneratedEvent],
    ) -> Result<PutOutcome, PipelineError> {
        let stream = self
            .deployment
            .stream_name("RawStream")
            .ok_or_else(|| PipelineError::Aws("no RawStream in the templates".into()))?;
        let records = events
            .iter()
            .map(|e| OutRecord {
                partition_key: e.partition_key.clone(),
                data: e.record.clone(),
            })
            .collect();
        publisher
            .put_all(stream, records)
            .await
            .map_err(aws("PutRecords"))
    }

    /// A publisher onto the emulated Kinesis, in strict order (at most one record per key in
    /// a request), as the origin marks need from aggregating producers (ADR 0010).
    pub fn publisher(&self) -> KinesisPublisher {
        KinesisPublisher::new(
            riffle_aws::kinesis_client(&self.sdk),
            PublishConfig {
                strict_order: true,
                ..PublishConfig::default()
            },
        )
    }

    /// Every item of the view table.
    ///
    /// # Errors
    /// A failed Scan.
    pub async fn view_items(&self) -> Result<Vec<HashMap<String, AttributeValue>>, PipelineError> {
        let table = self
            .deployment
            .table_name("ViewTable")
            .ok_or_else(|| PipelineError::Aws("no ViewTable in the templates".into()))?;
        let client = riffle_aws::dynamodb_client(&self.sdk);
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(aws("Scan view"))?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    /// Every archived row and the number of objects they came from.
    ///
    /// # Errors
    /// A failed List/Get or an object that is not readable Parquet.
    pub async fn archive_rows(&self) -> Result<(usize, Vec<ArchivedRow>), PipelineError> {
        let bucket = self
            .deployment
            .bucket_name("ArchiveBucket")
            .ok_or_else(|| PipelineError::Aws("no ArchiveBucket in the templates".into()))?;
        let client = riffle_aws::s3_client(&self.sdk);
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = client
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(aws("ListObjectsV2"))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match out.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let mut rows = Vec::new();
        for key in keys.iter().filter(|k| k.ends_with(".parquet")) {
            let object = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(aws("GetObject"))?;
            let bytes = object
                .body
                .collect()
                .await
                .map_err(aws("reading object"))?
                .into_bytes();
            rows.extend(
                riffle_archive::read_rows(&bytes)
                    .map_err(|e| PipelineError::Archive(format!("{key}: {e}")))?,
            );
        }
        Ok((keys.len(), rows))
    }

    /// A handle that drains a queue (by template logical id or name); it can run in a task of
    /// its own while the pipeline works.
    ///
    /// # Errors
    /// When the templates have no such queue.
    pub fn queue_drainer(&self, queue: &str) -> Result<QueueDrainer, PipelineError> {
        let url = self
            .deployment
            .queue_url(queue)
            .ok_or_else(|| PipelineError::Aws(format!("no queue {queue} in the templates")))?;
        Ok(QueueDrainer {
            client: riffle_aws::sqs_client(&self.sdk),
            url: url.to_string(),
        })
    }

    /// Waits until every stage has taken in what the stage before it let through: the
    /// validator `produced` records, the others what the previous stage emitted. Gives up after
    /// `idle` without any progress.
    ///
    /// # Errors
    /// A stage process exited, or nothing moved for `idle`.
    pub async fn wait_drained(
        &mut self,
        produced: u64,
        idle: Duration,
        mut progress: impl FnMut(&Counters),
    ) -> Result<Counters, PipelineError> {
        let mut last = (0, Instant::now());
        loop {
            let c = self.counters();
            progress(&c);
            if drained(&c, produced) {
                return Ok(c);
            }
            if let Some((service, status)) = self.exited().into_iter().next() {
                return Err(PipelineError::Process {
                    reason: format!(
                        "exited ({status}); see {}",
                        self.log_file(&service).display()
                    ),
                    service,
                });
            }
            let moved = STAGES.iter().map(|s| c.count(s, "RecordsIn")).sum::<u64>();
            if moved != last.0 {
                last = (moved, Instant::now());
            } else if last.1.elapsed() > idle {
                return Err(PipelineError::Process {
                    service: "pipeline".into(),
                    reason: format!(
                        "no progress for {idle:?}; see the logs in {}",
                        self.options.state_dir.join("logs").display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
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

/// Receives and deletes everything on one queue.
#[derive(Debug, Clone)]
pub struct QueueDrainer {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl QueueDrainer {
    /// Takes every message off the queue, returning those that are reject messages.
    ///
    /// # Errors
    /// A failed Receive/Delete.
    pub async fn drain(&self) -> Result<Vec<RejectMessage>, PipelineError> {
        let mut messages = Vec::new();
        for body in self.drain_bodies().await? {
            match riffle_stage::reject::parse_body(&body) {
                Ok(rejects) => messages.extend(rejects),
                Err(e) => tracing::warn!(error = %e, queue = %self.url, "not a reject message"),
            }
        }
        Ok(messages)
    }

    /// Takes every message off the queue, returning their bodies whatever their shape
    /// (reject messages, the runtime's on-failure messages).
    ///
    /// # Errors
    /// A failed Receive/Delete.
    pub async fn drain_bodies(&self) -> Result<Vec<String>, PipelineError> {
        let mut bodies = Vec::new();
        let mut empty_polls = 0;
        // moto may answer an empty receive while messages are still in flight; two empty
        // polls in a row mean the queue is empty.
        while empty_polls < 2 {
            let out = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(riffle_aws::limits::SQS_BATCH_MAX_ENTRIES as i32)
                .visibility_timeout(300)
                .send()
                .await
                .map_err(aws("ReceiveMessage"))?;
            let batch = out.messages.unwrap_or_default();
            if batch.is_empty() {
                empty_polls += 1;
                continue;
            }
            empty_polls = 0;
            let mut deletes = Vec::with_capacity(batch.len());
            for (i, m) in batch.iter().enumerate() {
                if let Some(body) = m.body() {
                    bodies.push(body.to_string());
                }
                if let Some(handle) = m.receipt_handle() {
                    deletes.push(
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(handle)
                            .build()
                            .map_err(aws("DeleteMessageBatch entry"))?,
                    );
                }
            }
            self.client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(deletes))
                .send()
                .await
                .map_err(aws("DeleteMessageBatch"))?;
        }
        Ok(bodies)
    }
}

/// Whether every stage has taken in what the stage before emitted.
pub fn drained(c: &Counters, produced: u64) -> bool {
    let validated = c.count("validator", "RecordsOut");
    let enriched = c.count("enricher", "RecordsOut");
    c.count("validator", "RecordsIn") >= produced
        && c.count("validator", "RecordsOut") + c.count("validator", "Rejected") >= produced
        && c.count("enricher", "RecordsIn") >= validated
        && c.count("aggregator", "RecordsIn") >= enriched
        && c.count("archiver", "RecordsIn") >= enriched
}
