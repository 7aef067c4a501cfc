//! Property tests of the webhook handler's reading of a body, driven
//! through the router with an in-memory sink: an authenticated body of any
//! content is answered 200 and goes to exactly one place, the bus under its
//! `update_id` when it is a JSON object with a non-negative integer one,
//! the dead-letter subject otherwise; a wrong secret touches nothing.
//!
//! A bounded run (see `config`) is part of `cargo test`; set
//! `PROPTEST_CASES` for a longer one. The coverage-guided target is
//! `fuzz/fuzz_targets/webhook.rs` (`scripts/fuzz.sh`).

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use teledrop_bus::{BusError, Envelope};
use teledrop_ingress::{IngressConfig, Metrics, SECRET_HEADER, Sink, WEBHOOK_PATH, router};
use tower::ServiceExt;

const SECRET: &str = "fuzz_Secret-1";
const LIMIT: usize = 4096;

/// `cases` unless `PROPTEST_CASES` asks for another number.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

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

/// Posts `body` with `secret`; the status and what the sink got.
fn post(body: &[u8], secret: &str) -> (StatusCode, Vec<(i64, Bytes)>, Vec<Bytes>) {
    let sink = Arc::new(Recorder::default());
    let mut config = IngressConfig::new(SECRET.parse().unwrap());
    config.max_body_bytes = LIMIT;
    let app = router(sink.clone(), config, Metrics::default());
    let request = Request::post(WEBHOOK_PATH)
        .header(SECRET_HEADER, secret)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(app.oneshot(request)).unwrap().status();
    let published = std::mem::take(&mut *sink.published.lock().unwrap());
    let dead = std::mem::take(&mut *sink.dead.lock().unwrap());
    (status, published, dead)
}

/// The `update_id` the handler should publish under, if any.
fn expected_id(body: &[u8]) -> Option<i64> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("update_id")?.as_i64().filter(|id| *id >= 0)
}

fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let (status, published, dead) = post(body, SECRET);
    if body.len() > LIMIT {
        prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        prop_assert!(published.is_empty() && dead.is_empty());
        return Ok(());
    }
    prop_assert_eq!(status, StatusCode::OK);
    match expected_id(body) {
        Some(id) => {
            prop_assert_eq!(published, vec![(id, Bytes::copy_from_slice(body))]);
            prop_assert!(dead.is_empty());
        }
        None => {
            prop_assert!(published.is_empty(), "{:?}", String::from_utf8_lossy(body));
            prop_assert_eq!(dead, vec![Bytes::copy_from_slice(body)]);
        }
    }
    Ok(())
}

/// A value for `update_id`: integers of every size and sign, and things
/// that are not integers.
fn update_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0i64..1_000_000).prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        1 => "[0-9-]{0,6}".prop_map(Value::from),
        1 => Just(Value::Null),
        1 => Just(json!([1])),
    ]
}

/// Bodies near an update: the usual object with a random `update_id`,
/// duplicated keys, JSON of another shape, or a cut-off body.
fn near_update() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (update_id(), ".{0,20}").prop_map(|(id, t)| json!({"update_id": id, "message": {"text": t}}).to_string().into_bytes()),
        1 => (update_id(), update_id())
            .prop_map(|(a, b)| format!(r#"{{"update_id":{a},"update_id":{b}}}"#).into_bytes()),
        1 => update_id().prop_map(|id| json!([{"update_id": id}]).to_string().into_bytes()),
        1 => (update_id(), 0usize..40).prop_map(|(id, cut)| {
            let mut b = json!({"update_id": id, "message": {}}).to_string().into_bytes();
            b.truncate(cut);
            b
        }),
        1 => "[0-9]{20,25}".prop_map(|n| format!(r#"{{"update_id":{n}}}"#).into_bytes()),
        1 => (0usize..3).prop_map(|extra| vec![b' '; LIMIT - 20 + extra * 20]),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bodies_go_to_exactly_one_place(body in prop::collection::vec(any::<u8>(), 0..300)) {
        check(&body)?;
    }

    #[test]
    fn near_updates_go_to_exactly_one_place(body in near_update()) {
        check(&body)?;
    }

    #[test]
    fn a_wrong_secret_touches_nothing(body in near_update(), secret in "[a-zA-Z0-9_-]{0,16}") {
        prop_assume!(secret != SECRET);
        let (status, published, dead) = post(&body, &secret);
        prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
        prop_assert!(published.is_empty() && dead.is_empty());
    }
}
