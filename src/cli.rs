//! The command line: `serve` and the admin commands over the same database.
//!
//! Admin commands are synchronous and talk to SQLite directly; they are safe
//! while the server runs (WAL, busy timeout, immediate transactions).
//! Errors carry context and are printed by `main` on one line.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::auth::password::{PasswordHashing, MAX_PASSWORD_BYTES};
use crate::auth::{self, check_profile_field, check_username, unix_now};
use crate::config::Config;
use crate::store::{backup, clients, sessions, users, Store, StoreError, TransactionBehavior};

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
    Remove { id: String },
}

/// Loads the configuration named on the command line, or `./config.toml` if present.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let (path, required) = match path {
        Some(path) => (path, true),
        None => (Path::new("config.toml"), false),
    };
    Ok(Config::load(path, required)?)
}

/// Runs an admin command (everything but `serve`).
pub fn run_admin(command: Command, config: &Config) -> anyhow::Result<()> {
    let store = open_store(config)?;
    match command {
        Command::Serve => bail!("`serve` is not an admin command"),
        Command::User(cmd) => user(cmd, config, &store),
        Command::Session(cmd) => session(cmd, &store),
        Command::Client(cmd) => client(cmd, &store),
        Command::Backup { file } => {
            let conn = store.connection()?;
            backup::backup_to(&conn, &file)?;
            println!("Backed up the database to {}.", file.display());
            Ok(())
        }
    }
}

/// Opens (creating and migrating as needed) the configured database.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::open(&config.database.path, 1)?)
}

/// On a database without users, creates `admin` and prints its password once.
pub fn create_initial_admin(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config)?;
    let passwords = PasswordHashing::new(&config.password)?;
    let mut conn = store.connection()?;
    if let Some(password) = auth::create_initial_admin(&mut conn, &passwords)? {
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

fn user(cmd: UserCommand, config: &Config, store: &Store) -> anyhow::Result<()> {
    let mut conn = store.connection()?;
    match cmd {
        UserCommand::Add {
            name,
            email,
            display_name,
            password,
        } => {
            check_username(&name).map_err(|e| anyhow!("invalid username {name:?}: {e}"))?;
            for (flag, value) in [("--email", &email), ("--display-name", &display_name)] {
                if let Some(value) = value {
                    check_profile_field(value).map_err(|e| anyhow!("{flag} {e}"))?;
                }
            }
            if users::find_by_name(&conn, &name)?.is_some() {
                bail!("user {name:?} already exists");
            }
            let password = read_password(&password, &name)?;
            let hash = PasswordHashing::new(&config.password)?.hash(&password)?;
            let id = users::insert(
                &conn,
                &users::NewUser {
                    username: &name,
                    password_hash: &hash,
                    email: email.as_deref(),
                    display_name: display_name.as_deref(),
                    created_at: unix_now(),
                },
            )
            .map_err(|e| match e {
                StoreError::Conflict => anyhow!("user {name:?} already exists"),
                other => other.into(),
            })?;
            println!("Created user {name:?} (id {id}).");
        }
        UserCommand::Passwd { name, password } => {
            let user = find_user(&conn, &name)?;
            let password = read_password(&password, &user.username)?;
            let hash = PasswordHashing::new(&config.password)?.hash(&password)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            users::set_password_hash(&tx, user.id, &hash)?;
            // A new password is usually a reaction to a leak: end every session.
            let ended = sessions::delete_for_user(&tx, user.id)?;
            tx.commit()?;
            println!(
                "Changed the password of {:?}; ended {ended} session(s).",
                user.username
            );
        }
        UserCommand::List => {
            let rows: Vec<Vec<String>> = users::list(&conn)?
                .into_iter()
                .map(|u| {
                    vec![
                        u.id.to_string(),
                        u.username,
                        u.email.unwrap_or_default(),
                        u.display_name.unwrap_or_default(),
                        if u.disabled { "disabled" } else { "active" }.to_owned(),
                        format_utc(u.created_at),
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
                ],
                &rows,
            );
        }
        UserCommand::Disable { name } => {
            let user = find_user(&conn, &name)?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            users::set_disabled(&tx, user.id, true)?;
            // Disabling is meant to lock someone out now, not until re-enabled.
            let ended = sessions::delete_for_user(&tx, user.id)?;
            tx.commit()?;
            println!("Disabled {:?}; ended {ended} session(s).", user.username);
        }
        UserCommand::Enable { name } => {
            let user = find_user(&conn, &name)?;
            users::set_disabled(&conn, user.id, false)?;
            println!("Enabled {:?}.", user.username);
        }
        UserCommand::Delete { name } => {
            let user = find_user(&conn, &name)?;
            users::delete(&conn, user.id)?;
            println!("Deleted {:?} and their sessions.", user.username);
        }
    }
    Ok(())
}

fn session(cmd: SessionCommand, store: &Store) -> anyhow::Result<()> {
    let conn = store.connection()?;
    match cmd {
        SessionCommand::List { user } => {
            let user_id = match user {
                Some(name) => Some(find_user(&conn, &name)?.id),
                None => None,
            };
            let rows: Vec<Vec<String>> = sessions::list_valid(&conn, user_id, unix_now())?
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
            let user = find_user(&conn, &user)?;
            let ended = sessions::delete_for_user(&conn, user.id)?;
            println!("Ended {ended} session(s) of {:?}.", user.username);
        }
        SessionCommand::Purge => {
            let purged = sessions::purge_expired(&conn, unix_now())?;
            println!("Deleted {purged} expired session(s).");
        }
    }
    Ok(())
}

fn client(cmd: ClientCommand, store: &Store) -> anyhow::Result<()> {
    let conn = store.connection()?;
    match cmd {
        ClientCommand::Add { id } => {
            check_client_id(&id)?;
            let client = auth::add_client(&conn, &id).map_err(|e| match e {
                auth::AuthError::Store(StoreError::Conflict) => {
                    anyhow!("client {id:?} already exists")
                }
                other => other.into(),
            })?;
            // The secret alone on stdout, so `SECRET=$(latchkey client add x)` works.
            eprintln!(
                "Created client {:?}. Its secret follows; it is shown only this once:",
                client.id
            );
            println!("{}", client.secret.expose());
        }
        ClientCommand::List => {
            let rows: Vec<Vec<String>> = clients::list(&conn)?
                .into_iter()
                .map(|c| vec![c.id, format_utc(c.created_at)])
                .collect();
            print_table(&["ID", "CREATED"], &rows);
        }
        ClientCommand::Remove { id } => {
            if !clients::delete(&conn, &id)? {
                bail!("no client {id:?}");
            }
            println!("Removed client {id:?}.");
        }
    }
    Ok(())
}

fn find_user(conn: &rusqlite::Connection, name: &str) -> anyhow::Result<users::User> {
    users::find_by_name(conn, name)?.ok_or_else(|| anyhow!("no user {name:?}"))
}

/// Client ids go into HTTP Basic credentials: keep them unambiguous there.
fn check_client_id(id: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        bail!("invalid client id {id:?}: use 1 to 64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// The new password, from stdin (`--password-stdin`) or typed twice on the terminal.
fn read_password(source: &PasswordSource, username: &str) -> anyhow::Result<String> {
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
    if password.is_empty() {
        bail!("the password is empty");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("the password is longer than {MAX_PASSWORD_BYTES} bytes");
    }
    Ok(password)
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

    #[test]
    fn client_ids_are_plain_tokens() {
        assert!(check_client_id("nginx-proxy_1.a").is_ok());
        for bad in ["", "a:b", "a b", &"x".repeat(65)] {
            assert!(check_client_id(bad).is_err(), "{bad:?}");
        }
    }
}
