//! Byte ranges and If-Range.

use crate::common::{Env, content, http_date, url};
use chrono::Duration;
use http::StatusCode;

#[tokio::test]
async fn single_ranges_are_answered_206() {
    let env = Env::new().await;
    let bytes = content(1000);
    let c = env.add(&bytes).await;
    let u = url(&c);

    for (range, first, last) in [
        ("bytes=0-0", 0, 0),          // first byte
        ("bytes=100-199", 100, 199),  // middle
        ("bytes=-100", 900, 999),     // suffix
        ("bytes=990-", 990, 999),     // open-ended
        ("bytes=999-999", 999, 999),  // last byte
        ("bytes=500-5000", 500, 999), // past the end: cut
        ("bytes=-5000", 0, 999),      // suffix longer than the file
    ] {
        let r = env.get(&u, &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.header("content-range"),
            format!("bytes {first}-{last}/1000"),
            "{range}"
        );
        assert_eq!(r.header("content-length"), (last - first + 1).to_string(), "{range}");
        assert!(r.body == bytes[first..=last], "{range}: wrong bytes");
        assert_eq!(r.header("etag"), format!("\"{}\"", c.file.sha256.to_hex()));
        assert_eq!(r.header("accept-ranges"), "bytes");
    }
}

#[tokio::test]
async fn ranges_inside_large_files() {
    let env = Env::new().await;
    let bytes = content(1_000_000);
    let c = env.add(&bytes).await;
    let r = env.get(&url(&c), &[("range", "bytes=262140-600000")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert!(r.body == bytes[262_140..=600_000]);
}

#[tokio::test]
async fn unsatisfiable_ranges_are_answered_416() {
    let env = Env::new().await;
    let c = env.add(&content(1000)).await;
    for range in ["bytes=1000-", "bytes=1000-2000", "bytes=-0", "bytes=5000-6000"] {
        let r = env.get(&url(&c), &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(r.header("content-range"), "bytes */1000", "{range}");
    }
    let empty = env.add(b"").await;
    let r = env.get(&url(&empty), &[("range", "bytes=0-")]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), "bytes */0");
}

#[tokio::test]
async fn multiple_or_malformed_ranges_get_the_whole_file() {
    let env = Env::new().await;
    let bytes = content(1000);
    let c = env.add(&bytes).await;
    for range in [
        "bytes=0-1,5-6",
        "bytes=0-1, 10-",
        "bytes=abc",
        "bytes=5-1",
        "bytes=--5",
        "lines=1-2",
        "bytes 0-10",
        "bytes=",
    ] {
        let r = env.get(&url(&c), &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::OK, "{range}");
        assert!(r.headers.get("content-range").is_none(), "{range}");
        assert!(r.body == bytes, "{range}");
    }
}

#[tokio::test]
async fn head_ignores_range() {
    let env = Env::new().await;
    let c = env.add(&content(1000)).await;
    let r = env.head(&url(&c), &[("range", "bytes=0-9")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), "1000");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn if_range_honours_the_range_only_for_the_same_file() {
    let env = Env::new().await;
    let bytes = content(1000);
    let c = env.add(&bytes).await;
    let u = url(&c);
    let etag = format!("\"{}\"", c.file.sha256.to_hex());
    let weak = format!("W/{etag}");
    let modified = http_date(c.file.created_at);
    let later = http_date(c.file.created_at + Duration::hours(1));
    let earlier = http_date(c.file.created_at - Duration::hours(1));

    for (if_range, partial) in [
        (etag.as_str(), true),
        (modified.as_str(), true),
        (later.as_str(), true),
        (weak.as_str(), false),
        ("\"0000\"", false),
        (earlier.as_str(), false),
        ("not a validator", false),
    ] {
        let r = env.get(&u, &[("range", "bytes=10-19"), ("if-range", if_range)]).await;
        if partial {
            assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{if_range}");
            assert!(r.body == bytes[10..20]);
        } else {
            assert_eq!(r.status, StatusCode::OK, "{if_range}");
            assert!(r.body == bytes);
        }
    }
}
