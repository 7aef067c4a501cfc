//! Validators and conditional requests (RFC 9110 §8.8, §13).
//!
//! A stored file never changes: its strong entity tag is its SHA-256 and
//! its last-modification time is when it was stored. That makes every
//! comparison here exact.

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, header};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The validators of one stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The opaque tag, without quotes (the SHA-256 in hex).
    opaque: String,
    /// Last modification, whole seconds since the epoch (HTTP dates have
    /// no finer resolution).
    modified_secs: u64,
}

impl Validators {
    pub fn new(sha256_hex: String, modified: DateTime<Utc>) -> Self {
        Self {
            opaque: sha256_hex,
            modified_secs: u64::try_from(modified.timestamp()).unwrap_or(0),
        }
    }

    /// The `ETag` value: a strong tag.
    pub fn etag(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("\"{}\"", self.opaque)).unwrap_or(HeaderValue::from_static("\"\""))
    }

    /// The `Last-Modified` value, an IMF-fixdate.
    pub fn last_modified(&self) -> HeaderValue {
        let t = UNIX_EPOCH + Duration::from_secs(self.modified_secs);
        HeaderValue::from_str(&httpdate::fmt_http_date(t)).unwrap_or(HeaderValue::from_static(""))
    }

    /// Whether a GET/HEAD with these headers is answered 304 Not Modified:
    /// `If-None-Match` when present (weak comparison, `*` matches),
    /// otherwise `If-Modified-Since`. Headers that do not parse are
    /// ignored.
    pub fn not_modified(&self, headers: &HeaderMap) -> bool {
        match self.if_none_match(headers) {
            Some(matched) => matched,
            None => self.if_modified_since_unchanged(headers),
        }
    }

    /// `Some(matched)` when `If-None-Match` is present and well formed.
    fn if_none_match(&self, headers: &HeaderMap) -> Option<bool> {
        let mut present = false;
        let mut matched = false;
        for value in headers.get_all(header::IF_NONE_MATCH) {
            let list = parse_etag_list(value.as_bytes())?;
            present = true;
            matched |= match list {
                EtagList::Any => true,
                EtagList::Tags(tags) => tags.iter().any(|t| t.opaque == self.opaque.as_bytes()),
            };
        }
        present.then_some(matched)
    }

    fn if_modified_since_unchanged(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(header::IF_MODIFIED_SINCE).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        match parse_http_date_secs(value) {
            Some(since) => self.modified_secs <= since,
            None => false,
        }
    }

    /// Whether a `Range` may be honoured given `If-Range` (absent: yes).
    /// An entity tag must match strongly (a weak tag never does); a date
    /// must be at or after the last modification. Anything else means the
    /// client's partial copy is stale: send the whole file.
    pub fn if_range_allows(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(header::IF_RANGE).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return true,
            (Some(v), None) => v,
            (Some(_), Some(_)) => return false,
        };
        let bytes = trim_ows(value.as_bytes());
        if bytes.starts_with(b"\"") || bytes.starts_with(b"W/") {
            return match parse_etag_list(bytes) {
                Some(EtagList::Tags(tags)) if tags.len() == 1 => {
                    !tags[0].weak && tags[0].opaque == self.opaque.as_bytes()
                }
                _ => false,
            };
        }
        match parse_http_date_secs(value) {
            Some(date) => date >= self.modified_secs,
            None => false,
        }
    }
}

fn parse_http_date_secs(value: &HeaderValue) -> Option<u64> {
    let s = value.to_str().ok()?;
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    Some(t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

#[derive(Debug, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
enum EtagList<'a> {
    Any,
    Tags(Vec<EntityTag<'a>>),
}

/// Parses `"*" / #entity-tag`; `None` when malformed (the header is then
/// ignored).
fn parse_etag_list(input: &[u8]) -> Option<EtagList<'_>> {
    let trimmed = trim_ows(input);
    if trimmed == b"*" {
        return Some(EtagList::Any);
    }
    let mut tags = Vec::new();
    let mut rest = trimmed;
    loop {
        // Skip list separators and optional whitespace (empty elements
        // are allowed in a list).
        while let [b',' | b' ' | b'\t', tail @ ..] = rest {
            rest = tail;
        }
        if rest.is_empty() {
            break;
        }
        let (weak, after) = match rest.strip_prefix(b"W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let after = after.strip_prefix(b"\"")?;
        let end = after.iter().position(|&b| b == b'"')?;
        let opaque = &after[..end];
        // etagc = %x21 / %x23-7E / obs-text
        if !opaque
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7E).contains(&b) || b >= 0x80)
        {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        rest = &after[end + 1..];
        // After a tag: end, or whitespace/comma before the next one.
        match rest {
            [] | [b',' | b' ' | b'\t', ..] => {}
            _ => return None,
        }
    }
    if tags.is_empty() {
        None
    } else {
        Some(EtagList::Tags(tags))
    }
}

fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', tail @ ..] = b {
        b = tail;
    }
    while let [head @ .., b' ' | b'\t'] = b {
        b = head;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn v() -> Validators {
        Validators::new(HEX.to_owned(), Utc.with_ymd_and_hms(2026, 11, 3, 10, 20, 30).unwrap())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, val) in pairs {
            h.append(*k, HeaderValue::from_str(val).unwrap());
        }
        h
    }

    #[test]
    fn validator_values() {
        assert_eq!(v().etag(), format!("\"{HEX}\"").as_str());
        assert_eq!(v().last_modified(), "Tue, 03 Nov 2026 10:20:30 GMT");
    }

    #[test]
    fn etag_lists() {
        assert_eq!(parse_etag_list(b" * "), Some(EtagList::Any));
        assert_eq!(
            parse_etag_list(br#""a", W/"b",,"c,d""#),
            Some(EtagList::Tags(vec![
                EntityTag {
                    weak: false,
                    opaque: b"a"
                },
                EntityTag {
                    weak: true,
                    opaque: b"b"
                },
                EntityTag {
                    weak: false,
                    opaque: b"c,d"
                },
            ]))
        );
        assert_eq!(
            parse_etag_list(br#""""#),
            Some(EtagList::Tags(vec![EntityTag {
                weak: false,
                opaque: b""
            }]))
        );
        for bad in [
            &b"abc"[..],
            b"\"abc",
            b"\"a\"b",
            b"w/\"a\"",
            b"",
            b",",
            b"\"a b\"",
            b"*, \"a\"",
        ] {
            assert_eq!(parse_etag_list(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let tag = format!("\"{HEX}\"");
        let weak = format!("W/\"{HEX}\"");
        assert!(v().not_modified(&headers(&[("if-none-match", &tag)])));
        assert!(v().not_modified(&headers(&[("if-none-match", &weak)])));
        assert!(v().not_modified(&headers(&[("if-none-match", "*")])));
        assert!(v().not_modified(&headers(&[("if-none-match", &format!("\"x\", {tag}"))])));
        assert!(v().not_modified(&headers(&[("if-none-match", "\"x\""), ("if-none-match", &weak)])));
        assert!(!v().not_modified(&headers(&[("if-none-match", "\"x\"")])));
        assert!(!v().not_modified(&headers(&[])));
    }

    #[test]
    fn if_none_match_takes_precedence_over_if_modified_since() {
        let h = headers(&[
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Tue, 03 Nov 2026 10:20:30 GMT"),
        ]);
        assert!(!v().not_modified(&h));
        // A malformed If-None-Match is ignored, so the date decides.
        let h = headers(&[
            ("if-none-match", "nonsense"),
            ("if-modified-since", "Tue, 03 Nov 2026 10:20:30 GMT"),
        ]);
        assert!(v().not_modified(&h));
    }

    #[test]
    fn if_modified_since() {
        let ims = |d: &str| v().not_modified(&headers(&[("if-modified-since", d)]));
        assert!(ims("Tue, 03 Nov 2026 10:20:30 GMT"));
        assert!(ims("Tue, 03 Nov 2026 10:20:31 GMT"));
        assert!(ims("Tuesday, 03-Nov-26 10:20:30 GMT"));
        assert!(!ims("Tue, 03 Nov 2026 10:20:29 GMT"));
        assert!(!ims("yesterday"));
        let two = headers(&[
            ("if-modified-since", "Tue, 03 Nov 2026 10:20:30 GMT"),
            ("if-modified-since", "Tue, 03 Nov 2026 10:20:30 GMT"),
        ]);
        assert!(!v().not_modified(&two));
    }

    #[test]
    fn if_range() {
        let allows = |val: &str| v().if_range_allows(&headers(&[("if-range", val)]));
        assert!(v().if_range_allows(&headers(&[])));
        assert!(allows(&format!("\"{HEX}\"")));
        assert!(allows(&format!(" \"{HEX}\" ")));
        assert!(!allows(&format!("W/\"{HEX}\"")));
        assert!(!allows("\"other\""));
        assert!(!allows(&format!("\"{HEX}\", \"{HEX}\"")));
        assert!(allows("Tue, 03 Nov 2026 10:20:30 GMT"));
        assert!(allows("Wed, 04 Nov 2026 00:00:00 GMT"));
        assert!(!allows("Tue, 03 Nov 2026 10:20:29 GMT"));
        assert!(!allows("garbage"));
    }
}
