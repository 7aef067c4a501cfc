//! /healthz and /readyz, on the admin routes only.

use crate::common::Env;
use http::StatusCode;
use std::sync::atomic::Ordering;

#[tokio::test]
async fn healthz_is_ok() {
    let env = Env::new().await;
    let r = env.admin_get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text().trim(), "ok");
}

#[tokio::test]
async fn the_public_routes_have_no_probes_or_metrics() {
    let env = Env::new().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(env.get(path, &[]).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    // Nor do the admin routes serve downloads.
    let c = env.add(b"bytes").await;
    assert_eq!(env.get(&crate::common::url(&c), &[]).await.status, StatusCode::OK);
    assert_eq!(
        env.admin_get(&crate::common::url(&c)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn readyz_reports_each_dependency() {
    let env = Env::new().await;
    let r = env.admin_get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    env.catalog.fail_ping.store(true, Ordering::SeqCst);
    let r = env.admin_get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.text().trim(), "not ready: catalog failed");
    // The reason stays in the logs, not in the answer.
    assert!(!r.text().contains("switched off"));
}

#[tokio::test]
async fn readyz_notices_a_vanished_store() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new().await;
    // A store whose folder is removed after it was opened.
    let objects = dir.path().join("gone");
    let storage = teledrop_storage::Storage::from_url(&format!("file://{}", objects.display())).unwrap();
    std::fs::remove_dir_all(&objects).ok();
    let state = teledrop_links::LinksState::new(env.catalog.clone(), storage, Default::default());
    let app = teledrop_links::admin_router(state);
    let response = tower::ServiceExt::oneshot(
        app,
        http::Request::builder()
            .uri("/readyz")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    assert_eq!(String::from_utf8_lossy(&body).trim(), "not ready: storage failed");
}
