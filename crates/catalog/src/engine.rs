//! The seam between the catalog's operations and the two engines.
//!
//! Every [`Catalog`](crate::Catalog) operation is written once, over an
//! [`Engine`] (`catalog`, `jobs`, `files`); Postgres and SQLite each
//! implement [`Engine`] with only what truly differs between them:
//! - the pool, connecting and migrating;
//! - how values are bound ([`Engine::bind`]: Postgres uuid, timestamptz
//!   and jsonb; SQLite TEXT ids, INTEGER milliseconds and TEXT JSON) and
//!   read back ([`Cols`]);
//! - how a write transaction begins ([`Engine::BEGIN_WRITE`]: Postgres
//!   `BEGIN` at READ COMMITTED, SQLite `BEGIN IMMEDIATE`, which takes the
//!   write lock up front), how it locks the rows it reads and then changes
//!   ([`Engine::FOR_UPDATE`]) and how it serialises work per user that
//!   has no row to lock ([`Engine::lock_user`]: advisory locks, or nothing
//!   where the write lock already serialises);
//! - quota locks ([`Engine::quota_lock`]), and byte-order sorting.
//!
//! Statements are [`Stmt`]s: SQL text with `$1`, `$2`… placeholders, which
//! both drivers take (sqlx's SQLite driver binds `$N` to the N-th value as
//! it does `?N`), and values as [`Arg`]s, which the engine encodes. The SQL
//! both engines run is therefore the same text; where their dialects part
//! (upserts, `GREATEST`), the statements keep to what both understand.
//!
//! Why a thin seam rather than code generic over sqlx alone: generic sqlx
//! code needs an `Encode`/`Type` bound per value type and a higher-ranked
//! `Executor` bound on the connection, restated on every function that
//! binds or runs a statement. Here the operations see only the engine:
//! values go through one enum of the kinds the catalog stores ([`Arg`]),
//! which each engine encodes in one `match` ([`Engine::bind`], with
//! [`bind_plain`] for the kinds stored as themselves), and each engine
//! hands out its connection as an executor ([`Engine::executor`]), where
//! the concrete types satisfy those bounds. What stays generic is the
//! driver's [`Database`], with its rows readable through [`Cols`].
//!
//! The items are `pub` only because the public `PgCatalog` and
//! `SqliteCatalog` are aliases of `SqlCatalog<E>` over an engine; this
//! module is private to the crate.

use crate::common::Cols;
use crate::filter::SqlOut;
use crate::{QuotaLock, QuotaLockScope, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::error::BoxDynError;
use sqlx::query::Query;
use sqlx::{Arguments, AssertSqlSafe, Database, Encode, Executor, IntoArguments, Pool, Transaction, Type};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::future::Future;
use uuid::Uuid;

pub type Conn<E> = <<E as Engine>::Db as Database>::Connection;
pub type DbRow<E> = <<E as Engine>::Db as Database>::Row;
pub type Args<E> = <<E as Engine>::Db as Database>::Arguments;
pub type Tx<E> = Transaction<'static, <E as Engine>::Db>;

/// A value to bind, in the catalog's terms; each engine encodes it as it
/// stores that kind of value.
#[derive(Debug)]
pub enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Flag(bool),
    Uuid(Uuid),
    /// Already at millisecond precision.
    Ts(Option<DateTime<Utc>>),
    /// Serialised JSON.
    Json(String),
}

/// Work serialised per user by [`Engine::lock_user`], each in a lock
/// space of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserLock {
    /// [`crate::Catalog::admit`]: counting and adding admissions.
    Rate,
    /// [`crate::Catalog::claim`]: counting and starting running jobs.
    Claim,
}

/// What one database engine brings to the catalog.
pub trait Engine: Send + Sync + Sized + 'static {
    /// sqlx's driver.
    type Db: Database<Row: Cols, Arguments: IntoArguments<Self::Db>>;
    /// [`crate::Catalog::backend`].
    const NAME: &'static str;
    /// The catalog's public type name, for `Debug`.
    const CATALOG: &'static str;
    /// Starts a transaction that reads and then writes.
    const BEGIN_WRITE: &'static str;
    /// Appended to a `SELECT` of rows that its transaction goes on to
    /// change, to lock them until it ends.
    const FOR_UPDATE: &'static str;
    /// Appended to an `ORDER BY` of a text column to sort it by bytes.
    const BYTE_ORDER: &'static str;

    fn pool(&self) -> &Pool<Self::Db>;

    /// Adds `arg` to `args` in this engine's encoding: ids, times and
    /// JSON as this engine stores them, the rest with [`bind_plain`].
    fn bind(args: &mut Args<Self>, arg: Arg<'_>) -> Result<(), BoxDynError>;

    /// The connection as sqlx's executor: true of each driver's
    /// connection, but not something generic code can assume without a
    /// higher-ranked bound on every caller.
    fn executor(conn: &mut Conn<Self>) -> impl Executor<'_, Database = Self::Db>;

    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    /// Makes the rest of the write transaction on `conn` wait for (and
    /// then exclude) any other transaction that took the same lock on
    /// `user`, on this engine's terms.
    fn lock_user(conn: &mut Conn<Self>, lock: UserLock, user: i64) -> impl Future<Output = Result<()>> + Send;

    /// [`crate::Catalog::migrate`].
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;

    /// [`crate::Catalog::quota_lock`].
    fn quota_lock(&self, scope: QuotaLockScope) -> impl Future<Output = Result<QuotaLock>> + Send;
}

/// Binds the kinds every engine stores as themselves: integers, texts and
/// flags. (Called by each engine's [`Engine::bind`] with its concrete
/// arguments type, where these bounds hold.)
pub fn bind_plain<A>(args: &mut A, arg: Arg<'_>) -> Result<(), BoxDynError>
where
    A: Arguments,
    for<'t> Option<i64>: Encode<'t, A::Database> + Type<A::Database>,
    for<'t> Option<&'t str>: Encode<'t, A::Database> + Type<A::Database>,
    for<'t> bool: Encode<'t, A::Database> + Type<A::Database>,
{
    match arg {
        Arg::Int(v) => args.add(v),
        Arg::Text(v) => args.add(v),
        Arg::Flag(v) => args.add(v),
        Arg::Uuid(_) | Arg::Ts(_) | Arg::Json(_) => Err(format!("{arg:?} is bound by the engine").into()),
    }
}

/// One statement and its values, built in order: `Stmt::new("… $1 … $2")`
/// then one binding call per placeholder.
pub struct Stmt<E: Engine> {
    sql: Cow<'static, str>,
    /// The first encoding error is kept and reported when the statement
    /// runs, as sqlx does for its own `bind`.
    args: Result<Args<E>, BoxDynError>,
    /// Values bound so far.
    bound: usize,
}

impl<E: Engine> Stmt<E> {
    pub fn new(sql: &'static str) -> Self {
        Self {
            sql: Cow::Borrowed(sql),
            args: Ok(Args::<E>::default()),
            bound: 0,
        }
    }

    /// Appends SQL text: a clause of the engine's, after the statement.
    pub fn push(mut self, sql: &str) -> Self {
        self.sql.to_mut().push_str(sql);
        self
    }

    /// Locks the rows this `SELECT` reads ([`Engine::FOR_UPDATE`]).
    pub fn for_update(self) -> Self {
        self.push(E::FOR_UPDATE)
    }

    fn arg(mut self, arg: Arg<'_>) -> Self {
        self.add(arg);
        self
    }

    fn add(&mut self, arg: Arg<'_>) {
        self.bound += 1;
        if let Ok(args) = &mut self.args
            && let Err(e) = E::bind(args, arg)
        {
            self.args = Err(e);
        }
    }

    pub fn int(self, v: i64) -> Self {
        self.arg(Arg::Int(Some(v)))
    }
    pub fn opt_int(self, v: Option<i64>) -> Self {
        self.arg(Arg::Int(v))
    }
    pub fn text(self, v: &str) -> Self {
        self.arg(Arg::Text(Some(v)))
    }
    pub fn opt_text(self, v: Option<&str>) -> Self {
        self.arg(Arg::Text(v))
    }
    pub fn flag(self, v: bool) -> Self {
        self.arg(Arg::Flag(v))
    }
    pub fn uuid(self, v: Uuid) -> Self {
        self.arg(Arg::Uuid(v))
    }
    pub fn ts(self, v: DateTime<Utc>) -> Self {
        self.arg(Arg::Ts(Some(v)))
    }
    pub fn opt_ts(self, v: Option<DateTime<Utc>>) -> Self {
        self.arg(Arg::Ts(v))
    }
    pub fn json(mut self, v: &impl Serialize) -> Self {
        match serde_json::to_string(v) {
            Ok(text) => self.arg(Arg::Json(text)),
            Err(e) => {
                self.bound += 1;
                self.args = Err(e.into());
                self
            }
        }
    }

    fn query(self) -> Result<Query<'static, E::Db, Args<E>>> {
        let args = self.args.map_err(sqlx::Error::Encode)?;
        Ok(sqlx::query_with(AssertSqlSafe(self.sql), args))
    }

    /// Runs the statement; the number of rows it changed.
    pub async fn execute(self, conn: &mut Conn<E>) -> Result<u64> {
        let done = E::executor(conn).execute(self.query()?).await?;
        Ok(E::rows_affected(&done))
    }

    pub async fn fetch_optional(self, conn: &mut Conn<E>) -> Result<Option<DbRow<E>>> {
        Ok(E::executor(conn).fetch_optional(self.query()?).await?)
    }

    /// The first row; no row is an error (sqlx's `RowNotFound`).
    pub async fn fetch_one(self, conn: &mut Conn<E>) -> Result<DbRow<E>> {
        Ok(E::executor(conn).fetch_one(self.query()?).await?)
    }

    pub async fn fetch_all(self, conn: &mut Conn<E>) -> Result<Vec<DbRow<E>>> {
        Ok(E::executor(conn).fetch_all(self.query()?).await?)
    }

    /// Appends the next placeholder and binds `arg` to it.
    fn push_bind(&mut self, arg: Arg<'_>) {
        let n = self.bound + 1;
        // Writing to a String cannot fail.
        let _ = write!(self.sql.to_mut(), "${n}");
        self.add(arg);
    }
}

/// Queries built piece by piece (the retention filters) number their
/// placeholders as they go.
impl<E: Engine> SqlOut for Stmt<E> {
    fn sql(&mut self, sql: &str) {
        self.sql.to_mut().push_str(sql);
    }
    fn int(&mut self, v: i64) {
        self.push_bind(Arg::Int(Some(v)));
    }
    fn text(&mut self, v: &str) {
        self.push_bind(Arg::Text(Some(v)));
    }
    fn ts(&mut self, t: DateTime<Utc>) {
        self.push_bind(Arg::Ts(Some(t)));
    }
    fn uuid(&mut self, u: Uuid) {
        self.push_bind(Arg::Uuid(u));
    }
}
