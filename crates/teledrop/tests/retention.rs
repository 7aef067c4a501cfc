//! End to end: RetentionPolicy files in `teledrop standalone`, through the
//! real binary as a child process against tg-sim: age sweeps and their
//! selectors, orphan collection, `Reject` quotas at ingest, and policy
//! files refused at start. No sleeps stand in for synchronisation: the
//! tests wait on the chat log (server-side) or poll observable state (the
//! link's HTTP status, the catalog, the storage folder) with a deadline.

use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use teledrop_catalog::{Catalog, SqliteCatalog};
use teledrop_core::file::FileState;
use teledrop_core::{ErrorKind, FileRecord, JobRecord, JobState, UpdateId, UserId};
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{BotMessage, ChatLog, FileSpec, SentFile, Sim, SimClient, SimConfig};

const WAIT: Duration = Duration::from_secs(60);

struct Harness {
    sim: Sim,
    dir: tempfile::TempDir,
    port: u16,
}

impl Harness {
    async fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Harness {
            sim,
            dir,
            port: free_port(),
        }
    }

    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/teledrop.db")
    }

    fn objects_dir(&self) -> PathBuf {
        self.dir.path().join("data/objects")
    }

    fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policies.yaml")
    }

    fn write_policies(&self, yaml: &str) {
        std::fs::write(self.policy_path(), yaml).unwrap();
    }

    fn spawn(&self, extra: &[(&'static str, String)]) -> Proc {
        let mut env = vec![
            ("TELEGRAM_BOT_TOKEN", self.sim.token().to_owned()),
            ("TELEGRAM_API_URL", self.sim.base_url().to_string()),
            ("TELEDROP_PUBLIC_URL", self.public_url()),
            ("TELEDROP_LISTEN", format!("127.0.0.1:{}", self.port)),
            ("DATABASE_URL", format!("sqlite://{}", self.db_path().display())),
            ("TELEDROP_STORAGE_URL", self.objects_dir().display().to_string()),
            ("TELEDROP_POLICY_FILE", self.policy_path().display().to_string()),
        ];
        env.extend(extra.iter().cloned());
        Proc::spawn(
            "standalone",
            Path::new(env!("CARGO_BIN_EXE_teledrop")),
            &["standalone"],
            &env,
            self.dir.path(),
        )
    }

    async fn start(&self, extra: &[(&'static str, String)]) -> Proc {
        let mut p = self.spawn(extra);
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

    /// Every regular file under the storage folder's `blobs/`, as object
    /// keys (`blobs/ab/cd/…`).
    fn blob_files(&self) -> BTreeSet<String> {
        fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries {
                let path = e.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    out.insert(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let root = self.objects_dir();
        let mut out = BTreeSet::new();
        walk(&root.join("blobs"), &root, &mut out);
        out
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

/// The bot's visible messages that answer the user's message `message_id`.
fn replies_to(log: &ChatLog, message_id: i64) -> Vec<&BotMessage> {
    log.visible()
        .filter(|m| m.reply_to_message_id == Some(message_id))
        .collect()
}

async fn fetch(url: &str) -> (reqwest::StatusCode, Vec<u8>) {
    let resp = reqwest::Client::new().get(url).send().await.unwrap();
    let status = resp.status();
    (status, resp.bytes().await.unwrap().to_vec())
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Polls `check` (state with no change notification: an HTTP status, a
/// catalog row, a folder) until it holds; fails with the process
/// log after [`WAIT`].
async fn eventually<F, Fut>(proc: &Proc, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let held = teledrop_testkit::poll_until(WAIT, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
    assert!(held.is_some(), "{what}: not within {WAIT:?}\n{}", proc.log_text());
}

/// Sends `spec` and waits for the bot's answer to it (the reply to its
/// message that is final: a link or a refusal, not a progress message).
async fn send_and_wait(ctl: &SimClient, proc: &Proc, spec: FileSpec) -> (SentFile, BotMessage) {
    let user = spec.user;
    let sent = ctl.send_file(spec).await.unwrap();
    let final_reply = |l: &ChatLog| {
        replies_to(l, sent.message_id)
            .into_iter()
            .find(|m| link_in(m).is_some() || m.text.contains("not stored"))
            .cloned()
    };
    let log = ctl
        .wait_for(user, WAIT, |l| final_reply(l).is_some())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proc.log_text()));
    let reply = final_reply(&log).unwrap();
    (sent, reply)
}

/// Sends `spec` and returns its link after checking that it downloads
/// the exact bytes sent.
async fn store(ctl: &SimClient, proc: &Proc, spec: FileSpec) -> (SentFile, String) {
    let (sent, reply) = send_and_wait(ctl, proc, spec).await;
    let url = link_in(&reply).unwrap_or_else(|| panic!("no link in {reply:#?}\n{}", proc.log_text()));
    let (status, body) = fetch(&url).await;
    assert_eq!(status, 200, "{url}");
    assert_eq!(sha_hex(&body), sent.sha256, "{url} serves the bytes sent");
    (sent, url)
}

async fn job_of(catalog: &Arc<dyn Catalog>, sent: &SentFile) -> JobRecord {
    catalog
        .job_by_update(UpdateId(sent.update_id))
        .await
        .unwrap()
        .expect("the update was recorded")
}

async fn file_of(catalog: &Arc<dyn Catalog>, sent: &SentFile) -> FileRecord {
    let job = job_of(catalog, sent).await;
    let id = job.file_id.expect("a stored job names its file");
    catalog.file(id).await.unwrap().expect("the file row")
}

/// Writes an object straight into the storage folder, last modified `age`
/// ago: what an upload interrupted by a crash leaves behind.
fn plant_object(objects: &Path, key: &str, age: Duration) {
    let path = objects.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"left behind by a crash").unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
}

fn assert_no_token(h: &Harness, proc: &Proc) {
    assert!(
        !proc.log_text().contains(h.sim.token()),
        "the bot token leaked into the log"
    );
}

const SWEPT_USER: i64 = 1001;
const KEEPER: i64 = 1002;

/// Two policies: one selects user 1001's files, the other videos; both
/// delete what they select 10 s after upload (time enough for the test to
/// download each file first, even on a loaded machine) and sweep every
/// second.
const AGE_POLICIES: &str = "\
# user 1001's files live 10 s
apiVersion: teledrop.dev/v1alpha1
kind: RetentionPolicy
metadata:
  name: short-lived
spec:
  selector:
    users: [1001]
  maxAge: 10s
  interval: 1s
---
# videos, anyone's, live 10 s
apiVersion: teledrop.dev/v1alpha1
kind: RetentionPolicy
metadata:
  name: short-lived-videos
spec:
  selector:
    mimeTypes: [\"video/*\"]
  maxAge: 10s
  interval: 1s
";

#[tokio::test]
async fn expired_files_are_swept_from_catalog_links_and_storage_and_selectors_spare_the_rest() {
    let h = Harness::new().await;
    h.write_policies(AGE_POLICIES);
    // Objects no row names: one from a crash long ago (collected), one
    // younger than the grace period (an upload may be about to commit it).
    let stale_orphan = "blobs/00/00/0000000000007000800000000000dead";
    let young_orphan = "blobs/00/01/0000000000007000800000000001beef";
    plant_object(&h.objects_dir(), stale_orphan, Duration::from_secs(2 * 3600));
    plant_object(&h.objects_dir(), young_orphan, Duration::ZERO);
    let mut proc = h
        .start(&[
            ("TELEDROP_ORPHAN_GRACE", "1h".into()),
            ("TELEDROP_ORPHAN_INTERVAL", "1s".into()),
        ])
        .await;
    let ctl = h.sim.control();

    // Order matters: each file that must survive is older than the files
    // the policies delete, so the very sweep that deletes a younger file
    // would have taken it too had its selector been ignored.
    let (kept, kept_url) = store(
        &ctl,
        &proc,
        FileSpec::document(KEEPER, 64 * 1024, 11)
            .named("keep.pdf")
            .with_mime("application/pdf"),
    )
    .await;
    let (video, video_url) = store(
        &ctl,
        &proc,
        FileSpec::video(KEEPER, 48 * 1024, 12)
            .named("clip.mp4")
            .with_mime("video/mp4"),
    )
    .await;
    let (expiring, expiring_url) = store(
        &ctl,
        &proc,
        FileSpec::document(SWEPT_USER, 32 * 1024, 13)
            .named("expiring.pdf")
            .with_mime("application/pdf"),
    )
    .await;

    // Both selected files go: their links answer 410 with the human page.
    for url in [&expiring_url, &video_url] {
        eventually(&proc, &format!("{url} answers 410"), || async {
            fetch(url).await.0 == 410
        })
        .await;
        let (_, page) = fetch(url).await;
        let page = String::from_utf8_lossy(&page);
        assert!(
            page.contains("The file behind this link was deleted"),
            "the 410 page says why: {page}"
        );
    }

    let catalog = h.catalog().await;
    for sent in [&expiring, &video] {
        let file = file_of(&catalog, sent).await;
        assert_eq!(file.state, FileState::Deleted, "{file:#?}");
        assert!(file.deleted_at.is_some(), "{file:#?}");
        let links = catalog.links_of(file.id).await.unwrap();
        assert!(
            !links.is_empty() && links.iter().all(|l| l.revoked_at.is_some()),
            "{links:#?}"
        );
    }
    let usage = catalog.usage(UserId(SWEPT_USER)).await.unwrap();
    assert_eq!((usage.files, usage.bytes), (0, 0), "user {SWEPT_USER} owns nothing now");
    let usage = catalog.usage(UserId(KEEPER)).await.unwrap();
    assert_eq!(
        (usage.files, usage.bytes),
        (1, kept.size),
        "user {KEEPER} keeps exactly the pdf"
    );

    // Selected by neither policy: still active and still downloading.
    let kept_file = file_of(&catalog, &kept).await;
    assert_eq!(kept_file.state, FileState::Active, "{kept_file:#?}");
    let (status, body) = fetch(&kept_url).await;
    assert_eq!(status, 200, "{kept_url}");
    assert_eq!(sha_hex(&body), kept.sha256);

    // Storage: the swept files' objects go after their rows, the stale
    // orphan is collected; the kept file and the young orphan stay.
    let want: BTreeSet<String> = [kept_file.object_key.to_string(), young_orphan.to_owned()].into();
    eventually(&proc, "the storage folder holds only what is kept", || async {
        h.blob_files() == want
    })
    .await;
    let swept_key = file_of(&catalog, &expiring).await.object_key;
    assert!(!h.objects_dir().join(swept_key.as_str()).exists());

    let status = proc.terminate(WAIT).await;
    assert!(status.success(), "clean exit on SIGTERM: {status}\n{}", proc.log_text());
    assert_no_token(&h, &proc);
}

const QUOTA_POLICIES: &str = "\
apiVersion: teledrop.dev/v1alpha1
kind: RetentionPolicy
metadata:
  name: user-bytes
spec:
  perUser:
    maxBytes: 10Ki
  onQuotaExceeded: Reject
---
apiVersion: teledrop.dev/v1alpha1
kind: RetentionPolicy
metadata:
  name: one-file-for-2003
spec:
  selector:
    users: [2003]
  perUser:
    maxFiles: 1
  onQuotaExceeded: Reject
";

#[tokio::test]
async fn reject_quotas_refuse_files_with_their_numbers_before_download_and_usage_stays_exact() {
    let h = Harness::new().await;
    h.write_policies(QUOTA_POLICIES);
    let mut proc = h.start(&[]).await;
    let ctl = h.sim.control();
    let (full, other, capped) = (2001, 2002, 2003);
    let kib = 1024;

    // Files are sent one after another: each is settled before the next.
    store(&ctl, &proc, FileSpec::document(full, 4 * kib, 21).named("a.bin")).await;
    store(&ctl, &proc, FileSpec::document(full, 4 * kib, 22).named("b.bin")).await;
    let (refused, reply) = send_and_wait(&ctl, &proc, FileSpec::document(full, 4 * kib, 23).named("c.bin")).await;
    assert!(link_in(&reply).is_none(), "{reply:#?}");
    assert!(
        reply.text.contains("c.bin")
            && reply.text.contains("was not stored")
            && reply
                .text
                .contains("this file (4.0 KiB) would exceed your quota of 10.0 KiB: 8.0 KiB stored already"),
        "the refusal names the quota with numbers: {}",
        reply.text
    );
    // Told before anything was downloaded: the refusal is the only answer
    // and was never a "Receiving…" status message.
    let log = ctl.messages(full).await.unwrap();
    assert_eq!(replies_to(&log, refused.message_id).len(), 1, "{log:#?}");
    assert_eq!(reply.history.len(), 1, "{reply:#?}");
    // A file that fits exactly is still taken.
    store(&ctl, &proc, FileSpec::document(full, 2 * kib, 24).named("d.bin")).await;

    // Another user's quota is their own.
    store(&ctl, &proc, FileSpec::document(other, 4 * kib, 25).named("e.bin")).await;

    // A file-count quota, for one user only.
    store(&ctl, &proc, FileSpec::document(capped, kib, 26).named("f.bin")).await;
    let (refused_count, reply) = send_and_wait(&ctl, &proc, FileSpec::document(capped, kib, 27).named("g.bin")).await;
    assert!(link_in(&reply).is_none(), "{reply:#?}");
    assert!(
        reply.text.contains("g.bin")
            && reply
                .text
                .contains("would exceed your quota of 1 file: 1 stored already"),
        "{}",
        reply.text
    );

    let log = ctl.messages(full).await.unwrap();
    assert_eq!(links(&log).len(), 3, "a, b and d are linked; c is not: {log:#?}");

    let catalog = h.catalog().await;
    for sent in [&refused, &refused_count] {
        let job = job_of(&catalog, sent).await;
        assert_eq!(job.state, JobState::Failed, "{job:#?}");
        assert_eq!(job.error_kind, Some(ErrorKind::OverQuota), "{job:#?}");
        assert_eq!(job.file_id, None, "no file row for a refused file");
    }
    for (user, files, bytes) in [(full, 3, 10 * kib), (other, 1, 4 * kib), (capped, 1, kib)] {
        let usage = catalog.usage(UserId(user)).await.unwrap();
        assert_eq!((usage.files, usage.bytes), (files, bytes), "usage of user {user}");
    }
    assert!(
        catalog.unfinished_jobs(10).await.unwrap().is_empty(),
        "no job left running"
    );

    let status = proc.terminate(WAIT).await;
    assert!(status.success(), "clean exit on SIGTERM: {status}\n{}", proc.log_text());
    assert_no_token(&h, &proc);
}

#[tokio::test]
async fn an_invalid_policy_file_stops_the_start_naming_file_document_and_field() {
    let h = Harness::new().await;
    let cases = [
        (
            QUOTA_POLICIES.replace("maxBytes: 10Ki", "maxBytes: 5 gigs"),
            ["document 1 (user-bytes)", "spec.perUser.maxBytes", "5 gigs"],
        ),
        (
            AGE_POLICIES.replace(
                "mimeTypes: [\"video/*\"]\n  maxAge: 10s",
                "mimeTypes: [\"video/*\"]\n  maxAge: 10s\n  maxAgee: 3s",
            ),
            ["document 2 (short-lived-videos)", "spec", "maxAgee"],
        ),
    ];
    for (yaml, wanted) in cases {
        h.write_policies(&yaml);
        let mut proc = h.spawn(&[]);
        let status = proc.terminate_after_exit(WAIT).await;
        let log = proc.log_text();
        assert!(!status.success(), "refused at start: {status}\n{log}");
        assert!(log.contains("TELEDROP_POLICY_FILE"), "names the variable: {log}");
        assert!(
            log.contains(&h.policy_path().display().to_string()),
            "names the file: {log}"
        );
        for w in wanted {
            assert!(log.contains(w), "names {w:?}: {log}");
        }
        // Nothing was served or written.
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", h.port)).is_err(),
            "nothing listens on the link port"
        );
        assert!(!h.db_path().exists(), "no catalog was created");
        assert_no_token(&h, &proc);
    }
}
