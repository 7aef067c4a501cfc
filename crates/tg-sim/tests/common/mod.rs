//! Helpers shared by the integration tests: each test starts its own
//! simulator on a free loopback port.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use teloxide::Bot;
use tg_sim::{Sim, SimConfig};

/// Upper bound for any single wait in these tests.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub async fn start(config: SimConfig) -> Sim {
    Sim::start(config, "127.0.0.1:0".parse().expect("loopback address"))
        .await
        .expect("start tg-sim")
}

pub async fn sim() -> Sim {
    start(SimConfig::default()).await
}

/// A teloxide bot pointed at the simulator.
pub fn bot(sim: &Sim) -> Bot {
    Bot::new(sim.token()).set_api_url(sim.base_url())
}

/// A plain HTTP client (no proxy) for raw requests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("reqwest client")
}

/// `<base>/bot<token>/<method>`.
pub fn method_url(sim: &Sim, method: &str) -> String {
    format!("{}bot{}/{method}", sim.base_url(), sim.token())
}

/// `<base>/file/bot<token>/<path>` with the path as given.
pub fn file_url(sim: &Sim, path: &str) -> String {
    format!("{}file/bot{}/{path}", sim.base_url(), sim.token())
}

/// Re-evaluates `cond` until it yields `Some`, or panics after `DEADLINE`
/// with `what`. For state only observable by asking (no change feed).
pub async fn eventually<T, F, Fut>(what: &str, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
