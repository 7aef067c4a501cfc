//! Local mode (`telegram-bot-api --local`): a `file_path` the Bot API
//! server hands out is read only if it names a regular file beneath
//! `TELEGRAM_LOCAL_DIR`, reached without symlinks. Anything else fails the
//! job at once with one plain reply, and nothing is stored.

use super::*;
use std::path::{Path, PathBuf};

/// A local-mode rig: tg-sim writes its files under `<tmp>/bot-api`, the
/// bot reads beneath that directory. Returns the rig and the directory.
async fn local_rig() -> (Rig, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bot_api = dir.path().join("bot-api");
    std::fs::create_dir_all(&bot_api).unwrap();
    let sim = Sim::start(
        SimConfig {
            local_mode: true,
            local_dir: bot_api.clone(),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
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
    let mut config = TelegramConfig::new(token, sim.base_url(), true);
    config.local_dir = bot_api.clone();
    let telegram = Telegram::new(config).unwrap();
    let pipeline = Arc::new(Pipeline::new(
        catalog.clone(),
        storage.clone(),
        telegram,
        pipeline_config(3, None),
    ));
    let rig = Rig {
        sim,
        catalog,
        storage,
        pipeline,
        _dir: dir,
    };
    (rig, bot_api)
}

/// User `user` sends a file whose `getFile` answers `file_path`; the
/// pipeline handles the update once. Asserts it was refused for good on
/// that first delivery, with one reply, and nothing stored.
async fn assert_refused(rig: &Rig, user: i64, file_path: &Path) {
    let ctl = rig.sim.control();
    let sent = ctl
        .send_file(FileSpec::document(user, 5_000, 600 + user as u64).named("report.pdf"))
        .await
        .unwrap();
    ctl.set_local_file_path(&sent.file_id, file_path.to_str().unwrap())
        .await
        .unwrap();
    let env = update_body(rig, sent.update_id).await;
    assert_eq!(
        rig.pipeline.handle(&env).await,
        Outcome::Done,
        "{file_path:?}: not retried"
    );

    let job = rig
        .catalog
        .job_by_update(UpdateId(sent.update_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (job.state, job.error_kind, job.file_id, job.attempts),
        (JobState::Failed, Some(ErrorKind::Unsupported), None, 1),
        "{file_path:?}: failed at once: {job:#?}"
    );
    assert!(job.replied_at.is_some(), "{file_path:?}: the user was told");
    let detail = job.error_detail.clone().unwrap_or_default();
    assert!(
        detail.contains("refused"),
        "{file_path:?}: the record says why: {detail}"
    );
    assert!(!detail.contains(rig.sim.token()), "the token is redacted: {detail}");

    // Handle returned after the reply: the chat is settled.
    let log = ctl.messages(user).await.unwrap();
    let replies: Vec<_> = log.visible().map(|m| m.text.clone()).collect();
    assert_eq!(replies.len(), 1, "{file_path:?}: exactly one reply: {log:#?}");
    assert!(
        replies[0].contains("report.pdf") && replies[0].contains("can't be stored"),
        "{file_path:?}: {replies:?}"
    );
    assert!(
        !replies[0].contains(file_path.to_str().unwrap()),
        "no operator detail to the user"
    );
    assert!(links(&log).is_empty(), "{file_path:?}: no link");

    let usage = rig.catalog.usage(UserId(user)).await.unwrap();
    assert_eq!((usage.files, usage.bytes), (0, 0), "{file_path:?}: no file row");
    let objects: Vec<_> = rig.storage.list(None).collect::<Vec<_>>().await;
    assert!(objects.is_empty(), "{file_path:?}: no object: {objects:?}");
}

#[tokio::test]
async fn hostile_file_paths_are_refused_at_once_with_one_reply_and_nothing_stored() {
    let (rig, bot_api) = local_rig().await;
    let docs = bot_api.join(rig.sim.token()).join("documents");
    std::fs::create_dir_all(&docs).unwrap();
    // A file next to the Bot API directory, readable by the worker.
    let outside = bot_api.parent().unwrap().join("secret.txt");
    std::fs::write(&outside, b"not for publishing").unwrap();
    let link = docs.join("file_7.pdf");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let fifo = docs.join("file_8.pdf");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();

    let paths = [
        PathBuf::from("/etc/passwd"),
        PathBuf::from("/proc/self/environ"),
        docs.join("../../../secret.txt"),
        link,
        fifo,
    ];
    for (user, path) in (700..).zip(&paths) {
        assert_refused(&rig, user, path).await;
    }
}

#[tokio::test]
async fn a_regular_file_beneath_the_directory_is_stored_in_local_mode() {
    let (rig, _) = local_rig().await;
    let ctl = rig.sim.control();
    let sent = ctl
        .send_file(FileSpec::document(720, 300_000, 721).named("fine.bin"))
        .await
        .unwrap();
    assert_eq!(
        rig.pipeline.handle(&update_body(&rig, sent.update_id).await).await,
        Outcome::Done
    );
    let log = ctl.wait_for(720, WAIT, |l| links(l).len() == 1).await.unwrap();
    assert_eq!(log.visible().count(), 1, "{log:#?}");
    let blob = rig.catalog.blob(&sent.file_unique_id).await.unwrap().unwrap();
    assert_eq!(blob.sha256.to_hex(), sent.sha256, "the bytes of the file the sim wrote");
    let objects: Vec<_> = rig.storage.list(None).collect::<Vec<_>>().await;
    assert_eq!(objects.len(), 1, "{objects:?}");
}
