//! The real `teledrop standalone` under a slowloris attack: 500
//! connections trickle one header byte a second while a real 100 MiB
//! download runs. The download completes with the right bytes, and every
//! trickling connection is closed at the header deadline.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{FileSpec, Sim, SimConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[allow(dead_code)] // the end-to-end helpers; this test uses a few
mod common;

use common::{BIN, START, links};

const TRICKLERS: usize = 500;
const HEADER_TIMEOUT_SECS: u64 = 5;

/// Connects and sends one byte of a never-ending request head per second
/// until the server closes the connection. Returns whether it was closed.
async fn trickle(addr: String, connected: Arc<AtomicUsize>) -> bool {
    let Ok(mut tcp) = tokio::net::TcpStream::connect(&addr).await else {
        return false;
    };
    connected.fetch_add(1, Ordering::SeqCst);
    let head = b"GET /download/0123456789abcdef HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut pace = tokio::time::interval(Duration::from_secs(1));
    let mut buf = [0u8; 256];
    for byte in head.iter().cycle() {
        tokio::select! {
            _ = pace.tick() => {
                if tcp.write_all(&[*byte]).await.is_err() {
                    return true;
                }
            }
            r = tcp.read(&mut buf) => match r {
                // EOF, an answer (408/400) or a reset: the server let go.
                Ok(_) | Err(_) => return true,
            },
        }
    }
    unreachable!("the head cycles forever")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_headers_neither_block_a_download_nor_stay_open() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        SimConfig {
            local_mode: true,
            local_dir: dir.path().join("bot-api"),
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
        ("TELEGRAM_LOCAL_MODE", "true".to_owned()),
        ("TELEGRAM_LOCAL_DIR", sim.config().local_dir.display().to_string()),
        ("TELEDROP_PUBLIC_URL", public.clone()),
        ("TELEDROP_LISTEN", format!("127.0.0.1:{port}")),
        (
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("teledrop.db").display()),
        ),
        ("TELEDROP_STORAGE_URL", dir.path().join("objects").display().to_string()),
        ("TELEDROP_HTTP_HEADER_TIMEOUT", format!("{HEADER_TIMEOUT_SECS}s")),
    ];
    let mut teledrop = Proc::spawn("standalone", Path::new(BIN), &["standalone"], &env, dir.path());
    let healthz = format!("{}/healthz", teledrop.admin_url());
    teledrop.wait_http_ok(&healthz, START).await;

    let sent = sim
        .control()
        .send_file(FileSpec::document(5, 100 << 20, 9))
        .await
        .unwrap();
    let log = sim
        .control()
        .wait_for(5, Duration::from_secs(120), |l| !links(l).is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", teledrop.log_text()));
    let link = links(&log).remove(0);

    // The attack: every trickler connected before the download starts.
    let connected = Arc::new(AtomicUsize::new(0));
    let attack: Vec<_> = (0..TRICKLERS)
        .map(|_| tokio::spawn(trickle(format!("127.0.0.1:{port}"), connected.clone())))
        .collect();
    let all_in = teledrop_testkit::poll_until(Duration::from_secs(60), || {
        let n = connected.load(Ordering::SeqCst);
        async move { (n == TRICKLERS).then_some(()) }
    })
    .await;
    assert!(
        all_in.is_some(),
        "{} of {TRICKLERS} connected",
        connected.load(Ordering::SeqCst)
    );

    let mut resp = reqwest::get(&link).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        hasher.update(chunk);
    }
    assert_eq!(bytes, 100 << 20);
    let want = sim.control().file_info(&sent.file_unique_id).await.unwrap().sha256;
    assert_eq!(hex::encode(hasher.finalize()), want, "the download is intact");

    // Without a header deadline they would trickle forever; the bound
    // here only keeps a broken server from hanging the test.
    let closed = tokio::time::timeout(Duration::from_secs(120), async {
        let mut closed = 0;
        for t in attack {
            closed += usize::from(t.await.unwrap());
        }
        closed
    })
    .await
    .expect("every slow connection is closed at the header deadline");
    assert_eq!(closed, TRICKLERS, "each trickler saw the server close");

    let status = teledrop.terminate(START).await;
    assert!(status.success(), "{status}\n{}", teledrop.log_text());
    sim.shutdown().await;
}
