//! kube-sim over HTTPS, as any client sees it: authentication, the
//! resourceVersion and generation rules, the status subresource,
//! finalizers, watches (resume, 410, close), apply conflicts, faults and
//! the request log.

use kube_sim::{KubeSim, LEASES, RETENTION_POLICIES, retention_policy};
use serde_json::{Value, json};
use std::time::Duration;

const RP: &str = "/apis/teledrop.dev/v1alpha1/namespaces/ns/retentionpolicies";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l";

struct Client {
    http: reqwest::Client,
    sim: KubeSim,
}

impl Client {
    async fn new() -> Client {
        let sim = KubeSim::start().await.unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap())
            .build()
            .unwrap();
        Client { http, sim }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.sim.url()))
            .bearer_auth(self.sim.token())
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = r.send().await.unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap())
    }

    async fn patch(&self, path: &str, content_type: &str, body: Value) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::PATCH, path)
            .header("content-type", content_type)
            .body(body.to_string());
        self.send(r).await
    }
}

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

/// Reads watch events until `n` arrived (or the stream ended).
async fn events(resp: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .unwrap()
        else {
            break;
        };
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let e: Value = serde_json::from_slice(&line).unwrap();
            if e["type"] != "BOOKMARK" {
                out.push(e);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_token_is_required_and_unknown_paths_are_404_and_logged() {
    let c = Client::new().await;
    let resp = c.http.get(format!("{}{RP}", c.sim.url())).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let (code, status) = c.send(c.req(reqwest::Method::GET, "/apis/apps/v1/deployments")).await;
    assert_eq!(
        (code, &status["kind"], &status["reason"]),
        (404, &json!("Status"), &json!("NotFound"))
    );
    let log = c.sim.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[1].path.as_str(), log[1].status),
        ("/apis/apps/v1/deployments", 404)
    );
}

#[tokio::test]
async fn versions_generations_status_and_stale_writes() {
    let c = Client::new().await;
    let p = retention_policy("ns", "p", json!({"maxAge": "1d"}));
    let (code, created) = c.send(c.req(reqwest::Method::POST, RP).json(&p)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    let (code, _) = c.send(c.req(reqwest::Method::POST, RP).json(&p)).await;
    assert_eq!(code, 409);

    // A status write moves the version, not the generation; a write to
    // the object itself cannot change status.
    let status_path = format!("{RP}/p/status");
    let (code, s) = c
        .patch(
            &status_path,
            "application/merge-patch+json",
            json!({"status": {"observedGeneration": 1}}),
        )
        .await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(
        (s["metadata"]["generation"].as_i64(), rv(&s) > rv(&created)),
        (Some(1), true)
    );
    let (_, m) = c
        .patch(
            &format!("{RP}/p"),
            "application/merge-patch+json",
            json!({"status": {"observedGeneration": 9}, "metadata": {"labels": {"a": "b"}}}),
        )
        .await;
    assert_eq!(
        (
            m["status"]["observedGeneration"].as_i64(),
            m["metadata"]["generation"].as_i64()
        ),
        (Some(1), Some(1))
    );
    // A spec change bumps the generation.
    let (_, g) = c
        .patch(
            &format!("{RP}/p"),
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/maxAge", "value": "2d"}]),
        )
        .await;
    assert_eq!(g["metadata"]["generation"], 2);
    // An update at an old resourceVersion is refused.
    let (code, e) = c
        .send(c.req(reqwest::Method::PUT, &format!("{RP}/p")).json(&created))
        .await;
    assert_eq!((code, &e["reason"]), (409, &json!("Conflict")), "{e}");
    // A write that changes nothing is no write.
    let (_, same) = c
        .patch(
            &format!("{RP}/p"),
            "application/merge-patch+json",
            json!({"spec": {"maxAge": "2d"}}),
        )
        .await;
    assert_eq!(rv(&same), rv(&g));
}

#[tokio::test]
async fn finalizers_hold_a_deleted_object_and_watches_see_it_all_resume_and_expire() {
    let c = Client::new().await;
    let mut p = retention_policy("ns", "f", json!({"maxAge": "1d"}));
    p["metadata"]["finalizers"] = json!(["x/y"]);
    c.sim.create(RETENTION_POLICIES, "ns", p).unwrap();
    let (_, list) = c.send(c.req(reqwest::Method::GET, RP)).await;
    let from = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();

    let mut watch = c
        .req(
            reqwest::Method::GET,
            &format!("{RP}?watch=1&resourceVersion={from}&allowWatchBookmarks=true"),
        )
        .send()
        .await
        .unwrap();
    let marked = c.sim.delete(RETENTION_POLICIES, "ns", "f").unwrap();
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let (code, e) = c
        .patch(
            &format!("{RP}/f"),
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": ["x/y", "new"]}}),
        )
        .await;
    assert_eq!(code, 422, "no new finalizers on a deleted object: {e}");
    c.patch(
        &format!("{RP}/f"),
        "application/merge-patch+json",
        json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert!(c.sim.get(RETENTION_POLICIES, "ns", "f").is_none());
    let seen: Vec<Value> = events(&mut watch, 2)
        .await
        .into_iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(seen, [json!("MODIFIED"), json!("DELETED")]);

    // Resuming from before a compaction: 410 Expired in the stream.
    c.sim.compact();
    let mut old = c
        .req(reqwest::Method::GET, &format!("{RP}?watch=true&resourceVersion={from}"))
        .send()
        .await
        .unwrap();
    let e = events(&mut old, 1).await;
    assert_eq!(
        (&e[0]["type"], &e[0]["object"]["code"], &e[0]["object"]["reason"]),
        (&json!("ERROR"), &json!(410), &json!("Expired"))
    );

    // Closing watches ends the stream.
    let mut open = c
        .req(reqwest::Method::GET, &format!("{RP}?watch=true"))
        .send()
        .await
        .unwrap();
    c.sim
        .wait_for(Duration::from_secs(30), |s| (s.open_watches() > 0).then_some(()))
        .await
        .unwrap();
    c.sim.close_watches();
    assert!(events(&mut open, 1).await.is_empty());
}

#[tokio::test]
async fn unforced_apply_of_a_held_lease_conflicts_until_released_and_faults_are_injected() {
    let c = Client::new().await;
    c.sim
        .create(LEASES, "ns", json!({"metadata": {"name": "l"}, "spec": {}}))
        .unwrap();
    let apply =
        |who: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": who}});
    let ct = "application/apply-patch+yaml";
    let (code, _) = c.patch(&format!("{LEASE}?fieldManager=a"), ct, apply("a")).await;
    assert_eq!(code, 200);
    let (code, e) = c.patch(&format!("{LEASE}?fieldManager=b"), ct, apply("b")).await;
    assert_eq!((code, &e["reason"]), (409, &json!("Conflict")), "{e}");
    let release = json!({"spec": {"holderIdentity": null}});
    c.patch(
        &format!("{LEASE}?fieldManager=b"),
        "application/strategic-merge-patch+json",
        release,
    )
    .await;
    let (code, l) = c.patch(&format!("{LEASE}?fieldManager=b"), ct, apply("b")).await;
    assert_eq!((code, &l["spec"]["holderIdentity"]), (200, &json!("b")));

    c.sim.fail_next(2);
    for _ in 0..2 {
        assert_eq!(c.send(c.req(reqwest::Method::GET, LEASE)).await.0, 500);
    }
    assert_eq!(c.send(c.req(reqwest::Method::GET, LEASE)).await.0, 200);
    c.sim.outage(true);
    assert_eq!(c.send(c.req(reqwest::Method::GET, LEASE)).await.0, 503);
    c.sim.outage(false);
    let log = c.sim.requests();
    assert!(
        log.iter()
            .any(|r| r.content_type.as_deref() == Some(ct) && r.query == "fieldManager=b" && r.status == 409)
    );
}
