//! Telegram picks the next update id at random after a week without
//! updates, so an id that a finished job used can come back on a new
//! message (the "Reused update id" scenario). Jobs are keyed by chat and
//! message: the new message is stored, and a redelivery of it is not.

use super::*;

/// The update `update` as Telegram would send it had it numbered it
/// `update_id`. Rewriting the delivered body is enough: the simulator has
/// no say in which id the bus hands the worker.
async fn numbered(rig: &Rig, update: i64, update_id: i64) -> Envelope {
    let env = update_body(rig, update).await;
    let mut body: serde_json::Value = serde_json::from_slice(&env.body).unwrap();
    body["update_id"] = update_id.into();
    Envelope::new(update_id, serde_json::to_vec(&body).unwrap())
}

async fn job_of(rig: &Rig, user: i64, sent: &tg_sim::SentFile) -> teledrop_core::JobRecord {
    let message = MessageId(i32::try_from(sent.message_id).unwrap());
    rig.catalog
        .job_by_message(ChatId(user), message)
        .await
        .unwrap()
        .expect("the message has a job")
}

#[tokio::test]
async fn a_new_message_under_a_reused_update_id_is_stored_and_linked_once() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    let user = 70;
    let (old_sent, old) = ingest(&rig, FileSpec::document(user, 2000, 90).named("old.bin")).await;
    assert_eq!(old.state, JobState::Stored, "{old:#?}");
    ctl.wait_for(user, WAIT, |l| links(l).len() == 1).await.unwrap();

    let new_sent = ctl
        .send_file(FileSpec::document(user, 3000, 91).named("new.bin"))
        .await
        .unwrap();
    let reused = numbered(&rig, new_sent.update_id, old_sent.update_id).await;
    assert_eq!(rig.pipeline.handle(&reused).await, Outcome::Done);
    let new = job_of(&rig, user, &new_sent).await;
    assert_ne!(new.id, old.id, "a job of its own");
    assert_eq!(
        (new.state, new.update_id),
        (JobState::Stored, UpdateId(old_sent.update_id)),
        "{new:#?}"
    );
    let log = ctl.wait_for(user, WAIT, |l| links(l).len() == 2).await.unwrap();
    assert!(log.visible().any(|m| m.text.contains("new.bin")), "{log:#?}");

    // The same message again: the bus redelivering it, then Telegram
    // sending it under another id. Nothing new is stored or said.
    assert_eq!(rig.pipeline.handle(&reused).await, Outcome::Done);
    let resent = numbered(&rig, new_sent.update_id, old_sent.update_id + 1000).await;
    assert_eq!(rig.pipeline.handle(&resent).await, Outcome::Done);
    assert_eq!(
        ctl.messages(user).await.unwrap().version,
        log.version,
        "no second reply"
    );
    assert_eq!(job_of(&rig, user, &new_sent).await.id, new.id);
    assert_eq!(rig.catalog.job(old.id).await.unwrap().unwrap().state, JobState::Stored);
    let u = rig.catalog.usage(UserId(user)).await.unwrap();
    assert_eq!((u.files, u.bytes), (2, 5000), "each file stored once");
}

#[tokio::test]
async fn giving_up_on_a_reused_update_id_fails_the_new_message_not_the_old_one() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    let user = 71;
    let (old_sent, old) = ingest(&rig, FileSpec::document(user, 2000, 92)).await;
    assert_eq!(old.state, JobState::Stored, "{old:#?}");

    ctl.set_faults(one_429("getFile", 1)).await.unwrap();
    let new_sent = ctl.send_file(FileSpec::document(user, 3000, 93)).await.unwrap();
    let reused = numbered(&rig, new_sent.update_id, old_sent.update_id).await;
    assert!(matches!(rig.pipeline.handle(&reused).await, Outcome::Retry(_)));
    // That was the last delivery the bus allows.
    assert_eq!(rig.pipeline.give_up(&reused, 3).await, Outcome::Done);

    let new = job_of(&rig, user, &new_sent).await;
    assert_eq!(new.state, JobState::Failed, "{new:#?}");
    assert!(new.replied_at.is_some(), "the user was told");
    assert_eq!(rig.catalog.job(old.id).await.unwrap(), Some(old));
}
