//! The command line: `serve` and the admin commands over the same database.
//!
//! Each admin command parses its arguments into validated input, calls one
//! [`Admin`] use case and prints the answer; the rules live in `auth`. The
//! commands are safe while the server runs (WAL, busy timeout, immediate
//! transactions). Errors carry context and are printed by `main` on one line.
//!
//! Here: the clap types and the dispatch. One file per command family:
//! `users` (user, session), `clients`, `groups`, `access`, `config`,
//! `audit`; `table` prints.

mod access;
mod audit;
mod clients;
mod config;
mod groups;
mod table;
mod users;

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use crate::auth::admin::{Admin, AdminError};
use crate::auth::input::Username;
use crate::config::Config;
use crate::store::Store;

pub use table::{format_utc, OutputClosed};

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
    /// Check the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the audit trail (security events), oldest first
    Audit {
        /// Only the events about this user (also after the account is deleted)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Only the events of this last while, e.g. 1h, 7d
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// One JSON object per line, for jq and log shippers
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent copy of the database to FILE, even while serving
    Backup {
        /// Where to write the copy (replaced atomically if it exists)
        file: PathBuf,
    },
    /// Move the database to PostgreSQL
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy everything from the SQLite file (database.path) into an empty
    /// PostgreSQL database; stop the server first
    Copy {
        /// The target, postgres://user:password@host:port/database
        #[arg(long, value_name = "URL")]
        to: String,
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
    /// Manage a user's second factor
    #[command(subcommand)]
    Totp(TotpCommand),
}

#[derive(Debug, Subcommand)]
pub enum TotpCommand {
    /// Remove a user's lost second factor and recovery codes, and end their sessions
    Reset { name: String },
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

/// `latchkey config …`: questions about the configuration itself.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config (file and environment), print the effective
    /// settings and warn about likely mistakes; the database is only read
    Check,
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
        /// Judge it for this user, with their groups from the database
        /// [default: without a session]
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// With --user: judge a session whose login proved a second factor
        /// (TOTP), as two_factor rules need [default: password only]
        #[arg(long)]
        otp: bool,
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
        Command::Access(cmd) => access::access(cmd, config),
        // Reads the database only if it exists, never creates it.
        Command::Config(cmd) => config::config(cmd, config),
        Command::User(cmd) => users::user(cmd, &open_admin(config)?),
        Command::Session(cmd) => users::session(cmd, &open_admin(config)?),
        Command::Client(cmd) => clients::client(cmd, &open_admin(config)?),
        Command::Group(cmd) => groups::group(cmd, &open_admin(config)?),
        Command::Audit { user, since, json } => audit::audit(
            &open_admin(config)?,
            user.as_deref(),
            since.as_deref(),
            json,
        ),
        Command::Backup { file } => {
            open_admin(config)?.backup(&file)?;
            println!("Backed up the database to {}.", file.display());
            Ok(())
        }
        Command::Db(DbCommand::Copy { to }) => copy_to(config, &to),
    }
}

/// `db copy --to URL`: the SQLite file into an empty PostgreSQL database.
fn copy_to(config: &Config, url: &str) -> anyhow::Result<()> {
    use crate::store::copy::copy;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("--to must be a postgres:// URL");
    }
    let path = &config.database.path;
    // Never a new, empty file: copying nothing is surely a mistake.
    if !path.exists() {
        bail!(
            "{} does not exist (database.path): nothing to copy",
            path.display()
        );
    }
    let from = Store::open(path, 1)?;
    let to = Store::open_postgres(url, 1)?;
    let copied = copy(&from.conn()?, &to.conn()?)?;
    let counts: Vec<String> = copied
        .iter()
        .map(|(table, rows)| format!("{table} {rows}"))
        .collect();
    println!(
        "Copied {} to {}: {}.",
        path.display(),
        crate::config::redacted_url(url),
        counts.join(", ")
    );
    Ok(())
}

/// The admin use cases over the configured database (created and migrated
/// as needed). One connection: the CLI does one thing at a time.
fn open_admin(config: &Config) -> anyhow::Result<Admin> {
    let database = crate::config::DatabaseConfig {
        pool_size: 1,
        ..config.database.clone()
    };
    let store = Store::open_config(&database)?;
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

/// The name of a user to look up: one that no user can have is simply not found.
fn existing_username(name: &str) -> anyhow::Result<Username> {
    Username::parse(name).map_err(|_| AdminError::NoSuchUser(name.to_owned()).into())
}
