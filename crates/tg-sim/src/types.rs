//! The public data model shared by the control API and [`crate::SimClient`].
//!
//! Everything here is plain serde data: the control API sends and receives
//! exactly these structs as JSON, so a test can drive a separate `tg-sim`
//! process with the same types it uses in-process.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Kinds of media a simulated user can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A file sent "as a file": `message.document`.
    Document,
    /// `message.video`.
    Video,
    /// `message.audio` (music).
    Audio,
    /// `message.voice` (OGG/Opus voice note).
    Voice,
    /// `message.animation` plus the same file as `message.document`.
    Animation,
    /// `message.video_note` (round video).
    VideoNote,
    /// `message.photo`: several sizes, the largest being the spec's content.
    Photo,
    /// `message.sticker`.
    Sticker,
}

impl MediaKind {
    /// The folder the real Bot API uses for this kind in `file_path`.
    pub fn folder(self) -> &'static str {
        match self {
            MediaKind::Document => "documents",
            MediaKind::Video => "videos",
            MediaKind::Audio => "music",
            MediaKind::Voice => "voice",
            MediaKind::Animation => "animations",
            MediaKind::VideoNote => "video_notes",
            MediaKind::Photo => "photos",
            MediaKind::Sticker => "stickers",
        }
    }

    /// The first 15 characters of Telegram's `file_id`s for this kind
    /// (the leading bytes encode the file type).
    pub(crate) fn file_id_prefix(self) -> &'static str {
        match self {
            MediaKind::Document => "BQACAgIAAxkBAAI",
            MediaKind::Video => "BAACAgIAAxkBAAI",
            MediaKind::Audio => "CQACAgIAAxkBAAI",
            MediaKind::Voice => "AwACAgIAAxkBAAI",
            MediaKind::Animation => "CgACAgIAAxkBAAI",
            MediaKind::VideoNote => "DQACAgIAAxkBAAI",
            MediaKind::Photo => "AgACAgIAAxkBAAI",
            MediaKind::Sticker => "CAACAgIAAxkBAAI",
        }
    }
}

/// What a simulated user sends: a file of `size` bytes whose content is
/// generated from `seed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// Sender's user id (= private chat id).
    pub user: i64,
    pub kind: MediaKind,
    pub size: u64,
    /// `file_name`; a default per kind when `None` (voice, video notes,
    /// photos and stickers carry no name, as in Telegram).
    #[serde(default)]
    pub name: Option<String>,
    /// `mime_type`; guessed from the name when `None`.
    #[serde(default)]
    pub mime: Option<String>,
    pub seed: u64,
    #[serde(default)]
    pub caption: Option<String>,
    /// Sent as a forward (`forward_origin` of type "user").
    #[serde(default)]
    pub forward: bool,
}

impl FileSpec {
    /// A spec of `kind` with no name, mime, caption or forward.
    pub fn new(kind: MediaKind, user: i64, size: u64, seed: u64) -> Self {
        FileSpec {
            user,
            kind,
            size,
            name: None,
            mime: None,
            seed,
            caption: None,
            forward: false,
        }
    }
    pub fn document(user: i64, size: u64, seed: u64) -> Self {
        Self::new(MediaKind::Document, user, size, seed)
    }
    pub fn video(user: i64, size: u64, seed: u64) -> Self {
        Self::new(MediaKind::Video, user, size, seed)
    }
    pub fn audio(user: i64, size: u64, seed: u64) -> Self {
        Self::new(MediaKind::Audio, user, size, seed)
    }
    pub fn voice(user: i64, size: u64, seed: u64) -> Self {
        Self::new(MediaKind::Voice, user, size, seed)
    }
    pub fn animation(user: i64, size: u64, seed: u64) -> Self {
        Self::new(MediaKind::Animation, user, size, seed)
    }
    pub fn video_note(user: i64, size: u64, seed: u64) -> Self {
        Self::new(MediaKind::VideoNote, user, size, seed)
    }
    pub fn photo(user: i64, size: u64, seed: u64) -> Self {
        Self::new(MediaKind::Photo, user, size, seed)
    }
    pub fn sticker(user: i64, size: u64, seed: u64) -> Self {
        Self::new(MediaKind::Sticker, user, size, seed)
    }
    /// Sets `file_name`.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Sets `mime_type`.
    pub fn with_mime(mut self, mime: impl Into<String>) -> Self {
        self.mime = Some(mime.into());
        self
    }
    /// Sets the caption.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }
    /// Marks the message as forwarded from another user.
    pub fn forwarded(mut self) -> Self {
        self.forward = true;
        self
    }
}

/// The result of injecting one file message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentFile {
    pub update_id: i64,
    pub message_id: i64,
    /// For photos: the largest size's id.
    pub file_id: String,
    pub file_unique_id: String,
    pub size: u64,
    /// Hex SHA-256 of the content. Computed at send time (on a blocking
    /// thread) for files up to [`crate::SHA_AT_SEND_LIMIT`] bytes; empty
    /// for bigger ones, whose hash [`crate::SimClient::file_info`]
    /// computes on demand.
    pub sha256: String,
}

/// The result of injecting a text message or a callback query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentUpdate {
    pub update_id: i64,
    /// The user's message id (for callback queries: the message the button
    /// belongs to).
    pub message_id: i64,
    /// Set for callback queries: the id `answerCallbackQuery` expects.
    #[serde(default)]
    pub callback_query_id: Option<String>,
}

/// Everything the bot did in one chat, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLog {
    /// Grows by one on every change to this chat's log; 0 = nothing yet.
    pub version: u64,
    pub messages: Vec<BotMessage>,
    /// `answerCallbackQuery` calls for queries from this chat's user.
    #[serde(default)]
    pub callback_answers: Vec<CallbackAnswer>,
    /// `sendChatAction` actions, in order ("typing", "upload_document", …).
    #[serde(default)]
    pub chat_actions: Vec<String>,
}

impl ChatLog {
    /// Messages not deleted, in order.
    pub fn visible(&self) -> impl Iterator<Item = &BotMessage> {
        self.messages.iter().filter(|m| !m.deleted)
    }
    /// The last message the bot sent that is not deleted.
    pub fn last(&self) -> Option<&BotMessage> {
        self.visible().last()
    }
}

/// One message the bot sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotMessage {
    pub message_id: i64,
    /// Current text (entities already parsed out: what a user sees).
    pub text: String,
    pub reply_markup: Option<serde_json::Value>,
    /// Every text it had, in order; the first is as sent.
    pub history: Vec<String>,
    pub deleted: bool,
    pub reply_to_message_id: Option<i64>,
}

/// One `answerCallbackQuery` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAnswer {
    pub callback_query_id: String,
    pub text: Option<String>,
    pub show_alert: bool,
}

/// What the simulator knows about one file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub file_unique_id: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
}

/// Forced `429 Too Many Requests` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Force429 {
    /// Only this Bot API method (case-insensitive); `None` = any method
    /// (downloads excepted unless named "download").
    #[serde(default)]
    pub method: Option<String>,
    pub retry_after: u32,
    /// How many calls get a 429 before answers are normal again.
    pub count: u32,
}

/// Faults applied to the Bot API and file routes (not to `/_sim/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Added delay per Bot API method name (case-insensitive), `"*"` for
    /// every method, `"download"` for the file route; `"*"` and the
    /// method's own entry add up. Serialized as milliseconds.
    #[serde(with = "duration_ms_map")]
    pub latency: HashMap<String, Duration>,
    /// Pace downloads to this many bytes per second.
    pub download_bytes_per_sec: Option<u64>,
    /// Fraction (0.0–1.0) of Bot API calls answered `502 Bad Gateway`.
    pub error_rate_5xx: f64,
    pub force_429: Option<Force429>,
    /// Downloads end with a broken connection after this many bytes.
    pub cut_download_after: Option<u64>,
    /// Chats whose user "blocked the bot": sending there answers 403.
    pub blocked_chats: Vec<i64>,
}

/// `getFile` of one `file_id`, as `GET /_sim/local_fetches` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalFetch {
    pub file_id: String,
    pub file_unique_id: String,
    pub size: u64,
    /// `getFile` calls for this `file_id` so far (any mode).
    pub get_file_calls: u32,
    /// Local mode: whether the fetch into the working directory started.
    pub started: bool,
    /// Local mode: bytes fetched so far (`size` once done).
    pub fetched: u64,
}

/// A snapshot of the simulator's update machinery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStatus {
    /// `getUpdates` calls currently waiting (long polling).
    pub waiting_get_updates: usize,
    /// Updates not yet confirmed or delivered.
    pub pending_updates: usize,
    pub webhook_url: Option<String>,
}

/// One attempt to push an update to the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookAttempt {
    pub update_id: i64,
    /// The chat the update belongs to, when it has one.
    pub chat_id: Option<i64>,
    /// 1 for the first try of this update, 2 for the first retry, …
    pub attempt: u32,
    /// HTTP status the webhook answered, if it answered.
    pub status: Option<u16>,
    /// Error as `getWebhookInfo` reports it; `None` on success.
    pub error: Option<String>,
    /// When the attempt started, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

mod duration_ms_map {
    use std::collections::HashMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(map: &HashMap<String, Duration>, s: S) -> Result<S::Ok, S::Error> {
        let ms: HashMap<&String, u64> = map.iter().map(|(k, v)| (k, v.as_millis() as u64)).collect();
        ms.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<String, Duration>, D::Error> {
        let ms = HashMap::<String, u64>::deserialize(d)?;
        Ok(ms.into_iter().map(|(k, v)| (k, Duration::from_millis(v))).collect())
    }
}
