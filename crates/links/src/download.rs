//! `GET`/`HEAD /download/{token}`.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::str::FromStr;
use std::time::Duration;
use teledrop_core::{FileRecord, LinkRecord, LinkToken, report};
use teledrop_storage::StorageError;

use crate::conditional::Validators;
use crate::content_type::{ServedType, classify};
use crate::counter::Admission;
use crate::disposition::{Disposition, content_disposition};
use crate::lookup::SMALL_FILE;
use crate::range::{self, ByteRange, RangeRequest};
use crate::response::security_headers;
use crate::{LinksError, LinksState};

/// Longest a response may be cached by the browser, in seconds. Short,
/// so that a revoked link stops serving soon even from a cache; repeat
/// visits revalidate cheaply with 304.
const MAX_AGE_SECS: i64 = 300;

/// How often a request reads the catalog optimistically when flushes keep
/// interleaving with its reads, before it reads once more holding the
/// flush gate.
const ADMIT_ATTEMPTS: usize = 4;

/// How long a request waits for a running flush before reading anyway.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// At most this much of a token reaches logs.
const TOKEN_LOG_CHARS: usize = 8;

/// What a request will be answered with, decided from its headers and
/// the file's metadata before any byte is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    NotModified,
    Full,
    Partial(ByteRange),
    Unsatisfiable,
}

impl Plan {
    fn decide(method: &Method, headers: &HeaderMap, file: &FileRecord, validators: &Validators) -> Self {
        // RFC 9110 §13.2.2: If-None-Match / If-Modified-Since come
        // before Range.
        if validators.not_modified(headers) {
            return Self::NotModified;
        }
        // Range is defined for GET only (RFC 9110 §14.2).
        if method != Method::GET {
            return Self::Full;
        }
        let mut ranges = headers.get_all(header::RANGE).iter();
        let range = match (ranges.next(), ranges.next()) {
            (Some(r), None) => r,
            _ => return Self::Full,
        };
        if !validators.if_range_allows(headers) {
            return Self::Full;
        }
        match range::evaluate(range.as_bytes(), file.size) {
            RangeRequest::Full => Self::Full,
            RangeRequest::Partial(r) => Self::Partial(r),
            RangeRequest::Unsatisfiable => Self::Unsatisfiable,
        }
    }

    /// A GET that starts a body from its first byte is a download.
    fn counts(self, method: &Method) -> bool {
        method == Method::GET
            && match self {
                Self::Full => true,
                Self::Partial(r) => r.first == 0,
                Self::NotModified | Self::Unsatisfiable => false,
            }
    }
}

pub(crate) async fn download(
    State(state): State<LinksState>,
    method: Method,
    token: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, LinksError> {
    let span = tracing::Span::current();
    // Nothing that is not a canonical token goes further, not even to the
    // catalog.
    let Ok(token) = token
        .map_err(drop)
        .and_then(|Path(raw)| LinkToken::from_str(&raw).map_err(drop))
    else {
        span.record("token", "malformed");
        return Err(LinksError::NotFound);
    };
    let shown = token.to_string();
    span.record("token", &shown[..TOKEN_LOG_CHARS]);

    let now = Utc::now();
    let Admitted {
        link,
        file,
        body: kept,
        plan,
        counted,
    } = admit(&state, token, &method, &headers, now).await?;
    span.record("file_id", tracing::field::display(file.id));

    let validators = Validators::new(file.sha256.to_hex(), file.created_at);
    let served = classify(&file.mime_type);
    let disposition = if state.inner.config.inline_preview && wants_inline(query.as_deref()) && served.previewable {
        Disposition::Inline
    } else {
        Disposition::Attachment
    };

    let mut response_headers = HeaderMap::new();
    security_headers(&mut response_headers);
    response_headers.insert(header::ETAG, validators.etag());
    response_headers.insert(header::LAST_MODIFIED, validators.last_modified());
    response_headers.insert(header::CACHE_CONTROL, cache_control(&link, now));

    let range = match plan {
        Plan::NotModified => {
            return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
        }
        Plan::Unsatisfiable => return Err(LinksError::RangeNotSatisfiable { total: file.size }),
        Plan::Full => None,
        Plan::Partial(r) => Some(r),
    };

    representation_headers(&mut response_headers, &file, &served, disposition);

    if method == Method::HEAD {
        // Same headers as a GET; the object must exist for the GET to
        // (bytes kept from a read less than a lookup lifetime ago say so).
        if kept.is_none() && state.inner.storage.head(&file.object_key).await?.is_none() {
            state.inner.lookups.forget(token);
            return Err(LinksError::ObjectMissing);
        }
        response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
        return Ok((StatusCode::OK, response_headers, Body::empty()).into_response());
    }

    if let Some(bytes) = kept {
        return Ok(from_memory(&state, bytes, range, response_headers));
    }
    let read = match state
        .inner
        .storage
        .get(&file.object_key, range.map(ByteRange::to_range))
        .await
    {
        Ok(read) => read,
        Err(e) => {
            if counted {
                state.inner.counter.uncount(file.id);
            }
            if matches!(e, StorageError::NotFound) {
                // Deleted since the lookup, maybe: the next request asks
                // the catalog, which says why.
                state.inner.lookups.forget(token);
            }
            return Err(match e {
                StorageError::InvalidRange => LinksError::RangeNotSatisfiable { total: file.size },
                other => other.into(),
            });
        }
    };
    if read.total_size != file.size {
        tracing::warn!(
            file_id = %file.id,
            catalog = file.size,
            storage = read.total_size,
            "object size differs from the catalog's; serving the stored bytes"
        );
    }
    let length = read.range.end - read.range.start;
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let status = match range {
        None => StatusCode::OK,
        Some(_) => {
            let served_range = ByteRange {
                first: read.range.start,
                last: read.range.end.saturating_sub(1),
            };
            if let Ok(v) = HeaderValue::from_str(&served_range.content_range(read.total_size)) {
                response_headers.insert(header::CONTENT_RANGE, v);
            }
            StatusCode::PARTIAL_CONTENT
        }
    };
    tracing::debug!(status = status.as_u16(), bytes = length, counted, "streaming file");

    let file_id = file.id;
    if range.is_none() && read.total_size == file.size && file.size <= SMALL_FILE {
        // Small enough to keep for the next request (see `lookup`); read
        // whole here, so it is sent as one chunk either way.
        let chunks: Vec<Bytes> = match read.stream.try_collect().await {
            Ok(chunks) => chunks,
            Err(e) => {
                if counted {
                    state.inner.counter.uncount(file.id);
                }
                return Err(e.into());
            }
        };
        let bytes = Bytes::from(chunks.concat());
        state.inner.lookups.keep_body(token, &bytes);
        state.inner.metrics.served(bytes.len());
        return Ok((status, response_headers, Body::from(bytes)).into_response());
    }
    // Counted as the bytes go out, so a download broken off counts what
    // was sent, not the file's size.
    let sent = state.clone();
    let body = Body::from_stream(
        read.stream
            .inspect_ok(move |chunk| sent.inner.metrics.served(chunk.len()))
            .inspect_err(move |e| {
                tracing::warn!(%file_id, error = e.label(), detail = %report(e), "reading the object failed mid-stream");
            }),
    );
    Ok((status, response_headers, body).into_response())
}

/// A small file's bytes kept with its lookup, answered without storage.
fn from_memory(state: &LinksState, bytes: Bytes, range: Option<ByteRange>, mut headers: HeaderMap) -> Response {
    let total = bytes.len() as u64;
    let (status, body) = match range {
        None => (StatusCode::OK, bytes),
        Some(r) => {
            // `Plan::decide` evaluated the range against this size.
            let served = r.to_range();
            if let Ok(v) = HeaderValue::from_str(&r.content_range(total)) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            let body = bytes.slice(served.start as usize..served.end as usize);
            (StatusCode::PARTIAL_CONTENT, body)
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    state.inner.metrics.served(body.len());
    (status, headers, Body::from(body)).into_response()
}

/// What [`admit`] lets through.
struct Admitted {
    link: LinkRecord,
    file: FileRecord,
    /// The file's bytes, kept from a recent read (see `lookup`).
    body: Option<Bytes>,
    plan: Plan,
    /// Whether this request was counted as a download.
    counted: bool,
}

/// Resolves the token and admits the request: the link must serve, and
/// a download is counted when the plan makes this request one.
async fn admit(
    state: &LinksState,
    token: LinkToken,
    method: &Method,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Result<Admitted, LinksError> {
    let inner = &state.inner;
    let mut attempt = 0;
    loop {
        attempt += 1;
        // The last attempt keeps flushes out while it reads and decides,
        // so it cannot be stale; earlier ones never block a flush.
        let _gate = if attempt == ADMIT_ATTEMPTS {
            Some(inner.flush_gate.read().await)
        } else {
            None
        };
        // Only a stale admission (a limited link read across a flush)
        // waits for the flush to end; the first read never waits.
        let epoch = if attempt == 1 {
            inner.counter.epoch()
        } else {
            inner.counter.settled_epoch(FLUSH_WAIT).await
        };
        // The first attempt may use a recent lookup (`lookup`: never one
        // of a limited link, whose count must be read fresh).
        let cached = if attempt == 1 { inner.lookups.get(token) } else { None };
        let (link, file, body) = match cached {
            Some(found) => (found.link, found.file, found.body),
            None => {
                let read_at = std::time::Instant::now();
                let Some((link, file)) = inner.catalog.resolve_link(token).await? else {
                    return Err(LinksError::NotFound);
                };
                inner.lookups.put(read_at, &link, &file);
                (link, file, None)
            }
        };
        let validators = Validators::new(file.sha256.to_hex(), file.created_at);
        let plan = Plan::decide(method, headers, &file, &validators);
        let count = plan.counts(method);
        match inner.counter.admit(epoch, &link, &file, now, count) {
            Admission::Admitted { counted } => {
                return Ok(Admitted {
                    link,
                    file,
                    body,
                    plan,
                    counted,
                });
            }
            Admission::Gone(gone) => return Err(LinksError::Gone(gone)),
            Admission::Stale if attempt == ADMIT_ATTEMPTS => {
                // Unreachable while the gate is held; refuse rather than
                // risk serving past a limit.
                return Err(LinksError::Busy);
            }
            Admission::Stale => tracing::trace!(attempt, "a flush interleaved with the catalog read; reading again"),
        }
    }
}

/// `Content-Type`, `Content-Disposition`, `Accept-Ranges` and the content
/// security policy of the file's bytes.
fn representation_headers(headers: &mut HeaderMap, file: &FileRecord, served: &ServedType, disposition: Disposition) {
    headers.insert(header::CONTENT_TYPE, served.header_value());
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(disposition, &file.name),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Opened directly, the bytes must not run anything. Browsers' PDF
    // viewers refuse to run in a sandboxed document (Chrome shows "This
    // page has been blocked"), so an inline PDF goes without; PDF is a
    // passive type whose scripting, where supported, is confined to the
    // viewer.
    if !(disposition == Disposition::Inline && served.is_pdf) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox",
            ),
        );
    }
}

/// Private (a link is personal), and never cached past the link's expiry.
fn cache_control(link: &LinkRecord, now: DateTime<Utc>) -> HeaderValue {
    let max_age = link
        .expires_at
        .map_or(MAX_AGE_SECS, |t| (t - now).num_seconds().clamp(0, MAX_AGE_SECS));
    HeaderValue::from_str(&format!("private, max-age={max_age}")).unwrap_or(HeaderValue::from_static("no-store"))
}

/// Whether the query asks for inline display: `?inline`, `?inline=1`,
/// `?inline=true` (not `inline=0`/`false`/`no`).
fn wants_inline(query: Option<&str>) -> bool {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .any(|(k, v)| k == "inline" && !matches!(v, "0" | "false" | "no"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_flag() {
        assert!(wants_inline(Some("inline")));
        assert!(wants_inline(Some("inline=")));
        assert!(wants_inline(Some("a=b&inline=1")));
        assert!(wants_inline(Some("inline=true")));
        assert!(!wants_inline(Some("inline=0")));
        assert!(!wants_inline(Some("inline=false")));
        assert!(!wants_inline(Some("inlined")));
        assert!(!wants_inline(Some("")));
        assert!(!wants_inline(None));
    }

    #[test]
    fn what_counts_as_a_download() {
        let get = Method::GET;
        let head = Method::HEAD;
        assert!(Plan::Full.counts(&get));
        assert!(Plan::Partial(ByteRange { first: 0, last: 9 }).counts(&get));
        assert!(!Plan::Partial(ByteRange { first: 1, last: 9 }).counts(&get));
        assert!(!Plan::NotModified.counts(&get));
        assert!(!Plan::Unsatisfiable.counts(&get));
        assert!(!Plan::Full.counts(&head));
    }
}
