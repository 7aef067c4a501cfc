//! Fair queues: claims start at most `per_owner` jobs of one owner.

use crate::common::*;
use std::sync::Arc;
use teledrop_catalog::{Catalog, CatalogError, Claim, Transition};
use teledrop_core::{ErrorKind, JobId, JobState};
use tokio::sync::Barrier;

async fn claim(c: &Arc<dyn Catalog>, job: JobId, n: u32) -> Claim {
    c.claim(job, limit(n), "started").await.expect("claim")
}

fn started(claim: &Claim) -> bool {
    matches!(claim, Claim::Started(_))
}

async fn claims_start_up_to_the_owner_limit(c: Arc<dyn Catalog>) {
    let j = jobs_of(&c, 31, 800, 3).await;
    let Claim::Started(first) = claim(&c, j[0], 2).await else {
        panic!("a user with nothing running starts")
    };
    assert_eq!((first.id, first.state, first.attempts), (j[0], JobState::Running, 1));
    let events = c.job_events(j[0]).await.unwrap();
    let last = events.last().expect("an event");
    assert_eq!(
        (last.from, last.to, last.note.as_str()),
        (Some(JobState::Pending), JobState::Running, "started")
    );
    assert!(started(&claim(&c, j[1], 2).await));
    assert_eq!(claim(&c, j[2], 2).await, Claim::OwnerBusy);
    let waiting = c.job(j[2]).await.unwrap().expect("job");
    assert_eq!(
        (waiting.state, waiting.attempts),
        (JobState::Pending, 0),
        "a busy owner's job is untouched"
    );
    assert_eq!(c.job_events(j[2]).await.unwrap().len(), 1, "and gets no event");
    // Other users are not held up.
    let other = jobs_of(&c, 32, 900, 1).await[0];
    assert!(started(&claim(&c, other, 2).await));
    // A job that left `running` (retried, finished) frees its slot.
    c.transition(j[0], Transition::retry(ErrorKind::Network, "reset"))
        .await
        .unwrap();
    assert!(started(&claim(&c, j[2], 2).await));
    assert_eq!(claim(&c, j[0], 2).await, Claim::OwnerBusy);
    c.transition(j[1], Transition::failed(JobState::Running, ErrorKind::TooBig, "big"))
        .await
        .unwrap();
    assert!(started(&claim(&c, j[0], 2).await));
    // A raised limit admits at once.
    let more = jobs_of(&c, 31, 1000, 1).await[0];
    assert_eq!(claim(&c, more, 2).await, Claim::OwnerBusy);
    assert!(started(&claim(&c, more, 3).await));
}

async fn claims_need_a_pending_job(c: Arc<dyn Catalog>) {
    let j = jobs_of(&c, 33, 1100, 2).await;
    assert!(started(&claim(&c, j[0], 1).await));
    // Running already: a conflict, busy owner or not.
    for n in [1, 5] {
        match c.claim(j[0], limit(n), "again").await {
            Err(CatalogError::StateConflict { expected, actual }) => {
                assert_eq!((expected, actual), (JobState::Pending, JobState::Running));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    c.transition(j[1], Transition::failed(JobState::Pending, ErrorKind::Internal, "x"))
        .await
        .unwrap();
    assert!(matches!(
        c.claim(j[1], limit(5), "late").await,
        Err(CatalogError::StateConflict {
            actual: JobState::Failed,
            ..
        })
    ));
    assert!(matches!(
        c.claim(JobId::new(), limit(1), "ghost").await,
        Err(CatalogError::NotFound(_))
    ));
}

async fn concurrent_claims_never_exceed_the_limit(fx: Fixture) {
    const POOLS: usize = 4;
    const JOBS: usize = 16;
    const LIMIT: u32 = 3;
    let mut catalogs = vec![fx.catalog.clone()];
    for _ in 1..POOLS {
        let c = open(&fx.db.url).await;
        c.ping().await.unwrap();
        catalogs.push(c);
    }
    let jobs = jobs_of(&fx.catalog, 34, 1200, JOBS).await;
    let barrier = Arc::new(Barrier::new(JOBS));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, job) in jobs.iter().copied().enumerate() {
        let c = catalogs[i % POOLS].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.claim(job, limit(LIMIT), "race").await.expect("claim")
        });
    }
    let mut started_now = 0;
    while let Some(done) = tasks.join_next().await {
        if started(&done.expect("task")) {
            started_now += 1;
        }
    }
    assert_eq!(started_now, LIMIT as usize, "exactly the limit starts");
    let mut running = 0;
    for job in &jobs {
        if fx.catalog.job(*job).await.unwrap().expect("job").state == JobState::Running {
            running += 1;
        }
    }
    assert_eq!(running, LIMIT as usize);
}

conformance! {
    catalog claims_start_up_to_the_owner_limit
        => postgres_claims_start_up_to_the_owner_limit, sqlite_claims_start_up_to_the_owner_limit;
    catalog claims_need_a_pending_job => postgres_claims_need_a_pending_job, sqlite_claims_need_a_pending_job;
    fixture concurrent_claims_never_exceed_the_limit
        => postgres_concurrent_claims_never_exceed_the_limit, sqlite_concurrent_claims_never_exceed_the_limit;
}
