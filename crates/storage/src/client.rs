//! The HTTP client settings every cloud store is built with: those its
//! builder gathered (environment, options) plus `TELEDROP_CA_FILE`'s roots.

use object_store::{Certificate, ClientConfigKey, ClientOptions};
use teledrop_core::tls::CaBundle;

use crate::StorageError;

/// The client settings that can be read back from a builder (TLS, proxy,
/// timeouts). Root certificates cannot, which is why [`client_options`]
/// exists.
const CLIENT_KEYS: [ClientConfigKey; 20] = [
    ClientConfigKey::AllowHttp,
    ClientConfigKey::AllowInvalidCertificates,
    ClientConfigKey::NoSystemCertificates,
    ClientConfigKey::ConnectTimeout,
    ClientConfigKey::DefaultContentType,
    ClientConfigKey::Http1Only,
    ClientConfigKey::Http2KeepAliveInterval,
    ClientConfigKey::Http2KeepAliveTimeout,
    ClientConfigKey::Http2KeepAliveWhileIdle,
    ClientConfigKey::Http2MaxFrameSize,
    ClientConfigKey::Http2Only,
    ClientConfigKey::PoolIdleTimeout,
    ClientConfigKey::PoolMaxIdlePerHost,
    ClientConfigKey::ProxyUrl,
    ClientConfigKey::ProxyCaCertificate,
    ClientConfigKey::ProxyExcludes,
    ClientConfigKey::RandomizeAddresses,
    ClientConfigKey::ReadTimeout,
    ClientConfigKey::Timeout,
    ClientConfigKey::UserAgent,
];

/// object_store's reading of a boolean setting (the builder accepted it).
pub(crate) fn truthy(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "on" | "yes" | "y"))
}

/// The client settings `get` reads from a builder, trusting `ca` on top
/// of the system's roots. A builder's `with_client_options` replaces all
/// of its client settings, so they are read back first and handed over
/// again with the roots added.
pub(crate) fn client_options(
    get: impl Fn(ClientConfigKey) -> Option<String>,
    ca: Option<&CaBundle>,
) -> Result<ClientOptions, StorageError> {
    let mut options = ClientOptions::new();
    for key in CLIENT_KEYS {
        if let Some(value) = get(key) {
            options = options.with_config(key, value);
        }
    }
    if let Some(ca) = ca {
        // CaBundle has checked every certificate already; this only
        // converts them for reqwest.
        let certificates = Certificate::from_pem_bundle(ca.pem())
            .map_err(|e| StorageError::Config(format!("the CA bundle {} cannot be used: {e}", ca.path().display())))?;
        for certificate in certificates {
            options = options.with_root_certificate(certificate);
        }
    }
    Ok(options)
}
