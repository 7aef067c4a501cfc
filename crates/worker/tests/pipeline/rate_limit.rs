//! The per-user rate limit, counted in the catalog across replicas.

use super::*;

/// `files` per hour: a window no slow machine can see pass mid-test, so
/// no slot frees up while a test counts them.
fn per_hour(files: u32) -> RateLimit {
    RateLimit::new(files, Duration::from_secs(3600)).unwrap()
}

fn assert_rate_limited(job: &teledrop_core::JobRecord) {
    assert_eq!(
        (job.state, job.error_kind, job.file_id, job.attempts),
        (JobState::Failed, Some(ErrorKind::RateLimited), None, 1),
        "refused at once, not retried: {job:#?}"
    );
    assert!(job.replied_at.is_some(), "the user was told");
}

fn slowed_down(log: &tg_sim::ChatLog) -> Vec<String> {
    log.visible()
        .filter(|m| m.text.contains("Slow down"))
        .map(|m| m.text.clone())
        .collect()
}

#[tokio::test]
async fn files_past_the_rate_limit_are_refused_with_a_reply_and_others_are_not() {
    let rig = rig_with(3, false, Some(per_hour(2))).await;
    let ctl = rig.sim.control();
    let user = 40;
    for seed in 0..2 {
        let (_, job) = ingest(&rig, FileSpec::document(user, 1000, 80 + seed)).await;
        assert_eq!(job.state, JobState::Stored, "{job:#?}");
    }
    // getFile would answer 429 once: a count left untouched shows nothing
    // was asked of Telegram for the refused file.
    let no_get_file = one_429("getFile", 1);
    ctl.set_faults(no_get_file.clone()).await.unwrap();
    let (_, third) = ingest(&rig, FileSpec::document(user, 1000, 82).named("third.bin")).await;
    assert_rate_limited(&third);
    let log = ctl.wait_for(user, WAIT, |l| !slowed_down(l).is_empty()).await.unwrap();
    let reply = &slowed_down(&log)[0];
    assert!(
        reply.contains("Slow down: you can send at most 2 files per hour. Try this one again in"),
        "{reply}"
    );
    assert!(reply.contains("third.bin"), "{reply}");
    assert_eq!(links(&log).len(), 2, "no link for the refused file");
    assert_eq!(
        log.visible().count(),
        3,
        "one reply per file, no status message: {log:#?}"
    );
    assert_eq!(ctl.faults().await.unwrap().force_429, no_get_file.force_429);
    ctl.set_faults(Faults::default()).await.unwrap();

    // A file already stored would need no download, but the user sent it:
    // it counts just the same.
    let (_, dup) = ingest(&rig, FileSpec::document(user, 1000, 80).named("again.bin")).await;
    assert_rate_limited(&dup);
    ctl.wait_for(user, WAIT, |l| slowed_down(l).len() == 2).await.unwrap();
    assert_eq!(objects(&rig).await, 2);
    assert_eq!(rig.catalog.usage(UserId(user)).await.unwrap().files, 2);

    // Someone else is not held back, even with that very file.
    let (_, other) = ingest(&rig, FileSpec::document(41, 1000, 82).named("third.bin")).await;
    assert_eq!(other.state, JobState::Stored, "{other:#?}");
    let log = ctl.wait_for(41, WAIT, |l| links(l).len() == 1).await.unwrap();
    assert!(slowed_down(&log).is_empty());

    // A command is never limited.
    let before = ctl.messages(user).await.unwrap().visible().count();
    let update_id = ctl.send_text(user, "/help").await.unwrap().update_id;
    ingest_update(&rig, update_id).await;
    ctl.wait_for(user, WAIT, |l| l.visible().count() == before + 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_admitted_job_that_comes_back_keeps_its_slot() {
    let rig = rig_with(3, false, Some(per_hour(2))).await;
    let ctl = rig.sim.control();
    let user = 42;
    ctl.set_faults(one_429("getFile", 1)).await.unwrap();
    // Admitted, then Telegram asks for a retry.
    let first = ctl
        .send_file(FileSpec::document(user, 1000, 90).named("first.bin"))
        .await
        .unwrap();
    let env = update_body(&rig, first.update_id).await;
    assert_eq!(rig.pipeline.handle(&env).await, Outcome::Retry(Duration::from_secs(1)));
    let (_, second) = ingest(&rig, FileSpec::document(user, 1000, 91)).await;
    assert_eq!(second.state, JobState::Stored, "{second:#?}");
    // The limit is reached, but the redelivery holds a slot already.
    assert_eq!(rig.pipeline.handle(&env).await, Outcome::Done);
    let job = rig
        .catalog
        .job_by_update(UpdateId(first.update_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Stored, 2), "{job:#?}");
    // And it took no other: the next file is the one refused.
    let (_, third) = ingest(&rig, FileSpec::document(user, 1000, 92)).await;
    assert_rate_limited(&third);
    let log = ctl
        .wait_for(user, WAIT, |l| links(l).len() == 2 && slowed_down(l).len() == 1)
        .await
        .unwrap();
    assert!(
        log.visible()
            .any(|m| m.text.contains("first.bin") && m.text.contains("/download/"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_sharing_one_postgres_catalog_admit_exactly_the_limit() {
    const LIMIT: u32 = 3;
    const FILES: usize = 8;
    let (rig, replicas) = two_replicas_on_postgres(Some(per_hour(LIMIT))).await;
    let ctl = rig.sim.control();
    let user = 43;
    let files: Vec<(i64, u64)> = (0..FILES as u64).map(|seed| (user, 100 + seed)).collect();
    let envelopes = all_at_once(&rig, &replicas, &files).await;

    let mut stored = 0;
    for env in &envelopes {
        let job = rig
            .catalog
            .job_by_update(UpdateId(env.update_id))
            .await
            .unwrap()
            .unwrap();
        match job.state {
            JobState::Stored => stored += 1,
            _ => assert_rate_limited(&job),
        }
    }
    assert_eq!(stored, LIMIT as usize, "exactly the limit, over both replicas");
    let log = ctl
        .wait_for(user, WAIT, |l| {
            links(l).len() == LIMIT as usize && slowed_down(l).len() == FILES - LIMIT as usize
        })
        .await
        .unwrap();
    assert_eq!(log.visible().count(), FILES, "{log:#?}");
    assert_eq!(rig.catalog.usage(UserId(user)).await.unwrap().files, u64::from(LIMIT));
}
