use clap::Parser;
use teledrop::config::{Cli, Command, HttpArgs, TlsArgs};

// Every request and every chunk allocates on whichever runtime thread it
// runs: glibc's arenas serialise those threads on a lock (a tenth of the
// link server's time at 32 connections, by `perf`); mimalloc's per-thread
// heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Before any TLS client exists: one provider for the whole process.
    teledrop_core::tls::install_crypto_provider();
    let cli = Cli::parse();
    let ca = cli.command.tls().map_or(Ok(None), TlsArgs::resolve);
    let telemetry = teledrop::telemetry::init(
        cli.log.log_format,
        role(&cli.command),
        ca.as_ref().ok().and_then(Option::as_ref),
    );
    let shutdown = teledrop::shutdown::on_signal();
    let result = match ca {
        Err(e) => Err(e.into()),
        Ok(ca) => {
            let common = teledrop::config::Common {
                ca,
                http: cli.command.http().map(HttpArgs::limits).unwrap_or_default(),
            };
            run(cli.command, &common, shutdown).await
        }
    };
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain, each cause once: "opening the catalog: …: …".
            let report = teledrop_core::Report(e.as_ref());
            tracing::error!(error = %report, "teledrop failed");
            eprintln!("teledrop: {report}");
            std::process::ExitCode::FAILURE
        }
    };
    // Failed or not, what the run traced is sent before the process ends.
    telemetry.shutdown().await;
    code
}

async fn run(
    command: Command,
    common: &teledrop::config::Common,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    match command {
        Command::Standalone(args) => teledrop::standalone::run(args, common, shutdown).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Ingress(args) => teledrop::roles::ingress(args, common, shutdown).await,
        Command::Worker(args) => teledrop::roles::worker(args, common, shutdown).await,
        Command::Links(args) => teledrop::roles::links(args, common, shutdown).await,
        Command::Webhook(args) => teledrop::roles::webhook(args, common).await,
        Command::Controller(args) => teledrop::roles::controller(args, common, shutdown).await,
        Command::Crd => {
            print!("{}", teledrop_retention::crd_yaml());
            Ok(())
        }
    }
}

/// The role in service names (`teledrop-worker`).
fn role(command: &Command) -> &'static str {
    match command {
        Command::Standalone(_) => "standalone",
        Command::Migrate(_) => "migrate",
        Command::Ingress(_) => "ingress",
        Command::Worker(_) => "worker",
        Command::Links(_) => "links",
        Command::Webhook(_) => "webhook",
        Command::Controller(_) => "controller",
        Command::Crd => "crd",
    }
}

async fn migrate(args: teledrop::config::MigrateArgs) -> anyhow::Result<()> {
    let args = args.database;
    let url = args.resolve(None)?;
    let catalog = teledrop_catalog::connect_with(&url, args.pool(teledrop::config::DbRole::Migrate)?).await?;
    catalog.migrate().await?;
    tracing::info!(backend = catalog.backend(), "migrations applied");
    Ok(())
}
