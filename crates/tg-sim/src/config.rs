//! Simulator configuration.

use std::path::PathBuf;
use std::time::Duration;

/// A fresh, random bot token in Telegram's shape (`<digits>:<35 of
/// A-Z a-z 0-9 _ ->`). Each simulator gets its own, so no token is ever
/// written into code or logs that could be mistaken for a real one.
pub fn generate_token() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::rng();
    let id: u64 = rng.random_range(100_000_000..1_000_000_000);
    let tail: String = (0..35)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{id}:{tail}")
}

/// Local mode's default fetch rate: 16 MiB/s, about what
/// `telegram-bot-api --local` gets from Telegram's data centres.
pub const DEFAULT_LOCAL_FETCH_RATE: u64 = 16 * 1024 * 1024;

/// How a [`crate::Sim`] behaves. `Debug` leaves the token out.
#[derive(Clone)]
pub struct SimConfig {
    /// The only accepted bot token; the bot's user id is the number
    /// before the `:`.
    pub token: String,
    /// The bot's `username` in `getMe`.
    pub bot_username: String,
    /// Emulate `telegram-bot-api --local`: no `getFile` size limit,
    /// absolute `file_path`s of real files under `local_dir`, and no HTTP
    /// file downloads.
    pub local_mode: bool,
    /// Where local mode writes files (`<local_dir>/<token>/<folder>/file_N.ext`),
    /// like `/var/lib/telegram-bot-api`.
    pub local_dir: PathBuf,
    /// How fast local mode "fetches" a file from Telegram's data centres
    /// before `getFile` answers, in bytes per second; `None`: at once.
    /// The default, [`DEFAULT_LOCAL_FETCH_RATE`], makes 2000 MB take
    /// about two minutes, as it does for a real server.
    pub local_fetch_rate: Option<u64>,
    /// Longest wait between two webhook retries of one update (Telegram:
    /// about 60 s).
    pub webhook_backoff_cap: Duration,
    /// Wait before the second retry; it doubles from there (Telegram: 1 s;
    /// the first retry is immediate).
    pub webhook_first_retry: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            token: generate_token(),
            bot_username: "teledrop_test_bot".to_owned(),
            local_mode: false,
            local_dir: std::env::temp_dir().join("tg-sim"),
            local_fetch_rate: Some(DEFAULT_LOCAL_FETCH_RATE),
            webhook_backoff_cap: Duration::from_secs(60),
            webhook_first_retry: Duration::from_secs(1),
        }
    }
}

impl SimConfig {
    /// The bot's user id: the digits before `:` in the token (0 if the
    /// token has no such prefix).
    pub fn bot_id(&self) -> i64 {
        self.token.split(':').next().and_then(|s| s.parse().ok()).unwrap_or(0)
    }
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("token", &"<redacted>")
            .field("bot_username", &self.bot_username)
            .field("local_mode", &self.local_mode)
            .field("local_dir", &self.local_dir)
            .field("local_fetch_rate", &self.local_fetch_rate)
            .field("webhook_backoff_cap", &self.webhook_backoff_cap)
            .field("webhook_first_retry", &self.webhook_first_retry)
            .finish()
    }
}
