use clap::Parser;
use teledrop::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let telemetry = teledrop::telemetry::init(cli.log.log_format, role(&cli.command));
    let shutdown = teledrop::shutdown::on_signal();
    let result = match cli.command {
        Command::Standalone(args) => teledrop::standalone::run(args, shutdown).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Ingress(args) => teledrop::roles::ingress(args, shutdown).await,
        Command::Worker(args) => teledrop::roles::worker(args, shutdown).await,
        Command::Links(args) => teledrop::roles::links(args, shutdown).await,
        Command::Webhook(args) => teledrop::roles::webhook(args).await,
        Command::Controller(args) => teledrop::roles::controller(args, shutdown).await,
        Command::Crd => {
            print!("{}", teledrop_retention::crd_yaml());
            Ok(())
        }
    };
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain: "opening the catalog: …: …".
            tracing::error!(error = format!("{e:#}"), "teledrop failed");
            eprintln!("teledrop: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // Failed or not, what the run traced is sent before the process ends.
    telemetry.shutdown().await;
    code
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

async fn migrate(args: teledrop::config::DatabaseArgs) -> anyhow::Result<()> {
    let url = args.resolve(None)?;
    let catalog = teledrop_catalog::connect(&url).await?;
    catalog.migrate().await?;
    tracing::info!(backend = catalog.backend(), "migrations applied");
    Ok(())
}
