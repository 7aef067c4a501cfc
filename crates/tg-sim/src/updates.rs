//! Getting updates: getUpdates (long polling) and the webhook settings
//! methods. The pushing itself lives in [`crate::webhook`].
//!
//! getUpdates semantics, as Telegram's: a positive `offset` confirms (and
//! forgets) every update below it; a negative one keeps only the last
//! `-offset` updates; a call that finds nothing waits up to `timeout`
//! seconds and returns as soon as an update arrives; a newer call ends an
//! older waiting one with 409 "terminated by other getUpdates request";
//! while a webhook is set the method answers 409.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::params::Params;
use crate::reply::{ApiError, ApiOk, ApiResult, ok};
use crate::state::{Inner, State, UpdateBody, Webhook};

fn webhook_conflict() -> ApiError {
    ApiError::new(
        409,
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
    )
}

fn terminated() -> ApiError {
    ApiError::new(
        409,
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
    )
}

fn allowed_updates(p: &Params) -> Result<Option<Vec<String>>, ApiError> {
    match p.json("allowed_updates") {
        Ok(None) => Ok(None),
        Ok(Some(Value::Array(a))) => Ok(Some(a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())),
        _ => Err(ApiError::bad("can't parse allowed updates")),
    }
}

/// Up to `limit` JSON updates from the queue (raw-byte ones are webhook
/// only and skipped).
fn collect(st: &State, limit: usize) -> Vec<Value> {
    st.queue
        .iter()
        .filter_map(|u| match &u.body {
            UpdateBody::Json(v) => Some(v.clone()),
            UpdateBody::Raw(_) => None,
        })
        .take(limit)
        .collect()
}

pub async fn get_updates(inner: &Arc<Inner>, p: &Params) -> ApiResult {
    let offset = p
        .i64("offset")
        .map_err(|()| ApiError::bad("wrong parameter offset"))?
        .unwrap_or(0);
    let limit = p
        .i64("limit")
        .map_err(|()| ApiError::bad("wrong parameter limit"))?
        .unwrap_or(100)
        .clamp(1, 100);
    let timeout = p
        .i64("timeout")
        .map_err(|()| ApiError::bad("wrong parameter timeout"))?
        .unwrap_or(0)
        .max(0);
    let allowed = allowed_updates(p)?;

    let (my_gen, mut updates_rx, mut polls_rx) = {
        let mut st = inner.lock();
        if st.webhook.is_some() {
            return Err(webhook_conflict());
        }
        if allowed.is_some() {
            st.allowed_updates = allowed;
        }
        st.prune_expired();
        if offset > 0 {
            st.queue.retain(|u| u.update_id >= offset);
        } else if offset < 0 {
            let keep = offset.unsigned_abs() as usize;
            while st.queue.len() > keep {
                st.queue.pop_front();
            }
        }
        st.poll_generation += 1;
        let found = collect(&st, limit as usize);
        if !found.is_empty() || timeout == 0 {
            drop(st);
            inner.polls_tx.send_modify(|v| *v += 1);
            return ok(Value::Array(found));
        }
        // Subscribe while locked: any update queued after this is seen.
        (
            st.poll_generation,
            inner.updates_tx.subscribe(),
            inner.polls_tx.subscribe(),
        )
    };
    // Tell older waiting calls they have been superseded (this call sees
    // its own signal too, and ignores it: the generation is still its own).
    inner.polls_tx.send_modify(|v| *v += 1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout as u64);
    let _waiting = WaitingPoll::new(inner);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return ok(json!([])),
            _ = inner.shutdown.cancelled() => return ok(json!([])),
            changed = polls_rx.changed() => {
                if changed.is_err() || inner.lock().poll_generation != my_gen {
                    return Err(terminated());
                }
            }
            changed = updates_rx.changed() => {
                if changed.is_err() {
                    return ok(json!([]));
                }
                let st = inner.lock();
                if st.webhook.is_some() {
                    return ok(json!([]));
                }
                let found = collect(&st, limit as usize);
                if !found.is_empty() {
                    return ok(Value::Array(found));
                }
            }
        }
    }
}

/// Counts a waiting `getUpdates` call for [`crate::SimStatus`] while alive.
struct WaitingPoll<'a>(&'a Inner);

impl<'a> WaitingPoll<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.waiting_polls.fetch_add(1, Ordering::SeqCst);
        WaitingPoll(inner)
    }
}

impl Drop for WaitingPoll<'_> {
    fn drop(&mut self) {
        self.0.waiting_polls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Telegram's rule for secret tokens: 1–256 of `A-Za-z0-9_-`.
fn valid_secret(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn set_webhook(inner: &Inner, p: &Params) -> ApiResult {
    let url = p.str("url").unwrap_or_default();
    if url.is_empty() {
        return delete_webhook(inner, p);
    }
    let parsed = url::Url::parse(&url).map_err(|_| ApiError::bad("invalid webhook URL specified"))?;
    // Telegram insists on HTTPS; a simulator on loopback must allow HTTP.
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::bad("bad webhook: Wrong URL host"));
    }
    let secret = p.str("secret_token").filter(|s| !s.is_empty());
    if secret.as_deref().is_some_and(|s| !valid_secret(s)) {
        return Err(ApiError::bad("secret token contains unallowed characters"));
    }
    let max_connections = p
        .i64("max_connections")
        .map_err(|()| ApiError::bad("wrong parameter max_connections"))?
        .unwrap_or(40)
        .clamp(1, 100) as u32;
    let allowed = allowed_updates(p)?;
    {
        let mut st = inner.lock();
        if p.bool("drop_pending_updates") {
            st.queue.clear();
        }
        let previous_allowed = st.webhook.as_ref().and_then(|w| w.allowed_updates.clone());
        st.webhook_generation += 1;
        if st.webhook.as_ref().map(|w| w.url.as_str()) != Some(parsed.as_str()) {
            st.last_error = None;
        }
        // Tasks of the previous setting are told to stop via the generation.
        for u in st.queue.iter_mut() {
            u.in_flight = false;
        }
        st.webhook = Some(Webhook {
            url: parsed,
            secret,
            max_connections,
            allowed_updates: allowed.or(previous_allowed),
            generation: st.webhook_generation,
            connections: Arc::new(tokio::sync::Semaphore::new(max_connections as usize)),
        });
    }
    inner.notify_updates();
    Ok(ApiOk {
        result: json!(true),
        description: Some("Webhook was set"),
    })
}

pub fn delete_webhook(inner: &Inner, p: &Params) -> ApiResult {
    let was_set = {
        let mut st = inner.lock();
        if p.bool("drop_pending_updates") {
            st.queue.clear();
        }
        st.webhook_generation += 1;
        for u in st.queue.iter_mut() {
            u.in_flight = false;
        }
        st.webhook.take().is_some()
    };
    inner.notify_updates();
    let description = if was_set {
        "Webhook was deleted"
    } else {
        "Webhook is already deleted"
    };
    Ok(ApiOk {
        result: json!(true),
        description: Some(description),
    })
}

pub fn get_webhook_info(inner: &Inner) -> ApiResult {
    let mut st = inner.lock();
    st.prune_expired();
    let mut info = json!({
        "url": st.webhook.as_ref().map(|w| w.url.to_string()).unwrap_or_default(),
        "has_custom_certificate": false,
        "pending_update_count": st.queue.len(),
    });
    if let Some(w) = &st.webhook {
        info["max_connections"] = json!(w.max_connections);
        if let Some(url::Host::Ipv4(ip)) = w.url.host() {
            info["ip_address"] = json!(ip.to_string());
        }
        if let Some(a) = &w.allowed_updates {
            info["allowed_updates"] = json!(a);
        }
    }
    if let Some((date, msg)) = &st.last_error {
        info["last_error_date"] = json!(date);
        info["last_error_message"] = json!(msg);
    }
    ok(info)
}
