//! Files, blobs, links and usage.

use crate::ids::{ChatId, FileId, LinkToken, MessageId, ObjectKey, Sha256, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The kinds of Telegram message that carry a file we store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Document,
    Video,
    Audio,
    Voice,
    Animation,
    VideoNote,
    Photo,
}

impl MediaKind {
    pub const ALL: [MediaKind; 7] = [
        Self::Document,
        Self::Video,
        Self::Audio,
        Self::Voice,
        Self::Animation,
        Self::VideoNote,
        Self::Photo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Document => "document",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Voice => "voice",
            Self::Animation => "animation",
            Self::VideoNote => "video_note",
            Self::Photo => "photo",
        }
    }

    /// Telegram sends no name for these kinds; this is the name we give.
    pub fn default_name(self) -> (&'static str, &'static str) {
        match self {
            Self::Document => ("file", ""),
            Self::Video => ("video", ".mp4"),
            Self::Audio => ("audio", ".mp3"),
            Self::Voice => ("voice", ".ogg"),
            Self::Animation => ("animation", ".mp4"),
            Self::VideoNote => ("video_note", ".mp4"),
            Self::Photo => ("photo", ".jpg"),
        }
    }

    pub fn default_mime(self) -> &'static str {
        match self {
            Self::Document => "application/octet-stream",
            Self::Video | Self::Animation | Self::VideoNote => "video/mp4",
            Self::Audio => "audio/mpeg",
            Self::Voice => "audio/ogg",
            Self::Photo => "image/jpeg",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown media kind {0:?}")]
pub struct UnknownMediaKind(pub String);

impl FromStr for MediaKind {
    type Err = UnknownMediaKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownMediaKind(s.to_owned()))
    }
}

/// What an accepted update asks us to store. Stored with the job so a job
/// can be resumed from the catalog alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingFile {
    pub user_id: UserId,
    pub chat_id: ChatId,
    pub message_id: MessageId,
    pub kind: MediaKind,
    /// Telegram's `file_id`: downloads, but differs per bot and per send.
    pub telegram_file_id: String,
    /// Telegram's `file_unique_id`: stable, the deduplication key.
    pub file_unique_id: String,
    /// The size Telegram announced, when it did.
    pub size: Option<u64>,
    /// Already sanitized with [`sanitize_file_name`].
    pub file_name: String,
    pub mime_type: String,
}

/// Whether a file row is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Active,
    Deleted,
}

impl FileState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deleted => "deleted",
        }
    }
}

impl FromStr for FileState {
    type Err = UnknownMediaKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "deleted" => Ok(Self::Deleted),
            other => Err(UnknownMediaKind(other.to_owned())),
        }
    }
}

/// Bytes in object storage, shared by every file row with the same
/// Telegram `file_unique_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub file_unique_id: String,
    pub object_key: ObjectKey,
    pub size: u64,
    pub sha256: Sha256,
    pub created_at: DateTime<Utc>,
}

/// One stored file as its owner sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub id: FileId,
    pub owner: UserId,
    pub chat_id: ChatId,
    pub message_id: MessageId,
    pub kind: MediaKind,
    pub file_unique_id: String,
    pub name: String,
    pub mime_type: String,
    pub size: u64,
    pub sha256: Sha256,
    pub object_key: ObjectKey,
    pub state: FileState,
    pub created_at: DateTime<Utc>,
    pub last_download_at: Option<DateTime<Utc>>,
    pub download_count: u64,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A link to a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub token: LinkToken,
    pub file_id: FileId,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_downloads: Option<u64>,
    pub password_hash: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a link no longer serves its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkGone {
    Expired,
    Revoked,
    FileDeleted,
    DownloadLimitReached,
}

impl LinkRecord {
    /// Whether the link may serve its file now. A deleted file's links
    /// are revoked with it: that says "deleted", not "revoked".
    pub fn check(&self, file: &FileRecord, now: DateTime<Utc>) -> Result<(), LinkGone> {
        if file.state == FileState::Deleted {
            return Err(LinkGone::FileDeleted);
        }
        if self.revoked_at.is_some() {
            return Err(LinkGone::Revoked);
        }
        if self.expires_at.is_some_and(|t| t <= now) {
            return Err(LinkGone::Expired);
        }
        if self.max_downloads.is_some_and(|m| file.download_count >= m) {
            return Err(LinkGone::DownloadLimitReached);
        }
        Ok(())
    }
}

/// The link to create with a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLink {
    pub token: LinkToken,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_downloads: Option<u64>,
}

impl NewLink {
    pub fn unlimited() -> Self {
        Self {
            token: LinkToken::generate(),
            expires_at: None,
            max_downloads: None,
        }
    }
}

/// What a user owns, kept exact in the same transactions that change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub user_id: UserId,
    pub bytes: u64,
    pub files: u64,
}

/// Makes a name from a Telegram message safe to store and to show: no
/// path separators, no control or bidi-override characters, no leading
/// dots, at most 200 bytes; `fallback` when nothing is left.
pub fn sanitize_file_name(raw: &str, fallback: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(200));
    for c in raw.chars() {
        let c = match c {
            '/' | '\\' | '\0' => '_',
            c if c.is_control() => continue,
            // Bidi controls can disguise an extension (`gpj.exe`).
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' => continue,
            c => c,
        };
        if out.len() + c.len_utf8() > 200 {
            break;
        }
        out.push(c);
    }
    // Dots and spaces in any order: `. .bashrc` must not keep its dot.
    let trimmed = out
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end();
    if trimmed.is_empty() {
        fallback.to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_neutralised() {
        assert_eq!(sanitize_file_name("../../etc/passwd", "f"), "_.._etc_passwd");
        assert_eq!(sanitize_file_name("a\r\nb\"c.txt", "f"), "ab\"c.txt");
        assert_eq!(sanitize_file_name("evil\u{202E}gpj.exe", "f"), "evilgpj.exe");
        assert_eq!(sanitize_file_name("  ...  ", "fallback"), "fallback");
        assert_eq!(sanitize_file_name(".bashrc", "f"), "bashrc");
        let long = "й".repeat(300);
        let s = sanitize_file_name(&long, "f");
        assert!(s.len() <= 200 && s.chars().all(|c| c == 'й'));
        assert_eq!(sanitize_file_name("отчёт 2026.pdf", "f"), "отчёт 2026.pdf");
    }

    #[test]
    fn link_check_orders_reasons() {
        let now = Utc::now();
        let file = FileRecord {
            id: FileId::new(),
            owner: UserId(1),
            chat_id: ChatId(1),
            message_id: MessageId(1),
            kind: MediaKind::Document,
            file_unique_id: "u".into(),
            name: "n".into(),
            mime_type: "text/plain".into(),
            size: 1,
            sha256: Sha256::digest(b"x"),
            object_key: ObjectKey::for_new_blob(),
            state: FileState::Active,
            created_at: now,
            last_download_at: None,
            download_count: 3,
            deleted_at: None,
        };
        let mut link = LinkRecord {
            token: LinkToken::generate(),
            file_id: file.id,
            created_at: now,
            expires_at: None,
            max_downloads: None,
            password_hash: None,
            revoked_at: None,
        };
        assert_eq!(link.check(&file, now), Ok(()));
        link.max_downloads = Some(3);
        assert_eq!(link.check(&file, now), Err(LinkGone::DownloadLimitReached));
        link.expires_at = Some(now);
        assert_eq!(link.check(&file, now), Err(LinkGone::Expired));
        link.revoked_at = Some(now);
        assert_eq!(link.check(&file, now), Err(LinkGone::Revoked));
        // Deleting a file revokes its links too; the deletion is the reason.
        let mut deleted = file.clone();
        deleted.state = FileState::Deleted;
        deleted.deleted_at = Some(now);
        assert_eq!(link.check(&deleted, now), Err(LinkGone::FileDeleted));
    }
}
