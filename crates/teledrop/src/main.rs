use clap::Parser;
use teledrop::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    teledrop::telemetry::init(cli.log.log_format);
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
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain: "opening the catalog: …: …".
            tracing::error!(error = format!("{e:#}"), "teledrop failed");
            eprintln!("teledrop: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn migrate(args: teledrop::config::DatabaseArgs) -> anyhow::Result<()> {
    let url = args.resolve(None)?;
    let catalog = teledrop_catalog::connect(&url).await?;
    catalog.migrate().await?;
    tracing::info!(backend = catalog.backend(), "migrations applied");
    Ok(())
}
