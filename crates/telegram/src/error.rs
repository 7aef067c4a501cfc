use std::time::Duration;
use teledrop_core::{ErrorKind, Redactor};

/// A failed Bot API call or download. Every message is redacted.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// Telegram answered with an error.
    #[error("Telegram API error: {description}")]
    Api { kind: ErrorKind, description: String },
    /// 429: wait before calling again.
    #[error("Telegram asks to retry after {0:?}")]
    RetryAfter(Duration),
    /// Connecting, sending or receiving failed.
    #[error("network error talking to Telegram: {0}")]
    Network(String),
    /// The file is over the limit of the configured API mode.
    #[error("file is too big for the Bot API in this mode")]
    TooBig,
    /// Local mode could not read the Bot API server's file.
    #[error("local Bot API file: {0}")]
    LocalFile(String),
    /// Local mode refused the `file_path` the Bot API server gave: outside
    /// `TELEGRAM_LOCAL_DIR`, through a symlink, or not a regular file.
    /// `path` is redacted.
    #[error("refused the local Bot API file {path}: {reason}")]
    LocalRefused { reason: crate::LocalRefusal, path: String },
    #[error("invalid Telegram configuration: {0}")]
    Config(String),
}

impl TelegramError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Api { kind, .. } => *kind,
            Self::RetryAfter(_) => ErrorKind::TelegramUnavailable,
            Self::Network(_) => ErrorKind::Network,
            Self::TooBig => ErrorKind::TooBig,
            // A missing or misplaced volume does not fix itself between
            // retries; the operator must act (the log says what to check).
            Self::LocalFile(_) => ErrorKind::Internal,
            // The same path is refused on every attempt: fail at once and
            // tell the user the file cannot be stored (no core kind is
            // closer than "carries nothing we store").
            Self::LocalRefused { .. } => ErrorKind::Unsupported,
            Self::Config(_) => ErrorKind::Internal,
        }
    }

    /// How long Telegram asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RetryAfter(d) => Some(*d),
            _ => None,
        }
    }

    pub(crate) fn from_reqwest(e: reqwest::Error, redactor: &Redactor) -> Self {
        // `without_url` drops the URL (and the token in it); redact the
        // rest anyway, as sources can quote the URL too.
        let e = e.without_url();
        let mut text = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            text.push_str(": ");
            text.push_str(&s.to_string());
            src = s.source();
        }
        Self::Network(redactor.redact(&text))
    }

    pub(crate) fn from_request(e: teloxide::RequestError, redactor: &Redactor) -> Self {
        use teloxide::{ApiError, RequestError};
        match e {
            RequestError::RetryAfter(s) => Self::RetryAfter(s.duration()),
            RequestError::Api(api) => {
                let description = redactor.redact(&api.to_string());
                let kind = match &api {
                    ApiError::BotBlocked
                    | ApiError::UserDeactivated
                    | ApiError::BotKicked
                    | ApiError::BotKickedFromSupergroup
                    | ApiError::CantInitiateConversation
                    | ApiError::CantTalkWithBots => ErrorKind::BlockedByUser,
                    ApiError::Unknown(t) if t.contains("file is too big") => return Self::TooBig,
                    ApiError::Unknown(t) if t.contains("Internal Server Error") || t.contains("Bad Gateway") => {
                        ErrorKind::TelegramUnavailable
                    }
                    _ => ErrorKind::TelegramRejected,
                };
                Self::Api { kind, description }
            }
            RequestError::MigrateToChatId(_) => Self::Api {
                kind: ErrorKind::TelegramRejected,
                description: "chat migrated to a supergroup".into(),
            },
            RequestError::Network(n) => {
                let text = std::sync::Arc::try_unwrap(n)
                    .map(|e| e.without_url().to_string())
                    .unwrap_or_else(|arc| arc.to_string());
                Self::Network(redactor.redact(&text))
            }
            // Garbage from the server is what a failing proxy or a 5xx page
            // looks like: worth another try.
            RequestError::InvalidJson { source, .. } => Self::Api {
                kind: ErrorKind::TelegramUnavailable,
                description: redactor.redact(&format!("unparsable answer from the Bot API: {source}")),
            },
            RequestError::Io(e) => Self::Network(redactor.redact(&e.to_string())),
        }
    }
}
