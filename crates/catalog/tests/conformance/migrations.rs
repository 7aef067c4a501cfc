//! Migrations and connections: migrating twice or concurrently, reopening,
//! pools and URLs.

use crate::common::*;
use crate::jobs::accept_job_is_idempotent;
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::{CatalogError, QuotaLockScope, Transition};
use teledrop_core::{ErrorKind, JobState, MessageId, UserId};
use tokio::sync::Barrier;

async fn migrate_twice_is_a_no_op(fx: Fixture) {
    let c = &fx.catalog;
    assert_eq!(c.backend(), fx.backend.name());
    c.ping().await.expect("ping");
    let expected = migration_files(fx.backend);
    assert!(expected >= 1);
    assert_eq!(migration_rows(fx.backend, &fx.db.url).await, (expected, 0));

    let job = accept(c, 1, &incoming(1, "u1")).await;
    c.migrate().await.expect("second migrate");
    c.migrate().await.expect("third migrate");
    assert_eq!(migration_rows(fx.backend, &fx.db.url).await, (expected, 0));
    assert_eq!(c.job(job).await.unwrap().expect("job kept").state, JobState::Pending);
}

async fn concurrent_migrate(fx: Fixture) {
    // A database nobody has migrated yet, several pools (as several
    // processes would have) migrating it at the same moment.
    let db = fx.backend.blank().await;
    const N: usize = 8;
    let mut catalogs = Vec::new();
    for _ in 0..N {
        catalogs.push(open(&db.url).await);
    }
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for c in catalogs.clone() {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.migrate().await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("concurrent migrate");
    }
    let expected = migration_files(fx.backend);
    assert_eq!(migration_rows(fx.backend, &db.url).await, (expected, 0));
    // Every pool sees a working schema.
    for (i, c) in catalogs.iter().enumerate() {
        let n = i64::try_from(i).unwrap();
        accept(c, 100 + n, &incoming(n, "u")).await;
    }
    assert_eq!(catalogs[0].unfinished_jobs(100).await.unwrap().len(), N);
}

async fn job_survives_reopening(fx: Fixture) {
    let Fixture {
        backend: _,
        catalog,
        db,
    } = fx;
    let id = running_job(&catalog, 42, &incoming(5, "persist")).await;
    catalog.set_status_message(id, MessageId(99)).await.unwrap();
    let before = catalog.job(id).await.unwrap().unwrap();
    let events = catalog.job_events(id).await.unwrap();
    drop(catalog);

    let reopened = open(&db.url).await;
    reopened.migrate().await.expect("migrate on reopen");
    let after = reopened.job(id).await.unwrap().expect("job survives");
    assert_eq!(after, before);
    assert_eq!(after.status_message_id, Some(MessageId(99)));
    assert_eq!(reopened.job_events(id).await.unwrap(), events);
    assert_eq!(reopened.unfinished_jobs(10).await.unwrap(), vec![before]);
    // And it can still move on.
    reopened
        .transition(id, Transition::retry(ErrorKind::Network, "restart"))
        .await
        .expect("transition after reopen");
}

/// A pool with no free connection answers at its acquire timeout with its
/// own error (callers answer "try again later"), and serves again once a
/// connection is back. The test holds the pool's only connection through a
/// quota lock (a transaction kept open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_exhausted_pool_times_out_with_its_own_error() {
    let db = Backend::Postgres.blank().await;
    let pool = teledrop_catalog::PoolConfig {
        max_connections: 1,
        acquire_timeout: Duration::from_millis(300),
    };
    let c = teledrop_catalog::connect_with(&db.url, pool).await.expect("connect");
    c.migrate().await.unwrap();
    let held = c
        .quota_lock(QuotaLockScope {
            user: UserId(1),
            total: false,
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = c.ping().await.unwrap_err();
    assert!(matches!(err, CatalogError::PoolTimedOut), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.label(), "pool_timed_out");
    // It waited for the timeout, not for the holder.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    held.release().await.unwrap();
    c.ping().await.expect("the connection is back");
}

/// The in-memory SQLite URL works too (one private database per catalog).
#[tokio::test]
async fn sqlite_in_memory_catalog() {
    let c = open("sqlite::memory:").await;
    c.migrate().await.unwrap();
    accept_job_is_idempotent(c.clone()).await;
    let other = open("sqlite::memory:").await;
    other.migrate().await.unwrap();
    assert!(
        other.unfinished_jobs(10).await.unwrap().is_empty(),
        "in-memory catalogs are separate"
    );
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    for url in ["mysql://x", "", "http://localhost"] {
        assert!(
            matches!(teledrop_catalog::connect(url).await, Err(CatalogError::UnsupportedUrl)),
            "{url}"
        );
    }
}

conformance! {
    fixture migrate_twice_is_a_no_op => postgres_migrate_twice_is_a_no_op, sqlite_migrate_twice_is_a_no_op;
    fixture concurrent_migrate => postgres_concurrent_migrate, sqlite_concurrent_migrate;
    fixture job_survives_reopening => postgres_job_survives_reopening, sqlite_job_survives_reopening;
}
