//! `Reject` quotas at ingest: refused before the download, checked again
//! once the size is known, exact under concurrency; dry runs only count.

use super::*;

#[tokio::test]
async fn a_user_over_a_byte_quota_is_refused_before_anything_is_downloaded() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    policy(
        &rig,
        "default/per-user",
        serde_json::json!({"perUser": {"maxBytes": "10Ki"}, "onQuotaExceeded": "Reject"}),
    )
    .await;
    // Under the quota: stored as usual.
    let (_, first) = ingest(&rig, FileSpec::document(20, 8192, 30).named("first.bin")).await;
    assert_eq!(first.state, JobState::Stored);
    ctl.wait_for(20, WAIT, |l| links(l).len() == 1).await.unwrap();

    // getFile would answer 429 once (and the job be retried): a count
    // left untouched shows the bot never asked where the bytes are.
    let no_get_file = one_429("getFile", 1);
    ctl.set_faults(no_get_file.clone()).await.unwrap();
    let (_, job) = ingest(&rig, FileSpec::document(20, 4096, 31).named("second.bin")).await;
    assert_over_quota(&job);
    let log = ctl
        .wait_for(20, WAIT, |l| l.visible().any(|m| m.text.contains("second.bin")))
        .await
        .unwrap();
    let reply = log.last().unwrap();
    assert!(
        reply
            .text
            .contains("this file (4.0 KiB) would exceed your quota of 10.0 KiB: 8.0 KiB stored already"),
        "{reply:#?}"
    );
    assert!(reply.text.contains("operator"), "{reply:#?}");
    assert_eq!(links(&log).len(), 1, "no link for the refused file");
    assert_eq!(ctl.faults().await.unwrap().force_429, no_get_file.force_429);
    assert_eq!(objects(&rig).await, 1, "nothing new stored");
    let u = rig.catalog.usage(UserId(20)).await.unwrap();
    assert_eq!((u.files, u.bytes), (1, 8192), "usage unchanged");

    // The quota is per user: someone else may store it.
    ctl.set_faults(Faults::default()).await.unwrap();
    let (_, other) = ingest(&rig, FileSpec::document(21, 4096, 31).named("second.bin")).await;
    assert_eq!(other.state, JobState::Stored);
    ctl.wait_for(21, WAIT, |l| links(l).len() == 1).await.unwrap();

    // Now that its bytes are stored, sending it again would need no
    // download, but it would add a file to the user's usage: refused too.
    let (_, dup) = ingest(&rig, FileSpec::document(20, 4096, 31).named("again.bin")).await;
    assert_over_quota(&dup);
    assert_eq!(objects(&rig).await, 2);
    let u = rig.catalog.usage(UserId(20)).await.unwrap();
    assert_eq!((u.files, u.bytes), (1, 8192));
}

#[tokio::test]
async fn a_file_count_quota_refuses_the_file_past_it() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    policy(
        &rig,
        "default/two-files",
        serde_json::json!({"perUser": {"maxFiles": 2}}),
    )
    .await;
    for seed in 0..2 {
        let (_, job) = ingest(&rig, FileSpec::document(22, 1000, 40 + seed)).await;
        assert_eq!(job.state, JobState::Stored);
    }
    let (_, job) = ingest(&rig, FileSpec::document(22, 1000, 42).named("third.txt")).await;
    assert_over_quota(&job);
    let log = ctl
        .wait_for(22, WAIT, |l| l.visible().any(|m| m.text.contains("third.txt")))
        .await
        .unwrap();
    let reply = log.last().unwrap();
    assert!(
        reply
            .text
            .contains("this file would exceed your quota of 2 files: 2 stored already"),
        "{reply:#?}"
    );
    assert_eq!(links(&log).len(), 2);
    assert_eq!(rig.catalog.usage(UserId(22)).await.unwrap().files, 2);
    assert_eq!(objects(&rig).await, 2);
}

#[tokio::test]
async fn evict_oldest_quotas_and_unparsable_policies_never_refuse() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    policy(
        &rig,
        "default/evict",
        serde_json::json!({"perUser": {"maxBytes": "1Ki", "maxFiles": 1}, "onQuotaExceeded": "EvictOldest"}),
    )
    .await;
    // Skipped with a warning: not a valid spec.
    policy(
        &rig,
        "default/broken",
        serde_json::json!({"perUser": {"maxBytes": "lots"}}),
    )
    .await;
    // A Reject quota for someone else.
    policy(
        &rig,
        "default/others",
        serde_json::json!({"selector": {"users": [99]}, "perUser": {"maxFiles": 0}}),
    )
    .await;
    for seed in 0..3 {
        let (_, job) = ingest(&rig, FileSpec::document(23, 2000, 50 + seed)).await;
        assert_eq!(job.state, JobState::Stored, "{job:#?}");
    }
    ctl.wait_for(23, WAIT, |l| links(l).len() == 3).await.unwrap();
    assert_eq!(rig.catalog.usage(UserId(23)).await.unwrap().files, 3);
}

#[tokio::test]
async fn a_file_of_unknown_size_is_checked_once_telegram_tells_its_size() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    policy(
        &rig,
        "default/per-user",
        serde_json::json!({"perUser": {"maxBytes": "10Ki"}}),
    )
    .await;
    let (_, first) = ingest(&rig, FileSpec::document(24, 8192, 60)).await;
    assert_eq!(first.state, JobState::Stored);
    // The update carries no size; getFile does. Any download would break.
    ctl.set_faults(Faults {
        cut_download_after: Some(0),
        ..Faults::default()
    })
    .await
    .unwrap();
    let sent = ctl
        .send_file(FileSpec::document(24, 4096, 61).named("sizeless.bin"))
        .await
        .unwrap();
    let update_id = without_size(&rig, &sent).await;
    ingest_update(&rig, update_id).await;
    let job = rig.catalog.job_by_update(UpdateId(update_id)).await.unwrap().unwrap();
    assert_eq!(job.incoming.size, None);
    assert_over_quota(&job);
    let log = ctl
        .wait_for(24, WAIT, |l| l.visible().any(|m| m.text.contains("would exceed")))
        .await
        .unwrap();
    assert!(
        log.last()
            .unwrap()
            .text
            .contains("this file (4.0 KiB) would exceed your quota of 10.0 KiB: 8.0 KiB stored already"),
        "{log:#?}"
    );
    assert_eq!(objects(&rig).await, 1);
    assert_eq!(rig.catalog.usage(UserId(24)).await.unwrap().bytes, 8192);
}

#[tokio::test]
async fn a_download_of_unknown_size_is_cut_off_at_the_room_left_in_the_quota() {
    let rig = rig_via(3, true).await;
    let ctl = rig.sim.control();
    policy(
        &rig,
        "default/per-user",
        serde_json::json!({"perUser": {"maxBytes": "10Ki"}}),
    )
    .await;
    let (_, first) = ingest(&rig, FileSpec::document(25, 4096, 70)).await;
    assert_eq!(first.state, JobState::Stored);

    // Neither the update nor getFile tells the size: the stream is capped
    // at the 6 KiB left and breaks off past it.
    let big = ctl
        .send_file(FileSpec::document(25, 300_000, 71).named("endless.bin"))
        .await
        .unwrap();
    let update_id = without_size(&rig, &big).await;
    ingest_update(&rig, update_id).await;
    let job = rig.catalog.job_by_update(UpdateId(update_id)).await.unwrap().unwrap();
    assert_over_quota(&job);
    let log = ctl
        .wait_for(25, WAIT, |l| l.visible().any(|m| m.text.contains("would exceed")))
        .await
        .unwrap();
    let reply = log.last().unwrap();
    assert!(
        reply
            .text
            .contains("this file would exceed your quota of 10.0 KiB: 4.0 KiB stored already"),
        "{reply:#?}"
    );
    assert!(
        !reply.text.contains("too big") && !reply.text.contains("limit"),
        "{reply:#?}"
    );
    assert_eq!(objects(&rig).await, 1, "no object left behind");
    let u = rig.catalog.usage(UserId(25)).await.unwrap();
    assert_eq!((u.files, u.bytes), (1, 4096));

    // A file of unknown size that fits is stored.
    let small = ctl
        .send_file(FileSpec::document(25, 6000, 72).named("fits.bin"))
        .await
        .unwrap();
    let update_id = without_size(&rig, &small).await;
    ingest_update(&rig, update_id).await;
    let job = rig.catalog.job_by_update(UpdateId(update_id)).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Stored, "{job:#?}");
    assert_eq!(rig.catalog.usage(UserId(25)).await.unwrap().bytes, 10096);
}

/// The jobs of `envelopes`: how many were stored; every other one must
/// have been refused over quota (and told so).
async fn stored_or_over_quota(rig: &Rig, envelopes: &[Envelope]) -> usize {
    let mut stored = 0;
    for env in envelopes {
        let job = rig
            .catalog
            .job_by_update(UpdateId(env.update_id))
            .await
            .unwrap()
            .unwrap();
        match job.state {
            JobState::Stored => stored += 1,
            _ => assert_over_quota(&job),
        }
    }
    stored
}

/// Files checked against a quota at the same moment all see the same
/// room before their downloads; the check made again under the quota lock
/// before each commit keeps the quota exact, over replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_racing_for_the_last_room_in_a_quota_never_exceed_it() {
    let (rig, replicas) = two_replicas_on_postgres(None).await;
    policy(
        &rig,
        "default/per-user",
        serde_json::json!({"perUser": {"maxFiles": 3}, "onQuotaExceeded": "Reject"}),
    )
    .await;
    let user = 44;
    let files: Vec<(i64, u64)> = (0..8).map(|seed| (user, 200 + seed)).collect();
    let envelopes = all_at_once(&rig, &replicas, &files).await;
    assert_eq!(
        stored_or_over_quota(&rig, &envelopes).await,
        3,
        "the user's quota holds"
    );
    assert_eq!(rig.catalog.usage(UserId(user)).await.unwrap().files, 3);
    let log = rig
        .sim
        .control()
        .wait_for(user, WAIT, |l| l.visible().count() == 8 && links(l).len() == 3)
        .await
        .unwrap();
    assert_eq!(
        log.visible()
            .filter(|m| m.text.contains("would exceed your quota of 3 files"))
            .count(),
        5,
        "{log:#?}"
    );

    // A total quota over everyone: eight users, one file each, room for 5
    // (3 of them stored already).
    policy(
        &rig,
        "default/total",
        serde_json::json!({"total": {"maxFiles": 8}, "onQuotaExceeded": "Reject"}),
    )
    .await;
    let files: Vec<(i64, u64)> = (0..8).map(|i| (50 + i, 300 + i as u64)).collect();
    let envelopes = all_at_once(&rig, &replicas, &files).await;
    assert_eq!(stored_or_over_quota(&rig, &envelopes).await, 5, "the total quota holds");
    // The refused files' uploads were removed: one object per stored file.
    assert_eq!(objects(&rig).await, 8);
}

#[tokio::test]
async fn a_dry_run_quota_accepts_the_file_it_would_refuse_and_counts_it() {
    let rig = rig(3).await;
    let ctl = rig.sim.control();
    policy(
        &rig,
        "default/dry",
        serde_json::json!({"perUser": {"maxFiles": 1, "maxBytes": "1Ki"}, "dryRun": true}),
    )
    .await;
    let would_reject = || async {
        let rows = rig.catalog.policies().await.unwrap();
        rows.iter().find(|r| r.key == "default/dry").unwrap().would_reject
    };
    let (_, first) = ingest(&rig, FileSpec::document(70, 800, 50)).await;
    assert_eq!(first.state, JobState::Stored);
    assert_eq!(would_reject().await, 0, "under the quota");
    // Past both limits, and of a size the room left (224 B) would cut off:
    // stored in full all the same, counted once.
    let (_, second) = ingest(&rig, FileSpec::document(70, 4000, 51)).await;
    assert_eq!(second.state, JobState::Stored, "{second:#?}");
    assert_eq!(would_reject().await, 1);
    ctl.wait_for(70, WAIT, |l| links(l).len() == 2).await.unwrap();
    let u = rig.catalog.usage(UserId(70)).await.unwrap();
    assert_eq!((u.files, u.bytes), (2, 4800));
}
