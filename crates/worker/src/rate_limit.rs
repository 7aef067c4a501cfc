//! The per-user rate limit: at most so many files in any window, counted
//! in the catalog (admissions) so that it holds across every replica that
//! shares it. The refusal's text is the replies' business
//! ([`crate::replies`]).

use std::num::NonZeroU32;
use std::time::Duration;
use teledrop_catalog::{Admission, Catalog, CatalogError};
use teledrop_core::JobRecord;
use tracing::info;

/// A per-user limit on the files taken in: at most `files` in any
/// `window`, counted in the catalog so that it holds across every replica
/// that shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    files: NonZeroU32,
    window: Duration,
}

impl RateLimit {
    /// `files` per minute; `None` for zero (no limit).
    pub fn per_minute(files: u32) -> Option<Self> {
        Self::new(files, Duration::from_secs(60))
    }

    /// `files` in any `window`; `None` for zero files or a window under a
    /// second (what the replies can name).
    pub fn new(files: u32, window: Duration) -> Option<Self> {
        let files = NonZeroU32::new(files)?;
        (window >= Duration::from_secs(1)).then_some(Self { files, window })
    }

    pub fn files(&self) -> NonZeroU32 {
        self.files
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Takes a slot for the job under its owner's limit. A job that holds
    /// one already (a retry, a redelivery) keeps it.
    pub(crate) async fn admit(&self, catalog: &dyn Catalog, job: &JobRecord) -> Result<Admission, CatalogError> {
        let admission = catalog
            .admit(job.id, self.files, self.window, chrono::Utc::now())
            .await?;
        if let Admission::Limited { .. } = admission {
            info!(job = %job.id, user = job.incoming.user_id.0, "rate limit reached");
        }
        Ok(admission)
    }
}
