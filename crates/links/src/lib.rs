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
//! - On a separate router for the admin listener ([`admin_router`], the
//!   shared `teledrop_metrics::ops_router`): `/healthz` says the process
//!   is alive, `/readyz` that the catalog and the object store answer,
//!   `/metrics` counts answers by status, bytes served and request
//!   latency. The public router serves downloads only.
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
use axum::response::Response;
use axum::routing::get;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use teledrop_catalog::Catalog;
use teledrop_core::report;
use teledrop_storage::Storage;
use tracing::Instrument;

use counter::{DownloadCounter, FlushGuard};
use error::ErrorLabel;
use lookup::LookupCache;
use metrics::{LinksMetrics, Route};
use teledrop_metrics::{Readiness, Register, Registry};

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
}

impl LinksState {
    pub fn new(catalog: Arc<dyn Catalog>, storage: Storage, config: LinksConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog,
                storage,
                lookups: LookupCache::new(config.lookup_ttl),
                config,
                counter: DownloadCounter::default(),
                flush_gate: tokio::sync::RwLock::new(()),
                metrics: LinksMetrics::default(),
            }),
        }
    }

    /// What `/readyz` asks: the catalog and the object store.
    pub fn readiness(&self) -> Readiness {
        let (catalog, storage) = (self.inner.catalog.clone(), self.inner.storage.clone());
        Readiness::new()
            .check("catalog", move || {
                let catalog = catalog.clone();
                async move { catalog.ping().await }
            })
            .check("storage", move || {
                let storage = storage.clone();
                async move { storage.ping().await }
            })
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
                        tracing::warn!(error = e.label(), detail = %report(&e), "recording download counts failed; will retry");
                    }
                }
            }
        }
        if let Err(e) = self.flush_downloads().await {
            tracing::error!(
                error = e.label(),
                detail = %report(&e),
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
/// listener: the shared ops router with the link server's metrics and
/// [`LinksState::readiness`]. Without `trace_request`: these are not
/// downloads.
pub fn admin_router(state: LinksState) -> Router {
    teledrop_metrics::ops_router(teledrop_metrics::registry(&[&state]), state.readiness())
}

impl Register for LinksState {
    fn register(&self, registry: &mut Registry) {
        self.inner.metrics.register(registry);
    }
}

/// One span per request, named by its route template (never the path,
/// which holds the token); the handler adds a token prefix. Answers are
/// counted and timed here, where every answer passes, errors included.
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
    let took = started.elapsed();
    let matched = if route == DOWNLOAD_ROUTE {
        Route::download
    } else {
        Route::unmatched
    };
    state.inner.metrics.answered(matched, response.status(), took);
    let status = response.status().as_u16();
    span.record("status", status);
    let error = response.extensions().get::<ErrorLabel>().map(|l| l.0);
    let elapsed_ms = took.as_secs_f64() * 1000.0;
    span.in_scope(|| match status {
        500.. => tracing::warn!(status, error, elapsed_ms, "request failed"),
        400.. => tracing::info!(status, error, elapsed_ms, "request refused"),
        _ => tracing::debug!(status, elapsed_ms, "request answered"),
    });
    response
}
