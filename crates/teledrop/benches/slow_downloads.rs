//! Peak memory of the link server with many slow downloads at once.
//!
//!     bash scripts/bench.sh --bench slow_downloads
//!     bash scripts/bench.sh --bench slow_downloads -- 1000 64   # clients, MiB per file
//!
//! `teledrop standalone` stores one file (64 MiB by default); then 1,000
//! clients each request it over a connection of their own and read it
//! slowly (16 KiB every 100 ms) for 10 seconds, so that every response is
//! in flight at once and held back by its reader. The link server's peak
//! RSS (`VmHWM`) is printed against the target of 128 MiB, next to the
//! same process's peak before the clients came.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{FileSpec, Sim, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOLD: Duration = Duration::from_secs(10);
const SIP: usize = 16 * 1024;
const EVERY: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() {
    let args = common::numeric_args();
    let clients = args.first().copied().unwrap_or(1000) as usize;
    let mib = args.get(1).copied().unwrap_or(64);
    let dir = tempfile::tempdir().unwrap();
    // Local mode: a file of any size, read from disk.
    let sim = Sim::start(
        SimConfig {
            local_mode: true,
            local_dir: dir.path().join("bot-api"),
            local_fetch_rate: None,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let port = free_port();
    let env = vec![
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEGRAM_LOCAL_MODE", "true".to_owned()),
        ("TELEGRAM_LOCAL_DIR", sim.config().local_dir.display().to_string()),
        ("TELEDROP_PUBLIC_URL", format!("http://127.0.0.1:{port}")),
        ("TELEDROP_LISTEN", format!("127.0.0.1:{port}")),
        ("DATABASE_URL", format!("sqlite://{}/td.db", dir.path().display())),
        ("TELEDROP_STORAGE_URL", dir.path().join("objects").display().to_string()),
        ("RUST_LOG", "warn".to_owned()),
    ];
    let mut proc = Proc::spawn(
        "bench",
        Path::new(env!("CARGO_BIN_EXE_teledrop")),
        &["standalone"],
        &env,
        dir.path(),
    );
    proc.wait_http_ok(&format!("{}/healthz", proc.admin_url()), Duration::from_secs(30))
        .await;
    let ctl = sim.control();
    ctl.send_file(FileSpec::document(7, mib << 20, 1)).await.unwrap();
    let log = ctl
        .wait_for(7, Duration::from_secs(300), |l| {
            l.visible().any(|m| m.text.contains("/download/"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_text()));
    let link = log
        .visible()
        .flat_map(|m| m.text.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|w| w.contains("/download/"))
        .unwrap();
    let path = link.split_once(&format!("127.0.0.1:{port}")).unwrap().1.to_owned();
    let before = proc.peak_rss_kib().unwrap_or(0);

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let path = path.clone();
        tasks.spawn(async move { sip(port, &path).await });
    }
    let mut read = 0u64;
    while let Some(r) = tasks.join_next().await {
        read += r.unwrap();
    }
    let peak = proc.peak_rss_kib().unwrap_or(0);
    println!(
        "{clients} slow downloads of {mib} MiB for {:.0} s ({:.1} MiB read in all): link server peak RSS {:.1} MiB \
         (target ≤ 128 MiB; {:.1} MiB before the clients)",
        started.elapsed().as_secs_f64(),
        read as f64 / 1048576.0,
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
    );
    proc.terminate(Duration::from_secs(30)).await;
    sim.shutdown().await;
}

/// One slow reader: GET `path`, then `SIP` bytes every `EVERY` until
/// `HOLD` has passed; the bytes it read.
async fn sip(port: u16, path: &str) -> u64 {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let until = Instant::now() + HOLD;
    let mut buf = vec![0u8; SIP];
    let mut read = 0u64;
    while Instant::now() < until {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server ended the response early");
        read += n as u64;
        tokio::time::sleep(EVERY).await;
    }
    read
}
