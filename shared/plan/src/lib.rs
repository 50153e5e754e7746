//! riffle-plan: the CloudFormation templates under `infra/` read into plain data, with no
//! AWS calls and no emulators: what local provisioning creates, and what the operator tools
//! need to know about a deployment (which queue each stage writes, which stream feeds it).
//!
//! Layout:
//! - [`template`]: a reader for the templates (long-form intrinsics only);
//! - [`model`]: the [`Plan`] and its parts (streams, tables, buckets, queues, services and
//!   their event source mappings);
//! - [`read`]: [`plan`], the templates into a [`Plan`];
//! - [`root`]: [`project_root`], where the repository is;
//! - `error`: [`PlanError`].

mod error;
pub mod model;
pub mod read;
pub mod root;
pub mod template;

pub use error::PlanError;
pub use model::{CHECKPOINT_TABLE, EsmSettings, EsmSpec, Plan, QueueSpec, ServiceSpec};
pub use read::plan;

/// The template parameter every stack declares and every physical name and export carries
/// (`riffle-${Env}-raw`, `riffle-${Env}-KeyArn`; ADR 0016).
pub const ENV_PARAMETER: &str = "Env";

/// The environment the local twin evaluates the templates with: `riffle-local-raw`,
/// `riffle-local-validator`, ... Not the templates' default (`dev`), so a name seen in a local
/// run never looks like one of a deployed environment. `riffle deploy` refuses nothing by
/// this name; it is simply not one to deploy.
pub const LOCAL_ENV: &str = "local";
pub use root::project_root;
