//! Webhook pushes: secret header, per-chat ordering, retries with
//! backoff, Retry-After, error reporting in getWebhookInfo.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{DEADLINE, bot, eventually, start};
use serde_json::Value;
use teloxide::payloads::SetWebhookSetters;
use teloxide::prelude::*;
use tg_sim::{Sim, SimConfig};
use tokio::sync::watch;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    update_id: Option<i64>,
    chat: Option<i64>,
    secret: Option<String>,
    status: u16,
    raw: Vec<u8>,
    at: std::time::Instant,
}

/// What the receiver answers: by default 200; chats in `failing` get
/// `fail_status`, with `retry_after` as a header when set.
#[derive(Default)]
struct Script {
    failing: Vec<i64>,
    fail_status: u16,
    retry_after: Option<u32>,
    /// Fail only this many times per update (0 = while listed).
    fail_times: u32,
    failures: HashMap<i64, u32>,
}

#[derive(Clone)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<Script>>,
    changed: watch::Sender<usize>,
}

impl Receiver {
    async fn start() -> (Receiver, url::Url, tokio::task::JoinHandle<()>) {
        let r = Receiver {
            hits: Arc::default(),
            script: Arc::new(Mutex::new(Script {
                fail_status: 500,
                ..Script::default()
            })),
            changed: watch::Sender::new(0),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (r, url, task)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the hits so far.
    async fn wait(&self, what: &str, pred: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let mut rx = self.changed.subscribe();
        let res = tokio::time::timeout(DEADLINE, async {
            loop {
                let hits = self.hits();
                if pred(&hits) {
                    return hits;
                }
                rx.changed().await.unwrap();
            }
        })
        .await;
        res.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:#?}", self.hits()))
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> axum::response::Response {
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let update_id = json.as_ref().and_then(|v| v["update_id"].as_i64());
    let chat = json
        .as_ref()
        .and_then(|v| v.pointer("/message/chat/id"))
        .and_then(Value::as_i64);
    let (status, retry_after) = {
        let mut s = r.script.lock().unwrap();
        let listed = chat.is_some_and(|c| s.failing.contains(&c));
        let fail = listed && {
            let key = update_id.unwrap_or_default();
            let limit = s.fail_times;
            let n = s.failures.entry(key).or_insert(0);
            *n += 1;
            limit == 0 || *n <= limit
        };
        if fail {
            (s.fail_status, s.retry_after)
        } else {
            (200, None)
        }
    };
    r.hits.lock().unwrap().push(Hit {
        update_id,
        chat,
        secret: headers
            .get("x-telegram-bot-api-secret-token")
            .map(|v| v.to_str().unwrap().to_owned()),
        status,
        raw: body.to_vec(),
        at: std::time::Instant::now(),
    });
    r.changed.send_modify(|n| *n += 1);
    let mut resp = StatusCode::from_u16(status).unwrap().into_response();
    if let Some(ra) = retry_after {
        resp.headers_mut().insert("retry-after", ra.into());
    }
    resp
}

fn delivered(hits: &[Hit], chat: i64) -> Vec<i64> {
    hits.iter()
        .filter(|h| h.chat == Some(chat) && h.status == 200)
        .filter_map(|h| h.update_id)
        .collect()
}

async fn fast_sim() -> Sim {
    start(SimConfig {
        webhook_first_retry: Duration::from_millis(50),
        webhook_backoff_cap: Duration::from_millis(100),
        ..SimConfig::default()
    })
    .await
}

/// getWebhookInfo once its pending count is `n`.
async fn pending_becomes(sim: &Sim, n: u32) -> teloxide::types::WebhookInfo {
    let bot = bot(sim);
    eventually(&format!("{n} updates pending"), || async {
        let info = bot.get_webhook_info().await.unwrap();
        (info.pending_update_count == n).then_some(info)
    })
    .await
}

const A: i64 = 1001;
const B: i64 = 2002;

#[tokio::test]
async fn pushes_with_secret_in_per_chat_order() {
    let sim = fast_sim().await;
    let (rx, url, _task) = Receiver::start().await;
    let ctl = sim.control();
    // Queued before the webhook exists: delivered once it is set.
    let early = ctl.send_text(A, "before").await.unwrap();
    bot(&sim)
        .set_webhook(url)
        .secret_token("topSecret_1".to_owned())
        .await
        .unwrap();
    let mut ids = HashMap::<i64, Vec<i64>>::new();
    ids.entry(A).or_default().push(early.update_id);
    for i in 0..5 {
        for chat in [A, B] {
            ids.entry(chat)
                .or_default()
                .push(ctl.send_text(chat, &format!("m{i}")).await.unwrap().update_id);
        }
    }
    let hits = rx.wait("all 11 delivered", |h| h.len() >= 11).await;
    assert!(hits.iter().all(|h| h.secret.as_deref() == Some("topSecret_1")));
    assert_eq!(delivered(&hits, A), ids[&A]);
    assert_eq!(delivered(&hits, B), ids[&B]);
    // An update leaves the queue once its 200 is read, a moment after the
    // receiver saw it.
    let info = pending_becomes(&sim, 0).await;
    assert_eq!(info.last_error_message, None);
    sim.shutdown().await;
}

#[tokio::test]
async fn failing_chat_is_retried_with_backoff_while_others_proceed() {
    let sim = fast_sim().await;
    let (rx, url, _task) = Receiver::start().await;
    let ctl = sim.control();
    let bot = bot(&sim);
    bot.set_webhook(url).await.unwrap();
    rx.script.lock().unwrap().failing = vec![A];
    let a1 = ctl.send_text(A, "a1").await.unwrap().update_id;
    let a2 = ctl.send_text(A, "a2").await.unwrap().update_id;
    let b1 = ctl.send_text(B, "b1").await.unwrap().update_id;
    let b2 = ctl.send_text(B, "b2").await.unwrap().update_id;

    // B goes through while A's first update keeps failing.
    let hits = rx
        .wait("B delivered and A retried 4 times", |h| {
            delivered(h, B).len() == 2 && h.iter().filter(|x| x.update_id == Some(a1)).count() >= 4
        })
        .await;
    assert_eq!(delivered(&hits, B), vec![b1, b2]);
    assert!(hits.iter().all(|h| h.update_id != Some(a2)), "a2 must wait behind a1");

    let info = pending_becomes(&sim, 2).await;
    assert_eq!(
        info.last_error_message.as_deref(),
        Some("Wrong response from the webhook: 500 Internal Server Error")
    );
    assert!(info.last_error_date.is_some());

    rx.script.lock().unwrap().failing.clear();
    let hits = rx.wait("A delivered", |h| delivered(h, A).len() == 2).await;
    assert_eq!(delivered(&hits, A), vec![a1, a2]);

    // Backoff: immediate first retry, then 50 ms, then capped at 100 ms.
    let tries: Vec<_> = hits.iter().filter(|h| h.update_id == Some(a1)).map(|h| h.at).collect();
    assert!(tries.len() >= 5, "{tries:?}");
    assert!(tries[2] - tries[1] >= Duration::from_millis(50));
    assert!(tries[3] - tries[2] >= Duration::from_millis(100));
    assert!(tries[4] - tries[3] >= Duration::from_millis(100));
    let log = ctl.webhook_deliveries().await.unwrap();
    let a1_log: Vec<_> = log.iter().filter(|d| d.update_id == a1).collect();
    assert_eq!(a1_log.last().unwrap().status, Some(200));
    assert!(
        a1_log[..a1_log.len() - 1]
            .iter()
            .all(|d| d.status == Some(500) && d.error.is_some())
    );
    assert_eq!(
        a1_log.iter().map(|d| d.attempt).collect::<Vec<_>>(),
        (1..=a1_log.len() as u32).collect::<Vec<_>>()
    );
    pending_becomes(&sim, 0).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn retry_after_header_is_honoured() {
    let sim = fast_sim().await;
    let (rx, url, _task) = Receiver::start().await;
    bot(&sim).set_webhook(url).await.unwrap();
    {
        let mut s = rx.script.lock().unwrap();
        s.failing = vec![A];
        s.fail_status = 429;
        s.retry_after = Some(1);
        s.fail_times = 1;
    }
    let id = sim.control().send_text(A, "slow down").await.unwrap().update_id;
    let hits = rx
        .wait("delivered after Retry-After", |h| delivered(h, A) == vec![id])
        .await;
    assert_eq!(hits.len(), 2);
    // Without the header the first retry would be immediate.
    assert!(
        hits[1].at - hits[0].at >= Duration::from_millis(1000),
        "{:?}",
        hits[1].at - hits[0].at
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unreachable_webhook_keeps_updates_for_get_updates() {
    let sim = fast_sim().await;
    let bot = bot(&sim);
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    bot.set_webhook(format!("http://127.0.0.1:{port}/hook").parse().unwrap())
        .await
        .unwrap();
    let sent = sim.control().send_text(A, "anyone?").await.unwrap();
    let info = common::eventually("a connection error is reported", || {
        let bot = bot.clone();
        async move {
            let info = bot.get_webhook_info().await.unwrap();
            info.last_error_message.is_some().then_some(info)
        }
    })
    .await;
    assert_eq!(info.last_error_message.as_deref(), Some("Connection refused"));
    assert_eq!(info.pending_update_count, 1);

    bot.delete_webhook().await.unwrap();
    let updates = bot.get_updates().await.unwrap();
    assert_eq!(
        updates.iter().map(|u| i64::from(u.id.0)).collect::<Vec<_>>(),
        vec![sent.update_id]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn raw_bodies_are_pushed_verbatim_and_drop_pending_clears() {
    let sim = fast_sim().await;
    let (rx, url, _task) = Receiver::start().await;
    let bot = bot(&sim);
    let ctl = sim.control();
    ctl.send_text(A, "dropped").await.unwrap();
    bot.set_webhook(url).drop_pending_updates(true).await.unwrap();
    ctl.send_raw_bytes(b"{not json".to_vec()).await.unwrap();
    let hits = rx.wait("raw body", |h| !h.is_empty()).await;
    assert_eq!(hits.len(), 1, "the dropped update is never pushed");
    assert_eq!(hits[0].raw, b"{not json");
    sim.shutdown().await;
}
