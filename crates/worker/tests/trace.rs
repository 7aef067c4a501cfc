//! One file's journey is one trace: the webhook request's span (ingress)
//! parents the worker's delivery, whose job span parents the download,
//! upload, commit and reply, across the bus through the W3C trace context.
//!
//! A test binary of its own: it installs the process-wide subscriber and
//! propagator, which no other test may share.

use async_trait::async_trait;
use axum::body::Bytes;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use teledrop_bus::{Bus, BusError, Envelope, MemoryBus};
use teledrop_catalog::{Catalog, SqliteCatalog};
use teledrop_core::{BotToken, ByteSize};
use teledrop_ingress::{IngressConfig, Metrics, SECRET_HEADER, Sink, WEBHOOK_PATH};
use teledrop_storage::Storage;
use teledrop_telegram::{Telegram, TelegramConfig};
use teledrop_worker::{Pipeline, PipelineConfig};
use tg_sim::{FileSpec, Sim, SimConfig};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "trace_test_secret";

/// The ingress publishing onto the in-process bus the worker pulls from.
struct Memory(MemoryBus);

#[async_trait]
impl Sink for Memory {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        self.0.publish(envelope).await
    }
    async fn dead_letter(&self, _: Bytes, reason: &str) -> Result<(), BusError> {
        panic!("the test's update was dead-lettered: {reason}")
    }
    async fn ready(&self) -> Result<(), BusError> {
        Ok(())
    }
}

fn tracing_into_memory() -> InMemorySpanExporter {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let exporter = InMemorySpanExporter::default();
    // Exported as each span ends: everything is there once the work is.
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("trace-test"))
        .with_filter(LevelFilter::INFO);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the only subscriber of this test binary");
    exporter
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_one_trace_from_the_webhook_to_the_reply() {
    let exporter = tracing_into_memory();

    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(
        SqliteCatalog::connect(&format!("sqlite://{}/c.db", dir.path().display()))
            .await
            .unwrap(),
    );
    catalog.migrate().await.unwrap();
    let storage = Storage::from_url(&dir.path().join("objects").display().to_string()).unwrap();
    let token: BotToken = sim.token().parse().unwrap();
    let telegram = Telegram::new(TelegramConfig::new(token, sim.base_url(), false)).unwrap();
    let pipeline = Arc::new(Pipeline::new(
        catalog,
        storage,
        telegram,
        PipelineConfig {
            public_url: "https://files.example.com".parse().unwrap(),
            max_file_size: ByteSize::from_bytes(20 << 20),
            allowed_users: vec![],
            progress_interval: Duration::from_secs(60),
            max_attempts: 3,
            rate_limit: None,
            user_concurrency: NonZeroU32::new(2),
        },
    ));

    let bus = MemoryBus::new(8);
    let ingress = teledrop_ingress::router(
        Arc::new(Memory(bus.clone())),
        IngressConfig::new(SECRET.parse().unwrap()),
        Metrics::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook = format!("http://{}{WEBHOOK_PATH}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, ingress).await.unwrap() });
    let stop = CancellationToken::new();
    let worker = tokio::spawn(teledrop_worker::serve(
        Arc::new(bus) as Arc<dyn Bus>,
        pipeline,
        1,
        stop.clone(),
        WAIT,
    ));

    // Telegram's update, as its webhook would POST it.
    let ctl = sim.control();
    let sent = ctl.send_file(FileSpec::document(60, 40_000, 3)).await.unwrap();
    let updates: serde_json::Value = reqwest::get(format!(
        "{}bot{}/getUpdates?offset={}&limit=1&timeout=5",
        sim.base_url(),
        sim.token(),
        sent.update_id
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let update = &updates["result"][0];
    assert_eq!(update["update_id"].as_i64(), Some(sent.update_id), "{updates}");
    let answer = reqwest::Client::new()
        .post(&webhook)
        .header(SECRET_HEADER, SECRET)
        .json(update)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    ctl.wait_for(60, WAIT, |log| log.visible().any(|m| m.text.contains("/download/")))
        .await
        .unwrap();
    stop.cancel();
    worker.await.unwrap();
    // The drained worker has dropped its spans, but SQLite's connection
    // thread holds a clone of the span of each statement it ran until it
    // has answered it (sqlx-sqlite sends the span with the command), so the
    // last ones close, and export, a moment later on that thread.
    let spans = teledrop_testkit::poll_until(WAIT, || {
        let spans = exporter.get_finished_spans().unwrap();
        async move { spans.iter().any(|s| s.name == "delivery").then_some(spans) }
    })
    .await
    .unwrap_or_else(|| {
        let spans = exporter.get_finished_spans().unwrap();
        panic!("the delivery span never ended; ended: {:?}", names(&spans))
    });
    let named = |name: &str| -> &SpanData {
        let mut found = spans.iter().filter(|s| s.name == name);
        let span = found
            .next()
            .unwrap_or_else(|| panic!("no {name} span among {:?}", names(&spans)));
        assert!(found.next().is_none(), "more than one {name} span");
        span
    };
    let webhook = named("webhook");
    let trace: TraceId = webhook.span_context.trace_id();
    assert_ne!(trace, TraceId::INVALID);

    // The worker continues the ingress's trace from the message headers.
    let delivery = named("delivery");
    assert_eq!(delivery.span_context.trace_id(), trace);
    assert_eq!(delivery.parent_span_id, webhook.span_context.span_id());
    assert!(delivery.parent_span_is_remote);

    let job = named("job");
    assert_eq!(job.span_context.trace_id(), trace, "the job joins the webhook's trace");
    assert_ne!(job.parent_span_id, SpanId::INVALID);
    assert_eq!(job.parent_span_id, delivery.span_context.span_id());
    assert_eq!(named("accept").parent_span_id, delivery.span_context.span_id());
    for step in ["download", "upload", "commit", "reply"] {
        let span = named(step);
        assert_eq!(span.span_context.trace_id(), trace, "{step}");
        assert_eq!(span.parent_span_id, job.span_context.span_id(), "{step}");
    }

    // No span names or attributes carry the bot token (Bot API URLs hold it).
    for span in &spans {
        let text = format!("{} {:?}", span.name, span.attributes);
        assert!(!text.contains(sim.token()), "the bot token in a span: {text}");
    }
}

fn names(spans: &[SpanData]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_ref()).collect()
}
