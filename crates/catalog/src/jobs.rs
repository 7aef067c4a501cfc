//! The transactions on jobs: accepting, moving, claiming and admitting.
//!
//! Each runs in a write transaction ([`Engine::BEGIN_WRITE`]). Two of them
//! count a user's rows and then add one, where there is no row to lock for
//! a user who has none yet: `claim` (running jobs) and `admit` (rate
//! admissions) first take [`Engine::lock_user`] on the user, and count
//! only after it. On Postgres that is a transaction-scoped advisory lock,
//! and the statements after it take fresh snapshots (READ COMMITTED), so
//! they see everything the previous holder committed; on SQLite the write
//! lock, held from `BEGIN IMMEDIATE`, already serialises them.

use crate::catalog::SqlCatalog;
use crate::common::{self, Cols, PlainCols, job_cols};
use crate::engine::{Conn, Engine, Stmt, UserLock};
use crate::{Accepted, Admission, CatalogError, Claim, Result, Transition};
use chrono::{DateTime, Utc};
use std::num::NonZeroU32;
use std::time::Duration;
use teledrop_core::{ChatId, ErrorKind, IncomingFile, JobId, JobRecord, JobState, MessageId, UpdateId};

/// The job of a message: what jobs are unique by.
pub(crate) async fn message_job<E: Engine>(
    conn: &mut Conn<E>,
    chat: ChatId,
    message: MessageId,
) -> Result<Option<JobRecord>> {
    let row = Stmt::<E>::new(concat!(
        "SELECT ",
        job_cols!(),
        " FROM jobs WHERE chat_id = $1 AND message_id = $2"
    ))
    .int(chat.0)
    .int(i64::from(message.0))
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(common::job_from).transpose()
}

async fn job_state<E: Engine>(conn: &mut Conn<E>, id: JobId) -> Result<Option<JobState>> {
    let row = Stmt::<E>::new("SELECT state FROM jobs WHERE id = $1")
        .uuid(id.as_uuid())
        .fetch_optional(conn)
        .await?;
    row.map(|r| common::parse(&r.text("state")?, "job state")).transpose()
}

/// The owner of a job; an unknown job is [`CatalogError::NotFound`].
async fn job_user<E: Engine>(conn: &mut Conn<E>, id: JobId) -> Result<i64> {
    let row = Stmt::<E>::new("SELECT user_id FROM jobs WHERE id = $1")
        .uuid(id.as_uuid())
        .fetch_optional(conn)
        .await?
        .ok_or(CatalogError::NotFound("job"))?;
    row.int("user_id")
}

/// One entry of a job's timeline.
pub(crate) struct Event<'a> {
    pub job: JobId,
    pub at: DateTime<Utc>,
    pub from: Option<JobState>,
    pub to: JobState,
    pub error_kind: Option<ErrorKind>,
    pub note: &'a str,
}

pub(crate) async fn insert_event<E: Engine>(conn: &mut Conn<E>, e: Event<'_>) -> Result<()> {
    Stmt::<E>::new(
        "INSERT INTO job_events (job_id, at, from_state, to_state, error_kind, note) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .uuid(e.job.as_uuid())
    .ts(e.at)
    .opt_text(e.from.map(JobState::as_str))
    .text(e.to.as_str())
    .opt_text(e.error_kind.map(ErrorKind::as_str))
    .text(e.note)
    .execute(conn)
    .await?;
    Ok(())
}

impl<E: Engine> SqlCatalog<E> {
    pub(crate) async fn accept_job_tx(&self, update_id: UpdateId, incoming: &IncomingFile) -> Result<Accepted> {
        let id = JobId::new();
        let now = common::now();
        let mut tx = self.write_tx().await?;
        // On Postgres a concurrent insert of the same message makes this
        // wait for that transaction, then do nothing: exactly one caller
        // inserts.
        let inserted = Stmt::<E>::new(
            "INSERT INTO jobs (id, update_id, user_id, chat_id, message_id, incoming, state, attempts, \
                               created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7) \
             ON CONFLICT (chat_id, message_id) DO NOTHING",
        )
        .uuid(id.as_uuid())
        .int(update_id.0)
        .int(incoming.user_id.0)
        .int(incoming.chat_id.0)
        .int(i64::from(incoming.message_id.0))
        .json(incoming)
        .ts(now)
        .execute(&mut tx)
        .await?
            == 1;
        if inserted {
            let event = Event {
                job: id,
                at: now,
                from: None,
                to: JobState::Pending,
                error_kind: None,
                note: "accepted",
            };
            insert_event::<E>(&mut tx, event).await?;
        }
        // Inserted or already there: the row exists.
        let job = message_job::<E>(&mut tx, incoming.chat_id, incoming.message_id)
            .await?
            .ok_or_else(|| common::corrupt("an accepted job has no row"))?;
        tx.commit().await?;
        Ok(if inserted {
            Accepted::New(job)
        } else {
            Accepted::Duplicate(job)
        })
    }

    pub(crate) async fn transition_tx(&self, id: JobId, change: Transition) -> Result<JobRecord> {
        common::check_transition(&change)?;
        let update = common::transition_update(&change);
        let now = common::now();
        let mut tx = self.write_tx().await?;
        let row = Stmt::<E>::new(concat!(
            "UPDATE jobs SET state = $3, attempts = attempts + $4, error_kind = COALESCE($5, error_kind), \
                 error_detail = CASE WHEN $6 THEN $7 ELSE error_detail END, updated_at = $8 \
             WHERE id = $1 AND state = $2 RETURNING ",
            job_cols!()
        ))
        .uuid(id.as_uuid())
        .text(change.from.as_str())
        .text(change.to.as_str())
        .int(update.attempts_delta)
        .opt_text(update.error_kind)
        .flag(update.sets_detail)
        .text(update.detail)
        .ts(now)
        .fetch_optional(&mut tx)
        .await?;
        let Some(row) = row else {
            return match job_state::<E>(&mut tx, id).await? {
                None => Err(CatalogError::NotFound("job")),
                Some(actual) => Err(CatalogError::StateConflict {
                    expected: change.from,
                    actual,
                }),
            };
        };
        let job = common::job_from(&row)?;
        let event = Event {
            job: id,
            at: now,
            from: Some(change.from),
            to: change.to,
            error_kind: change.error_kind,
            note: &change.note,
        };
        insert_event::<E>(&mut tx, event).await?;
        tx.commit().await?;
        Ok(job)
    }

    pub(crate) async fn claim_tx(&self, id: JobId, per_owner: NonZeroU32, note: &str) -> Result<Claim> {
        let mut tx = self.write_tx().await?;
        let user = job_user::<E>(&mut tx, id).await?;
        E::lock_user(&mut tx, UserLock::Claim, user).await?;
        let state = job_state::<E>(&mut tx, id)
            .await?
            .ok_or(CatalogError::NotFound("job"))?;
        if state != JobState::Pending {
            return Err(CatalogError::StateConflict {
                expected: JobState::Pending,
                actual: state,
            });
        }
        let running = Stmt::<E>::new("SELECT COUNT(*) AS n FROM jobs WHERE user_id = $1 AND state = 'running'")
            .int(user)
            .fetch_one(&mut tx)
            .await?;
        if running.int("n")? >= i64::from(per_owner.get()) {
            tx.commit().await?;
            return Ok(Claim::OwnerBusy);
        }
        let now = common::now();
        let row = Stmt::<E>::new(concat!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = $2 \
             WHERE id = $1 AND state = 'pending' RETURNING ",
            job_cols!()
        ))
        .uuid(id.as_uuid())
        .ts(now)
        .fetch_one(&mut tx)
        .await?;
        let job = common::job_from(&row)?;
        let event = Event {
            job: id,
            at: now,
            from: Some(JobState::Pending),
            to: JobState::Running,
            error_kind: None,
            note,
        };
        insert_event::<E>(&mut tx, event).await?;
        tx.commit().await?;
        Ok(Claim::Started(Box::new(job)))
    }

    pub(crate) async fn admit_tx(
        &self,
        job: JobId,
        limit: NonZeroU32,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<Admission> {
        let w = common::RateWindow::new(window, now);
        let mut tx = self.write_tx().await?;
        let user = job_user::<E>(&mut tx, job).await?;
        E::lock_user(&mut tx, UserLock::Rate, user).await?;
        let held = Stmt::<E>::new("SELECT 1 AS held FROM rate_admissions WHERE job_id = $1")
            .uuid(job.as_uuid())
            .fetch_optional(&mut tx)
            .await?
            .is_some();
        if held {
            tx.commit().await?;
            return Ok(Admission::Admitted);
        }
        Stmt::<E>::new(
            "DELETE FROM rate_admissions WHERE user_id = $1 AND at <= $2 \
             AND job_id IN (SELECT id FROM jobs WHERE state IN ('stored', 'failed'))",
        )
        .int(user)
        .ts(w.since)
        .execute(&mut tx)
        .await?;
        let taken = Stmt::<E>::new("SELECT COUNT(*) AS n FROM rate_admissions WHERE user_id = $1 AND at > $2")
            .int(user)
            .ts(w.since)
            .fetch_one(&mut tx)
            .await?;
        let taken = taken.int("n")?;
        let limit = i64::from(limit.get());
        let admission = if taken < limit {
            Stmt::<E>::new("INSERT INTO rate_admissions (job_id, user_id, at) VALUES ($1, $2, $3)")
                .uuid(job.as_uuid())
                .int(user)
                .ts(w.now)
                .execute(&mut tx)
                .await?;
            Admission::Admitted
        } else {
            // A slot frees when the admissions above the limit have left
            // (more than one when the limit was lowered meanwhile).
            let row = Stmt::<E>::new(
                "SELECT at FROM rate_admissions WHERE user_id = $1 AND at > $2 ORDER BY at LIMIT 1 OFFSET $3",
            )
            .int(user)
            .ts(w.since)
            .int(taken - limit)
            .fetch_one(&mut tx)
            .await?;
            Admission::Limited {
                retry_after: w.until_leaves(row.ts("at")?),
            }
        };
        tx.commit().await?;
        Ok(admission)
    }
}
