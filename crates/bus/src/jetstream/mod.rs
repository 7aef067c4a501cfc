//! The production bus: NATS JetStream.
//!
//! Topology (ensured idempotently by [`JetStreamBus::connect`], so every
//! ingress and worker process can start in any order, at once):
//!
//! - the **work stream** (`TELEDROP_UPDATES` on `teledrop.updates`):
//!   work-queue retention (a message lives until a worker acks or terms
//!   it), file storage, a duplicate window for `Nats-Msg-Id`, and a bound
//!   on the number of messages with `discard: new`, so a full stream
//!   refuses publishes instead of silently dropping accepted updates;
//! - the **dead-letter stream** (`TELEDROP_DEADLETTER` on
//!   `teledrop.deadletter`): limits retention with a maximum age, for
//!   bodies that passed authentication but are not updates;
//! - **one durable pull consumer** (`teledrop-workers`) on the work stream,
//!   explicit ack, `ack_wait`, `max_deliver`. A work-queue stream allows a
//!   single unfiltered consumer, so every worker process pulls from this
//!   one; JetStream hands each message to one puller at a time.
//!
//! Each [`JetStreamBus`] keeps one pull subscription that asks for one
//! message at a time, so a busy process holds at most one message it has
//! not handed out yet (and hoards nothing while other workers idle).

mod config;
mod topology;

pub use config::JetStreamConfig;
pub(crate) use config::redact_url;
use teledrop_core::{Report, report};
use topology::{ensure_consumer, ensure_stream};

use crate::{Bus, BusError, Delivery, Envelope, NatsSecurity, Settle, TraceContext};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, ReplayPolicy, pull};
use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind, PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The header that carries the update id; JetStream deduplicates on it
/// within the stream's duplicate window.
const MSG_ID: &str = "Nats-Msg-Id";
/// Why a body went to the dead-letter stream.
pub const DEAD_LETTER_REASON_HEADER: &str = "Teledrop-Dead-Letter-Reason";
/// Longest reason kept in the dead-letter header.
const MAX_REASON_CHARS: usize = 512;
/// How long one pull request waits at the server before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Server heartbeat on an idle pull request: a silent server is noticed.
const PULL_HEARTBEAT: Duration = Duration::from_secs(10);
/// Backoff bounds while the work stream is full (`teledrop_core::backoff`:
/// doubling, jittered, below the maximum).
const FULL_BACKOFF_START: Duration = Duration::from_millis(10);
const FULL_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// The JetStream bus. Cheap to clone: clones share the connection and
/// the pull subscription; separate `connect`s (other processes) share the
/// durable consumer.
#[derive(Clone)]
pub struct JetStreamBus {
    inner: Arc<Inner>,
}

struct Inner {
    config: JetStreamConfig,
    js: jetstream::Context,
    puller: Mutex<Puller>,
    closed: CancellationToken,
}

struct Puller {
    consumer: PullConsumer,
    messages: Option<pull::Stream>,
    /// After a pull failure the consumer is ensured again before the next
    /// pull (it may have been deleted, or the server replaced).
    reensure: bool,
}

impl fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamBus")
            .field("config", &self.inner.config)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl JetStreamBus {
    /// Connects and ensures the topology (see the module docs). Safe to
    /// run from many processes at once. A stream that exists with other
    /// settings is updated where JetStream allows it; otherwise this fails
    /// with [`BusError::Topology`] naming the stream and the settings.
    pub async fn connect(config: JetStreamConfig) -> Result<Self, BusError> {
        config.validate()?;
        let servers: Vec<&str> = config.url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if servers.is_empty() {
            return Err(BusError::Topology(
                "invalid bus configuration: the NATS URL is empty".into(),
            ));
        }
        let tls_urls = servers.iter().any(|s| s.starts_with("tls://"));
        let options = async_nats::ConnectOptions::new()
            .name("teledrop")
            .connection_timeout(config.publish_timeout);
        let options = config
            .security
            .apply(options, tls_urls)
            .await
            .map_err(BusError::Credentials)?;
        let client = options.connect(servers).await.map_err(|e| {
            use async_nats::ConnectErrorKind as Kind;
            let what = format!("connecting to NATS at {}: {e}", redact_url(&config.url));
            match e.kind() {
                Kind::AuthorizationViolation => BusError::Credentials(what),
                Kind::Tls => BusError::Tls(what),
                // A failed handshake arrives as I/O wrapping rustls's error.
                _ if is_tls_failure(&e) => BusError::Tls(what),
                _ => BusError::Transport(what),
            }
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.publish_timeout)
            .build(client);

        ensure_stream(&js, config.work_stream()).await?;
        ensure_stream(&js, config.dead_letter()).await?;
        let consumer = ensure_consumer(&js, &config).await?;
        info!(
            stream = %config.stream,
            consumer = %config.consumer,
            dead_letter_stream = %config.dead_letter_stream,
            "JetStream bus ready"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                js,
                puller: Mutex::new(Puller {
                    consumer,
                    messages: None,
                    reensure: false,
                }),
                closed: CancellationToken::new(),
            }),
        })
    }

    /// Stores a body that is authenticated but not a valid update in the
    /// dead-letter stream, with `reason` in the
    /// [`DEAD_LETTER_REASON_HEADER`] header (control characters replaced,
    /// truncated).
    pub async fn publish_dead_letter(&self, body: Bytes, reason: &str) -> Result<(), BusError> {
        if self.inner.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        let mut headers = HeaderMap::new();
        headers.insert(DEAD_LETTER_REASON_HEADER, sanitize_header_value(reason));
        self.inner
            .publish_acked(&self.inner.config.dead_letter_subject, headers, body)
            .await
            .map(|_| ())
    }

    /// Readiness: a round trip to the server that reads the work stream.
    pub async fn ping(&self) -> Result<(), BusError> {
        let inner = &self.inner;
        let stream = &inner.config.stream;
        match tokio::time::timeout(inner.config.publish_timeout, inner.js.get_stream(stream)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BusError::Transport(format!("reading stream {stream}: {e}"))),
            Err(_) => Err(BusError::Transport(format!(
                "reading stream {stream}: no answer within {:?}",
                inner.config.publish_timeout
            ))),
        }
    }

    pub fn config(&self) -> &JetStreamConfig {
        &self.inner.config
    }

    /// Stops this handle (and its clones): `next` answers `None` and
    /// `publish` fails with [`BusError::Closed`]. Deliveries already handed
    /// out can still be settled. A message this process had pulled but not
    /// handed out goes back to the consumer after `ack_wait`.
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }
}

/// The headers of an update's message: its id, and the W3C trace context
/// under the W3C header names (read back by [`trace_of`]).
fn outbound_headers(envelope: &Envelope) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID, envelope.update_id.to_string());
    if let Some(trace) = &envelope.trace {
        // A line break in a value would end the header block early; such
        // a context is no W3C one anyway, so it is left out, not mended.
        let clean = |v: &str| !v.is_empty() && !v.chars().any(char::is_control);
        if clean(&trace.traceparent) {
            headers.insert(TraceContext::TRACEPARENT, trace.traceparent.as_str());
            if clean(&trace.tracestate) {
                headers.insert(TraceContext::TRACESTATE, trace.tracestate.as_str());
            }
        }
    }
    headers
}

impl Inner {
    /// Publishes and waits for the PubAck within `publish_timeout`. A full
    /// stream is retried (with backoff) until then: the caller waits, as the
    /// `Bus` contract says, and gets `PublishTimeout` if no room appears.
    async fn publish_acked(
        &self,
        subject: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<jetstream::publish::PublishAck, BusError> {
        let deadline = Instant::now() + self.config.publish_timeout;
        let mut delays = teledrop_core::backoff::delays(FULL_BACKOFF_START, FULL_BACKOFF_MAX);
        loop {
            let attempt = async {
                self.js
                    .publish_with_headers(subject.to_owned(), headers.clone(), body.clone())
                    .await?
                    .await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(BusError::PublishTimeout),
                Ok(Ok(ack)) => {
                    if ack.duplicate {
                        debug!(
                            subject,
                            sequence = ack.sequence,
                            "duplicate publish ignored by the stream"
                        );
                    }
                    return Ok(ack);
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::TimedOut => return Err(BusError::PublishTimeout),
                Ok(Err(e)) if stream_refused_as_full(&e) => {
                    let backoff = delays.next().unwrap_or(FULL_BACKOFF_MAX);
                    if Instant::now() + backoff >= deadline {
                        warn!(subject, error = %report(&e), "the stream stayed full for the whole publish timeout");
                        return Err(BusError::PublishTimeout);
                    }
                    debug!(subject, error = %report(&e), "stream full; waiting for room");
                    tokio::time::sleep(backoff).await;
                }
                Ok(Err(e)) => return Err(BusError::Transport(format!("publishing to {subject}: {e}"))),
            }
        }
    }

    /// Turns a pulled message into a delivery, or settles it here when it
    /// carries no update id (dead letter) and returns `None`.
    async fn delivery(&self, message: jetstream::Message) -> Option<Delivery> {
        let attempt = match message.info() {
            Ok(info) => u32::try_from(info.delivered).unwrap_or(u32::MAX).max(1),
            Err(e) => {
                warn!(error = %Report(e.as_ref()), "a message without JetStream metadata; counting it as a first delivery");
                1
            }
        };
        if let Some(update_id) = update_id_of(&message) {
            let body = message.payload.clone();
            let trace = trace_of(&message);
            return Some(Delivery {
                envelope: Envelope { update_id, body, trace },
                attempt,
                settle: Box::new(JetStreamSettle { message }),
            });
        }
        // Nothing a worker can key a job on: keep it for a human, drop it
        // from the work queue.
        warn!(subject = %message.subject, "a message without an update id; moving it to the dead-letter stream");
        let mut headers = HeaderMap::new();
        headers.insert(DEAD_LETTER_REASON_HEADER, "queued message without an update id");
        let moved = self
            .publish_acked(&self.config.dead_letter_subject, headers, message.payload.clone())
            .await;
        let settled = match moved {
            Ok(_) => message.double_ack_with(AckKind::Term).await,
            Err(e) => {
                warn!(error = %report(&e), "could not dead-letter a message; it comes back later");
                message.ack_with(AckKind::Nak(Some(self.config.ack_wait))).await
            }
        };
        if let Err(e) = settled {
            warn!(error = %Report(e.as_ref()), "could not settle a message without an update id");
        }
        None
    }
}

/// The update id: the `Nats-Msg-Id` header, else the body's `update_id`.
fn update_id_of(message: &jetstream::Message) -> Option<i64> {
    let from_header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(MSG_ID))
        .and_then(|v| v.as_str().trim().parse::<i64>().ok());
    from_header.or_else(|| {
        serde_json::from_slice::<serde_json::Value>(&message.payload)
            .ok()?
            .get("update_id")?
            .as_i64()
    })
}

/// The trace context the publisher sent, if any.
fn trace_of(message: &jetstream::Message) -> Option<TraceContext> {
    let headers = message.headers.as_ref()?;
    let traceparent = headers.get(TraceContext::TRACEPARENT)?.as_str().trim();
    if traceparent.is_empty() {
        return None;
    }
    Some(TraceContext {
        traceparent: traceparent.to_owned(),
        tracestate: headers
            .get(TraceContext::TRACESTATE)
            .map(|v| v.as_str().trim().to_owned())
            .unwrap_or_default(),
    })
}

/// The PubAck error a `discard: new` stream answers when it is full
/// ("maximum messages exceeded", JetStream error code 10077).
fn stream_refused_as_full(e: &PublishError) -> bool {
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|api| api.error_code() == ErrorCode::STREAM_STORE_FAILED)
}

#[async_trait]
impl Bus for JetStreamBus {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        if self.inner.closed.is_cancelled() {
            return Err(BusError::Closed);
        }
        let headers = outbound_headers(&envelope);
        self.inner
            .publish_acked(&self.inner.config.subject, headers, envelope.body)
            .await
            .map(|_| ())
    }

    /// Cancel-safe: a message pulled while the caller gave up stays in
    /// this handle's subscription and is handed out by the next call.
    async fn next(&self) -> Result<Option<Delivery>, BusError> {
        let inner = &self.inner;
        let mut puller = tokio::select! {
            biased;
            _ = inner.closed.cancelled() => return Ok(None),
            p = inner.puller.lock() => p,
        };
        // A pull subscription that ends without a message twice in a row
        // is broken beyond reopening: report it instead of spinning.
        let mut empty_ends = 0;
        loop {
            if inner.closed.is_cancelled() {
                puller.messages = None;
                return Ok(None);
            }
            let p = &mut *puller;
            let messages = match p.messages {
                Some(ref mut messages) => messages,
                None => {
                    if p.reensure {
                        p.consumer = ensure_consumer(&inner.js, &inner.config).await?;
                        p.reensure = false;
                    }
                    // One message per pull request: nothing is hoarded
                    // while this process is busy and others are idle.
                    let opened = p
                        .consumer
                        .stream()
                        .max_messages_per_batch(1)
                        .expires(PULL_EXPIRES)
                        .heartbeat(PULL_HEARTBEAT)
                        .messages()
                        .await
                        .map_err(|e| {
                            BusError::Transport(format!("pulling from consumer {}: {e}", inner.config.consumer))
                        })?;
                    p.messages.insert(opened)
                }
            };
            let item = tokio::select! {
                biased;
                _ = inner.closed.cancelled() => {
                    puller.messages = None;
                    return Ok(None);
                }
                item = messages.next() => item,
            };
            match item {
                Some(Ok(message)) => {
                    empty_ends = 0;
                    if let Some(delivery) = inner.delivery(message).await {
                        return Ok(Some(delivery));
                    }
                }
                Some(Err(e)) => {
                    puller.messages = None;
                    puller.reensure = true;
                    return Err(BusError::Transport(format!(
                        "pulling from consumer {}: {e}",
                        inner.config.consumer
                    )));
                }
                None => {
                    puller.messages = None;
                    empty_ends += 1;
                    if empty_ends >= 2 {
                        puller.reensure = true;
                        return Err(BusError::Transport(format!(
                            "the pull subscription on consumer {} keeps ending",
                            inner.config.consumer
                        )));
                    }
                }
            }
        }
    }

    fn max_attempts(&self) -> Option<u32> {
        u32::try_from(self.inner.config.max_deliver).ok().filter(|n| *n > 0)
    }

    /// A quarter of `ack_wait`: three keepalives can be lost or late before
    /// JetStream redelivers to another worker.
    fn keepalive_interval(&self) -> Option<Duration> {
        Some(self.inner.config.ack_wait / 4)
    }
}

struct JetStreamSettle {
    message: jetstream::Message,
}

fn settle_error(what: &str, e: impl fmt::Display) -> BusError {
    BusError::Transport(format!("{what} failed: {e}"))
}

#[async_trait]
impl Settle for JetStreamSettle {
    /// Waits for the server to confirm the ack, so `Ok` means the message
    /// is gone from the work queue.
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        self.message.double_ack().await.map_err(|e| settle_error("ack", e))
    }

    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError> {
        let kind = if delay.is_zero() {
            AckKind::Nak(None)
        } else {
            AckKind::Nak(Some(delay))
        };
        self.message.ack_with(kind).await.map_err(|e| settle_error("nak", e))
    }

    /// Confirmed like `ack`: the message is removed and never redelivered.
    async fn term(self: Box<Self>) -> Result<(), BusError> {
        self.message
            .double_ack_with(AckKind::Term)
            .await
            .map_err(|e| settle_error("term", e))
    }

    /// Restarts the `ack_wait` clock of this delivery.
    async fn in_progress(&self) -> Result<(), BusError> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| settle_error("in-progress ack", e))
    }
}

// ---- small helpers ----------------------------------------------------------

/// Whether a rustls error is somewhere in `e`'s chain of causes.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        let inner = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        if c.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A header value: no control characters (CR/LF would break the
/// protocol), at most [`MAX_REASON_CHARS`] characters.
fn sanitize_header_value(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() {
        "unspecified".into()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_reasons() {
        assert_eq!(sanitize_header_value("bad\r\njson\tbody"), "bad  json body");
        assert_eq!(sanitize_header_value("\n"), "unspecified");
        assert_eq!(sanitize_header_value(&"x".repeat(2000)).len(), MAX_REASON_CHARS);
    }
}
