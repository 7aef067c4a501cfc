//! The per-user rate limit (`admit`).

use crate::common::*;
use chrono::{DateTime, Utc};
use sqlx::Connection;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::{Admission, Catalog, CatalogError, Transition};
use teledrop_core::{ErrorKind, JobId, JobState};
use tokio::sync::Barrier;

fn limited(secs: f64) -> Admission {
    Admission::Limited {
        retry_after: Duration::from_millis((secs * 1000.0).round() as u64),
    }
}

async fn admit(c: &Arc<dyn Catalog>, job: JobId, n: u32, now: DateTime<Utc>) -> Admission {
    c.admit(job, limit(n), MINUTE, now).await.expect("admit")
}

async fn rate_limit_admits_up_to_the_limit(c: Arc<dyn Catalog>) {
    let j = jobs_of(&c, 1, 1, 6).await;
    assert_eq!(admit(&c, j[0], 3, at(0.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[1], 3, at(10.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[2], 3, at(20.0)).await, Admission::Admitted);
    // Full: a slot frees when the admission at 0 s leaves, at 60 s.
    assert_eq!(admit(&c, j[3], 3, at(30.0)).await, limited(30.0));
    assert_eq!(admit(&c, j[3], 3, at(59.999)).await, limited(0.001));
    // Sub-millisecond parts are dropped, as for every stored time.
    let almost = at(59.999) + chrono::TimeDelta::microseconds(900);
    assert_eq!(admit(&c, j[3], 3, almost).await, limited(0.001));
    // An admission exactly one window old has left it.
    assert_eq!(admit(&c, j[3], 3, at(60.0)).await, Admission::Admitted);
    // The refusals took nothing: the next slot is the one freed at 70 s.
    assert_eq!(admit(&c, j[4], 3, at(60.0)).await, limited(10.0));
    assert_eq!(admit(&c, j[4], 3, at(70.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[5], 3, at(70.0)).await, limited(10.0));

    // A lowered limit waits until enough admissions have left: of the
    // three in the window (20 s, 60 s, 70 s), two must go for a limit of
    // 2, the second of them at 120 s.
    assert_eq!(admit(&c, j[5], 2, at(75.0)).await, limited(45.0));
    // A raised one admits at once.
    assert_eq!(admit(&c, j[5], 4, at(75.0)).await, Admission::Admitted);

    assert!(matches!(
        c.admit(JobId::new(), limit(3), MINUTE, at(0.0)).await,
        Err(CatalogError::NotFound("job"))
    ));
}

async fn rate_limit_counts_a_job_once(c: Arc<dyn Catalog>) {
    let j = jobs_of(&c, 2, 100, 3).await;
    assert_eq!(admit(&c, j[0], 2, at(0.0)).await, Admission::Admitted);
    // A redelivery of the same job, even with the window full.
    assert_eq!(admit(&c, j[0], 2, at(1.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[1], 2, at(2.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[0], 2, at(3.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[1], 2, at(3.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[2], 2, at(3.0)).await, limited(57.0));
    // An unfinished job keeps its slot long after the window (a retry
    // many minutes later is not refused), and takes no new one.
    assert_eq!(admit(&c, j[0], 2, at(600.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[2], 2, at(600.0)).await, Admission::Admitted);
}

async fn rate_limit_is_per_user(c: Arc<dyn Catalog>) {
    let mine = jobs_of(&c, 3, 200, 2).await;
    let theirs = jobs_of(&c, 4, 300, 2).await;
    assert_eq!(admit(&c, mine[0], 1, at(0.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, mine[1], 1, at(0.0)).await, limited(60.0));
    assert_eq!(admit(&c, theirs[0], 1, at(0.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, theirs[1], 1, at(30.0)).await, limited(30.0));
    assert_eq!(admit(&c, mine[1], 1, at(30.0)).await, limited(30.0));
}

/// Rows in `rate_admissions`, read with a plain connection.
async fn admission_rows(fx: &Fixture) -> i64 {
    let sql = "SELECT COUNT(*) FROM rate_admissions";
    match fx.backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&fx.db.url).await.expect("raw connect");
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("count")
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&fx.db.url).await.expect("raw connect");
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("count")
        }
    }
}

async fn rate_admissions_of_finished_jobs_are_pruned(fx: Fixture) {
    let c = &fx.catalog;
    let j = jobs_of(c, 5, 400, 5).await;
    let other = jobs_of(c, 6, 500, 1).await;
    for (secs, job) in [0.0, 1.0, 2.0].into_iter().zip(&j) {
        assert_eq!(admit(c, *job, 10, at(secs)).await, Admission::Admitted);
    }
    assert_eq!(admit(c, other[0], 10, at(0.0)).await, Admission::Admitted);
    // Two of the user's jobs finish; one stays pending.
    for job in &j[..2] {
        c.transition(*job, Transition::failed(JobState::Pending, ErrorKind::Network, "gone"))
            .await
            .unwrap();
    }
    assert_eq!(admission_rows(&fx).await, 4);
    // Inside the window nothing goes.
    assert_eq!(admit(c, j[3], 10, at(30.0)).await, Admission::Admitted);
    assert_eq!(admission_rows(&fx).await, 5);
    // Past it, the finished jobs' admissions go; the unfinished job's stays
    // (it may still come back and must find its slot), and so does
    // another user's.
    assert_eq!(admit(c, j[4], 10, at(120.0)).await, Admission::Admitted);
    assert_eq!(admission_rows(&fx).await, 4);
    assert_eq!(admit(c, j[2], 1, at(120.0)).await, Admission::Admitted);
    assert_eq!(admission_rows(&fx).await, 4);
}

async fn concurrent_admissions_take_exactly_the_free_slots(fx: Fixture) {
    // Several pools on one database, as several worker replicas have.
    const POOLS: usize = 4;
    const JOBS: usize = 24;
    const LIMIT: u32 = 5;
    let mut catalogs = vec![fx.catalog.clone()];
    for _ in 1..POOLS {
        let c = open(&fx.db.url).await;
        c.ping().await.unwrap();
        catalogs.push(c);
    }
    let jobs = jobs_of(&fx.catalog, 7, 600, JOBS).await;
    // Someone else's admissions, made at the same moment, count for them only.
    let bystander = jobs_of(&fx.catalog, 8, 700, 1).await[0];

    let round = |now: DateTime<Utc>| {
        let barrier = Arc::new(Barrier::new(JOBS + 1));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, job) in jobs.iter().copied().enumerate() {
            let c = catalogs[i % POOLS].clone();
            let barrier = barrier.clone();
            tasks.spawn(async move {
                barrier.wait().await;
                (job, c.admit(job, limit(LIMIT), MINUTE, now).await)
            });
        }
        let c = catalogs[0].clone();
        tasks.spawn(async move {
            barrier.wait().await;
            (bystander, c.admit(bystander, limit(1), MINUTE, now).await)
        });
        tasks
    };

    let mut tasks = round(at(0.0));
    let mut admitted = HashSet::new();
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        let (job, outcome) = done.expect("task");
        match outcome.expect("admit") {
            Admission::Admitted => assert!(admitted.insert(job)),
            Admission::Limited { retry_after } => {
                assert_eq!(retry_after, MINUTE, "all admissions are as old as the refusal");
                refused += 1;
            }
        }
    }
    assert!(admitted.contains(&bystander));
    assert_eq!(admitted.len() - 1, LIMIT as usize, "exactly the limit is admitted");
    assert_eq!(refused, JOBS - LIMIT as usize);

    // Everyone again, later in the window: the admitted jobs (and only
    // they) find their slots.
    let mut tasks = round(at(30.0));
    let mut again = HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (job, outcome) = done.expect("task");
        match outcome.expect("admit") {
            Admission::Admitted => assert!(again.insert(job)),
            Admission::Limited { retry_after } => assert_eq!(retry_after, Duration::from_secs(30)),
        }
    }
    assert_eq!(again, admitted);
}

conformance! {
    catalog rate_limit_admits_up_to_the_limit
        => postgres_rate_limit_admits_up_to_the_limit, sqlite_rate_limit_admits_up_to_the_limit;
    catalog rate_limit_counts_a_job_once => postgres_rate_limit_counts_a_job_once, sqlite_rate_limit_counts_a_job_once;
    catalog rate_limit_is_per_user => postgres_rate_limit_is_per_user, sqlite_rate_limit_is_per_user;
    fixture rate_admissions_of_finished_jobs_are_pruned
        => postgres_rate_admissions_of_finished_jobs_are_pruned, sqlite_rate_admissions_of_finished_jobs_are_pruned;
    fixture concurrent_admissions_take_exactly_the_free_slots
        => postgres_concurrent_admissions_take_exactly_the_free_slots,
           sqlite_concurrent_admissions_take_exactly_the_free_slots;
}
