//! Riffle's operator tooling: the local pipeline orchestrator behind `riffle demo` and the
//! end-to-end tests, and the checks of a run against the load generator's ground truth.
//!
//! Layout: [`pipeline`] (emulators, provisioning, registry and stage processes),
//! [`demo`] (produce, drain, summarise), [`verify`] (outcome vs ground truth),
//! [`schema`] (`riffle schema`: register, check, list, diff and the CI gate).
//! Operator commands over a deployment (AWS or the local twin): [`compact`]
//! (`riffle archive compact`), [`replay`] (`riffle replay`, the view rebuilt from the
//! archive), [`dlq`] (`riffle dlq list | show | redrive`).
//! Fault tests: [`chaos`] (`riffle chaos`: kills, injected faults and a kinesalite restart
//! during a run, then lost / doubled checked against the ground truth).
//! The `riffle` binary (`main.rs`) is the command line over these.

pub mod chaos;
pub mod compact;
pub mod demo;
pub mod dlq;
pub mod pipeline;
pub mod replay;
pub mod schema;
pub mod verify;
