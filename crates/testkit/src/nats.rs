//! A `nats-server -js` of a test's own, for tests that stop and restart
//! the server (the run's shared server must stay up for everyone else).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a (re)started server may take to answer with JetStream ready.
const START_DEADLINE: Duration = Duration::from_secs(30);

pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    /// JetStream's store: kept across [`NatsServer::restart`] so streams,
    /// consumers and unacknowledged messages survive it.
    store: tempfile::TempDir,
}

fn binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .expect("nats-server on PATH (scripts/test.sh installs it)")
}

impl NatsServer {
    /// Starts a server on free loopback ports and waits until JetStream
    /// answers.
    pub async fn start() -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: crate::process::free_port(),
            monitor_port: crate::process::free_port(),
            store: tempfile::tempdir().expect("a store directory"),
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        // `/healthz?js-enabled-only=true` answers 200 once JetStream is up.
        let health = format!("http://127.0.0.1:{}/healthz?js-enabled-only=true", self.monitor_port);
        let client = reqwest::Client::new();
        let up = crate::poll_until(START_DEADLINE, || async {
            let r = client.get(&health).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        assert!(up.is_some(), "the test's nats-server did not start");
    }

    /// Kills the server (SIGKILL: an outage, not a shutdown).
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("stop nats-server");
        }
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }
}
