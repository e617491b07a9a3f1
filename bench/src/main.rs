//! `latchkey-bench`: what latchkey's endpoints cost, next to a bare actix-web route.
//!
//! ```text
//! cargo bench-latchkey [--quick | --rounds N --duration S --only N,...]
//! # the alias (.cargo/config.toml) for: cargo run --release -p latchkey-bench -- ...
//! ```
//!
//! It builds nothing else. To run a server it re-executes itself in a hidden
//! mode: `__serve` runs latchkey exactly as `latchkey serve` does
//! (`latchkey::build` + `App::run` inside `actix_web::rt::System`), from a
//! temporary config file; `__baseline` runs a bare actix-web server with one
//! route, `GET /json`. Both have one HTTP worker.
//!
//! Load comes from `wrk` (installed with apt-get when missing) over loopback
//! with keep-alive, driven by the Lua scripts in `bench/lua/`. With two cores
//! or more, the server is pinned to core 0 and wrk to core 1. Every scenario
//! gets a freshly started server on a fresh copy of its database, so the peak
//! RSS (VmHWM) is that scenario's alone.
//!
//! Databases are seeded directly through latchkey's store functions in one
//! transaction; tokens are made and hashed by `latchkey::auth::token::Token`,
//! exactly as a login makes them. The large one (1 000 000 sessions by
//! default) is cached under `target/bench-cache/`.
//!
//! This file owns the command line, the server modes' dispatch, the run's
//! settings and header, and the order of a run: seed, rounds of scenarios,
//! in-process lookups, report. The rest: [`scenarios`] (what each loads),
//! [`run`] (running one), [`servers`] (the servers under test), [`wrk`] (the
//! load generator), [`seed`] (databases and the cache), [`postgres`] (the
//! PostgreSQL rows' cluster and databases), [`procfs`] (CPU and memory from
//! /proc), [`lookup`] (in-process lookup timing), [`report`] (the tables),
//! [`process`] (child processes).

mod lookup;
mod postgres;
mod process;
mod procfs;
mod report;
mod run;
mod scenarios;
mod seed;
mod servers;
mod wrk;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use latchkey::auth::password::PasswordHashing;
use latchkey::Config;

use crate::lookup::lookup_costs;
use crate::postgres::{db_copy, find_programs, PgCluster};
use crate::process::{find_on_path, new_temp_dir};
use crate::report::{count_label, latency, median_rows, print_report};
use crate::run::{run_scenario, Row};
use crate::scenarios::{Engine, Prepared};
use crate::seed::time_argon2;
use crate::servers::{baseline, serve};
use crate::wrk::{ensure_wrk, wrk_version};

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
/// Rules in the access-rules scenario; the one that applies is the last.
const ACCESS_RULES: usize = 20;
/// Connections of the login flood that runs beside it in scenario 8.
const FLOOD_CONNECTIONS: usize = 64;
/// Seconds of discarded load before each measurement (caches, allocator).
const WARMUP_SECS: u64 = 1;
const PASSWORD: &str = "bench-password-correct";
const WRONG_PASSWORD: &str = "bench-password-wrong";
/// `login.max_failures`: out of reach, so the benchmark measures cost, not the limiter.
const MAX_FAILURES: u32 = 4_000_000_000;
/// Seeded sessions expire this far ahead (both `expires_at` and `max_expires_at`),
/// so they neither expire nor slide during a run, and a cached database stays usable.
const SESSION_LIFETIME_SECS: i64 = 10 * 365 * 86_400;
/// Cores the server and the load generator are pinned to (with `taskset -c`).
const SERVER_CORE: &str = "0";
const LOAD_CORE: &str = "1";

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
    /// route (1) always runs, since every ratio is taken against it, and
    /// `/verify` on SQLite (2) whenever a PostgreSQL row does
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
    /// `latchkey --config CONFIG db copy --to URL`, for the PostgreSQL rows.
    #[command(name = "__db-copy", hide = true)]
    DbCopy {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        to: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.mode {
        Some(Mode::Serve { config }) => serve(config),
        Some(Mode::Baseline) => baseline(),
        Some(Mode::DbCopy { config, to }) => db_copy(config, to),
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

/// What every scenario needs to know.
pub struct Ctx {
    pub exe: PathBuf,
    pub wrk: PathBuf,
    /// `Some` when the server and the load generator are pinned to cores.
    pub taskset: Option<PathBuf>,
    pub wrk_threads: usize,
    pub secs: u64,
    pub work: PathBuf,
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
    let Prepared {
        scenarios,
        unknown,
        lookups: lookup_databases,
    } = scenarios::prepare(&ctx, large, &password_hash, ceiling)?;

    if let Some(n) = cli.only.iter().find(|&&n| n == 0 || n > scenarios.len()) {
        bail!(
            "--only {n}: scenarios are numbered 1 to {}",
            scenarios.len()
        );
    }
    let chosen = |number: usize| number == 1 || cli.only.is_empty() || cli.only.contains(&number);
    let postgres_rows: Vec<usize> = (1..=scenarios.len())
        .filter(|&n| scenarios[n - 1].engine == Engine::Postgres)
        .collect();
    // The PostgreSQL rows are reported against row 2 of the same run.
    let postgres_chosen = postgres_rows.iter().any(|&n| chosen(n));
    let pg = if postgres_chosen {
        start_postgres(&ctx, &postgres_rows)?
    } else {
        None
    };
    let selected = |number: usize| {
        let postgres = postgres_rows.contains(&number);
        (chosen(number) || (number == 2 && postgres_chosen)) && (!postgres || pg.is_some())
    };
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
            let row = run_scenario(&ctx, scenario, number, &unknown, pg.as_ref())
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
    let costs = lookup_costs(&ctx, &lookup_databases)?;
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
    drop(pg);
    drop(work);
    Ok(())
}

/// The PostgreSQL rows' cluster, started and said so in the header; or
/// `None` (the rows skipped, with a one-line note) where PostgreSQL is not
/// installed.
fn start_postgres(ctx: &Ctx, rows: &[usize]) -> Result<Option<PgCluster>> {
    let rows = rows
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match find_programs() {
        Ok(programs) => {
            progress("starting a PostgreSQL cluster for the PostgreSQL rows");
            let cluster = PgCluster::start(ctx, programs).context("PostgreSQL cluster")?;
            println!("postgres: {}", cluster.describe());
            println!();
            Ok(Some(cluster))
        }
        Err(why) => {
            let note = format!("postgres: rows {rows} skipped: {why}");
            progress(&note);
            println!("{note}");
            println!();
            Ok(None)
        }
    }
}

/// A temporary directory removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<WorkDir> {
        new_temp_dir("latchkey-bench").map(WorkDir)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn progress(message: &str) {
    eprintln!("{message}");
}

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
