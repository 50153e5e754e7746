//! What every Riffle stage handler shares: the ports through which a stage hands records on
//! (the next Kinesis stream, the rejects queue), the reject message format, and the
//! bookkeeping of per-record failures for Lambda's partial batch response.
//!
//! Layout: [`ports`] (traits plus their AWS implementations), [`reject`] (the message a
//! rejected record becomes), [`batch`] (failed records -> `KinesisEventResponse`),
//! [`schemas`] (resolving a batch's schema ids once), [`decode`] and [`dead_letter`] (the
//! envelopes of an `enriched` batch, and parking the records no retry can fix), [`dedup`]
//! (record positions and origins), [`marks`] (the per-batch high-water marks behind
//! exactly-once effects: the gate and commit, a re-publishing stage's batch, the store port
//! with its in-memory and DynamoDB stores, one file each), [`trace`] (a batch's X-Ray record
//! spans), [`env`] (configuration from environment variables), and `testing` (in-process ports for tests, behind the cargo feature `testing`).

pub mod aggregate;
pub mod batch;
pub mod dead_letter;
pub mod decode;
pub mod dedup;
pub mod env;
pub mod marks;
pub mod ports;
pub mod reject;
pub mod schemas;
pub mod stages;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trace;

pub use aggregate::AggregatingOutput;
pub use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
pub use batch::Failures;
pub use ports::{KinesisOutput, Output, OutputError, Rejects, SqsRejects};
pub use reject::RejectMessage;
pub use riffle_aws::{OutRecord, SqsMessage};
pub use riffle_runtime::{KinesisEvent, KinesisEventRecord, KinesisRecord, Source};
