//! [`SimClient`]: a typed client of the control API (see
//! [`crate::control`]). It talks HTTP, so it drives an in-process
//! [`crate::Sim`] and a separate `tg-sim` process alike.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::types::{ChatLog, Faults, FileInfo, FileSpec, LocalFetch, SentFile, SentUpdate, SimStatus, WebhookAttempt};

/// Errors of [`SimClient`] calls.
#[derive(Debug, thiserror::Error)]
pub enum SimClientError {
    #[error("tg-sim control request failed")]
    Http(#[from] reqwest::Error),
    #[error("tg-sim answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("chat {chat_id}: condition not met within {waited:?}; last chat log: {last}")]
    Deadline {
        chat_id: i64,
        waited: Duration,
        last: String,
    },
}

/// Client of a simulator's control API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SimClient {
    base: url::Url,
    http: reqwest::Client,
}

impl SimClient {
    /// A client for the simulator at `base_url` (its root, as
    /// [`crate::Sim::base_url`] gives it).
    pub fn new(base_url: url::Url) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("reqwest client with default settings");
        SimClient { base: base_url, http }
    }

    /// A client of an HTTPS simulator whose certificate `ca_pem` signed.
    pub fn trusting(base_url: url::Url, ca_pem: &[u8]) -> Self {
        let ca = reqwest::Certificate::from_pem(ca_pem).expect("the CA as PEM");
        let http = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .build()
            .expect("reqwest client trusting the test CA");
        SimClient { base: base_url, http }
    }

    /// The simulator's root URL.
    pub fn base_url(&self) -> &url::Url {
        &self.base
    }

    fn url(&self, path: &str) -> url::Url {
        self.base.join(path).expect("control paths are valid relative URLs")
    }

    async fn parse<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, SimClientError> {
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(SimClientError::Status {
                status: status.as_u16(),
                body,
            });
        }
        Ok(resp.json().await?)
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl serde::Serialize) -> Result<T, SimClientError> {
        Self::parse(self.http.post(self.url(path)).json(body).send().await?).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, SimClientError> {
        Self::parse(self.http.get(self.url(path)).send().await?).await
    }

    /// Waits until the simulator answers (for a separately started process).
    pub async fn health(&self) -> Result<(), SimClientError> {
        self.get::<Value>("_sim/health").await.map(|_| ())
    }

    /// A user sends a file.
    pub async fn send_file(&self, spec: FileSpec) -> Result<SentFile, SimClientError> {
        self.post("_sim/files", &spec).await
    }

    /// A user sends a text; `/commands` get `bot_command` entities.
    pub async fn send_text(&self, user: i64, text: &str) -> Result<SentUpdate, SimClientError> {
        self.post("_sim/texts", &json!({ "user": user, "text": text })).await
    }

    /// A user sends an album: one update per item, same `media_group_id`.
    /// Every item is sent by `user` whatever its own `user` field says.
    pub async fn send_album(&self, user: i64, items: Vec<FileSpec>) -> Result<Vec<SentFile>, SimClientError> {
        self.post("_sim/albums", &json!({ "user": user, "items": items })).await
    }

    /// A user presses an inline button carrying `data` under the bot's
    /// message `message_id`; the result's `callback_query_id` is what
    /// `answerCallbackQuery` expects.
    pub async fn send_callback(&self, user: i64, message_id: i64, data: &str) -> Result<SentUpdate, SimClientError> {
        self.post(
            "_sim/callbacks",
            &json!({ "user": user, "message_id": message_id, "data": data }),
        )
        .await
    }

    /// Injects any JSON object as an update (an `update_id` is assigned if
    /// missing) and returns its update id.
    pub async fn send_raw_update(&self, body: Value) -> Result<i64, SimClientError> {
        let v: Value = self.post("_sim/updates", &body).await?;
        Ok(v["update_id"].as_i64().unwrap_or_default())
    }

    /// Queues bytes that are pushed verbatim to the webhook (malformed
    /// updates). Webhook only: `getUpdates` can only return JSON, so it
    /// skips them (they still count in `pending_update_count`).
    pub async fn send_raw_bytes(&self, body: Vec<u8>) -> Result<(), SimClientError> {
        let resp = self.http.post(self.url("_sim/updates/raw")).body(body).send().await?;
        Self::parse::<Value>(resp).await.map(|_| ())
    }

    async fn chat_log(&self, chat_id: i64, after: Option<u64>, wait: Duration) -> Result<ChatLog, SimClientError> {
        let mut url = self.url(&format!("_sim/chats/{chat_id}"));
        if let Some(v) = after {
            url.query_pairs_mut()
                .append_pair("after_version", &v.to_string())
                .append_pair("timeout_ms", &wait.as_millis().to_string());
        }
        Self::parse(self.http.get(url).send().await?).await
    }

    /// Everything the bot sent, edited and deleted in the chat, in order.
    pub async fn messages(&self, chat_id: i64) -> Result<ChatLog, SimClientError> {
        self.chat_log(chat_id, None, Duration::ZERO).await
    }

    /// Waits until `pred` holds for the chat's log, re-checking on every
    /// change (the server holds each request until the log changes).
    /// Fails after `deadline` with the last log in the error.
    pub async fn wait_for(
        &self,
        chat_id: i64,
        deadline: Duration,
        pred: impl Fn(&ChatLog) -> bool,
    ) -> Result<ChatLog, SimClientError> {
        let start = Instant::now();
        let mut after = None;
        loop {
            let remaining = deadline.saturating_sub(start.elapsed());
            let log = self
                .chat_log(chat_id, after, remaining.min(Duration::from_secs(30)))
                .await?;
            if pred(&log) {
                return Ok(log);
            }
            if start.elapsed() >= deadline {
                return Err(SimClientError::Deadline {
                    chat_id,
                    waited: deadline,
                    last: format!("{log:#?}"),
                });
            }
            after = Some(log.version);
        }
    }

    /// Size and SHA-256 of a file's content (hashing it on first request).
    pub async fn file_info(&self, file_unique_id: &str) -> Result<FileInfo, SimClientError> {
        self.get(&format!("_sim/files/{file_unique_id}")).await
    }

    /// Replaces the whole fault set.
    pub async fn set_faults(&self, faults: Faults) -> Result<(), SimClientError> {
        let resp = self.http.put(self.url("_sim/faults")).json(&faults).send().await?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            return Err(SimClientError::Status {
                status,
                body: resp.text().await.unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// The current fault set (a forced-429 count goes down as it is used).
    pub async fn faults(&self) -> Result<Faults, SimClientError> {
        self.get("_sim/faults").await
    }

    /// Every webhook push attempt so far, in order.
    pub async fn webhook_deliveries(&self) -> Result<Vec<WebhookAttempt>, SimClientError> {
        self.get("_sim/webhook/deliveries").await
    }

    /// Waiting long polls, pending updates, webhook URL.
    pub async fn status(&self) -> Result<SimStatus, SimClientError> {
        self.get("_sim/status").await
    }

    /// Every `file_id` `getFile` was asked for: how often, and how far
    /// local mode's fetch got.
    pub async fn local_fetches(&self) -> Result<Vec<LocalFetch>, SimClientError> {
        self.get("_sim/local_fetches").await
    }

    /// A download `file_path` for `file_id` without `getFile`'s 20 MB
    /// limit: a test back door (real Telegram has none) for exercising big
    /// downloads over HTTP. Download it at `file/bot<token>/<file_path>`.
    pub async fn file_path(&self, file_id: &str) -> Result<String, SimClientError> {
        let v: Value = self.post("_sim/file_paths", &json!({ "file_id": file_id })).await?;
        Ok(v["file_path"].as_str().unwrap_or_default().to_owned())
    }

    /// Local mode: from now on `getFile` of `file_id` returns `file_path`
    /// verbatim (`/etc/passwd`, a symlink, a FIFO…) and writes no copy,
    /// as a compromised or misconfigured Bot API server might.
    pub async fn set_local_file_path(&self, file_id: &str, file_path: &str) -> Result<(), SimClientError> {
        let body = json!({ "file_id": file_id, "file_path": file_path });
        let resp = self
            .http
            .post(self.url("_sim/local_file_paths"))
            .json(&body)
            .send()
            .await?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            return Err(SimClientError::Status {
                status,
                body: resp.text().await.unwrap_or_default(),
            });
        }
        Ok(())
    }
}
