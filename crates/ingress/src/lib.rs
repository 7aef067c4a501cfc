//! The webhook ingress: Telegram POSTs updates here; each is published to
//! the bus and answered 2xx only once the bus holds it.
//!
//! Per request, in this order: secret header, compared in constant time
//! (401 before a byte of the body is read: a stranger cannot make us read
//! or buffer anything) → body size limit (413) → `update_id` →
//! publish with `Nats-Msg-Id = update_id` and wait for the bus's ack → 200.
//! When the bus does not ack in time: 503 with `Retry-After`, so Telegram
//! retries and nothing is half done. An authenticated body that is not an
//! update goes to the dead-letter subject and is answered 200: Telegram
//! would otherwise retry it forever and block that chat behind it.

mod metrics;

pub use metrics::{Metrics, Outcome};

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body as RequestBody, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::BytesMut;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use teledrop_bus::{BusError, Envelope};
use teledrop_core::report;
use tracing::{debug, warn};

/// The header Telegram sends with the secret given to `setWebhook`.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// The webhook secret: 1–256 characters of `A-Z a-z 0-9 _ -`, as Telegram
/// requires. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid webhook secret: use 1-256 characters of A-Z a-z 0-9 _ -")]
pub struct InvalidWebhookSecret;

impl FromStr for WebhookSecret {
    type Err = InvalidWebhookSecret;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidWebhookSecret)
        }
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([redacted])")
    }
}

impl WebhookSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares without an early exit, so timing reveals nothing about
    /// how much of a guess was right (teloxide's listener uses `==`).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        let mut diff = ours.len() ^ candidate.len();
        for (i, o) in ours.iter().enumerate() {
            let c = candidate.get(i).copied().unwrap_or(0);
            diff |= usize::from(o ^ c);
        }
        diff == 0
    }
}

/// Where accepted updates go.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Returns once the update is durably held.
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError>;
    /// Keeps an authenticated body that is not an update, for inspection.
    async fn dead_letter(&self, body: Bytes, reason: &str) -> Result<(), BusError>;
    /// Whether the sink can take updates now (readiness).
    async fn ready(&self) -> Result<(), BusError>;
}

#[async_trait]
impl Sink for teledrop_bus::JetStreamBus {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        teledrop_bus::Bus::publish(self, envelope).await
    }
    async fn dead_letter(&self, body: Bytes, reason: &str) -> Result<(), BusError> {
        self.publish_dead_letter(body, reason).await
    }
    async fn ready(&self) -> Result<(), BusError> {
        self.ping().await
    }
}

#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub secret: WebhookSecret,
    /// Largest body accepted. Telegram's updates are a few KiB.
    pub max_body_bytes: usize,
    /// How long to wait for the bus to hold an update before answering 503.
    pub publish_timeout: Duration,
    /// The `Retry-After` sent with a 503.
    pub retry_after: Duration,
}

impl IngressConfig {
    pub fn new(secret: WebhookSecret) -> Self {
        Self {
            secret,
            max_body_bytes: 1 << 20,
            publish_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(2),
        }
    }
}

struct Inner {
    sink: Arc<dyn Sink>,
    config: IngressConfig,
    metrics: Metrics,
}

/// The path Telegram is told to POST to.
pub const WEBHOOK_PATH: &str = "/telegram/webhook";

/// The public routes: `POST /telegram/webhook` and nothing else.
pub fn router(sink: Arc<dyn Sink>, config: IngressConfig, metrics: Metrics) -> Router {
    let state = Arc::new(Inner { sink, config, metrics });
    Router::new()
        // The handler reads and limits the body itself (`read_body`).
        .route(WEBHOOK_PATH, post(webhook).layer(DefaultBodyLimit::disable()))
        .with_state(state)
}

/// `/healthz`, `/readyz` (asks the bus) and `/metrics`, for the admin
/// listener: the shared ops router; `metrics` is a clone of the one given
/// to [`router`].
pub fn admin_router(sink: Arc<dyn Sink>, metrics: Metrics) -> Router {
    let readiness = teledrop_metrics::Readiness::new().check("bus", move || {
        let sink = sink.clone();
        async move { sink.ready().await }
    });
    teledrop_metrics::ops_router(teledrop_metrics::registry(&[&metrics]), readiness)
}

/// Why a request was not accepted; each decides its own response here.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the body could not be read")]
    Unreadable,
    #[error("missing or wrong secret token")]
    Unauthorized,
    #[error("the bus did not take the update")]
    Unavailable(#[source] BusError, Duration),
}

impl IngressError {
    pub fn label(&self) -> &'static str {
        self.outcome().as_str()
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Self::TooLarge(_) => Outcome::too_large,
            Self::Unreadable => Outcome::unreadable,
            Self::Unauthorized => Outcome::unauthorized,
            Self::Unavailable(..) => Outcome::unavailable,
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        match self {
            Self::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body may hold at most {limit} bytes"),
            )
                .into_response(),
            Self::Unreadable => (StatusCode::BAD_REQUEST, "the body could not be read").into_response(),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized").into_response(),
            Self::Unavailable(_, retry_after) => {
                let mut r = (StatusCode::SERVICE_UNAVAILABLE, "try again later").into_response();
                if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
        }
    }
}

/// What a valid update must at least be.
#[derive(serde::Deserialize)]
struct UpdateHead {
    update_id: i64,
}

/// What the body turned out to be.
enum Body {
    Update(i64),
    NotAnUpdate(&'static str),
}

fn classify(body: &[u8]) -> Body {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Body::NotAnUpdate("not JSON");
    };
    if !value.is_object() {
        return Body::NotAnUpdate("not a JSON object");
    }
    match serde_json::from_value::<UpdateHead>(value) {
        Ok(h) if h.update_id >= 0 => Body::Update(h.update_id),
        Ok(_) => Body::NotAnUpdate("negative update_id"),
        Err(_) => Body::NotAnUpdate("no integer update_id"),
    }
}

/// One span per request; the update's trace starts here and rides the bus
/// to the worker.
#[tracing::instrument(
    name = "webhook",
    skip_all,
    fields(update_id = tracing::field::Empty, outcome = tracing::field::Empty, otel.kind = "server")
)]
async fn webhook(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    body: RequestBody,
) -> Result<StatusCode, IngressError> {
    let span = tracing::Span::current();
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !s.config.secret.matches(given) {
        span.record("outcome", Outcome::unauthorized.as_str());
        s.metrics.count(Outcome::unauthorized);
        // The body is dropped unread; hyper closes the connection.
        return Err(IngressError::Unauthorized);
    }
    let body = match read_body(body, s.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            span.record("outcome", e.label());
            s.metrics.count(e.outcome());
            return Err(e);
        }
    };
    let outcome = match classify(&body) {
        Body::Update(update_id) => {
            span.record("update_id", update_id);
            let publish = s.sink.publish(Envelope {
                update_id,
                body: body.clone(),
                trace: teledrop_otel::context_of(&span),
            });
            match tokio::time::timeout(s.config.publish_timeout, publish).await {
                Ok(Ok(())) => {
                    debug!(update_id, "update published");
                    Outcome::published
                }
                Ok(Err(e)) => return Err(unavailable(&s, e)),
                Err(_) => return Err(unavailable(&s, BusError::PublishTimeout)),
            }
        }
        Body::NotAnUpdate(reason) => {
            warn!(
                reason,
                bytes = body.len(),
                "authenticated body is not an update: dead-lettered"
            );
            match tokio::time::timeout(s.config.publish_timeout, s.sink.dead_letter(body, reason)).await {
                Ok(Ok(())) => Outcome::dead_letter,
                Ok(Err(e)) => return Err(unavailable(&s, e)),
                Err(_) => return Err(unavailable(&s, BusError::PublishTimeout)),
            }
        }
    };
    span.record("outcome", outcome.as_str());
    s.metrics.count(outcome);
    Ok(StatusCode::OK)
}

/// What an oversized body may still send, read and thrown away, before
/// the 413: a client that is still writing its body when the answer comes
/// and the connection closes sees a broken connection, not the 413. Past
/// this the connection is closed regardless.
const DRAIN_LIMIT: usize = 16 << 20;

/// The body, if it holds at most `limit` bytes (checked as it arrives, so
/// a missing or lying Content-Length changes nothing).
async fn read_body(body: RequestBody, limit: usize) -> Result<Bytes, IngressError> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map(|f| f.into_data()) else {
            return Err(IngressError::Unreadable);
        };
        let Ok(data) = data else { continue };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            // Drain what is left, within bounds, then refuse.
            while seen <= DRAIN_LIMIT {
                match body.frame().await {
                    Some(Ok(f)) => seen = seen.saturating_add(f.data_ref().map_or(0, |d| d.len())),
                    Some(Err(_)) | None => break,
                }
            }
            return Err(IngressError::TooLarge(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

fn unavailable(s: &Inner, e: BusError) -> IngressError {
    warn!(error = %report(&e), "bus unavailable: answering 503 so Telegram retries");
    tracing::Span::current().record("outcome", Outcome::unavailable.as_str());
    s.metrics.count(Outcome::unavailable);
    IngressError::Unavailable(e, s.config.retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_follow_telegrams_rules() {
        assert!("abc_DEF-123".parse::<WebhookSecret>().is_ok());
        for bad in ["", "has space", "ünï", &"x".repeat(257)] {
            assert!(bad.parse::<WebhookSecret>().is_err(), "{bad}");
        }
        let s: WebhookSecret = "s3cret".parse().unwrap();
        assert!(s.matches(b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret!", b"S3cret"] {
            assert!(!s.matches(wrong));
        }
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn bodies_are_classified() {
        assert!(matches!(
            classify(br#"{"update_id": 7, "message": {}}"#),
            Body::Update(7)
        ));
        assert!(matches!(
            classify(br#"{"update_id": 7, "brand_new": {}}"#),
            Body::Update(7)
        ));
        for bad in [
            &b"garbage"[..],
            b"[1,2]",
            br#"{"update_id": "7"}"#,
            br#"{"message": {}}"#,
            br#"{"update_id": -1}"#,
        ] {
            assert!(matches!(classify(bad), Body::NotAnUpdate(_)));
        }
    }
}
