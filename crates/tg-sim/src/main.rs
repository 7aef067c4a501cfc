//! `tg-sim` as a standalone server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tg_sim::{Sim, SimConfig};

/// A Telegram Bot API simulator for tests.
///
/// Serves the Bot API at http://LISTEN/bot<TOKEN>/<method> and file
/// downloads at http://LISTEN/file/bot<TOKEN>/<file_path>: point a bot at
/// http://LISTEN/ as its API URL (TELEGRAM_API_URL, teloxide's
/// set_api_url) and drive it through the control API:
///
///   POST /_sim/files       a user sends a file (FileSpec):
///                          {"user":42,"kind":"document","size":1048576,"seed":7,
///                           "name":"a.pdf","mime":null,"caption":null,"forward":false}
///                          kind: document video audio voice animation video_note photo sticker
///   POST /_sim/albums      {"user":42,"items":[FileSpec, ...]}  (one media_group_id)
///   POST /_sim/texts       {"user":42,"text":"/start"}
///   POST /_sim/callbacks   {"user":42,"message_id":3,"data":"ok"}  (inline button press)
///   POST /_sim/updates     any JSON update (update_id assigned if missing)
///   POST /_sim/updates/raw raw bytes, pushed verbatim to the webhook
///   GET  /_sim/chats/ID?after_version=N&timeout_ms=M
///                          what the bot sent/edited/deleted in chat ID; waits for a change
///   GET  /_sim/files/FILE_UNIQUE_ID   size and sha256 of a file's content
///   POST /_sim/file_paths  {"file_id":".."}: a download path even over 20 MB (test back door)
///   POST /_sim/local_file_paths {"file_id":"..","file_path":"/etc/passwd"}: local getFile returns it
///   GET  /_sim/local_fetches  getFile calls per file_id and local-mode fetch progress
///   GET|PUT /_sim/faults   {"latency":{"*":0,"getFile":200,"download":0},
///                           "download_bytes_per_sec":null,"error_rate_5xx":0.0,
///                           "force_429":{"method":"sendMessage","retry_after":3,"count":2},
///                           "cut_download_after":null,"blocked_chats":[]}   (latency in ms)
///   GET  /_sim/webhook/deliveries     every webhook push attempt
///   GET  /_sim/status      waiting long polls, pending updates, webhook URL
///   GET  /_sim/health
///
/// File content is generated from (seed, size): never stored, any size.
/// The tg-sim library's SimClient wraps these routes.
#[derive(Parser)]
#[command(name = "tg-sim", version, verbatim_doc_comment)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "TG_SIM_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// The only bot token accepted (bot id = digits before ':'), e.g. one
    /// you make up: `1000:$(python3 -c 'import secrets; print(secrets.token_urlsafe(30))')`.
    #[arg(long, env = "TG_SIM_TOKEN", hide_env_values = true)]
    token: String,

    /// The bot's username in getMe.
    #[arg(long, env = "TG_SIM_BOT_USERNAME", default_value = "teledrop_test_bot")]
    bot_username: String,

    /// Behave like `telegram-bot-api --local`: getFile has no size limit,
    /// writes the file under --local-dir and returns its absolute path;
    /// HTTP downloads answer 404.
    #[arg(long, env = "TG_SIM_LOCAL_MODE")]
    local_mode: bool,

    /// Where local mode writes files (<dir>/<token>/<folder>/file_N.ext).
    /// Defaults to $TMPDIR/tg-sim.
    #[arg(long, env = "TG_SIM_LOCAL_DIR")]
    local_dir: Option<PathBuf>,

    /// Local mode: how fast getFile "fetches" a file from Telegram before
    /// it answers, in bytes per second (0: at once). The default, 16 MiB/s,
    /// makes a 2000 MB getFile take about two minutes, like a real server.
    #[arg(long, env = "TG_SIM_LOCAL_FETCH_RATE", default_value_t = tg_sim::DEFAULT_LOCAL_FETCH_RATE)]
    local_fetch_rate: u64,

    /// Longest wait between webhook retries, in milliseconds (Telegram: about 60 s).
    #[arg(long, env = "TG_SIM_WEBHOOK_BACKOFF_CAP_MS", default_value_t = 60_000)]
    webhook_backoff_cap_ms: u64,

    /// Wait before the second webhook retry, doubling afterwards, in
    /// milliseconds (Telegram: 1 s; the first retry is immediate).
    #[arg(long, env = "TG_SIM_WEBHOOK_FIRST_RETRY_MS", default_value_t = 1_000)]
    webhook_first_retry_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let defaults = SimConfig::default();
    let config = SimConfig {
        token: args.token,
        bot_username: args.bot_username,
        local_mode: args.local_mode,
        local_dir: args.local_dir.unwrap_or(defaults.local_dir),
        local_fetch_rate: Some(args.local_fetch_rate).filter(|r| *r > 0),
        webhook_backoff_cap: Duration::from_millis(args.webhook_backoff_cap_ms),
        webhook_first_retry: Duration::from_millis(args.webhook_first_retry_ms),
    };
    let sim = Sim::start(config, args.listen).await?;
    // The token is deliberately left out: logs end up in CI output.
    tracing::info!(api_url = %sim.base_url(), "tg-sim ready; control API under /_sim/");
    wait_for_signal().await?;
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM (how test harnesses and process managers stop it).
async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
