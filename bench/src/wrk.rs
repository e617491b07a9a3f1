//! wrk, the load generator: finding or installing it, writing the Lua
//! script of a run (the `BENCH` settings, then the scripts in `bench/lua/`),
//! spawning it pinned to the load core, waiting for it while sampling its CPU
//! time, and parsing the result line that `report.lua` prints.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use latchkey::auth::totp::{step_of, STEP_SECS};
use latchkey::auth::unix_now;
use latchkey::Config;

use crate::process::{find_on_path, last_line, pinned, ChildGuard};
use crate::procfs::cpu_ticks;
use crate::scenarios::{Load, TotpPool};
use crate::seed::{user_name, write_lines};
use crate::{
    progress, Ctx, LOAD_CORE, PASSWORD, THROWAWAY_SESSIONS, USERS, WARMUP_SECS, WRONG_PASSWORD,
};

const REPORT_LUA: &str = include_str!("../lua/report.lua");
const REQUESTS_LUA: &str = include_str!("../lua/requests.lua");
const STATUSES_LUA: &str = include_str!("../lua/statuses.lua");
/// The line of wrk's output that `report.lua` prints.
const RESULT_PREFIX: &str = "LATCHKEY_BENCH ";
/// TOTP codes are written for the steps of a run's duration plus this much:
/// wrk's start, and logins still in flight at its end.
const TOTP_SLACK_SECS: u64 = 30;

/// Which half of the single-use pools (the sessions the mixed load logs
/// out, the TOTP users) a run starts in, so that the warm-up and the
/// measured run never use the same ones.
#[derive(Debug, Clone, Copy)]
pub enum Half {
    First,
    Second,
}

impl Half {
    fn start(self, pool: usize) -> usize {
        match self {
            Half::First => 0,
            Half::Second => pool / 2,
        }
    }
}

/// What `report.lua` printed.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub requests: f64,
    pub duration_us: f64,
    pub connect: f64,
    pub read: f64,
    pub write: f64,
    pub timeout: f64,
    pub status: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub counted: bool,
    pub s2xx: f64,
    pub s3xx: f64,
    pub s401: f64,
    pub s429: f64,
    pub s503: f64,
    pub sother: f64,
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

    pub fn rps(&self) -> f64 {
        self.requests / self.seconds()
    }

    pub fn socket_errors(&self) -> f64 {
        self.connect + self.read + self.write + self.timeout
    }

    pub fn per_sec(&self, count: f64) -> f64 {
        count / self.seconds()
    }
}

impl WrkRun {
    /// Several wrk processes' runs at once, one per server instance, as one
    /// load: counts summed, requests/s the sum of the rates (the duration
    /// is set so that `rps()` gives it), and each percentile the worse of
    /// the runs' (wrk keeps no histogram to merge). `None` without runs.
    pub fn merged(runs: Vec<WrkRun>) -> Option<WrkRun> {
        let mut runs = runs.into_iter();
        let first = runs.next()?;
        let mut rate = first.result.rps();
        let mut merged = first;
        for run in runs {
            let (m, r) = (&mut merged.result, &run.result);
            rate += r.rps();
            for (total, part) in [
                (&mut m.requests, r.requests),
                (&mut m.connect, r.connect),
                (&mut m.read, r.read),
                (&mut m.write, r.write),
                (&mut m.timeout, r.timeout),
                (&mut m.status, r.status),
                (&mut m.s2xx, r.s2xx),
                (&mut m.s3xx, r.s3xx),
                (&mut m.s401, r.s401),
                (&mut m.s429, r.s429),
                (&mut m.s503, r.s503),
                (&mut m.sother, r.sother),
            ] {
                *total += part;
            }
            for (worst, part) in [
                (&mut m.p50_us, r.p50_us),
                (&mut m.p99_us, r.p99_us),
                (&mut m.p999_us, r.p999_us),
            ] {
                *worst = worst.max(part);
            }
            m.counted |= r.counted;
            merged.wrk_ticks += run.wrk_ticks;
            merged.wall = merged.wall.max(run.wall);
        }
        if rate > 0.0 {
            merged.result.duration_us = merged.result.requests / rate * 1e6;
        }
        Some(merged)
    }
}

/// A wrk process; killed and reaped if dropped before [`finish_wrk`].
pub struct RunningWrk {
    child: ChildGuard,
    output: PathBuf,
    errors: PathBuf,
    started: Instant,
    deadline: Instant,
}

impl RunningWrk {
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

pub struct WrkRun {
    pub result: WrkResult,
    /// wrk's CPU time, in clock ticks (sampled until it exited).
    pub wrk_ticks: u64,
    pub wall: Duration,
}

pub fn spawn_wrk(
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
pub fn finish_wrk(mut run: RunningWrk) -> Result<WrkRun> {
    let pid = run.pid();
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
/// (With TOTP users, their codes are computed now, for the steps the run
/// will cover: write it just before starting wrk.)
pub fn write_script(ctx: &Ctx, name: &str, host: &str, load: &Load, half: Half) -> Result<PathBuf> {
    let users: Vec<String> = (0..USERS).map(|i| lua_string(&user_name(i))).collect();
    let path_or_nil =
        |p: Option<&Path>| p.map_or("nil".to_owned(), |p| lua_string(&p.to_string_lossy()));
    let (mode, tokens, throwaway, count, totp) = match load {
        Load::Static => ("static", None, None, false, None),
        Load::Dynamic {
            mode,
            tokens,
            throwaway,
            count_statuses,
            totp,
        } => (
            *mode,
            tokens.as_deref(),
            throwaway.as_deref(),
            *count_statuses,
            totp.as_ref(),
        ),
    };
    let totp_codes = totp
        .map(|pool| write_totp_codes(ctx, &format!("{name}.totp"), pool))
        .transpose()?;
    let mut text = format!(
        "-- Written by latchkey-bench.\nBENCH = {{\n  mode = {},\n  host = {},\n  tokens = {},\n  \
         throwaway = {},\n  offset = {},\n  totp_users = {},\n  totp_codes = {},\n  \
         totp_offset = {},\n  totp_step = {STEP_SECS},\n  threads = {},\n  \
         count_statuses = {count},\n  \
         cookie = {},\n  password = {},\n  wrong_password = {},\n  users = {{ {} }},\n}}\n\n",
        lua_string(mode),
        lua_string(host),
        path_or_nil(tokens),
        path_or_nil(throwaway),
        half.start(THROWAWAY_SESSIONS),
        path_or_nil(totp.map(|pool| pool.names.as_path())),
        path_or_nil(totp_codes.as_deref()),
        half.start(totp.map_or(0, |pool| pool.secrets.len())),
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

/// Writes the codes of every TOTP user of `pool` for each step from now to
/// the end of the longest run plus [`TOTP_SLACK_SECS`]: one line per step,
/// the step and then the codes in the pool's order. The load script picks
/// the line of the step each request is sent in.
fn write_totp_codes(ctx: &Ctx, name: &str, pool: &TotpPool) -> Result<PathBuf> {
    let now = unix_now();
    let secs = ctx.secs.max(WARMUP_SECS) + TOTP_SLACK_SECS;
    let last = step_of(now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)));
    let lines: Vec<String> = (step_of(now)..=last)
        .map(|step| {
            let mut line = step.to_string();
            for secret in &pool.secrets {
                let _ = write!(line, " {:06}", secret.code(step));
            }
            line
        })
        .collect();
    write_lines(&ctx.work.join(name), &lines)
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
pub fn ensure_wrk() -> Result<PathBuf> {
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

pub fn wrk_version(wrk: &Path) -> String {
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

pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0")
    })
}
