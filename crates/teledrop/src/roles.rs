//! The distributed roles: `ingress`, `worker`, `links`, and `webhook`.

use crate::config::{
    AdminArgs, Common, ConfigError, ControllerArgs, DbRole, IngressArgs, LinksArgs, NatsArgs, WebhookAction,
    WebhookArgs, WorkerArgs,
};
use crate::http::HttpLimits;
use anyhow::Context;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use teledrop_bus::{Bus, BusError, JetStreamBus};
use teledrop_core::report;
use teledrop_core::tls::CaBundle;
use teledrop_links::{LinksConfig, LinksState};
use teledrop_telegram::Telegram;
use teledrop_worker::Pipeline;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Binds `addr`; a failure (port in use, no such address) names `var`.
pub(crate) async fn bind(var: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener, ConfigError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ConfigError::invalid(var, format!("cannot listen on {addr}: {e}")))
}

/// Both listeners of a role with public routes, bound before anything
/// connects so a taken port stops the start at once.
async fn bind_both(
    public: SocketAddr,
    admin: &AdminArgs,
) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener), ConfigError> {
    admin.check_apart_from(public)?;
    Ok((
        bind("TELEDROP_LISTEN", public).await?,
        bind("TELEDROP_ADMIN_LISTEN", admin.admin_listen).await?,
    ))
}

async fn serve(
    name: &'static str,
    public: Option<(tokio::net::TcpListener, Router)>,
    admin: (tokio::net::TcpListener, Router),
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    crate::http::serve_with_admin(name, public, admin, &limits, shutdown).await?;
    Ok(())
}

/// Connects to JetStream; a failure names the settings that can fix it.
async fn connect_bus(nats: &NatsArgs, ca: Option<&CaBundle>) -> anyhow::Result<JetStreamBus> {
    let config = nats.jetstream(ca)?;
    JetStreamBus::connect(config).await.map_err(|e| {
        let vars = match &e {
            BusError::Credentials(_) => "NATS_CREDS_FILE, NATS_USER/NATS_PASSWORD_FILE or NATS_TOKEN_FILE",
            BusError::Tls(_) => "NATS_URL, TELEDROP_CA_FILE, NATS_TLS_CERT_FILE/NATS_TLS_KEY_FILE",
            _ => "NATS_URL",
        };
        anyhow::Error::new(e).context(format!("connecting to NATS JetStream (check {vars})"))
    })
}

pub async fn ingress(args: IngressArgs, common: &Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ca = common.ca.as_ref();
    let secret = args.secret.resolve()?;
    let mut config = teledrop_ingress::IngressConfig::new(secret);
    config.publish_timeout = args.publish_timeout;
    let (listener, admin_listener) = bind_both(args.listen, &args.admin).await?;
    let bus: Arc<dyn teledrop_ingress::Sink> = Arc::new(connect_bus(&args.nats, ca).await?);
    let metrics = teledrop_ingress::Metrics::default();
    let app = teledrop_ingress::router(bus.clone(), config, metrics.clone());
    let admin = teledrop_ingress::admin_router(bus, metrics);
    serve(
        "ingress",
        Some((listener, common.http.bounded(app))),
        (admin_listener, admin),
        common.http.clone(),
        shutdown,
    )
    .await
}

pub async fn links(args: LinksArgs, common: &Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ca = common.ca.as_ref();
    let database_url = args.database.resolve(None)?;
    let storage = args.storage.resolve(ca)?;
    let (listener, admin_listener) = bind_both(args.listen, &args.admin).await?;
    let catalog = teledrop_catalog::connect_with(&database_url, args.database.pool(DbRole::Links)?)
        .await
        .context("opening the catalog (DATABASE_URL)")?;
    let state = LinksState::new(catalog, storage, LinksConfig::default());
    let flusher = tokio::spawn(state.clone().run_flusher(shutdown.clone().cancelled_owned()));
    // Downloads stream for as long as they take: no request timeout.
    serve(
        "links",
        Some((listener, teledrop_links::router(state.clone()))),
        (admin_listener, teledrop_links::admin_router(state)),
        common.http.clone(),
        shutdown,
    )
    .await?;
    flusher.await.context("download-count flusher")?;
    Ok(())
}

pub async fn worker(args: WorkerArgs, common: &Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ca = common.ca.as_ref();
    let ingest = args.ingest.resolve(ca)?;
    let database_url = args.database.resolve(None)?;
    let (storage, limits) = (ingest.storage, ingest.limits);
    let admin_listener = bind("TELEDROP_ADMIN_LISTEN", args.admin.admin_listen).await?;
    let catalog = teledrop_catalog::connect_with(&database_url, args.database.pool(DbRole::Worker)?)
        .await
        .context("opening the catalog (DATABASE_URL)")?;
    let telegram = Telegram::new(ingest.telegram).context("setting up the Bot API client")?;
    let bus = Arc::new(connect_bus(&args.nats, ca).await?);
    let pipeline = Arc::new(Pipeline::new(
        catalog.clone(),
        storage.clone(),
        telegram,
        ingest.pipeline,
    ));
    let readiness = {
        let bus = bus.clone();
        teledrop_metrics::Readiness::new()
            .check("catalog", move || {
                let catalog = catalog.clone();
                async move { catalog.ping().await }
            })
            .check("storage", move || {
                let storage = storage.clone();
                async move { storage.ping().await }
            })
            .check("bus", move || {
                let bus = bus.clone();
                async move { bus.ping().await }
            })
    };
    let app = teledrop_metrics::ops_router(teledrop_metrics::registry(&[&**pipeline.metrics()]), readiness);
    let http = tokio::spawn(serve(
        "worker",
        None,
        (admin_listener, app),
        common.http.clone(),
        shutdown.clone(),
    ));
    info!(concurrency = limits.worker_concurrency, "worker pulling updates");
    teledrop_worker::serve(
        bus.clone() as Arc<dyn Bus>,
        pipeline,
        limits.worker_concurrency,
        shutdown.clone(),
        limits.drain_timeout,
    )
    .await;
    bus.close();
    shutdown.cancel();
    http.await.context("health server")??;
    Ok(())
}

pub async fn webhook(args: WebhookArgs, common: &Common) -> anyhow::Result<()> {
    let telegram =
        Telegram::new(args.telegram.resolve(common.ca.as_ref())?).context("setting up the Bot API client")?;
    match args.action {
        WebhookAction::Set {
            url,
            secret,
            max_connections,
        } => {
            let full = url
                .join(teledrop_ingress::WEBHOOK_PATH.trim_start_matches('/'))
                .map_err(|e| ConfigError::invalid("TELEDROP_WEBHOOK_URL", e))?;
            let secret = secret.resolve()?;
            telegram
                .set_webhook(full.clone(), secret.expose(), max_connections)
                .await
                .context("setWebhook")?;
            println!("webhook set to {full}");
        }
        WebhookAction::Delete => {
            telegram.delete_webhook().await.context("deleteWebhook")?;
            println!("webhook deleted");
        }
        WebhookAction::Info => {
            let info = telegram.webhook_info().await.context("getWebhookInfo")?;
            println!("url: {}", info.url.as_deref().unwrap_or("(none: long polling)"));
            println!("pending updates: {}", info.pending_update_count);
            if let Some(m) = info.max_connections {
                println!("max connections: {m}");
            }
            if let Some(e) = info.last_error {
                println!("last error: {e}");
            }
        }
    }
    Ok(())
}

pub async fn controller(args: ControllerArgs, common: &Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    use teledrop_controller::{
        Context as ControllerContext, LeaseSettings, Metrics, Stop, lead, leadership, run_controller,
        run_orphan_collection,
    };

    let database_url = args.database.resolve(None)?;
    let storage = args.storage.resolve(common.ca.as_ref())?;
    let admin_listener = bind("TELEDROP_ADMIN_LISTEN", args.admin.admin_listen).await?;
    let catalog = teledrop_catalog::connect_with(&database_url, args.database.pool(DbRole::Controller)?)
        .await
        .context("opening the catalog (DATABASE_URL)")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster service account or KUBECONFIG)")?;
    let identity = args
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "teledrop-controller".into());
    let lease_namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let metrics = Arc::new(Metrics::default());
    let sweeper = teledrop_retention::PolicyEnforcer::new(catalog.clone(), storage.clone());
    let ctx = Arc::new(ControllerContext::new(
        client.clone(),
        catalog.clone(),
        sweeper.clone(),
        kube::runtime::events::Reporter {
            controller: "teledrop-controller".into(),
            instance: Some(identity.clone()),
        },
        metrics.clone(),
    ));

    let app = teledrop_controller::admin_router(catalog, storage, &metrics);
    let http = tokio::spawn(serve(
        "controller",
        None,
        (admin_listener, app),
        common.http.clone(),
        shutdown.clone(),
    ));

    let lease = LeaseSettings {
        name: args.lease_name.clone(),
        namespace: lease_namespace.clone(),
        identity: identity.clone(),
        duration: 15,
        grace: 5,
    };
    let (leader, lease_task) = leadership(client, &lease)
        .await
        .context("setting up leader election (TELEDROP_LEASE_NAME, TELEDROP_LEASE_NAMESPACE)")?;
    info!(lease = %args.lease_name, namespace = %lease_namespace, identity = %identity, "waiting for the lease");

    let namespace = args.watch_namespace.clone().filter(|n| !n.is_empty());
    let (grace, every) = (args.orphans.orphan_grace, args.orphans.orphan_interval);
    lead(leader, shutdown.clone().cancelled_owned(), move |stop: Stop| {
        let (ctx, sweeper, metrics, namespace) = (ctx.clone(), sweeper.clone(), metrics.clone(), namespace.clone());
        async move {
            metrics.set_leader(true);
            tokio::join!(
                run_controller(ctx, namespace, stop.clone(), std::time::Duration::from_secs(20)),
                run_orphan_collection(sweeper, metrics.clone(), grace, every, stop.cancelled()),
            );
            metrics.set_leader(false);
        }
    })
    .await;
    // Dropping the receiver inside `lead` released the lease.
    if let Ok(Err(e)) = lease_task.await {
        tracing::warn!(error = %report(&e), "releasing the lease failed; another replica takes over when it expires");
    }
    http.await.context("HTTP server task")??;
    Ok(())
}
