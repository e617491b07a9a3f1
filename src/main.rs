//! The `latchkey` binary: parse the command line, load the config, dispatch.
//! Exit status: 0 success, 1 error (one line on stderr), 2 bad usage (clap).

use std::net::TcpListener;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use latchkey::cli::{self, Cli, Command};
use latchkey::Config;

fn main() -> ExitCode {
    // Usage errors exit here with status 2; --help and --version with 0.
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli::load_config(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        admin => cli::run_admin(admin, &config),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    cli::create_initial_admin(&config)?;
    let listener = TcpListener::bind(config.server.listen)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    actix_web::rt::System::new().block_on(async move {
        let app = latchkey::build(&config, listener)?;
        tracing::info!("latchkey listening on http://{}", app.local_addr());
        app.run().await.context("server failed")
    })
}

/// Logs to stderr; `RUST_LOG` may name a level (error, warn, info, debug, trace).
fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .init();
}
