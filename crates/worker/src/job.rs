//! Running a job: from its id to how it ended, and what the bus does
//! next. A run begins the job (reads it, takes it over from a dead
//! runner, claims one of its owner's slots: [`crate::fair`]), makes one
//! attempt at storing its file ([`crate::ingest`]), and settles the
//! attempt's [`JobEnd`] in one place, [`Pipeline::settle`]: a stored job
//! is told its link, a retryable fault with attempts left sends the job
//! back to `pending` for a delayed redelivery, anything else fails it for
//! good and tells the user ([`crate::answer`]).

use crate::Pipeline;
use crate::failure::{Fault, Refusal, StepFailure};
use crate::fair::{Begin, Lines};
use crate::ingest::Stored;
use crate::metrics::JobOutcome;
use crate::outcome::Outcome;
use crate::replies;
use std::time::{Duration, Instant};
use teledrop_catalog::{CatalogError, Transition};
use teledrop_core::{ErrorKind, JobId, JobRecord, JobState};
use tracing::warn;

/// A job left `running` this long without a state change is taken to
/// belong to a dead process and may be taken over.
pub const STALE_RUNNING: Duration = Duration::from_secs(15 * 60);

/// How an attempt at a job ended.
#[derive(Debug)]
pub(crate) enum JobEnd {
    /// The file is stored: the committed job.
    Stored(Box<Stored>),
    /// Refused by rule: failed for good, and the user is told why.
    Refused(Refusal),
    /// A retryable fault with attempts left: back to `pending`.
    Retry(Fault),
    /// A fault that ends the job: not retryable, or no attempts left.
    Failed(Fault),
}

impl Pipeline {
    /// Runs a job to its end or to a retry. Safe to call for a job that is
    /// already finished (does nothing) or that a dead process left running.
    pub async fn run_job(&self, id: JobId) -> Outcome {
        self.run(id, false).await
    }

    pub(crate) async fn run(&self, id: JobId, take_over: bool) -> Outcome {
        match self.begin(id, take_over).await {
            Begin::Started(job) => self.finish(*job).await,
            Begin::Settled(outcome) => outcome,
            // Worker pools wait for room instead (`fair`); a direct caller
            // hears when to ask again.
            Begin::OwnerBusy => Outcome::Retry(crate::fair::RECHECK),
        }
    }

    /// Starts the job if its owner has room under the per-user
    /// concurrency, or says why not.
    pub(crate) async fn begin(&self, id: JobId, take_over: bool) -> Begin {
        let job = match self.catalog.job(id).await {
            Ok(Some(j)) => j,
            Ok(None) => {
                warn!(job = %id, "job vanished");
                return Begin::Settled(Outcome::Drop);
            }
            Err(e) => return Begin::Settled(Outcome::retry(Fault::from(e).retry_after, 1)),
        };
        if job.state.is_final() {
            // A redelivery after the outcome was committed but before the
            // user was told: tell them now.
            if job.replied_at.is_none() {
                return Begin::Settled(self.reply_outcome(&job).await);
            }
            return Begin::Settled(Outcome::Done);
        }
        match self.start(job, take_over).await {
            Ok(begin) => begin,
            Err(e) => Begin::Settled(Outcome::retry(Fault::from(e).retry_after, 1)),
        }
    }

    /// Runs a started job to its end or to a retry.
    #[tracing::instrument(name = "job", skip_all, fields(job = %job.id))]
    pub(crate) async fn finish(&self, job: JobRecord) -> Outcome {
        let _running = self.metrics.running();
        if job.attempts <= 1 {
            // From acceptance to this first run: the wait in the queue
            // (a retry's time since acceptance includes its earlier runs).
            let waited = chrono::Utc::now().signed_duration_since(job.created_at);
            self.metrics.queue_wait(waited.to_std().unwrap_or_default());
        }
        let started = Instant::now();
        let end = self.attempt(&job).await;
        let outcome = match &end {
            JobEnd::Stored(s) if s.uploaded => JobOutcome::stored,
            JobEnd::Stored(_) => JobOutcome::deduplicated,
            JobEnd::Retry(_) => JobOutcome::retried,
            JobEnd::Refused(_) | JobEnd::Failed(_) => JobOutcome::failed,
        };
        self.metrics.job_finished(outcome, started.elapsed());
        self.settle(&job, JobState::Running, end).await
    }

    /// One attempt at storing the job's file.
    async fn attempt(&self, job: &JobRecord) -> JobEnd {
        let (attempt, max) = (job.attempts, self.config.max_attempts);
        if attempt > max {
            return JobEnd::Failed(Fault::internal(format!("gave up after {max} attempts")));
        }
        match self.ingest(job).await {
            Ok(stored) => JobEnd::Stored(Box::new(stored)),
            Err(StepFailure::Refused(r)) => JobEnd::Refused(r),
            Err(StepFailure::Fault(f)) if f.kind.is_retryable() && attempt < max => JobEnd::Retry(f),
            Err(StepFailure::Fault(f)) => JobEnd::Failed(f),
        }
    }

    /// Where a run of a job ends: records how it ended (the job was in
    /// state `from`) and tells the user when that is final.
    pub(crate) async fn settle(&self, job: &JobRecord, from: JobState, end: JobEnd) -> Outcome {
        match end {
            JobEnd::Stored(stored) => self.reply_outcome(&stored.job).await,
            JobEnd::Retry(fault) => {
                let attempt = job.attempts;
                warn!(job = %job.id, attempt, kind = %fault.kind, error = %fault.detail, "job will be retried");
                self.metrics.retried(fault.kind);
                let note = format!("attempt {attempt}: {}", fault.detail);
                match self
                    .catalog
                    .transition(job.id, Transition::retry(fault.kind, note))
                    .await
                {
                    Ok(_) => Outcome::retry(fault.retry_after, attempt),
                    Err(e) => Outcome::retry(Fault::from(e).retry_after, attempt),
                }
            }
            JobEnd::Refused(refusal) => {
                self.fail(job, from, refusal.kind(), replies::refusal_detail(&refusal))
                    .await
            }
            JobEnd::Failed(fault) => self.fail(job, from, fault.kind, fault.detail).await,
        }
    }

    /// Moves the job to `running`, if its owner has room. A job already
    /// running belongs to another runner unless `take_over` (a
    /// redelivery: its holder died) or it has not moved for
    /// [`STALE_RUNNING`]; a job taken over stops counting for its owner
    /// and then waits for room like any other. Recovery at start moves a
    /// dead process's jobs back to `pending` before anything else runs.
    async fn start(&self, job: JobRecord, take_over: bool) -> Result<Begin, CatalogError> {
        // Another runner has it: look again later.
        let elsewhere = Begin::Settled(Outcome::Retry(Duration::from_secs(30)));
        if job.state == JobState::Running {
            let idle = chrono::Utc::now().signed_duration_since(job.updated_at);
            if !take_over && idle.to_std().unwrap_or_default() < STALE_RUNNING {
                return Ok(elsewhere);
            }
            let back = Transition::new(JobState::Running, JobState::Pending, "taken over from a dead runner");
            match self.catalog.transition(job.id, back).await {
                Ok(_) | Err(CatalogError::StateConflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match Lines::claim(&*self.catalog, job.id, self.config.user_concurrency).await {
            Ok(begin) => Ok(begin),
            // Someone else started it between our read and our write.
            Err(CatalogError::StateConflict { .. }) => Ok(elsewhere),
            Err(e) => Err(e),
        }
    }

    /// Fails the job for good, then tells the user.
    async fn fail(&self, job: &JobRecord, from: JobState, kind: ErrorKind, detail: String) -> Outcome {
        warn!(job = %job.id, kind = %kind, error = %detail, "job failed");
        match self
            .catalog
            .transition(job.id, Transition::failed(from, kind, detail))
            .await
        {
            Ok(mut failed) => {
                self.metrics.failed(kind);
                failed.status_message_id = failed.status_message_id.or(job.status_message_id);
                self.reply_outcome(&failed).await
            }
            Err(e) => Outcome::retry(Fault::from(e).retry_after, 1),
        }
    }
}
