//! A link server over a real SQLite catalog and a real local object store
//! in a temporary folder.

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use teledrop_catalog::{
    Accepted, Catalog, Committed, DownloadHit, FileCursor, FileFilter, PolicyRow, Result, SqliteCatalog, StoredBlob,
    Totals, Transition,
};
use teledrop_core::{
    BlobRecord, ChatId, FileId, FileRecord, IncomingFile, JobEvent, JobId, JobRecord, LinkRecord, LinkToken, MessageId,
    NewLink, ObjectKey, UpdateId, Usage, UserId,
};
use teledrop_links::{LinksConfig, LinksState, admin_router, router};
use teledrop_storage::Storage;
use tower::ServiceExt;

/// The SQLite catalog, with call counters and a switch that makes `ping`
/// fail, to observe what the link server asks of it.
pub struct ObservedCatalog {
    inner: SqliteCatalog,
    pub resolve_calls: AtomicUsize,
    pub record_calls: AtomicUsize,
    pub fail_ping: AtomicBool,
    /// When set, the next `resolve_link` flushes this state's downloads
    /// after reading and before answering: a flush that lands between a
    /// request's catalog read and its use.
    pub flush_inside_next_resolve: Mutex<Option<LinksState>>,
}

impl ObservedCatalog {
    pub fn resolves(&self) -> usize {
        self.resolve_calls.load(Ordering::SeqCst)
    }
    pub fn records(&self) -> usize {
        self.record_calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Catalog for ObservedCatalog {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }
    async fn ping(&self) -> Result<()> {
        if self.fail_ping.load(Ordering::SeqCst) {
            return Err(teledrop_catalog::CatalogError::Corrupt(
                "ping switched off by the test".into(),
            ));
        }
        self.inner.ping().await
    }
    async fn accept_job(&self, update_id: UpdateId, incoming: &IncomingFile) -> Result<Accepted> {
        self.inner.accept_job(update_id, incoming).await
    }
    async fn job(&self, id: JobId) -> Result<Option<JobRecord>> {
        self.inner.job(id).await
    }
    async fn job_by_update(&self, update_id: UpdateId) -> Result<Option<JobRecord>> {
        self.inner.job_by_update(update_id).await
    }
    async fn job_by_message(&self, chat: ChatId, message: MessageId) -> Result<Option<JobRecord>> {
        self.inner.job_by_message(chat, message).await
    }
    async fn transition(&self, id: JobId, change: Transition) -> Result<JobRecord> {
        self.inner.transition(id, change).await
    }
    async fn set_status_message(&self, id: JobId, message_id: MessageId) -> Result<()> {
        self.inner.set_status_message(id, message_id).await
    }
    async fn unfinished_jobs(&self, limit: u32) -> Result<Vec<JobRecord>> {
        self.inner.unfinished_jobs(limit).await
    }
    async fn mark_replied(&self, id: JobId) -> Result<()> {
        self.inner.mark_replied(id).await
    }
    async fn unreplied_jobs(&self, limit: u32) -> Result<Vec<JobRecord>> {
        self.inner.unreplied_jobs(limit).await
    }
    async fn forget_blob(&self, file_unique_id: &str, object_key: &ObjectKey) -> Result<bool> {
        self.inner.forget_blob(file_unique_id, object_key).await
    }
    async fn job_events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        self.inner.job_events(id).await
    }
    async fn admit(
        &self,
        job: JobId,
        limit: std::num::NonZeroU32,
        window: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<teledrop_catalog::Admission> {
        self.inner.admit(job, limit, window, now).await
    }
    async fn claim(&self, id: JobId, per_owner: std::num::NonZeroU32, note: &str) -> Result<teledrop_catalog::Claim> {
        self.inner.claim(id, per_owner, note).await
    }
    async fn claim_notice(
        &self,
        user: UserId,
        notice: teledrop_catalog::Notice,
        every: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner.claim_notice(user, notice, every, now).await
    }
    async fn quota_lock(&self, scope: teledrop_catalog::QuotaLockScope) -> Result<teledrop_catalog::QuotaLock> {
        self.inner.quota_lock(scope).await
    }
    async fn blob(&self, file_unique_id: &str) -> Result<Option<BlobRecord>> {
        self.inner.blob(file_unique_id).await
    }
    async fn commit_stored(&self, job: JobId, blob: StoredBlob, link: NewLink) -> Result<Committed> {
        self.inner.commit_stored(job, blob, link).await
    }
    async fn file(&self, id: FileId) -> Result<Option<FileRecord>> {
        self.inner.file(id).await
    }
    async fn links_of(&self, file: FileId) -> Result<Vec<LinkRecord>> {
        self.inner.links_of(file).await
    }
    async fn resolve_link(&self, token: LinkToken) -> Result<Option<(LinkRecord, FileRecord)>> {
        self.resolve_calls.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.resolve_link(token).await;
        let hook = self.flush_inside_next_resolve.lock().unwrap().take();
        if let Some(state) = hook {
            state.flush_downloads().await.unwrap();
        }
        found
    }
    async fn record_downloads(&self, hits: &[DownloadHit]) -> Result<()> {
        self.record_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.record_downloads(hits).await
    }
    async fn usage(&self, user: UserId) -> Result<Usage> {
        self.inner.usage(user).await
    }
    async fn delete_file(&self, id: FileId) -> Result<Option<ObjectKey>> {
        self.inner.delete_file(id).await
    }
    async fn live_files(&self, filter: &FileFilter, after: Option<FileCursor>, limit: u32) -> Result<Vec<FileRecord>> {
        self.inner.live_files(filter, after, limit).await
    }
    async fn live_totals(&self, filter: &FileFilter) -> Result<Totals> {
        self.inner.live_totals(filter).await
    }
    async fn live_totals_by_owner(&self, filter: &FileFilter) -> Result<Vec<(UserId, Totals)>> {
        self.inner.live_totals_by_owner(filter).await
    }
    async fn referenced_objects(&self, keys: &[ObjectKey]) -> Result<std::collections::HashSet<ObjectKey>> {
        self.inner.referenced_objects(keys).await
    }
    async fn upsert_policy(&self, key: &str, generation: i64, spec: &serde_json::Value) -> Result<()> {
        self.inner.upsert_policy(key, generation, spec).await
    }
    async fn delete_policy(&self, key: &str) -> Result<bool> {
        self.inner.delete_policy(key).await
    }
    async fn policies(&self) -> Result<Vec<PolicyRow>> {
        self.inner.policies().await
    }
    async fn count_would_reject(&self, key: &str) -> Result<bool> {
        self.inner.count_would_reject(key).await
    }
}

pub struct Env {
    pub catalog: Arc<ObservedCatalog>,
    pub storage: Storage,
    pub state: LinksState,
    pub app: Router,
    /// `/healthz`, `/readyz`, `/metrics`: the admin listener's routes.
    pub admin: Router,
    next_update: AtomicI64,
    _dir: tempfile::TempDir,
}

/// An answer with its body read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Deterministic, non-repeating-looking content.
pub fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect()
}

pub fn http_date(t: DateTime<Utc>) -> String {
    httpdate::fmt_http_date(t.into())
}

impl Env {
    pub async fn new() -> Self {
        Self::with_config(LinksConfig::default()).await
    }

    pub async fn with_config(config: LinksConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteCatalog::connect(&format!("sqlite://{}/t.db", dir.path().display()))
            .await
            .unwrap();
        sqlite.migrate().await.unwrap();
        let catalog = Arc::new(ObservedCatalog {
            inner: sqlite,
            resolve_calls: AtomicUsize::new(0),
            record_calls: AtomicUsize::new(0),
            fail_ping: AtomicBool::new(false),
            flush_inside_next_resolve: Mutex::new(None),
        });
        let storage = Storage::from_url(&format!("file://{}/objects", dir.path().display())).unwrap();
        let state = LinksState::new(catalog.clone(), storage.clone(), config);
        let app = router(state.clone());
        let admin = admin_router(state.clone());
        Self {
            catalog,
            storage,
            state,
            app,
            admin,
            next_update: AtomicI64::new(1),
            _dir: dir,
        }
    }

    /// Stores `bytes` as a file the way the worker does (job accepted,
    /// running, object written, committed) and returns what was committed.
    pub async fn add_file(&self, name: &str, mime: &str, bytes: &[u8], link: NewLink) -> Committed {
        let n = self.next_update.fetch_add(1, Ordering::SeqCst);
        let incoming = teledrop_fixtures::document(n, UserId(42), name, mime, bytes.len() as u64);
        teledrop_fixtures::store_committed(&*self.catalog, &self.storage, UpdateId(n), &incoming, bytes, link).await
    }

    pub async fn add(&self, bytes: &[u8]) -> Committed {
        self.add_file("data.bin", "application/octet-stream", bytes, NewLink::unlimited())
            .await
    }

    pub async fn file(&self, id: FileId) -> FileRecord {
        self.catalog.file(id).await.unwrap().unwrap()
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        Self::send_to(&self.app, request).await
    }

    /// A GET on the admin routes.
    pub async fn admin_get(&self, uri: &str) -> Reply {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        Self::send_to(&self.admin, request).await
    }

    async fn send_to(app: &Router, request: Request<Body>) -> Reply {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply { status, headers, body }
    }

    pub async fn request(&self, method: Method, uri: &str, headers: &[(&str, &str)]) -> Reply {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        self.send(builder.body(Body::empty()).unwrap()).await
    }

    pub async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, uri, headers).await
    }

    pub async fn head(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::HEAD, uri, headers).await
    }
}

pub fn url(committed: &Committed) -> String {
    format!("/download/{}", committed.link.token)
}
