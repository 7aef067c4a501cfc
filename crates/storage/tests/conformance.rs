//! One behaviour, every backend: each scenario runs against the local
//! filesystem store, the in-memory store, a real S3-compatible server
//! (`TEST_S3_ENDPOINT`), object_store's GCS client on an XML-API server
//! (`TEST_GCS_ENDPOINT`) and Azurite (`TEST_AZURE_ENDPOINT`); see
//! `scripts/servers.sh` and `backends/`.

mod backends;
mod scenarios;

use scenarios::put_file::{file_over_its_limits_stores_nothing, file_round_trip};

use std::ops::Range;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt, stream};
use sha2::Digest;
use teledrop_core::{ObjectKey, Sha256};
use teledrop_storage::{ObjectInfo, PART_SIZE, Storage, StorageError};

use backends::{Backend, Fixture};

const MIB: u64 = 1024 * 1024;
const NO_LIMIT: u64 = u64::MAX;

// ----------------------------------------------------------------- sources

/// Deterministic, position-dependent content.
fn byte_at(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i >> 7);
    (x >> 56) as u8
}

fn content(len: u64) -> Vec<u8> {
    (0..len).map(byte_at).collect()
}

/// `data` cut into chunks of awkward, varying sizes.
fn chunked(data: &[u8]) -> Vec<Bytes> {
    const SIZES: [usize; 7] = [1, 4093, 65_537, 1_000_003, 7, 333_333, 2_097_169];
    let mut chunks = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = SIZES[i % SIZES.len()].min(data.len() - at);
        chunks.push(Bytes::copy_from_slice(&data[at..at + n]));
        at += n;
        i += 1;
    }
    chunks
}

fn source_of(data: &[u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    stream::iter(chunked(data).into_iter().map(Ok))
}

/// Two parts' worth, then a signal on the receiver, then nothing ever
/// again: an upload from it is in progress for good.
fn stalling() -> (
    impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel::<()>();
    let mut reached_tx = Some(reached_tx);
    let source = source_of(&content(LEAKED_PARTS as u64 * PART_SIZE as u64 + 1)).chain(stream::poll_fn(move |_| {
        if let Some(tx) = reached_tx.take() {
            tx.send(()).unwrap();
        }
        std::task::Poll::Pending
    }));
    (source, reached_rx)
}

/// Starts an upload to `k` that never ends and leaks it once it is under
/// way: what a process killed mid-upload leaves behind (no abort runs,
/// not even in the background).
async fn leak_upload(s: &Storage, k: &ObjectKey) {
    let (source, reached) = stalling();
    let mut upload = Box::pin(s.put_stream(k, source, None, NO_LIMIT));
    tokio::select! {
        result = &mut upload => panic!("the upload cannot finish: {result:?}"),
        _ = reached => {}
    }
    std::mem::forget(upload);
}

/// Full parts a [`leak_upload`] sends before it stalls.
const LEAKED_PARTS: usize = 2;

/// Waits (up to a deadline) until the backend holds `n` unfinished uploads
/// made by [`leak_upload`], each with all of its parts stored.
async fn wait_for_unfinished(f: &Fixture, n: usize) {
    let reached = teledrop_testkit::poll_until(std::time::Duration::from_secs(20), || async {
        (f.unfinished_uploads().await.len() == n && f.parts_landed(LEAKED_PARTS).await).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "expected {n} unfinished uploads, found {:?}",
        f.unfinished_uploads().await
    );
}

async fn unfinished_keys(s: &Storage, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = s
        .unfinished_uploads(prefix)
        .map_ok(|u| u.key)
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Yields `data`, then fails like a cut download.
fn failing_after(data: &[u8]) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + use<> {
    source_of(data).chain(stream::once(async {
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "download cut"))
    }))
}

fn key(s: &str) -> ObjectKey {
    s.parse().unwrap()
}

async fn read_all(storage: &Storage, k: &ObjectKey, range: Option<Range<u64>>) -> (Range<u64>, u64, Vec<u8>) {
    let read = storage.get(k, range).await.unwrap();
    let (returned, total) = (read.range.clone(), read.total_size);
    let chunks: Vec<Bytes> = read.stream.try_collect().await.unwrap();
    (returned, total, chunks.concat())
}

async fn put(storage: &Storage, k: &ObjectKey, data: &[u8]) {
    let outcome = storage
        .put_stream(k, source_of(data), Some(data.len() as u64), NO_LIMIT)
        .await
        .unwrap();
    assert_eq!(outcome.size, data.len() as u64);
    assert_eq!(outcome.sha256, Sha256::digest(data));
}

// --------------------------------------------------------------- scenarios

async fn large_round_trip(f: Fixture) {
    let s = &f.storage;
    let len = 23 * MIB + 17;
    let data = content(len);
    let k = key("blobs/large/round-trip.bin");

    let outcome = s.put_stream(&k, source_of(&data), Some(len), NO_LIMIT).await.unwrap();
    assert_eq!(outcome.size, len);
    assert_eq!(outcome.sha256, Sha256::digest(&data));
    let independent: [u8; 32] = sha2::Sha256::digest(&data).into();
    assert_eq!(outcome.sha256.as_bytes(), &independent);

    let head = s.head(&k).await.unwrap().expect("stored object");
    assert_eq!(head.size, len);
    assert_eq!(head.key, "blobs/large/round-trip.bin");

    let (returned, total, whole) = read_all(s, &k, None).await;
    assert_eq!((returned, total), (0..len, len));
    assert!(whole == data, "whole object differs");

    let part = PART_SIZE as u64;
    for range in [
        0..1,
        len - 1..len,
        part - 100..part + 100,
        2 * part - 1..2 * part + 1,
        12_345..3 * part + 6_789,
        len - part - 3..len,
    ] {
        let (returned, total, bytes) = read_all(s, &k, Some(range.clone())).await;
        assert_eq!(returned, range, "returned range");
        assert_eq!(total, len);
        assert!(
            bytes == data[range.start as usize..range.end as usize],
            "bytes of {range:?} differ"
        );
    }

    // A range running past the end is cut at the end.
    let (returned, _, bytes) = read_all(s, &k, Some(len - 10..len + 1000)).await;
    assert_eq!(returned, len - 10..len);
    assert_eq!(bytes, &data[(len - 10) as usize..]);

    f.assert_no_unfinished_uploads().await;
}

async fn empty_object(f: Fixture) {
    let s = &f.storage;
    let k = key("blobs/empty");
    let outcome = s
        .put_stream(&k, stream::empty::<Result<Bytes, std::io::Error>>(), Some(0), 10)
        .await
        .unwrap();
    assert_eq!(outcome.size, 0);
    assert_eq!(outcome.sha256, Sha256::digest(b""));
    assert_eq!(
        outcome.sha256.to_hex(),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(s.head(&k).await.unwrap().expect("empty object").size, 0);
    let (returned, total, bytes) = read_all(s, &k, None).await;
    assert_eq!((returned, total), (0..0, 0));
    assert!(bytes.is_empty());
    assert!(matches!(s.get(&k, Some(0..1)).await, Err(StorageError::InvalidRange)));
}

async fn small_object_with_empty_chunks(f: Fixture) {
    let s = &f.storage;
    let k = key("blobs/small");
    let source = stream::iter([
        Ok::<_, std::io::Error>(Bytes::new()),
        Ok(Bytes::from_static(b"hello, ")),
        Ok(Bytes::new()),
        Ok(Bytes::from_static(b"world")),
    ]);
    let outcome = s.put_stream(&k, source, None, 12).await.unwrap();
    assert_eq!(outcome.size, 12);
    assert_eq!(outcome.sha256, Sha256::digest(b"hello, world"));
    let (_, _, bytes) = read_all(s, &k, None).await;
    assert_eq!(bytes, b"hello, world");
    let (returned, _, bytes) = read_all(s, &k, Some(7..12)).await;
    assert_eq!((returned, bytes.as_slice()), (7..12, &b"world"[..]));
}

async fn source_error_aborts(f: Fixture) {
    let s = &f.storage;
    // Past two parts, so a multipart upload with uploaded parts exists…
    for (name, len) in [("blobs/cut-large", 12 * MIB + 3), ("blobs/cut-small", 1000)] {
        let k = key(name);
        let data = content(len);
        let err = s
            .put_stream(&k, failing_after(&data), Some(20 * MIB), NO_LIMIT)
            .await
            .unwrap_err();
        match &err {
            StorageError::SourceFailed(cause) => {
                assert_eq!(cause.to_string(), "download cut")
            }
            other => panic!("{name}: expected SourceFailed, got {other:?}"),
        }
        assert_eq!(err.label(), "source_failed");
        assert!(s.head(&k).await.unwrap().is_none(), "{name} is visible");
        assert!(matches!(s.get(&k, None).await, Err(StorageError::NotFound)));
    }
    f.assert_no_unfinished_uploads().await;
    let listed: Vec<ObjectInfo> = s.list(None).try_collect().await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
}

async fn size_mismatch_aborts(f: Fixture) {
    let s = &f.storage;
    // Short: the source ends early.
    let k = key("blobs/short");
    let data = content(10 * MIB);
    let err = s
        .put_stream(&k, source_of(&data), Some(10 * MIB + 1), NO_LIMIT)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::SizeMismatch { expected, actual } if expected == 10 * MIB + 1 && actual == 10 * MIB),
        "{err:?}"
    );
    assert!(s.head(&k).await.unwrap().is_none());

    // Long: the source goes on past the announced size.
    for (name, expected, len) in [("blobs/long", 6 * MIB, 8 * MIB), ("blobs/long-small", 10, 11)] {
        let k = key(name);
        let err = s
            .put_stream(&k, source_of(&content(len)), Some(expected), NO_LIMIT)
            .await
            .unwrap_err();
        match err {
            StorageError::SizeMismatch { expected: e, actual } => {
                assert_eq!(e, expected);
                assert!(actual > expected && actual <= len, "{actual}");
            }
            other => panic!("{name}: expected SizeMismatch, got {other:?}"),
        }
        assert!(s.head(&k).await.unwrap().is_none(), "{name} is visible");
    }
    f.assert_no_unfinished_uploads().await;
}

async fn too_large_aborts(f: Fixture) {
    let s = &f.storage;
    let k = key("blobs/too-large");
    let limit = 7 * MIB;
    let err = s
        .put_stream(&k, source_of(&content(9 * MIB)), None, limit)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::TooLarge { limit: l } if l == limit),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(s.head(&k).await.unwrap().is_none());

    // Exactly at the limit is fine.
    let at_limit = content(1000);
    let outcome = s.put_stream(&k, source_of(&at_limit), None, 1000).await.unwrap();
    assert_eq!(outcome.size, 1000);
    s.delete(&k).await.unwrap();

    // An announced size over the limit fails before reading anything.
    let polled = std::sync::atomic::AtomicBool::new(false);
    let source = stream::poll_fn(|_| {
        polled.store(true, std::sync::atomic::Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(Bytes::from_static(b"x"))))
    });
    let err = s.put_stream(&k, source, Some(11), 10).await.unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { limit: 10 }), "{err:?}");
    assert!(!polled.load(std::sync::atomic::Ordering::SeqCst));

    assert!(s.head(&k).await.unwrap().is_none());
    f.assert_no_unfinished_uploads().await;
}

async fn missing_key(f: Fixture) {
    let s = &f.storage;
    let k = key("blobs/never-stored");
    assert!(s.head(&k).await.unwrap().is_none());
    for range in [None, Some(0..10)] {
        match s.get(&k, range.clone()).await {
            Err(StorageError::NotFound) => {}
            Err(other) => panic!("{range:?}: expected NotFound, got {other:?}"),
            Ok(read) => panic!("{range:?}: expected NotFound, got {read:?}"),
        }
    }
}

async fn invalid_range(f: Fixture) {
    let s = &f.storage;
    let k = key("blobs/thousand");
    let data = content(1000);
    put(s, &k, &data).await;
    for range in [1000..1001, 5000..6000, 10..10, Range { start: 20, end: 10 }] {
        match s.get(&k, Some(range.clone())).await {
            Err(StorageError::InvalidRange) => {}
            Err(other) => panic!("{range:?}: expected InvalidRange, got {other:?}"),
            Ok(read) => panic!("{range:?}: expected InvalidRange, got {read:?}"),
        }
    }
    let (returned, total, bytes) = read_all(s, &k, Some(999..1000)).await;
    assert_eq!((returned, total, bytes), (999..1000, 1000, vec![data[999]]));
}

async fn delete_is_idempotent(f: Fixture) {
    let s = &f.storage;
    let k = key("blobs/aa/bb/to-delete");
    put(s, &k, b"bye").await;
    assert!(s.head(&k).await.unwrap().is_some());
    s.delete(&k).await.unwrap();
    assert!(s.head(&k).await.unwrap().is_none());
    assert!(matches!(s.get(&k, None).await, Err(StorageError::NotFound)));
    s.delete(&k).await.unwrap();
    s.delete(&key("blobs/never/existed")).await.unwrap();
}

async fn list_shows_stored_objects(f: Fixture) {
    let s = &f.storage;
    let stored = [
        ("blobs/a/one", 10u64),
        ("blobs/a/two", PART_SIZE as u64 + 5),
        ("blobs/b/three", 0),
        ("other/four", 3),
    ];
    for (name, len) in stored {
        put(s, &key(name), &content(len)).await;
    }
    let listed = |prefix: Option<&'static str>| {
        let stream = s.list(prefix);
        async move {
            let mut found: Vec<(String, u64)> =
                stream.map_ok(|info| (info.key, info.size)).try_collect().await.unwrap();
            found.sort();
            found
        }
    };
    let all: Vec<(String, u64)> = stored.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    assert_eq!(listed(None).await, all);
    assert_eq!(listed(Some("blobs")).await, all[..3].to_vec());
    assert_eq!(listed(Some("blobs/a/")).await, all[..2].to_vec());
    assert_eq!(listed(Some("blobs/a/o")).await, Vec::new());
    assert_eq!(listed(Some("nothing-here")).await, Vec::new());

    let info = s.list(Some("other")).next().await.unwrap().unwrap();
    let head = s.head(&key("other/four")).await.unwrap().unwrap();
    assert_eq!(info.size, head.size);
    assert_eq!(info.key, head.key);
    f.assert_no_unfinished_uploads().await;
}

async fn overwrite_replaces_atomically(f: Fixture) {
    let s = &f.storage;
    let k = key("blobs/replaced");
    let first = content(3000);
    put(s, &k, &first).await;

    let second: Vec<u8> = content(PART_SIZE as u64 * 2 + 11)
        .into_iter()
        .map(|b| b ^ 0x5a)
        .collect();
    put(s, &k, &second).await;
    assert_eq!(s.head(&k).await.unwrap().unwrap().size, second.len() as u64);
    let (_, total, bytes) = read_all(s, &k, None).await;
    assert_eq!(total, second.len() as u64);
    assert!(bytes == second, "second version not read back");

    // A failed overwrite leaves the previous version untouched.
    let err = s
        .put_stream(&k, failing_after(&content(7 * MIB)), None, NO_LIMIT)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::SourceFailed(_)), "{err:?}");
    let (_, _, bytes) = read_all(s, &k, None).await;
    assert!(bytes == second, "failed overwrite changed the object");

    // So does a too-long one.
    let err = s
        .put_stream(&k, source_of(&first), Some(10), NO_LIMIT)
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::SizeMismatch { .. }), "{err:?}");
    let (_, _, bytes) = read_all(s, &k, None).await;
    assert!(bytes == second, "failed overwrite changed the object");

    // Back to a small one.
    put(s, &k, &first).await;
    let (_, _, bytes) = read_all(s, &k, None).await;
    assert_eq!(bytes, first);
    f.assert_no_unfinished_uploads().await;
}

async fn dropped_upload_is_aborted(f: Fixture) {
    let s = &f.storage;
    let k = key("blobs/dropped");
    let (source, reached_rx) = stalling();
    let upload = s.put_stream(&k, source, None, NO_LIMIT);
    tokio::select! {
        result = upload => panic!("the upload cannot finish: {result:?}"),
        _ = reached_rx => {}
    }
    // The upload future is dropped here; its abort runs in the background.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if f.unfinished_uploads().await.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "abandoned upload still there: {:?}",
            f.unfinished_uploads().await
        );
        tokio::task::yield_now().await;
    }
    assert!(s.head(&k).await.unwrap().is_none());
}

async fn leftover_check_sees_unfinished_uploads(f: Fixture) {
    // The "nothing left behind" assertions above mean something only if
    // an unfinished upload would be seen.
    let Some(raw) = f.raw_store() else { return };
    let location = object_store::path::Path::from("blobs/raw/unfinished");
    use object_store::ObjectStoreExt;
    let mut upload = raw.put_multipart(&location).await.unwrap();
    upload
        .put_part(Bytes::from(content(PART_SIZE as u64)).into())
        .await
        .unwrap();
    let left = f.unfinished_uploads().await;
    assert_eq!(left.len(), 1, "{left:?}");
    upload.abort().await.unwrap();
    if let Backend::Azure(_) = f.backend {
        // object_store's Azure abort drops nothing (blocks expire after a
        // week): the raw upload's blocks are still there, and only the
        // storage's own abort removes them.
        assert_eq!(f.unfinished_uploads().await.len(), 1);
        assert_eq!(f.storage.abort_unfinished_uploads("blobs/raw/").await.unwrap(), 1);
    }
    f.assert_no_unfinished_uploads().await;
}

async fn abandoned_upload_is_listed_and_aborted(f: Fixture) {
    let s = &f.storage;
    // Keys as the worker gives them: one prefix per job, one tail per attempt.
    let k = key("blobs/ab/cd/job1-attempt1");
    leak_upload(s, &k).await;
    // The in-memory store's uploads die with their process: none to list.
    let expected: Vec<String> = match f.backend {
        Backend::Memory => Vec::new(),
        _ => vec![k.to_string()],
    };
    // Azure's blocks land in the background (S3 and GCS record the upload
    // before the first part): wait until the backend has them.
    wait_for_unfinished(&f, expected.len()).await;
    assert_eq!(unfinished_keys(s, "blobs/ab/cd/job1-").await, expected);
    assert_eq!(unfinished_keys(s, "blobs/").await, expected);
    assert_eq!(f.unfinished_uploads().await.len(), expected.len(), "the backend agrees");
    for other in ["blobs/ab/cd/job2-", "blobs/ab/cd/job1-attempt2", "blobs/zz/", "other"] {
        assert_eq!(unfinished_keys(s, other).await, Vec::<String>::new(), "{other}");
    }
    assert!(s.head(&k).await.unwrap().is_none());
    let listed: Vec<teledrop_storage::UnfinishedUpload> = s.unfinished_uploads("blobs/").try_collect().await.unwrap();

    // The next attempt of the job stores its object; aborting the job's
    // leftovers then spares it.
    let next = key("blobs/ab/cd/job1-attempt2");
    let data = content(PART_SIZE as u64 + 7);
    put(s, &next, &data).await;
    let aborted = s.abort_unfinished_uploads("blobs/ab/cd/job1-").await.unwrap();
    assert_eq!(aborted, expected.len() as u64);
    f.assert_no_unfinished_uploads().await;
    assert_eq!(unfinished_keys(s, "").await, Vec::<String>::new());
    assert!(s.head(&k).await.unwrap().is_none());
    let (_, _, bytes) = read_all(s, &next, None).await;
    assert!(bytes == data, "the completed upload was touched");
    // Aborting what is gone already is not an error.
    for upload in &listed {
        s.abort_upload(upload).await.unwrap();
    }
    assert_eq!(s.abort_unfinished_uploads("blobs/").await.unwrap(), 0);

    // Under a storage URL with a key prefix, keys are relative to it.
    if let Some(nested) = f.nested("/nested/deeper") {
        let k = key("blobs/ef/gh/job3-attempt1");
        leak_upload(&nested, &k).await;
        wait_for_unfinished(&f, 1).await;
        assert_eq!(unfinished_keys(&nested, "blobs/ef/").await, vec![k.to_string()]);
        assert_eq!(unfinished_keys(s, "nested/").await, vec![format!("nested/deeper/{k}")]);
        assert_eq!(nested.abort_unfinished_uploads("blobs/").await.unwrap(), 1);
        f.assert_no_unfinished_uploads().await;
    }
}

async fn ping_answers(f: Fixture) {
    f.storage.ping().await.unwrap();
    let described = f.storage.describe();
    let (expected_start, secret) = f.expected_description();
    assert!(described.starts_with(&expected_start), "{described}");
    if let Some(secret) = secret {
        assert!(!described.contains(secret), "{described}");
        assert!(!format!("{:?}", f.storage).contains(secret));
    }
}

async fn clones_share_the_store(f: Fixture) {
    let s = f.storage.clone();
    let k = key("blobs/shared");
    put(&s, &k, b"shared").await;
    let (_, _, bytes) = read_all(&f.storage, &k, None).await;
    assert_eq!(bytes, b"shared");
}

// ------------------------------------------------------------------ runner

/// One test module per backend, one test per scenario.
macro_rules! suite {
    ($backend:ident, $fixture:expr, $($scenario:ident),*) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario($fixture).await
                }
            )*
        }
    };
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        suite!(local, Fixture::local(), $($scenario),*);
        suite!(memory, Fixture::memory(), $($scenario),*);
        suite!(s3, Fixture::s3().await, $($scenario),*);
        suite!(gcs, Fixture::gcs().await, $($scenario),*);
        suite!(azure, Fixture::azure().await, $($scenario),*);
    };
}

conformance!(
    large_round_trip,
    empty_object,
    small_object_with_empty_chunks,
    source_error_aborts,
    size_mismatch_aborts,
    too_large_aborts,
    missing_key,
    invalid_range,
    delete_is_idempotent,
    list_shows_stored_objects,
    overwrite_replaces_atomically,
    dropped_upload_is_aborted,
    leftover_check_sees_unfinished_uploads,
    abandoned_upload_is_listed_and_aborted,
    ping_answers,
    clones_share_the_store,
    file_round_trip,
    file_over_its_limits_stores_nothing,
);
