//! `Storage::put_file`: a file already on disk (Bot API local mode), which
//! the folder store copies in the kernel and every other store streams.

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::Digest;
use teledrop_core::Sha256;
use teledrop_storage::StorageError;

use crate::backends::Fixture;
use crate::{MIB, NO_LIMIT, content, key, read_all};

/// A temporary file holding `data`, positioned at its start.
fn file_of(data: &[u8]) -> std::fs::File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f
}

pub async fn file_round_trip(f: Fixture) {
    let s = &f.storage;
    // Past several copy steps and parts, ending mid-step.
    let len = 19 * MIB + 4099;
    let data = content(len);
    let k = key("blobs/file/round-trip.bin");
    let received = Arc::new(AtomicU64::new(0));
    let outcome = s
        .put_file(&k, file_of(&data), Some(len), NO_LIMIT, received.clone())
        .await
        .unwrap();
    assert_eq!(outcome.size, len);
    assert_eq!(outcome.sha256, Sha256::digest(&data));
    let independent: [u8; 32] = sha2::Sha256::digest(&data).into();
    assert_eq!(outcome.sha256.as_bytes(), &independent);
    assert_eq!(received.load(Ordering::Relaxed), len, "progress counts every byte");
    let (returned, total, whole) = read_all(s, &k, None).await;
    assert_eq!((returned, total), (0..len, len));
    assert!(whole == data, "stored bytes differ");

    // Empty, with no size announced; and from the file's position on.
    let empty = key("blobs/file/empty");
    let outcome = s
        .put_file(&empty, file_of(&[]), None, NO_LIMIT, Arc::default())
        .await
        .unwrap();
    assert_eq!((outcome.size, outcome.sha256), (0, Sha256::digest(b"")));
    assert_eq!(s.head(&empty).await.unwrap().expect("empty object").size, 0);
    let mut tail = file_of(&data[..5000]);
    tail.seek(SeekFrom::Start(1000)).unwrap();
    let rest = key("blobs/file/rest");
    let outcome = s
        .put_file(&rest, tail, Some(4000), NO_LIMIT, Arc::default())
        .await
        .unwrap();
    assert_eq!(outcome.sha256, Sha256::digest(&data[1000..5000]));
    assert_eq!(read_all(s, &rest, None).await.2, &data[1000..5000]);

    f.assert_no_unfinished_uploads().await;
}

pub async fn file_over_its_limits_stores_nothing(f: Fixture) {
    let s = &f.storage;
    let len = 9 * MIB + 1;
    let data = content(len);
    let k = key("blobs/file/refused");
    let refusals = [
        // (announced size, limit)
        (None, 7 * MIB),
        (Some(len - 1), NO_LIMIT),
        (Some(len + 1), NO_LIMIT),
        (Some(len), len - 1),
    ];
    for (announced, limit) in refusals {
        let err = s
            .put_file(&k, file_of(&data), announced, limit, Arc::default())
            .await
            .unwrap_err();
        let expected = match (announced, limit) {
            (Some(a), l) if a > l => matches!(err, StorageError::TooLarge { .. }),
            (None, _) => matches!(err, StorageError::TooLarge { limit: l } if l == limit),
            _ => matches!(err, StorageError::SizeMismatch { .. }),
        };
        assert!(expected, "{announced:?}, limit {limit}: {err:?}");
        assert!(
            s.head(&k).await.unwrap().is_none(),
            "{announced:?}, limit {limit}: nothing stored"
        );
    }
    // Exactly at the limit is fine.
    let outcome = s
        .put_file(&k, file_of(&data), Some(len), len, Arc::default())
        .await
        .unwrap();
    assert_eq!(outcome.size, len);
    f.assert_no_unfinished_uploads().await;
}
