//! TLS for tests: a certificate authority made at test time, and servers
//! of a test's own that require it — nats-server with TLS and a password,
//! Postgres with `ssl=on` that refuses plain connections, moto behind
//! HTTPS. Server certificates name `localhost` and `127.0.0.1`, so clients
//! can verify host names (`sslmode=verify-full`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

const START_DEADLINE: Duration = Duration::from_secs(60);

/// A CA, a server certificate and a client certificate, as PEM files.
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("a directory for certificates");
        // Readable by the postgres user when the tests run as root.
        set_mode(dir.path(), 0o755);
        let ca_key = rcgen::KeyPair::generate().expect("a CA key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "teledrop test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = params.self_signed(&ca_key).expect("a CA certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write the CA");
        TestPki {
            dir,
            ca,
            ca_params: params,
            ca_key,
        }
    }

    /// The CA's certificate (what `TELEDROP_CA_FILE` names).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An HTTP client that trusts this CA (only).
    pub fn http_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).expect("the CA as PEM");
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .expect("an HTTPS client")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1, signed by the CA.
    pub fn server(&self, name: &str) -> CertFiles {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("parameters");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(name, params)
    }

    /// A client certificate (for mutual TLS), signed by the CA.
    pub fn client(&self, name: &str) -> CertFiles {
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("parameters");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    fn issue(&self, name: &str, params: rcgen::CertificateParams) -> CertFiles {
        let key = rcgen::KeyPair::generate().expect("a key");
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("a signed certificate");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"))
}

async fn wait_for_port(port: u16, what: &str) {
    let up = crate::poll_until(START_DEADLINE, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    assert!(up.is_some(), "{what} did not start listening on {port}");
}

/// nats-server with JetStream that speaks only TLS and requires a user
/// and password (the password is also written to a file, as a Secret
/// mounted in a pod would be).
pub struct TlsNats {
    _child: Child,
    _store: tempfile::TempDir,
    port: u16,
    pub user: String,
    pub password_file: PathBuf,
}

impl TlsNats {
    pub async fn start(pki: &TestPki) -> TlsNats {
        Self::spawn(pki, false).await
    }

    /// Like [`TlsNats::start`], and clients must also present a
    /// certificate the CA signed (mutual TLS).
    pub async fn start_mutual(pki: &TestPki) -> TlsNats {
        Self::spawn(pki, true).await
    }

    async fn spawn(pki: &TestPki, mutual: bool) -> TlsNats {
        let server = pki.server("nats");
        let store = tempfile::tempdir().expect("a store");
        let port = crate::process::free_port();
        let monitor = crate::process::free_port();
        let password = format!("pw-{}", crate::unique_suffix());
        let password_file = pki.dir().join(format!("nats-password-{port}"));
        std::fs::write(&password_file, format!("{password}\n")).expect("write the password");
        let conf = store.path().join("nats.conf");
        // Quoted strings: paths and the password are taken literally.
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
             jetstream {{ store_dir: \"{store}\" }}\n\
             tls {{ cert_file: \"{cert}\", key_file: \"{key}\", ca_file: \"{ca}\", verify: {mutual}, timeout: 5 }}\n\
             authorization {{ user: \"teledrop\", password: \"{password}\" }}\n",
            store = store.path().display(),
            cert = server.cert.display(),
            key = server.key.display(),
            ca = pki.ca_file().display(),
        );
        std::fs::write(&conf, config).expect("write nats.conf");
        let child = spawn(
            Command::new(find_on_path("nats-server").expect("nats-server on PATH"))
                .arg("-c")
                .arg(&conf),
        );
        let health = format!("http://127.0.0.1:{monitor}/healthz?js-enabled-only=true");
        let client = reqwest::Client::new();
        let up = crate::poll_until(START_DEADLINE, || async {
            let r = client.get(&health).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        assert!(up.is_some(), "the TLS nats-server did not start");
        TlsNats {
            _child: child,
            _store: store,
            port,
            user: "teledrop".into(),
            password_file,
        }
    }

    /// `tls://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("tls://localhost:{}", self.port)
    }
}

/// A Postgres cluster of a test's own with `ssl=on` whose `pg_hba.conf`
/// refuses every connection that is not TLS.
pub struct TlsPostgres {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    dirs.sort();
    dirs.into_iter()
        .rev()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .or_else(|| find_on_path(name))
        .unwrap_or_else(|| panic!("{name} not found (scripts/test.sh installs postgresql)"))
}

/// Postgres refuses to run as root: as root, run it as `postgres`.
fn as_pg_user(program: PathBuf) -> Command {
    // SAFETY-free check of the effective user through /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl TlsPostgres {
    pub async fn start(pki: &TestPki) -> TlsPostgres {
        let server = pki.server("postgres");
        let dir = tempfile::tempdir().expect("a cluster directory");
        set_mode(dir.path(), 0o777);
        let data = dir.path().join("data");
        let status = as_pg_user(pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        // The key must belong to the server's user and be private to it.
        let (cert, key) = (data.join("server.crt"), data.join("server.key"));
        std::fs::copy(&server.cert, &cert).expect("copy the certificate");
        std::fs::copy(&server.key, &key).expect("copy the key");
        let owner = std::fs::metadata(data.join("PG_VERSION")).expect("a cluster");
        {
            use std::os::unix::fs::MetadataExt as _;
            for f in [&cert, &key] {
                std::os::unix::fs::chown(f, Some(owner.uid()), Some(owner.gid())).expect("chown");
            }
        }
        set_mode(&key, 0o600);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
        )
        .expect("write pg_hba.conf");
        let port = crate::process::free_port();
        let child = spawn(
            as_pg_user(pg_bin("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-k"])
                .arg(dir.path())
                .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "ssl=on"]),
        );
        let mut pg = TlsPostgres {
            child: Some(child),
            dir,
            port,
        };
        wait_for_port(port, "the TLS Postgres").await;
        let url = pg.url(&pki.ca_file());
        let ready = crate::poll_until(START_DEADLINE, || async {
            use sqlx::ConnectOptions as _;
            let opts: sqlx::postgres::PgConnectOptions = url.parse().ok()?;
            opts.connect().await.ok().map(|_| ())
        })
        .await;
        if ready.is_none() {
            pg.child.take();
            panic!("the TLS Postgres does not accept verify-full connections");
        }
        pg
    }

    /// A URL that verifies the server's certificate and host name.
    pub fn url(&self, ca: &Path) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
            self.port,
            ca.display()
        )
    }

    /// The same server without TLS (which `pg_hba.conf` refuses).
    pub fn plain_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// moto's S3 behind HTTPS with a certificate from the test CA.
pub struct HttpsMoto {
    _child: Child,
    port: u16,
}

impl HttpsMoto {
    pub async fn start(pki: &TestPki) -> HttpsMoto {
        let server = pki.server("moto");
        let moto = std::env::var_os("TEST_MOTO_BIN")
            .map(PathBuf::from)
            .or_else(|| find_on_path("moto_server"))
            .expect("moto_server (scripts/servers.sh exports TEST_MOTO_BIN)");
        let port = crate::process::free_port();
        let child = spawn(
            Command::new(moto)
                .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-c"])
                .arg(&server.cert)
                .arg("-k")
                .arg(&server.key),
        );
        wait_for_port(port, "moto over HTTPS").await;
        HttpsMoto { _child: child, port }
    }

    /// `https://localhost:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// A new empty bucket, created over HTTPS trusting `pki`'s CA.
    pub async fn fresh_bucket(&self, pki: &TestPki) -> crate::s3::S3Bucket {
        crate::s3::bucket_on(self.endpoint(), &pki.http_client()).await
    }
}
