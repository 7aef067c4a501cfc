//! Typed configuration: every setting is a flag and an environment
//! variable (its value name), parsed into its type once at start by clap,
//! with an error that names the variable. Each role's arguments hold only
//! what that role reads.
//!
//! - [`parse`]: the value parsers (durations, URLs, sizes, user lists);
//! - [`server`]: logging, HTTP listener limits, the admin listener, CAs;
//! - [`clients`]: NATS, the database, the Bot API, storage, secrets;
//! - [`commands`]: each role's arguments.

pub mod clients;
pub mod commands;
pub mod parse;
pub mod server;

use clap::{Parser, Subcommand};

pub use clients::{DatabaseArgs, DbRole, NatsArgs, StorageArgs, TelegramArgs, WebhookSecretArgs};
pub use commands::{
    ControllerArgs, Ingest, IngestArgs, IngressArgs, LimitArgs, LinksArgs, MigrateArgs, OrphanArgs, StandaloneArgs,
    WebhookAction, WebhookArgs, WorkerArgs,
};
pub use server::{AdminArgs, HttpArgs, LogArgs, LogFormat, TlsArgs};
use teledrop_core::tls::{CaBundle, TlsFileError};

#[derive(Debug, Parser)]
#[command(
    name = "teledrop",
    version,
    about = "Files sent to a Telegram bot become durable HTTPS download links."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
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
    Migrate(MigrateArgs),
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

impl Command {
    /// The CA settings of a role with TLS clients.
    pub fn tls(&self) -> Option<&TlsArgs> {
        match self {
            Self::Standalone(a) => Some(&a.tls),
            Self::Migrate(a) => Some(&a.tls),
            Self::Ingress(a) => Some(&a.tls),
            Self::Worker(a) => Some(&a.tls),
            Self::Links(a) => Some(&a.tls),
            Self::Webhook(a) => Some(&a.tls),
            Self::Controller(a) => Some(&a.tls),
            Self::Crd => None,
        }
    }

    /// The listener limits of a role that serves HTTP.
    pub fn http(&self) -> Option<&HttpArgs> {
        match self {
            Self::Standalone(a) => Some(&a.http),
            Self::Ingress(a) => Some(&a.http),
            Self::Worker(a) => Some(&a.http),
            Self::Links(a) => Some(&a.http),
            Self::Controller(a) => Some(&a.http),
            Self::Migrate(_) | Self::Webhook(_) | Self::Crd => None,
        }
    }
}

/// What every role takes besides its own arguments.
#[derive(Debug, Clone, Default)]
pub struct Common {
    /// `TELEDROP_CA_FILE`.
    pub ca: Option<CaBundle>,
    pub http: crate::http::HttpLimits,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
    #[error("{var} and {var}_FILE are both set: use one")]
    Both { var: &'static str },
    // `cause`, not `source`: printed here, so not a `source()` as well.
    #[error("{var}_FILE: cannot read {path}: {cause}")]
    File {
        var: &'static str,
        path: String,
        cause: std::io::Error,
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
            .map_err(|cause| ConfigError::File {
                var,
                path: p.display().to_string(),
                cause,
            }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("teledrop").chain(args.iter().copied()))
    }

    fn env_names(role: &str) -> Vec<String> {
        let mut cli = Cli::command();
        cli.build();
        let sub = cli.find_subcommand(role).unwrap_or_else(|| panic!("no role {role}"));
        sub.get_arguments()
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_cause_is_printed_once() {
        let missing = std::path::Path::new("/nonexistent/teledrop-test-file");
        let secret = secret_value("X", None, Some(missing)).unwrap_err();
        let ca = ConfigError::from(CaBundle::load("TELEDROP_CA_FILE", missing).unwrap_err());
        for e in [secret, ca] {
            let e = anyhow::Error::new(e).context("starting");
            let chain = teledrop_core::Report(e.as_ref()).to_string();
            assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
        }
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn values_are_parsed_once_into_their_types() {
        let worker = [
            "worker",
            "--public-url",
            "https://dl.example.com",
            "--max-file-size",
            "500M",
            "--allowed-users",
            "1, 2",
            "--progress-interval",
            "1m 5s",
            "--rate-limit",
            "20",
        ];
        // `--publish-timeout` is the ingress's: a worker refuses it.
        assert!(parse(&[&worker[..], &["--publish-timeout", "9s"]].concat()).is_err());
        let Command::Worker(w) = parse(&worker).unwrap().command else {
            panic!("not a worker");
        };
        let limits = &w.ingest.limits;
        assert_eq!(w.ingest.public_url.unwrap().as_str(), "https://dl.example.com/");
        assert_eq!(limits.max_file_size, "500M".parse().unwrap());
        assert_eq!(
            limits.allowed_users.0,
            [teledrop_core::UserId(1), teledrop_core::UserId(2)]
        );
        assert_eq!(limits.progress_interval, std::time::Duration::from_secs(65));
        assert_eq!(limits.rate_limit, 20);
        let Command::Ingress(i) = parse(&["ingress", "--publish-timeout", "9s"]).unwrap().command else {
            panic!("not an ingress");
        };
        assert_eq!(i.publish_timeout, std::time::Duration::from_secs(9));
    }

    #[test]
    fn errors_name_the_variable() {
        for (args, var) in [
            (&["worker", "--public-url", "ftp://x"][..], "TELEDROP_PUBLIC_URL"),
            (&["worker", "--drain-timeout", "soon"], "TELEDROP_DRAIN_TIMEOUT"),
            (&["worker", "--max-file-size", "3000MiB"], "TELEDROP_MAX_FILE_SIZE"),
            (&["worker", "--allowed-users", "alice"], "TELEDROP_ALLOWED_USERS"),
            (&["worker", "--rate-limit=-1"], "TELEDROP_RATE_LIMIT"),
            (&["worker", "--worker-concurrency", "0"], "TELEDROP_WORKER_CONCURRENCY"),
            (&["worker", "--max-attempts", "0"], "TELEDROP_MAX_ATTEMPTS"),
            (&["worker", "--telegram-api-url", "x"], "TELEGRAM_API_URL"),
            (&["ingress", "--publish-timeout", "later"], "TELEDROP_PUBLISH_TIMEOUT"),
            (&["webhook", "set", "--url", "https://x/?q"], "TELEDROP_WEBHOOK_URL"),
            (&["links", "--http-idle-timeout", "0s"], "TELEDROP_HTTP_IDLE_TIMEOUT"),
        ] {
            let e = parse(args).map(drop).unwrap_err().to_string();
            assert!(e.contains(var), "{args:?}: {e}");
        }
        assert!(matches!(
            secret_value("X", Some("a"), Some("/f".as_ref())),
            Err(ConfigError::Both { var: "X" })
        ));
    }

    #[test]
    fn each_role_lists_only_what_it_reads() {
        let has = |role: &str, var: &str| env_names(role).iter().any(|e| e == var);
        for role in ["standalone", "ingress", "worker", "links", "controller"] {
            assert!(has(role, "TELEDROP_HTTP_IDLE_TIMEOUT"), "{role} serves HTTP");
            assert!(has(role, "TELEDROP_ADMIN_LISTEN"), "{role} has an admin listener");
            assert!(has(role, "TELEDROP_CA_FILE"), "{role} has TLS clients");
        }
        for role in ["migrate", "webhook", "crd"] {
            assert!(!has(role, "TELEDROP_HTTP_IDLE_TIMEOUT"), "{role} serves nothing");
            assert!(!has(role, "TELEDROP_ADMIN_LISTEN"), "{role} serves nothing");
        }
        assert!(env_names("crd").iter().all(|e| e == "TELEDROP_LOG_FORMAT"));
        let unread: [(&str, &[&str]); 4] = [
            (
                "links",
                &[
                    "TELEGRAM_BOT_TOKEN",
                    "NATS_URL",
                    "TELEDROP_WEBHOOK_SECRET",
                    "TELEDROP_MAX_FILE_SIZE",
                ],
            ),
            (
                "worker",
                &[
                    "TELEDROP_LISTEN",
                    "TELEDROP_POLICY_FILE",
                    "TELEDROP_PUBLISH_TIMEOUT",
                    "TELEDROP_ORPHAN_INTERVAL",
                ],
            ),
            (
                "ingress",
                &[
                    "DATABASE_URL",
                    "TELEDROP_STORAGE_URL",
                    "TELEGRAM_BOT_TOKEN",
                    "TELEDROP_MAX_FILE_SIZE",
                ],
            ),
            (
                "standalone",
                &["NATS_URL", "TELEDROP_PUBLISH_TIMEOUT", "TELEDROP_WEBHOOK_SECRET"],
            ),
        ];
        for (role, vars) in unread {
            for var in vars {
                assert!(!has(role, var), "{role} reads no {var}");
            }
        }
        assert!(has("migrate", "DATABASE_URL") && !has("migrate", "TELEDROP_STORAGE_URL"));
    }

    #[test]
    fn the_admin_listener_needs_its_own_port() {
        let admin = |a: &str| AdminArgs {
            admin_listen: a.parse().unwrap(),
        };
        let public: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
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
