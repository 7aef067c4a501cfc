//! End to end: the real `teledrop controller` process against kube-sim,
//! an HTTPS Kubernetes API stand-in, with the test run's Postgres and S3.
//! Policies are created, changed and deleted through the stand-in as
//! kubectl would; the tests wait (with deadlines) for what the controller
//! writes back: finalizers, status, events, the Lease, and the files it
//! deletes from the catalog and the bucket.

#[allow(dead_code)]
mod common;
mod controller_env;

use controller_env::{Env, FINALIZER, LEASE_DURATION, WAIT, logs, observed, ready};
use kube_sim::RETENTION_POLICIES;
use serde_json::json;

const NS: &str = "team-a";

fn sweep_users(users: &[i64]) -> serde_json::Value {
    json!({"selector": {"users": users}, "maxAge": "1s", "interval": "1h"})
}

/// Waits until `file` is more than `maxAge` (1 s) old, so one sweep
/// surely selects it.
async fn older_than_max_age(file: &teledrop_core::FileRecord) {
    let created = file.created_at.timestamp_millis();
    let old = teledrop_testkit::poll_until(WAIT, || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        (now - created > 1500).then_some(())
    })
    .await;
    assert!(old.is_some());
}

#[tokio::test]
async fn a_policy_gets_its_finalizer_sweeps_reports_follows_its_spec_and_its_deletion_removes_its_rules() {
    let env = Env::new().await;
    let doomed = env.stored_file(501).await;
    let kept = env.stored_file(502).await;
    older_than_max_age(&doomed).await;
    let mut ctl = env.controller("ctl-a").await;
    let procs = [&ctl];

    env.create_policy(NS, "short", sweep_users(&[501]));
    let p = env
        .wait_policy(&procs, NS, "short", "swept and Ready", |p| {
            observed(p) && ready(p).is_some_and(|(s, _)| s == "True")
        })
        .await;
    assert!(
        p.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER)),
        "{p:#?}"
    );
    let status = p.status.clone().unwrap();
    let run = status.last_run.expect("lastRun");
    assert_eq!((run.matched_files, run.deleted_files), (1, 1), "{status:#?}");
    assert_eq!(status.total_deleted_files, 1, "{status:#?}");
    assert!(
        status.last_run_time.is_some() && status.next_run_time.is_some(),
        "{status:#?}"
    );
    assert!(
        env.swept(&doomed).await,
        "user 501's file left the catalog and the bucket"
    );
    assert!(
        !env.swept(&kept).await && env.object_exists(&kept).await,
        "user 502's file stays"
    );
    assert_eq!(env.policy_keys().await, ["team-a/short"]);

    let event = env.wait_event(&procs, NS, "short", "Swept").await;
    assert_eq!(event["type"], "Normal", "{event:#}");
    assert_eq!(event["reportingController"], "teledrop-controller", "{event:#}");
    assert_eq!(event["reportingInstance"], "ctl-a", "{event:#}");
    assert_eq!(
        event.pointer("/regarding/kind"),
        Some(&json!("RetentionPolicy")),
        "{event:#}"
    );

    // A spec change sweeps again at once; the status follows the
    // generation, and the catalog holds the new spec.
    let second = env.stored_file(503).await;
    older_than_max_age(&second).await;
    env.set_spec(NS, "short", sweep_users(&[503]));
    let p = env
        .wait_policy(&procs, NS, "short", "generation 2 observed", |p| {
            p.metadata.generation == Some(2) && observed(p)
        })
        .await;
    let status = p.status.clone().unwrap();
    assert_eq!(status.total_deleted_files, 2, "{status:#?}");
    assert_eq!(ready(&p).map(|r| r.0), Some("True".into()));
    assert!(env.swept(&second).await);
    assert!(!env.swept(&kept).await);
    let rows = env.catalog.policies().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].generation, &rows[0].spec["selector"]["users"]),
        (2, &json!([503]))
    );

    // Deletion: marked, rules removed, finalizer dropped, object gone.
    let marked = env.kube.delete(RETENTION_POLICIES, NS, "short").unwrap();
    assert!(marked.pointer("/metadata/deletionTimestamp").is_some(), "{marked:#}");
    let gone = env
        .kube
        .wait_for(WAIT, |k| k.get(RETENTION_POLICIES, NS, "short").is_none().then_some(()))
        .await;
    assert!(gone.is_some(), "the policy is still there\n{}", logs(&procs));
    assert!(env.policy_keys().await.is_empty(), "rules removed before the finalizer");

    // The status was written by server-side apply on the status
    // subresource, and nothing the controller asked for was unknown.
    let requests = env.kube.requests();
    assert!(
        requests.iter().any(|r| r.method == "PATCH"
            && r.path.ends_with("/retentionpolicies/short/status")
            && r.content_type.as_deref() == Some("application/apply-patch+yaml")
            && r.query.contains("fieldManager=teledrop-controller")),
        "{requests:#?}"
    );
    let unexpected: Vec<_> = requests
        .iter()
        .filter(|r| r.status == 404 && !(r.method == "GET" && r.path.contains("/leases/")))
        .collect();
    assert!(unexpected.is_empty(), "answered 404: {unexpected:#?}");

    let exit = ctl.terminate(WAIT).await;
    assert!(exit.success(), "clean exit on SIGTERM: {exit}\n{}", ctl.log_text());
    assert_eq!(env.lease_holder(), None, "the lease was released on the way out");
}

#[tokio::test]
async fn an_invalid_spec_is_not_ready_with_a_warning_until_fixed() {
    let env = Env::new().await;
    let ctl = env.controller("ctl-a").await;
    let procs = [&ctl];

    // Schema-valid but without any rule: refused by the rules' check.
    env.create_policy(NS, "empty", json!({"selector": {"users": [7]}}));
    let p = env
        .wait_policy(&procs, NS, "empty", "Ready=False", |p| {
            observed(p) && ready(p).is_some_and(|(s, _)| s == "False")
        })
        .await;
    assert_eq!(ready(&p).unwrap().1, "InvalidSpec");
    let event = env.wait_event(&procs, NS, "empty", "InvalidSpec").await;
    assert_eq!(event["type"], "Warning", "{event:#}");
    assert!(
        event["note"].as_str().is_some_and(|n| n.contains("maxAge")),
        "the event says what is missing: {event:#}"
    );
    assert!(
        env.policy_keys().await.is_empty(),
        "no rules stored for an invalid policy"
    );
    // One status write and one event for the refused generation: the
    // controller's own status write must not make it write again.
    let status_writes = env
        .kube
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/retentionpolicies/empty/status"))
        .count();
    assert_eq!(status_writes, 1, "{:#?}\n{}", env.kube.requests(), logs(&procs));
    let events = env.kube.events(NS);
    assert_eq!(events.len(), 1, "{events:#?}");

    env.set_spec(NS, "empty", sweep_users(&[7]));
    env.wait_policy(&procs, NS, "empty", "Ready=True once fixed", |p| {
        observed(p) && ready(p).is_some_and(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(env.policy_keys().await, ["team-a/empty"]);
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_survivor_takes_over_after_kill_9() {
    let env = Env::new().await;
    let mut first = env.controller("ctl-a").await;
    let held = env
        .kube
        .wait_for(WAIT, |_| env.lease_holder().filter(|h| h == "ctl-a"))
        .await;
    assert!(held.is_some(), "ctl-a never took the lease\n{}", first.log_text());
    let second = env.controller("ctl-b").await;

    env.create_policy(NS, "shared", sweep_users(&[601]));
    env.wait_policy(&[&first, &second], NS, "shared", "Ready", |p| {
        observed(p) && ready(p).is_some_and(|(s, _)| s == "True")
    })
    .await;
    assert!(
        !second.log_text().contains("leading: reconciling"),
        "ctl-b must not lead while ctl-a holds the lease\n{}",
        second.log_text()
    );
    assert_eq!(env.lease_holder().as_deref(), Some("ctl-a"));

    first.kill9().await;
    let taken_over = std::time::Instant::now();
    let file = env.stored_file(602).await;
    older_than_max_age(&file).await;
    env.set_spec(NS, "shared", sweep_users(&[602]));
    let procs = [&second];
    env.wait_policy(&procs, NS, "shared", "generation 2 observed by ctl-b", |p| {
        p.metadata.generation == Some(2) && observed(p)
    })
    .await;
    assert_eq!(env.lease_holder().as_deref(), Some("ctl-b"));
    assert!(
        taken_over.elapsed() < WAIT + LEASE_DURATION,
        "took over in {:?}",
        taken_over.elapsed()
    );
    env.eventually(&procs, "ctl-b swept user 602's file", || env.swept(&file))
        .await;
    let events = env.kube.events(NS);
    assert!(
        events
            .iter()
            .any(|e| e["reportingInstance"] == "ctl-b" && e["reason"] == "Swept"),
        "{events:#?}"
    );
}

#[tokio::test]
async fn the_controller_recovers_from_api_errors_closed_watches_and_expired_versions() {
    let env = Env::new().await;
    let ctl = env.controller("ctl-a").await;
    let procs = [&ctl];
    env.create_policy(NS, "flaky", sweep_users(&[701]));
    env.wait_policy(&procs, NS, "flaky", "Ready", observed).await;

    // 500s for a while, and the watch cut: a later change still lands.
    let before = env.kube.requests().len();
    env.kube.fail_next(5);
    env.kube.close_watches();
    env.set_spec(NS, "flaky", sweep_users(&[701, 702]));
    env.wait_policy(&procs, NS, "flaky", "generation 2 observed", |p| {
        p.metadata.generation == Some(2) && observed(p)
    })
    .await;
    let after = &env.kube.requests()[before..];
    assert_eq!(after.iter().filter(|r| r.status == 500).count(), 5, "{after:#?}");
    let rewatched = env
        .kube
        .wait_for(WAIT, |k| {
            k.requests()[before..]
                .iter()
                .any(|r| r.is_watch() && r.status == 200)
                .then_some(())
        })
        .await;
    assert!(rewatched.is_some(), "never watched again\n{}", logs(&procs));

    // While the API is down, the policy changes and the history the
    // watch would resume from is compacted away: the watch gets 410
    // Expired when the API is back, and the controller lists again.
    env.kube
        .wait_for(WAIT, |k| (k.open_watches() > 0).then_some(()))
        .await
        .expect("a watch is open");
    let before = env.kube.requests().len();
    env.kube.outage(true);
    env.kube.close_watches();
    env.set_spec(NS, "flaky", sweep_users(&[703]));
    env.kube.compact();
    env.kube.outage(false);
    env.wait_policy(&procs, NS, "flaky", "generation 3 observed", |p| {
        p.metadata.generation == Some(3) && observed(p)
    })
    .await;
    let after = &env.kube.requests()[before..];
    assert!(
        after
            .iter()
            .any(|r| r.method == "GET" && !r.is_watch() && r.path.ends_with("/retentionpolicies")),
        "listed again after 410: {after:#?}"
    );
}
