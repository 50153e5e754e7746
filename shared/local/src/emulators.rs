//! The local AWS emulators as child processes: kinesalite for Kinesis, moto's server for
//! DynamoDB, S3 and SQS. Both bind 127.0.0.1, report their port on stdout (`READY <port>`)
//! and exit when their stdin closes, so a crashed or killed parent leaves no orphans.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::error::LocalError;
use riffle_plan::project_root;

pub use riffle_plan::template::LOCAL_REGION;
/// Static credentials: the emulators check none, the SDK insists on some.
pub const LOCAL_ACCESS_KEY_ID: &str = "test";
pub const LOCAL_SECRET_ACCESS_KEY: &str = "test";

/// moto imports a few hundred modules before it listens; on a busy 2-core machine that
/// has been seen to take many seconds.
const START_DEADLINE: Duration = Duration::from_secs(90);
/// How long a clean stop (stdin closed) may take before the child is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The running emulators. Dropping it kills both children; [`Emulators::shutdown`] stops
/// them cleanly and waits for them.
pub struct Emulators {
    kinesis: Emulator,
    moto: Emulator,
    kinesis_endpoint: String,
    moto_endpoint: String,
    /// moto processes of their own for single services ([`Emulators::start_split`]).
    dedicated: Vec<Dedicated>,
    state_dir: PathBuf,
    root: PathBuf,
    /// The X-Ray daemon of the local stack (UDP on loopback), keeping segments under
    /// `state_dir/xray`.
    xray: riffle_trace::Collector,
}

/// A moto process that serves one service alone.
struct Dedicated {
    /// The SDK's service id (`DynamoDB`, `S3`), which its endpoint lookup uses.
    service_id: &'static str,
    /// The variable that points services at it (`AWS_ENDPOINT_URL_DYNAMODB`).
    variable: &'static str,
    emulator: Emulator,
    endpoint: String,
}

/// The services [`Emulators::start_split`] gives a moto process each: (service id, endpoint
/// variable, name). Everything else (SQS, ...) stays on the general one.
const DEDICATED_SERVICES: [(&str, &str, &str); 2] = [
    ("DynamoDB", "AWS_ENDPOINT_URL_DYNAMODB", "dynamodb"),
    ("S3", "AWS_ENDPOINT_URL_S3", "s3"),
];

/// One child process and the pipe whose closing tells it to stop.
struct Emulator {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    log: PathBuf,
}

/// What it takes to launch one emulator.
struct Launch {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
}

impl Emulators {
    /// Starts kinesalite and moto on free loopback ports with state under `state_dir`
    /// (created). Kinesis data lives in `state_dir/kinesis` (LevelDB), logs in
    /// `state_dir/kinesalite.log` and `state_dir/moto.log`.
    pub async fn start(state_dir: &Path) -> Result<Emulators, LocalError> {
        Self::start_with(state_dir, false).await
    }

    /// As [`Emulators::start`], with DynamoDB and S3 each on a moto process of its own, found
    /// through `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL_S3` (the SDK's per-service
    /// variables). moto handles one request at a time per process (see
    /// `infra/local/moto_server.py`), so a whole pipeline on one process queues its view
    /// writes behind Parquet uploads and queue traffic; apart, they run side by side.
    pub async fn start_split(state_dir: &Path) -> Result<Emulators, LocalError> {
        Self::start_with(state_dir, true).await
    }

    async fn start_with(state_dir: &Path, split: bool) -> Result<Emulators, LocalError> {
        let root = project_root()?;
        let tools = tools_dir();
        std::fs::create_dir_all(state_dir).map_err(LocalError::io(format!(
            "creating emulator state dir {}",
            state_dir.display()
        )))?;
        let state_dir = std::fs::canonicalize(state_dir)
            .map_err(LocalError::io(format!("resolving {}", state_dir.display())))?;

        let kinesis_launch = kinesalite_launch(&root, &tools, &state_dir, 0)?;
        let general_launch = moto_launch(&root, &tools, &state_dir, "moto")?;
        let [dynamodb, s3] = DEDICATED_SERVICES.map(|(_, _, name)| {
            split
                .then(|| moto_launch(&root, &tools, &state_dir, name))
                .transpose()
        });
        // Started together: moto's import time dominates, kinesalite comes up meanwhile.
        let (kinesis, moto, dynamodb, s3) = tokio::join!(
            spawn(kinesis_launch),
            spawn(general_launch),
            spawn_some(dynamodb?),
            spawn_some(s3?)
        );
        let dedicated = [dynamodb, s3];
        let (kinesis, moto) = (kinesis?, moto?);
        let moto_endpoint = format!("http://127.0.0.1:{}", moto.port);
        wait_http(&moto_endpoint, &moto).await?;
        let mut dedicated_emulators = Vec::new();
        for ((service_id, variable, _), emulator) in DEDICATED_SERVICES.iter().zip(dedicated) {
            let Some(emulator) = emulator else {
                continue;
            };
            let emulator = emulator?;
            let endpoint = format!("http://127.0.0.1:{}", emulator.port);
            wait_http(&endpoint, &emulator).await?;
            dedicated_emulators.push(Dedicated {
                service_id,
                variable,
                emulator,
                endpoint,
            });
        }
        let kinesis_endpoint = format!("http://127.0.0.1:{}", kinesis.port);
        let xray = riffle_trace::Collector::start(&state_dir.join("xray"))
            .map_err(LocalError::io("starting the local X-Ray daemon".to_owned()))?;
        tracing::debug!(%kinesis_endpoint, %moto_endpoint, xray = %xray.address(), state_dir = %state_dir.display(), "emulators ready");
        Ok(Emulators {
            xray,
            kinesis,
            moto,
            kinesis_endpoint,
            moto_endpoint,
            dedicated: dedicated_emulators,
            state_dir,
            root,
        })
    }

    /// Starts moto's request recorder on the process serving `service_id` (from an empty
    /// recording): every request it gets from now on is kept, until
    /// [`Emulators::stop_recording`].
    ///
    /// # Errors
    /// [`LocalError::Recording`] when moto does not answer.
    pub async fn start_recording(&self, service_id: &str) -> Result<(), LocalError> {
        let endpoint = self.endpoint_of(service_id).to_owned();
        recorder(&endpoint, "reset-recording", reqwest::Method::POST).await?;
        recorder(&endpoint, "start-recording", reqwest::Method::POST).await?;
        Ok(())
    }

    /// Stops the recorder started by [`Emulators::start_recording`] and returns what it kept
    /// (read with [`crate::recording`]).
    ///
    /// # Errors
    /// [`LocalError::Recording`] when moto does not answer.
    pub async fn stop_recording(&self, service_id: &str) -> Result<String, LocalError> {
        let endpoint = self.endpoint_of(service_id).to_owned();
        recorder(&endpoint, "stop-recording", reqwest::Method::POST).await?;
        recorder(&endpoint, "download-recording", reqwest::Method::GET).await
    }

    /// The endpoint serving `service_id` (the SDK's id: `DynamoDB`, `S3`, `SQS`, ...).
    pub fn endpoint_of(&self, service_id: &str) -> &str {
        if service_id == "Kinesis" {
            return &self.kinesis_endpoint;
        }
        self.dedicated
            .iter()
            .find(|d| d.service_id == service_id)
            .map_or(self.moto_endpoint.as_str(), |d| d.endpoint.as_str())
    }

    /// `http://127.0.0.1:PORT` of kinesalite.
    pub fn kinesis_endpoint(&self) -> &str {
        &self.kinesis_endpoint
    }

    /// `http://127.0.0.1:PORT` of moto (DynamoDB, S3, SQS, ...).
    pub fn moto_endpoint(&self) -> &str {
        &self.moto_endpoint
    }

    /// Where state and the emulators' logs live.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Log files of the emulators (kinesalite, moto), to point at when a test fails.
    pub fn log_files(&self) -> [&Path; 2] {
        [&self.kinesis.log, &self.moto.log]
    }

    /// Process ids of the running children (kinesalite, moto); `None` once exited.
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        (self.kinesis.child.id(), self.moto.child.id())
    }

    /// Environment for child processes: the SDK's standard endpoint, region and credential
    /// variables, so services find the emulators with no local-only code path.
    pub fn env(&self) -> Vec<(String, String)> {
        let dedicated = self
            .dedicated
            .iter()
            .map(|d| (d.variable.to_owned(), d.endpoint.clone()));
        [
            ("AWS_ENDPOINT_URL", self.moto_endpoint.as_str()),
            ("AWS_ENDPOINT_URL_KINESIS", self.kinesis_endpoint.as_str()),
            ("AWS_REGION", LOCAL_REGION),
            ("AWS_DEFAULT_REGION", LOCAL_REGION),
            ("AWS_ACCESS_KEY_ID", LOCAL_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", LOCAL_SECRET_ACCESS_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain(dedicated)
        .chain([(
            riffle_trace::DAEMON_ADDRESS_ENV.to_owned(),
            self.xray.address().to_string(),
        )])
        .collect()
    }

    /// The file the local X-Ray daemon keeps segment documents in (`riffle trace` reads it).
    pub fn trace_store(&self) -> &Path {
        self.xray.path()
    }

    /// Has the local X-Ray daemon also send every document to moto's X-Ray (PutTraceSegments),
    /// so that `riffle trace --source xray` reads the local twin as it reads X-Ray on AWS.
    /// Off unless asked: moto serves one request at a time, and a pipeline traced in full
    /// would queue its SQS (unsplit, also DynamoDB and S3) calls behind the documents.
    ///
    /// # Errors
    /// Already forwarding, or the forwarder's thread cannot start.
    pub async fn forward_traces(&mut self) -> Result<(), LocalError> {
        let sdk = self.sdk_config().await;
        // One attempt a batch: a lost local batch costs what a lost datagram does, and retries
        // would hold up the collector's stop when moto has gone before it.
        let config = aws_sdk_xray::config::Builder::from(&sdk)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .build();
        self.xray
            .forward_to(aws_sdk_xray::Client::from_conf(config))
            .map_err(LocalError::io("starting the X-Ray forwarder".to_owned()))?;
        Ok(())
    }

    /// An `SdkConfig` equivalent to what a service builds from [`Emulators::env`]: moto as
    /// the general endpoint, kinesalite as the Kinesis endpoint (the same per-service
    /// lookup `AWS_ENDPOINT_URL_KINESIS` feeds), region and static test credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        let credentials = aws_sdk_kinesis::config::Credentials::new(
            LOCAL_ACCESS_KEY_ID,
            LOCAL_SECRET_ACCESS_KEY,
            None,
            None,
            "riffle-local",
        );
        let base = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(LOCAL_REGION))
            .credentials_provider(credentials)
            .load()
            .await;
        // Not `.endpoint_url(moto)`: an explicit endpoint on the config wins over the
        // per-service lookup, which would send Kinesis calls to moto. Answering the lookup for
        // every service reproduces what AWS_ENDPOINT_URL + AWS_ENDPOINT_URL_KINESIS do.
        base.to_builder()
            .service_config(LocalServiceEndpoints {
                kinesis: self.kinesis_endpoint.clone(),
                moto: self.moto_endpoint.clone(),
                dedicated: self
                    .dedicated
                    .iter()
                    .map(|d| (d.service_id, d.endpoint.clone()))
                    .collect(),
            })
            .build()
    }

    /// Restarts only kinesalite, on the same port and LevelDB path, so clients keep their
    /// endpoint and acknowledged records are still there (for fault tests).
    pub async fn restart_kinesis(&mut self) -> Result<(), LocalError> {
        self.kinesis.stop().await;
        let port = self.kinesis.port;
        let deadline = tokio::time::Instant::now() + START_DEADLINE;
        let mut pause = Duration::from_millis(20);
        loop {
            let launch = kinesalite_launch(&self.root, &tools_dir(), &self.state_dir, port)?;
            match spawn(launch).await {
                Ok(emulator) => {
                    self.kinesis = emulator;
                    return Ok(());
                }
                // The old socket may linger a moment after its process has gone.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, port, "kinesalite restart failed, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops every emulator cleanly and waits until they have exited.
    pub async fn shutdown(mut self) {
        let dedicated = std::mem::take(&mut self.dedicated);
        tokio::join!(self.kinesis.stop(), self.moto.stop(), async {
            for mut d in dedicated {
                d.emulator.stop().await;
            }
        });
    }
}

impl Drop for Emulators {
    fn drop(&mut self) {
        // On a panic or an early return nobody awaits `shutdown`; the children must not
        // outlive us (closing stdin would do it too, a kill is immediate).
        let _ = self.kinesis.child.start_kill();
        let _ = self.moto.child.start_kill();
        for d in &mut self.dedicated {
            let _ = d.emulator.child.start_kill();
        }
    }
}

impl Emulator {
    /// Closes stdin (the child's signal to exit), waits a little, then kills.
    async fn stop(&mut self) {
        drop(self.stdin.take());
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(name = self.name, error = %e, "waiting for emulator"),
            Err(_) => {
                tracing::warn!(name = self.name, "emulator ignored stdin close, killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}

/// Kinesis endpoint for SDK clients built from an `SdkConfig` made in code: the SDK looks
/// per-service endpoints up through this hook (`AWS_ENDPOINT_URL_KINESIS` in the env case).
#[derive(Debug)]
struct LocalServiceEndpoints {
    kinesis: String,
    moto: String,
    dedicated: Vec<(&'static str, String)>,
}

impl LoadServiceConfig for LocalServiceEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        if key.env() != "AWS_ENDPOINT_URL" {
            return None;
        }
        let service = key.service_id();
        if service == "Kinesis" {
            return Some(self.kinesis.clone());
        }
        Some(
            self.dedicated
                .iter()
                .find(|(id, _)| *id == service)
                .map_or_else(|| self.moto.clone(), |(_, e)| e.clone()),
        )
    }
}

/// `<root>/.riffle/tools`, where `infra/local/install.sh` puts the emulators
/// (`RIFFLE_TOOLS_DIR` overrides it, as it does for the script).
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RIFFLE_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let root =
        project_root().unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    root.join(".riffle").join("tools")
}

fn require(what: &'static str, path: PathBuf) -> Result<PathBuf, LocalError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(LocalError::ToolsMissing { what, path })
    }
}

fn kinesalite_launch(
    root: &Path,
    tools: &Path,
    state_dir: &Path,
    port: u16,
) -> Result<Launch, LocalError> {
    let modules = tools.join("node").join("node_modules");
    require("kinesalite (npm)", modules.join("kinesalite"))?;
    let script = require(
        "infra/local/kinesalite.js",
        root.join("infra/local/kinesalite.js"),
    )?;
    Ok(Launch {
        name: "kinesalite",
        program: PathBuf::from("node"),
        args: vec![
            script.display().to_string(),
            port.to_string(),
            state_dir.join("kinesis").display().to_string(),
        ],
        envs: vec![("RIFFLE_TOOLS_NODE".into(), modules.display().to_string())],
        log: state_dir.join("kinesalite.log"),
    })
}

/// moto's variable for its request recorder's file.
pub const MOTO_RECORDING_ENV: &str = "MOTO_RECORDER_FILEPATH";
/// The recorder's file, in the run's state folder.
pub const MOTO_RECORDING_FILE: &str = "moto_recording";

/// Spawns `launch`, if there is one.
async fn spawn_some(launch: Option<Launch>) -> Option<Result<Emulator, LocalError>> {
    match launch {
        Some(launch) => Some(spawn(launch).await),
        None => None,
    }
}

fn moto_launch(
    root: &Path,
    tools: &Path,
    state_dir: &Path,
    name: &'static str,
) -> Result<Launch, LocalError> {
    let python = require(
        "moto (Python venv)",
        tools.join("venv").join("bin").join("python"),
    )?;
    require(
        "moto (Python venv)",
        tools.join("venv").join("bin").join("moto_server"),
    )?;
    let script = require(
        "infra/local/moto_server.py",
        root.join("infra/local/moto_server.py"),
    )?;
    let file = if name == "moto" {
        MOTO_RECORDING_FILE.to_owned()
    } else {
        format!("{MOTO_RECORDING_FILE}-{name}")
    };
    Ok(Launch {
        name,
        program: python,
        // Port 0: the server binds first and reports its port, so no other process can
        // take the port between our choosing it and moto binding it.
        args: vec![script.display().to_string(), "0".to_owned()],
        // Where moto's request recorder writes (MOTO_ENABLE_RECORDING=1, or the recorder's
        // start endpoint): the run's own folder, not the working directory.
        envs: vec![(
            MOTO_RECORDING_ENV.into(),
            state_dir.join(file).display().to_string(),
        )],
        log: state_dir.join(format!("{name}.log")),
    })
}

/// Starts one emulator and waits for its `READY <port>` line.
async fn spawn(launch: Launch) -> Result<Emulator, LocalError> {
    let Launch {
        name,
        program,
        args,
        envs,
        log,
    } = launch;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(LocalError::io(format!("opening {}", log.display())))?;
    let mut child = Command::new(&program)
        .args(&args)
        .envs(envs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| LocalError::EmulatorStart {
            name,
            detail: format!("cannot run {}: {e}", program.display()),
            log: log.clone(),
        })?;
    let stdin = child.stdin.take();
    let Some(stdout) = child.stdout.take() else {
        return Err(LocalError::EmulatorStart {
            name,
            detail: "no stdout pipe".to_owned(),
            log,
        });
    };
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(START_DEADLINE, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(port) = line.strip_prefix("READY ") {
                return Ok(port.trim().parse::<u16>().ok());
            }
        }
        Ok::<_, std::io::Error>(None)
    })
    .await;
    let port = match ready {
        Ok(Ok(Some(port))) => port,
        Ok(Ok(None)) | Ok(Err(_)) => {
            let status = child.wait().await.ok();
            return Err(LocalError::EmulatorStart {
                name,
                detail: format!("exited before it was ready ({status:?}): {}", tail(&log)),
                log,
            });
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(LocalError::EmulatorStart {
                name,
                detail: format!("no READY line within {START_DEADLINE:?}"),
                log,
            });
        }
    };
    // Keep draining stdout: a child blocked on a full pipe would stop answering.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(emulator = name, "{line}");
        }
    });
    Ok(Emulator {
        name,
        child,
        stdin,
        port,
        log,
    })
}

/// The last lines of a log file, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Polls an HTTP endpoint until it answers at all (any status means the server serves).
/// One call of moto's recorder API (`/moto-api/recorder/<action>`); the answer's body.
async fn recorder(
    endpoint: &str,
    action: &str,
    method: reqwest::Method,
) -> Result<String, LocalError> {
    let url = format!("{endpoint}/moto-api/recorder/{action}");
    let failed = |e: reqwest::Error| LocalError::Recording(format!("{url}: {e}"));
    let response = reqwest::Client::new()
        .request(method, &url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?;
    response.text().await.map_err(failed)
}

async fn wait_http(endpoint: &str, emulator: &Emulator) -> Result<(), LocalError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| LocalError::EmulatorStart {
            name: emulator.name,
            detail: format!("building an HTTP client: {e}"),
            log: emulator.log.clone(),
        })?;
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    let mut pause = Duration::from_millis(10);
    loop {
        match client.get(format!("{endpoint}/moto-api/")).send().await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(LocalError::EmulatorStart {
                    name: emulator.name,
                    detail: format!("{endpoint} does not answer: {e}"),
                    log: emulator.log.clone(),
                });
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
        }
    }
}
