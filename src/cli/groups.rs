//! `latchkey group …`: groups and their members.

use anyhow::anyhow;

use super::table::{format_utc, print_table};
use super::{existing_username, GroupCommand};
use crate::auth::admin::{Admin, AdminError};
use crate::auth::input::GroupName;

pub(super) fn group(cmd: GroupCommand, admin: &Admin) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::Add { name } => {
            let group =
                GroupName::parse(&name).map_err(|e| anyhow!("invalid group name {name:?}: {e}"))?;
            admin.add_group(&group)?;
            println!("Created group {name:?}.");
        }
        GroupCommand::Remove { name } => {
            let removed = admin.remove_group(&existing_group(&name)?)?;
            println!(
                "Removed group {:?}; it had {} member(s).",
                removed.name, removed.members
            );
        }
        GroupCommand::List => {
            let rows: Vec<Vec<String>> = admin
                .groups()?
                .into_iter()
                .map(|g| vec![g.name, g.members.to_string(), format_utc(g.created_at)])
                .collect();
            print_table(&["NAME", "MEMBERS", "CREATED"], &rows)?;
        }
        GroupCommand::Members { name } => {
            let rows: Vec<Vec<String>> = admin
                .group_members(&existing_group(&name)?)?
                .into_iter()
                .map(|m| vec![m.user_id.to_string(), m.username])
                .collect();
            print_table(&["ID", "USERNAME"], &rows)?;
        }
        GroupCommand::AddMember { group, user } => {
            let added = admin.add_member(&existing_group(&group)?, &existing_username(&user)?)?;
            println!("Added {:?} to group {:?}.", added.username, added.group);
        }
        GroupCommand::RemoveMember { group, user } => {
            let removed =
                admin.remove_member(&existing_group(&group)?, &existing_username(&user)?)?;
            println!(
                "Removed {:?} from group {:?}.",
                removed.username, removed.group
            );
        }
    }
    Ok(())
}

/// The name of a group to look up: one that no group can have is simply not found.
fn existing_group(name: &str) -> anyhow::Result<GroupName> {
    GroupName::parse(name).map_err(|_| AdminError::NoSuchGroup(name.to_owned()).into())
}
