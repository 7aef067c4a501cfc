//! Intake: a delivery from the bus or an update from the poller becomes a
//! job, or is answered at once (commands, messages without a file, users
//! not allowed). Answers here are best effort and never jobs.

use crate::Pipeline;
use crate::failure::Fault;
use crate::job::JobEnd;
use crate::notices;
use crate::outcome::{Intake, Outcome};
use crate::replies;
use std::time::Duration;
use teledrop_bus::Envelope;
use teledrop_catalog::{Accepted, Notice};
use teledrop_core::{ChatId, ErrorKind, MessageId, report};
use teledrop_telegram::{Command, Inbound, Update, parse_update};
use tracing::{info, warn};

/// An update that could not be recorded (the catalog failed), classified
/// so that the caller knows whether and when to try again.
#[derive(Debug)]
pub struct IntakeError(Fault);

impl std::fmt::Display for IntakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.kind, self.0.detail)
    }
}

impl std::error::Error for IntakeError {}

impl IntakeError {
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }
}

impl Pipeline {
    /// Handles a first delivery from the bus.
    pub async fn handle(&self, envelope: &Envelope) -> Outcome {
        self.handle_delivery(envelope, 1).await
    }

    /// Handles one delivery. A bus delivers an update again only when its
    /// holder settled it with a retry (the job is then `pending`) or stopped
    /// confirming it is still at work (its process died), so a redelivery
    /// (`attempt > 1`) may take over a job left `running`.
    pub async fn handle_delivery(&self, envelope: &Envelope, attempt: u32) -> Outcome {
        let update: Update = match serde_json::from_slice(&envelope.body) {
            Ok(u) => u,
            Err(e) => {
                warn!(update_id = envelope.update_id, error = %report(&e), "dropping an update that does not parse");
                return Outcome::Drop;
            }
        };
        match self.accept(&update).await {
            Ok(Intake::NewJob(job) | Intake::KnownJob(job)) => self.run(job, attempt > 1).await,
            Ok(Intake::Handled) => Outcome::Done,
            Err(e) => {
                warn!(update_id = envelope.update_id, error = %report(&e), "could not record the update; retrying later");
                Outcome::retry(e.retry_after(), 1)
            }
        }
    }

    /// The last delivery of an update failed retryably: fail its job for
    /// good and tell the user, since nothing will deliver it again.
    pub async fn give_up(&self, envelope: &Envelope, deliveries: u32) -> Outcome {
        // The job is the update's message: its update id may also name an
        // older job, from before Telegram reused it.
        let Some(Inbound::File(incoming)) = serde_json::from_slice(&envelope.body).ok().as_ref().map(parse_update)
        else {
            return Outcome::Drop;
        };
        let job = match self.catalog.job_by_message(incoming.chat_id, incoming.message_id).await {
            Ok(Some(j)) => j,
            // Never recorded (the catalog was down throughout): nothing to tell.
            Ok(None) | Err(_) => return Outcome::Drop,
        };
        if job.state.is_final() {
            return Outcome::Drop;
        }
        let end = JobEnd::Failed(Fault::internal(format!("gave up after {deliveries} deliveries")));
        match self.settle(&job, job.state, end).await {
            Outcome::Done => Outcome::Done,
            _ => Outcome::Drop,
        }
    }

    /// Records a file update as a job (or answers a non-file update) and
    /// returns the job to run. The long poller calls this before it
    /// confirms an update to Telegram.
    #[tracing::instrument(name = "accept", skip_all, fields(update_id = update.id.0))]
    pub async fn accept(&self, update: &Update) -> Result<Intake, IntakeError> {
        let update_id = teledrop_core::UpdateId(i64::from(update.id.0));
        let inbound = parse_update(update);
        if let Some((user, chat, message)) = notices::sender(&inbound)
            && !self.allowed(user)
        {
            if notices::due(&*self.catalog, user, Notice::NotAllowed).await {
                self.say(chat, &replies::not_allowed(user), Some(message)).await;
            }
            return Ok(Intake::Handled);
        }
        match inbound {
            Inbound::File(incoming) => {
                match self
                    .catalog
                    .accept_job(update_id, &incoming)
                    .await
                    .map_err(|e| IntakeError(e.into()))?
                {
                    Accepted::New(job) => {
                        info!(job = %job.id, update_id = update_id.0, kind = %incoming.kind, "job accepted");
                        Ok(Intake::NewJob(job.id))
                    }
                    Accepted::Duplicate(job) => Ok(Intake::KnownJob(job.id)),
                }
            }
            Inbound::Command {
                chat, message, command, ..
            } => {
                let text = match command {
                    Command::Start | Command::Help => {
                        replies::help(self.config.max_file_size, self.telegram.local_mode())
                    }
                    Command::Other(_) => replies::hint("command"),
                };
                self.say(chat, &text, Some(message)).await;
                Ok(Intake::Handled)
            }
            Inbound::Other {
                user,
                chat,
                message,
                what,
            } => {
                if notices::due(&*self.catalog, user, Notice::Hint).await {
                    self.say(chat, &replies::hint(what), Some(message)).await;
                }
                Ok(Intake::Handled)
            }
            Inbound::Ignored => Ok(Intake::Handled),
        }
    }

    /// Answers a command or a message we cannot store. Best effort: such
    /// an answer is not a job, and retrying it would hold up every later
    /// update behind it.
    async fn say(&self, chat: ChatId, text: &str, reply_to: Option<MessageId>) {
        if let Err(e) = self.telegram.send_html(chat, text, reply_to).await {
            warn!(chat = chat.0, error = %report(&e), "reply not delivered");
        }
    }
}
