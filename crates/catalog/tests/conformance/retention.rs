//! Retention: live files by filter, pages, totals, referenced objects,
//! refused filters.

use crate::common::*;
use std::collections::HashSet;
use std::sync::Arc;
use teledrop_catalog::{Catalog, CatalogError, DownloadHit, FileCursor, FileFilter, Totals};
use teledrop_core::{ChatId, FileId, FileRecord, NewLink, ObjectKey, UserId};

async fn live_files_match_the_filter(c: Arc<dyn Catalog>) {
    assert!(c.live_files(&FileFilter::default(), None, 10).await.unwrap().is_empty());
    let a = store(&c, 1, 1, 10, "video/mp4", 100).await;
    let b = store(&c, 2, 1, 11, "VIDEO/WebM", 2000).await;
    let cc = store(&c, 3, 2, 20, "image/png", 50).await;
    let d = store(&c, 4, 2, 10, "application/pdf", 5000).await;
    let e = store(&c, 5, 3, 30, "text/plain", 10).await;
    let f = store(&c, 6, 3, 30, "vid_o/x", 70).await;
    c.delete_file(e.id).await.unwrap();
    let live = [&a, &b, &cc, &d, &f];

    // No condition: every live file, oldest first, as `file` reads them.
    let all = c.live_files(&FileFilter::default(), None, 100).await.unwrap();
    assert_eq!(all.iter().map(|f| f.id).collect::<Vec<_>>(), in_order(&live));
    for file in &all {
        assert_eq!(c.file(file.id).await.unwrap().as_ref(), Some(file));
    }

    // Owners and chats (empty lists place no condition; repeats are harmless).
    assert_eq!(live_ids(&c, &owners(&[1])).await, in_order(&[&a, &b]));
    assert_eq!(live_ids(&c, &owners(&[1, 3, 1])).await, in_order(&[&a, &b, &f]));
    assert_eq!(
        live_ids(&c, &owners(&[3])).await,
        in_order(&[&f]),
        "deleted file left out"
    );
    assert!(live_ids(&c, &owners(&[99])).await.is_empty());
    let chats = |ids: &[i64]| FileFilter {
        chats: ids.iter().copied().map(ChatId).collect(),
        ..FileFilter::default()
    };
    assert_eq!(live_ids(&c, &chats(&[10])).await, in_order(&[&a, &d]));
    assert_eq!(live_ids(&c, &chats(&[20, 30])).await, in_order(&[&cc, &f]));
    assert_eq!(live_ids(&c, &chats(&[])).await, in_order(&live));

    // Size range, bounds included.
    let sizes = |min_size, max_size| FileFilter {
        min_size,
        max_size,
        ..FileFilter::default()
    };
    assert_eq!(live_ids(&c, &sizes(Some(100), None)).await, in_order(&[&a, &b, &d]));
    assert_eq!(live_ids(&c, &sizes(None, Some(100))).await, in_order(&[&a, &cc, &f]));
    assert_eq!(live_ids(&c, &sizes(Some(100), Some(2000))).await, in_order(&[&a, &b]));
    assert_eq!(
        live_ids(&c, &sizes(Some(0), Some(u64::try_from(i64::MAX).unwrap()))).await,
        in_order(&live)
    );
    assert!(live_ids(&c, &sizes(Some(2001), Some(4999))).await.is_empty());

    // MIME patterns, case-insensitive on both sides; any pattern may match.
    assert_eq!(live_ids(&c, &mime(&["video/mp4"])).await, in_order(&[&a]));
    assert_eq!(live_ids(&c, &mime(&["Video/MP4"])).await, in_order(&[&a]));
    assert_eq!(live_ids(&c, &mime(&["video/webm"])).await, in_order(&[&b]));
    assert_eq!(live_ids(&c, &mime(&["video/*"])).await, in_order(&[&a, &b]));
    assert_eq!(live_ids(&c, &mime(&["VIDEO/*"])).await, in_order(&[&a, &b]));
    assert_eq!(live_ids(&c, &mime(&["*/*"])).await, in_order(&live));
    assert_eq!(live_ids(&c, &mime(&["*"])).await, in_order(&live));
    assert_eq!(live_ids(&c, &mime(&[])).await, in_order(&live));
    assert_eq!(
        live_ids(&c, &mime(&["image/png", "application/*"])).await,
        in_order(&[&cc, &d])
    );
    assert_eq!(live_ids(&c, &mime(&["image/png", "*"])).await, in_order(&live));
    assert!(
        live_ids(&c, &mime(&["text/plain"])).await.is_empty(),
        "deleted file left out"
    );
    // LIKE wildcards in the type are plain characters.
    assert_eq!(live_ids(&c, &mime(&["vid_o/*"])).await, in_order(&[&f]));
    assert!(live_ids(&c, &mime(&["v%/*"])).await.is_empty());
    assert!(live_ids(&c, &mime(&["vide_/*"])).await.is_empty());
    assert!(live_ids(&c, &mime(&["video/mp_"])).await.is_empty());

    // Every condition must hold.
    let combined = FileFilter {
        owners: vec![UserId(1), UserId(2)],
        chats: vec![ChatId(10)],
        min_size: Some(100),
        ..FileFilter::default()
    };
    assert_eq!(live_ids(&c, &combined).await, in_order(&[&a, &d]));
    let combined = FileFilter {
        mime_patterns: vec!["video/*".into()],
        ..combined
    };
    assert_eq!(live_ids(&c, &combined).await, in_order(&[&a]));
    let combined = FileFilter {
        max_size: Some(99),
        ..combined
    };
    assert!(live_ids(&c, &combined).await.is_empty());
}

async fn live_files_by_age_and_idleness(fx: Fixture) {
    let c = fx.catalog.clone();
    // Three files made two and one seconds apart by setting their
    // creation times, rather than by waiting.
    let mut files = Vec::new();
    for (i, age) in [(1, 2), (2, 1), (3, 0)] {
        let f = store(&c, i, 1, 10, "video/mp4", 1).await;
        let at = f.created_at - chrono::TimeDelta::seconds(age);
        set_created_at(&fx, f.id, at).await;
        files.push(c.file(f.id).await.unwrap().unwrap());
    }
    let [old1, old2, new] = <[FileRecord; 3]>::try_from(files).unwrap();
    assert!(old1.created_at < old2.created_at && old2.created_at < new.created_at);
    let one_ms = chrono::TimeDelta::milliseconds(1);
    let created = |t| FileFilter {
        created_before: Some(t),
        ..FileFilter::default()
    };
    let idle = |t| FileFilter {
        idle_before: Some(t),
        ..FileFilter::default()
    };

    // Strictly before.
    assert!(live_ids(&c, &created(old1.created_at)).await.is_empty());
    assert_eq!(live_ids(&c, &created(old2.created_at)).await, vec![old1.id]);
    assert_eq!(live_ids(&c, &created(new.created_at)).await, vec![old1.id, old2.id]);
    assert_eq!(
        live_ids(&c, &created(new.created_at + one_ms)).await,
        vec![old1.id, old2.id, new.id]
    );
    // A bound finer than the stored milliseconds is compared exactly.
    let half = chrono::TimeDelta::microseconds(500);
    assert_eq!(live_ids(&c, &created(old1.created_at + half)).await, vec![old1.id]);
    assert!(live_ids(&c, &created(old1.created_at - half)).await.is_empty());

    // Never downloaded: idle since creation.
    assert_eq!(live_ids(&c, &idle(old2.created_at)).await, vec![old1.id]);
    // A download makes a file busy again.
    let later = new.created_at + chrono::TimeDelta::seconds(1);
    c.record_downloads(&[DownloadHit {
        file_id: old1.id,
        count: 1,
        last_at: later,
    }])
    .await
    .unwrap();
    assert!(live_ids(&c, &idle(old2.created_at)).await.is_empty());
    assert_eq!(
        live_ids(&c, &idle(new.created_at + one_ms)).await,
        vec![old2.id, new.id],
        "the downloaded file is not idle"
    );
    assert_eq!(live_ids(&c, &idle(later)).await, vec![old2.id, new.id]);
    assert_eq!(
        live_ids(&c, &idle(later + one_ms)).await,
        vec![old1.id, old2.id, new.id]
    );
    // Still old, whatever its downloads.
    assert_eq!(live_ids(&c, &created(old2.created_at)).await, vec![old1.id]);

    let both = FileFilter {
        created_before: Some(new.created_at),
        idle_before: Some(new.created_at + one_ms),
        ..FileFilter::default()
    };
    assert_eq!(live_ids(&c, &both).await, vec![old2.id]);
    c.delete_file(old2.id).await.unwrap();
    assert!(live_ids(&c, &both).await.is_empty());
}

async fn live_files_pages_in_order(fx: Fixture) {
    let c = fx.catalog.clone();
    assert!(c.live_files(&FileFilter::default(), None, 2).await.unwrap().is_empty());
    let mut files = Vec::new();
    for i in 0..9 {
        files.push(store(&c, i + 1, 1 + i % 2, 10, "video/mp4", 1).await);
    }
    // Three ties in one millisecond, one alone, then four more ties, and
    // the last file older than all of them.
    let t1 = ms(1_700_000_000_000);
    let t2 = ms(1_700_000_000_001);
    let t3 = ms(1_700_000_005_000);
    let times = [t1, t1, t1, t2, t3, t3, t3, t3, ms(1_600_000_000_000)];
    for (f, t) in files.iter_mut().zip(times) {
        set_created_at(&fx, f.id, t).await;
        f.created_at = t;
    }
    let all: Vec<&FileRecord> = files.iter().collect();
    let expected = in_order(&all);
    assert_eq!(expected[0], files[8].id);
    assert_eq!(live_ids(&c, &FileFilter::default()).await, expected);

    // Walk with several page sizes: every file exactly once, in order.
    async fn walk(c: &Arc<dyn Catalog>, filter: &FileFilter, limit: u32) -> Vec<FileId> {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = c.live_files(filter, after, limit).await.expect("page");
            assert!(page.len() <= limit as usize, "{} > {limit}", page.len());
            let Some(last) = page.last() else { break };
            after = Some(FileCursor::of(last));
            seen.extend(page.iter().map(|f| f.id));
        }
        seen
    }
    for limit in [1, 2, 3, 100] {
        assert_eq!(walk(&c, &FileFilter::default(), limit).await, expected, "limit {limit}");
    }
    assert!(c.live_files(&FileFilter::default(), None, 0).await.unwrap().is_empty());

    // Pages of limit 2 break inside the ties.
    let page = c.live_files(&FileFilter::default(), None, 2).await.unwrap();
    assert_eq!(page.iter().map(|f| f.id).collect::<Vec<_>>(), expected[..2]);
    let next = c
        .live_files(&FileFilter::default(), Some(FileCursor::of(&page[1])), 2)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|f| f.id).collect::<Vec<_>>(), expected[2..4]);

    // With a filter: the same walk over the matching files only.
    let odd = owners(&[2]);
    let expected_odd: Vec<FileId> = expected
        .iter()
        .copied()
        .filter(|id| files.iter().any(|f| f.id == *id && f.owner == UserId(2)))
        .collect();
    assert_eq!(expected_odd.len(), 4);
    assert_eq!(walk(&c, &odd, 2).await, expected_odd);

    // A cursor made by hand: the smallest id of a millisecond starts at
    // it, a time between two milliseconds starts at the next one.
    let nil = FileCursor {
        created_at: t1,
        id: FileId::from_uuid(uuid::Uuid::nil()),
    };
    let from_t1 = c.live_files(&FileFilter::default(), Some(nil), 100).await.unwrap();
    assert_eq!(from_t1.iter().map(|f| f.id).collect::<Vec<_>>(), expected[1..]);
    let between = FileCursor {
        created_at: t1 + chrono::TimeDelta::microseconds(300),
        id: FileId::from_uuid(uuid::Uuid::nil()),
    };
    let after_t1 = c.live_files(&FileFilter::default(), Some(between), 100).await.unwrap();
    assert_eq!(after_t1.iter().map(|f| f.id).collect::<Vec<_>>(), expected[4..]);

    // A file deleted between two pages is not returned; the walk goes on.
    let page = c.live_files(&FileFilter::default(), None, 3).await.unwrap();
    c.delete_file(expected[4]).await.unwrap();
    let rest = c
        .live_files(&FileFilter::default(), Some(FileCursor::of(&page[2])), 100)
        .await
        .unwrap();
    let mut want = expected[3..].to_vec();
    want.retain(|id| *id != expected[4]);
    assert_eq!(rest.iter().map(|f| f.id).collect::<Vec<_>>(), want);
}

async fn live_totals_agree_with_the_files(c: Arc<dyn Catalog>) {
    assert_eq!(c.live_totals(&FileFilter::default()).await.unwrap(), Totals::default());
    assert!(c.live_totals_by_owner(&FileFilter::default()).await.unwrap().is_empty());

    // Owner 10 sorts after owner 2 as a number, not as text.
    let a = store(&c, 1, 10, 1, "video/mp4", 100).await;
    let b = store(&c, 2, 10, 1, "video/webm", 200).await;
    let img = store(&c, 3, 2, 1, "image/png", 50).await;
    let z = store(&c, 4, 3, 1, "video/mp4", 7).await;

    let everything = FileFilter::default();
    assert_eq!(c.live_totals(&everything).await.unwrap(), totals(4, 357));
    assert_eq!(
        c.live_totals_by_owner(&everything).await.unwrap(),
        vec![
            (UserId(2), totals(1, 50)),
            (UserId(3), totals(1, 7)),
            (UserId(10), totals(2, 300)),
        ]
    );
    // Under no condition, per owner is exactly the usage.
    for (user, t) in c.live_totals_by_owner(&everything).await.unwrap() {
        assert_eq!(usage(&c, user.0).await, (t.bytes, t.files));
    }

    let videos = mime(&["video/*"]);
    assert_eq!(c.live_totals(&videos).await.unwrap(), totals(3, 307));
    assert_eq!(
        c.live_totals_by_owner(&videos).await.unwrap(),
        vec![(UserId(3), totals(1, 7)), (UserId(10), totals(2, 300))],
        "owner 2 has no video"
    );
    // The same numbers live_files gives.
    for filter in [everything.clone(), videos.clone(), owners(&[10]), owners(&[4])] {
        let files = c.live_files(&filter, None, 100).await.unwrap();
        let sum = Totals {
            files: files.len() as u64,
            bytes: files.iter().map(|f| f.size).sum(),
        };
        assert_eq!(c.live_totals(&filter).await.unwrap(), sum, "{filter:?}");
        let per_owner = c.live_totals_by_owner(&filter).await.unwrap();
        assert_eq!(
            per_owner.iter().map(|(_, t)| t.files).sum::<u64>(),
            sum.files,
            "{filter:?}"
        );
        assert_eq!(
            per_owner.iter().map(|(_, t)| t.bytes).sum::<u64>(),
            sum.bytes,
            "{filter:?}"
        );
    }
    assert_eq!(c.live_totals(&owners(&[4])).await.unwrap(), Totals::default());

    c.delete_file(a.id).await.unwrap();
    assert_eq!(c.live_totals(&everything).await.unwrap(), totals(3, 257));
    assert_eq!(c.live_totals(&videos).await.unwrap(), totals(2, 207));
    c.delete_file(z.id).await.unwrap();
    assert_eq!(
        c.live_totals_by_owner(&videos).await.unwrap(),
        vec![(UserId(10), totals(1, 200))]
    );
    assert_eq!(
        c.live_totals_by_owner(&everything).await.unwrap(),
        vec![(UserId(2), totals(1, 50)), (UserId(10), totals(1, 200))]
    );
    c.delete_file(b.id).await.unwrap();
    c.delete_file(img.id).await.unwrap();
    assert_eq!(c.live_totals(&everything).await.unwrap(), Totals::default());
    assert!(c.live_totals_by_owner(&everything).await.unwrap().is_empty());
}

async fn referenced_objects_are_the_blob_keys(c: Arc<dyn Catalog>) {
    assert!(c.referenced_objects(&[]).await.unwrap().is_empty());
    let set = |keys: &[&str]| keys.iter().map(|k| key(k)).collect::<HashSet<_>>();

    // Two files share the blob of "shared"; the second upload's key is redundant.
    let j1 = running_job(&c, 1, &incoming(1, "shared")).await;
    let first = c
        .commit_stored(j1, stored_blob("k/1500-live", 10, b"s"), NewLink::unlimited())
        .await
        .unwrap();
    let j2 = running_job(&c, 2, &incoming(2, "shared")).await;
    let second = c
        .commit_stored(j2, stored_blob("k/shared-again", 10, b"s"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(second.redundant_object, Some(key("k/shared-again")));
    let j3 = running_job(&c, 3, &incoming(1, "lone")).await;
    let lone = c
        .commit_stored(j3, stored_blob("k/2400-live", 20, b"l"), NewLink::unlimited())
        .await
        .unwrap();

    let asked: Vec<ObjectKey> = [
        "k/1500-live",
        "k/2400-live",
        "k/shared-again",
        "k/nothing",
        "k/1500-live",
    ]
    .iter()
    .map(|k| key(k))
    .collect();
    assert_eq!(
        c.referenced_objects(&asked).await.unwrap(),
        set(&["k/1500-live", "k/2400-live"])
    );

    // Many keys at once, the named ones far apart in the list.
    let mut many: Vec<ObjectKey> = (0..2500).map(|i| key(&format!("k/{i:04}"))).collect();
    many.insert(1500, key("k/1500-live"));
    many.insert(2400, key("k/2400-live"));
    assert_eq!(
        c.referenced_objects(&many).await.unwrap(),
        set(&["k/1500-live", "k/2400-live"])
    );

    // Deleting the last file of a blob releases its key.
    assert_eq!(c.delete_file(lone.file.id).await.unwrap(), Some(key("k/2400-live")));
    assert_eq!(c.referenced_objects(&many).await.unwrap(), set(&["k/1500-live"]));
    assert_eq!(c.delete_file(first.file.id).await.unwrap(), None);
    assert_eq!(
        c.referenced_objects(&asked).await.unwrap(),
        set(&["k/1500-live"]),
        "still used by the second file"
    );
    assert_eq!(c.delete_file(second.file.id).await.unwrap(), Some(key("k/1500-live")));
    assert!(c.referenced_objects(&many).await.unwrap().is_empty());
    assert!(c.referenced_objects(&asked).await.unwrap().is_empty());
}

async fn malformed_filters_are_refused(c: Arc<dyn Catalog>) {
    let file = store(&c, 1, 1, 10, "video/mp4", 5).await;
    let bad_patterns = [
        "",
        "video",
        "video/mp4/x",
        "/mp4",
        "video/",
        "/",
        "*/mp4",
        "vid*/*",
        "video/mp*",
        "video/*mp4",
        "**",
        "*/**",
        " video/mp4",
        "vidéo/mp4",
    ];
    let mut filters: Vec<FileFilter> = bad_patterns.iter().map(|p| mime(&[p])).collect();
    // One bad pattern among good ones spoils the filter.
    filters.push(mime(&["video/*", "*", "nope"]));
    // Sizes the database cannot hold.
    filters.push(FileFilter {
        min_size: Some(u64::MAX),
        ..FileFilter::default()
    });
    filters.push(FileFilter {
        max_size: Some(u64::try_from(i64::MAX).unwrap() + 1),
        ..FileFilter::default()
    });
    for filter in &filters {
        let files = c.live_files(filter, None, 10).await;
        assert!(
            matches!(files, Err(CatalogError::InvalidFilter(_))),
            "{filter:?}: {files:?}"
        );
        let t = c.live_totals(filter).await;
        assert!(matches!(t, Err(CatalogError::InvalidFilter(_))), "{filter:?}: {t:?}");
        let by_owner = c.live_totals_by_owner(filter).await;
        assert!(
            matches!(by_owner, Err(CatalogError::InvalidFilter(_))),
            "{filter:?}: {by_owner:?}"
        );
    }
    let Err(err) = c.live_files(&mime(&["video"]), None, 10).await else {
        panic!("refused")
    };
    assert_eq!(err.label(), "invalid_filter");
    assert!(err.to_string().contains("\"video\""), "{err}");
    // The catalog is none the worse.
    assert_eq!(live_ids(&c, &mime(&["video/*"])).await, vec![file.id]);
}

conformance! {
    catalog live_files_match_the_filter => postgres_live_files_match_the_filter, sqlite_live_files_match_the_filter;
    fixture live_files_by_age_and_idleness
        => postgres_live_files_by_age_and_idleness, sqlite_live_files_by_age_and_idleness;
    fixture live_files_pages_in_order => postgres_live_files_pages_in_order, sqlite_live_files_pages_in_order;
    catalog live_totals_agree_with_the_files
        => postgres_live_totals_agree_with_the_files, sqlite_live_totals_agree_with_the_files;
    catalog referenced_objects_are_the_blob_keys
        => postgres_referenced_objects_are_the_blob_keys, sqlite_referenced_objects_are_the_blob_keys;
    catalog malformed_filters_are_refused
        => postgres_malformed_filters_are_refused, sqlite_malformed_filters_are_refused;
}
