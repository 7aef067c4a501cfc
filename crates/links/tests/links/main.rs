//! The link server over a real SQLite catalog and a real local object
//! store, called through the router (and once over TCP).

mod common;
mod conditional;
mod counting;
mod gone;
mod health;
mod metrics;
mod ranges;
mod serving;
mod tcp;
