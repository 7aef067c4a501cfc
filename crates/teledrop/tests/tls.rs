//! TLS on every connection: one crypto provider compiled in, every client
//! built against a TLS endpoint that trusts only a CA made at test time,
//! and the distributed deployment run with every connection over TLS.
//!
//! The servers here are the test's own (`teledrop_testkit::tls`):
//! nats-server with TLS and a password, Postgres with `ssl=on` that
//! refuses plain connections, moto behind HTTPS, tg-sim over HTTPS.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;
use teledrop_bus::{BusError, JetStreamBus, JetStreamConfig, NatsCredentials, NatsSecurity};
use teledrop_core::Secret;
use teledrop_core::tls::{CaBundle, ClientIdentity};
use teledrop_testkit::process::{Proc, free_port};
use teledrop_testkit::tls::{HttpsMoto, TestPki, TlsNats, TlsPostgres};
use tg_sim::{FileSpec, MediaKind, Sim, SimConfig};

mod common;

use common::{BIN, START, links, run_to_end, set_webhook, start_role};

/// The lock file names every package that can be compiled; a second
/// rustls provider there is a panic at the first TLS client.
#[test]
fn only_one_rustls_crypto_provider_is_in_the_dependency_tree() {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock")).unwrap();
    let packages: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(packages.contains(&"ring"), "ring is the provider");
    for second in [
        "aws-lc-rs",
        "aws-lc-sys",
        "aws-lc-fips-sys",
        "rustls-openssl",
        "rustls-post-quantum",
    ] {
        assert!(
            !packages.contains(&second),
            "{second} is in Cargo.lock: a second rustls provider makes ClientConfig::builder() panic"
        );
    }
    assert_eq!(
        packages.iter().filter(|p| **p == "rustls").count(),
        1,
        "one rustls version"
    );
}

async fn https_sim(pki: &TestPki, config: SimConfig) -> Sim {
    let server = pki.server("tg-sim");
    Sim::start_https(
        config,
        "127.0.0.1:0".parse().unwrap(),
        &std::fs::read(&server.cert).unwrap(),
        &std::fs::read(&server.key).unwrap(),
        pki.ca_pem().as_bytes(),
    )
    .await
    .unwrap()
}

fn nats_config(nats: &TlsNats, security: NatsSecurity) -> JetStreamConfig {
    let suffix = teledrop_testkit::unique_suffix();
    JetStreamConfig {
        url: nats.url(),
        stream: format!("TLS_{suffix}"),
        subject: format!("tls{suffix}.updates"),
        dead_letter_stream: format!("TLS_{suffix}_DL"),
        dead_letter_subject: format!("tls{suffix}.dl"),
        consumer: format!("tls{suffix}-workers"),
        publish_timeout: Duration::from_secs(10),
        security,
        ..JetStreamConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_connects_over_tls_trusting_the_configured_ca() {
    let pki = TestPki::new();
    let ca = CaBundle::load("TELEDROP_CA_FILE", &pki.ca_file()).unwrap();
    let (nats, pg, sim) = tokio::join!(
        TlsNats::start(&pki),
        TlsPostgres::start(&pki),
        https_sim(&pki, SimConfig::default())
    );

    // NATS: tls:// with the CA and a password from a file.
    let password = std::fs::read_to_string(&nats.password_file).unwrap().trim().to_owned();
    let good = NatsSecurity {
        ca: Some(ca.clone()),
        client: None,
        credentials: NatsCredentials::UserPassword {
            user: nats.user.clone(),
            password: Secret::new(password),
        },
    };
    let bus = JetStreamBus::connect(nats_config(&nats, good.clone())).await.unwrap();
    bus.ping().await.unwrap();
    let wrong = NatsSecurity {
        credentials: NatsCredentials::UserPassword {
            user: nats.user.clone(),
            password: Secret::new("not-the-password".into()),
        },
        ..good.clone()
    };
    let e = JetStreamBus::connect(nats_config(&nats, wrong)).await.unwrap_err();
    assert!(matches!(e, BusError::Credentials(_)), "wrong password: {e:?}");
    let untrusted = NatsSecurity {
        ca: None,
        ..good.clone()
    };
    let e = JetStreamBus::connect(nats_config(&nats, untrusted)).await.unwrap_err();
    assert!(
        matches!(e, BusError::Tls(_)),
        "a server certificate nobody vouches for: {e:?}"
    );

    // Mutual TLS: the server wants a client certificate from the CA.
    let mutual = TlsNats::start_mutual(&pki).await;
    let e = JetStreamBus::connect(nats_config(&mutual, good.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, BusError::Tls(_) | BusError::Transport(_)),
        "no client certificate: {e:?}"
    );
    let client = pki.client("teledrop");
    let identity = ClientIdentity::load("NATS_TLS_CERT_FILE", &client.cert, "NATS_TLS_KEY_FILE", &client.key).unwrap();
    // Each server has a password of its own.
    let mutual_password = std::fs::read_to_string(&mutual.password_file)
        .unwrap()
        .trim()
        .to_owned();
    let with_cert = NatsSecurity {
        client: Some(identity),
        credentials: NatsCredentials::UserPassword {
            user: mutual.user.clone(),
            password: Secret::new(mutual_password),
        },
        ..good
    };
    let bus = JetStreamBus::connect(nats_config(&mutual, with_cert)).await.unwrap();
    bus.ping().await.unwrap();

    // Postgres: sslmode=verify-full with sslrootcert; plain is refused.
    let catalog = teledrop_catalog::connect(&pg.url(&pki.ca_file())).await.unwrap();
    catalog.ping().await.unwrap();
    assert!(
        teledrop_catalog::connect(&pg.plain_url()).await.is_err(),
        "pg_hba.conf refuses connections without TLS"
    );

    // The Bot API: a self-hosted server behind the private CA.
    let token: teledrop_core::BotToken = sim.token().parse().unwrap();
    let mut config = teledrop_telegram::TelegramConfig::new(token, sim.base_url(), false);
    let without_ca = teledrop_telegram::Telegram::new(config.clone()).unwrap();
    assert!(
        without_ca.get_me().await.is_err(),
        "the private CA is not a public root"
    );
    config.ca = Some(ca.clone());
    let telegram = teledrop_telegram::Telegram::new(config).unwrap();
    telegram.get_me().await.unwrap();

    // Kubernetes: kube's rustls client (the one that panicked with two
    // providers), against the HTTPS simulator as any HTTPS endpoint.
    let mut kube_config = kube::Config::new(sim.base_url().as_str().parse().unwrap());
    kube_config.root_cert = Some(vec![ca.certificates()[0].to_vec()]);
    let client = kube::Client::try_from(kube_config).expect("a kube client over rustls");
    match client.apiserver_version().await {
        Err(kube::Error::Api(_)) | Err(kube::Error::SerdeError(_)) | Ok(_) => {}
        Err(e) => panic!("the TLS handshake with a trusted server must succeed: {e:?}"),
    }

    sim.shutdown().await;
}

/// A start with a bad certificate or a wrong password stops with an error
/// that names the variable to fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_stop_the_start_naming_the_variable() {
    let pki = TestPki::new();
    let nats = TlsNats::start(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong_password = dir.path().join("wrong");
    std::fs::write(&wrong_password, "nope\n").unwrap();
    let expired = dir.path().join("expired.pem");
    std::fs::write(&expired, expired_ca_pem()).unwrap();
    let base = [
        ("NATS_URL", nats.url()),
        ("TELEDROP_WEBHOOK_SECRET", "secret_1".to_owned()),
        ("TELEDROP_LISTEN", format!("127.0.0.1:{}", free_port())),
    ];
    let user = ("NATS_USER", nats.user.clone());
    let garbage_creds = dir.path().join("bad.creds");
    std::fs::write(&garbage_creds, "not a creds file\n").unwrap();
    // (what, extra environment, the variable the error must name)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: [Case; 4] = [
        (
            "expired CA",
            vec![
                ("TELEDROP_CA_FILE", expired.display().to_string()),
                user.clone(),
                ("NATS_PASSWORD_FILE", nats.password_file.display().to_string()),
            ],
            "TELEDROP_CA_FILE",
        ),
        (
            "wrong password",
            vec![
                ("TELEDROP_CA_FILE", pki.ca_file().display().to_string()),
                user.clone(),
                ("NATS_PASSWORD_FILE", wrong_password.display().to_string()),
            ],
            "NATS_PASSWORD_FILE",
        ),
        (
            "unreadable .creds",
            vec![
                ("TELEDROP_CA_FILE", pki.ca_file().display().to_string()),
                ("NATS_CREDS_FILE", garbage_creds.display().to_string()),
            ],
            "NATS_CREDS_FILE",
        ),
        (
            "unknown CA",
            vec![
                user.clone(),
                ("NATS_PASSWORD_FILE", nats.password_file.display().to_string()),
            ],
            "TELEDROP_CA_FILE",
        ),
    ];
    for (what, extra, var) in cases {
        let env: Vec<(&str, String)> = base.iter().cloned().chain(extra).collect();
        let mut p = Proc::spawn("ingress", Path::new(BIN), &["ingress"], &env, dir.path());
        let status = p.terminate_after_exit(START).await;
        let log = p.log_text();
        assert!(!status.success(), "{what}: the start must fail\n{log}");
        assert!(log.contains(var), "{what}: the error names {var}\n{log}");
        assert!(!log.contains("panicked"), "{what}: an error, not a panic\n{log}");
    }
}

fn expired_ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_before = rcgen::date_time_ymd(2001, 1, 1);
    params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    params.self_signed(&key).unwrap().pem()
}

/// The distributed deployment with every connection over TLS: tg-sim over
/// HTTPS, NATS over TLS with a password from a file, Postgres with
/// `sslmode=verify-full`, S3 behind HTTPS. A file goes in; its link
/// downloads the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_distributed_deployment_works_with_every_connection_over_tls() {
    let pki = TestPki::new();
    let (nats, pg, moto, sim) = tokio::join!(
        TlsNats::start(&pki),
        TlsPostgres::start(&pki),
        HttpsMoto::start(&pki),
        https_sim(&pki, SimConfig::default())
    );
    let bucket = moto.fresh_bucket(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let suffix = teledrop_testkit::unique_suffix();
    let (links_port, ingress_port) = (free_port(), free_port());
    let mut env: Vec<(&str, String)> = vec![
        ("TELEDROP_CA_FILE", pki.ca_file().display().to_string()),
        ("DATABASE_URL", pg.url(&pki.ca_file())),
        ("NATS_URL", nats.url()),
        ("NATS_USER", nats.user.clone()),
        ("NATS_PASSWORD_FILE", nats.password_file.display().to_string()),
        ("TELEDROP_NATS_STREAM", format!("TLS_{suffix}")),
        ("TELEDROP_NATS_PREFIX", format!("tls{suffix}")),
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEDROP_PUBLIC_URL", format!("http://127.0.0.1:{links_port}")),
        ("TELEDROP_WEBHOOK_SECRET", "tls_e2e-Secret".into()),
    ];
    env.extend(bucket.env().into_iter().filter(|(k, _)| *k != "AWS_ALLOW_HTTP"));

    run_to_end(&env, &["migrate"], dir.path()).await;
    let mut roles = vec![
        start_role("links", "links", &env, links_port, dir.path()).await,
        start_role("ingress", "ingress", &env, ingress_port, dir.path()).await,
        start_role("worker", "worker", &env, free_port(), dir.path()).await,
    ];
    // The webhook command speaks to the Bot API over HTTPS too.
    set_webhook(&env, ingress_port, dir.path()).await;

    let ctl = sim.control();
    let sent = ctl
        .send_file(FileSpec::new(MediaKind::Document, 77, 3 << 20, 5))
        .await
        .unwrap();
    let log = ctl
        .wait_for(77, Duration::from_secs(120), |l| !links(l).is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", roles.iter().map(Proc::log_text).collect::<String>()));
    let link = links(&log).remove(0);
    let mut resp = reqwest::get(&link).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut hasher = Sha256::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        hasher.update(chunk);
    }
    assert_eq!(
        hex::encode(hasher.finalize()),
        sent.sha256,
        "the link serves the bytes sent"
    );
    let objects = bucket_objects_over_https(&pki, &bucket).await;
    assert_eq!(objects, 1, "one object stored in the HTTPS bucket");

    for p in &mut roles {
        let status = p.terminate(START).await;
        assert!(status.success(), "{status}\n{}", p.log_text());
    }
    sim.shutdown().await;
}

/// Objects in the bucket, listed through the CA-trusting client (moto
/// takes unsigned requests).
async fn bucket_objects_over_https(pki: &TestPki, bucket: &teledrop_testkit::s3::S3Bucket) -> usize {
    let body = pki
        .http_client()
        .get(format!("{}/{}?list-type=2", bucket.endpoint, bucket.bucket))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.matches("<Key>").count()
}
