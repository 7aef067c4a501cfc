//! What every operation shares, whatever the engine: column lists, row →
//! record mapping, checked value conversions and the rules applied before
//! touching the database.
//!
//! Each engine reads its own column types (Postgres: uuid, timestamptz,
//! jsonb; SQLite: TEXT, INTEGER milliseconds, TEXT JSON) through [`Cols`];
//! everything above that is written once, here.

use crate::{CatalogError, DownloadHit, PolicyRow, Result, Transition};
use chrono::{DateTime, TimeDelta, Utc};
use serde::de::DeserializeOwned;
use sqlx::{ColumnIndex, Decode, Row, Type};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;
use teledrop_core::{
    BlobRecord, ChatId, ErrorKind, FileId, FileRecord, IllegalTransition, JobEvent, JobId, JobRecord, JobState,
    LinkRecord, LinkToken, MessageId, UpdateId, UserId,
};
use uuid::Uuid;

// ---- column lists ----------------------------------------------------------
//
// Macros rather than consts so that `concat!` can build `&'static str`
// statements from them.

macro_rules! job_cols {
    () => {
        "id, update_id, incoming, state, attempts, error_kind, error_detail, status_message_id, file_id, \
         created_at, updated_at, replied_at"
    };
}
macro_rules! event_cols {
    () => {
        "job_id, at, from_state, to_state, error_kind, note"
    };
}
macro_rules! blob_cols {
    () => {
        "file_unique_id, object_key, size, sha256, created_at"
    };
}
macro_rules! file_cols {
    () => {
        "id, owner, chat_id, message_id, kind, file_unique_id, name, mime_type, size, sha256, object_key, state, \
         created_at, last_download_at, download_count, deleted_at"
    };
}
macro_rules! link_cols {
    () => {
        "token, file_id, created_at, expires_at, max_downloads, password_hash, revoked_at"
    };
}
/// `links l JOIN files f`: link columns prefixed `l_`, file columns plain.
macro_rules! link_file_cols {
    () => {
        "l.token AS l_token, l.file_id AS l_file_id, l.created_at AS l_created_at, \
         l.expires_at AS l_expires_at, l.max_downloads AS l_max_downloads, \
         l.password_hash AS l_password_hash, l.revoked_at AS l_revoked_at, \
         f.id AS id, f.owner AS owner, f.chat_id AS chat_id, f.message_id AS message_id, f.kind AS kind, \
         f.file_unique_id AS file_unique_id, f.name AS name, f.mime_type AS mime_type, f.size AS size, \
         f.sha256 AS sha256, f.object_key AS object_key, f.state AS state, f.created_at AS created_at, \
         f.last_download_at AS last_download_at, f.download_count AS download_count, \
         f.deleted_at AS deleted_at"
    };
}
macro_rules! policy_cols {
    () => {
        "key, generation, spec, updated_at, would_reject"
    };
}
pub(crate) use {blob_cols, event_cols, file_cols, job_cols, link_cols, link_file_cols, policy_cols};

// ---- reading columns -------------------------------------------------------

/// Typed access to one result row. Integers and texts read the same on
/// every engine ([`PlainCols`]); ids, times and JSON are implemented by
/// each engine for its own column representations.
pub trait Cols: PlainCols {
    fn uuid(&self, col: &str) -> Result<Uuid>;
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>>;
    fn ts(&self, col: &str) -> Result<DateTime<Utc>>;
    fn opt_ts(&self, col: &str) -> Result<Option<DateTime<Utc>>>;
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T>;
}

/// The columns every engine stores as themselves: BIGINT/INTEGER and TEXT.
pub trait PlainCols {
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
}

impl<R> PlainCols for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    fn int(&self, col: &str) -> Result<i64> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get(col)?)
    }
    fn text(&self, col: &str) -> Result<String> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get(col)?)
    }
}

pub(crate) fn corrupt(msg: impl Into<String>) -> CatalogError {
    CatalogError::Corrupt(msg.into())
}

fn col<'a>(prefix: &str, name: &'a str) -> Cow<'a, str> {
    if prefix.is_empty() {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{prefix}{name}"))
    }
}

// ---- checked conversions ---------------------------------------------------

/// A stored integer that must fit a `u64` (sizes, counters).
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(format!("{what} out of range: {v}")))
}

pub(crate) fn to_u32(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(format!("{what} out of range: {v}")))
}

pub(crate) fn to_i32(v: i64, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| corrupt(format!("{what} out of range: {v}")))
}

/// A `u64` to store in a signed 64-bit column.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| corrupt(format!("{what} too large to store: {v}")))
}

pub(crate) fn parse<T>(s: &str, what: &str) -> Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    s.parse().map_err(|e| corrupt(format!("{what}: {e}")))
}

pub(crate) fn json_text<T: DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt(format!("{what}: {e}")))
}

pub(crate) fn json_value<T: DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T> {
    serde_json::from_value(v).map_err(|e| corrupt(format!("{what}: {e}")))
}

pub(crate) fn parse_uuid(s: &str, what: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| corrupt(format!("{what}: {e}")))
}

// ---- time ------------------------------------------------------------------
//
// Both backends keep milliseconds (SQLite stores them as integers, Postgres
// would keep microseconds): every timestamp is truncated before it is
// written, so what a call returns equals what a later read returns.

pub(crate) fn now() -> DateTime<Utc> {
    truncate_ms(Utc::now())
}

pub(crate) fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

pub(crate) fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64, what: &str) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("{what} out of range: {ms}")))
}

/// The first millisecond at or after `t`. Stored times are whole
/// milliseconds, so for a stored `v`, `v < t` exactly when
/// `v < ceil_ms(t)`: a bound compared this way means the same on both
/// backends, whatever precision the caller passed.
pub(crate) fn ceil_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = truncate_ms(t);
    if floor == t {
        t
    } else {
        floor.checked_add_signed(TimeDelta::milliseconds(1)).unwrap_or(floor)
    }
}

// ---- rate limit ----------------------------------------------------------------

/// One `admit` call's window, in stored (whole-millisecond) times.
pub(crate) struct RateWindow {
    pub now: DateTime<Utc>,
    /// Admissions at or before this have left the window.
    pub since: DateTime<Utc>,
    window: TimeDelta,
}

impl RateWindow {
    pub fn new(window: std::time::Duration, now: DateTime<Utc>) -> Self {
        let now = truncate_ms(now);
        let window = i64::try_from(window.as_millis())
            .ok()
            .and_then(TimeDelta::try_milliseconds)
            .unwrap_or(TimeDelta::MAX);
        // A window reaching back past year 1 (which Postgres can still
        // store) counts every admission, as a longer one would.
        let floor = chrono::NaiveDate::from_ymd_opt(1, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(DateTime::UNIX_EPOCH, |t| t.and_utc());
        let since = now.checked_sub_signed(window).map_or(floor, |t| t.max(floor));
        Self { now, since, window }
    }

    /// How long until an admission made `at` leaves the window; never
    /// zero, since a counted admission is still in it.
    pub fn until_leaves(&self, at: DateTime<Utc>) -> std::time::Duration {
        let leaves = at.checked_add_signed(self.window).unwrap_or(DateTime::<Utc>::MAX_UTC);
        (leaves - self.now)
            .to_std()
            .unwrap_or_default()
            .max(std::time::Duration::from_millis(1))
    }
}

// ---- notices -------------------------------------------------------------------

/// A [`crate::Catalog::claim_notice`] call's times: `now` as stored, and
/// the latest earlier sending that lets the notice go out again (`None`:
/// no earlier sending does).
pub(crate) fn notice_times(
    every: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, Option<DateTime<Utc>>) {
    match every {
        Some(every) => {
            let w = RateWindow::new(every, now);
            (w.now, Some(w.since))
        }
        None => (truncate_ms(now), None),
    }
}

// ---- rules -------------------------------------------------------------

/// Checks a state change before any query runs. `running → stored` is a
/// legal edge of the state machine but only [`crate::Catalog::commit_stored`]
/// may take it (a stored job needs its file), so `transition` refuses it.
pub(crate) fn check_transition(change: &Transition) -> Result<()> {
    change.from.transition(change.to)?;
    if change.to == JobState::Stored {
        return Err(IllegalTransition {
            from: change.from,
            to: change.to,
        }
        .into());
    }
    Ok(())
}

/// How a transition changes the job's error columns and attempt counter.
///
/// The job keeps its *last* error: a change that carries an error kind (or
/// fails the job) overwrites `error_kind`/`error_detail` with the kind and
/// note; any other change (e.g. a retry entering `running`, or success)
/// leaves them as they were, so the record still tells why earlier
/// attempts failed. The full history is in the events.
pub(crate) struct TransitionUpdate<'a> {
    pub attempts_delta: i64,
    pub error_kind: Option<&'static str>,
    pub sets_detail: bool,
    pub detail: &'a str,
}

pub(crate) fn transition_update(change: &Transition) -> TransitionUpdate<'_> {
    TransitionUpdate {
        attempts_delta: i64::from(change.to == JobState::Running),
        error_kind: change.error_kind.map(ErrorKind::as_str),
        sets_detail: change.error_kind.is_some() || change.to == JobState::Failed,
        detail: &change.note,
    }
}

/// Download hits merged per file (counts added, latest time kept), in file
/// id order so concurrent flushes lock rows in the same order.
pub(crate) fn merge_hits(hits: &[DownloadHit]) -> Result<Vec<(FileId, i64, DateTime<Utc>)>> {
    let mut merged: BTreeMap<FileId, (u64, DateTime<Utc>)> = BTreeMap::new();
    for hit in hits {
        let at = truncate_ms(hit.last_at);
        let entry = merged.entry(hit.file_id).or_insert((0, at));
        entry.0 = entry
            .0
            .checked_add(hit.count)
            .ok_or_else(|| corrupt(format!("download count overflow for file {}", hit.file_id)))?;
        entry.1 = entry.1.max(at);
    }
    merged
        .into_iter()
        .map(|(id, (count, at))| Ok((id, to_i64(count, "download count")?, at)))
        .collect()
}

// ---- row → record ----------------------------------------------------------

pub(crate) fn job_from(r: &impl Cols) -> Result<JobRecord> {
    Ok(JobRecord {
        id: JobId::from_uuid(r.uuid("id")?),
        update_id: UpdateId(r.int("update_id")?),
        incoming: r.json("incoming")?,
        state: parse(&r.text("state")?, "job state")?,
        attempts: to_u32(r.int("attempts")?, "attempts")?,
        error_kind: r.opt_text("error_kind")?.map(|s| parse(&s, "error kind")).transpose()?,
        error_detail: r.opt_text("error_detail")?,
        status_message_id: r
            .opt_int("status_message_id")?
            .map(|v| to_i32(v, "status message id").map(MessageId))
            .transpose()?,
        file_id: r.opt_uuid("file_id")?.map(FileId::from_uuid),
        created_at: r.ts("created_at")?,
        updated_at: r.ts("updated_at")?,
        replied_at: r.opt_ts("replied_at")?,
    })
}

pub(crate) fn event_from(r: &impl Cols) -> Result<JobEvent> {
    Ok(JobEvent {
        job_id: JobId::from_uuid(r.uuid("job_id")?),
        at: r.ts("at")?,
        from: r.opt_text("from_state")?.map(|s| parse(&s, "job state")).transpose()?,
        to: parse(&r.text("to_state")?, "job state")?,
        error_kind: r.opt_text("error_kind")?.map(|s| parse(&s, "error kind")).transpose()?,
        note: r.text("note")?,
    })
}

pub(crate) fn blob_from(r: &impl Cols) -> Result<BlobRecord> {
    Ok(BlobRecord {
        file_unique_id: r.text("file_unique_id")?,
        object_key: parse(&r.text("object_key")?, "object key")?,
        size: to_u64(r.int("size")?, "blob size")?,
        sha256: parse(&r.text("sha256")?, "sha256")?,
        created_at: r.ts("created_at")?,
    })
}

pub(crate) fn file_from(r: &impl Cols) -> Result<FileRecord> {
    Ok(FileRecord {
        id: FileId::from_uuid(r.uuid("id")?),
        owner: UserId(r.int("owner")?),
        chat_id: ChatId(r.int("chat_id")?),
        message_id: MessageId(to_i32(r.int("message_id")?, "message id")?),
        kind: parse(&r.text("kind")?, "media kind")?,
        file_unique_id: r.text("file_unique_id")?,
        name: r.text("name")?,
        mime_type: r.text("mime_type")?,
        size: to_u64(r.int("size")?, "file size")?,
        sha256: parse(&r.text("sha256")?, "sha256")?,
        object_key: parse(&r.text("object_key")?, "object key")?,
        state: parse(&r.text("state")?, "file state")?,
        created_at: r.ts("created_at")?,
        last_download_at: r.opt_ts("last_download_at")?,
        download_count: to_u64(r.int("download_count")?, "download count")?,
        deleted_at: r.opt_ts("deleted_at")?,
    })
}

/// A link row; `prefix` is prepended to every column name (for joins).
pub(crate) fn link_from(r: &impl Cols, prefix: &str) -> Result<LinkRecord> {
    let c = |name| col(prefix, name);
    Ok(LinkRecord {
        token: LinkToken::from_uuid(r.uuid(&c("token"))?).map_err(|e| corrupt(format!("link token: {e}")))?,
        file_id: FileId::from_uuid(r.uuid(&c("file_id"))?),
        created_at: r.ts(&c("created_at"))?,
        expires_at: r.opt_ts(&c("expires_at"))?,
        max_downloads: r
            .opt_int(&c("max_downloads"))?
            .map(|v| to_u64(v, "max downloads"))
            .transpose()?,
        password_hash: r.opt_text(&c("password_hash"))?,
        revoked_at: r.opt_ts(&c("revoked_at"))?,
    })
}

pub(crate) fn policy_from(r: &impl Cols) -> Result<PolicyRow> {
    Ok(PolicyRow {
        key: r.text("key")?,
        generation: r.int("generation")?,
        spec: r.json("spec")?,
        updated_at: r.ts("updated_at")?,
        would_reject: to_u64(r.int("would_reject")?, "would-reject count")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use teledrop_core::ErrorKind;

    #[test]
    fn transitions_are_checked_before_any_query() {
        use JobState::*;
        assert!(check_transition(&Transition::new(Pending, Running, "")).is_ok());
        assert!(check_transition(&Transition::retry(ErrorKind::Network, "")).is_ok());
        assert!(matches!(
            check_transition(&Transition::new(Stored, Running, "")),
            Err(CatalogError::IllegalTransition(IllegalTransition {
                from: Stored,
                to: Running
            }))
        ));
        // Legal in the state machine, but reserved for commit_stored.
        assert!(matches!(
            check_transition(&Transition::new(Running, Stored, "")),
            Err(CatalogError::IllegalTransition(_))
        ));
    }

    #[test]
    fn transition_updates_keep_the_last_error() {
        use JobState::*;
        let run = Transition::new(Pending, Running, "go");
        let u = transition_update(&run);
        assert_eq!((u.attempts_delta, u.error_kind, u.sets_detail), (1, None, false));
        let retry = Transition::retry(ErrorKind::Network, "reset");
        let u = transition_update(&retry);
        assert_eq!(
            (u.attempts_delta, u.error_kind, u.sets_detail, u.detail),
            (0, Some("network"), true, "reset")
        );
        let fail = Transition::new(Running, Failed, "gave up");
        let u = transition_update(&fail);
        assert_eq!((u.attempts_delta, u.error_kind, u.sets_detail), (0, None, true));
    }

    #[test]
    fn conversions_refuse_nonsense() {
        assert_eq!(to_u64(5, "x").unwrap(), 5);
        assert!(matches!(to_u64(-1, "x"), Err(CatalogError::Corrupt(_))));
        assert!(matches!(
            to_u32(i64::from(u32::MAX) + 1, "x"),
            Err(CatalogError::Corrupt(_))
        ));
        assert!(matches!(
            to_i32(i64::from(i32::MIN) - 1, "x"),
            Err(CatalogError::Corrupt(_))
        ));
        assert!(matches!(to_i64(u64::MAX, "x"), Err(CatalogError::Corrupt(_))));
        assert_eq!(to_i64(i64::MAX as u64, "x").unwrap(), i64::MAX);
        assert!(matches!(from_millis(i64::MAX, "t"), Err(CatalogError::Corrupt(_))));
        assert!(matches!(
            parse::<JobState>("paused", "s"),
            Err(CatalogError::Corrupt(_))
        ));
    }

    #[test]
    fn timestamps_keep_milliseconds() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let ms = truncate_ms(t);
        assert_eq!(ms.timestamp_subsec_nanos(), 123_000_000);
        assert_eq!(from_millis(millis(ms), "t").unwrap(), ms);
    }

    #[test]
    fn hits_are_merged_per_file_in_id_order() {
        let a = FileId::new();
        let b = FileId::new();
        let t1 = DateTime::from_timestamp_millis(1_000).unwrap();
        let t2 = DateTime::from_timestamp_millis(2_000).unwrap();
        let hits = [
            DownloadHit {
                file_id: b,
                count: 1,
                last_at: t1,
            },
            DownloadHit {
                file_id: a,
                count: 2,
                last_at: t2,
            },
            DownloadHit {
                file_id: b,
                count: 3,
                last_at: t2,
            },
            DownloadHit {
                file_id: a,
                count: 4,
                last_at: t1,
            },
        ];
        let merged = merge_hits(&hits).unwrap();
        let (first, second) = if a < b { (a, b) } else { (b, a) };
        assert_eq!(merged.iter().map(|m| m.0).collect::<Vec<_>>(), vec![first, second]);
        for (id, count, at) in merged {
            assert_eq!(count, if id == a { 6 } else { 4 });
            assert_eq!(at, t2);
        }
        let overflow = [
            DownloadHit {
                file_id: a,
                count: u64::MAX,
                last_at: t1,
            },
            DownloadHit {
                file_id: a,
                count: 1,
                last_at: t1,
            },
        ];
        assert!(merge_hits(&overflow).is_err());
    }
}
