//! Long polling, the update source of `standalone`.
//!
//! An update is confirmed to Telegram (by asking for the next offset) only
//! after it has been recorded as a job in the catalog (or answered, for a
//! command), so a crash at any point loses nothing: unconfirmed updates
//! come again, and the catalog's unique `update_id` makes them harmless.

use crate::{Intake, Pipeline};
use std::sync::Arc;
use std::time::Duration;
use teledrop_bus::{Bus, Envelope};
use teledrop_core::report;
use teledrop_telegram::{POLL_TIMEOUT_SECS, Telegram};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

pub async fn run_poller(telegram: Telegram, pipeline: Arc<Pipeline>, bus: Arc<dyn Bus>, shutdown: CancellationToken) {
    let mut offset: Option<i64> = None;
    let mut backoff = Backoff::new();
    'poll: loop {
        let polled = tokio::select! {
            _ = shutdown.cancelled() => break 'poll,
            r = telegram.poll(offset, POLL_TIMEOUT_SECS) => r,
        };
        let updates = match polled {
            Ok(u) => {
                backoff.reset();
                u
            }
            Err(e) => {
                let wait = e.retry_after().unwrap_or_else(|| backoff.next());
                error!(error = %report(&e), retry_in = ?wait, "getUpdates failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        for update in updates {
            let update_id = i64::from(update.id.0);
            loop {
                match pipeline.accept(&update).await {
                    // A known job is a pre-restart one Telegram sent again:
                    // recovery owns it.
                    Ok(Intake::KnownJob(_) | Intake::Handled) => break,
                    Ok(Intake::NewJob(_)) => {
                        let body = match serde_json::to_vec(&update) {
                            Ok(b) => b,
                            Err(e) => {
                                error!(update_id, error = %report(&e), "cannot serialise update");
                                break;
                            }
                        };
                        backoff.reset();
                        // The job is recorded: even if the bus refuses, recovery
                        // at the next start runs it.
                        let publish = bus.publish(Envelope::new(update_id, body));
                        tokio::select! {
                            // Recorded but not published: recovery runs it at the next start.
                            _ = shutdown.cancelled() => { offset = Some(update_id + 1); break 'poll; }
                            r = publish => if let Err(e) = r { warn!(update_id, error = %report(&e), "bus refused a job") },
                        }
                        break;
                    }
                    Err(e) => {
                        // Not recorded: do not advance past it.
                        let wait = e.retry_after().unwrap_or_else(|| backoff.next());
                        error!(update_id, error = %report(&e), retry_in = ?wait, "could not record update");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        }
                        if shutdown.is_cancelled() {
                            continue 'poll;
                        }
                    }
                }
            }
            offset = Some(update_id + 1);
        }
    }
    // Confirm what was handled, so the next start is not sent it again
    // (a zero-timeout poll confirms everything below the offset).
    if let Some(o) = offset
        && let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), telegram.poll(Some(o), 0)).await
    {
        warn!(error = %report(&e), "could not confirm the last updates; they will be seen again");
    }
}

/// Delays after failures: doubling from 500 ms, below 30 s, jittered
/// (`teledrop_core::backoff`); a success starts them over.
struct Backoff(teledrop_core::backoff::Delays);

impl Backoff {
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Self(teledrop_core::backoff::delays(Self::MIN, Self::MAX))
    }
    fn next(&mut self) -> Duration {
        self.0.next().unwrap_or(Self::MAX)
    }
    fn reset(&mut self) {
        *self = Self::new();
    }
}
