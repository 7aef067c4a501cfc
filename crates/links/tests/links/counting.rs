//! Download counting and flushing.

use crate::common::{Env, url};
use futures::future::join_all;
use http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use teledrop_core::{LinkToken, NewLink};

#[tokio::test]
async fn downloads_are_counted_in_memory_and_flushed_in_one_write() {
    let env = Env::new().await;
    let a = env.add(&[7; 100]).await;
    let b = env.add(&[8; 100]).await;
    let etag = format!("\"{}\"", a.file.sha256.to_hex());

    // Counted: full GETs and a range from the first byte.
    assert_eq!(env.get(&url(&a), &[]).await.status, StatusCode::OK);
    assert_eq!(env.get(&url(&a), &[]).await.status, StatusCode::OK);
    assert_eq!(
        env.get(&url(&a), &[("range", "bytes=0-9")]).await.status,
        StatusCode::PARTIAL_CONTENT
    );
    assert_eq!(env.get(&url(&b), &[]).await.status, StatusCode::OK);
    // Not counted: HEAD, a range further in, 304, 416.
    assert_eq!(env.head(&url(&a), &[]).await.status, StatusCode::OK);
    assert_eq!(
        env.get(&url(&a), &[("range", "bytes=10-19")]).await.status,
        StatusCode::PARTIAL_CONTENT
    );
    assert_eq!(
        env.get(&url(&a), &[("if-none-match", &etag)]).await.status,
        StatusCode::NOT_MODIFIED
    );
    assert_eq!(
        env.get(&url(&a), &[("range", "bytes=100-")]).await.status,
        StatusCode::RANGE_NOT_SATISFIABLE
    );

    // Nothing written yet.
    assert_eq!(env.catalog.records(), 0);
    assert_eq!(env.file(a.file.id).await.download_count, 0);
    assert!(env.file(a.file.id).await.last_download_at.is_none());

    env.state.flush_downloads().await.unwrap();
    assert_eq!(env.catalog.records(), 1);
    let fa = env.file(a.file.id).await;
    assert_eq!(fa.download_count, 3);
    assert!(fa.last_download_at.is_some());
    assert_eq!(env.file(b.file.id).await.download_count, 1);

    // Nothing new: no write at all.
    env.state.flush_downloads().await.unwrap();
    assert_eq!(env.catalog.records(), 1);
    assert_eq!(env.file(a.file.id).await.download_count, 3);

    env.get(&url(&a), &[]).await;
    env.state.flush_downloads().await.unwrap();
    assert_eq!(env.catalog.records(), 2);
    assert_eq!(env.file(a.file.id).await.download_count, 4);
}

#[tokio::test]
async fn the_flusher_writes_a_last_time_at_shutdown() {
    let env = Env::new().await;
    let c = env.add(b"x").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // An interval far longer than the test: only the final flush writes.
    let state = env.state.clone();
    let flusher = tokio::spawn(async move {
        let config_interval = state.config().flush_interval;
        assert_eq!(config_interval, std::time::Duration::from_secs(2));
        state
            .run_flusher(async move {
                let _ = stopped.await;
            })
            .await;
    });
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::OK);
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::OK);
    stop.send(()).unwrap();
    flusher.await.unwrap();
    assert_eq!(env.file(c.file.id).await.download_count, 2);
}

#[tokio::test]
async fn head_and_later_ranges_do_not_use_up_a_limit() {
    let env = Env::new().await;
    let link = NewLink {
        token: LinkToken::generate(),
        expires_at: None,
        max_downloads: Some(1),
    };
    let c = env.add_file("a", "text/plain", &[1; 100], link).await;
    assert_eq!(env.head(&url(&c), &[]).await.status, StatusCode::OK);
    assert_eq!(env.head(&url(&c), &[]).await.status, StatusCode::OK);
    assert_eq!(
        env.get(&url(&c), &[("range", "bytes=50-")]).await.status,
        StatusCode::PARTIAL_CONTENT
    );
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::OK);
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::GONE);
    assert_eq!(
        env.get(&url(&c), &[("range", "bytes=50-")]).await.status,
        StatusCode::GONE
    );
}

#[tokio::test]
async fn a_flush_between_read_and_admission_cannot_hide_a_download() {
    let env = Env::new().await;
    let link = NewLink {
        token: LinkToken::generate(),
        expires_at: None,
        max_downloads: Some(1),
    };
    let c = env.add_file("a", "text/plain", b"once", link).await;
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::OK);
    // The second request reads a count of 0 from the catalog; then the
    // pending download is written and forgotten before the request
    // decides. It must notice and read again (count 1): 410.
    *env.catalog.flush_inside_next_resolve.lock().unwrap() = Some(env.state.clone());
    let resolves = env.catalog.resolves();
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::GONE);
    assert_eq!(env.catalog.resolves(), resolves + 2);
    assert_eq!(env.file(c.file.id).await.download_count, 1);
}

#[tokio::test]
async fn unlimited_links_do_not_reread_around_flushes() {
    // Every request reads the catalog here: the subject is that read.
    let env = Env::with_config(teledrop_links::LinksConfig {
        lookup_ttl: std::time::Duration::ZERO,
        ..Default::default()
    })
    .await;
    let c = env.add(b"x").await;
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::OK);
    *env.catalog.flush_inside_next_resolve.lock().unwrap() = Some(env.state.clone());
    let resolves = env.catalog.resolves();
    assert_eq!(env.get(&url(&c), &[]).await.status, StatusCode::OK);
    assert_eq!(env.catalog.resolves(), resolves + 1);
    env.state.flush_downloads().await.unwrap();
    assert_eq!(env.file(c.file.id).await.download_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_holds_under_concurrent_requests_and_flushes() {
    let env = Arc::new(Env::new().await);
    let limit = 5;
    let mut links = Vec::new();
    for _ in 0..4 {
        let link = NewLink {
            token: LinkToken::generate(),
            expires_at: None,
            max_downloads: Some(limit),
        };
        links.push(env.add_file("a", "text/plain", &[1; 1000], link).await);
    }

    // Flush over and over while the requests run.
    let done = Arc::new(AtomicBool::new(false));
    let flusher = tokio::spawn({
        let (env, done) = (env.clone(), done.clone());
        async move {
            while !done.load(Ordering::SeqCst) {
                env.state.flush_downloads().await.unwrap();
                tokio::task::yield_now().await;
            }
        }
    });
    let requests = links.iter().flat_map(|c| {
        (0..30).map(|_| {
            let (env, u, id) = (env.clone(), url(c), c.file.id);
            tokio::spawn(async move { (id, env.get(&u, &[]).await.status) })
        })
    });
    let answers: Vec<_> = join_all(requests.collect::<Vec<_>>())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    done.store(true, Ordering::SeqCst);
    flusher.await.unwrap();
    env.state.flush_downloads().await.unwrap();

    for c in &links {
        let statuses: Vec<_> = answers
            .iter()
            .filter(|(id, _)| *id == c.file.id)
            .map(|(_, s)| *s)
            .collect();
        let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        let gone = statuses.iter().filter(|s| **s == StatusCode::GONE).count();
        assert_eq!((ok, gone), (limit as usize, 30 - limit as usize), "{statuses:?}");
        assert_eq!(env.file(c.file.id).await.download_count, limit);
    }
}
