//! The schema registry: a Confluent-compatible registry REST API over DynamoDB.
//!
//! Producers register Avro schemas under subjects and get global ids; every stage resolves
//! the id in a record's frame back to its writer schema here. The same schema always gets
//! the same id, whichever subject registers it.
//!
//! Layout, from the wire inwards:
//! - `api`: the axum [`router`] (and [`router_with_auth`]), request bodies, replies and the
//!   API's error shape;
//! - `auth`: the check every route passes when auth is configured: HTTP Basic or bearer
//!   credentials, or on AWS the caller's IAM principal mapped to a role (`auth/iam.rs`);
//! - `registry`: what each operation means over any store, including the registration
//!   algorithm (dedupe, compatibility, id allocation, version allocation under concurrency)
//!   and soft/permanent deletion;
//! - `compat`: whether a new schema may follow a subject's existing ones, pure:
//!   `compat/level.rs` picks the versions and directions a level asks for,
//!   `compat/resolve.rs` holds Avro's schema-resolution rules between one reader and one
//!   writer, `compat/model.rs` reads schema JSON into what those rules compare (the level
//!   type, [`CompatibilityLevel`], is the codec's, shared with the client and the CLI);
//! - `schema`: parsing and fingerprinting a submitted schema;
//! - `store`: the [`SchemaStore`] port with its DynamoDB (feature `dynamo`, on by default)
//!   and in-memory implementations;
//! - `config`: the environment `main.rs` reads (serving is riffle-http's);
//! - `error`: the crate's one error type and its API error codes.
//!
//! Metrics: one `ServerErrors` EMF line on stdout per 5xx answer (`api`), under
//! `Service` = [`SERVICE`]; nothing for the other answers.

pub mod api;
pub mod auth;
pub mod compat;
pub mod config;
pub mod error;
pub mod registry;
pub mod schema;
pub mod store;

pub use api::{router, router_with_auth};
pub use auth::Auth;
pub use config::Config;
pub use error::{Error, Result};
pub use registry::{MAX_SUBJECT_BYTES, Registered, Registry, VersionSpec};
// Defined once, in the codec; re-exported because the registry's API takes it
// (`Registry::with_default_level`), so its users need no second dependency.
pub use riffle_codec::compatibility::CompatibilityLevel;
#[cfg(feature = "dynamo")]
pub use store::DynamoStore;
pub use store::{MemoryStore, SchemaStore};

/// The registry's name: the `Service` dimension of its metrics, as the alarms of
/// `infra/services/schema-registry.yaml` name it.
pub const SERVICE: &str = "schema-registry";
