//! Running the real `teledrop` binary as a child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

const ADMIN_LISTEN: &str = "TELEDROP_ADMIN_LISTEN";

/// A running child whose stderr goes to a log file that is printed when a
/// test fails.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
    name: String,
    /// `TELEDROP_ADMIN_LISTEN`: where `/healthz`, `/readyz` and `/metrics` answer.
    admin: SocketAddr,
}

impl Proc {
    /// Starts `bin` with `args` and exactly the environment `env` (plus
    /// PATH, HOME and RUST_LOG), so no stray variable of the test runner
    /// changes its configuration. Unless `env` names one, the process gets
    /// an admin listener on a free loopback port ([`Proc::admin_url`]):
    /// the default 0.0.0.0:9090 would collide between processes.
    pub fn spawn(name: &str, bin: &Path, args: &[&str], env: &[(&str, String)], log_dir: &Path) -> Proc {
        let admin = match env.iter().find(|(k, _)| *k == ADMIN_LISTEN) {
            Some((_, v)) => v.parse().unwrap_or_else(|e| panic!("{ADMIN_LISTEN}={v}: {e}")),
            None => SocketAddr::from(([127, 0, 0, 1], free_port())),
        };
        let log = log_dir.join(format!("{name}-{}.log", crate::unique_suffix()));
        let file = std::fs::File::create(&log).expect("creating process log");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .envs(
                ["PATH", "HOME"]
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
            )
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("TELEDROP_LOG_FORMAT", "text")
            .env(ADMIN_LISTEN, admin.to_string())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Proc {
            child,
            log,
            name: name.to_owned(),
            admin,
        }
    }

    /// `http://127.0.0.1:port` of the admin listener (`/healthz`,
    /// `/readyz`, `/metrics`), without a trailing slash.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// The log so far (for assertions and failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to clean up.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("kill");
        self.child.wait().await.expect("wait");
    }

    /// SIGTERM and wait for the exit status.
    pub async fn terminate(&mut self, deadline: Duration) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(s) => s.expect("wait"),
            Err(_) => panic!(
                "{} did not exit within {deadline:?} after SIGTERM\n{}",
                self.name,
                self.log_text()
            ),
        }
    }

    /// Waits for a process that ends by itself (a one-shot command).
    pub async fn terminate_after_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(s) => s.expect("wait"),
            Err(_) => panic!("{} did not finish within {deadline:?}\n{}", self.name, self.log_text()),
        }
    }

    /// Runs a one-shot command to its end and returns its log; panics
    /// (with the log) if it fails or outlives `deadline`.
    pub async fn run(
        name: &str,
        bin: &Path,
        args: &[&str],
        env: &[(&str, String)],
        log_dir: &Path,
        deadline: Duration,
    ) -> String {
        let mut p = Proc::spawn(name, bin, args, env, log_dir);
        let status = p.terminate_after_exit(deadline).await;
        assert!(status.success(), "{name} {args:?} failed: {status}\n{}", p.log_text());
        p.log_text()
    }

    /// Starts a server with `env` plus `TELEDROP_LISTEN=127.0.0.1:port`
    /// (the worker and the controller ignore it) and an admin listener of
    /// its own, and returns it once `GET /readyz` there answers 200.
    pub async fn start_ready(
        name: &str,
        bin: &Path,
        args: &[&str],
        env: &[(&str, String)],
        port: u16,
        log_dir: &Path,
        deadline: Duration,
    ) -> Proc {
        let mut env = env.to_vec();
        env.push(("TELEDROP_LISTEN", format!("127.0.0.1:{port}")));
        let mut p = Proc::spawn(name, bin, args, &env, log_dir);
        let ready = format!("{}/readyz", p.admin_url());
        p.wait_http_ok(&ready, deadline).await;
        p
    }

    /// Exit status if it has exited.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits until `GET url` answers 200, failing with the log if the
    /// process exits or the deadline passes.
    pub async fn wait_http_ok(&mut self, url: &str, deadline: Duration) {
        let client = reqwest::Client::new();
        let until = Instant::now() + deadline;
        // Polling a port that is not open yet: there is no event to wait on.
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            if let Some(s) = self.try_status() {
                panic!(
                    "{} exited with {s} before {url} answered\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if let Ok(r) = client.get(url).timeout(Duration::from_secs(2)).send().await
                && r.status().is_success()
            {
                return;
            }
            if Instant::now() > until {
                panic!("{url} not ready within {deadline:?}\n{}", self.log_text());
            }
        }
    }

    /// Peak resident memory (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    // The kernel may hand the same free port to two binds in a row. Two
    // roles told the same port would have one fail to bind while the
    // other answers its readiness probe, so no port is handed out twice
    // in one test process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}
