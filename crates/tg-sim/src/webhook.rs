//! Pushing updates to the webhook, with Telegram's delivery rules.
//!
//! A dispatcher wakes whenever the queue or the webhook setting changes
//! and starts one delivery task per chat for the oldest update of that
//! chat not yet in flight: one update in flight per chat keeps each
//! chat's order, and later updates of a chat wait for the earlier one.
//! Different chats proceed in parallel; `max_connections` bounds
//! concurrent HTTP requests (a semaphore per webhook setting), not chats
//! waiting out a backoff.
//!
//! A task retries its update until a 2xx: first retry at once, then after
//! `webhook_first_retry`, doubling up to `webhook_backoff_cap`; a
//! `Retry-After` header in the bot's answer sets the next wait instead.
//! Every attempt is logged ([`crate::WebhookAttempt`]); failures set
//! `last_error_date`/`last_error_message`. A task stops when the webhook
//! is deleted or replaced (its generation changes) or when the update is
//! gone (dropped, or older than a day).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::RETRY_AFTER;

use crate::inject::now_secs;
use crate::state::{Inner, UPDATE_TTL};
use crate::types::WebhookAttempt;

/// Runs until shutdown.
pub async fn dispatcher(inner: Arc<Inner>) {
    loop {
        let mut rx = inner.updates_tx.subscribe();
        let jobs = pick_jobs(&inner);
        for (generation, update_id, chat_id) in jobs {
            tokio::spawn(deliver(inner.clone(), generation, update_id, chat_id));
        }
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

/// Marks and returns the updates to start delivering now.
fn pick_jobs(inner: &Inner) -> Vec<(u64, i64, Option<i64>)> {
    let mut st = inner.lock();
    let Some(generation) = st.webhook.as_ref().map(|w| w.generation) else {
        return Vec::new();
    };
    st.prune_expired();
    let mut busy: HashSet<i64> = HashSet::new();
    let mut jobs = Vec::new();
    for u in st.queue.iter_mut() {
        if let Some(chat) = u.chat_id
            && !busy.insert(chat)
        {
            continue;
        }
        if u.in_flight {
            continue;
        }
        u.in_flight = true;
        jobs.push((generation, u.update_id, u.chat_id));
    }
    jobs
}

fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// The wait before attempt `next` (2 = first retry).
fn backoff(inner: &Inner, next: u32) -> Duration {
    if next <= 2 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(next - 3).unwrap_or(u32::MAX);
    inner
        .config
        .webhook_first_retry
        .saturating_mul(factor)
        .min(inner.config.webhook_backoff_cap)
}

/// Releases an update that will not be delivered by this task.
fn release(inner: &Inner, generation: u64, update_id: i64) {
    let mut st = inner.lock();
    if st.webhook.as_ref().is_some_and(|w| w.generation == generation)
        && let Some(u) = st.queue.iter_mut().find(|u| u.update_id == update_id)
    {
        u.in_flight = false;
    }
}

async fn deliver(inner: Arc<Inner>, generation: u64, update_id: i64, chat_id: Option<i64>) {
    let mut attempt = 0u32;
    let mut wait = Duration::ZERO;
    loop {
        if !wait.is_zero() {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Still our webhook, and still undelivered?
        let (hook, body) = {
            let mut st = inner.lock();
            let hook = match &st.webhook {
                Some(w) if w.generation == generation => w.clone(),
                _ => return,
            };
            let Some(pos) = st.queue.iter().position(|u| u.update_id == update_id) else {
                return;
            };
            if Instant::now().duration_since(st.queue[pos].created) >= UPDATE_TTL {
                st.queue.remove(pos);
                drop(st);
                inner.notify_updates();
                return;
            }
            (hook, st.queue[pos].body_bytes())
        };
        let Ok(permit) = hook.connections.clone().acquire_owned().await else {
            return release(&inner, generation, update_id);
        };
        attempt += 1;
        let at_ms = now_ms();
        let mut req = inner
            .http
            .post(hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(s) = &hook.secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        let outcome = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            r = req.send() => r,
        };
        let (status, error, retry_after) = match outcome {
            Ok(resp) if resp.status().is_success() => (Some(resp.status().as_u16()), None, None),
            Ok(resp) => {
                let s = resp.status();
                let ra = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let reason = s.canonical_reason().unwrap_or("");
                (
                    Some(s.as_u16()),
                    Some(format!("Wrong response from the webhook: {} {reason}", s.as_u16())),
                    ra,
                )
            }
            Err(e) => (None, Some(describe(&e)), None),
        };
        drop(permit);
        {
            let mut st = inner.lock();
            st.deliveries.push(WebhookAttempt {
                update_id,
                chat_id,
                attempt,
                status,
                error: error.clone(),
                at_ms,
            });
            match &error {
                None => {
                    // Delivered: gone from the queue, whichever generation.
                    st.queue.retain(|u| u.update_id != update_id);
                }
                Some(msg) => {
                    if st.webhook.as_ref().is_some_and(|w| w.generation == generation) {
                        st.last_error = Some((now_secs(), msg.clone()));
                    }
                }
            }
        }
        if error.is_none() {
            inner.notify_updates();
            return;
        }
        tracing::debug!(update_id, attempt, error = ?error, "webhook delivery failed");
        wait = match retry_after {
            Some(secs) => Duration::from_secs(secs),
            None => backoff(&inner, attempt + 1),
        };
    }
}

/// Telegram-style text for a failed connection.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "Read timeout expired".to_owned()
    } else if e.is_connect() {
        "Connection refused".to_owned()
    } else {
        // Walk to the innermost cause: reqwest's own text is generic.
        let mut source: &dyn std::error::Error = e;
        while let Some(s) = source.source() {
            source = s;
        }
        format!("Connection error: {source}")
    }
}
