//! Replies that would be noise if repeated for every message: the hint
//! for a message the bot cannot store (at most once per [`HINT_EVERY`] per
//! user) and the refusal of a user who is not allowed (once per user,
//! ever). The catalog records when each was sent
//! ([`Catalog::claim_notice`]), so the limits hold over every worker and
//! across restarts: ten texts sent at once to three workers get one hint.

use chrono::Utc;
use std::time::Duration;
use teledrop_catalog::{Catalog, Notice};
use teledrop_core::{ChatId, MessageId, UserId, report};
use teledrop_telegram::Inbound;
use tracing::warn;

/// Least time between two hints to one user.
pub const HINT_EVERY: Duration = Duration::from_secs(60);

/// Who sent a message and where, for the updates that are messages.
pub(crate) fn sender(inbound: &Inbound) -> Option<(UserId, ChatId, MessageId)> {
    match inbound {
        Inbound::File(f) => Some((f.user_id, f.chat_id, f.message_id)),
        Inbound::Command {
            user, chat, message, ..
        }
        | Inbound::Other {
            user, chat, message, ..
        } => Some((*user, *chat, *message)),
        Inbound::Ignored => None,
    }
}

/// Whether `user` is to be sent `notice` now; records it if so. A catalog
/// that cannot tell means silence: a missed hint costs less than a
/// repeated one, and a refused user writes again.
pub(crate) async fn due(catalog: &dyn Catalog, user: UserId, notice: Notice) -> bool {
    let every = match notice {
        Notice::Hint => Some(HINT_EVERY),
        Notice::NotAllowed => None,
    };
    match catalog.claim_notice(user, notice, every, Utc::now()).await {
        Ok(due) => due,
        Err(e) => {
            warn!(user = user.0, notice = notice.as_str(), error = %report(&e), "cannot tell whether a notice is due; not sending it");
            false
        }
    }
}
