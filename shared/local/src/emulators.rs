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

/// The region every local run uses; the emulators accept any, but ARNs must agree.
pub const LOCAL_REGION: &str = "us-east-1";
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
    state_dir: PathBuf,
    root: PathBuf,
}

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
        let root = project_root()?;
        let tools = tools_dir();
        std::fs::create_dir_all(state_dir).map_err(LocalError::io(format!(
            "creating emulator state dir {}",
            state_dir.display()
        )))?;
        let state_dir = std::fs::canonicalize(state_dir)
            .map_err(LocalError::io(format!("resolving {}", state_dir.display())))?;

        let kinesis_launch = kinesalite_launch(&root, &tools, &state_dir, 0)?;
        let moto_launch = moto_launch(&root, &tools, &state_dir)?;
        // Started together: moto's import time dominates, kinesalite comes up meanwhile.
        let (kinesis, moto) = tokio::join!(spawn(kinesis_launch), spawn(moto_launch));
        let (kinesis, moto) = (kinesis?, moto?);
        let moto_endpoint = format!("http://127.0.0.1:{}", moto.port);
        wait_http(&moto_endpoint, &moto).await?;
        let kinesis_endpoint = format!("http://127.0.0.1:{}", kinesis.port);
        tracing::debug!(%kinesis_endpoint, %moto_endpoint, state_dir = %state_dir.display(), "emulators ready");
        Ok(Emulators {
            kinesis,
            moto,
            kinesis_endpoint,
            moto_endpoint,
            state_dir,
            root,
        })
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
        .collect()
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

    /// Stops both emulators cleanly and waits until they have exited.
    pub async fn shutdown(mut self) {
        tokio::join!(self.kinesis.stop(), self.moto.stop());
    }
}

impl Drop for Emulators {
    fn drop(&mut self) {
        // On a panic or an early return nobody awaits `shutdown`; the children must not
        // outlive us (closing stdin would do it too, a kill is immediate).
        let _ = self.kinesis.child.start_kill();
        let _ = self.moto.child.start_kill();
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
}

impl LoadServiceConfig for LocalServiceEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        if key.env() != "AWS_ENDPOINT_URL" {
            return None;
        }
        Some(if key.service_id() == "Kinesis" {
            self.kinesis.clone()
        } else {
            self.moto.clone()
        })
    }
}

/// The repository root: `RIFFLE_ROOT`, else the nearest ancestor of the current directory
/// holding a workspace `Cargo.toml` with `infra/` and `schemas/`, else this crate's
/// workspace at build time.
pub fn project_root() -> Result<PathBuf, LocalError> {
    if let Some(root) = std::env::var_os("RIFFLE_ROOT") {
        let root = PathBuf::from(root);
        return if is_project_root(&root) {
            Ok(root)
        } else {
            Err(LocalError::ProjectRoot(format!(
                "RIFFLE_ROOT={} is not the Riffle repository",
                root.display()
            )))
        };
    }
    if let Ok(cwd) = std::env::current_dir()
        && let Some(root) = cwd.ancestors().find(|d| is_project_root(d))
    {
        return Ok(root.to_path_buf());
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if is_project_root(&built) {
        return std::fs::canonicalize(&built).map_err(LocalError::io("resolving project root"));
    }
    Err(LocalError::ProjectRoot(
        "not in the repository and the build-time checkout is gone".to_owned(),
    ))
}

fn is_project_root(dir: &Path) -> bool {
    dir.join("infra").is_dir()
        && dir.join("schemas").is_dir()
        && std::fs::read_to_string(dir.join("Cargo.toml"))
            .map(|toml| toml.lines().any(|l| l.trim() == "[workspace]"))
            .unwrap_or(false)
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

fn moto_launch(root: &Path, tools: &Path, state_dir: &Path) -> Result<Launch, LocalError> {
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
    Ok(Launch {
        name: "moto",
        program: python,
        // Port 0: the server binds first and reports its port, so no other process can
        // take the port between our choosing it and moto binding it.
        args: vec![script.display().to_string(), "0".to_owned()],
        envs: Vec::new(),
        log: state_dir.join("moto.log"),
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
