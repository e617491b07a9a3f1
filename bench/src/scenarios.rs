//! The scenarios: what each one loads (the Lua mode, its tokens, its
//! database), seeding their databases, and running one: a fresh server on a
//! fresh copy of its database, the preflight, a warm-up, the login flood
//! beside it where there is one, and the measured wrk run with its CPU and
//! peak RSS.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use latchkey::auth::token::Token;
use latchkey::auth::totp::{Secret, STEP_SECS};
use latchkey::auth::{unix_now, Amr};
use latchkey::config::Policy;

use crate::procfs::{vm_hwm_kib, wait_for_quiet, CpuTicks, CpuUse};
use crate::report::count_label;
use crate::seed::{
    copy_database, large_database, remove_database, seed, totp_user_name, write_lines, SeedSpec,
};
use crate::servers::{
    preflight_baseline, preflight_factor_rule, preflight_latchkey, preflight_totp_login,
    start_server, Rules, ServeWith,
};
use crate::wrk::{finish_wrk, spawn_wrk, write_script, Half, RunningWrk, WrkResult};
use crate::{
    progress, Ctx, ACCESS_RULES, CONNECTIONS, FLOOD_CONNECTIONS, SAMPLE_TOKENS,
    SESSION_LIFETIME_SECS, SMALL_SESSIONS, THROWAWAY_SESSIONS, WARMUP_SECS,
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
/// Seconds the flood runs before the measured load starts.
const FLOOD_LEAD_SECS: u64 = 1;

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
    pristine: PathBuf,
    valid: String,
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
    fn logins(mode: &'static str) -> Load {
        Load::Dynamic {
            mode,
            tokens: None,
            throwaway: None,
            count_statuses: true,
            totp: None,
        }
    }
}

pub struct Scenario {
    pub name: String,
    /// `None` runs the baseline server.
    db: Option<DbRef>,
    load: Load,
    /// Run a wrong-password login flood beside the measured load.
    flood: bool,
    /// The errors column counts socket errors only (login statuses are footnoted).
    socket_errors_only: bool,
    /// Concurrent connections of the measured load.
    connections: usize,
    /// Access rules, metrics.
    serve_with: ServeWith,
}

impl Scenario {
    fn new(name: &str, db: Option<DbRef>, load: Load) -> Scenario {
        Scenario {
            name: name.to_owned(),
            db,
            load,
            flood: false,
            socket_errors_only: false,
            connections: CONNECTIONS,
            serve_with: ServeWith::default(),
        }
    }
}

/// What one scenario measured.
#[derive(Clone)]
pub struct Row {
    /// The scenario's number, which `--only` selects by.
    pub number: usize,
    /// Which of the `--rounds` this run belongs to (from 1).
    pub round: u64,
    /// requests/s over the bare route's of the same round, and the lowest
    /// and highest of that ratio over all rounds.
    pub ratio: f64,
    pub ratio_range: (f64, f64),
    /// For the flood row: requests/s over the quiet `/verify` row of the
    /// same round (median over rounds).
    pub vs_quiet_verify: f64,
    pub name: String,
    pub result: WrkResult,
    pub socket_errors_only: bool,
    pub rss_mib: f64,
    pub cpu: CpuUse,
    pub flood: Option<WrkResult>,
}

pub fn run_scenario(
    ctx: &Ctx,
    scenario: &Scenario,
    number: usize,
    unknown: &[String],
) -> Result<Row> {
    let db = match &scenario.db {
        Some(db) => {
            let copy = ctx.work.join("run.db");
            copy_database(&db.pristine, &copy)?;
            // Write the copy out now: the kernel would otherwise flush its
            // dirty pages (237 MB for the large database) during the
            // measurement, which made that row swing from 27 % to 53 %.
            fs::File::open(&copy)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("cannot flush {}", copy.display()))?;
            Some(copy)
        }
        None => None,
    };
    let result = measure(ctx, scenario, db.as_deref(), unknown);
    if let Some(db) = &db {
        remove_database(db);
    }
    Ok(Row { number, ..result? })
}

fn measure(ctx: &Ctx, scenario: &Scenario, db: Option<&Path>, unknown: &[String]) -> Result<Row> {
    let mut server = start_server(ctx, db, scenario.serve_with)?;
    let addr = server.addr;
    match &scenario.db {
        Some(db_ref) => {
            let unknown = unknown
                .first()
                .ok_or_else(|| anyhow!("no unknown token was generated"))?;
            let password_only = preflight_latchkey(addr, &db_ref.valid, unknown)?;
            if let Rules::One(policy) = scenario.serve_with.access_rules {
                preflight_factor_rule(addr, &password_only, policy)?;
            }
            if let Load::Dynamic {
                totp: Some(pool), ..
            } = &scenario.load
            {
                preflight_totp_login(addr, &pool.check.0, &pool.check.1)?;
            }
        }
        None => preflight_baseline(addr)?,
    }
    let host = addr.to_string();
    wait_for_quiet(server.pid());

    // Warm-up, then the measured run; the mixed load revokes sessions, and
    // the TOTP logins use users, from another half of their pool than their
    // warm-up did.
    let warm = write_script(ctx, "warmup.lua", &host, &scenario.load, Half::First)?;
    let warm_run = spawn_wrk(
        ctx,
        &warm,
        &scenario.load,
        addr,
        scenario.connections,
        WARMUP_SECS,
        "warmup",
    )?;
    finish_wrk(warm_run).context("warm-up run")?;
    server.check_alive()?;

    let flood = if scenario.flood {
        let load = Load::logins("login-wrong");
        let script = write_script(ctx, "flood.lua", &host, &load, Half::First)?;
        let flood = spawn_wrk(
            ctx,
            &script,
            &load,
            addr,
            FLOOD_CONNECTIONS,
            ctx.secs + FLOOD_LEAD_SECS + 1,
            "flood",
        )?;
        std::thread::sleep(Duration::from_secs(FLOOD_LEAD_SECS));
        Some(flood)
    } else {
        None
    };

    let script = write_script(ctx, "measured.lua", &host, &scenario.load, Half::Second)?;
    let flood_pid = flood.as_ref().map(RunningWrk::pid);
    let before = CpuTicks::take(server.pid(), flood_pid);
    let run = spawn_wrk(
        ctx,
        &script,
        &scenario.load,
        addr,
        scenario.connections,
        ctx.secs,
        "measured",
    )?;
    let measured = finish_wrk(run)?;
    let after = CpuTicks::take(server.pid(), flood_pid);
    let flood = flood.map(finish_wrk).transpose().context("login flood")?;
    server.check_alive()?;
    let rss_kib = vm_hwm_kib(server.pid())?;
    drop(server);

    let cpu = CpuUse::between(&before, &after, measured.wrk_ticks, measured.wall);
    Ok(Row {
        number: 0, // set by run_scenario
        round: 0,  // set by the caller
        ratio: f64::NAN,
        ratio_range: (f64::NAN, f64::NAN),
        vs_quiet_verify: f64::NAN,
        name: scenario.name.clone(),
        result: measured.result,
        socket_errors_only: scenario.socket_errors_only,
        rss_mib: rss_kib as f64 / 1024.0,
        cpu,
        flood: flood.map(|f| f.result),
    })
}
