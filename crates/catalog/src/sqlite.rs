//! The embedded catalog on SQLite (`standalone`): what differs from
//! Postgres.
//!
//! - Types: ids are TEXT (lowercase hyphenated), times INTEGER unix
//!   milliseconds, JSON TEXT.
//! - The database runs in WAL mode: readers never wait for the writer.
//!   Every transaction that reads and then writes starts with `BEGIN
//!   IMMEDIATE`, which takes the write lock up front (waiting up to the
//!   busy timeout), so two writers never both hold a read snapshot and
//!   then deadlock on the upgrade (`SQLITE_BUSY` that no timeout
//!   resolves). Write transactions are therefore serialised, which gives
//!   `commit_stored`, `delete_file`, `admit` and `claim` their atomic
//!   check-then-act without row locks ([`Engine::FOR_UPDATE`] and
//!   [`Engine::lock_user`] are nothing here).
//! - Quota locks: one process, few files at once, so one mutex.

use crate::catalog::SqlCatalog;
use crate::common::{self, Cols, PlainCols};
use crate::engine::{Arg, Engine, UserLock, bind_plain};
use crate::{CatalogError, QuotaLock, QuotaLockHeld, QuotaLockScope, Result};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteQueryResult, SqliteRow, SqliteSynchronous,
};
use sqlx::{Arguments, Connection, Executor, Pool, Sqlite};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const MAX_CONNECTIONS: u32 = 8;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The catalog on SQLite.
pub type SqliteCatalog = SqlCatalog<SqliteEngine>;

/// The SQLite side of [`SqliteCatalog`].
pub struct SqliteEngine {
    pool: SqlitePool,
    /// Every quota lock.
    quota: Arc<tokio::sync::Mutex<()>>,
}

impl SqlCatalog<SqliteEngine> {
    /// Opens (creating when missing, with its parent directory) the
    /// database `url` names: `sqlite://path`, `sqlite:path`, or
    /// `sqlite::memory:` (one private database per catalog, for tests).
    pub async fn connect(url: &str) -> Result<Self> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)
            .map_err(CatalogError::Connect)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);
        let pool_options = SqlitePoolOptions::new().acquire_timeout(ACQUIRE_TIMEOUT);
        let pool_options = if in_memory {
            // An in-memory database lives as long as a connection to it:
            // keep exactly one, forever (a shared cache across several
            // would bring table locks that the busy timeout ignores).
            pool_options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            let path = options.get_filename();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| CatalogError::Connect(sqlx::Error::Io(e)))?;
            }
            pool_options.max_connections(MAX_CONNECTIONS)
        };
        let options = if in_memory {
            options
        } else {
            options.journal_mode(SqliteJournalMode::Wal)
        };
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(CatalogError::Connect)?;
        Ok(Self::new(SqliteEngine {
            pool,
            quota: Arc::default(),
        }))
    }
}

/// How ids are spelled in SQLite.
fn id(u: Uuid) -> String {
    u.hyphenated().to_string()
}

impl Engine for SqliteEngine {
    type Db = Sqlite;
    const NAME: &'static str = "sqlite";
    const CATALOG: &'static str = "SqliteCatalog";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const FOR_UPDATE: &'static str = "";
    /// SQLite's default collation, BINARY, is byte order.
    const BYTE_ORDER: &'static str = "";

    fn pool(&self) -> &Pool<Sqlite> {
        &self.pool
    }

    fn bind(args: &mut SqliteArguments, arg: Arg<'_>) -> Result<(), BoxDynError> {
        match arg {
            Arg::Uuid(v) => args.add(id(v)),
            Arg::Ts(v) => args.add(v.map(common::millis)),
            Arg::Json(v) => args.add(v),
            plain => bind_plain(args, plain),
        }
    }

    fn executor(conn: &mut SqliteConnection) -> impl Executor<'_, Database = Sqlite> {
        conn
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// The write lock, held from `BEGIN IMMEDIATE`, serialises them all.
    async fn lock_user(_conn: &mut SqliteConnection, _lock: UserLock, _user: i64) -> Result<()> {
        Ok(())
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx's migration lock is a no-op on SQLite. Run the whole
        // migration inside one BEGIN IMMEDIATE transaction instead: a
        // second process waits for the write lock, then sees the
        // migrations recorded and has nothing to do.
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        MIGRATOR
            .run_direct(None, &mut *tx, false)
            .await
            .map_err(CatalogError::Migrate)?;
        tx.commit().await?;
        Ok(())
    }

    async fn quota_lock(&self, _scope: QuotaLockScope) -> Result<QuotaLock> {
        Ok(QuotaLock(QuotaLockHeld::Sqlite {
            _guard: Arc::clone(&self.quota).lock_owned().await,
        }))
    }
}

impl Cols for SqliteRow {
    fn uuid(&self, col: &str) -> Result<Uuid> {
        common::parse_uuid(&self.text(col)?, col)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        self.opt_text(col)?.map(|s| common::parse_uuid(&s, col)).transpose()
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>> {
        common::from_millis(self.int(col)?, col)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        self.opt_int(col)?.map(|v| common::from_millis(v, col)).transpose()
    }
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T> {
        common::json_text(&self.text(col)?, col)
    }
}
