//! Fixtures (a fresh database per scenario, on either backend) and the data
//! helpers every area uses.

use chrono::{DateTime, Utc};
use sqlx::Connection;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use teledrop_catalog::{Accepted, Catalog, FileFilter, StoredBlob, Totals, Transition};
use teledrop_core::file::FileState;
use teledrop_core::{
    ChatId, FileId, FileRecord, IncomingFile, JobId, JobState, MediaKind, MessageId, NewLink, ObjectKey, Sha256,
    UpdateId, UserId,
};
use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres,
    Sqlite,
}

/// An empty database; the temporary directory (SQLite) lives as long as it.
pub(crate) struct BlankDb {
    pub(crate) url: String,
    _dir: Option<TempDir>,
}

impl Backend {
    pub(crate) async fn blank(self) -> BlankDb {
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

    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A migrated catalog on a fresh database, and how to reach it again.
pub(crate) struct Fixture {
    pub(crate) backend: Backend,
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) db: BlankDb,
}

impl Fixture {
    pub(crate) async fn new(backend: Backend) -> Self {
        let db = backend.blank().await;
        let catalog = open(&db.url).await;
        catalog.migrate().await.expect("migrate");
        Self { backend, catalog, db }
    }
}

pub(crate) async fn open(url: &str) -> Arc<dyn Catalog> {
    teledrop_catalog::connect(url).await.expect("connect")
}

/// Rows in sqlx's migration table, read with a plain connection so the
/// check does not go through the code under test: (applied, failed).
pub(crate) async fn migration_rows(backend: Backend, url: &str) -> (i64, i64) {
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

pub(crate) fn migration_files(backend: Backend) -> i64 {
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

/// A file message from `user`. Each call is a message of its own (jobs are
/// keyed by chat and message id); reuse the value to send the same
/// message again.
pub(crate) fn incoming(user: i64, unique: &str) -> IncomingFile {
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

pub(crate) fn stored_blob(key: &str, size: u64, content: &[u8]) -> StoredBlob {
    StoredBlob {
        object_key: key.parse().expect("key"),
        size,
        sha256: Sha256::digest(content),
    }
}

pub(crate) fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).expect("time")
}

pub(crate) fn key(s: &str) -> ObjectKey {
    s.parse().expect("key")
}

pub(crate) async fn accept(c: &Arc<dyn Catalog>, update: i64, inc: &IncomingFile) -> JobId {
    match c.accept_job(UpdateId(update), inc).await.expect("accept") {
        Accepted::New(j) => j.id,
        Accepted::Duplicate(_) => panic!("update {update} was not new"),
    }
}

pub(crate) async fn running_job(c: &Arc<dyn Catalog>, update: i64, inc: &IncomingFile) -> JobId {
    let id = accept(c, update, inc).await;
    c.transition(id, Transition::new(JobState::Pending, JobState::Running, "picked up"))
        .await
        .expect("start");
    id
}

pub(crate) async fn usage(c: &Arc<dyn Catalog>, user: i64) -> (u64, u64) {
    let u = c.usage(UserId(user)).await.expect("usage");
    assert_eq!(u.user_id, UserId(user));
    (u.bytes, u.files)
}

/// Stores a new Telegram file (its own blob, under `k/<name>`) for `user`
/// in `chat` with this MIME type and size.
pub(crate) async fn store(
    c: &Arc<dyn Catalog>,
    update: i64,
    user: i64,
    chat: i64,
    mime: &str,
    size: u64,
) -> FileRecord {
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
pub(crate) fn in_order(files: &[&FileRecord]) -> Vec<FileId> {
    let mut sorted: Vec<_> = files.iter().map(|f| (f.created_at, f.id)).collect();
    sorted.sort();
    sorted.into_iter().map(|(_, id)| id).collect()
}

pub(crate) async fn live_ids(c: &Arc<dyn Catalog>, filter: &FileFilter) -> Vec<FileId> {
    let files = c.live_files(filter, None, 1000).await.expect("live_files");
    assert!(files.iter().all(|f| f.state == FileState::Active), "{files:?}");
    files.iter().map(|f| f.id).collect()
}

pub(crate) fn mime(patterns: &[&str]) -> FileFilter {
    FileFilter {
        mime_patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
        ..FileFilter::default()
    }
}

pub(crate) fn owners(users: &[i64]) -> FileFilter {
    FileFilter {
        owners: users.iter().copied().map(UserId).collect(),
        ..FileFilter::default()
    }
}

pub(crate) fn totals(files: u64, bytes: u64) -> Totals {
    Totals { files, bytes }
}

/// Sets a file's creation time behind the catalog's back, with a plain
/// connection, to make files created in the same millisecond.
pub(crate) async fn set_created_at(fx: &Fixture, file: FileId, at: DateTime<Utc>) {
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

pub(crate) const MINUTE: Duration = Duration::from_secs(60);

pub(crate) fn limit(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("a limit above zero")
}

/// `t0` plus `secs` seconds.
pub(crate) fn at(secs: f64) -> DateTime<Utc> {
    const T0: i64 = 1_700_000_000_000;
    ms(T0 + (secs * 1000.0).round() as i64)
}

/// `n` new jobs of `user`, from update ids `first..`.
pub(crate) async fn jobs_of(c: &Arc<dyn Catalog>, user: i64, first: i64, n: usize) -> Vec<JobId> {
    let mut ids = Vec::new();
    for i in 0..i64::try_from(n).unwrap() {
        ids.push(accept(c, first + i, &incoming(user, &format!("rate-{user}-{i}"))).await);
    }
    ids
}
