//! Telegram-looking identifiers.
//!
//! Real `file_id`s are base64url (no padding) of a binary record whose
//! first bytes encode the file type, so ids of one kind share a prefix
//! ("BQACAgIAAxkBAAI…" for documents). We keep the kind prefix and fill
//! the rest from a counter and randomness: every send gets a fresh
//! `file_id`. `file_unique_id`s ("AgAD…", 15 characters) are a pure
//! function of the content key, so equal content always has the same one.

use crate::content::mix;
use crate::types::MediaKind;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = group.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The `file_unique_id` of content `key`: "AgAD" + 11 characters.
pub fn file_unique_id(key: u64) -> String {
    format!("AgAD{}", b64url(&mix(key ^ 0x0F11_E1D0).to_le_bytes()))
}

/// A fresh `file_id` for content `key` sent as `kind`; `serial` makes it
/// distinct from every other id this simulator handed out.
pub fn file_id(kind: MediaKind, key: u64, serial: u64) -> String {
    let mut bytes = Vec::with_capacity(42);
    bytes.extend_from_slice(&serial.to_le_bytes());
    bytes.extend_from_slice(&mix(key).to_le_bytes());
    let mut noise = [0u8; 26];
    rand::fill(&mut noise[..]);
    bytes.extend_from_slice(&noise);
    format!("{}{}", kind.file_id_prefix(), b64url(&bytes))
}

/// An opaque random id (callback query ids, media group ids).
pub fn random_numeric() -> String {
    let n: u64 = rand::random_range(1_000_000_000_000_000..9_000_000_000_000_000);
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64url_known_values() {
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn ids_look_like_telegram() {
        let u = file_unique_id(42);
        assert_eq!(u.len(), 15);
        assert!(u.starts_with("AgAD"));
        let a = file_id(MediaKind::Document, 42, 1);
        let b = file_id(MediaKind::Document, 42, 2);
        assert_ne!(a, b);
        assert!(a.starts_with("BQACAgIAAxkBAAI"));
        assert_eq!(a.len(), 15 + 56);
    }
}
