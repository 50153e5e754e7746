//! riffle-local: Riffle on one machine. It runs the local AWS emulators and provisions
//! them from the same CloudFormation templates that deploy Riffle to AWS, so services
//! run against them unchanged, through the SDK's standard endpoint variables.
//!
//! Layout:
//! - [`emulators`]: kinesalite (Kinesis) and moto's server (DynamoDB, S3, SQS) as child
//!   processes on loopback, installed by `infra/local/install.sh` into `.riffle/tools/`;
//!   the environment and `SdkConfig` that point clients at them.
//! - [`error`]: [`LocalError`], the crate's one error type.

pub mod emulators;
pub mod error;

pub use emulators::{Emulators, project_root, tools_dir};
pub use error::LocalError;
