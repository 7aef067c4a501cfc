//! 404 and 410.

use crate::common::{Env, content, url};
use chrono::{Duration, Utc};
use http::StatusCode;
use teledrop_catalog::Catalog;
use teledrop_core::{LinkToken, NewLink};

/// Longer than the default lookup lifetime (1 s), with room for a loaded
/// machine.
const WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

#[tokio::test]
async fn malformed_tokens_are_404_without_asking_the_catalog() {
    let env = Env::new().await;
    let c = env.add(b"x").await;
    let token = c.link.token.to_string();
    for bad in [
        "not-a-token".to_owned(),
        token.to_uppercase(),
        token.replace('-', ""),
        format!("{token}x"),
        format!("%20{token}"),
        uuid::Uuid::now_v7().to_string(),
        "..%2F..%2Fetc%2Fpasswd".to_owned(),
        "%FF%FE".to_owned(),
    ] {
        let r = env.get(&format!("/download/{bad}"), &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
        assert!(r.text().contains("This link does not exist"), "{bad}");
        assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
        assert_eq!(r.header("cache-control"), "no-store");
    }
    assert_eq!(env.catalog.resolves(), 0);
    env.state.flush_downloads().await.unwrap();
    assert_eq!(env.catalog.records(), 0);
    assert_eq!(env.file(c.file.id).await.download_count, 0);
}

#[tokio::test]
async fn unknown_tokens_are_404_and_change_nothing() {
    let env = Env::new().await;
    let c = env.add(b"x").await;
    let unknown = LinkToken::generate();
    let r = env.get(&format!("/download/{unknown}"), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("This link does not exist"));
    let r = env.head(&format!("/download/{unknown}"), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.is_empty());
    assert_eq!(env.catalog.resolves(), 2);
    env.state.flush_downloads().await.unwrap();
    assert_eq!(env.catalog.records(), 0);
    assert_eq!(env.file(c.file.id).await.download_count, 0);
}

#[tokio::test]
async fn deleted_files_are_410_deleted() {
    let env = Env::new().await;
    let c = env.add(b"x").await;
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::OK);
    env.catalog.delete_file(c.file.id).await.unwrap();
    // The lookup of the first request may be reused for up to a second.
    let r = teledrop_testkit::poll_until(WITHIN, || async {
        let r = env.get(&url(&c), &[]).await;
        (r.status == StatusCode::GONE).then_some(r)
    })
    .await
    .expect("the deleted file's link answers 410");
    // Its links were revoked with it; the page gives the real reason.
    assert!(
        r.text().contains("The file behind this link was deleted"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("cache-control"), "no-store");
    let r = env.head(&url(&c), &[]).await;
    assert_eq!(r.status, StatusCode::GONE);
}

#[tokio::test]
async fn expired_links_are_410() {
    let env = Env::new().await;
    let link = NewLink {
        token: LinkToken::generate(),
        expires_at: Some(Utc::now() - Duration::minutes(1)),
        max_downloads: None,
    };
    let c = env.add_file("a.txt", "text/plain", b"x", link).await;
    let r = env.get(&url(&c), &[]).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert!(r.text().contains("expired"), "{}", r.text());
    // Not even a conditional request or a range gets through.
    let etag = format!("\"{}\"", c.file.sha256.to_hex());
    assert_eq!(
        env.get(&url(&c), &[("if-none-match", &etag)]).await.status,
        StatusCode::GONE
    );
    assert_eq!(
        env.get(&url(&c), &[("range", "bytes=5-")]).await.status,
        StatusCode::GONE
    );
}

#[tokio::test]
async fn download_limit_is_enforced_before_any_flush() {
    let env = Env::new().await;
    let link = NewLink {
        token: LinkToken::generate(),
        expires_at: None,
        max_downloads: Some(1),
    };
    let c = env.add_file("a.txt", "text/plain", b"once", link).await;
    let first = env.get(&url(&c), &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(&first.body[..], b"once");
    let second = env.get(&url(&c), &[]).await;
    assert_eq!(second.status, StatusCode::GONE);
    assert!(second.text().contains("Download limit reached"), "{}", second.text());
    assert_eq!(env.head(&url(&c), &[]).await.status, StatusCode::GONE);
    // And after the flush, from the catalog's count alone.
    env.state.flush_downloads().await.unwrap();
    assert_eq!(env.file(c.file.id).await.download_count, 1);
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::GONE);
}

#[tokio::test]
async fn missing_objects_are_410_and_not_counted() {
    let env = Env::new().await;
    let c = env.add(b"x").await;
    env.storage.delete(&c.file.object_key).await.unwrap();
    let r = env.get(&url(&c), &[]).await;
    assert_eq!(r.status, StatusCode::GONE);
    assert!(r.text().contains("no longer available"), "{}", r.text());
    assert_eq!(env.head(&url(&c), &[]).await.status, StatusCode::GONE);
    env.state.flush_downloads().await.unwrap();
    assert_eq!(env.catalog.records(), 0);
    assert_eq!(env.file(c.file.id).await.download_count, 0);
}

#[tokio::test]
async fn a_lookup_is_reused_briefly_and_a_deletion_still_takes_effect() {
    let env = Env::new().await;
    let c = env.add(b"x").await;
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::OK);
    let after_first = env.catalog.resolves();
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::OK);
    assert_eq!(
        env.catalog.resolves(),
        after_first,
        "a second request within the lookup lifetime asks no catalog"
    );
    // Deleting the file revokes its links.
    env.catalog.delete_file(c.file.id).await.unwrap();
    teledrop_testkit::poll_until(WITHIN, || async {
        (env.get(&url(&c), &[]).await.status == StatusCode::GONE).then_some(())
    })
    .await
    .expect("the link answers 410 once its lookup expires");
    assert!(
        env.catalog.resolves() > after_first,
        "the expired lookup was read again"
    );
}

#[tokio::test]
async fn small_files_are_served_from_their_kept_lookup_and_large_ones_are_not() {
    // A lifetime no loaded machine outlasts: the subject is what is kept.
    let env = Env::with_config(teledrop_links::LinksConfig {
        lookup_ttl: std::time::Duration::from_secs(600),
        ..Default::default()
    })
    .await;
    let small_bytes = content(64 * 1024);
    let large_bytes = content(64 * 1024 + 1);
    let (small, large) = (env.add(&small_bytes).await, env.add(&large_bytes).await);
    for c in [&small, &large] {
        assert_eq!(env.get(&url(c), &[]).await.status, StatusCode::OK);
        env.storage.delete(&c.file.object_key).await.unwrap();
    }
    // The small file's bytes came with its lookup: whole, in ranges, and
    // HEAD, all without the (now missing) object.
    let r = env.get(&url(&small), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == small_bytes, "wrong bytes from memory");
    assert_eq!(r.header("content-length"), "65536");
    for (range, first, last) in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=-10", 65526, 65535),
    ] {
        let r = env.get(&url(&small), &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.header("content-range"),
            format!("bytes {first}-{last}/65536"),
            "{range}"
        );
        assert_eq!(r.header("content-length"), (last - first + 1).to_string(), "{range}");
        assert!(r.body == small_bytes[first..=last], "{range}: wrong bytes");
    }
    let r = env.get(&url(&small), &[("range", "bytes=70000-")]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(env.head(&url(&small), &[]).await.status, StatusCode::OK);
    // A file over 64 KiB is streamed every time, never kept.
    assert_eq!(env.get(&url(&large), &[]).await.status, StatusCode::GONE);
    // Every download was counted, from memory or not.
    env.state.flush_downloads().await.unwrap();
    assert_eq!(env.file(small.file.id).await.download_count, 3);
}
