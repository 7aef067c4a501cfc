//! Wiring of the `teledrop` binary: configuration, telemetry and the roles.
//! The roles' logic lives in their crates; this crate only connects them.

pub mod config;
pub mod http;
pub mod roles;
pub mod shutdown;
pub mod standalone;
pub mod telemetry;
