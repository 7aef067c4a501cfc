//! How the bus proves itself to NATS and trusts its servers: TLS roots
//! (`TELEDROP_CA_FILE` on top of the system's), a client certificate for
//! mutual TLS, and one credential (a `.creds` file, a user and password,
//! or a token). Secrets arrive already read from files by the caller and
//! never print.

use async_nats::ConnectOptions;
use std::path::PathBuf;
use teledrop_core::Secret;
use teledrop_core::tls::{CaBundle, ClientIdentity};

/// One way to authenticate, as NATS accounts allow.
#[derive(Clone, Debug, Default)]
pub enum NatsCredentials {
    /// None beyond what the URL carries.
    #[default]
    None,
    /// A decentralised-auth `.creds` file (user JWT and nkey seed).
    CredsFile(PathBuf),
    UserPassword {
        user: String,
        password: Secret<String>,
    },
    Token(Secret<String>),
}

/// TLS and credentials for the NATS connection.
#[derive(Clone, Debug, Default)]
pub struct NatsSecurity {
    pub ca: Option<CaBundle>,
    pub client: Option<ClientIdentity>,
    pub credentials: NatsCredentials,
}

impl NatsSecurity {
    /// Whether anything here asks for TLS even on a `nats://` URL.
    fn wants_tls(&self) -> bool {
        self.client.is_some()
    }

    /// Applies these settings; `tls_urls` says a `tls://` server was named.
    pub(crate) async fn apply(&self, opts: ConnectOptions, tls_urls: bool) -> Result<ConnectOptions, String> {
        let mut opts = opts;
        if tls_urls || self.wants_tls() || self.ca.is_some() {
            // Our own rustls config: async-nats would drop the system roots
            // once a CA file is added.
            let config = teledrop_core::tls::client_config(self.ca.as_ref(), self.client.as_ref())
                .map_err(|e| format!("building the TLS client configuration: {e}"))?;
            opts = opts.tls_client_config(config);
        }
        if tls_urls || self.wants_tls() {
            opts = opts.require_tls(true);
        }
        Ok(match &self.credentials {
            NatsCredentials::None => opts,
            NatsCredentials::CredsFile(path) => opts
                .credentials_file(path)
                .await
                .map_err(|e| format!("reading the credentials file {}: {e}", path.display()))?,
            NatsCredentials::UserPassword { user, password } => {
                opts.user_and_password(user.clone(), password.expose().clone())
            }
            NatsCredentials::Token(token) => opts.token(token.expose().clone()),
        })
    }
}
