//! Quota locks: check and commit atomically, released when dropped.

use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::{Catalog, FileFilter, QuotaLockScope};
use teledrop_core::{NewLink, UserId};
use tokio::sync::Barrier;

/// Tasks that each check a quota under the lock and store a file only if
/// it leaves room: together they store exactly the room, though they all
/// start at once. Task i stores for `user_of(i)` and locks that user (and
/// the total with `total`); `counted` is what the quota counts.
async fn check_and_commit(
    catalogs: &[Arc<dyn Catalog>],
    tasks: usize,
    room: u64,
    first_update: i64,
    user_of: impl Fn(usize) -> i64,
    total: bool,
    counted: FileFilter,
) -> usize {
    let barrier = Arc::new(Barrier::new(tasks));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..tasks {
        let c = catalogs[i % catalogs.len()].clone();
        let user = user_of(i);
        let update = first_update + i64::try_from(i).unwrap();
        let job = running_job(&c, update, &incoming(user, &format!("quota-{update}"))).await;
        let (barrier, counted) = (barrier.clone(), counted.clone());
        set.spawn(async move {
            barrier.wait().await;
            let scope = QuotaLockScope {
                user: UserId(user),
                total,
            };
            let lock = c.quota_lock(scope).await.expect("lock");
            let used = c.live_totals(&counted).await.expect("totals");
            // Give every other task the chance to check in between.
            tokio::task::yield_now().await;
            let fits = used.files < room;
            if fits {
                let blob = stored_blob(&format!("k/quota-{update}"), 10, &update.to_be_bytes());
                c.commit_stored(job, blob, NewLink::unlimited()).await.expect("commit");
            }
            lock.release().await.expect("release");
            fits
        });
    }
    let mut stored = 0;
    while let Some(done) = set.join_next().await {
        stored += usize::from(done.expect("task"));
    }
    stored
}

async fn quota_locks_make_check_and_commit_atomic(fx: Fixture) {
    // Postgres: several pools on one database, as several worker replicas
    // have. SQLite serves one process: one catalog.
    let mut catalogs = vec![fx.catalog.clone()];
    if fx.backend == Backend::Postgres {
        for _ in 1..3 {
            catalogs.push(open(&fx.db.url).await);
        }
    }
    // One user's quota of 3 files, 12 files at once.
    let stored = check_and_commit(&catalogs, 12, 3, 900, |_| 9, false, owners(&[9])).await;
    assert_eq!(stored, 3);
    assert_eq!(usage(&fx.catalog, 9).await, (30, 3));
    // A total quota of 4 files over six users, two files each at once.
    let users: Vec<i64> = (10..16).collect();
    let stored = check_and_commit(&catalogs, 12, 4, 950, |i| users[i % 6], true, owners(&users)).await;
    assert_eq!(stored, 4);
    assert_eq!(fx.catalog.live_totals(&owners(&users)).await.unwrap(), totals(4, 40));
}

async fn quota_locks_are_released_when_dropped(c: Arc<dyn Catalog>) {
    let scope = QuotaLockScope {
        user: UserId(30),
        total: true,
    };
    // A holder that fails between check and commit drops its lock: the
    // next one gets it (a hang here would time the test out).
    for _ in 0..3 {
        let lock = tokio::time::timeout(Duration::from_secs(10), c.quota_lock(scope))
            .await
            .expect("a dropped lock is released")
            .expect("lock");
        drop(lock);
    }
}

async fn quota_locks_of_different_users_do_not_wait(c: Arc<dyn Catalog>) {
    let mine = c
        .quota_lock(QuotaLockScope {
            user: UserId(40),
            total: true,
        })
        .await
        .unwrap();
    let theirs = tokio::time::timeout(
        Duration::from_secs(10),
        c.quota_lock(QuotaLockScope {
            user: UserId(41),
            total: false,
        }),
    )
    .await
    .expect("another user's lock without the total does not wait")
    .unwrap();
    theirs.release().await.unwrap();
    mine.release().await.unwrap();
}

/// SQLite's quota lock is one mutex (one process, few files at once), so
/// only Postgres lets different users' quota checks run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_quota_locks_of_different_users_do_not_wait() {
    let fx = Fixture::new(Backend::Postgres).await;
    quota_locks_of_different_users_do_not_wait(fx.catalog.clone()).await;
}

conformance! {
    fixture quota_locks_make_check_and_commit_atomic
        => postgres_quota_locks_make_check_and_commit_atomic, sqlite_quota_locks_make_check_and_commit_atomic;
    catalog quota_locks_are_released_when_dropped
        => postgres_quota_locks_are_released_when_dropped, sqlite_quota_locks_are_released_when_dropped;
}
