//! Each role's arguments: exactly what that role reads, so its `--help`
//! lists nothing it ignores.

use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;
use teledrop_core::ByteSize;
use teledrop_core::tls::CaBundle;
use url::Url;

use super::parse::{UserIds, duration, files_per_minute, http_url, max_file_size, user_ids};
use super::{
    AdminArgs, ConfigError, DatabaseArgs, HttpArgs, NatsArgs, StorageArgs, TelegramArgs, TlsArgs, WebhookSecretArgs,
};

#[derive(Debug, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub orphans: OrphanArgs,
    /// The controller has no public routes: only the admin listener.
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Watch RetentionPolicies in this namespace only (empty: all namespaces).
    #[arg(long, env = "TELEDROP_WATCH_NAMESPACE", value_name = "TELEDROP_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Name of the coordination.k8s.io Lease replicas elect a leader on.
    #[arg(
        long,
        env = "TELEDROP_LEASE_NAME",
        value_name = "TELEDROP_LEASE_NAME",
        default_value = "teledrop-controller"
    )]
    pub lease_name: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else `default`).
    #[arg(long, env = "TELEDROP_LEASE_NAMESPACE", value_name = "TELEDROP_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in events (default: the host name).
    #[arg(long, env = "POD_NAME", value_name = "POD_NAME")]
    pub pod_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct OrphanArgs {
    /// Objects no catalog row names are removed once older than this; it
    /// must exceed the longest upload (an upload writes its object first).
    #[arg(
        long,
        env = "TELEDROP_ORPHAN_GRACE",
        value_name = "TELEDROP_ORPHAN_GRACE",
        default_value = "24h",
        value_parser = humantime::parse_duration
    )]
    pub orphan_grace: std::time::Duration,
    /// How often orphaned objects are looked for.
    #[arg(
        long,
        env = "TELEDROP_ORPHAN_INTERVAL",
        value_name = "TELEDROP_ORPHAN_INTERVAL",
        default_value = "1h",
        value_parser = humantime::parse_duration
    )]
    pub orphan_interval: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct IngressArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub secret: WebhookSecretArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Where the webhook receiver listens (`/telegram/webhook` only).
    #[arg(
        long,
        env = "TELEDROP_LISTEN",
        value_name = "TELEDROP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub admin: AdminArgs,
    /// How long to wait for JetStream to confirm an update before answering 503.
    #[arg(
        long,
        env = "TELEDROP_PUBLISH_TIMEOUT",
        value_name = "TELEDROP_PUBLISH_TIMEOUT",
        default_value = "5s",
        value_parser = duration
    )]
    pub publish_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    /// A worker has no public routes: only the admin listener.
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct LinksArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Where the link server listens (`/download/{token}` only).
    #[arg(
        long,
        env = "TELEDROP_LISTEN",
        value_name = "TELEDROP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Args)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub telegram: TelegramArgs,
    #[command(subcommand)]
    pub action: WebhookAction,
}

#[derive(Debug, Subcommand)]
pub enum WebhookAction {
    /// Point Telegram at the ingress (idempotent).
    Set {
        /// The ingress's public base URL; `/telegram/webhook` is appended.
        #[arg(long, env = "TELEDROP_WEBHOOK_URL", value_name = "TELEDROP_WEBHOOK_URL", value_parser = http_url)]
        url: Url,
        #[command(flatten)]
        secret: WebhookSecretArgs,
        /// Parallel connections Telegram may open (1-100).
        #[arg(long, env = "TELEDROP_WEBHOOK_MAX_CONNECTIONS", default_value_t = 40,
              value_parser = clap::value_parser!(u8).range(1..=100))]
        max_connections: u8,
    },
    /// Remove the webhook (pending updates are kept).
    Delete,
    /// Show what Telegram reports about the webhook.
    Info,
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub ingest: IngestArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// A YAML file of RetentionPolicy documents (as for kubectl) applied to
    /// this instance: swept on their intervals, quotas checked at ingest.
    #[arg(long, env = "TELEDROP_POLICY_FILE", value_name = "TELEDROP_POLICY_FILE")]
    pub policy_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub orphans: OrphanArgs,
    /// Where the link server listens (`/download/{token}` only).
    #[arg(
        long,
        env = "TELEDROP_LISTEN",
        value_name = "TELEDROP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// What the ingest pipeline needs, shared by `standalone` and `worker`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub telegram: TelegramArgs,
    /// Public base URL of the link server, as users reach it; links are
    /// `{TELEDROP_PUBLIC_URL}/download/{token}`.
    #[arg(long, env = "TELEDROP_PUBLIC_URL", value_name = "TELEDROP_PUBLIC_URL", value_parser = http_url)]
    pub public_url: Option<Url>,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// [`IngestArgs`], validated.
#[derive(Debug)]
pub struct Ingest {
    pub telegram: teledrop_telegram::TelegramConfig,
    pub storage: teledrop_storage::Storage,
    pub limits: LimitArgs,
    pub pipeline: teledrop_worker::PipelineConfig,
}

impl IngestArgs {
    pub fn resolve(&self, ca: Option<&CaBundle>) -> Result<Ingest, ConfigError> {
        let telegram = self.telegram.resolve(ca)?;
        let public_url = self
            .public_url
            .clone()
            .ok_or(ConfigError::Missing("TELEDROP_PUBLIC_URL"))?;
        let limits = self.limits.clone();
        let pipeline = teledrop_worker::PipelineConfig {
            public_url,
            max_file_size: limits.max_file_size,
            allowed_users: limits.allowed_users.0.clone(),
            progress_interval: limits.progress_interval,
            max_attempts: limits.max_attempts,
            rate_limit: teledrop_worker::RateLimit::per_minute(limits.rate_limit),
            user_concurrency: std::num::NonZeroU32::new(limits.user_concurrency),
        };
        Ok(Ingest {
            telegram,
            storage: self.storage.resolve(ca)?,
            limits,
            pipeline,
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest file accepted (e.g. `2000MiB`, `500M`); never above what the
    /// Bot API mode allows.
    #[arg(
        long,
        env = "TELEDROP_MAX_FILE_SIZE",
        value_name = "TELEDROP_MAX_FILE_SIZE",
        default_value = "2000MiB",
        value_parser = max_file_size
    )]
    pub max_file_size: ByteSize,
    /// Comma-separated Telegram user ids allowed to use the bot; empty: everyone.
    #[arg(
        long,
        env = "TELEDROP_ALLOWED_USERS",
        value_name = "TELEDROP_ALLOWED_USERS",
        default_value = "",
        value_parser = user_ids
    )]
    pub allowed_users: UserIds,
    /// Files processed at once per process.
    #[arg(
        long,
        env = "TELEDROP_WORKER_CONCURRENCY",
        value_name = "TELEDROP_WORKER_CONCURRENCY",
        default_value_t = 4,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024)
    )]
    pub worker_concurrency: usize,
    /// Least time between two progress edits of a status message.
    #[arg(
        long,
        env = "TELEDROP_PROGRESS_INTERVAL",
        value_name = "TELEDROP_PROGRESS_INTERVAL",
        default_value = "3s",
        value_parser = duration
    )]
    pub progress_interval: Duration,
    /// Attempts before a job fails for good.
    #[arg(
        long,
        env = "TELEDROP_MAX_ATTEMPTS",
        value_name = "TELEDROP_MAX_ATTEMPTS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_attempts: u32,
    /// How long in-flight work may take to finish after SIGTERM.
    #[arg(
        long,
        env = "TELEDROP_DRAIN_TIMEOUT",
        value_name = "TELEDROP_DRAIN_TIMEOUT",
        default_value = "30s",
        value_parser = duration
    )]
    pub drain_timeout: Duration,
    /// Files each user may send per minute, counted over every worker
    /// (through the database); 0: no limit. A file past it is refused
    /// before anything is downloaded, with a reply saying when to send it
    /// again.
    #[arg(
        long,
        env = "TELEDROP_RATE_LIMIT",
        value_name = "TELEDROP_RATE_LIMIT",
        default_value = "0",
        value_parser = files_per_minute
    )]
    pub rate_limit: u32,
    /// Files of one user processed at once, over every worker (through the
    /// database); 0: no limit. A user's further files wait without taking
    /// a worker's slot, so other users are served meanwhile.
    #[arg(
        long,
        env = "TELEDROP_USER_CONCURRENCY",
        value_name = "TELEDROP_USER_CONCURRENCY",
        default_value_t = 2
    )]
    pub user_concurrency: u32,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// For the traces it exports (Postgres takes `sslrootcert` in DATABASE_URL).
    #[command(flatten)]
    pub tls: TlsArgs,
}
