use crate::fair::{Begin, Lines};
use crate::messages;
use crate::metrics::WorkerMetrics;
use crate::notices;
use crate::status::StatusEditor;
use bytes::Bytes;
use futures::StreamExt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use teledrop_bus::Envelope;
use teledrop_catalog::{Accepted, Admission, Catalog, CatalogError, Notice, QuotaLock, StoredBlob, Transition};
use teledrop_core::{
    ByteSize, CLOUD_DOWNLOAD_LIMIT, ErrorKind, IncomingFile, JobId, JobRecord, JobState, NewLink, ObjectKey, UserId,
};
use teledrop_retention::{Incoming, Policy, QuotaExceeded, QuotaVerdict, SweepError, Sweeper, quota_lock_scope};
use teledrop_storage::{Storage, StorageError};
use teledrop_telegram::{Command, Inbound, Telegram, TelegramError, Update, parse_update};
use tracing::{Instrument, info, warn};
use url::Url;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Links are `{public_url}/download/{token}`.
    pub public_url: Url,
    pub max_file_size: ByteSize,
    /// Empty: everyone may use the bot.
    pub allowed_users: Vec<UserId>,
    /// Least time between two progress edits of one status message.
    pub progress_interval: Duration,
    /// A job that entered `running` this often is failed for good.
    pub max_attempts: u32,
    /// Files each user may send, over all replicas; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    /// Jobs of one user running at once, over all replicas; `None`: no
    /// limit. See [`crate::fair`].
    pub user_concurrency: Option<NonZeroU32>,
}

/// A per-user limit on the files taken in: at most `files` in any
/// `window`, counted in the catalog so that it holds across every replica
/// that shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    files: NonZeroU32,
    window: Duration,
}

impl RateLimit {
    /// `files` per minute; `None` for zero (no limit).
    pub fn per_minute(files: u32) -> Option<Self> {
        Self::new(files, Duration::from_secs(60))
    }

    /// `files` in any `window`; `None` for zero files or a window under a
    /// second (what the replies can name).
    pub fn new(files: u32, window: Duration) -> Option<Self> {
        let files = NonZeroU32::new(files)?;
        (window >= Duration::from_secs(1)).then_some(Self { files, window })
    }

    pub fn files(&self) -> NonZeroU32 {
        self.files
    }

    pub fn window(&self) -> Duration {
        self.window
    }
}

/// What [`Pipeline::accept`] made of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// A file update seen for the first time: a new pending job.
    NewJob(JobId),
    /// A file update recorded before (redelivery, or Telegram sending an
    /// unconfirmed update again after a restart).
    KnownJob(JobId),
    /// Answered or ignored; nothing to run.
    Handled,
}

/// A job left `running` this long without a state change is taken to
/// belong to a dead process and may be taken over.
pub const STALE_RUNNING: Duration = Duration::from_secs(15 * 60);

/// What the bus should do with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Settled for good (stored, failed and told, or nothing to do).
    Done,
    /// Try again after the delay.
    Retry(Duration),
    /// Unusable input: drop it.
    Drop,
}

/// How long the policies read from the catalog are used before they are
/// read again (quotas at ingest).
pub const POLICY_TTL: Duration = Duration::from_secs(5);

pub struct Pipeline {
    catalog: Arc<dyn Catalog>,
    storage: Storage,
    telegram: Telegram,
    config: PipelineConfig,
    quotas: Sweeper,
    policy_ttl: Duration,
    /// The policies in force and when they were read.
    policies: Mutex<Option<(Instant, Arc<[Policy]>)>>,
    metrics: Arc<WorkerMetrics>,
    /// This process's deliveries waiting for their owner to have room.
    lines: Lines,
}

/// The byte limit of one download, and whether a quota (not the bot's
/// maximum file size) set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteLimit {
    bytes: u64,
    /// The room left under the tightest `Reject` byte quota, when that is
    /// below the maximum file size.
    quota_room: Option<u64>,
}

impl ByteLimit {
    fn new(max_file_size: u64, room: Option<u64>) -> Self {
        match room {
            Some(r) if r < max_file_size => Self {
                bytes: r,
                quota_room: Some(r),
            },
            _ => Self {
                bytes: max_file_size,
                quota_room: None,
            },
        }
    }
}

/// A failed step, classified.
#[derive(Debug)]
struct StepError {
    kind: ErrorKind,
    detail: String,
    retry_after: Option<Duration>,
}

impl From<TelegramError> for StepError {
    fn from(e: TelegramError) -> Self {
        Self {
            kind: e.kind(),
            retry_after: e.retry_after(),
            detail: e.to_string(),
        }
    }
}

impl From<StorageError> for StepError {
    fn from(e: StorageError) -> Self {
        let kind = match &e {
            // The download broke off (cut connection, idle timeout).
            StorageError::SourceFailed(_) | StorageError::SizeMismatch { .. } => ErrorKind::Network,
            StorageError::TooLarge { .. } => ErrorKind::TooBig,
            _ => ErrorKind::Storage,
        };
        Self {
            kind,
            retry_after: None,
            detail: e.to_string(),
        }
    }
}

/// How long a delivery waits after this worker found no database
/// connection free: the pool is busy with other jobs (or Postgres does not
/// answer), so the delivery goes back to the bus, where this or another
/// worker takes it once connections are free, rather than holding a slot.
pub const CATALOG_BUSY_RETRY: Duration = Duration::from_secs(5);

impl From<CatalogError> for StepError {
    fn from(e: CatalogError) -> Self {
        let retry_after = matches!(e, CatalogError::PoolTimedOut).then_some(CATALOG_BUSY_RETRY);
        Self {
            kind: ErrorKind::Catalog,
            retry_after,
            detail: e.to_string(),
        }
    }
}

impl From<SweepError> for StepError {
    fn from(e: SweepError) -> Self {
        match e {
            SweepError::Catalog(e) => e.into(),
            SweepError::Storage(e) => Self {
                kind: ErrorKind::Storage,
                retry_after: None,
                detail: format!("quota check: {e}"),
            },
        }
    }
}

impl StepError {
    /// A final refusal; `detail` is the sentence the user reads.
    fn over_quota(detail: String) -> Self {
        Self {
            kind: ErrorKind::OverQuota,
            detail,
            retry_after: None,
        }
    }
}

impl Pipeline {
    pub fn new(catalog: Arc<dyn Catalog>, storage: Storage, telegram: Telegram, config: PipelineConfig) -> Self {
        Self {
            quotas: Sweeper::new(catalog.clone(), storage.clone()),
            catalog,
            storage,
            telegram,
            config,
            policy_ttl: POLICY_TTL,
            policies: Mutex::new(None),
            metrics: Arc::default(),
            lines: Lines::default(),
        }
    }

    /// Reads the policies from the catalog at most once per `ttl`
    /// (default [`POLICY_TTL`]; zero reads them for every job).
    pub fn with_policy_ttl(mut self, ttl: Duration) -> Self {
        self.policy_ttl = ttl;
        self
    }

    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// What this pipeline did, for `/metrics`.
    pub fn metrics(&self) -> &Arc<WorkerMetrics> {
        &self.metrics
    }

    fn link_url(&self, token: &str) -> String {
        format!(
            "{}/download/{token}",
            self.config.public_url.as_str().trim_end_matches('/')
        )
    }

    fn allowed(&self, user: UserId) -> bool {
        self.config.allowed_users.is_empty() || self.config.allowed_users.contains(&user)
    }

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
                warn!(update_id = envelope.update_id, error = %e, "dropping an update that does not parse");
                return Outcome::Drop;
            }
        };
        match self.accept(&update).await {
            Ok(Intake::NewJob(job) | Intake::KnownJob(job)) => self.run(job, attempt > 1).await,
            Ok(Intake::Handled) => Outcome::Done,
            Err(e) => {
                warn!(update_id = envelope.update_id, error = %e, "could not record the update; retrying later");
                self.retry_later(&e, 1)
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
        let note = format!("gave up after {deliveries} deliveries");
        match self.fail(&job, job.state, ErrorKind::Internal, note).await {
            Outcome::Done => Outcome::Done,
            _ => Outcome::Drop,
        }
    }

    /// Records a file update as a job (or answers a non-file update) and
    /// returns the job to run. The long poller calls this before it
    /// confirms an update to Telegram.
    #[tracing::instrument(name = "accept", skip_all, fields(update_id = update.id.0))]
    pub async fn accept(&self, update: &Update) -> Result<Intake, StepErrorPublic> {
        let update_id = teledrop_core::UpdateId(i64::from(update.id.0));
        let inbound = parse_update(update);
        if let Some((user, chat, message)) = notices::sender(&inbound)
            && !self.allowed(user)
        {
            if notices::due(&*self.catalog, user, Notice::NotAllowed).await {
                self.say(chat, &messages::not_allowed(user), Some(message)).await;
            }
            return Ok(Intake::Handled);
        }
        match inbound {
            Inbound::File(incoming) => {
                match self
                    .catalog
                    .accept_job(update_id, &incoming)
                    .await
                    .map_err(StepError::from)?
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
                        messages::help(self.config.max_file_size, self.telegram.local_mode())
                    }
                    Command::Other(_) => messages::hint("command"),
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
                    self.say(chat, &messages::hint(what), Some(message)).await;
                }
                Ok(Intake::Handled)
            }
            Inbound::Ignored => Ok(Intake::Handled),
        }
    }

    /// Answers a command or a message we cannot store. Best effort: such
    /// an answer is not a job, and retrying it would hold up every later
    /// update behind it.
    async fn say(&self, chat: teledrop_core::ChatId, text: &str, reply_to: Option<teledrop_core::MessageId>) {
        if let Err(e) = self.telegram.send_html(chat, text, reply_to).await {
            warn!(chat = chat.0, error = %e, "reply not delivered");
        }
    }

    pub(crate) fn retry_later(&self, e: &StepErrorPublic, attempt: u32) -> Outcome {
        let base = Duration::from_secs(1u64 << attempt.min(6));
        Outcome::Retry(e.0.retry_after.unwrap_or(base).min(Duration::from_secs(120)))
    }

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
            Err(e) => return Begin::Settled(self.retry_later(&StepError::from(e).into(), 1)),
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
            Err(e) => Begin::Settled(self.retry_later(&e.into(), 1)),
        }
    }

    /// Runs a started job to its end or to a retry.
    #[tracing::instrument(name = "job", skip_all, fields(job = %job.id))]
    pub(crate) async fn finish(&self, job: JobRecord) -> Outcome {
        let _running = self.metrics.running();
        let attempt = job.attempts;
        if attempt > self.config.max_attempts {
            let note = format!("gave up after {} attempts", self.config.max_attempts);
            return self.fail(&job, JobState::Running, ErrorKind::Internal, note).await;
        }
        match self.ingest(&job).await {
            Ok(stored) => self.reply_outcome(&stored).await,
            Err(e) if e.kind.is_retryable() && attempt < self.config.max_attempts => {
                warn!(job = %job.id, attempt, kind = %e.kind, error = %e.detail, "job will be retried");
                self.metrics.retried(e.kind);
                let note = format!("attempt {attempt}: {}", e.detail);
                match self.catalog.transition(job.id, Transition::retry(e.kind, note)).await {
                    Ok(_) => self.retry_later(&e.into(), attempt),
                    Err(ce) => self.retry_later(&StepError::from(ce).into(), attempt),
                }
            }
            Err(e) => self.fail(&job, JobState::Running, e.kind, e.detail).await,
        }
    }

    /// Moves the job to `running`, if its owner has room. A job already
    /// running belongs to another runner unless `take_over` (a
    /// redelivery: its holder died) or it has not moved for
    /// [`STALE_RUNNING`]; a job taken over stops counting for its owner
    /// and then waits for room like any other. Recovery at start moves a
    /// dead process's jobs back to `pending` before anything else runs.
    async fn start(&self, job: JobRecord, take_over: bool) -> Result<Begin, StepError> {
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
                Err(e) => return Err(e.into()),
            }
        }
        match Lines::claim(&*self.catalog, job.id, self.config.user_concurrency).await {
            Ok(begin) => Ok(begin),
            // Someone else started it between our read and our write.
            Err(CatalogError::StateConflict { .. }) => Ok(elsewhere),
            Err(e) => Err(e.into()),
        }
    }

    /// The per-user concurrency the worker pools keep (`None`: none).
    pub(crate) fn user_concurrency(&self) -> Option<NonZeroU32> {
        self.config.user_concurrency
    }

    pub(crate) fn lines(&self) -> &Lines {
        &self.lines
    }

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
            Err(e) => self.retry_later(&StepError::from(e).into(), 1),
        }
    }

    /// Tells the user the outcome of a final job, once: the status message
    /// becomes the final reply, and the catalog records that it was sent.
    /// Repeating it (after a crash before the record) edits the same
    /// message to the same text, which changes nothing the user sees.
    ///
    /// `Retry` when Telegram could not take the reply now: the redelivery
    /// (or recovery) finds the job final but unreplied and replies then.
    #[tracing::instrument(name = "reply", skip_all, fields(job = %job.id, state = %job.state))]
    pub async fn reply_outcome(&self, job: &JobRecord) -> Outcome {
        let text = match self.outcome_text(job).await {
            Ok(Some(t)) => t,
            Ok(None) => return Outcome::Done,
            Err(e) => return self.retry_later(&e.into(), 1),
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
                warn!(job = %job.id, error = %e, "final reply refused by Telegram");
            }
            Err(e) => {
                warn!(job = %job.id, error = %e, "final reply not delivered yet");
                return self.retry_later(&StepError::from(e).into(), 1);
            }
        }
        if let Err(e) = self.catalog.mark_replied(job.id).await {
            // Replying again later edits the message to the same text.
            return self.retry_later(&StepError::from(e).into(), 1);
        }
        Outcome::Done
    }

    /// The final reply for a job's outcome; `None` while it is not final.
    async fn outcome_text(&self, job: &JobRecord) -> Result<Option<String>, StepError> {
        let f = &job.incoming;
        let corrupt = |what: &str| StepError {
            kind: ErrorKind::Internal,
            detail: format!("stored job {} has no {what}", job.id),
            retry_after: None,
        };
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
                let url = self.link_url(&link.token.to_string());
                Some(messages::stored(&file.name, file.size, &url))
            }
            JobState::Failed => Some(match job.error_kind.unwrap_or(ErrorKind::Internal) {
                ErrorKind::TooBig
                    if !self.telegram.local_mode() && f.size.is_none_or(|s| s > CLOUD_DOWNLOAD_LIMIT.bytes()) =>
                {
                    messages::too_big_for_cloud(f)
                }
                ErrorKind::TooBig => messages::over_limit(f, self.config.max_file_size),
                ErrorKind::OverQuota => messages::over_quota(f, job.error_detail.as_deref()),
                ErrorKind::RateLimited => messages::rate_limited(f, job.error_detail.as_deref()),
                k => messages::failed(f, k),
            }),
            JobState::Pending | JobState::Running => None,
        })
    }

    /// Stores the job's file and commits it; returns the stored job.
    async fn ingest(&self, job: &JobRecord) -> Result<JobRecord, StepError> {
        let f = &job.incoming;
        if job.attempts > 1 {
            self.abort_earlier_uploads(job).await;
        }
        // Size checks first: nothing is downloaded for a file we refuse.
        if let Some(size) = f.size
            && (size > self.config.max_file_size.bytes()
                || (!self.telegram.local_mode() && size > CLOUD_DOWNLOAD_LIMIT.bytes()))
        {
            return Err(StepError {
                kind: ErrorKind::TooBig,
                detail: format!("{size} bytes"),
                retry_after: None,
            });
        }
        // The rate limit and quotas next, also before anything is
        // downloaded or said: a deduplicated file counts just the same (the
        // user sent it; it adds a file row and usage).
        self.admit(job).await?;
        let room = self.quota_room(f, f.size).await?;
        let status = match job.status_message_id {
            Some(m) => Some(m),
            None => match self
                .telegram
                .send_html(f.chat_id, &messages::receiving(f), Some(f.message_id))
                .await
            {
                Ok(m) => {
                    self.catalog.set_status_message(job.id, m).await?;
                    Some(m)
                }
                // The file can be stored without a status message; the
                // final reply is then sent as a new message.
                Err(e) if matches!(e.kind(), ErrorKind::BlockedByUser | ErrorKind::TelegramRejected) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let mut job = job.clone();
        job.status_message_id = status;

        // Already stored by anyone: link at once, no download.
        if let Some(blob) = self.catalog.blob(&f.file_unique_id).await? {
            if self.storage.head(&blob.object_key).await?.is_some() {
                // The commit checks the quotas with the size known now.
                let stored = StoredBlob {
                    object_key: blob.object_key,
                    size: blob.size,
                    sha256: blob.sha256,
                };
                return self.commit(&job, stored, false).await;
            }
            // The bytes are gone (lost bucket, manual deletion): forget the
            // blob so this download becomes the new one.
            warn!(job = %job.id, key = %blob.object_key, "blob row without object: downloading again");
            self.catalog.forget_blob(&f.file_unique_id, &blob.object_key).await?;
        }

        // getFile and the opening of the byte stream; the bytes themselves
        // flow during the upload, which pulls them.
        let download = tracing::info_span!("download", size = tracing::field::Empty);
        let asking = {
            let (file, since) = (f.clone(), Instant::now());
            let text = move || Some(messages::asking(&file, since.elapsed()));
            StatusEditor::spawn(&self.telegram, f.chat_id, status, self.config.progress_interval, text)
        };
        let remote = self
            .telegram
            .resolve(&f.telegram_file_id)
            .instrument(download.clone())
            .await;
        asking.stop().await;
        let remote = remote?;
        let expected = remote.size.or(f.size);
        if let Some(size) = expected
            && size > self.config.max_file_size.bytes()
        {
            return Err(StepError {
                kind: ErrorKind::TooBig,
                detail: format!("{size} bytes"),
                retry_after: None,
            });
        }
        let room = match expected {
            Some(size) => self.settle_quota(f, size, room).await?,
            None => room,
        };
        // A quota reserves at most the room left: a stream of unknown size
        // is cut off there.
        let limit = ByteLimit::new(self.config.max_file_size.bytes(), room);
        if let Some(size) = expected {
            download.record("size", size);
        }
        let source = self.telegram.open(&remote).instrument(download).await?;
        let key = ObjectKey::for_job_upload(job.id);
        let counter = Arc::new(AtomicU64::new(0));
        let progress = {
            let (file, counter, mut last) = (f.clone(), counter.clone(), 0);
            let text = move || {
                let done = counter.load(Ordering::Relaxed);
                (done != last).then(|| {
                    last = done;
                    messages::progress(&file, done, expected)
                })
            };
            StatusEditor::spawn(&self.telegram, f.chat_id, status, self.config.progress_interval, text)
        };
        let counted = source.map({
            let counter = counter.clone();
            move |chunk: Result<Bytes, TelegramError>| {
                if let Ok(b) = &chunk {
                    counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                chunk
            }
        });
        let upload = tracing::info_span!("upload", key = %key, bytes = tracing::field::Empty);
        let put = self
            .storage
            .put_stream(&key, counted, expected, limit.bytes)
            .instrument(upload.clone())
            .await;
        if let Ok(put) = &put {
            upload.record("bytes", put.size);
        }
        // No progress edit may land after the final reply.
        progress.stop().await;
        let outcome = match (put, limit.quota_room) {
            (Err(StorageError::TooLarge { .. }), Some(room)) => return Err(self.stream_over_quota(f, room).await),
            (put, _) => put?,
        };
        let stored = StoredBlob {
            object_key: key,
            size: outcome.size,
            sha256: outcome.sha256,
        };
        self.commit(&job, stored, true).await
    }

    /// The quota checks made before the download are a forecast: files of
    /// the same user (or, for a total quota, anyone's) checked at the same
    /// time all saw the same room. With the file's size known, this takes
    /// the quota lock, checks again, and returns the lock for the caller to
    /// hold until the file is committed, so the quotas hold exactly (no
    /// lock when no enforced `Reject` quota counts the file), with the
    /// dry-run quotas the file would exceed.
    async fn lock_quotas(&self, f: &IncomingFile, size: u64) -> Result<QuotaGate, StepError> {
        let policies = self.policies().await?;
        let incoming = Incoming {
            owner: f.user_id,
            chat: f.chat_id,
            mime: &f.mime_type,
            size: Some(size),
        };
        let lock = match quota_lock_scope(&policies, &incoming) {
            Some(scope) => Some(self.catalog.quota_lock(scope).await?),
            None => None,
        };
        match self.quotas.check_quota(&policies, &incoming).await? {
            QuotaVerdict::Allowed { would_reject, .. } => Ok(QuotaGate { lock, would_reject }),
            QuotaVerdict::Exceeded(q) => {
                if let Some(lock) = lock
                    && let Err(e) = lock.release().await
                {
                    warn!(error = %e, "releasing the quota lock failed");
                }
                info!(user = f.user_id.0, "quota taken by files committed meanwhile");
                Err(StepError::over_quota(q.to_string()))
            }
        }
    }

    /// A file was committed that dry-run quotas would have refused: say so
    /// in the log and count it for the policies' status. Best effort: the
    /// file is stored either way, and a count lost to a failing catalog
    /// only makes the dry run look milder.
    async fn count_would_reject(&self, job: &JobRecord, would_reject: &[QuotaExceeded]) {
        for q in would_reject {
            info!(
                job = %job.id,
                user = job.incoming.user_id.0,
                policy = %q.policy,
                refusal = %q,
                "dry run: a quota would have refused this file; accepted"
            );
            if let Err(e) = self.catalog.count_would_reject(&q.policy).await {
                warn!(policy = %q.policy, error = %e, "could not count a would-be refusal");
            }
        }
    }

    /// Takes a slot for the job under its owner's rate limit. A job that
    /// holds one already (a retry, a redelivery) keeps it.
    async fn admit(&self, job: &JobRecord) -> Result<(), StepError> {
        let Some(limit) = self.config.rate_limit else {
            return Ok(());
        };
        match self
            .catalog
            .admit(job.id, limit.files, limit.window, chrono::Utc::now())
            .await?
        {
            Admission::Admitted => Ok(()),
            Admission::Limited { retry_after } => {
                info!(job = %job.id, user = job.incoming.user_id.0, "rate limit reached");
                Err(StepError {
                    kind: ErrorKind::RateLimited,
                    detail: messages::rate_limit_detail(limit, retry_after),
                    retry_after: None,
                })
            }
        }
    }

    /// An earlier attempt that died mid-upload (killed, its node lost) could
    /// not abort its multipart upload, and the store keeps its parts, and
    /// bills for them, until someone does. Its keys share the job's
    /// prefix, and this attempt has not started its own upload yet. Best
    /// effort: orphan collection aborts what is left after its grace period.
    async fn abort_earlier_uploads(&self, job: &JobRecord) {
        match self
            .storage
            .abort_unfinished_uploads(&ObjectKey::job_upload_prefix(job.id))
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(job = %job.id, uploads = n, "aborted uploads an earlier attempt left behind"),
            Err(e) => warn!(job = %job.id, error = %e, "could not abort an earlier attempt's uploads"),
        }
    }

    /// The policies in force, read from the catalog at most once per
    /// `policy_ttl`. A stored policy that does not parse is skipped.
    async fn policies(&self) -> Result<Arc<[Policy]>, StepError> {
        if let Some((at, policies)) = &*self.policies.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < self.policy_ttl
        {
            return Ok(policies.clone());
        }
        let rows = self.catalog.policies().await?;
        let policies: Arc<[Policy]> = rows
            .iter()
            .filter_map(|row| match Policy::from_row(row) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(policy = %row.key, error = %e, "ignoring a stored policy that is not valid");
                    None
                }
            })
            .collect();
        *self.policies.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), policies.clone()));
        Ok(policies)
    }

    /// What the `Reject` quotas say of a file of `size` (`None`: not
    /// known yet).
    async fn quota_verdict(&self, f: &IncomingFile, size: Option<u64>) -> Result<QuotaVerdict, StepError> {
        let policies = self.policies().await?;
        if policies.is_empty() {
            return Ok(QuotaVerdict::Allowed {
                room: None,
                would_reject: Vec::new(),
            });
        }
        let incoming = Incoming {
            owner: f.user_id,
            chat: f.chat_id,
            mime: &f.mime_type,
            size,
        };
        Ok(self.quotas.check_quota(&policies, &incoming).await?)
    }

    /// Fails with [`ErrorKind::OverQuota`] when a file of `size` would
    /// exceed a `Reject` quota; otherwise returns the bytes it may take at
    /// most (`None`: no byte quota applies).
    async fn quota_room(&self, f: &IncomingFile, size: Option<u64>) -> Result<Option<u64>, StepError> {
        match self.quota_verdict(f, size).await? {
            QuotaVerdict::Allowed { room, .. } => Ok(room),
            QuotaVerdict::Exceeded(q) => Err(StepError::over_quota(q.to_string())),
        }
    }

    /// The file turned out to be `size` bytes: checks the quotas again
    /// if that is more than the `room` granted before (the size was not
    /// known, so every size range matched), and returns the room now.
    async fn settle_quota(&self, f: &IncomingFile, size: u64, room: Option<u64>) -> Result<Option<u64>, StepError> {
        match room {
            Some(r) if size > r => self.quota_room(f, Some(size)).await,
            _ => Ok(room),
        }
    }

    /// The download of a file of unknown size went past the `room` its
    /// quota left: the refusal to tell the user, with the quota's numbers
    /// when the quota still says so.
    async fn stream_over_quota(&self, f: &IncomingFile, room: u64) -> StepError {
        match self.quota_verdict(f, Some(room.saturating_add(1))).await {
            Ok(QuotaVerdict::Exceeded(mut q)) => {
                // Its size is still unknown: say none.
                q.incoming = None;
                StepError::over_quota(q.to_string())
            }
            _ => StepError::over_quota(format!(
                "this file is larger than the {} left in your quota",
                ByteSize::from_bytes(room)
            )),
        }
    }

    /// Commits a stored blob. `fresh` says the object was uploaded by this
    /// attempt (not a shared blob being reused).
    #[tracing::instrument(name = "commit", skip_all, fields(job = %job.id, fresh))]
    async fn commit(&self, job: &JobRecord, stored: StoredBlob, fresh: bool) -> Result<JobRecord, StepError> {
        let uploaded = stored.object_key.clone();
        let gate = match self.lock_quotas(&job.incoming, stored.size).await {
            Ok(gate) => gate,
            Err(e) => {
                // Refused (or not checkable): this attempt's upload is
                // named by nothing.
                if fresh && let Err(d) = self.storage.delete(&uploaded).await {
                    warn!(error = %d, "could not delete a refused upload; orphan collection will");
                }
                return Err(e);
            }
        };
        let committed = self.catalog.commit_stored(job.id, stored, NewLink::unlimited()).await;
        if let Some(lock) = gate.lock
            && let Err(e) = lock.release().await
        {
            // The lock went with its transaction all the same.
            warn!(error = %e, "releasing the quota lock failed");
        }
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                // Delete our upload only when the catalog positively shows
                // nothing refers to it; when in doubt (the catalog is failing,
                // or the commit may have landed) orphan collection decides.
                if fresh
                    && let Ok(blob) = self.catalog.blob(&job.incoming.file_unique_id).await
                    && blob.is_none_or(|b| b.object_key != uploaded)
                {
                    let _ = self.storage.delete(&uploaded).await;
                }
                return Err(e.into());
            }
        };
        if let Some(extra) = &committed.redundant_object
            && let Err(e) = self.storage.delete(extra).await
        {
            warn!(error = %e, "could not delete a redundant upload; orphan collection will");
        }
        info!(job = %job.id, file = %committed.file.id, size = committed.file.size, "file stored");
        self.count_would_reject(job, &gate.would_reject).await;
        // A blob someone else committed first makes this a deduplication.
        let uploaded = fresh && committed.redundant_object.is_none();
        self.metrics.stored(uploaded.then_some(committed.file.size));
        let mut stored = committed.job;
        // The status message may have been sent during this attempt.
        stored.status_message_id = stored.status_message_id.or(job.status_message_id);
        Ok(stored)
    }

    /// The incoming file of a job, for callers that report on it.
    pub fn describe(job: &JobRecord) -> &IncomingFile {
        &job.incoming
    }
}

/// What a commit holds and owes after its final quota check.
struct QuotaGate {
    /// Held until the commit is done; `None` when no enforced quota
    /// counts the file.
    lock: Option<QuotaLock>,
    /// Dry-run quotas the file would exceed, counted once it is committed.
    would_reject: Vec<QuotaExceeded>,
}

/// A classified failure of a pipeline step, opaque outside the crate.
#[derive(Debug)]
pub struct StepErrorPublic(StepError);

impl From<StepError> for StepErrorPublic {
    fn from(e: StepError) -> Self {
        Self(e)
    }
}

impl std::fmt::Display for StepErrorPublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.kind, self.0.detail)
    }
}

impl std::error::Error for StepErrorPublic {}

impl StepErrorPublic {
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }
}

#[cfg(test)]
mod tests {
    use super::ByteLimit;

    #[test]
    fn the_tighter_of_max_size_and_quota_room_limits_a_download() {
        assert_eq!(
            ByteLimit::new(100, None),
            ByteLimit {
                bytes: 100,
                quota_room: None
            }
        );
        assert_eq!(
            ByteLimit::new(100, Some(40)),
            ByteLimit {
                bytes: 40,
                quota_room: Some(40)
            }
        );
        // The maximum file size binds: a file past it is too big, not over quota.
        assert_eq!(
            ByteLimit::new(100, Some(100)),
            ByteLimit {
                bytes: 100,
                quota_room: None
            }
        );
        assert_eq!(ByteLimit::new(100, Some(500)).quota_room, None);
    }
}
