//! The simulator's shared state.
//!
//! Data model:
//! - **Chats** are private chats, one per simulated user (chat id = user
//!   id). A chat exists once its user sent something; it owns the message
//!   id counter shared by the user's and the bot's messages, the user's
//!   messages (as JSON, for `reply_to_message`) and the [`ChatLog`] of what
//!   the bot did there, whose `version` grows on every change.
//! - **Updates** wait in one queue ordered by `update_id` until confirmed
//!   by a `getUpdates` offset or delivered to the webhook. A queued update
//!   is JSON, or raw bytes (malformed bodies, webhook only).
//! - **Files**: a content record per `file_unique_id` (content key, size,
//!   SHA-256 cached lazily) and an entry per `file_id` (kind, extension,
//!   the `file_path` given out by `getFile`, the local-mode copy).
//!
//! Everything sits behind one `std` mutex held only for short, non-async
//! sections. Waiters use `watch` channels as change counters: subscribe
//! (under the lock), check, then await `changed()` — no lost wake-ups.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;

use crate::config::SimConfig;
use crate::types::{ChatLog, Faults, MediaKind, WebhookAttempt};

/// Updates older than this are dropped, as Telegram does.
pub const UPDATE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// State shared by every handler and background task.
pub struct Inner {
    pub config: SimConfig,
    pub bot_id: i64,
    state: Mutex<State>,
    /// Bumped when the update queue or the webhook settings change.
    pub updates_tx: watch::Sender<u64>,
    /// Bumped when any chat log changes.
    pub chats_tx: watch::Sender<u64>,
    /// Bumped when a new `getUpdates` call starts (older ones end with 409).
    pub polls_tx: watch::Sender<u64>,
    pub shutdown: CancellationToken,
    /// Client for webhook pushes.
    pub http: reqwest::Client,
    /// `getUpdates` calls currently waiting.
    pub waiting_polls: std::sync::atomic::AtomicUsize,
}

impl Inner {
    pub fn new(config: SimConfig) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(60))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("reqwest client with default TLS settings");
        Arc::new(Inner {
            bot_id: config.bot_id(),
            config,
            state: Mutex::new(State::new()),
            updates_tx: watch::Sender::new(0),
            chats_tx: watch::Sender::new(0),
            polls_tx: watch::Sender::new(0),
            shutdown: CancellationToken::new(),
            http,
            waiting_polls: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Locks the state. A panic while locked cannot leave it half-updated
    /// in a way that matters to a test double, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn notify_updates(&self) {
        self.updates_tx.send_modify(|v| *v += 1);
    }

    pub fn notify_chats(&self) {
        self.chats_tx.send_modify(|v| *v += 1);
    }

    /// The bot as a `User` object.
    pub fn bot_user(&self) -> Value {
        json!({
            "id": self.bot_id,
            "is_bot": true,
            "first_name": "Teledrop Test",
            "username": self.config.bot_username,
        })
    }
}

/// Body of a queued update.
#[derive(Debug, Clone)]
pub enum UpdateBody {
    Json(Value),
    Raw(bytes::Bytes),
}

#[derive(Debug)]
pub struct QueuedUpdate {
    pub update_id: i64,
    /// Chat whose order this update keeps (webhook delivery).
    pub chat_id: Option<i64>,
    pub body: UpdateBody,
    pub created: Instant,
    /// A webhook delivery task owns it.
    pub in_flight: bool,
}

impl QueuedUpdate {
    pub fn body_bytes(&self) -> bytes::Bytes {
        match &self.body {
            UpdateBody::Json(v) => bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
            UpdateBody::Raw(b) => b.clone(),
        }
    }
}

/// A private chat with one simulated user.
#[derive(Debug)]
pub struct Chat {
    pub user: Value,
    pub chat: Value,
    pub next_message_id: i64,
    /// The user's messages by id.
    pub user_messages: HashMap<i64, Value>,
    pub log: ChatLog,
}

impl Chat {
    pub fn alloc_message_id(&mut self) -> i64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }

    /// Marks a change of the log.
    pub fn touch(&mut self) {
        self.log.version += 1;
    }
}

/// One distinct content.
#[derive(Debug)]
pub struct FileRecord {
    pub unique_id: String,
    pub key: u64,
    pub size: u64,
    pub sha256: OnceCell<String>,
}

/// One `file_id`.
#[derive(Debug, Clone)]
pub struct FileIdEntry {
    pub record: Arc<FileRecord>,
    pub kind: MediaKind,
    /// Extension for `file_path`, with the dot, or empty.
    pub ext: String,
    /// Relative `file_path` once `getFile` assigned one.
    pub path: Option<String>,
    /// The local-mode copy, fetched by the first `getFile`.
    pub local: Arc<crate::local_fetch::LocalCopy>,
    /// A `file_path` that local-mode `getFile` returns verbatim instead of
    /// the copy (tests of how a bot treats hostile paths).
    pub local_override: Option<String>,
}

/// Webhook settings while one is set.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: url::Url,
    pub secret: Option<String>,
    pub max_connections: u32,
    pub allowed_updates: Option<Vec<String>>,
    /// Distinguishes this setting from earlier ones: delivery tasks of an
    /// older generation stop.
    pub generation: u64,
    pub connections: Arc<tokio::sync::Semaphore>,
}

pub struct State {
    pub next_update_id: i64,
    pub queue: VecDeque<QueuedUpdate>,
    pub chats: HashMap<i64, Chat>,
    pub files: HashMap<String, Arc<FileRecord>>,
    pub file_ids: HashMap<String, FileIdEntry>,
    /// `file_path` → `file_id`.
    pub paths: HashMap<String, String>,
    pub next_path: u64,
    pub next_file_serial: u64,
    pub webhook: Option<Webhook>,
    pub webhook_generation: u64,
    pub last_error: Option<(i64, String)>,
    /// Update kinds to create; `None` = Telegram's default set.
    pub allowed_updates: Option<Vec<String>>,
    pub poll_generation: u64,
    pub faults: Faults,
    pub deliveries: Vec<WebhookAttempt>,
    /// Callback query id → chat id.
    pub callbacks: HashMap<String, i64>,
    /// `setMyCommands` lists by scope and language.
    pub commands: HashMap<String, Value>,
}

impl State {
    fn new() -> Self {
        State {
            // Telegram's update ids start at an arbitrary large number.
            next_update_id: rand::random_range(10_000_000..900_000_000),
            queue: VecDeque::new(),
            chats: HashMap::new(),
            files: HashMap::new(),
            file_ids: HashMap::new(),
            paths: HashMap::new(),
            next_path: 0,
            next_file_serial: 1,
            webhook: None,
            webhook_generation: 0,
            last_error: None,
            allowed_updates: None,
            poll_generation: 0,
            faults: Faults::default(),
            deliveries: Vec::new(),
            callbacks: HashMap::new(),
            commands: HashMap::new(),
        }
    }

    /// The chat of `user`, created on first use.
    pub fn chat_mut(&mut self, user: i64) -> &mut Chat {
        self.chats.entry(user).or_insert_with(|| {
            let first_name = format!("User{}", user.unsigned_abs() % 10_000);
            let username = format!("user{user}");
            Chat {
                user: json!({
                    "id": user, "is_bot": false, "first_name": first_name,
                    "username": username, "language_code": "en",
                }),
                chat: json!({
                    "id": user, "type": "private", "first_name": first_name, "username": username,
                }),
                next_message_id: 1,
                user_messages: HashMap::new(),
                log: ChatLog::default(),
            }
        })
    }

    pub fn alloc_update_id(&mut self) -> i64 {
        let id = self.next_update_id;
        self.next_update_id += 1;
        id
    }

    /// Whether an update of `kind` is created under the current
    /// `allowed_updates` (an empty list means the default set).
    pub fn kind_allowed(&self, kind: &str) -> bool {
        let list = self
            .webhook
            .as_ref()
            .and_then(|w| w.allowed_updates.as_ref())
            .or(self.allowed_updates.as_ref());
        match list {
            Some(l) if !l.is_empty() => l.iter().any(|k| k == kind),
            _ => !matches!(kind, "chat_member" | "message_reaction" | "message_reaction_count"),
        }
    }

    /// Queues an update; `false` when `allowed_updates` filtered it out.
    pub fn enqueue(&mut self, update_id: i64, chat_id: Option<i64>, kind: Option<&str>, body: UpdateBody) -> bool {
        if kind.is_some_and(|k| !self.kind_allowed(k)) {
            return false;
        }
        let q = QueuedUpdate {
            update_id,
            chat_id,
            body,
            created: Instant::now(),
            in_flight: false,
        };
        // Keep the queue sorted even when a raw update brings its own id.
        let pos = self
            .queue
            .iter()
            .rposition(|u| u.update_id <= update_id)
            .map_or(0, |p| p + 1);
        self.queue.insert(pos, q);
        true
    }

    /// Drops updates older than a day.
    pub fn prune_expired(&mut self) {
        let now = Instant::now();
        self.queue
            .retain(|u| u.in_flight || now.duration_since(u.created) < UPDATE_TTL);
    }

    /// Registers a file record for content `key` of `size` bytes.
    pub fn record(&mut self, key: u64, size: u64) -> Arc<FileRecord> {
        let unique_id = crate::ids::file_unique_id(key);
        self.files
            .entry(unique_id.clone())
            .or_insert_with(|| {
                Arc::new(FileRecord {
                    unique_id,
                    key,
                    size,
                    sha256: OnceCell::new(),
                })
            })
            .clone()
    }

    /// A fresh `file_id` for `record` sent as `kind`.
    pub fn new_file_id(&mut self, record: &Arc<FileRecord>, kind: MediaKind, ext: &str) -> String {
        let serial = self.next_file_serial;
        self.next_file_serial += 1;
        let id = crate::ids::file_id(kind, record.key, serial);
        self.file_ids.insert(
            id.clone(),
            FileIdEntry {
                record: record.clone(),
                kind,
                ext: ext.to_owned(),
                path: None,
                local: Arc::default(),
                local_override: None,
            },
        );
        id
    }
}
