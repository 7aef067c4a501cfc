//! Peak memory of `teledrop standalone` while ingesting one file, for
//! several sizes, in Bot API local mode (the file is read from disk) and
//! cloud mode (streamed over HTTP from tg-sim).
//!
//!     cargo bench -p teledrop --bench ingest_rss
//!     cargo bench -p teledrop --bench ingest_rss -- 10MiB 1GiB   # sizes of your choice
//!
//! Prints one line per run: mode, size, seconds from send to link, and the
//! process's peak RSS (VmHWM). DESIGN §11 targets ≤ 64 MiB at any size.

use std::path::Path;
use std::time::{Duration, Instant};
use teledrop_core::ByteSize;
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{FileSpec, Sim, SimConfig};

#[tokio::main]
async fn main() {
    let mut sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .filter_map(|a| a.parse::<ByteSize>().ok().map(|s| s.bytes()))
        .collect();
    if sizes.is_empty() {
        sizes = vec![10 << 20, 1 << 30];
    }
    println!(
        "{:<7} {:>10} {:>9} {:>10} {:>12}",
        "mode", "size", "seconds", "MiB/s", "peak RSS"
    );
    for &size in &sizes {
        run(true, size).await;
    }
    // The cloud API caps downloads at 20 MB.
    for &size in sizes.iter().filter(|&&s| s <= 20 * 1024 * 1024) {
        run(false, size).await;
    }
}

async fn run(local_mode: bool, size: u64) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        SimConfig {
            local_mode,
            local_dir: dir.path().join("bot-api"),
            // Measure teledrop, not a paced Bot API server: the simulator
            // writes the file as fast as it can.
            local_fetch_rate: None,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let env = vec![
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEGRAM_LOCAL_MODE", local_mode.to_string()),
        ("TELEGRAM_LOCAL_DIR", sim.config().local_dir.display().to_string()),
        ("TELEDROP_PUBLIC_URL", public.clone()),
        ("TELEDROP_LISTEN", format!("127.0.0.1:{port}")),
        ("DATABASE_URL", format!("sqlite://{}/td.db", dir.path().display())),
        ("TELEDROP_STORAGE_URL", dir.path().join("objects").display().to_string()),
    ];
    let mut proc = Proc::spawn(
        "bench",
        Path::new(env!("CARGO_BIN_EXE_teledrop")),
        &["standalone"],
        &env,
        dir.path(),
    );
    let healthz = format!("{}/healthz", proc.admin_url());
    proc.wait_http_ok(&healthz, Duration::from_secs(30)).await;
    let ctl = sim.control();
    let start = Instant::now();
    ctl.send_file(FileSpec::document(7, size, 1)).await.unwrap();
    ctl.wait_for(7, Duration::from_secs(600), |l| {
        l.visible().any(|m| m.text.contains("/download/"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_text()));
    let secs = start.elapsed().as_secs_f64();
    let rss = proc.peak_rss_kib().unwrap_or(0);
    println!(
        "{:<7} {:>10} {:>9.2} {:>10.1} {:>8.1} MiB",
        if local_mode { "local" } else { "cloud" },
        ByteSize::from_bytes(size).to_string(),
        secs,
        size as f64 / 1048576.0 / secs,
        rss as f64 / 1024.0
    );
    proc.terminate(Duration::from_secs(30)).await;
    sim.shutdown().await;
}
