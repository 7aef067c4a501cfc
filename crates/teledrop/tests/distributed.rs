//! End to end, distributed: tg-sim pushing webhooks → `teledrop ingress` →
//! NATS JetStream → several `teledrop worker`s → object store + Postgres →
//! `teledrop links`. Every role is the real binary in its own process;
//! NATS, Postgres and moto are the test run's throwaway servers, except
//! where a test stops NATS: that test runs a server of its own.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use teledrop_catalog::{Catalog, PgCatalog};
use teledrop_core::{JobState, UpdateId, UserId};
use teledrop_testkit::nats::NatsServer;
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{FileSpec, MediaKind, SentFile, Sim, SimConfig};

mod common;

use common::{START, links, run_to_end, set_webhook, start_role};

const SECRET: &str = "e2e_webhook-Secret";
const MIB: u64 = 1 << 20;

/// Where the workers put file contents.
enum Store {
    S3(teledrop_testkit::s3::S3Bucket),
    /// A folder every process on this machine shares.
    Folder,
}

struct Setup {
    workers: usize,
    local_mode: bool,
    nats_url: String,
    store: Store,
    /// Extra environment for every role.
    env: Vec<(&'static str, String)>,
}

/// The running deployment: one ingress, `workers` workers, one link server.
struct Cluster {
    /// Logs and the folder store live here until the test ends.
    _dir: tempfile::TempDir,
    sim: Sim,
    database_url: String,
    ingress_port: u16,
    ingress: Proc,
    workers: Vec<Proc>,
    links: Proc,
}

impl Cluster {
    async fn start(setup: Setup) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let sim = Sim::start(
            SimConfig {
                webhook_backoff_cap: Duration::from_millis(500),
                webhook_first_retry: Duration::from_millis(50),
                local_mode: setup.local_mode,
                local_dir: dir.path().join("bot-api"),
                ..SimConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let database_url = teledrop_testkit::postgres::fresh_database().await;
        let suffix = teledrop_testkit::unique_suffix();
        let links_port = free_port();
        let ingress_port = free_port();
        let public_url = format!("http://127.0.0.1:{links_port}");

        let mut common: Vec<(&str, String)> = vec![
            ("DATABASE_URL", database_url.clone()),
            ("NATS_URL", setup.nats_url.clone()),
            ("TELEDROP_NATS_STREAM", format!("E2E_{suffix}")),
            ("TELEDROP_NATS_PREFIX", format!("e2e{suffix}")),
            ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
            ("TELEGRAM_API_URL", sim.base_url().to_string()),
            ("TELEGRAM_LOCAL_MODE", setup.local_mode.to_string()),
            ("TELEGRAM_LOCAL_DIR", sim.config().local_dir.display().to_string()),
            ("TELEDROP_PUBLIC_URL", public_url.clone()),
            ("TELEDROP_WEBHOOK_SECRET", SECRET.into()),
        ];
        match &setup.store {
            Store::S3(bucket) => common.extend(bucket.env()),
            Store::Folder => common.push(("TELEDROP_STORAGE_URL", dir.path().join("objects").display().to_string())),
        }
        common.extend(setup.env);

        run_to_end(&common, &["migrate"], dir.path()).await;
        let links = start_role("links", "links", &common, links_port, dir.path()).await;
        let ingress = start_role("ingress", "ingress", &common, ingress_port, dir.path()).await;
        let mut workers = Vec::new();
        for i in 0..setup.workers {
            workers.push(start_role(&format!("worker{i}"), "worker", &common, free_port(), dir.path()).await);
        }
        set_webhook(&common, ingress_port, dir.path()).await;
        Cluster {
            _dir: dir,
            sim,
            database_url,
            ingress_port,
            ingress,
            workers,
            links,
        }
    }

    fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/telegram/webhook", self.ingress_port)
    }

    fn logs(&self) -> String {
        self.workers
            .iter()
            .chain([&self.ingress, &self.links])
            .map(|p| p.log_text())
            .collect()
    }

    async fn catalog(&self) -> PgCatalog {
        PgCatalog::connect(&self.database_url).await.unwrap()
    }

    /// Waits until every user has one link per file sent, and checks that
    /// the bot said nothing else. Returns each user's links.
    async fn wait_for_links(&self, sent: &HashMap<i64, Vec<SentFile>>, deadline: Duration) -> Vec<(i64, Vec<String>)> {
        let ctl = self.sim.control();
        let mut all = Vec::new();
        for (user, files) in sent {
            let log = ctl
                .wait_for(*user, deadline, |l| links(l).len() >= files.len())
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
            let l = links(&log);
            assert_eq!(
                l.len(),
                files.len(),
                "exactly one link per file for user {user}: {log:#?}"
            );
            assert_eq!(log.visible().count(), files.len(), "no other message for user {user}");
            all.push((*user, l));
        }
        all
    }

    /// Usage per user is exact and each distinct content is one blob.
    async fn assert_catalog_exact(&self, sent: &HashMap<i64, Vec<SentFile>>) {
        let catalog = self.catalog().await;
        for (user, files) in sent {
            let u = catalog.usage(UserId(*user)).await.unwrap();
            assert_eq!(u.files, files.len() as u64, "files of user {user}");
            assert_eq!(
                u.bytes,
                files.iter().map(|f| f.size).sum::<u64>(),
                "bytes of user {user}"
            );
        }
        let uniques: HashSet<&str> = sent.values().flatten().map(|f| f.file_unique_id.as_str()).collect();
        let mut keys = HashSet::new();
        for u in &uniques {
            keys.insert(catalog.blob(u).await.unwrap().expect("blob").object_key);
        }
        assert_eq!(keys.len(), uniques.len(), "one blob per distinct content");
    }

    /// SIGTERM to every role: each exits cleanly, and no log holds the token.
    async fn stop(mut self) {
        let token = self.sim.token().to_owned();
        for p in self.workers.iter_mut().chain([&mut self.ingress, &mut self.links]) {
            let status = p.terminate(START).await;
            assert!(status.success(), "{status}\n{}", p.log_text());
            assert!(!p.log_text().contains(&token), "token leaked into a log");
        }
    }
}

/// Downloads every link and compares each user's set of SHA-256 digests
/// with what they sent. Bodies are hashed as they stream in.
async fn assert_downloads_identical(all_links: &[(i64, Vec<String>)], sent: &HashMap<i64, Vec<SentFile>>) {
    let client = reqwest::Client::new();
    let mut by_user: HashMap<i64, HashSet<String>> = HashMap::new();
    for (user, urls) in all_links {
        for url in urls {
            let mut resp = client.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{url}");
            let mut hasher = Sha256::new();
            while let Some(chunk) = resp.chunk().await.unwrap() {
                hasher.update(chunk);
            }
            by_user.entry(*user).or_default().insert(hex::encode(hasher.finalize()));
        }
    }
    for (user, files) in sent {
        let want: HashSet<String> = files.iter().map(|f| f.sha256.clone()).collect();
        assert_eq!(by_user[user], want, "user {user} downloads what they sent");
    }
}

fn s3_setup(workers: usize, local_mode: bool, bucket: teledrop_testkit::s3::S3Bucket) -> Setup {
    Setup {
        workers,
        local_mode,
        nats_url: teledrop_testkit::require_env("TEST_NATS_URL"),
        store: Store::S3(bucket),
        env: Vec::new(),
    }
}

const KINDS: [MediaKind; 5] = [
    MediaKind::Document,
    MediaKind::Photo,
    MediaKind::Video,
    MediaKind::Audio,
    MediaKind::Voice,
];

/// The scenario: 20 users send 200 files of mixed kinds and sizes
/// (1 KiB to 50 MiB; the Bot API in local mode, as big files need),
/// including 20 repeats of content someone sent before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_files_from_twenty_users_through_three_workers() {
    let bucket = teledrop_testkit::s3::fresh_bucket().await;
    let cluster = Cluster::start(s3_setup(3, true, bucket)).await;

    // Bad input at the ingress changes nothing (checked again at the end).
    let client = reqwest::Client::new();
    let hook = cluster.webhook_url();
    let post = |secret: &str, body: Vec<u8>| {
        client
            .post(&hook)
            .header("X-Telegram-Bot-Api-Secret-Token", secret)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(post("nope", b"{\"update_id\":1}".to_vec()).await.unwrap().status(), 401);
    assert_eq!(post(SECRET, vec![b' '; 2 * MIB as usize]).await.unwrap().status(), 413);
    assert_eq!(post(SECRET, b"{not json".to_vec()).await.unwrap().status(), 200);

    let ctl = cluster.sim.control();
    let mut sent: HashMap<i64, Vec<SentFile>> = HashMap::new();
    let mut originals: Vec<FileSpec> = Vec::new();
    let mut n = 0u64;
    for round in 0..10u64 {
        for user in 1..=20i64 {
            n += 1;
            // Every ninth file from round 1 on (n = 27, 36, …, 198) repeats
            // earlier content of another user: 20 repeats in all.
            let spec = if round > 0 && n.is_multiple_of(9) && originals.len() > 20 {
                let earlier = &originals[(n as usize * 7) % originals.len()];
                let other = if earlier.user == user { user % 20 + 1 } else { user };
                FileSpec {
                    user: other,
                    ..earlier.clone()
                }
            } else {
                let size = match n % 20 {
                    // Ten big files: 20–50 MiB.
                    0 => 20 * MIB + (n * 1_234_567) % (30 * MIB),
                    // Thirty medium ones: 1–5 MiB.
                    5 | 10 | 15 => MIB + (n * 97_531) % (4 * MIB),
                    // The rest: 1 KiB – 512 KiB.
                    _ => 1024 + (n * 7_919) % (511 * 1024),
                };
                let s = FileSpec::new(KINDS[(n % 5) as usize], user, size, n);
                originals.push(s.clone());
                s
            };
            let f = ctl.send_file(spec.clone()).await.unwrap();
            sent.entry(spec.user).or_default().push(f);
        }
    }
    let total: usize = sent.values().map(Vec::len).sum();
    assert_eq!(total, 200);
    assert_eq!(originals.len(), 180, "20 of the 200 are repeats");

    let all_links = cluster.wait_for_links(&sent, Duration::from_secs(600)).await;
    assert_downloads_identical(&all_links, &sent).await;
    cluster.assert_catalog_exact(&sent).await;
    let uniques: HashSet<&str> = sent.values().flatten().map(|f| f.file_unique_id.as_str()).collect();
    assert_eq!(uniques.len(), 180, "repeats are stored once");

    // The garbage update became no job and no message.
    let catalog = cluster.catalog().await;
    for user in 1..=20 {
        let log = ctl.messages(user).await.unwrap();
        assert_eq!(log.visible().count(), sent[&user].len());
    }
    assert!(catalog.job_by_update(UpdateId(1)).await.unwrap().is_none());
    cluster.stop().await;
}

/// NATS stops for a while under load: the ingress answers 503, tg-sim
/// keeps retrying, and once NATS is back every update is processed
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_outage_under_load_loses_and_repeats_nothing() {
    let mut nats = NatsServer::start().await;
    let cluster = Cluster::start(Setup {
        workers: 2,
        local_mode: false,
        nats_url: nats.url(),
        store: Store::Folder,
        env: vec![("TELEDROP_PUBLISH_TIMEOUT", "1s".into())],
    })
    .await;
    let ctl = cluster.sim.control();
    let mut sent: HashMap<i64, Vec<SentFile>> = HashMap::new();
    let mut send = async |n: u64| {
        let user = (n % 6 + 1) as i64;
        let spec = FileSpec::new(KINDS[(n % 5) as usize], user, 2048 + n * 4099, 1000 + n);
        let f = ctl.send_file(spec).await.unwrap();
        sent.entry(user).or_default().push(f);
    };
    // Load before, during and after the outage; NATS dies while the first
    // wave is still being pushed and processed.
    for n in 0..20 {
        send(n).await;
    }
    nats.stop().await;
    for n in 20..40 {
        send(n).await;
    }
    // The ingress refused while NATS was away (Telegram retries a 503).
    let refused = || async {
        ctl.webhook_deliveries()
            .await
            .unwrap()
            .iter()
            .filter(|a| a.status == Some(503))
            .count()
    };
    let seen = teledrop_testkit::poll_until(START, || async { (refused().await > 0).then_some(()) }).await;
    assert!(seen.is_some(), "no 503 during the outage\n{}", cluster.logs());
    nats.restart().await;
    for n in 40..60 {
        send(n).await;
    }

    cluster.wait_for_links(&sent, Duration::from_secs(300)).await;
    cluster.assert_catalog_exact(&sent).await;
    // Each update is one job, stored once.
    let catalog = cluster.catalog().await;
    let pushes = ctl.webhook_deliveries().await.unwrap();
    let updates: HashSet<i64> = pushes.iter().map(|a| a.update_id).collect();
    assert_eq!(updates.len(), 60, "every update was pushed");
    for id in &updates {
        let job = catalog.job_by_update(UpdateId(*id)).await.unwrap().expect("job");
        assert_eq!(job.state, JobState::Stored, "update {id}");
    }
    // Every update was finally accepted exactly when the ingress said 200.
    let accepted: HashSet<i64> = pushes
        .iter()
        .filter(|a| a.status == Some(200))
        .map(|a| a.update_id)
        .collect();
    assert_eq!(accepted, updates);
    cluster.stop().await;
    drop(nats);
}

/// Fair queues across processes: one user sends a hundred files, then
/// another user one; two workers share the per-user limit through
/// Postgres. The second user's link comes before the first user's tenth,
/// and never more than two of the first user's files run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_users_hundred_files_wait_their_turn_across_two_workers() {
    const FILES: usize = 100;
    let (busy, other) = (31, 32);
    let cluster = Cluster::start(Setup {
        workers: 2,
        local_mode: false,
        nats_url: teledrop_testkit::require_env("TEST_NATS_URL"),
        store: Store::Folder,
        env: vec![
            ("TELEDROP_USER_CONCURRENCY", "2".into()),
            ("TELEDROP_WORKER_CONCURRENCY", "4".into()),
        ],
    })
    .await;
    let ctl = cluster.sim.control();
    // Paced downloads, so that jobs overlap and a queue forms.
    ctl.set_faults(tg_sim::Faults {
        download_bytes_per_sec: Some(200_000),
        ..tg_sim::Faults::default()
    })
    .await
    .unwrap();
    let mut sent: HashMap<i64, Vec<SentFile>> = HashMap::new();
    for seed in 0..FILES as u64 {
        let f = ctl
            .send_file(FileSpec::document(busy, 20_000, 3000 + seed))
            .await
            .unwrap();
        sent.entry(busy).or_default().push(f);
    }
    let f = ctl.send_file(FileSpec::document(other, 20_000, 4000)).await.unwrap();
    sent.entry(other).or_default().push(f);

    cluster.wait_for_links(&sent, Duration::from_secs(300)).await;
    cluster.assert_catalog_exact(&sent).await;
    let catalog = cluster.catalog().await;
    let mut replied = Vec::new();
    let mut edges = Vec::new();
    for f in &sent[&busy] {
        let job = catalog
            .job_by_update(UpdateId(f.update_id))
            .await
            .unwrap()
            .expect("job");
        assert_eq!(
            (job.state, job.attempts),
            (JobState::Stored, 1),
            "waiting cost no attempt"
        );
        replied.push(job.replied_at.expect("replied"));
        for e in catalog.job_events(job.id).await.unwrap() {
            if e.to == JobState::Running {
                edges.push((e.at, 1));
            } else if e.from == Some(JobState::Running) {
                edges.push((e.at, -1));
            }
        }
    }
    replied.sort();
    let late = catalog
        .job_by_update(UpdateId(sent[&other][0].update_id))
        .await
        .unwrap()
        .expect("job");
    let late_at = late.replied_at.expect("replied");
    assert!(
        late_at < replied[9],
        "the other user's link ({late_at}) came after the busy user's 10th ({})",
        replied[9]
    );
    // Ends sort before starts at the same millisecond: a claim counts only
    // the ends it sees committed.
    edges.sort();
    let (mut running, mut most) = (0, 0);
    for (_, d) in edges {
        running += d;
        most = most.max(running);
    }
    assert!(most <= 2, "{most} of one user's jobs ran at once; the limit is 2");
    assert_eq!(most, 2, "both of the user's slots were used");
    for w in &cluster.workers {
        assert!(
            w.log_text().contains("file stored"),
            "each worker stored files:\n{}",
            w.log_text()
        );
    }
    cluster.stop().await;
}
