//! Reading objects of the folder store.
//!
//! object_store's `LocalFileSystem` opens a file on tokio's blocking pool
//! and the stream then reads it there again: two handoffs to another
//! thread per download, which dominate the cost of serving a small file
//! (BENCHMARKS.md, "Small downloads"). [`get`] opens, checks and, for a
//! small range, reads the file in one blocking call; bigger ranges stream
//! in large chunks. Object keys map to paths beneath the root exactly as
//! object_store maps them: `ObjectKey` allows only `[A-Za-z0-9._-]`
//! segments, none `.` or `..`, which need no encoding.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use teledrop_core::ObjectKey;

use crate::{ObjectRead, StorageError};

/// Ranges up to this size are read whole in the call that opens the file.
const SMALL: u64 = 64 * 1024;

/// `range` of the object `key` under `root` (all of it when `None`).
pub(crate) async fn get(root: &Path, key: &ObjectKey, range: Option<Range<u64>>) -> Result<ObjectRead, StorageError> {
    let path = root.join(key.as_str());
    tokio::task::spawn_blocking(move || open(path, range))
        .await
        .map_err(|e| local_error(root, std::io::Error::other(e)))?
}

fn open(path: PathBuf, range: Option<Range<u64>>) -> Result<ObjectRead, StorageError> {
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StorageError::NotFound),
        Err(e) => return Err(local_error(&path, e)),
    };
    let meta = file.metadata().map_err(|e| local_error(&path, e))?;
    if !meta.is_file() {
        // A "directory" is a key prefix, not an object.
        return Err(StorageError::NotFound);
    }
    let size = meta.len();
    let returned = match range {
        None => 0..size,
        Some(r) if r.start >= size => return Err(StorageError::InvalidRange),
        Some(r) => r.start..r.end.min(size),
    };
    let last_modified = meta
        .modified()
        .map(DateTime::<Utc>::from)
        .map_err(|e| local_error(&path, e))?;
    let len = returned.end - returned.start;
    let stream = if len == 0 {
        stream::empty().boxed()
    } else if len <= SMALL {
        file.seek(SeekFrom::Start(returned.start))
            .map_err(|e| local_error(&path, e))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf).map_err(|e| local_error(&path, e))?;
        stream::once(std::future::ready(Ok(Bytes::from(buf)))).boxed()
    } else {
        chunked(file, path, returned.clone())?
    };
    Ok(ObjectRead {
        total_size: size,
        range: returned,
        last_modified,
        stream,
    })
}

pub(crate) fn local_error(path: &std::path::Path, e: std::io::Error) -> StorageError {
    StorageError::Store(object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {e}", path.display()).into(),
    })
}

/// Bytes all streams of the folder store read ahead of their readers,
/// together: each stream's chunk is this divided by the number of streams
/// open, within [`MIN_CHUNK`]..=[`MAX_CHUNK`]. One download reads 1 MiB at
/// a time (few hops to the blocking pool); a thousand slow ones hold
/// 32 KiB each instead of a gigabyte between them.
const READ_BUDGET: usize = 16 << 20;
const MIN_CHUNK: usize = 32 << 10;
const MAX_CHUNK: usize = 1 << 20;

/// Streams of the folder store currently open.
static OPEN_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Counts one open stream while it lives.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        OPEN_STREAMS.fetch_add(1, Ordering::Relaxed);
        OpenStream
    }

    fn chunk(&self) -> usize {
        (READ_BUDGET / OPEN_STREAMS.load(Ordering::Relaxed).max(1)).clamp(MIN_CHUNK, MAX_CHUNK)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads `range` of an open local file in chunks sized by [`READ_BUDGET`],
/// failing if the file turns out shorter than announced. Each chunk is one
/// positional read on the blocking pool straight into the buffer that is
/// sent: nothing is buffered twice or read before it is asked for.
pub(crate) fn chunked(
    file: std::fs::File,
    path: PathBuf,
    range: Range<u64>,
) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
    let state = (Arc::new(file), range, Arc::new(path), OpenStream::new());
    Ok(stream::try_unfold(state, |(file, range, path, open)| async move {
        if range.start == range.end {
            return Ok(None);
        }
        let want = ((range.end - range.start) as usize).min(open.chunk());
        let (reader, at, where_) = (file.clone(), range.start, path.clone());
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(want);
            // `take` + `read_to_end` fills the capacity without zeroing it.
            PositionedReader(&reader, at)
                .take(want as u64)
                .read_to_end(&mut buf)
                .map(|_| buf)
        })
        .await
        .map_err(|e| local_error(&where_, std::io::Error::other(e)))?;
        let buf = read.map_err(|e| local_error(&path, e))?;
        if buf.is_empty() {
            return Err(local_error(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("file ended {} bytes early", range.end - range.start),
                ),
            ));
        }
        let next = range.start + buf.len() as u64..range.end;
        Ok(Some((Bytes::from(buf), (file, next, path, open))))
    })
    .boxed())
}

/// `Read` at an offset of a shared file (`pread`), moving the offset on.
struct PositionedReader<'a>(&'a std::fs::File, u64);

impl Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.0, buf, self.1)?;
        self.1 += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[test]
    fn many_open_streams_read_small_chunks() {
        // Other tests may open streams meanwhile: they only make it smaller.
        let many: Vec<OpenStream> = (0..READ_BUDGET / MIN_CHUNK + 1).map(|_| OpenStream::new()).collect();
        assert_eq!(many[0].chunk(), MIN_CHUNK);
        assert!(many[0].chunk() * many.len() <= READ_BUDGET + MIN_CHUNK);
    }

    #[tokio::test]
    async fn a_range_streams_whole_and_a_short_file_fails() {
        let data: Vec<u8> = (0..3 * MAX_CHUNK + 5).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        std::fs::write(&path, &data).unwrap();
        let open = || std::fs::File::open(&path).unwrap();
        let range = 7..data.len() as u64 - 3;
        let chunks: Vec<Bytes> = chunked(open(), path.clone(), range.clone())
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK));
        assert_eq!(chunks.concat(), &data[7..data.len() - 3]);
        // Announced longer than the file is.
        let past = 0..data.len() as u64 + 10;
        let err = chunked(open(), path.clone(), past)
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(report_text(&err).contains("early"), "{err:?}");
    }

    fn report_text(e: &StorageError) -> String {
        teledrop_core::report(e).to_string()
    }
}
