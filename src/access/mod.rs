//! Access rules: which proxied request needs what (SPEC "Access rules").
//!
//! `[access]` is parsed and checked in `config`; here it is compiled once
//! ([`Rules::compile`]) and asked per request ([`Rules::decide`]), with the
//! one path normaliser ([`path::normalise`]) in front of every rule. No HTTP
//! types: `http/verify.rs` reads the forwarded headers into a
//! [`ProxiedRequest`] and turns the [`Decision`] into an answer.
//! [`SharedRules`] holds the list in force and swaps it on reload.
//!
//! - `rules.rs`: the compiled list and the criteria (paths, methods, networks, subjects).
//! - `domain.rs`: host patterns. `path.rs`: the normaliser.
//! - `decide.rs`: the walk down the list, and its explanation.
//! - `reload.rs`: the list in force, replaced atomically.
//! - `check.rs`: `latchkey access check`'s URL and report.

pub mod check;
mod decide;
mod domain;
pub mod path;
mod reload;
mod rules;

pub use decide::{Decision, Explanation, Outcome, ProxiedRequest, Skipped, Subject, Why};
pub use path::PathRefused;
pub use reload::SharedRules;
pub use rules::{Criterion, Rules};

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

/// The tests' one random generator (splitmix64), shared with `tests/api`.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/api/helpers/rng.rs"]
mod test_rng;
