//! How long a file takes from its update to its link, end to end through
//! the distributed roles, one file at a time (no queueing): a new 1 MB
//! file, and the same file sent again by someone else (linked without a
//! download).
//!
//!     bash scripts/bench.sh --bench e2e_latency
//!     bash scripts/bench.sh --bench e2e_latency -- 50 1000000
//!         # samples, bytes per file
//!
//! tg-sim (cloud mode, HTTP downloads) pushes each update to the real
//! `teledrop ingress`, which publishes it to JetStream; one real `teledrop
//! worker` pulls it, downloads from the simulator, writes a folder store,
//! commits to Postgres (`TEST_DATABASE_URL`) and edits its status message
//! into the reply. The clock starts when the update is injected (tg-sim
//! pushes it at once) and stops when the simulator holds the reply with
//! the link (a server-side wait, no polling).

mod common;

use common::{ms, percentile};

use std::path::Path;
use std::time::{Duration, Instant};
use teledrop_testkit::nats::NatsServer;
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{FileSpec, Sim, SimClient, SimConfig};

const SECRET: &str = "bench_webhook-Secret";
const BIN: &str = env!("CARGO_BIN_EXE_teledrop");
const START: Duration = Duration::from_secs(60);

/// Sends `spec` and waits for its link; the time it took.
async fn until_link(ctl: &SimClient, spec: FileSpec) -> Duration {
    let user = spec.user;
    let started = Instant::now();
    ctl.send_file(spec).await.unwrap();
    ctl.wait_for(user, START, |l| l.visible().any(|m| m.text.contains("/download/")))
        .await
        .unwrap();
    started.elapsed()
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what}: {} samples: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 90.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap()),
    );
}

#[tokio::main]
async fn main() {
    let args = common::numeric_args();
    let samples = args.first().copied().unwrap_or(50).max(1);
    let size = args.get(1).copied().unwrap_or(1_000_000);

    let nats = NatsServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let suffix = teledrop_testkit::unique_suffix();
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", teledrop_testkit::postgres::fresh_database().await),
        ("NATS_URL", nats.url()),
        ("TELEDROP_NATS_STREAM", format!("LATENCY_{suffix}")),
        ("TELEDROP_NATS_PREFIX", format!("latency{suffix}")),
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEDROP_PUBLIC_URL", "http://127.0.0.1:9".into()),
        ("TELEDROP_WEBHOOK_SECRET", SECRET.into()),
        ("TELEDROP_STORAGE_URL", dir.path().join("objects").display().to_string()),
        ("RUST_LOG", "warn".into()),
    ];
    let bin = Path::new(BIN);
    let (ingress_port, worker_port) = (free_port(), free_port());
    Proc::run("migrate", bin, &["migrate"], &env, dir.path(), START).await;
    let mut ingress = Proc::start_ready("ingress", bin, &["ingress"], &env, ingress_port, dir.path(), START).await;
    let mut worker = Proc::start_ready("worker", bin, &["worker"], &env, worker_port, dir.path(), START).await;
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

    let ctl = sim.control();
    // Warm-up: connections, pools, the stream.
    for n in 0..5 {
        until_link(&ctl, FileSpec::document(1_000 + n, size, 1_000 + n as u64)).await;
    }
    let mut fresh = Vec::new();
    let mut repeated = Vec::new();
    for n in 0..samples as i64 {
        let spec = FileSpec::document(1 + n, size, n as u64);
        fresh.push(until_link(&ctl, spec.clone()).await);
        let again = FileSpec {
            user: 100_000 + n,
            ..spec
        };
        repeated.push(until_link(&ctl, again).await);
    }
    report(&format!("new file of {size} B, update → link"), fresh);
    report("same file from another user (no download), update → link", repeated);

    for p in [&mut worker, &mut ingress] {
        p.terminate(START).await;
    }
    sim.shutdown().await;
}
