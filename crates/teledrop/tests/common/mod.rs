//! What the end-to-end tests share: the real binary, started as the
//! roles are deployed, and reading links out of the bot's messages.

use std::path::Path;
use std::time::Duration;
use teledrop_testkit::process::Proc;
use tg_sim::ChatLog;

pub const BIN: &str = env!("CARGO_BIN_EXE_teledrop");
/// How long a role may take to start, or a one-shot command to finish.
pub const START: Duration = Duration::from_secs(60);

/// The download links in the messages the chat can see, oldest first.
pub fn links(log: &ChatLog) -> Vec<String> {
    log.visible()
        .filter_map(|m| {
            m.text
                .split_whitespace()
                .find(|w| w.contains("/download/"))
                .map(str::to_owned)
        })
        .collect()
}

/// `teledrop <args>` to its end; its log.
pub async fn run_to_end(env: &[(&str, String)], args: &[&str], dir: &Path) -> String {
    Proc::run(args[0], Path::new(BIN), args, env, dir, START).await
}

/// `teledrop <role>` listening on `port`, once it is ready.
pub async fn start_role(name: &str, role: &str, env: &[(&str, String)], port: u16, dir: &Path) -> Proc {
    Proc::start_ready(name, Path::new(BIN), &[role], env, port, dir, START).await
}

/// `teledrop webhook set` pointing Telegram at the ingress on `port`.
pub async fn set_webhook(env: &[(&str, String)], port: u16, dir: &Path) {
    let out = run_to_end(
        env,
        &["webhook", "set", "--url", &format!("http://127.0.0.1:{port}")],
        dir,
    )
    .await;
    assert!(out.contains("webhook set"), "{out}");
}
