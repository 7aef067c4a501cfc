//! The pipeline against tg-sim, a real SQLite catalog and a real folder
//! store, in-process: deduplication, retries, failures and recovery.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use teledrop_bus::{Bus, Envelope, MemoryBus};
use teledrop_catalog::{Catalog, PgCatalog, SqliteCatalog, Transition};
use teledrop_core::{
    BotToken, ByteSize, ChatId, ErrorKind, IncomingFile, JobState, MediaKind, MessageId, NewLink, UpdateId, UserId,
};
use teledrop_storage::Storage;
use teledrop_telegram::{Telegram, TelegramConfig};
use teledrop_worker::{Outcome, Pipeline, PipelineConfig, RateLimit};
use tg_sim::{Faults, FileSpec, Force429, Sim, SimConfig};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    sim: Sim,
    catalog: Arc<dyn Catalog>,
    storage: Storage,
    pipeline: Arc<Pipeline>,
    _dir: tempfile::TempDir,
}

async fn rig(max_attempts: u32) -> Rig {
    rig_via(max_attempts, false).await
}

/// With `hide_sizes`, the bot talks to the simulator through a proxy that
/// removes `file_size` from `getFile` answers: files whose size is known
/// only once downloaded.
async fn rig_via(max_attempts: u32, hide_sizes: bool) -> Rig {
    rig_with(max_attempts, hide_sizes, None).await
}

fn pipeline_config(max_attempts: u32, rate_limit: Option<RateLimit>) -> PipelineConfig {
    PipelineConfig {
        public_url: "https://files.example.com".parse().unwrap(),
        max_file_size: ByteSize::from_bytes(2000 << 20),
        allowed_users: vec![],
        progress_interval: Duration::from_secs(60),
        max_attempts,
        rate_limit,
        user_concurrency: NonZeroU32::new(2),
    }
}

async fn rig_with(max_attempts: u32, hide_sizes: bool, rate_limit: Option<RateLimit>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(
        SqliteCatalog::connect(&format!("sqlite://{}/c.db", dir.path().display()))
            .await
            .unwrap(),
    );
    rig_on(catalog, dir, hide_sizes, pipeline_config(max_attempts, rate_limit)).await
}

/// A rig around `catalog` (migrated here), with its store in `dir`.
async fn rig_on(catalog: Arc<dyn Catalog>, dir: tempfile::TempDir, hide_sizes: bool, config: PipelineConfig) -> Rig {
    let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let api = if hide_sizes {
        size_hiding_proxy(sim.base_url()).await
    } else {
        sim.base_url()
    };
    catalog.migrate().await.unwrap();
    let storage = Storage::from_url(&dir.path().join("objects").display().to_string()).unwrap();
    let token: BotToken = sim.token().parse().unwrap();
    let telegram = Telegram::new(TelegramConfig::new(token, api, false)).unwrap();
    let pipeline =
        Arc::new(Pipeline::new(catalog.clone(), storage.clone(), telegram, config).with_policy_ttl(Duration::ZERO));
    Rig {
        sim,
        catalog,
        storage,
        pipeline,
        _dir: dir,
    }
}

/// The update as the simulator would deliver it, fetched by long polling
/// with a throwaway bot client.
async fn update_body(rig: &Rig, update_id: i64) -> Envelope {
    let url = format!(
        "{}bot{}/getUpdates?offset={update_id}&limit=1&timeout=5",
        rig.sim.base_url(),
        rig.sim.token()
    );
    let v: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    let u = &v["result"][0];
    assert_eq!(u["update_id"].as_i64(), Some(update_id), "{v}");
    Envelope::new(update_id, serde_json::to_vec(u).unwrap())
}

/// Faults under which `method` answers 429 (with `retry_after` seconds)
/// once.
fn one_429(method: &str, retry_after: u32) -> Faults {
    Faults {
        force_429: Some(Force429 {
            method: Some(method.into()),
            retry_after,
            count: 1,
        }),
        ..Faults::default()
    }
}

fn links(log: &tg_sim::ChatLog) -> Vec<String> {
    log.visible()
        .filter_map(|m| {
            m.text
                .split_whitespace()
                .find(|w| w.contains("/download/"))
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn the_same_file_from_another_user_is_linked_without_a_download() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    let first = ctl
        .send_file(FileSpec::document(1, 300_000, 5).named("a.bin"))
        .await
        .unwrap();
    assert_eq!(
        rig.pipeline.handle(&update_body(&rig, first.update_id).await).await,
        Outcome::Done
    );
    ctl.wait_for(1, WAIT, |l| links(l).len() == 1).await.unwrap();

    // Every download would now fail: a second link proves none happened.
    ctl.set_faults(Faults {
        cut_download_after: Some(0),
        ..Faults::default()
    })
    .await
    .unwrap();
    let again = ctl
        .send_file(FileSpec::document(2, 300_000, 5).named("b.bin"))
        .await
        .unwrap();
    assert_eq!(again.file_unique_id, first.file_unique_id);
    assert_eq!(
        rig.pipeline.handle(&update_body(&rig, again.update_id).await).await,
        Outcome::Done
    );
    let log = ctl.wait_for(2, WAIT, |l| links(l).len() == 1).await.unwrap();
    assert!(log.visible().any(|m| m.text.contains("b.bin")), "{log:#?}");

    let blob = rig.catalog.blob(&first.file_unique_id).await.unwrap().unwrap();
    let files: Vec<_> = rig.storage.list(Some("blobs")).collect::<Vec<_>>().await;
    assert_eq!(files.len(), 1, "one shared blob");
    assert_eq!(blob.sha256.to_hex(), first.sha256);
    for user in [1, 2] {
        let u = rig.catalog.usage(UserId(user)).await.unwrap();
        assert_eq!((u.files, u.bytes), (1, 300_000), "each owner is charged once");
    }
}

use futures::StreamExt;

#[tokio::test]
async fn a_rate_limited_get_file_is_retried_and_then_stored() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    ctl.set_faults(one_429("getFile", 1)).await.unwrap();
    let sent = ctl.send_file(FileSpec::document(3, 10_000, 8)).await.unwrap();
    let env = update_body(&rig, sent.update_id).await;
    // First attempt: Telegram says 429 retry after 1 s; the job goes back to pending.
    assert_eq!(rig.pipeline.handle(&env).await, Outcome::Retry(Duration::from_secs(1)));
    let job = rig
        .catalog
        .job_by_update(UpdateId(sent.update_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.state, job.error_kind),
        (JobState::Pending, Some(ErrorKind::TelegramUnavailable))
    );
    // The redelivery stores it.
    assert_eq!(rig.pipeline.handle(&env).await, Outcome::Done);
    let job = rig.catalog.job(job.id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Stored, 2));
    let log = ctl.wait_for(3, WAIT, |l| links(l).len() == 1).await.unwrap();
    assert_eq!(
        log.visible().count(),
        1,
        "the status message became the one final reply: {log:#?}"
    );
    // A third delivery of the same update changes nothing and says nothing.
    assert_eq!(rig.pipeline.handle(&env).await, Outcome::Done);
    assert_eq!(ctl.messages(3).await.unwrap().version, log.version);
}

#[tokio::test]
async fn a_download_that_keeps_breaking_fails_the_job_and_tells_the_user() {
    let rig = rig(2).await;
    let ctl = rig.sim.control();
    ctl.set_faults(Faults {
        cut_download_after: Some(1000),
        ..Faults::default()
    })
    .await
    .unwrap();
    let sent = ctl
        .send_file(FileSpec::document(4, 100_000, 9).named("broken.bin"))
        .await
        .unwrap();
    let env = update_body(&rig, sent.update_id).await;
    assert!(matches!(rig.pipeline.handle(&env).await, Outcome::Retry(_)));
    assert_eq!(rig.pipeline.handle(&env).await, Outcome::Done);
    let job = rig
        .catalog
        .job_by_update(UpdateId(sent.update_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.state, job.error_kind),
        (JobState::Failed, Some(ErrorKind::Network))
    );
    assert!(job.replied_at.is_some());
    let log = ctl
        .wait_for(4, WAIT, |l| l.visible().any(|m| m.text.contains("Could not store")))
        .await
        .unwrap();
    assert!(links(&log).is_empty());
    let objects: Vec<_> = rig.storage.list(None).collect::<Vec<_>>().await;
    assert!(objects.is_empty(), "no half-written object: {objects:?}");
}

#[tokio::test]
async fn an_outcome_committed_but_not_replied_is_replied_at_recovery() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    let user = 6;
    // The user's message exists in the simulator's chat.
    let sent = ctl
        .send_file(FileSpec::document(user, 1000, 11).named("late.txt"))
        .await
        .unwrap();
    // A previous process stored it and died before replying.
    let incoming = IncomingFile {
        user_id: UserId(user),
        chat_id: ChatId(user),
        message_id: MessageId(i32::try_from(sent.message_id).unwrap()),
        kind: MediaKind::Document,
        telegram_file_id: sent.file_id.clone(),
        file_unique_id: sent.file_unique_id.clone(),
        size: Some(1000),
        file_name: "late.txt".into(),
        mime_type: "text/plain".into(),
    };
    let update = UpdateId(sent.update_id);
    let body = vec![7u8; 1000];
    teledrop_fixtures::store_committed(
        &*rig.catalog,
        &rig.storage,
        update,
        &incoming,
        &body,
        NewLink::unlimited(),
    )
    .await;
    assert_eq!(rig.catalog.unreplied_jobs(10).await.unwrap().len(), 1);

    teledrop_worker::recover_unfinished(rig.pipeline.clone(), 2, CancellationToken::new()).await;
    let log = ctl.wait_for(user, WAIT, |l| links(l).len() == 1).await.unwrap();
    assert!(log.visible().any(|m| m.text.contains("late.txt")));
    assert!(rig.catalog.unreplied_jobs(10).await.unwrap().is_empty());
    // Recovery again: nothing more is said.
    teledrop_worker::recover_unfinished(rig.pipeline.clone(), 2, CancellationToken::new()).await;
    assert_eq!(ctl.messages(user).await.unwrap().version, log.version);
}

#[tokio::test]
async fn the_worker_loop_settles_deliveries_from_the_bus() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    let bus = Arc::new(MemoryBus::new(8));
    let mut ids = Vec::new();
    for seed in 0..4 {
        let s = ctl
            .send_file(FileSpec::photo(8, 20_000 + seed, 100 + seed))
            .await
            .unwrap();
        ids.push(s.update_id);
    }
    for id in &ids {
        bus.publish(update_body(&rig, *id).await).await.unwrap();
    }
    let stop = CancellationToken::new();
    let worker = tokio::spawn(teledrop_worker::serve(
        bus.clone() as Arc<dyn Bus>,
        rig.pipeline.clone(),
        2,
        stop.clone(),
        Duration::from_secs(5),
    ));
    ctl.wait_for(8, WAIT, |l| links(l).len() == 4).await.unwrap();
    stop.cancel();
    worker.await.unwrap();
    let u = rig.catalog.usage(UserId(8)).await.unwrap();
    assert_eq!(u.files, 4);
}

#[tokio::test]
async fn a_job_running_elsewhere_is_not_taken_over() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    let sent = ctl.send_file(FileSpec::document(9, 1000, 12)).await.unwrap();
    let env = update_body(&rig, sent.update_id).await;
    // Another runner has just started it.
    let update: teledrop_telegram::Update = serde_json::from_slice(&env.body).unwrap();
    let teledrop_worker::Intake::NewJob(id) = rig.pipeline.accept(&update).await.unwrap() else {
        panic!("a new job")
    };
    rig.catalog
        .transition(id, Transition::new(JobState::Pending, JobState::Running, "elsewhere"))
        .await
        .unwrap();
    let before = ctl.messages(9).await.unwrap().version;
    assert!(matches!(rig.pipeline.handle(&env).await, Outcome::Retry(_)));
    let job = rig.catalog.job(id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Running, 1), "left to its runner");
    assert_eq!(ctl.messages(9).await.unwrap().version, before, "nothing said");
}

#[tokio::test]
async fn a_final_reply_refused_with_429_is_sent_on_redelivery() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    ctl.set_faults(one_429("editMessageText", 2)).await.unwrap();
    let sent = ctl
        .send_file(FileSpec::document(10, 5000, 13).named("r.bin"))
        .await
        .unwrap();
    let env = update_body(&rig, sent.update_id).await;
    assert_eq!(rig.pipeline.handle(&env).await, Outcome::Retry(Duration::from_secs(2)));
    let job = rig
        .catalog
        .job_by_update(UpdateId(sent.update_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Stored);
    assert!(job.replied_at.is_none(), "the user was not told yet");
    assert!(links(&ctl.messages(10).await.unwrap()).is_empty());
    assert_eq!(rig.pipeline.handle(&env).await, Outcome::Done);
    let log = ctl.wait_for(10, WAIT, |l| links(l).len() == 1).await.unwrap();
    assert_eq!(log.visible().count(), 1, "{log:#?}");
    assert!(rig.catalog.job(job.id).await.unwrap().unwrap().replied_at.is_some());
    assert_eq!(rig.catalog.usage(UserId(10)).await.unwrap().files, 1, "stored once");
}

#[tokio::test]
async fn a_blob_whose_object_vanished_is_downloaded_again() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    let first = ctl.send_file(FileSpec::document(11, 4000, 14)).await.unwrap();
    assert_eq!(
        rig.pipeline.handle(&update_body(&rig, first.update_id).await).await,
        Outcome::Done
    );
    let old = rig.catalog.blob(&first.file_unique_id).await.unwrap().unwrap();
    rig.storage.delete(&old.object_key).await.unwrap();

    let again = ctl.send_file(FileSpec::document(12, 4000, 14)).await.unwrap();
    assert_eq!(
        rig.pipeline.handle(&update_body(&rig, again.update_id).await).await,
        Outcome::Done
    );
    ctl.wait_for(12, WAIT, |l| links(l).len() == 1).await.unwrap();
    let new = rig.catalog.blob(&first.file_unique_id).await.unwrap().unwrap();
    assert_ne!(new.object_key, old.object_key);
    let read = rig.storage.get(&new.object_key, None).await.unwrap();
    assert_eq!(read.total_size, 4000);
    assert_eq!(new.sha256.to_hex(), first.sha256);
}

// ---- helpers of the quota and rate-limit tests ---------------------------

/// A reverse proxy to `upstream` that drops `file_size` from `getFile`
/// results (Telegram may omit it).
async fn size_hiding_proxy(upstream: url::Url) -> url::Url {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let app = axum::Router::new().fallback(move |req: Request| {
        let http = http.clone();
        let upstream = upstream.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .trim_start_matches('/')
                .to_owned();
            let method = req.method().clone();
            let content_type = req.headers().get(axum::http::header::CONTENT_TYPE).cloned();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
            let mut forward = http.request(method, format!("{upstream}{path}")).body(body);
            if let Some(ct) = content_type {
                forward = forward.header(axum::http::header::CONTENT_TYPE, ct);
            }
            let resp = forward.send().await.unwrap();
            let status = resp.status();
            let content_type = resp.headers().get(axum::http::header::CONTENT_TYPE).cloned();
            let mut body = resp.bytes().await.unwrap();
            if path.to_ascii_lowercase().contains("/getfile") {
                let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                if let Some(r) = v["result"].as_object_mut() {
                    r.remove("file_size");
                }
                body = serde_json::to_vec(&v).unwrap().into();
            }
            let mut out = Response::builder().status(status);
            if let Some(ct) = content_type {
                out = out.header(axum::http::header::CONTENT_TYPE, ct);
            }
            out.body(Body::from(body)).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/").parse().unwrap()
}

async fn policy(rig: &Rig, key: &str, spec: serde_json::Value) {
    rig.catalog.upsert_policy(key, 1, &spec).await.unwrap();
}

/// Sends a file and runs its update to the end; returns the job.
async fn ingest(rig: &Rig, spec: FileSpec) -> (tg_sim::SentFile, teledrop_core::JobRecord) {
    let sent = rig.sim.control().send_file(spec).await.unwrap();
    ingest_update(rig, sent.update_id).await;
    let job = rig
        .catalog
        .job_by_update(UpdateId(sent.update_id))
        .await
        .unwrap()
        .unwrap();
    (sent, job)
}

async fn ingest_update(rig: &Rig, update_id: i64) {
    assert_eq!(
        rig.pipeline.handle(&update_body(rig, update_id).await).await,
        Outcome::Done
    );
}

/// The same file message without `file_size`, as a new update.
async fn without_size(rig: &Rig, sent: &tg_sim::SentFile) -> i64 {
    let env = update_body(rig, sent.update_id).await;
    let mut update: serde_json::Value = serde_json::from_slice(&env.body).unwrap();
    update.as_object_mut().unwrap().remove("update_id");
    let doc = update["message"]["document"].as_object_mut().unwrap();
    assert!(doc.remove("file_size").is_some(), "{update}");
    rig.sim.control().send_raw_update(update).await.unwrap()
}

async fn objects(rig: &Rig) -> usize {
    rig.storage.list(None).collect::<Vec<_>>().await.len()
}

fn assert_over_quota(job: &teledrop_core::JobRecord) {
    assert_eq!(
        (job.state, job.error_kind, job.file_id),
        (JobState::Failed, Some(ErrorKind::OverQuota), None),
        "{job:#?}"
    );
    assert!(job.replied_at.is_some(), "the user was told");
}

mod fair;
mod local_files;
mod notices;
mod pool;
mod quotas;
mod rate_limit;
mod update_ids;

/// Two pipelines with pools of their own on one fresh Postgres database
/// (as two worker replicas), sharing a folder store; `rig` is the first.
async fn two_replicas_on_postgres(rate_limit: Option<RateLimit>) -> (Rig, Vec<Arc<Pipeline>>) {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = teledrop_testkit::postgres::fresh_database().await;
    let storage = Storage::from_url(&dir.path().join("objects").display().to_string()).unwrap();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        // A pool of its own per replica, as separate processes have.
        let catalog: Arc<dyn Catalog> = Arc::new(PgCatalog::connect(&url).await.unwrap());
        catalog.migrate().await.unwrap();
        let token: BotToken = sim.token().parse().unwrap();
        let telegram = Telegram::new(TelegramConfig::new(token, sim.base_url(), false)).unwrap();
        // One user's files race here on purpose: no per-user concurrency.
        let config = PipelineConfig {
            user_concurrency: None,
            ..pipeline_config(3, rate_limit)
        };
        replicas.push(Arc::new(
            Pipeline::new(catalog, storage.clone(), telegram, config).with_policy_ttl(Duration::ZERO),
        ));
    }
    let rig = Rig {
        catalog: replicas[0].catalog().clone(),
        pipeline: replicas[0].clone(),
        sim,
        storage,
        _dir: dir,
    };
    (rig, replicas)
}

/// Sends a file per `(user, seed)` and then handles every update at
/// once, alternating between the replicas; returns the updates' envelopes.
async fn all_at_once(rig: &Rig, replicas: &[Arc<Pipeline>], files: &[(i64, u64)]) -> Vec<Envelope> {
    let ctl = rig.sim.control();
    let mut envelopes = Vec::new();
    for (user, seed) in files {
        let sent = ctl.send_file(FileSpec::document(*user, 1000, *seed)).await.unwrap();
        envelopes.push(update_body(rig, sent.update_id).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(envelopes.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, env) in envelopes.iter().cloned().enumerate() {
        let pipeline = replicas[i % replicas.len()].clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            pipeline.handle(&env).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.unwrap(), Outcome::Done);
    }
    envelopes
}

#[tokio::test]
async fn stored_and_deduplicated_files_are_counted_in_the_metrics() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    let metrics = rig.pipeline.metrics().clone();
    let bus = Arc::new(MemoryBus::new(8));
    // The same file from two users: one upload, then one link to it.
    let first = ctl.send_file(FileSpec::document(40, 50_000, 77)).await.unwrap();
    let again = ctl.send_file(FileSpec::document(41, 50_000, 77)).await.unwrap();
    assert_eq!(again.file_unique_id, first.file_unique_id);
    for id in [first.update_id, again.update_id] {
        bus.publish(update_body(&rig, id).await).await.unwrap();
    }
    let stop = CancellationToken::new();
    // One at a time: the second job finds the first one's blob.
    let worker = tokio::spawn(teledrop_worker::serve(
        bus.clone() as Arc<dyn Bus>,
        rig.pipeline.clone(),
        1,
        stop.clone(),
        WAIT,
    ));
    ctl.wait_for(41, WAIT, |l| links(l).len() == 1).await.unwrap();
    stop.cancel();
    worker.await.unwrap();

    assert_eq!(metrics.jobs_stored(), 1);
    assert_eq!(metrics.jobs_deduplicated(), 1);
    assert_eq!(metrics.stored_bytes(), 50_000);
    assert_eq!(metrics.deliveries("ack"), 2);
    assert_eq!(metrics.deliveries("retry") + metrics.deliveries("drop"), 0);
    assert_eq!(metrics.jobs_in_flight(), 0);
    assert!(ErrorKind::ALL.iter().all(|k| metrics.jobs_failed(*k) == 0));
    let text = teledrop_metrics::render(&[&*metrics]);
    for line in [
        "teledrop_worker_jobs_total{outcome=\"stored\",error=\"\"} 1\n",
        "teledrop_worker_jobs_total{outcome=\"deduplicated\",error=\"\"} 1\n",
        "teledrop_worker_stored_bytes_total 50000\n",
        "teledrop_worker_deliveries_total{outcome=\"ack\"} 2\n",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}
