//! What `Content-Type` a stored file is served with, and whether it may
//! be shown inline.
//!
//! The MIME type in the catalog comes from the sender, so it is
//! untrusted. Types a browser would render as an active document (HTML,
//! SVG, XML, scripts, …) are never served as themselves: they become
//! `application/octet-stream`, and so does anything that does not parse.
//! Inline display is allowed only for a short list of passive types.

use http::HeaderValue;

const OCTET_STREAM: &str = "application/octet-stream";

/// How a file's bytes are labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedType {
    /// The `Content-Type` value to send.
    pub content_type: String,
    /// Whether `?inline` may show it in the browser.
    pub previewable: bool,
    /// Whether it is a PDF (browsers' PDF viewers do not run in a
    /// sandboxed document).
    pub is_pdf: bool,
}

impl ServedType {
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.content_type).unwrap_or(HeaderValue::from_static(OCTET_STREAM))
    }
}

/// Decides the served type of a file whose catalog MIME type is `mime`.
pub fn classify(mime: &str) -> ServedType {
    let Some((ty, sub)) = essence(mime) else {
        return opaque();
    };
    if is_active(&ty, &sub) {
        return opaque();
    }
    let previewable = match ty.as_str() {
        "image" => matches!(sub.as_str(), "png" | "jpeg" | "gif" | "webp"),
        "video" | "audio" => true,
        "application" => sub == "pdf",
        "text" => sub == "plain",
        _ => false,
    };
    let content_type = if ty == "text" && sub == "plain" {
        "text/plain; charset=utf-8".to_owned()
    } else {
        format!("{ty}/{sub}")
    };
    ServedType {
        is_pdf: ty == "application" && sub == "pdf",
        content_type,
        previewable,
    }
}

fn opaque() -> ServedType {
    ServedType {
        content_type: OCTET_STREAM.to_owned(),
        previewable: false,
        is_pdf: false,
    }
}

/// `type/subtype` in lowercase, parameters dropped; `None` unless both
/// are RFC 9110 tokens.
fn essence(mime: &str) -> Option<(String, String)> {
    let essence = mime.split(';').next().unwrap_or_default().trim();
    let (ty, sub) = essence.split_once('/')?;
    let is_token = |s: &str| !s.is_empty() && s.bytes().all(is_tchar);
    if !is_token(ty) || !is_token(sub) {
        return None;
    }
    Some((ty.to_ascii_lowercase(), sub.to_ascii_lowercase()))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

/// Types a browser may execute or render as a document with scripts,
/// styles or links: markup of any kind (`*html*`, `*xml*` including every
/// `+xml` suffix such as SVG, XHTML, RSS, XSLT), scripts, Flash,
/// multipart streams.
fn is_active(ty: &str, sub: &str) -> bool {
    ty == "multipart"
        || sub.contains("html")
        || sub.contains("xml")
        || sub.contains("script")
        || sub.contains("xsl")
        || sub.contains("flash")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(m: &str) -> (String, bool) {
        let s = classify(m);
        (s.content_type, s.previewable)
    }

    #[test]
    fn dangerous_types_become_octet_stream() {
        for m in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "application/xhtml+xml",
            "image/svg+xml",
            "text/xml",
            "application/xml",
            "application/rss+xml",
            "application/xslt+xml",
            "text/xsl",
            "text/javascript",
            "application/javascript",
            "application/x-javascript",
            "application/ecmascript",
            "text/vbscript",
            "application/x-shockwave-flash",
            "multipart/x-mixed-replace",
            "text/jscript",
        ] {
            assert_eq!(ct(m), (OCTET_STREAM.to_owned(), false), "{m}");
        }
    }

    #[test]
    fn unparsable_types_become_octet_stream() {
        for m in [
            "",
            "html",
            "text/",
            "/plain",
            "text/pl ain",
            "text/plain/x",
            "tëxt/plain",
            "text/plain\r\nX-A: b",
        ] {
            assert_eq!(ct(m), (OCTET_STREAM.to_owned(), false), "{m:?}");
        }
    }

    #[test]
    fn previewable_types() {
        assert_eq!(ct("image/png"), ("image/png".into(), true));
        assert_eq!(ct("IMAGE/JPEG"), ("image/jpeg".into(), true));
        assert_eq!(ct("image/gif"), ("image/gif".into(), true));
        assert_eq!(ct("image/webp"), ("image/webp".into(), true));
        assert_eq!(ct("video/mp4"), ("video/mp4".into(), true));
        assert_eq!(ct("audio/ogg; codecs=opus"), ("audio/ogg".into(), true));
        assert_eq!(ct("application/pdf"), ("application/pdf".into(), true));
        assert!(classify("application/pdf").is_pdf);
        assert_eq!(
            ct("text/plain; charset=latin1"),
            ("text/plain; charset=utf-8".into(), true)
        );
    }

    #[test]
    fn passive_but_not_previewable_types_keep_their_type() {
        assert_eq!(ct("application/zip"), ("application/zip".into(), false));
        assert_eq!(ct("application/json"), ("application/json".into(), false));
        assert_eq!(ct("text/csv"), ("text/csv".into(), false));
        assert_eq!(ct("image/tiff"), ("image/tiff".into(), false));
        assert_eq!(ct("application/octet-stream"), (OCTET_STREAM.into(), false));
    }
}
