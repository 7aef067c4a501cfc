//! Whole files: bytes, headers, content types, dispositions.

use crate::common::{Env, content, http_date, url};
use http::StatusCode;
use teledrop_core::NewLink;
use teledrop_links::LinksConfig;

const SANDBOX_CSP: &str = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox";

#[tokio::test]
async fn get_streams_the_exact_bytes_with_every_header() {
    let env = Env::new().await;
    // Several read chunks of the local store (256 KiB) and an odd tail.
    let bytes = content(700_001);
    let c = env
        .add_file("report.bin", "application/zip", &bytes, NewLink::unlimited())
        .await;

    let r = env.get(&url(&c), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == bytes, "body differs from the stored bytes");
    assert_eq!(r.header("content-length"), "700001");
    assert_eq!(r.header("content-type"), "application/zip");
    assert_eq!(r.header("etag"), format!("\"{}\"", c.file.sha256.to_hex()));
    assert_eq!(r.header("last-modified"), http_date(c.file.created_at));
    assert_eq!(r.header("accept-ranges"), "bytes");
    assert_eq!(r.header("x-content-type-options"), "nosniff");
    assert_eq!(r.header("cache-control"), "private, max-age=300");
    assert_eq!(r.header("content-security-policy"), SANDBOX_CSP);
    assert_eq!(r.header("referrer-policy"), "no-referrer");
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=\"report.bin\"; filename*=UTF-8''report.bin"
    );
    assert!(r.headers.get("content-range").is_none());
}

#[tokio::test]
async fn empty_files_are_served() {
    let env = Env::new().await;
    let c = env.add(b"").await;
    let r = env.get(&url(&c), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), "0");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn head_has_the_headers_of_get_and_no_body() {
    let env = Env::new().await;
    let bytes = content(12_345);
    let c = env.add_file("a.mp4", "video/mp4", &bytes, NewLink::unlimited()).await;

    let head = env.head(&url(&c), &[]).await;
    let get = env.get(&url(&c), &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), "12345");
    let mut head_headers: Vec<_> = head.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    let mut get_headers: Vec<_> = get.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
    head_headers.sort();
    get_headers.sort();
    assert_eq!(head_headers, get_headers);
}

#[tokio::test]
async fn content_disposition_for_hostile_names() {
    let env = Env::new().await;
    let cases = [
        (
            "evil\"; filename=\"x.html",
            "attachment; filename=\"evil_; filename=_x.html\"; filename*=UTF-8''evil%22%3B%20filename%3D%22x.html",
        ),
        (
            "a\r\nSet-Cookie: s=1.txt",
            "attachment; filename=\"a__Set-Cookie: s=1.txt\"; filename*=UTF-8''a%0D%0ASet-Cookie%3A%20s%3D1.txt",
        ),
        (
            "back\\slash.txt",
            "attachment; filename=\"back_slash.txt\"; filename*=UTF-8''back%5Cslash.txt",
        ),
        (
            "100% done;.txt",
            "attachment; filename=\"100_ done;.txt\"; filename*=UTF-8''100%25%20done%3B.txt",
        ),
        (
            "отчёт 2026.pdf",
            "attachment; filename=\"_____ 2026.pdf\"; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82%202026.pdf",
        ),
        (
            "🎉.zip",
            "attachment; filename=\"_.zip\"; filename*=UTF-8''%F0%9F%8E%89.zip",
        ),
    ];
    for (name, expected) in cases {
        let c = env
            .add_file(name, "application/octet-stream", b"x", NewLink::unlimited())
            .await;
        let r = env.get(&url(&c), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{name:?}");
        assert_eq!(r.header("content-disposition"), expected, "{name:?}");
    }

    // A name longer than any file system allows is cut, extension kept.
    let long = format!("{}.txt", "ж".repeat(300));
    let c = env.add_file(&long, "text/plain", b"x", NewLink::unlimited()).await;
    let r = env.get(&url(&c), &[]).await;
    let value = r.header("content-disposition");
    assert!(value.starts_with("attachment; filename=\"___"));
    let star = value.split("filename*=UTF-8''").nth(1).unwrap();
    let decoded = percent_encoding::percent_decode_str(star).decode_utf8().unwrap();
    assert!(decoded.len() <= 255 && decoded.ends_with("ж.txt"), "{decoded}");
}

#[tokio::test]
async fn inline_only_for_passive_types() {
    let env = Env::new().await;
    let png = env
        .add_file("p.png", "image/png", b"\x89PNG", NewLink::unlimited())
        .await;
    let r = env.get(&format!("{}?inline", url(&png)), &[]).await;
    assert_eq!(r.header("content-type"), "image/png");
    assert_eq!(
        r.header("content-disposition"),
        "inline; filename=\"p.png\"; filename*=UTF-8''p.png"
    );
    assert_eq!(r.header("content-security-policy"), SANDBOX_CSP);
    // Without the flag it is an attachment.
    let r = env.get(&url(&png), &[]).await;
    assert!(r.header("content-disposition").starts_with("attachment;"));
    assert_eq!(r.header("content-type"), "image/png");

    for (name, mime) in [
        ("x.html", "text/html"),
        ("x.svg", "image/svg+xml"),
        ("x.xhtml", "application/xhtml+xml"),
        ("x.xml", "text/xml"),
        ("x.js", "application/javascript"),
        ("x", "not a mime type"),
    ] {
        let c = env
            .add_file(name, mime, b"<script>alert(1)</script>", NewLink::unlimited())
            .await;
        let r = env.get(&format!("{}?inline", url(&c)), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), "application/octet-stream", "{mime}");
        assert!(r.header("content-disposition").starts_with("attachment;"), "{mime}");
        assert_eq!(r.header("content-security-policy"), SANDBOX_CSP);
        assert_eq!(r.header("x-content-type-options"), "nosniff");
    }

    let txt = env
        .add_file("t.txt", "text/plain", "héllo".as_bytes(), NewLink::unlimited())
        .await;
    let r = env.get(&format!("{}?inline=1", url(&txt)), &[]).await;
    assert_eq!(r.header("content-type"), "text/plain; charset=utf-8");
    assert!(r.header("content-disposition").starts_with("inline;"));

    // PDF viewers do not run sandboxed: an inline PDF has no CSP, an
    // attached one keeps it.
    let pdf = env
        .add_file("d.pdf", "application/pdf", b"%PDF-1.7", NewLink::unlimited())
        .await;
    let r = env.get(&format!("{}?inline", url(&pdf)), &[]).await;
    assert!(r.header("content-disposition").starts_with("inline;"));
    assert!(r.headers.get("content-security-policy").is_none());
    let r = env.get(&url(&pdf), &[]).await;
    assert_eq!(r.header("content-security-policy"), SANDBOX_CSP);

    // Non-previewable types stay attachments.
    let zip = env
        .add_file("z.zip", "application/zip", b"PK", NewLink::unlimited())
        .await;
    let r = env.get(&format!("{}?inline", url(&zip)), &[]).await;
    assert!(r.header("content-disposition").starts_with("attachment;"));
    assert_eq!(r.header("content-type"), "application/zip");
}

#[tokio::test]
async fn inline_preview_can_be_switched_off() {
    let env = Env::with_config(LinksConfig {
        inline_preview: false,
        ..LinksConfig::default()
    })
    .await;
    let png = env
        .add_file("p.png", "image/png", b"\x89PNG", NewLink::unlimited())
        .await;
    let r = env.get(&format!("{}?inline", url(&png)), &[]).await;
    assert!(r.header("content-disposition").starts_with("attachment;"));
}

#[tokio::test]
async fn cache_lifetime_never_outlives_the_link() {
    let env = Env::new().await;
    let link = NewLink {
        token: teledrop_core::LinkToken::generate(),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::seconds(100)),
        max_downloads: None,
    };
    let c = env.add_file("a", "text/plain", b"x", link).await;
    let r = env.get(&url(&c), &[]).await;
    let max_age: i64 = r
        .header("cache-control")
        .strip_prefix("private, max-age=")
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&max_age), "{max_age}");
}
