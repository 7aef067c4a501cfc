//! Typed configuration: every setting is a flag and an environment
//! variable, validated at start with an error that names the variable.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use teledrop_core::tls::{CaBundle, ClientIdentity, TlsFileError};
use teledrop_core::{BotToken, ByteSize, Secret, UserId};
use url::Url;

#[derive(Debug, Parser)]
#[command(
    name = "teledrop",
    version,
    about = "Files sent to a Telegram bot become durable HTTPS download links."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every role in one process: long polling, worker, link server.
    /// Defaults to SQLite and a local folder; nothing else to install.
    Standalone(StandaloneArgs),
    /// Apply the catalog's database migrations and exit.
    Migrate(DatabaseArgs),
    /// The webhook receiver: authenticates Telegram's POSTs and publishes
    /// each update to NATS JetStream before answering.
    Ingress(IngressArgs),
    /// Pulls updates from NATS JetStream and stores files (scale out freely).
    Worker(WorkerArgs),
    /// The stateless link server (`/download/{token}`).
    Links(LinksArgs),
    /// Manage the bot's webhook with Telegram.
    Webhook(WebhookArgs),
    /// The RetentionPolicy controller: sweeps, quotas' rules, orphan
    /// collection; leader-elected on a Lease.
    Controller(ControllerArgs),
    /// Print the RetentionPolicy CustomResourceDefinition (YAML).
    Crd,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
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

/// Limits of every HTTP listener of the process (see [`crate::http`]).
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Deadline for a whole request head, counted from when the server
    /// waits for it: also how long a kept-alive connection may idle.
    #[arg(long, env = "TELEDROP_HTTP_HEADER_TIMEOUT", value_name = "TELEDROP_HTTP_HEADER_TIMEOUT",
          default_value = "10s", value_parser = positive_duration, global = true)]
    pub http_header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    #[arg(long, env = "TELEDROP_HTTP_IDLE_TIMEOUT", value_name = "TELEDROP_HTTP_IDLE_TIMEOUT",
          default_value = "60s", value_parser = positive_duration, global = true)]
    pub http_idle_timeout: Duration,
    /// Bound on requests that stream no file (webhook, probes, metrics): 408 past it.
    #[arg(long, env = "TELEDROP_HTTP_REQUEST_TIMEOUT", value_name = "TELEDROP_HTTP_REQUEST_TIMEOUT",
          default_value = "30s", value_parser = positive_duration, global = true)]
    pub http_request_timeout: Duration,
    /// Connections served at once per listener; more wait in the backlog.
    #[arg(long, env = "TELEDROP_HTTP_MAX_CONNECTIONS", value_name = "TELEDROP_HTTP_MAX_CONNECTIONS",
          default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub http_max_connections: u32,
    /// After SIGTERM, how long open requests may take before they are cut.
    #[arg(long, env = "TELEDROP_HTTP_DRAIN_TIMEOUT", value_name = "TELEDROP_HTTP_DRAIN_TIMEOUT",
          default_value = "30s", value_parser = positive_duration, global = true)]
    pub http_drain_timeout: Duration,
}

impl HttpArgs {
    pub fn limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            header_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
            request_timeout: self.http_request_timeout,
            max_connections: self.http_max_connections as usize,
            drain_timeout: self.http_drain_timeout,
        }
    }
}

/// The listener of `/healthz`, `/readyz` and `/metrics`, apart from the
/// public one: a readiness probe costs a database query and a storage call,
/// and metrics describe the whole process, so neither belongs where anyone
/// on the internet can call them.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Where `/healthz`, `/readyz` and `/metrics` are served. All
    /// interfaces by default: kubelet probes and Prometheus reach a pod
    /// from outside it; keep the port out of public Services and Ingresses.
    #[arg(
        long,
        env = "TELEDROP_ADMIN_LISTEN",
        value_name = "TELEDROP_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,
}

impl AdminArgs {
    /// Refuses the public address: one port cannot serve both, and the
    /// bind error alone would not say which variable to change.
    pub fn check_apart_from(&self, public: SocketAddr) -> Result<(), ConfigError> {
        let a = self.admin_listen;
        if a.port() != 0
            && a.port() == public.port()
            && (a.ip() == public.ip() || a.ip().is_unspecified() || public.ip().is_unspecified())
        {
            return Err(ConfigError::invalid(
                "TELEDROP_ADMIN_LISTEN",
                format!("{a} overlaps TELEDROP_LISTEN ({public}): give the admin listener its own port"),
            ));
        }
        Ok(())
    }
}

/// What every role takes besides its own arguments.
#[derive(Debug, Clone, Default)]
pub struct Common {
    /// `TELEDROP_CA_FILE`.
    pub ca: Option<CaBundle>,
    pub http: crate::http::HttpLimits,
}

/// Trust shared by every TLS client of the process.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// A PEM bundle of CA certificates that the Bot API, object storage,
    /// NATS and OTLP clients trust on top of the system's roots (a private
    /// CA, a self-hosted Bot API server). Postgres takes `sslrootcert` in
    /// DATABASE_URL and Kubernetes its kubeconfig instead.
    #[arg(long, env = "TELEDROP_CA_FILE", value_name = "TELEDROP_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

impl TlsArgs {
    /// The bundle, read and checked (expired or malformed certificates
    /// stop the start).
    pub fn resolve(&self) -> Result<Option<CaBundle>, ConfigError> {
        self.ca_file
            .as_deref()
            .map(|p| CaBundle::load("TELEDROP_CA_FILE", p))
            .transpose()
            .map_err(ConfigError::from)
    }
}

#[derive(Debug, Args)]
pub struct NatsArgs {
    /// NATS server(s) with JetStream, e.g. `nats://nats:4222` (comma-separated for several).
    #[arg(
        long,
        env = "NATS_URL",
        value_name = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Name of the JetStream work stream; the dead-letter stream is
    /// `{name}_DEADLETTER`. Change it to run several teledrops on one NATS.
    #[arg(
        long,
        env = "TELEDROP_NATS_STREAM",
        value_name = "TELEDROP_NATS_STREAM",
        default_value = "TELEDROP_UPDATES"
    )]
    pub nats_stream: String,
    /// Subject prefix: updates on `{prefix}.updates`, dead letters on
    /// `{prefix}.deadletter`, consumer `{prefix}-workers`.
    #[arg(
        long,
        env = "TELEDROP_NATS_PREFIX",
        value_name = "TELEDROP_NATS_PREFIX",
        default_value = "teledrop"
    )]
    pub nats_prefix: String,
    /// A delivery a worker neither settles nor keeps alive within this time
    /// goes to another worker: how long a dead worker's file waits.
    /// Workers confirm progress every quarter of it, so it bounds no
    /// transfer. Ingress and workers must agree (both create the consumer).
    #[arg(
        long,
        env = "TELEDROP_NATS_ACK_WAIT",
        value_name = "TELEDROP_NATS_ACK_WAIT",
        default_value = "60s",
        value_parser = positive_duration
    )]
    pub nats_ack_wait: std::time::Duration,
    /// Deliveries of one update before its job is failed and the user told.
    #[arg(
        long,
        env = "TELEDROP_NATS_MAX_DELIVER",
        value_name = "TELEDROP_NATS_MAX_DELIVER",
        default_value_t = 10,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub nats_max_deliver: u16,
    /// Client certificate (PEM) for mutual TLS with NATS; needs NATS_TLS_KEY_FILE.
    #[arg(
        long,
        env = "NATS_TLS_CERT_FILE",
        value_name = "NATS_TLS_CERT_FILE",
        requires = "nats_tls_key_file"
    )]
    pub nats_tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of NATS_TLS_CERT_FILE.
    #[arg(
        long,
        env = "NATS_TLS_KEY_FILE",
        value_name = "NATS_TLS_KEY_FILE",
        requires = "nats_tls_cert_file"
    )]
    pub nats_tls_key_file: Option<PathBuf>,
    /// A NATS `.creds` file (user JWT and nkey seed).
    #[arg(long, env = "NATS_CREDS_FILE", value_name = "NATS_CREDS_FILE",
          conflicts_with_all = ["nats_user", "nats_token_file"])]
    pub nats_creds_file: Option<PathBuf>,
    /// NATS user name; the password comes from NATS_PASSWORD_FILE.
    #[arg(
        long,
        env = "NATS_USER",
        value_name = "NATS_USER",
        requires = "nats_password_file",
        conflicts_with = "nats_token_file"
    )]
    pub nats_user: Option<String>,
    /// File holding the password of NATS_USER.
    #[arg(
        long,
        env = "NATS_PASSWORD_FILE",
        value_name = "NATS_PASSWORD_FILE",
        requires = "nats_user"
    )]
    pub nats_password_file: Option<PathBuf>,
    /// File holding a NATS authentication token.
    #[arg(long, env = "NATS_TOKEN_FILE", value_name = "NATS_TOKEN_FILE")]
    pub nats_token_file: Option<PathBuf>,
}

fn positive_duration(raw: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(raw) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e} (examples: 30s, 2m)")),
    }
}

impl NatsArgs {
    pub fn jetstream(&self, ca: Option<&CaBundle>) -> Result<teledrop_bus::JetStreamConfig, ConfigError> {
        use teledrop_bus::NatsCredentials;
        let read = |var: &'static str, path: &std::path::Path| {
            secret_value(var.trim_end_matches("_FILE"), None, Some(path))?
                .filter(|v| !v.is_empty())
                .map(Secret::new)
                .ok_or(ConfigError::invalid(var, format!("{} is empty", path.display())))
        };
        let credentials = match (&self.nats_creds_file, &self.nats_user, &self.nats_token_file) {
            (Some(creds), _, _) => {
                if !creds.is_file() {
                    return Err(ConfigError::invalid(
                        "NATS_CREDS_FILE",
                        format!("{} is not a readable file", creds.display()),
                    ));
                }
                NatsCredentials::CredsFile(creds.clone())
            }
            (None, Some(user), _) => NatsCredentials::UserPassword {
                user: user.clone(),
                password: read(
                    "NATS_PASSWORD_FILE",
                    self.nats_password_file
                        .as_deref()
                        .ok_or(ConfigError::Missing("NATS_PASSWORD_FILE"))?,
                )?,
            },
            (None, None, Some(token)) => NatsCredentials::Token(read("NATS_TOKEN_FILE", token)?),
            (None, None, None) => NatsCredentials::None,
        };
        let client = match (&self.nats_tls_cert_file, &self.nats_tls_key_file) {
            (Some(cert), Some(key)) => Some(ClientIdentity::load(
                "NATS_TLS_CERT_FILE",
                cert,
                "NATS_TLS_KEY_FILE",
                key,
            )?),
            _ => None,
        };
        let security = teledrop_bus::NatsSecurity {
            ca: ca.cloned(),
            client,
            credentials,
        };
        Ok(teledrop_bus::JetStreamConfig {
            url: self.nats_url.clone(),
            stream: self.nats_stream.clone(),
            subject: format!("{}.updates", self.nats_prefix),
            dead_letter_stream: format!("{}_DEADLETTER", self.nats_stream),
            dead_letter_subject: format!("{}.deadletter", self.nats_prefix),
            consumer: format!("{}-workers", self.nats_prefix),
            ack_wait: self.nats_ack_wait,
            max_deliver: i64::from(self.nats_max_deliver),
            security,
            ..teledrop_bus::JetStreamConfig::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct WebhookSecretArgs {
    /// Secret Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (1-256 of A-Z a-z 0-9 _ -).
    #[arg(
        long,
        env = "TELEDROP_WEBHOOK_SECRET",
        value_name = "TELEDROP_WEBHOOK_SECRET",
        hide_env_values = true,
        conflicts_with = "webhook_secret_file"
    )]
    pub webhook_secret: Option<Secret<String>>,
    /// File holding TELEDROP_WEBHOOK_SECRET.
    #[arg(long, env = "TELEDROP_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
}

impl WebhookSecretArgs {
    pub fn resolve(&self) -> Result<teledrop_ingress::WebhookSecret, ConfigError> {
        secret_value(
            "TELEDROP_WEBHOOK_SECRET",
            self.webhook_secret.as_ref().map(|s| s.expose().as_str()),
            self.webhook_secret_file.as_deref(),
        )?
        .ok_or(ConfigError::Missing("TELEDROP_WEBHOOK_SECRET"))?
        .parse()
        .map_err(|e| ConfigError::invalid("TELEDROP_WEBHOOK_SECRET", e))
    }
}

#[derive(Debug, Args)]
pub struct IngressArgs {
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
    #[arg(long, env = "TELEDROP_PUBLISH_TIMEOUT", default_value = "5s")]
    pub publish_timeout: String,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
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
    pub telegram: TelegramArgs,
    #[command(subcommand)]
    pub action: WebhookAction,
}

#[derive(Debug, Subcommand)]
pub enum WebhookAction {
    /// Point Telegram at the ingress (idempotent).
    Set {
        /// The ingress's public base URL; `/telegram/webhook` is appended.
        #[arg(long, env = "TELEDROP_WEBHOOK_URL", value_name = "TELEDROP_WEBHOOK_URL")]
        url: String,
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
pub struct LogArgs {
    /// Log format: `json` (one object per line) or `text`.
    #[arg(
        long,
        env = "TELEDROP_LOG_FORMAT",
        value_name = "TELEDROP_LOG_FORMAT",
        default_value = "json",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// Catalog database: `postgres://user:pass@host/db` or
    /// `sqlite://path/to/file.db`.
    #[arg(
        long,
        env = "DATABASE_URL",
        value_name = "DATABASE_URL",
        hide_env_values = true,
        conflicts_with = "database_url_file"
    )]
    pub database_url: Option<Secret<String>>,
    /// File holding DATABASE_URL (for Kubernetes Secrets).
    #[arg(long, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Postgres connections this process opens at most (default: per role,
    /// see `DbRole`). Every replica holds its own pool: keep the sum over
    /// all replicas under the server's max_connections.
    #[arg(
        long,
        env = "TELEDROP_DB_MAX_CONNECTIONS",
        value_name = "TELEDROP_DB_MAX_CONNECTIONS",
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub db_max_connections: Option<u32>,
}

/// Whose pool [`DatabaseArgs::pool`] sizes. The defaults keep a default
/// Helm install with every autoscaler at its maximum under Postgres's
/// default max_connections of 100 (the arithmetic is in the chart's
/// values.yaml, and a chart test checks it): 20 workers × 3 + 10 link
/// servers × 2 + 2 controllers × 2 + 1 migration Job × 1 = 85. The ingress
/// never connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbRole {
    /// Short queries around each job; a quota check holds one connection
    /// while its commit takes a second.
    Worker,
    /// One lookup per request and a periodic count flush.
    Links,
    /// Sweeps one policy at a time; a standby replica holds none.
    Controller,
    /// One connection holds the migration lock and runs the migrations.
    Migrate,
    /// Every role in one process, usually alone on its database.
    Standalone,
}

impl DbRole {
    pub const fn default_max_connections(self) -> u32 {
        match self {
            Self::Worker => 3,
            Self::Links => 2,
            Self::Controller => 2,
            Self::Migrate => 1,
            Self::Standalone => 16,
        }
    }
}

impl DatabaseArgs {
    /// The pool for `role`: TELEDROP_DB_MAX_CONNECTIONS, else the role's
    /// default, with the catalog's short acquire timeout.
    pub fn pool(&self, role: DbRole) -> Result<teledrop_catalog::PoolConfig, ConfigError> {
        let max = self.db_max_connections.unwrap_or(role.default_max_connections());
        // A quota check holds one connection while its commit takes another:
        // with one, every file under a `Reject` quota would time out.
        if max < 2 && matches!(role, DbRole::Worker | DbRole::Standalone) {
            return Err(ConfigError::invalid(
                "TELEDROP_DB_MAX_CONNECTIONS",
                "must be at least 2 for a worker (a quota check holds one connection while the commit takes another)",
            ));
        }
        Ok(teledrop_catalog::PoolConfig::new(max))
    }

    pub fn resolve(&self, default: Option<&str>) -> Result<String, ConfigError> {
        let url = secret_value(
            "DATABASE_URL",
            self.database_url.as_ref().map(|s| s.expose().as_str()),
            self.database_url_file.as_deref(),
        )?
        .or_else(|| default.map(str::to_owned))
        .ok_or(ConfigError::Missing("DATABASE_URL"))?;
        if url.starts_with("postgres://") || url.starts_with("postgresql://") || url.starts_with("sqlite:") {
            Ok(url)
        } else {
            Err(ConfigError::invalid(
                "DATABASE_URL",
                "must start with postgres://, postgresql:// or sqlite://",
            ))
        }
    }
}

#[derive(Debug, Args)]
pub struct TelegramArgs {
    /// The bot's token from @BotFather.
    #[arg(
        long,
        env = "TELEGRAM_BOT_TOKEN",
        value_name = "TELEGRAM_BOT_TOKEN",
        hide_env_values = true,
        conflicts_with = "telegram_bot_token_file"
    )]
    pub telegram_bot_token: Option<Secret<String>>,
    /// File holding TELEGRAM_BOT_TOKEN (for Kubernetes Secrets).
    #[arg(long, env = "TELEGRAM_BOT_TOKEN_FILE")]
    pub telegram_bot_token_file: Option<PathBuf>,
    /// Bot API root: the cloud API or a self-hosted telegram-bot-api server.
    #[arg(long, env = "TELEGRAM_API_URL", default_value = teledrop_telegram::CLOUD_API_URL)]
    pub telegram_api_url: String,
    /// The Bot API server runs with `--local`: file paths are absolute
    /// paths on a volume shared with teledrop; files up to 2000 MB.
    #[arg(
        long,
        env = "TELEGRAM_LOCAL_MODE",
        value_name = "TELEGRAM_LOCAL_MODE",
        default_value = "false",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub telegram_local_mode: bool,
    /// Local mode: the Bot API server's working directory (its `--dir`),
    /// mounted at the same path here. A `file_path` outside it, through a
    /// symlink or not naming a regular file is refused.
    #[arg(
        long,
        env = "TELEGRAM_LOCAL_DIR",
        value_name = "TELEGRAM_LOCAL_DIR",
        default_value = teledrop_telegram::DEFAULT_LOCAL_DIR
    )]
    pub telegram_local_dir: PathBuf,
    /// Longest wait for one `getFile` answer. A local Bot API server
    /// answers only after fetching the whole file from Telegram, so the
    /// default (30m) covers 2000 MB at about 1.1 MB/s.
    #[arg(
        long,
        env = "TELEGRAM_GETFILE_TIMEOUT",
        value_name = "TELEGRAM_GETFILE_TIMEOUT",
        default_value = "30m",
        value_parser = positive_duration
    )]
    pub telegram_getfile_timeout: Duration,
}

impl TelegramArgs {
    pub fn resolve(&self, ca: Option<&CaBundle>) -> Result<teledrop_telegram::TelegramConfig, ConfigError> {
        let raw = secret_value(
            "TELEGRAM_BOT_TOKEN",
            self.telegram_bot_token.as_ref().map(|s| s.expose().as_str()),
            self.telegram_bot_token_file.as_deref(),
        )?
        .ok_or(ConfigError::Missing("TELEGRAM_BOT_TOKEN"))?;
        let token: BotToken = raw.parse().map_err(|e| ConfigError::invalid("TELEGRAM_BOT_TOKEN", e))?;
        let api_url = parse_http_url("TELEGRAM_API_URL", &self.telegram_api_url)?;
        let mut config = teledrop_telegram::TelegramConfig::new(token, api_url, self.telegram_local_mode);
        if !self.telegram_local_dir.is_absolute() {
            return Err(ConfigError::invalid("TELEGRAM_LOCAL_DIR", "must be an absolute path"));
        }
        config.local_dir = self.telegram_local_dir.clone();
        config.get_file_timeout = self.telegram_getfile_timeout;
        config.ca = ca.cloned();
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
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

#[derive(Debug, Args)]
pub struct StorageArgs {
    /// Object storage: `file:///abs/dir`, a local folder, `s3://bucket[/prefix]`
    /// (with AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP for S3-compatible servers) or `memory://`.
    #[arg(long, env = "TELEDROP_STORAGE_URL", default_value = "./data/objects")]
    pub storage_url: String,
}

impl StorageArgs {
    pub fn resolve(&self, ca: Option<&CaBundle>) -> Result<teledrop_storage::Storage, ConfigError> {
        teledrop_storage::Storage::open(&self.storage_url, std::iter::empty(), ca)
            .map_err(|e| ConfigError::invalid("TELEDROP_STORAGE_URL", e))
    }
}

/// What the ingest pipeline needs, shared by `standalone` and `worker`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub telegram: TelegramArgs,
    /// Public base URL of the link server, as users reach it; links are
    /// `{TELEDROP_PUBLIC_URL}/download/{token}`.
    #[arg(long, env = "TELEDROP_PUBLIC_URL")]
    pub public_url: Option<String>,
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
    pub limits: Limits,
    pub pipeline: teledrop_worker::PipelineConfig,
}

impl IngestArgs {
    pub fn resolve(&self, ca: Option<&CaBundle>) -> Result<Ingest, ConfigError> {
        let telegram = self.telegram.resolve(ca)?;
        let public_url = parse_http_url(
            "TELEDROP_PUBLIC_URL",
            self.public_url
                .as_deref()
                .ok_or(ConfigError::Missing("TELEDROP_PUBLIC_URL"))?,
        )?;
        let limits = self.limits.resolve()?;
        let pipeline = teledrop_worker::PipelineConfig {
            public_url,
            max_file_size: limits.max_file_size,
            allowed_users: limits.allowed_users.clone(),
            progress_interval: limits.progress_interval,
            max_attempts: limits.max_attempts,
            rate_limit: limits.rate_limit,
            user_concurrency: limits.user_concurrency,
        };
        Ok(Ingest {
            telegram,
            storage: self.storage.resolve(ca)?,
            limits,
            pipeline,
        })
    }
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest file accepted (e.g. `2000MiB`, `500M`); never above what the
    /// Bot API mode allows.
    #[arg(long, env = "TELEDROP_MAX_FILE_SIZE", default_value = "2000MiB")]
    pub max_file_size: String,
    /// Comma-separated Telegram user ids allowed to use the bot; empty: everyone.
    #[arg(long, env = "TELEDROP_ALLOWED_USERS", default_value = "")]
    pub allowed_users: String,
    /// Files processed at once per process.
    #[arg(
        long,
        env = "TELEDROP_WORKER_CONCURRENCY",
        value_name = "TELEDROP_WORKER_CONCURRENCY",
        default_value_t = 4
    )]
    pub worker_concurrency: usize,
    /// Least time between two progress edits of a status message.
    #[arg(long, env = "TELEDROP_PROGRESS_INTERVAL", default_value = "3s")]
    pub progress_interval: String,
    /// Attempts before a job fails for good.
    #[arg(
        long,
        env = "TELEDROP_MAX_ATTEMPTS",
        value_name = "TELEDROP_MAX_ATTEMPTS",
        default_value_t = 5
    )]
    pub max_attempts: u32,
    /// How long in-flight work may take to finish after SIGTERM.
    #[arg(long, env = "TELEDROP_DRAIN_TIMEOUT", default_value = "30s")]
    pub drain_timeout: String,
    /// Files each user may send per minute, counted over every worker
    /// (through the database); 0: no limit. A file past it is refused
    /// before anything is downloaded, with a reply saying when to send it
    /// again.
    #[arg(
        long,
        env = "TELEDROP_RATE_LIMIT",
        value_name = "TELEDROP_RATE_LIMIT",
        default_value = "0"
    )]
    pub rate_limit: String,
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

/// Limits, validated.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_file_size: ByteSize,
    pub allowed_users: Vec<UserId>,
    pub worker_concurrency: usize,
    pub progress_interval: Duration,
    pub max_attempts: u32,
    pub drain_timeout: Duration,
    pub rate_limit: Option<teledrop_worker::RateLimit>,
    pub user_concurrency: Option<std::num::NonZeroU32>,
}

impl LimitArgs {
    pub fn resolve(&self) -> Result<Limits, ConfigError> {
        let max_file_size: ByteSize = self
            .max_file_size
            .parse()
            .map_err(|e| ConfigError::invalid("TELEDROP_MAX_FILE_SIZE", e))?;
        if max_file_size > teledrop_core::MAX_FILE_SIZE || max_file_size.bytes() == 0 {
            return Err(ConfigError::invalid(
                "TELEDROP_MAX_FILE_SIZE",
                "must be between 1 byte and 2000MiB",
            ));
        }
        let allowed_users = self
            .allowed_users
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<i64>().map(UserId))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ConfigError::invalid("TELEDROP_ALLOWED_USERS", "expected comma-separated numeric user ids"))?;
        if self.worker_concurrency == 0 || self.worker_concurrency > 1024 {
            return Err(ConfigError::invalid("TELEDROP_WORKER_CONCURRENCY", "must be 1..=1024"));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::invalid("TELEDROP_MAX_ATTEMPTS", "must be at least 1"));
        }
        Ok(Limits {
            max_file_size,
            allowed_users,
            worker_concurrency: self.worker_concurrency,
            progress_interval: parse_duration("TELEDROP_PROGRESS_INTERVAL", &self.progress_interval)?,
            max_attempts: self.max_attempts,
            drain_timeout: parse_duration("TELEDROP_DRAIN_TIMEOUT", &self.drain_timeout)?,
            rate_limit: parse_rate_limit(&self.rate_limit)?,
            user_concurrency: std::num::NonZeroU32::new(self.user_concurrency),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
    #[error("{var} and {var}_FILE are both set: use one")]
    Both { var: &'static str },
    #[error("{var}_FILE: cannot read {path}: {source}")]
    File {
        var: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// A certificate or key file; the message names its variable.
    #[error(transparent)]
    Tls(#[from] TlsFileError),
}

impl ConfigError {
    pub fn invalid(var: &'static str, message: impl std::fmt::Display) -> Self {
        Self::Invalid {
            var,
            message: message.to_string(),
        }
    }
}

/// A secret from `VAR` or from the file `VAR_FILE`, never both.
pub fn secret_value(
    var: &'static str,
    direct: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, ConfigError> {
    let direct = direct.filter(|s| !s.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => Err(ConfigError::Both { var }),
        (Some(v), None) => Ok(Some(v.to_owned())),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|source| ConfigError::File {
                var,
                path: p.display().to_string(),
                source,
            }),
        (None, None) => Ok(None),
    }
}

pub fn parse_http_url(var: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| ConfigError::invalid(var, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(ConfigError::invalid(
            var,
            "must be an http:// or https:// URL with a host",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(var, "must not have a query or fragment"));
    }
    Ok(url)
}

pub fn parse_duration(var: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(raw).map_err(|e| ConfigError::invalid(var, format!("{e} (examples: 3s, 500ms, 2m)")))
}

/// `TELEDROP_RATE_LIMIT`: files per minute per user; empty or 0: none.
pub fn parse_rate_limit(raw: &str) -> Result<Option<teledrop_worker::RateLimit>, ConfigError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let files: u32 = raw.parse().map_err(|_| {
        ConfigError::invalid(
            "TELEDROP_RATE_LIMIT",
            format!("{raw:?} is not a whole number of files per minute (0: no limit)"),
        )
    })?;
    Ok(teledrop_worker::RateLimit::per_minute(files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let e = parse_http_url("TELEDROP_PUBLIC_URL", "ftp://x")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("TELEDROP_PUBLIC_URL:"), "{e}");
        let e = parse_duration("TELEDROP_DRAIN_TIMEOUT", "soon")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("TELEDROP_DRAIN_TIMEOUT:"), "{e}");
        assert!(matches!(
            secret_value("X", Some("a"), Some("/f".as_ref())),
            Err(ConfigError::Both { var: "X" })
        ));
    }

    #[test]
    fn the_admin_listener_needs_its_own_port() {
        let admin = |a: &str| AdminArgs {
            admin_listen: a.parse().unwrap(),
        };
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(admin("0.0.0.0:9090").check_apart_from(public).is_ok());
        assert!(
            admin("127.0.0.1:0")
                .check_apart_from("127.0.0.1:0".parse().unwrap())
                .is_ok()
        );
        for clash in ["0.0.0.0:8080", "127.0.0.1:8080"] {
            let e = admin(clash).check_apart_from(public).unwrap_err().to_string();
            assert!(e.starts_with("TELEDROP_ADMIN_LISTEN:"), "{e}");
        }
        assert!(
            admin("127.0.0.1:8080")
                .check_apart_from("10.0.0.1:8080".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn rate_limit_is_files_per_minute_and_zero_is_none() {
        assert_eq!(parse_rate_limit("").unwrap(), None);
        assert_eq!(parse_rate_limit("0").unwrap(), None);
        let limit = parse_rate_limit(" 20 ").unwrap().expect("a limit");
        assert_eq!((limit.files().get(), limit.window()), (20, Duration::from_secs(60)));
        for bad in ["-1", "ten", "1.5", "99999999999"] {
            let e = parse_rate_limit(bad).unwrap_err().to_string();
            assert!(e.starts_with("TELEDROP_RATE_LIMIT:"), "{e}");
        }
    }

    #[test]
    fn pools_take_the_role_default_unless_set_and_workers_need_two() {
        let db = |max| DatabaseArgs {
            database_url: None,
            database_url_file: None,
            db_max_connections: max,
        };
        let size = |max, role| db(max).pool(role).map(|p| p.max_connections);
        assert_eq!(size(None, DbRole::Worker).unwrap(), 3);
        assert_eq!(size(None, DbRole::Links).unwrap(), 2);
        assert_eq!(size(None, DbRole::Migrate).unwrap(), 1);
        assert_eq!(size(Some(7), DbRole::Controller).unwrap(), 7);
        assert_eq!(size(Some(1), DbRole::Links).unwrap(), 1);
        let e = size(Some(1), DbRole::Worker).unwrap_err().to_string();
        assert!(e.starts_with("TELEDROP_DB_MAX_CONNECTIONS:"), "{e}");
        assert_eq!(
            db(None).pool(DbRole::Worker).unwrap().acquire_timeout,
            teledrop_catalog::PoolConfig::DEFAULT_ACQUIRE_TIMEOUT
        );
    }

    #[test]
    fn secret_from_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "value\n").unwrap();
        assert_eq!(secret_value("X", None, Some(&p)).unwrap().as_deref(), Some("value"));
        assert!(matches!(
            secret_value("X", None, Some(&dir.path().join("missing"))),
            Err(ConfigError::File { .. })
        ));
    }
}
