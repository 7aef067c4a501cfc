//! End to end, distributed: tg-sim pushing webhooks → `teledrop ingress` →
//! NATS JetStream → three `teledrop worker`s → S3-compatible store +
//! Postgres → `teledrop links`. Every role is the real binary in its own
//! process; NATS, Postgres and moto are the test run's throwaway servers.

use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;
use teledrop_catalog::{Catalog, PgCatalog};
use teledrop_core::UserId;
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{ChatLog, FileSpec, MediaKind, Sim, SimConfig};

const SECRET: &str = "e2e_webhook-Secret";
const BIN: &str = env!("CARGO_BIN_EXE_teledrop");

fn links(log: &ChatLog) -> Vec<String> {
    log.visible()
        .filter_map(|m| {
            m.text
                .split_whitespace()
                .find(|w| w.contains("/download/"))
                .map(str::to_owned)
        })
        .collect()
}

async fn run_to_end(env: &[(&str, String)], args: &[&str], dir: &Path) -> String {
    let mut p = Proc::spawn(args[0], Path::new(BIN), args, env, dir);
    let status = p.terminate_after_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "teledrop {args:?} failed: {status}\n{}", p.log_text());
    p.log_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_to_three_workers_to_links() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        SimConfig {
            webhook_backoff_cap: Duration::from_millis(500),
            webhook_first_retry: Duration::from_millis(50),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let database_url = teledrop_testkit::postgres::fresh_database().await;
    let bucket = teledrop_testkit::s3::fresh_bucket().await;
    let suffix = teledrop_testkit::unique_suffix();
    let links_port = free_port();
    let ingress_port = free_port();
    let public_url = format!("http://127.0.0.1:{links_port}");

    let mut common: Vec<(&str, String)> = vec![
        ("DATABASE_URL", database_url.clone()),
        ("NATS_URL", teledrop_testkit::require_env("TEST_NATS_URL")),
        ("TELEDROP_NATS_STREAM", format!("E2E_{suffix}")),
        ("TELEDROP_NATS_PREFIX", format!("e2e{suffix}")),
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEDROP_PUBLIC_URL", public_url.clone()),
        ("TELEDROP_WEBHOOK_SECRET", SECRET.into()),
    ];
    common.extend(bucket.env());

    run_to_end(&common, &["migrate"], dir.path()).await;
    // Migrating again, concurrently, is safe.
    let (a, b) = tokio::join!(
        run_to_end(&common, &["migrate"], dir.path()),
        run_to_end(&common, &["migrate"], dir.path())
    );
    drop((a, b));

    let with_listen = |port: u16| {
        let mut e = common.clone();
        e.push(("TELEDROP_LISTEN", format!("127.0.0.1:{port}")));
        e
    };
    let mut procs = Vec::new();
    let mut links_proc = Proc::spawn(
        "links",
        Path::new(BIN),
        &["links"],
        &with_listen(links_port),
        dir.path(),
    );
    links_proc
        .wait_http_ok(&format!("{public_url}/readyz"), Duration::from_secs(60))
        .await;
    let mut ingress = Proc::spawn(
        "ingress",
        Path::new(BIN),
        &["ingress"],
        &with_listen(ingress_port),
        dir.path(),
    );
    ingress
        .wait_http_ok(
            &format!("http://127.0.0.1:{ingress_port}/readyz"),
            Duration::from_secs(60),
        )
        .await;
    for i in 0..3 {
        let port = free_port();
        let mut w = Proc::spawn(
            &format!("worker{i}"),
            Path::new(BIN),
            &["worker"],
            &with_listen(port),
            dir.path(),
        );
        w.wait_http_ok(&format!("http://127.0.0.1:{port}/readyz"), Duration::from_secs(60))
            .await;
        procs.push(w);
    }
    let out = run_to_end(
        &common,
        &["webhook", "set", "--url", &format!("http://127.0.0.1:{ingress_port}")],
        dir.path(),
    )
    .await;
    assert!(out.contains("webhook set"), "{out}");

    // Bad input at the ingress changes nothing.
    let hook = format!("http://127.0.0.1:{ingress_port}/telegram/webhook");
    let client = reqwest::Client::new();
    let wrong = client
        .post(&hook)
        .header("X-Telegram-Bot-Api-Secret-Token", "nope")
        .body("{\"update_id\":1}");
    assert_eq!(wrong.send().await.unwrap().status(), 401);

    // 10 users send 3 files each; 4 of them re-send content someone sent before.
    let kinds = [
        MediaKind::Document,
        MediaKind::Photo,
        MediaKind::Video,
        MediaKind::Audio,
        MediaKind::Voice,
    ];
    let mut sent: HashMap<i64, Vec<tg_sim::SentFile>> = HashMap::new();
    let mut first_specs: HashMap<i64, FileSpec> = HashMap::new();
    let mut n = 0u64;
    for user in 1..=10i64 {
        for j in 0..3u64 {
            n += 1;
            let spec = if user > 6 && j == 0 {
                // The same content (kind, size, seed) another user sent.
                FileSpec {
                    user,
                    ..first_specs[&(user - 6)].clone()
                }
            } else {
                FileSpec::new(kinds[(n % 5) as usize], user, 1024 + (n * 97_531) % (3 << 20), n)
            };
            if j == 0 {
                first_specs.insert(user, spec.clone());
            }
            sent.entry(user)
                .or_default()
                .push(sim.control().send_file(spec).await.unwrap());
        }
    }

    let ctl = sim.control();
    let mut all_links = Vec::new();
    for (user, files) in &sent {
        let log = ctl
            .wait_for(*user, Duration::from_secs(120), |l| links(l).len() >= files.len())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", procs.iter().map(|p| p.log_text()).collect::<String>()));
        let l = links(&log);
        assert_eq!(
            l.len(),
            files.len(),
            "exactly one link per file for user {user}: {log:#?}"
        );
        assert_eq!(log.visible().count(), files.len(), "no other message for user {user}");
        all_links.push((*user, l));
    }

    // Every link downloads byte-identical.
    let mut by_user_hashes: HashMap<i64, HashSet<String>> = HashMap::new();
    for (user, urls) in &all_links {
        for url in urls {
            let resp = client.get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{url}");
            let body = resp.bytes().await.unwrap();
            by_user_hashes
                .entry(*user)
                .or_default()
                .insert(hex::encode(Sha256::digest(&body)));
        }
    }
    for (user, files) in &sent {
        let want: HashSet<String> = files.iter().map(|f| f.sha256.clone()).collect();
        assert_eq!(by_user_hashes[user], want, "user {user} downloads what they sent");
    }

    // Usage is exact; repeats share one blob.
    let catalog = PgCatalog::connect(&database_url).await.unwrap();
    for (user, files) in &sent {
        let u = catalog.usage(UserId(*user)).await.unwrap();
        assert_eq!(u.files, files.len() as u64);
        assert_eq!(u.bytes, files.iter().map(|f| f.size).sum::<u64>());
    }
    let uniques: HashSet<&str> = sent.values().flatten().map(|f| f.file_unique_id.as_str()).collect();
    let mut keys = HashSet::new();
    for u in &uniques {
        keys.insert(catalog.blob(u).await.unwrap().expect("blob").object_key);
    }
    assert_eq!(keys.len(), uniques.len());
    assert_eq!(uniques.len(), 30 - 4, "the four repeats are stored once");

    for p in procs.iter_mut().chain([&mut ingress, &mut links_proc]) {
        let status = p.terminate(Duration::from_secs(60)).await;
        assert!(status.success(), "{status}\n{}", p.log_text());
        assert!(!p.log_text().contains(sim.token()), "token leaked into a log");
    }
}
