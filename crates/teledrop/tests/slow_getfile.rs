//! A real `telegram-bot-api --local` answers `getFile` only after it has
//! fetched the whole file from Telegram's data centres: minutes for big
//! files. tg-sim does the same at a set rate (it writes the file as it
//! goes and keeps the request open), and these tests make a 300 MiB
//! `getFile` last over a minute:
//!
//! - distributed, with `ack_wait` at 10 s and two workers: the worker that
//!   asked keeps the delivery alive, so the other never asks again; the
//!   file is stored once and the user gets one message, which says that
//!   Telegram is being asked while it waits;
//! - standalone, killed with SIGKILL during `getFile` and started again:
//!   the new process asks again (the Bot API server's fetch went on
//!   meanwhile), waits over a minute, and links the file exactly once.
//!
//! Every role is the real binary in its own process.

use std::path::Path;
use std::time::{Duration, Instant};
use teledrop_catalog::{Catalog, FileFilter, PgCatalog, SqliteCatalog};
use teledrop_core::{JobState, UpdateId, UserId};
use teledrop_testkit::process::free_port;
use tg_sim::{ChatLog, FileSpec, LocalFetch, Sim, SimClient, SimConfig};

mod common;

use common::{START, links, run_to_end, set_webhook, start_role};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 300 * MIB;
/// The Bot API server's `getFile` for [`SIZE`] lasts this long, or longer.
const GET_FILE: Duration = Duration::from_secs(70);
/// Deadline for the link, from the file's sending.
const LINKED: Duration = Duration::from_secs(600);
const SECRET: &str = "slow-getfile_webhook-Secret";

async fn slow_sim(dir: &Path) -> Sim {
    Sim::start(
        SimConfig {
            local_mode: true,
            local_dir: dir.join("bot-api"),
            local_fetch_rate: Some(SIZE / GET_FILE.as_secs()),
            webhook_backoff_cap: Duration::from_millis(500),
            webhook_first_retry: Duration::from_millis(50),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// What tg-sim says about `getFile` of `file_id`.
async fn fetch_of(ctl: &SimClient, file_id: &str) -> Option<LocalFetch> {
    let all = ctl.local_fetches().await.unwrap();
    all.into_iter().find(|f| f.file_id == file_id)
}

/// The status message while `getFile` waits: "⏳ Asking Telegram for …".
fn asks_telegram(text: &str) -> bool {
    text.contains("Asking Telegram for") && text.contains("so far")
}

/// One message, edited from "asking" to the link: what the user sees.
fn assert_one_message_with_one_link(log: &ChatLog) -> String {
    assert_eq!(log.messages.len(), 1, "the bot sent one message: {log:#?}");
    let reply = &log.messages[0];
    assert!(!reply.deleted);
    assert!(
        reply.history.iter().any(|t| asks_telegram(t)),
        "the status message said Telegram was being asked: {reply:#?}"
    );
    let urls = links(log);
    assert_eq!(urls.len(), 1, "{log:#?}");
    urls[0].clone()
}

async fn assert_stored_once(catalog: &dyn Catalog, user: i64, want_sha: &str) {
    let usage = catalog.usage(UserId(user)).await.unwrap();
    assert_eq!((usage.files, usage.bytes), (1, SIZE));
    let owned = FileFilter {
        owners: vec![UserId(user)],
        ..FileFilter::default()
    };
    let files = catalog.live_files(&owned, None, 10).await.unwrap();
    assert_eq!(files.len(), 1, "{files:#?}");
    assert_eq!(files[0].sha256.to_hex(), want_sha, "the stored bytes are the sent ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minute_long_get_file_goes_to_one_worker_and_one_reply() {
    let dir = tempfile::tempdir().unwrap();
    let sim = slow_sim(dir.path()).await;
    let database_url = teledrop_testkit::postgres::fresh_database().await;
    let bucket = teledrop_testkit::s3::fresh_bucket().await;
    let suffix = teledrop_testkit::unique_suffix();
    let (links_port, ingress_port) = (free_port(), free_port());
    let mut env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", database_url.clone()),
        ("NATS_URL", teledrop_testkit::require_env("TEST_NATS_URL")),
        ("TELEDROP_NATS_STREAM", format!("SLOWGETFILE_{suffix}")),
        ("TELEDROP_NATS_PREFIX", format!("slowgetfile{suffix}")),
        // Six times shorter than the getFile: only in-progress acks keep
        // the delivery with the worker that asked.
        ("TELEDROP_NATS_ACK_WAIT", "10s".into()),
        ("TELEDROP_PROGRESS_INTERVAL", "2s".into()),
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEGRAM_LOCAL_MODE", "true".into()),
        ("TELEGRAM_LOCAL_DIR", sim.config().local_dir.display().to_string()),
        ("TELEDROP_PUBLIC_URL", format!("http://127.0.0.1:{links_port}")),
        ("TELEDROP_WEBHOOK_SECRET", SECRET.into()),
    ];
    env.extend(bucket.env());
    run_to_end(&env, &["migrate"], dir.path()).await;
    let mut procs = vec![
        start_role("links", "links", &env, links_port, dir.path()).await,
        start_role("ingress", "ingress", &env, ingress_port, dir.path()).await,
        start_role("worker-a", "worker", &env, free_port(), dir.path()).await,
        start_role("worker-b", "worker", &env, free_port(), dir.path()).await,
    ];
    set_webhook(&env, ingress_port, dir.path()).await;
    let logs = |procs: &[teledrop_testkit::process::Proc]| -> String { procs.iter().map(|p| p.log_text()).collect() };

    let user = 61;
    let ctl = sim.control();
    let sent_at = Instant::now();
    let sent = ctl.send_file(FileSpec::document(user, SIZE, 61)).await.unwrap();
    let log = ctl
        .wait_for(user, LINKED, |l| !links(l).is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&procs)));
    let took = sent_at.elapsed();
    assert!(
        took >= Duration::from_secs(60),
        "getFile lasted a minute; linked after {took:?}"
    );
    assert_one_message_with_one_link(&log);

    // One getFile, from one worker, in one attempt.
    let fetch = fetch_of(&ctl, &sent.file_id).await.expect("getFile was called");
    assert_eq!(fetch.get_file_calls, 1, "only one worker asked: {fetch:?}");
    assert_eq!(fetch.fetched, SIZE);
    let catalog = PgCatalog::connect(&database_url).await.unwrap();
    let job = catalog.job_by_update(UpdateId(sent.update_id)).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Stored, 1), "{job:#?}");
    let want = ctl.file_info(&sent.file_unique_id).await.unwrap().sha256;
    assert_stored_once(&catalog, user, &want).await;
    let objects = bucket.objects().await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].1, SIZE);

    let all = logs(&procs);
    for p in &mut procs {
        let status = p.terminate(START).await;
        assert!(status.success(), "{status}\n{}", p.log_text());
    }
    assert!(!all.contains(sim.token()), "token leaked into a log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standalone_killed_during_get_file_links_the_file_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = slow_sim(dir.path()).await;
    let port = free_port();
    let db = format!("sqlite://{}", dir.path().join("data/teledrop.db").display());
    let env: Vec<(&str, String)> = vec![
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEGRAM_LOCAL_MODE", "true".into()),
        ("TELEGRAM_LOCAL_DIR", sim.config().local_dir.display().to_string()),
        ("TELEDROP_PUBLIC_URL", format!("http://127.0.0.1:{port}")),
        ("DATABASE_URL", db.clone()),
        (
            "TELEDROP_STORAGE_URL",
            dir.path().join("data/objects").display().to_string(),
        ),
        ("TELEDROP_PROGRESS_INTERVAL", "2s".into()),
    ];
    let mut first = start_role("standalone-1", "standalone", &env, port, dir.path()).await;

    let user = 62;
    let ctl = sim.control();
    let sent = ctl.send_file(FileSpec::document(user, SIZE, 62)).await.unwrap();
    // Killed while getFile waits: the Bot API server has started fetching
    // and is far from done.
    let fetching = teledrop_testkit::poll_until(START, || async {
        fetch_of(&ctl, &sent.file_id)
            .await
            .filter(|f| f.started && f.fetched > 0)
    })
    .await
    .unwrap_or_else(|| panic!("getFile never started\n{}", first.log_text()));
    // The status message is sent before getFile; the kill must not lose it.
    ctl.wait_for(user, START, |l| l.messages.len() == 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", first.log_text()));
    first.kill9().await;
    let at_kill = fetch_of(&ctl, &sent.file_id).await.unwrap();
    assert!(
        at_kill.fetched < SIZE,
        "the kill landed during getFile: {fetching:?} {at_kill:?}"
    );

    let restarted_at = Instant::now();
    let second = start_role("standalone-2", "standalone", &env, port, dir.path()).await;
    let log = ctl
        .wait_for(user, LINKED, |l| !links(l).is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}{}", first.log_text(), second.log_text()));
    let took = restarted_at.elapsed();
    assert_one_message_with_one_link(&log);
    // The remaining fetch took most of a minute: one long getFile in the
    // restarted process, asked once more.
    let fetch = fetch_of(&ctl, &sent.file_id).await.unwrap();
    assert_eq!(fetch.get_file_calls, 2, "one getFile per process: {fetch:?}");
    assert_eq!(fetch.fetched, SIZE);
    assert!(
        took >= GET_FILE / 2,
        "the restarted process waited for the rest of the fetch; linked {took:?} after restart"
    );

    let catalog = SqliteCatalog::connect(&db).await.unwrap();
    let job = catalog.job_by_update(UpdateId(sent.update_id)).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Stored, "{job:#?}");
    let want = ctl.file_info(&sent.file_unique_id).await.unwrap().sha256;
    assert_stored_once(&catalog, user, &want).await;

    let mut second = second;
    let status = second.terminate(START).await;
    assert!(status.success(), "{status}\n{}", second.log_text());
    assert!(
        !first.log_text().contains(sim.token()) && !second.log_text().contains(sim.token()),
        "token leaked into a log"
    );
}
