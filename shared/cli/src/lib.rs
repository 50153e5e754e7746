//! Riffle's operator tools, the `riffle` binary: commands an operator runs against a
//! deployment (AWS, or the local twin through the same SDK endpoints). It links no emulator
//! launcher and no load generator; those are the developer harness's (`riffle-harness`,
//! binary `riffle-dev`, ADR 0011).
//!
//! Layout: [`schema`] (`riffle schema`: register, check, list, diff), [`dlq`]
//! (`riffle dlq list | show | redrive`), [`replay`] (`riffle replay`, the view rebuilt from
//! the archive), [`compact`] (`riffle archive compact`), [`cost`] (`riffle cost`, the monthly
//! bill from measured figures), [`deploy`] (`riffle deploy`, the stacks through CloudFormation
//! change sets), [`trace`] (`riffle trace`, an
//! event's path from its X-Ray segments), [`alarms`] (`riffle alarms`, the templates' alarms
//! evaluated over the local stack's metrics), [`view`] (`riffle view query`, the view query
//! API from a terminal), [`dev`] (harness commands handed to
//! `riffle-dev`), [`error`] ([`OpsError`]). `main.rs` is the command line over these.

pub mod alarms;
pub mod compact;
pub mod cost;
pub mod deploy;
pub mod dev;
pub mod dlq;
pub mod error;
pub mod produce;
pub mod replay;
pub mod schema;
pub mod trace;
pub mod view;

pub use error::OpsError;

/// A command's outcome as the shell sees it: its text on stdout and success, or the error
/// on stderr and failure.
pub fn report<E: std::fmt::Display>(outcome: Result<String, E>) -> std::process::ExitCode {
    match outcome {
        Ok(text) => {
            print!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
