//! /proc sampling on Linux: a process's CPU ticks (utime + stime), the
//! machine's and each pinned core's busy and steal ticks, turned into CPU
//! use per measured run; a process's peak RSS (VmHWM); a process's
//! children (PostgreSQL's backends); and the wait for the machine to be
//! quiet before a scenario.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::{progress, LOAD_CORE, SERVER_CORE};

/// Linux's USER_HZ: the unit of utime/stime in /proc/<pid>/stat.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
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

/// The processes of PID's children (from every `/proc/<pid>/stat`).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // The parent is field 4, the second after the parenthesised name.
                stat.rfind(')')
                    .and_then(|end| stat.get(end + 2..))
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// The CPU counters one measurement needs, taken at one moment.
pub struct CpuTicks {
    /// `/proc/stat`: line name (`cpu`, `cpu0`, …) → its counters.
    system: HashMap<String, Vec<u64>>,
    /// Every server instance's, summed.
    server: u64,
    flood: u64,
    /// The database server's processes (PostgreSQL's), summed.
    database: Option<u64>,
    this: u64,
}

impl CpuTicks {
    /// `database`: `None` when no database server runs beside the servers
    /// (SQLite is in the server process), else its processes at this moment.
    pub fn take(servers: &[u32], flood: Option<u32>, database: Option<&[u32]>) -> CpuTicks {
        let sum = |pids: &[u32]| pids.iter().filter_map(|&pid| cpu_ticks(pid)).sum();
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
            server: sum(servers),
            flood: flood.and_then(cpu_ticks).unwrap_or(0),
            database: database.map(sum),
            this: cpu_ticks(std::process::id()).unwrap_or(0),
        }
    }

    /// (processes, busy, total, steal) ticks of a `/proc/stat` cpu line:
    /// processes is user + nice + system, busy is all but idle and iowait
    /// (adding irq, softirq, steal), total is all eight.
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
pub struct CpuUse {
    /// Every server instance's process, summed.
    pub server: f64,
    /// wrk, and the flood's wrk when there is one.
    pub load: f64,
    /// The database server's processes (PostgreSQL's), when there are any.
    pub database: Option<f64>,
    /// Every other process on the machine (another build, say).
    pub other: f64,
    /// Busy share of the pinned cores, kernel work (loopback, softirq) included.
    pub server_core: Option<f64>,
    pub load_core: Option<f64>,
    /// Share of the server core's time the hypervisor gave to other guests
    /// (counted in `server_core`): high steal means a noisy neighbour.
    pub server_steal: Option<f64>,
}

impl CpuUse {
    pub fn between(before: &CpuTicks, after: &CpuTicks, wrk_ticks: u64, wall: Duration) -> CpuUse {
        let server = after.server.saturating_sub(before.server);
        let load = wrk_ticks + after.flood.saturating_sub(before.flood);
        let this = after.this.saturating_sub(before.this);
        let database = match (before.database, after.database) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        let other = match (before.counters("cpu"), after.counters("cpu")) {
            (Some((p0, ..)), Some((p1, ..))) => p1
                .saturating_sub(p0)
                .saturating_sub(server + load + this + database.unwrap_or(0)),
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
            database: database.map(|ticks| cpu_share(ticks, wall)),
            other: cpu_share(other, wall),
            server_core: core(SERVER_CORE),
            load_core: core(LOAD_CORE),
            server_steal: share_of_core(SERVER_CORE, |(_, _, _, steal)| steal),
        }
    }
}

/// Waits (at most 60 s) until other processes use less than a fifth of a
/// core, so that a concurrent build does not skew a scenario unnoticed (a
/// database server's processes count as other: they should be idle too).
pub fn wait_for_quiet(servers: &[u32]) {
    const LIMIT: f64 = 0.2;
    let mut before = CpuTicks::take(servers, None, None);
    for waited in 0..60 {
        std::thread::sleep(Duration::from_secs(1));
        let after = CpuTicks::take(servers, None, None);
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
pub fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}
