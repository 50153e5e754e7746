//! riffle-harness: Riffle's local twin for developers and CI, the `riffle-dev` binary: the
//! whole pipeline on one machine and the checks of a run against the load generator's ground
//! truth. Kept apart from the operator tools (`riffle-cli`), which must not link the
//! emulator launcher or the load generator (ADR 0011).
//!
//! Layout: [`pipeline`] (emulators, provisioning, registry and stage processes),
//! [`demo`] (produce, drain, summarise), [`load`] (a load profile measured second by second,
//! reported as JSON, CSV and HTML), [`verify`] (outcome vs ground truth),
//! [`chaos`] (kills, injected faults and a kinesalite restart during a run, then lost /
//! doubled checked against the ground truth), [`schema_gate`] (the schema CI gate: git
//! history replayed into a private registry), [`up`] (the twin kept running until Ctrl-C),
//! [`coldstart`] (the stage binaries' cold starts in Lambda mode, behind a local Runtime API).
//! `main.rs` is the command line over these.

pub mod chaos;
pub mod coldstart;
pub mod demo;
pub mod load;
pub mod pipeline;
pub mod schema_gate;
pub mod up;
pub mod verify;
