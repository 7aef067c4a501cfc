//! The admin routes every role serves, with the same answers everywhere:
//!
//! - `/healthz`: 200 `ok` while the process can answer at all;
//! - `/readyz`: 200 `ready` when every dependency the role named in its
//!   [`Readiness`] answered within [`READY_TIMEOUT`], else 503
//!   `not ready: catalog, storage failed` naming the ones that did not
//!   (why stays in the logs: an answer may reach anyone who can probe);
//! - `/metrics`: 200, the registry in the Prometheus text format.
//!
//! Every answer carries `Cache-Control: no-store`: a probe or a scrape
//! must never be answered by a cache.

use crate::CONTENT_TYPE;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use http::{HeaderValue, StatusCode, header};
use prometheus_client::registry::Registry;
use std::error::Error;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` waits for each dependency.
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);

type Ping = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The dependencies a role needs to do its work, each with a way to ask
/// whether it answers. A role with none is ready whenever it is alive.
#[derive(Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Ping)>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dependency: `name` is what `/readyz` calls it when `ping`
    /// fails or takes longer than [`READY_TIMEOUT`].
    pub fn check<F, Fut, E>(mut self, name: &'static str, ping: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Error + 'static,
    {
        let ping: Ping = Box::new(move || {
            let fut = ping();
            Box::pin(async move { fut.await.map_err(|e| teledrop_core::report(&e).to_string()) })
        });
        self.checks.push((name, ping));
        self
    }

    /// The names of the dependencies that failed, in the order they were
    /// added; all are asked at once. Each failure is logged with its cause.
    pub async fn failed(&self) -> Vec<&'static str> {
        let asked = self.checks.iter().map(|(name, ping)| async move {
            match tokio::time::timeout(READY_TIMEOUT, ping()).await {
                Ok(Ok(())) => None,
                Ok(Err(detail)) => {
                    tracing::warn!(dependency = name, %detail, "readiness: a dependency does not answer");
                    Some(*name)
                }
                Err(_) => {
                    tracing::warn!(dependency = name, timeout = ?READY_TIMEOUT, "readiness: a dependency timed out");
                    Some(*name)
                }
            }
        });
        futures::future::join_all(asked).await.into_iter().flatten().collect()
    }
}

struct Ops {
    registry: Registry,
    readiness: Readiness,
}

/// `/healthz`, `/readyz` and `/metrics` (see the module docs) for the
/// admin listener. Nothing else is routed: anything else is 404.
pub fn ops_router(registry: Registry, readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Arc::new(Ops { registry, readiness }))
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn healthz() -> Response {
    no_store("ok\n".into_response())
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let failed = ops.readiness.failed().await;
    let r = if failed.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {} failed\n", failed.join(", ")),
        )
    };
    no_store(r.into_response())
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    let text = crate::encode(&ops.registry);
    no_store(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    async fn get(app: &Router, path: &str) -> (StatusCode, http::HeaderMap, String) {
        let request = http::Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(app.clone(), request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = http_body_util::BodyExt::collect(body).await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn every_route_answers_alike_and_uncached() {
        let counter = Counter::<u64>::default();
        counter.inc();
        let mut registry = Registry::default();
        registry.register("teledrop_pings", "Pings", counter.clone());
        let readiness = Readiness::new()
            .check("catalog", || async { Ok::<(), std::io::Error>(()) })
            .check("storage", || async {
                Err::<(), _>(std::io::Error::other("switched off"))
            })
            .check("bus", || async { Err::<(), _>(std::io::Error::other("gone")) });
        let app = ops_router(registry, readiness);

        let (status, headers, body) = get(&app, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
        assert_eq!(headers["cache-control"], "no-store");

        let (status, headers, body) = get(&app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: storage, bus failed\n");
        assert_eq!(headers["cache-control"], "no-store");

        let (status, headers, body) = get(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], CONTENT_TYPE);
        assert_eq!(headers["cache-control"], "no-store");
        assert!(body.contains("teledrop_pings_total 1\n"), "{body}");

        assert_eq!(get(&app, "/download/x").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_role_without_dependencies_is_ready() {
        let app = ops_router(Registry::default(), Readiness::new());
        let (status, _, body) = get(&app, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
    }
}
