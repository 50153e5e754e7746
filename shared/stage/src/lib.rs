//! What every Riffle stage handler shares: the ports through which a stage hands records on
//! (the next Kinesis stream, the rejects queue), the reject message format, and the
//! bookkeeping of per-record failures for Lambda's partial batch response.
//!
//! Layout: [`ports`] (traits plus their AWS implementations), [`reject`] (the message a
//! rejected record becomes), [`batch`] (failed records -> `KinesisEventResponse`),
//! [`schemas`] (resolving a batch's schema ids once).

pub mod batch;
pub mod ports;
pub mod reject;
pub mod schemas;

pub use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
pub use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
pub use batch::Failures;
pub use ports::{KinesisOutput, Output, OutputError, Rejects, SqsRejects};
pub use reject::RejectMessage;
pub use riffle_aws::{OutRecord, SqsMessage};
