//! Object storage over HTTPS with a private CA (`TELEDROP_CA_FILE`): moto
//! started here with a server certificate signed by a CA made at test
//! time. Given the CA, every operation works, the listing of unfinished
//! uploads (a client of our own) included; without it, the same endpoint
//! is refused with an error that names the certificate.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use teledrop_core::ObjectKey;
use teledrop_core::tls::CaBundle;
use teledrop_storage::{PART_SIZE, Storage, StorageError};
use teledrop_testkit::tls::{HttpsMoto, TestPki};

/// moto over HTTPS, a bucket on it, and the CA that signed its certificate.
struct Fixture {
    _moto: HttpsMoto,
    _pki: TestPki,
    bucket: teledrop_testkit::s3::S3Bucket,
    ca: CaBundle,
}

impl Fixture {
    async fn start() -> Fixture {
        let pki = TestPki::new();
        let moto = HttpsMoto::start(&pki).await;
        let bucket = moto.fresh_bucket(&pki).await;
        let ca = CaBundle::load("TELEDROP_CA_FILE", &pki.ca_file()).unwrap();
        Fixture {
            _moto: moto,
            _pki: pki,
            bucket,
            ca,
        }
    }

    fn open(&self, ca: Option<&CaBundle>) -> Storage {
        let options = [
            ("aws_endpoint", self.bucket.endpoint.as_str()),
            ("aws_access_key_id", "testing"),
            ("aws_secret_access_key", "testing"),
            ("aws_region", "us-east-1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        Storage::open(&self.bucket.url(), options, ca).unwrap()
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

/// What a log line or the CLI prints for an error: its whole chain.
fn chain(e: &StorageError) -> String {
    teledrop_core::report(e).to_string()
}

#[tokio::test]
async fn https_with_the_ca_works_end_to_end() {
    let fixture = Fixture::start().await;
    let s = fixture.open(Some(&fixture.ca));
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
    let fixture = Fixture::start().await;
    let s = fixture.open(None);

    // Our own listing client does not retry: the refusal comes at once.
    let err = s.unfinished_uploads("").try_next().await.unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, StorageError::Store(_)), "{err:?}");
    assert!(text.contains("certificate") && text.contains("UnknownIssuer"), "{text}");
    // Each cause once, though rustls, reqwest and object_store each print
    // the one below them.
    assert_eq!(text.matches("UnknownIssuer").count(), 1, "{text}");

    // object_store's client retries connection failures with backoff before
    // it gives up; the final error still names the certificate.
    let err = s.head(&key("blobs/x")).await.unwrap_err();
    let text = chain(&err);
    assert!(text.contains("certificate"), "{text}");
    assert_eq!(text.matches("UnknownIssuer").count(), 1, "{text}");
}
