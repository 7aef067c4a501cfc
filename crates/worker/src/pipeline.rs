//! The [`Pipeline`]: what a worker process holds to turn updates into
//! stored files (catalog, object store, Bot API client, quota gate, fair
//! queues, metrics) and its configuration. Its work is split by concern:
//! [`crate::intake`] takes updates in, [`crate::job`] runs a job and
//! retries it, [`crate::ingest`] stores and commits its file,
//! [`crate::answer`] delivers the final reply.

use crate::fair::Lines;
use crate::metrics::WorkerMetrics;
use crate::quota::QuotaGate;
use crate::rate_limit::RateLimit;
use crate::replies::Limits;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use teledrop_catalog::Catalog;
use teledrop_core::{ByteSize, UserId};
use teledrop_retention::PolicyEnforcer;
use teledrop_storage::Storage;
use teledrop_telegram::Telegram;
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

pub struct Pipeline {
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) storage: Storage,
    pub(crate) telegram: Telegram,
    pub(crate) config: PipelineConfig,
    pub(crate) quotas: QuotaGate,
    pub(crate) metrics: Arc<WorkerMetrics>,
    /// This process's deliveries waiting for their owner to have room.
    pub(crate) lines: Lines,
}

impl Pipeline {
    pub fn new(catalog: Arc<dyn Catalog>, storage: Storage, telegram: Telegram, config: PipelineConfig) -> Self {
        Self {
            quotas: QuotaGate::new(catalog.clone(), PolicyEnforcer::new(catalog.clone(), storage.clone())),
            catalog,
            storage,
            telegram,
            config,
            metrics: Arc::default(),
            lines: Lines::default(),
        }
    }

    /// Reads the policies from the catalog at most once per `ttl`
    /// (default [`crate::POLICY_TTL`]; zero reads them for every job).
    pub fn with_policy_ttl(mut self, ttl: Duration) -> Self {
        self.quotas.policy_ttl = ttl;
        self
    }

    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// What this pipeline did, for `/metrics`.
    pub fn metrics(&self) -> &Arc<WorkerMetrics> {
        &self.metrics
    }

    pub(crate) fn link_url(&self, token: &str) -> String {
        format!(
            "{}/download/{token}",
            self.config.public_url.as_str().trim_end_matches('/')
        )
    }

    pub(crate) fn allowed(&self, user: UserId) -> bool {
        self.config.allowed_users.is_empty() || self.config.allowed_users.contains(&user)
    }

    /// What the replies name as the bot's limits.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_file_size: self.config.max_file_size,
            local_mode: self.telegram.local_mode(),
        }
    }

    /// The per-user concurrency the worker pools keep (`None`: none).
    pub(crate) fn user_concurrency(&self) -> Option<NonZeroU32> {
        self.config.user_concurrency
    }

    pub(crate) fn lines(&self) -> &Lines {
        &self.lines
    }
}
