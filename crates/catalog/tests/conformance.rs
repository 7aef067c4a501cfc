//! One conformance suite for every catalog backend.
//!
//! Each scenario is an async function over `Arc<dyn Catalog>` (or, for the
//! few that need to open the database again, a [`Fixture`]); the macro at
//! the bottom runs each one against a fresh Postgres database
//! (`postgres_<case>`, needs `TEST_DATABASE_URL`) and a fresh SQLite file
//! (`sqlite_<case>`).

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::Connection;
use std::sync::Arc;
use teledrop_catalog::{Accepted, Catalog, CatalogError, DownloadHit, StoredBlob, Transition};
use teledrop_core::file::FileState;
use teledrop_core::{
    ChatId, ErrorKind, FileId, IncomingFile, JobId, JobState, LinkToken, MediaKind, MessageId, NewLink, ObjectKey,
    Sha256, UpdateId, Usage, UserId,
};
use tempfile::TempDir;
use tokio::sync::Barrier;

// ---- fixtures ----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

/// An empty database; the temporary directory (SQLite) lives as long as it.
struct BlankDb {
    url: String,
    _dir: Option<TempDir>,
}

impl Backend {
    async fn blank(self) -> BlankDb {
        match self {
            Backend::Postgres => BlankDb {
                url: teledrop_testkit::postgres::fresh_database().await,
                _dir: None,
            },
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                // A parent directory that does not exist yet: connect creates it.
                let url = format!("sqlite://{}/state/catalog.db", dir.path().display());
                BlankDb { url, _dir: Some(dir) }
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A migrated catalog on a fresh database, and how to reach it again.
struct Fixture {
    backend: Backend,
    catalog: Arc<dyn Catalog>,
    db: BlankDb,
}

impl Fixture {
    async fn new(backend: Backend) -> Self {
        let db = backend.blank().await;
        let catalog = open(&db.url).await;
        catalog.migrate().await.expect("migrate");
        Self { backend, catalog, db }
    }
}

async fn open(url: &str) -> Arc<dyn Catalog> {
    teledrop_catalog::connect(url).await.expect("connect")
}

/// Rows in sqlx's migration table, read with a plain connection so the
/// check does not go through the code under test: (applied, failed).
async fn migration_rows(backend: Backend, url: &str) -> (i64, i64) {
    let sql = "SELECT COUNT(*), COUNT(*) FILTER (WHERE NOT success) FROM _sqlx_migrations";
    match backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("raw connect");
            sqlx::query_as(sql)
                .fetch_one(&mut conn)
                .await
                .expect("count migrations")
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.expect("raw connect");
            sqlx::query_as(sql)
                .fetch_one(&mut conn)
                .await
                .expect("count migrations")
        }
    }
}

fn migration_files(backend: Backend) -> i64 {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend.name());
    let n = std::fs::read_dir(dir)
        .expect("migrations dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    i64::try_from(n).expect("count")
}

// ---- data helpers ------------------------------------------------------------

fn incoming(user: i64, unique: &str) -> IncomingFile {
    IncomingFile {
        user_id: UserId(user),
        chat_id: ChatId(user * 10),
        message_id: MessageId(7),
        kind: MediaKind::Video,
        telegram_file_id: format!("tg-{unique}-{user}"),
        file_unique_id: unique.to_owned(),
        size: Some(1234),
        file_name: "clip — 1.mp4".to_owned(),
        mime_type: "video/mp4".to_owned(),
    }
}

fn stored_blob(key: &str, size: u64, content: &[u8]) -> StoredBlob {
    StoredBlob {
        object_key: key.parse().expect("key"),
        size,
        sha256: Sha256::digest(content),
    }
}

fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).expect("time")
}

fn key(s: &str) -> ObjectKey {
    s.parse().expect("key")
}

async fn accept(c: &Arc<dyn Catalog>, update: i64, inc: &IncomingFile) -> JobId {
    match c.accept_job(UpdateId(update), inc).await.expect("accept") {
        Accepted::New(j) => j.id,
        Accepted::Duplicate(_) => panic!("update {update} was not new"),
    }
}

async fn running_job(c: &Arc<dyn Catalog>, update: i64, inc: &IncomingFile) -> JobId {
    let id = accept(c, update, inc).await;
    c.transition(id, Transition::new(JobState::Pending, JobState::Running, "picked up"))
        .await
        .expect("start");
    id
}

async fn usage(c: &Arc<dyn Catalog>, user: i64) -> (u64, u64) {
    let u = c.usage(UserId(user)).await.expect("usage");
    assert_eq!(u.user_id, UserId(user));
    (u.bytes, u.files)
}

// ---- scenarios: migrations and connections -----------------------------------

async fn migrate_twice_is_a_no_op(fx: Fixture) {
    let c = &fx.catalog;
    assert_eq!(c.backend(), fx.backend.name());
    c.ping().await.expect("ping");
    let expected = migration_files(fx.backend);
    assert!(expected >= 1);
    assert_eq!(migration_rows(fx.backend, &fx.db.url).await, (expected, 0));

    let job = accept(c, 1, &incoming(1, "u1")).await;
    c.migrate().await.expect("second migrate");
    c.migrate().await.expect("third migrate");
    assert_eq!(migration_rows(fx.backend, &fx.db.url).await, (expected, 0));
    assert_eq!(c.job(job).await.unwrap().expect("job kept").state, JobState::Pending);
}

async fn concurrent_migrate(fx: Fixture) {
    // A database nobody has migrated yet, several pools (as several
    // processes would have) migrating it at the same moment.
    let db = fx.backend.blank().await;
    const N: usize = 8;
    let mut catalogs = Vec::new();
    for _ in 0..N {
        catalogs.push(open(&db.url).await);
    }
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for c in catalogs.clone() {
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.migrate().await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task").expect("concurrent migrate");
    }
    let expected = migration_files(fx.backend);
    assert_eq!(migration_rows(fx.backend, &db.url).await, (expected, 0));
    // Every pool sees a working schema.
    for (i, c) in catalogs.iter().enumerate() {
        let n = i64::try_from(i).unwrap();
        accept(c, 100 + n, &incoming(n, "u")).await;
    }
    assert_eq!(catalogs[0].unfinished_jobs(100).await.unwrap().len(), N);
}

async fn job_survives_reopening(fx: Fixture) {
    let Fixture {
        backend: _,
        catalog,
        db,
    } = fx;
    let id = running_job(&catalog, 42, &incoming(5, "persist")).await;
    catalog.set_status_message(id, MessageId(99)).await.unwrap();
    let before = catalog.job(id).await.unwrap().unwrap();
    let events = catalog.job_events(id).await.unwrap();
    drop(catalog);

    let reopened = open(&db.url).await;
    reopened.migrate().await.expect("migrate on reopen");
    let after = reopened.job(id).await.unwrap().expect("job survives");
    assert_eq!(after, before);
    assert_eq!(after.status_message_id, Some(MessageId(99)));
    assert_eq!(reopened.job_events(id).await.unwrap(), events);
    assert_eq!(reopened.unfinished_jobs(10).await.unwrap(), vec![before]);
    // And it can still move on.
    reopened
        .transition(id, Transition::retry(ErrorKind::Network, "restart"))
        .await
        .expect("transition after reopen");
}

// ---- scenarios: jobs ---------------------------------------------------------

async fn accept_job_is_idempotent(c: Arc<dyn Catalog>) {
    let inc = incoming(1, "uniq-a");
    let first = c.accept_job(UpdateId(1000), &inc).await.unwrap();
    let Accepted::New(job) = first.clone() else {
        panic!("first accept must be new: {first:?}")
    };
    assert_eq!(job.update_id, UpdateId(1000));
    assert_eq!(job.incoming, inc);
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.attempts, 0);
    assert_eq!(
        (job.error_kind, job.error_detail.clone(), job.file_id),
        (None, None, None)
    );
    assert_eq!(job.status_message_id, None);
    assert_eq!(job.created_at, job.updated_at);

    // The same update again, even with other content: the stored job.
    let second = c.accept_job(UpdateId(1000), &incoming(2, "other")).await.unwrap();
    assert_eq!(second, Accepted::Duplicate(job.clone()));
    assert_eq!(second.job(), first.job());

    assert_eq!(c.job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(c.job_by_update(UpdateId(1000)).await.unwrap(), Some(job.clone()));
    assert_eq!(c.job_by_update(UpdateId(1001)).await.unwrap(), None);
    assert_eq!(c.job(JobId::new()).await.unwrap(), None);

    let events = c.job_events(job.id).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].job_id, events[0].from, events[0].to),
        (job.id, None, JobState::Pending)
    );
    assert_eq!(events[0].at, job.created_at);

    let other = c.accept_job(UpdateId(1001), &inc).await.unwrap();
    assert!(matches!(other, Accepted::New(_)));
    assert_ne!(other.job().id, job.id);
}

async fn accept_job_concurrently_once(c: Arc<dyn Catalog>) {
    const N: usize = 20;
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let c = c.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let inc = incoming(i64::try_from(i).unwrap() + 1, "race");
            barrier.wait().await;
            c.accept_job(UpdateId(777), &inc).await
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.expect("task").expect("accept"));
    }
    let new: Vec<_> = outcomes.iter().filter(|o| matches!(o, Accepted::New(_))).collect();
    assert_eq!(new.len(), 1, "exactly one caller creates the job");
    let winner = new[0].job().clone();
    for o in &outcomes {
        assert_eq!(o.job(), &winner);
    }
    assert_eq!(c.job_events(winner.id).await.unwrap().len(), 1);
    assert_eq!(c.unfinished_jobs(100).await.unwrap(), vec![winner]);
}

async fn transitions_follow_the_state_machine(c: Arc<dyn Catalog>) {
    let id = accept(&c, 1, &incoming(1, "sm")).await;
    let created = c.job(id).await.unwrap().unwrap();

    let j = c
        .transition(id, Transition::new(JobState::Pending, JobState::Running, "attempt 1"))
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts, j.error_kind), (JobState::Running, 1, None));
    assert!(j.updated_at >= created.updated_at);

    let j = c
        .transition(id, Transition::retry(ErrorKind::Network, "connection reset"))
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Pending, 1));
    assert_eq!(j.error_kind, Some(ErrorKind::Network));
    assert_eq!(j.error_detail.as_deref(), Some("connection reset"));

    // Entering running again counts a second attempt and keeps the last error.
    let j = c
        .transition(id, Transition::new(JobState::Pending, JobState::Running, "attempt 2"))
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Running, 2));
    assert_eq!(j.error_kind, Some(ErrorKind::Network));
    assert_eq!(j.error_detail.as_deref(), Some("connection reset"));

    let j = c
        .transition(
            id,
            Transition::failed(JobState::Running, ErrorKind::TooBig, "file is too big"),
        )
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Failed, 2));
    assert_eq!(j.error_kind, Some(ErrorKind::TooBig));
    assert_eq!(j.error_detail.as_deref(), Some("file is too big"));
    assert_eq!(c.job(id).await.unwrap(), Some(j.clone()));
    assert_eq!(j.created_at, created.created_at);

    let events = c.job_events(id).await.unwrap();
    let timeline: Vec<_> = events
        .iter()
        .map(|e| (e.from, e.to, e.error_kind, e.note.as_str()))
        .collect();
    assert_eq!(
        timeline,
        vec![
            (None, JobState::Pending, None, "accepted"),
            (Some(JobState::Pending), JobState::Running, None, "attempt 1"),
            (
                Some(JobState::Running),
                JobState::Pending,
                Some(ErrorKind::Network),
                "connection reset"
            ),
            (Some(JobState::Pending), JobState::Running, None, "attempt 2"),
            (
                Some(JobState::Running),
                JobState::Failed,
                Some(ErrorKind::TooBig),
                "file is too big"
            ),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(events.iter().all(|e| e.job_id == id));

    // Pending → failed is legal too (e.g. over quota before any download).
    let other = accept(&c, 2, &incoming(1, "sm2")).await;
    let j = c
        .transition(
            other,
            Transition::failed(JobState::Pending, ErrorKind::OverQuota, "quota"),
        )
        .await
        .unwrap();
    assert_eq!(
        (j.state, j.attempts, j.error_kind),
        (JobState::Failed, 0, Some(ErrorKind::OverQuota))
    );
}

async fn illegal_transitions_change_nothing(c: Arc<dyn Catalog>) {
    let id = accept(&c, 1, &incoming(1, "ill")).await;
    c.transition(id, Transition::failed(JobState::Pending, ErrorKind::Unsupported, "no"))
        .await
        .unwrap();
    let before = c.job(id).await.unwrap().unwrap();
    let events_before = c.job_events(id).await.unwrap();

    // From a final state, whatever the row holds.
    for (from, to) in [
        (JobState::Failed, JobState::Running),
        (JobState::Failed, JobState::Pending),
        (JobState::Stored, JobState::Running),
        (JobState::Pending, JobState::Stored),
        (JobState::Pending, JobState::Pending),
    ] {
        let err = c.transition(id, Transition::new(from, to, "nope")).await.unwrap_err();
        match err {
            CatalogError::IllegalTransition(e) => assert_eq!((e.from, e.to), (from, to)),
            other => panic!("{from} → {to}: expected IllegalTransition, got {other:?}"),
        }
    }
    // running → stored is reserved for commit_stored.
    let r = running_job(&c, 2, &incoming(1, "ill2")).await;
    let r_before = c.job(r).await.unwrap().unwrap();
    let err = c
        .transition(r, Transition::new(JobState::Running, JobState::Stored, "no file"))
        .await
        .unwrap_err();
    assert!(matches!(err, CatalogError::IllegalTransition(_)), "{err:?}");
    assert_eq!(c.job(r).await.unwrap(), Some(r_before));

    assert_eq!(c.job(id).await.unwrap(), Some(before));
    assert_eq!(c.job_events(id).await.unwrap(), events_before);
}

async fn transition_is_compare_and_set(c: Arc<dyn Catalog>) {
    let id = accept(&c, 1, &incoming(1, "cas")).await;
    let before = c.job(id).await.unwrap().unwrap();
    let err = c
        .transition(id, Transition::failed(JobState::Running, ErrorKind::Internal, "x"))
        .await
        .unwrap_err();
    match err {
        CatalogError::StateConflict { expected, actual } => {
            assert_eq!((expected, actual), (JobState::Running, JobState::Pending))
        }
        other => panic!("expected StateConflict, got {other:?}"),
    }
    assert_eq!(c.job(id).await.unwrap(), Some(before));
    assert_eq!(c.job_events(id).await.unwrap().len(), 1);

    let missing = c
        .transition(JobId::new(), Transition::new(JobState::Pending, JobState::Running, ""))
        .await;
    assert!(matches!(missing, Err(CatalogError::NotFound("job"))), "{missing:?}");

    // Many workers race to start the same job: exactly one wins.
    const N: usize = 10;
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..N {
        let c = c.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.transition(id, Transition::new(JobState::Pending, JobState::Running, "race"))
                .await
        });
    }
    let (mut won, mut lost) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.expect("task") {
            Ok(j) => {
                assert_eq!(j.attempts, 1);
                won += 1;
            }
            Err(CatalogError::StateConflict {
                expected: JobState::Pending,
                actual: JobState::Running,
            }) => lost += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, lost), (1, N - 1));
    let j = c.job(id).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Running, 1));
    assert_eq!(c.job_events(id).await.unwrap().len(), 2);
}

async fn set_status_message(c: Arc<dyn Catalog>) {
    let id = accept(&c, 1, &incoming(1, "status")).await;
    c.set_status_message(id, MessageId(4242)).await.unwrap();
    let j = c.job(id).await.unwrap().unwrap();
    assert_eq!(j.status_message_id, Some(MessageId(4242)));
    assert_eq!(j.state, JobState::Pending);
    c.set_status_message(id, MessageId(-5)).await.unwrap();
    assert_eq!(c.job(id).await.unwrap().unwrap().status_message_id, Some(MessageId(-5)));
    let missing = c.set_status_message(JobId::new(), MessageId(1)).await;
    assert!(matches!(missing, Err(CatalogError::NotFound("job"))), "{missing:?}");
}

async fn forget_blob_only_removes_the_named_object(c: Arc<dyn Catalog>) {
    let j = running_job(&c, 1, &incoming(1, "gone")).await;
    c.commit_stored(j, stored_blob("k/gone", 5, b"gone!"), NewLink::unlimited())
        .await
        .unwrap();
    let unique = c.job(j).await.unwrap().unwrap().incoming.file_unique_id;
    assert!(
        !c.forget_blob(&unique, &"k/other".parse().unwrap()).await.unwrap(),
        "another key: kept"
    );
    assert!(c.blob(&unique).await.unwrap().is_some());
    assert!(c.forget_blob(&unique, &"k/gone".parse().unwrap()).await.unwrap());
    assert!(c.blob(&unique).await.unwrap().is_none());
    // The next upload of the same file records a fresh blob.
    let again = running_job(&c, 2, &incoming(1, "gone")).await;
    let done = c
        .commit_stored(again, stored_blob("k/fresh", 5, b"gone!"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(done.redundant_object, None);
    assert_eq!(c.blob(&unique).await.unwrap().unwrap().object_key.as_str(), "k/fresh");
}

async fn final_jobs_are_replied_once(c: Arc<dyn Catalog>) {
    let pending = accept(&c, 1, &incoming(1, "p")).await;
    let refused = c.mark_replied(pending).await;
    assert!(
        matches!(refused, Err(CatalogError::StateConflict { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        c.mark_replied(JobId::new()).await,
        Err(CatalogError::NotFound("job"))
    ));
    let s = running_job(&c, 2, &incoming(1, "s")).await;
    c.commit_stored(s, stored_blob("k/r", 1, b"r"), NewLink::unlimited())
        .await
        .unwrap();
    let f = accept(&c, 3, &incoming(1, "f")).await;
    c.transition(f, Transition::failed(JobState::Pending, ErrorKind::TooBig, "big"))
        .await
        .unwrap();
    let ids: Vec<_> = c.unreplied_jobs(10).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![s, f], "final jobs not yet replied, oldest first");
    c.mark_replied(s).await.unwrap();
    c.mark_replied(s).await.unwrap();
    let ids: Vec<_> = c.unreplied_jobs(10).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![f]);
    c.mark_replied(f).await.unwrap();
    assert!(c.unreplied_jobs(10).await.unwrap().is_empty());
}

async fn unfinished_jobs_oldest_first(c: Arc<dyn Catalog>) {
    assert!(c.unfinished_jobs(10).await.unwrap().is_empty());
    let a = accept(&c, 1, &incoming(1, "a")).await;
    let b = running_job(&c, 2, &incoming(1, "b")).await;
    let f = accept(&c, 3, &incoming(1, "f")).await;
    c.transition(f, Transition::failed(JobState::Pending, ErrorKind::NotAllowed, "who"))
        .await
        .unwrap();
    let s = running_job(&c, 4, &incoming(1, "s")).await;
    c.commit_stored(s, stored_blob("k/s", 1, b"s"), NewLink::unlimited())
        .await
        .unwrap();
    let d = accept(&c, 5, &incoming(1, "d")).await;

    let ids: Vec<_> = c.unfinished_jobs(10).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![a, b, d]);
    let ids: Vec<_> = c.unfinished_jobs(2).await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![a, b]);
    assert!(c.unfinished_jobs(0).await.unwrap().is_empty());
    let states: Vec<_> = c.unfinished_jobs(10).await.unwrap().iter().map(|j| j.state).collect();
    assert_eq!(states, vec![JobState::Pending, JobState::Running, JobState::Pending]);
}

// ---- scenarios: files --------------------------------------------------------

async fn commit_stored_writes_file_link_usage_and_job(c: Arc<dyn Catalog>) {
    assert_eq!(
        c.usage(UserId(9)).await.unwrap(),
        Usage {
            user_id: UserId(9),
            bytes: 0,
            files: 0
        }
    );
    let inc = incoming(9, "commit");
    let id = running_job(&c, 1, &inc).await;
    c.set_status_message(id, MessageId(31)).await.unwrap();
    let blob = stored_blob("blobs/aa/bb/commit", 5000, b"commit");
    let link = NewLink {
        token: LinkToken::generate(),
        expires_at: Some(ms(1_900_000_000_123)),
        max_downloads: Some(3),
    };

    let done = c.commit_stored(id, blob.clone(), link.clone()).await.unwrap();
    assert_eq!(done.redundant_object, None);

    let job = &done.job;
    assert_eq!(job.state, JobState::Stored);
    assert_eq!(job.file_id, Some(done.file.id));
    assert_eq!(job.attempts, 1);
    assert_eq!(job.status_message_id, Some(MessageId(31)));
    assert_eq!(c.job(id).await.unwrap().as_ref(), Some(job));

    let f = &done.file;
    assert_eq!(
        (f.owner, f.chat_id, f.message_id, f.kind),
        (inc.user_id, inc.chat_id, inc.message_id, inc.kind)
    );
    assert_eq!(
        (f.name.as_str(), f.mime_type.as_str()),
        (inc.file_name.as_str(), inc.mime_type.as_str())
    );
    assert_eq!(f.file_unique_id, "commit");
    assert_eq!((f.size, f.sha256, &f.object_key), (5000, blob.sha256, &blob.object_key));
    assert_eq!(f.state, FileState::Active);
    assert_eq!((f.download_count, f.last_download_at, f.deleted_at), (0, None, None));
    assert_eq!(c.file(f.id).await.unwrap().as_ref(), Some(f));
    assert_eq!(c.file(FileId::new()).await.unwrap(), None);

    let l = &done.link;
    assert_eq!((l.token, l.file_id), (link.token, f.id));
    assert_eq!((l.expires_at, l.max_downloads), (link.expires_at, Some(3)));
    assert_eq!((l.password_hash.clone(), l.revoked_at), (None, None));
    assert_eq!(c.links_of(f.id).await.unwrap(), vec![l.clone()]);

    let b = c.blob("commit").await.unwrap().expect("blob recorded");
    assert_eq!(
        (b.object_key, b.size, b.sha256),
        (blob.object_key.clone(), 5000, blob.sha256)
    );
    assert_eq!(c.blob("nope").await.unwrap(), None);

    assert_eq!(usage(&c, 9).await, (5000, 1));
    let events = c.job_events(id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.from, last.to), (Some(JobState::Running), JobState::Stored));
    assert_eq!(events.len(), 3);
    assert!(c.unfinished_jobs(10).await.unwrap().is_empty());

    // A second file of the same user adds up.
    let id2 = running_job(&c, 2, &incoming(9, "commit-2")).await;
    c.commit_stored(id2, stored_blob("k/2", 11, b"2"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(usage(&c, 9).await, (5011, 2));
}

async fn commit_stored_needs_a_running_job(c: Arc<dyn Catalog>) {
    let pending = accept(&c, 1, &incoming(3, "early")).await;
    let before = c.job(pending).await.unwrap().unwrap();
    let token = LinkToken::generate();
    let link = NewLink {
        token,
        expires_at: None,
        max_downloads: None,
    };
    let err = c
        .commit_stored(pending, stored_blob("k/early", 10, b"e"), link.clone())
        .await
        .unwrap_err();
    match err {
        CatalogError::StateConflict { expected, actual } => {
            assert_eq!((expected, actual), (JobState::Running, JobState::Pending))
        }
        other => panic!("expected StateConflict, got {other:?}"),
    }
    // Nothing at all was written.
    assert_eq!(c.job(pending).await.unwrap(), Some(before));
    assert_eq!(c.job_events(pending).await.unwrap().len(), 1);
    assert_eq!(c.blob("early").await.unwrap(), None);
    assert_eq!(usage(&c, 3).await, (0, 0));
    assert_eq!(c.resolve_link(token).await.unwrap(), None);

    let missing = c
        .commit_stored(JobId::new(), stored_blob("k/x", 1, b"x"), NewLink::unlimited())
        .await;
    assert!(matches!(missing, Err(CatalogError::NotFound("job"))), "{missing:?}");

    // A job stored once cannot be stored again (a redelivered message).
    let id = running_job(&c, 2, &incoming(3, "twice")).await;
    let first = c
        .commit_stored(id, stored_blob("k/twice", 10, b"t"), NewLink::unlimited())
        .await
        .unwrap();
    let again = NewLink::unlimited();
    let err = c
        .commit_stored(id, stored_blob("k/twice-2", 10, b"t"), again.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::StateConflict {
                expected: JobState::Running,
                actual: JobState::Stored
            }
        ),
        "{err:?}"
    );
    assert_eq!(usage(&c, 3).await, (10, 1));
    assert_eq!(c.links_of(first.file.id).await.unwrap(), vec![first.link.clone()]);
    assert_eq!(c.resolve_link(again.token).await.unwrap(), None);
    assert_eq!(c.job(id).await.unwrap(), Some(first.job));
}

async fn same_unique_id_reuses_the_blob(c: Arc<dyn Catalog>) {
    let j1 = running_job(&c, 1, &incoming(1, "shared")).await;
    let j2 = running_job(&c, 2, &incoming(2, "shared")).await;
    let j3 = running_job(&c, 3, &incoming(2, "shared")).await;

    let first = c
        .commit_stored(j1, stored_blob("k/first", 700, b"same"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(first.redundant_object, None);

    // A second upload of the same Telegram file: its object is redundant
    // and the file row points at the first blob.
    let second = c
        .commit_stored(j2, stored_blob("k/second", 700, b"same"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(second.redundant_object, Some(key("k/second")));
    assert_eq!(second.file.object_key, key("k/first"));
    assert_eq!((second.file.size, second.file.sha256), (700, Sha256::digest(b"same")));
    assert_ne!(second.file.id, first.file.id);
    assert_eq!(second.file.owner, UserId(2));

    // Passing the key already recorded (no new upload): nothing redundant.
    let third = c
        .commit_stored(j3, stored_blob("k/first", 700, b"same"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(third.redundant_object, None);
    assert_eq!(third.file.object_key, key("k/first"));

    let b = c.blob("shared").await.unwrap().unwrap();
    assert_eq!(b.object_key, key("k/first"));
    // Usage counts each owner's files.
    assert_eq!(usage(&c, 1).await, (700, 1));
    assert_eq!(usage(&c, 2).await, (1400, 2));
}

async fn resolve_link(c: Arc<dyn Catalog>) {
    let id = running_job(&c, 1, &incoming(4, "res")).await;
    let link = NewLink {
        token: LinkToken::generate(),
        expires_at: Some(ms(1_700_000_000_000)),
        max_downloads: None,
    };
    let done = c
        .commit_stored(id, stored_blob("k/res", 64, b"r"), link.clone())
        .await
        .unwrap();

    let (l, f) = c.resolve_link(link.token).await.unwrap().expect("link resolves");
    assert_eq!(l, done.link);
    assert_eq!(f, done.file);
    assert_eq!(c.resolve_link(LinkToken::generate()).await.unwrap(), None);

    // Whatever the state: a deleted file still resolves, so the link server
    // can answer 410 rather than 404.
    c.delete_file(f.id).await.unwrap();
    let (l, f) = c.resolve_link(link.token).await.unwrap().expect("still resolves");
    assert_eq!(f.state, FileState::Deleted);
    assert!(f.deleted_at.is_some());
    assert!(l.revoked_at.is_some());
    assert_eq!(l.expires_at, link.expires_at);
}

async fn record_downloads_in_batches(c: Arc<dyn Catalog>) {
    let a = c
        .commit_stored(
            running_job(&c, 1, &incoming(1, "dl-a")).await,
            stored_blob("k/a", 1, b"a"),
            NewLink::unlimited(),
        )
        .await
        .unwrap()
        .file
        .id;
    let b = c
        .commit_stored(
            running_job(&c, 2, &incoming(1, "dl-b")).await,
            stored_blob("k/b", 1, b"b"),
            NewLink::unlimited(),
        )
        .await
        .unwrap()
        .file
        .id;
    c.record_downloads(&[]).await.unwrap();

    let t1 = ms(1_800_000_000_100);
    let t2 = ms(1_800_000_000_200);
    let t3 = ms(1_800_000_000_300);
    c.record_downloads(&[
        DownloadHit {
            file_id: a,
            count: 2,
            last_at: t2,
        },
        DownloadHit {
            file_id: b,
            count: 1,
            last_at: t1,
        },
        DownloadHit {
            file_id: a,
            count: 3,
            last_at: t1,
        },
    ])
    .await
    .unwrap();
    let fa = c.file(a).await.unwrap().unwrap();
    let fb = c.file(b).await.unwrap().unwrap();
    assert_eq!((fa.download_count, fa.last_download_at), (5, Some(t2)));
    assert_eq!((fb.download_count, fb.last_download_at), (1, Some(t1)));

    // A late flush from another link server: counts add, time never goes back.
    c.record_downloads(&[DownloadHit {
        file_id: a,
        count: 1,
        last_at: t1,
    }])
    .await
    .unwrap();
    c.record_downloads(&[DownloadHit {
        file_id: b,
        count: 4,
        last_at: t3,
    }])
    .await
    .unwrap();
    let fa = c.file(a).await.unwrap().unwrap();
    let fb = c.file(b).await.unwrap().unwrap();
    assert_eq!((fa.download_count, fa.last_download_at), (6, Some(t2)));
    assert_eq!((fb.download_count, fb.last_download_at), (5, Some(t3)));

    // A hit for a file that is not there is dropped without harm.
    c.record_downloads(&[DownloadHit {
        file_id: FileId::new(),
        count: 1,
        last_at: t3,
    }])
    .await
    .unwrap();
    assert_eq!(c.file(a).await.unwrap().unwrap().download_count, 6);

    // A count that cannot be stored is refused, and nothing of the batch is applied.
    let bad = c
        .record_downloads(&[
            DownloadHit {
                file_id: a,
                count: 1,
                last_at: t3,
            },
            DownloadHit {
                file_id: b,
                count: u64::MAX,
                last_at: t3,
            },
        ])
        .await;
    assert!(bad.is_err());
    assert_eq!(c.file(a).await.unwrap().unwrap().download_count, 6);
}

async fn delete_file_counts_references(c: Arc<dyn Catalog>) {
    let mut files = Vec::new();
    for (update, user) in [(1, 1), (2, 1), (3, 2)] {
        let job = running_job(&c, update, &incoming(user, "ref")).await;
        let key = format!("k/ref-{update}");
        files.push(
            c.commit_stored(job, stored_blob(&key, 100, b"ref"), NewLink::unlimited())
                .await
                .unwrap(),
        );
    }
    let lone_job = running_job(&c, 4, &incoming(1, "lone")).await;
    let lone = c
        .commit_stored(lone_job, stored_blob("k/lone", 30, b"lone"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(usage(&c, 1).await, (230, 3));
    assert_eq!(usage(&c, 2).await, (100, 1));

    // First of three users of the blob: nothing to delete in storage.
    assert_eq!(c.delete_file(files[0].file.id).await.unwrap(), None);
    let f0 = c.file(files[0].file.id).await.unwrap().unwrap();
    assert_eq!(f0.state, FileState::Deleted);
    let deleted_at = f0.deleted_at.expect("deleted_at set");
    assert!(
        c.links_of(f0.id)
            .await
            .unwrap()
            .iter()
            .all(|l| l.revoked_at == Some(deleted_at))
    );
    assert!(
        c.links_of(files[1].file.id)
            .await
            .unwrap()
            .iter()
            .all(|l| l.revoked_at.is_none())
    );
    assert_eq!(usage(&c, 1).await, (130, 2));
    assert!(c.blob("ref").await.unwrap().is_some());

    // Deleting it again changes nothing.
    assert_eq!(c.delete_file(f0.id).await.unwrap(), None);
    assert_eq!(c.file(f0.id).await.unwrap(), Some(f0.clone()));
    assert_eq!(usage(&c, 1).await, (130, 2));

    assert_eq!(c.delete_file(files[2].file.id).await.unwrap(), None);
    assert_eq!(usage(&c, 2).await, (0, 0));
    // The last live file releases the blob, under the first recorded key.
    assert_eq!(c.delete_file(files[1].file.id).await.unwrap(), Some(key("k/ref-1")));
    assert_eq!(c.blob("ref").await.unwrap(), None);
    assert_eq!(usage(&c, 1).await, (30, 1));
    assert_eq!(c.delete_file(files[1].file.id).await.unwrap(), None);

    assert_eq!(c.delete_file(lone.file.id).await.unwrap(), Some(key("k/lone")));
    assert_eq!(usage(&c, 1).await, (0, 0));
    let missing = c.delete_file(FileId::new()).await;
    assert!(matches!(missing, Err(CatalogError::NotFound("file"))), "{missing:?}");

    // The same Telegram file sent again after that: stored anew.
    let again = running_job(&c, 5, &incoming(2, "ref")).await;
    let done = c
        .commit_stored(again, stored_blob("k/ref-5", 100, b"ref"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(done.redundant_object, None);
    assert_eq!(done.file.object_key, key("k/ref-5"));
    assert_eq!(c.blob("ref").await.unwrap().unwrap().object_key, key("k/ref-5"));
    assert_eq!(usage(&c, 2).await, (100, 1));
}

async fn delete_and_commit_race_keeps_the_blob_consistent(c: Arc<dyn Catalog>) {
    // Deleting the only file of a blob while another job commits the same
    // Telegram file: whichever order the catalog picks, a live file never
    // points at a blob whose key was handed out for deletion.
    for round in 0..5 {
        let unique = format!("race-{round}");
        let base = round * 10;
        let j = running_job(&c, base + 1, &incoming(1, &unique)).await;
        let first = c
            .commit_stored(j, stored_blob(&format!("k/{unique}-a"), 10, b"x"), NewLink::unlimited())
            .await
            .unwrap();
        let j2 = running_job(&c, base + 2, &incoming(2, &unique)).await;

        let (deleted, committed) = tokio::join!(
            c.delete_file(first.file.id),
            c.commit_stored(
                j2,
                stored_blob(&format!("k/{unique}-b"), 10, b"x"),
                NewLink::unlimited()
            )
        );
        let released = deleted.unwrap();
        let committed = committed.unwrap();
        let live_key = committed.file.object_key.clone();
        assert_ne!(
            released.as_ref(),
            Some(&live_key),
            "round {round}: live file's object released"
        );
        assert_eq!(c.blob(&unique).await.unwrap().unwrap().object_key, live_key);
        match released {
            // Delete first: the commit recorded its own upload.
            Some(k) => {
                assert_eq!(k, key(&format!("k/{unique}-a")));
                assert_eq!(committed.redundant_object, None);
            }
            // Commit first: it reused the blob, the delete kept it.
            None => assert_eq!(committed.redundant_object, Some(key(&format!("k/{unique}-b")))),
        }
    }
}

// ---- scenarios: policies -----------------------------------------------------

async fn policies_crud(c: Arc<dyn Catalog>) {
    assert!(c.policies().await.unwrap().is_empty());
    let spec_b = json!({"maxAge": "30d", "selector": {"users": [1, 2]}, "dryRun": false});
    let spec_a = json!({"quota": {"maxBytes": "5Gi"}, "ratio": 0.5});
    c.upsert_policy("ns/b", 1, &spec_b).await.unwrap();
    c.upsert_policy("ns/a", 3, &spec_a).await.unwrap();
    let rows = c.policies().await.unwrap();
    assert_eq!(
        rows.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
        vec!["ns/a", "ns/b"]
    );
    assert_eq!((rows[0].generation, &rows[0].spec), (3, &spec_a));
    assert_eq!((rows[1].generation, &rows[1].spec), (1, &spec_b));
    let first_update = rows[0].updated_at;

    let spec_a2 = json!({"quota": {"maxBytes": "1Gi", "onExceed": "evictOldest"}});
    c.upsert_policy("ns/a", 4, &spec_a2).await.unwrap();
    let rows = c.policies().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].key.as_str(), rows[0].generation, &rows[0].spec),
        ("ns/a", 4, &spec_a2)
    );
    assert!(rows[0].updated_at >= first_update);

    assert!(c.delete_policy("ns/a").await.unwrap());
    assert!(!c.delete_policy("ns/a").await.unwrap());
    assert!(!c.delete_policy("never").await.unwrap());
    let rows = c.policies().await.unwrap();
    assert_eq!(rows.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), vec!["ns/b"]);
}

// ---- one test per scenario and backend ----------------------------------------

macro_rules! conformance {
    ($($kind:ident $case:ident => $pg:ident, $lite:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $pg() {
                conformance!(@run $kind $case Backend::Postgres);
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $lite() {
                conformance!(@run $kind $case Backend::Sqlite);
            }
        )*
    };
    (@run catalog $case:ident $backend:expr) => {{
        let fx = Fixture::new($backend).await;
        $case(fx.catalog.clone()).await;
        drop(fx);
    }};
    (@run fixture $case:ident $backend:expr) => {{
        $case(Fixture::new($backend).await).await;
    }};
}

conformance! {
    fixture migrate_twice_is_a_no_op => postgres_migrate_twice_is_a_no_op, sqlite_migrate_twice_is_a_no_op;
    fixture concurrent_migrate => postgres_concurrent_migrate, sqlite_concurrent_migrate;
    fixture job_survives_reopening => postgres_job_survives_reopening, sqlite_job_survives_reopening;
    catalog accept_job_is_idempotent => postgres_accept_job_is_idempotent, sqlite_accept_job_is_idempotent;
    catalog accept_job_concurrently_once => postgres_accept_job_concurrently_once, sqlite_accept_job_concurrently_once;
    catalog transitions_follow_the_state_machine
        => postgres_transitions_follow_the_state_machine, sqlite_transitions_follow_the_state_machine;
    catalog illegal_transitions_change_nothing
        => postgres_illegal_transitions_change_nothing, sqlite_illegal_transitions_change_nothing;
    catalog transition_is_compare_and_set
        => postgres_transition_is_compare_and_set, sqlite_transition_is_compare_and_set;
    catalog set_status_message => postgres_set_status_message, sqlite_set_status_message;
    catalog forget_blob_only_removes_the_named_object
        => postgres_forget_blob_only_removes_the_named_object, sqlite_forget_blob_only_removes_the_named_object;
    catalog final_jobs_are_replied_once => postgres_final_jobs_are_replied_once, sqlite_final_jobs_are_replied_once;
    catalog unfinished_jobs_oldest_first => postgres_unfinished_jobs_oldest_first, sqlite_unfinished_jobs_oldest_first;
    catalog commit_stored_writes_file_link_usage_and_job
        => postgres_commit_stored_writes_file_link_usage_and_job, sqlite_commit_stored_writes_file_link_usage_and_job;
    catalog commit_stored_needs_a_running_job
        => postgres_commit_stored_needs_a_running_job, sqlite_commit_stored_needs_a_running_job;
    catalog same_unique_id_reuses_the_blob
        => postgres_same_unique_id_reuses_the_blob, sqlite_same_unique_id_reuses_the_blob;
    catalog resolve_link => postgres_resolve_link, sqlite_resolve_link;
    catalog record_downloads_in_batches => postgres_record_downloads_in_batches, sqlite_record_downloads_in_batches;
    catalog delete_file_counts_references
        => postgres_delete_file_counts_references, sqlite_delete_file_counts_references;
    catalog delete_and_commit_race_keeps_the_blob_consistent
        => postgres_delete_and_commit_race_keeps_the_blob_consistent,
           sqlite_delete_and_commit_race_keeps_the_blob_consistent;
    catalog policies_crud => postgres_policies_crud, sqlite_policies_crud;
}

/// The in-memory SQLite URL works too (one private database per catalog).
#[tokio::test]
async fn sqlite_in_memory_catalog() {
    let c = open("sqlite::memory:").await;
    c.migrate().await.unwrap();
    accept_job_is_idempotent(c.clone()).await;
    let other = open("sqlite::memory:").await;
    other.migrate().await.unwrap();
    assert!(
        other.unfinished_jobs(10).await.unwrap().is_empty(),
        "in-memory catalogs are separate"
    );
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    for url in ["mysql://x", "", "http://localhost"] {
        assert!(
            matches!(teledrop_catalog::connect(url).await, Err(CatalogError::UnsupportedUrl)),
            "{url}"
        );
    }
}
