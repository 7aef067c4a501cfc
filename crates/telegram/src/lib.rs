//! Bot API access on teloxide.
//!
//! API calls go through teloxide's [`Bot`]. File bytes do not: teloxide's
//! client aborts every request after 17 s in total, and in local mode
//! (`telegram-bot-api --local`) the file is not served over HTTP at all
//! but lies at an absolute path on a shared volume. [`Telegram::open`]
//! therefore streams downloads itself: over a separate HTTP client with
//! connect and idle timeouts only (cloud mode), or from the file system
//! (local mode). Every error leaving this crate is redacted: the bot token
//! is part of every Bot API URL (and of local-mode paths).

mod error;
mod local;
mod update;

pub use error::TelegramError;
pub use local::LocalRefusal;
pub use update::{Command, Inbound, parse_update};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use teledrop_core::{BotToken, ChatId, MessageId, Redactor};
use teloxide::payloads::{EditMessageTextSetters, GetUpdatesSetters, SendMessageSetters};
use teloxide::requests::Requester;
use teloxide::types::{LinkPreviewOptions, ParseMode, ReplyParameters};
use url::Url;

pub use teloxide::types::Update;

pub type Result<T, E = TelegramError> = std::result::Result<T, E>;

/// The public Bot API.
pub const CLOUD_API_URL: &str = "https://api.telegram.org/";

/// `telegram-bot-api`'s default working directory (`--dir`).
pub const DEFAULT_LOCAL_DIR: &str = "/var/lib/telegram-bot-api";

#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub token: BotToken,
    /// Bot API root: the cloud or a self-hosted `telegram-bot-api`.
    pub api_url: Url,
    /// The server runs with `--local`: `file_path` is a path on a volume
    /// shared with us, and there is no 20 MB download limit.
    pub local_mode: bool,
    /// Local mode: the Bot API server's working directory as mounted here.
    /// Only regular files beneath it, reached without symlinks, are read.
    pub local_dir: PathBuf,
    /// Whole-request limit for ordinary API calls (long polls add their
    /// own timeout on top).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// A download that receives nothing for this long is abandoned.
    pub download_idle_timeout: Duration,
    /// Whole-request limit for `getFile`. A local Bot API server answers
    /// it only after downloading the whole file from Telegram, minutes for
    /// big files, so it gets a limit of its own.
    pub get_file_timeout: Duration,
    /// Extra roots (`TELEDROP_CA_FILE`) for a self-hosted Bot API server
    /// behind a private CA, trusted on top of the built-in ones.
    pub ca: Option<teledrop_core::tls::CaBundle>,
}

impl TelegramConfig {
    pub fn new(token: BotToken, api_url: Url, local_mode: bool) -> Self {
        Self {
            token,
            api_url,
            local_mode,
            local_dir: PathBuf::from(DEFAULT_LOCAL_DIR),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            download_idle_timeout: Duration::from_secs(60),
            get_file_timeout: DEFAULT_GET_FILE_TIMEOUT,
            ca: None,
        }
    }
}

/// What Telegram says about the bot's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStatus {
    pub url: Option<String>,
    pub pending_update_count: u32,
    pub last_error: Option<String>,
    pub max_connections: Option<u32>,
}

/// A file as `getFile` describes it.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Relative path (cloud) or absolute path (local mode). May contain the
    /// bot token in local mode: never log it.
    path: String,
    pub size: Option<u64>,
}

impl std::fmt::Debug for RemoteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteFile")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A stream of file bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, TelegramError>>;

#[derive(Clone)]
pub struct Telegram {
    bot: teloxide::Bot,
    /// Long polls need a client whose total timeout exceeds the poll.
    poll_bot: teloxide::Bot,
    /// `getFile`, with its own (long) timeout.
    file_bot: teloxide::Bot,
    download: reqwest::Client,
    redactor: Redactor,
    api_url: Url,
    token: BotToken,
    local_mode: bool,
    local_dir: PathBuf,
}

impl std::fmt::Debug for Telegram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telegram")
            .field("api_url", &self.api_url.as_str())
            .field("local_mode", &self.local_mode)
            .field("local_dir", &self.local_dir)
            .finish_non_exhaustive()
    }
}

/// What 2000 MB needs at about 1.1 MB/s, a slow local Bot API server's
/// pace when fetching from Telegram's data centres.
pub const DEFAULT_GET_FILE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The longest long poll we ask for, in seconds.
pub const POLL_TIMEOUT_SECS: u32 = 25;

impl Telegram {
    pub fn new(config: TelegramConfig) -> Result<Self> {
        let redactor = config.token.redactor();
        let roots = match &config.ca {
            Some(ca) => reqwest::Certificate::from_pem_bundle(ca.pem())
                .map_err(|e| TelegramError::from_reqwest(e, &redactor))?,
            None => Vec::new(),
        };
        let builder = || {
            roots.iter().fold(
                reqwest::Client::builder()
                    .connect_timeout(config.connect_timeout)
                    .tcp_nodelay(true),
                |b, cert| b.add_root_certificate(cert.clone()),
            )
        };
        let build = |b: reqwest::ClientBuilder| b.build().map_err(|e| TelegramError::from_reqwest(e, &redactor));
        let api = build(builder().timeout(config.request_timeout))?;
        let poll =
            build(builder().timeout(Duration::from_secs(u64::from(POLL_TIMEOUT_SECS)) + config.request_timeout))?;
        let get_file = build(builder().timeout(config.get_file_timeout))?;
        let download = build(builder().read_timeout(config.download_idle_timeout))?;
        let token = config.token.expose();
        let bot_on = |client| teloxide::Bot::with_client(token, client).set_api_url(config.api_url.clone());
        let (bot, poll_bot, file_bot) = (bot_on(api), bot_on(poll), bot_on(get_file));
        Ok(Self {
            bot,
            poll_bot,
            file_bot,
            download,
            redactor,
            api_url: config.api_url,
            token: config.token,
            local_mode: config.local_mode,
            local_dir: config.local_dir,
        })
    }

    pub fn local_mode(&self) -> bool {
        self.local_mode
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The bot's username, checking the token on the way.
    pub async fn get_me(&self) -> Result<String> {
        let me = self.bot.get_me().await.map_err(|e| self.err(e))?;
        Ok(me.user.username.clone().unwrap_or_default())
    }

    /// One long poll. `offset` confirms every update below it.
    pub async fn poll(&self, offset: Option<i64>, timeout_secs: u32) -> Result<Vec<Update>> {
        let mut req = self
            .poll_bot
            .get_updates()
            .timeout(timeout_secs.min(POLL_TIMEOUT_SECS))
            .limit(100);
        if let Some(o) = offset {
            req = req.offset(i32::try_from(o).unwrap_or(i32::MAX));
        }
        req.await.map_err(|e| self.err(e))
    }

    /// Removes a webhook so long polling can work (standalone).
    pub async fn delete_webhook(&self) -> Result<()> {
        self.bot.delete_webhook().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Points Telegram at the ingress. Idempotent: the same settings again
    /// change nothing. Only message updates are asked for.
    pub async fn set_webhook(&self, url: Url, secret: &str, max_connections: u8) -> Result<()> {
        use teloxide::payloads::SetWebhookSetters;
        use teloxide::types::AllowedUpdate;
        self.bot
            .set_webhook(url)
            .secret_token(secret)
            .max_connections(max_connections)
            .allowed_updates([AllowedUpdate::Message])
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// `getWebhookInfo`, as a short human summary (the URL has no secret).
    pub async fn webhook_info(&self) -> Result<WebhookStatus> {
        let info = self.bot.get_webhook_info().await.map_err(|e| self.err(e))?;
        Ok(WebhookStatus {
            url: info.url.map(|u| u.to_string()),
            pending_update_count: info.pending_update_count,
            last_error: info.last_error_message.map(|m| self.redactor.redact(&m)),
            max_connections: info.max_connections,
        })
    }

    /// `getFile`: where the bytes are. Fails with
    /// [`TelegramError::TooBig`] when the cloud API refuses the size. A
    /// local server answers only once it holds the whole file: this may
    /// take up to [`TelegramConfig::get_file_timeout`].
    pub async fn resolve(&self, file_id: &str) -> Result<RemoteFile> {
        let file = self
            .file_bot
            .get_file(teloxide::types::FileId(file_id.to_owned()))
            .await
            .map_err(|e| self.err(e))?;
        let size = (file.meta.size != u32::MAX).then_some(u64::from(file.meta.size));
        if file.path.is_empty() {
            return Err(TelegramError::Api {
                kind: teledrop_core::ErrorKind::TelegramRejected,
                description: "getFile returned no file_path".into(),
            });
        }
        Ok(RemoteFile { path: file.path, size })
    }

    /// Streams a file's bytes, never holding more than a chunk.
    pub async fn open(&self, file: &RemoteFile) -> Result<ByteStream> {
        if self.local_mode {
            let f = self.open_local(&file.path).await?;
            let redactor = self.redactor.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(f), 256 * 1024)
                .map_err(move |e| TelegramError::LocalFile(redactor.redact(&format!("reading local file: {e}"))));
            Ok(stream.boxed())
        } else {
            self.open_http(&file.path).await
        }
    }

    /// Local mode: the file itself, for a store that can copy it without
    /// reading it through a stream. Refuses anything but a regular file
    /// beneath `local_dir` (see [`local`]): the path comes from another
    /// process, and whatever we open here ends up behind a public link.
    pub async fn open_local_file(&self, file: &RemoteFile) -> Result<std::fs::File> {
        if !self.local_mode {
            return Err(TelegramError::Config(
                "TELEGRAM_LOCAL_MODE is off: files come over HTTP".into(),
            ));
        }
        self.open_local(&file.path).await
    }

    async fn open_local(&self, path: &str) -> Result<std::fs::File> {
        if !Path::new(path).is_absolute() {
            return Err(TelegramError::LocalFile(
                "local mode expects an absolute file_path; is TELEGRAM_LOCAL_MODE set for a cloud API?".into(),
            ));
        }
        let (dir, file) = (self.local_dir.clone(), PathBuf::from(path));
        let opened = tokio::task::spawn_blocking(move || local::open_beneath(&dir, &file, local::Resolver::Openat2))
            .await
            .map_err(|e| TelegramError::LocalFile(format!("opening a local file: {e}")))?;
        let redacted = self.redactor.redact(path);
        let f = match opened {
            Ok(f) => f,
            Err(local::OpenError::Refused(reason)) => {
                tracing::error!(
                    path = %redacted,
                    local_dir = %self.local_dir.display(),
                    %reason,
                    "refused a file_path from the Bot API server; the file is not stored"
                );
                return Err(TelegramError::LocalRefused { reason, path: redacted });
            }
            Err(local::OpenError::Io(e)) => {
                return Err(TelegramError::LocalFile(format!(
                    "opening {redacted}: {} (is the Bot API server's volume mounted at the same path?)",
                    self.redactor.redact(&e.to_string())
                )));
            }
            Err(local::OpenError::Dir(e)) => {
                return Err(TelegramError::LocalFile(format!(
                    "opening TELEGRAM_LOCAL_DIR {}: {e} (is the Bot API server's volume mounted there?)",
                    self.redactor.redact(&self.local_dir.display().to_string())
                )));
            }
        };
        Ok(f)
    }

    async fn open_http(&self, path: &str) -> Result<ByteStream> {
        let mut url = self.api_url.clone();
        url.path_segments_mut()
            .map_err(|_| TelegramError::Config("TELEGRAM_API_URL cannot be a base URL".into()))?
            .pop_if_empty()
            .push("file")
            .push(&format!("bot{}", self.token.expose()))
            .extend(path.split('/'));
        let resp = self
            .download
            .get(url)
            .send()
            .await
            .map_err(|e| TelegramError::from_reqwest(e, &self.redactor))?;
        let status = resp.status();
        if !status.is_success() {
            let kind = if status.is_server_error() || status.as_u16() == 429 {
                teledrop_core::ErrorKind::TelegramUnavailable
            } else {
                teledrop_core::ErrorKind::TelegramRejected
            };
            return Err(TelegramError::Api {
                kind,
                description: format!("file download answered {status}"),
            });
        }
        let redactor = self.redactor.clone();
        Ok(resp
            .bytes_stream()
            .map_err(move |e| TelegramError::from_reqwest(e, &redactor))
            .boxed())
    }

    /// Sends an HTML message, as a reply when `reply_to` is given.
    pub async fn send_html(&self, chat: ChatId, text: &str, reply_to: Option<MessageId>) -> Result<MessageId> {
        let mut req = self
            .bot
            .send_message(teloxide::types::ChatId(chat.0), text)
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview());
        if let Some(r) = reply_to {
            req = req
                .reply_parameters(ReplyParameters::new(teloxide::types::MessageId(r.0)).allow_sending_without_reply());
        }
        let msg = req.await.map_err(|e| self.err(e))?;
        Ok(MessageId(msg.id.0))
    }

    /// Replaces a message's text. "Not modified" counts as success.
    pub async fn edit_html(&self, chat: ChatId, message: MessageId, text: &str) -> Result<()> {
        let res = self
            .bot
            .edit_message_text(
                teloxide::types::ChatId(chat.0),
                teloxide::types::MessageId(message.0),
                text,
            )
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(teloxide::RequestError::Api(teloxide::ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    fn err(&self, e: teloxide::RequestError) -> TelegramError {
        TelegramError::from_request(e, &self.redactor)
    }
}

fn no_preview() -> LinkPreviewOptions {
    LinkPreviewOptions {
        is_disabled: true,
        url: None,
        prefer_small_media: false,
        prefer_large_media: false,
        show_above_text: false,
    }
}

/// Escapes text for Telegram's HTML parse mode.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}
