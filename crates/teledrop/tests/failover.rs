//! A worker killed with SIGKILL while it streams a 300 MiB file: JetStream
//! hands the update to another worker once `ack_wait` passes without a
//! keepalive, that worker takes the job over, aborts the dead worker's
//! multipart upload and completes the file. The user sees one message, the
//! catalog one file, the bucket one object and no unfinished upload.
//!
//! tg-sim pushing webhooks → `teledrop ingress` → NATS JetStream →
//! `teledrop worker` (first A, then B) → moto S3 + Postgres → `teledrop
//! links`; every role is the real binary in its own process.
//!
//! The kill has to land mid-transfer on any machine. The Bot API runs in
//! local mode (300 MiB is over the cloud API's 20 MB), so the worker reads
//! the file from disk, faster than a test could catch. The sink is held
//! instead: worker A reaches S3 through [`Gate`], which passes on only the
//! first few MiB a client sends. A's multipart upload is created and its
//! first parts start, then its uploads stall, the bounded upload buffer
//! stops the reading, and the transfer cannot finish however long it waits.
//! The test kills A once the status message shows progress and S3 shows the
//! upload. Worker B reaches S3 directly.

use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use teledrop_catalog::{Catalog, FileFilter, PgCatalog};
use teledrop_core::{JobState, ObjectKey, UpdateId, UserId};
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{FileSpec, Sim, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

use common::{START, links, run_to_end, set_webhook, start_role};

const SECRET: &str = "failover_webhook-Secret";
const MIB: u64 = 1 << 20;
const SIZE: u64 = 300 * MIB;
const USER: i64 = 7;
/// Bytes worker A may send to S3: the readiness probe, the request that
/// creates the multipart upload and a little over two of its 5 MiB parts.
const GATE_BUDGET: u64 = 12 * MIB;

/// A TCP relay to the S3 server that forwards what clients send only up to
/// a byte budget shared by all connections, then stops reading from them
/// (answers still flow back). Requests that fit go through; the rest hang.
struct Gate {
    endpoint: String,
    relay: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start(upstream: &str, budget: u64) -> Gate {
        let upstream = url::Url::parse(upstream).unwrap();
        let upstream = format!(
            "{}:{}",
            upstream.host_str().unwrap(),
            upstream.port_or_known_default().unwrap()
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let budget = Arc::new(AtomicU64::new(budget));
        let relay = tokio::spawn(async move {
            // Dropped (and so aborted) with the relay task.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(relay(client, upstream.clone(), budget.clone()));
                while connections.try_join_next().is_some() {}
            }
        });
        Gate { endpoint, relay }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Takes up to `want` bytes from the budget; what it returns may be sent.
fn take(budget: &AtomicU64, want: u64) -> u64 {
    let before = budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            Some(left.saturating_sub(want))
        })
        .unwrap();
    before.min(want)
}

async fn relay(client: TcpStream, upstream: String, budget: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let answers = tokio::io::copy(&mut server_rx, &mut client_tx);
    let requests = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let granted = take(&budget, buf.len() as u64);
            if granted == 0 {
                // Out of budget: hold the connection, reading nothing more.
                std::future::pending::<()>().await;
            }
            let n = match client_rx.read(&mut buf[..granted as usize]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            budget.fetch_add(granted - n as u64, Ordering::SeqCst);
            if server_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = answers => {}
        () = requests => {}
    }
}

/// The worker's progress edit: "⏳ Receiving file: 8% (25.0 MiB of 300 MiB)".
fn shows_progress(text: &str) -> bool {
    text.contains("Receiving") && text.contains('%')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_stream_is_replaced_without_a_trace() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        SimConfig {
            webhook_backoff_cap: Duration::from_millis(500),
            webhook_first_retry: Duration::from_millis(50),
            local_mode: true,
            local_dir: dir.path().join("bot-api"),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let database_url = teledrop_testkit::postgres::fresh_database().await;
    let bucket = teledrop_testkit::s3::fresh_bucket().await;
    let gate = Gate::start(&bucket.endpoint, GATE_BUDGET).await;
    let suffix = teledrop_testkit::unique_suffix();
    let links_port = free_port();
    let ingress_port = free_port();
    let public_url = format!("http://127.0.0.1:{links_port}");

    let mut common: Vec<(&str, String)> = vec![
        ("DATABASE_URL", database_url.clone()),
        ("NATS_URL", teledrop_testkit::require_env("TEST_NATS_URL")),
        ("TELEDROP_NATS_STREAM", format!("FAILOVER_{suffix}")),
        ("TELEDROP_NATS_PREFIX", format!("failover{suffix}")),
        // A dead worker's delivery goes to another after 3 s.
        ("TELEDROP_NATS_ACK_WAIT", "3s".into()),
        ("TELEDROP_PROGRESS_INTERVAL", "20ms".into()),
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEGRAM_LOCAL_MODE", "true".into()),
        ("TELEGRAM_LOCAL_DIR", sim.config().local_dir.display().to_string()),
        ("TELEDROP_PUBLIC_URL", public_url.clone()),
        ("TELEDROP_WEBHOOK_SECRET", SECRET.into()),
    ];
    common.extend(bucket.env());
    let mut through_gate = common.clone();
    through_gate.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    through_gate.push(("AWS_ENDPOINT_URL", gate.endpoint.clone()));

    run_to_end(&common, &["migrate"], dir.path()).await;
    let mut links_proc = start_role("links", "links", &common, links_port, dir.path()).await;
    let mut ingress = start_role("ingress", "ingress", &common, ingress_port, dir.path()).await;
    let mut worker_a = start_role("worker-a", "worker", &through_gate, free_port(), dir.path()).await;
    set_webhook(&common, ingress_port, dir.path()).await;

    let ctl = sim.control();
    let sent = ctl.send_file(FileSpec::document(USER, SIZE, 42)).await.unwrap();
    let fail = |what: &str, procs: &[&Proc]| -> String {
        let logs: String = procs.iter().map(|p| p.log_text()).collect();
        format!("{what}\n{logs}")
    };

    // Mid-stream: the status message shows progress, and S3 holds A's
    // multipart upload, under the job's key prefix.
    let log = ctl
        .wait_for(USER, START, |l| l.visible().any(|m| shows_progress(&m.text)))
        .await
        .unwrap_or_else(|e| panic!("{}", fail(&e.to_string(), &[&worker_a, &ingress])));
    let status_message = log.visible().next().unwrap().message_id;
    let catalog = PgCatalog::connect(&database_url).await.unwrap();
    let job = catalog
        .job_by_update(UpdateId(sent.update_id))
        .await
        .unwrap()
        .expect("the job");
    assert_eq!(job.state, JobState::Running);
    let job_prefix = ObjectKey::job_upload_prefix(job.id);
    let abandoned = teledrop_testkit::poll_until(START, || async {
        let uploads = bucket.in_progress_multipart_uploads().await;
        (!uploads.is_empty()).then_some(uploads)
    })
    .await
    .unwrap_or_else(|| panic!("{}", fail("no multipart upload on S3", &[&worker_a])));
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert!(
        abandoned[0].starts_with(&job_prefix),
        "{abandoned:?} not under {job_prefix}"
    );
    worker_a.kill9().await;
    assert!(bucket.objects().await.is_empty(), "the gate let a whole file through");

    let mut worker_b = start_role("worker-b", "worker", &common, free_port(), dir.path()).await;
    let log = ctl
        .wait_for(USER, Duration::from_secs(600), |l| !links(l).is_empty())
        .await
        .unwrap_or_else(|e| panic!("{}", fail(&e.to_string(), &[&worker_a, &worker_b])));
    let done = began.elapsed();

    // One message: the status message, edited from progress to the link.
    assert_eq!(log.messages.len(), 1, "the bot sent one message: {log:#?}");
    let reply = &log.messages[0];
    assert_eq!(reply.message_id, status_message);
    assert!(!reply.deleted);
    assert!(reply.history.iter().any(|t| shows_progress(t)), "{reply:#?}");
    let urls = links(&log);
    assert_eq!(urls.len(), 1, "{log:#?}");

    // The link serves exactly what was sent, hashed as it streams in.
    let want = ctl.file_info(&sent.file_unique_id).await.unwrap().sha256;
    if !sent.sha256.is_empty() {
        assert_eq!(sent.sha256, want);
    }
    let mut resp = reqwest::get(&urls[0]).await.unwrap();
    assert_eq!(resp.status(), 200, "{}", urls[0]);
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(received, SIZE);
    assert_eq!(hex::encode(hasher.finalize()), want, "the link serves what was sent");

    // One file row, exact usage, and a job that shows the takeover.
    let usage = catalog.usage(UserId(USER)).await.unwrap();
    assert_eq!((usage.files, usage.bytes), (1, SIZE));
    let owned = FileFilter {
        owners: vec![UserId(USER)],
        ..FileFilter::default()
    };
    let files = catalog.live_files(&owned, None, 10).await.unwrap();
    assert_eq!(files.len(), 1, "{files:#?}");
    let job = catalog.job(job.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Stored);
    assert_eq!(job.file_id, Some(files[0].id));
    assert_eq!(job.attempts, 2, "one attempt per worker");
    let events = catalog.job_events(job.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.from == Some(JobState::Running) && e.to == JobState::Pending && e.note.contains("taken over")),
        "{events:#?}"
    );

    // In the bucket: the committed blob and nothing else, no unfinished
    // upload. B's upload went to a key of its own under the job's prefix.
    let key = files[0].object_key.to_string();
    assert_eq!(bucket.objects().await, vec![(key.clone(), SIZE)]);
    assert!(key.starts_with(&job_prefix) && key != abandoned[0], "{key}");
    assert_eq!(bucket.in_progress_multipart_uploads().await, Vec::<String>::new());
    assert!(
        worker_b
            .log_text()
            .contains("aborted uploads an earlier attempt left behind"),
        "{}",
        worker_b.log_text()
    );

    let token = sim.token().to_owned();
    for p in [&mut worker_b, &mut ingress, &mut links_proc] {
        let status = p.terminate(START).await;
        assert!(status.success(), "{status}\n{}", p.log_text());
    }
    for p in [&worker_a, &worker_b, &ingress, &links_proc] {
        assert!(!p.log_text().contains(&token), "token leaked into a log");
    }
    eprintln!("failover: link after {done:?}, test done after {:?}", began.elapsed());
    drop(gate);
}
