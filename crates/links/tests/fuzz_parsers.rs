//! Property tests of what the link server parses from a request or puts in
//! a response header: `Range`, `If-None-Match`, `If-Modified-Since`,
//! `If-Range`, the RFC 6266/5987 `Content-Disposition` file name and the
//! stored MIME type. Arbitrary and near-valid input never panics; what is
//! accepted keeps its invariants.
//!
//! A bounded run (see `config`) is part of `cargo test`; set
//! `PROPTEST_CASES` for a longer one. The coverage-guided targets of the
//! same parsers are in `fuzz/` (`scripts/fuzz.sh`).

use chrono::{DateTime, TimeZone, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use teledrop_links::conditional::Validators;
use teledrop_links::content_type::classify;
use teledrop_links::disposition::{
    Disposition, MAX_NAME_BYTES, ascii_fallback, content_disposition, format_content_disposition, rfc5987_encode,
};
use teledrop_links::range::{ByteRange, RangeRequest, evaluate};

/// `cases` unless `PROPTEST_CASES` asks for another number.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

// ------------------------------------------------------------------ Range

/// A position as a client might write it: small, near the file size,
/// huge, or too long for `u64`.
fn position() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..2_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9]{19,30}",
        "0{1,5}[0-9]{0,3}",
        Just(String::new()),
        "[0-9a-fx+ -]{1,4}",
    ]
}

/// `bytes=` headers close to valid: odd units and spacing, one or more
/// specs, suffixes, reversed bounds.
fn range_header() -> impl Strategy<Value = Vec<u8>> {
    let unit = prop_oneof![
        4 => Just("bytes".to_owned()),
        1 => Just("Bytes".to_owned()),
        1 => Just(" bytes ".to_owned()),
        1 => "[a-z]{0,6}",
    ];
    let spec = (
        position(),
        prop_oneof![Just("-"), Just("--"), Just(""), Just(" - ")],
        position(),
    )
        .prop_map(|(a, dash, b)| format!("{a}{dash}{b}"));
    let specs = prop::collection::vec(spec, 0..4);
    let sep = prop_oneof![Just(","), Just(", "), Just(" ,,")];
    prop_oneof![
        8 => (unit, prop_oneof![Just("="), Just(" = "), Just("")], specs, sep)
            .prop_map(|(u, eq, s, sep)| format!("{u}{eq}{}", s.join(sep)).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn total() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1), 0u64..4_096, any::<u64>(), Just(u64::MAX)]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn a_satisfiable_range_lies_inside_the_file(header in range_header(), total in total()) {
        match evaluate(&header, total) {
            RangeRequest::Partial(r) => {
                prop_assert!(r.first <= r.last && r.last < total, "{:?} of {}", r, total);
                prop_assert_eq!(r.len(), r.last - r.first + 1);
                prop_assert!(!r.is_empty());
                let half = r.to_range();
                prop_assert_eq!((half.start, half.end - half.start), (r.first, r.len()));
                prop_assert_eq!(r.content_range(total), format!("bytes {}-{}/{}", r.first, r.last, total));
            }
            // An empty file has no satisfiable range: whatever is asked is
            // either ignored or refused.
            RangeRequest::Full | RangeRequest::Unsatisfiable => {}
        }
    }

    #[test]
    fn well_formed_ranges_mean_what_they_say(first in 0u64..10_000, len in 0u64..10_000, total in 0u64..20_000) {
        let last = first + len;
        let header = format!("bytes={first}-{last}");
        let expected = if first >= total {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Partial(ByteRange { first, last: last.min(total - 1) })
        };
        prop_assert_eq!(evaluate(header.as_bytes(), total), expected);
        // Reversed bounds are not a range: the header is ignored.
        if len > 0 {
            prop_assert_eq!(evaluate(format!("bytes={last}-{first}").as_bytes(), total), RangeRequest::Full);
        }
        // The suffix form.
        let suffix = evaluate(format!("bytes=-{len}").as_bytes(), total);
        if len == 0 || total == 0 {
            prop_assert_eq!(suffix, RangeRequest::Unsatisfiable);
        } else {
            prop_assert_eq!(suffix, RangeRequest::Partial(ByteRange { first: total.saturating_sub(len), last: total - 1 }));
        }
        // Several ranges are never honoured.
        prop_assert_eq!(evaluate(format!("bytes=0-0,{first}-{last}").as_bytes(), total), RangeRequest::Full);
    }
}

// --------------------------------------------------------- conditionals

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn validators(secs: i64) -> Validators {
    Validators::new(SHA.to_owned(), Utc.timestamp_opt(secs, 0).single().unwrap())
}

fn headers(pairs: &[(HeaderName, Vec<u8>)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            h.append(name.clone(), v);
        }
    }
    h
}

/// An entity tag: ours, another, weak or strong, or something broken.
fn etag() -> impl Strategy<Value = String> {
    let opaque = prop_oneof![
        Just(SHA.to_owned()),
        "[0-9a-f]{0,64}",
        "[!#-~]{0,10}",
        "[\"\\\\ ,a]{0,4}",
    ];
    (
        prop_oneof![Just(""), Just("W/"), Just("w/")],
        opaque,
        prop_oneof![
            4 => Just("\""),
            1 => Just(""),
        ],
    )
        .prop_map(|(w, o, q)| format!("{w}\"{o}{q}"))
}

/// A list of entity tags with the separators a client might use, `*`, or
/// bytes.
fn etag_list() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (prop::collection::vec(etag(), 0..4), prop_oneof![Just(","), Just(", "), Just(" , ,"), Just(" "), Just("")])
            .prop_map(|(tags, sep)| tags.join(sep).into_bytes()),
        1 => Just(b"*".to_vec()),
        1 => Just(b" * ".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

/// An HTTP date (any of the three formats) or something that is not one.
fn date(around: i64) -> impl Strategy<Value = Vec<u8>> {
    let fmt = move |delta: i64| DateTime::<Utc>::from_timestamp(around.saturating_add(delta).max(0), 0).unwrap();
    prop_oneof![
        (-100_000i64..100_000).prop_map(move |d| fmt(d).format("%a, %d %b %Y %H:%M:%S GMT").to_string().into_bytes()),
        (-100_000i64..100_000).prop_map(move |d| fmt(d).format("%A, %d-%b-%y %H:%M:%S GMT").to_string().into_bytes()),
        (-100_000i64..100_000).prop_map(move |d| fmt(d).format("%a %b %e %H:%M:%S %Y").to_string().into_bytes()),
        "[A-Za-z]{3}, [0-9]{1,3} [A-Za-z]{3} [0-9]{1,5} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2} [A-Z]{0,3}"
            .prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..40),
    ]
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn conditional_headers_never_panic(
        secs in 0i64..4_000_000_000,
        inm in prop::collection::vec(etag_list(), 0..3),
        ims in prop::collection::vec(date(1_700_000_000), 0..3),
        ir in prop::collection::vec(prop_oneof![etag_list(), date(1_700_000_000)], 0..3),
    ) {
        let v = validators(secs);
        let mut pairs = Vec::new();
        pairs.extend(inm.into_iter().map(|x| (header::IF_NONE_MATCH, x)));
        pairs.extend(ims.into_iter().map(|x| (header::IF_MODIFIED_SINCE, x)));
        pairs.extend(ir.into_iter().map(|x| (header::IF_RANGE, x)));
        let h = headers(&pairs);
        let _ = v.not_modified(&h);
        let _ = v.if_range_allows(&h);
    }

    #[test]
    fn our_tag_in_any_list_is_not_modified(
        others in prop::collection::vec("[0-9a-f]{1,64}", 0..4),
        at in 0usize..5,
        weak in prop::bool::ANY,
        sep in prop_oneof![Just(","), Just(", "), Just(" ,\t, ")],
    ) {
        let v = validators(1_700_000_000);
        let mut tags: Vec<String> = others.iter().filter(|o| o.as_str() != SHA).map(|o| format!("\"{o}\"")).collect();
        let none_of_ours = headers(&[(header::IF_NONE_MATCH, tags.join(sep).into_bytes())]);
        // A list without our tag (or no list at all): modified.
        prop_assert!(!v.not_modified(&none_of_ours));
        let ours = format!("{}\"{SHA}\"", if weak { "W/" } else { "" });
        tags.insert(at.min(tags.len()), ours.clone());
        let with_ours = headers(&[(header::IF_NONE_MATCH, tags.join(sep).into_bytes())]);
        // If-None-Match compares weakly.
        prop_assert!(v.not_modified(&with_ours));
        // If-Range compares strongly, and takes a single tag.
        let if_range = headers(&[(header::IF_RANGE, ours.into_bytes())]);
        prop_assert_eq!(v.if_range_allows(&if_range), !weak);
    }

    #[test]
    fn dates_compare_by_the_second(secs in 0i64..4_000_000_000, delta in -100_000i64..100_000) {
        let v = validators(secs);
        let when = (secs + delta).max(0);
        let text = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(when as u64));
        let ims = headers(&[(header::IF_MODIFIED_SINCE, text.clone().into_bytes())]);
        prop_assert_eq!(v.not_modified(&ims), when >= secs);
        let ir = headers(&[(header::IF_RANGE, text.into_bytes())]);
        prop_assert_eq!(v.if_range_allows(&ir), when >= secs);
        // Our own validators always pass.
        let own = headers(&[
            (header::IF_MODIFIED_SINCE, v.last_modified().as_bytes().to_vec()),
        ]);
        prop_assert!(v.not_modified(&own));
        let own = headers(&[(header::IF_RANGE, v.etag().as_bytes().to_vec())]);
        prop_assert!(v.if_range_allows(&own));
        let own = headers(&[(header::IF_RANGE, v.last_modified().as_bytes().to_vec())]);
        prop_assert!(v.if_range_allows(&own));
    }
}

// ------------------------------------------------- Content-Disposition

/// File names as users send them: anything, hostile ASCII, long names with
/// extensions.
fn file_name() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        "[\"\\\\;%=\\r\\n\\t '*a-z.]{0,30}",
        "[a-zя😀 ]{200,300}\\.[a-z0-9]{1,20}",
        "\\.[a-z]{250,270}",
        "[ \t]{0,5}",
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn content_disposition_is_a_safe_header(name in file_name(), inline in prop::bool::ANY) {
        let d = if inline { Disposition::Inline } else { Disposition::Attachment };
        let value = format_content_disposition(d, &name);
        prop_assert!(HeaderValue::from_str(&value).is_ok(), "{:?}", value);
        let header = content_disposition(d, &name);
        prop_assert_eq!(header.to_str().unwrap(), value.as_str());
        let prefix = if inline { "inline; filename=\"" } else { "attachment; filename=\"" };
        let rest = value.strip_prefix(prefix).expect("starts with the disposition");
        let (fallback, star) = rest.split_once("\"; filename*=UTF-8''").expect("two parameters");
        // The quoted name cannot end early or escape.
        prop_assert!(!fallback.contains(['"', '\\']), "{:?}", fallback);
        prop_assert!(fallback.bytes().all(|b| (b' '..=b'~').contains(&b)));
        prop_assert!(!star.contains([';', '"', ' ', '\'']));
        let decoded = percent_decode_str(star).decode_utf8().expect("UTF-8");
        prop_assert!(decoded.len() <= MAX_NAME_BYTES && !decoded.trim().is_empty());
        if name.len() <= MAX_NAME_BYTES && !name.trim().is_empty() {
            prop_assert_eq!(decoded.as_ref(), name.as_str());
        }
        prop_assert_eq!(ascii_fallback(&decoded), fallback);
    }

    #[test]
    fn rfc5987_round_trips(name in ".{0,80}") {
        let enc = rfc5987_encode(&name);
        let decoded = percent_decode_str(&enc).decode_utf8().unwrap();
        prop_assert_eq!(decoded.as_ref(), name.as_str());
    }

    #[test]
    fn served_types_never_run_in_the_browser(mime in prop_oneof![
        ".{0,40}",
        "[a-zA-Z+*./; =-]{0,30}",
        "(text|image|application|video|multipart|TEXT)/(html|svg\\+xml|plain|pdf|png|x-javascript|XHTML\\+XML|xsl)(;.{0,10})?",
    ]) {
        let served = classify(&mime);
        prop_assert!(HeaderValue::from_str(&served.content_type).is_ok());
        // Nothing a browser would run or render as a document: no
        // multipart type, no subtype naming HTML, XML, script, XSL or Flash.
        let essence = served.content_type.split(';').next().unwrap().to_ascii_lowercase();
        let (ty, sub) = essence.split_once('/').expect("type/subtype");
        prop_assert_ne!(ty, "multipart", "{:?}", mime);
        for active in ["html", "xml", "script", "xsl", "flash"] {
            prop_assert!(!sub.contains(active), "{:?} served as {:?}", mime, essence);
        }
        if served.content_type != "application/octet-stream" {
            let essence = served.content_type.split(';').next().unwrap();
            prop_assert_eq!(essence, essence.to_ascii_lowercase());
            prop_assert!(essence.split_once('/').is_some());
        }
        prop_assert_eq!(served.is_pdf, served.content_type == "application/pdf");
        // The same type in another case is served the same way.
        prop_assert_eq!(classify(&mime.to_ascii_uppercase()), classify(&mime.to_ascii_lowercase()));
    }
}

/// Found by the `disposition` fuzz target, whose first check was wrong:
/// only the `multipart` type itself is refused, not a type that merely
/// contains the word.
#[test]
fn a_type_containing_multipart_is_not_multipart() {
    assert_eq!(classify("immultipart/ede;T").content_type, "immultipart/ede");
    assert_eq!(classify("Multipart/form-data").content_type, "application/octet-stream");
}
