//! Ingest against its physical limit, and peak memory at any size.
//!
//!     bash scripts/bench.sh --bench ingest_rss
//!     bash scripts/bench.sh --bench ingest_rss -- 200MiB 2GiB   # sizes of your choice
//!     ROUNDS=9 bash scripts/bench.sh --bench ingest_rss
//!
//! Local mode (the Bot API server's file on disk), for each size, `ROUNDS`
//! rounds (default 5), each of them back to back:
//! - **teledrop:** one real `teledrop standalone` stores the file the
//!   simulated `telegram-bot-api --local` wrote. Its time is the worker's
//!   own `download` step (open the file → stored under its final name,
//!   hashed), read from `/metrics`, so the simulator writing the file is
//!   not counted. Send → link is printed beside it.
//! - **reference:** `cp` of the same file into the same filesystem, then
//!   `openssl dgst -sha256` of it (SHA-NI where the CPU has it): what a
//!   checksummed copy costs at the least. Like teledrop's, its source was
//!   written just before (an untimed copy), and each side starts after a
//!   `sync`: at 1 GiB the kernel throttles writers to the disk's pace once
//!   dirty pages pile up, so both sides must start from the same state.
//!
//! The median of the per-round ratios is reported; the target is ≤ 1.25×.
//! Peak RSS (`VmHWM`) of the standalone process over all rounds is
//! printed per size (target ≤ 64 MiB). Cloud mode (≤ 20 MB) reports its
//! send → link time and RSS.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};
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
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    for &size in &sizes {
        let mut stand = Standalone::start(true).await;
        let mut rounds_of = common::Rounds::time("local ingest", "s");
        let mut wall = Vec::new();
        for round in 0..rounds {
            // Each side starts with no dirty pages of the other's waiting
            // to be written back: a copy of 1 GiB into a page cache still
            // holding gigabytes of dirty pages is throttled to the disk's
            // pace, and which side met that would decide the ratio.
            sync();
            let (took, send_to_link) = stand.ingest(size, round as u64).await;
            let src = newest_file(&stand.sim.config().local_dir);
            // Only the bytes of this round stay on disk.
            std::fs::remove_file(newest_file(&stand.dir.path().join("objects"))).unwrap();
            sync();
            // The same start for the reference: a source that was just
            // written, its pages still dirty, as the Bot API server's file
            // is when teledrop reads it.
            let fresh = stand.dir.path().join("fresh.bin");
            std::fs::copy(&src, &fresh).unwrap();
            std::fs::remove_file(&src).unwrap();
            let reference = copy_and_hash(&fresh, &stand.dir.path().join("copy.bin"));
            std::fs::remove_file(&fresh).unwrap();
            rounds_of.push(took, reference);
            wall.push(send_to_link);
        }
        wall.sort_by(f64::total_cmp);
        println!("size {}", ByteSize::from_bytes(size));
        rounds_of.print("cp+sha256");
        println!(
            "  send → link median {:.2} s; peak RSS {:.1} MiB",
            common::median(&wall),
            stand.peak_rss_mib()
        );
        stand.stop().await;
    }
    // The cloud API caps downloads at 20 MB.
    for &size in sizes.iter().filter(|&&s| s <= 20 * 1024 * 1024) {
        let mut stand = Standalone::start(false).await;
        let (_, secs) = stand.ingest(size, 1).await;
        println!(
            "cloud {}: send → link {secs:.2} s; peak RSS {:.1} MiB",
            ByteSize::from_bytes(size),
            stand.peak_rss_mib()
        );
        stand.stop().await;
    }
}

/// The most recently modified file beneath `root`.
fn newest_file(root: &Path) -> PathBuf {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if newest.as_ref().is_none_or(|(t, _)| meta.modified().unwrap() > *t) {
                newest = Some((meta.modified().unwrap(), entry.path()));
            }
        }
    }
    newest.unwrap_or_else(|| panic!("no file beneath {}", root.display())).1
}

/// Writes every dirty page back (`sync`).
fn sync() {
    assert!(Command::new("sync").status().expect("sync runs").success());
}

/// Seconds `cp` and then `openssl dgst -sha256` take over `src`.
fn copy_and_hash(src: &Path, dst: &Path) -> f64 {
    let started = Instant::now();
    let cp = Command::new("cp").arg(src).arg(dst).status().expect("cp runs");
    assert!(cp.success());
    let sha = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .arg(src)
        .output()
        .expect("openssl runs");
    assert!(sha.status.success());
    let took = started.elapsed().as_secs_f64();
    std::fs::remove_file(dst).unwrap();
    took
}

struct Standalone {
    sim: Sim,
    dir: tempfile::TempDir,
    proc: Proc,
    user: i64,
}

impl Standalone {
    async fn start(local_mode: bool) -> Standalone {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(
            SimConfig {
                local_mode,
                local_dir: dir.path().join("bot-api"),
                // Measure teledrop, not a paced Bot API server: the
                // simulator writes the file as fast as it can.
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
            ("TELEGRAM_LOCAL_MODE", local_mode.to_string()),
            ("TELEGRAM_LOCAL_DIR", sim.config().local_dir.display().to_string()),
            ("TELEDROP_PUBLIC_URL", format!("http://127.0.0.1:{port}")),
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
        Standalone {
            sim,
            dir,
            proc,
            user: 7,
        }
    }

    /// Sends one file and waits for its link: the worker's `download` step
    /// in seconds, and send → link.
    async fn ingest(&mut self, size: u64, seed: u64) -> (f64, f64) {
        let before = self.download_seconds().await;
        let ctl = self.sim.control();
        // A user of its own per file: each wait sees only its link.
        self.user += 1;
        let user = self.user;
        let started = Instant::now();
        ctl.send_file(FileSpec::document(user, size, seed)).await.unwrap();
        ctl.wait_for(user, Duration::from_secs(600), |l| {
            l.visible().any(|m| m.text.contains("/download/"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.proc.log_text()));
        let wall = started.elapsed().as_secs_f64();
        (self.download_seconds().await - before, wall)
    }

    /// `teledrop_worker_step_duration_seconds_sum{step="download"}`.
    async fn download_seconds(&self) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.proc.admin_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("teledrop_worker_step_duration_seconds_sum{step=\"download\"} "))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    fn peak_rss_mib(&self) -> f64 {
        self.proc.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
    }

    async fn stop(mut self) {
        self.proc.terminate(Duration::from_secs(30)).await;
        self.sim.shutdown().await;
    }
}
