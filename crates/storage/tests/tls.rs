//! Object storage over HTTPS with a private CA (`TELEDROP_CA_FILE`): moto
//! started here with a server certificate signed by a CA made at test
//! time. Given the CA, every operation works, the listing of unfinished
//! uploads (a client of our own) included; without it, the same endpoint
//! is refused with an error that names the certificate.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use teledrop_core::ObjectKey;
use teledrop_core::tls::CaBundle;
use teledrop_storage::{PART_SIZE, Storage, StorageError};

const START_DEADLINE: Duration = Duration::from_secs(60);

/// A CA and a server certificate for `localhost` and 127.0.0.1, as files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "teledrop storage test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "moto");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();

        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server-key.pem"), key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// moto serving HTTPS on a free loopback port; killed when dropped.
struct HttpsMoto {
    child: Child,
    endpoint: String,
    _pki: Pki,
    ca: CaBundle,
}

impl Drop for HttpsMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HttpsMoto {
    fn start() -> HttpsMoto {
        // scripts/servers.sh says which moto it found or installed.
        let moto = teledrop_testkit::require_env("TEST_MOTO_BIN");
        let pki = Pki::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(pki.file("moto.log")).unwrap();
        let child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-c"])
            .arg(pki.file("server.pem"))
            .arg("-k")
            .arg(pki.file("server-key.pem"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {moto}: {e}"));
        let ca = CaBundle::load("TELEDROP_CA_FILE", &pki.file("ca.pem")).unwrap();
        let mut moto = HttpsMoto {
            child,
            endpoint: format!("https://127.0.0.1:{port}"),
            _pki: pki,
            ca,
        };
        moto.wait_until_listening(port);
        moto
    }

    fn wait_until_listening(&mut self, port: u16) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("moto exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "moto not listening after {START_DEADLINE:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._pki.file("moto.log")).unwrap_or_default()
    }

    /// Creates a bucket (moto takes an unsigned PUT) over a client that
    /// trusts the CA.
    async fn fresh_bucket(&self) -> String {
        let bucket = format!("t-{}", teledrop_testkit::unique_suffix());
        let ca = reqwest::Certificate::from_pem(self.ca.pem()).unwrap();
        let client = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
        let resp = client.put(format!("{}/{bucket}", self.endpoint)).send().await.unwrap();
        assert!(resp.status().is_success(), "creating bucket: {}", resp.status());
        bucket
    }

    fn open(&self, bucket: &str, ca: Option<&CaBundle>) -> Storage {
        let options = [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_access_key_id", "testing"),
            ("aws_secret_access_key", "testing"),
            ("aws_region", "us-east-1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        Storage::open(&format!("s3://{bucket}"), options, ca).unwrap()
    }
}

fn key(s: &str) -> ObjectKey {
    s.parse().unwrap()
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn put(s: &Storage, k: &ObjectKey, bytes: &[u8]) {
    let source = stream::iter(
        bytes
            .chunks(1 << 20)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))),
    );
    let outcome = s
        .put_stream(k, source, Some(bytes.len() as u64), u64::MAX)
        .await
        .unwrap();
    assert_eq!(outcome.size, bytes.len() as u64);
}

async fn read(s: &Storage, k: &ObjectKey, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let chunks: Vec<Bytes> = s.get(k, range).await.unwrap().stream.try_collect().await.unwrap();
    chunks.concat()
}

/// Every message down an error's source chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(" / ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn https_with_the_ca_works_end_to_end() {
    let moto = HttpsMoto::start();
    let bucket = moto.fresh_bucket().await;
    let s = moto.open(&bucket, Some(&moto.ca));
    s.ping().await.unwrap();

    let small = key("blobs/tls/small");
    put(&s, &small, b"over https").await;
    assert_eq!(read(&s, &small, None).await, b"over https");

    // Multipart: three parts.
    let large = key("blobs/tls/large");
    let bytes = data(2 * PART_SIZE + 17);
    put(&s, &large, &bytes).await;
    assert!(read(&s, &large, None).await == bytes, "multipart object differs");
    let at = PART_SIZE as u64 - 3;
    assert_eq!(
        read(&s, &large, Some(at..at + 6)).await,
        bytes[at as usize..at as usize + 6]
    );

    let mut listed: Vec<(String, u64)> = s
        .list(Some("blobs/tls"))
        .map_ok(|i| (i.key, i.size))
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("blobs/tls/large".to_owned(), bytes.len() as u64),
            ("blobs/tls/small".to_owned(), 10)
        ]
    );

    // The unfinished-upload listing has its own client: it trusts the CA too.
    let leaked = key("blobs/tls/leaked");
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel::<()>();
    let mut reached_tx = Some(reached_tx);
    let first = Bytes::from(data(PART_SIZE + 1));
    let source = stream::iter([Ok::<_, std::io::Error>(first)]).chain(stream::poll_fn(move |_| {
        if let Some(tx) = reached_tx.take() {
            let _ = tx.send(());
        }
        std::task::Poll::Pending
    }));
    let mut upload = Box::pin(s.put_stream(&leaked, source, None, u64::MAX));
    tokio::select! {
        result = &mut upload => panic!("the upload cannot finish: {result:?}"),
        _ = reached_rx => {}
    }
    // What a killed process leaves: no abort at all.
    std::mem::forget(upload);
    let unfinished: Vec<String> = s
        .unfinished_uploads("blobs/tls/")
        .map_ok(|u| u.key)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(unfinished, vec!["blobs/tls/leaked".to_owned()]);
    assert_eq!(s.abort_unfinished_uploads("blobs/tls/").await.unwrap(), 1);

    s.delete(&small).await.unwrap();
    s.delete(&large).await.unwrap();
    assert!(s.head(&large).await.unwrap().is_none());
    assert_eq!(s.list(Some("blobs/tls")).count().await, 0);
}

#[tokio::test]
async fn https_without_the_ca_is_refused() {
    let moto = HttpsMoto::start();
    let bucket = moto.fresh_bucket().await;
    let s = moto.open(&bucket, None);

    // Our own listing client does not retry: the refusal comes at once.
    let err = s.unfinished_uploads("").try_next().await.unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, StorageError::Store(_)), "{err:?}");
    assert!(text.contains("certificate") && text.contains("UnknownIssuer"), "{text}");

    // object_store's client retries connection failures with backoff before
    // it gives up; the final error still names the certificate.
    let err = s.head(&key("blobs/x")).await.unwrap_err();
    let text = chain(&err);
    assert!(text.contains("certificate"), "{text}");
}
