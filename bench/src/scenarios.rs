//! The scenarios: what each one loads (the Lua mode, its tokens, its
//! database and engine, how many server instances), and seeding their
//! databases. Running one is [`crate::run`]'s.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use latchkey::auth::token::Token;
use latchkey::auth::totp::{Secret, STEP_SECS};
use latchkey::auth::{unix_now, Amr};
use latchkey::config::Policy;

use crate::report::count_label;
use crate::seed::{large_database, seed, totp_user_name, write_lines, SeedSpec};
use crate::servers::{Rules, ServeWith};
use crate::{
    progress, Ctx, ACCESS_RULES, CONNECTIONS, SAMPLE_TOKENS, SESSION_LIFETIME_SECS, SMALL_SESSIONS,
    THROWAWAY_SESSIONS,
};

/// Connections of the login scenario: as many as the pinned server's hashing
/// pool admits without shedding.
const LOGIN_CONNECTIONS: usize = 4;
/// Each half of the TOTP login pool holds this many times the logins that
/// one step (30 s) takes at the expected ceiling, and at least
/// [`MIN_TOTP_HALF`] users: a user logs in again only after the whole pool
/// has, so at least one step later unless logins run this many times faster
/// than one argon2 hash allows. [`MAX_TOTP_HALF`] only bounds the seeding
/// should the argon2 timing be absurd.
const TOTP_HEADROOM: f64 = 3.0;
const MIN_TOTP_HALF: usize = 1_000;
const MAX_TOTP_HALF: usize = 100_000;
/// Server instances of the second PostgreSQL row.
pub const PG_INSTANCES: usize = 2;

/// The scenarios of a run, and what they read.
pub struct Prepared {
    pub scenarios: Vec<Scenario>,
    /// Tokens that no database holds (inactive introspection, the preflight).
    pub unknown: Vec<String>,
    /// The 1k and the large database with their sampled tokens, for the
    /// in-process lookups.
    pub lookups: [(PathBuf, Vec<String>); 2],
}

/// Seeds the databases and writes the token files into the work directory
/// (the large database comes from the cache when it can), and lists the
/// scenarios, numbered from 1 in this order. `login_ceiling` (logins/s)
/// sizes the TOTP users' pool.
pub fn prepare(
    ctx: &Ctx,
    large: usize,
    password_hash: &str,
    login_ceiling: f64,
) -> Result<Prepared> {
    let far = unix_now() + SESSION_LIFETIME_SECS;

    progress("seeding the small databases");
    let small_db = ctx.work.join("small.db");
    let small = seed(
        &small_db,
        password_hash,
        &SeedSpec::sessions(SMALL_SESSIONS, far),
    )?;
    let small_tokens = write_lines(&ctx.work.join("small.tokens"), &small.sample)?;
    let mixed_db = ctx.work.join("mixed.db");
    let mixed = seed(
        &mixed_db,
        password_hash,
        &SeedSpec {
            throwaway: THROWAWAY_SESSIONS,
            ..SeedSpec::sessions(SMALL_SESSIONS, far)
        },
    )?;
    let mixed_tokens = write_lines(&ctx.work.join("mixed.tokens"), &mixed.sample)?;
    let throwaway_tokens = write_lines(&ctx.work.join("throwaway.tokens"), &mixed.throwaway)?;
    // The small database again, but every session's login proved a code
    // (pwd + otp), so a `two_factor` rule lets it through. The one_factor
    // row reads it too: the two rows then differ in the rule's policy alone.
    let otp_db = ctx.work.join("otp.db");
    let otp = seed(
        &otp_db,
        password_hash,
        &SeedSpec {
            amr: Amr::PASSWORD_AND_OTP.bits(),
            ..SeedSpec::sessions(SMALL_SESSIONS, far)
        },
    )?;
    let otp_tokens = write_lines(&ctx.work.join("otp.tokens"), &otp.sample)?;
    // The small database plus users with a TOTP factor: both halves of the
    // pool, and one more for the preflight, which uses up its current step.
    let half = ((login_ceiling * TOTP_HEADROOM * STEP_SECS as f64).ceil() as usize)
        .clamp(MIN_TOTP_HALF, MAX_TOTP_HALF);
    let totp_db = ctx.work.join("totp.db");
    let mut totp = seed(
        &totp_db,
        password_hash,
        &SeedSpec {
            totp_users: 2 * half + 1,
            ..SeedSpec::sessions(SMALL_SESSIONS, far)
        },
    )?;
    let check_secret = totp
        .totp
        .pop()
        .ok_or_else(|| anyhow!("no TOTP user was seeded"))?;
    let totp_names: Vec<String> = (0..totp.totp.len()).map(totp_user_name).collect();
    let totp_pool = TotpPool {
        names: write_lines(&ctx.work.join("totp.users"), &totp_names)?,
        check: (totp_user_name(totp_names.len()), check_secret),
        secrets: totp.totp,
    };
    let unknown: Vec<String> = (0..SAMPLE_TOKENS)
        .map(|_| Token::generate().map(|t| t.expose().to_owned()))
        .collect::<Result<_, _>>()?;
    let unknown_tokens = write_lines(&ctx.work.join("unknown.tokens"), &unknown)?;
    let (large_db, large_sample) = large_database(&ctx.exe, large, password_hash)?;
    let large_tokens = write_lines(&ctx.work.join("large.tokens"), &large_sample)?;

    let first = |tokens: &[String]| -> Result<String> {
        tokens
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("no token was seeded"))
    };
    let small_db_ref = DbRef {
        pristine: small_db.clone(),
        valid: first(&small.sample)?,
    };
    let otp_db_ref = DbRef {
        pristine: otp_db,
        valid: first(&otp.sample)?,
    };
    let k = count_label(SMALL_SESSIONS);
    let scenarios = vec![
        Scenario::new("bare route: GET /json", None, Load::Static),
        Scenario::new(
            &format!("verify, bearer ({k} sessions)"),
            Some(small_db_ref.clone()),
            Load::dynamic("bearer", &small_tokens),
        ),
        Scenario::new(
            &format!("verify, cookie ({k})"),
            Some(small_db_ref.clone()),
            Load::dynamic("cookie", &small_tokens),
        ),
        Scenario::new(
            &format!("introspect, active ({k})"),
            Some(small_db_ref.clone()),
            Load::dynamic("introspect", &small_tokens),
        ),
        Scenario::new(
            &format!("introspect, inactive ({k})"),
            Some(small_db_ref.clone()),
            Load::dynamic("introspect", &unknown_tokens),
        ),
        Scenario::new(
            &format!("verify, bearer ({} sessions)", count_label(large)),
            Some(DbRef {
                pristine: large_db.clone(),
                valid: first(&large_sample)?,
            }),
            Load::dynamic("bearer", &large_tokens),
        ),
        // Login throughput is measured at the hashing pool's own concurrency
        // (one thread on the pinned core + four waiting places): more
        // connections only measure how fast the excess gets its 503.
        Scenario {
            socket_errors_only: true,
            connections: LOGIN_CONNECTIONS,
            ..Scenario::new(
                &format!("login, right password ({LOGIN_CONNECTIONS} conns)"),
                Some(small_db_ref.clone()),
                Load::logins("login"),
            )
        },
        Scenario {
            flood: true,
            ..Scenario::new(
                &format!("verify during login flood ({k})"),
                Some(small_db_ref.clone()),
                Load::dynamic("bearer", &small_tokens),
            )
        },
        Scenario::new(
            "mixed 95/4/1 verify/login/logout",
            Some(DbRef {
                pristine: mixed_db,
                valid: first(&mixed.sample)?,
            }),
            Load::Dynamic {
                mode: "mixed",
                tokens: Some(mixed_tokens),
                throwaway: Some(throwaway_tokens),
                count_statuses: true,
                totp: None,
            },
        ),
        // Row 2's load through a realistic rule list whose one applicable
        // rule is the last: the cost of judging every request (issue 11).
        Scenario {
            serve_with: ServeWith {
                access_rules: Rules::Realistic,
                metrics: false,
            },
            ..Scenario::new(
                &format!("verify, bearer, {ACCESS_RULES} access rules ({k})"),
                Some(small_db_ref.clone()),
                Load::dynamic("bearer", &small_tokens),
            )
        },
        // Row 2's load with metrics.listen set: what counting and timing
        // every answer costs (issue 12).
        Scenario {
            serve_with: ServeWith {
                access_rules: Rules::None,
                metrics: true,
            },
            ..Scenario::new(
                &format!("verify, bearer, with metrics ({k})"),
                Some(small_db_ref.clone()),
                Load::dynamic("bearer", &small_tokens),
            )
        },
        // Row 2's load under one rule over every path, one_factor and then
        // two_factor, on the same pwd + otp sessions: what asking for the
        // second factor costs a token check (second-factor issue).
        Scenario {
            serve_with: ServeWith {
                access_rules: Rules::One(Policy::OneFactor),
                metrics: false,
            },
            ..Scenario::new(
                &format!("verify, bearer, one_factor rule ({k})"),
                Some(otp_db_ref.clone()),
                Load::dynamic("bearer", &otp_tokens),
            )
        },
        Scenario {
            serve_with: ServeWith {
                access_rules: Rules::One(Policy::TwoFactor),
                metrics: false,
            },
            ..Scenario::new(
                &format!("verify, bearer, two_factor rule ({k})"),
                Some(otp_db_ref),
                Load::dynamic("bearer", &otp_tokens),
            )
        },
        // Row 7's load, each login with a TOTP code: a second factor must
        // not cost a second argon2 hash. TOTP codes, not recovery codes:
        // a recovery code takes another path (a SHA-256, a delete, a count
        // and an audit row of its own), and the everyday login is with the
        // app's code. A code counts once per user and step, so every request
        // goes to the next user of a pool seeded for it, with the code of the
        // step it is sent in (computed by the bench: see wrk::write_script),
        // and the preflight checks that a replay answers 401.
        Scenario {
            socket_errors_only: true,
            connections: LOGIN_CONNECTIONS,
            ..Scenario::new(
                &format!("login, password + TOTP code ({LOGIN_CONNECTIONS} conns)"),
                Some(DbRef {
                    pristine: totp_db,
                    valid: first(&totp.sample)?,
                }),
                Load::Dynamic {
                    mode: "login-totp",
                    tokens: None,
                    throwaway: None,
                    count_statuses: true,
                    totp: Some(totp_pool),
                },
            )
        },
        // Row 2's load with latchkey on PostgreSQL (row 2's database, copied
        // over by `latchkey db copy`), on one instance and then on two that
        // share the database: the price of the network round trip, reported
        // beside row 2 of the same run.
        Scenario {
            engine: Engine::Postgres,
            ..Scenario::new(
                &format!("verify, bearer, PostgreSQL ({k})"),
                Some(small_db_ref.clone()),
                Load::dynamic("bearer", &small_tokens),
            )
        },
        Scenario {
            engine: Engine::Postgres,
            instances: PG_INSTANCES,
            ..Scenario::new(
                &format!("verify, bearer, PostgreSQL, {PG_INSTANCES} instances ({k})"),
                Some(small_db_ref),
                Load::dynamic("bearer", &small_tokens),
            )
        },
    ];
    Ok(Prepared {
        scenarios,
        unknown,
        lookups: [(small_db, small.sample), (large_db, large_sample)],
    })
}

/// Where a latchkey scenario's database comes from, and one valid token in it.
#[derive(Clone)]
pub struct DbRef {
    pub pristine: PathBuf,
    pub valid: String,
}

pub enum Load {
    /// `GET /json`, the same request every time (no Lua `request()`).
    Static,
    /// Requests built by `bench/requests.lua` in `mode`.
    Dynamic {
        mode: &'static str,
        /// The tokens the requests carry (none for logins).
        tokens: Option<PathBuf>,
        /// The sessions the mixed load logs out.
        throwaway: Option<PathBuf>,
        /// Count answers by status (adds a Lua `response()` callback).
        count_statuses: bool,
        /// The users that log in with a TOTP code.
        totp: Option<TotpPool>,
    },
}

/// Users with a TOTP factor for logins with a code, each request the next
/// user: a step's code counts once per user, so a user may come round again
/// only in a later step (the pool is sized for that: see `prepare`).
pub struct TotpPool {
    /// Their names, one a line, in the pool's order (read by the script).
    pub names: PathBuf,
    /// Their secrets, in the same order.
    pub secrets: Vec<Secret>,
    /// A user outside the pool, for the preflight.
    pub check: (String, Secret),
}

impl Load {
    fn dynamic(mode: &'static str, tokens: &Path) -> Load {
        Load::Dynamic {
            mode,
            tokens: Some(tokens.to_owned()),
            throwaway: None,
            count_statuses: false,
            totp: None,
        }
    }

    /// Logins, counted by status.
    pub fn logins(mode: &'static str) -> Load {
        Load::Dynamic {
            mode,
            tokens: None,
            throwaway: None,
            count_statuses: true,
            totp: None,
        }
    }

    /// Whether its requests use things up (sessions logged out, TOTP steps),
    /// so that two wrk processes would share, not split, its pools.
    pub fn single_use(&self) -> bool {
        matches!(
            self,
            Load::Dynamic {
                throwaway: Some(_),
                ..
            } | Load::Dynamic { totp: Some(_), .. }
        )
    }
}

/// Where a latchkey scenario's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Its SQLite file (a fresh copy per run), in the server process.
    Sqlite,
    /// A fresh PostgreSQL database per run on the bench's own cluster, made
    /// from that copy by `latchkey db copy`.
    Postgres,
}

pub struct Scenario {
    pub name: String,
    /// `None` runs the baseline server.
    pub db: Option<DbRef>,
    pub engine: Engine,
    /// latchkey instances on the one database, each loaded by a wrk of its
    /// own with its share of the connections.
    pub instances: usize,
    pub load: Load,
    /// Run a wrong-password login flood beside the measured load.
    pub flood: bool,
    /// The errors column counts socket errors only (login statuses are footnoted).
    pub socket_errors_only: bool,
    /// Concurrent connections of the measured load (over all instances).
    pub connections: usize,
    /// Access rules, metrics.
    pub serve_with: ServeWith,
}

impl Scenario {
    fn new(name: &str, db: Option<DbRef>, load: Load) -> Scenario {
        Scenario {
            name: name.to_owned(),
            db,
            engine: Engine::Sqlite,
            instances: 1,
            load,
            flood: false,
            socket_errors_only: false,
            connections: CONNECTIONS,
            serve_with: ServeWith::default(),
        }
    }
}
