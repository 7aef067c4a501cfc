//! The reconciler against a scripted Kubernetes API (a tower-test mock
//! service as the client; each expected request is checked for method,
//! path and body, and answered), with a real SQLite catalog and a real
//! folder store behind the sweep. Every scenario has a deadline.

use chrono::Utc;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::{Client, Resource};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::{Catalog, SqliteCatalog};
use teledrop_controller::{Context, FINALIZER, Metrics, backoff, error_policy, lead, reconcile};
use teledrop_core::{NewLink, UpdateId, UserId};
use teledrop_retention::{PolicyEnforcer, RetentionPolicy, RetentionPolicySpec};
use teledrop_storage::Storage;
use tokio::sync::watch;
use tower_test::mock::{Handle, SendResponse};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const DEADLINE: Duration = Duration::from_secs(10);
const BASE: &str = "/apis/teledrop.dev/v1alpha1/namespaces/default/retentionpolicies";

struct Env {
    ctx: Arc<Context>,
    catalog: Arc<dyn Catalog>,
    storage: Storage,
    handle: ApiHandle,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let catalog = SqliteCatalog::connect(&format!("sqlite://{}", dir.path().join("c.db").display()))
        .await
        .unwrap();
    catalog.migrate().await.unwrap();
    let catalog: Arc<dyn Catalog> = Arc::new(catalog);
    let storage = Storage::from_url(&format!("file://{}", dir.path().join("objects").display())).unwrap();
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Arc::new(Context::new(
        client,
        catalog.clone(),
        PolicyEnforcer::new(catalog.clone(), storage.clone()),
        Reporter {
            controller: "teledrop-controller".into(),
            instance: Some("test-pod".into()),
        },
        Arc::new(Metrics::default()),
    ));
    Env {
        ctx,
        catalog,
        storage,
        handle,
        _dir: dir,
    }
}

fn policy(spec: Value, finalized: bool) -> RetentionPolicy {
    let spec: RetentionPolicySpec = serde_json::from_value(spec).unwrap();
    let mut rp = RetentionPolicy::new("test", spec);
    rp.meta_mut().namespace = Some("default".into());
    rp.meta_mut().uid = Some("6d3c8f4e-1111-4a4a-8b8b-123456789abc".into());
    rp.meta_mut().generation = Some(3);
    rp.meta_mut().resource_version = Some("100".into());
    if finalized {
        rp.meta_mut().finalizers = Some(vec![FINALIZER.into()]);
    }
    rp
}

async fn old_file(env: &Env) {
    let incoming = teledrop_fixtures::document(1, UserId(1), "old.txt", "text/plain", 5);
    teledrop_fixtures::store_committed(
        &*env.catalog,
        &env.storage,
        UpdateId(1),
        &incoming,
        b"hello",
        NewLink::unlimited(),
    )
    .await;
}

/// One expected request: method, path (without query), what the query
/// must contain, a check of the body, and the answer.
struct Expect {
    method: Method,
    path: String,
    query_has: Vec<&'static str>,
    body: Box<dyn FnOnce(Value) + Send>,
    status: StatusCode,
    answer: Box<dyn FnOnce(Value) -> Value + Send>,
}

impl Expect {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query_has: Vec::new(),
            body: Box::new(|_| {}),
            status: StatusCode::OK,
            answer: Box::new(|body| body),
        }
    }
    fn query(mut self, q: &'static str) -> Self {
        self.query_has.push(q);
        self
    }
    fn body(mut self, check: impl FnOnce(Value) + Send + 'static) -> Self {
        self.body = Box::new(check);
        self
    }
    fn answer(mut self, status: StatusCode, answer: impl FnOnce(Value) -> Value + Send + 'static) -> Self {
        self.status = status;
        self.answer = Box::new(answer);
        self
    }
}

/// Serves the expectations in order and fails on anything else.
fn verify(mut handle: ApiHandle, script: Vec<Expect>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for (i, e) in script.into_iter().enumerate() {
            let (request, send): (Request<Body>, SendResponse<Response<Body>>) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("request {i} never came"));
            assert_eq!(request.method(), e.method, "request {i}: {}", request.uri());
            assert_eq!(request.uri().path(), e.path, "request {i}");
            let query = request.uri().query().unwrap_or_default().to_owned();
            for q in &e.query_has {
                assert!(query.contains(q), "request {i}: query {query:?} lacks {q}");
            }
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            (e.body)(body.clone());
            let answer = (e.answer)(body);
            send.send_response(
                Response::builder()
                    .status(e.status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    })
}

fn with(rp: &RetentionPolicy, f: impl FnOnce(&mut Value)) -> Value {
    let mut v = serde_json::to_value(rp).unwrap();
    f(&mut v);
    v
}

async fn scenario<T>(verifier: tokio::task::JoinHandle<()>, run: impl std::future::Future<Output = T>) -> T {
    let out = tokio::time::timeout(DEADLINE, run).await.expect("reconcile timed out");
    tokio::time::timeout(DEADLINE, verifier)
        .await
        .expect("verifier timed out")
        .expect("verifier failed");
    out
}

#[tokio::test]
async fn the_finalizer_is_added_first() {
    let env = env().await;
    let rp = policy(json!({"maxAge": "30d"}), false);
    let answer = with(&rp, |v| v["metadata"]["finalizers"] = json!([FINALIZER]));
    let verifier = verify(
        env.handle,
        vec![
            Expect::new(Method::PATCH, format!("{BASE}/test"))
                .body(|patch| {
                    // A JSON patch that adds our finalizer and nothing else.
                    let ops = patch.as_array().unwrap();
                    assert!(ops.iter().any(|op| op["op"] == "add"
                        && op["path"].as_str().unwrap().starts_with("/metadata/finalizers")
                        && op["value"].to_string().contains(FINALIZER)));
                    assert!(
                        ops.iter()
                            .all(|op| op["path"].as_str().unwrap().starts_with("/metadata/finalizers"))
                    );
                })
                .answer(StatusCode::OK, move |_| answer),
        ],
    );
    let action = scenario(verifier, reconcile(Arc::new(rp), env.ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    // Nothing is stored or swept before the finalizer is in place.
    assert!(env.catalog.policies().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_sweep_stores_the_rules_applies_status_and_publishes_an_event() {
    let env = env().await;
    old_file(&env).await;
    // maxAge 1s; the file is "old" once a second has passed since commit,
    // so sweep with a policy that deletes every text file via maxFiles=0
    // eviction instead of waiting.
    let rp = policy(
        json!({"selector": {"mimeTypes": ["text/*"]}, "total": {"maxFiles": 0}, "onQuotaExceeded": "EvictOldest", "interval": "10m"}),
        true,
    );
    let status_answer = rp.clone();
    let verifier = verify(
        env.handle,
        vec![
            Expect::new(Method::PATCH, format!("{BASE}/test/status"))
                .query("fieldManager=teledrop-controller")
                .query("force=true")
                .body(|b| {
                    assert_eq!(b["apiVersion"], "teledrop.dev/v1alpha1");
                    assert_eq!(b["kind"], "RetentionPolicy");
                    let s = &b["status"];
                    assert_eq!(s["observedGeneration"], 3);
                    assert_eq!(s["lastRun"]["matchedFiles"], 1);
                    assert_eq!(s["lastRun"]["deletedFiles"], 1);
                    assert_eq!(s["lastRun"]["freedBytes"], 5);
                    assert_eq!(s["totalDeletedFiles"], 1);
                    assert_eq!(s["usage"]["files"], 0);
                    assert_eq!(s["conditions"][0]["type"], "Ready");
                    assert_eq!(s["conditions"][0]["status"], "True");
                    assert!(s["nextRunTime"].is_string() && s["lastRunTime"].is_string());
                    // Only the status: spec and metadata are not ours to apply.
                    assert!(b.get("spec").is_none() && b.get("metadata").is_none());
                })
                .answer(StatusCode::OK, move |_| serde_json::to_value(&status_answer).unwrap()),
            Expect::new(Method::POST, "/apis/events.k8s.io/v1/namespaces/default/events").body(|e| {
                assert_eq!(e["type"], "Normal");
                assert_eq!(e["reason"], "Swept");
                assert!(e["note"].as_str().unwrap().contains("deleted 1 file ("), "{e}");
                assert_eq!(e["regarding"]["name"], "test");
                assert_eq!(e["reportingController"], "teledrop-controller");
            }),
        ],
    );
    let action = scenario(verifier, reconcile(Arc::new(rp), env.ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
    let rows = env.catalog.policies().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key, "default/test");
    assert_eq!(rows[0].generation, 3);
    assert_eq!(env.catalog.usage(UserId(1)).await.unwrap().files, 0);
    assert_eq!(env.ctx.metrics.files_deleted.get(), 1);
}

#[tokio::test]
async fn a_policy_not_yet_due_only_requeues() {
    let env = env().await;
    let mut rp = policy(json!({"maxAge": "30d", "interval": "1h"}), true);
    // Swept ten minutes ago at this generation.
    rp.status = Some(teledrop_retention::RetentionPolicyStatus {
        observed_generation: Some(3),
        last_run_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_millisecond(
                (Utc::now() - chrono::Duration::minutes(10)).timestamp_millis(),
            )
            .unwrap(),
        )),
        ..Default::default()
    });
    // No request at all: the verifier expects none.
    let verifier = verify(env.handle, vec![]);
    let action = scenario(verifier, reconcile(Arc::new(rp), env.ctx.clone()))
        .await
        .unwrap();
    let wait = format!("{action:?}");
    // About 50 minutes.
    assert!(wait.contains("requeue_after: Some(29"), "{wait}");
    assert_eq!(
        env.catalog.policies().await.unwrap().len(),
        1,
        "rules stored all the same"
    );
}

#[tokio::test]
async fn deleting_a_policy_removes_its_rules_and_then_the_finalizer() {
    let env = env().await;
    env.catalog
        .upsert_policy("default/test", 3, &json!({"maxAge": "30d"}))
        .await
        .unwrap();
    let mut rp = policy(json!({"maxAge": "30d"}), true);
    rp.meta_mut().deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let answer = with(&rp, |v| v["metadata"]["finalizers"] = json!([]));
    let catalog = env.catalog.clone();
    let verifier = verify(
        env.handle,
        vec![
            Expect::new(Method::PATCH, format!("{BASE}/test"))
                .body(move |patch| {
                    let ops = patch.as_array().unwrap();
                    assert!(ops.iter().any(|op| op["op"] == "remove"), "{patch}");
                    // The rules were gone before the finalizer is removed.
                    let rows = futures::executor::block_on(catalog.policies()).unwrap();
                    assert!(rows.is_empty());
                })
                .answer(StatusCode::OK, move |_| answer),
        ],
    );
    let action = scenario(verifier, reconcile(Arc::new(rp), env.ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_its_rules_withdrawn() {
    let env = env().await;
    env.catalog
        .upsert_policy("default/test", 2, &json!({"maxAge": "30d"}))
        .await
        .unwrap();
    let rp = policy(
        json!({"selector": {"minSize": "2Mi", "maxSize": "1Mi"}, "maxAge": "1d"}),
        true,
    );
    let answer = serde_json::to_value(&rp).unwrap();
    let verifier = verify(
        env.handle,
        vec![
            Expect::new(Method::PATCH, format!("{BASE}/test/status"))
                .body(|b| {
                    let c = &b["status"]["conditions"][0];
                    assert_eq!(c["status"], "False");
                    assert_eq!(c["reason"], "InvalidSpec");
                    assert!(c["message"].as_str().unwrap().contains("minSize"));
                })
                .answer(StatusCode::OK, move |_| answer),
            Expect::new(Method::POST, "/apis/events.k8s.io/v1/namespaces/default/events").body(|e| {
                assert_eq!(e["type"], "Warning");
                assert_eq!(e["reason"], "InvalidSpec");
            }),
        ],
    );
    let action = scenario(verifier, reconcile(Arc::new(rp), env.ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(env.catalog.policies().await.unwrap().is_empty());
}

#[tokio::test]
async fn errors_publish_a_warning_and_requeue_with_backoff() {
    let env = env().await;
    let rp = policy(json!({"maxAge": "30d"}), true);
    let verifier = verify(
        env.handle,
        vec![
            Expect::new(Method::PATCH, format!("{BASE}/test/status")).answer(StatusCode::INTERNAL_SERVER_ERROR, |_| {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is sad", "reason": "InternalError", "code": 500})
            }),
            Expect::new(Method::POST, "/apis/events.k8s.io/v1/namespaces/default/events").body(|e| {
                assert_eq!(e["type"], "Warning");
                assert_eq!(e["reason"], "ReconcileFailed");
                assert!(e["note"].as_str().unwrap().contains("etcd is sad"), "{e}");
            }),
        ],
    );
    let rp = Arc::new(rp);
    let err = scenario(verifier, reconcile(rp.clone(), env.ctx.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.label(), "kube_api");
    assert_eq!(env.ctx.metrics.errors.get("kube_api"), 1);
    // Doubling from 5 s, each delay with up to 100 % of jitter on top.
    for base in [5.0, 10.0, 20.0] {
        let action = error_policy(rp.clone(), &err, env.ctx.clone());
        let secs = requeue_secs(&action);
        assert!(
            secs >= base && secs < base * 2.0,
            "{action:?} not in [{base} s, {} s)",
            base * 2.0
        );
    }
    let capped = backoff(30);
    assert!(
        capped >= Duration::from_secs(150) && capped < Duration::from_secs(300),
        "{capped:?}"
    );
}

/// The delay of a requeue, which `Action` shows only in its `Debug`
/// (`Action { requeue_after: Some(7.25s) }` for delays of seconds).
fn requeue_secs(action: &Action) -> f64 {
    let shown = format!("{action:?}");
    shown
        .strip_prefix("Action { requeue_after: Some(")
        .and_then(|rest| rest.strip_suffix("s) }"))
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| panic!("not a requeue of seconds: {shown}"))
}

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<u32>) -> u32 {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("timed out")
        .unwrap()
}

#[tokio::test]
async fn work_runs_only_while_leading() {
    let (leader_tx, leader_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let (stopped_tx, mut stopped) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let mut term = 0;
    let task = tokio::spawn(lead(
        leader_rx,
        async {
            let _ = shutdown_rx.await;
        },
        move |stop| {
            term += 1;
            let (started_tx, stopped_tx, n) = (started_tx.clone(), stopped_tx.clone(), term);
            async move {
                started_tx.send(n).unwrap();
                stop.cancelled().await;
                stopped_tx.send(n).unwrap();
            }
        },
    ));
    // Not leading: nothing runs (the first term starts only once leading).
    leader_tx.send(true).unwrap();
    assert_eq!(recv(&mut started).await, 1);
    assert!(stopped.try_recv().is_err());
    // Lease lost: the term stops; regained: a new one starts.
    leader_tx.send(false).unwrap();
    assert_eq!(recv(&mut stopped).await, 1);
    assert!(started.try_recv().is_err());
    leader_tx.send(true).unwrap();
    assert_eq!(recv(&mut started).await, 2);
    // Shutdown stops the running term and returns.
    shutdown_tx.send(()).unwrap();
    assert_eq!(recv(&mut stopped).await, 2);
    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_running_controller_lists_policies_only_while_leading() {
    let env = env().await;
    let (leader_tx, leader_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let ctx = env.ctx.clone();
    let task = tokio::spawn(lead(
        leader_rx,
        async {
            let _ = shutdown_rx.await;
        },
        move |stop| {
            teledrop_controller::run_controller(ctx.clone(), Some("default".into()), stop, Duration::from_secs(1))
        },
    ));
    let mut handle = env.handle;
    // Not leading: the API is not called.
    tokio::task::yield_now().await;
    leader_tx.send(true).unwrap();
    let (request, send) = tokio::time::timeout(DEADLINE, handle.next_request())
        .await
        .expect("the controller never listed")
        .unwrap();
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.uri().path(), BASE);
    send.send_response(
        Response::builder()
            .status(200)
            .body(Body::from(
                serde_json::to_vec(&json!({
                    "apiVersion": "teledrop.dev/v1alpha1", "kind": "RetentionPolicyList",
                    "metadata": {"resourceVersion": "1"}, "items": []
                }))
                .unwrap(),
            ))
            .unwrap(),
    );
    // Losing the lease ends the controller's term; shutdown ends `lead`.
    leader_tx.send(false).unwrap();
    shutdown_tx.send(()).unwrap();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the controller did not stop")
        .unwrap();
}
