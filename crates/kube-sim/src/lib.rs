//! `kube-sim`: a Kubernetes API server stand-in for tests, in the spirit
//! of `tg-sim`. It serves HTTPS with a CA made at start, writes a
//! kubeconfig any client (kube-rs, kubectl) can use through `KUBECONFIG`,
//! keeps objects in memory and follows the API conventions a controller
//! depends on:
//!
//! - list and watch (namespaced and across namespaces), one
//!   resourceVersion counter, bookmarks, `410 Expired` for a version older
//!   than the history kept ([`KubeSim::compact`]);
//! - get, create, update, and patch as JSON patch, merge patch, strategic
//!   merge patch (maps and scalars) and server-side apply with field
//!   ownership and conflicts, on objects and their `status` subresource;
//!   `generation` follows spec changes only; stale resourceVersions get
//!   409 Conflict; finalizers hold a deleted object until the last goes;
//! - the types teledrop's controller uses ([`resource::SERVED`]):
//!   RetentionPolicies, Leases, events (both groups);
//! - faults on demand ([`KubeSim::fail_next`], [`KubeSim::close_watches`])
//!   [`KubeSim::outage`], and a log of every request ([`KubeSim::requests`]); anything not
//!   simulated is answered 404 and logged, so a test sees what a client
//!   asked for.

mod api;
pub mod fields;
pub mod resource;
mod selector;
mod state;
pub mod status;
mod store;
mod tls;
mod watch;

pub use resource::{CORE_EVENTS, EVENTS, LEASES, RETENTION_POLICIES, Resource};
pub use state::RecordedRequest;
pub use status::ApiError;

use serde_json::{Value, json};
use state::Shared;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The field manager of the test's own writes.
pub const TEST_MANAGER: &str = "kubectl";

/// How a [`KubeSim`] starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// The kubeconfig context's namespace.
    pub namespace: String,
    /// How often watches that allow bookmarks get one (the API server
    /// sends them about once a minute; tests want them sooner).
    pub bookmark_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            bookmark_every: Duration::from_secs(1),
        }
    }
}

/// A running stand-in; it stops when dropped.
pub struct KubeSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.accept.abort();
        self.close_watches();
    }
}

/// A `RetentionPolicy` object with `spec`, ready for [`KubeSim::create`].
pub fn retention_policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": RETENTION_POLICIES.api_version(),
        "kind": RETENTION_POLICIES.kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

impl KubeSim {
    pub async fn start() -> std::io::Result<KubeSim> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> std::io::Result<KubeSim> {
        let identity = tls::identity().map_err(std::io::Error::other)?;
        let token: String = {
            use rand::Rng as _;
            let mut rng = rand::rng();
            (0..32).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            tls::kubeconfig(addr, &identity.ca_pem, &token, &options.namespace),
        )?;
        let shared = Arc::new(Shared::new(token, options.bookmark_every));
        let app = api::router(shared.clone());
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server);
        let accept = tokio::spawn(serve(listener, acceptor, app));
        Ok(KubeSim {
            shared,
            addr,
            ca_pem: identity.ca_pem,
            kubeconfig,
            _dir: dir,
            accept,
        })
    }

    /// `https://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The kubeconfig file (for `KUBECONFIG`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the server certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bearer token the server accepts (it answers 401 otherwise).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    pub fn create(&self, resource: Resource, namespace: &str, obj: Value) -> Result<Value, ApiError> {
        self.shared.store().create(resource, namespace, obj, TEST_MANAGER)
    }

    /// Changes an object as `kubectl edit` would (an update of the whole
    /// object at its current resourceVersion).
    pub fn modify(
        &self,
        resource: Resource,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, ApiError> {
        let mut store = self.shared.store();
        let mut obj = store.get(resource, namespace, name)?;
        change(&mut obj);
        store.update(resource, namespace, name, false, obj, TEST_MANAGER)
    }

    /// Deletes an object; with finalizers it is only marked (see the
    /// crate docs). Returns it as the API would.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.shared.store().delete(resource, namespace, name)
    }

    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store().get(resource, namespace, name).ok()
    }

    /// Objects of a type, in one namespace or (`None`) all.
    pub fn list(&self, resource: Resource, namespace: Option<&str>) -> Vec<Value> {
        self.shared.store().list(resource, namespace).0
    }

    /// Events of both groups in `namespace`, in creation order.
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        let mut all: Vec<Value> = [EVENTS, CORE_EVENTS]
            .into_iter()
            .flat_map(|r| self.list(r, Some(namespace)))
            .collect();
        let rv = |e: &Value| {
            e.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<u64>().ok())
        };
        all.sort_by_key(|e| rv(e));
        all
    }

    /// Who owns which fields (JSON pointers) of an object.
    pub fn field_owners(&self, resource: Resource, namespace: &str, name: &str) -> BTreeMap<String, BTreeSet<String>> {
        self.shared
            .store()
            .owners(resource, namespace, name)
            .map(|o| o.managers().clone())
            .unwrap_or_default()
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Answers the next `n` requests (of any kind) with 500.
    pub fn fail_next(&self, n: u32) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    /// While `on`, every request is answered 503 Service Unavailable: an
    /// API server restarting. Open watches stay open; close them with
    /// [`KubeSim::close_watches`].
    pub fn outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::SeqCst);
    }

    /// Ends every open watch stream, as an API server restart or a load
    /// balancer would.
    pub fn close_watches(&self) {
        self.shared.close_watches.send_modify(|n| *n += 1);
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Forgets the change history: watches resuming from before now get
    /// 410 Expired and must list again.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Evaluates `check` after every change to the objects (and at least
    /// every 100 ms, for the request log and watch counts) until it
    /// answers `Some`, or `None` once `deadline` has passed.
    pub async fn wait_for<T>(&self, deadline: Duration, mut check: impl FnMut(&KubeSim) -> Option<T>) -> Option<T> {
        let until = tokio::time::Instant::now() + deadline;
        let mut versions = self.shared.store().versions();
        loop {
            if let Some(v) = check(self) {
                return Some(v);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return None;
            }
            let nap = (until - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(nap, versions.changed()).await;
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: axum::Router) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, most likely: let connections close.
                tracing::warn!(error = %e, "kube-sim: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(error = %e, "kube-sim: TLS handshake failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
