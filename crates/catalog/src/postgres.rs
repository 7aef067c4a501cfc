//! The production catalog on Postgres.
//!
//! Concurrency: transactions run at READ COMMITTED. Rows that a
//! transaction reads and then changes are locked first, always in the same
//! order (job or file → blob → usage), so concurrent workers, link servers
//! and sweeps neither lose updates nor deadlock:
//! - `commit_stored` locks the job (`FOR UPDATE`), then upserts the blob
//!   with `ON CONFLICT DO UPDATE`, which locks the blob row (or retries the
//!   insert if a concurrent delete removed it);
//! - `delete_file` locks the file, then the blob row, and only then counts
//!   the live files that still use the blob, so a file committed
//!   concurrently for the same blob is either seen or waited for;
//! - `admit` takes a transaction-scoped advisory lock on the user before
//!   it counts the user's admissions and adds one, so replicas admitting
//!   files of one user at once take turns (there is no row to lock for a
//!   user who has no admission yet); `claim` does the same (in a lock
//!   space of its own) before it counts the user's running jobs.

use crate::common::{self, Cols, blob_cols, event_cols, file_cols, job_cols, link_cols, link_file_cols, policy_cols};
use crate::{
    Accepted, Admission, Catalog, CatalogError, Claim, Committed, DownloadHit, FileCursor, FileFilter, Notice,
    PolicyRow, PoolConfig, QuotaLock, QuotaLockHeld, QuotaLockScope, Result, StoredBlob, Totals, Transition,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder, Row};
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use teledrop_core::file::FileState;
use teledrop_core::{
    BlobRecord, ChatId, ErrorKind, FileId, FileRecord, IncomingFile, JobEvent, JobId, JobRecord, JobState, LinkRecord,
    LinkToken, MessageId, NewLink, ObjectKey, UpdateId, Usage, UserId,
};
use tokio::sync::Semaphore;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// First key of the rate limit's advisory locks; the second is a hash of
/// the user id. The two-key form never meets sqlx's migration lock (a
/// one-key lock, which Postgres keeps in a separate key space).
const RATE_LOCK_SPACE: i32 = 0x7464_726c;
/// First key of the per-user locks of `claim`; second key as above.
const CLAIM_LOCK_SPACE: i32 = 0x7464_636c;
/// First keys of the quota locks: one user's files (second key a hash of
/// the user id), everyone's (second key 0).
const QUOTA_USER_LOCK_SPACE: i32 = 0x7464_7175;
const QUOTA_TOTAL_LOCK_SPACE: i32 = 0x7464_7174;
/// Quota locks held or waited for at once by one catalog: a quarter of
/// the pool, at least one. Each waiter holds a connection, and a holder
/// needs another to check and commit: the bound keeps waiters from taking
/// the whole pool (which is why a pool needs two connections or more once
/// a `Reject` quota is in force).
fn quota_lock_waiters(pool: &PoolConfig) -> usize {
    (pool.max_connections as usize / 4).max(1)
}

pub struct PgCatalog {
    pool: PgPool,
    quota_waiters: Arc<Semaphore>,
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never print it.
        f.debug_struct("PgCatalog").finish_non_exhaustive()
    }
}

impl PgCatalog {
    /// Opens a pool of [`PoolConfig::default`] on `url` and checks that the
    /// server answers.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PoolConfig::default()).await
    }

    /// Opens a pool sized by `pool` on `url` and checks that the server
    /// answers. A call that finds no connection free within
    /// `pool.acquire_timeout` fails with [`CatalogError::PoolTimedOut`].
    pub async fn connect_with(url: &str, pool: PoolConfig) -> Result<Self> {
        let quota_waiters = Arc::new(Semaphore::new(quota_lock_waiters(&pool)));
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(pool.acquire_timeout)
            .idle_timeout(IDLE_TIMEOUT)
            .connect(url)
            .await
            .map_err(CatalogError::Connect)?;
        Ok(Self { pool, quota_waiters })
    }

    /// The job of a message: what jobs are unique by.
    async fn message_job(conn: &mut PgConnection, chat: ChatId, message: MessageId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE chat_id = $1 AND message_id = $2"
        ))
        .bind(chat.0)
        .bind(i64::from(message.0))
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(common::job_from).transpose()
    }

    async fn job_state(conn: &mut PgConnection, id: JobId) -> Result<Option<JobState>> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(conn)
            .await?;
        state.map(|s| common::parse(&s, "job state")).transpose()
    }

    async fn insert_event(
        conn: &mut PgConnection,
        job: JobId,
        at: DateTime<Utc>,
        from: Option<JobState>,
        to: JobState,
        error_kind: Option<ErrorKind>,
        note: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_events (job_id, at, from_state, to_state, error_kind, note) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(job.as_uuid())
        .bind(at)
        .bind(from.map(JobState::as_str))
        .bind(to.as_str())
        .bind(error_kind.map(ErrorKind::as_str))
        .bind(note)
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl Cols for PgRow {
    fn uuid(&self, col: &str) -> Result<Uuid> {
        Ok(self.try_get(col)?)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        Ok(self.try_get(col)?)
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>> {
        Ok(self.try_get(col)?)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T> {
        let v: serde_json::Value = self.try_get(col)?;
        common::json_value(v, col)
    }
}

impl common::SqlOut for QueryBuilder<Postgres> {
    fn sql(&mut self, sql: &str) {
        self.push(sql);
    }
    fn int(&mut self, v: i64) {
        self.push_bind(v);
    }
    fn text(&mut self, v: &str) {
        self.push_bind(v.to_owned());
    }
    fn ts(&mut self, t: DateTime<Utc>) {
        self.push_bind(t);
    }
    fn uuid(&mut self, u: Uuid) {
        self.push_bind(u);
    }
}

#[async_trait]
impl Catalog for PgCatalog {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx holds a session-level advisory lock (keyed on the database
        // name) while it migrates, so concurrent callers wait and then find
        // nothing left to do. On failure it returns without unlocking:
        // close that connection rather than return it to the pool with the
        // lock still held. (`run_direct` is `run` on a connection we hold,
        // without the `Acquire` bound that trips async-trait's Send check.)
        let mut conn = self.pool.acquire().await?;
        match MIGRATOR.run_direct(None, &mut *conn, false).await {
            Ok(()) => Ok(()),
            Err(e) => {
                conn.close_on_drop();
                Err(CatalogError::Migrate(e))
            }
        }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn accept_job(&self, update_id: UpdateId, incoming: &IncomingFile) -> Result<Accepted> {
        let id = JobId::new();
        let now = common::now();
        let mut tx = self.pool.begin().await?;
        // A concurrent insert of the same message makes this wait for
        // that transaction, then do nothing: exactly one caller inserts.
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, update_id, user_id, chat_id, message_id, incoming, state, attempts, \
                               created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) \
             ON CONFLICT (chat_id, message_id) DO NOTHING",
        )
        .bind(id.as_uuid())
        .bind(update_id.0)
        .bind(incoming.user_id.0)
        .bind(incoming.chat_id.0)
        .bind(i64::from(incoming.message_id.0))
        .bind(Json(incoming))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            Self::insert_event(&mut tx, id, now, None, JobState::Pending, None, "accepted").await?;
        }
        // Inserted or already there: the row exists.
        let job = Self::message_job(&mut tx, incoming.chat_id, incoming.message_id)
            .await?
            .ok_or_else(|| common::corrupt("an accepted job has no row"))?;
        tx.commit().await?;
        Ok(if inserted {
            Accepted::New(job)
        } else {
            Accepted::Duplicate(job)
        })
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(common::job_from).transpose()
    }

    async fn job_by_update(&self, update_id: UpdateId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE update_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
        ))
        .bind(update_id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(common::job_from).transpose()
    }

    async fn job_by_message(&self, chat: ChatId, message: MessageId) -> Result<Option<JobRecord>> {
        let mut conn = self.pool.acquire().await?;
        Self::message_job(&mut conn, chat, message).await
    }

    async fn transition(&self, id: JobId, change: Transition) -> Result<JobRecord> {
        common::check_transition(&change)?;
        let update = common::transition_update(&change);
        let now = common::now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = $3, attempts = attempts + $4, error_kind = COALESCE($5, error_kind), \
                 error_detail = CASE WHEN $6 THEN $7 ELSE error_detail END, updated_at = $8 \
             WHERE id = $1 AND state = $2 RETURNING ",
            job_cols!()
        ))
        .bind(id.as_uuid())
        .bind(change.from.as_str())
        .bind(change.to.as_str())
        .bind(update.attempts_delta)
        .bind(update.error_kind)
        .bind(update.sets_detail)
        .bind(update.detail)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return match Self::job_state(&mut tx, id).await? {
                None => Err(CatalogError::NotFound("job")),
                Some(actual) => Err(CatalogError::StateConflict {
                    expected: change.from,
                    actual,
                }),
            };
        };
        let job = common::job_from(&row)?;
        Self::insert_event(
            &mut tx,
            id,
            now,
            Some(change.from),
            change.to,
            change.error_kind,
            &change.note,
        )
        .await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn claim(&self, id: JobId, per_owner: NonZeroU32, note: &str) -> Result<Claim> {
        let mut tx = self.pool.begin().await?;
        let user: i64 = sqlx::query_scalar("SELECT user_id FROM jobs WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(CatalogError::NotFound("job"))?;
        // Held until commit; the count below takes a fresh snapshot (READ
        // COMMITTED), so it sees every start the previous holder made.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashint8($2))")
            .bind(CLAIM_LOCK_SPACE)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        let state = Self::job_state(&mut tx, id)
            .await?
            .ok_or(CatalogError::NotFound("job"))?;
        if state != JobState::Pending {
            return Err(CatalogError::StateConflict {
                expected: JobState::Pending,
                actual: state,
            });
        }
        let running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE user_id = $1 AND state = 'running'")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        if running >= i64::from(per_owner.get()) {
            tx.commit().await?;
            return Ok(Claim::OwnerBusy);
        }
        let now = common::now();
        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = $2 \
             WHERE id = $1 AND state = 'pending' RETURNING ",
            job_cols!()
        ))
        .bind(id.as_uuid())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let job = common::job_from(&row)?;
        Self::insert_event(&mut tx, id, now, Some(JobState::Pending), JobState::Running, None, note).await?;
        tx.commit().await?;
        Ok(Claim::Started(Box::new(job)))
    }

    async fn set_status_message(&self, id: JobId, message_id: MessageId) -> Result<()> {
        let done = sqlx::query("UPDATE jobs SET status_message_id = $2, updated_at = $3 WHERE id = $1")
            .bind(id.as_uuid())
            .bind(i64::from(message_id.0))
            .bind(common::now())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(CatalogError::NotFound("job"));
        }
        Ok(())
    }

    async fn unfinished_jobs(&self, limit: u32) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE state IN ('pending', 'running') ORDER BY created_at, id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(common::job_from).collect()
    }

    async fn mark_replied(&self, id: JobId) -> Result<()> {
        let done = sqlx::query(
            "UPDATE jobs SET replied_at = COALESCE(replied_at, $2) WHERE id = $1 AND state IN ('stored', 'failed')",
        )
        .bind(id.as_uuid())
        .bind(common::now())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return match self.job(id).await? {
                None => Err(CatalogError::NotFound("job")),
                Some(j) => Err(CatalogError::StateConflict {
                    expected: JobState::Stored,
                    actual: j.state,
                }),
            };
        }
        Ok(())
    }

    async fn unreplied_jobs(&self, limit: u32) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE state IN ('stored', 'failed') AND replied_at IS NULL ORDER BY created_at, id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(common::job_from).collect()
    }

    async fn forget_blob(&self, file_unique_id: &str, object_key: &ObjectKey) -> Result<bool> {
        let done = sqlx::query("DELETE FROM blobs WHERE file_unique_id = $1 AND object_key = $2")
            .bind(file_unique_id)
            .bind(object_key.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn job_events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM job_events WHERE job_id = $1 ORDER BY seq"
        ))
        .bind(id.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(common::event_from).collect()
    }

    async fn admit(&self, job: JobId, limit: NonZeroU32, window: Duration, now: DateTime<Utc>) -> Result<Admission> {
        let w = common::RateWindow::new(window, now);
        let mut tx = self.pool.begin().await?;
        let user: i64 = sqlx::query_scalar("SELECT user_id FROM jobs WHERE id = $1")
            .bind(job.as_uuid())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(CatalogError::NotFound("job"))?;
        // Held until commit. Statements after it take fresh snapshots (READ
        // COMMITTED), so they see every admission the previous holder made.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashint8($2))")
            .bind(RATE_LOCK_SPACE)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        let held: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rate_admissions WHERE job_id = $1)")
            .bind(job.as_uuid())
            .fetch_one(&mut *tx)
            .await?;
        if held {
            tx.commit().await?;
            return Ok(Admission::Admitted);
        }
        sqlx::query(
            "DELETE FROM rate_admissions WHERE user_id = $1 AND at <= $2 \
             AND job_id IN (SELECT id FROM jobs WHERE state IN ('stored', 'failed'))",
        )
        .bind(user)
        .bind(w.since)
        .execute(&mut *tx)
        .await?;
        let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_admissions WHERE user_id = $1 AND at > $2")
            .bind(user)
            .bind(w.since)
            .fetch_one(&mut *tx)
            .await?;
        let limit = i64::from(limit.get());
        let admission = if taken < limit {
            sqlx::query("INSERT INTO rate_admissions (job_id, user_id, at) VALUES ($1, $2, $3)")
                .bind(job.as_uuid())
                .bind(user)
                .bind(w.now)
                .execute(&mut *tx)
                .await?;
            Admission::Admitted
        } else {
            // A slot frees when the admissions above the limit have left
            // (more than one when the limit was lowered meanwhile).
            let at: DateTime<Utc> = sqlx::query_scalar(
                "SELECT at FROM rate_admissions WHERE user_id = $1 AND at > $2 ORDER BY at LIMIT 1 OFFSET $3",
            )
            .bind(user)
            .bind(w.since)
            .bind(taken - limit)
            .fetch_one(&mut *tx)
            .await?;
            Admission::Limited {
                retry_after: w.until_leaves(at),
            }
        };
        tx.commit().await?;
        Ok(admission)
    }

    async fn claim_notice(
        &self,
        user: UserId,
        notice: Notice,
        every: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (now, again_after) = common::notice_times(every, now);
        // One statement: the insert, or the update of a row old enough,
        // happens for exactly one of concurrent callers.
        let sent = sqlx::query(
            "INSERT INTO notices (user_id, kind, sent_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, kind) DO UPDATE SET sent_at = EXCLUDED.sent_at \
             WHERE $4::timestamptz IS NOT NULL AND notices.sent_at <= $4 RETURNING 1",
        )
        .bind(user.0)
        .bind(notice.as_str())
        .bind(now)
        .bind(again_after)
        .fetch_optional(&self.pool)
        .await?;
        Ok(sent.is_some())
    }

    async fn quota_lock(&self, scope: QuotaLockScope) -> Result<QuotaLock> {
        let permit = Arc::clone(&self.quota_waiters)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashint8($2))")
            .bind(QUOTA_USER_LOCK_SPACE)
            .bind(scope.user.0)
            .execute(&mut *tx)
            .await?;
        if scope.total {
            sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
                .bind(QUOTA_TOTAL_LOCK_SPACE)
                .execute(&mut *tx)
                .await?;
        }
        Ok(QuotaLock(QuotaLockHeld::Postgres { tx, _permit: permit }))
    }

    async fn blob(&self, file_unique_id: &str) -> Result<Option<BlobRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            blob_cols!(),
            " FROM blobs WHERE file_unique_id = $1"
        ))
        .bind(file_unique_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(common::blob_from).transpose()
    }

    async fn commit_stored(&self, job_id: JobId, blob: StoredBlob, link: NewLink) -> Result<Committed> {
        let size = common::to_i64(blob.size, "blob size")?;
        let max_downloads = link
            .max_downloads
            .map(|m| common::to_i64(m, "max downloads"))
            .transpose()?;
        let expires_at = link.expires_at.map(common::truncate_ms);
        let now = common::now();
        let mut tx = self.pool.begin().await?;

        let row = sqlx::query(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1 FOR UPDATE"))
            .bind(job_id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(CatalogError::NotFound("job"))?;
        let job = common::job_from(&row)?;
        if job.state != JobState::Running {
            return Err(CatalogError::StateConflict {
                expected: JobState::Running,
                actual: job.state,
            });
        }
        let incoming = &job.incoming;

        // Insert the blob, or lock and return the one already recorded.
        let row = sqlx::query(concat!(
            "INSERT INTO blobs (file_unique_id, object_key, size, sha256, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (file_unique_id) DO UPDATE SET size = blobs.size RETURNING ",
            blob_cols!()
        ))
        .bind(&incoming.file_unique_id)
        .bind(blob.object_key.as_str())
        .bind(size)
        .bind(blob.sha256.to_hex())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let stored = common::blob_from(&row)?;
        let redundant_object = (stored.object_key != blob.object_key).then_some(blob.object_key);
        let stored_size = common::to_i64(stored.size, "blob size")?;

        let row = sqlx::query(concat!(
            "INSERT INTO files (id, owner, chat_id, message_id, kind, file_unique_id, name, mime_type, size, \
                                sha256, object_key, state, created_at, download_count) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active', $12, 0) RETURNING ",
            file_cols!()
        ))
        .bind(FileId::new().as_uuid())
        .bind(incoming.user_id.0)
        .bind(incoming.chat_id.0)
        .bind(i64::from(incoming.message_id.0))
        .bind(incoming.kind.as_str())
        .bind(&incoming.file_unique_id)
        .bind(&incoming.file_name)
        .bind(&incoming.mime_type)
        .bind(stored_size)
        .bind(stored.sha256.to_hex())
        .bind(stored.object_key.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let file = common::file_from(&row)?;

        let row = sqlx::query(concat!(
            "INSERT INTO links (token, file_id, created_at, expires_at, max_downloads) \
             VALUES ($1, $2, $3, $4, $5) RETURNING ",
            link_cols!()
        ))
        .bind(link.token.as_uuid())
        .bind(file.id.as_uuid())
        .bind(now)
        .bind(expires_at)
        .bind(max_downloads)
        .fetch_one(&mut *tx)
        .await?;
        let link = common::link_from(&row, "")?;

        sqlx::query(
            "INSERT INTO usage (user_id, bytes, files) VALUES ($1, $2, 1) \
             ON CONFLICT (user_id) DO UPDATE SET bytes = usage.bytes + EXCLUDED.bytes, files = usage.files + 1",
        )
        .bind(file.owner.0)
        .bind(stored_size)
        .execute(&mut *tx)
        .await?;

        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = 'stored', file_id = $2, updated_at = $3 WHERE id = $1 RETURNING ",
            job_cols!()
        ))
        .bind(job_id.as_uuid())
        .bind(file.id.as_uuid())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let job = common::job_from(&row)?;
        let note = if redundant_object.is_some() {
            "stored (blob already present)"
        } else {
            "stored"
        };
        Self::insert_event(
            &mut tx,
            job_id,
            now,
            Some(JobState::Running),
            JobState::Stored,
            None,
            note,
        )
        .await?;

        tx.commit().await?;
        Ok(Committed {
            job,
            file,
            link,
            redundant_object,
        })
    }

    async fn file(&self, id: FileId) -> Result<Option<FileRecord>> {
        let row = sqlx::query(concat!("SELECT ", file_cols!(), " FROM files WHERE id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(common::file_from).transpose()
    }

    async fn links_of(&self, file: FileId) -> Result<Vec<LinkRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            link_cols!(),
            " FROM links WHERE file_id = $1 ORDER BY created_at, token"
        ))
        .bind(file.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| common::link_from(r, "")).collect()
    }

    async fn resolve_link(&self, token: LinkToken) -> Result<Option<(LinkRecord, FileRecord)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            link_file_cols!(),
            " FROM links l JOIN files f ON f.id = l.file_id WHERE l.token = $1"
        ))
        .bind(token.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((common::link_from(&r, "l_")?, common::file_from(&r)?)))
            .transpose()
    }

    async fn record_downloads(&self, hits: &[DownloadHit]) -> Result<()> {
        let merged = common::merge_hits(hits)?;
        if merged.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for (id, count, at) in merged {
            sqlx::query(
                "UPDATE files SET download_count = download_count + $2, \
                     last_download_at = GREATEST(last_download_at, $3) \
                 WHERE id = $1",
            )
            .bind(id.as_uuid())
            .bind(count)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage(&self, user: UserId) -> Result<Usage> {
        let row: Option<(i64, i64)> = sqlx::query_as("SELECT bytes, files FROM usage WHERE user_id = $1")
            .bind(user.0)
            .fetch_optional(&self.pool)
            .await?;
        let (bytes, files) = row.unwrap_or((0, 0));
        Ok(Usage {
            user_id: user,
            bytes: common::to_u64(bytes, "usage bytes")?,
            files: common::to_u64(files, "usage files")?,
        })
    }

    async fn delete_file(&self, id: FileId) -> Result<Option<ObjectKey>> {
        let now = common::now();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(concat!("SELECT ", file_cols!(), " FROM files WHERE id = $1 FOR UPDATE"))
            .bind(id.as_uuid())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(CatalogError::NotFound("file"))?;
        let file = common::file_from(&row)?;
        if file.state == FileState::Deleted {
            return Ok(None);
        }
        // Lock the blob before counting its users (see the module docs).
        let blob_key: Option<String> =
            sqlx::query_scalar("SELECT object_key FROM blobs WHERE file_unique_id = $1 FOR UPDATE")
                .bind(&file.file_unique_id)
                .fetch_optional(&mut *tx)
                .await?;

        sqlx::query("UPDATE files SET state = 'deleted', deleted_at = $2 WHERE id = $1")
            .bind(id.as_uuid())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE links SET revoked_at = $2 WHERE file_id = $1 AND revoked_at IS NULL")
            .bind(id.as_uuid())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let usage = sqlx::query("UPDATE usage SET bytes = bytes - $2, files = files - 1 WHERE user_id = $1")
            .bind(file.owner.0)
            .bind(common::to_i64(file.size, "file size")?)
            .execute(&mut *tx)
            .await?;
        if usage.rows_affected() != 1 {
            return Err(common::corrupt(format!(
                "no usage row for user {} who owns a live file",
                file.owner
            )));
        }

        let mut released = None;
        if let Some(key) = blob_key {
            let still_used: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM files WHERE file_unique_id = $1 AND state = 'active')",
            )
            .bind(&file.file_unique_id)
            .fetch_one(&mut *tx)
            .await?;
            if !still_used {
                sqlx::query("DELETE FROM blobs WHERE file_unique_id = $1")
                    .bind(&file.file_unique_id)
                    .execute(&mut *tx)
                    .await?;
                released = Some(common::parse(&key, "object key")?);
            }
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn live_files(&self, filter: &FileFilter, after: Option<FileCursor>, limit: u32) -> Result<Vec<FileRecord>> {
        let filter = common::check_filter(filter)?;
        let mut q = QueryBuilder::<Postgres>::default();
        common::live_files_query(&mut q, &filter, after, limit);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(common::file_from).collect()
    }

    async fn live_totals(&self, filter: &FileFilter) -> Result<Totals> {
        let filter = common::check_filter(filter)?;
        let mut q = QueryBuilder::<Postgres>::default();
        common::live_totals_query(&mut q, &filter, false);
        let row = q.build().fetch_one(&self.pool).await?;
        common::totals_from(&row)
    }

    async fn live_totals_by_owner(&self, filter: &FileFilter) -> Result<Vec<(UserId, Totals)>> {
        let filter = common::check_filter(filter)?;
        let mut q = QueryBuilder::<Postgres>::default();
        common::live_totals_query(&mut q, &filter, true);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(common::owner_totals_from).collect()
    }

    async fn referenced_objects(&self, keys: &[ObjectKey]) -> Result<HashSet<ObjectKey>> {
        let mut found = HashSet::new();
        for chunk in common::distinct_keys(keys).chunks(common::KEYS_PER_QUERY) {
            let mut q = QueryBuilder::<Postgres>::default();
            common::referenced_query(&mut q, chunk);
            let named: Vec<String> = q.build_query_scalar().fetch_all(&self.pool).await?;
            for key in named {
                found.insert(common::parse(&key, "object key")?);
            }
        }
        Ok(found)
    }

    async fn upsert_policy(&self, key: &str, generation: i64, spec: &serde_json::Value) -> Result<()> {
        sqlx::query(
            "INSERT INTO policies (key, generation, spec, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET generation = EXCLUDED.generation, spec = EXCLUDED.spec, \
                 updated_at = EXCLUDED.updated_at",
        )
        .bind(key)
        .bind(generation)
        .bind(Json(spec))
        .bind(common::now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_policy(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM policies WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn policies(&self) -> Result<Vec<PolicyRow>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            policy_cols!(),
            " FROM policies ORDER BY key COLLATE \"C\""
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(common::policy_from).collect()
    }

    async fn count_would_reject(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE policies SET would_reject = would_reject + 1 WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
