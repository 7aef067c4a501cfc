//! A link server whose database pool is exhausted answers at once with
//! 503 and `Retry-After` instead of holding the request: against a real
//! Postgres, with a pool of one connection that the test holds.

use axum::body::Body;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use teledrop_catalog::{Catalog, PgCatalog, PoolConfig, QuotaLockScope};
use teledrop_core::{NewLink, UpdateId, UserId};
use teledrop_links::{LinksConfig, LinksState, router};
use teledrop_storage::Storage;
use tower::ServiceExt;

const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(300);

/// Stores `bytes` as a committed file and returns its link's path.
async fn store(catalog: &PgCatalog, storage: &Storage, bytes: &'static [u8]) -> String {
    let incoming = teledrop_fixtures::document(1, UserId(7), "a.txt", "text/plain", bytes.len() as u64);
    let committed =
        teledrop_fixtures::store_committed(catalog, storage, UpdateId(1), &incoming, bytes, NewLink::unlimited()).await;
    format!("/download/{}", committed.link.token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_is_answered_with_503_and_retry_after() {
    let url = teledrop_testkit::postgres::fresh_database().await;
    let pool = PoolConfig {
        max_connections: 1,
        acquire_timeout: ACQUIRE_TIMEOUT,
    };
    let catalog = PgCatalog::connect_with(&url, pool).await.unwrap();
    catalog.migrate().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::from_url(&format!("file://{}", dir.path().display())).unwrap();
    let path = store(&catalog, &storage, b"hello").await;
    let catalog = std::sync::Arc::new(catalog);
    let app = router(LinksState::new(catalog.clone(), storage, LinksConfig::default()));
    let get = || Request::builder().uri(path.as_str()).body(Body::empty()).unwrap();

    // An open transaction (a quota lock) holds the only connection.
    let held = catalog
        .quota_lock(QuotaLockScope {
            user: UserId(1),
            total: false,
        })
        .await
        .unwrap();
    let started = Instant::now();
    let response = app.clone().oneshot(get()).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    // Answered after the pool's acquire timeout, not after the holder let go.
    assert!(waited >= ACQUIRE_TIMEOUT, "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    held.release().await.unwrap();
    let response = app.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
}
