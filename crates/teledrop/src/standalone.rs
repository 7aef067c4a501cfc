//! `teledrop standalone`: every role in one process.

use crate::config::{ConfigError, DbRole, StandaloneArgs};
use anyhow::Context;
use std::sync::Arc;
use teledrop_bus::{Bus, MemoryBus};
use teledrop_core::report;
use teledrop_links::{LinksConfig, LinksState};
use teledrop_telegram::Telegram;
use teledrop_worker::Pipeline;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The catalog of `standalone` when DATABASE_URL is not set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/teledrop.db";

pub async fn run(
    args: StandaloneArgs,
    common: &crate::config::Common,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Validate everything before touching anything.
    let ingest = args.ingest.resolve(common.ca.as_ref())?;
    let database_url = args.database.resolve(Some(DEFAULT_DATABASE_URL))?;
    let (storage, limits) = (ingest.storage, ingest.limits);
    let policies = match &args.policy_file {
        Some(path) => {
            teledrop_retention::load_policy_file(path).map_err(|e| ConfigError::invalid("TELEDROP_POLICY_FILE", e))?
        }
        None => Vec::new(),
    };

    let catalog = teledrop_catalog::connect_with(&database_url, args.database.pool(DbRole::Standalone)?)
        .await
        .context("opening the catalog (DATABASE_URL)")?;
    catalog.migrate().await.context("migrating the catalog")?;
    teledrop_retention::install_file_policies(&catalog, &policies)
        .await
        .context("storing the policies of TELEDROP_POLICY_FILE")?;
    let telegram = Telegram::new(ingest.telegram).context("setting up the Bot API client")?;
    let username = telegram
        .get_me()
        .await
        .context("checking TELEGRAM_BOT_TOKEN with getMe")?;
    // Long polling and a webhook exclude each other; standalone polls.
    telegram
        .delete_webhook()
        .await
        .context("removing the bot's webhook for long polling")?;
    info!(
        bot = %username,
        catalog = catalog.backend(),
        storage = %storage.describe(),
        local_mode = telegram.local_mode(),
        "standalone starting"
    );

    let pipeline = Arc::new(Pipeline::new(
        catalog.clone(),
        storage.clone(),
        telegram.clone(),
        ingest.pipeline,
    ));
    // Before anything runs: afterwards every running job is this process's.
    let recovery = teledrop_worker::Recovery::prepare(&pipeline)
        .await
        .context("reading unfinished jobs")?;
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new(limits.worker_concurrency * 4));

    let links = LinksState::new(catalog.clone(), storage.clone(), LinksConfig::default());
    // One ops surface on the admin port: the link server's readiness, and
    // its metrics with the worker's.
    let ops = teledrop_metrics::ops_router(
        teledrop_metrics::registry(&[&links, &**pipeline.metrics()]),
        links.readiness(),
    );
    args.admin.check_apart_from(args.listen)?;
    let listener = crate::roles::bind("TELEDROP_LISTEN", args.listen).await?;
    let admin_listener = crate::roles::bind("TELEDROP_ADMIN_LISTEN", args.admin.admin_listen).await?;

    let mut tasks = tokio::task::JoinSet::new();
    {
        info!(policies = policies.len(), "retention policies in force");
        let sweeper = teledrop_retention::PolicyEnforcer::new(catalog.clone(), storage.clone());
        let stop = shutdown.clone();
        let (grace, every) = (args.orphans.orphan_grace, args.orphans.orphan_interval);
        tasks.spawn(teledrop_retention::run_schedule(
            sweeper,
            policies,
            grace,
            every,
            stop.cancelled_owned(),
        ));
    }
    {
        let public = (listener, teledrop_links::router(links.clone()));
        let admin = (admin_listener, ops);
        let (stop, limits) = (shutdown.clone(), common.http.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::http::serve_with_admin("links", Some(public), admin, &limits, stop).await {
                tracing::error!(error = %report(&e), "link server failed");
            }
        });
    }
    {
        let stop = shutdown.clone();
        tasks.spawn(links.run_flusher(stop.cancelled_owned()));
    }
    tasks.spawn(recovery.run(pipeline.clone(), limits.worker_concurrency, shutdown.clone()));
    tasks.spawn(teledrop_worker::run_poller(
        telegram,
        pipeline.clone(),
        bus.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(teledrop_worker::serve(
        bus,
        pipeline,
        limits.worker_concurrency,
        shutdown.clone(),
        limits.drain_timeout,
    ));
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res
            && e.is_panic()
        {
            shutdown.cancel();
            anyhow::bail!("a task panicked: {e}");
        }
    }
    info!("standalone stopped");
    Ok(())
}
