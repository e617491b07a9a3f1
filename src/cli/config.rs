//! `latchkey config check`: the effective settings, and likely mistakes.
//!
//! The config reaching here was loaded and validated by `main` exactly as
//! `serve` loads it, so an invalid one has already exited 1 naming the key.

use std::io::Write;

use crate::config::{check, effective_settings, format_settings, Config};
use crate::store::clients;

use super::ConfigCommand;

pub fn config(cmd: ConfigCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check => {
            // Settings on stdout, warnings on stderr: the list stays clean
            // for a diff, the warnings stay visible.
            print!("{}", format_settings(&effective_settings(config)));
            std::io::stdout().flush().ok();
            // Read-only, and not at all when missing: a check creates nothing.
            let has_client = match clients::any_exist_in(&config.database) {
                Ok(None) => {
                    eprintln!(
                        "note: database {} does not exist yet; introspection clients not checked",
                        config.database.shown()
                    );
                    None
                }
                Ok(found) => found,
                Err(e) => {
                    eprintln!("warning: introspection clients not checked: {e}");
                    None
                }
            };
            for warning in check::warnings(config, has_client) {
                eprintln!("warning: {warning}");
            }
            Ok(())
        }
    }
}
