//! The metadata store.
//!
//! One trait, [`Catalog`], with a Postgres implementation (production) and
//! a SQLite implementation (`standalone`), each with its own migrations
//! under `migrations/<backend>/`. Both pass the same conformance suite
//! (`tests/conformance/`).
//!
//! Each operation is written once, over the seam in `engine`: the SQL both
//! engines run, the transactions and their checks (`catalog`, `jobs`,
//! `files`). `postgres` and `sqlite` keep only what truly differs: pools,
//! connecting and migrating, how values are stored, how a write
//! transaction begins and locks, and quota locks.
//!
//! Tables (see the migrations for columns):
//! - `jobs`: one row per accepted update (`update_id` unique), holding the
//!   [`IncomingFile`] as JSON so a job can be resumed from the catalog
//!   alone; `job_events` is its timeline.
//! - `blobs`: one row per stored Telegram `file_unique_id` → object key,
//!   size, SHA-256. Shared by every file row with that unique id and
//!   removed with the last live one.
//! - `files`: one row per stored message; `links`: tokens to files.
//! - `usage`: per-user bytes and files, changed only inside the
//!   transactions that add or delete files, so it is always exact.
//! - `policies`: retention and quota rules in force.
//! - `rate_admissions`: the jobs that took a slot under the per-user rate
//!   limit, with when ([`Catalog::admit`]).
//! - `notices`: when a reply that must not repeat with every message was
//!   last sent to a user ([`Catalog::claim_notice`]).
//!
//! Conventions both backends keep (checked by the conformance suite):
//! - timestamps are stored with millisecond precision; values passed in
//!   (link expiry, download times) are truncated to it, so what a call
//!   returns equals what a later read returns;
//! - a job keeps its *last* error: a change carrying an error kind (or
//!   failing the job) sets `error_kind`/`error_detail`, other changes
//!   leave them; the events hold the whole history;
//! - `files.file_unique_id` has no foreign key to `blobs`, because the
//!   blob row goes with the last live file while deleted file rows stay;
//! - a stored value a core type rejects (negative size, unknown state,
//!   bad key…) is reported as [`CatalogError::Corrupt`], and so is a
//!   `u64` too large for the database's signed 64-bit integers;
//! - a [`FileFilter`] the catalog cannot express (malformed MIME pattern,
//!   size too large) is [`CatalogError::InvalidFilter`], refused before
//!   any query; its SQL is built once, in `filter`, for both backends.

mod catalog;
mod common;
mod engine;
mod error;
mod files;
mod filter;
mod jobs;
mod postgres;
mod sqlite;

pub use error::CatalogError;
pub use postgres::PgCatalog;
pub use sqlite::SqliteCatalog;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use teledrop_core::{
    BlobRecord, ChatId, ErrorKind, FileId, FileRecord, IncomingFile, JobEvent, JobId, JobRecord, JobState, LinkRecord,
    LinkToken, MessageId, NewLink, ObjectKey, Sha256, UpdateId, Usage, UserId,
};

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

/// The outcome of recording an update.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// First time this `update_id` is seen: a new pending job.
    New(JobRecord),
    /// Seen before (redelivery, Telegram retry, restart): the existing job.
    Duplicate(JobRecord),
}

impl Accepted {
    pub fn job(&self) -> &JobRecord {
        match self {
            Self::New(j) | Self::Duplicate(j) => j,
        }
    }
    pub fn into_job(self) -> JobRecord {
        match self {
            Self::New(j) | Self::Duplicate(j) => j,
        }
    }
}

/// A state change, applied only if the job is still in `from`
/// (compare-and-set), so two workers cannot both move one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: JobState,
    pub to: JobState,
    pub error_kind: Option<ErrorKind>,
    /// Human-readable detail for the timeline (already redacted).
    pub note: String,
}

impl Transition {
    pub fn new(from: JobState, to: JobState, note: impl Into<String>) -> Self {
        Self {
            from,
            to,
            error_kind: None,
            note: note.into(),
        }
    }
    pub fn failed(from: JobState, kind: ErrorKind, note: impl Into<String>) -> Self {
        Self {
            from,
            to: JobState::Failed,
            error_kind: Some(kind),
            note: note.into(),
        }
    }
    pub fn retry(kind: ErrorKind, note: impl Into<String>) -> Self {
        Self {
            from: JobState::Running,
            to: JobState::Pending,
            error_kind: Some(kind),
            note: note.into(),
        }
    }
}

/// Bytes that now exist in object storage for a job's file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub object_key: ObjectKey,
    pub size: u64,
    pub sha256: Sha256,
}

/// What [`Catalog::commit_stored`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub job: JobRecord,
    pub file: FileRecord,
    pub link: LinkRecord,
    /// Another job stored the same `file_unique_id` first: the blob passed
    /// in was not recorded and its object should be deleted by the caller.
    pub redundant_object: Option<ObjectKey>,
}

/// Downloads counted by a link server since its last flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadHit {
    pub file_id: FileId,
    pub count: u64,
    pub last_at: DateTime<Utc>,
}

/// A retention/quota policy as stored: its spec is opaque JSON here; the
/// controller crate owns its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    /// `namespace/name` for Kubernetes objects, the file name for standalone.
    pub key: String,
    pub generation: i64,
    pub spec: serde_json::Value,
    pub updated_at: DateTime<Utc>,
    /// Files a dry-run `Reject` quota of this policy would have refused
    /// (and that were accepted), counted by [`Catalog::count_would_reject`]
    /// since the policy was first stored.
    pub would_reject: u64,
}

/// Which live (state = active) files a rule applies to. Every given
/// condition must hold; an empty list or `None` places no condition.
///
/// Time bounds are compared with the stored (millisecond) values exactly:
/// a file created at `12:00:00.001` is created before `12:00:00.001500`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileFilter {
    /// `owner IN (…)`.
    pub owners: Vec<UserId>,
    /// `chat_id IN (…)`.
    pub chats: Vec<ChatId>,
    /// MIME patterns: `"type/subtype"` (exact), `"type/*"` (any subtype),
    /// or `"*/*"` / `"*"` (any). Compared case-insensitively (ASCII). A
    /// file matches if it matches ANY pattern. Anything else (empty, no
    /// or several `/`, an empty part, `*` elsewhere than as the whole
    /// subtype or the whole pattern) is refused with
    /// [`CatalogError::InvalidFilter`].
    pub mime_patterns: Vec<String>,
    /// `size >= min_size`. Sizes above `i64::MAX` (what the databases
    /// store) are refused with [`CatalogError::InvalidFilter`].
    pub min_size: Option<u64>,
    /// `size <= max_size`.
    pub max_size: Option<u64>,
    /// `created_at < t`.
    pub created_before: Option<DateTime<Utc>>,
    /// Idle: `coalesce(last_download_at, created_at) < t`.
    pub idle_before: Option<DateTime<Utc>>,
}

/// Where a page of [`Catalog::live_files`] continues: after this
/// `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCursor {
    pub created_at: DateTime<Utc>,
    pub id: FileId,
}

impl FileCursor {
    /// The cursor just past `f` (the last file of a page).
    pub fn of(f: &FileRecord) -> Self {
        Self {
            created_at: f.created_at,
            id: f.id,
        }
    }
}

/// Count and bytes of a set of files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
}

/// What a [`Catalog::quota_lock`] holds: every quota counting `user`'s
/// files, and with `total` also the quotas counting everyone's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLockScope {
    pub user: UserId,
    pub total: bool,
}

/// Held from a quota check until the file it admitted is committed, so
/// that two files checked at once cannot both take the last room. Call
/// [`QuotaLock::release`] once the commit is done; a lock dropped without
/// it is released too (the Postgres transaction holding it rolls back when
/// its connection returns to the pool).
#[must_use = "the lock is released when dropped"]
pub struct QuotaLock(pub(crate) QuotaLockHeld);

pub(crate) enum QuotaLockHeld {
    /// A transaction holding transaction-scoped advisory locks, and the
    /// permit that bounds how many connections wait for them.
    Postgres {
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    },
    /// SQLite serves one process: a mutex of the catalog's, unlocked
    /// when the guard drops.
    Sqlite { _guard: tokio::sync::OwnedMutexGuard<()> },
}

impl QuotaLock {
    pub async fn release(self) -> Result<()> {
        match self.0 {
            QuotaLockHeld::Postgres { tx, .. } => Ok(tx.commit().await?),
            QuotaLockHeld::Sqlite { .. } => Ok(()),
        }
    }
}

impl std::fmt::Debug for QuotaLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaLock").finish_non_exhaustive()
    }
}

/// The answer of [`Catalog::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The job holds a slot (taken now, or by an earlier call for it).
    Admitted,
    /// Every slot of the window is taken; one frees up after `retry_after`.
    Limited { retry_after: Duration },
}

/// The answer of [`Catalog::claim`].
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The job moved pending → running (an attempt counted, an event
    /// appended).
    Started(Box<JobRecord>),
    /// Its owner has as many jobs running as allowed; nothing changed.
    OwnerBusy,
}

/// A reply a user is sent now and then, not for every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// What the bot stores, for a message it cannot store.
    Hint,
    /// The bot is private, with the user's id for its operator.
    NotAllowed,
}

impl Notice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hint => "hint",
            Self::NotAllowed => "not_allowed",
        }
    }
}

#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Which engine, for logs and metrics: `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;

    /// Applies this backend's migrations. Safe to run from several
    /// processes at once.
    async fn migrate(&self) -> Result<()>;

    /// A cheap round trip, for readiness probes.
    async fn ping(&self) -> Result<()>;

    // ---- jobs ------------------------------------------------------------

    /// Records an accepted update as a pending job, exactly once per
    /// message (`incoming`'s chat and message id), with a creation event.
    /// The same message again, under any `update_id`, returns the job as
    /// first recorded (its `incoming` is not replaced). A known
    /// `update_id` on another message is a new job: Telegram reuses update
    /// ids after a week without updates.
    async fn accept_job(&self, update_id: UpdateId, incoming: &IncomingFile) -> Result<Accepted>;

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>>;

    /// The newest job recorded under `update_id`, for tracing and admin:
    /// an update id may name several jobs over time, so idempotency goes
    /// through [`Catalog::job_by_message`].
    async fn job_by_update(&self, update_id: UpdateId) -> Result<Option<JobRecord>>;

    /// The job of one message, the key [`Catalog::accept_job`] records by.
    async fn job_by_message(&self, chat: ChatId, message: MessageId) -> Result<Option<JobRecord>>;

    /// The one way a job changes state (besides [`Catalog::commit_stored`],
    /// which moves running → stored with the file in the same
    /// transaction). Refuses illegal edges
    /// ([`CatalogError::IllegalTransition`]) and jobs no longer in
    /// `change.from` ([`CatalogError::StateConflict`]); entering `running`
    /// counts an attempt; every change appends a job event. `running →
    /// stored` is refused here too (`IllegalTransition`): a stored job needs
    /// its file, so only `commit_stored` takes that edge. An unknown job is
    /// [`CatalogError::NotFound`].
    async fn transition(&self, id: JobId, change: Transition) -> Result<JobRecord>;

    /// Starts a pending job if its owner has fewer than `per_owner` jobs
    /// `running`, counted over every process sharing this database: moves
    /// it pending → running like [`Catalog::transition`] (attempt, event
    /// with `note`), or answers [`Claim::OwnerBusy`] and changes nothing.
    ///
    /// Atomic per owner: concurrent claims of one owner's jobs (from any
    /// number of pools or processes) are serialised, so they never start
    /// more than `per_owner`. A job not in `pending` is
    /// [`CatalogError::StateConflict`] (whether or not the owner is busy);
    /// an unknown job [`CatalogError::NotFound`]. Postgres takes a
    /// transaction-scoped advisory lock on the owner; SQLite serialises
    /// every write anyway.
    async fn claim(&self, id: JobId, per_owner: NonZeroU32, note: &str) -> Result<Claim>;

    /// Remembers the bot's status message for the job's final reply.
    async fn set_status_message(&self, id: JobId, message_id: MessageId) -> Result<()>;

    /// Jobs in `pending` or `running`, oldest first.
    async fn unfinished_jobs(&self, limit: u32) -> Result<Vec<JobRecord>>;

    /// Records that the user was told the outcome of a final job.
    /// Refuses a job that is not final ([`CatalogError::StateConflict`]).
    async fn mark_replied(&self, id: JobId) -> Result<()>;

    /// Final jobs whose outcome the user was not told yet (the process
    /// died between commit and reply), oldest first.
    async fn unreplied_jobs(&self, limit: u32) -> Result<Vec<JobRecord>>;

    /// The job's timeline, oldest first.
    async fn job_events(&self, id: JobId) -> Result<Vec<JobEvent>>;

    // ---- rate limit ------------------------------------------------------

    /// Takes a slot for `job` under its owner's rate limit: at most `limit`
    /// admissions in any `window`, counted over every process sharing this
    /// database. Admissions at or before `now - window` have left it.
    ///
    /// - Atomic: concurrent calls for one user (from any number of pools or
    ///   processes) are serialised, so they admit exactly as many jobs as
    ///   there are free slots.
    /// - Idempotent per job: a job admitted before (a redelivery, a retry)
    ///   is [`Admission::Admitted`] again without taking another slot, at
    ///   any later time while it is unfinished.
    /// - [`Admission::Limited`] takes nothing; its `retry_after` is when
    ///   enough admissions have left the window for a slot to be free
    ///   (always more than zero).
    ///
    /// `now` is truncated to milliseconds like every stored time; callers
    /// pass the current time (tests pass any). The admissions of this
    /// user's finished jobs that have left the window are removed in the
    /// same transaction. An unknown job is [`CatalogError::NotFound`].
    async fn admit(&self, job: JobId, limit: NonZeroU32, window: Duration, now: DateTime<Utc>) -> Result<Admission>;

    // ---- notices ---------------------------------------------------------

    /// Whether `user` is to be sent `notice` now: records `now` as its
    /// time and returns `true` unless it was recorded less than `every`
    /// before `now` (`None`: ever), in which case it returns `false` and
    /// changes nothing. Atomic: of concurrent calls (any process) that
    /// could send it, exactly one gets `true`. `now` is truncated to
    /// milliseconds like every stored time.
    async fn claim_notice(
        &self,
        user: UserId,
        notice: Notice,
        every: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    // ---- quotas ----------------------------------------------------------

    /// Waits until no other holder (in any process sharing this database)
    /// holds a lock overlapping `scope`, then holds it: a holder that
    /// checks a quota against [`Catalog::live_totals`] and commits the file
    /// before [`QuotaLock::release`] sees every file committed under an
    /// earlier lock, and none is committed under it meanwhile.
    ///
    /// Locks of different users overlap only when both take `total`. The
    /// user is locked before the total, always in that order, so holders
    /// cannot deadlock. Postgres uses advisory locks; SQLite, which serves
    /// one process, a mutex of the catalog's.
    async fn quota_lock(&self, scope: QuotaLockScope) -> Result<QuotaLock>;

    // ---- files -----------------------------------------------------------

    /// The blob already stored for a Telegram `file_unique_id`.
    async fn blob(&self, file_unique_id: &str) -> Result<Option<BlobRecord>>;

    /// In one transaction: records the blob (or reuses the one already
    /// recorded for the job's `file_unique_id`), inserts the file row and
    /// the link, adds to the owner's usage, and moves the job running →
    /// stored with an event. The file row takes its size, digest and key
    /// from the blob as recorded. A job not in `running` (or unknown) is
    /// refused and nothing is written.
    async fn commit_stored(&self, job: JobId, blob: StoredBlob, link: NewLink) -> Result<Committed>;

    /// Removes the blob row of `file_unique_id` if it still names
    /// `object_key`: for a blob whose object was found missing, so the
    /// next upload of the same file records a fresh one. Returns whether a
    /// row was removed.
    async fn forget_blob(&self, file_unique_id: &str, object_key: &ObjectKey) -> Result<bool>;

    async fn file(&self, id: FileId) -> Result<Option<FileRecord>>;

    async fn links_of(&self, file: FileId) -> Result<Vec<LinkRecord>>;

    /// The link and its file, whatever their state; the caller decides
    /// with [`LinkRecord::check`].
    async fn resolve_link(&self, token: LinkToken) -> Result<Option<(LinkRecord, FileRecord)>>;

    /// Adds download counts and moves last-download times forward (never
    /// back), in one transaction. Hits for unknown files are dropped.
    async fn record_downloads(&self, hits: &[DownloadHit]) -> Result<()>;

    /// What a user owns now; zeros for a user who never stored anything.
    async fn usage(&self, user: UserId) -> Result<Usage>;

    /// In one transaction: marks the file deleted, revokes its links,
    /// subtracts it from usage and, if no live file uses its blob any
    /// more, removes the blob row and returns its key for the caller to
    /// delete. Deleting a deleted file changes nothing and returns `None`;
    /// an unknown file is [`CatalogError::NotFound`].
    async fn delete_file(&self, id: FileId) -> Result<Option<ObjectKey>>;

    // ---- retention -------------------------------------------------------

    /// Live files matching `filter`, oldest first (`created_at`, then
    /// `id`), at most `limit`, strictly after `after` in that order when
    /// given. Pass [`FileCursor::of`] the last file of a page to get the
    /// next one; files deleted meanwhile are simply not returned.
    async fn live_files(&self, filter: &FileFilter, after: Option<FileCursor>, limit: u32) -> Result<Vec<FileRecord>>;

    /// Count and total size of the live files matching `filter`.
    async fn live_totals(&self, filter: &FileFilter) -> Result<Totals>;

    /// The same per owner, ordered by owner id; owners with no matching
    /// file are absent.
    async fn live_totals_by_owner(&self, filter: &FileFilter) -> Result<Vec<(UserId, Totals)>>;

    /// Of `keys`, those a blob row names (objects the catalog still
    /// needs). Takes any number of keys. A key not named now may be named
    /// by a commit still in flight: a caller deleting unnamed objects
    /// should spare recent ones.
    async fn referenced_objects(&self, keys: &[ObjectKey]) -> Result<HashSet<ObjectKey>>;

    // ---- policies --------------------------------------------------------

    /// Inserts or replaces the policy stored under `key`.
    async fn upsert_policy(&self, key: &str, generation: i64, spec: &serde_json::Value) -> Result<()>;

    /// Whether a policy was stored under `key`.
    async fn delete_policy(&self, key: &str) -> Result<bool>;

    /// Every policy, ordered by key (byte order).
    async fn policies(&self) -> Result<Vec<PolicyRow>>;

    /// Adds one to the `would_reject` count of the policy stored under
    /// `key` (replacing its spec keeps the count; deleting it drops it).
    /// Returns whether such a policy was stored.
    async fn count_would_reject(&self, key: &str) -> Result<bool>;
}

/// How a Postgres catalog's connection pool is sized.
///
/// Every replica of every role holds its own pool, and Postgres refuses
/// connections past its `max_connections` (100 by default): the sum over a
/// deployment's replicas must stay under it, so each role keeps a small
/// pool. A call that finds no connection free within `acquire_timeout`
/// fails with [`CatalogError::PoolTimedOut`] instead of waiting on, so the
/// caller can answer "try again later" while the pool is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections the pool opens at most (at least 1; 2 or more when a
    /// `Reject` quota is in force, see [`Catalog::quota_lock`]).
    pub max_connections: u32,
    /// How long a call waits for a free connection (this includes opening
    /// a new one).
    pub acquire_timeout: Duration,
}

impl PoolConfig {
    /// Long enough to ride out a burst of short queries, short enough that
    /// a link request or a delivery is answered well before a client or the
    /// bus gives up on it.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

    pub fn new(max_connections: u32) -> Self {
        Self {
            max_connections,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl Default for PoolConfig {
    /// One process with every role (`standalone` on Postgres).
    fn default() -> Self {
        Self::new(16)
    }
}

/// Opens the catalog a URL names: `postgres://…` / `postgresql://…` or
/// `sqlite://path` (created when missing; `sqlite::memory:` for tests).
pub async fn connect(url: &str) -> Result<Arc<dyn Catalog>> {
    connect_with(url, PoolConfig::default()).await
}

/// [`connect`] with a Postgres pool sized by `pool`. SQLite, which
/// serialises writers in one process anyway, keeps its own small pool.
pub async fn connect_with(url: &str, pool: PoolConfig) -> Result<Arc<dyn Catalog>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgCatalog::connect_with(url, pool).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteCatalog::connect(url).await?))
    } else {
        Err(CatalogError::UnsupportedUrl)
    }
}
