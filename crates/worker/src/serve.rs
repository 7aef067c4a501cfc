//! Running the pipeline: a bounded pool of deliveries in flight, each run
//! in its owner's line ([`crate::fair`]), and the recovery of jobs a dead
//! process left unfinished.

use crate::fair::{Begin, PARKED, RECHECK, slot};
use crate::{Intake, Outcome, Pipeline};
use std::sync::Arc;
use std::time::Duration;
use teledrop_bus::{Bus, Envelope};
use teledrop_catalog::{CatalogError, Transition};
use teledrop_core::{JobId, JobRecord, JobState, UserId, report};
use teledrop_telegram::{Inbound, Update, parse_update};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

/// How often a delivery in progress is confirmed to a bus that does not
/// say ([`Bus::keepalive_interval`]).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// Pulls deliveries and runs them, at most `concurrency` at once, until
/// `shutdown`. Then stops pulling and gives in-flight work until `drain`
/// to finish; what is still running after that is abandoned to
/// redelivery (the bus) or recovery (the catalog).
pub async fn serve(
    bus: Arc<dyn Bus>,
    pipeline: Arc<Pipeline>,
    concurrency: usize,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let heartbeat = bus
        .keepalive_interval()
        .unwrap_or(DEFAULT_HEARTBEAT)
        .max(Duration::from_millis(100));
    let slots = Arc::new(Semaphore::new(concurrency.max(1)));
    // Deliveries held at once: those running and those parked (`fair`).
    let held = Arc::new(Semaphore::new(concurrency.max(1) + PARKED));
    let mut tasks = JoinSet::new();
    loop {
        let hold = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = held.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        // Pull only while a worker slot is free, so that no delivery waits
        // here for one while other workers idle; a parked delivery that
        // needs the slot meanwhile gets it (the bus's `next` is cancel-safe).
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let delivery = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = pipeline.lines().slot_wanted() => continue,
            d = bus.next() => d,
        };
        // The task takes a slot when it has a job to run: recording the
        // update needs none.
        drop(slot);
        let delivery = match delivery {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) => {
                error!(error = %report(&e), "bus failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let pipeline = pipeline.clone();
        let last_attempt = bus.max_attempts();
        // The delivery's span continues the publisher's trace, so the job's
        // spans join the webhook request's.
        let span = tracing::info_span!(
            "delivery",
            update_id = delivery.envelope.update_id,
            attempt = delivery.attempt,
            otel.kind = "consumer",
        );
        if let Some(trace) = &delivery.envelope.trace {
            teledrop_otel::continue_trace(&span, trace);
        }
        let slots = slots.clone();
        let stop = shutdown.clone();
        let task = async move {
            let _hold = hold;
            let update_id = delivery.envelope.update_id;
            // Tell the bus we are alive while a long transfer runs, or the
            // delivery waits for its owner to have room, so it redelivers
            // only if this process dies.
            let work = pipeline.handle_fairly(&slots, &delivery.envelope, delivery.attempt, &stop);
            tokio::pin!(work);
            let mut beat = tokio::time::interval(heartbeat);
            beat.tick().await;
            let mut outcome = loop {
                tokio::select! {
                    o = &mut work => break o,
                    _ = beat.tick() => {
                        if let Err(e) = delivery.settle.in_progress().await {
                            warn!(update_id, error = %report(&e), "could not extend the delivery");
                        }
                    }
                }
            };
            if matches!(outcome, Outcome::Retry(_)) && last_attempt.is_some_and(|m| delivery.attempt >= m) {
                // The bus will not deliver it again: settle the job now.
                outcome = pipeline.give_up(&delivery.envelope, delivery.attempt).await;
            }
            let settled = match outcome {
                Outcome::Done => delivery.settle.ack().await,
                Outcome::Retry(d) => delivery.settle.nak(d).await,
                Outcome::Drop => delivery.settle.term().await,
            };
            pipeline.metrics().settled(outcome);
            if let Err(e) = settled {
                warn!(update_id, error = %report(&e), "could not settle a delivery; it will be redelivered");
            }
        };
        tasks.spawn(task.instrument(span));
        // Reap finished tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    info!(in_flight = tasks.len(), "worker stopping; draining");
    let drained = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(
            abandoned = tasks.len(),
            "drain deadline passed; abandoning in-flight work to recovery"
        );
        tasks.shutdown().await;
    }
}

/// What a previous process left behind: outcomes it committed but did not
/// reply, and jobs it left `pending` or `running`.
#[derive(Debug, Default)]
pub struct Recovery {
    unreplied: Vec<JobRecord>,
    /// With their owners, who they wait in line for.
    unfinished: Vec<(JobId, UserId)>,
}

/// Upper bound of jobs read at start; a backlog beyond it waits for the
/// next start (or, in the distributed roles, for redelivery).
const RECOVERY_LIMIT: u32 = 100_000;

impl Recovery {
    /// Reads the leftovers and moves `running` jobs back to `pending`.
    /// Call it before the poller and workers start: afterwards every
    /// `running` job belongs to this process.
    pub async fn prepare(pipeline: &Pipeline) -> Result<Recovery, CatalogError> {
        let catalog = pipeline.catalog();
        let unreplied = catalog.unreplied_jobs(RECOVERY_LIMIT).await?;
        let mut unfinished = Vec::new();
        for job in catalog.unfinished_jobs(RECOVERY_LIMIT).await? {
            if job.state == JobState::Running {
                let back = Transition::new(JobState::Running, JobState::Pending, "recovered after restart");
                catalog.transition(job.id, back).await?;
            }
            unfinished.push((job.id, job.incoming.user_id));
        }
        if !unreplied.is_empty() || !unfinished.is_empty() {
            info!(
                unreplied = unreplied.len(),
                unfinished = unfinished.len(),
                "recovering jobs of a previous run"
            );
        }
        Ok(Recovery { unreplied, unfinished })
    }

    pub fn is_empty(&self) -> bool {
        self.unreplied.is_empty() && self.unfinished.is_empty()
    }

    /// Replies the unreplied outcomes and runs the unfinished jobs, at most
    /// `concurrency` at once, retrying each until it settles or `shutdown`.
    pub async fn run(self, pipeline: Arc<Pipeline>, concurrency: usize, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let work = self
            .unreplied
            .into_iter()
            .map(|j| Work::Reply(Box::new(j)))
            .chain(self.unfinished.into_iter().map(|(id, owner)| Work::Run(id, owner)));
        for item in work {
            let pipeline = pipeline.clone();
            let slots = slots.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                loop {
                    let outcome = match &item {
                        Work::Reply(job) => {
                            let _slot = slots.acquire().await.expect("semaphore never closed");
                            pipeline.reply_outcome(job).await
                        }
                        // Waits for its owner's room like a delivery.
                        Work::Run(id, owner) => pipeline.run_fairly(&slots, *id, *owner, false, &shutdown).await,
                    };
                    match outcome {
                        Outcome::Retry(wait) => tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(wait) => {}
                        },
                        Outcome::Done | Outcome::Drop => return,
                    }
                }
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = async { while tasks.join_next().await.is_some() {} } => {}
        }
    }
}

enum Work {
    Reply(Box<JobRecord>),
    Run(JobId, UserId),
}

/// [`Recovery::prepare`] then [`Recovery::run`].
pub async fn recover_unfinished(pipeline: Arc<Pipeline>, concurrency: usize, shutdown: CancellationToken) {
    match Recovery::prepare(&pipeline).await {
        Ok(r) => r.run(pipeline, concurrency, shutdown).await,
        Err(e) => error!(error = %report(&e), "cannot read unfinished jobs"),
    }
}

impl Pipeline {
    /// Handles one delivery in the two stages above, running it in one of
    /// `slots`. A bus delivers an update again only when its holder
    /// settled it with a retry or stopped confirming it (its process
    /// died), so a redelivery (`attempt > 1`) may take over a job left
    /// `running`.
    pub(crate) async fn handle_fairly(
        &self,
        slots: &Arc<Semaphore>,
        envelope: &Envelope,
        attempt: u32,
        stop: &CancellationToken,
    ) -> Outcome {
        let update: Update = match serde_json::from_slice(&envelope.body) {
            Ok(u) => u,
            Err(e) => {
                warn!(update_id = envelope.update_id, error = %report(&e), "dropping an update that does not parse");
                return Outcome::Drop;
            }
        };
        match self.accept(&update).await {
            Ok(Intake::NewJob(job) | Intake::KnownJob(job)) => match parse_update(&update) {
                Inbound::File(f) => self.run_fairly(slots, job, f.user_id, attempt > 1, stop).await,
                // `accept` makes jobs of files only.
                _ => Outcome::Drop,
            },
            Ok(Intake::Handled) => Outcome::Done,
            Err(e) => {
                warn!(update_id = envelope.update_id, error = %report(&e), "could not record the update; retrying later");
                Outcome::retry(e.retry_after(), 1)
            }
        }
    }

    /// Moves a job left `running` back to `pending`; whether it is not
    /// `running` now (`false`: the catalog could not say).
    async fn release_dead_holder(&self, job: JobId) -> bool {
        let catalog = self.catalog();
        match catalog.job(job).await {
            Ok(Some(j)) if j.state == JobState::Running => {
                let back = Transition::new(JobState::Running, JobState::Pending, "taken over from a dead runner");
                match catalog.transition(job, back).await {
                    Ok(_) | Err(CatalogError::StateConflict { .. }) => true,
                    Err(e) => {
                        warn!(job = %job, error = %report(&e), "could not take over a job; trying again in line");
                        false
                    }
                }
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// Stage 2 of a delivery of `owner`'s job: waits in the owner's line
    /// until the job starts or settles (holding no worker slot while it
    /// waits), then runs it in one of `slots`. `take_over`: the delivery
    /// is a redelivery, whose job may be left `running` by a dead worker.
    /// Once `stop` is cancelled a waiting job asks to be retried soon
    /// (another worker may have room) instead of holding up the drain.
    pub(crate) async fn run_fairly(
        &self,
        slots: &Arc<Semaphore>,
        job: JobId,
        owner: UserId,
        take_over: bool,
        stop: &CancellationToken,
    ) -> Outcome {
        if self.user_concurrency().is_none() {
            let _slot = slot(slots, self.lines()).await;
            return self.run(job, take_over).await;
        }
        // Before queueing: a job its dead holder left `running` takes one
        // of its owner's slots, and the deliveries waiting in line before
        // it would wait for that slot forever.
        let mut take_over = take_over && !self.release_dead_holder(job).await;
        let place = self.lines().join(owner);
        // Counted while it waits: behind others of its owner, or for room.
        let mut waiting = None;
        let mut turn = Some(match place.line.turn.try_lock() {
            Ok(turn) => turn,
            Err(_) => {
                waiting = Some(self.metrics().waiting());
                place.line.turn.lock().await
            }
        });
        loop {
            let slot = slot(slots, self.lines()).await;
            match self.begin(job, take_over).await {
                Begin::Started(record) => {
                    // The next delivery of this user may claim now: the
                    // owner may have room for more than this one.
                    drop(turn.take());
                    drop(waiting.take());
                    let outcome = self.finish(*record).await;
                    drop(slot);
                    place.line.freed.notify_one();
                    return outcome;
                }
                Begin::Settled(outcome) => return outcome,
                Begin::OwnerBusy => {
                    drop(slot);
                    waiting.get_or_insert_with(|| self.metrics().waiting());
                    // Taken over or not, the job is pending now.
                    take_over = false;
                    debug!(job = %job, user = owner.0, "owner busy; waiting for room");
                    tokio::select! {
                        _ = stop.cancelled() => return Outcome::Retry(Duration::from_secs(1)),
                        _ = place.line.freed.notified() => {}
                        _ = tokio::time::sleep(RECHECK) => {}
                    }
                }
            }
        }
    }
}
