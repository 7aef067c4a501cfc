//! Running the pipeline: a bounded pool of deliveries in flight, and the
//! recovery of jobs a dead process left unfinished.

use crate::fair::PARKED;
use crate::{Outcome, Pipeline};
use std::sync::Arc;
use std::time::Duration;
use teledrop_bus::Bus;
use teledrop_catalog::{CatalogError, Transition};
use teledrop_core::{JobId, JobRecord, JobState, UserId};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

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
                error!(error = %e, "bus failed; retrying");
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
                            warn!(update_id, error = %e, "could not extend the delivery");
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
                warn!(update_id, error = %e, "could not settle a delivery; it will be redelivered");
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
        Err(e) => error!(error = %e, "cannot read unfinished jobs"),
    }
}
