//! The report: the results table and the CPU table, one row per scenario
//! taken from its median round, the status and flood lines, the in-process
//! lookups, the CPU ratios of the token checks against their targets, and
//! the number formatting they share.

use std::fmt::Write as _;
use std::time::Duration;

use crate::run::Row;
use crate::wrk::WrkResult;
use crate::FLOOD_CONNECTIONS;

/// `/verify`'s server CPU per request, at most this many times the bare
/// route's plus the lookup's (issue 9).
const VERIFY_CPU_TARGET: f64 = 1.25;
/// The same for `/introspect` with an active token.
const INTROSPECT_CPU_TARGET: f64 = 1.35;
/// `/verify` through the access rules, at least this share of `/verify`'s
/// requests/s without them (issue 11).
const ACCESS_RULES_TARGET: f64 = 0.95;
/// The scenario of `/verify` through the access rules, and the one without.
const ACCESS_RULES_ROW: usize = 10;
const VERIFY_ROW: usize = 2;
/// `/verify` with metrics.listen set, against [`VERIFY_ROW`].
const METRICS_ROW: usize = 11;
/// Its requests/s over plain `/verify`'s must stay at or above this (issue 12).
const METRICS_TARGET: f64 = 0.97;
/// `/verify` under one `one_factor` rule, and under one `two_factor` rule,
/// on the same pwd + otp sessions.
const ONE_FACTOR_ROW: usize = 12;
const TWO_FACTOR_ROW: usize = 13;
/// The two_factor row's requests/s over the one_factor row's must stay at
/// or above this (second-factor issue).
const TWO_FACTOR_TARGET: f64 = 0.98;
/// Logins with the right password, and with the password and a TOTP code.
const LOGIN_ROW: usize = 7;
const TOTP_LOGIN_ROW: usize = 14;
/// The TOTP row's successful logins/s over the password row's must stay at
/// or above this: a login with a code costs the same one argon2 hash (a
/// second hash would show as 50 %), and this host moves a login row's rate
/// by a few percent from round to round.
const TOTP_LOGIN_TARGET: f64 = 0.95;

/// `1000` → `1k`, `1000000` → `1M`.
pub fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

pub fn thousands(n: f64) -> String {
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

pub fn latency(us: f64) -> String {
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

/// The middle value (the upper one of an even count); `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The server process's CPU time per request answered, in µs.
pub fn server_cpu_us(row: &Row) -> f64 {
    row.cpu.server / row.result.rps() * 1e6
}

/// One row per scenario: of its rounds, the one with the median ratio to the
/// bare route of the same round (the bare route: its median requests/s).
pub fn median_rows(mut rows: Vec<Row>) -> Vec<Row> {
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
            let middle = rounds.get(rounds.len() / 2)?;
            let vs_quiet = || rounds.iter().map(|r| r.vs_quiet_verify);
            Some(Row {
                ratio_range: (rounds.first()?.ratio, rounds.last()?.ratio),
                vs_quiet_verify: median(vs_quiet().collect())?,
                vs_quiet_range: (
                    vs_quiet().fold(f64::INFINITY, f64::min),
                    vs_quiet().fold(f64::NEG_INFINITY, f64::max),
                ),
                ..middle.clone()
            })
        })
        .collect()
}

pub fn print_report(
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
    header.extend(["server process", "wrk process"]);
    // PostgreSQL's processes, for the rows that run on it.
    let database = rows.iter().any(|r| r.cpu.database.is_some());
    if database {
        header.push("postgres");
    }
    header.extend(["other", "server CPU per request"]);
    if database {
        header.push("postgres CPU per request");
    }
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
        let postgres = c
            .database
            .map(|cores| (cores, cores / row.result.rps() * 1e6));
        if database {
            line.push(postgres.map_or("-".to_owned(), |(cores, _)| format!("{cores:.2}")));
        }
        line.push(format!("{:.2}", c.other));
        line.push(format!("{:.1} µs", server_cpu_us(row)));
        if database {
            line.push(postgres.map_or("-".to_owned(), |(_, us)| format!("{us:.1} µs")));
        }
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
            "Token lookups in-process (Store::read + sessions::find_by_token_hash, the server's \
             own read path, random picks among the sampled tokens, median of 5 rounds): \
             {small_label} sessions {small:.2} µs, {large_label} sessions {large:.2} µs per lookup \
             ({:+.2} µs).",
            large - small
        );
    }
    print_cpu_ratios(rows, lookups);
    print_access_rules_cost(rows);
    print_metrics_cost(rows);
    print_two_factor_cost(rows);
    print_totp_login_cost(rows);
    crate::postgres::print_rows_summary(rows);
    println!();
    println!("total time {:.0} s", elapsed.as_secs_f64());
}

/// What judging every request with the access rules costs: their row's
/// requests/s and server CPU per request against plain `/verify`'s.
fn print_access_rules_cost(rows: &[Row]) {
    let row = |number: usize| rows.iter().find(|r| r.number == number);
    let (Some(plain), Some(ruled)) = (row(VERIFY_ROW), row(ACCESS_RULES_ROW)) else {
        return;
    };
    println!();
    println!(
        "verify through {} access rules / verify: {:.1} % of the requests/s (target >= {:.0} %), \
         {:.1} µs vs {:.1} µs server CPU per request (rows {ACCESS_RULES_ROW} and {VERIFY_ROW})",
        crate::ACCESS_RULES,
        100.0 * ruled.result.rps() / plain.result.rps(),
        100.0 * ACCESS_RULES_TARGET,
        server_cpu_us(ruled),
        server_cpu_us(plain),
    );
}

/// What counting every answer costs: the metrics row against plain `/verify`.
fn print_metrics_cost(rows: &[Row]) {
    let row = |number: usize| rows.iter().find(|r| r.number == number);
    let (Some(plain), Some(counted)) = (row(VERIFY_ROW), row(METRICS_ROW)) else {
        return;
    };
    println!();
    println!(
        "verify with metrics / verify: {:.1} % of the requests/s (target >= {:.0} %), \
         {:.1} µs vs {:.1} µs server CPU per request (rows {METRICS_ROW} and {VERIFY_ROW})",
        100.0 * counted.result.rps() / plain.result.rps(),
        100.0 * METRICS_TARGET,
        server_cpu_us(counted),
        server_cpu_us(plain),
    );
}

/// What asking for the second factor costs a token check: the two_factor
/// row against the one_factor row.
fn print_two_factor_cost(rows: &[Row]) {
    let row = |number: usize| rows.iter().find(|r| r.number == number);
    let (Some(one), Some(two)) = (row(ONE_FACTOR_ROW), row(TWO_FACTOR_ROW)) else {
        return;
    };
    println!();
    println!(
        "verify under a two_factor rule / under a one_factor rule: {:.1} % of the requests/s \
         (target >= {:.0} %), {:.1} µs vs {:.1} µs server CPU per request (rows {TWO_FACTOR_ROW} \
         and {ONE_FACTOR_ROW})",
        100.0 * two.result.rps() / one.result.rps(),
        100.0 * TWO_FACTOR_TARGET,
        server_cpu_us(two),
        server_cpu_us(one),
    );
}

/// What the TOTP code adds to a login: the TOTP row against the password
/// row, in successful logins (a refused code is no login) and server CPU
/// per answer (the hashing threads included).
fn print_totp_login_cost(rows: &[Row]) {
    let row = |number: usize| rows.iter().find(|r| r.number == number);
    let (Some(password), Some(totp)) = (row(LOGIN_ROW), row(TOTP_LOGIN_ROW)) else {
        return;
    };
    let logins = |r: &WrkResult| r.per_sec(r.s2xx);
    let refused = totp.result.requests - totp.result.s2xx;
    println!();
    println!(
        "login with a TOTP code / login: {:.1} % of the successful logins/s (target >= {:.0} %), \
         {:.2} ms vs {:.2} ms server CPU per request (rows {TOTP_LOGIN_ROW} and {LOGIN_ROW}); \
         {} of row {TOTP_LOGIN_ROW}'s answers were not 200",
        100.0 * logins(&totp.result) / logins(&password.result),
        100.0 * TOTP_LOGIN_TARGET,
        server_cpu_us(totp) / 1e3,
        server_cpu_us(password) / 1e3,
        thousands(refused),
    );
}

/// A token check's server CPU per request over the work it cannot avoid:
/// the bare route's CPU per request (the HTTP part) plus the in-process
/// lookup in the same database (the SQLite part), for `/verify` (row 2) and
/// `/introspect` with an active token (row 4), both on the 1k database.
/// All from the rows printed above, so from this run's median rounds.
fn print_cpu_ratios(rows: &[Row], lookups: &[(String, f64)]) {
    let cpu = |number: usize| rows.iter().find(|r| r.number == number).map(server_cpu_us);
    let (Some(bare), Some((label, lookup))) = (cpu(1), lookups.first()) else {
        return;
    };
    let lines: Vec<String> = [
        (2, "verify", VERIFY_CPU_TARGET),
        (4, "introspect", INTROSPECT_CPU_TARGET),
    ]
    .into_iter()
    .filter_map(|(number, name, target)| {
        let check = cpu(number)?;
        Some(format!(
            "{name} CPU / (bare + lookup): {:.2}x (target <= {target:.2}x): row {number} \
             {check:.1} µs / (row 1 {bare:.1} µs + {label} lookup {lookup:.2} µs)",
            check / (bare + lookup)
        ))
    })
    .collect();
    if !lines.is_empty() {
        println!();
        for line in lines {
            println!("{line}");
        }
    }
}
