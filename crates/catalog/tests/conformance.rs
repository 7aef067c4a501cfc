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
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use teledrop_catalog::{
    Accepted, Admission, Catalog, CatalogError, Claim, DownloadHit, FileCursor, FileFilter, Notice, QuotaLockScope,
    StoredBlob, Totals, Transition,
};
use teledrop_core::file::FileState;
use teledrop_core::{
    ChatId, ErrorKind, FileId, FileRecord, IncomingFile, JobId, JobState, LinkToken, MediaKind, MessageId, NewLink,
    ObjectKey, Sha256, UpdateId, Usage, UserId,
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

/// A file message from `user`. Each call is a message of its own (jobs are
/// keyed by chat and message id); reuse the value to send the same
/// message again.
fn incoming(user: i64, unique: &str) -> IncomingFile {
    static NEXT_MESSAGE: AtomicI32 = AtomicI32::new(1);
    IncomingFile {
        user_id: UserId(user),
        chat_id: ChatId(user * 10),
        message_id: MessageId(NEXT_MESSAGE.fetch_add(1, Ordering::Relaxed)),
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

/// Stores a new Telegram file (its own blob, under `k/<name>`) for `user`
/// in `chat` with this MIME type and size.
async fn store(c: &Arc<dyn Catalog>, update: i64, user: i64, chat: i64, mime: &str, size: u64) -> FileRecord {
    let mut inc = incoming(user, &format!("live-{update}"));
    inc.chat_id = ChatId(chat);
    inc.mime_type = mime.to_owned();
    let job = running_job(c, update, &inc).await;
    let blob = stored_blob(&format!("k/live-{update}"), size, &update.to_be_bytes());
    c.commit_stored(job, blob, NewLink::unlimited())
        .await
        .expect("commit")
        .file
}

/// Ids in the order `live_files` must return them: (created_at, id).
fn in_order(files: &[&FileRecord]) -> Vec<FileId> {
    let mut sorted: Vec<_> = files.iter().map(|f| (f.created_at, f.id)).collect();
    sorted.sort();
    sorted.into_iter().map(|(_, id)| id).collect()
}

async fn live_ids(c: &Arc<dyn Catalog>, filter: &FileFilter) -> Vec<FileId> {
    let files = c.live_files(filter, None, 1000).await.expect("live_files");
    assert!(files.iter().all(|f| f.state == FileState::Active), "{files:?}");
    files.iter().map(|f| f.id).collect()
}

fn mime(patterns: &[&str]) -> FileFilter {
    FileFilter {
        mime_patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
        ..FileFilter::default()
    }
}

fn owners(users: &[i64]) -> FileFilter {
    FileFilter {
        owners: users.iter().copied().map(UserId).collect(),
        ..FileFilter::default()
    }
}

fn totals(files: u64, bytes: u64) -> Totals {
    Totals { files, bytes }
}

/// Sets a file's creation time behind the catalog's back, with a plain
/// connection, to make files created in the same millisecond.
async fn set_created_at(fx: &Fixture, file: FileId, at: DateTime<Utc>) {
    let done = match fx.backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&fx.db.url).await.expect("raw connect");
            sqlx::query("UPDATE files SET created_at = $1 WHERE id = $2")
                .bind(at)
                .bind(file.as_uuid())
                .execute(&mut conn)
                .await
                .expect("set created_at")
                .rows_affected()
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&fx.db.url).await.expect("raw connect");
            sqlx::query("UPDATE files SET created_at = ?1 WHERE id = ?2")
                .bind(at.timestamp_millis())
                .bind(file.as_uuid().hyphenated().to_string())
                .execute(&mut conn)
                .await
                .expect("set created_at")
                .rows_affected()
        }
    };
    assert_eq!(done, 1);
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

    // The same message again (Telegram retrying or redelivering it), under
    // another update id and with other content: the stored job.
    let again = IncomingFile {
        file_unique_id: "other".into(),
        ..inc.clone()
    };
    let second = c.accept_job(UpdateId(1001), &again).await.unwrap();
    assert_eq!(second, Accepted::Duplicate(job.clone()));
    assert_eq!(second.job(), first.job());

    assert_eq!(c.job(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(
        c.job_by_message(inc.chat_id, inc.message_id).await.unwrap(),
        Some(job.clone())
    );
    assert_eq!(c.job_by_update(UpdateId(1000)).await.unwrap(), Some(job.clone()));
    assert_eq!(
        c.job_by_update(UpdateId(1001)).await.unwrap(),
        None,
        "a duplicate records nothing"
    );
    assert_eq!(c.job(JobId::new()).await.unwrap(), None);

    let events = c.job_events(job.id).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].job_id, events[0].from, events[0].to),
        (job.id, None, JobState::Pending)
    );
    assert_eq!(events[0].at, job.created_at);

    // An update id already used, on another message: Telegram picked it
    // again after a week without updates. A new job, whatever the old
    // one's state.
    c.transition(job.id, Transition::new(JobState::Pending, JobState::Failed, "done"))
        .await
        .unwrap();
    let next = IncomingFile {
        message_id: MessageId(inc.message_id.0 + 1_000_000),
        ..inc.clone()
    };
    assert_eq!(c.job_by_message(next.chat_id, next.message_id).await.unwrap(), None);
    let reused = c.accept_job(UpdateId(1000), &next).await.unwrap();
    let Accepted::New(newer) = reused.clone() else {
        panic!("a reused update id on a new message must be a new job: {reused:?}")
    };
    assert_ne!(newer.id, job.id);
    assert_eq!((newer.update_id, &newer.incoming), (UpdateId(1000), &next));
    assert_eq!(newer.state, JobState::Pending);
    assert_eq!(
        c.job_by_message(next.chat_id, next.message_id).await.unwrap(),
        Some(newer.clone())
    );
    assert_eq!(
        c.job_by_update(UpdateId(1000)).await.unwrap(),
        Some(newer),
        "the newest"
    );

    // The same message id in another chat is another message.
    let elsewhere = IncomingFile {
        chat_id: ChatId(inc.chat_id.0 + 1),
        ..inc.clone()
    };
    let other = c.accept_job(UpdateId(1002), &elsewhere).await.unwrap();
    assert!(matches!(other, Accepted::New(_)), "{other:?}");
    assert_ne!(other.job().id, job.id);
}

async fn accept_job_concurrently_once(c: Arc<dyn Catalog>) {
    const N: usize = 20;
    let barrier = Arc::new(Barrier::new(N));
    let base = incoming(1, "race");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let c = c.clone();
        let barrier = barrier.clone();
        // One message, delivered at once under several update ids and with
        // differing content: the first insert wins.
        let inc = IncomingFile {
            file_unique_id: format!("race-{i}"),
            ..base.clone()
        };
        let update = UpdateId(777 + i64::try_from(i).unwrap());
        tasks.spawn(async move {
            barrier.wait().await;
            c.accept_job(update, &inc).await
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

    // Would-reject counts survive a new spec and go with the row.
    assert_eq!((rows[0].would_reject, rows[1].would_reject), (0, 0));
    assert!(c.count_would_reject("ns/a").await.unwrap());
    assert!(c.count_would_reject("ns/a").await.unwrap());
    assert!(!c.count_would_reject("never").await.unwrap());
    c.upsert_policy("ns/a", 5, &spec_a2).await.unwrap();
    let rows = c.policies().await.unwrap();
    assert_eq!((rows[0].would_reject, rows[1].would_reject), (2, 0));

    assert!(c.delete_policy("ns/a").await.unwrap());
    assert!(!c.delete_policy("ns/a").await.unwrap());
    assert!(!c.delete_policy("never").await.unwrap());
    let rows = c.policies().await.unwrap();
    assert_eq!(rows.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), vec!["ns/b"]);
}

// ---- scenarios: rate limit ---------------------------------------------------

const MINUTE: Duration = Duration::from_secs(60);

fn limit(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("a limit above zero")
}

/// `t0` plus `secs` seconds.
fn at(secs: f64) -> DateTime<Utc> {
    const T0: i64 = 1_700_000_000_000;
    ms(T0 + (secs * 1000.0).round() as i64)
}

fn limited(secs: f64) -> Admission {
    Admission::Limited {
        retry_after: Duration::from_millis((secs * 1000.0).round() as u64),
    }
}

/// `n` new jobs of `user`, from update ids `first..`.
async fn jobs_of(c: &Arc<dyn Catalog>, user: i64, first: i64, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for i in 0..i64::try_from(n).unwrap() {
        ids.push(accept(c, first + i, &incoming(user, &format!("rate-{user}-{i}"))).await);
    }
    ids
}

async fn admit(c: &Arc<dyn Catalog>, job: JobId, n: u32, now: DateTime<Utc>) -> Admission {
    c.admit(job, limit(n), MINUTE, now).await.expect("admit")
}

async fn rate_limit_admits_up_to_the_limit(c: Arc<dyn Catalog>) {
    let j = jobs_of(&c, 1, 1, 6).await;
    assert_eq!(admit(&c, j[0], 3, at(0.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[1], 3, at(10.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[2], 3, at(20.0)).await, Admission::Admitted);
    // Full: a slot frees when the admission at 0 s leaves, at 60 s.
    assert_eq!(admit(&c, j[3], 3, at(30.0)).await, limited(30.0));
    assert_eq!(admit(&c, j[3], 3, at(59.999)).await, limited(0.001));
    // Sub-millisecond parts are dropped, as for every stored time.
    let almost = at(59.999) + chrono::TimeDelta::microseconds(900);
    assert_eq!(admit(&c, j[3], 3, almost).await, limited(0.001));
    // An admission exactly one window old has left it.
    assert_eq!(admit(&c, j[3], 3, at(60.0)).await, Admission::Admitted);
    // The refusals took nothing: the next slot is the one freed at 70 s.
    assert_eq!(admit(&c, j[4], 3, at(60.0)).await, limited(10.0));
    assert_eq!(admit(&c, j[4], 3, at(70.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[5], 3, at(70.0)).await, limited(10.0));

    // A lowered limit waits until enough admissions have left: of the
    // three in the window (20 s, 60 s, 70 s), two must go for a limit of
    // 2, the second of them at 120 s.
    assert_eq!(admit(&c, j[5], 2, at(75.0)).await, limited(45.0));
    // A raised one admits at once.
    assert_eq!(admit(&c, j[5], 4, at(75.0)).await, Admission::Admitted);

    assert!(matches!(
        c.admit(JobId::new(), limit(3), MINUTE, at(0.0)).await,
        Err(CatalogError::NotFound("job"))
    ));
}

async fn rate_limit_counts_a_job_once(c: Arc<dyn Catalog>) {
    let j = jobs_of(&c, 2, 100, 3).await;
    assert_eq!(admit(&c, j[0], 2, at(0.0)).await, Admission::Admitted);
    // A redelivery of the same job, even with the window full.
    assert_eq!(admit(&c, j[0], 2, at(1.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[1], 2, at(2.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[0], 2, at(3.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[1], 2, at(3.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[2], 2, at(3.0)).await, limited(57.0));
    // An unfinished job keeps its slot long after the window (a retry
    // many minutes later is not refused), and takes no new one.
    assert_eq!(admit(&c, j[0], 2, at(600.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, j[2], 2, at(600.0)).await, Admission::Admitted);
}

async fn rate_limit_is_per_user(c: Arc<dyn Catalog>) {
    let mine = jobs_of(&c, 3, 200, 2).await;
    let theirs = jobs_of(&c, 4, 300, 2).await;
    assert_eq!(admit(&c, mine[0], 1, at(0.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, mine[1], 1, at(0.0)).await, limited(60.0));
    assert_eq!(admit(&c, theirs[0], 1, at(0.0)).await, Admission::Admitted);
    assert_eq!(admit(&c, theirs[1], 1, at(30.0)).await, limited(30.0));
    assert_eq!(admit(&c, mine[1], 1, at(30.0)).await, limited(30.0));
}

/// Rows in `rate_admissions`, read with a plain connection.
async fn admission_rows(fx: &Fixture) -> i64 {
    let sql = "SELECT COUNT(*) FROM rate_admissions";
    match fx.backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&fx.db.url).await.expect("raw connect");
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("count")
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&fx.db.url).await.expect("raw connect");
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("count")
        }
    }
}

async fn rate_admissions_of_finished_jobs_are_pruned(fx: Fixture) {
    let c = &fx.catalog;
    let j = jobs_of(c, 5, 400, 5).await;
    let other = jobs_of(c, 6, 500, 1).await;
    for (secs, job) in [0.0, 1.0, 2.0].into_iter().zip(&j) {
        assert_eq!(admit(c, *job, 10, at(secs)).await, Admission::Admitted);
    }
    assert_eq!(admit(c, other[0], 10, at(0.0)).await, Admission::Admitted);
    // Two of the user's jobs finish; one stays pending.
    for job in &j[..2] {
        c.transition(*job, Transition::failed(JobState::Pending, ErrorKind::Network, "gone"))
            .await
            .unwrap();
    }
    assert_eq!(admission_rows(&fx).await, 4);
    // Inside the window nothing goes.
    assert_eq!(admit(c, j[3], 10, at(30.0)).await, Admission::Admitted);
    assert_eq!(admission_rows(&fx).await, 5);
    // Past it, the finished jobs' admissions go; the unfinished job's stays
    // (it may still come back and must find its slot), and so does
    // another user's.
    assert_eq!(admit(c, j[4], 10, at(120.0)).await, Admission::Admitted);
    assert_eq!(admission_rows(&fx).await, 4);
    assert_eq!(admit(c, j[2], 1, at(120.0)).await, Admission::Admitted);
    assert_eq!(admission_rows(&fx).await, 4);
}

async fn concurrent_admissions_take_exactly_the_free_slots(fx: Fixture) {
    // Several pools on one database, as several worker replicas have.
    const POOLS: usize = 4;
    const JOBS: usize = 24;
    const LIMIT: u32 = 5;
    let mut catalogs = vec![fx.catalog.clone()];
    for _ in 1..POOLS {
        let c = open(&fx.db.url).await;
        c.ping().await.unwrap();
        catalogs.push(c);
    }
    let jobs = jobs_of(&fx.catalog, 7, 600, JOBS).await;
    // Someone else's admissions, made at the same moment, count for them only.
    let bystander = jobs_of(&fx.catalog, 8, 700, 1).await[0];

    let round = |now: DateTime<Utc>| {
        let barrier = Arc::new(Barrier::new(JOBS + 1));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, job) in jobs.iter().copied().enumerate() {
            let c = catalogs[i % POOLS].clone();
            let barrier = barrier.clone();
            tasks.spawn(async move {
                barrier.wait().await;
                (job, c.admit(job, limit(LIMIT), MINUTE, now).await)
            });
        }
        let c = catalogs[0].clone();
        tasks.spawn(async move {
            barrier.wait().await;
            (bystander, c.admit(bystander, limit(1), MINUTE, now).await)
        });
        tasks
    };

    let mut tasks = round(at(0.0));
    let mut admitted = HashSet::new();
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        let (job, outcome) = done.expect("task");
        match outcome.expect("admit") {
            Admission::Admitted => assert!(admitted.insert(job)),
            Admission::Limited { retry_after } => {
                assert_eq!(retry_after, MINUTE, "all admissions are as old as the refusal");
                refused += 1;
            }
        }
    }
    assert!(admitted.contains(&bystander));
    assert_eq!(admitted.len() - 1, LIMIT as usize, "exactly the limit is admitted");
    assert_eq!(refused, JOBS - LIMIT as usize);

    // Everyone again, later in the window: the admitted jobs (and only
    // they) find their slots.
    let mut tasks = round(at(30.0));
    let mut again = HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (job, outcome) = done.expect("task");
        match outcome.expect("admit") {
            Admission::Admitted => assert!(again.insert(job)),
            Admission::Limited { retry_after } => assert_eq!(retry_after, Duration::from_secs(30)),
        }
    }
    assert_eq!(again, admitted);
}

// ---- scenarios: fair queues ---------------------------------------------------

async fn claim(c: &Arc<dyn Catalog>, job: JobId, n: u32) -> Claim {
    c.claim(job, limit(n), "started").await.expect("claim")
}

fn started(claim: &Claim) -> bool {
    matches!(claim, Claim::Started(_))
}

async fn claims_start_up_to_the_owner_limit(c: Arc<dyn Catalog>) {
    let j = jobs_of(&c, 31, 800, 3).await;
    let Claim::Started(first) = claim(&c, j[0], 2).await else {
        panic!("a user with nothing running starts")
    };
    assert_eq!((first.id, first.state, first.attempts), (j[0], JobState::Running, 1));
    let events = c.job_events(j[0]).await.unwrap();
    let last = events.last().expect("an event");
    assert_eq!(
        (last.from, last.to, last.note.as_str()),
        (Some(JobState::Pending), JobState::Running, "started")
    );
    assert!(started(&claim(&c, j[1], 2).await));
    assert_eq!(claim(&c, j[2], 2).await, Claim::OwnerBusy);
    let waiting = c.job(j[2]).await.unwrap().expect("job");
    assert_eq!(
        (waiting.state, waiting.attempts),
        (JobState::Pending, 0),
        "a busy owner's job is untouched"
    );
    assert_eq!(c.job_events(j[2]).await.unwrap().len(), 1, "and gets no event");
    // Other users are not held up.
    let other = jobs_of(&c, 32, 900, 1).await[0];
    assert!(started(&claim(&c, other, 2).await));
    // A job that left `running` (retried, finished) frees its slot.
    c.transition(j[0], Transition::retry(ErrorKind::Network, "reset"))
        .await
        .unwrap();
    assert!(started(&claim(&c, j[2], 2).await));
    assert_eq!(claim(&c, j[0], 2).await, Claim::OwnerBusy);
    c.transition(j[1], Transition::failed(JobState::Running, ErrorKind::TooBig, "big"))
        .await
        .unwrap();
    assert!(started(&claim(&c, j[0], 2).await));
    // A raised limit admits at once.
    let more = jobs_of(&c, 31, 1000, 1).await[0];
    assert_eq!(claim(&c, more, 2).await, Claim::OwnerBusy);
    assert!(started(&claim(&c, more, 3).await));
}

async fn claims_need_a_pending_job(c: Arc<dyn Catalog>) {
    let j = jobs_of(&c, 33, 1100, 2).await;
    assert!(started(&claim(&c, j[0], 1).await));
    // Running already: a conflict, busy owner or not.
    for n in [1, 5] {
        match c.claim(j[0], limit(n), "again").await {
            Err(CatalogError::StateConflict { expected, actual }) => {
                assert_eq!((expected, actual), (JobState::Pending, JobState::Running));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    c.transition(j[1], Transition::failed(JobState::Pending, ErrorKind::Internal, "x"))
        .await
        .unwrap();
    assert!(matches!(
        c.claim(j[1], limit(5), "late").await,
        Err(CatalogError::StateConflict {
            actual: JobState::Failed,
            ..
        })
    ));
    assert!(matches!(
        c.claim(JobId::new(), limit(1), "ghost").await,
        Err(CatalogError::NotFound(_))
    ));
}

async fn concurrent_claims_never_exceed_the_limit(fx: Fixture) {
    const POOLS: usize = 4;
    const JOBS: usize = 16;
    const LIMIT: u32 = 3;
    let mut catalogs = vec![fx.catalog.clone()];
    for _ in 1..POOLS {
        let c = open(&fx.db.url).await;
        c.ping().await.unwrap();
        catalogs.push(c);
    }
    let jobs = jobs_of(&fx.catalog, 34, 1200, JOBS).await;
    let barrier = Arc::new(Barrier::new(JOBS));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, job) in jobs.iter().copied().enumerate() {
        let c = catalogs[i % POOLS].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.claim(job, limit(LIMIT), "race").await.expect("claim")
        });
    }
    let mut started_now = 0;
    while let Some(done) = tasks.join_next().await {
        if started(&done.expect("task")) {
            started_now += 1;
        }
    }
    assert_eq!(started_now, LIMIT as usize, "exactly the limit starts");
    let mut running = 0;
    for job in &jobs {
        if fx.catalog.job(*job).await.unwrap().expect("job").state == JobState::Running {
            running += 1;
        }
    }
    assert_eq!(running, LIMIT as usize);
}

async fn notices_repeat_only_after_their_interval(c: Arc<dyn Catalog>) {
    let user = UserId(41);
    let notice = |n: Notice, every: Option<Duration>, t: f64| {
        let c = c.clone();
        async move { c.claim_notice(user, n, every, at(t)).await.expect("notice") }
    };
    assert!(notice(Notice::Hint, Some(MINUTE), 0.0).await);
    assert!(!notice(Notice::Hint, Some(MINUTE), 0.0).await);
    assert!(!notice(Notice::Hint, Some(MINUTE), 59.999).await);
    assert!(
        notice(Notice::Hint, Some(MINUTE), 60.0).await,
        "a minute later it goes out again"
    );
    assert!(
        !notice(Notice::Hint, Some(MINUTE), 100.0).await,
        "counted from the last sending"
    );
    // Kinds and users are apart.
    assert!(notice(Notice::NotAllowed, None, 10.0).await);
    assert!(
        c.claim_notice(UserId(42), Notice::Hint, Some(MINUTE), at(10.0))
            .await
            .unwrap()
    );
    // `None`: once ever.
    assert!(!notice(Notice::NotAllowed, None, 10.0).await);
    assert!(!notice(Notice::NotAllowed, None, 1_000_000.0).await);
    assert!(
        !notice(Notice::NotAllowed, Some(MINUTE), 5.0).await,
        "a time before the last sending is not after it"
    );
}

async fn concurrent_notices_go_out_once(fx: Fixture) {
    const CALLERS: usize = 12;
    let mut catalogs = vec![fx.catalog.clone()];
    for _ in 1..3 {
        catalogs.push(open(&fx.db.url).await);
    }
    let barrier = Arc::new(Barrier::new(CALLERS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLERS {
        let c = catalogs[i % catalogs.len()].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            c.claim_notice(UserId(43), Notice::Hint, Some(MINUTE), at(0.0))
                .await
                .expect("notice")
        });
    }
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        sent += usize::from(done.expect("task"));
    }
    assert_eq!(sent, 1);
}

// ---- scenarios: quota locks --------------------------------------------------

/// Tasks that each check a quota under the lock and store a file only if
/// it leaves room: together they store exactly the room, though they all
/// start at once. Task i stores for `user_of(i)` and locks that user (and
/// the total with `total`); `counted` is what the quota counts.
async fn check_and_commit(
    catalogs: &[Arc<dyn Catalog>],
    tasks: usize,
    room: u64,
    first_update: i64,
    user_of: impl Fn(usize) -> i64,
    total: bool,
    counted: FileFilter,
) -> usize {
    let barrier = Arc::new(Barrier::new(tasks));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..tasks {
        let c = catalogs[i % catalogs.len()].clone();
        let user = user_of(i);
        let update = first_update + i64::try_from(i).unwrap();
        let job = running_job(&c, update, &incoming(user, &format!("quota-{update}"))).await;
        let (barrier, counted) = (barrier.clone(), counted.clone());
        set.spawn(async move {
            barrier.wait().await;
            let scope = QuotaLockScope {
                user: UserId(user),
                total,
            };
            let lock = c.quota_lock(scope).await.expect("lock");
            let used = c.live_totals(&counted).await.expect("totals");
            // Give every other task the chance to check in between.
            tokio::task::yield_now().await;
            let fits = used.files < room;
            if fits {
                let blob = stored_blob(&format!("k/quota-{update}"), 10, &update.to_be_bytes());
                c.commit_stored(job, blob, NewLink::unlimited()).await.expect("commit");
            }
            lock.release().await.expect("release");
            fits
        });
    }
    let mut stored = 0;
    while let Some(done) = set.join_next().await {
        stored += usize::from(done.expect("task"));
    }
    stored
}

async fn quota_locks_make_check_and_commit_atomic(fx: Fixture) {
    // Postgres: several pools on one database, as several worker replicas
    // have. SQLite serves one process: one catalog.
    let mut catalogs = vec![fx.catalog.clone()];
    if fx.backend == Backend::Postgres {
        for _ in 1..3 {
            catalogs.push(open(&fx.db.url).await);
        }
    }
    // One user's quota of 3 files, 12 files at once.
    let stored = check_and_commit(&catalogs, 12, 3, 900, |_| 9, false, owners(&[9])).await;
    assert_eq!(stored, 3);
    assert_eq!(usage(&fx.catalog, 9).await, (30, 3));
    // A total quota of 4 files over six users, two files each at once.
    let users: Vec<i64> = (10..16).collect();
    let stored = check_and_commit(&catalogs, 12, 4, 950, |i| users[i % 6], true, owners(&users)).await;
    assert_eq!(stored, 4);
    assert_eq!(fx.catalog.live_totals(&owners(&users)).await.unwrap(), totals(4, 40));
}

async fn quota_locks_are_released_when_dropped(c: Arc<dyn Catalog>) {
    let scope = QuotaLockScope {
        user: UserId(30),
        total: true,
    };
    // A holder that fails between check and commit drops its lock: the
    // next one gets it (a hang here would time the test out).
    for _ in 0..3 {
        let lock = tokio::time::timeout(Duration::from_secs(10), c.quota_lock(scope))
            .await
            .expect("a dropped lock is released")
            .expect("lock");
        drop(lock);
    }
}

async fn quota_locks_of_different_users_do_not_wait(c: Arc<dyn Catalog>) {
    let mine = c
        .quota_lock(QuotaLockScope {
            user: UserId(40),
            total: true,
        })
        .await
        .unwrap();
    let theirs = tokio::time::timeout(
        Duration::from_secs(10),
        c.quota_lock(QuotaLockScope {
            user: UserId(41),
            total: false,
        }),
    )
    .await
    .expect("another user's lock without the total does not wait")
    .unwrap();
    theirs.release().await.unwrap();
    mine.release().await.unwrap();
}

// ---- scenarios: retention ----------------------------------------------------

async fn live_files_match_the_filter(c: Arc<dyn Catalog>) {
    assert!(c.live_files(&FileFilter::default(), None, 10).await.unwrap().is_empty());
    let a = store(&c, 1, 1, 10, "video/mp4", 100).await;
    let b = store(&c, 2, 1, 11, "VIDEO/WebM", 2000).await;
    let cc = store(&c, 3, 2, 20, "image/png", 50).await;
    let d = store(&c, 4, 2, 10, "application/pdf", 5000).await;
    let e = store(&c, 5, 3, 30, "text/plain", 10).await;
    let f = store(&c, 6, 3, 30, "vid_o/x", 70).await;
    c.delete_file(e.id).await.unwrap();
    let live = [&a, &b, &cc, &d, &f];

    // No condition: every live file, oldest first, as `file` reads them.
    let all = c.live_files(&FileFilter::default(), None, 100).await.unwrap();
    assert_eq!(all.iter().map(|f| f.id).collect::<Vec<_>>(), in_order(&live));
    for file in &all {
        assert_eq!(c.file(file.id).await.unwrap().as_ref(), Some(file));
    }

    // Owners and chats (empty lists place no condition; repeats are harmless).
    assert_eq!(live_ids(&c, &owners(&[1])).await, in_order(&[&a, &b]));
    assert_eq!(live_ids(&c, &owners(&[1, 3, 1])).await, in_order(&[&a, &b, &f]));
    assert_eq!(
        live_ids(&c, &owners(&[3])).await,
        in_order(&[&f]),
        "deleted file left out"
    );
    assert!(live_ids(&c, &owners(&[99])).await.is_empty());
    let chats = |ids: &[i64]| FileFilter {
        chats: ids.iter().copied().map(ChatId).collect(),
        ..FileFilter::default()
    };
    assert_eq!(live_ids(&c, &chats(&[10])).await, in_order(&[&a, &d]));
    assert_eq!(live_ids(&c, &chats(&[20, 30])).await, in_order(&[&cc, &f]));
    assert_eq!(live_ids(&c, &chats(&[])).await, in_order(&live));

    // Size range, bounds included.
    let sizes = |min_size, max_size| FileFilter {
        min_size,
        max_size,
        ..FileFilter::default()
    };
    assert_eq!(live_ids(&c, &sizes(Some(100), None)).await, in_order(&[&a, &b, &d]));
    assert_eq!(live_ids(&c, &sizes(None, Some(100))).await, in_order(&[&a, &cc, &f]));
    assert_eq!(live_ids(&c, &sizes(Some(100), Some(2000))).await, in_order(&[&a, &b]));
    assert_eq!(
        live_ids(&c, &sizes(Some(0), Some(u64::try_from(i64::MAX).unwrap()))).await,
        in_order(&live)
    );
    assert!(live_ids(&c, &sizes(Some(2001), Some(4999))).await.is_empty());

    // MIME patterns, case-insensitive on both sides; any pattern may match.
    assert_eq!(live_ids(&c, &mime(&["video/mp4"])).await, in_order(&[&a]));
    assert_eq!(live_ids(&c, &mime(&["Video/MP4"])).await, in_order(&[&a]));
    assert_eq!(live_ids(&c, &mime(&["video/webm"])).await, in_order(&[&b]));
    assert_eq!(live_ids(&c, &mime(&["video/*"])).await, in_order(&[&a, &b]));
    assert_eq!(live_ids(&c, &mime(&["VIDEO/*"])).await, in_order(&[&a, &b]));
    assert_eq!(live_ids(&c, &mime(&["*/*"])).await, in_order(&live));
    assert_eq!(live_ids(&c, &mime(&["*"])).await, in_order(&live));
    assert_eq!(live_ids(&c, &mime(&[])).await, in_order(&live));
    assert_eq!(
        live_ids(&c, &mime(&["image/png", "application/*"])).await,
        in_order(&[&cc, &d])
    );
    assert_eq!(live_ids(&c, &mime(&["image/png", "*"])).await, in_order(&live));
    assert!(
        live_ids(&c, &mime(&["text/plain"])).await.is_empty(),
        "deleted file left out"
    );
    // LIKE wildcards in the type are plain characters.
    assert_eq!(live_ids(&c, &mime(&["vid_o/*"])).await, in_order(&[&f]));
    assert!(live_ids(&c, &mime(&["v%/*"])).await.is_empty());
    assert!(live_ids(&c, &mime(&["vide_/*"])).await.is_empty());
    assert!(live_ids(&c, &mime(&["video/mp_"])).await.is_empty());

    // Every condition must hold.
    let combined = FileFilter {
        owners: vec![UserId(1), UserId(2)],
        chats: vec![ChatId(10)],
        min_size: Some(100),
        ..FileFilter::default()
    };
    assert_eq!(live_ids(&c, &combined).await, in_order(&[&a, &d]));
    let combined = FileFilter {
        mime_patterns: vec!["video/*".into()],
        ..combined
    };
    assert_eq!(live_ids(&c, &combined).await, in_order(&[&a]));
    let combined = FileFilter {
        max_size: Some(99),
        ..combined
    };
    assert!(live_ids(&c, &combined).await.is_empty());
}

async fn live_files_by_age_and_idleness(fx: Fixture) {
    let c = fx.catalog.clone();
    // Three files made two and one seconds apart by setting their
    // creation times, rather than by waiting.
    let mut files = Vec::new();
    for (i, age) in [(1, 2), (2, 1), (3, 0)] {
        let f = store(&c, i, 1, 10, "video/mp4", 1).await;
        let at = f.created_at - chrono::TimeDelta::seconds(age);
        set_created_at(&fx, f.id, at).await;
        files.push(c.file(f.id).await.unwrap().unwrap());
    }
    let [old1, old2, new] = <[FileRecord; 3]>::try_from(files).unwrap();
    assert!(old1.created_at < old2.created_at && old2.created_at < new.created_at);
    let one_ms = chrono::TimeDelta::milliseconds(1);
    let created = |t| FileFilter {
        created_before: Some(t),
        ..FileFilter::default()
    };
    let idle = |t| FileFilter {
        idle_before: Some(t),
        ..FileFilter::default()
    };

    // Strictly before.
    assert!(live_ids(&c, &created(old1.created_at)).await.is_empty());
    assert_eq!(live_ids(&c, &created(old2.created_at)).await, vec![old1.id]);
    assert_eq!(live_ids(&c, &created(new.created_at)).await, vec![old1.id, old2.id]);
    assert_eq!(
        live_ids(&c, &created(new.created_at + one_ms)).await,
        vec![old1.id, old2.id, new.id]
    );
    // A bound finer than the stored milliseconds is compared exactly.
    let half = chrono::TimeDelta::microseconds(500);
    assert_eq!(live_ids(&c, &created(old1.created_at + half)).await, vec![old1.id]);
    assert!(live_ids(&c, &created(old1.created_at - half)).await.is_empty());

    // Never downloaded: idle since creation.
    assert_eq!(live_ids(&c, &idle(old2.created_at)).await, vec![old1.id]);
    // A download makes a file busy again.
    let later = new.created_at + chrono::TimeDelta::seconds(1);
    c.record_downloads(&[DownloadHit {
        file_id: old1.id,
        count: 1,
        last_at: later,
    }])
    .await
    .unwrap();
    assert!(live_ids(&c, &idle(old2.created_at)).await.is_empty());
    assert_eq!(
        live_ids(&c, &idle(new.created_at + one_ms)).await,
        vec![old2.id, new.id],
        "the downloaded file is not idle"
    );
    assert_eq!(live_ids(&c, &idle(later)).await, vec![old2.id, new.id]);
    assert_eq!(
        live_ids(&c, &idle(later + one_ms)).await,
        vec![old1.id, old2.id, new.id]
    );
    // Still old, whatever its downloads.
    assert_eq!(live_ids(&c, &created(old2.created_at)).await, vec![old1.id]);

    let both = FileFilter {
        created_before: Some(new.created_at),
        idle_before: Some(new.created_at + one_ms),
        ..FileFilter::default()
    };
    assert_eq!(live_ids(&c, &both).await, vec![old2.id]);
    c.delete_file(old2.id).await.unwrap();
    assert!(live_ids(&c, &both).await.is_empty());
}

async fn live_files_pages_in_order(fx: Fixture) {
    let c = fx.catalog.clone();
    assert!(c.live_files(&FileFilter::default(), None, 2).await.unwrap().is_empty());
    let mut files = Vec::new();
    for i in 0..9 {
        files.push(store(&c, i + 1, 1 + i % 2, 10, "video/mp4", 1).await);
    }
    // Three ties in one millisecond, one alone, then four more ties, and
    // the last file older than all of them.
    let t1 = ms(1_700_000_000_000);
    let t2 = ms(1_700_000_000_001);
    let t3 = ms(1_700_000_005_000);
    let times = [t1, t1, t1, t2, t3, t3, t3, t3, ms(1_600_000_000_000)];
    for (f, t) in files.iter_mut().zip(times) {
        set_created_at(&fx, f.id, t).await;
        f.created_at = t;
    }
    let all: Vec<&FileRecord> = files.iter().collect();
    let expected = in_order(&all);
    assert_eq!(expected[0], files[8].id);
    assert_eq!(live_ids(&c, &FileFilter::default()).await, expected);

    // Walk with several page sizes: every file exactly once, in order.
    async fn walk(c: &Arc<dyn Catalog>, filter: &FileFilter, limit: u32) -> Vec<FileId> {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = c.live_files(filter, after, limit).await.expect("page");
            assert!(page.len() <= limit as usize, "{} > {limit}", page.len());
            let Some(last) = page.last() else { break };
            after = Some(FileCursor::of(last));
            seen.extend(page.iter().map(|f| f.id));
        }
        seen
    }
    for limit in [1, 2, 3, 100] {
        assert_eq!(walk(&c, &FileFilter::default(), limit).await, expected, "limit {limit}");
    }
    assert!(c.live_files(&FileFilter::default(), None, 0).await.unwrap().is_empty());

    // Pages of limit 2 break inside the ties.
    let page = c.live_files(&FileFilter::default(), None, 2).await.unwrap();
    assert_eq!(page.iter().map(|f| f.id).collect::<Vec<_>>(), expected[..2]);
    let next = c
        .live_files(&FileFilter::default(), Some(FileCursor::of(&page[1])), 2)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|f| f.id).collect::<Vec<_>>(), expected[2..4]);

    // With a filter: the same walk over the matching files only.
    let odd = owners(&[2]);
    let expected_odd: Vec<FileId> = expected
        .iter()
        .copied()
        .filter(|id| files.iter().any(|f| f.id == *id && f.owner == UserId(2)))
        .collect();
    assert_eq!(expected_odd.len(), 4);
    assert_eq!(walk(&c, &odd, 2).await, expected_odd);

    // A cursor made by hand: the smallest id of a millisecond starts at
    // it, a time between two milliseconds starts at the next one.
    let nil = FileCursor {
        created_at: t1,
        id: FileId::from_uuid(uuid::Uuid::nil()),
    };
    let from_t1 = c.live_files(&FileFilter::default(), Some(nil), 100).await.unwrap();
    assert_eq!(from_t1.iter().map(|f| f.id).collect::<Vec<_>>(), expected[1..]);
    let between = FileCursor {
        created_at: t1 + chrono::TimeDelta::microseconds(300),
        id: FileId::from_uuid(uuid::Uuid::nil()),
    };
    let after_t1 = c.live_files(&FileFilter::default(), Some(between), 100).await.unwrap();
    assert_eq!(after_t1.iter().map(|f| f.id).collect::<Vec<_>>(), expected[4..]);

    // A file deleted between two pages is not returned; the walk goes on.
    let page = c.live_files(&FileFilter::default(), None, 3).await.unwrap();
    c.delete_file(expected[4]).await.unwrap();
    let rest = c
        .live_files(&FileFilter::default(), Some(FileCursor::of(&page[2])), 100)
        .await
        .unwrap();
    let mut want = expected[3..].to_vec();
    want.retain(|id| *id != expected[4]);
    assert_eq!(rest.iter().map(|f| f.id).collect::<Vec<_>>(), want);
}

async fn live_totals_agree_with_the_files(c: Arc<dyn Catalog>) {
    assert_eq!(c.live_totals(&FileFilter::default()).await.unwrap(), Totals::default());
    assert!(c.live_totals_by_owner(&FileFilter::default()).await.unwrap().is_empty());

    // Owner 10 sorts after owner 2 as a number, not as text.
    let a = store(&c, 1, 10, 1, "video/mp4", 100).await;
    let b = store(&c, 2, 10, 1, "video/webm", 200).await;
    let img = store(&c, 3, 2, 1, "image/png", 50).await;
    let z = store(&c, 4, 3, 1, "video/mp4", 7).await;

    let everything = FileFilter::default();
    assert_eq!(c.live_totals(&everything).await.unwrap(), totals(4, 357));
    assert_eq!(
        c.live_totals_by_owner(&everything).await.unwrap(),
        vec![
            (UserId(2), totals(1, 50)),
            (UserId(3), totals(1, 7)),
            (UserId(10), totals(2, 300)),
        ]
    );
    // Under no condition, per owner is exactly the usage.
    for (user, t) in c.live_totals_by_owner(&everything).await.unwrap() {
        assert_eq!(usage(&c, user.0).await, (t.bytes, t.files));
    }

    let videos = mime(&["video/*"]);
    assert_eq!(c.live_totals(&videos).await.unwrap(), totals(3, 307));
    assert_eq!(
        c.live_totals_by_owner(&videos).await.unwrap(),
        vec![(UserId(3), totals(1, 7)), (UserId(10), totals(2, 300))],
        "owner 2 has no video"
    );
    // The same numbers live_files gives.
    for filter in [everything.clone(), videos.clone(), owners(&[10]), owners(&[4])] {
        let files = c.live_files(&filter, None, 100).await.unwrap();
        let sum = Totals {
            files: files.len() as u64,
            bytes: files.iter().map(|f| f.size).sum(),
        };
        assert_eq!(c.live_totals(&filter).await.unwrap(), sum, "{filter:?}");
        let per_owner = c.live_totals_by_owner(&filter).await.unwrap();
        assert_eq!(
            per_owner.iter().map(|(_, t)| t.files).sum::<u64>(),
            sum.files,
            "{filter:?}"
        );
        assert_eq!(
            per_owner.iter().map(|(_, t)| t.bytes).sum::<u64>(),
            sum.bytes,
            "{filter:?}"
        );
    }
    assert_eq!(c.live_totals(&owners(&[4])).await.unwrap(), Totals::default());

    c.delete_file(a.id).await.unwrap();
    assert_eq!(c.live_totals(&everything).await.unwrap(), totals(3, 257));
    assert_eq!(c.live_totals(&videos).await.unwrap(), totals(2, 207));
    c.delete_file(z.id).await.unwrap();
    assert_eq!(
        c.live_totals_by_owner(&videos).await.unwrap(),
        vec![(UserId(10), totals(1, 200))]
    );
    assert_eq!(
        c.live_totals_by_owner(&everything).await.unwrap(),
        vec![(UserId(2), totals(1, 50)), (UserId(10), totals(1, 200))]
    );
    c.delete_file(b.id).await.unwrap();
    c.delete_file(img.id).await.unwrap();
    assert_eq!(c.live_totals(&everything).await.unwrap(), Totals::default());
    assert!(c.live_totals_by_owner(&everything).await.unwrap().is_empty());
}

async fn referenced_objects_are_the_blob_keys(c: Arc<dyn Catalog>) {
    assert!(c.referenced_objects(&[]).await.unwrap().is_empty());
    let set = |keys: &[&str]| keys.iter().map(|k| key(k)).collect::<HashSet<_>>();

    // Two files share the blob of "shared"; the second upload's key is redundant.
    let j1 = running_job(&c, 1, &incoming(1, "shared")).await;
    let first = c
        .commit_stored(j1, stored_blob("k/1500-live", 10, b"s"), NewLink::unlimited())
        .await
        .unwrap();
    let j2 = running_job(&c, 2, &incoming(2, "shared")).await;
    let second = c
        .commit_stored(j2, stored_blob("k/shared-again", 10, b"s"), NewLink::unlimited())
        .await
        .unwrap();
    assert_eq!(second.redundant_object, Some(key("k/shared-again")));
    let j3 = running_job(&c, 3, &incoming(1, "lone")).await;
    let lone = c
        .commit_stored(j3, stored_blob("k/2400-live", 20, b"l"), NewLink::unlimited())
        .await
        .unwrap();

    let asked: Vec<ObjectKey> = [
        "k/1500-live",
        "k/2400-live",
        "k/shared-again",
        "k/nothing",
        "k/1500-live",
    ]
    .iter()
    .map(|k| key(k))
    .collect();
    assert_eq!(
        c.referenced_objects(&asked).await.unwrap(),
        set(&["k/1500-live", "k/2400-live"])
    );

    // Many keys at once, the named ones far apart in the list.
    let mut many: Vec<ObjectKey> = (0..2500).map(|i| key(&format!("k/{i:04}"))).collect();
    many.insert(1500, key("k/1500-live"));
    many.insert(2400, key("k/2400-live"));
    assert_eq!(
        c.referenced_objects(&many).await.unwrap(),
        set(&["k/1500-live", "k/2400-live"])
    );

    // Deleting the last file of a blob releases its key.
    assert_eq!(c.delete_file(lone.file.id).await.unwrap(), Some(key("k/2400-live")));
    assert_eq!(c.referenced_objects(&many).await.unwrap(), set(&["k/1500-live"]));
    assert_eq!(c.delete_file(first.file.id).await.unwrap(), None);
    assert_eq!(
        c.referenced_objects(&asked).await.unwrap(),
        set(&["k/1500-live"]),
        "still used by the second file"
    );
    assert_eq!(c.delete_file(second.file.id).await.unwrap(), Some(key("k/1500-live")));
    assert!(c.referenced_objects(&many).await.unwrap().is_empty());
    assert!(c.referenced_objects(&asked).await.unwrap().is_empty());
}

async fn malformed_filters_are_refused(c: Arc<dyn Catalog>) {
    let file = store(&c, 1, 1, 10, "video/mp4", 5).await;
    let bad_patterns = [
        "",
        "video",
        "video/mp4/x",
        "/mp4",
        "video/",
        "/",
        "*/mp4",
        "vid*/*",
        "video/mp*",
        "video/*mp4",
        "**",
        "*/**",
        " video/mp4",
        "vidéo/mp4",
    ];
    let mut filters: Vec<FileFilter> = bad_patterns.iter().map(|p| mime(&[p])).collect();
    // One bad pattern among good ones spoils the filter.
    filters.push(mime(&["video/*", "*", "nope"]));
    // Sizes the database cannot hold.
    filters.push(FileFilter {
        min_size: Some(u64::MAX),
        ..FileFilter::default()
    });
    filters.push(FileFilter {
        max_size: Some(u64::try_from(i64::MAX).unwrap() + 1),
        ..FileFilter::default()
    });
    for filter in &filters {
        let files = c.live_files(filter, None, 10).await;
        assert!(
            matches!(files, Err(CatalogError::InvalidFilter(_))),
            "{filter:?}: {files:?}"
        );
        let t = c.live_totals(filter).await;
        assert!(matches!(t, Err(CatalogError::InvalidFilter(_))), "{filter:?}: {t:?}");
        let by_owner = c.live_totals_by_owner(filter).await;
        assert!(
            matches!(by_owner, Err(CatalogError::InvalidFilter(_))),
            "{filter:?}: {by_owner:?}"
        );
    }
    let Err(err) = c.live_files(&mime(&["video"]), None, 10).await else {
        panic!("refused")
    };
    assert_eq!(err.label(), "invalid_filter");
    assert!(err.to_string().contains("\"video\""), "{err}");
    // The catalog is none the worse.
    assert_eq!(live_ids(&c, &mime(&["video/*"])).await, vec![file.id]);
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
    catalog live_files_match_the_filter => postgres_live_files_match_the_filter, sqlite_live_files_match_the_filter;
    fixture live_files_by_age_and_idleness
        => postgres_live_files_by_age_and_idleness, sqlite_live_files_by_age_and_idleness;
    fixture live_files_pages_in_order => postgres_live_files_pages_in_order, sqlite_live_files_pages_in_order;
    catalog live_totals_agree_with_the_files
        => postgres_live_totals_agree_with_the_files, sqlite_live_totals_agree_with_the_files;
    catalog referenced_objects_are_the_blob_keys
        => postgres_referenced_objects_are_the_blob_keys, sqlite_referenced_objects_are_the_blob_keys;
    catalog malformed_filters_are_refused
        => postgres_malformed_filters_are_refused, sqlite_malformed_filters_are_refused;
    catalog policies_crud => postgres_policies_crud, sqlite_policies_crud;
    catalog rate_limit_admits_up_to_the_limit
        => postgres_rate_limit_admits_up_to_the_limit, sqlite_rate_limit_admits_up_to_the_limit;
    catalog rate_limit_counts_a_job_once => postgres_rate_limit_counts_a_job_once, sqlite_rate_limit_counts_a_job_once;
    catalog rate_limit_is_per_user => postgres_rate_limit_is_per_user, sqlite_rate_limit_is_per_user;
    fixture rate_admissions_of_finished_jobs_are_pruned
        => postgres_rate_admissions_of_finished_jobs_are_pruned, sqlite_rate_admissions_of_finished_jobs_are_pruned;
    fixture concurrent_admissions_take_exactly_the_free_slots
        => postgres_concurrent_admissions_take_exactly_the_free_slots,
           sqlite_concurrent_admissions_take_exactly_the_free_slots;
    fixture quota_locks_make_check_and_commit_atomic
        => postgres_quota_locks_make_check_and_commit_atomic, sqlite_quota_locks_make_check_and_commit_atomic;
    catalog quota_locks_are_released_when_dropped
        => postgres_quota_locks_are_released_when_dropped, sqlite_quota_locks_are_released_when_dropped;
    catalog claims_start_up_to_the_owner_limit
        => postgres_claims_start_up_to_the_owner_limit, sqlite_claims_start_up_to_the_owner_limit;
    catalog claims_need_a_pending_job => postgres_claims_need_a_pending_job, sqlite_claims_need_a_pending_job;
    fixture concurrent_claims_never_exceed_the_limit
        => postgres_concurrent_claims_never_exceed_the_limit, sqlite_concurrent_claims_never_exceed_the_limit;
    catalog notices_repeat_only_after_their_interval
        => postgres_notices_repeat_only_after_their_interval, sqlite_notices_repeat_only_after_their_interval;
    fixture concurrent_notices_go_out_once
        => postgres_concurrent_notices_go_out_once, sqlite_concurrent_notices_go_out_once;
}

/// SQLite's quota lock is one mutex (one process, few files at once), so
/// only Postgres lets different users' quota checks run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_quota_locks_of_different_users_do_not_wait() {
    let fx = Fixture::new(Backend::Postgres).await;
    quota_locks_of_different_users_do_not_wait(fx.catalog.clone()).await;
}

/// A pool with no free connection answers at its acquire timeout with its
/// own error (callers answer "try again later"), and serves again once a
/// connection is back. The test holds the pool's only connection through a
/// quota lock (a transaction kept open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_exhausted_pool_times_out_with_its_own_error() {
    let db = Backend::Postgres.blank().await;
    let pool = teledrop_catalog::PoolConfig {
        max_connections: 1,
        acquire_timeout: Duration::from_millis(300),
    };
    let c = teledrop_catalog::connect_with(&db.url, pool).await.expect("connect");
    c.migrate().await.unwrap();
    let held = c
        .quota_lock(QuotaLockScope {
            user: UserId(1),
            total: false,
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = c.ping().await.unwrap_err();
    assert!(matches!(err, CatalogError::PoolTimedOut), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.label(), "pool_timed_out");
    // It waited for the timeout, not for the holder.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    held.release().await.unwrap();
    c.ping().await.expect("the connection is back");
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
