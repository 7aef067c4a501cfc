//! Leader election as the controller runs it ([`leadership`] feeding
//! [`lead`]): kube-lease-manager's real requests, answered by a small fake
//! of the Kubernetes Lease API behind a tower-test mock service. The fake
//! keeps the one Lease in memory and applies GET, POST and PATCH
//! (server-side apply and strategic merge, `null` deleting a field) the way
//! the API server does, so a test can play another replica by rewriting
//! the Lease. Every step has a deadline; the waits are on the work's own
//! start and stop signals, not on time.

use chrono::{SecondsFormat, Utc};
use http::{Method, Request, Response, StatusCode, header};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teledrop_controller::{LeaseSettings, lead, leadership};
use tokio::sync::mpsc;
use tower_test::mock::Handle;

const DEADLINE: Duration = Duration::from_secs(15);
const NAMESPACE: &str = "teledrop";
const NAME: &str = "teledrop-controller";
const ME: &str = "controller-0";

/// What the fake API saw: method, path, the patch's content type.
type Seen = Vec<(Method, String, String)>;

#[derive(Default)]
struct FakeLeases {
    lease: Mutex<Option<Value>>,
    seen: Mutex<Seen>,
}

fn item_path() -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{NAME}")
}

fn status(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, body)
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl FakeLeases {
    fn holder(&self) -> Option<String> {
        let lease = self.lease.lock().unwrap();
        lease.as_ref()?["spec"]["holderIdentity"].as_str().map(str::to_owned)
    }

    fn spec(&self) -> Value {
        self.lease.lock().unwrap().as_ref().expect("the lease exists")["spec"].clone()
    }

    /// Another replica holds the lease from now on, for `seconds`.
    fn taken_by(&self, other: &str, seconds: u64) {
        let mut lease = self.lease.lock().unwrap();
        let lease = lease.as_mut().expect("the lease exists");
        lease["spec"] = json!({
            "holderIdentity": other, "acquireTime": now(), "renewTime": now(),
            "leaseDurationSeconds": seconds, "leaseTransitions": 7,
        });
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    fn answer(&self, method: &Method, path: &str, content_type: &str, body: Value) -> (StatusCode, Value) {
        let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases");
        let mut lease = self.lease.lock().unwrap();
        let not_found = || {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "leases.coordination.k8s.io not found",
            )
        };
        let bump = |l: &mut Value| {
            let v = l["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            l["metadata"]["resourceVersion"] = json!((v + 1).to_string());
        };
        match (method.clone(), path) {
            (Method::GET, p) if p == item_path() => match lease.as_ref() {
                Some(l) => (StatusCode::OK, l.clone()),
                None => not_found(),
            },
            (Method::POST, p) if p == collection => {
                if lease.is_some() {
                    return status(StatusCode::CONFLICT, "AlreadyExists", "already exists");
                }
                let mut created = body;
                created["apiVersion"] = json!("coordination.k8s.io/v1");
                created["kind"] = json!("Lease");
                created["metadata"]["namespace"] = json!(NAMESPACE);
                created["metadata"]["uid"] = json!("0b6f7a3e-2222-4c4c-9d9d-abcdefabcdef");
                if created.get("spec").is_none_or(Value::is_null) {
                    created["spec"] = json!({});
                }
                bump(&mut created);
                *lease = Some(created.clone());
                (StatusCode::CREATED, created)
            }
            (Method::PATCH, p) if p == item_path() => {
                let Some(l) = lease.as_mut() else {
                    return not_found();
                };
                let apply = content_type.starts_with("application/apply-patch");
                let holder = l["spec"]["holderIdentity"].as_str().map(str::to_owned);
                let wanted = body["spec"]["holderIdentity"].as_str().map(str::to_owned);
                // Server-side apply of the holder conflicts with the field
                // manager (another replica) that set it.
                if apply && holder.is_some() && wanted.is_some() && holder != wanted {
                    return status(StatusCode::CONFLICT, "Conflict", "Apply failed with 1 conflict");
                }
                if let Some(fields) = body["spec"].as_object() {
                    if !l["spec"].is_object() {
                        l["spec"] = json!({});
                    }
                    let spec = l["spec"].as_object_mut().unwrap();
                    for (k, v) in fields {
                        if v.is_null() {
                            spec.remove(k);
                        } else {
                            spec.insert(k.clone(), v.clone());
                        }
                    }
                }
                bump(l);
                (StatusCode::OK, l.clone())
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not in the fake"),
        }
    }
}

/// Answers every request from the fake until the client goes away.
fn serve(mut handle: Handle<Request<Body>, Response<Body>>, fake: Arc<FakeLeases>) {
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let content_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            fake.seen
                .lock()
                .unwrap()
                .push((method.clone(), path.clone(), content_type.clone()));
            let (code, answer) = fake.answer(&method, &path, &content_type, body);
            send.send_response(
                Response::builder()
                    .status(code)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
}

/// What the work under leadership reports, in the order it happened.
#[derive(Debug, PartialEq, Eq)]
enum Term {
    Started(u32),
    Stopped(u32),
}

async fn recv(rx: &mut mpsc::UnboundedReceiver<Term>, what: &str) -> Term {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_taken_lost_to_another_replica_regained_and_released() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let fake = Arc::new(FakeLeases::default());
    serve(handle, fake.clone());
    let settings = LeaseSettings {
        name: NAME.into(),
        namespace: NAMESPACE.into(),
        identity: ME.into(),
        duration: 2,
        grace: 1,
    };
    let (leader, lease_task) = leadership(Client::new(service, "default"), &settings)
        .await
        .expect("the election starts");

    let (events_tx, mut events) = mpsc::unbounded_channel::<Term>();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let mut term = 0;
    let leading = tokio::spawn(lead(
        leader,
        async {
            let _ = shutdown_rx.await;
        },
        move |stop| {
            term += 1;
            let (events, n) = (events_tx.clone(), term);
            async move {
                events.send(Term::Started(n)).unwrap();
                stop.cancelled().await;
                events.send(Term::Stopped(n)).unwrap();
            }
        },
    ));

    // A missing Lease is created, then taken: work starts.
    assert_eq!(recv(&mut events, "the lease is taken").await, Term::Started(1));
    assert_eq!(fake.holder().as_deref(), Some(ME));
    let spec = fake.spec();
    assert_eq!(spec["leaseDurationSeconds"], 2);
    assert_eq!(spec["leaseTransitions"], 1);
    let seen = fake.seen();
    let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases");
    assert!(
        seen.iter().any(|(m, p, _)| *m == Method::POST && *p == collection),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(m, _, ct)| *m == Method::PATCH && ct.starts_with("application/apply-patch")),
        "the holder is taken by server-side apply: {seen:?}"
    );

    // Another replica holds it (ours lapsed, say, during a partition):
    // the next renewal finds out and work stops before any starts again.
    fake.taken_by("controller-1", 2);
    assert_eq!(recv(&mut events, "leadership is lost").await, Term::Stopped(1));

    // That replica stops renewing: once its lease expires, ours is back,
    // taken over from that replica's lease (its transition count goes on).
    assert_eq!(
        recv(&mut events, "the expired lease is taken over").await,
        Term::Started(2)
    );
    assert_eq!(fake.holder().as_deref(), Some(ME));
    assert_eq!(fake.spec()["leaseTransitions"], 8, "{:?}", fake.spec());

    // Shutdown stops the work and releases the lease for the next replica.
    shutdown_tx.send(()).unwrap();
    assert_eq!(recv(&mut events, "shutdown stops the work").await, Term::Stopped(2));
    tokio::time::timeout(DEADLINE, leading).await.unwrap().unwrap();
    let released = tokio::time::timeout(DEADLINE, lease_task)
        .await
        .expect("the lease task ends once nobody listens")
        .unwrap();
    assert!(released.is_ok(), "{:?}", released.err());
    assert_eq!(fake.holder(), None, "released: {:?}", fake.spec());
}
