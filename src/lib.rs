//! latchkey: a single-binary authentication server on one SQLite file.
//!
//! The crate is layered; each layer depends only on those above it:
//!
//! - [`config`]: the SPEC's configuration keys, defaults and layering.
//! - [`ops`]: operations: the log's level and line format, request ids.
//! - [`store`]: SQLite, synchronous; the only module that knows SQL.
//! - [`auth`]: the rules (login, sessions, sliding expiry, limits, hashing).
//! - [`access`]: the access rules, compiled from `config`; no HTTP, no store.
//! - [`http`]: actix-web handlers over `auth`, with the SPEC's shapes.
//! - [`app`]: wires them into a running server; [`cli`]: the command line.
#![forbid(unsafe_code)]

pub mod access;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod ops;
pub mod store;

pub use app::{build, App, StartError};
pub use config::Config;
