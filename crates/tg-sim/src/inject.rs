//! Turning what a test asks a simulated user to do into real-looking
//! updates.
//!
//! Each injected message gets the next message id of its chat and the
//! next update id, and carries `from`, `chat` and `date` as Telegram's do.
//! Media fields follow the Bot API objects (Document, Video, Audio, Voice,
//! VideoNote, Animation + Document, PhotoSize array, Sticker); sizes and
//! durations are derived from the spec so they are stable between runs.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::content::{self, content_key};
use crate::ids;
use crate::state::{FileRecord, Inner, State, UpdateBody};
use crate::text;
use crate::types::{FileSpec, MediaKind, SentFile, SentUpdate};

/// Files up to this size get their SHA-256 computed at send time (in
/// [`SentFile::sha256`]); bigger ones only on demand (`file_info`).
pub const SHA_AT_SEND_LIMIT: u64 = 64 * 1024 * 1024;

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn ext_of(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() && ext.len() <= 8 => ext,
        _ => "",
    }
}

/// A MIME type for a file name, for specs that name no type.
fn guess_mime(name: &str) -> &'static str {
    match ext_of(name).to_ascii_lowercase().as_str() {
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "txt" => "text/plain",
        "json" => "application/json",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" => "audio/ogg",
        "flac" => "audio/flac",
        _ => "application/octet-stream",
    }
}

/// A base message of `user`'s chat; returns (message json, message id).
fn base_message(state: &mut State, user: i64) -> (Map<String, Value>, i64) {
    let chat = state.chat_mut(user);
    let message_id = chat.alloc_message_id();
    let mut m = Map::new();
    m.insert("message_id".into(), json!(message_id));
    m.insert("from".into(), chat.user.clone());
    m.insert("chat".into(), chat.chat.clone());
    m.insert("date".into(), json!(now_secs()));
    (m, message_id)
}

/// Queues `message` as a `message` update of `user`'s chat and remembers it.
fn queue_message(state: &mut State, user: i64, message: Map<String, Value>) -> i64 {
    let message = Value::Object(message);
    let message_id = message["message_id"].as_i64().unwrap_or_default();
    state.chat_mut(user).user_messages.insert(message_id, message.clone());
    let update_id = state.alloc_update_id();
    let body = json!({ "update_id": update_id, "message": message });
    state.enqueue(update_id, Some(user), Some("message"), UpdateBody::Json(body));
    update_id
}

/// Duration in seconds a media file of `size` bytes plausibly has.
fn duration_for(size: u64, bytes_per_sec: u64) -> u64 {
    (size / bytes_per_sec).max(1)
}

struct Built {
    file_id: String,
    record: Arc<FileRecord>,
}

/// Adds the media fields of `spec` to `m`.
fn add_media(state: &mut State, m: &mut Map<String, Value>, spec: &FileSpec) -> Built {
    let key = content_key(spec.seed, spec.size);
    let record = state.record(key, spec.size);
    let default_name = match spec.kind {
        MediaKind::Document => Some(format!("document_{}.bin", spec.seed)),
        MediaKind::Video => Some(format!("video_{}.mp4", spec.seed)),
        MediaKind::Audio => Some(format!("audio_{}.mp3", spec.seed)),
        MediaKind::Animation => Some(format!("animation_{}.mp4", spec.seed)),
        _ => None,
    };
    let name = spec.name.clone().or(default_name);
    let default_mime = match spec.kind {
        MediaKind::Voice => "audio/ogg",
        MediaKind::Video | MediaKind::Animation | MediaKind::VideoNote => "video/mp4",
        MediaKind::Audio => "audio/mpeg",
        MediaKind::Photo => "image/jpeg",
        MediaKind::Sticker => "image/webp",
        MediaKind::Document => name.as_deref().map_or("application/octet-stream", guess_mime),
    };
    let mime = spec.mime.clone().unwrap_or_else(|| default_mime.to_owned());
    let ext = match spec.kind {
        MediaKind::Voice => ".oga".to_owned(),
        MediaKind::Photo => ".jpg".to_owned(),
        MediaKind::Sticker => ".webp".to_owned(),
        MediaKind::VideoNote => ".mp4".to_owned(),
        _ => name
            .as_deref()
            .map(ext_of)
            .filter(|e| !e.is_empty())
            .map(|e| format!(".{e}"))
            .unwrap_or_default(),
    };
    let file_id = state.new_file_id(&record, spec.kind, &ext);
    let mut obj = Map::new();
    obj.insert("file_id".into(), json!(file_id));
    obj.insert("file_unique_id".into(), json!(record.unique_id));
    match spec.kind {
        MediaKind::Document => {
            if let Some(n) = &name {
                obj.insert("file_name".into(), json!(n));
            }
            obj.insert("mime_type".into(), json!(mime));
        }
        MediaKind::Video | MediaKind::Animation => {
            obj.insert("width".into(), json!(1280));
            obj.insert("height".into(), json!(720));
            obj.insert("duration".into(), json!(duration_for(spec.size, 250_000)));
            if let Some(n) = &name {
                obj.insert("file_name".into(), json!(n));
            }
            obj.insert("mime_type".into(), json!(mime));
        }
        MediaKind::Audio => {
            obj.insert("duration".into(), json!(duration_for(spec.size, 32_000)));
            obj.insert("performer".into(), json!("Simulated Artist"));
            obj.insert("title".into(), json!(format!("Track {}", spec.seed)));
            if let Some(n) = &name {
                obj.insert("file_name".into(), json!(n));
            }
            obj.insert("mime_type".into(), json!(mime));
        }
        MediaKind::Voice => {
            obj.insert("duration".into(), json!(duration_for(spec.size, 4_000)));
            obj.insert("mime_type".into(), json!(mime));
        }
        MediaKind::VideoNote => {
            obj.insert("length".into(), json!(384));
            obj.insert("duration".into(), json!(duration_for(spec.size, 100_000).min(60)));
        }
        MediaKind::Sticker => {
            obj.insert("type".into(), json!("regular"));
            obj.insert("width".into(), json!(512));
            obj.insert("height".into(), json!(512));
            obj.insert("is_animated".into(), json!(false));
            obj.insert("is_video".into(), json!(false));
            obj.insert("emoji".into(), json!("\u{1F600}"));
        }
        MediaKind::Photo => {}
    }
    obj.insert("file_size".into(), json!(spec.size));
    match spec.kind {
        MediaKind::Photo => {
            // Smaller renditions first, the spec's content last (largest).
            let mut sizes = Vec::new();
            let dims: &[(u32, u32)] = if spec.size >= 100_000 {
                &[(90, 67), (320, 240), (800, 600), (1280, 960)]
            } else {
                &[(90, 67), (320, 240), (800, 600)]
            };
            let n = dims.len();
            for (i, (w, h)) in dims.iter().enumerate() {
                if i + 1 == n {
                    obj.insert("width".into(), json!(w));
                    obj.insert("height".into(), json!(h));
                    sizes.push(Value::Object(obj.clone()));
                } else {
                    let small_size = (spec.size / [40, 8, 3][i] + 1).min(spec.size.max(1));
                    let small_key = content_key(crate::content::mix(spec.seed ^ (i as u64 + 1)), small_size);
                    let small = state.record(small_key, small_size);
                    let small_id = state.new_file_id(&small, MediaKind::Photo, ".jpg");
                    sizes.push(json!({
                        "file_id": small_id, "file_unique_id": small.unique_id,
                        "file_size": small_size, "width": w, "height": h,
                    }));
                }
            }
            m.insert("photo".into(), Value::Array(sizes));
        }
        MediaKind::Animation => {
            // Telegram also sends an animation as a document, same file.
            let mut doc = Map::new();
            for k in ["file_id", "file_unique_id", "file_name", "mime_type", "file_size"] {
                if let Some(v) = obj.get(k) {
                    doc.insert(k.into(), v.clone());
                }
            }
            m.insert("animation".into(), Value::Object(obj));
            m.insert("document".into(), Value::Object(doc));
        }
        kind => {
            let field = match kind {
                MediaKind::Document => "document",
                MediaKind::Video => "video",
                MediaKind::Audio => "audio",
                MediaKind::Voice => "voice",
                MediaKind::VideoNote => "video_note",
                _ => "sticker",
            };
            m.insert(field.into(), Value::Object(obj));
        }
    }
    if let Some(c) = &spec.caption {
        m.insert("caption".into(), json!(c));
        let entities = text::command_entities(c);
        if !entities.is_empty() {
            m.insert("caption_entities".into(), Value::Array(entities));
        }
    }
    if spec.forward {
        m.insert(
            "forward_origin".into(),
            json!({
                "type": "user",
                "date": now_secs() - 3600,
                "sender_user": {
                    "id": 777_000_000 + (spec.seed % 1000) as i64, "is_bot": false,
                    "first_name": "Original", "username": "original_sender",
                },
            }),
        );
    }
    Built { file_id, record }
}

fn inject_file_locked(state: &mut State, spec: &FileSpec, group: Option<&str>) -> (SentFile, Arc<FileRecord>) {
    let (mut m, message_id) = base_message(state, spec.user);
    if let Some(g) = group {
        m.insert("media_group_id".into(), json!(g));
    }
    let built = add_media(state, &mut m, spec);
    let update_id = queue_message(state, spec.user, m);
    let sent = SentFile {
        update_id,
        message_id,
        file_id: built.file_id,
        file_unique_id: built.record.unique_id.clone(),
        size: spec.size,
        sha256: built.record.sha256.get().cloned().unwrap_or_default(),
    };
    (sent, built.record)
}

/// SHA-256 of a record, computed once (on a blocking thread).
pub async fn sha256_of(record: &Arc<FileRecord>) -> String {
    let r = record.clone();
    record
        .sha256
        .get_or_init(|| async move {
            let (key, size) = (r.key, r.size);
            tokio::task::spawn_blocking(move || content::sha256_hex(key, size))
                .await
                .expect("hashing task panicked")
        })
        .await
        .clone()
}

async fn fill_sha(mut sent: SentFile, record: &Arc<FileRecord>) -> SentFile {
    if sent.sha256.is_empty() && record.size <= SHA_AT_SEND_LIMIT {
        sent.sha256 = sha256_of(record).await;
    }
    sent
}

/// Injects one file message.
pub async fn file(inner: &Inner, spec: &FileSpec) -> SentFile {
    let (sent, record) = {
        let mut st = inner.lock();
        inject_file_locked(&mut st, spec, None)
    };
    inner.notify_updates();
    fill_sha(sent, &record).await
}

/// Injects an album: one update per item, sharing a `media_group_id`.
pub async fn album(inner: &Inner, user: i64, items: &[FileSpec]) -> Vec<(SentFile, Arc<FileRecord>)> {
    let group = ids::random_numeric();
    let sent: Vec<_> = {
        let mut st = inner.lock();
        items
            .iter()
            .map(|spec| {
                let mut spec = spec.clone();
                spec.user = user;
                inject_file_locked(&mut st, &spec, Some(&group))
            })
            .collect()
    };
    inner.notify_updates();
    let mut out = Vec::with_capacity(sent.len());
    for (s, r) in sent {
        let s = fill_sha(s, &r).await;
        out.push((s, r));
    }
    out
}

/// Injects a text message; `/commands` get `bot_command` entities.
pub fn text(inner: &Inner, user: i64, text: &str) -> SentUpdate {
    let sent = {
        let mut st = inner.lock();
        let (mut m, message_id) = base_message(&mut st, user);
        m.insert("text".into(), json!(text));
        let entities = text::command_entities(text);
        if !entities.is_empty() {
            m.insert("entities".into(), Value::Array(entities));
        }
        let update_id = queue_message(&mut st, user, m);
        SentUpdate {
            update_id,
            message_id,
            callback_query_id: None,
        }
    };
    inner.notify_updates();
    sent
}

/// Injects a press of an inline button with `data` under the bot's
/// message `message_id`. `None` when the bot never sent that message.
pub fn callback(inner: &Inner, user: i64, message_id: i64, data: &str) -> Option<SentUpdate> {
    let sent = {
        let mut st = inner.lock();
        let bot = inner.bot_user();
        let chat = st.chats.get_mut(&user)?;
        let msg = chat.log.messages.iter().find(|m| m.message_id == message_id)?;
        let mut message = json!({
            "message_id": message_id, "from": bot, "chat": chat.chat, "date": now_secs(), "text": msg.text,
        });
        if let Some(markup) = &msg.reply_markup {
            message["reply_markup"] = markup.clone();
        }
        let from = chat.user.clone();
        let id = ids::random_numeric();
        st.callbacks.insert(id.clone(), user);
        let update_id = st.alloc_update_id();
        let body = json!({
            "update_id": update_id,
            "callback_query": {
                "id": id, "from": from, "message": message,
                "chat_instance": format!("{}", crate::content::mix(user as u64) >> 1), "data": data,
            },
        });
        st.enqueue(update_id, Some(user), Some("callback_query"), UpdateBody::Json(body));
        SentUpdate {
            update_id,
            message_id,
            callback_query_id: Some(id),
        }
    };
    inner.notify_updates();
    Some(sent)
}

/// The chat an arbitrary update belongs to, for per-chat ordering.
fn chat_of(body: &Value) -> Option<i64> {
    let obj = body.as_object()?;
    for (k, v) in obj {
        if k == "update_id" {
            continue;
        }
        if let Some(id) = v.pointer("/chat/id").and_then(Value::as_i64) {
            return Some(id);
        }
        if let Some(id) = v.pointer("/message/chat/id").and_then(Value::as_i64) {
            return Some(id);
        }
        if let Some(id) = v.pointer("/from/id").and_then(Value::as_i64) {
            return Some(id);
        }
    }
    None
}

/// Injects any JSON as an update; assigns `update_id` when missing.
/// A message's sender becomes a known chat.
pub fn raw(inner: &Inner, mut body: Value) -> i64 {
    let update_id = {
        let mut st = inner.lock();
        let update_id = match body.get("update_id").and_then(Value::as_i64) {
            Some(id) => {
                st.next_update_id = st.next_update_id.max(id + 1);
                id
            }
            None => {
                let id = st.alloc_update_id();
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("update_id".into(), json!(id));
                }
                id
            }
        };
        let chat_id = chat_of(&body);
        let kind = body
            .as_object()
            .and_then(|o| o.keys().find(|k| k.as_str() != "update_id").cloned());
        if let Some(msg) = body
            .get("message")
            .filter(|m| m.pointer("/chat/type") == Some(&json!("private")))
            && let (Some(chat), Some(mid)) = (chat_id, msg.get("message_id").and_then(Value::as_i64))
        {
            let c = st.chat_mut(chat);
            c.next_message_id = c.next_message_id.max(mid + 1);
            c.user_messages.insert(mid, msg.clone());
        }
        st.enqueue(update_id, chat_id, kind.as_deref(), UpdateBody::Json(body));
        update_id
    };
    inner.notify_updates();
    update_id
}

/// Queues bytes pushed verbatim to the webhook (never returned by
/// `getUpdates`, which can only return JSON).
pub fn raw_bytes(inner: &Inner, bytes: bytes::Bytes) -> i64 {
    let id = {
        let mut st = inner.lock();
        let id = st.alloc_update_id();
        st.enqueue(id, None, None, UpdateBody::Raw(bytes));
        id
    };
    inner.notify_updates();
    id
}
