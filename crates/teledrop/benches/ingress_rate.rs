//! How many webhook updates one `teledrop ingress` accepts (published to
//! JetStream and acknowledged by it before the 200), and its latency at a
//! fixed offered load.
//!
//!     bash scripts/bench.sh --bench ingress_rate
//!     bash scripts/bench.sh --bench ingress_rate -- 5000 64 1000 10 5
//!         # updates per throughput round, its concurrency, offered rate/s,
//!         # seconds at that rate, rounds
//!
//! Runs the real binary (release) against a nats-server of its own.
//! Throughput: `concurrency` clients post distinct updates back to back,
//! round after round, each round followed by the reference: a plain
//! JetStream publisher (async-nats, one connection, `concurrency` publishes
//! in flight, each awaiting its ack) sending the same bodies with their
//! `Nats-Msg-Id` into the same stream the ingress set up. The median of the
//! per-round ratios is printed (target ≥ 0.7×).
//! Latency: an open-loop schedule (request i is sent at t0 + i/rate
//! whether or not earlier ones have answered), so a stall shows up in the
//! percentiles instead of slowing the sender down.

mod common;

use common::{ms, percentile};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use teledrop_testkit::nats::NatsServer;
use teledrop_testkit::process::{Proc, free_port};

const SECRET: &str = "bench_webhook-Secret";

fn update(id: i64) -> String {
    update_with(
        &id.to_string(),
        &(100_000 + id % 1000).to_string(),
        &(1000 + id).to_string(),
    )
}

/// An update's JSON with `id`, `chat` and `size` written in as given (so
/// that `%d` makes it a format template for wrk's Lua).
fn update_with(id: &str, chat: &str, size: &str) -> String {
    format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"date":1763769600,"chat":{{"id":{chat},"type":"private","first_name":"Bench"}},"from":{{"id":{chat},"is_bot":false,"first_name":"Bench"}},"document":{{"file_id":"BQACAgIAAxkBAAI{id}","file_unique_id":"AgAD{id}","file_name":"report-{id}.pdf","mime_type":"application/pdf","file_size":{size}}}}}}}"#
    )
}

struct Poster {
    client: reqwest::Client,
    url: String,
    next_id: AtomicI64,
}

impl Poster {
    /// Posts one new update; the latency, or what went wrong.
    async fn post(&self) -> Result<Duration, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let resp = self
            .client
            .post(&self.url)
            .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
            .header("Content-Type", "application/json")
            .body(update(id))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            200 => Ok(started.elapsed()),
            s => Err(format!("status {s}")),
        }
    }
}

#[tokio::main]
async fn main() {
    let args = common::numeric_args();
    let arg = |i: usize, default: u64| args.get(i).copied().unwrap_or(default);
    let (total, concurrency, rate, seconds) = (arg(0, 5_000), arg(1, 64), arg(2, 1000), arg(3, 10));
    let rounds = arg(4, 5);

    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let env = vec![
        ("NATS_URL", nats.url()),
        ("TELEDROP_WEBHOOK_SECRET", SECRET.to_owned()),
        ("TELEDROP_LISTEN", format!("127.0.0.1:{port}")),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let mut ingress = Proc::spawn(
        "ingress",
        Path::new(env!("CARGO_BIN_EXE_teledrop")),
        &["ingress"],
        &env,
        dir.path(),
    );
    let readyz = format!("{}/readyz", ingress.admin_url());
    ingress.wait_http_ok(&readyz, Duration::from_secs(30)).await;
    let poster = Arc::new(Poster {
        client: reqwest::Client::builder().pool_max_idle_per_host(1024).build().unwrap(),
        url: format!("http://127.0.0.1:{port}/telegram/webhook"),
        next_id: AtomicI64::new(1),
    });
    // Warm up connections and the stream.
    for _ in 0..200 {
        poster.post().await.expect("warm-up update accepted");
    }

    // Throughput, closed loop, against the plain publisher. wrk posts the
    // updates: a load generator in this process would take as much CPU
    // as the ingress it loads, on the same 2 cores.
    let script = dir.path().join("updates.lua");
    std::fs::write(&script, wrk_script()).unwrap();
    let publisher = Publisher::connect(&nats.url()).await;
    let mut compared = common::Rounds::rate("ingress throughput", "upd/s");
    for round in 0..rounds {
        let ours = wrk_post(&poster.url, &script, concurrency, round + 1);
        let reference = closed_loop(total, concurrency, {
            let publisher = publisher.clone();
            move || {
                let publisher = publisher.clone();
                async move { publisher.publish().await }
            }
        })
        .await;
        compared.push(ours, reference);
    }
    compared.print("publisher");

    // Latency at a fixed offered rate, open loop.
    let n = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = tokio::time::Instant::now();
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until(t0 + interval * i as u32).await;
        let poster = poster.clone();
        sent.spawn(async move { poster.post().await });
    }
    let mut latencies = Vec::with_capacity(n as usize);
    let mut failed = 0;
    while let Some(r) = sent.join_next().await {
        match r.unwrap() {
            Ok(d) => latencies.push(d),
            Err(_) => failed += 1,
        }
    }
    latencies.sort();
    println!(
        "latency at {rate}/s for {seconds} s ({n} updates, {failed} not accepted): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    println!(
        "ingress peak RSS: {:.1} MiB",
        ingress.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    );
    ingress.terminate(Duration::from_secs(30)).await;
}

/// Seconds of wrk load per round.
const WRK_SECONDS: u32 = 5;

/// A wrk script posting distinct updates (ids from `base` × 10^9 on, a
/// range per wrk thread), as `update` writes them.
fn wrk_script() -> String {
    let template = update_with("%d", "%d", "%d");
    format!(
        r#"local counter = 0
function setup(thread)
  thread:set("first", counter)
  counter = counter + 1
end
function init(args)
  id = (tonumber(args[1]) * 1000 + first) * 1000000
end
function request()
  id = id + 1
  local chat = 100000 + id % 1000
  local body = string.format('{template}', id, id, chat, chat, id, id, id, 1000 + id)
  return wrk.format("POST", nil, {{["X-Telegram-Bot-Api-Secret-Token"] = "{SECRET}", ["Content-Type"] = "application/json"}}, body)
end
"#
    )
}

/// Updates per second wrk gets accepted, posting with `script`; panics on
/// any answer but 200.
fn wrk_post(url: &str, script: &Path, conns: u64, base: u64) -> f64 {
    let out = std::process::Command::new("wrk")
        .args([
            format!("-t{}", conns.min(2)),
            format!("-c{conns}"),
            format!("-d{WRK_SECONDS}s"),
        ])
        .arg("-s")
        .arg(script)
        .arg(url)
        .args(["--", &base.to_string()])
        .output()
        .expect("wrk runs (scripts/bench.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    if let Some(e) = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
    {
        panic!("wrk saw errors: {e}\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

/// Updates per second that `concurrency` tasks reach sending `total`
/// between them, each waiting for its answer before the next; a failure
/// panics (the comparison would mean nothing).
async fn closed_loop<F, Fut>(total: u64, concurrency: u64, send: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let started = Instant::now();
    let remaining = Arc::new(AtomicI64::new(total as i64));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (send, remaining) = (send.clone(), remaining.clone());
        tasks.spawn(async move {
            while remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                assert!(send().await, "an update was not accepted");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// The reference: what publishing straight to JetStream costs.
#[derive(Clone)]
struct Publisher {
    js: async_nats::jetstream::Context,
    next_id: Arc<AtomicI64>,
}

impl Publisher {
    async fn connect(url: &str) -> Publisher {
        let client = async_nats::connect(url).await.unwrap();
        Publisher {
            js: async_nats::jetstream::new(client),
            // Far from the ingress's ids: the stream's duplicate window
            // would otherwise drop them.
            next_id: Arc::new(AtomicI64::new(1 << 40)),
        }
    }

    async fn publish(&self) -> bool {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.to_string());
        let body = bytes::Bytes::from(update(id));
        match self.js.publish_with_headers("teledrop.updates", headers, body).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    }
}
