//! The `latchkey` binary: parse the command line, load the config, dispatch.
//! Exit status: 0 success, 1 error (one line on stderr), 2 bad usage (clap).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use latchkey::cli::{self, Cli, Command};
use latchkey::Config;

fn main() -> ExitCode {
    // Usage errors exit here with status 2; --help and --version with 0.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of a listing went away (`latchkey user list | head`):
        // what it wanted it has; nothing to report.
        Err(e) if e.is::<cli::OutputClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli::load_config(cli.config.as_deref())?;
    // Only now: `[log]` says how. Nothing is logged before the config loads
    // (a config error is the one `error:` line main prints).
    latchkey::ops::logging::init(&config.log, std::env::var("RUST_LOG").ok().as_deref());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config, cli.config),
        admin => cli::run_admin(admin, &config),
    }
}

fn serve(config: Config, config_flag: Option<PathBuf>) -> anyhow::Result<()> {
    // A reload reads the file the start read: required when named, or
    // when it was there (deleting it later is then an error, not a
    // silent fall back to no rules).
    let (config_path, required) = cli::config_source(config_flag.as_deref());
    let required = required || config_path.exists();
    cli::create_initial_admin(&config)?;
    let listener = TcpListener::bind(config.server.listen)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    actix_web::rt::System::new().block_on(async move {
        #[allow(unused_mut)] // Only unix reloads and stops on signals.
        let mut app = latchkey::build(&config, listener)?;
        #[cfg(unix)]
        {
            app.reload_access_rules_on_sighup(config_path, required)
                .context("cannot listen for SIGHUP")?;
            app.stop_on_signals()
                .context("cannot listen for SIGTERM and SIGINT")?;
        }
        tracing::info!("latchkey listening on http://{}", app.local_addr());
        app.run().await.context("server failed")
    })
}
