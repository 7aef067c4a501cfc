//! Scenarios that do not fit in `conformance.rs`, by area.

pub mod put_file;
