//! riffle-alarms: the CloudWatch alarms the templates under `infra/` declare, read into plain
//! data and evaluated over metric samples the way CloudWatch evaluates them, so a local run
//! or a test can tell which alarm would page (pure: no AWS calls, no emulators, no I/O
//! beyond reading the templates).
//!
//! Layout:
//! - [`model`]: an [`AlarmSpec`] and its parts ([`MetricId`], [`Stat`], [`Comparison`],
//!   [`TreatMissing`], single-metric or metric-math [`AlarmMetric`]);
//! - [`spec`]: [`alarms`], every alarm of the templates (through `riffle_plan`'s reader);
//! - `names`: what a reference in an alarm resolves to (below);
//! - [`math`]: the metric-math expressions (`FILL(reads, 0) + FILL(writes, 0)`);
//! - [`source`]: the [`MetricSource`] port and [`Recorded`] samples;
//! - [`eval`]: [`evaluate`], one alarm over a source at a time, into an [`Evaluation`];
//! - `error`: [`AlarmsError`].
//!
//! Dimension values (and actions) are the template's expressions evaluated by
//! `riffle_plan::template::Template::eval`, with resources named as CloudFormation names
//! them in a deployment of these templates in the environment asked for (`Env`; the local
//! twin's is `riffle_plan::LOCAL_ENV`): `Ref: Function` in a service template is the
//! function's `FunctionName` (`riffle-local-validator`); `Ref: ViewTable` is the table's
//! `TableName` (`riffle-local-view`), likewise streams and buckets; `Fn::GetAtt: [Queue,
//! QueueName]` is the queue's name; `Fn::ImportValue` is the platform stack's export
//! evaluated with those names (`riffle-local-ViewTableName` is `riffle-local-view`,
//! `riffle-local-AlarmTopicArn` the topic's ARN). ARNs and queue URLs use the local region and
//! account (`riffle_plan::template::LOCAL_*`).

mod error;
pub mod eval;
pub mod math;
pub mod model;
mod names;
pub mod source;
pub mod spec;

pub use error::AlarmsError;
pub use eval::{Evaluation, State, evaluate};
pub use model::{
    AlarmMetric, AlarmSpec, Comparison, MetricId, Query, QueryBody, Stat, TreatMissing,
};
pub use source::{MetricSource, Recorded, Sample};
pub use spec::{alarms, read_alarms};
