//! What the bot says, in plain language for the people sending files:
//! answers to commands and other messages, the status message while a
//! file is on its way, and the one final reply of a job, composed by
//! [`final_reply`] from how the job ended ([`FinalOutcome`]). Operator
//! detail goes to the log, not here. HTML parse mode; every
//! user-provided string escaped.

use crate::failure::{QuotaRefusal, Refusal};
use crate::rate_limit::RateLimit;
use std::time::Duration;
use teledrop_core::{ByteSize, CLOUD_DOWNLOAD_LIMIT, ErrorKind, IncomingFile, UserId};
use teledrop_telegram::html_escape;

/// How a final job ended, as its reply tells it.
#[derive(Debug)]
pub(crate) enum FinalOutcome<'a> {
    /// Stored, with its link.
    Stored { name: String, size: u64, url: String },
    /// Failed or refused; `detail` is what the failure recorded
    /// ([`refusal_detail`] for a refusal).
    Failed {
        file: &'a IncomingFile,
        kind: ErrorKind,
        detail: Option<&'a str>,
    },
}

/// What the bot takes, which a refusal for size names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_file_size: ByteSize,
    /// A local Bot API server: no cloud download limit.
    pub(crate) local_mode: bool,
}

/// The final reply of a job: the one text its status message becomes.
pub(crate) fn final_reply(outcome: &FinalOutcome<'_>, limits: Limits) -> String {
    match *outcome {
        FinalOutcome::Stored {
            ref name,
            size,
            ref url,
        } => stored(name, size, url),
        FinalOutcome::Failed { file, kind, detail } => match kind {
            ErrorKind::TooBig if !limits.local_mode && file.size.is_none_or(|s| s > CLOUD_DOWNLOAD_LIMIT.bytes()) => {
                too_big_for_cloud(file)
            }
            ErrorKind::TooBig => over_limit(file, limits.max_file_size),
            ErrorKind::OverQuota => over_quota(file, detail),
            ErrorKind::RateLimited => rate_limited(file, detail),
            k => failed(file, k),
        },
    }
}

/// The detail recorded with a refused job. For the rate limit and quotas
/// it is the sentence the reply repeats (so that a reply repeated after a
/// restart says the same); for a file too big, its size, for the operator.
pub(crate) fn refusal_detail(refusal: &Refusal) -> String {
    match refusal {
        Refusal::TooBig { size } => format!("{size} bytes"),
        Refusal::RateLimited { limit, retry_after } => rate_limit_detail(*limit, *retry_after),
        Refusal::OverQuota(QuotaRefusal::Exceeded(q)) => q.to_string(),
        Refusal::OverQuota(QuotaRefusal::PastRoom { room }) => format!(
            "this file is larger than the {} left in your quota",
            ByteSize::from_bytes(*room)
        ),
    }
}

pub(crate) fn help(max: ByteSize, local_mode: bool) -> String {
    let limit = if local_mode {
        max
    } else {
        max.min(teledrop_core::CLOUD_DOWNLOAD_LIMIT)
    };
    format!(
        "👋 <b>teledrop</b> turns files into download links.\n\n\
         Send me a document, photo, video, audio file, voice message, video note or animation \
         (up to {limit}) and I reply with an HTTPS link that anyone you share it with can open.\n\n\
         /help shows this message."
    )
}

pub(crate) fn hint(what: &str) -> String {
    format!(
        "I can't store a {what}. Send me a file — document, photo, video, audio, voice message, \
         video note or animation — and I'll reply with a download link. /help explains more."
    )
}

/// Sent once per user (the catalog remembers), so it says everything at once.
pub(crate) fn not_allowed(user: UserId) -> String {
    format!(
        "⛔ This bot is private, and your account is not on its list of allowed users.\n\n\
         If you should have access, send this number to the person who runs the bot: \
         <code>{}</code> (your Telegram user ID).\n\n\
         I won't answer your messages until then, and I won't send this again.",
        user.0
    )
}

fn label(f: &IncomingFile) -> String {
    match f.size {
        Some(s) => format!("<b>{}</b> ({})", html_escape(&f.file_name), ByteSize::from_bytes(s)),
        None => format!("<b>{}</b>", html_escape(&f.file_name)),
    }
}

pub(crate) fn receiving(f: &IncomingFile) -> String {
    format!("⏳ Receiving {}…", label(f))
}

pub(crate) fn progress(f: &IncomingFile, done: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => format!(
            "⏳ Receiving <b>{}</b>: {}% ({} of {})",
            html_escape(&f.file_name),
            done.saturating_mul(100) / t,
            ByteSize::from_bytes(done),
            ByteSize::from_bytes(t)
        ),
        _ => format!(
            "⏳ Receiving <b>{}</b>: {}",
            html_escape(&f.file_name),
            ByteSize::from_bytes(done)
        ),
    }
}

/// While a local Bot API server fetches the file from Telegram (its
/// `getFile` answers only then).
pub(crate) fn asking(f: &IncomingFile, elapsed: Duration) -> String {
    format!(
        "⏳ Asking Telegram for {}… ({} so far)",
        label(f),
        elapsed_text(elapsed)
    )
}

/// `45 s`, `2 min 5 s`, `1 h 3 min`: whole seconds, coarser as it grows.
fn elapsed_text(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

fn stored(name: &str, size: u64, url: &str) -> String {
    format!(
        "✅ <b>{}</b>\n{}\n\n{}",
        html_escape(name),
        ByteSize::from_bytes(size),
        html_escape(url)
    )
}

fn too_big_for_cloud(f: &IncomingFile) -> String {
    format!(
        "❌ {} is too big: Telegram's cloud Bot API lets bots download files only up to 20 MB.\n\n\
         The operator can lift this to 2000 MB by running a self-hosted Telegram Bot API server \
         in local mode and pointing teledrop at it (TELEGRAM_API_URL and TELEGRAM_LOCAL_MODE=true).",
        label(f)
    )
}

fn over_limit(f: &IncomingFile, max: ByteSize) -> String {
    format!("❌ {} is larger than this bot's limit of {max}.", label(f))
}

/// `why` is the quota's sentence ("this file (2.0 MiB) would exceed your
/// quota of 5.0 MiB: 4.5 MiB stored already").
fn over_quota(f: &IncomingFile, why: Option<&str>) -> String {
    let why = why.unwrap_or("it would exceed a storage quota");
    format!(
        "⛔ {} was not stored: {}.\n\nDelete some of your files or ask the operator for a larger quota.",
        label(f),
        html_escape(why.trim_end_matches('.'))
    )
}

/// "2 files per minute".
fn rate(limit: RateLimit) -> String {
    let files = limit.files().get();
    let noun = if files == 1 { "file" } else { "files" };
    match limit.window().as_secs() {
        60 => format!("{files} {noun} per minute"),
        3600 => format!("{files} {noun} per hour"),
        s => format!("{files} {noun} every {s} s"),
    }
}

/// Why a file was refused under the rate limit. Stored as the job's error
/// detail, so that a reply repeated after a restart says the same.
fn rate_limit_detail(limit: RateLimit, retry_after: Duration) -> String {
    // Rounded up: trying again when told must find a free slot.
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    format!(
        "you can send at most {}. Try this one again in {} s",
        rate(limit),
        secs.max(1)
    )
}

/// `why` is [`rate_limit_detail`].
fn rate_limited(f: &IncomingFile, why: Option<&str>) -> String {
    let why = why.unwrap_or("you are sending files faster than this bot allows. Try this one again in a minute");
    format!(
        "🐢 Slow down: {}.\n\n{} was not stored.",
        html_escape(why.trim_end_matches('.')),
        label(f)
    )
}

/// A file refused for good whatever happens (today: a local-mode
/// `file_path` that is not a regular file beneath the Bot API's
/// directory). The operator's log says why; the user only learns that
/// sending it again will not help.
fn cannot_store(f: &IncomingFile) -> String {
    format!("❌ {} can't be stored.", label(f))
}

fn failed(f: &IncomingFile, kind: ErrorKind) -> String {
    if kind == ErrorKind::Unsupported {
        return cannot_store(f);
    }
    let why = match kind {
        ErrorKind::Network | ErrorKind::TelegramUnavailable => "Telegram could not be reached for too long",
        ErrorKind::TelegramRejected => "Telegram refused to hand out the file",
        ErrorKind::Storage => "the file store is not available",
        ErrorKind::Catalog => "the database is not available",
        _ => "something went wrong on our side",
    };
    format!("❌ Could not store {}: {why}. Please send it again later.", label(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use teledrop_core::{ChatId, MediaKind, MessageId, UserId};

    #[test]
    fn elapsed_time_reads_naturally() {
        let t = |s| elapsed_text(Duration::from_secs(s));
        assert_eq!(t(0), "0 s");
        assert_eq!(t(59), "59 s");
        assert_eq!(t(60), "1 min");
        assert_eq!(t(125), "2 min 5 s");
        assert_eq!(t(3600), "1 h");
        assert_eq!(t(3725), "1 h 2 min");
    }

    #[test]
    fn a_rate_limit_reply_names_the_limit_and_when_to_send_again() {
        let f = IncomingFile {
            user_id: UserId(1),
            chat_id: ChatId(1),
            message_id: MessageId(1),
            kind: MediaKind::Document,
            telegram_file_id: "f".into(),
            file_unique_id: "u".into(),
            size: Some(2048),
            file_name: "<a>.bin".into(),
            mime_type: "application/octet-stream".into(),
        };
        let ten = RateLimit::per_minute(10).unwrap();
        let why = rate_limit_detail(ten, Duration::from_millis(41_200));
        assert_eq!(
            why,
            "you can send at most 10 files per minute. Try this one again in 42 s"
        );
        assert_eq!(
            rate_limited(&f, Some(&why)),
            "🐢 Slow down: you can send at most 10 files per minute. Try this one again in 42 s.\n\n\
             <b>&lt;a&gt;.bin</b> (2.0 KiB) was not stored."
        );
        let one = RateLimit::new(1, Duration::from_secs(90)).unwrap();
        assert_eq!(
            rate_limit_detail(one, Duration::from_millis(1)),
            "you can send at most 1 file every 90 s. Try this one again in 1 s"
        );
        assert!(rate_limited(&f, None).contains("Slow down"));
    }
}
