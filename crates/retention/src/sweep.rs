//! Applying policies ([`PolicyEnforcer`]): the sweep (which files a
//! policy deletes now, and deleting them), orphan collection, and the
//! `Reject` quota check of an incoming file ([`PolicyEnforcer::check_quota`],
//! called by the worker before and at commit).
//!
//! Order of deletion, chosen so a crash at any point is recoverable: the
//! catalog first (one transaction marks the file deleted, revokes its
//! links so they answer 410, subtracts it from usage and, when it was the
//! blob's last file, removes the blob row), the object second. A crash in
//! between leaves an object no row names — an orphan, removed by
//! [`PolicyEnforcer::collect_orphans`] once older than its grace period. No row ever
//! points to a missing object, and usage is exact at every step. A rerun
//! sweep finds what is still selected and finishes the job.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::{Catalog, CatalogError, FileCursor, FileFilter, QuotaLockScope, Totals};
use teledrop_core::{FileId, FileRecord, ObjectKey, UserId};
use teledrop_storage::{Storage, StorageError};

use crate::policy::{OnQuotaExceeded, Policy, Quota};

const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("catalog")]
    Catalog(#[from] CatalogError),
    #[error("storage")]
    Storage(#[from] StorageError),
}

impl SweepError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Catalog(_) => "catalog",
            Self::Storage(_) => "storage",
        }
    }
}

/// Why a file was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    MaxAge,
    MaxIdle,
    UserQuota,
    TotalQuota,
}

/// What a sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Selected files (and their bytes) before the sweep.
    pub matched: Totals,
    /// Files deleted (or, in a dry run, that would be), with their bytes.
    pub deleted: Totals,
    /// Selected files after the sweep (unchanged in a dry run).
    pub usage: Totals,
    pub dry_run: bool,
    /// Files the policy's dry-run `Reject` quotas would have refused since
    /// it was stored (0 for a policy that is not a dry run).
    pub would_reject: u64,
    /// The chosen files, oldest first, with why.
    pub chosen: Vec<(FileId, Reason)>,
}

/// Applies policies to a catalog and a store: sweeps what their
/// retention rules select, collects orphans, and checks their `Reject`
/// quotas for an incoming file.
#[derive(Clone)]
pub struct PolicyEnforcer {
    catalog: Arc<dyn Catalog>,
    storage: Storage,
}

impl PolicyEnforcer {
    pub fn new(catalog: Arc<dyn Catalog>, storage: Storage) -> Self {
        Self { catalog, storage }
    }

    /// Sweeps one policy at `now`. A dry run (the policy's or forced by
    /// `dry_run`) only reports.
    pub async fn sweep(&self, policy: &Policy, now: DateTime<Utc>, dry_run: bool) -> Result<SweepReport, SweepError> {
        let spec = &policy.spec;
        let dry_run = dry_run || spec.dry_run;
        let base = spec.selector.filter();
        let matched = self.catalog.live_totals(&base).await?;
        let chosen = self.choose(policy, &base, now).await?;

        let mut deleted = Totals::default();
        for (file, _) in &chosen {
            if dry_run {
                deleted.files += 1;
                deleted.bytes += file.size;
                continue;
            }
            if let Some(freed) = self.delete(file).await? {
                deleted.files += 1;
                deleted.bytes += freed;
            }
        }
        let usage = if dry_run {
            matched
        } else {
            self.catalog.live_totals(&base).await?
        };
        let would_reject = if spec.dry_run {
            self.would_reject(policy).await?
        } else {
            0
        };
        tracing::info!(
            policy = %policy.key,
            dry_run,
            would_reject,
            matched_files = matched.files,
            deleted_files = deleted.files,
            freed_bytes = deleted.bytes,
            "policy swept"
        );
        Ok(SweepReport {
            matched,
            deleted,
            usage,
            dry_run,
            would_reject,
            chosen: chosen.into_iter().map(|(f, r)| (f.id, r)).collect(),
        })
    }

    /// Deletes one file: row first, then (if it was the blob's last file)
    /// the object. Returns the bytes taken off usage. A file deleted
    /// meanwhile by someone else (only one controller sweeps at a time,
    /// so that is a user or an operator) still counts: it was selected.
    async fn delete(&self, file: &FileRecord) -> Result<Option<u64>, SweepError> {
        let object = match self.catalog.delete_file(file.id).await {
            Ok(object) => object,
            Err(CatalogError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if let Some(key) = object {
            self.delete_object(&key).await?;
        }
        Ok(Some(file.size))
    }

    async fn delete_object(&self, key: &ObjectKey) -> Result<(), SweepError> {
        match self.storage.delete(key).await {
            Ok(()) | Err(StorageError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The files to delete, oldest first, each once.
    async fn choose(
        &self,
        policy: &Policy,
        base: &FileFilter,
        now: DateTime<Utc>,
    ) -> Result<Vec<(FileRecord, Reason)>, SweepError> {
        let spec = &policy.spec;
        let mut chosen: BTreeMap<(DateTime<Utc>, FileId), (FileRecord, Reason)> = BTreeMap::new();
        fn add(chosen: &mut BTreeMap<(DateTime<Utc>, FileId), (FileRecord, Reason)>, f: FileRecord, r: Reason) {
            chosen.entry((f.created_at, f.id)).or_insert((f, r));
        }
        if let Some(age) = spec.max_age {
            let filter = FileFilter {
                created_before: Some(now - age.as_chrono()),
                ..base.clone()
            };
            for f in self.all(&filter).await? {
                add(&mut chosen, f, Reason::MaxAge);
            }
        }
        if let Some(idle) = spec.max_idle {
            let filter = FileFilter {
                idle_before: Some(now - idle.as_chrono()),
                ..base.clone()
            };
            for f in self.all(&filter).await? {
                add(&mut chosen, f, Reason::MaxIdle);
            }
        }
        if spec.on_quota_exceeded == OnQuotaExceeded::EvictOldest {
            let gone: HashSet<FileId> = chosen.values().map(|(f, _)| f.id).collect();
            let mut evicted = HashSet::new();
            if let Some(quota) = &spec.per_user {
                for (owner, totals) in self.catalog.live_totals_by_owner(base).await? {
                    let filter = FileFilter {
                        owners: vec![owner],
                        ..base.clone()
                    };
                    for f in self.evict(&filter, totals, quota, &gone).await? {
                        evicted.insert(f.id);
                        add(&mut chosen, f, Reason::UserQuota);
                    }
                }
            }
            if let Some(quota) = &spec.total {
                let totals = self.catalog.live_totals(base).await?;
                let gone: HashSet<FileId> = gone.union(&evicted).copied().collect();
                for f in self.evict(base, totals, quota, &gone).await? {
                    add(&mut chosen, f, Reason::TotalQuota);
                }
            }
        }
        Ok(chosen.into_values().collect())
    }

    /// The oldest files of `filter` to remove so `totals` fits `quota`,
    /// counting files already going (`gone`) as removed.
    async fn evict(
        &self,
        filter: &FileFilter,
        mut totals: Totals,
        quota: &Quota,
        gone: &HashSet<FileId>,
    ) -> Result<Vec<FileRecord>, SweepError> {
        let over = |t: &Totals| {
            quota.max_files.is_some_and(|m| t.files > m) || quota.max_bytes.is_some_and(|m| t.bytes > m.bytes())
        };
        let mut out = Vec::new();
        if !over(&totals) {
            return Ok(out);
        }
        let files = self.all(filter).await?;
        // Files already going count as removed before any eviction.
        for f in files.iter().filter(|f| gone.contains(&f.id)) {
            totals.files -= 1;
            totals.bytes -= f.size;
        }
        for f in files {
            if !over(&totals) {
                break;
            }
            if gone.contains(&f.id) {
                continue;
            }
            totals.files -= 1;
            totals.bytes -= f.size;
            out.push(f);
        }
        Ok(out)
    }

    async fn all(&self, filter: &FileFilter) -> Result<Vec<FileRecord>, SweepError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.catalog.live_files(filter, after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(FileCursor::of(last));
            let full = page.len() == PAGE as usize;
            out.extend(page);
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// Removes objects under `blobs/` that no catalog row names and that
    /// are older than `grace` (an upload in progress writes its object
    /// before its row; the grace period must be longer than any upload),
    /// and aborts unfinished uploads under `blobs/` begun longer than
    /// `grace` ago: a worker killed mid-upload leaves its multipart upload
    /// (or staging file) behind, and a job it ran that finished elsewhere
    /// is never retaken to clean up after it.
    pub async fn collect_orphans(
        &self,
        grace: Duration,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<OrphanReport, SweepError> {
        let cutoff = now - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let mut report = OrphanReport::default();
        let mut listing = self.storage.list(Some("blobs"));
        let mut batch = Vec::new();
        loop {
            let next = listing.try_next().await?;
            if let Some(info) = &next {
                report.examined += 1;
                if info.last_modified < cutoff
                    && let Ok(key) = info.key.parse::<ObjectKey>()
                {
                    batch.push((key, info.size));
                }
            }
            if batch.len() >= 500 || (next.is_none() && !batch.is_empty()) {
                let keys: Vec<ObjectKey> = batch.iter().map(|(k, _)| k.clone()).collect();
                let live = self.catalog.referenced_objects(&keys).await?;
                for (key, size) in batch.drain(..) {
                    if live.contains(&key) {
                        continue;
                    }
                    if !dry_run {
                        self.delete_object(&key).await?;
                    }
                    tracing::info!(key = %key, size, dry_run, "orphaned object removed");
                    report.deleted.files += 1;
                    report.deleted.bytes += size;
                }
            }
            if next.is_none() {
                break;
            }
        }
        let mut uploads = self.storage.unfinished_uploads("blobs/");
        while let Some(upload) = uploads.try_next().await? {
            if upload.initiated >= cutoff {
                continue;
            }
            if !dry_run {
                self.storage.abort_upload(&upload).await?;
            }
            tracing::info!(key = %upload.key, initiated = %upload.initiated, dry_run, "abandoned upload aborted");
            report.aborted_uploads += 1;
        }
        Ok(report)
    }

    /// Of the policies, the first `Reject` quota an incoming file would
    /// exceed, or how many bytes it may still take (for files whose size
    /// is not known before download). A `dryRun` policy refuses nothing
    /// and leaves the room alone: the quotas it would enforce are listed
    /// in [`QuotaVerdict::Allowed::would_reject`] instead.
    pub async fn check_quota(&self, policies: &[Policy], incoming: &Incoming<'_>) -> Result<QuotaVerdict, SweepError> {
        let mut room: Option<u64> = None;
        let mut would_reject = Vec::new();
        for policy in policies.iter().filter(|p| counts_quota(p, incoming)) {
            let spec = &policy.spec;
            let base = spec.selector.filter();
            for (scope, quota) in [(QuotaScope::PerUser, &spec.per_user), (QuotaScope::Total, &spec.total)] {
                let Some(quota) = quota else { continue };
                let filter = match scope {
                    QuotaScope::PerUser => FileFilter {
                        owners: vec![incoming.owner],
                        ..base.clone()
                    },
                    QuotaScope::Total => base.clone(),
                };
                let used = self.catalog.live_totals(&filter).await?;
                let left = quota.max_bytes.map(|q| q.bytes().saturating_sub(used.bytes));
                let limit = match (quota.max_files, quota.max_bytes.map(|q| q.bytes()), left) {
                    (Some(max), _, _) if used.files + 1 > max => Some(Limit::Files(max)),
                    (_, Some(max), Some(left)) if incoming.size.map_or(left == 0, |size| size > left) => {
                        Some(Limit::Bytes(max))
                    }
                    _ => None,
                };
                match limit {
                    Some(limit) => {
                        let exceeded = QuotaExceeded {
                            policy: policy.key.clone(),
                            scope,
                            limit,
                            used,
                            incoming: incoming.size,
                        };
                        if !spec.dry_run {
                            return Ok(QuotaVerdict::Exceeded(exceeded));
                        }
                        // One count per policy and file, however many of
                        // its quotas the file would exceed.
                        would_reject.push(exceeded);
                        break;
                    }
                    None if !spec.dry_run => {
                        if let Some(left) = left {
                            room = Some(room.map_or(left, |r| r.min(left)));
                        }
                    }
                    None => {}
                }
            }
        }
        Ok(QuotaVerdict::Allowed { room, would_reject })
    }

    /// Files that dry-run `Reject` quotas of `policy` would have refused
    /// since it was stored (counted by workers at commit).
    async fn would_reject(&self, policy: &Policy) -> Result<u64, SweepError> {
        let rows = self.catalog.policies().await?;
        Ok(rows.iter().find(|r| r.key == policy.key).map_or(0, |r| r.would_reject))
    }
}

/// The [`Catalog::quota_lock`] a file's commit must hold for the
/// [`PolicyEnforcer::check_quota`] made under it to stay true until the file is
/// counted: the owner's, with the total when a `Reject` quota over every
/// user counts the file; `None` when no `Reject` quota counts it.
/// A dry-run policy refuses nothing, so it needs no lock.
pub fn quota_lock_scope(policies: &[Policy], incoming: &Incoming<'_>) -> Option<QuotaLockScope> {
    let mut scope: Option<QuotaLockScope> = None;
    for spec in policies
        .iter()
        .filter(|p| !p.spec.dry_run && counts_quota(p, incoming))
        .map(|p| &p.spec)
    {
        let s = scope.get_or_insert(QuotaLockScope {
            user: incoming.owner,
            total: false,
        });
        s.total |= spec.total.is_some();
    }
    scope
}

/// Whether `policy` has a `Reject` quota that counts `incoming` (dry run
/// or not).
fn counts_quota(policy: &Policy, incoming: &Incoming<'_>) -> bool {
    let spec = &policy.spec;
    spec.on_quota_exceeded == OnQuotaExceeded::Reject
        && (spec.per_user.is_some() || spec.total.is_some())
        && spec
            .selector
            .matches(incoming.owner, incoming.chat, incoming.mime, incoming.size)
}

/// What orphan collection found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrphanReport {
    pub examined: u64,
    pub deleted: Totals,
    /// Unfinished uploads aborted (or, in a dry run, that would be).
    pub aborted_uploads: u64,
}

/// A file about to be ingested, as known before its download.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub owner: UserId,
    pub chat: teledrop_core::ChatId,
    pub mime: &'a str,
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaVerdict {
    /// The file may be stored; with `room`, it may take at most that many
    /// bytes (its size was unknown, or it is the tightest quota left).
    Allowed {
        room: Option<u64>,
        /// Quotas of `dryRun` policies the file would exceed, one per
        /// policy: it is accepted, and they count it as "would reject".
        would_reject: Vec<QuotaExceeded>,
    },
    Exceeded(QuotaExceeded),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaScope {
    PerUser,
    Total,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Files(u64),
    Bytes(u64),
}

/// A `Reject` quota an incoming file would exceed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub policy: String,
    pub scope: QuotaScope,
    pub limit: Limit,
    pub used: Totals,
    pub incoming: Option<u64>,
}

impl std::fmt::Display for QuotaExceeded {
    /// The sentence the user reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use teledrop_core::ByteSize;
        let whose = match self.scope {
            QuotaScope::PerUser => "your quota",
            QuotaScope::Total => "the bot's total quota",
        };
        match self.limit {
            Limit::Files(max) => write!(
                f,
                "this file would exceed {whose} of {max} {}: {} stored already",
                if max == 1 { "file" } else { "files" },
                self.used.files
            ),
            Limit::Bytes(max) => {
                write!(
                    f,
                    "this file{} would exceed {whose} of {}: {} stored already",
                    self.incoming
                        .map(|s| format!(" ({})", ByteSize::from_bytes(s)))
                        .unwrap_or_default(),
                    ByteSize::from_bytes(max),
                    ByteSize::from_bytes(self.used.bytes)
                )
            }
        }
    }
}
