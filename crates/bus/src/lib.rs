//! The update transport between whoever receives updates (the webhook
//! ingress, or the long poller in `standalone`) and the workers.
//!
//! A message is one raw Telegram update (its JSON, untouched) keyed by its
//! `update_id`. Consumers settle every delivery exactly once: `ack` after
//! the outcome is committed, `nak` with a delay to get it again later,
//! `term` to drop it for good. The catalog's unique `update_id` is what
//! makes a redelivery harmless, so a bus only has to be at-least-once.
//!
//! Two implementations keep that contract and pass one conformance suite
//! (`tests/conformance.rs`): [`MemoryBus`] for `standalone`, and
//! [`JetStreamBus`] (a NATS JetStream work-queue stream with one durable
//! pull consumer shared by every worker process) for the distributed roles.

mod jetstream;
mod memory;
mod nats_auth;

pub use jetstream::{DEAD_LETTER_REASON_HEADER, JetStreamBus, JetStreamConfig};
pub use memory::MemoryBus;
pub use nats_auth::{NatsCredentials, NatsSecurity};

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is closed")]
    Closed,
    #[error("publishing timed out")]
    PublishTimeout,
    #[error("bus transport failed: {0}")]
    Transport(String),
    /// The bus's streams or consumer cannot be set up as configured (a
    /// stream exists with settings the server will not change, an invalid
    /// name…). Retrying does not help; the message says what to change.
    #[error("bus topology: {0}")]
    Topology(String),
    /// NATS refused the credentials, or they could not be read.
    #[error("NATS credentials: {0}")]
    Credentials(String),
    /// The TLS handshake failed (unknown CA, expired or wrong-host certificate…).
    #[error("NATS TLS: {0}")]
    Tls(String),
}

impl BusError {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::PublishTimeout => "publish_timeout",
            Self::Transport(_) => "transport",
            Self::Topology(_) => "topology",
            Self::Credentials(_) => "credentials",
            Self::Tls(_) => "tls",
        }
    }
}

/// One raw update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub update_id: i64,
    pub body: Bytes,
    /// The trace the update was received in, so the worker's spans join
    /// it; `None` when the publisher records no trace.
    pub trace: Option<TraceContext>,
}

impl Envelope {
    /// An update outside any trace.
    pub fn new(update_id: i64, body: impl Into<Bytes>) -> Self {
        Self {
            update_id,
            body: body.into(),
            trace: None,
        }
    }
}

/// A W3C trace context (<https://www.w3.org/TR/trace-context/>) as its two
/// header values. Kept as plain strings so the bus needs no tracing
/// library: the publisher's propagator writes them, the consumer's reads
/// them, and a bus carries them untouched (JetStream as message headers of
/// the same names).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceContext {
    /// `traceparent`: version, trace id, parent span id, flags.
    pub traceparent: String,
    /// `tracestate`: vendor entries; empty when there are none.
    pub tracestate: String,
}

impl TraceContext {
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

/// How a consumer settles a delivery.
#[async_trait]
pub trait Settle: Send {
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
    async fn nak(self: Box<Self>, delay: Duration) -> Result<(), BusError>;
    async fn term(self: Box<Self>) -> Result<(), BusError>;
    /// Tells the bus the consumer is still working (long transfers).
    async fn in_progress(&self) -> Result<(), BusError>;
}

pub struct Delivery {
    pub envelope: Envelope,
    /// 1 for the first delivery.
    pub attempt: u32,
    pub settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("update_id", &self.envelope.update_id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Returns once the bus holds the update (durably, where the bus is
    /// durable). Waits while the bus is full: backpressure.
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError>;
    /// The next delivery; `None` once the bus is closed and drained.
    async fn next(&self) -> Result<Option<Delivery>, BusError>;

    /// The number of deliveries after which the bus gives a message up,
    /// if it does (`None`: redelivered as long as it is nak'd). The
    /// delivery with `attempt == max_attempts` is the last one: the
    /// consumer must settle it for good (`ack` or `term`, after marking the
    /// job failed and telling the user), because a `nak` or an expired
    /// `ack_wait` on it is never followed by another delivery.
    fn max_attempts(&self) -> Option<u32> {
        None
    }

    /// How often a consumer working on a delivery should call
    /// [`Settle::in_progress`] so the bus does not hand it to another
    /// consumer meanwhile (`None`: the bus never takes a delivery back).
    fn keepalive_interval(&self) -> Option<Duration> {
        None
    }
}
