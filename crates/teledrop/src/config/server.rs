//! What the process's listeners and TLS clients share: logging, the HTTP
//! servers' limits, the admin listener and the trusted CAs.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use teledrop_core::tls::CaBundle;

use super::ConfigError;
use super::parse::positive_duration;

/// Limits of every HTTP listener of the process (see [`crate::http`]).
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Deadline for a whole request head, counted from when the server
    /// waits for it: also how long a kept-alive connection may idle.
    #[arg(long, env = "TELEDROP_HTTP_HEADER_TIMEOUT", value_name = "TELEDROP_HTTP_HEADER_TIMEOUT",
          default_value = "10s", value_parser = positive_duration)]
    pub http_header_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed.
    #[arg(long, env = "TELEDROP_HTTP_IDLE_TIMEOUT", value_name = "TELEDROP_HTTP_IDLE_TIMEOUT",
          default_value = "60s", value_parser = positive_duration)]
    pub http_idle_timeout: Duration,
    /// Bound on requests that stream no file (webhook, probes, metrics): 408 past it.
    #[arg(long, env = "TELEDROP_HTTP_REQUEST_TIMEOUT", value_name = "TELEDROP_HTTP_REQUEST_TIMEOUT",
          default_value = "30s", value_parser = positive_duration)]
    pub http_request_timeout: Duration,
    /// Connections served at once per listener; more wait in the backlog.
    #[arg(long, env = "TELEDROP_HTTP_MAX_CONNECTIONS", value_name = "TELEDROP_HTTP_MAX_CONNECTIONS",
          default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,
    /// After SIGTERM, how long open requests may take before they are cut.
    #[arg(long, env = "TELEDROP_HTTP_DRAIN_TIMEOUT", value_name = "TELEDROP_HTTP_DRAIN_TIMEOUT",
          default_value = "30s", value_parser = positive_duration)]
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

/// Trust shared by every TLS client of the process.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// A PEM bundle of CA certificates that the Bot API, object storage,
    /// NATS and OTLP clients trust on top of the system's roots (a private
    /// CA, a self-hosted Bot API server). Postgres takes `sslrootcert` in
    /// DATABASE_URL and Kubernetes its kubeconfig instead.
    #[arg(long, env = "TELEDROP_CA_FILE", value_name = "TELEDROP_CA_FILE")]
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
