//! What an update asks of the bot.

use teledrop_core::file::sanitize_file_name;
use teledrop_core::{ChatId, IncomingFile, MediaKind, MessageId, UserId};
use teloxide::types::{FileMeta, Message, Update, UpdateKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Start,
    Help,
    Other(String),
}

/// An update, reduced to what teledrop acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A message carrying a file to store.
    File(IncomingFile),
    /// `/start`, `/help` or another command.
    Command {
        user: UserId,
        chat: ChatId,
        message: MessageId,
        command: Command,
    },
    /// A message we cannot store (text, sticker, location…): we answer
    /// with a hint.
    Other {
        user: UserId,
        chat: ChatId,
        message: MessageId,
        what: &'static str,
    },
    /// Nothing to answer: edits, channel posts, service messages from
    /// nobody, update kinds we do not handle.
    Ignored,
}

pub fn parse_update(update: &Update) -> Inbound {
    match &update.kind {
        UpdateKind::Message(m) => parse_message(m),
        _ => Inbound::Ignored,
    }
}

fn parse_message(m: &Message) -> Inbound {
    let chat = ChatId(m.chat.id.0);
    let message = MessageId(m.id.0);
    let Some(from) = m.from.as_ref() else {
        return Inbound::Ignored;
    };
    if from.is_bot {
        return Inbound::Ignored;
    }
    let user = UserId(i64::try_from(from.id.0).unwrap_or(i64::MAX));
    let file = |kind: MediaKind, meta: &FileMeta, name: Option<&str>, mime: Option<String>| {
        let (stem, ext) = kind.default_name();
        let fallback = format!("{stem}_{}{ext}", message.0);
        Inbound::File(IncomingFile {
            user_id: user,
            chat_id: chat,
            message_id: message,
            kind,
            telegram_file_id: meta.id.0.clone(),
            file_unique_id: meta.unique_id.0.clone(),
            // teloxide turns a missing size into u32::MAX.
            size: (meta.size != u32::MAX).then_some(u64::from(meta.size)),
            file_name: sanitize_file_name(name.unwrap_or(""), &fallback),
            mime_type: mime
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| kind.default_mime().to_owned()),
        })
    };
    // An animation message also carries a `document`: check it first.
    if let Some(a) = m.animation() {
        return file(
            MediaKind::Animation,
            &a.file,
            a.file_name.as_deref(),
            a.mime_type.as_ref().map(|x| x.to_string()),
        );
    }
    if let Some(d) = m.document() {
        return file(
            MediaKind::Document,
            &d.file,
            d.file_name.as_deref(),
            d.mime_type.as_ref().map(|x| x.to_string()),
        );
    }
    if let Some(v) = m.video() {
        return file(
            MediaKind::Video,
            &v.file,
            v.file_name.as_deref(),
            v.mime_type.as_ref().map(|x| x.to_string()),
        );
    }
    if let Some(a) = m.audio() {
        return file(
            MediaKind::Audio,
            &a.file,
            a.file_name.as_deref(),
            a.mime_type.as_ref().map(|x| x.to_string()),
        );
    }
    if let Some(v) = m.voice() {
        return file(
            MediaKind::Voice,
            &v.file,
            None,
            v.mime_type.as_ref().map(|x| x.to_string()),
        );
    }
    if let Some(v) = m.video_note() {
        return file(MediaKind::VideoNote, &v.file, None, None);
    }
    if let Some(sizes) = m.photo() {
        // Telegram lists sizes smallest first; keep the biggest.
        if let Some(p) = sizes
            .iter()
            .max_by_key(|p| (u64::from(p.width) * u64::from(p.height), p.file.size))
        {
            return file(MediaKind::Photo, &p.file, None, None);
        }
    }
    if let Some(text) = m.text() {
        if let Some(rest) = text.strip_prefix('/') {
            let word = rest.split_whitespace().next().unwrap_or("");
            let name = word.split('@').next().unwrap_or("").to_ascii_lowercase();
            let command = match name.as_str() {
                "start" => Command::Start,
                "help" => Command::Help,
                _ => Command::Other(name),
            };
            return Inbound::Command {
                user,
                chat,
                message,
                command,
            };
        }
        return Inbound::Other {
            user,
            chat,
            message,
            what: "text",
        };
    }
    if m.sticker().is_some() {
        return Inbound::Other {
            user,
            chat,
            message,
            what: "sticker",
        };
    }
    Inbound::Other {
        user,
        chat,
        message,
        what: "message",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(message: serde_json::Value) -> Update {
        serde_json::from_str(&json!({"update_id": 10, "message": message}).to_string()).unwrap()
    }

    fn base() -> serde_json::Value {
        json!({
            "message_id": 5, "date": 1_700_000_000,
            "from": {"id": 42, "is_bot": false, "first_name": "A"},
            "chat": {"id": 42, "type": "private", "first_name": "A"}
        })
    }

    #[test]
    fn document_becomes_a_file_with_a_safe_name() {
        let mut m = base();
        m["document"] = json!({"file_id": "BQAC", "file_unique_id": "AgADx", "file_size": 1234,
                                "file_name": "../../etc/passwd", "mime_type": "text/plain"});
        let u = update(m);
        let Inbound::File(f) = parse_update(&u) else {
            panic!("not a file: {u:?}")
        };
        assert_eq!(f.kind, MediaKind::Document);
        assert_eq!(f.size, Some(1234));
        assert_eq!(f.file_name, "_.._etc_passwd");
        assert_eq!(f.mime_type, "text/plain");
        assert_eq!(
            (f.user_id, f.chat_id, f.message_id),
            (UserId(42), ChatId(42), MessageId(5))
        );
    }

    #[test]
    fn largest_photo_wins_and_gets_a_name() {
        let mut m = base();
        m["photo"] = json!([
            {"file_id": "s", "file_unique_id": "us", "width": 90, "height": 60, "file_size": 100},
            {"file_id": "l", "file_unique_id": "ul", "width": 1280, "height": 853, "file_size": 9000},
            {"file_id": "m", "file_unique_id": "um", "width": 320, "height": 213, "file_size": 900}
        ]);
        let u = update(m);
        let Inbound::File(f) = parse_update(&u) else {
            panic!("not a file: {u:?}")
        };
        assert_eq!(f.telegram_file_id, "l");
        assert_eq!(f.file_name, "photo_5.jpg");
        assert_eq!(f.mime_type, "image/jpeg");
    }

    #[test]
    fn animation_wins_over_its_document() {
        let mut m = base();
        let meta = json!({"file_id": "CgAC", "file_unique_id": "AgADa", "file_size": 10,
                          "width": 1, "height": 1, "duration": 1, "file_name": "a.mp4", "mime_type": "video/mp4"});
        m["animation"] = meta.clone();
        m["document"] = meta;
        let u = update(m);
        let Inbound::File(f) = parse_update(&u) else {
            panic!("not a file: {u:?}")
        };
        assert_eq!(f.kind, MediaKind::Animation);
    }

    #[test]
    fn commands_and_text() {
        let mut m = base();
        m["text"] = json!("/start@teledrop_bot hi");
        m["entities"] = json!([{"type": "bot_command", "offset": 0, "length": 19}]);
        assert!(matches!(
            parse_update(&update(m)),
            Inbound::Command {
                command: Command::Start,
                ..
            }
        ));
        let mut m = base();
        m["text"] = json!("hello");
        assert!(matches!(parse_update(&update(m)), Inbound::Other { what: "text", .. }));
    }

    #[test]
    fn unknown_update_kinds_are_ignored() {
        let u: Update = serde_json::from_value(json!({"update_id": 11, "brand_new_kind": {"x": 1}})).unwrap();
        assert_eq!(parse_update(&u), Inbound::Ignored);
    }
}
