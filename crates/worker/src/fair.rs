//! Fair queues: at most `TELEDROP_USER_CONCURRENCY` jobs of one user run
//! at once, over every worker process, and a user's extra files wait
//! without holding a worker slot, so one user's hundred files do not
//! keep everyone else waiting behind them.
//!
//! A delivery is handled in two stages:
//!
//! 1. **Accept** (no worker slot): the update is recorded as a `pending`
//!    job ([`crate::Pipeline::accept`]), or answered.
//! 2. **Claim, then run**: with a worker slot, [`Catalog::claim`] moves
//!    the job `pending → running` only if its owner has fewer jobs
//!    `running` than the limit, counted in the catalog under a per-user
//!    lock (a Postgres advisory transaction lock; SQLite serialises
//!    writers), so the limit holds across processes. A job that starts
//!    keeps its slot and runs; otherwise the slot is given back and the
//!    delivery is *parked*.
//!
//! A parked delivery stays with this process, unsettled: the worker loop
//! keeps confirming it to the bus ([`teledrop_bus::Settle::in_progress`]),
//! exactly as for a long transfer, so waiting costs no delivery attempt
//! (JetStream's `max_deliver` counts naks and expiries, and a design that
//! nak'd waiting files would fail a busy user's hundredth file). Each user
//! has one line per process, first come first served: only its head asks
//! the catalog again, when a job of that user finishes here or every
//! [`RECHECK`] (jobs finishing in other processes). Parked deliveries are
//! bounded per process ([`PARKED`]); when the bound is reached the loop
//! stops pulling, and the rest waits in the stream.
//!
//! Take-over: a `running` job of a dead worker counts for its owner
//! until its delivery comes back after `ack_wait`. Its new handler moves
//! it back to `pending` before joining the owner's line (the deliveries
//! waiting there may be waiting for exactly that slot), then it waits for
//! room like any other. `standalone` moves every `running` job back to
//! `pending` at start.

use crate::outcome::Outcome;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use teledrop_catalog::{Catalog, CatalogError, Claim, Transition};
use teledrop_core::{JobId, JobRecord, JobState, UserId};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How often the head of a line asks the catalog again when nothing
/// finished here: jobs finishing in other processes are seen this late.
pub const RECHECK: Duration = Duration::from_millis(500);

/// Deliveries one process holds waiting for their owner to have room, on
/// top of the ones it runs. Every process holds that many at most, so the
/// bus's bound on unacknowledged deliveries (JetStream's `max_ack_pending`,
/// 1000 by default) should exceed workers × (concurrency + `PARKED`).
pub const PARKED: usize = 256;

/// What [`crate::Pipeline::begin`] made of a job.
#[derive(Debug)]
pub(crate) enum Begin {
    /// Running now, holding one of its owner's slots.
    Started(Box<JobRecord>),
    /// Nothing to run (finished, gone, someone else's, a failure).
    Settled(Outcome),
    /// Its owner has as many jobs running as allowed.
    OwnerBusy,
}

/// One line per user with deliveries in this process.
#[derive(Default)]
pub(crate) struct Lines {
    lines: Mutex<HashMap<UserId, Arc<Line>>>,
    /// A parked delivery wants a worker slot and none is free: the pull
    /// loop gives back the one it holds while it waits for the bus.
    wanted: Notify,
}

#[derive(Default)]
pub(crate) struct Line {
    /// Held by the delivery whose turn it is to claim (tokio's mutex
    /// queues waiters in order).
    pub(crate) turn: tokio::sync::Mutex<()>,
    /// A job of this user finished here.
    pub(crate) freed: Notify,
}

/// A delivery's place in its owner's line; the line goes when its last
/// place does.
pub(crate) struct Place<'a> {
    lines: &'a Lines,
    user: UserId,
    pub(crate) line: Arc<Line>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut lines = self.lines.lines.lock().unwrap_or_else(|p| p.into_inner());
        // References are only taken under this lock: two is the map's and ours.
        if Arc::strong_count(&self.line) == 2 {
            lines.remove(&self.user);
        }
    }
}

impl Lines {
    pub(crate) fn join(&self, user: UserId) -> Place<'_> {
        let line = self
            .lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(user)
            .or_default()
            .clone();
        Place {
            lines: self,
            user,
            line,
        }
    }

    /// Resolves when a parked delivery is waiting for a worker slot.
    pub(crate) async fn slot_wanted(&self) {
        self.wanted.notified().await;
    }

    /// Moves a pending job to running: under the owner's limit when there
    /// is one. A job not pending is [`CatalogError::StateConflict`].
    pub(crate) async fn claim(
        catalog: &dyn Catalog,
        job: JobId,
        per_owner: Option<NonZeroU32>,
    ) -> Result<Begin, CatalogError> {
        let Some(per_owner) = per_owner else {
            let start = Transition::new(JobState::Pending, JobState::Running, "started");
            return catalog
                .transition(job, start)
                .await
                .map(|j| Begin::Started(Box::new(j)));
        };
        Ok(match catalog.claim(job, per_owner, "started").await? {
            Claim::Started(job) => Begin::Started(job),
            Claim::OwnerBusy => Begin::OwnerBusy,
        })
    }
}

/// A worker slot, taken in turn with the pull loop: when none is free the
/// loop is asked to give back the one it holds while idle.
pub(crate) async fn slot(slots: &Arc<Semaphore>, lines: &Lines) -> OwnedSemaphorePermit {
    if let Ok(permit) = slots.clone().try_acquire_owned() {
        return permit;
    }
    lines.wanted.notify_one();
    slots.clone().acquire_owned().await.expect("semaphore never closed")
}
