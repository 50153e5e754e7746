//! riffle-local: Riffle on one machine. It runs the local AWS emulators and provisions
//! them from the same CloudFormation templates that deploy Riffle to AWS, so services
//! run against them unchanged, through the SDK's standard endpoint variables.
//!
//! Layout:
//! - [`emulators`]: kinesalite (Kinesis) and moto's server (DynamoDB, S3, SQS) as child
//!   processes on loopback, installed by `infra/local/install.sh` into `.riffle/tools/`;
//!   the environment and `SdkConfig` that point clients at them.
//! - the templates are read by `riffle_plan` (pure), which the operator tools use too.
//! - [`provision`]: the templates turned into API calls against the emulators, and the
//!   resulting [`Deployment`]: local names, each service's environment and its event source
//!   mapping settings ([`EsmSettings`], passed to services as `RIFFLE_ESM`).
//! - [`recording`]: moto's request recorder read back (DynamoDB items per table).
//! - [`error`]: [`LocalError`], the crate's one error type.
//! - [`lambda_api`]: a local Lambda Runtime API, so the function binaries run in Lambda mode.

pub mod emulators;
pub mod error;
pub mod lambda_api;
pub mod provision;
pub mod recording;

pub use emulators::{Emulators, tools_dir};
pub use error::LocalError;
pub use provision::{
    Deployment, QUERY_URL_EXPORT, REGISTRY_URL_EXPORT, local_query_env, local_registry_env,
    provision,
};
pub use riffle_plan::{CHECKPOINT_TABLE, EsmSettings};
pub use riffle_plan::{LOCAL_ENV, plan, project_root};
