//! riffle-tests: Riffle's end-to-end and integration tests against the local emulators, all
//! through the real AWS SDK.
//!
//! Layout: `tests/*.rs`, one test binary per subject (the local event source mapping, the
//! aggregator, the archiver, the whole pipeline); [`test_support`], what those tests share
//! (scratch state directories, waiting for a stream, creating a table, draining a queue,
//! Lambda events built from the recorded fixture).

pub mod test_support;
