//! Classification of failures shared by every role.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a job failed (or was retried). The label is stable: it is stored in
/// the catalog and used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The file exceeds what the configured Bot API mode can download.
    TooBig,
    /// A connection failed or timed out; worth retrying.
    Network,
    /// Telegram answered 5xx or 429; worth retrying after a delay.
    TelegramUnavailable,
    /// Telegram refused the request for good (bad request, file gone).
    TelegramRejected,
    /// The user blocked the bot: nobody to tell.
    BlockedByUser,
    /// The object store failed.
    Storage,
    /// The catalog failed.
    Catalog,
    /// The message kind carries nothing we store.
    Unsupported,
    /// Storing the file would exceed a quota.
    OverQuota,
    /// The user sent more files than the per-user rate limit allows. Final,
    /// not retried: holding the excess back for later would let one user
    /// fill the queue all the same; they are told when to send it again.
    RateLimited,
    /// The user is not allowed to use this bot.
    NotAllowed,
    /// Too many deliveries or an unexpected bug.
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 12] = [
        Self::TooBig,
        Self::Network,
        Self::TelegramUnavailable,
        Self::TelegramRejected,
        Self::BlockedByUser,
        Self::Storage,
        Self::Catalog,
        Self::Unsupported,
        Self::OverQuota,
        Self::RateLimited,
        Self::NotAllowed,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooBig => "too_big",
            Self::Network => "network",
            Self::TelegramUnavailable => "telegram_unavailable",
            Self::TelegramRejected => "telegram_rejected",
            Self::BlockedByUser => "blocked_by_user",
            Self::Storage => "storage",
            Self::Catalog => "catalog",
            Self::Unsupported => "unsupported",
            Self::OverQuota => "over_quota",
            Self::RateLimited => "rate_limited",
            Self::NotAllowed => "not_allowed",
            Self::Internal => "internal",
        }
    }

    /// Whether trying the same job again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Network | Self::TelegramUnavailable | Self::Storage | Self::Catalog
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown error kind {0:?}")]
pub struct UnknownErrorKind(pub String);

impl FromStr for ErrorKind {
    type Err = UnknownErrorKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownErrorKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for k in ErrorKind::ALL {
            assert_eq!(k.as_str().parse::<ErrorKind>().unwrap(), k);
        }
        assert!("nope".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn a_rate_limit_is_final() {
        assert_eq!(ErrorKind::RateLimited.as_str(), "rate_limited");
        assert!(!ErrorKind::RateLimited.is_retryable());
    }
}
