//! The quota gate: the `Reject` quotas of the `RetentionPolicy` rows in
//! the catalog, checked for an incoming file before anything is
//! downloaded (a forecast, which also caps a stream of unknown size at the
//! room left) and again, under the quota lock, just before its commit
//! (exact). The policies are read at most once per [`POLICY_TTL`].

use crate::failure::{Fault, QuotaRefusal, Refusal, StepFailure};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use teledrop_catalog::{Catalog, QuotaLock};
use teledrop_core::{IncomingFile, JobRecord, report};
use teledrop_retention::{Incoming, Policy, PolicyEnforcer, QuotaExceeded, QuotaVerdict, quota_lock_scope};
use tracing::{info, warn};

/// How long the policies read from the catalog are used before they are
/// read again (quotas at ingest).
pub const POLICY_TTL: Duration = Duration::from_secs(5);

pub(crate) struct QuotaGate {
    catalog: Arc<dyn Catalog>,
    enforcer: PolicyEnforcer,
    pub(crate) policy_ttl: Duration,
    /// The policies in force and when they were read.
    policies: Mutex<Option<(Instant, Arc<[Policy]>)>>,
}

/// What a commit holds and owes after its final quota check.
pub(crate) struct QuotaHold {
    /// Held until the commit is done; `None` when no enforced quota
    /// counts the file.
    pub(crate) lock: Option<QuotaLock>,
    /// Dry-run quotas the file would exceed, counted once it is committed.
    pub(crate) would_reject: Vec<QuotaExceeded>,
}

fn incoming(f: &IncomingFile, size: Option<u64>) -> Incoming<'_> {
    Incoming {
        owner: f.user_id,
        chat: f.chat_id,
        mime: &f.mime_type,
        size,
    }
}

impl QuotaGate {
    pub(crate) fn new(catalog: Arc<dyn Catalog>, enforcer: PolicyEnforcer) -> Self {
        Self {
            catalog,
            enforcer,
            policy_ttl: POLICY_TTL,
            policies: Mutex::new(None),
        }
    }

    /// The policies in force, read from the catalog at most once per
    /// `policy_ttl`. A stored policy that does not parse is skipped.
    async fn policies(&self) -> Result<Arc<[Policy]>, Fault> {
        if let Some((at, policies)) = &*self.policies.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < self.policy_ttl
        {
            return Ok(policies.clone());
        }
        let rows = self.catalog.policies().await?;
        let policies: Arc<[Policy]> = rows
            .iter()
            .filter_map(|row| match Policy::from_row(row) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(policy = %row.key, error = %e, "ignoring a stored policy that is not valid");
                    None
                }
            })
            .collect();
        *self.policies.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), policies.clone()));
        Ok(policies)
    }

    /// What the `Reject` quotas say of a file of `size` (`None`: not
    /// known yet).
    async fn verdict(&self, f: &IncomingFile, size: Option<u64>) -> Result<QuotaVerdict, Fault> {
        let policies = self.policies().await?;
        if policies.is_empty() {
            return Ok(QuotaVerdict::Allowed {
                room: None,
                would_reject: Vec::new(),
            });
        }
        Ok(self.enforcer.check_quota(&policies, &incoming(f, size)).await?)
    }

    /// Refuses a file of `size` that would exceed a `Reject` quota;
    /// otherwise returns the bytes it may take at most (`None`: no byte
    /// quota applies).
    pub(crate) async fn room(&self, f: &IncomingFile, size: Option<u64>) -> Result<Option<u64>, StepFailure> {
        match self.verdict(f, size).await? {
            QuotaVerdict::Allowed { room, .. } => Ok(room),
            QuotaVerdict::Exceeded(q) => Err(Refusal::OverQuota(QuotaRefusal::Exceeded(q)).into()),
        }
    }

    /// The file turned out to be `size` bytes: checks the quotas again
    /// if that is more than the `room` granted before (the size was not
    /// known, so every size range matched), and returns the room now.
    pub(crate) async fn settle(
        &self,
        f: &IncomingFile,
        size: u64,
        room: Option<u64>,
    ) -> Result<Option<u64>, StepFailure> {
        match room {
            Some(r) if size > r => self.room(f, Some(size)).await,
            _ => Ok(room),
        }
    }

    /// The download of a file of unknown size went past the `room` its
    /// quota left: the refusal, with the quota's numbers when the quota
    /// still says so.
    pub(crate) async fn past_room(&self, f: &IncomingFile, room: u64) -> Refusal {
        Refusal::OverQuota(match self.verdict(f, Some(room.saturating_add(1))).await {
            Ok(QuotaVerdict::Exceeded(mut q)) => {
                // Its size is still unknown: say none.
                q.incoming = None;
                QuotaRefusal::Exceeded(q)
            }
            _ => QuotaRefusal::PastRoom { room },
        })
    }

    /// The quota checks made before the download are a forecast: files of
    /// the same user (or, for a total quota, anyone's) checked at the same
    /// time all saw the same room. With the file's size known, this takes
    /// the quota lock, checks again, and returns the lock for the caller to
    /// hold until the file is committed, so the quotas hold exactly (no
    /// lock when no enforced `Reject` quota counts the file), with the
    /// dry-run quotas the file would exceed.
    pub(crate) async fn lock(&self, f: &IncomingFile, size: u64) -> Result<QuotaHold, StepFailure> {
        let policies = self.policies().await?;
        let incoming = incoming(f, Some(size));
        let lock = match quota_lock_scope(&policies, &incoming) {
            Some(scope) => Some(self.catalog.quota_lock(scope).await?),
            None => None,
        };
        match self.enforcer.check_quota(&policies, &incoming).await? {
            QuotaVerdict::Allowed { would_reject, .. } => Ok(QuotaHold { lock, would_reject }),
            QuotaVerdict::Exceeded(q) => {
                if let Some(lock) = lock
                    && let Err(e) = lock.release().await
                {
                    warn!(error = %report(&e), "releasing the quota lock failed");
                }
                info!(user = f.user_id.0, "quota taken by files committed meanwhile");
                Err(Refusal::OverQuota(QuotaRefusal::Exceeded(q)).into())
            }
        }
    }

    /// A file was committed that dry-run quotas would have refused: say so
    /// in the log and count it for the policies' status. Best effort: the
    /// file is stored either way, and a count lost to a failing catalog
    /// only makes the dry run look milder.
    pub(crate) async fn count_would_reject(&self, job: &JobRecord, would_reject: &[QuotaExceeded]) {
        for q in would_reject {
            info!(
                job = %job.id,
                user = job.incoming.user_id.0,
                policy = %q.policy,
                refusal = %q,
                "dry run: a quota would have refused this file; accepted"
            );
            if let Err(e) = self.catalog.count_would_reject(&q.policy).await {
                warn!(policy = %q.policy, error = %report(&e), "could not count a would-be refusal");
            }
        }
    }
}
