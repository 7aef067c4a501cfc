//! One conformance suite for both buses.
//!
//! Each scenario in [`scenarios`] is an async function over a [`Fixture`]:
//! a bus (`Arc<dyn Bus>`) on a fresh, empty queue, and a way to open
//! another handle on the same queue (a clone of the `MemoryBus`; a second
//! `JetStreamBus::connect` to the same stream and consumer, i.e. another
//! worker process). The `conformance!` macro runs every scenario against
//! both (`memory_bus::<case>`, `jetstream_bus::<case>`).
//!
//! The JetStream tests (and the JetStream-only ones in [`jetstream_only`])
//! need a `nats-server -js` at `TEST_NATS_URL`, which `scripts/test.sh`
//! starts and exports. Each test uses streams, subjects and a consumer of
//! its own, so they run in parallel on one server.

use bytes::Bytes;
use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use teledrop_bus::{Bus, BusError, Delivery, Envelope, JetStreamBus, JetStreamConfig, MemoryBus, TraceContext};
use tokio::time::Instant;

/// Bound on anything that should happen "now".
const SOON: Duration = Duration::from_secs(10);
/// Long enough to notice a message delivered twice while unacked, shorter
/// than the conformance consumer's `ack_wait`.
const SHORT: Duration = Duration::from_millis(300);

// ---- fixtures ----------------------------------------------------------------

type Opener = Arc<dyn Fn() -> BoxFuture<'static, Arc<dyn Bus>> + Send + Sync>;

struct Fixture {
    bus: Arc<dyn Bus>,
    /// Another handle on the same queue.
    open: Opener,
    /// Longer than any redelivery a lost ack or term would cause (the
    /// consumer's `ack_wait`, where there is one).
    quiet: Duration,
}

fn memory() -> Fixture {
    let bus = MemoryBus::new(64);
    let shared = bus.clone();
    Fixture {
        bus: Arc::new(bus),
        open: Arc::new(move || {
            let bus = shared.clone();
            Box::pin(async move { Arc::new(bus) as Arc<dyn Bus> })
        }),
        quiet: Duration::from_millis(200),
    }
}

fn nats_url() -> String {
    match std::env::var("TEST_NATS_URL") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "TEST_NATS_URL is not set: run the tests through scripts/test.sh (see README), which starts a \
             throwaway `nats-server -js` and exports its URL"
        ),
    }
}

fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// The shared test server, with names of this test's own.
fn test_config(case: &str) -> JetStreamConfig {
    JetStreamConfig {
        url: nats_url(),
        ..own_names(case)
    }
}

/// Names of this test's own: nothing is shared with a parallel test.
fn own_names(case: &str) -> JetStreamConfig {
    let s = unique_suffix();
    let case = case.to_uppercase();
    JetStreamConfig {
        stream: format!("T_{case}_{s}"),
        subject: format!("test.{s}.updates"),
        dead_letter_stream: format!("T_{case}_{s}_DL"),
        dead_letter_subject: format!("test.{s}.deadletter"),
        consumer: format!("workers-{s}"),
        ..Default::default()
    }
}

async fn connect(config: &JetStreamConfig) -> JetStreamBus {
    JetStreamBus::connect(config.clone())
        .await
        .expect("connect to JetStream")
}

async fn jetstream(case: &str) -> Fixture {
    // Long enough that no scenario's held delivery expires while a loaded
    // machine runs it; scenarios about expiry set their own.
    let config = JetStreamConfig {
        ack_wait: Duration::from_secs(4),
        ..test_config(case)
    };
    let bus = connect(&config).await;
    let quiet = config.ack_wait + Duration::from_millis(700);
    Fixture {
        bus: Arc::new(bus),
        open: Arc::new(move || {
            let config = config.clone();
            Box::pin(async move { Arc::new(connect(&config).await) as Arc<dyn Bus> })
        }),
        quiet,
    }
}

// ---- helpers -----------------------------------------------------------------

fn env(id: i64) -> Envelope {
    Envelope::new(
        id,
        Bytes::from(format!(r#"{{"update_id":{id},"message":{{"text":"n{id}"}}}}"#)),
    )
}

/// The next delivery, or `None` if none arrives within `wait` (the
/// timeout is how "nothing arrives" is observed).
async fn next_within(bus: &dyn Bus, wait: Duration) -> Option<Delivery> {
    match tokio::time::timeout(wait, bus.next()).await {
        Err(_) => None,
        Ok(Ok(Some(d))) => Some(d),
        Ok(Ok(None)) => panic!("the bus closed unexpectedly"),
        Ok(Err(e)) => panic!("next failed: {e}"),
    }
}

async fn next_now(bus: &dyn Bus) -> Delivery {
    next_within(bus, SOON).await.expect("a delivery within the deadline")
}

async fn assert_nothing_within(bus: &dyn Bus, wait: Duration) {
    if let Some(d) = next_within(bus, wait).await {
        panic!(
            "expected no delivery, got update {} (attempt {})",
            d.envelope.update_id, d.attempt
        );
    }
}

// ---- scenarios ---------------------------------------------------------------

mod scenarios {
    use super::*;

    pub async fn publish_then_next(f: Fixture) {
        f.bus.publish(env(1)).await.unwrap();
        let d = next_now(&*f.bus).await;
        assert_eq!(d.envelope, env(1));
        assert_eq!(d.attempt, 1);
        d.settle.ack().await.unwrap();
    }

    pub async fn ack_removes(f: Fixture) {
        f.bus.publish(env(2)).await.unwrap();
        let d = next_now(&*f.bus).await;
        d.settle.ack().await.unwrap();
        assert_nothing_within(&*f.bus, f.quiet).await;
    }

    pub async fn nak_redelivers_later(f: Fixture) {
        let delay = Duration::from_millis(400);
        f.bus.publish(env(3)).await.unwrap();
        let first = next_now(&*f.bus).await;
        assert_eq!(first.attempt, 1);
        let naked = Instant::now();
        first.settle.nak(delay).await.unwrap();
        let again = next_now(&*f.bus).await;
        // The delay is honoured (half of it, for timer slack).
        assert!(naked.elapsed() >= delay / 2, "redelivered after {:?}", naked.elapsed());
        assert_eq!(again.envelope, env(3));
        assert_eq!(again.attempt, 2);
        again.settle.ack().await.unwrap();
        assert_nothing_within(&*f.bus, f.quiet).await;
    }

    pub async fn term_never_redelivers(f: Fixture) {
        f.bus.publish(env(4)).await.unwrap();
        let d = next_now(&*f.bus).await;
        d.settle.term().await.unwrap();
        assert_nothing_within(&*f.bus, f.quiet).await;
        // The bus goes on with the next update.
        f.bus.publish(env(5)).await.unwrap();
        let d = next_now(&*f.bus).await;
        assert_eq!((d.envelope.update_id, d.attempt), (5, 1));
        d.settle.ack().await.unwrap();
    }

    pub async fn consumers_share_the_work(f: Fixture) {
        let a = f.bus.clone();
        let b = (f.open)().await;

        // Held, unacked deliveries are never handed to the other consumer.
        for id in 1..=6 {
            a.publish(env(id)).await.unwrap();
        }
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(("a", next_now(&*a).await));
        }
        for _ in 0..3 {
            held.push(("b", next_now(&*b).await));
        }
        assert_nothing_within(&*a, SHORT).await;
        assert_nothing_within(&*b, SHORT).await;
        let ids: BTreeSet<i64> = held.iter().map(|(_, d)| d.envelope.update_id).collect();
        assert_eq!(ids, (1..=6).collect(), "each update delivered to exactly one consumer");
        assert!(held.iter().all(|(_, d)| d.attempt == 1));
        for (_, d) in held {
            d.settle.ack().await.unwrap();
        }

        // Both pulling at once: every update once, none twice.
        let ids: Vec<i64> = (100..120).collect();
        for &id in &ids {
            a.publish(env(id)).await.unwrap();
        }
        // Both keep pulling until all have arrived between them (neither
        // gives up early on a delivery the other has not acked yet).
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (deadline, want) = (Instant::now() + SOON, ids.len());
        let drain = |bus: Arc<dyn Bus>| {
            let got = got.clone();
            tokio::spawn(async move {
                while got.lock().unwrap().len() < want && Instant::now() < deadline {
                    if let Some(d) = next_within(&*bus, Duration::from_millis(100)).await {
                        d.settle.ack().await.unwrap();
                        got.lock().unwrap().push(d.envelope.update_id);
                    }
                }
            })
        };
        let (done_a, done_b) = tokio::join!(drain(a.clone()), drain(b.clone()));
        done_a.unwrap();
        done_b.unwrap();
        // Then nothing more, on either: no update came twice.
        assert_nothing_within(&*a, f.quiet).await;
        assert_nothing_within(&*b, SHORT).await;
        let mut all = got.lock().unwrap().clone();
        all.sort_unstable();
        assert_eq!(all, ids, "every update exactly once across both consumers");
    }

    /// The publisher's W3C trace context reaches the consumer as it was
    /// sent, on redeliveries too; an update sent outside a trace arrives
    /// without one.
    pub async fn trace_context_rides_along(f: Fixture) {
        let traced = Envelope {
            trace: Some(TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: "teledrop=t61rcWkgMzE,other=x".into(),
            }),
            ..env(31)
        };
        let no_state = Envelope {
            trace: Some(TraceContext {
                traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00".into(),
                tracestate: String::new(),
            }),
            ..env(32)
        };
        for e in [traced.clone(), no_state.clone(), env(33)] {
            f.bus.publish(e).await.unwrap();
        }
        let first = next_now(&*f.bus).await;
        assert_eq!(first.envelope, traced);
        first.settle.nak(Duration::ZERO).await.unwrap();
        let mut rest = Vec::new();
        for _ in 0..3 {
            let d = next_now(&*f.bus).await;
            rest.push(d.envelope.clone());
            d.settle.ack().await.unwrap();
        }
        rest.sort_by_key(|e| e.update_id);
        assert_eq!(rest, [traced, no_state, env(33)]);
        assert_eq!(rest[2].trace, None);
    }

    pub async fn order_is_preserved(f: Fixture) {
        for id in 1..=20 {
            f.bus.publish(env(id)).await.unwrap();
        }
        let mut got = Vec::new();
        for _ in 1..=20 {
            let d = next_now(&*f.bus).await;
            got.push(d.envelope.update_id);
            d.settle.ack().await.unwrap();
        }
        assert_eq!(got, (1..=20).collect::<Vec<_>>());
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory_bus {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::scenarios::$case(super::memory()).await
                }
            )*
        }
        mod jetstream_bus {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::scenarios::$case(super::jetstream(stringify!($case)).await).await
                }
            )*
        }
    };
}

conformance!(
    publish_then_next,
    ack_removes,
    nak_redelivers_later,
    term_never_redelivers,
    consumers_share_the_work,
    order_is_preserved,
    trace_context_rides_along,
);

// ---- JetStream only ----------------------------------------------------------

mod jetstream_only {
    use super::*;
    use async_nats::jetstream::{self, stream};
    use teledrop_bus::DEAD_LETTER_REASON_HEADER;

    /// A plain JetStream client, to look at what the bus stored.
    async fn raw(config: &JetStreamConfig) -> jetstream::Context {
        let client = async_nats::connect(config.url.as_str()).await.expect("raw NATS client");
        jetstream::new(client)
    }

    async fn stored_messages(config: &JetStreamConfig, stream: &str) -> u64 {
        let mut s = raw(config).await.get_stream(stream).await.expect("stream exists");
        s.info().await.expect("stream info").state.messages
    }

    #[tokio::test]
    async fn duplicate_publish_is_stored_once() {
        let config = test_config("dup");
        let bus = connect(&config).await;
        bus.publish(env(7)).await.unwrap();
        // A retried webhook: same update id (a different body shows which
        // copy was kept).
        let retry = Envelope::new(7, Bytes::from_static(br#"{"update_id":7,"retry":true}"#));
        bus.publish(retry).await.expect("a duplicate publish is a success");
        assert_eq!(stored_messages(&config, &config.stream).await, 1);
        let d = next_now(&bus).await;
        assert_eq!(d.envelope, env(7));
        d.settle.ack().await.unwrap();
        assert_nothing_within(&bus, SHORT).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_connects_share_one_topology() {
        let config = test_config("connect");
        let buses = futures::future::join_all((0..4).map(|_| JetStreamBus::connect(config.clone()))).await;
        let buses: Vec<JetStreamBus> = buses
            .into_iter()
            .map(|b| b.expect("every concurrent connect succeeds"))
            .collect();
        // And once more, later, with everything in place.
        let late = connect(&config).await;
        late.ping().await.unwrap();
        assert_eq!(format!("{:?}", late.config()), format!("{config:?}"));

        buses[0].publish(env(11)).await.unwrap();
        let d = next_now(&buses[3]).await;
        assert_eq!(d.envelope, env(11));
        d.settle.ack().await.unwrap();

        let js = raw(&config).await;
        let mut work = js.get_stream(&config.stream).await.unwrap();
        assert_eq!(
            work.info().await.unwrap().state.consumer_count,
            1,
            "one shared consumer"
        );
        js.get_stream(&config.dead_letter_stream)
            .await
            .expect("dead-letter stream");
    }

    #[tokio::test]
    async fn unacked_is_redelivered_after_ack_wait() {
        let config = JetStreamConfig {
            ack_wait: Duration::from_secs(1),
            ..test_config("ackwait")
        };
        let bus = connect(&config).await;
        bus.publish(env(21)).await.unwrap();
        let first = next_now(&bus).await;
        assert_eq!(first.attempt, 1);
        // Not settled: the consumer "died" with it.
        let again = next_now(&bus).await;
        assert_eq!((again.envelope.update_id, again.attempt), (21, 2));
        again.settle.ack().await.unwrap();
        drop(first);
        assert_nothing_within(&bus, Duration::from_millis(2500)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_progress_extends_ack_wait() {
        let config = JetStreamConfig {
            ack_wait: Duration::from_secs(1),
            ..test_config("progress")
        };
        let bus = connect(&config).await;
        bus.publish(env(22)).await.unwrap();
        let d = next_now(&bus).await;

        // A long download: progress every 100 ms.
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let keeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = &mut stopped => return d,
                    _ = tick.tick() => d.settle.in_progress().await.unwrap(),
                }
            }
        });
        // Four times ack_wait without a redelivery.
        assert_nothing_within(&bus, Duration::from_secs(4)).await;
        stop.send(()).unwrap();
        let _abandoned = keeper.await.unwrap();

        // Without progress it comes back.
        let again = next_now(&bus).await;
        assert_eq!((again.envelope.update_id, again.attempt), (22, 2));
        again.settle.ack().await.unwrap();
    }

    /// How the worker learns about the last delivery: `attempt ==
    /// max_attempts()`. It settles that one for good (`term`, after marking
    /// the job failed), which also removes the message from the work
    /// stream; whatever it does, nothing more is delivered.
    #[tokio::test]
    async fn max_deliver_ends_redelivery() {
        let config = JetStreamConfig {
            ack_wait: Duration::from_millis(500),
            max_deliver: 3,
            ..test_config("maxdeliver")
        };
        let bus = connect(&config).await;
        assert_eq!(bus.max_attempts(), Some(3));

        bus.publish(env(23)).await.unwrap();
        for expected in 1..=3 {
            let d = next_now(&bus).await;
            assert_eq!((d.envelope.update_id, d.attempt), (23, expected));
            if Some(d.attempt) == bus.max_attempts() {
                d.settle.term().await.unwrap();
            } else {
                d.settle.nak(Duration::ZERO).await.unwrap();
            }
        }
        assert_eq!(stored_messages(&config, &config.stream).await, 0);

        // A consumer that naks the last delivery too: JetStream gives up.
        bus.publish(env(24)).await.unwrap();
        for expected in 1..=3 {
            let d = next_now(&bus).await;
            assert_eq!((d.envelope.update_id, d.attempt), (24, expected));
            d.settle.nak(Duration::ZERO).await.unwrap();
        }
        assert_nothing_within(&bus, Duration::from_secs(2)).await;
    }

    #[tokio::test]
    async fn dead_letters_land_in_their_stream() {
        let config = test_config("deadletter");
        let bus = connect(&config).await;
        let body = Bytes::from_static(b"{\"not\":\"an update\"}");
        bus.publish_dead_letter(body.clone(), "no update_id:\r\nmissing field")
            .await
            .unwrap();

        let js = raw(&config).await;
        let dl = js.get_stream(&config.dead_letter_stream).await.unwrap();
        let stored = dl.get_raw_message(1).await.expect("the dead letter");
        assert_eq!(stored.payload, body);
        assert_eq!(stored.subject.as_str(), config.dead_letter_subject);
        let reason = stored.headers.get(DEAD_LETTER_REASON_HEADER).expect("reason header");
        assert_eq!(reason.as_str(), "no update_id:  missing field");
        // Not work for the workers.
        assert_eq!(stored_messages(&config, &config.stream).await, 0);
        assert_nothing_within(&bus, SHORT).await;
    }

    /// Messages published by something else than the bus: the update id
    /// falls back to the body; without one, the message is dead-lettered
    /// and the workers never see it.
    #[tokio::test]
    async fn foreign_messages_fall_back_to_the_body() {
        let config = test_config("foreign");
        let bus = connect(&config).await;
        let js = raw(&config).await;
        for body in [&b"not json at all"[..], &br#"{"update_id":31}"#[..]] {
            js.publish(config.subject.clone(), Bytes::copy_from_slice(body))
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let d = next_now(&bus).await;
        assert_eq!((d.envelope.update_id, d.attempt), (31, 1));
        d.settle.ack().await.unwrap();
        assert_nothing_within(&bus, SHORT).await;

        let dl = js.get_stream(&config.dead_letter_stream).await.unwrap();
        let stored = dl.get_raw_message(1).await.expect("moved to the dead letters");
        assert_eq!(&stored.payload[..], b"not json at all");
        assert!(stored.headers.get(DEAD_LETTER_REASON_HEADER).is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_stream_refuses_then_accepts() {
        let config = JetStreamConfig {
            max_messages: 2,
            publish_timeout: Duration::from_secs(2),
            ..test_config("full")
        };
        let bus = connect(&config).await;
        bus.publish(env(41)).await.unwrap();
        bus.publish(env(42)).await.unwrap();
        let started = Instant::now();
        match bus.publish(env(43)).await {
            Err(BusError::PublishTimeout) => {}
            other => panic!("a full stream must refuse until the timeout, got {other:?}"),
        }
        assert!(
            started.elapsed() >= config.publish_timeout / 2,
            "gave up after {:?}",
            started.elapsed()
        );
        assert_eq!(stored_messages(&config, &config.stream).await, 2, "nothing dropped");

        // Room appears while a publish waits: it goes through.
        let waiting = tokio::spawn({
            let bus = bus.clone();
            async move { bus.publish(env(43)).await }
        });
        let d = next_now(&bus).await;
        assert_eq!(d.envelope.update_id, 41);
        d.settle.ack().await.unwrap();
        waiting.await.unwrap().expect("published once there was room");
        let mut rest = Vec::new();
        for _ in 0..2 {
            let d = next_now(&bus).await;
            rest.push(d.envelope.update_id);
            d.settle.ack().await.unwrap();
        }
        assert_eq!(rest, [42, 43]);
    }

    #[tokio::test]
    async fn changed_settings_are_updated() {
        let config = JetStreamConfig {
            max_messages: 100,
            ..test_config("update")
        };
        connect(&config).await;
        let changed = JetStreamConfig {
            max_messages: 200,
            duplicate_window: Duration::from_secs(60),
            ack_wait: Duration::from_secs(7),
            max_deliver: 4,
            ..config.clone()
        };
        let bus = connect(&changed).await;
        let js = raw(&config).await;
        let mut work = js.get_stream(&config.stream).await.unwrap();
        let info = work.info().await.unwrap().clone();
        assert_eq!(info.config.max_messages, 200);
        assert_eq!(info.config.duplicate_window, Duration::from_secs(60));
        let consumer = work.consumer_info(&config.consumer).await.unwrap();
        assert_eq!(consumer.config.ack_wait, Duration::from_secs(7));
        assert_eq!(consumer.config.max_deliver, 4);
        // Still one consumer, still working.
        assert_eq!(work.info().await.unwrap().state.consumer_count, 1);
        bus.publish(env(51)).await.unwrap();
        next_now(&bus).await.settle.ack().await.unwrap();
    }

    #[tokio::test]
    async fn unchangeable_settings_fail_clearly() {
        let config = test_config("conflict");
        // Someone made the stream by hand, in memory.
        raw(&config)
            .await
            .create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![config.subject.clone()],
                storage: stream::StorageType::Memory,
                ..Default::default()
            })
            .await
            .unwrap();
        match JetStreamBus::connect(config.clone()).await {
            Err(BusError::Topology(msg)) => {
                assert!(msg.contains(&config.stream), "names the stream: {msg}");
                assert!(msg.contains("storage"), "names the setting: {msg}");
            }
            other => panic!("expected a topology error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn close_ends_next_and_publish() {
        let config = test_config("close");
        let bus = connect(&config).await;
        let waiting = tokio::spawn({
            let bus = bus.clone();
            async move { bus.next().await }
        });
        bus.close();
        assert!(bus.is_closed());
        let ended = tokio::time::timeout(SOON, waiting)
            .await
            .expect("next returns")
            .unwrap();
        assert!(matches!(ended, Ok(None)), "{ended:?}");
        assert!(matches!(bus.next().await, Ok(None)));
        assert!(matches!(bus.publish(env(61)).await, Err(BusError::Closed)));
    }

    // -- a server of the test's own, to stop it ------------------------------

    #[tokio::test]
    async fn publish_fails_in_time_when_the_server_is_gone() {
        let mut server = teledrop_testkit::nats::NatsServer::start().await;
        let config = JetStreamConfig {
            url: server.url(),
            publish_timeout: Duration::from_secs(1),
            ..own_names("stopped")
        };
        let bus = JetStreamBus::connect(config.clone()).await.unwrap();
        bus.publish(env(71)).await.unwrap();
        bus.ping().await.unwrap();

        server.stop().await;

        let started = Instant::now();
        let result = bus.publish(env(72)).await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(BusError::PublishTimeout | BusError::Transport(_))),
            "{result:?}"
        );
        assert!(
            took < config.publish_timeout + Duration::from_secs(2),
            "publish took {took:?} with a {:?} timeout",
            config.publish_timeout
        );
        assert!(bus.ping().await.is_err(), "not ready without a server");
    }
}
