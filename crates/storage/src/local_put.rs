//! Storing a file that is already on disk into the folder store.
//!
//! In Bot API local mode the file to store is a file on a local disk, and
//! often on the same filesystem as the folder store. Streaming it through
//! memory (read, hash, write) costs two copies through user space and,
//! for a gigabyte, seconds of the kernel throttling our writes. Here the
//! kernel copies the file into a staging file (`copy_file_range`, which
//! std's `io::copy` uses between files, falling back to a plain copy
//! where the filesystems cannot), while a second thread hashes what has
//! landed in the staging file so far, reading it back from the page
//! cache. So the SHA-256 is of the bytes stored, not of a source that
//! might change under us, and hashing overlaps copying.
//!
//! The staging file is `<key>#<n>`, the name object_store's local store
//! gives its uploads: a process killed mid-copy leaves one that
//! [`crate::Storage::unfinished_uploads`] lists and orphan collection
//! removes. Complete, it is renamed into place, so the object appears
//! whole or not at all, as with every other store.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use sha2::Digest;
use teledrop_core::{ObjectKey, Sha256};

use crate::local_read::local_error;
use crate::{PutOutcome, StorageError};

/// Bytes the kernel copies between two hashing steps: big enough that
/// the hand-over costs nothing, small enough that hashing starts early
/// and trails the copy closely.
const STEP: u64 = 8 << 20;
/// Bytes read back per hashing read.
const HASH_READ: usize = 1 << 20;

/// Copies `source` (from its current position to its end) into `key`
/// under `root`, hashing it. Blocking: run it off the async runtime.
/// `received` counts the bytes copied so far, for progress reports; once
/// `cancelled` is set the copy stops at its next step and stores nothing.
pub(crate) fn put_file(
    root: &Path,
    key: &ObjectKey,
    source: File,
    expected_size: Option<u64>,
    limit: u64,
    received: &AtomicU64,
    cancelled: &AtomicBool,
) -> Result<PutOutcome, StorageError> {
    let dest = root.join(key.as_str());
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| local_error(parent, e))?;
    }
    let (staging, file) = create_staging(&dest)?;
    let copied = copy_and_hash(source, file, &staging, expected_size, limit, received, cancelled);
    let outcome = copied.and_then(|outcome| {
        std::fs::rename(&staging, &dest).map_err(|e| local_error(&dest, e))?;
        Ok(outcome)
    });
    if outcome.is_err() {
        // Nothing new at `key`; a removal that fails leaves a staging
        // file that orphan collection removes later.
        let _ = std::fs::remove_file(&staging);
    }
    outcome
}

/// A new `<dest>#<n>`, created exclusively.
fn create_staging(dest: &Path) -> Result<(PathBuf, File), StorageError> {
    for n in 1u32.. {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let staging = PathBuf::from(name);
        match File::options().read(true).write(true).create_new(true).open(&staging) {
            Ok(file) => return Ok((staging, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(local_error(&staging, e)),
        }
    }
    unreachable!("u32 staging suffixes exhausted")
}

fn copy_and_hash(
    mut source: File,
    mut staging: File,
    staging_path: &Path,
    expected_size: Option<u64>,
    limit: u64,
    received: &AtomicU64,
    cancelled: &AtomicBool,
) -> Result<PutOutcome, StorageError> {
    if let Some(expected) = expected_size
        && expected > limit
    {
        return Err(StorageError::TooLarge { limit });
    }
    // A file description of its own: a `try_clone` would share the write
    // offset with the copy.
    let reader = File::open(staging_path).map_err(|e| local_error(staging_path, e))?;
    // The hasher learns how far the copy has got; a closed channel means
    // the copy is over (or failed: then its hash is dropped unread).
    let (landed, copied_up_to) = mpsc::channel::<u64>();
    let path = Arc::new(staging_path.to_owned());
    let hasher = {
        let path = path.clone();
        std::thread::Builder::new()
            .name("teledrop-hash".into())
            .spawn(move || hash_behind(reader, &copied_up_to, &path))
            .map_err(|e| local_error(staging_path, e))?
    };
    let mut total = 0u64;
    let copied = loop {
        if cancelled.load(Ordering::Relaxed) {
            break Err(StorageError::SourceFailed("the upload was cancelled".into()));
        }
        // One byte past the limit tells "too large" from "exactly the limit".
        let room = limit.saturating_add(1).saturating_sub(total);
        let step = STEP.min(room);
        let n = match std::io::copy(&mut (&mut source).take(step), &mut staging) {
            Ok(n) => n,
            Err(e) => break Err(StorageError::SourceFailed(Box::new(e))),
        };
        total += n;
        received.fetch_add(n, Ordering::Relaxed);
        if total > limit {
            break Err(StorageError::TooLarge { limit });
        }
        if let Some(expected) = expected_size
            && total > expected
        {
            break Err(StorageError::SizeMismatch {
                expected,
                actual: total,
            });
        }
        if n == 0 {
            break Ok(());
        }
        // A hasher that is gone failed; its error comes from `join`.
        let _ = landed.send(total);
    };
    drop(landed);
    let hashed = hasher
        .join()
        .map_err(|_| local_error(&path, std::io::Error::other("the hashing thread panicked")));
    copied?;
    let (hashed_bytes, sha256) = hashed??;
    if let Some(expected) = expected_size
        && total != expected
    {
        return Err(StorageError::SizeMismatch {
            expected,
            actual: total,
        });
    }
    if hashed_bytes != total {
        return Err(local_error(
            &path,
            std::io::Error::other(format!("hashed {hashed_bytes} bytes of {total} copied")),
        ));
    }
    Ok(PutOutcome { size: total, sha256 })
}

/// Hashes the staging file up to each offset the copy reports, until the
/// copy ends; the bytes hashed and their SHA-256.
fn hash_behind(mut file: File, copied_up_to: &mpsc::Receiver<u64>, path: &Path) -> Result<(u64, Sha256), StorageError> {
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; HASH_READ];
    let mut hashed = 0u64;
    while let Ok(end) = copied_up_to.recv() {
        while hashed < end {
            let want = (end - hashed).min(HASH_READ as u64) as usize;
            let n = file.read(&mut buf[..want]).map_err(|e| local_error(path, e))?;
            if n == 0 {
                return Err(local_error(
                    path,
                    std::io::Error::other(format!("the staging file ended at {hashed} bytes of {end}")),
                ));
            }
            hasher.update(&buf[..n]);
            hashed += n as u64;
        }
    }
    Ok((hashed, Sha256::from_bytes(hasher.finalize().into())))
}
