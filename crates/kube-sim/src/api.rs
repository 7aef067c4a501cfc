//! The HTTP side: authentication, fault injection, the request log, and
//! the verbs (get, list, watch, create, update, patch, delete) on the
//! served types. Unknown paths are answered 404 and recorded, which is
//! how a test finds out a client asked for something not simulated.

use crate::resource::{Target, parse_path};
use crate::selector::Selector;
use crate::state::{RecordedRequest, Shared};
use crate::status::ApiError;
use crate::store::PatchKind;
use crate::watch;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn error(e: &ApiError) -> Response {
    json_response(e.status(), &e.to_json())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = respond(&shared, &method, &uri, &headers, content_type.as_deref(), &body);
    let status = response.status().as_u16();
    if status == 404 && parse_path(uri.path()).is_none() {
        tracing::warn!(%method, %uri, "kube-sim: request for something not simulated");
    }
    shared.log(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        content_type,
        status,
    });
    response
}

fn respond(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: &[u8],
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(shared.token.as_str()) {
        return error(&ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"));
    }
    if shared.outage.load(Ordering::SeqCst) {
        return error(&ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "injected outage (kube-sim outage)",
        ));
    }
    if shared
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return error(&ApiError::internal("injected failure (kube-sim fail_next)"));
    }
    let Some(target) = parse_path(uri.path()) else {
        return error(&ApiError::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let query: HashMap<String, String> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    if query.contains_key("dryRun") {
        return error(&ApiError::bad_request("kube-sim does not simulate dryRun"));
    }
    match verb(shared, method, &target, &query, headers, content_type, body) {
        Ok(r) => r,
        Err(e) => error(&e),
    }
}

/// The field manager of a write: `fieldManager`, else the client's
/// user agent up to its first `/`, as the API server defaults it.
fn manager(query: &HashMap<String, String>, headers: &HeaderMap) -> String {
    query.get("fieldManager").cloned().unwrap_or_else(|| {
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .unwrap_or("unknown")
            .to_owned()
    })
}

fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let yaml = content_type.is_some_and(|c| c.contains("yaml"));
    let parsed = if yaml {
        serde_yaml::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| ApiError::bad_request(format!("the request body could not be decoded: {e}")))
}

fn verb(
    shared: &Arc<Shared>,
    method: &Method,
    target: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let r = target.resource;
    let status = match target.subresource.as_deref() {
        None => false,
        Some("status") if r.status_subresource => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("subresource {other} of {} is not served", r.plural),
            ));
        }
    };
    let ns = target.namespace.as_deref();
    let named = |what: &str| -> Result<(&str, &str), ApiError> {
        match (ns, target.name.as_deref()) {
            (Some(ns), Some(name)) => Ok((ns, name)),
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{what} needs a namespaced object path"),
            )),
        }
    };
    let ok = |code, v: Value| Ok(json_response(code, &v));
    match *method {
        Method::GET if target.name.is_some() => {
            let (ns, name) = named("get")?;
            ok(StatusCode::OK, shared.store().get(r, ns, name)?)
        }
        Method::GET => {
            let selector = Selector::parse(
                query.get("labelSelector").map(String::as_str),
                query.get("fieldSelector").map(String::as_str),
            )?;
            let watching = query.get("watch").is_some_and(|w| w == "1" || w == "true");
            if watching {
                return Ok(watch::serve(shared.clone(), r, ns, selector, query));
            }
            list(shared, target, selector, query)
        }
        Method::POST if target.name.is_none() && ns.is_some() => {
            let obj = parse_body(content_type, body)?;
            let created = shared
                .store()
                .create(r, ns.unwrap_or_default(), obj, &manager(query, headers))?;
            ok(StatusCode::CREATED, created)
        }
        Method::PUT => {
            let (ns, name) = named("update")?;
            let obj = parse_body(content_type, body)?;
            ok(
                StatusCode::OK,
                shared
                    .store()
                    .update(r, ns, name, status, obj, &manager(query, headers))?,
            )
        }
        Method::PATCH => {
            let (ns, name) = named("patch")?;
            let kind = match content_type.and_then(|c| c.split(';').next()).map(str::trim) {
                Some("application/json-patch+json") => PatchKind::Json,
                Some("application/merge-patch+json") => PatchKind::Merge,
                Some("application/strategic-merge-patch+json") => PatchKind::Strategic,
                Some("application/apply-patch+yaml") => {
                    if !query.contains_key("fieldManager") {
                        return Err(ApiError::bad_request("PATCH with apply requires fieldManager"));
                    }
                    PatchKind::Apply {
                        force: query.get("force").is_some_and(|f| f == "true"),
                    }
                }
                other => {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format: {other:?}"),
                    ));
                }
            };
            let patch = parse_body(content_type, body)?;
            let patched = shared
                .store()
                .patch(r, ns, name, status, kind, &patch, &manager(query, headers))?;
            ok(StatusCode::OK, patched)
        }
        Method::DELETE => {
            let (ns, name) = named("delete")?;
            ok(StatusCode::OK, shared.store().delete(r, ns, name)?)
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        )),
    }
}

/// A list, paginated with `limit`/`continue` unless served from "any"
/// version (`resourceVersion=0`), where the API server ignores `limit`.
fn list(
    shared: &Arc<Shared>,
    target: &Target,
    selector: Selector,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let r = target.resource;
    let (items, rv) = shared.store().list(r, target.namespace.as_deref());
    let asked = query.get("resourceVersion").map(String::as_str).unwrap_or("");
    if query.get("resourceVersionMatch").map(String::as_str) == Some("Exact") && asked != rv.to_string() {
        // Only the current state is kept, not snapshots.
        return Err(ApiError::expired(asked));
    }
    let mut items: Vec<Value> = items.into_iter().filter(|o| selector.matches(o)).collect();
    let mut continue_token = None;
    if let Some(token) = query.get("continue").filter(|t| !t.is_empty()) {
        let (from_rv, offset) = token
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)))
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        if from_rv != rv {
            return Err(ApiError::expired(&from_rv.to_string()));
        }
        items.drain(..offset.min(items.len()));
        continue_token = Some(offset);
    }
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = limit.filter(|_| asked != "0")
        && items.len() > limit
    {
        items.truncate(limit);
        meta["continue"] = format!("{rv}:{}", continue_token.unwrap_or(0) + limit).into();
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": r.api_version(),
            "kind": format!("{}List", r.kind),
            "metadata": meta,
            "items": items,
        }),
    ))
}

/// The body of a watch: its events as JSON lines.
pub(crate) fn stream_response(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Response {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("a valid response")
}

use tokio_stream::StreamExt as _;
