//! The admin listener (`TELEDROP_ADMIN_LISTEN`): every distributed role
//! answers `/healthz`, `/readyz` and `/metrics` there, and the public
//! listeners of the ingress and the link server, which carry the webhook
//! and the downloads, answer 404 for all three. `standalone` is checked in
//! `standalone.rs`.

use std::time::Duration;
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{FileSpec, Sim, SimConfig};

#[allow(dead_code)] // the end-to-end helpers; this test uses a few
mod common;

use common::{START, links, run_to_end, set_webhook, start_role};

const PROBES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

async fn status(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_answer_only_on_the_admin_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        SimConfig {
            webhook_first_retry: Duration::from_millis(50),
            webhook_backoff_cap: Duration::from_millis(500),
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let suffix = teledrop_testkit::unique_suffix();
    let (links_port, ingress_port) = (free_port(), free_port());
    let public = format!("http://127.0.0.1:{links_port}");
    let env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", teledrop_testkit::postgres::fresh_database().await),
        ("NATS_URL", teledrop_testkit::require_env("TEST_NATS_URL")),
        ("TELEDROP_NATS_STREAM", format!("ADMIN_{suffix}")),
        ("TELEDROP_NATS_PREFIX", format!("admin{suffix}")),
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEDROP_PUBLIC_URL", public.clone()),
        ("TELEDROP_WEBHOOK_SECRET", "admin_e2e-Secret".into()),
        ("TELEDROP_STORAGE_URL", dir.path().join("objects").display().to_string()),
    ];
    run_to_end(&env, &["migrate"], dir.path()).await;
    // `start_role` waits for `/readyz` on each admin listener.
    let mut roles: Vec<Proc> = vec![
        start_role("links", "links", &env, links_port, dir.path()).await,
        start_role("ingress", "ingress", &env, ingress_port, dir.path()).await,
        start_role("worker", "worker", &env, free_port(), dir.path()).await,
    ];
    set_webhook(&env, ingress_port, dir.path()).await;
    let logs = |roles: &[Proc]| roles.iter().map(Proc::log_text).collect::<String>();

    // One file through the ingress's public webhook route, downloaded
    // from the link server's public listener.
    let sent = sim.control().send_file(FileSpec::document(7, 4096, 77)).await.unwrap();
    let log = sim
        .control()
        .wait_for(7, START, |l| !links(l).is_empty())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&roles)));
    let link = links(&log).remove(0);
    let download = reqwest::get(&link).await.unwrap();
    assert_eq!(download.status(), 200, "{link}");
    assert_eq!(download.bytes().await.unwrap().len() as u64, sent.size);

    // Each role's counters, and the histograms of what it just did: the
    // download's latency, and the stored job's duration, queue wait and
    // steps (recorded as the job ends, maybe after the reply arrived).
    let series: [&[&str]; 3] = [
        &[
            "teledrop_links_download_responses_total{code=\"200\"} 1",
            "teledrop_links_request_duration_seconds_count{route=\"download\",code=\"200\"} 1",
        ],
        &["teledrop_webhook_requests_total"],
        &[
            "teledrop_worker_jobs_total",
            "teledrop_worker_job_duration_seconds_count{outcome=\"stored\"} 1",
            "teledrop_worker_queue_wait_seconds_count 1",
            "teledrop_worker_step_duration_seconds_count{step=\"get_file\"} 1",
            "teledrop_worker_step_duration_seconds_count{step=\"download\"} 1",
            "teledrop_worker_step_duration_seconds_count{step=\"upload\"} 1",
            "teledrop_worker_step_duration_seconds_count{step=\"commit\"} 1",
            "teledrop_worker_step_duration_seconds_count{step=\"reply\"} 1",
        ],
    ];
    for (p, expected) in roles.iter().zip(series) {
        let admin = p.admin_url();
        for path in PROBES {
            assert_eq!(status(&format!("{admin}{path}")).await, 200, "{admin}{path}");
        }
        let metrics = || async {
            reqwest::get(format!("{admin}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        let shown = teledrop_testkit::poll_until(START, || async {
            let text = metrics().await;
            expected.iter().all(|s| text.contains(s)).then_some(())
        })
        .await;
        if shown.is_none() {
            panic!("{expected:?} in {admin}/metrics:\n{}", metrics().await);
        }
    }
    // A download on the admin listener is no route either.
    let token_path = link.strip_prefix(&public).expect("links name TELEDROP_PUBLIC_URL");
    assert_eq!(status(&format!("{}{token_path}", roles[0].admin_url())).await, 404);
    for base in [public, format!("http://127.0.0.1:{ingress_port}")] {
        for path in PROBES {
            assert_eq!(status(&format!("{base}{path}")).await, 404, "public {base}{path}");
        }
    }

    for p in &mut roles {
        let exit = p.terminate(START).await;
        assert!(exit.success(), "{exit}\n{}", p.log_text());
    }
}
