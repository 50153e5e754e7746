//! `riffle alarms`: every CloudWatch alarm of the templates under `infra/`, evaluated the
//! way CloudWatch would (`riffle_alarms`) over what the local stack measured, listed with its
//! state and why.
//!
//! The metrics come from the local stack's metrics store (`RIFFLE_METRICS_STORE`: every EMF
//! line its processes printed, kept by `riffle-dev demo` / `riffle-dev up`) and from the
//! queues' current depths, read through the SDK configuration of the environment (the same
//! endpoints as `riffle dlq`), only for the queues some alarm watches.
//!
//! Layout: [`source`] (which local measurement stands for which metric of an alarm:
//! [`LocalMetrics`]), [`report`](mod@report) (the pure core: rows, table, JSON). This file is the
//! command line and its I/O.

pub mod report;
pub mod source;

pub use report::{Request, Row, report, rows, with_period};
pub use source::{Gap, LocalMetrics, Located, QueueReading, Wiring, queues_named};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use riffle_alarms::{Sample, State};
use riffle_telemetry::{EmfRecord, METRICS_STORE_ENV};

use crate::OpsError;

/// Where `riffle-dev demo` keeps its metrics store, under the project root.
pub const DEMO_METRICS: &str = ".riffle/demo/metrics";

/// `riffle alarms`.
#[derive(Debug, Clone, Args)]
#[command(after_help = "\
Datapoints are the last EvaluationPeriods periods up to now, the current (partial) one \
included, so a local run need not wait for a period to close. Queue depths are read once, \
now. Alarms whose metrics the local stack does not measure (DynamoDB throttling, the \
registry's Lambda throttles) are listed as INSUFFICIENT_DATA with `no local source`. \
Exits 0 whatever the states: it is a report.")]
pub struct AlarmsArgs {
    /// The templates folder (default: infra/ of this checkout).
    #[arg(long, value_name = "DIR")]
    pub infra: Option<PathBuf>,
    /// The local stack's metrics store, a directory of `<service>.jsonl` EMF lines (default:
    /// .riffle/demo/metrics of this checkout).
    #[arg(long, value_name = "DIR", env = METRICS_STORE_ENV)]
    pub metrics: Option<PathBuf>,
    /// Drill: evaluate every alarm over periods of SECS seconds instead of its template's,
    /// with the same number of datapoints and the same threshold, so an alarm with 60 s
    /// periods can be driven to fire in seconds. Thresholds are not scaled: a Sum alarm at 1
    /// per 60 s fires at 1 per SECS.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub period: Option<u32>,
    /// List only the alarms in this state (the summary still counts them all).
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Print a JSON array instead: name, state, datapoints, reason, local_source,
    /// period_secs, template per alarm.
    #[arg(long)]
    pub json: bool,
}

/// `--state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    Alarm,
    Ok,
    InsufficientData,
}

impl From<StateArg> for State {
    fn from(arg: StateArg) -> State {
        match arg {
            StateArg::Alarm => State::Alarm,
            StateArg::Ok => State::Ok,
            StateArg::InsufficientData => State::InsufficientData,
        }
    }
}

/// Runs `riffle alarms`.
pub async fn main(args: AlarmsArgs) -> ExitCode {
    crate::report(run(&args).await)
}

/// The text `riffle alarms` prints.
///
/// # Errors
/// The metrics store is missing or unreadable, or the templates cannot be read. A queue
/// whose depth cannot be read is not an error: its alarm says so.
pub async fn run(args: &AlarmsArgs) -> Result<String, OpsError> {
    let store = match &args.metrics {
        Some(dir) => dir.clone(),
        None => riffle_plan::project_root()?.join(DEMO_METRICS),
    };
    let records = read_store(&store)?;
    let infra = match &args.infra {
        Some(dir) => dir.clone(),
        None => riffle_plan::project_root()?.join("infra"),
    };
    let specs = riffle_alarms::alarms(&infra, riffle_plan::LOCAL_ENV)?;
    let wiring = Wiring::from_plan(&riffle_plan::plan(&infra, riffle_plan::LOCAL_ENV)?);
    let now_ms = now_ms();
    let queues = queue_depths(&queues_named(&specs, &wiring), now_ms).await;
    let source = LocalMetrics::new(wiring, &records, queues);
    let request = Request {
        infra: &infra,
        now_ms,
        period_secs: args.period,
        state: args.state.map(State::from),
        json: args.json,
    };
    Ok(report(&specs, &source, &request))
}

/// The records of the metrics store at `dir`.
///
/// # Errors
/// [`OpsError::NoMetricsStore`] when there is no such directory (no local stack ran
/// here), [`OpsError::MetricsStore`] when it cannot be read.
pub fn read_store(dir: &Path) -> Result<Vec<EmfRecord>, OpsError> {
    if !dir.is_dir() {
        return Err(OpsError::NoMetricsStore(dir.to_path_buf()));
    }
    riffle_telemetry::read_metrics_store(dir).map_err(|source| OpsError::MetricsStore {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Each queue's depth now, or why it could not be read (the stack may be down: the alarm
/// then says so rather than the command failing). Read all at once, so a stack that is down
/// costs one round of the SDK's retries, not one per queue.
async fn queue_depths(queues: &BTreeSet<String>, now_ms: i64) -> BTreeMap<String, QueueReading> {
    let mut out = BTreeMap::new();
    if queues.is_empty() {
        return out;
    }
    let sdk = riffle_aws::sdk_config().await;
    let sqs = riffle_aws::sqs_client(&sdk);
    let mut reads = tokio::task::JoinSet::new();
    for queue in queues {
        let (sqs, queue) = (sqs.clone(), queue.clone());
        reads.spawn(async move {
            let depth = crate::dlq::counts(&sqs, &queue).await;
            (queue, depth)
        });
    }
    while let Some(read) = reads.join_next().await {
        // A read that panicked leaves its queue out: its alarm then says it was not read.
        if let Ok((queue, depth)) = read {
            let sample = depth.map(|(_, visible, _)| Sample {
                at_ms: now_ms,
                value: visible as f64,
            });
            out.insert(queue, sample);
        }
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
