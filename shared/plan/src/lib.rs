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
pub use root::project_root;
