//! [`SqlCatalog`]: the [`Catalog`] on any [`Engine`], each operation
//! written once.
//!
//! The operations of one statement are here; the transactions that read
//! and then write are in `jobs` and `files`, with how each engine keeps
//! them correct under concurrency.

use crate::common::{
    self, PlainCols, blob_cols, event_cols, file_cols, job_cols, link_cols, link_file_cols, policy_cols,
};
use crate::engine::{DbRow, Engine, Stmt, Tx};
use crate::filter;
use crate::{
    Accepted, Admission, Catalog, CatalogError, Claim, Committed, DownloadHit, FileCursor, FileFilter, Notice,
    PolicyRow, QuotaLock, QuotaLockScope, Result, StoredBlob, Totals, Transition,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::Duration;
use teledrop_core::{
    BlobRecord, ChatId, FileId, FileRecord, IncomingFile, JobEvent, JobId, JobRecord, JobState, LinkRecord, LinkToken,
    MessageId, NewLink, ObjectKey, UpdateId, Usage, UserId,
};

/// The catalog on engine `E`: [`crate::PgCatalog`] or
/// [`crate::SqliteCatalog`].
pub struct SqlCatalog<E> {
    engine: E,
}

impl<E: Engine> std::fmt::Debug for SqlCatalog<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A Postgres URL may hold a password: print nothing of the pool.
        f.debug_struct(E::CATALOG).finish_non_exhaustive()
    }
}

impl<E: Engine> SqlCatalog<E> {
    pub(crate) fn new(engine: E) -> Self {
        Self { engine }
    }

    pub(crate) async fn conn(&self) -> Result<PoolConnection<E::Db>> {
        Ok(self.engine.pool().acquire().await?)
    }

    /// A transaction that reads and then writes ([`Engine::BEGIN_WRITE`]).
    pub(crate) async fn write_tx(&self) -> Result<Tx<E>> {
        Ok(self.engine.pool().begin_with(E::BEGIN_WRITE).await?)
    }

    async fn execute(&self, s: Stmt<E>) -> Result<u64> {
        let mut conn = self.conn().await?;
        s.execute(&mut conn).await
    }

    async fn fetch_optional(&self, s: Stmt<E>) -> Result<Option<DbRow<E>>> {
        let mut conn = self.conn().await?;
        s.fetch_optional(&mut conn).await
    }

    async fn fetch_all(&self, s: Stmt<E>) -> Result<Vec<DbRow<E>>> {
        let mut conn = self.conn().await?;
        s.fetch_all(&mut conn).await
    }

    async fn jobs_where(&self, sql: &'static str, limit: u32) -> Result<Vec<JobRecord>> {
        let rows = self.fetch_all(Stmt::new(sql).int(i64::from(limit))).await?;
        rows.iter().map(common::job_from).collect()
    }
}

#[async_trait]
impl<E: Engine> Catalog for SqlCatalog<E> {
    fn backend(&self) -> &'static str {
        E::NAME
    }

    async fn migrate(&self) -> Result<()> {
        self.engine.migrate().await
    }

    async fn ping(&self) -> Result<()> {
        self.execute(Stmt::new("SELECT 1")).await?;
        Ok(())
    }

    async fn accept_job(&self, update_id: UpdateId, incoming: &IncomingFile) -> Result<Accepted> {
        self.accept_job_tx(update_id, incoming).await
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>> {
        let row = self
            .fetch_optional(Stmt::new(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1")).uuid(id.as_uuid()))
            .await?;
        row.as_ref().map(common::job_from).transpose()
    }

    async fn job_by_update(&self, update_id: UpdateId) -> Result<Option<JobRecord>> {
        let stmt = Stmt::new(concat!(
            "SELECT ",
            job_cols!(),
            " FROM jobs WHERE update_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1"
        ));
        let row = self.fetch_optional(stmt.int(update_id.0)).await?;
        row.as_ref().map(common::job_from).transpose()
    }

    async fn job_by_message(&self, chat: ChatId, message: MessageId) -> Result<Option<JobRecord>> {
        let mut conn = self.conn().await?;
        crate::jobs::message_job::<E>(&mut conn, chat, message).await
    }

    async fn transition(&self, id: JobId, change: Transition) -> Result<JobRecord> {
        self.transition_tx(id, change).await
    }

    async fn claim(&self, id: JobId, per_owner: NonZeroU32, note: &str) -> Result<Claim> {
        self.claim_tx(id, per_owner, note).await
    }

    async fn set_status_message(&self, id: JobId, message_id: MessageId) -> Result<()> {
        let stmt = Stmt::new("UPDATE jobs SET status_message_id = $2, updated_at = $3 WHERE id = $1")
            .uuid(id.as_uuid())
            .int(i64::from(message_id.0))
            .ts(common::now());
        if self.execute(stmt).await? == 0 {
            return Err(CatalogError::NotFound("job"));
        }
        Ok(())
    }

    async fn unfinished_jobs(&self, limit: u32) -> Result<Vec<JobRecord>> {
        self.jobs_where(
            concat!(
                "SELECT ",
                job_cols!(),
                " FROM jobs WHERE state IN ('pending', 'running') ORDER BY created_at, id LIMIT $1"
            ),
            limit,
        )
        .await
    }

    async fn mark_replied(&self, id: JobId) -> Result<()> {
        let stmt = Stmt::new(
            "UPDATE jobs SET replied_at = COALESCE(replied_at, $2) WHERE id = $1 AND state IN ('stored', 'failed')",
        )
        .uuid(id.as_uuid())
        .ts(common::now());
        if self.execute(stmt).await? == 0 {
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
        self.jobs_where(
            concat!(
                "SELECT ",
                job_cols!(),
                " FROM jobs WHERE state IN ('stored', 'failed') AND replied_at IS NULL ORDER BY created_at, id LIMIT $1"
            ),
            limit,
        )
        .await
    }

    async fn job_events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        let stmt = Stmt::new(concat!(
            "SELECT ",
            event_cols!(),
            " FROM job_events WHERE job_id = $1 ORDER BY seq"
        ));
        let rows = self.fetch_all(stmt.uuid(id.as_uuid())).await?;
        rows.iter().map(common::event_from).collect()
    }

    async fn admit(&self, job: JobId, limit: NonZeroU32, window: Duration, now: DateTime<Utc>) -> Result<Admission> {
        self.admit_tx(job, limit, window, now).await
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
        // happens for exactly one of concurrent callers. A NULL
        // `again_after` compares as unknown: the row is never updated.
        let stmt = Stmt::new(
            "INSERT INTO notices (user_id, kind, sent_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, kind) DO UPDATE SET sent_at = excluded.sent_at \
             WHERE notices.sent_at <= $4 RETURNING 1 AS sent",
        )
        .int(user.0)
        .text(notice.as_str())
        .ts(now)
        .opt_ts(again_after);
        Ok(self.fetch_optional(stmt).await?.is_some())
    }

    async fn quota_lock(&self, scope: QuotaLockScope) -> Result<QuotaLock> {
        self.engine.quota_lock(scope).await
    }

    async fn blob(&self, file_unique_id: &str) -> Result<Option<BlobRecord>> {
        let stmt = Stmt::new(concat!(
            "SELECT ",
            blob_cols!(),
            " FROM blobs WHERE file_unique_id = $1"
        ));
        let row = self.fetch_optional(stmt.text(file_unique_id)).await?;
        row.as_ref().map(common::blob_from).transpose()
    }

    async fn commit_stored(&self, job: JobId, blob: StoredBlob, link: NewLink) -> Result<Committed> {
        self.commit_stored_tx(job, blob, link).await
    }

    async fn forget_blob(&self, file_unique_id: &str, object_key: &ObjectKey) -> Result<bool> {
        let stmt = Stmt::new("DELETE FROM blobs WHERE file_unique_id = $1 AND object_key = $2")
            .text(file_unique_id)
            .text(object_key.as_str());
        Ok(self.execute(stmt).await? > 0)
    }

    async fn file(&self, id: FileId) -> Result<Option<FileRecord>> {
        let stmt = Stmt::new(concat!("SELECT ", file_cols!(), " FROM files WHERE id = $1"));
        let row = self.fetch_optional(stmt.uuid(id.as_uuid())).await?;
        row.as_ref().map(common::file_from).transpose()
    }

    async fn links_of(&self, file: FileId) -> Result<Vec<LinkRecord>> {
        let stmt = Stmt::new(concat!(
            "SELECT ",
            link_cols!(),
            " FROM links WHERE file_id = $1 ORDER BY created_at, token"
        ));
        let rows = self.fetch_all(stmt.uuid(file.as_uuid())).await?;
        rows.iter().map(|r| common::link_from(r, "")).collect()
    }

    async fn resolve_link(&self, token: LinkToken) -> Result<Option<(LinkRecord, FileRecord)>> {
        let stmt = Stmt::new(concat!(
            "SELECT ",
            link_file_cols!(),
            " FROM links l JOIN files f ON f.id = l.file_id WHERE l.token = $1"
        ));
        let row = self.fetch_optional(stmt.uuid(token.as_uuid())).await?;
        row.map(|r| Ok((common::link_from(&r, "l_")?, common::file_from(&r)?)))
            .transpose()
    }

    async fn record_downloads(&self, hits: &[DownloadHit]) -> Result<()> {
        self.record_downloads_tx(hits).await
    }

    async fn usage(&self, user: UserId) -> Result<Usage> {
        let stmt = Stmt::new("SELECT bytes, files FROM usage WHERE user_id = $1").int(user.0);
        let (bytes, files) = match self.fetch_optional(stmt).await? {
            Some(r) => (r.int("bytes")?, r.int("files")?),
            None => (0, 0),
        };
        Ok(Usage {
            user_id: user,
            bytes: common::to_u64(bytes, "usage bytes")?,
            files: common::to_u64(files, "usage files")?,
        })
    }

    async fn delete_file(&self, id: FileId) -> Result<Option<ObjectKey>> {
        self.delete_file_tx(id).await
    }

    async fn live_files(&self, filter: &FileFilter, after: Option<FileCursor>, limit: u32) -> Result<Vec<FileRecord>> {
        let filter = filter::check_filter(filter)?;
        let mut q = Stmt::<E>::new("");
        filter::live_files_query(&mut q, &filter, after, limit);
        let rows = self.fetch_all(q).await?;
        rows.iter().map(common::file_from).collect()
    }

    async fn live_totals(&self, filter: &FileFilter) -> Result<Totals> {
        let filter = filter::check_filter(filter)?;
        let mut q = Stmt::<E>::new("");
        filter::live_totals_query(&mut q, &filter, false);
        let mut conn = self.conn().await?;
        let row = q.fetch_one(&mut conn).await?;
        filter::totals_from(&row)
    }

    async fn live_totals_by_owner(&self, filter: &FileFilter) -> Result<Vec<(UserId, Totals)>> {
        let filter = filter::check_filter(filter)?;
        let mut q = Stmt::<E>::new("");
        filter::live_totals_query(&mut q, &filter, true);
        let rows = self.fetch_all(q).await?;
        rows.iter().map(filter::owner_totals_from).collect()
    }

    async fn referenced_objects(&self, keys: &[ObjectKey]) -> Result<HashSet<ObjectKey>> {
        let mut found = HashSet::new();
        for chunk in filter::distinct_keys(keys).chunks(filter::KEYS_PER_QUERY) {
            let mut q = Stmt::<E>::new("");
            filter::referenced_query(&mut q, chunk);
            for row in self.fetch_all(q).await? {
                found.insert(common::parse(&row.text("object_key")?, "object key")?);
            }
        }
        Ok(found)
    }

    async fn upsert_policy(&self, key: &str, generation: i64, spec: &serde_json::Value) -> Result<()> {
        let stmt = Stmt::new(
            "INSERT INTO policies (key, generation, spec, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO UPDATE SET generation = excluded.generation, spec = excluded.spec, \
                 updated_at = excluded.updated_at",
        )
        .text(key)
        .int(generation)
        .json(spec)
        .ts(common::now());
        self.execute(stmt).await?;
        Ok(())
    }

    async fn delete_policy(&self, key: &str) -> Result<bool> {
        let stmt = Stmt::new("DELETE FROM policies WHERE key = $1").text(key);
        Ok(self.execute(stmt).await? > 0)
    }

    async fn policies(&self) -> Result<Vec<PolicyRow>> {
        let stmt = Stmt::new(concat!("SELECT ", policy_cols!(), " FROM policies ORDER BY key")).push(E::BYTE_ORDER);
        let rows = self.fetch_all(stmt).await?;
        rows.iter().map(common::policy_from).collect()
    }

    async fn count_would_reject(&self, key: &str) -> Result<bool> {
        let stmt = Stmt::new("UPDATE policies SET would_reject = would_reject + 1 WHERE key = $1").text(key);
        Ok(self.execute(stmt).await? > 0)
    }
}
