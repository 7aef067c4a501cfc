//! How the process reaches what it depends on: NATS, the catalog
//! database, the Bot API, object storage, and the webhook's secret.
//! Secrets come from `X` or the file `X_FILE`, and are read at start.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use teledrop_core::tls::{CaBundle, ClientIdentity};
use teledrop_core::{BotToken, Secret};
use url::Url;

use super::parse::{http_url, positive_duration};
use super::{ConfigError, secret_value};

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
    pub nats_ack_wait: Duration,
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
    #[arg(
        long,
        env = "TELEGRAM_API_URL",
        value_name = "TELEGRAM_API_URL",
        default_value = teledrop_telegram::CLOUD_API_URL,
        value_parser = http_url
    )]
    pub telegram_api_url: Url,
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
        let mut config =
            teledrop_telegram::TelegramConfig::new(token, self.telegram_api_url.clone(), self.telegram_local_mode);
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
