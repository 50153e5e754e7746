//! Which dead-letter queues the deployment has, which stage writes each, which stream feeds
//! each stage and which stream each stage writes: read from the templates (pure, over
//! `riffle_plan`).

use riffle_plan::Plan;
use riffle_plan::template::{Attrs, LOCAL_ACCOUNT_ID, Scope};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Environment variables through which a stage names a queue it writes.
pub(super) const QUEUE_VARIABLES: [&str; 2] = ["RIFFLE_DLQ_URL", "RIFFLE_REJECTS_QUEUE_URL"];

/// Environment variable through which a stage names the stream it writes.
pub const OUTPUT_STREAM_VARIABLE: &str = "RIFFLE_OUTPUT_STREAM";

/// Region used only to build placeholder ARNs while reading the templates.
pub(super) const PLAN_REGION: &str = "us-east-1";

/// One dead-letter queue of the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQueue {
    /// Logical id in the platform template (`EnricherDlq`).
    pub logical: String,
    /// Queue name (`riffle-local-enricher-dlq`).
    pub name: String,
    /// The stages writing to it (rejects, parked records, on-failure messages).
    pub stages: Vec<String>,
}

/// The queues, and each stage's input stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Every queue of the platform template, in template order.
    pub queues: Vec<DeadLetterQueue>,
    /// Stage (service template name, as `RejectMessage::stage`) -> its input stream.
    pub stage_streams: BTreeMap<String, String>,
    /// Stage -> the stream it writes ([`OUTPUT_STREAM_VARIABLE`]), for the stages that do.
    pub stage_outputs: BTreeMap<String, String>,
}

impl Topology {
    /// The queue by logical id or name.
    pub fn queue(&self, key: &str) -> Option<&DeadLetterQueue> {
        self.queues
            .iter()
            .find(|q| q.logical == key || q.name == key)
    }

    /// The stage reading `stream`.
    pub fn stage_of_stream(&self, stream: &str) -> Option<&str> {
        self.stage_streams
            .iter()
            .find(|(_, s)| s.as_str() == stream)
            .map(|(stage, _)| stage.as_str())
    }
}

pub(super) fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:{PLAN_REGION}:{LOCAL_ACCOUNT_ID}:stream/{name}")
}

pub(super) fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:{PLAN_REGION}:{LOCAL_ACCOUNT_ID}:{name}")
}

pub(super) fn queue_url(name: &str) -> String {
    format!("https://sqs.{PLAN_REGION}.amazonaws.com/{LOCAL_ACCOUNT_ID}/{name}")
}

/// Reads the queues and the stages' wiring out of the templates (pure): resources get
/// placeholder ARNs and URLs, the platform's exports are evaluated with them, and each
/// service's references are matched back to names.
pub fn topology(plan: &Plan) -> Topology {
    let mut resources: BTreeMap<String, Attrs> = BTreeMap::new();
    let mut names: HashMap<String, String> = HashMap::new();
    for s in &plan.streams {
        let arn = stream_arn(&s.name);
        names.insert(arn.clone(), s.name.clone());
        // The `...StreamName` exports give the name itself.
        names.insert(s.name.clone(), s.name.clone());
        resources.insert(
            s.logical.clone(),
            Attrs {
                reference: s.name.clone(),
                attrs: BTreeMap::from([("Arn".to_owned(), arn)]),
            },
        );
    }
    for q in &plan.queues {
        let (arn, url) = (queue_arn(&q.name), queue_url(&q.name));
        names.insert(arn.clone(), q.name.clone());
        names.insert(url.clone(), q.name.clone());
        resources.insert(
            q.logical.clone(),
            Attrs {
                reference: url.clone(),
                attrs: BTreeMap::from([
                    ("Arn".to_owned(), arn),
                    ("QueueUrl".to_owned(), url),
                    ("QueueName".to_owned(), q.name.clone()),
                ]),
            },
        );
    }
    for t in &plan.tables {
        resources.insert(
            t.logical.clone(),
            Attrs {
                reference: t.name.clone(),
                attrs: BTreeMap::from([(
                    "Arn".to_owned(),
                    format!(
                        "arn:aws:dynamodb:{PLAN_REGION}:{LOCAL_ACCOUNT_ID}:table/{}",
                        t.name
                    ),
                )]),
            },
        );
    }
    let no_exports = BTreeMap::new();
    let scope = Scope {
        resources: &resources,
        exports: &no_exports,
    };
    let mut exports = BTreeMap::new();
    for (_, output) in plan.platform.outputs() {
        let Some(export) = &output.export_name else {
            continue;
        };
        // Outputs of resources this reading does not model (keys, tables) just do not resolve.
        if let (Ok(name), Ok(value)) = (
            plan.platform.eval(export, scope),
            plan.platform.eval(&output.value, scope),
        ) {
            exports.insert(name, value);
        }
    }
    let no_resources = BTreeMap::new();
    let scope = Scope {
        resources: &no_resources,
        exports: &exports,
    };

    let mut writers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stage_streams = BTreeMap::new();
    let mut stage_outputs = BTreeMap::new();
    for service in &plan.services {
        let t = &service.template;
        let resolve = |v| t.eval(v, scope).ok().and_then(|s| names.get(&s).cloned());
        if let Some(esm) = &service.esm {
            if let Some(stream) = resolve(&esm.event_source_arn) {
                stage_streams.insert(service.name.clone(), stream);
            }
            if let Some(queue) = esm.on_failure_destination.as_ref().and_then(resolve) {
                writers
                    .entry(queue)
                    .or_default()
                    .insert(service.name.clone());
            }
        }
        for (variable, value) in &service.env {
            if variable == OUTPUT_STREAM_VARIABLE
                && let Some(stream) = resolve(value)
            {
                stage_outputs.insert(service.name.clone(), stream);
            }
            if QUEUE_VARIABLES.contains(&variable.as_str())
                && let Some(queue) = resolve(value)
            {
                writers
                    .entry(queue)
                    .or_default()
                    .insert(service.name.clone());
            }
        }
    }
    Topology {
        queues: plan
            .queues
            .iter()
            .map(|q| DeadLetterQueue {
                logical: q.logical.clone(),
                name: q.name.clone(),
                stages: writers
                    .get(&q.name)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
            })
            .collect(),
        stage_streams,
        stage_outputs,
    }
}
