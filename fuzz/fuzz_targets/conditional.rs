//! `If-None-Match`, `If-Modified-Since` and `If-Range` values: never a
//! panic; our own validators always match. The input is up to three header
//! values separated by newlines (which no header value holds), each tried
//! in every conditional header.
#![no_main]

use chrono::{TimeZone, Utc};
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use teledrop_links::conditional::Validators;

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fuzz_target!(|data: &[u8]| {
    let values: Vec<HeaderValue> = data
        .split(|&b| b == b'\n')
        .take(3)
        .filter_map(|v| HeaderValue::from_bytes(v).ok())
        .collect();
    for secs in [0, 784_111_777, 1_700_000_000] {
        let v = Validators::new(SHA.to_owned(), Utc.timestamp_opt(secs, 0).unwrap());
        for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_RANGE] {
            let mut headers = HeaderMap::new();
            for value in &values {
                headers.append(name.clone(), value.clone());
                let _ = v.not_modified(&headers);
                let _ = v.if_range_allows(&headers);
            }
        }
        let mut all = HeaderMap::new();
        for (value, name) in values
            .iter()
            .zip([header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE, header::IF_RANGE])
        {
            all.append(name, value.clone());
        }
        let _ = v.not_modified(&all);
        let _ = v.if_range_allows(&all);
        // Our own tag and date are always honoured.
        for (name, value) in [
            (header::IF_NONE_MATCH, v.etag()),
            (header::IF_MODIFIED_SINCE, v.last_modified()),
            (header::IF_RANGE, v.etag()),
            (header::IF_RANGE, v.last_modified()),
        ] {
            let mut own = HeaderMap::new();
            own.insert(name.clone(), value);
            if name == header::IF_RANGE {
                assert!(v.if_range_allows(&own));
            } else {
                assert!(v.not_modified(&own));
            }
        }
    }
});
