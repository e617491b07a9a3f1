//! PostgreSQL for the PostgreSQL rows: a throwaway cluster of the bench's
//! own (`initdb` + `pg_ctl` in a temporary directory, on a free loopback
//! port, trust authentication, durability off; run as the `postgres` user
//! when the bench runs as root, since PostgreSQL refuses root), pinned with
//! the servers to the server core; a fresh database per run, filled from the
//! run's SQLite copy by `latchkey db copy` (this program's `__db-copy`
//! mode); and those rows' lines in the report. The cluster is stopped and
//! deleted when dropped, and by a watchdog should the bench be killed.
//!
//! Like tests/api/helpers/postgres.rs, it drives PostgreSQL's own programs
//! (`initdb`, `pg_ctl`, `psql`), so the bench needs no client library.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use latchkey::cli::{Command as LatchkeyCommand, DbCommand};

use crate::process::{find_on_path, last_line, new_temp_dir, ChildGuard};
use crate::procfs::children_of;
use crate::report::{server_cpu_us, thousands};
use crate::run::Row;
use crate::servers::{toml_string, without_latchkey_variables};
use crate::wrk::is_root;
use crate::{progress, Ctx, SERVER_CORE};

/// The superuser `initdb` creates, and the user every URL names.
const SUPERUSER: &str = "latchkey";
/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_SECS: &str = "30";

/// `__db-copy`: `latchkey --config CONFIG db copy --to URL`, through the
/// same calls as the `latchkey` binary.
pub fn db_copy(config: &Path, to: &str) -> Result<()> {
    let config = latchkey::cli::load_config(Some(config))?;
    let copy = LatchkeyCommand::Db(DbCommand::Copy { to: to.to_owned() });
    latchkey::cli::run_admin(copy, &config)
}

/// Where PostgreSQL's programs are, and whom they run as.
pub struct PgPrograms {
    /// Holds `initdb` and `pg_ctl`.
    bin: PathBuf,
    psql: PathBuf,
    /// The bench runs as root: the server refuses to, so its programs run
    /// as the `postgres` user (`runuser`).
    as_postgres: bool,
}

/// PostgreSQL's programs, or why the PostgreSQL rows cannot run here.
pub fn find_programs() -> std::result::Result<PgPrograms, String> {
    let install = "(apt-get install postgresql)";
    let bin = postgres_bin_dir()
        .ok_or_else(|| format!("PostgreSQL is not installed: no initdb and pg_ctl {install}"))?;
    let psql = [bin.join("psql"), PathBuf::from("/usr/bin/psql")]
        .into_iter()
        .find(|path| path.is_file())
        .or_else(|| find_on_path("psql"))
        .ok_or_else(|| format!("PostgreSQL's psql is not installed {install}"))?;
    let as_postgres = is_root();
    if as_postgres {
        let has_user = Command::new("id")
            .args(["-u", "postgres"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_user || find_on_path("runuser").is_none() {
            return Err(
                "running as root, and there is no `postgres` user or no runuser to start \
                 PostgreSQL as"
                    .to_owned(),
            );
        }
    }
    Ok(PgPrograms {
        bin,
        psql,
        as_postgres,
    })
}

/// The directory holding `initdb` and `pg_ctl`: Debian keeps them off PATH,
/// in /usr/lib/postgresql/<major>/bin (the newest major there wins).
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    debian.sort();
    let elsewhere = ["/usr/local/pgsql/bin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from);
    debian
        .into_iter()
        .rev()
        .map(|(_, bin)| bin)
        .chain(elsewhere)
        .find(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
}

/// A running cluster; stopped and deleted when dropped.
pub struct PgCluster {
    programs: PgPrograms,
    /// Holds the data directory, the server's log and its socket.
    dir: PathBuf,
    port: u16,
    /// `taskset`, when the servers are pinned: PostgreSQL shares their core.
    taskset: Option<PathBuf>,
    /// The postmaster's pid, once started: its children are the backends.
    postmaster: u32,
    version: String,
    /// Databases made so far, for unique names.
    databases: AtomicUsize,
    /// Stops the cluster should this process die without dropping it
    /// (a kill, Ctrl-C); killed itself when the cluster is dropped.
    watchdog: Option<ChildGuard>,
}

impl PgCluster {
    /// Creates and starts a cluster on a free loopback port.
    pub fn start(ctx: &Ctx, programs: PgPrograms) -> Result<PgCluster> {
        let dir = new_temp_dir("latchkey-bench-pg")?;
        // From here on, dropping it deletes the directory (and stops the
        // server once it runs).
        let mut cluster = PgCluster {
            programs,
            dir,
            port: free_port()?,
            taskset: ctx.taskset.clone(),
            postmaster: 0,
            version: String::new(),
            databases: AtomicUsize::new(0),
            watchdog: None,
        };
        fs::set_permissions(&cluster.dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", cluster.dir.display()))?;
        if cluster.programs.as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("postgres:").arg(&cluster.dir);
            run(chown, "chown postgres: on the cluster's directory")?;
        }
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        let mut initdb = cluster.program("initdb");
        initdb
            .arg("-D")
            .arg(cluster.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .arg("--no-sync");
        run(initdb, "initdb")?;
        // In the configuration file, not on pg_ctl's command line.
        let settings = format!(
            "\n# latchkey-bench's own settings.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             # A throwaway cluster: durability only costs time.\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n",
            port = cluster.port,
            socket = cluster.dir.display(),
        );
        let conf = cluster.data_dir().join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut file| file.write_all(settings.as_bytes()))
            .with_context(|| format!("cannot write {}", conf.display()))?;
        // The postmaster and every backend it forks inherit the pinning.
        let log = cluster.dir.join("server.log");
        let mut start = cluster.program("pg_ctl");
        start
            .arg("-D")
            .arg(cluster.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", PG_CTL_WAIT_SECS, "start"]);
        if let Some(taskset) = &cluster.taskset {
            let pinned = std::iter::once(start.get_program())
                .chain(start.get_args())
                .map(ToOwned::to_owned)
                .collect::<Vec<_>>();
            start = Command::new(taskset);
            start.arg("-c").arg(SERVER_CORE).args(pinned);
            start.current_dir(&cluster.dir);
            without_pg_variables(&mut start);
        }
        run(start, "pg_ctl start").with_context(|| {
            let text = fs::read_to_string(&log).unwrap_or_default();
            format!(
                "PostgreSQL did not start; its log ends: {}",
                last_line(&text)
            )
        })?;
        let pid_file = cluster.data_dir().join("postmaster.pid");
        cluster.postmaster = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .ok_or_else(|| anyhow!("no postmaster pid in {}", pid_file.display()))?;
        cluster.version = cluster.psql("postgres", "SHOW server_version")?;
        Ok(cluster)
    }

    /// One line for the run's header.
    pub fn describe(&self) -> String {
        let pinning = if self.taskset.is_some() {
            format!("pinned with the servers to core {SERVER_CORE}")
        } else {
            "not pinned".to_owned()
        };
        format!(
            "PostgreSQL {}, a cluster of the bench's own on 127.0.0.1:{} (fsync off), {pinning}; \
             each run on a fresh database filled by `latchkey db copy` and vacuumed",
            self.version, self.port
        )
    }

    /// The postmaster and its children (backends, background workers) now.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = children_of(self.postmaster);
        pids.push(self.postmaster);
        pids
    }

    /// A new database holding what the SQLite file `sqlite` holds, copied by
    /// `latchkey db copy`, then vacuumed and analysed (as autovacuum would
    /// soon after a copy: done now, so it does not land in a measurement);
    /// dropped with the returned guard.
    pub fn database_from(&self, ctx: &Ctx, sqlite: &Path) -> Result<PgDatabase<'_>> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("latchkey_bench_{n}");
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        let database = PgDatabase {
            cluster: self,
            url: format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port),
            name,
        };
        let config = ctx.work.join("db-copy.toml");
        fs::write(
            &config,
            format!(
                "# Written by latchkey-bench for `db copy`.\n[database]\npath = {}\n",
                toml_string(&sqlite.to_string_lossy())
            ),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let mut copy = Command::new(&ctx.exe);
        copy.arg("__db-copy")
            .arg("--config")
            .arg(&config)
            .arg("--to")
            .arg(&database.url);
        without_latchkey_variables(&mut copy);
        let copied = run(copy, "latchkey db copy")?;
        if n == 0 {
            progress(&format!("      {}", last_line(&copied)));
        }
        self.psql(&database.url, "VACUUM ANALYZE")?;
        Ok(database)
    }

    /// Runs one SQL statement with psql on `database` (a name or a URL);
    /// returns what it printed (unaligned, no headers, trimmed).
    fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let target = if database.starts_with("postgres://") {
            database.to_owned()
        } else {
            format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
        };
        let mut psql = Command::new(&self.programs.psql);
        psql.args(["--no-psqlrc", "--quiet", "--no-align", "--tuples-only"])
            .args(["--set", "ON_ERROR_STOP=1", "--dbname"])
            .arg(target)
            .arg("--command")
            .arg(sql)
            .current_dir(&self.dir);
        without_pg_variables(&mut psql);
        run(psql, &format!("psql {sql:?}")).map(|out| out.trim().to_owned())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// One of the server's programs, run as the user that owns the cluster.
    fn program(&self, name: &str) -> Command {
        let program = self.programs.bin.join(name);
        let mut command = if self.programs.as_postgres {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]).arg(program);
            runuser
        } else {
            Command::new(program)
        };
        // The bench's own directory may be closed to the postgres user.
        command.current_dir(&self.dir);
        without_pg_variables(&mut command);
        command
    }

    /// A shell that waits for this process to end, however it ends, then
    /// stops the server and deletes its directory. It ignores the signals a
    /// Ctrl-C or a hang-up sends the whole process group.
    fn spawn_watchdog(&self) -> Result<ChildGuard> {
        let quote = |text: &str| format!("'{}'", text.replace('\'', "'\\''"));
        let stop = self.stop_command();
        let stop: Vec<String> = std::iter::once(stop.get_program())
            .chain(stop.get_args())
            .map(|arg| quote(&arg.to_string_lossy()))
            .collect();
        let script = format!(
            "trap '' INT TERM HUP; while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            stop = stop.join(" "),
            dir = quote(&self.dir.to_string_lossy()),
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the PostgreSQL cluster's watchdog")?;
        Ok(ChildGuard(child))
    }

    /// `pg_ctl stop -m immediate`: a throwaway cluster needs no checkpoint.
    fn stop_command(&self) -> Command {
        let mut stop = self.program("pg_ctl");
        stop.arg("-D").arg(self.data_dir()).args([
            "-w",
            "-t",
            PG_CTL_WAIT_SECS,
            "stop",
            "-m",
            "immediate",
        ]);
        stop
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Nothing here may fail loudly: this also runs while an error
        // unwinds. A server that never started makes pg_ctl fail, which is
        // fine. The watchdog is killed after this, with its field.
        if self.postmaster != 0 {
            let _ = self
                .stop_command()
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            progress(&format!(
                "cannot delete the PostgreSQL cluster {}: {e}",
                self.dir.display()
            ));
        }
    }
}

/// One run's database; dropped (its connections ended) with the guard.
pub struct PgDatabase<'a> {
    cluster: &'a PgCluster,
    name: String,
    url: String,
}

impl PgDatabase<'_> {
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgDatabase<'_> {
    fn drop(&mut self) {
        let drop_it = format!("DROP DATABASE {} WITH (FORCE)", self.name);
        if let Err(e) = self.cluster.psql("postgres", &drop_it) {
            progress(&format!("cannot drop the database {}: {e:#}", self.name));
        }
    }
}

/// The PostgreSQL rows against row 2 (`/verify` on SQLite) of the same run:
/// requests/s, and the server CPU per request with PostgreSQL's beside it.
/// Nothing when no PostgreSQL row ran.
pub fn print_rows_summary(rows: &[Row]) {
    let pg_rows: Vec<&Row> = rows.iter().filter(|r| r.cpu.database.is_some()).collect();
    if pg_rows.is_empty() {
        return;
    }
    let sqlite = rows.iter().find(|r| r.number == 2);
    println!();
    println!(
        "PostgreSQL rows ({}): latchkey and PostgreSQL share the server core when pinned; several \
         instances' requests/s is the sum of their wrk runs, their p50/p99/p99.9 the worse \
         of the runs'.",
        pg_rows
            .iter()
            .map(|r| r.number.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for row in pg_rows {
        let latchkey = server_cpu_us(row);
        let database = row.cpu.database.unwrap_or(f64::NAN) / row.result.rps() * 1e6;
        let mut line = format!(
            "{}. {}: {} requests/s; server CPU per request: latchkey {latchkey:.1} µs + \
             PostgreSQL {database:.1} µs = {:.1} µs",
            row.number,
            row.name,
            thousands(row.result.rps()),
            latchkey + database
        );
        if let Some(sqlite) = sqlite {
            let (low, high) = row.vs_quiet_range;
            line.push_str(&format!(
                "; / row 2 (SQLite) of the same round: {:.1} % of the requests/s \
                 (rounds {:.1}–{:.1} %), against row 2's {:.1} µs",
                row.vs_quiet_verify * 100.0,
                low * 100.0,
                high * 100.0,
                server_cpu_us(sqlite),
            ));
        }
        println!("{line}");
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Runs `command` to its end; its stdout, or an error with what it said.
fn run(mut command: Command, what: &str) -> Result<String> {
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        let said = match last_line(&stderr) {
            "" => last_line(&stdout),
            line => line,
        };
        bail!("{what} failed ({status}): {said}");
    }
    Ok(stdout)
}

/// Without the libpq variables (PGHOST, PGPORT, PGUSER, ...) of whoever runs
/// the bench: every command names its server and database itself.
fn without_pg_variables(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
}
