//! How many webhook updates one `teledrop ingress` accepts (published to
//! JetStream and acknowledged by it before the 200), and its latency at a
//! fixed offered load.
//!
//!     bash scripts/bench.sh --bench ingress_rate
//!     bash scripts/bench.sh --bench ingress_rate -- 20000 64 1000 10
//!         # updates for the throughput run, its concurrency, offered rate/s, seconds at that rate
//!
//! Runs the real binary (release) against a nats-server of its own.
//! Throughput: `concurrency` clients post distinct updates back to back.
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
    let chat = 100_000 + id % 1000;
    format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"date":1763769600,"chat":{{"id":{chat},"type":"private","first_name":"Bench"}},"from":{{"id":{chat},"is_bot":false,"first_name":"Bench"}},"document":{{"file_id":"BQACAgIAAxkBAAI{id}","file_unique_id":"AgAD{id}","file_name":"report-{id}.pdf","mime_type":"application/pdf","file_size":{size}}}}}}}"#,
        size = 1000 + id
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
    let (total, concurrency, rate, seconds) = (arg(0, 20_000), arg(1, 64), arg(2, 1000), arg(3, 10));

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

    // Throughput, closed loop.
    let started = Instant::now();
    let remaining = Arc::new(AtomicI64::new(total as i64));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (poster, remaining) = (poster.clone(), remaining.clone());
        clients.spawn(async move {
            let mut failures = 0u64;
            while remaining.fetch_sub(1, Ordering::Relaxed) > 0 {
                if poster.post().await.is_err() {
                    failures += 1;
                }
            }
            failures
        });
    }
    let mut failures = 0;
    while let Some(f) = clients.join_next().await {
        failures += f.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "throughput: {total} updates, {concurrency} concurrent: {:.0} updates/s accepted ({failures} not accepted)",
        (total - failures) as f64 / secs
    );

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
