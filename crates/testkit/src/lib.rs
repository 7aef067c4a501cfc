//! Test helpers shared by the workspace's test suites.
//!
//! The throwaway servers (Postgres, NATS, an S3-compatible store) are
//! started once per test run by `scripts/test.sh`, which exports their
//! addresses; each test then takes an isolated database or bucket of its
//! own from them, so tests run in parallel without seeing each other.

pub mod nats;
pub mod postgres;
pub mod process;
pub mod s3;
pub mod tls;

/// Reads a variable that `scripts/test.sh` exports, with a message that
/// says how to get it when it is missing.
pub fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the tests through scripts/test.sh (see README), \
             which starts throwaway Postgres, NATS and S3-compatible servers and exports their URLs"
        ),
    }
}

/// A short random suffix for database, bucket and subject names.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Asks `probe` every 50 ms until it answers `Some`, for state that has no
/// change notification (an S3 listing, a server's health, a simulator's
/// records); `None` once `deadline` has passed without an answer.
pub async fn poll_until<T, F, Fut>(deadline: std::time::Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        tick.tick().await;
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
    }
}
