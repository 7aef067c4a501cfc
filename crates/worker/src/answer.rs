//! The final reply of a job, delivered once: the job's status message
//! becomes the text [`replies::final_reply`] composes from how the job
//! ended, and the catalog records that it was sent.

use crate::Pipeline;
use crate::failure::Fault;
use crate::metrics::Step;
use crate::outcome::Outcome;
use crate::replies::{self, FinalOutcome};
use teledrop_core::{ErrorKind, JobRecord, JobState, report};
use tracing::warn;

impl Pipeline {
    /// Tells the user the outcome of a final job, once: the status message
    /// becomes the final reply, and the catalog records that it was sent.
    /// Repeating it (after a crash before the record) edits the same
    /// message to the same text, which changes nothing the user sees.
    ///
    /// `Retry` when Telegram could not take the reply now: the redelivery
    /// (or recovery) finds the job final but unreplied and replies then.
    #[tracing::instrument(name = "reply", skip_all, fields(job = %job.id, state = %job.state))]
    pub async fn reply_outcome(&self, job: &JobRecord) -> Outcome {
        let began = std::time::Instant::now();
        let outcome = self.reply_once(job).await;
        self.metrics.observe_step(Step::reply, began.elapsed());
        outcome
    }

    async fn reply_once(&self, job: &JobRecord) -> Outcome {
        let text = match self.final_outcome(job).await {
            Ok(Some(outcome)) => replies::final_reply(&outcome, self.limits()),
            Ok(None) => return Outcome::Done,
            Err(e) => return Outcome::retry(e.retry_after, 1),
        };
        let f = &job.incoming;
        let res = match job.status_message_id {
            Some(m) => match self.telegram.edit_html(f.chat_id, m, &text).await {
                // The status message is gone (deleted by the user): say it anew.
                Err(e) if e.kind() == ErrorKind::TelegramRejected => self
                    .telegram
                    .send_html(f.chat_id, &text, Some(f.message_id))
                    .await
                    .map(|_| ()),
                other => other,
            },
            None => self
                .telegram
                .send_html(f.chat_id, &text, Some(f.message_id))
                .await
                .map(|_| ()),
        };
        match res {
            Ok(()) => {}
            // Nobody to tell: the outcome is settled all the same.
            Err(e) if matches!(e.kind(), ErrorKind::BlockedByUser | ErrorKind::TelegramRejected) => {
                warn!(job = %job.id, error = %report(&e), "final reply refused by Telegram");
            }
            Err(e) => {
                warn!(job = %job.id, error = %report(&e), "final reply not delivered yet");
                return Outcome::retry(e.retry_after(), 1);
            }
        }
        if let Err(e) = self.catalog.mark_replied(job.id).await {
            // Replying again later edits the message to the same text.
            return Outcome::retry(Fault::from(e).retry_after, 1);
        }
        Outcome::Done
    }

    /// How a final job ended, with what its reply names (a stored file's
    /// link); `None` while it is not final.
    async fn final_outcome<'j>(&self, job: &'j JobRecord) -> Result<Option<FinalOutcome<'j>>, Fault> {
        let corrupt = |what: &str| Fault::internal(format!("stored job {} has no {what}", job.id));
        Ok(match job.state {
            JobState::Stored => {
                let file_id = job.file_id.ok_or_else(|| corrupt("file"))?;
                let file = self.catalog.file(file_id).await?.ok_or_else(|| corrupt("file row"))?;
                let link = self
                    .catalog
                    .links_of(file.id)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| corrupt("link"))?;
                Some(FinalOutcome::Stored {
                    url: self.link_url(&link.token.to_string()),
                    name: file.name,
                    size: file.size,
                })
            }
            JobState::Failed => Some(FinalOutcome::Failed {
                file: &job.incoming,
                kind: job.error_kind.unwrap_or(ErrorKind::Internal),
                detail: job.error_detail.as_deref(),
            }),
            JobState::Pending | JobState::Running => None,
        })
    }
}
