//! getFile and the file download route.
//!
//! Cloud mode (the default) behaves like api.telegram.org: `getFile`
//! refuses files over 20 MB and otherwise hands out a relative
//! `file_path` (`documents/file_3.pdf`), valid on
//! `GET /file/bot<token>/<file_path>` (the `/` may come as `%2F`). The
//! body is generated on the fly in 64 KiB chunks, paced and cut by the
//! download faults; single `Range`s are served too.
//!
//! Local mode behaves like `telegram-bot-api --local`: no size limit,
//! `getFile` "fetches" the content into
//! `<local_dir>/<token>/<folder>/file_N.ext` at the configured rate and
//! only then returns that absolute path (the request stays open
//! meanwhile), and the download route answers 404.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::botapi::apply_faults;
use crate::content::{self, CHUNK};
use crate::local_fetch::{self, FetchSpec};
use crate::params::Params;
use crate::reply::{ApiError, ApiResult, ok};
use crate::state::{FileIdEntry, Inner, State};

/// The cloud Bot API's download limit: 20 MB.
pub const CLOUD_DOWNLOAD_LIMIT: u64 = 20 * 1024 * 1024;

pub async fn get_file(inner: &Arc<Inner>, p: &Params) -> ApiResult {
    let file_id = p.str("file_id").unwrap_or_default();
    let local = inner.config.local_mode;
    let (entry, path) = {
        let mut st = inner.lock();
        let Some(entry) = st.file_ids.get(&file_id).cloned() else {
            return Err(ApiError::bad("invalid file_id"));
        };
        if !local && entry.record.size > CLOUD_DOWNLOAD_LIMIT {
            return Err(ApiError::bad("file is too big"));
        }
        let path = assign_path(&mut st, &file_id).unwrap_or_default();
        (entry, path)
    };
    entry.local.count_call();
    let file_path = if let (true, Some(p)) = (local, &entry.local_override) {
        p.clone()
    } else if local {
        let abs = write_local(inner, &entry, &path).await.map_err(|e| {
            tracing::error!(error = %e, "local mode: writing the file failed");
            ApiError::new(500, "Internal Server Error: can't save file")
        })?;
        abs.to_string_lossy().into_owned()
    } else {
        path
    };
    ok(json!({
        "file_id": file_id,
        "file_unique_id": entry.record.unique_id,
        "file_size": entry.record.size,
        "file_path": file_path,
    }))
}

/// The relative `file_path` of `file_id`, assigned on first use as the
/// real API does (`<folder>/file_<N><ext>`). `None` for unknown ids.
pub fn assign_path(st: &mut State, file_id: &str) -> Option<String> {
    let entry = st.file_ids.get(file_id)?;
    if let Some(p) = &entry.path {
        return Some(p.clone());
    }
    let path = format!("{}/file_{}{}", entry.kind.folder(), st.next_path, entry.ext);
    st.next_path += 1;
    st.paths.insert(path.clone(), file_id.to_owned());
    if let Some(e) = st.file_ids.get_mut(file_id) {
        e.path = Some(path.clone());
    }
    Some(path)
}

/// The local-mode copy's absolute path once it is complete (see
/// [`crate::local_fetch`]: as slow as the configured fetch rate).
async fn write_local(inner: &Inner, entry: &FileIdEntry, rel: &str) -> std::io::Result<PathBuf> {
    let spec = FetchSpec {
        key: entry.record.key,
        size: entry.record.size,
        target: local_fetch::target(&inner.config.local_dir, &inner.config.token, rel)?,
        rate: inner.config.local_fetch_rate,
    };
    entry.local.get(spec, &inner.shutdown).await
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → half-open range; `Err` when
/// unsatisfiable; `None` when absent or not understood (serve it all).
fn parse_range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>().ok()?.saturating_add(1).min(size)
        };
        (start, end)
    };
    Some(if range.0 >= range.1 { Err(()) } else { Ok(range) })
}

/// How long a cut download stays open after its last byte (see below).
const CUT_FLUSH_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

struct Gen {
    key: u64,
    pos: u64,
    end: u64,
    sent: u64,
    cut: Option<u64>,
    rate: Option<u64>,
    started: Instant,
}

impl Gen {
    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Gen)> {
        if self.pos >= self.end {
            return None;
        }
        let mut n = (self.end - self.pos).min(CHUNK as u64);
        if let Some(rate) = self.rate {
            // Smaller chunks at low rates keep the pacing smooth.
            n = n.min((rate / 10).max(1024));
        }
        if let Some(cut) = self.cut {
            if self.sent >= cut {
                // Ending the body short of its Content-Length makes hyper
                // close the connection: the client sees a truncated body.
                // hyper drops what it has not written yet when it does, so
                // first stay pending a moment: while the body is pending
                // hyper flushes, and the client gets exactly `cut` bytes.
                tokio::time::sleep(CUT_FLUSH_GRACE).await;
                return None;
            }
            n = n.min(cut - self.sent);
        }
        let mut buf = vec![0u8; n as usize];
        content::fill(self.key, self.pos, &mut buf);
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = std::time::Duration::from_secs_f64((self.sent + n) as f64 / rate as f64);
            tokio::time::sleep_until((self.started + due).into()).await;
        }
        self.pos += n;
        self.sent += n;
        Some((Ok(Bytes::from(buf)), self))
    }
}

pub async fn download(inner: &Inner, method: &Method, headers: &HeaderMap, file_path: &str) -> Response {
    if inner.config.local_mode || (method != Method::GET && method != Method::HEAD) {
        return ApiError::not_found().into_response();
    }
    let record = {
        let st = inner.lock();
        let Some(record) = st
            .paths
            .get(file_path)
            .and_then(|id| st.file_ids.get(id))
            .map(|e| e.record.clone())
        else {
            return ApiError::not_found().into_response();
        };
        record
    };
    if let Err(e) = apply_faults(inner, "download").await {
        return e.into_response();
    }
    let (rate, cut) = {
        let st = inner.lock();
        (st.faults.download_bytes_per_sec, st.faults.cut_download_after)
    };
    let size = record.size;
    let (status, start, end) = match parse_range(headers, size) {
        None => (StatusCode::OK, 0, size),
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Some(Err(())) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let generator = Gen {
            key: record.key,
            pos: start,
            end,
            sent: 0,
            cut,
            rate,
            started: Instant::now(),
        };
        Body::from_stream(futures::stream::unfold(generator, Gen::next_chunk))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}
