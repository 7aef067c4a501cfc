//! The link server: `GET`/`HEAD /download/{token}` streams a stored file
//! to whoever holds its link.
//!
//! - A token is parsed before anything else; a malformed one is answered
//!   404 without touching the catalog, an unknown one 404 too.
//! - A link that no longer serves (expired, revoked, file deleted,
//!   download limit reached) is answered 410 with a page that says why;
//!   so is a live link whose object has vanished from storage.
//! - The file is streamed from object storage, never buffered (a file of
//!   at most 64 KiB keeps its bytes with its token's lookup for the
//!   lookup's lifetime, see `lookup`), with
//!   validators (`ETag` = SHA-256, `Last-Modified` = stored time),
//!   single byte ranges (206/416, `If-Range`), conditional requests (304),
//!   an RFC 6266/5987 `Content-Disposition`, and a `Content-Type` that
//!   never lets an uploaded document run in the browser
//!   ([`content_type`]). `?inline` shows passive types (images, audio,
//!   video, PDF, plain text) in the browser.
//! - Downloads are counted in memory and written to the catalog in
//!   batches by [`LinksState::run_flusher`]; a link's download limit is
//!   checked against the catalog's count plus the counts not yet written.
//! - On a separate router for the admin listener ([`admin_router`]):
//!   `/healthz` says the process is alive, `/readyz` that the catalog and
//!   the object store answer, `/metrics` counts answers by status and bytes
//!   served (Prometheus text). The public router serves downloads only.
//!
//! Logs never carry a whole token: at most its first 8 characters.

pub mod conditional;
pub mod content_type;
mod counter;
pub mod disposition;
mod download;
mod error;
mod lookup;
mod metrics;
pub mod range;
mod response;

pub use error::LinksError;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use teledrop_catalog::Catalog;
use teledrop_storage::Storage;
use tracing::Instrument;

use counter::{DownloadCounter, FlushGuard};
use error::ErrorLabel;
use lookup::LookupCache;
use metrics::LinksMetrics;
use teledrop_metrics::Render;

/// How long a readiness probe waits for each dependency.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// Settings of the link server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinksConfig {
    /// How often counted downloads are written to the catalog.
    pub flush_interval: Duration,
    /// Whether `?inline` may show previewable files in the browser; when
    /// off every file is an attachment.
    pub inline_preview: bool,
    /// How long a token lookup of a link without a download limit may be
    /// reused (`lookup`); zero looks every request up.
    pub lookup_ttl: Duration,
}

impl Default for LinksConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(2),
            inline_preview: true,
            lookup_ttl: Duration::from_secs(1),
        }
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct LinksState {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Arc<dyn Catalog>,
    storage: Storage,
    config: LinksConfig,
    counter: DownloadCounter,
    lookups: LookupCache,
    /// Held exclusively by a flush, which also serialises flushes (the
    /// periodic one, the final one, explicit ones); held shared by a
    /// limited-link admission that lost the optimistic race too often, so
    /// its catalog read and its decision cannot straddle a flush.
    flush_gate: tokio::sync::RwLock<()>,
    metrics: LinksMetrics,
    /// Served on `/metrics` after the link server's own (standalone adds
    /// the worker's).
    more_metrics: Vec<Arc<dyn Render>>,
}

impl LinksState {
    pub fn new(catalog: Arc<dyn Catalog>, storage: Storage, config: LinksConfig) -> Self {
        Self::with_more_metrics(catalog, storage, config, Vec::new())
    }

    /// Like [`LinksState::new`], with `/metrics` also rendering `more`
    /// (another role's metrics in the same process).
    pub fn with_more_metrics(
        catalog: Arc<dyn Catalog>,
        storage: Storage,
        config: LinksConfig,
        more: Vec<Arc<dyn Render>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                storage,
                lookups: LookupCache::new(config.lookup_ttl),
                config,
                counter: DownloadCounter::default(),
                flush_gate: tokio::sync::RwLock::new(()),
                metrics: LinksMetrics::default(),
                more_metrics: more,
            }),
        }
    }

    pub fn config(&self) -> &LinksConfig {
        &self.inner.config
    }

    /// Writes the downloads counted since the last flush with one
    /// `record_downloads` call. On failure (or when cancelled) the counts
    /// stay in memory for the next flush.
    pub async fn flush_downloads(&self) -> Result<(), LinksError> {
        let inner = &self.inner;
        let _exclusive = inner.flush_gate.write().await;
        let Some(hits) = inner.counter.begin_flush() else {
            return Ok(());
        };
        let guard = FlushGuard::new(&inner.counter);
        let result = inner.catalog.record_downloads(&hits).await;
        guard.end(result.is_ok());
        result?;
        tracing::debug!(
            files = hits.len(),
            downloads = hits.iter().map(|h| h.count).sum::<u64>(),
            "download counts recorded"
        );
        Ok(())
    }

    /// Flushes download counts every [`LinksConfig::flush_interval`] until
    /// `shutdown` completes, then once more.
    pub async fn run_flusher(self, shutdown: impl Future<Output = ()> + Send) {
        let period = self.inner.config.flush_interval.max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {
                    if let Err(e) = self.flush_downloads().await {
                        tracing::warn!(error = e.label(), detail = %e, "recording download counts failed; will retry");
                    }
                }
            }
        }
        if let Err(e) = self.flush_downloads().await {
            tracing::error!(
                error = e.label(),
                detail = %e,
                "recording download counts at shutdown failed; they are lost"
            );
        }
    }
}

/// The path of the download route, as its span and metrics name it.
const DOWNLOAD_ROUTE: &str = "/download/{token}";

/// The link server's public routes: `/download/{token}` (GET and HEAD),
/// each request in its own tracing span. Anything else is 404.
pub fn router(state: LinksState) -> Router {
    Router::new()
        .route(DOWNLOAD_ROUTE, get(download::download))
        .layer(axum::middleware::from_fn_with_state(state.clone(), trace_request))
        .with_state(state)
}

/// `/healthz`, `/readyz` and `/metrics` of the same state, for the admin
/// listener. Without `trace_request`: these are not downloads, and
/// `/readyz` logs which dependency failed itself.
pub fn admin_router(state: LinksState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn metrics_text(State(state): State<LinksState>) -> Response {
    let inner = &state.inner;
    let mut sources: Vec<&dyn Render> = vec![&inner.metrics];
    sources.extend(inner.more_metrics.iter().map(|m| &**m));
    let mut r = teledrop_metrics::render(&sources).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(teledrop_metrics::CONTENT_TYPE),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn healthz() -> Response {
    let mut r = "ok\n".into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn readyz(State(state): State<LinksState>) -> Response {
    let inner = &state.inner;
    let (catalog, storage) = tokio::join!(
        tokio::time::timeout(READY_TIMEOUT, inner.catalog.ping()),
        tokio::time::timeout(READY_TIMEOUT, inner.storage.ping()),
    );
    let mut failed = Vec::new();
    match catalog {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = e.label(), detail = %e, "readiness: the catalog does not answer");
            failed.push("catalog");
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_TIMEOUT, "readiness: the catalog timed out");
            failed.push("catalog");
        }
    }
    match storage {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = e.label(), detail = %e, "readiness: storage does not answer");
            failed.push("storage");
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_TIMEOUT, "readiness: storage timed out");
            failed.push("storage");
        }
    }
    let (status, body) = if failed.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {} failed\n", failed.join(", ")),
        )
    };
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// One span per request, named by its route template (never the path,
/// which holds the token); the handler adds a token prefix. Downloads'
/// statuses are counted here, where every answer passes, errors included.
async fn trace_request(State(state): State<LinksState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "link_request",
        method = %request.method(),
        route = %route,
        token = tracing::field::Empty,
        file_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    if route == DOWNLOAD_ROUTE {
        state.inner.metrics.answered(response.status());
    }
    let status = response.status().as_u16();
    span.record("status", status);
    let error = response.extensions().get::<ErrorLabel>().map(|l| l.0);
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| match status {
        500.. => tracing::warn!(status, error, elapsed_ms, "request failed"),
        400.. => tracing::info!(status, error, elapsed_ms, "request refused"),
        _ => tracing::debug!(status, elapsed_ms, "request answered"),
    });
    response
}
