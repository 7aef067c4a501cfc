//! What the pipeline answers its callers: [`Intake`] for an update taken
//! in, [`Outcome`] for a delivery (what the bus should do with it).

use std::time::Duration;
use teledrop_core::JobId;

/// What [`crate::Pipeline::accept`] made of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// A file update seen for the first time: a new pending job.
    NewJob(JobId),
    /// A file update recorded before (redelivery, or Telegram sending an
    /// unconfirmed update again after a restart).
    KnownJob(JobId),
    /// Answered or ignored; nothing to run.
    Handled,
}

/// What the bus should do with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Settled for good (stored, failed and told, or nothing to do).
    Done,
    /// Try again after the delay.
    Retry(Duration),
    /// Unusable input: drop it.
    Drop,
}

impl Outcome {
    /// A retry after what the failure asked for (`hint`), or else after a
    /// jittered backoff doubling with each `attempt`; two minutes at most.
    pub(crate) fn retry(hint: Option<Duration>, attempt: u32) -> Self {
        let base = teledrop_core::backoff::nth(Duration::from_secs(2), Duration::from_secs(128), attempt);
        Self::Retry(hint.unwrap_or(base).min(Duration::from_secs(120)))
    }
}
