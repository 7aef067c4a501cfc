//! The ingest pipeline: update → job → file stored → link sent.
//!
//! One code path for every deployment: `standalone` feeds it from the long
//! poller through the in-process bus, `teledrop worker` from JetStream.
//! A delivery is handled as:
//!
//! 1. parse the raw update; answer commands and non-file messages;
//! 2. record a file message as a job (unique `update_id`, so a redelivery
//!    finds the existing job and a finished job is not redone);
//! 3. wait, holding no worker slot, until the user has fewer than
//!    `TELEDROP_USER_CONCURRENCY` jobs running over every process
//!    ([`fair`]); then run the job: size checks, the per-user rate limit (admissions in
//!    the catalog, shared by every replica) and `Reject` quotas (from the
//!    `RetentionPolicy` rows in the catalog) before any download, status
//!    message, dedup by `file_unique_id`, stream Bot API → object store
//!    with SHA-256 (a quota's room left caps a stream of unknown size),
//!    commit file + link + usage + job state in one transaction, and turn
//!    the status message into the final reply.
//!
//! Failures are classified by [`ErrorKind`]: retryable ones put the job
//! back to `pending` and ask the bus for a delayed redelivery; final ones
//! fail the job and tell the user.

pub mod fair;
mod messages;
mod metrics;
pub mod notices;
mod pipeline;
mod poll;
mod serve;
mod status;

pub use metrics::WorkerMetrics;
pub use pipeline::{
    CATALOG_BUSY_RETRY, Intake, Outcome, POLICY_TTL, Pipeline, PipelineConfig, RateLimit, STALE_RUNNING,
};
pub use poll::run_poller;
pub use serve::{Recovery, recover_unfinished, serve};

pub use teledrop_core::ErrorKind;
