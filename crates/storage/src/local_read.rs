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

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use teledrop_core::ObjectKey;
use tokio::io::AsyncReadExt;

use crate::{ObjectRead, StorageError};

/// Chunk size of streams read from the folder store.
const READ_CHUNK: usize = 256 * 1024;
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

/// Reads `range` of an open local file in large chunks, failing if the file
/// turns out shorter than announced.
pub(crate) fn chunked(
    mut file: std::fs::File,
    path: PathBuf,
    range: Range<u64>,
) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
    // lseek only moves the offset: no I/O to keep off the runtime.
    file.seek(SeekFrom::Start(range.start))
        .map_err(|e| local_error(&path, e))?;
    let reader = tokio::fs::File::from_std(file).take(range.end - range.start);
    let state = (reader, range.end - range.start, path);
    Ok(stream::try_unfold(state, |(mut reader, remaining, path)| async move {
        if remaining == 0 {
            return Ok(None);
        }
        let want = remaining.min(READ_CHUNK as u64) as usize;
        let mut buf = BytesMut::with_capacity(want);
        let n = reader.read_buf(&mut buf).await.map_err(|e| local_error(&path, e))?;
        if n == 0 {
            return Err(local_error(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("file ended {remaining} bytes early"),
                ),
            ));
        }
        Ok(Some((buf.freeze(), (reader, remaining - n as u64, path))))
    })
    .boxed())
}
