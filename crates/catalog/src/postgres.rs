//! The production catalog on Postgres: what differs from SQLite.
//!
//! - Types: ids are `uuid`, times `timestamptz`, JSON `jsonb`, all bound
//!   and read as themselves.
//! - Transactions run at READ COMMITTED and lock the rows they read and
//!   then change (`FOR UPDATE`; see `files` for the order).
//! - Work serialised per user with no row to lock (`admit`, `claim`) takes
//!   a transaction-scoped advisory lock on the user, each in a lock space
//!   of its own ([`crate::engine::Engine::lock_user`]).
//! - Quota locks are advisory locks held by a transaction of their own,
//!   with a bound on how many connections wait for them.
//! - The pool is sized by [`PoolConfig`] (every replica holds one).

use crate::catalog::SqlCatalog;
use crate::common::{self, Cols};
use crate::engine::{Arg, Engine, UserLock, bind_plain};
use crate::{CatalogError, PoolConfig, QuotaLock, QuotaLockHeld, QuotaLockScope, Result};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgConnection, PgPool, PgPoolOptions, PgQueryResult, PgRow};
use sqlx::types::JsonRawValue;
use sqlx::{Arguments, Executor, Pool, Postgres, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// First key of the rate limit's advisory locks; the second is a hash of
/// the user id. The two-key form never meets sqlx's migration lock (a
/// one-key lock, which Postgres keeps in a separate key space).
const RATE_LOCK_SPACE: i32 = 0x7464_726c;
/// First key of the per-user locks of `claim`; second key as above.
const CLAIM_LOCK_SPACE: i32 = 0x7464_636c;
/// First keys of the quota locks: one user's files (second key a hash of
/// the user id), everyone's (second key 0).
const QUOTA_USER_LOCK_SPACE: i32 = 0x7464_7175;
const QUOTA_TOTAL_LOCK_SPACE: i32 = 0x7464_7174;
/// Quota locks held or waited for at once by one catalog: a quarter of
/// the pool, at least one. Each waiter holds a connection, and a holder
/// needs another to check and commit: the bound keeps waiters from taking
/// the whole pool (which is why a pool needs two connections or more once
/// a `Reject` quota is in force).
fn quota_lock_waiters(pool: &PoolConfig) -> usize {
    (pool.max_connections as usize / 4).max(1)
}

/// The catalog on Postgres.
pub type PgCatalog = SqlCatalog<PgEngine>;

/// The Postgres side of [`PgCatalog`].
pub struct PgEngine {
    pool: PgPool,
    quota_waiters: Arc<Semaphore>,
}

impl SqlCatalog<PgEngine> {
    /// Opens a pool of [`PoolConfig::default`] on `url` and checks that the
    /// server answers.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, PoolConfig::default()).await
    }

    /// Opens a pool sized by `pool` on `url` and checks that the server
    /// answers. A call that finds no connection free within
    /// `pool.acquire_timeout` fails with [`CatalogError::PoolTimedOut`].
    pub async fn connect_with(url: &str, pool: PoolConfig) -> Result<Self> {
        let quota_waiters = Arc::new(Semaphore::new(quota_lock_waiters(&pool)));
        let pool = PgPoolOptions::new()
            .max_connections(pool.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(pool.acquire_timeout)
            .idle_timeout(IDLE_TIMEOUT)
            .connect(url)
            .await
            .map_err(CatalogError::Connect)?;
        Ok(Self::new(PgEngine { pool, quota_waiters }))
    }
}

/// Takes the transaction-scoped advisory lock `(space, hash of key)`.
async fn advisory_lock(conn: &mut PgConnection, space: i32, key: i64) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashint8($2))")
        .bind(space)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

impl Engine for PgEngine {
    type Db = Postgres;
    const NAME: &'static str = "postgres";
    const CATALOG: &'static str = "PgCatalog";
    const BEGIN_WRITE: &'static str = "BEGIN";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const BYTE_ORDER: &'static str = " COLLATE \"C\"";

    fn pool(&self) -> &Pool<Postgres> {
        &self.pool
    }

    fn bind(args: &mut PgArguments, arg: Arg<'_>) -> Result<(), BoxDynError> {
        match arg {
            Arg::Uuid(v) => args.add(v),
            Arg::Ts(v) => args.add(v),
            Arg::Json(v) => args.add(JsonRawValue::from_string(v)?),
            plain => bind_plain(args, plain),
        }
    }

    fn executor(conn: &mut PgConnection) -> impl Executor<'_, Database = Postgres> {
        conn
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn lock_user(conn: &mut PgConnection, lock: UserLock, user: i64) -> Result<()> {
        let space = match lock {
            UserLock::Rate => RATE_LOCK_SPACE,
            UserLock::Claim => CLAIM_LOCK_SPACE,
        };
        advisory_lock(conn, space, user).await
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx holds a session-level advisory lock (keyed on the database
        // name) while it migrates, so concurrent callers wait and then find
        // nothing left to do. On failure it returns without unlocking:
        // close that connection rather than return it to the pool with the
        // lock still held. (`run_direct` is `run` on a connection we hold,
        // without the `Acquire` bound that trips async-trait's Send check.)
        let mut conn = self.pool.acquire().await?;
        match MIGRATOR.run_direct(None, &mut *conn, false).await {
            Ok(()) => Ok(()),
            Err(e) => {
                conn.close_on_drop();
                Err(CatalogError::Migrate(e))
            }
        }
    }

    async fn quota_lock(&self, scope: QuotaLockScope) -> Result<QuotaLock> {
        let permit = Arc::clone(&self.quota_waiters)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut tx = self.pool.begin().await?;
        advisory_lock(&mut tx, QUOTA_USER_LOCK_SPACE, scope.user.0).await?;
        if scope.total {
            sqlx::query("SELECT pg_advisory_xact_lock($1, 0)")
                .bind(QUOTA_TOTAL_LOCK_SPACE)
                .execute(&mut *tx)
                .await?;
        }
        Ok(QuotaLock(QuotaLockHeld::Postgres { tx, _permit: permit }))
    }
}

impl Cols for PgRow {
    fn uuid(&self, col: &str) -> Result<Uuid> {
        Ok(self.try_get(col)?)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        Ok(self.try_get(col)?)
    }
    fn ts(&self, col: &str) -> Result<DateTime<Utc>> {
        Ok(self.try_get(col)?)
    }
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.try_get(col)?)
    }
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T> {
        let v: serde_json::Value = self.try_get(col)?;
        common::json_value(v, col)
    }
}
