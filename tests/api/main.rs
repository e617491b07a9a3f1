//! Integration tests: the real server on port 0, spoken to over HTTP, and
//! the real binary run as a user would. One binary, so it links once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod cli;
mod errors;
mod introspect;
mod login;
mod logout;
mod sessions;
mod verify;
