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
//! fail the job and tell the user. Every step answers with a typed result;
//! the user's text is composed once, from how the job ended.
//!
//! The code follows that order, one concern per module: `outcome`
//! (what callers are answered), `intake` (updates and commands), `job`
//! (running a job and retrying), `ingest` (storing and committing the
//! file), `quota` (the quota gate: policy cache and quotas), `rate_limit`,
//! `failure` (how a step fails), `answer` (delivering the final reply),
//! `replies` (every text the bot sends) and `status` (progress edits).

mod answer;
mod failure;
pub mod fair;
mod ingest;
mod intake;
mod job;
mod metrics;
pub mod notices;
mod outcome;
mod pipeline;
mod poll;
mod quota;
mod rate_limit;
mod replies;
mod serve;
mod status;

pub use failure::CATALOG_BUSY_RETRY;
pub use intake::IntakeError;
pub use job::STALE_RUNNING;
pub use metrics::{JobOutcome, Step, WorkerMetrics};
pub use outcome::{Intake, Outcome};
pub use pipeline::{Pipeline, PipelineConfig};
pub use poll::run_poller;
pub use quota::POLICY_TTL;
pub use rate_limit::RateLimit;
pub use serve::{Recovery, recover_unfinished, serve};

pub use teledrop_core::ErrorKind;
