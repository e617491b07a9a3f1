//! `latchkey user …` and `latchkey session …`.

use std::io::{BufRead, Read};

use anyhow::{anyhow, bail, Context};

use super::table::{format_utc, print_table};
use super::{existing_username, PasswordSource, SessionCommand, TotpCommand, UserCommand};
use crate::auth::admin::{Admin, NewUser};
use crate::auth::input::{Password, ProfileField, Username, MAX_PASSWORD_BYTES};

pub(super) fn user(cmd: UserCommand, admin: &Admin) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            email,
            display_name,
            password,
        } => {
            let username = parse_username(&name)?;
            let email = parse_profile_field("--email", email.as_deref())?;
            let display_name = parse_profile_field("--display-name", display_name.as_deref())?;
            // Before the prompt: no typing a password for a name that is taken.
            admin.ensure_name_free(&username)?;
            let password = read_password(&password, &name)?;
            let id = admin.add_user(&NewUser {
                username,
                password,
                email,
                display_name,
            })?;
            println!("Created user {name:?} (id {id}).");
        }
        UserCommand::Passwd { name, password } => {
            let username = existing_username(&name)?;
            admin.ensure_user_exists(&username)?;
            let password = read_password(&password, &name)?;
            let change = admin.set_password(&username, &password)?;
            println!(
                "Changed the password of {:?}; ended {} session(s).",
                change.username, change.sessions_ended
            );
        }
        UserCommand::List => {
            let rows: Vec<Vec<String>> = admin
                .users()?
                .into_iter()
                .map(|u| {
                    vec![
                        u.id.to_string(),
                        u.username,
                        u.email.unwrap_or_default(),
                        u.display_name.unwrap_or_default(),
                        if u.disabled { "disabled" } else { "active" }.to_owned(),
                        format_utc(u.created_at),
                        if u.totp { "yes" } else { "no" }.to_owned(),
                        // As in Remote-Groups: no group name holds a comma.
                        u.groups.join(","),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "USERNAME",
                    "EMAIL",
                    "DISPLAY NAME",
                    "STATUS",
                    "CREATED",
                    "TOTP",
                    "GROUPS",
                ],
                &rows,
            )?;
        }
        UserCommand::Disable { name } => {
            let change = admin.disable_user(&existing_username(&name)?)?;
            println!(
                "Disabled {:?}; ended {} session(s).",
                change.username, change.sessions_ended
            );
        }
        UserCommand::Enable { name } => {
            let change = admin.enable_user(&existing_username(&name)?)?;
            println!("Enabled {:?}.", change.username);
        }
        UserCommand::Delete { name } => {
            let change = admin.delete_user(&existing_username(&name)?)?;
            println!("Deleted {:?} and their sessions.", change.username);
        }
        UserCommand::Totp(TotpCommand::Reset { name }) => {
            let change = admin.reset_second_factor(&existing_username(&name)?)?;
            println!(
                "Removed the second factor of {:?}; ended {} session(s).",
                change.username, change.sessions_ended
            );
        }
    }
    Ok(())
}

pub(super) fn session(cmd: SessionCommand, admin: &Admin) -> anyhow::Result<()> {
    match cmd {
        SessionCommand::List { user } => {
            let user = user.as_deref().map(existing_username).transpose()?;
            let rows: Vec<Vec<String>> = admin
                .sessions(user.as_ref())?
                .into_iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.username,
                        format_utc(s.created_at),
                        format_utc(s.expires_at.min(s.max_expires_at)),
                        s.ip,
                        s.user_agent,
                    ]
                })
                .collect();
            print_table(
                &["ID", "USER", "CREATED", "EXPIRES", "IP", "USER AGENT"],
                &rows,
            )?;
        }
        SessionCommand::Revoke { user } => {
            let change = admin.revoke_sessions(&existing_username(&user)?)?;
            println!(
                "Ended {} session(s) of {:?}.",
                change.sessions_ended, change.username
            );
        }
        SessionCommand::Purge => {
            let purged = admin.purge_sessions()?;
            println!("Deleted {purged} expired session(s).");
        }
    }
    Ok(())
}

/// The name of a user to create.
fn parse_username(name: &str) -> anyhow::Result<Username> {
    Username::parse(name).map_err(|e| anyhow!("invalid username {name:?}: {e}"))
}

fn parse_profile_field(flag: &str, value: Option<&str>) -> anyhow::Result<Option<ProfileField>> {
    value
        .map(|v| ProfileField::parse(v).map_err(|e| anyhow!("{flag} {e}")))
        .transpose()
}

/// The new password, from stdin (`--password-stdin`) or typed twice on the terminal.
fn read_password(source: &PasswordSource, username: &str) -> anyhow::Result<Password> {
    let password = if source.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .take(MAX_PASSWORD_BYTES as u64 + 3)
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned()
    } else {
        let no_terminal =
            |e: std::io::Error| anyhow!("cannot prompt for a password ({e}); use --password-stdin");
        let first = rpassword::prompt_password(format!("Password for {username}: "))
            .map_err(no_terminal)?;
        let second = rpassword::prompt_password("Repeat the password: ").map_err(no_terminal)?;
        if first != second {
            bail!("the passwords do not match");
        }
        first
    };
    Ok(Password::parse_new(password)?)
}
