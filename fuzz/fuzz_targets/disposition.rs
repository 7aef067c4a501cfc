//! File names into `Content-Disposition` (RFC 6266 / RFC 5987) and stored
//! MIME types into `Content-Type`: always a valid header value that cannot
//! be broken out of, and `filename*` decodes back to the (shortened) name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use teledrop_links::content_type::classify;
use teledrop_links::disposition::{
    Disposition, MAX_NAME_BYTES, ascii_fallback, content_disposition, format_content_disposition, rfc5987_encode,
};

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|name: &str| {
    for d in [Disposition::Attachment, Disposition::Inline] {
        let value = format_content_disposition(d, name);
        assert!(http::HeaderValue::from_str(&value).is_ok(), "{value:?}");
        let _ = content_disposition(d, name);
        let (head, star) = value.split_once("; filename*=UTF-8''").expect("filename*");
        let fallback = head.split_once("; filename=\"").expect("filename").1;
        let fallback = fallback.strip_suffix('"').expect("closing quote");
        assert!(!fallback.contains(['"', '\\']), "{fallback:?}");
        let decoded = String::from_utf8(percent_decode(star)).expect("UTF-8");
        assert!(decoded.len() <= MAX_NAME_BYTES);
        if name.len() <= MAX_NAME_BYTES && !name.trim().is_empty() {
            assert_eq!(decoded, name);
        }
    }
    let enc = rfc5987_encode(name);
    assert_eq!(percent_decode(&enc), name.as_bytes());
    assert!(ascii_fallback(name).bytes().all(|b| (b' '..=b'~').contains(&b)));

    let served = classify(name);
    assert!(http::HeaderValue::from_str(&served.content_type).is_ok());
    // Nothing a browser would run or render as a document: no multipart
    // type, no subtype naming HTML, XML, script, XSL or Flash.
    let essence = served.content_type.split(';').next().unwrap().to_ascii_lowercase();
    let (ty, sub) = essence.split_once('/').expect("type/subtype");
    assert_ne!(ty, "multipart", "{name:?}");
    for active in ["html", "xml", "script", "xsl", "flash"] {
        assert!(!sub.contains(active), "{name:?} served as {essence:?}");
    }
});
