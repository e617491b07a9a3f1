//! Running one scenario: a fresh database (a copy of its SQLite file, or a
//! new PostgreSQL database made from that copy by `latchkey db copy`),
//! freshly started server instances on it, the preflight on each, a
//! warm-up, the login flood beside it where there is one, and the measured
//! wrk run (one wrk per instance, the connections shared out) with its CPU
//! and peak RSS.

use std::fs;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::postgres::PgCluster;
use crate::procfs::{vm_hwm_kib, wait_for_quiet, CpuTicks, CpuUse};
use crate::scenarios::{Engine, Load, Scenario};
use crate::seed::{copy_database, remove_database};
use crate::servers::{
    preflight_baseline, preflight_factor_rule, preflight_latchkey, preflight_totp_login,
    start_server, DbTarget, Rules, Server,
};
use crate::wrk::{finish_wrk, spawn_wrk, write_script, Half, RunningWrk, WrkResult, WrkRun};
use crate::{Ctx, FLOOD_CONNECTIONS, WARMUP_SECS};

/// Seconds the flood runs before the measured load starts.
const FLOOD_LEAD_SECS: u64 = 1;

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
    /// requests/s over the quiet `/verify` row (2) of the same round: the
    /// median over the rounds, and the lowest and highest.
    pub vs_quiet_verify: f64,
    pub vs_quiet_range: (f64, f64),
    pub name: String,
    pub result: WrkResult,
    pub socket_errors_only: bool,
    /// The highest peak RSS of the scenario's server instances.
    pub rss_mib: f64,
    pub cpu: CpuUse,
    pub flood: Option<WrkResult>,
}

/// Runs `scenario` once; `pg` is the cluster its PostgreSQL databases are
/// made in (required by the PostgreSQL scenarios only).
pub fn run_scenario(
    ctx: &Ctx,
    scenario: &Scenario,
    number: usize,
    unknown: &[String],
    pg: Option<&PgCluster>,
) -> Result<Row> {
    let Some(db) = scenario.db.as_ref() else {
        return Ok(Row {
            number,
            ..measure(ctx, scenario, None, unknown, None)?
        });
    };
    let copy = ctx.work.join("run.db");
    let result = (|| {
        copy_database(&db.pristine, &copy)?;
        // Write the copy out now: the kernel would otherwise flush its
        // dirty pages (237 MB for the large database) during the
        // measurement, which made that row swing from 27 % to 53 %.
        fs::File::open(&copy)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot flush {}", copy.display()))?;
        match scenario.engine {
            Engine::Sqlite => measure(ctx, scenario, Some(DbTarget::File(&copy)), unknown, None),
            Engine::Postgres => {
                let pg = pg.ok_or_else(|| anyhow!("PostgreSQL is not running"))?;
                // Dropped (the database with it) when the run ends, however.
                let database = pg.database_from(ctx, &copy)?;
                let target = DbTarget::Url(database.url());
                measure(ctx, scenario, Some(target), unknown, Some(pg))
            }
        }
    })();
    remove_database(&copy);
    Ok(Row { number, ..result? })
}

fn measure(
    ctx: &Ctx,
    scenario: &Scenario,
    db: Option<DbTarget<'_>>,
    unknown: &[String],
    pg: Option<&PgCluster>,
) -> Result<Row> {
    if scenario.instances > 1 && (scenario.flood || scenario.load.single_use()) {
        bail!("several instances share one load of reusable requests only, without a flood");
    }
    let mut servers = Vec::with_capacity(scenario.instances);
    for i in 0..scenario.instances {
        let name = if scenario.instances == 1 {
            "server".to_owned()
        } else {
            format!("server-{}", i + 1)
        };
        servers.push(start_server(ctx, db, scenario.serve_with, &name)?);
    }
    for server in &servers {
        preflight(scenario, server, unknown)?;
    }
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    wait_for_quiet(&pids);

    // Warm-up, then the measured run; the mixed load revokes sessions, and
    // the TOTP logins use users, from another half of their pool than their
    // warm-up did.
    let warm = spawn_load(ctx, scenario, &servers, "warmup", WARMUP_SECS, Half::First)?;
    finish_load(warm).context("warm-up run")?;
    for server in &mut servers {
        server.check_alive()?;
    }

    let flood = match (scenario.flood, servers.first()) {
        (true, Some(server)) => {
            let load = Load::logins("login-wrong");
            let host = server.addr.to_string();
            let script = write_script(ctx, "flood.lua", &host, &load, Half::First)?;
            let flood = spawn_wrk(
                ctx,
                &script,
                &load,
                server.addr,
                FLOOD_CONNECTIONS,
                ctx.secs + FLOOD_LEAD_SECS + 1,
                "flood",
            )?;
            std::thread::sleep(Duration::from_secs(FLOOD_LEAD_SECS));
            Some(flood)
        }
        _ => None,
    };

    let flood_pid = flood.as_ref().map(RunningWrk::pid);
    let database_pids = pg.map(PgCluster::pids);
    let before = CpuTicks::take(&pids, flood_pid, database_pids.as_deref());
    let runs = spawn_load(ctx, scenario, &servers, "measured", ctx.secs, Half::Second)?;
    let measured = finish_load(runs)?;
    let database_pids = pg.map(PgCluster::pids);
    let after = CpuTicks::take(&pids, flood_pid, database_pids.as_deref());
    let flood = flood.map(finish_wrk).transpose().context("login flood")?;
    let mut rss_kib = 0;
    for server in &mut servers {
        server.check_alive()?;
        rss_kib = rss_kib.max(vm_hwm_kib(server.pid())?);
    }
    drop(servers);

    let cpu = CpuUse::between(&before, &after, measured.wrk_ticks, measured.wall);
    Ok(Row {
        number: 0, // set by run_scenario
        round: 0,  // set by the caller
        ratio: f64::NAN,
        ratio_range: (f64::NAN, f64::NAN),
        vs_quiet_verify: f64::NAN,
        vs_quiet_range: (f64::NAN, f64::NAN),
        name: scenario.name.clone(),
        result: measured.result,
        socket_errors_only: scenario.socket_errors_only,
        rss_mib: rss_kib as f64 / 1024.0,
        cpu,
        flood: flood.map(|f| f.result),
    })
}

/// Checks that every request the scenario sends gets the answer it assumes
/// from `server`.
fn preflight(scenario: &Scenario, server: &Server, unknown: &[String]) -> Result<()> {
    let addr = server.addr;
    let Some(db_ref) = &scenario.db else {
        return preflight_baseline(addr);
    };
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
    Ok(())
}

/// Starts the scenario's load for `secs`: one wrk per server instance, the
/// connections shared out among them (all wrk processes on the load core).
fn spawn_load(
    ctx: &Ctx,
    scenario: &Scenario,
    servers: &[Server],
    label: &str,
    secs: u64,
    half: Half,
) -> Result<Vec<RunningWrk>> {
    let n = servers.len().max(1);
    let mut runs = Vec::with_capacity(n);
    for (i, server) in servers.iter().enumerate() {
        let connections = scenario.connections / n + usize::from(i < scenario.connections % n);
        let name = if n == 1 {
            label.to_owned()
        } else {
            format!("{label}-{}", i + 1)
        };
        let host = server.addr.to_string();
        let script = write_script(ctx, &format!("{name}.lua"), &host, &scenario.load, half)?;
        runs.push(spawn_wrk(
            ctx,
            &script,
            &scenario.load,
            server.addr,
            connections.max(1),
            secs,
            &name,
        )?);
    }
    Ok(runs)
}

/// Waits for every wrk of a load and merges their results ([`WrkRun::merged`]).
fn finish_load(runs: Vec<RunningWrk>) -> Result<WrkRun> {
    let runs = runs
        .into_iter()
        .map(finish_wrk)
        .collect::<Result<Vec<_>>>()?;
    WrkRun::merged(runs).ok_or_else(|| anyhow!("no wrk ran"))
}
