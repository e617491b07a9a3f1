//! The rules in force, swapped whole on reload (`SIGHUP`).
//!
//! `/verify` reads the current list on every request, so reading must cost
//! next to nothing and must never see half a list: an `ArcSwap` hands out
//! the current `Arc<Rules>` without a lock or a shared counter bump, and a
//! reload replaces the pointer in one store. A request already judging keeps
//! the list it started with.

use std::path::Path;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::Rules;
use crate::config::{AccessConfig, ConfigError};

/// The current rule list, shared by every worker and the reload task.
#[derive(Debug, Clone)]
pub struct SharedRules(Arc<ArcSwap<Rules>>);

impl SharedRules {
    /// Puts `rules` in force, to be shared by cloning the handle.
    pub fn new(rules: Rules) -> SharedRules {
        SharedRules(Arc::new(ArcSwap::from_pointee(rules)))
    }

    /// The list in force now; hold it for one request, not longer.
    pub fn current(&self) -> Guard<Arc<Rules>> {
        self.0.load()
    }

    /// Puts `rules` in force for every request that starts from now on.
    pub fn replace(&self, rules: Rules) {
        self.0.store(Arc::new(rules));
    }

    /// Re-reads `[access]` (and only it) from `path` and the environment,
    /// and puts it in force; returns the number of rules. On error the old
    /// list stays in force.
    ///
    /// `required`: whether a missing file is an error, as at start.
    /// Blocking (reads a file): call it off the async workers.
    pub fn reload(&self, path: &Path, required: bool) -> Result<usize, ConfigError> {
        let config = AccessConfig::load(path, required)?;
        let rules = Rules::compile(&config);
        let count = rules.len();
        self.replace(rules);
        Ok(count)
    }

    /// [`SharedRules::reload`], with the outcome logged: what a `SIGHUP` does.
    pub fn reload_and_log(&self, path: &Path, required: bool) {
        match self.reload(path, required) {
            Ok(count) => tracing::info!("access rules reloaded ({count} rules)"),
            Err(e) => tracing::error!(
                "access rules not reloaded, the {} rules loaded before stay in force: {e}",
                self.current().len()
            ),
        }
    }
}
