//! Ingest and commit: one attempt at storing a job's file, top to bottom.
//!
//! Size checks, the rate limit and the quota forecast come first, so that
//! nothing is downloaded or said for a file that is refused; then the
//! status message, deduplication by `file_unique_id`, `getFile`, the
//! stream Bot API → object store with SHA-256 (the bytes flow as the
//! upload pulls them), and the commit of file + link + usage + job state
//! in one transaction under the exact quota check. Each step answers with
//! its value or a [`StepFailure`]; nothing here writes the final reply.

use crate::Pipeline;
use crate::failure::{Refusal, StepFailure};
use crate::metrics::Step;
use crate::replies;
use crate::status::StatusEditor;
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use teledrop_catalog::{Admission, StoredBlob};
use teledrop_core::{CLOUD_DOWNLOAD_LIMIT, ErrorKind, JobRecord, MessageId, NewLink, ObjectKey, report};
use teledrop_storage::StorageError;
use teledrop_telegram::{RemoteFile, TelegramError};
use tracing::{Instrument, info, warn};

/// The byte limit of one download, and whether a quota (not the bot's
/// maximum file size) set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteLimit {
    bytes: u64,
    /// The room left under the tightest `Reject` byte quota, when that is
    /// below the maximum file size.
    quota_room: Option<u64>,
}

impl ByteLimit {
    fn new(max_file_size: u64, room: Option<u64>) -> Self {
        match room {
            Some(r) if r < max_file_size => Self {
                bytes: r,
                quota_room: Some(r),
            },
            _ => Self {
                bytes: max_file_size,
                quota_room: None,
            },
        }
    }
}

/// A job whose file is stored: the committed job, and whether this
/// attempt uploaded the bytes (not a blob already stored).
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) job: JobRecord,
    pub(crate) uploaded: bool,
}

impl Pipeline {
    /// Stores the job's file and commits it; returns the stored job.
    pub(crate) async fn ingest(&self, job: &JobRecord) -> Result<Stored, StepFailure> {
        let f = &job.incoming;
        if job.attempts > 1 {
            self.abort_earlier_uploads(job).await;
        }
        // Size checks first: nothing is downloaded for a file we refuse.
        if let Some(size) = f.size
            && (size > self.config.max_file_size.bytes()
                || (!self.telegram.local_mode() && size > CLOUD_DOWNLOAD_LIMIT.bytes()))
        {
            return Err(Refusal::TooBig { size }.into());
        }
        // The rate limit and quotas next, also before anything is
        // downloaded or said: a deduplicated file counts just the same (the
        // user sent it; it adds a file row and usage).
        if let Some(limit) = self.config.rate_limit
            && let Admission::Limited { retry_after } = limit.admit(&*self.catalog, job).await?
        {
            return Err(Refusal::RateLimited { limit, retry_after }.into());
        }
        let room = self.quotas.room(f, f.size).await?;
        let mut job = job.clone();
        job.status_message_id = self.status_message(&job).await?;

        // Already stored by anyone: link at once, no download.
        if let Some(stored) = self.stored_blob(&job).await? {
            // The commit checks the quotas with the size known now.
            return self.commit(&job, stored, false).await;
        }

        // getFile and the opening of the byte stream; the bytes themselves
        // flow during the upload, which pulls them.
        let download = tracing::info_span!("download", size = tracing::field::Empty);
        let asking = StatusEditor::asking(&self.telegram, f, job.status_message_id, self.config.progress_interval);
        let asked = Instant::now();
        let remote = self
            .telegram
            .resolve(&f.telegram_file_id)
            .instrument(download.clone())
            .await;
        self.metrics.observe_step(Step::get_file, asked.elapsed());
        asking.stop().await;
        let remote = remote?;
        let expected = remote.size.or(f.size);
        if let Some(size) = expected
            && size > self.config.max_file_size.bytes()
        {
            return Err(Refusal::TooBig { size }.into());
        }
        let room = match expected {
            Some(size) => self.quotas.settle(f, size, room).await?,
            None => room,
        };
        // A quota reserves at most the room left: a stream of unknown size
        // is cut off there.
        let limit = ByteLimit::new(self.config.max_file_size.bytes(), room);
        if let Some(size) = expected {
            download.record("size", size);
        }
        let stored = self.transfer(&job, &remote, expected, limit, download).await?;
        self.commit(&job, stored, true).await
    }

    /// The job's status message ("⏳ Receiving …"), sent now unless an
    /// earlier attempt did. `None`: the user cannot be written to; the
    /// file is stored all the same and the final reply is sent anew.
    async fn status_message(&self, job: &JobRecord) -> Result<Option<MessageId>, StepFailure> {
        if let Some(m) = job.status_message_id {
            return Ok(Some(m));
        }
        let f = &job.incoming;
        match self
            .telegram
            .send_html(f.chat_id, &replies::receiving(f), Some(f.message_id))
            .await
        {
            Ok(m) => {
                self.catalog.set_status_message(job.id, m).await?;
                Ok(Some(m))
            }
            Err(e) if matches!(e.kind(), ErrorKind::BlockedByUser | ErrorKind::TelegramRejected) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The blob of the same file stored before (by anyone), if its object
    /// is still there. A blob row whose object is gone (lost bucket,
    /// manual deletion) is forgotten, so this download becomes the new one.
    async fn stored_blob(&self, job: &JobRecord) -> Result<Option<StoredBlob>, StepFailure> {
        let f = &job.incoming;
        let Some(blob) = self.catalog.blob(&f.file_unique_id).await? else {
            return Ok(None);
        };
        if self.storage.head(&blob.object_key).await?.is_some() {
            return Ok(Some(StoredBlob {
                object_key: blob.object_key,
                size: blob.size,
                sha256: blob.sha256,
            }));
        }
        warn!(job = %job.id, key = %blob.object_key, "blob row without object: downloading again");
        self.catalog.forget_blob(&f.file_unique_id, &blob.object_key).await?;
        Ok(None)
    }

    /// Streams the file from the Bot API into the object store, at most
    /// `limit` bytes, editing the status message with the progress. The
    /// download (opening the stream) runs in the `download` span; the
    /// upload, which pulls the bytes, in its own.
    async fn transfer(
        &self,
        job: &JobRecord,
        remote: &RemoteFile,
        expected: Option<u64>,
        limit: ByteLimit,
        download: tracing::Span,
    ) -> Result<StoredBlob, StepFailure> {
        let f = &job.incoming;
        let opened = Instant::now();
        let key = ObjectKey::for_job_upload(job.id);
        let received = Arc::new(AtomicU64::new(0));
        let upload = tracing::info_span!("upload", key = %key, bytes = tracing::field::Empty);
        let (put, progress, uploading) = if self.telegram.local_mode() {
            // The Bot API server's file is on our disk: the store takes the
            // file itself (the folder store copies it in the kernel).
            let source = self.telegram.open_local_file(remote).instrument(download).await?;
            let progress = self.progress(job, received.clone(), expected);
            let uploading = Instant::now();
            let put = self
                .storage
                .put_file(&key, source, expected, limit.bytes, received)
                .instrument(upload.clone())
                .await;
            (put, progress, uploading)
        } else {
            let source = self.telegram.open(remote).instrument(download).await?;
            let progress = self.progress(job, received.clone(), expected);
            let counted = source.map(move |chunk: Result<Bytes, TelegramError>| {
                if let Ok(b) = &chunk {
                    received.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                chunk
            });
            let uploading = Instant::now();
            let put = self
                .storage
                .put_stream(&key, counted, expected, limit.bytes)
                .instrument(upload.clone())
                .await;
            (put, progress, uploading)
        };
        // The upload pulls the download: the download's time is the whole
        // transfer, the upload's the part after the stream opened.
        self.metrics.observe_step(Step::upload, uploading.elapsed());
        self.metrics.observe_step(Step::download, opened.elapsed());
        if let Ok(put) = &put {
            upload.record("bytes", put.size);
        }
        // No progress edit may land after the final reply.
        progress.stop().await;
        let put = match (put, limit.quota_room) {
            (Err(StorageError::TooLarge { .. }), Some(room)) => {
                return Err(self.quotas.past_room(f, room).await.into());
            }
            (put, _) => put?,
        };
        Ok(StoredBlob {
            object_key: key,
            size: put.size,
            sha256: put.sha256,
        })
    }

    /// Edits the job's status message with the bytes `received` so far,
    /// until stopped.
    fn progress(&self, job: &JobRecord, received: Arc<AtomicU64>, expected: Option<u64>) -> StatusEditor {
        StatusEditor::receiving(
            &self.telegram,
            &job.incoming,
            job.status_message_id,
            self.config.progress_interval,
            received,
            expected,
        )
    }

    /// An earlier attempt that died mid-upload (killed, its node lost) could
    /// not abort its multipart upload, and the store keeps its parts, and
    /// bills for them, until someone does. Its keys share the job's
    /// prefix, and this attempt has not started its own upload yet. Best
    /// effort: orphan collection aborts what is left after its grace period.
    async fn abort_earlier_uploads(&self, job: &JobRecord) {
        match self
            .storage
            .abort_unfinished_uploads(&ObjectKey::job_upload_prefix(job.id))
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(job = %job.id, uploads = n, "aborted uploads an earlier attempt left behind"),
            Err(e) => warn!(job = %job.id, error = %report(&e), "could not abort an earlier attempt's uploads"),
        }
    }

    /// Commits a stored blob. `fresh` says the object was uploaded by this
    /// attempt (not a shared blob being reused).
    #[tracing::instrument(name = "commit", skip_all, fields(job = %job.id, fresh))]
    async fn commit(&self, job: &JobRecord, stored: StoredBlob, fresh: bool) -> Result<Stored, StepFailure> {
        let began = Instant::now();
        let committed = self.commit_inner(job, stored, fresh).await;
        self.metrics.observe_step(Step::commit, began.elapsed());
        committed
    }

    async fn commit_inner(&self, job: &JobRecord, stored: StoredBlob, fresh: bool) -> Result<Stored, StepFailure> {
        let uploaded = stored.object_key.clone();
        let hold = match self.quotas.lock(&job.incoming, stored.size).await {
            Ok(hold) => hold,
            Err(e) => {
                // Refused (or not checkable): this attempt's upload is
                // named by nothing.
                if fresh && let Err(d) = self.storage.delete(&uploaded).await {
                    warn!(error = %report(&d), "could not delete a refused upload; orphan collection will");
                }
                return Err(e);
            }
        };
        let committed = self.catalog.commit_stored(job.id, stored, NewLink::unlimited()).await;
        if let Some(lock) = hold.lock
            && let Err(e) = lock.release().await
        {
            // The lock went with its transaction all the same.
            warn!(error = %report(&e), "releasing the quota lock failed");
        }
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                // Delete our upload only when the catalog positively shows
                // nothing refers to it; when in doubt (the catalog is failing,
                // or the commit may have landed) orphan collection decides.
                if fresh
                    && let Ok(blob) = self.catalog.blob(&job.incoming.file_unique_id).await
                    && blob.is_none_or(|b| b.object_key != uploaded)
                {
                    let _ = self.storage.delete(&uploaded).await;
                }
                return Err(e.into());
            }
        };
        if let Some(extra) = &committed.redundant_object
            && let Err(e) = self.storage.delete(extra).await
        {
            warn!(error = %report(&e), "could not delete a redundant upload; orphan collection will");
        }
        info!(job = %job.id, file = %committed.file.id, size = committed.file.size, "file stored");
        self.quotas.count_would_reject(job, &hold.would_reject).await;
        // A blob someone else committed first makes this a deduplication.
        let uploaded = fresh && committed.redundant_object.is_none();
        self.metrics.stored(uploaded.then_some(committed.file.size));
        let mut stored = committed.job;
        // The status message may have been sent during this attempt.
        stored.status_message_id = stored.status_message_id.or(job.status_message_id);
        Ok(Stored { job: stored, uploaded })
    }
}

#[cfg(test)]
mod tests {
    use super::ByteLimit;

    #[test]
    fn the_tighter_of_max_size_and_quota_room_limits_a_download() {
        assert_eq!(
            ByteLimit::new(100, None),
            ByteLimit {
                bytes: 100,
                quota_room: None
            }
        );
        assert_eq!(
            ByteLimit::new(100, Some(40)),
            ByteLimit {
                bytes: 40,
                quota_room: Some(40)
            }
        );
        // The maximum file size binds: a file past it is too big, not over quota.
        assert_eq!(
            ByteLimit::new(100, Some(100)),
            ByteLimit {
                bytes: 100,
                quota_room: None
            }
        );
        assert_eq!(ByteLimit::new(100, Some(500)).quota_room, None);
    }
}
