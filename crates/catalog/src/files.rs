//! The transactions on files: committing a stored file, deleting one, and
//! counting downloads.
//!
//! Concurrency. On Postgres (READ COMMITTED) the rows a transaction reads
//! and then changes are locked first, always in the same order (job or
//! file → blob → usage), so concurrent workers, link servers and sweeps
//! neither lose updates nor deadlock:
//! - `commit_stored` locks the job ([`Engine::FOR_UPDATE`]), then upserts
//!   the blob with `ON CONFLICT DO UPDATE`, which locks the blob row (or
//!   retries the insert if a concurrent delete removed it);
//! - `delete_file` locks the file, then the blob row, and only then counts
//!   the live files that still use the blob, so a file committed
//!   concurrently for the same blob is either seen or waited for;
//! - `record_downloads` updates files in id order.
//!
//! On SQLite the same statements run under the write lock taken by
//! `BEGIN IMMEDIATE`: write transactions are serialised, which gives them
//! their atomic check-then-act without row locks.

use crate::catalog::SqlCatalog;
use crate::common::{self, PlainCols, blob_cols, file_cols, job_cols, link_cols};
use crate::engine::{Engine, Stmt};
use crate::jobs::{Event, insert_event};
use crate::{CatalogError, Committed, DownloadHit, Result, StoredBlob};
use teledrop_core::file::FileState;
use teledrop_core::{FileId, JobId, JobState, NewLink, ObjectKey};

impl<E: Engine> SqlCatalog<E> {
    pub(crate) async fn commit_stored_tx(&self, job_id: JobId, blob: StoredBlob, link: NewLink) -> Result<Committed> {
        let size = common::to_i64(blob.size, "blob size")?;
        let max_downloads = link
            .max_downloads
            .map(|m| common::to_i64(m, "max downloads"))
            .transpose()?;
        let expires_at = link.expires_at.map(common::truncate_ms);
        let now = common::now();
        let mut tx = self.write_tx().await?;

        let row = Stmt::<E>::new(concat!("SELECT ", job_cols!(), " FROM jobs WHERE id = $1"))
            .for_update()
            .uuid(job_id.as_uuid())
            .fetch_optional(&mut tx)
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

        // Insert the blob, or lock and return the one already recorded
        // (the update changes nothing but takes the row lock).
        let row = Stmt::<E>::new(concat!(
            "INSERT INTO blobs (file_unique_id, object_key, size, sha256, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (file_unique_id) DO UPDATE SET size = blobs.size RETURNING ",
            blob_cols!()
        ))
        .text(&incoming.file_unique_id)
        .text(blob.object_key.as_str())
        .int(size)
        .text(&blob.sha256.to_hex())
        .ts(now)
        .fetch_one(&mut tx)
        .await?;
        let stored = common::blob_from(&row)?;
        let redundant_object = (stored.object_key != blob.object_key).then_some(blob.object_key);
        let stored_size = common::to_i64(stored.size, "blob size")?;

        let row = Stmt::<E>::new(concat!(
            "INSERT INTO files (id, owner, chat_id, message_id, kind, file_unique_id, name, mime_type, size, \
                                sha256, object_key, state, created_at, download_count) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'active', $12, 0) RETURNING ",
            file_cols!()
        ))
        .uuid(FileId::new().as_uuid())
        .int(incoming.user_id.0)
        .int(incoming.chat_id.0)
        .int(i64::from(incoming.message_id.0))
        .text(incoming.kind.as_str())
        .text(&incoming.file_unique_id)
        .text(&incoming.file_name)
        .text(&incoming.mime_type)
        .int(stored_size)
        .text(&stored.sha256.to_hex())
        .text(stored.object_key.as_str())
        .ts(now)
        .fetch_one(&mut tx)
        .await?;
        let file = common::file_from(&row)?;

        let row = Stmt::<E>::new(concat!(
            "INSERT INTO links (token, file_id, created_at, expires_at, max_downloads) \
             VALUES ($1, $2, $3, $4, $5) RETURNING ",
            link_cols!()
        ))
        .uuid(link.token.as_uuid())
        .uuid(file.id.as_uuid())
        .ts(now)
        .opt_ts(expires_at)
        .opt_int(max_downloads)
        .fetch_one(&mut tx)
        .await?;
        let link = common::link_from(&row, "")?;

        Stmt::<E>::new(
            "INSERT INTO usage (user_id, bytes, files) VALUES ($1, $2, 1) \
             ON CONFLICT (user_id) DO UPDATE SET bytes = usage.bytes + excluded.bytes, files = usage.files + 1",
        )
        .int(file.owner.0)
        .int(stored_size)
        .execute(&mut tx)
        .await?;

        let row = Stmt::<E>::new(concat!(
            "UPDATE jobs SET state = 'stored', file_id = $2, updated_at = $3 WHERE id = $1 RETURNING ",
            job_cols!()
        ))
        .uuid(job_id.as_uuid())
        .uuid(file.id.as_uuid())
        .ts(now)
        .fetch_one(&mut tx)
        .await?;
        let job = common::job_from(&row)?;
        let note = if redundant_object.is_some() {
            "stored (blob already present)"
        } else {
            "stored"
        };
        let event = Event {
            job: job_id,
            at: now,
            from: Some(JobState::Running),
            to: JobState::Stored,
            error_kind: None,
            note,
        };
        insert_event::<E>(&mut tx, event).await?;

        tx.commit().await?;
        Ok(Committed {
            job,
            file,
            link,
            redundant_object,
        })
    }

    pub(crate) async fn record_downloads_tx(&self, hits: &[DownloadHit]) -> Result<()> {
        let merged = common::merge_hits(hits)?;
        if merged.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        for (id, count, at) in merged {
            // The later of the two times (a NULL one being earliest).
            Stmt::<E>::new(
                "UPDATE files SET download_count = download_count + $2, \
                     last_download_at = CASE WHEN last_download_at IS NULL OR last_download_at < $3 \
                                             THEN $3 ELSE last_download_at END \
                 WHERE id = $1",
            )
            .uuid(id.as_uuid())
            .int(count)
            .ts(at)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn delete_file_tx(&self, id: FileId) -> Result<Option<ObjectKey>> {
        let now = common::now();
        let mut tx = self.write_tx().await?;
        let row = Stmt::<E>::new(concat!("SELECT ", file_cols!(), " FROM files WHERE id = $1"))
            .for_update()
            .uuid(id.as_uuid())
            .fetch_optional(&mut tx)
            .await?
            .ok_or(CatalogError::NotFound("file"))?;
        let file = common::file_from(&row)?;
        if file.state == FileState::Deleted {
            return Ok(None);
        }
        // Lock the blob before counting its users (see the module docs).
        let blob_key = Stmt::<E>::new("SELECT object_key FROM blobs WHERE file_unique_id = $1")
            .for_update()
            .text(&file.file_unique_id)
            .fetch_optional(&mut tx)
            .await?
            .map(|r| r.text("object_key"))
            .transpose()?;

        Stmt::<E>::new("UPDATE files SET state = 'deleted', deleted_at = $2 WHERE id = $1")
            .uuid(id.as_uuid())
            .ts(now)
            .execute(&mut tx)
            .await?;
        Stmt::<E>::new("UPDATE links SET revoked_at = $2 WHERE file_id = $1 AND revoked_at IS NULL")
            .uuid(id.as_uuid())
            .ts(now)
            .execute(&mut tx)
            .await?;
        let usage = Stmt::<E>::new("UPDATE usage SET bytes = bytes - $2, files = files - 1 WHERE user_id = $1")
            .int(file.owner.0)
            .int(common::to_i64(file.size, "file size")?)
            .execute(&mut tx)
            .await?;
        if usage != 1 {
            return Err(common::corrupt(format!(
                "no usage row for user {} who owns a live file",
                file.owner
            )));
        }

        let mut released = None;
        if let Some(key) = blob_key {
            let still_used =
                Stmt::<E>::new("SELECT 1 AS used FROM files WHERE file_unique_id = $1 AND state = 'active' LIMIT 1")
                    .text(&file.file_unique_id)
                    .fetch_optional(&mut tx)
                    .await?
                    .is_some();
            if !still_used {
                Stmt::<E>::new("DELETE FROM blobs WHERE file_unique_id = $1")
                    .text(&file.file_unique_id)
                    .execute(&mut tx)
                    .await?;
                released = Some(common::parse(&key, "object key")?);
            }
        }
        tx.commit().await?;
        Ok(released)
    }
}
