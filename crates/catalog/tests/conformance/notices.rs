//! Notices that repeat only after their interval, and go out once.

use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::{Catalog, Notice};
use teledrop_core::UserId;
use tokio::sync::Barrier;

async fn notices_repeat_only_after_their_interval(c: Arc<dyn Catalog>) {
    let user = UserId(41);
    let notice = |n: Notice, every: Option<Duration>, t: f64| {
        let c = c.clone();
        async move { c.claim_notice(user, n, every, at(t)).await.expect("notice") }
    };
    assert!(notice(Notice::Hint, Some(MINUTE), 0.0).await);
    assert!(!notice(Notice::Hint, Some(MINUTE), 0.0).await);
    assert!(!notice(Notice::Hint, Some(MINUTE), 59.999).await);
    assert!(
        notice(Notice::Hint, Some(MINUTE), 60.0).await,
        "a minute later it goes out again"
    );
    assert!(
        !notice(Notice::Hint, Some(MINUTE), 100.0).await,
        "counted from the last sending"
    );
    // Kinds and users are apart.
    assert!(notice(Notice::NotAllowed, None, 10.0).await);
    assert!(
        c.claim_notice(UserId(42), Notice::Hint, Some(MINUTE), at(10.0))
            .await
            .unwrap()
    );
    // `None`: once ever.
    assert!(!notice(Notice::NotAllowed, None, 10.0).await);
    assert!(!notice(Notice::NotAllowed, None, 1_000_000.0).await);
    assert!(
        !notice(Notice::NotAllowed, Some(MINUTE), 5.0).await,
        "a time before the last sending is not after it"
    );
}

async fn concurrent_notices_go_out_once(fx: Fixture) {
    const CALLERS: usize = 12;
    let mut catalogs = vec![fx.catalog.clone()];
    for _ in 1..3 {
        catalogs.push(open(&fx.db.url).await);
    }
    let barrier = Arc::new(Barrier::new(CALLERS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLERS {
        let c = catalogs[i % catalogs.len()].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.claim_notice(UserId(43), Notice::Hint, Some(MINUTE), at(0.0))
                .await
                .expect("notice")
        });
    }
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        sent += usize::from(done.expect("task"));
    }
    assert_eq!(sent, 1);
}

conformance! {
    catalog notices_repeat_only_after_their_interval
        => postgres_notices_repeat_only_after_their_interval, sqlite_notices_repeat_only_after_their_interval;
    fixture concurrent_notices_go_out_once
        => postgres_concurrent_notices_go_out_once, sqlite_concurrent_notices_go_out_once;
}
