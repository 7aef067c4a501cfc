//! TLS shared by every client of the process.
//!
//! One rustls crypto provider, ring, is compiled in (the workspace's
//! `Cargo.toml` says why); [`install_crypto_provider`] makes it the process
//! default, which reqwest 0.13 (object_store's client) requires and kube and
//! async-nats use. [`CaBundle`] is `TELEDROP_CA_FILE`: extra roots that the
//! Bot API, object storage, NATS and OTLP clients trust on top of the
//! system's, validated once at start.

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Makes ring the process's rustls provider. Idempotent; every adapter
/// that builds a TLS client calls it, so libraries and tests need no setup.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: by an earlier call, or by
    // the embedding program, whose choice stands.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a certificate or key file was refused. Each names the variable.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    // `cause`, not `source`: printed here, so not a `source()` as well.
    #[error("{var}: cannot read {path}: {cause}")]
    Read {
        var: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{var}: {path} holds no PEM certificate")]
    NoCertificate { var: &'static str, path: PathBuf },
    #[error("{var}: {path}: certificate {index} is not valid X.509: {message}")]
    Malformed {
        var: &'static str,
        path: PathBuf,
        index: usize,
        message: String,
    },
    #[error("{var}: {path}: certificate {index} ({subject}) expired at {not_after}")]
    Expired {
        var: &'static str,
        path: PathBuf,
        index: usize,
        subject: String,
        not_after: String,
    },
    #[error("{var}: {path}: certificate {index} ({subject}) is not valid before {not_before}")]
    NotYetValid {
        var: &'static str,
        path: PathBuf,
        index: usize,
        subject: String,
        not_before: String,
    },
    #[error("{var}: {path} holds no PEM private key")]
    NoKey { var: &'static str, path: PathBuf },
}

/// PEM certificates read from a file and checked: at least one, each
/// well-formed X.509 and inside its validity period now.
#[derive(Clone)]
pub struct CaBundle {
    path: Arc<Path>,
    pem: Arc<[u8]>,
    certs: Arc<[CertificateDer<'static>]>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl CaBundle {
    /// Reads and checks `path`; errors name `var`.
    pub fn load(var: &'static str, path: &Path) -> Result<Self, TlsFileError> {
        let pem = std::fs::read(path).map_err(|cause| TlsFileError::Read {
            var,
            path: path.to_owned(),
            cause,
        })?;
        let certs = certificates(var, path, &pem)?;
        Ok(Self {
            path: path.into(),
            pem: pem.into(),
            certs: certs.into(),
        })
    }

    /// The file it came from (for clients that take a path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bundle as read (for clients that take PEM).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// The certificates, DER-encoded.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }
}

/// A client certificate chain and its key, for mutual TLS, checked like
/// [`CaBundle::load`] (the key as one PEM private key).
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ClientIdentity {
    pub fn load(cert_var: &'static str, cert: &Path, key_var: &'static str, key: &Path) -> Result<Self, TlsFileError> {
        let chain = CaBundle::load(cert_var, cert)?.certs.to_vec();
        let pem = std::fs::read(key).map_err(|cause| TlsFileError::Read {
            var: key_var,
            path: key.to_owned(),
            cause,
        })?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsFileError::NoKey {
            var: key_var,
            path: key.to_owned(),
        })?;
        Ok(Self { chain, key })
    }
}

/// A rustls client configuration trusting the system's roots plus `ca`,
/// presenting `identity` when given. For clients that take a rustls
/// config (NATS): async-nats drops the system roots once a CA file is
/// given, and `TELEDROP_CA_FILE` promises "on top of".
pub fn client_config(
    ca: Option<&CaBundle>,
    identity: Option<&ClientIdentity>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    // A machine without a system store (a scratch image) still trusts `ca`.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca {
        roots.add_parsable_certificates(ca.certs.iter().cloned());
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key()),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn certificates(var: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsFileError::Malformed {
                var,
                path: path.to_owned(),
                index: 0,
                message: e.to_string(),
            })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate {
            var,
            path: path.to_owned(),
        });
    }
    let now = x509_parser::time::ASN1Time::now();
    for (index, der) in certs.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsFileError::Malformed {
            var,
            path: path.to_owned(),
            index,
            message: e.to_string(),
        })?;
        let validity = cert.validity();
        if now > validity.not_after {
            return Err(TlsFileError::Expired {
                var,
                path: path.to_owned(),
                index,
                subject: cert.subject().to_string(),
                not_after: validity.not_after.to_string(),
            });
        }
        if now < validity.not_before {
            return Err(TlsFileError::NotYetValid {
                var,
                path: path.to_owned(),
                index,
                subject: cert.subject().to_string(),
                not_before: validity.not_before.to_string(),
            });
        }
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn cert_valid_between(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> String {
        let mut params = rcgen::CertificateParams::new(vec!["ca.test".into()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_valid_bundle_loads_and_keeps_every_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let two = format!(
            "{}{}",
            cert_valid_between((2020, 1, 1), (2090, 1, 1)),
            cert_valid_between((2021, 1, 1), (2091, 1, 1))
        );
        let p = write(dir.path(), "ca.pem", two.as_bytes());
        let ca = CaBundle::load("TELEDROP_CA_FILE", &p).unwrap();
        assert_eq!(ca.certificates().len(), 2);
        assert_eq!(ca.pem(), two.as_bytes());
    }

    #[test]
    fn bad_bundles_are_refused_naming_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, Vec<u8>, &str); 4] = [
            (
                "empty.pem",
                b"no certificates here\n".to_vec(),
                "holds no PEM certificate",
            ),
            (
                "garbage.pem",
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
                "not valid X.509",
            ),
            (
                "expired.pem",
                cert_valid_between((2001, 1, 1), (2002, 1, 1)).into_bytes(),
                "expired at",
            ),
            (
                "future.pem",
                cert_valid_between((2090, 1, 1), (2095, 1, 1)).into_bytes(),
                "not valid before",
            ),
        ];
        for (name, body, want) in cases {
            let p = write(dir.path(), name, &body);
            let e = CaBundle::load("TELEDROP_CA_FILE", &p).unwrap_err().to_string();
            assert!(e.starts_with("TELEDROP_CA_FILE: "), "{name}: {e}");
            assert!(e.contains(want), "{name}: {e}");
        }
        let e = CaBundle::load("TELEDROP_CA_FILE", &dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("TELEDROP_CA_FILE: cannot read"), "{e}");
    }

    #[test]
    fn a_client_identity_needs_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client.test".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert = write(dir.path(), "c.pem", cert.pem().as_bytes());
        let key_file = write(dir.path(), "k.pem", key.serialize_pem().as_bytes());
        let id = ClientIdentity::load("NATS_TLS_CERT_FILE", &cert, "NATS_TLS_KEY_FILE", &key_file).unwrap();
        client_config(None, Some(&id)).unwrap();

        let e = ClientIdentity::load("NATS_TLS_CERT_FILE", &cert, "NATS_TLS_KEY_FILE", &cert)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("NATS_TLS_KEY_FILE: "), "{e}");

        let other = write(
            dir.path(),
            "other.pem",
            rcgen::KeyPair::generate().unwrap().serialize_pem().as_bytes(),
        );
        let id = ClientIdentity::load("NATS_TLS_CERT_FILE", &cert, "NATS_TLS_KEY_FILE", &other).unwrap();
        assert!(client_config(None, Some(&id)).is_err(), "a key of another certificate");
    }

    #[test]
    fn installing_the_provider_twice_is_harmless() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
