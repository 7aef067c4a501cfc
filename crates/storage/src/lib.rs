//! Object storage adapter on `object_store`.
//!
//! One [`Storage`] per storage URL: `file:///abs/dir` (or a plain folder
//! path), `memory://`, `s3://bucket[/prefix]`, `gs://bucket[/prefix]`,
//! `az://container[/prefix]` (see [`Storage::open`]). Uploads are streamed
//! (multipart above one part, a single atomic put below), hashed on the
//! way, and aborted on any failure so that nothing is ever half-written
//! under a live key. Uploads a killed process left unfinished can be
//! listed and aborted ([`Storage::unfinished_uploads`]).

mod azure_uploads;
mod client;
mod error;
mod local_put;
mod local_read;
mod local_uploads;
mod open;
mod target;
mod uploads;

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use sha2::Digest;
use teledrop_core::{ObjectKey, Sha256, report};

use azure_uploads::AzureUploads;
pub use error::StorageError;
use uploads::MultipartUploads;
pub use uploads::UnfinishedUpload;

/// Size of one multipart part (S3's minimum for all but the last part).
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// Parts uploaded concurrently; with the part being filled, memory held by
/// one upload stays around `(MAX_PARTS_IN_FLIGHT + 1) * PART_SIZE`.
pub const MAX_PARTS_IN_FLIGHT: usize = 4;
/// Upper bound on [`Storage::ping`].
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The key [`Storage::ping`] looks up; it need not exist.
const PING_KEY: &str = ".teledrop-ping";

/// An object store behind one storage URL. Cheap to clone (shared store).
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    kind: Arc<Kind>,
    description: Arc<str>,
}

#[derive(Debug)]
enum Kind {
    Local {
        root: PathBuf,
    },
    Memory,
    /// S3 and GCS: unfinished uploads are XML multipart uploads.
    Multipart(Arc<MultipartUploads>),
    /// Azure: unfinished uploads are blobs with uncommitted blocks only.
    Azure(Arc<AzureUploads>),
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the store itself: its Debug may show credentials.
        f.debug_struct("Storage")
            .field("url", &self.description)
            .finish_non_exhaustive()
    }
}

/// The result of a successful [`Storage::put_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub size: u64,
    pub sha256: Sha256,
}

/// What [`Storage::head`] and [`Storage::list`] tell about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key relative to the store's root (and prefix).
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub e_tag: Option<String>,
}

/// An object (or a range of it) being read.
pub struct ObjectRead {
    /// Size of the whole object.
    pub total_size: u64,
    /// The bytes actually returned (end exclusive).
    pub range: Range<u64>,
    pub last_modified: DateTime<Utc>,
    pub stream: BoxStream<'static, Result<Bytes, StorageError>>,
}

impl fmt::Debug for ObjectRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectRead")
            .field("total_size", &self.total_size)
            .field("range", &self.range)
            .field("last_modified", &self.last_modified)
            .finish_non_exhaustive()
    }
}

impl Storage {
    fn new(store: Arc<dyn ObjectStore>, kind: Kind, description: String) -> Self {
        Self {
            store,
            kind: Arc::new(kind),
            description: description.into(),
        }
    }

    /// Where the objects live, for logs: `file:///data/objects`,
    /// `s3://bucket/prefix (endpoint http://minio:9000)`, `memory://`. Never
    /// contains credentials.
    pub fn describe(&self) -> String {
        self.description.to_string()
    }

    /// Streams `source` into `key`, computing its SHA-256 on the way.
    ///
    /// Up to one part ([`PART_SIZE`]) is buffered; a smaller object is then
    /// written with one atomic put, a larger one with a multipart upload that
    /// keeps at most [`MAX_PARTS_IN_FLIGHT`] parts in flight (so memory stays
    /// at a few tens of MiB whatever the size). The object appears at `key`
    /// only once complete, replacing any previous one.
    ///
    /// If the source fails ([`StorageError::SourceFailed`]), yields more than
    /// `limit` bytes ([`StorageError::TooLarge`], also returned before
    /// reading anything when `expected_size > limit`), yields a total other
    /// than `expected_size` ([`StorageError::SizeMismatch`]), or the store
    /// fails, the upload is aborted: nothing new is at `key` and no multipart
    /// upload is left behind. Dropping the future mid-way aborts too (in a
    /// background task).
    pub async fn put_stream<S, E>(
        &self,
        key: &ObjectKey,
        source: S,
        expected_size: Option<u64>,
        limit: u64,
    ) -> Result<PutOutcome, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        if let Some(expected) = expected_size
            && expected > limit
        {
            return Err(StorageError::TooLarge { limit });
        }
        let location = location(key);
        let mut state = PutState {
            hasher: sha2::Sha256::new(),
            total: 0,
            pending: Vec::new(),
            pending_len: 0,
            upload: UploadGuard(None, self.clone(), key.clone()),
        };
        let pumped = self
            .pump(&location, std::pin::pin!(source), &mut state, expected_size, limit)
            .await;
        if let Err(err) = pumped {
            if let Some(writer) = state.upload.0.take() {
                self.abort_writer(writer, key).await;
            }
            return Err(err);
        }
        match state.upload.0.take() {
            Some(writer) => {
                // `finish` aborts the upload itself when it fails; Azure's
                // blocks need dropping on top (see `abort_writer`).
                if let Err(e) = writer.finish().await {
                    if let Kind::Azure(uploads) = &*self.kind {
                        discard_azure_blocks(uploads, key).await;
                    }
                    return Err(StorageError::Store(e));
                }
            }
            None => {
                let payload: PutPayload = state.pending.drain(..).collect();
                self.store.put(&location, payload).await.map_err(StorageError::Store)?;
            }
        }
        Ok(PutOutcome {
            size: state.total,
            sha256: Sha256::from_bytes(state.hasher.finalize().into()),
        })
    }

    /// Stores the file `source`, from its current position to its end, at
    /// `key`, with the guarantees and errors of [`Self::put_stream`].
    /// `received` counts the bytes stored so far, for progress reports.
    ///
    /// The folder store has the kernel copy the file into a staging file
    /// and hashes it there (see `local_put`): no bytes pass through our
    /// buffers, and a file on the same filesystem is stored at about the
    /// speed of `cp`. Other stores stream it like any source.
    pub async fn put_file(
        &self,
        key: &ObjectKey,
        source: std::fs::File,
        expected_size: Option<u64>,
        limit: u64,
        received: Arc<AtomicU64>,
    ) -> Result<PutOutcome, StorageError> {
        if let Kind::Local { root } = &*self.kind {
            let (root, key) = (root.clone(), key.clone());
            // Dropping this future stops the copy at its next step.
            let cancelled = CancelOnDrop(Arc::new(AtomicBool::new(false)));
            let flag = cancelled.0.clone();
            let copy = tokio::task::spawn_blocking(move || {
                local_put::put_file(&root, &key, source, expected_size, limit, &received, &flag)
            });
            return copy.await.map_err(|e| StorageError::SourceFailed(Box::new(e)))?;
        }
        let file = tokio::fs::File::from_std(source);
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).inspect_ok(move |b| {
            received.fetch_add(b.len() as u64, Ordering::Relaxed);
        });
        self.put_stream(key, stream, expected_size, limit).await
    }

    /// Aborts a multipart upload; on Azure, whose abort is a no-op in
    /// object_store, also drops the uploaded blocks.
    async fn abort_writer(&self, writer: WriteMultipart, key: &ObjectKey) {
        if let Err(abort) = writer.abort().await {
            tracing::warn!(
                storage = %self.description,
                key = %key,
                error = %report(&abort),
                "aborting a failed multipart upload failed"
            );
        }
        if let Kind::Azure(uploads) = &*self.kind {
            discard_azure_blocks(uploads, key).await;
        }
    }

    async fn pump<S, E>(
        &self,
        location: &Path,
        mut source: std::pin::Pin<&mut S>,
        state: &mut PutState,
        expected_size: Option<u64>,
        limit: u64,
    ) -> Result<(), StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::error::Error + Send + Sync + 'static,
    {
        while let Some(item) = source.next().await {
            let chunk = item.map_err(|e| StorageError::SourceFailed(Box::new(e)))?;
            if chunk.is_empty() {
                continue;
            }
            state.total += chunk.len() as u64;
            if state.total > limit {
                return Err(StorageError::TooLarge { limit });
            }
            if let Some(expected) = expected_size
                && state.total > expected
            {
                return Err(StorageError::SizeMismatch {
                    expected,
                    actual: state.total,
                });
            }
            state.hasher.update(&chunk);
            if let Some(writer) = state.upload.0.as_mut() {
                writer
                    .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                    .await
                    .map_err(StorageError::Store)?;
                writer.put(chunk);
                continue;
            }
            state.pending_len += chunk.len();
            state.pending.push(chunk);
            if state.pending_len >= PART_SIZE {
                let upload = self.store.put_multipart(location).await.map_err(StorageError::Store)?;
                let writer = state
                    .upload
                    .0
                    .insert(WriteMultipart::new_with_chunk_size(upload, PART_SIZE));
                for buffered in state.pending.drain(..) {
                    writer.put(buffered);
                }
                state.pending_len = 0;
            }
        }
        if let Some(expected) = expected_size
            && state.total != expected
        {
            return Err(StorageError::SizeMismatch {
                expected,
                actual: state.total,
            });
        }
        Ok(())
    }

    /// The object's metadata, or `None` when there is no object at `key`.
    pub async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectInfo>, StorageError> {
        match self.store.head(&location(key)).await {
            Ok(meta) => Ok(Some(info(meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(StorageError::Store(e)),
        }
    }

    /// Reads the whole object, or the bytes `range.start..range.end` of it
    /// (a range running past the end is cut at the end; see
    /// [`ObjectRead::range`]). [`StorageError::NotFound`] if there is no
    /// object; [`StorageError::InvalidRange`] if the range is empty or
    /// starts at or past the end of the object.
    pub async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<ObjectRead, StorageError> {
        if let Some(r) = &range
            && r.start >= r.end
        {
            return Err(StorageError::InvalidRange);
        }
        if let Kind::Local { root } = &*self.kind {
            return local_read::get(root, key, range).await;
        }
        let location = location(key);
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..Default::default()
        };
        let result = match self.store.get_opts(&location, options).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(StorageError::NotFound),
            Err(e) => {
                // Stores report unsatisfiable ranges in different ways: ask
                // for the size to tell them apart from other failures.
                if let Some(r) = range
                    && let Ok(Some(meta)) = self.head(key).await
                    && r.start >= meta.size
                {
                    return Err(StorageError::InvalidRange);
                }
                return Err(StorageError::Store(e));
            }
        };
        let total_size = result.meta.size;
        let last_modified = result.meta.last_modified;
        let returned = result.range.clone();
        let stream = match result.payload {
            GetResultPayload::File(file, path) => local_read::chunked(file, path, returned.clone())?,
            GetResultPayload::Stream(s) => s.map_err(StorageError::Store).boxed(),
        };
        Ok(ObjectRead {
            total_size,
            range: returned,
            last_modified,
            stream,
        })
    }

    /// Removes the object at `key`; a missing object is not an error.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self.store.delete(&location(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::Store(e)),
        }
    }

    /// Every object under `prefix` (whole `/`-separated segments: `blobs`
    /// matches `blobs/…` but not `blobsx/…`), in no particular order.
    pub fn list(&self, prefix: Option<&str>) -> BoxStream<'static, Result<ObjectInfo, StorageError>> {
        let prefix = match prefix.map(Path::parse).transpose() {
            Ok(prefix) => prefix,
            Err(e) => {
                return stream::once(async move { Err(StorageError::Store(e.into())) }).boxed();
            }
        };
        self.store
            .list(prefix.as_ref())
            .map(|item| item.map(info).map_err(StorageError::Store))
            .boxed()
    }

    /// Uploads started and neither completed nor aborted whose key starts
    /// with `prefix` (a plain string prefix: `blobs/ab/cd/0190-` matches
    /// `blobs/ab/cd/0190-x`), in no particular order: S3's in-progress
    /// multipart uploads, the local store's staging files. The in-memory
    /// store has none that outlive their process, so it lists none.
    pub fn unfinished_uploads(&self, prefix: &str) -> BoxStream<'static, Result<UnfinishedUpload, StorageError>> {
        match &*self.kind {
            Kind::Memory => stream::empty().boxed(),
            Kind::Multipart(uploads) => uploads.clone().list(prefix),
            Kind::Azure(uploads) => uploads.clone().list(prefix),
            Kind::Local { root } => {
                let (root, prefix) = (root.clone(), prefix.to_owned());
                stream::once(async move {
                    let found = tokio::task::spawn_blocking(move || {
                        local_uploads::local_staging_files(&root, &prefix)
                            .map_err(|e| local_read::local_error(&root, e))
                    })
                    .await
                    .map_err(|e| StorageError::Store(e.into()))??;
                    Ok::<_, StorageError>(stream::iter(found.into_iter().map(Ok)))
                })
                .try_flatten()
                .boxed()
            }
        }
    }

    /// Aborts an upload found by [`Storage::unfinished_uploads`], freeing
    /// what it stored; one that is gone already is not an error.
    pub async fn abort_upload(&self, upload: &UnfinishedUpload) -> Result<(), StorageError> {
        match &*self.kind {
            Kind::Memory => Ok(()),
            Kind::Multipart(uploads) => uploads.abort(upload).await,
            Kind::Azure(uploads) => uploads.abort(upload).await,
            Kind::Local { root } => {
                let (root, upload) = (root.clone(), upload.clone());
                tokio::task::spawn_blocking(move || {
                    local_uploads::remove_local_staging_file(&root, &upload)
                        .map_err(|e| local_read::local_error(&root, e))
                })
                .await
                .map_err(|e| StorageError::Store(e.into()))?
            }
        }
    }

    /// Aborts every unfinished upload under `prefix` (see
    /// [`Storage::unfinished_uploads`]) and says how many there were.
    /// Only for prefixes no live upload writes under.
    pub async fn abort_unfinished_uploads(&self, prefix: &str) -> Result<u64, StorageError> {
        let mut listing = self.unfinished_uploads(prefix);
        let mut aborted = 0;
        while let Some(upload) = listing.try_next().await? {
            self.abort_upload(&upload).await?;
            aborted += 1;
        }
        Ok(aborted)
    }

    /// A cheap reachability check (readiness probes): looks up a key that
    /// need not exist, and for the local store checks that its folder is
    /// still there. Gives up after a few seconds.
    pub async fn ping(&self) -> Result<(), StorageError> {
        match tokio::time::timeout(PING_TIMEOUT, self.ping_inner()).await {
            Ok(result) => result,
            Err(_) => Err(StorageError::Store(object_store::Error::Generic {
                store: "ping",
                source: format!("no answer within {PING_TIMEOUT:?}").into(),
            })),
        }
    }

    async fn ping_inner(&self) -> Result<(), StorageError> {
        match &*self.kind {
            Kind::Local { root } => {
                let meta = tokio::fs::metadata(root)
                    .await
                    .map_err(|e| local_read::local_error(root, e))?;
                if !meta.is_dir() {
                    return Err(local_read::local_error(
                        root,
                        std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder"),
                    ));
                }
            }
            Kind::Memory | Kind::Multipart(_) | Kind::Azure(_) => {}
        }
        match self.store.head(&Path::from(PING_KEY)).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::Store(e)),
        }
    }
}

struct PutState {
    hasher: sha2::Sha256,
    total: u64,
    /// Chunks held back until a whole part is there (or the source ends).
    pending: Vec<Bytes>,
    pending_len: usize,
    upload: UploadGuard,
}

/// Aborts a multipart upload that was neither finished nor aborted, e.g.
/// when the `put_stream` future is dropped mid-way.
struct UploadGuard(Option<WriteMultipart>, Storage, ObjectKey);

impl Drop for UploadGuard {
    fn drop(&mut self) {
        if let Some(writer) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (storage, key) = (self.1.clone(), self.2.clone());
            runtime.spawn(async move { storage.abort_writer(writer, &key).await });
        }
    }
}

/// Drops what an aborted Azure upload left (object_store's abort cannot);
/// a failure leaves blocks Azure expires within a week, so it is logged.
async fn discard_azure_blocks(uploads: &AzureUploads, key: &ObjectKey) {
    if let Err(e) = uploads.discard_relative(key.as_str()).await {
        tracing::warn!(key = %key, error = %report(&e), "dropping the blocks of an aborted Azure upload failed");
    }
}

/// Sets its flag when dropped: tells a blocking copy that nobody waits
/// for it any more.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn location(key: &ObjectKey) -> Path {
    Path::from(key.as_str())
}

fn info(meta: ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        key: meta.location.as_ref().to_owned(),
        size: meta.size,
        last_modified: meta.last_modified,
        e_tag: meta.e_tag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ping_fails_when_the_local_folder_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("objects");
        let storage = Storage::from_url(dir.to_str().unwrap()).unwrap();
        storage.ping().await.unwrap();
        std::fs::remove_dir(&dir).unwrap();
        let err = storage.ping().await.unwrap_err();
        assert!(matches!(err, StorageError::Store(_)), "{err:?}");
    }

    #[test]
    fn put_stream_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let storage = Storage::from_url("memory://").unwrap();
        let key: ObjectKey = "a/b".parse().unwrap();
        let source = stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"x"))]);
        let fut = storage.put_stream(&key, source, None, 10);
        assert_send(&fut);
    }
}
