//! The `tg-sim` binary as a separate process, driven by `SimClient::new`.

mod common;

use common::eventually;
use teloxide::prelude::*;
use tg_sim::{FileSpec, SimClient, generate_token};

#[tokio::test]
async fn standalone_server_serves_bot_api_and_control_api() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let token = generate_token();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tg-sim"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--webhook-backoff-cap-ms",
            "500",
        ])
        .env("RUST_LOG", "debug")
        .env("TG_SIM_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn tg-sim");
    let base: url::Url = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let ctl = SimClient::new(base.clone());
    eventually("tg-sim answers", || async { ctl.health().await.ok() }).await;

    let sent = ctl.send_file(FileSpec::document(5, 1234, 1)).await.unwrap();
    let bot = Bot::new(&token).set_api_url(base);
    let updates = bot.get_updates().await.unwrap();
    assert_eq!(updates.len(), 1);
    assert_eq!(i64::from(updates[0].id.0), sent.update_id);
    bot.send_message(ChatId(5), "got it").await.unwrap();
    assert_eq!(ctl.messages(5).await.unwrap().messages[0].text, "got it");

    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let logs = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("tg-sim ready"), "{logs}");
    assert!(!logs.contains(&token), "the token must never be logged: {logs}");
}
