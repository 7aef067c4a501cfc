//! The retention queries: a [`FileFilter`] checked, then turned into SQL.
//!
//! A filter is checked whole before any query runs ([`check_filter`]) and
//! its values converted to what the database stores. The SQL is written
//! once, here, into any [`SqlOut`]: the catalog's statements
//! ([`crate::engine::Stmt`]) bind each value in their engine's encoding,
//! and the tests render it as text.

use crate::common::{Cols, ceil_ms, file_cols, to_u64, truncate_ms};
use crate::{CatalogError, FileCursor, FileFilter, Result, Totals};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use teledrop_core::{ObjectKey, UserId};
use uuid::Uuid;

/// Appends SQL text and bound values to a query being built.
pub(crate) trait SqlOut {
    fn sql(&mut self, sql: &str);
    fn int(&mut self, v: i64);
    fn text(&mut self, v: &str);
    /// A timestamp already at millisecond precision.
    fn ts(&mut self, t: DateTime<Utc>);
    fn uuid(&mut self, u: Uuid);
}

/// Keys per `referenced_objects` statement: far below both engines'
/// limits on bound parameters (SQLite 32766, Postgres 65535).
pub(crate) const KEYS_PER_QUERY: usize = 1000;

/// Owners, chats and MIME patterns one filter may list, so that a filter
/// never reaches an engine's limit on bound parameters.
const MAX_FILTER_VALUES: usize = 10_000;

/// One alternative of a MIME condition on `lower(mime_type)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MimeMatch {
    /// `= value` (lowercase).
    Exact(String),
    /// `LIKE value ESCAPE '\'` (lowercase, `type` escaped, then `/%`).
    Prefix(String),
}

/// A [`FileFilter`] checked and converted to what the database stores.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LiveFilter {
    owners: Vec<i64>,
    chats: Vec<i64>,
    /// Alternatives; empty places no condition.
    mime: Vec<MimeMatch>,
    min_size: Option<i64>,
    max_size: Option<i64>,
    /// Exclusive bounds, rounded up to the millisecond ([`ceil_ms`]).
    created_before: Option<DateTime<Utc>>,
    idle_before: Option<DateTime<Utc>>,
}

fn invalid(msg: impl Into<String>) -> CatalogError {
    CatalogError::InvalidFilter(msg.into())
}

/// One MIME pattern as a condition; `None` for a pattern matching any
/// type. Case is folded for ASCII only, on both sides, which is what both
/// engines' `lower()` do for ASCII: a non-ASCII pattern is refused rather
/// than compared differently by each engine.
pub(crate) fn mime_match(pattern: &str) -> Result<Option<MimeMatch>> {
    if pattern == "*" || pattern == "*/*" {
        return Ok(None);
    }
    let bad = |why: &str| {
        invalid(format!(
            "MIME pattern {pattern:?} {why}: use \"type/subtype\", \"type/*\", \"*/*\" or \"*\""
        ))
    };
    if !pattern.is_ascii() || pattern.chars().any(|c| c.is_ascii_whitespace() || c.is_ascii_control()) {
        return Err(bad("holds spaces, control or non-ASCII characters"));
    }
    let Some((ty, sub)) = pattern.split_once('/') else {
        return Err(bad("has no '/'"));
    };
    if sub.contains('/') {
        return Err(bad("has more than one '/'"));
    }
    if ty.is_empty() || sub.is_empty() {
        return Err(bad("has an empty part"));
    }
    if ty.contains('*') || (sub.contains('*') && sub != "*") {
        return Err(bad("has '*' in the wrong place"));
    }
    let ty = ty.to_ascii_lowercase();
    if sub == "*" {
        let mut like = String::with_capacity(ty.len() + 4);
        for c in ty.chars() {
            if matches!(c, '\\' | '%' | '_') {
                like.push('\\');
            }
            like.push(c);
        }
        like.push_str("/%");
        Ok(Some(MimeMatch::Prefix(like)))
    } else {
        Ok(Some(MimeMatch::Exact(format!("{ty}/{}", sub.to_ascii_lowercase()))))
    }
}

fn filter_size(v: Option<u64>, what: &str) -> Result<Option<i64>> {
    v.map(|v| i64::try_from(v).map_err(|_| invalid(format!("{what} too large: {v} (at most {})", i64::MAX))))
        .transpose()
}

/// Checks a filter before any query runs.
pub(crate) fn check_filter(f: &FileFilter) -> Result<LiveFilter> {
    let owners: BTreeSet<i64> = f.owners.iter().map(|u| u.0).collect();
    let chats: BTreeSet<i64> = f.chats.iter().map(|c| c.0).collect();
    let listed = owners.len() + chats.len() + f.mime_patterns.len();
    if listed > MAX_FILTER_VALUES {
        return Err(invalid(format!(
            "{listed} owners, chats and MIME patterns (at most {MAX_FILTER_VALUES})"
        )));
    }
    let mut mime = Vec::new();
    let mut any_mime = false;
    for pattern in &f.mime_patterns {
        match mime_match(pattern)? {
            None => any_mime = true,
            Some(m) if !mime.contains(&m) => mime.push(m),
            Some(_) => {}
        }
    }
    if any_mime {
        mime.clear();
    }
    Ok(LiveFilter {
        owners: owners.into_iter().collect(),
        chats: chats.into_iter().collect(),
        mime,
        min_size: filter_size(f.min_size, "min_size")?,
        max_size: filter_size(f.max_size, "max_size")?,
        created_before: f.created_before.map(ceil_ms),
        idle_before: f.idle_before.map(ceil_ms),
    })
}

fn push_in(q: &mut impl SqlOut, column: &str, values: &[i64]) {
    if values.is_empty() {
        return;
    }
    q.sql(" AND ");
    q.sql(column);
    q.sql(" IN (");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            q.sql(", ");
        }
        q.int(*v);
    }
    q.sql(")");
}

/// `FROM files WHERE` the file is live and matches `f`. The literal
/// `state = 'active'` lets both engines use the partial index `files_live`.
fn push_live_from(q: &mut impl SqlOut, f: &LiveFilter) {
    q.sql(" FROM files WHERE state = 'active'");
    push_in(q, "owner", &f.owners);
    push_in(q, "chat_id", &f.chats);
    if !f.mime.is_empty() {
        q.sql(" AND (");
        for (i, m) in f.mime.iter().enumerate() {
            if i > 0 {
                q.sql(" OR ");
            }
            match m {
                MimeMatch::Exact(v) => {
                    q.sql("lower(mime_type) = ");
                    q.text(v);
                }
                MimeMatch::Prefix(v) => {
                    q.sql("lower(mime_type) LIKE ");
                    q.text(v);
                    q.sql(" ESCAPE '\\'");
                }
            }
        }
        q.sql(")");
    }
    if let Some(v) = f.min_size {
        q.sql(" AND size >= ");
        q.int(v);
    }
    if let Some(v) = f.max_size {
        q.sql(" AND size <= ");
        q.int(v);
    }
    if let Some(t) = f.created_before {
        q.sql(" AND created_at < ");
        q.ts(t);
    }
    if let Some(t) = f.idle_before {
        q.sql(" AND COALESCE(last_download_at, created_at) < ");
        q.ts(t);
    }
}

/// The position a cursor stands for, in stored values: a cursor between
/// two milliseconds stands after every file of the earlier one.
fn cursor_position(c: FileCursor) -> (DateTime<Utc>, Uuid) {
    let floor = truncate_ms(c.created_at);
    if floor == c.created_at {
        (floor, c.id.as_uuid())
    } else {
        (floor, Uuid::max())
    }
}

pub(crate) fn live_files_query(q: &mut impl SqlOut, f: &LiveFilter, after: Option<FileCursor>, limit: u32) {
    q.sql(concat!("SELECT ", file_cols!()));
    push_live_from(q, f);
    if let Some(cursor) = after {
        let (at, id) = cursor_position(cursor);
        q.sql(" AND (created_at, id) > (");
        q.ts(at);
        q.sql(", ");
        q.uuid(id);
        q.sql(")");
    }
    q.sql(" ORDER BY created_at, id LIMIT ");
    q.int(i64::from(limit));
}

/// Columns `files` and `bytes` (read with [`totals_from`]), and `owner`
/// first when `by_owner`.
pub(crate) fn live_totals_query(q: &mut impl SqlOut, f: &LiveFilter, by_owner: bool) {
    q.sql("SELECT ");
    if by_owner {
        q.sql("owner, ");
    }
    q.sql("COUNT(*) AS files, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes");
    push_live_from(q, f);
    if by_owner {
        q.sql(" GROUP BY owner ORDER BY owner");
    }
}

pub(crate) fn totals_from(r: &impl Cols) -> Result<Totals> {
    Ok(Totals {
        files: to_u64(r.int("files")?, "file count")?,
        bytes: to_u64(r.int("bytes")?, "total size")?,
    })
}

pub(crate) fn owner_totals_from(r: &impl Cols) -> Result<(UserId, Totals)> {
    Ok((UserId(r.int("owner")?), totals_from(r)?))
}

/// The distinct keys, in order, to ask about [`KEYS_PER_QUERY`] at a time.
pub(crate) fn distinct_keys(keys: &[ObjectKey]) -> Vec<&str> {
    let set: BTreeSet<&str> = keys.iter().map(ObjectKey::as_str).collect();
    set.into_iter().collect()
}

/// `object_key` of the blob rows naming one of `keys` (not empty).
pub(crate) fn referenced_query(q: &mut impl SqlOut, keys: &[&str]) {
    q.sql("SELECT object_key FROM blobs WHERE object_key IN (");
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            q.sql(", ");
        }
        q.text(k);
    }
    q.sql(")");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;
    use teledrop_core::{ChatId, FileId};

    /// Renders a query as text, values inline in brackets.
    #[derive(Default)]
    struct Rendered(String);

    impl SqlOut for Rendered {
        fn sql(&mut self, sql: &str) {
            self.0.push_str(sql);
        }
        fn int(&mut self, v: i64) {
            self.0.push_str(&format!("[{v}]"));
        }
        fn text(&mut self, v: &str) {
            self.0.push_str(&format!("[{v}]"));
        }
        fn ts(&mut self, t: DateTime<Utc>) {
            self.0.push_str(&format!("[{}]", t.timestamp_millis()));
        }
        fn uuid(&mut self, u: Uuid) {
            self.0.push_str(&format!("[{u}]"));
        }
    }

    #[test]
    fn mime_patterns_become_conditions() {
        assert_eq!(mime_match("*").unwrap(), None);
        assert_eq!(mime_match("*/*").unwrap(), None);
        assert_eq!(
            mime_match("Video/MP4").unwrap(),
            Some(MimeMatch::Exact("video/mp4".into()))
        );
        assert_eq!(
            mime_match("VIDEO/*").unwrap(),
            Some(MimeMatch::Prefix("video/%".into()))
        );
        assert_eq!(
            mime_match("a_b%c\\d/*").unwrap(),
            Some(MimeMatch::Prefix("a\\_b\\%c\\\\d/%".into()))
        );
        // Only the type of a prefix goes into LIKE; exact values are compared with `=`.
        assert_eq!(mime_match("x/a_b%").unwrap(), Some(MimeMatch::Exact("x/a_b%".into())));
        for bad in [
            "",
            "/",
            "video",
            "video/",
            "/mp4",
            "a/b/c",
            "*/mp4",
            "v*/*",
            "video/mp*",
            "**",
            "*/**",
            " a/b",
            "a/b ",
            "a\tb/c",
            "é/b",
        ] {
            assert!(
                matches!(mime_match(bad), Err(CatalogError::InvalidFilter(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn filters_render_only_the_conditions_given() {
        let render = |f: &FileFilter| {
            let mut q = Rendered::default();
            live_totals_query(&mut q, &check_filter(f).unwrap(), false);
            q.0
        };
        let head = "SELECT COUNT(*) AS files, CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes \
                    FROM files WHERE state = 'active'";
        assert_eq!(render(&FileFilter::default()), head);
        // Empty lists and catch-all patterns place no condition.
        let open = FileFilter {
            mime_patterns: vec!["video/*".into(), "*".into()],
            ..FileFilter::default()
        };
        assert_eq!(render(&open), head);

        let t = DateTime::from_timestamp_millis(5_000).unwrap();
        let f = FileFilter {
            owners: vec![UserId(3), UserId(1), UserId(3)],
            chats: vec![ChatId(-100)],
            mime_patterns: vec!["image/png".into(), "Video/*".into(), "image/PNG".into()],
            min_size: Some(1),
            max_size: Some(9),
            created_before: Some(t),
            idle_before: Some(t + TimeDelta::microseconds(1)),
        };
        assert_eq!(
            render(&f),
            format!(
                "{head} AND owner IN ([1], [3]) AND chat_id IN ([-100]) \
                 AND (lower(mime_type) = [image/png] OR lower(mime_type) LIKE [video/%] ESCAPE '\\') \
                 AND size >= [1] AND size <= [9] AND created_at < [5000] \
                 AND COALESCE(last_download_at, created_at) < [5001]"
            )
        );

        let mut q = Rendered::default();
        let id = Uuid::nil();
        let cursor = FileCursor {
            created_at: t,
            id: FileId::from_uuid(id),
        };
        live_files_query(&mut q, &check_filter(&FileFilter::default()).unwrap(), Some(cursor), 2);
        assert!(
            q.0.ends_with(&format!(
                "WHERE state = 'active' AND (created_at, id) > ([5000], [{id}]) ORDER BY created_at, id LIMIT [2]"
            )),
            "{}",
            q.0
        );
    }

    #[test]
    fn bounds_between_milliseconds_are_exact() {
        let t = DateTime::from_timestamp_millis(1_000).unwrap();
        assert_eq!(ceil_ms(t), t);
        assert_eq!(ceil_ms(t + TimeDelta::microseconds(1)), t + TimeDelta::milliseconds(1));
        let id = FileId::new();
        assert_eq!(cursor_position(FileCursor { created_at: t, id }), (t, id.as_uuid()));
        assert_eq!(
            cursor_position(FileCursor {
                created_at: t + TimeDelta::microseconds(999),
                id
            }),
            (t, Uuid::max())
        );
    }

    #[test]
    fn filters_refuse_what_cannot_be_queried() {
        let too_big = FileFilter {
            max_size: Some(u64::MAX),
            ..FileFilter::default()
        };
        assert!(matches!(check_filter(&too_big), Err(CatalogError::InvalidFilter(_))));
        let many = FileFilter {
            owners: (0..=i64::try_from(MAX_FILTER_VALUES).unwrap()).map(UserId).collect(),
            ..FileFilter::default()
        };
        assert!(matches!(check_filter(&many), Err(CatalogError::InvalidFilter(_))));
    }

    #[test]
    fn keys_are_asked_once_each() {
        let keys: Vec<ObjectKey> = ["b/1", "a/1", "b/1"].iter().map(|k| k.parse().unwrap()).collect();
        assert_eq!(distinct_keys(&keys), vec!["a/1", "b/1"]);
        let mut q = Rendered::default();
        referenced_query(&mut q, &["a/1", "b/1"]);
        assert_eq!(q.0, "SELECT object_key FROM blobs WHERE object_key IN ([a/1], [b/1])");
    }
}
