//! The registry client against the registry served in-process: administration, reads and
//! SigV4 signing. Here rather than in the client's crate so that no crate under `shared/`
//! depends on a service, not even for its tests.

mod admin;
mod client;
mod sigv4;
