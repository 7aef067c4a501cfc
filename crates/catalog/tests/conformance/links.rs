//! Links and downloads: resolving a token, counting downloads.

use crate::common::*;
use std::sync::Arc;
use teledrop_catalog::{Catalog, DownloadHit};
use teledrop_core::file::FileState;
use teledrop_core::{FileId, LinkToken, NewLink};

async fn resolve_link(c: Arc<dyn Catalog>) {
    let id = running_job(&c, 1, &incoming(4, "res")).await;
    let link = NewLink {
        token: LinkToken::generate(),
        expires_at: Some(ms(1_700_000_000_000)),
        max_downloads: None,
    };
    let done = c
        .commit_stored(id, stored_blob("k/res", 64, b"r"), link.clone())
        .await
        .unwrap();

    let (l, f) = c.resolve_link(link.token).await.unwrap().expect("link resolves");
    assert_eq!(l, done.link);
    assert_eq!(f, done.file);
    assert_eq!(c.resolve_link(LinkToken::generate()).await.unwrap(), None);

    // Whatever the state: a deleted file still resolves, so the link server
    // can answer 410 rather than 404.
    c.delete_file(f.id).await.unwrap();
    let (l, f) = c.resolve_link(link.token).await.unwrap().expect("still resolves");
    assert_eq!(f.state, FileState::Deleted);
    assert!(f.deleted_at.is_some());
    assert!(l.revoked_at.is_some());
    assert_eq!(l.expires_at, link.expires_at);
}

async fn record_downloads_in_batches(c: Arc<dyn Catalog>) {
    let a = c
        .commit_stored(
            running_job(&c, 1, &incoming(1, "dl-a")).await,
            stored_blob("k/a", 1, b"a"),
            NewLink::unlimited(),
        )
        .await
        .unwrap()
        .file
        .id;
    let b = c
        .commit_stored(
            running_job(&c, 2, &incoming(1, "dl-b")).await,
            stored_blob("k/b", 1, b"b"),
            NewLink::unlimited(),
        )
        .await
        .unwrap()
        .file
        .id;
    c.record_downloads(&[]).await.unwrap();

    let t1 = ms(1_800_000_000_100);
    let t2 = ms(1_800_000_000_200);
    let t3 = ms(1_800_000_000_300);
    c.record_downloads(&[
        DownloadHit {
            file_id: a,
            count: 2,
            last_at: t2,
        },
        DownloadHit {
            file_id: b,
            count: 1,
            last_at: t1,
        },
        DownloadHit {
            file_id: a,
            count: 3,
            last_at: t1,
        },
    ])
    .await
    .unwrap();
    let fa = c.file(a).await.unwrap().unwrap();
    let fb = c.file(b).await.unwrap().unwrap();
    assert_eq!((fa.download_count, fa.last_download_at), (5, Some(t2)));
    assert_eq!((fb.download_count, fb.last_download_at), (1, Some(t1)));

    // A late flush from another link server: counts add, time never goes back.
    c.record_downloads(&[DownloadHit {
        file_id: a,
        count: 1,
        last_at: t1,
    }])
    .await
    .unwrap();
    c.record_downloads(&[DownloadHit {
        file_id: b,
        count: 4,
        last_at: t3,
    }])
    .await
    .unwrap();
    let fa = c.file(a).await.unwrap().unwrap();
    let fb = c.file(b).await.unwrap().unwrap();
    assert_eq!((fa.download_count, fa.last_download_at), (6, Some(t2)));
    assert_eq!((fb.download_count, fb.last_download_at), (5, Some(t3)));

    // A hit for a file that is not there is dropped without harm.
    c.record_downloads(&[DownloadHit {
        file_id: FileId::new(),
        count: 1,
        last_at: t3,
    }])
    .await
    .unwrap();
    assert_eq!(c.file(a).await.unwrap().unwrap().download_count, 6);

    // A count that cannot be stored is refused, and nothing of the batch is applied.
    let bad = c
        .record_downloads(&[
            DownloadHit {
                file_id: a,
                count: 1,
                last_at: t3,
            },
            DownloadHit {
                file_id: b,
                count: u64::MAX,
                last_at: t3,
            },
        ])
        .await;
    assert!(bad.is_err());
    assert_eq!(c.file(a).await.unwrap().unwrap().download_count, 6);
}

conformance! {
    catalog resolve_link => postgres_resolve_link, sqlite_resolve_link;
    catalog record_downloads_in_batches => postgres_record_downloads_in_batches, sqlite_record_downloads_in_batches;
}
