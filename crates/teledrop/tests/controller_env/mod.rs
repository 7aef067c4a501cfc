//! What the controller's end-to-end tests share: a Kubernetes API
//! stand-in (kube-sim, over HTTPS), a fresh Postgres catalog and S3
//! bucket, files put straight into both, and `teledrop controller`
//! processes pointed at all three through their environment.

use kube_sim::{KubeSim, RETENTION_POLICIES};
use serde_json::Value;
use sha2::Digest;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use teledrop_catalog::{Catalog, PgCatalog, StoredBlob, Transition};
use teledrop_core::file::FileState;
use teledrop_core::{
    ChatId, FileRecord, IncomingFile, JobState, MediaKind, MessageId, NewLink, ObjectKey, Sha256, UpdateId, UserId,
};
use teledrop_retention::RetentionPolicy;
use teledrop_testkit::process::{Proc, free_port};
use teledrop_testkit::s3::S3Bucket;

use crate::common;

/// How long anything the tests wait for may take on a loaded machine.
pub const WAIT: Duration = Duration::from_secs(60);
/// The Lease's duration in `teledrop controller` (roles.rs).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const FINALIZER: &str = "teledrop.dev/retention-rules";
pub const LEASE: &str = "teledrop-controller";

pub struct Env {
    pub kube: KubeSim,
    pub dir: tempfile::TempDir,
    pub bucket: S3Bucket,
    database_url: String,
    pub catalog: Arc<dyn Catalog>,
    next_update: AtomicI64,
}

impl Env {
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let database_url = teledrop_testkit::postgres::fresh_database().await;
        let bucket = teledrop_testkit::s3::fresh_bucket().await;
        let kube = KubeSim::start().await.unwrap();
        let env = Env {
            kube,
            dir,
            bucket,
            catalog: Arc::new(PgCatalog::connect(&database_url).await.unwrap()),
            database_url,
            next_update: AtomicI64::new(1),
        };
        common::run_to_end(&env.env("migrate"), &["migrate"], env.dir.path()).await;
        env
    }

    /// The environment of a controller replica named `identity`.
    pub fn env(&self, identity: &str) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("KUBECONFIG", self.kube.kubeconfig().display().to_string()),
            ("POD_NAME", identity.to_owned()),
            ("TELEDROP_LEASE_NAMESPACE", "default".to_owned()),
        ];
        env.extend(self.bucket.env());
        env
    }

    /// `teledrop controller` as replica `identity`, once it is ready.
    pub async fn controller(&self, identity: &str) -> Proc {
        self.controller_with(identity, &[]).await
    }

    pub async fn controller_with(&self, identity: &str, extra: &[(&'static str, String)]) -> Proc {
        let mut env = self.env(identity);
        env.extend(extra.iter().cloned());
        common::start_role(identity, "controller", &env, free_port(), self.dir.path()).await
    }

    /// A committed file of `user`, its object put in the bucket.
    pub async fn stored_file(&self, user: i64) -> FileRecord {
        let n = self.next_update.fetch_add(1, Ordering::SeqCst);
        let incoming = IncomingFile {
            user_id: UserId(user),
            chat_id: ChatId(user),
            message_id: MessageId(n as i32),
            kind: MediaKind::Document,
            telegram_file_id: format!("BQACAgI{n:05}"),
            file_unique_id: format!("AgADu{n:05}"),
            size: None,
            file_name: format!("f{n}.txt"),
            mime_type: "text/plain".into(),
        };
        let job = self
            .catalog
            .accept_job(UpdateId(n), &incoming)
            .await
            .unwrap()
            .into_job();
        self.catalog
            .transition(job.id, Transition::new(JobState::Pending, JobState::Running, "test"))
            .await
            .unwrap();
        let key = ObjectKey::for_new_blob();
        let body = format!("contents of file {n} of user {user}").into_bytes();
        // moto takes unsigned requests: the object is put behind the
        // product's back, as an upload would have left it.
        let url = format!(
            "{}/{}/{}",
            self.bucket.endpoint.trim_end_matches('/'),
            self.bucket.bucket,
            key.as_str()
        );
        let resp = reqwest::Client::new()
            .put(&url)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "PUT {url}: {}", resp.status());
        let blob = StoredBlob {
            object_key: key,
            size: body.len() as u64,
            sha256: Sha256::from_bytes(sha2::Sha256::digest(&body).into()),
        };
        let committed = self
            .catalog
            .commit_stored(job.id, blob, NewLink::unlimited())
            .await
            .unwrap();
        committed.file
    }

    /// Whether the file's row says deleted and its object is gone.
    pub async fn swept(&self, file: &FileRecord) -> bool {
        let row = self.catalog.file(file.id).await.unwrap().unwrap();
        row.state == FileState::Deleted && !self.object_exists(file).await
    }

    pub async fn object_exists(&self, file: &FileRecord) -> bool {
        self.bucket
            .objects()
            .await
            .iter()
            .any(|(k, _)| k == file.object_key.as_str())
    }

    /// Policy keys (`namespace/name`) in the catalog.
    pub async fn policy_keys(&self) -> Vec<String> {
        self.catalog
            .policies()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    pub fn create_policy(&self, ns: &str, name: &str, spec: Value) {
        self.kube
            .create(RETENTION_POLICIES, ns, kube_sim::retention_policy(ns, name, spec))
            .unwrap();
    }

    pub fn set_spec(&self, ns: &str, name: &str, spec: Value) {
        self.kube
            .modify(RETENTION_POLICIES, ns, name, |p| p["spec"] = spec)
            .unwrap();
    }

    /// The policy as the API serves it, typed.
    pub fn policy(&self, ns: &str, name: &str) -> Option<RetentionPolicy> {
        let raw = self.kube.get(RETENTION_POLICIES, ns, name)?;
        Some(serde_json::from_value(raw).expect("a RetentionPolicy"))
    }

    /// Waits until the policy satisfies `check`; fails with the logs.
    pub async fn wait_policy(
        &self,
        procs: &[&Proc],
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(&RetentionPolicy) -> bool,
    ) -> RetentionPolicy {
        let found = self
            .kube
            .wait_for(WAIT, |_| self.policy(ns, name).filter(|p| check(p)))
            .await;
        found.unwrap_or_else(|| {
            panic!(
                "{ns}/{name}: {what}: not within {WAIT:?}; it is {:#?}\n{}",
                self.policy(ns, name),
                logs(procs)
            )
        })
    }

    /// Waits until an event with `reason` regards the policy; returns it.
    pub async fn wait_event(&self, procs: &[&Proc], ns: &str, name: &str, reason: &str) -> Value {
        let found = self
            .kube
            .wait_for(WAIT, |k| {
                k.events(ns).into_iter().find(|e| {
                    e["reason"] == reason && e.pointer("/regarding/name").and_then(Value::as_str) == Some(name)
                })
            })
            .await;
        found.unwrap_or_else(|| {
            panic!(
                "no {reason} event on {ns}/{name} within {WAIT:?}: {:#?}\n{}",
                self.kube.events(ns),
                logs(procs)
            )
        })
    }

    /// The Lease's holder now.
    pub fn lease_holder(&self) -> Option<String> {
        self.kube
            .get(kube_sim::LEASES, "default", LEASE)?
            .pointer("/spec/holderIdentity")?
            .as_str()
            .map(str::to_owned)
    }

    /// Polls state with no change notification (the catalog, the bucket)
    /// until `check` holds.
    pub async fn eventually<F, Fut>(&self, procs: &[&Proc], what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let held = teledrop_testkit::poll_until(WAIT, || {
            let holds = check();
            async move { holds.await.then_some(()) }
        })
        .await;
        assert!(held.is_some(), "{what}: not within {WAIT:?}\n{}", logs(procs));
    }

    #[allow(dead_code)]
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The processes' logs, for failure messages.
pub fn logs(procs: &[&Proc]) -> String {
    procs.iter().map(|p| p.log_text()).collect::<Vec<_>>().join("\n----\n")
}

/// The `Ready` condition's status and reason.
pub fn ready(p: &RetentionPolicy) -> Option<(String, String)> {
    let status = p.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Whether the status describes the current spec.
pub fn observed(p: &RetentionPolicy) -> bool {
    p.status.as_ref().and_then(|s| s.observed_generation) == p.metadata.generation
}
