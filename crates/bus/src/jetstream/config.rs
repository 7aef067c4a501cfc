//! [`JetStreamConfig`]: where and how the bus lives in NATS, the stream
//! and consumer settings derived from it, and its validation.

use super::*;

/// Where and how the bus lives in NATS. `Default` gives the production
/// names and limits; only `url` usually changes.
#[derive(Clone)]
pub struct JetStreamConfig {
    /// One server URL or several separated by commas
    /// (`nats://user:pass@host:4222`, `tls://…`).
    pub url: String,
    /// The work-queue stream.
    pub stream: String,
    /// The subject updates are published on (the work stream's subject).
    pub subject: String,
    /// The stream that keeps dead letters (limits retention).
    pub dead_letter_stream: String,
    /// The subject dead letters are published on.
    pub dead_letter_subject: String,
    /// The durable pull consumer shared by all workers.
    pub consumer: String,
    /// A second publish with the same update id within this window is
    /// stored once. The catalog's unique update id is the real guard.
    pub duplicate_window: Duration,
    /// A delivery not settled (or kept alive with `in_progress`) within
    /// this time goes to another worker.
    pub ack_wait: Duration,
    /// Deliveries per message; the delivery with `attempt == max_deliver`
    /// is the last one (see [`Bus::max_attempts`]). `-1` is unlimited.
    /// The worker should `term` (or `ack`) that last delivery: a message
    /// JetStream gave up on without either stays in the work stream,
    /// counting toward `max_messages`, though no worker sees it again.
    pub max_deliver: i64,
    /// Bound on one publish (PubAck included) and on API requests.
    pub publish_timeout: Duration,
    /// Backpressure bound: a work stream holding this many messages
    /// refuses further publishes until workers catch up.
    pub max_messages: i64,
    /// Dead letters older than this are discarded.
    pub dead_letter_max_age: Duration,
    /// Stream replicas in a NATS cluster (1 on a single server).
    pub replicas: usize,
    /// TLS roots, client certificate and credentials.
    pub security: NatsSecurity,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            stream: "TELEDROP_UPDATES".into(),
            subject: "teledrop.updates".into(),
            dead_letter_stream: "TELEDROP_DEADLETTER".into(),
            dead_letter_subject: "teledrop.deadletter".into(),
            consumer: "teledrop-workers".into(),
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(60),
            max_deliver: 10,
            publish_timeout: Duration::from_secs(5),
            max_messages: 1_000_000,
            dead_letter_max_age: Duration::from_secs(30 * 24 * 3600),
            replicas: 1,
            security: NatsSecurity::default(),
        }
    }
}

impl fmt::Debug for JetStreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamConfig")
            .field("url", &redact_url(&self.url))
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("dead_letter_stream", &self.dead_letter_stream)
            .field("dead_letter_subject", &self.dead_letter_subject)
            .field("consumer", &self.consumer)
            .field("duplicate_window", &self.duplicate_window)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("publish_timeout", &self.publish_timeout)
            .field("max_messages", &self.max_messages)
            .field("dead_letter_max_age", &self.dead_letter_max_age)
            .field("replicas", &self.replicas)
            .field("security", &self.security)
            .finish()
    }
}

impl JetStreamConfig {
    pub(super) fn validate(&self) -> Result<(), BusError> {
        let bad = |what: String| Err(BusError::Topology(format!("invalid bus configuration: {what}")));
        for (field, name) in [
            ("stream", &self.stream),
            ("dead_letter_stream", &self.dead_letter_stream),
            ("consumer", &self.consumer),
        ] {
            if name.is_empty()
                || name
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
            {
                return bad(format!(
                    "{field} {name:?} must be a non-empty name without '.', '*', '>', slashes or spaces"
                ));
            }
        }
        for (field, subject) in [
            ("subject", &self.subject),
            ("dead_letter_subject", &self.dead_letter_subject),
        ] {
            if subject.is_empty() || subject.chars().any(char::is_whitespace) || subject.contains(['*', '>']) {
                return bad(format!(
                    "{field} {subject:?} must be a literal subject (no spaces or wildcards)"
                ));
            }
        }
        if self.stream == self.dead_letter_stream {
            return bad("stream and dead_letter_stream must differ".into());
        }
        if self.subject == self.dead_letter_subject {
            return bad("subject and dead_letter_subject must differ".into());
        }
        if self.max_deliver == 0 || self.max_deliver < -1 {
            return bad(format!(
                "max_deliver {} must be positive or -1 (unlimited)",
                self.max_deliver
            ));
        }
        if self.max_messages == 0 || self.max_messages < -1 {
            return bad(format!(
                "max_messages {} must be positive or -1 (unlimited)",
                self.max_messages
            ));
        }
        for (field, d) in [
            ("ack_wait", self.ack_wait),
            ("publish_timeout", self.publish_timeout),
            ("duplicate_window", self.duplicate_window),
        ] {
            if d.is_zero() {
                return bad(format!("{field} must be positive"));
            }
        }
        Ok(())
    }

    pub(super) fn work_stream(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            description: Some("teledrop: Telegram updates waiting for a worker".into()),
            subjects: vec![self.subject.clone()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            max_messages: self.max_messages,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas.max(1),
            ..Default::default()
        }
    }

    pub(super) fn dead_letter(&self) -> stream::Config {
        stream::Config {
            name: self.dead_letter_stream.clone(),
            description: Some("teledrop: authenticated webhook bodies that are not updates".into()),
            subjects: vec![self.dead_letter_subject.clone()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            discard: DiscardPolicy::Old,
            max_age: self.dead_letter_max_age,
            num_replicas: self.replicas.max(1),
            ..Default::default()
        }
    }

    pub(super) fn pull_consumer(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.consumer.clone()),
            description: Some("teledrop: the workers".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        }
    }
}

/// The URL(s) with any user info (user, password, token) masked.
pub(crate) fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|part| {
            let part = part.trim();
            let start = part.find("://").map_or(0, |i| i + 3);
            let authority_end = part[start..].find('/').map_or(part.len(), |i| start + i);
            match part[start..authority_end].rfind('@') {
                Some(at) => format!("{}***{}", &part[..start], &part[start + at..]),
                None => part.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_in_urls() {
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("nats://user:secret@nats:4222"), "nats://***@nats:4222");
        assert_eq!(redact_url("tok@nats"), "***@nats");
        assert_eq!(
            redact_url("nats://a:b@one:4222, tls://t0ken@two:4222/x@y"),
            "nats://***@one:4222,tls://***@two:4222/x@y"
        );
        let debug = format!(
            "{:?}",
            JetStreamConfig {
                url: "nats://u:hunter2@h:4222".into(),
                ..Default::default()
            }
        );
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn validates_the_configuration() {
        assert!(JetStreamConfig::default().validate().is_ok());
        for broken in [
            JetStreamConfig {
                stream: "a.b".into(),
                ..Default::default()
            },
            JetStreamConfig {
                consumer: String::new(),
                ..Default::default()
            },
            JetStreamConfig {
                subject: "teledrop.*".into(),
                ..Default::default()
            },
            JetStreamConfig {
                dead_letter_subject: "teledrop.updates".into(),
                ..Default::default()
            },
            JetStreamConfig {
                dead_letter_stream: "TELEDROP_UPDATES".into(),
                ..Default::default()
            },
            JetStreamConfig {
                max_deliver: 0,
                ..Default::default()
            },
            JetStreamConfig {
                max_messages: 0,
                ..Default::default()
            },
            JetStreamConfig {
                ack_wait: Duration::ZERO,
                ..Default::default()
            },
        ] {
            let err = broken.validate().expect_err("invalid config accepted");
            assert_eq!(err.label(), "topology", "{err}");
        }
    }
}
