//! A worker whose database pool is exhausted hands the delivery back to
//! the bus with a delay instead of holding it: against a real Postgres,
//! with a pool of one connection that the test holds.

use super::*;
use teledrop_catalog::{PoolConfig, QuotaLockScope};
use teledrop_worker::CATALOG_BUSY_RETRY;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_finding_no_free_connection_is_retried_later() {
    let url = teledrop_testkit::postgres::fresh_database().await;
    let pool = PoolConfig {
        max_connections: 1,
        acquire_timeout: Duration::from_millis(300),
    };
    let catalog: Arc<dyn Catalog> = Arc::new(PgCatalog::connect_with(&url, pool).await.unwrap());
    let rig = rig_on(catalog, tempfile::tempdir().unwrap(), false, pipeline_config(3, None)).await;
    let ctl = rig.sim.control();
    let sent = ctl.send_file(FileSpec::document(60, 2000, 1)).await.unwrap();
    let envelope = update_body(&rig, sent.update_id).await;

    // An open transaction (a quota lock) holds the only connection.
    let held = rig
        .catalog
        .quota_lock(QuotaLockScope {
            user: UserId(1),
            total: false,
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let outcome = rig.pipeline.handle(&envelope).await;
    let waited = started.elapsed();
    assert_eq!(outcome, Outcome::Retry(CATALOG_BUSY_RETRY));
    // Given back after the acquire timeout, not when the holder let go.
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    held.release().await.unwrap();
    assert!(
        rig.catalog
            .job_by_update(UpdateId(sent.update_id))
            .await
            .unwrap()
            .is_none(),
        "nothing was recorded"
    );

    // The redelivery, with the connection back, stores the file.
    assert_eq!(rig.pipeline.handle_delivery(&envelope, 2).await, Outcome::Done);
    ctl.wait_for(60, WAIT, |l| links(l).len() == 1).await.unwrap();
}
