//! The command line: `serve` and the admin commands over the same database.
//!
//! Each admin command parses its arguments into validated input, calls one
//! [`Admin`] use case and prints the answer; the rules live in `auth`. The
//! commands are safe while the server runs (WAL, busy timeout, immediate
//! transactions). Errors carry context and are printed by `main` on one line.

use std::io::{BufRead, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::access::{check, ProxiedRequest, Rules};
use crate::auth::admin::{Admin, AdminError, NewUser};
use crate::auth::input::{
    ClientId, GroupName, Password, ProfileField, Username, MAX_PASSWORD_BYTES,
};
use crate::config::Config;
use crate::store::Store;

/// latchkey: users and sessions in one SQLite file, forward auth and token
/// introspection for reverse proxies.
#[derive(Debug, Parser)]
#[command(name = "latchkey", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: ./config.toml, optional]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default)
    Serve,
    /// Manage users
    #[command(subcommand)]
    User(UserCommand),
    /// Manage sessions
    #[command(subcommand)]
    Session(SessionCommand),
    /// Manage introspection clients
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage groups and their members
    #[command(subcommand)]
    Group(GroupCommand),
    /// Ask the access rules
    #[command(subcommand)]
    Access(AccessCommand),
    /// Write a consistent copy of the database to FILE, even while serving
    Backup {
        /// Where to write the copy (replaced atomically if it exists)
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user
    Add {
        name: String,
        #[arg(long, value_name = "E")]
        email: Option<String>,
        #[arg(long, value_name = "N")]
        display_name: Option<String>,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Set a user's password (and end their sessions)
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List users
    List,
    /// Stop a user from logging in (and end their sessions)
    Disable { name: String },
    /// Allow a disabled user to log in again
    Enable { name: String },
    /// Delete a user and their sessions
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct PasswordSource {
    /// Read the password from the first line of standard input instead of prompting
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List valid sessions
    List {
        /// Only this user's sessions
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// End every session of a user
    Revoke {
        #[arg(long, value_name = "NAME")]
        user: String,
    },
    /// Delete expired sessions now
    Purge,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a client and print its secret (shown only once)
    Add { id: String },
    /// List clients
    List,
    /// Remove a client
    Remove {
        id: String,
        /// Remove it even if it is the last one, which opens /introspect to anyone
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group
    Add { name: String },
    /// Delete a group (its members lose it; the users stay)
    Remove { name: String },
    /// List groups with their member counts
    List,
    /// List the users in a group
    Members { name: String },
    /// Put a user in a group
    AddMember { group: String, user: String },
    /// Take a user out of a group
    RemoveMember { group: String, user: String },
}

/// `latchkey access …`: questions to the access rules.
#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Show what /verify decides for URL and which rule decides it
    Check {
        /// The URL as the client asked for it, e.g. https://app.example.com/admin
        url: String,
        /// The request's method
        #[arg(long, value_name = "M", default_value = "GET")]
        method: String,
        /// The client address [default: unknown, matched only by 0.0.0.0/0]
        #[arg(long, value_name = "ADDR")]
        ip: Option<IpAddr>,
    },
}

/// Loads the configuration named on the command line, or `./config.toml` if present.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let (path, required) = config_source(path);
    Ok(Config::load(&path, required)?)
}

/// The config file to read for `--config` (given or not), and whether it
/// must exist: a named file must, the default `./config.toml` need not.
pub fn config_source(path: Option<&Path>) -> (PathBuf, bool) {
    match path {
        Some(path) => (path.to_owned(), true),
        None => (PathBuf::from("config.toml"), false),
    }
}

/// Runs an admin command (everything but `serve`).
pub fn run_admin(command: Command, config: &Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => bail!("`serve` is not an admin command"),
        // The rules alone: no database needed until users are looked up.
        Command::Access(cmd) => access(cmd, config),
        Command::User(cmd) => user(cmd, &open_admin(config)?),
        Command::Session(cmd) => session(cmd, &open_admin(config)?),
        Command::Client(cmd) => client(cmd, &open_admin(config)?),
        Command::Group(cmd) => group(cmd, &open_admin(config)?),
        Command::Backup { file } => {
            open_admin(config)?.backup(&file)?;
            println!("Backed up the database to {}.", file.display());
            Ok(())
        }
    }
}

/// The admin use cases over the configured database (created and migrated
/// as needed). One connection: the CLI does one thing at a time.
fn open_admin(config: &Config) -> anyhow::Result<Admin> {
    let store = Store::open(&config.database.path, 1)?;
    Ok(Admin::new(store, &config.password)?)
}

/// On a database without users, creates `admin` and prints its password once.
pub fn create_initial_admin(config: &Config) -> anyhow::Result<()> {
    if let Some(password) = open_admin(config)?.create_initial_admin()? {
        // Printed, never logged: this is the only copy of the password.
        println!(
            "Created user \"admin\" with password: {}\n\
             It is shown only this once; change it with `latchkey user passwd admin`.",
            password.expose()
        );
        std::io::stdout().flush().ok();
    }
    Ok(())
}

fn user(cmd: UserCommand, admin: &Admin) -> anyhow::Result<()> {
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
                    "GROUPS",
                ],
                &rows,
            );
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
    }
    Ok(())
}

fn session(cmd: SessionCommand, admin: &Admin) -> anyhow::Result<()> {
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
            );
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

fn client(cmd: ClientCommand, admin: &Admin) -> anyhow::Result<()> {
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
            print_table(&["ID", "CREATED"], &rows);
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

fn group(cmd: GroupCommand, admin: &Admin) -> anyhow::Result<()> {
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
            print_table(&["NAME", "MEMBERS", "CREATED"], &rows);
        }
        GroupCommand::Members { name } => {
            let rows: Vec<Vec<String>> = admin
                .group_members(&existing_group(&name)?)?
                .into_iter()
                .map(|m| vec![m.user_id.to_string(), m.username])
                .collect();
            print_table(&["ID", "USERNAME"], &rows);
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

fn access(cmd: AccessCommand, config: &Config) -> anyhow::Result<()> {
    let AccessCommand::Check { url, method, ip } = cmd;
    let (host, path) = check::split_url(&url).map_err(|e| anyhow!(e))?;
    let request = ProxiedRequest {
        host,
        path,
        method: &method,
        ip: ip.unwrap_or(check::UNKNOWN_IP),
    };
    let rules = Rules::compile(&config.access);
    let explanation = rules.explain(&request, None);
    print!(
        "{}",
        check::Report {
            request: &request,
            ip_given: ip.is_some(),
            who: "without a session",
            explanation: &explanation,
        }
    );
    Ok(())
}

/// The name of a user to create.
fn parse_username(name: &str) -> anyhow::Result<Username> {
    Username::parse(name).map_err(|e| anyhow!("invalid username {name:?}: {e}"))
}

/// The name of a user to look up: one that no user can have is simply not found.
fn existing_username(name: &str) -> anyhow::Result<Username> {
    Username::parse(name).map_err(|_| AdminError::NoSuchUser(name.to_owned()).into())
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

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Formats unix seconds as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn format_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_format_as_utc() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(format_utc(1_795_000_000), "2026-11-18 11:06:40Z");
    }
}
