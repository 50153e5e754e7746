//! The pipeline's child processes: the registry and the four stages started, watched,
//! killed and restarted, each with its log file.

use riffle_local::Emulators;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::*;

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

impl Pipeline {
    pub(super) async fn spawn_stage(&mut self, service: &str) -> Result<(), PipelineError> {
        let mut env = self.deployment.service_env(service)?;
        env.extend(self.stage_env.iter().cloned());
        self.spawn(service, env).await?;
        Ok(())
    }

    pub(super) fn emulators(&self) -> Result<&Emulators, PipelineError> {
        self.emulators
            .as_ref()
            .ok_or_else(|| PipelineError::Process {
                service: "emulators".into(),
                reason: "already stopped".into(),
            })
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

    /// Starts stage `service` again (after [`Pipeline::kill_stage`]) with `extra` added to
    /// its environment, this time only (a fault for one stage, e.g. an alarm drill).
    ///
    /// # Errors
    /// As [`Pipeline::restart_stage`].
    pub async fn restart_stage_with(
        &mut self,
        service: &str,
        extra: Vec<(String, String)>,
    ) -> Result<(), PipelineError> {
        if self.is_running(service) {
            return Err(PipelineError::Process {
                service: service.to_string(),
                reason: "already running".into(),
            });
        }
        let mut env = self.deployment.service_env(service)?;
        env.extend(self.stage_env.iter().cloned());
        env.extend(extra);
        self.spawn(service, env).await?;
        Ok(())
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

    /// Log file of `service`.
    pub fn log_file(&self, service: &str) -> PathBuf {
        self.options
            .state_dir
            .join("logs")
            .join(format!("{service}.log"))
    }

    /// The metrics store file of `service` (appended: a restarted process goes on with it);
    /// `None` (with a warning) when it cannot be opened, which costs the alarms their data
    /// and nothing else.
    pub(super) fn metrics_file(&self, service: &str) -> Option<std::fs::File> {
        let dir = self.metrics_store();
        let opened = std::fs::create_dir_all(&dir).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{service}.jsonl")))
        });
        match opened {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(service, dir = %dir.display(), error = %e, "metrics store not writable");
                None
            }
        }
    }

    /// Starts `service` with the emulators' environment plus `env`. Returns the URL the
    /// process announced on stdout (`LISTENING <url>`), if it is a server.
    pub(super) async fn spawn(
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

        let announced = if SERVERS.contains(&service) {
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
        // Every metric line is kept too, as CloudWatch would keep it: `riffle alarms` reads
        // the alarms' metrics from there.
        let mut store = self.metrics_file(service);
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(record) = riffle_telemetry::parse_emf_line(&line) else {
                    continue;
                };
                if let Some(file) = store.as_mut()
                    && writeln!(file, "{}", line.trim()).is_err()
                {
                    store = None;
                }
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
}
