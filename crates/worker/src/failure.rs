//! How a step of a job fails.
//!
//! A [`Refusal`] is the pipeline's own decision by rule (too big, the rate
//! limit, a quota): final, and the user is told why. A [`Fault`] is what a
//! dependency reported (Telegram, the object store, the catalog),
//! classified by [`ErrorKind`], with a detail for the operator's log: a
//! retryable one sends the job back for a later attempt, any other fails
//! it. Neither carries the user's text; [`crate::replies`] composes it from
//! the job's final outcome.

use crate::rate_limit::RateLimit;
use std::time::Duration;
use teledrop_catalog::CatalogError;
use teledrop_core::{ErrorKind, report};
use teledrop_retention::{QuotaExceeded, SweepError};
use teledrop_storage::StorageError;
use teledrop_telegram::TelegramError;

/// A step of a job that did not get through.
#[derive(Debug)]
pub(crate) enum StepFailure {
    Refused(Refusal),
    Fault(Fault),
}

/// A file refused by rule, before or while it was stored.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Larger than the bot takes (its maximum, or the cloud Bot API's
    /// download limit): `size` in bytes.
    TooBig { size: u64 },
    /// The owner sent `limit`'s worth of files already; a slot frees up
    /// after `retry_after`.
    RateLimited { limit: RateLimit, retry_after: Duration },
    /// A `Reject` quota leaves no room for it.
    OverQuota(QuotaRefusal),
}

/// Which quota refused a file, as far as known.
#[derive(Debug)]
pub(crate) enum QuotaRefusal {
    /// The quota and its numbers.
    Exceeded(QuotaExceeded),
    /// A file of unknown size ran past the `room` its quota left, and the
    /// quota no longer says which (it changed meanwhile).
    PastRoom { room: u64 },
}

impl Refusal {
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            Self::TooBig { .. } => ErrorKind::TooBig,
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::OverQuota(_) => ErrorKind::OverQuota,
        }
    }
}

/// A dependency's failure, classified.
#[derive(Debug)]
pub(crate) struct Fault {
    pub(crate) kind: ErrorKind,
    /// For the operator: the cause as the dependency put it.
    pub(crate) detail: String,
    /// When the dependency asked to be tried again.
    pub(crate) retry_after: Option<Duration>,
}

impl Fault {
    pub(crate) fn internal(detail: String) -> Self {
        Self {
            kind: ErrorKind::Internal,
            detail,
            retry_after: None,
        }
    }
}

/// How long a delivery waits after this worker found no database
/// connection free: the pool is busy with other jobs (or Postgres does not
/// answer), so the delivery goes back to the bus, where this or another
/// worker takes it once connections are free, rather than holding a slot.
pub const CATALOG_BUSY_RETRY: Duration = Duration::from_secs(5);

impl From<TelegramError> for Fault {
    fn from(e: TelegramError) -> Self {
        Self {
            kind: e.kind(),
            retry_after: e.retry_after(),
            detail: report(&e).to_string(),
        }
    }
}

impl From<StorageError> for Fault {
    fn from(e: StorageError) -> Self {
        let kind = match &e {
            // The download broke off (cut connection, idle timeout).
            StorageError::SourceFailed(_) | StorageError::SizeMismatch { .. } => ErrorKind::Network,
            StorageError::TooLarge { .. } => ErrorKind::TooBig,
            _ => ErrorKind::Storage,
        };
        Self {
            kind,
            retry_after: None,
            detail: report(&e).to_string(),
        }
    }
}

impl From<CatalogError> for Fault {
    fn from(e: CatalogError) -> Self {
        let retry_after = matches!(e, CatalogError::PoolTimedOut).then_some(CATALOG_BUSY_RETRY);
        Self {
            kind: ErrorKind::Catalog,
            retry_after,
            detail: report(&e).to_string(),
        }
    }
}

impl From<SweepError> for Fault {
    fn from(e: SweepError) -> Self {
        match e {
            SweepError::Catalog(e) => e.into(),
            SweepError::Storage(e) => Self {
                kind: ErrorKind::Storage,
                retry_after: None,
                detail: format!("quota check: {}", report(&e)),
            },
        }
    }
}

impl From<Refusal> for StepFailure {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl From<Fault> for StepFailure {
    fn from(f: Fault) -> Self {
        Self::Fault(f)
    }
}

macro_rules! fault_from {
    ($($e:ty),*) => {$(
        impl From<$e> for StepFailure {
            fn from(e: $e) -> Self {
                Self::Fault(e.into())
            }
        }
    )*};
}
fault_from!(TelegramError, StorageError, CatalogError, SweepError);
