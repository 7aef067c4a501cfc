//! `/metrics`: answers by status and bytes served move by exactly what
//! the requests did.

use crate::common::{Env, content, url};
use http::StatusCode;
use teledrop_catalog::Catalog;
use teledrop_core::LinkToken;

/// The value of one sample line (`series` is the name with its labels).
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

fn code(c: u16) -> String {
    format!("teledrop_links_download_responses_total{{code=\"{c}\"}}")
}

const BYTES: &str = "teledrop_links_served_bytes_total";

async fn scrape(env: &Env) -> String {
    let r = env.admin_get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), teledrop_metrics::CONTENT_TYPE);
    r.text()
}

#[tokio::test]
async fn downloads_are_counted_by_status_with_the_bytes_sent() {
    let env = Env::new().await;
    let bytes = content(10_000);
    let c = env.add(&bytes).await;
    let gone = env.add(b"deleted").await;
    env.catalog.delete_file(gone.file.id).await.unwrap();
    let before = scrape(&env).await;
    for c in [200, 206, 304, 404, 410, 416] {
        assert_eq!(sample(&before, &code(c)), 0, "{c}");
    }
    assert_eq!(sample(&before, BYTES), 0);

    let full = env.get(&url(&c), &[]).await;
    assert_eq!((full.status, full.body.len()), (StatusCode::OK, 10_000));
    let etag = full.header("etag").to_owned();
    let part = env.get(&url(&c), &[("range", "bytes=100-149")]).await;
    assert_eq!((part.status, part.body.len()), (StatusCode::PARTIAL_CONTENT, 50));
    let head = env.head(&url(&c), &[]).await;
    assert_eq!((head.status, head.body.len()), (StatusCode::OK, 0));
    let cached = env.get(&url(&c), &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    let beyond = env.get(&url(&c), &[("range", "bytes=20000-")]).await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    for missing in [
        "/download/not-a-token".to_owned(),
        format!("/download/{}", LinkToken::generate()),
    ] {
        assert_eq!(env.get(&missing, &[]).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(env.get(&url(&gone), &[]).await.status, StatusCode::GONE);
    // Not downloads: neither probes nor scrapes count.
    assert_eq!(env.admin_get("/healthz").await.status, StatusCode::OK);
    scrape(&env).await;

    let after = scrape(&env).await;
    let moved = |c: u16| sample(&after, &code(c)) - sample(&before, &code(c));
    assert_eq!(
        [200, 206, 304, 404, 410, 416].map(moved),
        [2, 1, 1, 2, 1, 1],
        "200 206 304 404 410 416 in\n{after}"
    );
    assert_eq!(sample(&after, BYTES) - sample(&before, BYTES), 10_050);
    let downloads: u64 = after
        .lines()
        .filter(|l| l.starts_with("teledrop_links_download_responses_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(downloads, 8, "only the eight download requests counted:\n{after}");
}
