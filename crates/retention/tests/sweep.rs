//! The sweep against a real Postgres catalog and real object stores (a
//! local folder and an S3-compatible server): every scenario runs on both.
//! Links are checked through the real link server: a swept file's link
//! answers 410.

use bytes::Bytes;
use chrono::{Duration as ChronoDuration, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use http::{Request, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::{Catalog, DownloadHit, PgCatalog, StoredBlob, Totals, Transition};
use teledrop_core::{
    ChatId, FileRecord, IncomingFile, JobId, JobState, LinkToken, MediaKind, MessageId, NewLink, ObjectKey, UpdateId,
    UserId,
};
use teledrop_links::{LinksConfig, LinksState, router};
use teledrop_retention::{
    Incoming, Limit, Policy, PolicyEnforcer, QuotaScope, QuotaVerdict, Reason, RetentionPolicySpec, quota_lock_scope,
};
use teledrop_storage::Storage;
use tower::ServiceExt;

struct Env {
    catalog: Arc<dyn Catalog>,
    pool: sqlx::PgPool,
    storage: Storage,
    enforcer: PolicyEnforcer,
    next_update: std::sync::atomic::AtomicI64,
    _dir: Option<tempfile::TempDir>,
    _bucket: Option<teledrop_testkit::s3::S3Bucket>,
}

enum Store {
    Folder,
    S3,
}

impl Env {
    async fn new(store: Store) -> Env {
        let url = teledrop_testkit::postgres::fresh_database().await;
        let pg = PgCatalog::connect(&url).await.unwrap();
        pg.migrate().await.unwrap();
        let catalog: Arc<dyn Catalog> = Arc::new(pg);
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let (storage, dir, bucket) = match store {
            Store::Folder => {
                let dir = tempfile::tempdir().unwrap();
                let s = Storage::from_url(&format!("file://{}", dir.path().display())).unwrap();
                (s, Some(dir), None)
            }
            Store::S3 => {
                let bucket = teledrop_testkit::s3::fresh_bucket().await;
                let options = [
                    ("aws_endpoint", bucket.endpoint.as_str()),
                    ("aws_access_key_id", bucket.access_key_id.as_str()),
                    ("aws_secret_access_key", bucket.secret_access_key.as_str()),
                    ("aws_region", bucket.region.as_str()),
                    ("aws_allow_http", "true"),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned()));
                let s = Storage::from_url_with_options(&bucket.url(), options).unwrap();
                (s, None, Some(bucket))
            }
        };
        Env {
            enforcer: PolicyEnforcer::new(catalog.clone(), storage.clone()),
            catalog,
            pool,
            storage,
            next_update: 1.into(),
            _dir: dir,
            _bucket: bucket,
        }
    }

    /// Stores a file of `size` bytes for `user`, `age` old, with a link.
    async fn file(&self, user: i64, mime: &str, size: usize, age: ChronoDuration) -> (FileRecord, LinkToken) {
        let n = self.next_update.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let incoming = teledrop_fixtures::document(n, UserId(user), &format!("f{n}.bin"), mime, size as u64);
        let link = NewLink::unlimited();
        let token = link.token;
        let body = vec![n as u8; size];
        let committed =
            teledrop_fixtures::store_committed(&*self.catalog, &self.storage, UpdateId(n), &incoming, &body, link)
                .await;
        let at = Utc::now() - age;
        sqlx::query("UPDATE files SET created_at = $1 WHERE id = $2")
            .bind(at)
            .bind(committed.file.id.as_uuid())
            .execute(&self.pool)
            .await
            .unwrap();
        let file = self.catalog.file(committed.file.id).await.unwrap().unwrap();
        (file, token)
    }

    async fn object_exists(&self, f: &FileRecord) -> bool {
        self.storage.head(&f.object_key).await.unwrap().is_some()
    }

    async fn live(&self, f: &FileRecord) -> bool {
        self.catalog.file(f.id).await.unwrap().unwrap().deleted_at.is_none()
    }

    async fn link_status(&self, token: LinkToken) -> StatusCode {
        let state = LinksState::new(self.catalog.clone(), self.storage.clone(), LinksConfig::default());
        let req = Request::get(format!("/download/{token}"))
            .body(axum::body::Body::empty())
            .unwrap();
        router(state).oneshot(req).await.unwrap().status()
    }
}

fn policy(json: serde_json::Value) -> Policy {
    let spec: RetentionPolicySpec = serde_json::from_value(json).unwrap();
    spec.validate().unwrap();
    Policy {
        key: "ns/test".into(),
        spec,
    }
}

fn days(n: i64) -> ChronoDuration {
    ChronoDuration::days(n)
}

macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod folder {
            $(#[tokio::test] async fn $name() { super::$name(super::Env::new(super::Store::Folder).await).await })*
        }
        mod s3 {
            $(#[tokio::test] async fn $name() { super::$name(super::Env::new(super::Store::S3).await).await })*
        }
    };
}

on_every_store!(
    max_age_deletes_old_files_and_their_links_answer_410,
    max_idle_spares_downloaded_files,
    per_user_quota_evicts_each_users_oldest,
    total_quota_evicts_the_oldest_of_all,
    selector_limits_what_is_swept,
    dry_run_changes_nothing,
    a_sweep_killed_midway_is_finished_by_the_next,
    orphans_older_than_the_grace_period_are_removed,
    abandoned_uploads_are_aborted_after_the_grace_period,
    shared_blobs_go_with_their_last_file,
    reject_quotas_are_checked_before_download,
    dry_run_quotas_count_what_they_would_reject,
);

async fn max_age_deletes_old_files_and_their_links_answer_410(env: Env) {
    let (old, old_link) = env.file(1, "video/mp4", 100, days(10)).await;
    let (older, _) = env.file(2, "video/mp4", 50, days(20)).await;
    let (young, young_link) = env.file(1, "video/mp4", 70, days(1)).await;
    assert_eq!(env.link_status(old_link).await, StatusCode::OK);

    let p = policy(serde_json::json!({"maxAge": "3d"}));
    let report = env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    assert_eq!(report.matched, Totals { files: 3, bytes: 220 });
    assert_eq!(report.deleted, Totals { files: 2, bytes: 150 });
    assert_eq!(report.usage, Totals { files: 1, bytes: 70 });
    assert_eq!(
        report.chosen,
        vec![(older.id, Reason::MaxAge), (old.id, Reason::MaxAge)]
    );

    assert!(!env.live(&old).await && !env.live(&older).await && env.live(&young).await);
    assert!(!env.object_exists(&old).await && !env.object_exists(&older).await);
    assert!(env.object_exists(&young).await);
    assert_eq!(env.link_status(old_link).await, StatusCode::GONE);
    assert_eq!(env.link_status(young_link).await, StatusCode::OK);
    // Usage is exact.
    let u = env.catalog.usage(UserId(1)).await.unwrap();
    assert_eq!((u.files, u.bytes), (1, 70));
    assert_eq!(env.catalog.usage(UserId(2)).await.unwrap().files, 0);

    // Nothing left to do.
    let again = env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    assert_eq!(again.deleted, Totals::default());
}

async fn max_idle_spares_downloaded_files(env: Env) {
    let (idle, _) = env.file(1, "text/plain", 10, days(10)).await;
    let (used, _) = env.file(1, "text/plain", 10, days(10)).await;
    let (new, _) = env.file(1, "text/plain", 10, days(1)).await;
    env.catalog
        .record_downloads(&[DownloadHit {
            file_id: used.id,
            count: 1,
            last_at: Utc::now() - days(1),
        }])
        .await
        .unwrap();
    let p = policy(serde_json::json!({"maxIdle": "3d"}));
    let report = env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    assert_eq!(report.chosen, vec![(idle.id, Reason::MaxIdle)]);
    assert!(!env.live(&idle).await && env.live(&used).await && env.live(&new).await);
    // Later, the downloaded one is idle too.
    let report = env.enforcer.sweep(&p, Utc::now() + days(3), false).await.unwrap();
    assert_eq!(report.deleted.files, 2);
}

async fn per_user_quota_evicts_each_users_oldest(env: Env) {
    let mut a = Vec::new();
    for age in [4, 3, 2, 1] {
        a.push(env.file(1, "video/mp4", 100, days(age)).await.0);
    }
    let (b, _) = env.file(2, "video/mp4", 300, days(9)).await;
    let p = policy(serde_json::json!({
        "perUser": {"maxBytes": "250"},
        "onQuotaExceeded": "EvictOldest",
    }));
    let report = env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    let mut chosen = report.chosen.clone();
    chosen.sort();
    let mut want = vec![
        (a[0].id, Reason::UserQuota),
        (a[1].id, Reason::UserQuota),
        (b.id, Reason::UserQuota),
    ];
    want.sort();
    assert_eq!(chosen, want);
    assert!(env.live(&a[2]).await && env.live(&a[3]).await);
    let u = env.catalog.usage(UserId(1)).await.unwrap();
    assert_eq!((u.files, u.bytes), (2, 200));
    assert_eq!(env.catalog.usage(UserId(2)).await.unwrap().bytes, 0);

    // maxFiles works the same way.
    let p = policy(serde_json::json!({"perUser": {"maxFiles": 1}, "onQuotaExceeded": "EvictOldest"}));
    env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    assert!(!env.live(&a[2]).await && env.live(&a[3]).await);
    // With Reject the sweep evicts nothing.
    let p = policy(serde_json::json!({"perUser": {"maxFiles": 0}}));
    assert_eq!(
        env.enforcer.sweep(&p, Utc::now(), false).await.unwrap().deleted.files,
        0
    );
}

async fn total_quota_evicts_the_oldest_of_all(env: Env) {
    let mut files = Vec::new();
    for (user, age) in [(1, 5), (2, 4), (1, 3), (3, 2), (2, 1)] {
        files.push(env.file(user, "image/png", 10, days(age)).await.0);
    }
    let p = policy(serde_json::json!({"total": {"maxFiles": 3}, "onQuotaExceeded": "EvictOldest"}));
    let report = env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    assert_eq!(
        report.chosen,
        vec![(files[0].id, Reason::TotalQuota), (files[1].id, Reason::TotalQuota)]
    );
    assert_eq!(report.usage, Totals { files: 3, bytes: 30 });
}

async fn selector_limits_what_is_swept(env: Env) {
    let (video, _) = env.file(1, "video/mp4", 10, days(9)).await;
    let (pdf, _) = env.file(1, "application/pdf", 10, days(9)).await;
    let (other_user, _) = env.file(2, "video/webm", 10, days(9)).await;
    let (big, _) = env.file(1, "video/mp4", 5000, days(9)).await;
    let p = policy(serde_json::json!({
        "selector": {"users": [1], "mimeTypes": ["VIDEO/*"], "maxSize": "1Ki"},
        "maxAge": "1d",
    }));
    let report = env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    assert_eq!(report.matched, Totals { files: 1, bytes: 10 });
    assert_eq!(report.chosen, vec![(video.id, Reason::MaxAge)]);
    for f in [&pdf, &other_user, &big] {
        assert!(env.live(f).await);
    }
}

async fn dry_run_changes_nothing(env: Env) {
    let (a, link) = env.file(1, "video/mp4", 10, days(9)).await;
    let (b, _) = env.file(1, "video/mp4", 20, days(8)).await;
    let p = policy(serde_json::json!({"maxAge": "1d", "dryRun": true}));
    let report = env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.deleted, Totals { files: 2, bytes: 30 });
    assert_eq!(report.usage, Totals { files: 2, bytes: 30 });
    for f in [&a, &b] {
        assert!(env.live(f).await && env.object_exists(f).await);
    }
    assert_eq!(env.link_status(link).await, StatusCode::OK);
    // Forced dry run of a live policy, too.
    let p = policy(serde_json::json!({"maxAge": "1d"}));
    assert!(env.enforcer.sweep(&p, Utc::now(), true).await.unwrap().dry_run);
    assert!(env.live(&a).await);
    // Orphan collection in a dry run removes nothing either.
    env.catalog.delete_file(a.id).await.unwrap();
    let r = env
        .enforcer
        .collect_orphans(Duration::ZERO, Utc::now() + days(1), true)
        .await
        .unwrap();
    assert_eq!(r.deleted.files, 1);
    assert!(env.object_exists(&a).await);
}

async fn a_sweep_killed_midway_is_finished_by_the_next(env: Env) {
    let (a, a_link) = env.file(1, "video/mp4", 10, days(9)).await;
    let (b, _) = env.file(1, "video/mp4", 10, days(9)).await;
    let (c, _) = env.file(1, "video/mp4", 10, days(9)).await;
    // The state a sweep killed at each point leaves: `b` fully deleted,
    // `a` killed between its row and its object, `c` not reached.
    let key = env.catalog.delete_file(b.id).await.unwrap().unwrap();
    env.storage.delete(&key).await.unwrap();
    let a_key = env.catalog.delete_file(a.id).await.unwrap().unwrap();
    // Already consistent: the row is gone before the object, the link
    // answers 410, usage is exact.
    assert_eq!(env.link_status(a_link).await, StatusCode::GONE);
    assert_eq!(env.catalog.usage(UserId(1)).await.unwrap().files, 1);
    assert!(env.storage.head(&a_key).await.unwrap().is_some());

    let p = policy(serde_json::json!({"maxAge": "1d"}));
    let report = env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    assert_eq!(report.chosen, vec![(c.id, Reason::MaxAge)]);
    assert!(!env.object_exists(&c).await);
    // The object of `a` is an orphan: collected once past the grace period.
    let young = env
        .enforcer
        .collect_orphans(Duration::from_secs(3600), Utc::now(), false)
        .await
        .unwrap();
    assert_eq!(young.deleted.files, 0);
    assert!(env.storage.head(&a_key).await.unwrap().is_some());
    let later = env
        .enforcer
        .collect_orphans(Duration::from_secs(3600), Utc::now() + days(1), false)
        .await
        .unwrap();
    assert_eq!(later.deleted, Totals { files: 1, bytes: 10 });
    assert!(env.storage.head(&a_key).await.unwrap().is_none());
}

async fn orphans_older_than_the_grace_period_are_removed(env: Env) {
    let (kept, _) = env.file(1, "video/mp4", 10, days(9)).await;
    let orphan = ObjectKey::for_new_blob();
    env.storage
        .put_stream(
            &orphan,
            stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"left behind"))]),
            None,
            u64::MAX,
        )
        .await
        .unwrap();
    let r = env
        .enforcer
        .collect_orphans(Duration::ZERO, Utc::now() + days(1), false)
        .await
        .unwrap();
    assert_eq!(r.examined, 2);
    assert_eq!(r.deleted, Totals { files: 1, bytes: 11 });
    assert!(env.storage.head(&orphan).await.unwrap().is_none());
    assert!(env.object_exists(&kept).await);
}

/// Starts an upload to `key` that passes two parts and then stalls for
/// good, and leaks it: a worker killed mid-upload, which aborts nothing.
async fn leak_upload(storage: &Storage, key: &ObjectKey) {
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel::<()>();
    let mut reached_tx = Some(reached_tx);
    let two_parts = Bytes::from(vec![7u8; 2 * teledrop_storage::PART_SIZE + 1]);
    let source = stream::iter([Ok::<_, std::io::Error>(two_parts)]).chain(stream::poll_fn(move |_| {
        if let Some(tx) = reached_tx.take() {
            let _ = tx.send(());
        }
        std::task::Poll::Pending
    }));
    let mut upload = Box::pin(storage.put_stream(key, source, None, u64::MAX));
    tokio::select! {
        result = &mut upload => panic!("the upload cannot finish: {result:?}"),
        _ = reached_rx => {}
    }
    std::mem::forget(upload);
}

async fn unfinished_keys(env: &Env) -> Vec<String> {
    env.storage
        .unfinished_uploads("")
        .map_ok(|u| u.key)
        .try_collect()
        .await
        .unwrap()
}

async fn abandoned_uploads_are_aborted_after_the_grace_period(env: Env) {
    let (kept, _) = env.file(1, "video/mp4", 10, days(9)).await;
    let abandoned = ObjectKey::for_job_upload(JobId::new());
    leak_upload(&env.storage, &abandoned).await;
    assert_eq!(unfinished_keys(&env).await, vec![abandoned.to_string()]);

    // The local store dates a staging file by its last write; moto reports
    // every multipart upload as begun on one fixed day years ago, so on it
    // the upload is old at once.
    if env._dir.is_some() {
        let young = env
            .enforcer
            .collect_orphans(Duration::from_secs(3600), Utc::now(), false)
            .await
            .unwrap();
        assert_eq!(young.aborted_uploads, 0);
        assert_eq!(unfinished_keys(&env).await.len(), 1);
    }
    let dry = env
        .enforcer
        .collect_orphans(Duration::ZERO, Utc::now() + days(1), true)
        .await
        .unwrap();
    assert_eq!(dry.aborted_uploads, 1);
    assert_eq!(unfinished_keys(&env).await.len(), 1, "a dry run aborts nothing");

    let r = env
        .enforcer
        .collect_orphans(Duration::from_secs(3600), Utc::now() + days(1), false)
        .await
        .unwrap();
    assert_eq!(r.aborted_uploads, 1);
    assert_eq!(r.deleted, Totals::default(), "no object was orphaned");
    assert_eq!(unfinished_keys(&env).await, Vec::<String>::new());
    assert!(env.storage.head(&abandoned).await.unwrap().is_none());
    assert!(env.object_exists(&kept).await);
}

async fn shared_blobs_go_with_their_last_file(env: Env) {
    // Two files of one blob: a second commit of the same unique id.
    let (first, _) = env.file(1, "video/mp4", 10, days(9)).await;
    let incoming = IncomingFile {
        user_id: UserId(2),
        chat_id: ChatId(20),
        message_id: MessageId(99),
        kind: MediaKind::Document,
        telegram_file_id: "BQACAgIother".into(),
        file_unique_id: first.file_unique_id.clone(),
        size: Some(10),
        file_name: "again.bin".into(),
        mime_type: "video/mp4".into(),
    };
    let job = env
        .catalog
        .accept_job(UpdateId(999), &incoming)
        .await
        .unwrap()
        .into_job();
    env.catalog
        .transition(job.id, Transition::new(JobState::Pending, JobState::Running, "test"))
        .await
        .unwrap();
    let second = env
        .catalog
        .commit_stored(
            job.id,
            StoredBlob {
                object_key: first.object_key.clone(),
                size: 10,
                sha256: first.sha256,
            },
            NewLink::unlimited(),
        )
        .await
        .unwrap()
        .file;
    let p = policy(serde_json::json!({"selector": {"users": [1]}, "maxAge": "1d"}));
    env.enforcer.sweep(&p, Utc::now(), false).await.unwrap();
    assert!(!env.live(&first).await);
    assert!(env.object_exists(&second).await, "still used by user 2's file");
    let p = policy(serde_json::json!({"maxAge": "1h"}));
    env.enforcer.sweep(&p, Utc::now() + days(1), false).await.unwrap();
    assert!(!env.object_exists(&second).await);
}

async fn reject_quotas_are_checked_before_download(env: Env) {
    env.file(1, "video/mp4", 600, days(1)).await;
    env.file(1, "video/mp4", 300, days(1)).await;
    env.file(2, "video/mp4", 100, days(1)).await;
    let policies = vec![
        policy(
            serde_json::json!({"selector": {"mimeTypes": ["video/*"]}, "perUser": {"maxBytes": "1000", "maxFiles": 3}}),
        ),
        policy(serde_json::json!({"total": {"maxBytes": "5000"}})),
        // EvictOldest never refuses.
        policy(serde_json::json!({"perUser": {"maxFiles": 1}, "onQuotaExceeded": "EvictOldest"})),
    ];
    let incoming = |user, mime, size| Incoming {
        owner: UserId(user),
        chat: ChatId(user * 10),
        mime,
        size,
    };
    // 900 used + 200 > 1000.
    let QuotaVerdict::Exceeded(e) = env
        .enforcer
        .check_quota(&policies, &incoming(1, "video/mp4", Some(200)))
        .await
        .unwrap()
    else {
        panic!("expected a refusal")
    };
    assert_eq!(e.scope, QuotaScope::PerUser);
    assert_eq!(e.limit, Limit::Bytes(1000));
    assert_eq!(e.used, Totals { files: 2, bytes: 900 });
    let text = e.to_string();
    assert!(
        text.contains("200 B") && text.contains("1000 B") && text.contains("900 B"),
        "{text}"
    );
    // Fits: room is the tightest quota left.
    assert_eq!(
        env.enforcer
            .check_quota(&policies, &incoming(1, "video/mp4", Some(100)))
            .await
            .unwrap(),
        QuotaVerdict::Allowed {
            room: Some(100),
            would_reject: vec![]
        }
    );
    // Unknown size: allowed, download limited to what is left.
    assert_eq!(
        env.enforcer
            .check_quota(&policies, &incoming(1, "video/mp4", None))
            .await
            .unwrap(),
        QuotaVerdict::Allowed {
            room: Some(100),
            would_reject: vec![]
        }
    );
    // Other types are outside the per-user quota, inside the total one.
    assert_eq!(
        env.enforcer
            .check_quota(&policies, &incoming(1, "audio/ogg", Some(4000)))
            .await
            .unwrap(),
        QuotaVerdict::Allowed {
            room: Some(4000),
            would_reject: vec![]
        }
    );
    let QuotaVerdict::Exceeded(e) = env
        .enforcer
        .check_quota(&policies, &incoming(1, "audio/ogg", Some(4001)))
        .await
        .unwrap()
    else {
        panic!("expected a refusal")
    };
    assert_eq!(e.scope, QuotaScope::Total);
    // File count.
    env.file(1, "video/mp4", 1, days(1)).await;
    let QuotaVerdict::Exceeded(e) = env
        .enforcer
        .check_quota(&policies, &incoming(1, "video/mp4", Some(1)))
        .await
        .unwrap()
    else {
        panic!("expected a refusal")
    };
    assert_eq!(e.limit, Limit::Files(3));
    assert!(e.to_string().contains("3 files"), "{e}");
}

/// A dry-run policy's `Reject` quota refuses nothing, needs no lock and
/// leaves the room alone: it names the quotas a file would exceed, and
/// the sweep reports the count workers recorded for it.
async fn dry_run_quotas_count_what_they_would_reject(env: Env) {
    env.file(1, "video/mp4", 600, days(1)).await;
    let dry = policy(serde_json::json!({"perUser": {"maxBytes": "1000", "maxFiles": 1}, "dryRun": true}));
    env.catalog
        .upsert_policy(&dry.key, 1, &serde_json::to_value(&dry.spec).unwrap())
        .await
        .unwrap();
    let policies = vec![dry.clone()];
    let incoming = Incoming {
        owner: UserId(1),
        chat: ChatId(10),
        mime: "video/mp4",
        size: Some(500),
    };
    let QuotaVerdict::Allowed { room, would_reject } = env.enforcer.check_quota(&policies, &incoming).await.unwrap()
    else {
        panic!("a dry run refuses nothing")
    };
    assert_eq!(room, None, "a dry run does not limit the download");
    // Over both its limits, counted once.
    assert_eq!(would_reject.len(), 1, "{would_reject:?}");
    assert_eq!(
        (would_reject[0].policy.as_str(), would_reject[0].limit),
        ("ns/test", Limit::Files(1))
    );
    assert_eq!(quota_lock_scope(&policies, &incoming), None);
    // Another user is under it.
    let other = Incoming {
        owner: UserId(2),
        ..incoming
    };
    assert_eq!(
        env.enforcer.check_quota(&policies, &other).await.unwrap(),
        QuotaVerdict::Allowed {
            room: None,
            would_reject: vec![]
        }
    );

    // What workers counted reaches the sweep's report (and so the status).
    for _ in 0..2 {
        assert!(env.catalog.count_would_reject(&dry.key).await.unwrap());
    }
    let report = env.enforcer.sweep(&dry, Utc::now(), false).await.unwrap();
    assert_eq!(report.would_reject, 2);
    assert!(report.dry_run);
}
