//! The ingress webhook handler with any body: answered without a panic;
//! a body with a non-negative integer `update_id` is published under it,
//! anything else dead-lettered, and nothing is both.
#![no_main]

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};
use teledrop_bus::{BusError, Envelope};
use teledrop_ingress::{IngressConfig, Metrics, SECRET_HEADER, Sink, WEBHOOK_PATH, router};
use tower::ServiceExt;

#[derive(Default)]
struct Recorder {
    published: Mutex<Vec<(i64, Bytes)>>,
    dead: Mutex<Vec<Bytes>>,
}

#[async_trait]
impl Sink for Recorder {
    async fn publish(&self, envelope: Envelope) -> Result<(), BusError> {
        self.published.lock().unwrap().push((envelope.update_id, envelope.body));
        Ok(())
    }
    async fn dead_letter(&self, body: Bytes, _reason: &str) -> Result<(), BusError> {
        self.dead.lock().unwrap().push(body);
        Ok(())
    }
    async fn ready(&self) -> Result<(), BusError> {
        Ok(())
    }
}

fuzz_target!(|body: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sink = Arc::new(Recorder::default());
    let mut config = IngressConfig::new("fuzz_secret".parse().unwrap());
    config.max_body_bytes = 64 * 1024;
    let app = router(sink.clone(), config, Metrics::default());
    let request = Request::post(WEBHOOK_PATH)
        .header(SECRET_HEADER, "fuzz_secret")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let status = rt.block_on(app.oneshot(request)).unwrap().status();
    assert_eq!(status, StatusCode::OK);
    let published = sink.published.lock().unwrap();
    let dead = sink.dead.lock().unwrap();
    assert_eq!(published.len() + dead.len(), 1);
    let expected = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("update_id").and_then(serde_json::Value::as_i64))
        .filter(|id| *id >= 0);
    match expected {
        Some(id) => assert_eq!(published[0], (id, Bytes::copy_from_slice(body))),
        None => assert_eq!(dead[0], body),
    }
});
