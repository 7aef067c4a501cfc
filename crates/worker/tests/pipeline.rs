//! The pipeline against tg-sim, a real SQLite catalog and a real folder
//! store, in-process: deduplication, retries, failures and recovery.

use std::sync::Arc;
use std::time::Duration;
use teledrop_bus::{Bus, Envelope, MemoryBus};
use teledrop_catalog::{Catalog, SqliteCatalog, StoredBlob, Transition};
use teledrop_core::{
    BotToken, ByteSize, ChatId, ErrorKind, IncomingFile, JobState, MediaKind, MessageId, NewLink, ObjectKey, UpdateId,
    UserId,
};
use teledrop_storage::Storage;
use teledrop_telegram::{Telegram, TelegramConfig};
use teledrop_worker::{Outcome, Pipeline, PipelineConfig};
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
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(
        SqliteCatalog::connect(&format!("sqlite://{}/c.db", dir.path().display()))
            .await
            .unwrap(),
    );
    catalog.migrate().await.unwrap();
    let storage = Storage::from_url(&dir.path().join("objects").display().to_string()).unwrap();
    let token: BotToken = sim.token().parse().unwrap();
    let telegram = Telegram::new(TelegramConfig::new(token, sim.base_url(), false)).unwrap();
    let pipeline = Arc::new(Pipeline::new(
        catalog.clone(),
        storage.clone(),
        telegram,
        PipelineConfig {
            public_url: "https://files.example.com".parse().unwrap(),
            max_file_size: ByteSize::from_bytes(2000 << 20),
            allowed_users: vec![],
            progress_interval: Duration::from_secs(60),
            max_attempts,
        },
    ));
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
    Envelope {
        update_id,
        body: serde_json::to_vec(u).unwrap().into(),
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
    ctl.set_faults(Faults {
        force_429: Some(Force429 {
            method: Some("getFile".into()),
            retry_after: 1,
            count: 1,
        }),
        ..Faults::default()
    })
    .await
    .unwrap();
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
    let job = rig
        .catalog
        .accept_job(UpdateId(sent.update_id), &incoming)
        .await
        .unwrap()
        .into_job();
    rig.catalog
        .transition(job.id, Transition::new(JobState::Pending, JobState::Running, "t"))
        .await
        .unwrap();
    let key = ObjectKey::for_new_blob();
    let body = vec![7u8; 1000];
    let put = rig
        .storage
        .put_stream(
            &key,
            futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(body))]),
            Some(1000),
            1 << 20,
        )
        .await
        .unwrap();
    rig.catalog
        .commit_stored(
            job.id,
            StoredBlob {
                object_key: key,
                size: put.size,
                sha256: put.sha256,
            },
            NewLink::unlimited(),
        )
        .await
        .unwrap();
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
    ctl.set_faults(Faults {
        force_429: Some(Force429 {
            method: Some("editMessageText".into()),
            retry_after: 2,
            count: 1,
        }),
        ..Faults::default()
    })
    .await
    .unwrap();
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
