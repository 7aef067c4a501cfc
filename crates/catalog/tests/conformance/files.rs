//! Blobs and commits: storing a file, sharing and forgetting blobs,
//! deleting files.

use crate::common::*;
use std::sync::Arc;
use teledrop_catalog::{Catalog, CatalogError};
use teledrop_core::file::FileState;
use teledrop_core::{FileId, JobId, JobState, LinkToken, MessageId, NewLink, Sha256, Usage, UserId};

async fn commit_stored_writes_file_link_usage_and_job(c: Arc<dyn Catalog>) {
    assert_eq!(
        c.usage(UserId(9)).await.unwrap(),
        Usage {
            user_id: UserId(9),
            bytes: 0,
            files: 0
        }
    );
    let inc = incoming(9, "commit");
    let id = running_job(&c, 1, &inc).await;
    c.set_status_message(id, MessageId(31)).await.unwrap();
    let blob = stored_blob("blobs/aa/bb/commit", 5000, b"commit");
    let link = NewLink {
        token: LinkToken::generate(),
        expires_at: Some(ms(1_900_000_000_123)),
        max_downloads: Some(3),
    };

    let done = c.commit_stored(id, blob.clone(), link.clone()).await.unwrap();
    assert_eq!(done.redundant_object, None);

    let job = &done.job;
    assert_eq!(job.state, JobState::Stored);
    assert_eq!(job.file_id, Some(done.file.id));
    assert_eq!(job.attempts, 1);
    assert_eq!(job.status_message_id, Some(MessageId(31)));
    assert_eq!(c.job(id).await.unwrap().as_ref(), Some(job));

    let f = &done.file;
    assert_eq!(
        (f.owner, f.chat_id, f.message_id, f.kind),
        (inc.user_id, inc.chat_id, inc.message_id, inc.kind)
    );
    assert_eq!(
        (f.name.as_str(), f.mime_type.as_str()),
        (inc.file_name.as_str(), inc.mime_type.as_str())
    );
    assert_eq!(f.file_unique_id, "commit");
    assert_eq!((f.size, f.sha256, &f.object_key), (5000, blob.sha256, &blob.object_key));
    assert_eq!(f.state, FileState::Active);
    assert_eq!((f.download_count, f.last_download_at, f.deleted_at), (0, None, None));
    assert_eq!(c.file(f.id).await.unwrap().as_ref(), Some(f));
    assert_eq!(c.file(FileId::new()).await.unwrap(), None);

    let l = &done.link;
    assert_eq!((l.token, l.file_id), (link.token, f.id));
    assert_eq!((l.expires_at, l.max_downloads), (link.expires_at, Some(3)));
    assert_eq!((l.password_hash.clone(), l.revoked_at), (None, None));
    assert_eq!(c.links_of(f.id).await.unwrap(), vec![l.clone()]);

    let b = c.blob("commit").await.unwrap().expect("blob recorded");
    assert_eq!(
        (b.object_key, b.size, b.sha256),
        (blob.object_key.clone(), 5000, blob.sha256)
    );
    assert_eq!(c.blob("nope").await.unwrap(), None);

    assert_eq!(usage(&c, 9).await, (5000, 1));
    let events = c.job_events(id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.from, last.to), (Some(JobState::Running), JobState::Stored));
    assert_eq!(events.len(), 3);
    assert!(c.unfinished_jobs(10).await.unwrap().is_empty());

    // A second file of the same user adds up.
    let id2 = running_job(&c, 2, &incoming(9, "commit-2")).await;
    c.commit_stored(id2, stored_blob("k/2", 11, b"2"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(usage(&c, 9).await, (5011, 2));
}

async fn commit_stored_needs_a_running_job(c: Arc<dyn Catalog>) {
    let pending = accept(&c, 1, &incoming(3, "early")).await;
    let before = c.job(pending).await.unwrap().unwrap();
    let token = LinkToken::generate();
    let link = NewLink {
        token,
        expires_at: None,
        max_downloads: None,
    };
    let err = c
        .commit_stored(pending, stored_blob("k/early", 10, b"e"), link.clone())
        .await
        .unwrap_err();
    match err {
        CatalogError::StateConflict { expected, actual } => {
            assert_eq!((expected, actual), (JobState::Running, JobState::Pending))
        }
        other => panic!("expected StateConflict, got {other:?}"),
    }
    // Nothing at all was written.
    assert_eq!(c.job(pending).await.unwrap(), Some(before));
    assert_eq!(c.job_events(pending).await.unwrap().len(), 1);
    assert_eq!(c.blob("early").await.unwrap(), None);
    assert_eq!(usage(&c, 3).await, (0, 0));
    assert_eq!(c.resolve_link(token).await.unwrap(), None);

    let missing = c
        .commit_stored(JobId::new(), stored_blob("k/x", 1, b"x"), NewLink::unlimited())
        .await;
    assert!(matches!(missing, Err(CatalogError::NotFound("job"))), "{missing:?}");

    // A job stored once cannot be stored again (a redelivered message).
    let id = running_job(&c, 2, &incoming(3, "twice")).await;
    let first = c
        .commit_stored(id, stored_blob("k/twice", 10, b"t"), NewLink::unlimited())
        .await
        .unwrap();
    let again = NewLink::unlimited();
    let err = c
        .commit_stored(id, stored_blob("k/twice-2", 10, b"t"), again.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::StateConflict {
                expected: JobState::Running,
                actual: JobState::Stored
            }
        ),
        "{err:?}"
    );
    assert_eq!(usage(&c, 3).await, (10, 1));
    assert_eq!(c.links_of(first.file.id).await.unwrap(), vec![first.link.clone()]);
    assert_eq!(c.resolve_link(again.token).await.unwrap(), None);
    assert_eq!(c.job(id).await.unwrap(), Some(first.job));
}

async fn same_unique_id_reuses_the_blob(c: Arc<dyn Catalog>) {
    let j1 = running_job(&c, 1, &incoming(1, "shared")).await;
    let j2 = running_job(&c, 2, &incoming(2, "shared")).await;
    let j3 = running_job(&c, 3, &incoming(2, "shared")).await;

    let first = c
        .commit_stored(j1, stored_blob("k/first", 700, b"same"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(first.redundant_object, None);

    // A second upload of the same Telegram file: its object is redundant
    // and the file row points at the first blob.
    let second = c
        .commit_stored(j2, stored_blob("k/second", 700, b"same"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(second.redundant_object, Some(key("k/second")));
    assert_eq!(second.file.object_key, key("k/first"));
    assert_eq!((second.file.size, second.file.sha256), (700, Sha256::digest(b"same")));
    assert_ne!(second.file.id, first.file.id);
    assert_eq!(second.file.owner, UserId(2));

    // Passing the key already recorded (no new upload): nothing redundant.
    let third = c
        .commit_stored(j3, stored_blob("k/first", 700, b"same"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(third.redundant_object, None);
    assert_eq!(third.file.object_key, key("k/first"));

    let b = c.blob("shared").await.unwrap().unwrap();
    assert_eq!(b.object_key, key("k/first"));
    // Usage counts each owner's files.
    assert_eq!(usage(&c, 1).await, (700, 1));
    assert_eq!(usage(&c, 2).await, (1400, 2));
}

async fn forget_blob_only_removes_the_named_object(c: Arc<dyn Catalog>) {
    let j = running_job(&c, 1, &incoming(1, "gone")).await;
    c.commit_stored(j, stored_blob("k/gone", 5, b"gone!"), NewLink::unlimited())
        .await
        .unwrap();
    let unique = c.job(j).await.unwrap().unwrap().incoming.file_unique_id;
    assert!(
        !c.forget_blob(&unique, &"k/other".parse().unwrap()).await.unwrap(),
        "another key: kept"
    );
    assert!(c.blob(&unique).await.unwrap().is_some());
    assert!(c.forget_blob(&unique, &"k/gone".parse().unwrap()).await.unwrap());
    assert!(c.blob(&unique).await.unwrap().is_none());
    // The next upload of the same file records a fresh blob.
    let again = running_job(&c, 2, &incoming(1, "gone")).await;
    let done = c
        .commit_stored(again, stored_blob("k/fresh", 5, b"gone!"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(done.redundant_object, None);
    assert_eq!(c.blob(&unique).await.unwrap().unwrap().object_key.as_str(), "k/fresh");
}

async fn delete_file_counts_references(c: Arc<dyn Catalog>) {
    let mut files = Vec::new();
    for (update, user) in [(1, 1), (2, 1), (3, 2)] {
        let job = running_job(&c, update, &incoming(user, "ref")).await;
        let key = format!("k/ref-{update}");
        files.push(
            c.commit_stored(job, stored_blob(&key, 100, b"ref"), NewLink::unlimited())
                .await
                .unwrap(),
        );
    }
    let lone_job = running_job(&c, 4, &incoming(1, "lone")).await;
    let lone = c
        .commit_stored(lone_job, stored_blob("k/lone", 30, b"lone"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(usage(&c, 1).await, (230, 3));
    assert_eq!(usage(&c, 2).await, (100, 1));

    // First of three users of the blob: nothing to delete in storage.
    assert_eq!(c.delete_file(files[0].file.id).await.unwrap(), None);
    let f0 = c.file(files[0].file.id).await.unwrap().unwrap();
    assert_eq!(f0.state, FileState::Deleted);
    let deleted_at = f0.deleted_at.expect("deleted_at set");
    assert!(
        c.links_of(f0.id)
            .await
            .unwrap()
            .iter()
            .all(|l| l.revoked_at == Some(deleted_at))
    );
    assert!(
        c.links_of(files[1].file.id)
            .await
            .unwrap()
            .iter()
            .all(|l| l.revoked_at.is_none())
    );
    assert_eq!(usage(&c, 1).await, (130, 2));
    assert!(c.blob("ref").await.unwrap().is_some());

    // Deleting it again changes nothing.
    assert_eq!(c.delete_file(f0.id).await.unwrap(), None);
    assert_eq!(c.file(f0.id).await.unwrap(), Some(f0.clone()));
    assert_eq!(usage(&c, 1).await, (130, 2));

    assert_eq!(c.delete_file(files[2].file.id).await.unwrap(), None);
    assert_eq!(usage(&c, 2).await, (0, 0));
    // The last live file releases the blob, under the first recorded key.
    assert_eq!(c.delete_file(files[1].file.id).await.unwrap(), Some(key("k/ref-1")));
    assert_eq!(c.blob("ref").await.unwrap(), None);
    assert_eq!(usage(&c, 1).await, (30, 1));
    assert_eq!(c.delete_file(files[1].file.id).await.unwrap(), None);

    assert_eq!(c.delete_file(lone.file.id).await.unwrap(), Some(key("k/lone")));
    assert_eq!(usage(&c, 1).await, (0, 0));
    let missing = c.delete_file(FileId::new()).await;
    assert!(matches!(missing, Err(CatalogError::NotFound("file"))), "{missing:?}");

    // The same Telegram file sent again after that: stored anew.
    let again = running_job(&c, 5, &incoming(2, "ref")).await;
    let done = c
        .commit_stored(again, stored_blob("k/ref-5", 100, b"ref"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(done.redundant_object, None);
    assert_eq!(done.file.object_key, key("k/ref-5"));
    assert_eq!(c.blob("ref").await.unwrap().unwrap().object_key, key("k/ref-5"));
    assert_eq!(usage(&c, 2).await, (100, 1));
}

async fn delete_and_commit_race_keeps_the_blob_consistent(c: Arc<dyn Catalog>) {
    // Deleting the only file of a blob while another job commits the same
    // Telegram file: whichever order the catalog picks, a live file never
    // points at a blob whose key was handed out for deletion.
    for round in 0..5 {
        let unique = format!("race-{round}");
        let base = round * 10;
        let j = running_job(&c, base + 1, &incoming(1, &unique)).await;
        let first = c
            .commit_stored(j, stored_blob(&format!("k/{unique}-a"), 10, b"x"), NewLink::unlimited())
            .await
            .unwrap();
        let j2 = running_job(&c, base + 2, &incoming(2, &unique)).await;

        let (deleted, committed) = tokio::join!(
            c.delete_file(first.file.id),
            c.commit_stored(
                j2,
                stored_blob(&format!("k/{unique}-b"), 10, b"x"),
                NewLink::unlimited()
            )
        );
        let released = deleted.unwrap();
        let committed = committed.unwrap();
        let live_key = committed.file.object_key.clone();
        assert_ne!(
            released.as_ref(),
            Some(&live_key),
            "round {round}: live file's object released"
        );
        assert_eq!(c.blob(&unique).await.unwrap().unwrap().object_key, live_key);
        match released {
            // Delete first: the commit recorded its own upload.
            Some(k) => {
                assert_eq!(k, key(&format!("k/{unique}-a")));
                assert_eq!(committed.redundant_object, None);
            }
            // Commit first: it reused the blob, the delete kept it.
            None => assert_eq!(committed.redundant_object, Some(key(&format!("k/{unique}-b")))),
        }
    }
}

conformance! {
    catalog forget_blob_only_removes_the_named_object
        => postgres_forget_blob_only_removes_the_named_object, sqlite_forget_blob_only_removes_the_named_object;
    catalog commit_stored_writes_file_link_usage_and_job
        => postgres_commit_stored_writes_file_link_usage_and_job, sqlite_commit_stored_writes_file_link_usage_and_job;
    catalog commit_stored_needs_a_running_job
        => postgres_commit_stored_needs_a_running_job, sqlite_commit_stored_needs_a_running_job;
    catalog same_unique_id_reuses_the_blob
        => postgres_same_unique_id_reuses_the_blob, sqlite_same_unique_id_reuses_the_blob;
    catalog delete_file_counts_references
        => postgres_delete_file_counts_references, sqlite_delete_file_counts_references;
    catalog delete_and_commit_race_keeps_the_blob_consistent
        => postgres_delete_and_commit_race_keeps_the_blob_consistent,
           sqlite_delete_and_commit_race_keeps_the_blob_consistent;
}
