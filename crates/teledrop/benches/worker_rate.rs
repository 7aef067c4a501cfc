//! Files per second through 1, 2 and 4 `teledrop worker`s, for small files.
//!
//!     bash scripts/bench.sh --bench worker_rate
//!     bash scripts/bench.sh --bench worker_rate -- 600 16384 1 3 6
//!         # files, bytes per file, then worker counts to try
//!     LATENCY_MS=50 bash scripts/bench.sh --bench worker_rate
//!         # every Bot API call and download answered 50 ms late, like
//!         # Telegram's: workers wait on I/O rather than CPU, so the curve
//!         # shows how they scale out, even on 2 cores
//!
//! Each run: tg-sim pushes `files` documents (from 30 users) through the
//! real `teledrop ingress` into a fresh JetStream stream while no worker
//! runs; then the workers start and the clock runs until every user has a
//! link for every file. Each file is fetched from the simulated Bot API
//! over HTTP, written to a folder store, committed to Postgres
//! (`TEST_DATABASE_URL`, as `scripts/bench.sh` provides) and answered by
//! editing the status message.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};
use teledrop_testkit::nats::NatsServer;
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{ChatLog, FileSpec, Sim, SimConfig};

const SECRET: &str = "bench_webhook-Secret";
const BIN: &str = env!("CARGO_BIN_EXE_teledrop");
/// Senders the files come from (`USERS`, default 30). tg-sim, like
/// Telegram, lets a bot send about one message per second into a chat, so
/// the users bound the rate: give the scale-out run more of them.
fn users() -> i64 {
    std::env::var("USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}
const START: Duration = Duration::from_secs(60);

fn links(log: &ChatLog) -> usize {
    log.visible().filter(|m| m.text.contains("/download/")).count()
}

#[tokio::main]
async fn main() {
    let args = common::numeric_args();
    let files = args.first().copied().unwrap_or(600);
    let size = args.get(1).copied().unwrap_or(16 * 1024);
    let mut worker_counts: Vec<u64> = args.iter().skip(2).copied().collect();
    if worker_counts.is_empty() {
        worker_counts = vec![1, 2, 4];
    }
    let latency = Duration::from_millis(
        std::env::var("LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let nats = NatsServer::start().await;
    // One worker against the minimal client with as many files in flight
    // (TELEDROP_WORKER_CONCURRENCY's default), round after round.
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let mut compared = common::Rounds::rate("small files, 1 worker", "files/s");
    for _ in 0..rounds {
        let ours = run(&nats, files, size, 1, latency).await;
        compared.push(ours, reference(files, size, latency).await);
    }
    compared.print("minimal client");

    let mut first: Option<f64> = None;
    for workers in worker_counts {
        let rate = run(&nats, files, size, workers as usize, latency).await;
        let base = *first.get_or_insert(rate / workers as f64);
        println!(
            "{workers} worker(s), Bot API latency {latency:?}: {rate:.1} files/s, {:.2}× one worker's rate per worker",
            rate / workers as f64 / base
        );
    }
}

/// Files per second the minimal client reaches (see `common::minimal`)
/// against a simulator and a database like the workers'.
async fn reference(files: u64, size: u64, latency: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim_with(latency).await;
    let ctl = sim.control();
    let mut sent = Vec::new();
    for n in 0..files {
        let user = (n as i64 % users()) + 1;
        sent.push((
            ctl.send_file(FileSpec::document(user, size, n)).await.unwrap().file_id,
            user,
        ));
    }
    let database = teledrop_testkit::postgres::fresh_database().await;
    let rate = common::minimal::run(
        &sim.base_url(),
        sim.token(),
        sent,
        4,
        &dir.path().join("objects"),
        &database,
    )
    .await;
    sim.shutdown().await;
    rate
}

async fn sim_with(latency: Duration) -> Sim {
    let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let faults = tg_sim::Faults {
        latency: [("*".to_owned(), latency), ("download".to_owned(), latency)].into(),
        ..Default::default()
    };
    sim.control().set_faults(faults).await.unwrap();
    sim
}

/// Files per second through `workers` workers.
async fn run(nats: &NatsServer, files: u64, size: u64, workers: usize, latency: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim_with(latency).await;
    let suffix = teledrop_testkit::unique_suffix();
    let ingress_port = free_port();
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", teledrop_testkit::postgres::fresh_database().await),
        ("NATS_URL", nats.url()),
        ("TELEDROP_NATS_STREAM", format!("BENCH_{suffix}")),
        ("TELEDROP_NATS_PREFIX", format!("bench{suffix}")),
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEDROP_PUBLIC_URL", "http://127.0.0.1:9".into()),
        ("TELEDROP_WEBHOOK_SECRET", SECRET.into()),
        ("TELEDROP_STORAGE_URL", dir.path().join("objects").display().to_string()),
        ("RUST_LOG", "warn".into()),
    ];
    let bin = Path::new(BIN);
    Proc::run("migrate", bin, &["migrate"], &env, dir.path(), START).await;
    let mut ingress = Proc::start_ready("ingress", bin, &["ingress"], &env, ingress_port, dir.path(), START).await;
    let url = format!("http://127.0.0.1:{ingress_port}");
    Proc::run(
        "webhook",
        bin,
        &["webhook", "set", "--url", &url],
        &env,
        dir.path(),
        START,
    )
    .await;

    // Queue every file while no worker runs.
    let ctl = sim.control();
    for n in 0..files {
        let user = (n as i64 % users()) + 1;
        ctl.send_file(FileSpec::document(user, size, n)).await.unwrap();
    }
    let accepted = teledrop_testkit::poll_until(START, || async {
        (ctl.status().await.unwrap().pending_updates == 0).then_some(())
    })
    .await;
    assert!(accepted.is_some(), "updates not accepted\n{}", ingress.log_text());

    let started = Instant::now();
    let mut procs = Vec::new();
    for i in 0..workers {
        // Each gets an admin port of its own from `Proc::spawn`.
        let p = Proc::spawn(&format!("worker{i}"), bin, &["worker"], &env, dir.path());
        procs.push(p);
    }
    for user in 1..=users().min(files as i64) {
        let want = (files as i64 - user) / users() + 1;
        ctl.wait_for(user, Duration::from_secs(600), |l| links(l) as i64 >= want)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", procs.iter().map(Proc::log_text).collect::<String>()));
    }
    let secs = started.elapsed().as_secs_f64();
    for p in procs.iter_mut().chain([&mut ingress]) {
        p.terminate(START).await;
    }
    sim.shutdown().await;
    files as f64 / secs
}
