//! The webhook handler against a real NATS JetStream (TEST_NATS_URL).

use axum::body::Bytes;
use std::sync::Arc;
use std::time::Duration;
use teledrop_bus::{Bus, BusError, Envelope, JetStreamBus, JetStreamConfig};
use teledrop_ingress::{IngressConfig, Metrics, SECRET_HEADER, Sink, WEBHOOK_PATH, admin_router, router};

const SECRET: &str = "webhook_Secret-123";

async fn bus() -> Arc<JetStreamBus> {
    let s = teledrop_testkit::unique_suffix();
    let config = JetStreamConfig {
        url: teledrop_testkit::require_env("TEST_NATS_URL"),
        stream: format!("T_{s}"),
        subject: format!("t.{s}.updates"),
        dead_letter_stream: format!("TD_{s}"),
        dead_letter_subject: format!("t.{s}.dead"),
        consumer: format!("w_{s}"),
        ..JetStreamConfig::default()
    };
    Arc::new(JetStreamBus::connect(config).await.unwrap())
}

async fn serve(sink: Arc<dyn Sink>, publish_timeout: Duration) -> (String, Metrics) {
    let mut config = IngressConfig::new(SECRET.parse().unwrap());
    config.max_body_bytes = 64 * 1024;
    config.publish_timeout = publish_timeout;
    let metrics = Metrics::default();
    let app = router(sink, config, metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}{WEBHOOK_PATH}"), metrics)
}

/// The admin routes of `sink` on a listener of their own; the base URL.
async fn serve_admin(sink: Arc<dyn Sink>, metrics: Metrics) -> String {
    let app = admin_router(sink, metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn post(url: &str, secret: Option<&str>, body: impl Into<reqwest::Body>) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(s) = secret {
        req = req.header(SECRET_HEADER, s);
    }
    req.send().await.unwrap()
}

/// Whatever the bus delivers within `wait` (a bounded look for "nothing").
async fn next_within(bus: &JetStreamBus, wait: Duration) -> Option<Envelope> {
    match tokio::time::timeout(wait, bus.next()).await {
        Ok(Ok(Some(d))) => {
            let env = d.envelope.clone();
            d.settle.ack().await.unwrap();
            Some(env)
        }
        _ => None,
    }
}

#[tokio::test]
async fn a_valid_update_is_published_once_and_acknowledged() {
    let bus = bus().await;
    let (url, metrics) = serve(bus.clone(), Duration::from_secs(5)).await;
    let body = r#"{"update_id":424242,"message":{"message_id":1}}"#;
    assert_eq!(post(&url, Some(SECRET), body).await.status(), 200);
    // Telegram retrying the same update: answered 200, stored once.
    assert_eq!(post(&url, Some(SECRET), body).await.status(), 200);
    let got = next_within(&bus, Duration::from_secs(5)).await.expect("published");
    assert_eq!(got.update_id, 424242);
    assert_eq!(got.body, Bytes::from(body));
    assert!(
        next_within(&bus, Duration::from_millis(500)).await.is_none(),
        "deduplicated"
    );
    assert_eq!(metrics.get("published"), 2);
}

/// A stranger announcing a 16 MiB body and sending none of it gets the
/// 401 at once: the secret is checked before a byte of body is read.
#[tokio::test]
async fn a_wrong_secret_is_answered_before_the_body_is_sent() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let bus = bus().await;
    let (url, metrics) = serve(bus.clone(), Duration::from_secs(5)).await;
    let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         {SECRET_HEADER}: not-the-secret\r\nContent-Length: {}\r\n\r\n",
        16 << 20
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // No body follows. A server that waited for it would never answer;
    // the deadline only bounds how long this test can hang.
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer while the body was withheld");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert_eq!(metrics.get("unauthorized"), 1);
    assert!(
        next_within(&bus, Duration::from_millis(200)).await.is_none(),
        "nothing published"
    );
}

#[tokio::test]
async fn wrong_or_missing_secret_is_401_and_publishes_nothing() {
    let bus = bus().await;
    let (url, metrics) = serve(bus.clone(), Duration::from_secs(5)).await;
    let body = r#"{"update_id":1}"#;
    assert_eq!(post(&url, None, body).await.status(), 401);
    assert_eq!(post(&url, Some("webhook_Secret-12"), body).await.status(), 401);
    assert_eq!(post(&url, Some("webhook_Secret-1234"), body).await.status(), 401);
    assert!(next_within(&bus, Duration::from_millis(500)).await.is_none());
    assert_eq!(metrics.get("unauthorized"), 3);
}

#[tokio::test]
async fn an_oversized_body_is_413_and_publishes_nothing() {
    let bus = bus().await;
    let (url, metrics) = serve(bus.clone(), Duration::from_secs(5)).await;
    let big = format!(r#"{{"update_id":5,"pad":"{}"}}"#, "x".repeat(100 * 1024));
    assert_eq!(post(&url, Some(SECRET), big).await.status(), 413);
    // Far past what socket buffers hold: the client is still writing when
    // the answer is ready, and reads the 413, not a broken connection.
    let huge = format!(r#"{{"update_id":6,"pad":"{}"}}"#, "x".repeat(8 << 20));
    assert_eq!(post(&url, Some(SECRET), huge).await.status(), 413);
    // Without a Content-Length (chunked), the limit holds as bytes arrive.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..40).map(|_| Ok(vec![b' '; 4096])).collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let resp = post(&url, Some(SECRET), streamed).await;
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await.unwrap().contains("65536 bytes"));
    assert!(next_within(&bus, Duration::from_millis(500)).await.is_none());
    assert_eq!(metrics.get("too_large"), 3);
}

#[tokio::test]
async fn garbage_is_dead_lettered_and_answered_200() {
    let bus = bus().await;
    let (url, metrics) = serve(bus.clone(), Duration::from_secs(5)).await;
    for body in ["not json", "[1,2,3]", r#"{"message":{}}"#] {
        assert_eq!(post(&url, Some(SECRET), body).await.status(), 200, "{body}");
    }
    assert!(
        next_within(&bus, Duration::from_millis(500)).await.is_none(),
        "nothing reaches the workers"
    );
    assert_eq!(metrics.get("dead_letter"), 3);
}

/// A sink that never confirms, like a JetStream that does not answer.
struct Stuck;

#[async_trait::async_trait]
impl Sink for Stuck {
    async fn publish(&self, _: Envelope) -> Result<(), BusError> {
        std::future::pending().await
    }
    async fn dead_letter(&self, _: Bytes, _: &str) -> Result<(), BusError> {
        std::future::pending().await
    }
    async fn ready(&self) -> Result<(), BusError> {
        Err(BusError::Transport("stuck".into()))
    }
}

#[tokio::test]
async fn an_unconfirmed_publish_is_503_with_retry_after() {
    let (url, metrics) = serve(Arc::new(Stuck), Duration::from_millis(200)).await;
    let resp = post(&url, Some(SECRET), r#"{"update_id":9}"#).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(metrics.get("unavailable"), 1);
    let admin = serve_admin(Arc::new(Stuck), metrics).await;
    let ready = reqwest::get(format!("{admin}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    let scraped = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        scraped.contains("teledrop_webhook_requests_total{outcome=\"unavailable\"} 1"),
        "{scraped}"
    );
    // The webhook's listener has no probes or metrics.
    for path in ["/readyz", "/healthz", "/metrics"] {
        let r = reqwest::get(url.replace(WEBHOOK_PATH, path)).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}
