//! Downloads per second: `teledrop standalone` serving a link against
//! nginx and against FastAPI's `FileResponse` under uvicorn (what the bots
//! this project grew from used), serving the same bytes from disk, in one
//! run, each loaded by wrk with the same connections and duration.
//!
//!     bash scripts/bench.sh --bench download_rate
//!     bash scripts/bench.sh --bench download_rate -- 4096 65536   # sizes of your choice
//!     ROUNDS=9 bash scripts/bench.sh --bench download_rate
//!
//! Each size is measured at 1 and at 32 connections, `ROUNDS` times
//! (default 5), teledrop then each reference back to back, so that a
//! background hiccup hits both sides of a pair; the median of the
//! per-round ratios is reported. nginx runs with `worker_processes auto`,
//! `sendfile`, no access log; uvicorn with one worker per core, uvloop and
//! httptools, no access log; teledrop with its defaults. Needs `wrk`,
//! `nginx` and a Python with FastAPI (`scripts/bench.sh` installs them and
//! sets `BENCH_PYTHON`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use teledrop_testkit::process::{Proc, free_port};
use tg_sim::{FileSpec, Sim, SimConfig};

mod common;

/// Seconds of load per measurement.
const SECONDS: u32 = 5;
const CONNECTIONS: [u32; 2] = [1, 32];

#[tokio::main]
async fn main() {
    for tool in ["wrk", "nginx"] {
        if Command::new(tool).arg("-v").output().is_err() {
            eprintln!("download_rate: `{tool}` is not installed; run it through scripts/bench.sh");
            std::process::exit(1);
        }
    }
    let mut sizes = common::numeric_args();
    if sizes.is_empty() {
        sizes = vec![4096];
    }
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(SimConfig::default(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let env = vec![
        ("TELEGRAM_BOT_TOKEN", sim.token().to_owned()),
        ("TELEGRAM_API_URL", sim.base_url().to_string()),
        ("TELEDROP_PUBLIC_URL", public.clone()),
        ("TELEDROP_LISTEN", format!("127.0.0.1:{port}")),
        ("TELEDROP_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port())),
        ("DATABASE_URL", format!("sqlite://{}/td.db", dir.path().display())),
        ("TELEDROP_STORAGE_URL", dir.path().join("objects").display().to_string()),
    ];
    let mut teledrop = Proc::spawn(
        "bench",
        Path::new(env!("CARGO_BIN_EXE_teledrop")),
        &["standalone"],
        &env,
        dir.path(),
    );
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let ctl = sim.control();
    let mut files = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let user = 100 + i as i64;
        ctl.send_file(FileSpec::document(user, size, i as u64)).await.unwrap();
        let log = ctl
            .wait_for(user, Duration::from_secs(120), |l| {
                l.visible().any(|m| m.text.contains("/download/"))
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", teledrop.log_text()));
        let link = log
            .visible()
            .flat_map(|m| m.text.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|w| w.contains("/download/"))
            .unwrap();
        // nginx serves exactly the bytes the link serves.
        let body = reqwest::get(&link).await.unwrap().bytes().await.unwrap();
        assert_eq!(body.len() as u64, size);
        let name = format!("file{i}.bin");
        std::fs::write(www.join(&name), &body).unwrap();
        files.push((size, link, name));
    }
    let nginx_port = free_port();
    let nginx = Nginx::start(dir.path(), &www, nginx_port);
    let fastapi_port = free_port();
    let fastapi = FastApi::start(dir.path(), &www, fastapi_port);
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);

    for (size, link, name) in &files {
        let nginx_url = format!("http://127.0.0.1:{nginx_port}/{name}");
        let fastapi_url = format!("http://127.0.0.1:{fastapi_port}/{name}");
        for conns in CONNECTIONS {
            let mut vs_nginx = common::Rounds::rate("downloads", "req/s");
            let mut vs_fastapi = common::Rounds::rate("downloads", "req/s");
            for _ in 0..rounds {
                let ours = wrk(link, conns);
                vs_nginx.push(ours, wrk(&nginx_url, conns));
                let ours = wrk(link, conns);
                vs_fastapi.push(ours, wrk(&fastapi_url, conns));
            }
            println!("size {size} B, {conns} connections");
            vs_nginx.print("nginx");
            vs_fastapi.print("FastAPI");
        }
    }
    drop(fastapi);
    drop(nginx);
    teledrop.terminate(Duration::from_secs(30)).await;
    sim.shutdown().await;
}

/// Requests per second wrk reaches against `url` with `conns` connections.
fn wrk(url: &str, conns: u32) -> f64 {
    let threads = conns.min(2);
    let out = Command::new("wrk")
        .args([
            format!("-t{threads}"),
            format!("-c{conns}"),
            format!("-d{SECONDS}s"),
            url.to_owned(),
        ])
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = text
        .lines()
        .find(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if let Some(e) = errors {
        panic!("wrk saw errors against {url}: {e}\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

/// FastAPI's `FileResponse` under uvicorn, one worker per core.
struct FastApi(std::process::Child);

impl FastApi {
    fn start(dir: &Path, root: &Path, port: u16) -> FastApi {
        let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
        let app = dir.join("fileapp.py");
        std::fs::write(
            &app,
            format!(
                "from fastapi import FastAPI\n\
                 from fastapi.responses import FileResponse\n\
                 app = FastAPI()\n\
                 @app.get('/{{name}}')\n\
                 async def serve(name: str):\n\
                 \x20   return FileResponse({root:?} + '/' + name)\n",
                root = root.display().to_string(),
            ),
        )
        .unwrap();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let child = Command::new(python)
            .current_dir(dir)
            .args(["-m", "uvicorn", "fileapp:app", "--host", "127.0.0.1", "--no-access-log"])
            .args(["--port", &port.to_string(), "--workers", &cores.to_string()])
            .args(["--loop", "uvloop", "--http", "httptools", "--log-level", "warning"])
            .spawn()
            .expect("uvicorn starts (run through scripts/bench.sh)");
        wait_listening(port, "uvicorn");
        FastApi(child)
    }
}

impl Drop for FastApi {
    /// SIGTERM: uvicorn's supervisor stops its workers too; SIGKILL would
    /// leave them running.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx in the foreground with a configuration of its own.
struct Nginx {
    master: std::process::Child,
    prefix: std::path::PathBuf,
    conf: std::path::PathBuf,
}

impl Nginx {
    fn start(dir: &Path, root: &Path, port: u16) -> Nginx {
        let prefix = dir.join("nginx");
        std::fs::create_dir_all(prefix.join("logs")).unwrap();
        let conf = prefix.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes auto;\n\
                 pid {pid};\n\
                 error_log {err} warn;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n\
                   access_log off;\n\
                   sendfile on;\n\
                   tcp_nodelay on;\n\
                   keepalive_requests 1000000;\n\
                   client_body_temp_path {tmp};\n\
                   server {{ listen 127.0.0.1:{port}; root {root}; }}\n\
                 }}\n",
                pid = prefix.join("nginx.pid").display(),
                err = prefix.join("logs/error.log").display(),
                tmp = prefix.join("tmp").display(),
                root = root.display(),
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .spawn()
            .expect("nginx starts");
        wait_listening(port, "nginx");
        Nginx {
            master: child,
            prefix,
            conf,
        }
    }
}

impl Drop for Nginx {
    /// `nginx -s stop` has the master stop its workers too; killing the
    /// master alone would leave them running.
    fn drop(&mut self) {
        let stopped = Command::new("nginx")
            .arg("-p")
            .arg(&self.prefix)
            .arg("-c")
            .arg(&self.conf)
            .args(["-s", "stop"])
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            let _ = self.master.kill();
        }
        let _ = self.master.wait();
    }
}
