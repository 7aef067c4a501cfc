//! The embedded catalog on SQLite (`standalone`).
//!
//! The database runs in WAL mode: readers never wait for the writer. Every
//! transaction that reads and then writes starts with `BEGIN IMMEDIATE`,
//! which takes the write lock up front (waiting up to the busy timeout),
//! so two writers never both hold a read snapshot and then deadlock on the
//! upgrade (`SQLITE_BUSY` that no timeout resolves). Write transactions
//! are therefore serialized, which also gives `commit_stored`,
//! `delete_file` and `admit` their atomic check-then-act without row locks.
//!
//! Values: ids TEXT (lowercase hyphenated), timestamps INTEGER unix
//! milliseconds, JSON TEXT.

use crate::common::{self, Cols, blob_cols, event_cols, file_cols, job_cols, link_cols, link_file_cols, policy_cols};
use crate::{
    Accepted, Admission, Catalog, CatalogError, Claim, Committed, DownloadHit, FileCursor, FileFilter, Notice,
    PolicyRow, QuotaLock, QuotaLockHeld, QuotaLockScope, Result, StoredBlob, Totals, Transition,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, Transaction};
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use teledrop_core::file::FileState;
use teledrop_core::{
    BlobRecord, ChatId, ErrorKind, FileId, FileRecord, IncomingFile, JobEvent, JobId, JobRecord, JobState, LinkRecord,
    LinkToken, MessageId, NewLink, ObjectKey, UpdateId, Usage, UserId,
};
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const MAX_CONNECTIONS: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteCatalog {
    pool: SqlitePool,
    /// Every quota lock: one process, few files at once, so one mutex.
    quota: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCatalog").finish_non_exhaustive()
    }
}

/// How ids are spelled in SQLite.
fn id(u: Uuid) -> String {
    u.hyphenated().to_string()
}

fn ms(t: DateTime<Utc>) -> i64 {
    common::millis(t)
}

impl SqliteCatalog {
    /// Opens (creating when missing, with its parent directory) the
    /// database `url` names: `sqlite://path`, `sqlite:path`, or
    /// `sqlite::memory:` (one private database per catalog, for tests).
    pub async fn connect(url: &str) -> Result<Self> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(CatalogError::Connect)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);
        let pool_options = SqlitePoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        let pool_options = if in_memory {
            // An in-memory database lives as long as a connection to it:
            // keep exactly one, forever (a shared cache across several
            // would bring table locks that the busy timeout ignores).
            pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            let path = options.get_filename();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| CatalogError::Connect(sqlx::Error::Io(e)))?;
            }
            pool_options.max_connections(MAX_CONNECTIONS)
        };
        let options = if in_memory {
            options
        } else {
            options.journal_mode(SqliteJournalMode::Wal)
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(CatalogError::Connect)?;
        Ok(Self {
            pool,
            quota: Arc::default(),
        })
    }

    /// A transaction that holds the write lock from its first statement.
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// The job of a message: what jobs are unique by.
    async fn message_job(conn: &mut SqliteConnection, chat: ChatId, message: MessageId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE chat_id = ?1 AND message_id = ?2"
        ))
        .bind(chat.0)
        .bind(i64::from(message.0))
        .fetch_optional(conn)
        .await?;
        row.as_ref().map(common::job_from).transpose()
    }

    async fn job_state(conn: &mut SqliteConnection, job: JobId) -> Result<Option<JobState>> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?1")
            .bind(id(job.as_uuid()))
            .fetch_optional(conn)
            .await?;
        state.map(|s| common::parse(&s, "job state")).transpose()
    }

    async fn insert_event(
        conn: &mut SqliteConnection,
        job: JobId,
        at: DateTime<Utc>,
        from: Option<JobState>,
        to: JobState,
        error_kind: Option<ErrorKind>,
        note: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO job_events (job_id, at, from_state, to_state, error_kind, note) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(id(job.as_uuid()))
        .bind(ms(at))
        .bind(from.map(JobState::as_str))
        .bind(to.as_str())
        .bind(error_kind.map(ErrorKind::as_str))
        .bind(note)
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl Cols for SqliteRow {
    fn uuid(&self, col: &str) -> Result<Uuid> {
        let s: String = self.try_get(col)?;
        common::parse_uuid(&s, col)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        let s: Option<String> = self.try_get(col)?;
        s.map(|s| common::parse_uuid(&s, col)).transpose()
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>> {
        common::from_millis(self.try_get(col)?, col)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> = self.try_get(col)?;
        v.map(|v| common::from_millis(v, col)).transpose()
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
        let s: String = self.try_get(col)?;
        common::json_text(&s, col)
    }
}

fn to_json(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(v).map_err(|e| common::corrupt(format!("encoding JSON: {e}")))
}

impl common::SqlOut for QueryBuilder<Sqlite> {
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
        self.push_bind(ms(t));
    }
    fn uuid(&mut self, u: Uuid) {
        self.push_bind(id(u));
    }
}

#[async_trait]
impl Catalog for SqliteCatalog {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx's migration lock is a no-op on SQLite. Run the whole
        // migration inside one BEGIN IMMEDIATE transaction instead: a
        // second process waits for the write lock, then sees the
        // migrations recorded and has nothing to do.
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        MIGRATOR
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(CatalogError::Migrate)?;
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn accept_job(&self, update_id: UpdateId, incoming: &IncomingFile) -> Result<Accepted> {
        let job_id = JobId::new();
        let now = common::now();
        let incoming_json = to_json(incoming)?;
        let mut tx = self.write_tx().await?;
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, update_id, user_id, chat_id, message_id, incoming, state, attempts, \
                               created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7) \
             ON CONFLICT (chat_id, message_id) DO NOTHING",
        )
        .bind(id(job_id.as_uuid()))
        .bind(update_id.0)
        .bind(incoming.user_id.0)
        .bind(incoming.chat_id.0)
        .bind(i64::from(incoming.message_id.0))
        .bind(incoming_json)
        .bind(ms(now))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            Self::insert_event(&mut tx, job_id, now, None, JobState::Pending, None, "accepted").await?;
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

    async fn job(&self, job: JobId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = ?1"))
            .bind(id(job.as_uuid()))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(common::job_from).transpose()
    }

    async fn job_by_update(&self, update_id: UpdateId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE update_id = ?1 ORDER BY created_at DESC, id DESC LIMIT 1"
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

    async fn transition(&self, job: JobId, change: Transition) -> Result<JobRecord> {
        common::check_transition(&change)?;
        let update = common::transition_update(&change);
        let now = common::now();
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = ?3, attempts = attempts + ?4, error_kind = COALESCE(?5, error_kind), \
                 error_detail = CASE WHEN ?6 THEN ?7 ELSE error_detail END, updated_at = ?8 \
             WHERE id = ?1 AND state = ?2 RETURNING ",
            job_cols!()
        ))
        .bind(id(job.as_uuid()))
        .bind(change.from.as_str())
        .bind(change.to.as_str())
        .bind(update.attempts_delta)
        .bind(update.error_kind)
        .bind(update.sets_detail)
        .bind(update.detail)
        .bind(ms(now))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return match Self::job_state(&mut tx, job).await? {
                None => Err(CatalogError::NotFound("job")),
                Some(actual) => Err(CatalogError::StateConflict {
                    expected: change.from,
                    actual,
                }),
            };
        };
        let record = common::job_from(&row)?;
        Self::insert_event(
            &mut tx,
            job,
            now,
            Some(change.from),
            change.to,
            change.error_kind,
            &change.note,
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn claim(&self, job: JobId, per_owner: NonZeroU32, note: &str) -> Result<Claim> {
        let job_id = id(job.as_uuid());
        // The write lock, held from the first statement, serialises claims.
        let mut tx = self.write_tx().await?;
        let row: Option<(i64, String)> = sqlx::query_as("SELECT user_id, state FROM jobs WHERE id = ?1")
            .bind(&job_id)
            .fetch_optional(&mut *tx)
            .await?;
        let (user, state) = row.ok_or(CatalogError::NotFound("job"))?;
        let state: JobState = common::parse(&state, "job state")?;
        if state != JobState::Pending {
            return Err(CatalogError::StateConflict {
                expected: JobState::Pending,
                actual: state,
            });
        }
        let running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE user_id = ?1 AND state = 'running'")
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
        if running >= i64::from(per_owner.get()) {
            tx.commit().await?;
            return Ok(Claim::OwnerBusy);
        }
        let now = common::now();
        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ?2 \
             WHERE id = ?1 AND state = 'pending' RETURNING ",
            job_cols!()
        ))
        .bind(&job_id)
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await?;
        let record = common::job_from(&row)?;
        Self::insert_event(
            &mut tx,
            job,
            now,
            Some(JobState::Pending),
            JobState::Running,
            None,
            note,
        )
        .await?;
        tx.commit().await?;
        Ok(Claim::Started(Box::new(record)))
    }

    async fn set_status_message(&self, job: JobId, message_id: MessageId) -> Result<()> {
        let done = sqlx::query("UPDATE jobs SET status_message_id = ?2, updated_at = ?3 WHERE id = ?1")
            .bind(id(job.as_uuid()))
            .bind(i64::from(message_id.0))
            .bind(ms(common::now()))
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
            " FROM jobs WHERE state IN ('pending', 'running') ORDER BY created_at, id LIMIT ?1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(common::job_from).collect()
    }

    async fn mark_replied(&self, job: JobId) -> Result<()> {
        let done = sqlx::query(
            "UPDATE jobs SET replied_at = COALESCE(replied_at, ?2) WHERE id = ?1 AND state IN ('stored', 'failed')",
        )
        .bind(id(job.as_uuid()))
        .bind(ms(common::now()))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return match self.job(job).await? {
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
            " FROM jobs WHERE state IN ('stored', 'failed') AND replied_at IS NULL ORDER BY created_at, id LIMIT ?1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(common::job_from).collect()
    }

    async fn forget_blob(&self, file_unique_id: &str, object_key: &ObjectKey) -> Result<bool> {
        let done = sqlx::query("DELETE FROM blobs WHERE file_unique_id = ?1 AND object_key = ?2")
            .bind(file_unique_id)
            .bind(object_key.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn job_events(&self, job: JobId) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            event_cols!(),
            " FROM job_events WHERE job_id = ?1 ORDER BY seq"
        ))
        .bind(id(job.as_uuid()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(common::event_from).collect()
    }

    async fn admit(&self, job: JobId, limit: NonZeroU32, window: Duration, now: DateTime<Utc>) -> Result<Admission> {
        let w = common::RateWindow::new(window, now);
        let job_id = id(job.as_uuid());
        let mut tx = self.write_tx().await?;
        let row: Option<(i64, bool)> = sqlx::query_as(
            "SELECT user_id, EXISTS (SELECT 1 FROM rate_admissions WHERE job_id = ?1) FROM jobs WHERE id = ?1",
        )
        .bind(&job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let (user, held) = row.ok_or(CatalogError::NotFound("job"))?;
        if held {
            tx.commit().await?;
            return Ok(Admission::Admitted);
        }
        sqlx::query(
            "DELETE FROM rate_admissions WHERE user_id = ?1 AND at <= ?2 \
             AND job_id IN (SELECT id FROM jobs WHERE state IN ('stored', 'failed'))",
        )
        .bind(user)
        .bind(ms(w.since))
        .execute(&mut *tx)
        .await?;
        let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rate_admissions WHERE user_id = ?1 AND at > ?2")
            .bind(user)
            .bind(ms(w.since))
            .fetch_one(&mut *tx)
            .await?;
        let limit = i64::from(limit.get());
        let admission = if taken < limit {
            sqlx::query("INSERT INTO rate_admissions (job_id, user_id, at) VALUES (?1, ?2, ?3)")
                .bind(&job_id)
                .bind(user)
                .bind(ms(w.now))
                .execute(&mut *tx)
                .await?;
            Admission::Admitted
        } else {
            // A slot frees when the admissions above the limit have left
            // (more than one when the limit was lowered meanwhile).
            let at: i64 = sqlx::query_scalar(
                "SELECT at FROM rate_admissions WHERE user_id = ?1 AND at > ?2 ORDER BY at LIMIT 1 OFFSET ?3",
            )
            .bind(user)
            .bind(ms(w.since))
            .bind(taken - limit)
            .fetch_one(&mut *tx)
            .await?;
            Admission::Limited {
                retry_after: w.until_leaves(common::from_millis(at, "admission time")?),
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
        let sent = sqlx::query(
            "INSERT INTO notices (user_id, kind, sent_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (user_id, kind) DO UPDATE SET sent_at = excluded.sent_at \
             WHERE ?4 IS NOT NULL AND notices.sent_at <= ?4 RETURNING 1",
        )
        .bind(user.0)
        .bind(notice.as_str())
        .bind(ms(now))
        .bind(again_after.map(ms))
        .fetch_optional(&self.pool)
        .await?;
        Ok(sent.is_some())
    }

    async fn quota_lock(&self, _scope: QuotaLockScope) -> Result<QuotaLock> {
        Ok(QuotaLock(QuotaLockHeld::Sqlite {
            _guard: Arc::clone(&self.quota).lock_owned().await,
        }))
    }

    async fn blob(&self, file_unique_id: &str) -> Result<Option<BlobRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            blob_cols!(),
            " FROM blobs WHERE file_unique_id = ?1"
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
        let expires_at = link.expires_at.map(|t| ms(common::truncate_ms(t)));
        let now = common::now();
        let mut tx = self.write_tx().await?;

        let row = sqlx::query(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = ?1"))
            .bind(id(job_id.as_uuid()))
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

        sqlx::query(
            "INSERT INTO blobs (file_unique_id, object_key, size, sha256, created_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (file_unique_id) DO NOTHING",
        )
        .bind(&incoming.file_unique_id)
        .bind(blob.object_key.as_str())
        .bind(size)
        .bind(blob.sha256.to_hex())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            blob_cols!(),
            " FROM blobs WHERE file_unique_id = ?1"
        ))
        .bind(&incoming.file_unique_id)
        .fetch_one(&mut *tx)
        .await?;
        let stored = common::blob_from(&row)?;
        let redundant_object = (stored.object_key != blob.object_key).then_some(blob.object_key);
        let stored_size = common::to_i64(stored.size, "blob size")?;

        let row = sqlx::query(concat!(
            "INSERT INTO files (id, owner, chat_id, message_id, kind, file_unique_id, name, mime_type, size, \
                                sha256, object_key, state, created_at, download_count) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'active', ?12, 0) RETURNING ",
            file_cols!()
        ))
        .bind(id(FileId::new().as_uuid()))
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
        .bind(ms(now))
        .fetch_one(&mut *tx)
        .await?;
        let file = common::file_from(&row)?;

        let row = sqlx::query(concat!(
            "INSERT INTO links (token, file_id, created_at, expires_at, max_downloads) \
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING ",
            link_cols!()
        ))
        .bind(id(link.token.as_uuid()))
        .bind(id(file.id.as_uuid()))
        .bind(ms(now))
        .bind(expires_at)
        .bind(max_downloads)
        .fetch_one(&mut *tx)
        .await?;
        let link = common::link_from(&row, "")?;

        sqlx::query(
            "INSERT INTO usage (user_id, bytes, files) VALUES (?1, ?2, 1) \
             ON CONFLICT (user_id) DO UPDATE SET bytes = bytes + excluded.bytes, files = files + 1",
        )
        .bind(file.owner.0)
        .bind(stored_size)
        .execute(&mut *tx)
        .await?;

        let row = sqlx::query(concat!(
            "UPDATE jobs SET state = 'stored', file_id = ?2, updated_at = ?3 WHERE id = ?1 RETURNING ",
            job_cols!()
        ))
        .bind(id(job_id.as_uuid()))
        .bind(id(file.id.as_uuid()))
        .bind(ms(now))
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

    async fn file(&self, file: FileId) -> Result<Option<FileRecord>> {
        let row = sqlx::query(concat!("SELECT ", file_cols!(), " FROM files WHERE id = ?1"))
            .bind(id(file.as_uuid()))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(common::file_from).transpose()
    }

    async fn links_of(&self, file: FileId) -> Result<Vec<LinkRecord>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            link_cols!(),
            " FROM links WHERE file_id = ?1 ORDER BY created_at, token"
        ))
        .bind(id(file.as_uuid()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| common::link_from(r, "")).collect()
    }

    async fn resolve_link(&self, token: LinkToken) -> Result<Option<(LinkRecord, FileRecord)>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            link_file_cols!(),
            " FROM links l JOIN files f ON f.id = l.file_id WHERE l.token = ?1"
        ))
        .bind(id(token.as_uuid()))
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
        let mut tx = self.write_tx().await?;
        for (file, count, at) in merged {
            sqlx::query(
                "UPDATE files SET download_count = download_count + ?2, \
                     last_download_at = max(coalesce(last_download_at, ?3), ?3) \
                 WHERE id = ?1",
            )
            .bind(id(file.as_uuid()))
            .bind(count)
            .bind(ms(at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage(&self, user: UserId) -> Result<Usage> {
        let row: Option<(i64, i64)> = sqlx::query_as("SELECT bytes, files FROM usage WHERE user_id = ?1")
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

    async fn delete_file(&self, file_id: FileId) -> Result<Option<ObjectKey>> {
        let now = common::now();
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(concat!("SELECT ", file_cols!(), " FROM files WHERE id = ?1"))
            .bind(id(file_id.as_uuid()))
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(CatalogError::NotFound("file"))?;
        let file = common::file_from(&row)?;
        if file.state == FileState::Deleted {
            return Ok(None);
        }

        sqlx::query("UPDATE files SET state = 'deleted', deleted_at = ?2 WHERE id = ?1")
            .bind(id(file_id.as_uuid()))
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE links SET revoked_at = ?2 WHERE file_id = ?1 AND revoked_at IS NULL")
            .bind(id(file_id.as_uuid()))
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
        let usage = sqlx::query("UPDATE usage SET bytes = bytes - ?2, files = files - 1 WHERE user_id = ?1")
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

        let still_used: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM files WHERE file_unique_id = ?1 AND state = 'active')")
                .bind(&file.file_unique_id)
                .fetch_one(&mut *tx)
                .await?;
        let mut released = None;
        if !still_used {
            let key: Option<String> =
                sqlx::query_scalar("DELETE FROM blobs WHERE file_unique_id = ?1 RETURNING object_key")
                    .bind(&file.file_unique_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            released = key.map(|k| common::parse(&k, "object key")).transpose()?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn live_files(&self, filter: &FileFilter, after: Option<FileCursor>, limit: u32) -> Result<Vec<FileRecord>> {
        let filter = common::check_filter(filter)?;
        let mut q = QueryBuilder::<Sqlite>::default();
        common::live_files_query(&mut q, &filter, after, limit);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(common::file_from).collect()
    }

    async fn live_totals(&self, filter: &FileFilter) -> Result<Totals> {
        let filter = common::check_filter(filter)?;
        let mut q = QueryBuilder::<Sqlite>::default();
        common::live_totals_query(&mut q, &filter, false);
        let row = q.build().fetch_one(&self.pool).await?;
        common::totals_from(&row)
    }

    async fn live_totals_by_owner(&self, filter: &FileFilter) -> Result<Vec<(UserId, Totals)>> {
        let filter = common::check_filter(filter)?;
        let mut q = QueryBuilder::<Sqlite>::default();
        common::live_totals_query(&mut q, &filter, true);
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(common::owner_totals_from).collect()
    }

    async fn referenced_objects(&self, keys: &[ObjectKey]) -> Result<HashSet<ObjectKey>> {
        let mut found = HashSet::new();
        for chunk in common::distinct_keys(keys).chunks(common::KEYS_PER_QUERY) {
            let mut q = QueryBuilder::<Sqlite>::default();
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
            "INSERT INTO policies (key, generation, spec, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (key) DO UPDATE SET generation = excluded.generation, spec = excluded.spec, \
                 updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(generation)
        .bind(to_json(spec)?)
        .bind(ms(common::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_policy(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM policies WHERE key = ?1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn policies(&self) -> Result<Vec<PolicyRow>> {
        let rows = sqlx::query(concat!("SELECT ", policy_cols!(), " FROM policies ORDER BY key"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(common::policy_from).collect()
    }

    async fn count_would_reject(&self, key: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE policies SET would_reject = would_reject + 1 WHERE key = ?1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
