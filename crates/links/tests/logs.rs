//! What reaches the logs. A test binary of its own: a scoped subscriber
//! (`set_default`) races with other tests' threads registering the same
//! callsites, which can cache them as disabled and drop the span.

#[path = "links/common.rs"]
#[allow(dead_code)]
mod common;

use common::{Env, url};
use http::StatusCode;
use std::io::Write;
use std::sync::{Arc, Mutex};
use teledrop_catalog::Catalog;
use teledrop_core::LinkToken;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_carry_a_token_prefix_at_most() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let env = Env::new().await;
    let served = env.add(b"x").await;
    let deleted = env.add(b"y").await;
    env.catalog.delete_file(deleted.file.id).await.unwrap();
    env.storage.delete(&served.file.object_key).await.unwrap();
    let unknown = LinkToken::generate();

    assert_eq!(env.get(&url(&served), &[]).await.status, StatusCode::GONE);
    assert_eq!(env.get(&url(&deleted), &[]).await.status, StatusCode::GONE);
    assert_eq!(
        env.get(&format!("/download/{unknown}"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let malformed = format!("{}Z", unknown.to_string().to_uppercase());
    assert_eq!(
        env.get(&format!("/download/{malformed}"), &[]).await.status,
        StatusCode::NOT_FOUND
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("link_request"), "{logs}");
    assert!(logs.contains("object is missing"), "{logs}");
    for token in [served.link.token, deleted.link.token, unknown] {
        let full = token.to_string();
        assert!(!logs.contains(&full), "full token in logs:\n{logs}");
        // Nothing past the 8-character prefix either.
        assert!(!logs.contains(&full[..9]), "more than a prefix in logs:\n{logs}");
        assert!(logs.contains(&full[..8]), "{logs}");
    }
    assert!(!logs.contains(&malformed[..9]), "{logs}");
}
