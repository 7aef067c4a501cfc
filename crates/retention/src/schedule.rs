//! Sweeping policies on their intervals inside one process (`standalone`;
//! the controller schedules through Kubernetes requeues instead).

use chrono::Utc;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::Catalog;
use teledrop_core::report;

use crate::policy::Policy;
use crate::sweep::{OrphanReport, PolicyEnforcer, SweepError};

/// Replaces the catalog's `file:` policies with `policies`, so workers'
/// quota checks see exactly the file's rules.
pub async fn install_file_policies(
    catalog: &Arc<dyn Catalog>,
    policies: &[Policy],
) -> Result<(), teledrop_catalog::CatalogError> {
    for row in catalog.policies().await? {
        if row.key.starts_with("file:") && !policies.iter().any(|p| p.key == row.key) {
            catalog.delete_policy(&row.key).await?;
        }
    }
    for p in policies {
        let spec = serde_json::to_value(&p.spec).expect("a spec serialises");
        catalog.upsert_policy(&p.key, 1, &spec).await?;
    }
    Ok(())
}

/// Sweeps each policy at once and then every `interval`, and collects
/// orphaned objects every `orphan_every` (objects older than
/// `orphan_grace`), until `stop` completes. Failures are logged and
/// retried at the next run.
pub async fn run_schedule(
    enforcer: PolicyEnforcer,
    policies: Vec<Policy>,
    orphan_grace: Duration,
    orphan_every: Duration,
    stop: impl Future<Output = ()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for policy in policies {
        let (enforcer, mut stop_rx) = (enforcer.clone(), stop_rx.clone());
        tasks.spawn(async move {
            let mut ticker = tokio::time::interval(policy.spec.interval.as_duration());
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => return,
                    _ = ticker.tick() => {}
                }
                if let Err(e) = enforcer.sweep(&policy, Utc::now(), false).await {
                    tracing::warn!(policy = %policy.key, error = %report(&e), label = e.label(), "sweep failed; retrying at the next interval");
                }
            }
        });
    }
    {
        let mut stop_rx = stop_rx.clone();
        tasks.spawn(collect_orphans_every(
            enforcer,
            orphan_grace,
            orphan_every,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
            |_| {},
        ));
    }
    stop.await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

/// Removes orphaned objects older than `grace` at once and then every
/// `every`, until `stop` completes; each run's result is logged and handed
/// to `observe` (for metrics). A failed run is retried at the next tick.
pub async fn collect_orphans_every(
    enforcer: PolicyEnforcer,
    grace: Duration,
    every: Duration,
    stop: impl Future<Output = ()>,
    observe: impl Fn(&Result<OrphanReport, SweepError>),
) {
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticker.tick() => {}
        }
        let result = enforcer.collect_orphans(grace, Utc::now(), false).await;
        match &result {
            Ok(r) => tracing::info!(
                examined = r.examined,
                deleted = r.deleted.files,
                bytes = r.deleted.bytes,
                aborted_uploads = r.aborted_uploads,
                "orphan collection done"
            ),
            Err(e) => tracing::warn!(error = %report(e), label = e.label(), "orphan collection failed"),
        }
        observe(&result);
    }
}
