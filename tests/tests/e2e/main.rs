//! The end-to-end suites, one module per suite, linked into one test binary: each suite
//! links the whole stack (services, emulator harness, SDK), so one binary instead of one per
//! file saves a link and ~100 MB of disk per suite in a clean build (CI).

mod aggregator;
mod alarms;
mod analytics_catalog;
mod archiver;
mod autoscale;
mod chaos;
mod lambda_mode;
mod late_events;
mod load_report;
mod new_subject;
mod ops_cli;
mod pipeline;
mod produce_cli;
mod python_producer;
mod registry_interop;
mod runtime;
mod schema_cli;
mod up;
mod xray;
