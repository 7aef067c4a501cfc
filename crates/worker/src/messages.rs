//! What the bot says. HTML parse mode; every user-provided string escaped.

use teledrop_core::{ByteSize, ErrorKind, IncomingFile};
use teledrop_telegram::html_escape;

pub fn help(max: ByteSize, local_mode: bool) -> String {
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

pub fn hint(what: &str) -> String {
    format!(
        "I can't store a {what}. Send me a file — document, photo, video, audio, voice message, \
         video note or animation — and I'll reply with a download link. /help explains more."
    )
}

pub fn not_allowed() -> String {
    "⛔ This bot is private: you are not on its list of allowed users.".into()
}

fn label(f: &IncomingFile) -> String {
    match f.size {
        Some(s) => format!("<b>{}</b> ({})", html_escape(&f.file_name), ByteSize::from_bytes(s)),
        None => format!("<b>{}</b>", html_escape(&f.file_name)),
    }
}

pub fn receiving(f: &IncomingFile) -> String {
    format!("⏳ Receiving {}…", label(f))
}

pub fn progress(f: &IncomingFile, done: u64, total: Option<u64>) -> String {
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

pub fn stored(name: &str, size: u64, url: &str) -> String {
    format!(
        "✅ <b>{}</b>\n{}\n\n{}",
        html_escape(name),
        ByteSize::from_bytes(size),
        html_escape(url)
    )
}

pub fn too_big_for_cloud(f: &IncomingFile) -> String {
    format!(
        "❌ {} is too big: Telegram's cloud Bot API lets bots download files only up to 20 MB.\n\n\
         The operator can lift this to 2000 MB by running a self-hosted Telegram Bot API server \
         in local mode and pointing teledrop at it (TELEGRAM_API_URL and TELEGRAM_LOCAL_MODE=true).",
        label(f)
    )
}

pub fn over_limit(f: &IncomingFile, max: ByteSize) -> String {
    format!("❌ {} is larger than this bot's limit of {max}.", label(f))
}

/// `why` is the quota's sentence ("this file (2.0 MiB) would exceed your
/// quota of 5.0 MiB: 4.5 MiB stored already").
pub fn over_quota(f: &IncomingFile, why: Option<&str>) -> String {
    let why = why.unwrap_or("it would exceed a storage quota");
    format!(
        "⛔ {} was not stored: {}.\n\nDelete some of your files or ask the operator for a larger quota.",
        label(f),
        html_escape(why.trim_end_matches('.'))
    )
}

pub fn failed(f: &IncomingFile, kind: ErrorKind) -> String {
    let why = match kind {
        ErrorKind::Network | ErrorKind::TelegramUnavailable => "Telegram could not be reached for too long",
        ErrorKind::TelegramRejected => "Telegram refused to hand out the file",
        ErrorKind::Storage => "the file store is not available",
        ErrorKind::Catalog => "the database is not available",
        ErrorKind::Unsupported => "this kind of message carries no file I can store",
        _ => "something went wrong on our side",
    };
    format!("❌ Could not store {}: {why}. Please send it again later.", label(f))
}
