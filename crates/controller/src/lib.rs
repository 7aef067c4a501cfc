//! The `RetentionPolicy` controller.
//!
//! Each policy is reconciled as follows: a finalizer is added first (so a
//! deleted policy's rules leave the catalog before the object goes); then
//! the spec is validated and stored in the catalog under
//! `namespace/name`, where workers read it for quota checks; when the
//! policy is due (its interval passed since the last run, or its spec
//! changed) it is swept and the status is written by server-side apply.
//! Reconciles triggered by our own status writes find nothing due and only
//! requeue for the next run.
//!
//! Only the holder of a `coordination.k8s.io` Lease reconciles and collects
//! orphaned objects ([`lead`]), so two replicas are safe.

pub mod metrics;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teledrop_catalog::{Catalog, CatalogError};
use teledrop_core::report;
use teledrop_retention::{
    Policy, PolicyEnforcer, RetentionPolicy, RetentionPolicyStatus, RunCounts, SweepError, SweepReport, UsageStatus,
};
use tokio::sync::watch;

pub use metrics::{Metrics, admin_router};

/// Cancelled when a term of work must stop.
pub type Stop = tokio_util::sync::CancellationToken;

/// Added to every policy so its rules are removed from the catalog before
/// Kubernetes deletes it.
pub const FINALIZER: &str = "teledrop.dev/retention-rules";
/// The field manager of our status writes.
pub const FIELD_MANAGER: &str = "teledrop-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("catalog")]
    Catalog(#[from] CatalogError),
    #[error("sweep")]
    Sweep(#[from] SweepError),
    #[error("Kubernetes API")]
    Kube(#[from] kube::Error),
    #[error("finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the policy has no namespace")]
    NoNamespace,
}

impl Error {
    /// A stable label for metrics and events.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Catalog(_) => "catalog",
            Self::Sweep(e) => match e {
                SweepError::Catalog(_) => "catalog",
                SweepError::Storage(_) => "storage",
            },
            Self::Kube(_) => "kube_api",
            Self::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.label(),
                _ => "finalizer",
            },
            Self::NoNamespace => "no_namespace",
        }
    }
}

/// What reconciles share.
pub struct Context {
    pub client: Client,
    pub catalog: Arc<dyn Catalog>,
    pub sweeper: PolicyEnforcer,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per policy, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        catalog: Arc<dyn Catalog>,
        sweeper: PolicyEnforcer,
        reporter: Reporter,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            catalog,
            sweeper,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key_of(rp: &RetentionPolicy) -> String {
    format!("{}/{}", rp.namespace().unwrap_or_default(), rp.name_any())
}

/// Reconciles one policy (see the module docs). Errors are reported as a
/// Warning event on the policy before they reach the error policy.
pub async fn reconcile(rp: Arc<RetentionPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = rp.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<RetentionPolicy> = Api::namespaced(ctx.client.clone(), &ns);
    ctx.metrics.reconciles.inc();
    let result = finalizer(&api, FINALIZER, rp.clone(), |event| async {
        match event {
            FinalizerEvent::Apply(rp) => apply(&rp, &api, &ctx, Utc::now()).await,
            FinalizerEvent::Cleanup(rp) => cleanup(&rp, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match &result {
        Ok(_) => {
            ctx.failures().remove(&key_of(&rp));
        }
        Err(e) => {
            ctx.metrics.errors.inc(e.label());
            let note = report(e).to_string();
            publish(&ctx, &rp, EventType::Warning, "ReconcileFailed", "Reconcile", &note).await;
        }
    }
    result
}

/// Requeues a failed policy with a jittered exponential backoff
/// ([`backoff`]): about 5 s, 10 s, 20 s, … never 5 minutes or more.
pub fn error_policy(rp: Arc<RetentionPolicy>, error: &Error, ctx: Arc<Context>) -> Action {
    let n = {
        let mut failures = ctx.failures();
        let n = failures.entry(key_of(&rp)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(n);
    tracing::warn!(policy = %key_of(&rp), error = %report(error), label = error.label(), attempt = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The delay after the `n`th consecutive failure (n ≥ 1): in
/// `[5·2ⁿ⁻¹ s, 5·2ⁿ s)`, below 5 minutes (`teledrop_core::backoff`), so
/// policies that failed together are not all retried together.
pub fn backoff(n: u32) -> Duration {
    teledrop_core::backoff::nth(Duration::from_secs(5), Duration::from_secs(300), n)
}

async fn apply(
    rp: &RetentionPolicy,
    api: &Api<RetentionPolicy>,
    ctx: &Context,
    now: DateTime<Utc>,
) -> Result<Action, Error> {
    let key = key_of(rp);
    let generation = rp.metadata.generation.unwrap_or(0);
    let status = rp.status.clone().unwrap_or_default();

    if let Err(problem) = rp.spec.validate() {
        // A spec the schema let through but the rules refuse: the old
        // rules (if any) stop applying, the operator is told.
        ctx.catalog.delete_policy(&key).await?;
        let new = RetentionPolicyStatus {
            observed_generation: Some(generation),
            conditions: vec![ready(false, "InvalidSpec", &problem, now, &status.conditions)],
            ..status.clone()
        };
        // Our own status write comes back as a watch event: writing (and
        // telling) again each time would loop for as long as the spec
        // stays invalid.
        if new != status {
            patch_status(api, rp, &new).await?;
            publish(ctx, rp, EventType::Warning, "InvalidSpec", "Validate", &problem).await;
        }
        return Ok(Action::await_change());
    }

    let spec_json = serde_json::to_value(&rp.spec).expect("a spec serialises");
    ctx.catalog.upsert_policy(&key, generation, &spec_json).await?;
    let policy = Policy {
        key: key.clone(),
        spec: rp.spec.clone(),
    };

    let changed = status.observed_generation != Some(generation);
    let due_at = status
        .last_run_time
        .as_ref()
        .map(|t| from_time(t) + policy.spec.interval.as_chrono());
    let due = changed || due_at.is_none_or(|at| at <= now);
    if !due {
        let wait = due_at.map_or(Duration::ZERO, |at| (at - now).to_std().unwrap_or(Duration::ZERO));
        return Ok(Action::requeue(wait.max(Duration::from_secs(1))));
    }

    let report = ctx.sweeper.sweep(&policy, now, false).await?;
    ctx.metrics.record_sweep(&report);
    let next = policy.next_run(now);
    let new = status_after(&status, generation, &report, now, next);
    patch_status(api, rp, &new).await?;
    if report.deleted.files > 0 {
        let verb = if report.dry_run { "would delete" } else { "deleted" };
        let files = if report.deleted.files == 1 { "file" } else { "files" };
        let note = format!(
            "{verb} {} {files} ({} bytes) of {} matched",
            report.deleted.files, report.deleted.bytes, report.matched.files
        );
        publish(ctx, rp, EventType::Normal, "Swept", "Sweep", &note).await;
    }
    Ok(Action::requeue(policy.spec.interval.as_duration()))
}

async fn cleanup(rp: &RetentionPolicy, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(rp);
    let removed = ctx.catalog.delete_policy(&key).await?;
    tracing::info!(policy = %key, removed, "policy deleted; its rules were removed from the catalog");
    Ok(Action::await_change())
}

/// The status after a sweep: this run's counts, running totals, usage.
pub fn status_after(
    old: &RetentionPolicyStatus,
    generation: i64,
    report: &SweepReport,
    now: DateTime<Utc>,
    next: DateTime<Utc>,
) -> RetentionPolicyStatus {
    let (deleted, freed) = if report.dry_run {
        (0, 0)
    } else {
        (report.deleted.files, report.deleted.bytes)
    };
    let message = if report.dry_run {
        format!(
            "dry run: would delete {} of {} matched files; quotas would have refused {} {} so far",
            report.deleted.files,
            report.matched.files,
            report.would_reject,
            if report.would_reject == 1 { "file" } else { "files" }
        )
    } else {
        format!(
            "swept: deleted {} of {} matched files",
            report.deleted.files, report.matched.files
        )
    };
    RetentionPolicyStatus {
        observed_generation: Some(generation),
        conditions: vec![ready(true, "Swept", &message, now, &old.conditions)],
        last_run_time: Some(to_time(now)),
        next_run_time: Some(to_time(next)),
        last_run: Some(RunCounts {
            matched_files: report.matched.files,
            matched_bytes: report.matched.bytes,
            deleted_files: report.deleted.files,
            freed_bytes: report.deleted.bytes,
            dry_run: report.dry_run,
        }),
        total_deleted_files: old.total_deleted_files.saturating_add(deleted),
        total_freed_bytes: old.total_freed_bytes.saturating_add(freed),
        usage: Some(UsageStatus {
            files: report.usage.files,
            bytes: report.usage.bytes,
        }),
        would_reject: report.would_reject,
    }
}

/// The `Ready` condition. `lastTransitionTime` is when its status last
/// changed (API conventions), so it is kept from `old` while the status
/// stays the same; otherwise every write would move it and a status that
/// says nothing new would still be a change.
fn ready(ok: bool, reason: &str, message: &str, now: DateTime<Utc>, old: &[Condition]) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == status)
        .map_or_else(|| to_time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: truncate(message, 1000),
        last_transition_time: since,
        observed_generation: None,
    }
}

async fn patch_status(
    api: &Api<RetentionPolicy>,
    rp: &RetentionPolicy,
    status: &RetentionPolicyStatus,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": "teledrop.dev/v1alpha1",
        "kind": "RetentionPolicy",
        "status": status,
    });
    api.patch_status(
        &rp.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Publishes an event on the policy; a failure to publish is only logged.
async fn publish(ctx: &Context, rp: &RetentionPolicy, type_: EventType, reason: &str, action: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &rp.object_ref(&())).await {
        tracing::warn!(policy = %key_of(rp), error = %report(&e), "could not publish an event");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn to_time(t: DateTime<Utc>) -> Time {
    Time(Timestamp::from_millisecond(t.timestamp_millis()).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn from_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0.as_millisecond()).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Runs the controller until `stop` is cancelled, then lets reconciles in
/// flight finish for at most `drain` before dropping them (a dropped sweep
/// is safe: see `teledrop_retention::sweep`).
pub async fn run_controller(ctx: Arc<Context>, namespace: Option<String>, stop: Stop, drain: Duration) {
    let api: Api<RetentionPolicy> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let (graceful_tx, graceful_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(async {
            let _ = graceful_rx.await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %report(&e), "reconcile ended with an error");
            }
        });
    tokio::pin!(controller);
    tokio::select! {
        () = &mut controller => return,
        () = stop.cancelled() => {}
    }
    let _ = graceful_tx.send(());
    if tokio::time::timeout(drain, controller).await.is_err() {
        tracing::warn!(?drain, "reconciles still running at the drain deadline were dropped");
    }
}

/// Where and as whom replicas elect a leader.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The `coordination.k8s.io/v1` Lease.
    pub name: String,
    pub namespace: String,
    /// This replica (its pod name): the Lease's `holderIdentity`.
    pub identity: String,
    /// How long a held lease lasts without renewal, in seconds.
    pub duration: u64,
    /// How long before expiry the holder renews, in seconds (below
    /// `duration`).
    pub grace: u64,
}

/// The watcher task of [`leadership`]: it ends, releasing the lease, once
/// every receiver of its channel is dropped.
pub type LeaseTask =
    tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>>;

/// Takes part in the election on the Lease (created when missing): the
/// channel says whether this replica holds it now, for [`lead`]. The
/// lease is renewed while held and released when the channel's receivers
/// are gone.
pub async fn leadership(
    client: Client,
    lease: &LeaseSettings,
) -> Result<(watch::Receiver<bool>, LeaseTask), kube_lease_manager::LeaseManagerError> {
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration)
        .with_grace(lease.grace)
        .build()
        .await?;
    Ok(manager.watch().await)
}

/// Runs one term of `work` each time `leader` turns true, stopping it when
/// leadership is lost; returns once `shutdown` completes (stopping the
/// running term). `work` gets the token cancelled when it must stop.
pub async fn lead<W, F>(mut leader: watch::Receiver<bool>, shutdown: impl Future<Output = ()>, mut work: W)
where
    W: FnMut(Stop) -> F,
    F: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    loop {
        // Wait to lead.
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            led = leader.wait_for(|l| *l) => if led.is_err() { return },
        }
        tracing::info!("leading: reconciling RetentionPolicies");
        let stop = Stop::new();
        let term = work(stop.clone());
        tokio::pin!(term);
        let mut stopping_for_shutdown = false;
        loop {
            tokio::select! {
                () = &mut term => break,
                () = &mut shutdown, if !stop.is_cancelled() => {
                    stopping_for_shutdown = true;
                    stop.cancel();
                }
                lost = leader.wait_for(|l| !*l), if !stop.is_cancelled() => {
                    if lost.is_err() { stopping_for_shutdown = true; }
                    tracing::warn!("leadership lost: stopping");
                    stop.cancel();
                }
            }
        }
        if stopping_for_shutdown {
            return;
        }
    }
}

/// Removes orphaned objects every `every` until `stop` completes,
/// counting what it removed and its failures.
pub async fn run_orphan_collection(
    sweeper: PolicyEnforcer,
    metrics: Arc<Metrics>,
    grace: Duration,
    every: Duration,
    stop: impl Future<Output = ()>,
) {
    teledrop_retention::collect_orphans_every(sweeper, grace, every, stop, |result| match result {
        Ok(r) => {
            metrics.orphans_deleted.inc_by(r.deleted.files);
        }
        Err(e) => metrics.errors.inc(e.label()),
    })
    .await;
}
