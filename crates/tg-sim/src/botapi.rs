//! Entry point of the Bot API routes: `/bot<token>/<method>` and
//! `/file/bot<token>/<path>`.
//!
//! Paths are parsed by hand rather than with router patterns because the
//! token sits inside a segment (`bot123:ABC`) and the file path may come
//! with its `/` percent-encoded (teloxide sends `%2F`). Faults are applied
//! here, before a method runs, in the order latency → forced 429 → 5xx.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;

use crate::params::Params;
use crate::reply::{ApiError, ApiResult, render};
use crate::state::Inner;
use crate::{files, messages, updates};

/// Fallback handler for everything outside `/_sim/`.
pub async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["file", bot, rest @ ..] if !rest.is_empty() => {
            let Some(token_ok) = check_token(&inner, bot) else {
                return ApiError::not_found().into_response();
            };
            if !token_ok {
                return ApiError::not_found().into_response();
            }
            let raw = rest.join("/");
            let file_path = percent_decode_str(&raw).decode_utf8_lossy().into_owned();
            files::download(&inner, &method, &headers, &file_path).await
        }
        [bot, name] => match check_token(&inner, bot) {
            None => ApiError::not_found().into_response(),
            Some(false) => ApiError::unauthorized().into_response(),
            Some(true) => {
                let name = percent_decode_str(name).decode_utf8_lossy().to_ascii_lowercase();
                let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                let params = match Params::parse(uri.query(), ct, &body) {
                    Ok(p) => p,
                    Err(e) => return render(Err(ApiError::bad(&e.0))),
                };
                tracing::debug!(method = %name, "bot api call");
                render(call(&inner, &name, params).await)
            }
        },
        _ => ApiError::not_found().into_response(),
    }
}

/// `None`: not a `bot<token>` segment at all (Telegram answers 404);
/// `Some(false)`: a token, but not ours (401).
fn check_token(inner: &Inner, segment: &str) -> Option<bool> {
    let token = percent_decode_str(segment.strip_prefix("bot")?).decode_utf8_lossy();
    let (id, secret) = token.split_once(':')?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || secret.is_empty() {
        return None;
    }
    Some(token == inner.config.token)
}

/// Sum of the `"*"` latency and the one of `name`.
pub fn latency_for(inner: &Inner, name: &str) -> Duration {
    let st = inner.lock();
    st.faults
        .latency
        .iter()
        .filter(|(k, _)| k.as_str() == "*" || k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .sum()
}

/// Applies the latency, 429 and 5xx faults for a call of `name`.
pub async fn apply_faults(inner: &Inner, name: &str) -> Result<(), ApiError> {
    let delay = latency_for(inner, name);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut st = inner.lock();
    if let Some(f) = st.faults.force_429.as_mut() {
        let applies = match &f.method {
            Some(m) => m.eq_ignore_ascii_case(name),
            None => name != "download",
        };
        if applies && f.count > 0 {
            f.count -= 1;
            return Err(ApiError::too_many(f.retry_after));
        }
    }
    let rate = st.faults.error_rate_5xx;
    if name != "download" && rate > 0.0 && rand::random::<f64>() < rate {
        return Err(ApiError::bad_gateway());
    }
    Ok(())
}

/// Runs one Bot API method.
async fn call(inner: &Arc<Inner>, name: &str, params: Params) -> ApiResult {
    apply_faults(inner, name).await?;
    match name {
        "getme" => messages::get_me(inner),
        "getupdates" => updates::get_updates(inner, &params).await,
        "setwebhook" => updates::set_webhook(inner, &params),
        "deletewebhook" => updates::delete_webhook(inner, &params),
        "getwebhookinfo" => updates::get_webhook_info(inner),
        "getfile" => files::get_file(inner, &params).await,
        "sendmessage" => messages::send_message(inner, &params),
        "editmessagetext" => messages::edit_message_text(inner, &params),
        "editmessagereplymarkup" => messages::edit_message_reply_markup(inner, &params),
        "deletemessage" => messages::delete_message(inner, &params),
        "sendchataction" => messages::send_chat_action(inner, &params),
        "answercallbackquery" => messages::answer_callback_query(inner, &params),
        "setmycommands" => messages::set_my_commands(inner, &params),
        "getmycommands" => messages::get_my_commands(inner, &params),
        "deletemycommands" => messages::delete_my_commands(inner, &params),
        _ => Err(ApiError::not_found()),
    }
}
