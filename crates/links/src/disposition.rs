//! `Content-Disposition` (RFC 6266) with an RFC 5987/8187 `filename*`.
//!
//! The header always carries both parameters:
//!
//! ```text
//! attachment; filename="<ascii fallback>"; filename*=UTF-8''<percent-encoded UTF-8>
//! ```
//!
//! Browsers that understand `filename*` (all current ones) use it and get
//! the exact name; the quoted `filename` is a conservative ASCII fallback
//! for the rest. Both are built here from scratch: no maintained crate
//! writes `filename*`.

use http::HeaderValue;

/// Whether the browser should save the file or may show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Attachment,
    Inline,
}

impl Disposition {
    fn as_str(self) -> &'static str {
        match self {
            Self::Attachment => "attachment",
            Self::Inline => "inline",
        }
    }
}

/// Longest name (in bytes of UTF-8) put in the header. File systems cap
/// names at 255 bytes; longer names are cut, keeping a short extension.
pub const MAX_NAME_BYTES: usize = 255;

/// The name used when a file has none.
const DEFAULT_NAME: &str = "file";

/// The header value for `name`. Always a valid header value: every byte
/// is visible ASCII or a space.
pub fn content_disposition(disposition: Disposition, name: &str) -> HeaderValue {
    let value = format_content_disposition(disposition, name);
    // The formatter only emits 0x20..=0x7E, which a header value accepts;
    // the fallback keeps this total should that ever change.
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

/// The header value for `name`, as a string (see [`content_disposition`]).
pub fn format_content_disposition(disposition: Disposition, name: &str) -> String {
    let name = shorten(name, MAX_NAME_BYTES);
    let name = if name.trim().is_empty() {
        DEFAULT_NAME
    } else {
        name.as_str()
    };
    let fallback = ascii_fallback(name);
    let encoded = rfc5987_encode(name);
    format!(
        "{}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}",
        disposition.as_str()
    )
}

/// An ASCII-only stand-in for `name`, safe inside a quoted string: every
/// character that is not printable ASCII, and `"`, `\` and `%`, becomes
/// `_` (one `_` per character, so `é` and `😀` are one `_` each). `%` is
/// replaced because some user agents percent-decode `filename`
/// (RFC 6266, appendix D).
pub fn ascii_fallback(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '"' | '\\' | '%' => '_',
            ' '..='~' => c,
            _ => '_',
        })
        .collect()
}

/// Percent-encodes `value` as the `value-chars` of an RFC 5987
/// `ext-value`: UTF-8 bytes, everything but `attr-char` as `%XX`
/// (uppercase hex).
pub fn rfc5987_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len() * 3);
    for &b in value.as_bytes() {
        if is_attr_char(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0F)]));
        }
    }
    out
}

/// `attr-char` of RFC 5987 / RFC 8187.
fn is_attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

/// Cuts `name` to at most `max` bytes on a character boundary, keeping an
/// extension of up to 16 bytes so the saved file still opens with the
/// right program.
fn shorten(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let ext = name
        .rfind('.')
        .map(|i| &name[i..])
        .filter(|e| e.len() > 1 && e.len() <= 16)
        .unwrap_or("");
    let stem = &name[..name.len() - ext.len()];
    let mut cut = max - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &stem[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(name: &str) -> String {
        format_content_disposition(Disposition::Attachment, name)
    }

    #[test]
    fn plain_ascii_name() {
        assert_eq!(
            attachment("report-2026.pdf"),
            "attachment; filename=\"report-2026.pdf\"; filename*=UTF-8''report-2026.pdf"
        );
        assert_eq!(
            format_content_disposition(Disposition::Inline, "a b.png"),
            "inline; filename=\"a b.png\"; filename*=UTF-8''a%20b.png"
        );
    }

    #[test]
    fn quotes_and_backslashes_cannot_break_out() {
        assert_eq!(
            attachment(r#"evil"; filename="x.html"#),
            "attachment; filename=\"evil_; filename=_x.html\"; \
             filename*=UTF-8''evil%22%3B%20filename%3D%22x.html"
        );
        assert_eq!(
            attachment(r#"a\"b"#),
            "attachment; filename=\"a__b\"; filename*=UTF-8''a%5C%22b"
        );
    }

    #[test]
    fn control_characters_and_header_injection() {
        let v = attachment("a\r\nSet-Cookie: x=1\tb\0.txt");
        assert_eq!(
            v,
            "attachment; filename=\"a__Set-Cookie: x=1_b_.txt\"; \
             filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x%3D1%09b%00.txt"
        );
        assert!(HeaderValue::from_str(&v).is_ok());
        assert!(content_disposition(Disposition::Attachment, "a\r\nb").to_str().is_ok());
    }

    #[test]
    fn semicolons_and_percent_signs() {
        assert_eq!(
            attachment("100%; done%20.txt"),
            "attachment; filename=\"100_; done_20.txt\"; filename*=UTF-8''100%25%3B%20done%2520.txt"
        );
    }

    #[test]
    fn non_ascii_and_emoji() {
        assert_eq!(
            attachment("отчёт.pdf"),
            "attachment; filename=\"_____.pdf\"; \
             filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf"
        );
        assert_eq!(
            attachment("café 😀.jpg"),
            "attachment; filename=\"caf_ _.jpg\"; filename*=UTF-8''caf%C3%A9%20%F0%9F%98%80.jpg"
        );
        // Not ASCII, not control, still replaced: DEL and C1 controls.
        assert_eq!(ascii_fallback("a\u{7f}\u{85}b"), "a__b");
    }

    #[test]
    fn encoding_round_trips() {
        for name in ["a\"b;c%d\r\n.txt", "отчёт 😀.pdf", "  spaced  ", "~!#$&+^`|"] {
            let enc = rfc5987_encode(name);
            assert!(enc.bytes().all(|b| is_attr_char(b) || b == b'%'), "{enc}");
            assert_eq!(percent_encoding::percent_decode_str(&enc).decode_utf8().unwrap(), name);
        }
    }

    #[test]
    fn attr_chars_pass_and_everything_else_is_encoded() {
        assert_eq!(rfc5987_encode("!#$&+-.^_`|~azAZ09"), "!#$&+-.^_`|~azAZ09");
        assert_eq!(
            rfc5987_encode("\"%'()*,/:;<=>?@[\\]{} "),
            "%22%25%27%28%29%2A%2C%2F%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%7B%7D%20"
        );
        assert_eq!(rfc5987_encode("é"), "%C3%A9");
        assert_eq!(rfc5987_encode(""), "");
    }

    #[test]
    fn empty_names_get_a_default() {
        assert_eq!(attachment(""), "attachment; filename=\"file\"; filename*=UTF-8''file");
        assert_eq!(
            attachment("   "),
            "attachment; filename=\"file\"; filename*=UTF-8''file"
        );
    }

    #[test]
    fn very_long_names_are_cut_keeping_the_extension() {
        let long = format!("{}.tar.gz", "я".repeat(400));
        let v = attachment(&long);
        let star = v.split("filename*=UTF-8''").nth(1).unwrap();
        assert!(star.ends_with(".gz"), "{star}");
        let decoded = percent_encoding::percent_decode_str(star).decode_utf8().unwrap();
        assert!(decoded.len() <= MAX_NAME_BYTES, "{}", decoded.len());
        assert!(decoded.starts_with("яяя") && decoded.ends_with("я.gz"), "{decoded}");
        let fallback = v.split('"').nth(1).unwrap();
        assert!(fallback.ends_with("_.gz"));
        assert!(HeaderValue::from_str(&v).is_ok());

        let cut = shorten(&"ab".repeat(300), 255);
        assert_eq!(cut.len(), 255);
        // A multi-byte character is never split.
        let cut = shorten(&"é".repeat(200), 255);
        assert_eq!(cut.len(), 254);
        // An over-long "extension" is not an extension.
        let cut = shorten(&format!("x.{}", "y".repeat(300)), 255);
        assert_eq!(cut.len(), 255);
    }
}
