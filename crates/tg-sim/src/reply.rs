//! The Bot API's answer envelope.
//!
//! Every answer is `{"ok":true,"result":…}` (optionally with a
//! `description`) or `{"ok":false,"error_code":N,"description":"…"}`;
//! 429s add `"parameters":{"retry_after":N}` and a `Retry-After` header.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A failed Bot API call.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub description: String,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        ApiError {
            code,
            description: description.into(),
            retry_after: None,
        }
    }
    /// 400 `Bad Request: {msg}`.
    pub fn bad(msg: &str) -> Self {
        Self::new(400, format!("Bad Request: {msg}"))
    }
    pub fn not_found() -> Self {
        Self::new(404, "Not Found")
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized")
    }
    pub fn chat_not_found() -> Self {
        Self::bad("chat not found")
    }
    pub fn blocked() -> Self {
        Self::new(403, "Forbidden: bot was blocked by the user")
    }
    pub fn too_many(retry_after: u32) -> Self {
        ApiError {
            code: 429,
            description: format!("Too Many Requests: retry after {retry_after}"),
            retry_after: Some(retry_after),
        }
    }
    pub fn bad_gateway() -> Self {
        Self::new(502, "Bad Gateway")
    }
}

/// A successful call: the result and an optional description (setWebhook
/// says "Webhook was set").
#[derive(Debug)]
pub struct ApiOk {
    pub result: Value,
    pub description: Option<&'static str>,
}

impl From<Value> for ApiOk {
    fn from(result: Value) -> Self {
        ApiOk {
            result,
            description: None,
        }
    }
}

pub type ApiResult = Result<ApiOk, ApiError>;

/// Shorthand for `Ok(result.into())`.
pub fn ok(result: Value) -> ApiResult {
    Ok(result.into())
}

/// Renders an [`ApiResult`] as an HTTP response.
pub fn render(res: ApiResult) -> Response {
    match res {
        Ok(ApiOk { result, description }) => {
            let mut body = json!({ "ok": true, "result": result });
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            json_response(StatusCode::OK, &body)
        }
        Err(e) => e.into_response(),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "ok": false, "error_code": self.code, "description": self.description });
        if let Some(ra) = self.retry_after {
            body["parameters"] = json!({ "retry_after": ra });
        }
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = json_response(status, &body);
        if let Some(ra) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ra));
        }
        resp
    }
}
