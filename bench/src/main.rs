//! `latchkey-bench`: what latchkey's endpoints cost, next to a bare actix-web route.
//!
//! ```text
//! cargo run --release --bin latchkey-bench [-- --quick | --rounds N --duration S --only N,...]
//! ```
//!
//! It builds nothing else. To run a server it re-executes itself in a hidden
//! mode: `__serve` runs latchkey exactly as `latchkey serve` does
//! (`latchkey::build` + `App::run` inside `actix_web::rt::System`), from a
//! temporary config file; `__baseline` runs a bare actix-web server with one
//! route, `GET /json`. Both have one HTTP worker.
//!
//! Load comes from `wrk` (installed with apt-get when missing) over loopback
//! with keep-alive, driven by the Lua scripts in `bench/`. With two cores or
//! more, the server is pinned to core 0 and wrk to core 1. Every scenario gets
//! a freshly started server on a fresh copy of its database, so the peak RSS
//! (VmHWM) is that scenario's alone.
//!
//! Databases are seeded directly through latchkey's store functions in one
//! transaction; tokens are made and hashed by `latchkey::auth::token::Token`,
//! exactly as a login makes them. The large one (1 000 000 sessions by
//! default) is cached under `target/bench-cache/`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpResponse};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use latchkey::auth::password::PasswordHashing;
use latchkey::auth::token::{Token, TokenHash};
use latchkey::auth::unix_now;
use latchkey::store::{sessions, users, Store, TransactionBehavior};
use latchkey::Config;
use sha2::{Digest, Sha256};

/// Users seeded into every database; sessions are spread over them.
const USERS: usize = 100;
/// Sessions stored for the ordinary scenarios.
const SMALL_SESSIONS: usize = 1_000;
/// Extra sessions in the mixed scenario's database, revoked by its logouts.
const THROWAWAY_SESSIONS: usize = 20_000;
/// Valid tokens kept for the load scripts (all of them when fewer are stored).
const SAMPLE_TOKENS: usize = 10_000;
/// Connections of the measured load.
const CONNECTIONS: usize = 32;
/// Connections of the login scenario: as many as the pinned server's hashing
/// pool admits without shedding.
const LOGIN_CONNECTIONS: usize = 4;
/// Connections of the login flood that runs beside it in scenario 8.
const FLOOD_CONNECTIONS: usize = 64;
/// Seconds of discarded load before each measurement (caches, allocator).
const WARMUP_SECS: u64 = 1;
/// Seconds the flood runs before the measured load starts.
const FLOOD_LEAD_SECS: u64 = 1;
const PASSWORD: &str = "bench-password-correct";
const WRONG_PASSWORD: &str = "bench-password-wrong";
/// `login.max_failures`: out of reach, so the benchmark measures cost, not the limiter.
const MAX_FAILURES: u32 = 4_000_000_000;
/// Seeded sessions expire this far ahead (both `expires_at` and `max_expires_at`),
/// so they neither expire nor slide during a run, and a cached database stays usable.
const SESSION_LIFETIME_SECS: i64 = 10 * 365 * 86_400;
/// A cached database is reseeded when its sessions expire sooner than this.
const CACHE_MIN_REMAINING_SECS: i64 = 30 * 86_400;
/// Bumped when the cached files' layout or content changes.
const CACHE_VERSION: u32 = 1;
/// Cores the server and the load generator are pinned to (with `taskset -c`).
const SERVER_CORE: &str = "0";
const LOAD_CORE: &str = "1";
/// Linux's USER_HZ: the unit of utime/stime in /proc/<pid>/stat.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// The schema is part of the cache key: a changed schema reseeds.
const SCHEMA_SQL: &str = include_str!("../../schema.sql");
const REPORT_LUA: &str = include_str!("../lua/report.lua");
const REQUESTS_LUA: &str = include_str!("../lua/requests.lua");
const STATUSES_LUA: &str = include_str!("../lua/statuses.lua");
/// The line of wrk's output that `report.lua` prints.
const RESULT_PREFIX: &str = "LATCHKEY_BENCH ";
/// The line a server child prints once it listens.
const LISTENING_PREFIX: &str = "LISTENING ";

#[derive(Parser)]
#[command(
    name = "latchkey-bench",
    about = "Benchmarks latchkey's endpoints against a bare actix-web route, with wrk.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Seconds each scenario is measured per round [default: 5, or 3 with --quick]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration: Option<u64>,
    /// A first look: one round of 3 s per scenario, unless given otherwise
    #[arg(long)]
    quick: bool,
    /// Sessions stored for the large-table scenario (seeded once, cached under target/bench-cache/)
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    large_sessions: u64,
    /// Runs only these scenarios, by number (e.g. `--only 4,5`); the bare
    /// route (1) always runs, since every ratio is taken against it
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    only: Vec<usize>,
    /// Runs the scenarios this many times, interleaved, and reports for each
    /// the round with the median ratio to that round's bare route [default: 3,
    /// or 1 with --quick]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: Option<u64>,
    #[command(subcommand)]
    mode: Option<Mode>,
}

/// Server modes: the benchmark runs itself as its servers.
#[derive(Subcommand)]
enum Mode {
    /// Runs latchkey from a config file, as `latchkey serve` does.
    #[command(name = "__serve", hide = true)]
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Runs the bare actix-web baseline.
    #[command(name = "__baseline", hide = true)]
    Baseline,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.mode {
        Some(Mode::Serve { config }) => serve(config),
        Some(Mode::Baseline) => baseline(),
        None => bench(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("latchkey-bench: error: {message}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------
// Server modes (children)

/// latchkey, through the same calls as `latchkey serve`, on 127.0.0.1:<any>.
fn serve(config_path: &Path) -> Result<()> {
    let config = Config::load(config_path, true)?;
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    actix_web::rt::System::new().block_on(async move {
        let app = latchkey::build(&config, listener)?;
        announce(port)?;
        app.run().await.context("latchkey server failed")
    })
}

/// The baseline: a bare actix-web server, one worker, one route.
fn baseline() -> Result<()> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    actix_web::rt::System::new().block_on(async move {
        let server = actix_web::HttpServer::new(|| {
            actix_web::App::new().route("/json", web::get().to(bare_json))
        })
        .workers(1)
        .listen(listener)?
        .run();
        announce(port)?;
        server.await.context("baseline server failed")
    })
}

async fn bare_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"status":"ok"}"#)
}

/// Tells the parent which port was bound.
fn announce(port: u16) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{LISTENING_PREFIX}{port}")?;
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The benchmark

/// What every scenario needs to know.
struct Ctx {
    exe: PathBuf,
    wrk: PathBuf,
    /// `Some` when the server and the load generator are pinned to cores.
    taskset: Option<PathBuf>,
    wrk_threads: usize,
    secs: u64,
    work: PathBuf,
}

fn bench(cli: &Cli) -> Result<()> {
    let started = Instant::now();
    let secs = cli.duration.unwrap_or(if cli.quick { 3 } else { 5 });
    let rounds = cli.rounds.unwrap_or(if cli.quick { 1 } else { 3 });
    let large = usize::try_from(cli.large_sessions).context("--large-sessions is too large")?;
    let wrk = ensure_wrk()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = find_on_path("taskset");
    let pinned = cores >= 2 && taskset.is_some();
    let pinning = if pinned {
        format!(
            "server on core {SERVER_CORE} (taskset -c {SERVER_CORE}), wrk on core {LOAD_CORE} (taskset -c {LOAD_CORE})"
        )
    } else if cores < 2 {
        "none: only one core, so server and wrk share it (numbers are pessimistic)".to_owned()
    } else {
        "none: `taskset` (util-linux) is not on PATH, so server and wrk float".to_owned()
    };
    let wrk_threads = if pinned { 1 } else { cores.clamp(1, 2) };
    let server_cores = if pinned { 1 } else { cores };
    let exe = std::env::current_exe().context("cannot find this program's own path")?;

    // The server's config, minus the parts that differ per run (database path).
    let mut server_config = Config::default();
    server_config.server.workers = 1;
    server_config.login.max_failures = MAX_FAILURES;
    let p = &server_config.password;

    println!("latchkey-bench");
    println!("command:  {}", command_line());
    println!("commit:   {}", commit());
    println!("machine:  {}", machine(cores));
    println!("pinning:  {pinning}");
    println!(
        "load:     {}, {CONNECTIONS} connections, {wrk_threads} thread{}, keep-alive over loopback; \
         {secs} s per scenario after a {WARMUP_SECS} s warm-up, each on a freshly started server",
        wrk_version(&wrk),
        if wrk_threads == 1 { "" } else { "s" },
    );
    println!(
        "server:   1 HTTP worker, database.pool_size {}, argon2id m={} KiB t={} p={} (SPEC default), \
         login.max_failures {MAX_FAILURES}",
        server_config.database.pool_size, p.memory_kib, p.iterations, p.parallelism
    );

    let hashing = PasswordHashing::new(&server_config.password)?;
    let (hash_time, password_hash) = time_argon2(&hashing)?;
    let ceiling = server_cores as f64 / hash_time.as_secs_f64();
    println!(
        "argon2:   one hash takes {:.1} ms here (median of 5, in-process, same parameters); \
         expected login ceiling = {server_cores} core{} / {:.1} ms = {ceiling:.0} logins/s",
        hash_time.as_secs_f64() * 1e3,
        if server_cores == 1 { "" } else { "s" },
        hash_time.as_secs_f64() * 1e3,
    );
    println!();

    let work = WorkDir::create()?;
    let ctx = Ctx {
        exe,
        wrk,
        taskset: if pinned { taskset } else { None },
        wrk_threads,
        secs,
        work: work.0.clone(),
    };
    let far = unix_now() + SESSION_LIFETIME_SECS;

    progress("seeding the small databases");
    let small_db = ctx.work.join("small.db");
    let small = seed(
        &small_db,
        &password_hash,
        &SeedSpec {
            valid: SMALL_SESSIONS,
            throwaway: 0,
            sample: SAMPLE_TOKENS,
            expires_at: far,
            progress: false,
        },
    )?;
    let small_tokens = write_lines(&ctx.work.join("small.tokens"), &small.sample)?;
    let mixed_db = ctx.work.join("mixed.db");
    let mixed = seed(
        &mixed_db,
        &password_hash,
        &SeedSpec {
            valid: SMALL_SESSIONS,
            throwaway: THROWAWAY_SESSIONS,
            sample: SAMPLE_TOKENS,
            expires_at: far,
            progress: false,
        },
    )?;
    let mixed_tokens = write_lines(&ctx.work.join("mixed.tokens"), &mixed.sample)?;
    let throwaway_tokens = write_lines(&ctx.work.join("throwaway.tokens"), &mixed.throwaway)?;
    let unknown: Vec<String> = (0..SAMPLE_TOKENS)
        .map(|_| Token::generate().map(|t| t.expose().to_owned()))
        .collect::<Result<_, _>>()?;
    let unknown_tokens = write_lines(&ctx.work.join("unknown.tokens"), &unknown)?;
    let (large_db, large_sample) = large_database(&ctx.exe, large, &password_hash)?;
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
            },
        ),
    ];

    if let Some(n) = cli.only.iter().find(|&&n| n == 0 || n > scenarios.len()) {
        bail!(
            "--only {n}: scenarios are numbered 1 to {}",
            scenarios.len()
        );
    }
    let selected = |number: usize| number == 1 || cli.only.is_empty() || cli.only.contains(&number);
    // Rounds run every scenario in turn, so a slow spell of the machine
    // (other guests on the host) lands on all of them, not on one.
    let mut rows = Vec::new();
    for round in 1..=rounds {
        for (i, scenario) in scenarios.iter().enumerate() {
            let number = i + 1;
            if !selected(number) {
                continue;
            }
            progress(&format!(
                "[{number}/{}{}] {} ({} s + {WARMUP_SECS} s warm-up)",
                scenarios.len(),
                if rounds > 1 {
                    format!(", round {round}/{rounds}")
                } else {
                    String::new()
                },
                scenario.name,
                secs
            ));
            let row = run_scenario(&ctx, scenario, number, &unknown)
                .with_context(|| format!("scenario {:?}", scenario.name))?;
            progress(&format!(
                "      {:.0} requests/s, p99 {}",
                row.result.rps(),
                latency(row.result.p99_us)
            ));
            rows.push(Row { round, ..row });
        }
    }
    progress("token lookups in-process, 1k and large database");
    let costs = lookup_costs(
        &ctx,
        &[(&small_db, &small.sample), (&large_db, &large_sample)],
    )?;
    let lookups: Vec<(String, f64)> = [count_label(SMALL_SESSIONS), count_label(large)]
        .into_iter()
        .zip(costs)
        .collect();
    print_report(
        &median_rows(rows),
        rounds,
        &lookups,
        ceiling,
        pinned,
        started.elapsed(),
    );
    drop(work);
    Ok(())
}

/// Where a latchkey scenario's database comes from, and one valid token in it.
#[derive(Clone)]
struct DbRef {
    pristine: PathBuf,
    valid: String,
}

enum Load {
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
    },
}

impl Load {
    fn dynamic(mode: &'static str, tokens: &Path) -> Load {
        Load::Dynamic {
            mode,
            tokens: Some(tokens.to_owned()),
            throwaway: None,
            count_statuses: false,
        }
    }

    /// Logins, counted by status.
    fn logins(mode: &'static str) -> Load {
        Load::Dynamic {
            mode,
            tokens: None,
            throwaway: None,
            count_statuses: true,
        }
    }
}

struct Scenario {
    name: String,
    /// `None` runs the baseline server.
    db: Option<DbRef>,
    load: Load,
    /// Run a wrong-password login flood beside the measured load.
    flood: bool,
    /// The errors column counts socket errors only (login statuses are footnoted).
    socket_errors_only: bool,
    /// Concurrent connections of the measured load.
    connections: usize,
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
        }
    }
}

/// What one scenario measured.
#[derive(Clone)]
struct Row {
    /// The scenario's number, which `--only` selects by.
    number: usize,
    /// Which of the `--rounds` this run belongs to (from 1).
    round: u64,
    /// requests/s over the bare route's of the same round, and the lowest
    /// and highest of that ratio over all rounds.
    ratio: f64,
    ratio_range: (f64, f64),
    /// For the flood row: requests/s over the quiet `/verify` row of the
    /// same round (median over rounds).
    vs_quiet_verify: f64,
    name: String,
    result: WrkResult,
    socket_errors_only: bool,
    rss_mib: f64,
    cpu: CpuUse,
    flood: Option<WrkResult>,
}

fn run_scenario(ctx: &Ctx, scenario: &Scenario, number: usize, unknown: &[String]) -> Result<Row> {
    let db = match &scenario.db {
        Some(db) => {
            let copy = ctx.work.join("run.db");
            remove_database(&copy);
            fs::copy(&db.pristine, &copy).with_context(|| {
                format!(
                    "cannot copy {} to {}",
                    db.pristine.display(),
                    copy.display()
                )
            })?;
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
    let mut server = start_server(ctx, db)?;
    let addr = server.addr;
    match &scenario.db {
        Some(db_ref) => {
            let unknown = unknown
                .first()
                .ok_or_else(|| anyhow!("no unknown token was generated"))?;
            preflight_latchkey(addr, &db_ref.valid, unknown)?;
        }
        None => preflight_baseline(addr)?,
    }
    let host = addr.to_string();
    wait_for_quiet(server.pid());

    // Warm-up, then the measured run; the mixed load revokes sessions from
    // another part of the throwaway pool than its warm-up did.
    let warm = write_script(ctx, "warmup.lua", &host, &scenario.load, 0)?;
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
        let script = write_script(ctx, "flood.lua", &host, &load, 0)?;
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

    let script = write_script(
        ctx,
        "measured.lua",
        &host,
        &scenario.load,
        THROWAWAY_SESSIONS / 2,
    )?;
    let before = CpuTicks::take(server.pid(), flood.as_ref().map(|f| f.child.0.id()));
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
    let after = CpuTicks::take(server.pid(), flood.as_ref().map(|f| f.child.0.id()));
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

// ---------------------------------------------------------------------------
// Servers

/// A running server child; killed and reaped when dropped.
struct Server {
    child: ChildGuard,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Fails with the server's last log line when it has exited.
    fn check_alive(&mut self) -> Result<()> {
        match self.child.0.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("the server exited ({status}): {}", log_tail(&self.log)),
            Err(e) => Err(e).context("cannot check on the server process"),
        }
    }
}

fn start_server(ctx: &Ctx, db: Option<&Path>) -> Result<Server> {
    let log = ctx.work.join("server.log");
    let log_file =
        fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = pinned(ctx, SERVER_CORE, &ctx.exe);
    match db {
        Some(db) => {
            let config = ctx.work.join("latchkey.toml");
            fs::write(&config, server_config_toml(db))
                .with_context(|| format!("cannot write {}", config.display()))?;
            command.arg("__serve").arg("--config").arg(&config);
        }
        None => {
            command.arg("__baseline");
        }
    }
    // The config is the file alone: no LATCHKEY_* variable may change it.
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .starts_with(latchkey::config::ENV_PREFIX)
        {
            command.env_remove(name);
        }
    }
    let mut child = ChildGuard(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .context("cannot start the server process")?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| anyhow!("the server's stdout is not piped"))?;
    // Reads the port line, then drains stdout until the server exits.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        lines.for_each(drop);
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            bail!("the server did not start within 60 s: {}", log_tail(&log))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            bail!("the server exited at start: {}", log_tail(&log))
        }
    };
    let port: u16 = line
        .strip_prefix(LISTENING_PREFIX)
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| anyhow!("unexpected first line from the server: {line:?}"))?;
    let mut server = Server {
        child,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        log,
    };
    wait_until_serving(&mut server, db.is_some())?;
    Ok(server)
}

/// Polls the health route until it answers 200, for at most 10 s.
fn wait_until_serving(server: &mut Server, latchkey: bool) -> Result<()> {
    let path = if latchkey { "/healthz" } else { "/json" };
    let request = http_request("GET", path, &[], "");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        server.check_alive()?;
        match http(server.addr, &request) {
            Ok((200, _)) => return Ok(()),
            Ok((status, _)) if Instant::now() >= deadline => {
                bail!("the server answers {path} with {status}, not 200")
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(e).context("the server did not answer within 10 s")
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn server_config_toml(db: &Path) -> String {
    format!(
        "# Written by latchkey-bench for one run.\n\
         [server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [database]\npath = {}\n\
         [login]\nmax_failures = {MAX_FAILURES}\n",
        toml_string(&db.to_string_lossy())
    )
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks that every request the scenarios send gets the answer they assume.
fn preflight_latchkey(addr: SocketAddr, valid: &str, unknown: &str) -> Result<()> {
    let hint = "(if this is the cached large database, delete target/bench-cache/ to reseed)";
    let bearer = format!("Bearer {valid}");
    let (status, _) = http(
        addr,
        &http_request("GET", "/verify", &[("Authorization", &bearer)], ""),
    )?;
    if status != 200 {
        bail!("GET /verify with a seeded bearer token answered {status}, not 200 {hint}");
    }
    let cookie = format!("{}={valid}", Config::default().session.cookie_name);
    let (status, _) = http(
        addr,
        &http_request("GET", "/verify", &[("Cookie", &cookie)], ""),
    )?;
    if status != 200 {
        bail!("GET /verify with a seeded session cookie answered {status}, not 200");
    }
    for (token, active) in [(valid, true), (unknown, false)] {
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let (status, body) = http(
            addr,
            &http_request("POST", "/introspect", &form, &format!("token={token}")),
        )?;
        let answer: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("POST /introspect answered {status} with {body:?}"))?;
        if status != 200 || answer["active"] != serde_json::Value::Bool(active) {
            bail!("POST /introspect answered {status} {body}, expected \"active\": {active}");
        }
    }
    let json = [("Content-Type", "application/json")];
    for (password, expected) in [(PASSWORD, 200), (WRONG_PASSWORD, 401)] {
        let body = format!(
            r#"{{"username":"{}","password":"{password}"}}"#,
            user_name(0)
        );
        let (status, answer) = http(addr, &http_request("POST", "/login", &json, &body))?;
        if status != expected {
            bail!("POST /login answered {status} {answer}, expected {expected}");
        }
    }
    let bearer = format!("Bearer {unknown}");
    let (status, _) = http(
        addr,
        &http_request("POST", "/logout", &[("Authorization", &bearer)], ""),
    )?;
    if status != 204 {
        bail!("POST /logout answered {status}, not 204");
    }
    Ok(())
}

fn preflight_baseline(addr: SocketAddr) -> Result<()> {
    let (status, body) = http(addr, &http_request("GET", "/json", &[], ""))?;
    if status != 200 || body != r#"{"status":"ok"}"# {
        bail!("the baseline answered GET /json with {status} {body:?}");
    }
    Ok(())
}

/// An HTTP/1.1 request that closes its connection.
fn http_request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    if method == "POST" || !body.is_empty() {
        let _ = write!(request, "Content-Length: {}\r\n", body.len());
    }
    request.push_str("\r\n");
    request.push_str(body);
    request
}

/// Sends one request; returns the status and the body (as text).
fn http(addr: SocketAddr, request: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("no complete answer from {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP answer from {addr}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

// ---------------------------------------------------------------------------
// wrk

/// What `report.lua` printed.
#[derive(Debug, Clone, Default)]
struct WrkResult {
    requests: f64,
    duration_us: f64,
    connect: f64,
    read: f64,
    write: f64,
    timeout: f64,
    status: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    counted: bool,
    s2xx: f64,
    s3xx: f64,
    s401: f64,
    s429: f64,
    s503: f64,
    sother: f64,
}

impl WrkResult {
    fn parse(output: &str) -> Result<WrkResult> {
        let line = output
            .lines()
            .find_map(|l| l.strip_prefix(RESULT_PREFIX))
            .ok_or_else(|| anyhow!("wrk printed no result line: {}", last_line(output)))?;
        let fields: HashMap<&str, f64> = line
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
            .collect();
        let get = |key: &str| -> Result<f64> {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| anyhow!("wrk's result line lacks {key}: {line}"))
        };
        Ok(WrkResult {
            requests: get("requests")?,
            duration_us: get("duration_us")?,
            connect: get("connect")?,
            read: get("read")?,
            write: get("write")?,
            timeout: get("timeout")?,
            status: get("status")?,
            p50_us: get("p50_us")?,
            p99_us: get("p99_us")?,
            p999_us: get("p999_us")?,
            counted: get("counted")? > 0.0,
            s2xx: get("s2xx")?,
            s3xx: get("s3xx")?,
            s401: get("s401")?,
            s429: get("s429")?,
            s503: get("s503")?,
            sother: get("sother")?,
        })
    }

    fn seconds(&self) -> f64 {
        (self.duration_us / 1e6).max(1e-9)
    }

    fn rps(&self) -> f64 {
        self.requests / self.seconds()
    }

    fn socket_errors(&self) -> f64 {
        self.connect + self.read + self.write + self.timeout
    }

    fn per_sec(&self, count: f64) -> f64 {
        count / self.seconds()
    }
}

/// A wrk process; killed and reaped if dropped before [`finish_wrk`].
struct RunningWrk {
    child: ChildGuard,
    output: PathBuf,
    errors: PathBuf,
    started: Instant,
    deadline: Instant,
}

struct WrkRun {
    result: WrkResult,
    /// wrk's CPU time, in clock ticks (sampled until it exited).
    wrk_ticks: u64,
    wall: Duration,
}

fn spawn_wrk(
    ctx: &Ctx,
    script: &Path,
    load: &Load,
    addr: SocketAddr,
    connections: usize,
    secs: u64,
    label: &str,
) -> Result<RunningWrk> {
    let output = ctx.work.join(format!("wrk-{label}.out"));
    let errors = ctx.work.join(format!("wrk-{label}.err"));
    let url = match load {
        Load::Static => format!("http://{addr}/json"),
        Load::Dynamic { .. } => format!("http://{addr}/"),
    };
    let threads = ctx.wrk_threads.min(connections);
    let mut command = pinned(ctx, LOAD_CORE, &ctx.wrk);
    command
        .arg(format!("--threads={threads}"))
        .arg(format!("--connections={connections}"))
        .arg(format!("--duration={secs}s"))
        .arg("--timeout=5s")
        .arg(format!("--script={}", script.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(
            fs::File::create(&output)
                .with_context(|| format!("cannot create {}", output.display()))?,
        )
        .stderr(
            fs::File::create(&errors)
                .with_context(|| format!("cannot create {}", errors.display()))?,
        );
    let child = ChildGuard(
        command
            .spawn()
            .with_context(|| format!("cannot start {}", ctx.wrk.display()))?,
    );
    let started = Instant::now();
    Ok(RunningWrk {
        child,
        output,
        errors,
        started,
        deadline: started + Duration::from_secs(secs + 30),
    })
}

/// Waits for wrk (bounded), sampling its CPU time, and parses its result.
fn finish_wrk(mut run: RunningWrk) -> Result<WrkRun> {
    let pid = run.child.0.id();
    let mut ticks = 0;
    let status = loop {
        if let Some(t) = cpu_ticks(pid) {
            ticks = t;
        }
        match run.child.0.try_wait().context("cannot check on wrk")? {
            Some(status) => break status,
            None if Instant::now() > run.deadline => bail!("wrk did not finish in time; killed it"),
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let wall = run.started.elapsed();
    let output = fs::read_to_string(&run.output).unwrap_or_default();
    if !status.success() {
        let errors = fs::read_to_string(&run.errors).unwrap_or_default();
        bail!(
            "wrk failed ({status}): {}",
            last_line(if errors.trim().is_empty() {
                &output
            } else {
                &errors
            })
        );
    }
    Ok(WrkRun {
        result: WrkResult::parse(&output)?,
        wrk_ticks: ticks,
        wall,
    })
}

/// Writes a wrk script: the `BENCH` settings, then the Lua files it needs.
fn write_script(ctx: &Ctx, name: &str, host: &str, load: &Load, offset: usize) -> Result<PathBuf> {
    let users: Vec<String> = (0..USERS).map(|i| lua_string(&user_name(i))).collect();
    let path_or_nil =
        |p: Option<&Path>| p.map_or("nil".to_owned(), |p| lua_string(&p.to_string_lossy()));
    let (mode, tokens, throwaway, count) = match load {
        Load::Static => ("static", None, None, false),
        Load::Dynamic {
            mode,
            tokens,
            throwaway,
            count_statuses,
        } => (
            *mode,
            tokens.as_deref(),
            throwaway.as_deref(),
            *count_statuses,
        ),
    };
    let mut text = format!(
        "-- Written by latchkey-bench.\nBENCH = {{\n  mode = {},\n  host = {},\n  tokens = {},\n  \
         throwaway = {},\n  offset = {offset},\n  threads = {},\n  count_statuses = {count},\n  \
         cookie = {},\n  password = {},\n  wrong_password = {},\n  users = {{ {} }},\n}}\n\n",
        lua_string(mode),
        lua_string(host),
        path_or_nil(tokens),
        path_or_nil(throwaway),
        ctx.wrk_threads,
        lua_string(&Config::default().session.cookie_name),
        lua_string(PASSWORD),
        lua_string(WRONG_PASSWORD),
        users.join(", "),
    );
    text.push_str(REPORT_LUA);
    if let Load::Dynamic { count_statuses, .. } = load {
        text.push('\n');
        text.push_str(REQUESTS_LUA);
        if *count_statuses {
            text.push('\n');
            text.push_str(STATUSES_LUA);
        }
    }
    let path = ctx.work.join(name);
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A Lua string literal.
fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:03}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Finds wrk, installing the Debian package when it is missing.
fn ensure_wrk() -> Result<PathBuf> {
    if let Some(wrk) = find_on_path("wrk") {
        return Ok(wrk);
    }
    let how = "install it with `sudo apt-get install -y wrk` (or build https://github.com/wg/wrk) and put it on PATH";
    let root = is_root();
    if !root && find_on_path("sudo").is_none() {
        bail!("wrk is not on PATH and this user cannot run apt-get: {how}");
    }
    if find_on_path("apt-get").is_none() {
        bail!("wrk is not on PATH and there is no apt-get here: {how}");
    }
    progress("wrk is not on PATH: installing it with apt-get install -y wrk");
    let apt = |args: &[&str]| -> bool {
        let mut command = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("apt-get");
            sudo
        };
        command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !apt(&["install", "-y", "wrk"]) {
        // A fresh image may have no package lists yet.
        let _ = apt(&["update"]);
        apt(&["install", "-y", "wrk"]);
    }
    find_on_path("wrk")
        .ok_or_else(|| anyhow!("wrk is not on PATH and `apt-get install -y wrk` failed: {how}"))
}

fn wrk_version(wrk: &Path) -> String {
    Command::new(wrk)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace().nth(1).map(|v| format!("wrk {v}"))
        })
        .unwrap_or_else(|| "wrk".to_owned())
}

// ---------------------------------------------------------------------------
// Seeding

struct SeedSpec {
    valid: usize,
    throwaway: usize,
    sample: usize,
    expires_at: i64,
    progress: bool,
}

struct Seeded {
    /// Up to `sample` valid tokens, spread evenly over the insertion order.
    sample: Vec<String>,
    throwaway: Vec<String>,
}

fn user_name(i: usize) -> String {
    format!("bench-user-{i:03}")
}

/// Creates a database with [`USERS`] users (password [`PASSWORD`]) and the
/// sessions of `spec`, in one transaction, through latchkey's own store code.
fn seed(path: &Path, password_hash: &str, spec: &SeedSpec) -> Result<Seeded> {
    let store = Store::open(path, 1)?;
    let mut conn = store.connection()?;
    let now = unix_now();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .context("cannot start the seeding transaction")?;
    let mut user_ids = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let name = user_name(i);
        user_ids.push(users::insert(
            &tx,
            &users::NewUser {
                username: &name,
                password_hash,
                email: None,
                display_name: None,
                created_at: now,
            },
        )?);
    }
    let stride = (spec.valid / spec.sample.max(1)).max(1);
    let total = spec.valid + spec.throwaway;
    let mut seeded = Seeded {
        sample: Vec::with_capacity(spec.sample.min(spec.valid)),
        throwaway: Vec::with_capacity(spec.throwaway),
    };
    let started = Instant::now();
    for (i, user_id) in (0..total).zip(user_ids.iter().cycle()) {
        let token = Token::generate()?;
        let hash = token.hash();
        let stored = sessions::insert(
            &tx,
            &sessions::NewSession {
                token_hash: &hash.0,
                user_id: *user_id,
                created_at: now,
                expires_at: spec.expires_at,
                max_expires_at: spec.expires_at,
                ip: "127.0.0.1",
                user_agent: "latchkey-bench",
            },
        )?;
        if stored.is_none() {
            bail!("two seeded tokens share a lookup key (odds 2^-64 per pair); run again");
        }
        if i >= spec.valid {
            seeded.throwaway.push(token.expose().to_owned());
        } else if i % stride == 0 && seeded.sample.len() < spec.sample {
            seeded.sample.push(token.expose().to_owned());
        }
        if spec.progress && (i + 1) % 100_000 == 0 {
            progress(&format!(
                "      {} / {total} sessions ({:.1} s)",
                i + 1,
                started.elapsed().as_secs_f64()
            ));
        }
    }
    tx.commit().context("cannot commit the seeded rows")?;
    // Fold the WAL into the file, so that copying the file alone copies everything.
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .context("cannot checkpoint the seeded database")?;
    if busy != 0 {
        bail!("cannot checkpoint {}: the database is busy", path.display());
    }
    drop(conn);
    drop(store);
    Ok(seeded)
}

/// The large database, from the cache when a usable copy is there; and its sample tokens.
fn large_database(
    exe: &Path,
    sessions: usize,
    password_hash: &str,
) -> Result<(PathBuf, Vec<String>)> {
    let cache = exe
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_owned)
        .join("bench-cache");
    let schema: String = Sha256::digest(SCHEMA_SQL.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let stem = format!("sessions-{sessions}-v{CACHE_VERSION}-{schema}");
    let db = cache.join(format!("{stem}.db"));
    let tokens = cache.join(format!("{stem}.tokens"));
    let meta = cache.join(format!("{stem}.meta"));
    let wanted_sample = SAMPLE_TOKENS.min(sessions);

    let cached = fs::read_to_string(&meta).ok().and_then(|text| {
        let expires_at: i64 = text.trim().strip_prefix("expires_at=")?.parse().ok()?;
        let sample: Vec<String> = fs::read_to_string(&tokens)
            .ok()?
            .lines()
            .map(str::to_owned)
            .collect();
        let usable = expires_at > unix_now() + CACHE_MIN_REMAINING_SECS
            && sample.len() == wanted_sample
            && db.is_file();
        usable.then_some(sample)
    });
    if let Some(sample) = cached {
        progress(&format!(
            "using the cached {sessions}-session database {}",
            db.display()
        ));
        return Ok((db, sample));
    }

    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let _ = fs::remove_file(&meta); // incomplete until the meta file is back
    let partial = cache.join(format!("{stem}.db.partial"));
    remove_database(&partial);
    progress(&format!(
        "seeding {sessions} sessions into {} (once; later runs reuse it)",
        db.display()
    ));
    let started = Instant::now();
    let expires_at = unix_now() + SESSION_LIFETIME_SECS;
    let seeded = seed(
        &partial,
        password_hash,
        &SeedSpec {
            valid: sessions,
            throwaway: 0,
            sample: wanted_sample,
            expires_at,
            progress: true,
        },
    )
    .with_context(|| format!("cannot seed {}", partial.display()))?;
    remove_database(&db);
    fs::rename(&partial, &db)
        .with_context(|| format!("cannot move the seeded database to {}", db.display()))?;
    write_lines(&tokens, &seeded.sample)?;
    fs::write(&meta, format!("expires_at={expires_at}\n"))
        .with_context(|| format!("cannot write {}", meta.display()))?;
    progress(&format!(
        "      seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok((db, seeded.sample))
}

/// Deletes an SQLite file and its WAL companions, if present.
fn remove_database(path: &Path) {
    let _ = fs::remove_file(path);
    for suffix in ["-wal", "-shm"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        let _ = fs::remove_file(companion);
    }
}

fn write_lines(path: &Path, lines: &[String]) -> Result<PathBuf> {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_owned())
}

/// Median time of one argon2 hash with `hashing`, and a hash of [`PASSWORD`].
fn time_argon2(hashing: &PasswordHashing) -> Result<(Duration, String)> {
    let hash = hashing.hash(PASSWORD)?; // also warms the working memory up
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        hashing.hash(PASSWORD)?;
        times.push(started.elapsed());
    }
    times.sort();
    let median = times
        .get(times.len() / 2)
        .copied()
        .ok_or_else(|| anyhow!("no argon2 timing"))?;
    Ok((median, hash))
}

// ---------------------------------------------------------------------------
// Processes and /proc

/// A child process that is killed and reaped when dropped, whatever happened.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary directory removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<WorkDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("latchkey-bench-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `program`, pinned to `core` with taskset when pinning is on.
fn pinned(ctx: &Ctx, core: &str, program: &Path) -> Command {
    match &ctx.taskset {
        Some(taskset) => {
            let mut command = Command::new(taskset);
            command.arg("-c").arg(core).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn cpu_share(ticks: u64, wall: Duration) -> f64 {
    ticks as f64 / CLOCK_TICKS_PER_SEC / wall.as_secs_f64().max(1e-9)
}

/// The CPU counters one measurement needs, taken at one moment.
struct CpuTicks {
    /// `/proc/stat`: line name (`cpu`, `cpu0`, …) → its counters.
    system: HashMap<String, Vec<u64>>,
    server: u64,
    flood: u64,
    this: u64,
}

impl CpuTicks {
    fn take(server: u32, flood: Option<u32>) -> CpuTicks {
        let system = fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("cpu"))
            .filter_map(|l| {
                let mut fields = l.split_whitespace();
                let name = fields.next()?.to_owned();
                Some((name, fields.filter_map(|f| f.parse().ok()).collect()))
            })
            .collect();
        CpuTicks {
            system,
            server: cpu_ticks(server).unwrap_or(0),
            flood: flood.and_then(cpu_ticks).unwrap_or(0),
            this: cpu_ticks(std::process::id()).unwrap_or(0),
        }
    }

    /// Ticks of `line` spent in processes (user, nice, system), and in all
    /// but idle and iowait (adding irq, softirq, steal), and in total.
    /// (processes, busy, total, steal) ticks of a `/proc/stat` cpu line.
    fn counters(&self, line: &str) -> Option<(u64, u64, u64, u64)> {
        let f = self.system.get(line)?;
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is in user)
        let processes = at(0) + at(1) + at(2);
        let total: u64 = (0..8).map(at).sum();
        Some((processes, total - at(3) - at(4), total, at(7)))
    }
}

/// CPU use during a measured run, in cores (1.0 = one core busy all along).
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    server: f64,
    /// wrk, and the flood's wrk when there is one.
    load: f64,
    /// Every other process on the machine (another build, say).
    other: f64,
    /// Busy share of the pinned cores, kernel work (loopback, softirq) included.
    server_core: Option<f64>,
    load_core: Option<f64>,
    /// Share of the server core's time the hypervisor gave to other guests
    /// (counted in `server_core`): high steal means a noisy neighbour.
    server_steal: Option<f64>,
}

impl CpuUse {
    fn between(before: &CpuTicks, after: &CpuTicks, wrk_ticks: u64, wall: Duration) -> CpuUse {
        let server = after.server.saturating_sub(before.server);
        let load = wrk_ticks + after.flood.saturating_sub(before.flood);
        let this = after.this.saturating_sub(before.this);
        let other = match (before.counters("cpu"), after.counters("cpu")) {
            (Some((p0, ..)), Some((p1, ..))) => {
                p1.saturating_sub(p0).saturating_sub(server + load + this)
            }
            _ => 0,
        };
        let share_of_core = |n: &str, field: fn((u64, u64, u64, u64)) -> u64| -> Option<f64> {
            let line = format!("cpu{n}");
            let before = before.counters(&line)?;
            let after = after.counters(&line)?;
            let total = after.2.saturating_sub(before.2);
            (total > 0).then(|| field(after).saturating_sub(field(before)) as f64 / total as f64)
        };
        let core = |n: &str| share_of_core(n, |(_, busy, _, _)| busy);
        CpuUse {
            server: cpu_share(server, wall),
            load: cpu_share(load, wall),
            other: cpu_share(other, wall),
            server_core: core(SERVER_CORE),
            load_core: core(LOAD_CORE),
            server_steal: share_of_core(SERVER_CORE, |(_, _, _, steal)| steal),
        }
    }
}

/// Waits (at most 60 s) until other processes use less than a fifth of a
/// core, so that a concurrent build does not skew a scenario unnoticed.
fn wait_for_quiet(server: u32) {
    const LIMIT: f64 = 0.2;
    let mut before = CpuTicks::take(server, None);
    for waited in 0..60 {
        std::thread::sleep(Duration::from_secs(1));
        let after = CpuTicks::take(server, None);
        let other = CpuUse::between(&before, &after, 0, Duration::from_secs(1)).other;
        if other < LIMIT {
            return;
        }
        if waited == 0 {
            progress(&format!(
                "      other processes use {other:.2} cores; waiting up to 60 s for them to quiet down"
            ));
        }
        before = after;
    }
    progress("      still busy; measuring anyway (see the \"other\" column)");
}

/// Peak resident set size of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    match last_line(&text) {
        "" => format!("nothing in {}", log.display()),
        line => line.to_owned(),
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

fn progress(message: &str) {
    eprintln!("{message}");
}

// ---------------------------------------------------------------------------
// The report

fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
            {
                arg
            } else {
                format!("'{}'", arg.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn commit() -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} (working tree has uncommitted changes)")
            } else {
                rev
            }
        }
        _ => "unknown (not a git checkout)".to_owned(),
    }
}

fn machine(cores: usize) -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| matches!(k.trim(), "model name" | "Model" | "cpu model" | "Hardware"))
        .map_or("unknown CPU", |(_, v)| v.trim())
        .to_owned();
    let online = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |k| k.trim().to_owned());
    let cores = if online > cores {
        format!("{cores} of {online} cores usable")
    } else {
        format!("{cores} cores")
    };
    format!("{model}, {cores}, Linux {kernel}")
}

/// `1000` → `1k`, `1000000` → `1M`.
fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn latency(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// Left-aligns the first column and right-aligns the others, under a rule.
fn format_table(table: &[Vec<String>]) -> String {
    let columns = table.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            table
                .iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, line) in table.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
                if c == 0 {
                    format!("{cell}{pad}")
                } else {
                    format!("{pad}{cell}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if n == 0 {
            let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    out
}

fn percent(x: f64) -> String {
    if x.is_finite() {
        format!("{:.0}%", x * 100.0)
    } else {
        "?".to_owned()
    }
}

/// One row per scenario: of its rounds, the one with the median ratio to the
/// bare route of the same round (the bare route: its median requests/s).
fn median_rows(mut rows: Vec<Row>) -> Vec<Row> {
    let rate = |rows: &[Row], number: usize, round: u64| {
        rows.iter()
            .find(|r| r.number == number && r.round == round)
            .map_or(f64::NAN, |r| r.result.rps())
    };
    let per_round: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| {
            let rps = r.result.rps();
            (rps / rate(&rows, 1, r.round), rps / rate(&rows, 2, r.round))
        })
        .collect();
    for (row, (ratio, vs_quiet)) in rows.iter_mut().zip(per_round) {
        row.ratio = ratio;
        row.vs_quiet_verify = vs_quiet;
    }
    // Rounds in order of ratio; the bare route's ratios are all 1, so its
    // rounds go in order of rate.
    rows.sort_by(|a, b| {
        a.number.cmp(&b.number).then_with(|| {
            if a.number == 1 {
                a.result.rps().total_cmp(&b.result.rps())
            } else {
                a.ratio.total_cmp(&b.ratio)
            }
        })
    });
    rows.chunk_by(|a, b| a.number == b.number)
        .filter_map(|rounds| {
            let mut vs_quiet: Vec<f64> = rounds.iter().map(|r| r.vs_quiet_verify).collect();
            vs_quiet.sort_by(f64::total_cmp);
            let median = rounds.get(rounds.len() / 2)?;
            Some(Row {
                ratio_range: (rounds.first()?.ratio, rounds.last()?.ratio),
                vs_quiet_verify: vs_quiet.get(vs_quiet.len() / 2).copied()?,
                ..median.clone()
            })
        })
        .collect()
}

/// Microseconds per token lookup through the server's own inline read path
/// (`Store::read_now` + `sessions::find_by_token_hash`), in this process,
/// for each (database, sampled tokens): the SQLite cost of a token check
/// without HTTP. Each database gets its own thread, so each keeps its read
/// connection as a server worker does; rounds alternate between them and
/// the median of five is kept, so drift of the machine's speed hits all alike.
fn lookup_costs(ctx: &Ctx, databases: &[(&Path, &Vec<String>)]) -> Result<Vec<f64>> {
    const LOOKUPS: usize = 100_000;
    const ROUNDS: usize = 5;
    let mut copies = Vec::new();
    let mut workers = Vec::new();
    for (i, (db, tokens)) in databases.iter().enumerate() {
        let copy = ctx.work.join(format!("lookups-{i}.db"));
        remove_database(&copy);
        fs::copy(db, &copy).with_context(|| format!("cannot copy {}", db.display()))?;
        let store = Store::open(&copy, 1)?;
        copies.push(copy);
        let hashes: Vec<TokenHash> = tokens
            .iter()
            .filter_map(|t| TokenHash::of_token(t))
            .collect();
        if hashes.is_empty() {
            bail!("no sampled token for {}", db.display());
        }
        let (start, rounds) = mpsc::channel::<()>();
        let (report, timings) = mpsc::channel::<Result<f64>>();
        std::thread::spawn(move || {
            let mut state = 0x9E37_79B9_7F4A_7C15_u64;
            for () in rounds {
                let started = Instant::now();
                let mut result = Ok(());
                for _ in 0..LOOKUPS {
                    // xorshift: a uniform pick among the sampled tokens.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let hash = &hashes[(state % hashes.len() as u64) as usize];
                    match store.read_now(|conn| sessions::find_by_token_hash(conn, &hash.0)) {
                        Ok(Some(_)) => {}
                        Ok(None) => result = Err(anyhow!("a sampled token was not found")),
                        Err(e) => result = Err(e.into()),
                    }
                }
                let micros = started.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64;
                if report.send(result.map(|()| micros)).is_err() {
                    return;
                }
            }
        });
        workers.push((start, timings));
    }
    let mut timings = vec![Vec::new(); workers.len()];
    // Round 0 warms the caches and the mapping up.
    for round in 0..=ROUNDS {
        for (i, (start, report)) in workers.iter().enumerate() {
            start
                .send(())
                .map_err(|_| anyhow!("a lookup thread stopped"))?;
            let micros = report
                .recv()
                .map_err(|_| anyhow!("a lookup thread stopped"))??;
            if round > 0 {
                timings[i].push(micros);
            }
        }
    }
    drop(workers);
    for copy in &copies {
        remove_database(copy);
    }
    Ok(timings
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
        })
        .collect())
}

fn print_report(
    rows: &[Row],
    rounds: u64,
    lookups: &[(String, f64)],
    ceiling: f64,
    pinned: bool,
    elapsed: Duration,
) {
    let mut header = vec![
        "scenario",
        "requests/s",
        "p50",
        "p99",
        "p99.9",
        "errors",
        "peak RSS (MiB)",
        "vs bare route",
    ];
    if rounds > 1 {
        header.push("over the rounds");
    }
    let mut table = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for row in rows {
        let r = &row.result;
        let errors = if row.socket_errors_only {
            format!("{} *", thousands(r.socket_errors()))
        } else {
            thousands(r.socket_errors() + r.status)
        };
        let mut line = vec![
            format!("{}. {}", row.number, row.name),
            thousands(r.rps()),
            latency(r.p50_us),
            latency(r.p99_us),
            latency(r.p999_us),
            errors,
            format!("{:.1}", row.rss_mib),
            format!("{:.1}%", row.ratio * 100.0),
        ];
        if rounds > 1 {
            let (low, high) = row.ratio_range;
            line.push(format!("{:.1}–{:.1}%", low * 100.0, high * 100.0));
        }
        table.push(line);
    }
    if rounds > 1 {
        println!(
            "Each row is the median of {rounds} interleaved rounds: the round whose ratio to its own \
             bare route was the median; \"over the rounds\" gives the lowest and highest ratio."
        );
    }
    print!("{}", format_table(&table));
    println!();
    println!(
        "requests/s counts every answer wrk got; errors = connect + read + write + timeout + HTTP status >= 400."
    );
    println!(
        "* login rows: errors count connect/read/write/timeout only; their statuses are listed below \
         (401 = wrong password, expected in the flood; 503 = hashing queue full, shed by design)."
    );
    let status_line = |r: &WrkResult| -> String {
        let mut parts = vec![format!("200 {:.1}/s", r.per_sec(r.s2xx))];
        for (count, name) in [
            (r.s3xx, "3xx"),
            (r.s401, "401"),
            (r.s429, "429"),
            (r.s503, "503"),
            (r.sother, "other"),
        ] {
            if count > 0.0 {
                parts.push(format!("{name} {:.1}/s", r.per_sec(count)));
            }
        }
        parts.join(", ")
    };
    let quiet_verify = rows.iter().find(|r| r.number == 2);
    for row in rows {
        let r = &row.result;
        if r.counted {
            let mut line = format!("{}. statuses: {}", row.number, status_line(r));
            if row.socket_errors_only {
                let _ = write!(
                    line,
                    "; successful logins at {:.0}% of the expected ceiling ({ceiling:.0}/s); \
                     the percentiles mix instant 503s with admitted logins",
                    r.per_sec(r.s2xx) / ceiling * 100.0
                );
            }
            println!("{line}");
        }
        if let Some(flood) = &row.flood {
            let mut line = format!(
                "{}. flood beside it ({FLOOD_CONNECTIONS} connections, wrong password): {} answers/s ({}), \
                 socket errors {}",
                row.number,
                thousands(flood.rps()),
                status_line(flood),
                thousands(flood.socket_errors()),
            );
            if quiet_verify.is_some() {
                let _ = write!(
                    line,
                    "; verify ran at {:.1}% of its quiet rate (row 2 of the same round)",
                    row.vs_quiet_verify * 100.0
                );
            }
            println!("{line}");
        }
    }
    println!();
    println!(
        "CPU during each measured run, in cores (1.00 = one core busy). Core busy includes the \
         kernel's loopback work, which no process is charged for, and steal, the time the hypervisor \
         ran another guest; \"other\" is every other process. Server CPU per request is the server \
         process's CPU time over the requests answered: unlike requests/s, steal does not move it."
    );
    let mut header = vec!["scenario"];
    if pinned {
        header.extend(["server core busy", "of it steal", "wrk core busy"]);
    }
    header.extend([
        "server process",
        "wrk process",
        "other",
        "server CPU per request",
    ]);
    let mut table = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    let mut client_bound = Vec::new();
    let mut disturbed = Vec::new();
    for row in rows {
        let c = &row.cpu;
        let mut line = vec![format!("{}. {}", row.number, row.name)];
        if pinned {
            line.push(percent(c.server_core.unwrap_or(f64::NAN)));
            line.push(percent(c.server_steal.unwrap_or(f64::NAN)));
            line.push(percent(c.load_core.unwrap_or(f64::NAN)));
        }
        line.push(format!("{:.2}", c.server));
        line.push(format!("{:.2}", c.load));
        line.push(format!("{:.2}", c.other));
        line.push(format!("{:.1} µs", c.server / row.result.rps() * 1e6));
        table.push(line);
        if c.load_core.is_some_and(|busy| busy > 0.95) {
            client_bound.push((row.number).to_string());
        }
        if c.other > 0.2 {
            disturbed.push((row.number).to_string());
        }
    }
    print!("{}", format_table(&table));
    if !client_bound.is_empty() {
        println!(
            "row(s) {}: wrk's core was saturated, so these rates are a floor: the server may go faster.",
            client_bound.join(", ")
        );
    }
    if !disturbed.is_empty() {
        println!(
            "row(s) {}: other processes used over 0.2 cores during the run; treat those numbers with care.",
            disturbed.join(", ")
        );
    }
    if let [(small_label, small), (large_label, large)] = lookups {
        println!();
        println!(
            "Token lookups in-process (Store::read_now + sessions::find_by_token_hash, the server's \
             own read path, random picks among the sampled tokens, median of 5 rounds): \
             {small_label} sessions {small:.2} µs, {large_label} sessions {large:.2} µs per lookup \
             ({:+.2} µs).",
            large - small
        );
    }
    println!();
    println!("total time {:.0} s", elapsed.as_secs_f64());
}
