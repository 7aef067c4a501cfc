//! If-None-Match and If-Modified-Since.

use crate::common::{Env, http_date, url};
use chrono::Duration;
use http::StatusCode;

#[tokio::test]
async fn if_none_match_answers_304() {
    let env = Env::new().await;
    let c = env.add(b"hello").await;
    let u = url(&c);
    let etag = format!("\"{}\"", c.file.sha256.to_hex());

    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        "*".to_owned(),
        format!("\"other\", {etag}"),
    ] {
        let r = env.get(&u, &[("if-none-match", &inm)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{inm}");
        assert_eq!(r.header("etag"), etag);
        assert_eq!(r.header("last-modified"), http_date(c.file.created_at));
        assert!(r.headers.get("cache-control").is_some());
        assert!(r.body.is_empty());
        // HEAD is conditional too.
        let r = env.head(&u, &[("if-none-match", &inm)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{inm}");
    }

    let r = env.get(&u, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"hello");

    // If-None-Match wins over If-Modified-Since, even when the date says
    // unchanged.
    let now = http_date(chrono::Utc::now() + Duration::hours(1));
    let r = env
        .get(&u, &[("if-none-match", "\"other\""), ("if-modified-since", &now)])
        .await;
    assert_eq!(r.status, StatusCode::OK);

    // Precondition before range.
    let r = env.get(&u, &[("if-none-match", &etag), ("range", "bytes=0-1")]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn if_modified_since_answers_304_when_unchanged() {
    let env = Env::new().await;
    let c = env.add(b"hello").await;
    let u = url(&c);
    let created = c.file.created_at;

    for (ims, not_modified) in [
        (http_date(created), true),
        (http_date(created + Duration::days(1)), true),
        (http_date(created - Duration::seconds(2)), false),
        ("not a date".to_owned(), false),
    ] {
        let r = env.get(&u, &[("if-modified-since", &ims)]).await;
        let expected = if not_modified {
            StatusCode::NOT_MODIFIED
        } else {
            StatusCode::OK
        };
        assert_eq!(r.status, expected, "{ims}");
    }
}
