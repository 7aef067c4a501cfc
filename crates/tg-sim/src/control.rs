//! The control API under `/_sim/`: what tests use to act as users and to
//! observe the bot. JSON in and out; errors are `{"error": "..."}`.
//!
//! | route | body → answer |
//! |---|---|
//! | `GET  /_sim/health` | → `"ok"` |
//! | `POST /_sim/files` | [`FileSpec`] → [`crate::SentFile`] |
//! | `POST /_sim/albums` | `{user, items: [FileSpec]}` → `[SentFile]` |
//! | `POST /_sim/texts` | `{user, text}` → [`crate::SentUpdate`] |
//! | `POST /_sim/callbacks` | `{user, message_id, data}` → `SentUpdate` |
//! | `POST /_sim/updates` | any JSON update → `{update_id}` |
//! | `POST /_sim/updates/raw` | any bytes (webhook only) → `{update_id}` |
//! | `GET  /_sim/chats/{id}?after_version=N&timeout_ms=M` | → [`crate::ChatLog`], waiting until its version > N |
//! | `GET  /_sim/files/{file_unique_id}` | → [`crate::FileInfo`] |
//! | `GET`/`PUT /_sim/faults` | [`Faults`] (PUT replaces all) |
//! | `GET  /_sim/webhook/deliveries` | → `[WebhookAttempt]` |
//! | `GET  /_sim/status` | → [`crate::SimStatus`] |
//! | `POST /_sim/file_paths` | `{file_id}` → `{file_path}`: a download path without getFile's 20 MB limit (test back door) |
//! | `GET  /_sim/local_fetches` | → `[LocalFetch]`: every `file_id` `getFile` was asked for, with its call count and local fetch progress |
//! | `POST /_sim/local_file_paths` | `{file_id, file_path}` → 204: local-mode `getFile` of that `file_id` returns `file_path` verbatim from now on (hostile paths) |

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::inject;
use crate::state::Inner;
use crate::types::{ChatLog, Faults, FileInfo, FileSpec, LocalFetch, SimStatus};

/// Longest a chat-log request waits.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn router() -> Router<Arc<Inner>> {
    Router::new()
        .route("/_sim/health", get(|| async { Json(json!("ok")) }))
        .route("/_sim/files", post(send_file))
        .route("/_sim/albums", post(send_album))
        .route("/_sim/texts", post(send_text))
        .route("/_sim/callbacks", post(send_callback))
        .route("/_sim/updates", post(send_raw_update))
        .route("/_sim/updates/raw", post(send_raw_bytes))
        .route("/_sim/chats/{id}", get(chat_log))
        .route("/_sim/files/{unique_id}", get(file_info))
        .route("/_sim/faults", get(get_faults).put(put_faults))
        .route("/_sim/webhook/deliveries", get(deliveries))
        .route("/_sim/status", get(status))
        .route("/_sim/file_paths", post(file_path))
        .route("/_sim/local_file_paths", post(set_local_file_path))
        .route("/_sim/local_fetches", get(local_fetches))
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn send_file(State(inner): State<Arc<Inner>>, Json(spec): Json<FileSpec>) -> Response {
    Json(inject::file(&inner, &spec).await).into_response()
}

#[derive(Deserialize)]
struct AlbumReq {
    user: i64,
    items: Vec<FileSpec>,
}

async fn send_album(State(inner): State<Arc<Inner>>, Json(req): Json<AlbumReq>) -> Response {
    if req.items.is_empty() {
        return error(StatusCode::BAD_REQUEST, "an album needs at least one item");
    }
    let sent: Vec<_> = inject::album(&inner, req.user, &req.items)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    Json(sent).into_response()
}

#[derive(Deserialize)]
struct TextReq {
    user: i64,
    text: String,
}

async fn send_text(State(inner): State<Arc<Inner>>, Json(req): Json<TextReq>) -> Response {
    Json(inject::text(&inner, req.user, &req.text)).into_response()
}

#[derive(Deserialize)]
struct CallbackReq {
    user: i64,
    message_id: i64,
    data: String,
}

async fn send_callback(State(inner): State<Arc<Inner>>, Json(req): Json<CallbackReq>) -> Response {
    match inject::callback(&inner, req.user, req.message_id, &req.data) {
        Some(sent) => Json(sent).into_response(),
        None => error(StatusCode::NOT_FOUND, "the bot sent no such message in that chat"),
    }
}

async fn send_raw_update(State(inner): State<Arc<Inner>>, Json(body): Json<Value>) -> Response {
    if !body.is_object() {
        return error(StatusCode::BAD_REQUEST, "an update is a JSON object");
    }
    Json(json!({ "update_id": inject::raw(&inner, body) })).into_response()
}

async fn send_raw_bytes(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    Json(json!({ "update_id": inject::raw_bytes(&inner, body) })).into_response()
}

#[derive(Deserialize)]
struct ChatQuery {
    after_version: Option<u64>,
    timeout_ms: Option<u64>,
}

fn snapshot(inner: &Inner, chat_id: i64) -> ChatLog {
    inner
        .lock()
        .chats
        .get(&chat_id)
        .map(|c| c.log.clone())
        .unwrap_or_default()
}

async fn chat_log(State(inner): State<Arc<Inner>>, Path(chat_id): Path<i64>, Query(q): Query<ChatQuery>) -> Response {
    let Some(after) = q.after_version else {
        return Json(snapshot(&inner, chat_id)).into_response();
    };
    let wait = Duration::from_millis(q.timeout_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut rx = inner.chats_tx.subscribe();
        let log = snapshot(&inner, chat_id);
        if log.version > after {
            return Json(log).into_response();
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Json(log).into_response(),
            _ = inner.shutdown.cancelled() => return Json(log).into_response(),
            r = rx.changed() => if r.is_err() { return Json(log).into_response() },
        }
    }
}

async fn file_info(State(inner): State<Arc<Inner>>, Path(unique_id): Path<String>) -> Response {
    let Some(record) = inner.lock().files.get(&unique_id).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no file with file_unique_id {unique_id}"),
        );
    };
    let sha256 = inject::sha256_of(&record).await;
    Json(FileInfo {
        file_unique_id: record.unique_id.clone(),
        size: record.size,
        sha256,
    })
    .into_response()
}

async fn get_faults(State(inner): State<Arc<Inner>>) -> Response {
    Json(inner.lock().faults.clone()).into_response()
}

async fn put_faults(State(inner): State<Arc<Inner>>, Json(faults): Json<Faults>) -> Response {
    if !(0.0..=1.0).contains(&faults.error_rate_5xx) {
        return error(StatusCode::BAD_REQUEST, "error_rate_5xx must be within 0.0..=1.0");
    }
    inner.lock().faults = faults;
    StatusCode::NO_CONTENT.into_response()
}

async fn deliveries(State(inner): State<Arc<Inner>>) -> Response {
    Json(inner.lock().deliveries.clone()).into_response()
}

async fn status(State(inner): State<Arc<Inner>>) -> Response {
    let waiting_get_updates = inner.waiting_polls.load(std::sync::atomic::Ordering::SeqCst);
    let st = inner.lock();
    Json(SimStatus {
        waiting_get_updates,
        pending_updates: st.queue.len(),
        webhook_url: st.webhook.as_ref().map(|w| w.url.to_string()),
    })
    .into_response()
}

#[derive(Deserialize)]
struct FilePathReq {
    file_id: String,
}

async fn file_path(State(inner): State<Arc<Inner>>, Json(req): Json<FilePathReq>) -> Response {
    if inner.config.local_mode {
        return error(StatusCode::CONFLICT, "local mode serves no downloads over HTTP");
    }
    match crate::files::assign_path(&mut inner.lock(), &req.file_id) {
        Some(p) => Json(json!({ "file_path": p })).into_response(),
        None => error(StatusCode::NOT_FOUND, "unknown file_id"),
    }
}

#[derive(Deserialize)]
struct LocalPathReq {
    file_id: String,
    file_path: String,
}

async fn set_local_file_path(State(inner): State<Arc<Inner>>, Json(req): Json<LocalPathReq>) -> Response {
    if !inner.config.local_mode {
        return error(StatusCode::CONFLICT, "only local mode returns absolute file paths");
    }
    match inner.lock().file_ids.get_mut(&req.file_id) {
        Some(entry) => {
            entry.local_override = Some(req.file_path);
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "unknown file_id"),
    }
}

async fn local_fetches(State(inner): State<Arc<Inner>>) -> Json<Vec<LocalFetch>> {
    let st = inner.lock();
    let mut all: Vec<LocalFetch> = st
        .file_ids
        .iter()
        .filter(|(_, e)| e.local.get_file_calls() > 0)
        .map(|(id, e)| LocalFetch {
            file_id: id.clone(),
            file_unique_id: e.record.unique_id.clone(),
            size: e.record.size,
            get_file_calls: e.local.get_file_calls(),
            started: e.local.started(),
            fetched: e.local.fetched(),
        })
        .collect();
    all.sort_by(|a, b| a.file_id.cmp(&b.file_id));
    Json(all)
}
