//! The local stack's measurements as the metrics the templates' alarms name: the
//! [`MetricSource`] `riffle alarms` evaluates over, and where each named metric comes from.
//!
//! [`Wiring::locate`] maps a metric of an alarm to what the local stack measures:
//! - `Riffle` with exactly `{Service: s, Env: e}`, `e` the plan's environment: that metric of
//!   the metrics store's lines of `s` in `e` (the local processes get `RIFFLE_ENV` from their
//!   templates, so theirs is `riffle_plan::LOCAL_ENV`); lines of another environment count
//!   for nothing, lines without one (the harness's producers) only where no `Env` is asked;
//! - `AWS/Lambda` `{FunctionName: f}`: `Errors`, `IteratorAge`, `Throttles` are the local
//!   Lambda runtime's `BatchErrors`, `IteratorAgeMs`, `Throttles` of service `f` (its lines
//!   carry the function name). The registry and the query API are server processes
//!   locally, not under that runtime: their `Errors` are their `ServerErrors` (a 5xx answer
//!   is what a failed invocation is there), and nothing measures their throttles; the
//!   autoscaler does not run on the twin at all;
//! - `AWS/SQS` `ApproximateNumberOfMessagesVisible` `{QueueName: q}`: the queue's depth, read
//!   once when the command runs (SQS keeps no history to read back);
//! - `AWS/Kinesis` `WriteProvisionedThroughputExceeded` `{StreamName: s}`: the sum of
//!   `KinesisWriteThrottled` of the services writing `s` (from the plan: a stage's
//!   `RIFFLE_OUTPUT_STREAM`; a stream no stage writes is the producers');
//! - anything else, `AWS/DynamoDB` included (the local DynamoDB never throttles), has no
//!   local source: no samples, and [`LocalMetrics::gap`] says why, so the listing does not
//!   pass silence off as health.

use std::collections::{BTreeMap, BTreeSet};

use riffle_alarms::{AlarmMetric, AlarmSpec, MetricId, MetricSource, QueryBody, Sample};
use riffle_plan::Plan;
use riffle_telemetry::{ENV_DIMENSION, EmfRecord, NAMESPACE, SERVICE_DIMENSION, names};

use crate::dlq::topology;

/// The `Service` of the metric lines the harness's producers write: they put the records of
/// the stream no stage writes (the ingest stream).
pub const PRODUCER_SERVICE: &str = "producer";
/// The registry's service: its template's file stem and its lines' `Service`
/// (`riffle_harness::pipeline::REGISTRY`). It runs locally as a server process.
pub const REGISTRY_SERVICE: &str = "schema-registry";
/// The view query API's service: a server process locally, as the registry is.
pub const VIEW_QUERY_SERVICE: &str = "view-query";

/// The namespaces and metrics of AWS's own that the mapping knows (`names::AWS_METRICS`
/// lists them too; a test holds the two together).
pub const LAMBDA: &str = "AWS/Lambda";
pub const LAMBDA_ERRORS: &str = "Errors";
pub const LAMBDA_ITERATOR_AGE: &str = "IteratorAge";
pub const LAMBDA_THROTTLES: &str = "Throttles";
pub const SQS: &str = "AWS/SQS";
pub const QUEUE_DEPTH: &str = "ApproximateNumberOfMessagesVisible";
pub const KINESIS: &str = "AWS/Kinesis";
pub const WRITE_THROTTLED: &str = "WriteProvisionedThroughputExceeded";
pub const DYNAMODB: &str = "AWS/DynamoDB";

/// Where a metric an alarm names is measured locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// The values of these `(service, metric name)` of the metrics store, together.
    Emf(Vec<(String, String)>),
    /// The depth of this queue, read when the command ran.
    Queue(String),
    /// Nowhere, and why.
    Nowhere(String),
}

/// Which local services stand for which AWS resources, read from the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wiring {
    /// The environment the plan was read for: the `Env` of the metrics found here.
    pub env: String,
    /// Stream name -> the services whose lines count the writes to it.
    pub stream_writers: BTreeMap<String, BTreeSet<String>>,
    /// Function name -> the service its local server process meters as, for functions
    /// that do not run under the local Lambda runtime (the registry, the query API).
    pub servers: BTreeMap<String, String>,
    /// Functions the twin does not run at all (the autoscaler: on the twin its decisions run
    /// inside `riffle-dev load --autoscale`).
    pub absent: BTreeSet<String>,
}

impl Wiring {
    /// The wiring of the plan's streams and functions.
    pub fn from_plan(plan: &Plan) -> Wiring {
        let outputs = topology(plan).stage_outputs;
        let mut stream_writers: BTreeMap<String, BTreeSet<String>> = plan
            .streams
            .iter()
            .map(|s| (s.name.clone(), BTreeSet::new()))
            .collect();
        for service in &plan.services {
            if let Some(stream) = outputs.get(&service.name) {
                // The local runtime meters a function's Kinesis writes under the function
                // name; a stage's own lines carry its short name.
                let writers = stream_writers.entry(stream.clone()).or_default();
                writers.insert(service.function_name.clone());
                writers.insert(service.name.clone());
            }
        }
        // A stream no stage writes is fed from outside the pipeline: by the producers.
        for writers in stream_writers.values_mut().filter(|w| w.is_empty()) {
            writers.insert(PRODUCER_SERVICE.to_owned());
        }
        let servers: BTreeMap<String, String> = plan
            .services
            .iter()
            .filter(|s| s.name == REGISTRY_SERVICE || s.name == VIEW_QUERY_SERVICE)
            .map(|s| (s.function_name.clone(), s.name.clone()))
            .collect();
        // Neither fed by a stream nor a server: nothing starts it locally.
        let absent = plan
            .services
            .iter()
            .filter(|s| s.esm.is_none() && !servers.contains_key(&s.function_name))
            .map(|s| s.function_name.clone())
            .collect();
        Wiring {
            env: plan.env.clone(),
            stream_writers,
            servers,
            absent,
        }
    }

    /// Where `metric` is measured locally (see the module docs).
    pub fn locate(&self, metric: &MetricId) -> Located {
        match (metric.namespace.as_str(), metric.name.as_str()) {
            (NAMESPACE, name) => {
                let service = metric.dimensions.get(SERVICE_DIMENSION);
                let env = metric.dimensions.get(ENV_DIMENSION);
                match (service, env, metric.dimensions.len()) {
                    (Some(service), Some(env), 2) if *env == self.env => {
                        Located::emf(service, name)
                    }
                    (Some(_), Some(env), 2) => Located::Nowhere(format!(
                        "{ENV_DIMENSION} {env}: the local metrics are environment {}'s",
                        self.env
                    )),
                    _ => Located::Nowhere(format!(
                        "local {NAMESPACE} metrics carry two dimensions, {SERVICE_DIMENSION} and {ENV_DIMENSION}"
                    )),
                }
            }
            (LAMBDA, _) => self.lambda(metric),
            (SQS, QUEUE_DEPTH) => match only(metric, "QueueName") {
                Some(queue) => Located::Queue(queue.to_owned()),
                None => Located::Nowhere("queue depths are read per QueueName alone".into()),
            },
            (KINESIS, WRITE_THROTTLED) => self.stream(metric),
            (DYNAMODB, _) => {
                Located::Nowhere("the local DynamoDB never throttles nor reports metrics".into())
            }
            _ => Located::Nowhere("the local stack measures nothing it maps to".into()),
        }
    }

    fn lambda(&self, metric: &MetricId) -> Located {
        let Some(function) = only(metric, "FunctionName") else {
            return Located::Nowhere("Lambda metrics are mapped per FunctionName alone".into());
        };
        if self.absent.contains(function) {
            return Located::Nowhere(format!(
                "{function} does not run on the local twin (the autoscaler's decisions run in \
                 `riffle-dev load --autoscale`)"
            ));
        }
        if let Some(service) = self.servers.get(function) {
            return match metric.name.as_str() {
                LAMBDA_ERRORS => Located::emf(service, names::SERVER_ERRORS),
                _ => Located::Nowhere(format!(
                    "{function} runs locally as a server process, not under the local Lambda runtime"
                )),
            };
        }
        let local = match metric.name.as_str() {
            LAMBDA_ERRORS => names::BATCH_ERRORS,
            LAMBDA_ITERATOR_AGE => names::ITERATOR_AGE_MS,
            LAMBDA_THROTTLES => names::THROTTLES,
            _ => return Located::Nowhere("the local Lambda runtime does not measure it".into()),
        };
        Located::emf(function, local)
    }

    fn stream(&self, metric: &MetricId) -> Located {
        let writers = only(metric, "StreamName").and_then(|s| self.stream_writers.get(s));
        match writers {
            Some(writers) => Located::Emf(
                writers
                    .iter()
                    .map(|w| (w.clone(), names::KINESIS_WRITE_THROTTLED.to_owned()))
                    .collect(),
            ),
            None => Located::Nowhere("no stream of the templates by that StreamName".into()),
        }
    }
}

impl Located {
    fn emf(service: &str, name: &str) -> Located {
        Located::Emf(vec![(service.to_owned(), name.to_owned())])
    }
}

/// The value of `metric`'s one dimension when that is `key`.
fn only<'m>(metric: &'m MetricId, key: &str) -> Option<&'m str> {
    match metric.dimensions.len() {
        1 => metric.dimensions.get(key).map(String::as_str),
        _ => None,
    }
}

/// Every metric an alarm reads (one, or each `MetricStat` of its metric math).
pub fn metrics_of(spec: &AlarmSpec) -> Vec<&MetricId> {
    match &spec.metric {
        AlarmMetric::Single { metric, .. } => vec![metric],
        AlarmMetric::Math { queries, .. } => queries
            .iter()
            .filter_map(|q| match &q.body {
                QueryBody::Metric { metric, .. } => Some(metric),
                QueryBody::Expression { .. } => None,
            })
            .collect(),
    }
}

/// Why a metric has no data here beyond nothing having been measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gap {
    /// The local stack has nothing that stands for it.
    NoSource(String),
    /// It has, but it could not be read (a queue's depth).
    Unread(String),
}

/// A queue's depth when read, or why it could not be.
pub type QueueReading = Result<Sample, String>;

/// The metrics store's records and the queue depths, mapped through a [`Wiring`].
#[derive(Debug, Clone, Default)]
pub struct LocalMetrics {
    wiring: Wiring,
    /// `(service, metric name)` -> its values.
    series: BTreeMap<(String, String), Vec<Sample>>,
    queues: BTreeMap<String, QueueReading>,
}

impl LocalMetrics {
    /// `records` as read from a metrics store; `queues`: queue name -> its depth, read
    /// beforehand ([`MetricSource::samples`] cannot wait for SQS).
    pub fn new(
        wiring: Wiring,
        records: &[EmfRecord],
        queues: BTreeMap<String, QueueReading>,
    ) -> LocalMetrics {
        let mut series: BTreeMap<(String, String), Vec<Sample>> = BTreeMap::new();
        // Another environment's lines (a store shared by mistake) are not this one's.
        let others = |r: &&EmfRecord| r.env.as_ref().is_some_and(|e| *e != wiring.env);
        for record in records.iter().filter(|r| !others(r)) {
            for (name, value) in &record.values {
                let key = (record.service.clone(), name.clone());
                series.entry(key).or_default().push(Sample {
                    at_ms: record.timestamp_ms,
                    value: *value,
                });
            }
        }
        LocalMetrics {
            wiring,
            series,
            queues,
        }
    }

    pub fn wiring(&self) -> &Wiring {
        &self.wiring
    }

    /// Why `metric` cannot have data here; `None` when it can.
    pub fn gap(&self, metric: &MetricId) -> Option<Gap> {
        match self.wiring.locate(metric) {
            Located::Emf(_) => None,
            Located::Nowhere(why) => Some(Gap::NoSource(why)),
            Located::Queue(queue) => match self.queues.get(&queue) {
                Some(Ok(_)) => None,
                Some(Err(why)) => Some(Gap::Unread(format!("depth of {queue} not read: {why}"))),
                None => Some(Gap::Unread(format!("depth of {queue} not read"))),
            },
        }
    }
}

impl MetricSource for LocalMetrics {
    fn samples(&self, metric: &MetricId, from_ms: i64, to_ms: i64) -> Vec<Sample> {
        let in_range = |s: &&Sample| (from_ms..to_ms).contains(&s.at_ms);
        match self.wiring.locate(metric) {
            Located::Emf(keys) => keys
                .iter()
                .filter_map(|key| self.series.get(key))
                .flatten()
                .filter(in_range)
                .copied()
                .collect(),
            Located::Queue(queue) => self
                .queues
                .get(&queue)
                .and_then(|r| r.as_ref().ok())
                .filter(in_range)
                .into_iter()
                .copied()
                .collect(),
            Located::Nowhere(_) => Vec::new(),
        }
    }
}

/// The queues whose depth some alarm reads.
pub fn queues_named(specs: &[AlarmSpec], wiring: &Wiring) -> BTreeSet<String> {
    specs
        .iter()
        .flat_map(metrics_of)
        .filter_map(|m| match wiring.locate(m) {
            Located::Queue(queue) => Some(queue),
            _ => None,
        })
        .collect()
}
