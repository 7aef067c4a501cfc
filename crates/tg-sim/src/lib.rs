//! `tg-sim`: a Telegram Bot API simulator for tests.
//!
//! A [`Sim`] serves, on one HTTP port:
//! - the Bot API at `/bot<token>/<method>` (getMe, getUpdates,
//!   setWebhook, deleteWebhook, getWebhookInfo, getFile, sendMessage,
//!   editMessageText, editMessageReplyMarkup, deleteMessage,
//!   sendChatAction, answerCallbackQuery, setMyCommands, getMyCommands,
//!   deleteMyCommands) with Telegram's answers and error texts;
//! - file downloads at `/file/bot<token>/<file_path>`, content generated
//!   deterministically from a seed (files of any size cost nothing);
//! - a control API under `/_sim/` ([`control`]) that tests drive through
//!   [`SimClient`]: act as users (send files, texts, albums, button
//!   presses, raw updates), read what the bot said ([`ChatLog`]), inject
//!   faults ([`Faults`]) and inspect webhook pushes.
//!
//! Updates reach the bot by `getUpdates` or, once a webhook is set, by
//! pushes with Telegram's per-chat ordering and retry rules
//! ([`webhook`]).
//!
//! Where it differs from Telegram (on purpose or for lack of need):
//! - webhooks may be plain `http://` on any port (Telegram: HTTPS on 443,
//!   80, 88 or 8443); no certificates, no source-IP ranges;
//! - only private chats exist; no groups, channels or inline messages;
//! - a method call returned in a webhook answer's body is ignored;
//! - `parse_mode` is parsed approximately (entities are not returned);
//!   only `bot_command` entities are generated for user texts;
//! - local mode has no `getFile` size limit at all; like the real server
//!   it answers `getFile` only once it has "fetched" the whole file into
//!   its directory, at [`SimConfig::local_fetch_rate`]; the control API
//!   can make `getFile` return any path instead
//!   ([`SimClient::set_local_file_path`]);
//! - the control API adds a back door ([`SimClient::file_path`]) to
//!   download files over 20 MB over HTTP, which the cloud API never allows.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tg_sim::{FileSpec, Sim, SimConfig};
//! let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap()).await?;
//! // Point the bot at sim.base_url(); then, as user 42:
//! let sent = sim.control().send_file(FileSpec::document(42, 1 << 20, 7)).await.unwrap();
//! # let _ = sent; sim.shutdown().await; Ok(()) }
//! ```

mod botapi;
mod client;
mod config;
mod content;
pub mod control;
mod files;
mod ids;
mod inject;
mod local_fetch;
mod messages;
mod params;
mod reply;
mod state;
mod text;
mod tls;
mod types;
mod updates;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use client::{SimClient, SimClientError};
pub use config::{DEFAULT_LOCAL_FETCH_RATE, SimConfig, generate_token};
pub use files::CLOUD_DOWNLOAD_LIMIT;
pub use inject::SHA_AT_SEND_LIMIT;
pub use types::{
    BotMessage, CallbackAnswer, ChatLog, Faults, FileInfo, FileSpec, Force429, LocalFetch, MediaKind, SentFile,
    SentUpdate, SimStatus, WebhookAttempt,
};

use state::Inner;

/// A running simulator. Cheap to clone; [`Sim::shutdown`] stops it.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
    addr: SocketAddr,
    /// The CA that signed the HTTPS certificate; `None`: plain HTTP.
    ca_pem: Option<Arc<[u8]>>,
    server: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Sim").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Sim {
    /// Binds `addr` (use `127.0.0.1:0` in tests) and serves in background
    /// tasks until [`Sim::shutdown`].
    pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        Ok(Self::serve(config, listener, None))
    }

    /// Like [`Sim::start`], over HTTPS with the given certificate chain
    /// and key (PEM); `ca_pem` is what clients must trust, used by
    /// [`Sim::control`]. [`Sim::base_url`] becomes `https://localhost:PORT/`.
    pub async fn start_https(
        config: SimConfig,
        addr: SocketAddr,
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> std::io::Result<Sim> {
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        let listener = tls::TlsListener::new(tcp, cert_chain_pem, key_pem)?;
        Ok(Self::serve(config, listener, Some(ca_pem.into())))
    }

    fn serve<L>(config: SimConfig, listener: L, ca_pem: Option<Arc<[u8]>>) -> Sim
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let addr = listener.local_addr().expect("a bound listener has an address");
        let inner = Inner::new(config);
        let app = control::router().fallback(botapi::handle).with_state(inner.clone());
        tokio::spawn(webhook::dispatcher(inner.clone()));
        let stop = inner.shutdown.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "tg-sim server failed");
            }
        });
        tracing::info!(%addr, local_mode = inner.config.local_mode, https = ca_pem.is_some(), "tg-sim listening");
        Sim {
            inner,
            addr,
            ca_pem,
            server: Arc::new(tokio::sync::Mutex::new(Some(server))),
        }
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Bot API root, e.g. `http://127.0.0.1:PORT/` (what a bot takes
    /// as its API URL: teloxide's `set_api_url`, `TELEGRAM_API_URL`).
    pub fn base_url(&self) -> url::Url {
        let host = if self.addr.ip().is_unspecified() {
            match self.addr {
                SocketAddr::V4(_) => "127.0.0.1".to_owned(),
                SocketAddr::V6(_) => "[::1]".to_owned(),
            }
        } else {
            match self.addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            }
        };
        if self.ca_pem.is_some() {
            // The test certificate names `localhost`.
            return url::Url::parse(&format!("https://localhost:{}/", self.addr.port()))
                .expect("a host and port make a valid URL");
        }
        url::Url::parse(&format!("http://{host}:{}/", self.addr.port())).expect("a host and port make a valid URL")
    }

    /// The accepted bot token.
    pub fn token(&self) -> &str {
        &self.inner.config.token
    }

    /// The configuration the simulator runs with.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// A client of this simulator's control API.
    pub fn control(&self) -> SimClient {
        match &self.ca_pem {
            Some(ca) => SimClient::trusting(self.base_url(), ca),
            None => SimClient::new(self.base_url()),
        }
    }

    /// Stops serving: waiting long polls and chat-log waits return,
    /// webhook pushes stop, open connections get a few seconds to finish.
    pub async fn shutdown(self) {
        self.inner.shutdown.cancel();
        let handle = self.server.lock().await.take();
        if let Some(mut handle) = handle {
            // Downloads in progress may not end by themselves; cut them.
            if tokio::time::timeout(Duration::from_secs(5), &mut handle).await.is_err() {
                handle.abort();
            }
        }
    }
}
