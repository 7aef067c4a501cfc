//! Replies that are not repeated for every message.

use super::*;

fn hints(log: &tg_sim::ChatLog) -> usize {
    log.visible().filter(|m| m.text.contains("I can't store")).count()
}

#[tokio::test]
async fn text_gets_one_hint_a_minute() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    for text in ["hello", "anyone there?", "hello??"] {
        let update_id = ctl.send_text(70, text).await.unwrap().update_id;
        ingest_update(&rig, update_id).await;
    }
    // Someone else gets their own hint.
    let update_id = ctl.send_text(71, "hi").await.unwrap().update_id;
    ingest_update(&rig, update_id).await;
    ctl.wait_for(71, WAIT, |l| hints(l) == 1).await.unwrap();
    let log = ctl.messages(70).await.unwrap();
    assert_eq!(hints(&log), 1, "{log:#?}");
    assert_eq!(log.visible().count(), 1, "nothing else was said: {log:#?}");
    // Commands are answered every time.
    for _ in 0..2 {
        let update_id = ctl.send_text(70, "/help").await.unwrap().update_id;
        ingest_update(&rig, update_id).await;
    }
    ctl.wait_for(70, WAIT, |l| l.visible().count() == 3).await.unwrap();
}

#[tokio::test]
async fn a_user_not_allowed_is_told_once_with_their_id() {
    let dir = tempfile::tempdir().unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(
        SqliteCatalog::connect(&format!("sqlite://{}/c.db", dir.path().display()))
            .await
            .unwrap(),
    );
    let config = PipelineConfig {
        allowed_users: vec![UserId(72)],
        ..pipeline_config(3, None)
    };
    let rig = rig_on(catalog, dir, false, config).await;
    let ctl = rig.sim.control();
    let stranger = 7_300_012_345;
    let file = ctl.send_file(FileSpec::document(stranger, 1000, 90)).await.unwrap();
    ingest_update(&rig, file.update_id).await;
    for text in ["/start", "let me in", "please"] {
        let update_id = ctl.send_text(stranger, text).await.unwrap().update_id;
        ingest_update(&rig, update_id).await;
    }
    let another = ctl.send_file(FileSpec::document(stranger, 1000, 91)).await.unwrap();
    ingest_update(&rig, another.update_id).await;
    // The allowed user, after all that, is answered: the stranger's
    // updates have all been handled by then.
    let update_id = ctl.send_text(72, "/help").await.unwrap().update_id;
    ingest_update(&rig, update_id).await;
    ctl.wait_for(72, WAIT, |l| l.visible().count() == 1).await.unwrap();

    let log = ctl.messages(stranger).await.unwrap();
    let said: Vec<_> = log.visible().map(|m| m.text.as_str()).collect();
    assert_eq!(said.len(), 1, "one reply, not one per message: {said:#?}");
    assert!(said[0].contains("not on its list of allowed users"), "{}", said[0]);
    assert!(
        said[0].contains(&stranger.to_string()),
        "the reply shows the user's id: {}",
        said[0]
    );
    assert!(
        rig.catalog
            .job_by_update(UpdateId(file.update_id))
            .await
            .unwrap()
            .is_none(),
        "no job"
    );
    assert_eq!(objects(&rig).await, 0);
}
