//! The test harness, one module per concern. Test files import helpers from
//! here (`use crate::helpers::*`), never from each other; `tests/load.rs`
//! includes this same module.
//!
//! - [`app`]: latchkey in this process on port 0, and the HTTP calls to any latchkey
//! - [`process`]: the real binary: commands run to completion, and `latchkey serve`
//! - [`proxies`]: real nginx and Caddy in front of latchkey, and the app behind them
//! - [`db`]: database fixtures, written through the store's own functions
//! - [`postgres`]: a throwaway PostgreSQL cluster, driven by its own programs
//! - [`html`]: fields and texts of latchkey's HTML pages
//! - [`rng`]: the one random generator
//! - [`totp`]: one-time codes as an authenticator app computes them

pub mod app;
pub mod db;
pub mod html;
pub mod postgres;
pub mod process;
pub mod proxies;
pub mod rng;
pub mod totp;

pub use app::*;
pub use db::*;
pub use html::*;
pub use postgres::*;
pub use process::*;
pub use proxies::*;
pub use rng::*;
pub use totp::*;
