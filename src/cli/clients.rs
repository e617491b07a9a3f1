//! `latchkey client …`: introspection clients.

use anyhow::{anyhow, bail};

use super::table::{format_utc, print_table};
use super::ClientCommand;
use crate::auth::admin::{Admin, AdminError};
use crate::auth::input::ClientId;

pub(super) fn client(cmd: ClientCommand, admin: &Admin) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Add { id } => {
            let client_id =
                ClientId::parse(&id).map_err(|e| anyhow!("invalid client id {id:?}: {e}"))?;
            let secret = admin.add_client(&client_id)?;
            // The secret alone on stdout, so `SECRET=$(latchkey client add x)` works.
            eprintln!("Created client {id:?}. Its secret follows; it is shown only this once:");
            println!("{}", secret.expose());
        }
        ClientCommand::List => {
            let rows: Vec<Vec<String>> = admin
                .clients()?
                .into_iter()
                .map(|c| vec![c.id, format_utc(c.created_at)])
                .collect();
            print_table(&["ID", "CREATED"], &rows)?;
        }
        ClientCommand::Remove { id, force } => {
            let none_left = match admin.remove_client(&id, force) {
                Err(e @ AdminError::LastClient(_)) => {
                    bail!("{e}; add --force to remove it anyway")
                }
                other => other?,
            };
            println!("Removed client {id:?}.");
            if none_left {
                eprintln!(
                    "warning: no introspection client is left: /introspect is now open to anyone"
                );
            }
        }
    }
    Ok(())
}
