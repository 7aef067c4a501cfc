//! Jobs: accepting updates once, the state machine, replies and the
//! unfinished list.

use crate::common::*;
use std::sync::Arc;
use teledrop_catalog::{Accepted, Catalog, CatalogError, Transition};
use teledrop_core::{ChatId, ErrorKind, IncomingFile, JobId, JobState, MessageId, NewLink, UpdateId};
use tokio::sync::Barrier;

pub(crate) async fn accept_job_is_idempotent(c: Arc<dyn Catalog>) {
    let inc = incoming(1, "uniq-a");
    let first = c.accept_job(UpdateId(1000), &inc).await.unwrap();
    let Accepted::New(job) = first.clone() else {
        panic!("first accept must be new: {first:?}")
    };
    assert_eq!(job.update_id, UpdateId(1000));
    assert_eq!(job.incoming, inc);
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.attempts, 0);
    assert_eq!(
        (job.error_kind, job.error_detail.clone(), job.file_id),
        (None, None, None)
    );
    assert_eq!(job.status_message_id, None);
    assert_eq!(job.created_at, job.updated_at);

    // The same message again (Telegram retrying or redelivering it), under
    // another update id and with other content: the stored job.
    let again = IncomingFile {
        file_unique_id: "other".into(),
        ..inc.clone()
    };
    let second = c.accept_job(UpdateId(1001), &again).await.unwrap();
    assert_eq!(second, Accepted::Duplicate(job.clone()));
    assert_eq!(second.job(), first.job());

    assert_eq!(c.job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(
        c.job_by_message(inc.chat_id, inc.message_id).await.unwrap(),
        Some(job.clone())
    );
    assert_eq!(c.job_by_update(UpdateId(1000)).await.unwrap(), Some(job.clone()));
    assert_eq!(
        c.job_by_update(UpdateId(1001)).await.unwrap(),
        None,
        "a duplicate records nothing"
    );
    assert_eq!(c.job(JobId::new()).await.unwrap(), None);

    let events = c.job_events(job.id).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].job_id, events[0].from, events[0].to),
        (job.id, None, JobState::Pending)
    );
    assert_eq!(events[0].at, job.created_at);

    // An update id already used, on another message: Telegram picked it
    // again after a week without updates. A new job, whatever the old
    // one's state.
    c.transition(job.id, Transition::new(JobState::Pending, JobState::Failed, "done"))
        .await
        .unwrap();
    let next = IncomingFile {
        message_id: MessageId(inc.message_id.0 + 1_000_000),
        ..inc.clone()
    };
    assert_eq!(c.job_by_message(next.chat_id, next.message_id).await.unwrap(), None);
    let reused = c.accept_job(UpdateId(1000), &next).await.unwrap();
    let Accepted::New(newer) = reused.clone() else {
        panic!("a reused update id on a new message must be a new job: {reused:?}")
    };
    assert_ne!(newer.id, job.id);
    assert_eq!((newer.update_id, &newer.incoming), (UpdateId(1000), &next));
    assert_eq!(newer.state, JobState::Pending);
    assert_eq!(
        c.job_by_message(next.chat_id, next.message_id).await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(
        c.job_by_update(UpdateId(1000)).await.unwrap(),
        Some(newer),
        "the newest"
    );

    // The same message id in another chat is another message.
    let elsewhere = IncomingFile {
        chat_id: ChatId(inc.chat_id.0 + 1),
        ..inc.clone()
    };
    let other = c.accept_job(UpdateId(1002), &elsewhere).await.unwrap();
    assert!(matches!(other, Accepted::New(_)), "{other:?}");
    assert_ne!(other.job().id, job.id);
}

async fn accept_job_concurrently_once(c: Arc<dyn Catalog>) {
    const N: usize = 20;
    let barrier = Arc::new(Barrier::new(N));
    let base = incoming(1, "race");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let c = c.clone();
        let barrier = barrier.clone();
        // One message, delivered at once under several update ids and with
        // differing content: the first insert wins.
        let inc = IncomingFile {
            file_unique_id: format!("race-{i}"),
            ..base.clone()
        };
        let update = UpdateId(777 + i64::try_from(i).unwrap());
        tasks.spawn(async move {
            barrier.wait().await;
            c.accept_job(update, &inc).await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.expect("task").expect("accept"));
    }
    let new: Vec<_> = outcomes.iter().filter(|o| matches!(o, Accepted::New(_))).collect();
    assert_eq!(new.len(), 1, "exactly one caller creates the job");
    let winner = new[0].job().clone();
    for o in &outcomes {
        assert_eq!(o.job(), &winner);
    }
    assert_eq!(c.job_events(winner.id).await.unwrap().len(), 1);
    assert_eq!(c.unfinished_jobs(100).await.unwrap(), vec![winner]);
}

async fn transitions_follow_the_state_machine(c: Arc<dyn Catalog>) {
    let id = accept(&c, 1, &incoming(1, "sm")).await;
    let created = c.job(id).await.unwrap().unwrap();

    let j = c
        .transition(id, Transition::new(JobState::Pending, JobState::Running, "attempt 1"))
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts, j.error_kind), (JobState::Running, 1, None));
    assert!(j.updated_at >= created.updated_at);

    let j = c
        .transition(id, Transition::retry(ErrorKind::Network, "connection reset"))
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Pending, 1));
    assert_eq!(j.error_kind, Some(ErrorKind::Network));
    assert_eq!(j.error_detail.as_deref(), Some("connection reset"));

    // Entering running again counts a second attempt and keeps the last error.
    let j = c
        .transition(id, Transition::new(JobState::Pending, JobState::Running, "attempt 2"))
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Running, 2));
    assert_eq!(j.error_kind, Some(ErrorKind::Network));
    assert_eq!(j.error_detail.as_deref(), Some("connection reset"));

    let j = c
        .transition(
            id,
            Transition::failed(JobState::Running, ErrorKind::TooBig, "file is too big"),
        )
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Failed, 2));
    assert_eq!(j.error_kind, Some(ErrorKind::TooBig));
    assert_eq!(j.error_detail.as_deref(), Some("file is too big"));
    assert_eq!(c.job(id).await.unwrap(), Some(j.clone()));
    assert_eq!(j.created_at, created.created_at);

    let events = c.job_events(id).await.unwrap();
    let timeline: Vec<_> = events
        .iter()
        .map(|e| (e.from, e.to, e.error_kind, e.note.as_str()))
        .collect();
    assert_eq!(
        timeline,
        vec![
            (None, JobState::Pending, None, "accepted"),
            (Some(JobState::Pending), JobState::Running, None, "attempt 1"),
            (
                Some(JobState::Running),
                JobState::Pending,
                Some(ErrorKind::Network),
                "connection reset"
            ),
            (Some(JobState::Pending), JobState::Running, None, "attempt 2"),
            (
                Some(JobState::Running),
                JobState::Failed,
                Some(ErrorKind::TooBig),
                "file is too big"
            ),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(events.iter().all(|e| e.job_id == id));

    // Pending → failed is legal too (e.g. over quota before any download).
    let other = accept(&c, 2, &incoming(1, "sm2")).await;
    let j = c
        .transition(
            other,
            Transition::failed(JobState::Pending, ErrorKind::OverQuota, "quota"),
        )
        .await
        .unwrap();
    assert_eq!(
        (j.state, j.attempts, j.error_kind),
        (JobState::Failed, 0, Some(ErrorKind::OverQuota))
    );
}

async fn illegal_transitions_change_nothing(c: Arc<dyn Catalog>) {
    let id = accept(&c, 1, &incoming(1, "ill")).await;
    c.transition(id, Transition::failed(JobState::Pending, ErrorKind::Unsupported, "no"))
        .await
        .unwrap();
    let before = c.job(id).await.unwrap().unwrap();
    let events_before = c.job_events(id).await.unwrap();

    // From a final state, whatever the row holds.
    for (from, to) in [
        (JobState::Failed, JobState::Running),
        (JobState::Failed, JobState::Pending),
        (JobState::Stored, JobState::Running),
        (JobState::Pending, JobState::Stored),
        (JobState::Pending, JobState::Pending),
    ] {
        let err = c.transition(id, Transition::new(from, to, "nope")).await.unwrap_err();
        match err {
            CatalogError::IllegalTransition(e) => assert_eq!((e.from, e.to), (from, to)),
            other => panic!("{from} → {to}: expected IllegalTransition, got {other:?}"),
        }
    }
    // running → stored is reserved for commit_stored.
    let r = running_job(&c, 2, &incoming(1, "ill2")).await;
    let r_before = c.job(r).await.unwrap().unwrap();
    let err = c
        .transition(r, Transition::new(JobState::Running, JobState::Stored, "no file"))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::IllegalTransition(_)), "{err:?}");
    assert_eq!(c.job(r).await.unwrap(), Some(r_before));

    assert_eq!(c.job(id).await.unwrap(), Some(before));
    assert_eq!(c.job_events(id).await.unwrap(), events_before);
}

async fn transition_is_compare_and_set(c: Arc<dyn Catalog>) {
    let id = accept(&c, 1, &incoming(1, "cas")).await;
    let before = c.job(id).await.unwrap().unwrap();
    let err = c
        .transition(id, Transition::failed(JobState::Running, ErrorKind::Internal, "x"))
        .await
        .unwrap_err();
    match err {
        CatalogError::StateConflict { expected, actual } => {
            assert_eq!((expected, actual), (JobState::Running, JobState::Pending))
        }
        other => panic!("expected StateConflict, got {other:?}"),
    }
    assert_eq!(c.job(id).await.unwrap(), Some(before));
    assert_eq!(c.job_events(id).await.unwrap().len(), 1);

    let missing = c
        .transition(JobId::new(), Transition::new(JobState::Pending, JobState::Running, ""))
        .await;
    assert!(matches!(missing, Err(CatalogError::NotFound("job"))), "{missing:?}");

    // Many workers race to start the same job: exactly one wins.
    const N: usize = 10;
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..N {
        let c = c.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.transition(id, Transition::new(JobState::Pending, JobState::Running, "race"))
                .await
        });
    }
    let (mut won, mut lost) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.expect("task") {
            Ok(j) => {
                assert_eq!(j.attempts, 1);
                won += 1;
            }
            Err(CatalogError::StateConflict {
                expected: JobState::Pending,
                actual: JobState::Running,
            }) => lost += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, lost), (1, N - 1));
    let j = c.job(id).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Running, 1));
    assert_eq!(c.job_events(id).await.unwrap().len(), 2);
}

async fn set_status_message(c: Arc<dyn Catalog>) {
    let id = accept(&c, 1, &incoming(1, "status")).await;
    c.set_status_message(id, MessageId(4242)).await.unwrap();
    let j = c.job(id).await.unwrap().unwrap();
    assert_eq!(j.status_message_id, Some(MessageId(4242)));
    assert_eq!(j.state, JobState::Pending);
    c.set_status_message(id, MessageId(-5)).await.unwrap();
    assert_eq!(c.job(id).await.unwrap().unwrap().status_message_id, Some(MessageId(-5)));
    let missing = c.set_status_message(JobId::new(), MessageId(1)).await;
    assert!(matches!(missing, Err(CatalogError::NotFound("job"))), "{missing:?}");
}

async fn final_jobs_are_replied_once(c: Arc<dyn Catalog>) {
    let pending = accept(&c, 1, &incoming(1, "p")).await;
    let refused = c.mark_replied(pending).await;
    assert!(
        matches!(refused, Err(CatalogError::StateConflict { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        c.mark_replied(JobId::new()).await,
        Err(CatalogError::NotFound("job"))
    ));
    let s = running_job(&c, 2, &incoming(1, "s")).await;
    c.commit_stored(s, stored_blob("k/r", 1, b"r"), NewLink::unlimited())
        .await
        .unwrap();
    let f = accept(&c, 3, &incoming(1, "f")).await;
    c.transition(f, Transition::failed(JobState::Pending, ErrorKind::TooBig, "big"))
        .await
        .unwrap();
    let ids: Vec<_> = c.unreplied_jobs(10).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![s, f], "final jobs not yet replied, oldest first");
    c.mark_replied(s).await.unwrap();
    c.mark_replied(s).await.unwrap();
    let ids: Vec<_> = c.unreplied_jobs(10).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![f]);
    c.mark_replied(f).await.unwrap();
    assert!(c.unreplied_jobs(10).await.unwrap().is_empty());
}

async fn unfinished_jobs_oldest_first(c: Arc<dyn Catalog>) {
    assert!(c.unfinished_jobs(10).await.unwrap().is_empty());
    let a = accept(&c, 1, &incoming(1, "a")).await;
    let b = running_job(&c, 2, &incoming(1, "b")).await;
    let f = accept(&c, 3, &incoming(1, "f")).await;
    c.transition(f, Transition::failed(JobState::Pending, ErrorKind::NotAllowed, "who"))
        .await
        .unwrap();
    let s = running_job(&c, 4, &incoming(1, "s")).await;
    c.commit_stored(s, stored_blob("k/s", 1, b"s"), NewLink::unlimited())
        .await
        .unwrap();
    let d = accept(&c, 5, &incoming(1, "d")).await;

    let ids: Vec<_> = c.unfinished_jobs(10).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![a, b, d]);
    let ids: Vec<_> = c.unfinished_jobs(2).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![a, b]);
    assert!(c.unfinished_jobs(0).await.unwrap().is_empty());
    let states: Vec<_> = c.unfinished_jobs(10).await.unwrap().iter().map(|j| j.state).collect();
    assert_eq!(states, vec![JobState::Pending, JobState::Running, JobState::Pending]);
}

conformance! {
    catalog accept_job_is_idempotent => postgres_accept_job_is_idempotent, sqlite_accept_job_is_idempotent;
    catalog accept_job_concurrently_once => postgres_accept_job_concurrently_once, sqlite_accept_job_concurrently_once;
    catalog transitions_follow_the_state_machine
        => postgres_transitions_follow_the_state_machine, sqlite_transitions_follow_the_state_machine;
    catalog illegal_transitions_change_nothing
        => postgres_illegal_transitions_change_nothing, sqlite_illegal_transitions_change_nothing;
    catalog transition_is_compare_and_set
        => postgres_transition_is_compare_and_set, sqlite_transition_is_compare_and_set;
    catalog set_status_message => postgres_set_status_message, sqlite_set_status_message;
    catalog final_jobs_are_replied_once => postgres_final_jobs_are_replied_once, sqlite_final_jobs_are_replied_once;
    catalog unfinished_jobs_oldest_first => postgres_unfinished_jobs_oldest_first, sqlite_unfinished_jobs_oldest_first;
}
