//! Integration tests: the real server on port 0, spoken to over HTTP, and
//! the real binary run as a user would, and real nginx, Caddy and Chromium
//! in front of it. One binary, so it links once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod access;
mod audit;
mod browser;
mod cli;
mod crash;
mod errors;
mod files;
mod fuzz;
mod introspect;
mod login;
mod logout;
mod logs;
mod metrics;
mod packaging;
mod postgres;
mod postgres_harness;
mod proxy;
mod races;
mod rules;
mod second_factor;
mod second_factor_pages;
mod secrets;
mod sessions;
#[cfg(target_os = "linux")] // Signals are sent with rustix.
mod shutdown;
mod verify;
