//! End to end: the real `teledrop standalone` binary as a child process
//! against tg-sim, downloading every link over HTTP.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::{Catalog, SqliteCatalog};
use teledrop_core::{ErrorKind, JobState, UpdateId, UserId};
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{BotMessage, ChatLog, FileSpec, Sim, SimConfig};

const WAIT: Duration = Duration::from_secs(60);

struct Harness {
    sim: Sim,
    dir: tempfile::TempDir,
    port: u16,
    local_mode: bool,
}

impl Harness {
    async fn new(local_mode: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = SimConfig {
            local_mode,
            local_dir: dir.path().join("bot-api"),
            ..SimConfig::default()
        };
        let sim = Sim::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        Harness {
            sim,
            dir,
            port: free_port(),
            local_mode,
        }
    }

    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/teledrop.db")
    }

    async fn start(&self) -> Proc {
        let env = vec![
            ("TELEGRAM_BOT_TOKEN", self.sim.token().to_owned()),
            ("TELEGRAM_API_URL", self.sim.base_url().to_string()),
            ("TELEGRAM_LOCAL_MODE", self.local_mode.to_string()),
            ("TELEGRAM_LOCAL_DIR", self.sim.config().local_dir.display().to_string()),
            ("TELEDROP_PUBLIC_URL", self.public_url()),
            ("TELEDROP_LISTEN", format!("127.0.0.1:{}", self.port)),
            ("DATABASE_URL", format!("sqlite://{}", self.db_path().display())),
            (
                "TELEDROP_STORAGE_URL",
                self.dir.path().join("data/objects").display().to_string(),
            ),
            ("TELEDROP_PROGRESS_INTERVAL", "20ms".into()),
        ];
        let mut p = Proc::spawn(
            "standalone",
            Path::new(env!("CARGO_BIN_EXE_teledrop")),
            &["standalone"],
            &env,
            self.dir.path(),
        );
        let healthz = format!("{}/healthz", p.admin_url());
        p.wait_http_ok(&healthz, WAIT).await;
        p
    }

    async fn catalog(&self) -> Arc<dyn Catalog> {
        let c = SqliteCatalog::connect(&format!("sqlite://{}", self.db_path().display()))
            .await
            .unwrap();
        Arc::new(c)
    }
}

fn link_in(m: &BotMessage) -> Option<String> {
    let start = m.text.find("http://")?;
    let url: String = m.text[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    url.contains("/download/").then_some(url)
}

fn links(log: &ChatLog) -> Vec<String> {
    log.visible().filter_map(link_in).collect()
}

async fn fetch(url: &str, range: Option<&str>) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Probes and metrics answer on the admin listener only; the public one,
/// which still serves `link`, answers 404 for them, and the admin listener
/// serves no download.
async fn assert_admin_only_on_the_admin_listener(public: &str, admin: &str, link: &str) {
    for path in ["/healthz", "/readyz", "/metrics"] {
        let on_admin = reqwest::get(format!("{admin}{path}")).await.unwrap();
        assert_eq!(on_admin.status(), 200, "admin {path}");
        let on_public = reqwest::get(format!("{public}{path}")).await.unwrap();
        assert_eq!(on_public.status(), 404, "public {path}");
    }
    assert_eq!(fetch(link, None).await.0, 200, "the public listener serves downloads");
    let path = link.strip_prefix(public).expect("links name the public URL");
    let on_admin = reqwest::get(format!("{admin}{path}")).await.unwrap();
    assert_eq!(on_admin.status(), 404, "no download on the admin listener");
}

#[tokio::test]
async fn files_become_links_that_download_byte_identical() {
    let h = Harness::new(false).await;
    let mut proc = h.start().await;
    let ctl = h.sim.control();
    let user = 4242;

    ctl.send_text(user, "/start").await.unwrap();
    let log = ctl
        .wait_for(user, WAIT, |l| l.visible().any(|m| m.text.contains("download link")))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_text()));
    assert_eq!(log.visible().count(), 1, "one answer to /start");

    let doc = ctl
        .send_file(
            FileSpec::document(user, 5 * 1024 * 1024, 1)
                .named("report 2026.pdf")
                .with_mime("application/pdf"),
        )
        .await
        .unwrap();
    let photo = ctl.send_file(FileSpec::photo(user, 1024 * 1024, 2)).await.unwrap();
    let audio = ctl
        .send_file(FileSpec::audio(user, 300 * 1024, 3).named("song.mp3"))
        .await
        .unwrap();

    let log = ctl
        .wait_for(user, WAIT, |l| links(l).len() == 3)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_text()));
    let urls = links(&log);
    // Each final reply names its file and size.
    let texts: Vec<&str> = log.visible().map(|m| m.text.as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("report 2026.pdf") && t.contains("5.0 MiB")),
        "{texts:#?}"
    );
    assert!(texts.iter().any(|t| t.contains("song.mp3")), "{texts:#?}");

    let mut seen = Vec::new();
    for url in &urls {
        let (status, headers, body) = fetch(url, None).await;
        assert_eq!(status, 200, "{url}");
        assert_eq!(headers["content-length"].to_str().unwrap(), body.len().to_string());
        assert!(headers.contains_key("etag") && headers.contains_key("content-disposition"));
        seen.push(sha_hex(&body));
    }
    for sent in [&doc, &photo, &audio] {
        assert!(
            seen.contains(&sent.sha256),
            "no link serves {} ({} bytes)",
            sent.file_unique_id,
            sent.size
        );
    }

    // A ranged GET returns exactly the slice.
    let doc_url = log
        .visible()
        .find(|m| m.text.contains("report 2026.pdf"))
        .and_then(link_in)
        .unwrap();
    let (full_status, _, full) = fetch(&doc_url, None).await;
    assert_eq!(full_status, 200);
    let (status, headers, part) = fetch(&doc_url, Some("bytes=1000-1999")).await;
    assert_eq!(status, 206);
    assert_eq!(
        headers["content-range"].to_str().unwrap(),
        format!("bytes 1000-1999/{}", full.len())
    );
    assert_eq!(part, full[1000..2000]);

    // Usage is exact.
    let usage = h.catalog().await.usage(UserId(user)).await.unwrap();
    assert_eq!(usage.files, 3);
    assert_eq!(usage.bytes, doc.size + photo.size + audio.size);

    // One `/metrics` for the link server and the worker, counting exactly
    // the above: three uploads, five downloads (one of them ranged), on
    // the admin listener.
    let metrics = reqwest::get(format!("{}/metrics", proc.admin_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served = doc.size + photo.size + audio.size + doc.size + 1000;
    for line in [
        "teledrop_worker_jobs_total{outcome=\"stored\",error=\"\"} 3".to_owned(),
        format!("teledrop_worker_stored_bytes_total {}", usage.bytes),
        "teledrop_links_download_responses_total{code=\"200\"} 4".to_owned(),
        "teledrop_links_download_responses_total{code=\"206\"} 1".to_owned(),
        format!("teledrop_links_served_bytes_total {served}"),
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line:?} in\n{metrics}");
    }
    assert_admin_only_on_the_admin_listener(&h.public_url(), &proc.admin_url(), &links(&log)[0]).await;

    let status = proc.terminate(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "standalone exits cleanly on SIGTERM: {status}\n{}",
        proc.log_text()
    );
    assert!(
        !proc.log_text().contains(h.sim.token()),
        "the bot token leaked into the log"
    );
}

#[tokio::test]
async fn a_file_over_the_cloud_limit_is_explained_and_its_job_fails() {
    let h = Harness::new(false).await;
    let mut proc = h.start().await;
    let ctl = h.sim.control();
    let user = 77;
    let big = ctl
        .send_file(FileSpec::video(user, 25 * 1024 * 1024, 9).named("holiday.mp4"))
        .await
        .unwrap();
    let log = ctl
        .wait_for(user, WAIT, |l| l.visible().any(|m| m.text.contains("20 MB")))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_text()));
    let reply = log.visible().find(|m| m.text.contains("20 MB")).unwrap();
    assert!(reply.text.contains("holiday.mp4"), "{}", reply.text);
    assert!(
        reply.text.contains("TELEGRAM_LOCAL_MODE"),
        "names the operator's fix: {}",
        reply.text
    );
    assert!(links(&log).is_empty());

    let catalog = h.catalog().await;
    let job = catalog
        .job_by_update(UpdateId(big.update_id))
        .await
        .unwrap()
        .expect("the update was recorded");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error_kind, Some(ErrorKind::TooBig));
    assert!(
        catalog.unfinished_jobs(10).await.unwrap().is_empty(),
        "no job left running"
    );
    proc.terminate(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn killed_mid_stream_the_file_is_stored_and_linked_exactly_once_after_restart() {
    let h = Harness::new(true).await;
    let mut proc = h.start().await;
    let ctl = h.sim.control();
    let user = 31337;
    let size = 200 * 1024 * 1024;
    let sent = ctl
        .send_file(FileSpec::document(user, size, 42).named("big.bin"))
        .await
        .unwrap();

    // Wait until bytes are flowing (a progress edit), then SIGKILL.
    ctl.wait_for(user, WAIT, |l| l.visible().any(|m| m.text.contains("%")))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_text()));
    proc.kill9().await;
    let at_kill = ctl.messages(user).await.unwrap();
    assert!(links(&at_kill).is_empty(), "killed before the link was sent");

    let mut proc = h.start().await;
    let log = ctl
        .wait_for(user, Duration::from_secs(120), |l| !links(l).is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_text()));
    let urls = links(&log);
    assert_eq!(urls.len(), 1, "exactly one reply carries a link: {log:#?}");
    assert_eq!(
        log.visible().count(),
        1,
        "the status message became the reply; no stray message: {log:#?}"
    );

    let catalog = h.catalog().await;
    // The reply is recorded after Telegram took it, so the row may lag the
    // chat by a moment.
    let job = teledrop_testkit::poll_until(WAIT, || async {
        let job = catalog.job_by_update(UpdateId(sent.update_id)).await.unwrap().unwrap();
        job.replied_at.is_some().then_some(job)
    })
    .await
    .expect("the reply is recorded");
    assert_eq!(job.state, JobState::Stored);
    let events = catalog.job_events(job.id).await.unwrap();
    assert!(
        events.iter().any(|e| e.note.contains("recovered")),
        "the job was resumed: {events:#?}"
    );
    let usage = catalog.usage(UserId(user)).await.unwrap();
    assert_eq!((usage.files, usage.bytes), (1, size), "stored exactly once");

    let (status, _, body) = fetch(&urls[0], None).await;
    assert_eq!(status, 200);
    assert_eq!(body.len() as u64, size);
    // Large files' digests are computed by the simulator on request.
    let info = ctl.file_info(&sent.file_unique_id).await.unwrap();
    assert_eq!(sha_hex(&body), info.sha256);

    // Nothing more arrives after the final reply.
    let final_log = ctl.messages(user).await.unwrap();
    assert_eq!(links(&final_log).len(), 1);
    proc.terminate(Duration::from_secs(30)).await;
}

/// A role that cannot start says why on its last line, every cause in the
/// chain once: our wrapper ("connecting to the database"), sqlx's error and
/// the operating system's, although sqlx prints its cause and returns it too.
#[test]
fn a_failed_start_prints_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // A folder that cannot be made: its parent is a file.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let url = format!("sqlite:{}", blocker.join("catalog.db").display());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_teledrop"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rfind(|l| l.starts_with("teledrop: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    for part in [
        "connecting to the database",
        "error communicating with database",
        "File exists",
    ] {
        assert_eq!(last.matches(part).count(), 1, "{part:?} once in: {last}");
    }
}
